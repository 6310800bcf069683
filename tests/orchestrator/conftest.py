import signal

import pytest

TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "data=synthetic", "data.num_tokens=200_000", "train.seq_len=64",
         "train.eval_tokens=4096", "schedule=wsd", "schedule.warmup_tokens=1024"]


@pytest.fixture
def spec_dict(tmp_path):
    """A 2 × 2 grid of ~2-second CPU trials, stored under tmp_path."""
    return {"name": "unit", "overrides": TRIAL + ["train.tokens=32768"],
            "grid": {"optim.lr": "tag(log, choice(3e-3, 1e-2))",
                     "train.batch_size": "choice(8, 16)"},
            "seeds": [0], "resources": {"cpus": 1, "gpus": 0}, "retries": 1,
            "storage_root": str(tmp_path / "runs")}


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray with two CPUs for the module's tests: started here, whatever
    RAY_ADDRESS says or `ray start` left running on the machine (`ray.init()` joins those),
    and after a Ray an earlier module's in-process command left up (a launch refused after
    connecting to one)."""
    import ray
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _sigterm_handler_kept():
    """A `sweep` command run in-process sets its SIGTERM handler (a stop, or an exit during
    Ray's shutdown): pytest's own is put back after each test."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)
