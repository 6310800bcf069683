import os
from pathlib import Path

from orchestrator.lease import current_holder
from orchestrator.worker import trial_task
from trainer.compose import compose
from trainer.identity import config_id
from trainer.paths import RunPaths


def report_title_and_lease(cfg, tag: str) -> tuple[str, int, int | None, str]:
    """This process's title and pid, the pid holding the trial's lease, `tag`."""
    holder = current_holder(RunPaths.for_config(cfg, config_id(cfg)).run_dir)
    return (Path("/proc/self/cmdline").read_text().split("\0")[0], os.getpid(),
            holder.pid if holder else None, tag)


def test_trials_run_under_their_lease_and_their_own_name(local_ray, tmp_path):
    """What the driver hands to Ray holds the trial's lease while it runs, in the worker's
    own process, and keeps its name (the worker's process title); the lease is given back."""
    import ray

    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    task = ray.remote(trial_task(report_title_and_lease, sweep="unit", driver_pid=os.getpid()))
    title, pid, holder_pid, tag = ray.get(task.options(num_cpus=1).remote(cfg, "x"))
    assert title == "ray::report_title_and_lease" and tag == "x"
    assert holder_pid == pid != os.getpid()
    assert current_holder(RunPaths.for_config(cfg, config_id(cfg)).run_dir) is None


def report_no_gpu_env(cfg) -> str | None:
    from trainer.distributed import NO_GPU_ENV
    return os.environ.get(NO_GPU_ENV)


def test_a_task_without_a_gpu_trains_auto_on_the_cpu(local_ray, tmp_path, monkeypatch):
    """Ray 2.60 leaves a node's GPUs visible to a task that holds none: the worker tells the
    trainer (`auto` is then the CPU), and only for that task."""
    import ray
    import torch

    from trainer.distributed import NO_GPU_ENV, resolve_device

    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    task = ray.remote(trial_task(report_no_gpu_env, sweep="unit", driver_pid=os.getpid()))
    assert ray.get(task.options(num_cpus=1, num_gpus=0).remote(cfg)) == "1"
    assert NO_GPU_ENV not in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv(NO_GPU_ENV, "1")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cuda", 0)  # an explicit choice stands
