"""Multi-process runs: FSDP2 over gloo on CPU, launched by `run` itself and by torchrun."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from trainer.compose import compose
from trainer.distributed import RANKS_DIR
from trainer.loop import run

ROOT = Path(__file__).parents[2]
TINY = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
        "model.depth=2", "data=synthetic", "data.num_tokens=200_000", "train.batch_size=8",
        "train.seq_len=32", "schedule=constant", "schedule.warmup_tokens=1024",
        "optim.lr=0.01", "train.eval_tokens=4096",
        "train.tokens=10240", "train.log_every_steps=1", "train.device=cpu"]


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def _assert_same_curve(a: list[float], b: list[float]) -> None:
    # Same data, same init, same global batch: only the order of float32 sums differs
    # (gradient averaging over ranks), which Adam carries forward at the 1e-5 level.
    assert len(a) == len(b) == 40
    for x, y in zip(a, b, strict=True):
        assert abs(x - y) <= 2e-4 * abs(x), (x, y)


def test_two_processes_train_the_same_curve_as_one(tmp_path):
    one = run(compose(TINY + [f"storage_root={tmp_path}/one"]))
    two = run(compose(TINY + ["train.world_size=2", f"storage_root={tmp_path}/two"]))
    assert one.status == two.status == "finished"
    assert one.run_id == two.run_id  # world size is not part of the trial's identity
    _assert_same_curve(_losses(one.run_dir), _losses(two.run_dir))
    assert abs(one.final_eval_loss - two.final_eval_loss) <= 2e-4 * one.final_eval_loss
    assert two.summary["final/tokens"] == one.summary["final/tokens"] == 10240


def test_torchrun_launch_matches_the_spawned_one(tmp_path):
    spawned = run(compose(TINY + ["train.world_size=2", f"storage_root={tmp_path}/a"]))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "trainer", *TINY, "train.world_size=2", f"storage_root={tmp_path}/b"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    launched = tmp_path / "b" / spawned.run_id
    assert _losses(launched) == _losses(spawned.run_dir)  # same code path, bit for bit
    summary = json.loads((launched / "summary.json").read_text())
    assert summary["final/eval_loss"] == spawned.final_eval_loss
    assert proc.stdout.count("run directory:") == 1  # rank 0's footer only (it was twice)


def test_torchrun_of_another_world_size_is_a_config_error_before_the_run_folder(tmp_path):
    """It said so as a failed rank, exit 1, with the run's folder made (its lease)."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "trainer", *TINY, f"storage_root={tmp_path}/b"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert ("error: train.world_size=1 but torchrun launched 2 processes (WORLD_SIZE=2): give "
            "train.world_size=2, or torchrun --nproc-per-node 1") in proc.stderr
    assert "Traceback" not in proc.stderr.split("error: train.world_size")[0][-2000:]
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("lease.lock"))


def test_a_stray_rank_variable_does_not_silence_a_run_of_one_process(tmp_path):
    """RANK left in the environment without WORLD_SIZE (not torchrun): the run trains alone,
    and says what it is and where it went, as rank 0 of torchrun does."""
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    proc = subprocess.run([sys.executable, "-m", "trainer", *TINY, f"storage_root={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "RANK": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run directory:") == 1


def test_a_dead_rank_ends_the_run_with_its_name(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *TINY, "train.world_size=2", "train.tokens=2_000_000",
         f"storage_root={tmp_path}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/metrics.jsonl")) or \
            not (next(tmp_path.glob("*/metrics.jsonl")).read_text().count("\n") >= 3):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    (rank1,) = psutil.Process(proc.pid).children()
    os.kill(rank1.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "rank 1 failed: killed by SIGKILL" in err
    assert "Traceback" not in err


def test_a_rank_dead_before_the_group_is_up_ends_the_run_at_once(tmp_path):
    """Killed while it imported torch, rank 1 never joined: rank 0 waited in the group's
    set-up for its whole 10-minute timeout, deaf to Ctrl-C and SIGTERM, holding the lease."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *TINY, "train.world_size=2",
         f"storage_root={tmp_path}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    children = []
    while not children:
        assert time.monotonic() - started < 120 and proc.poll() is None, proc.communicate()
        children = psutil.Process(proc.pid).children()
        time.sleep(0.01)
    assert not list(tmp_path.glob(f"*/{RANKS_DIR}/rank-1.ready"))  # (not in the group yet)
    os.kill(children[0].pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "rank 1 failed: killed by SIGKILL" in err and "Traceback" not in err
    assert time.monotonic() - started < 60


def test_checkpoint_resumes_at_another_world_size(tmp_path, capsys):
    straight = run(compose(TINY + [f"storage_root={tmp_path}/straight"]))
    # Two ranks train until their first checkpoint (step 10 of 40) exists, and are killed.
    killer = subprocess.Popen(
        [sys.executable, "-m", "trainer", *TINY, "train.world_size=2",
         "train.checkpoint_every_tokens=2560", f"storage_root={tmp_path}/two"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "two" / straight.run_id
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "step-000000010").is_dir():
        assert time.monotonic() < deadline and killer.poll() is None, killer.communicate()
        time.sleep(0.05)
    ranks = psutil.Process(killer.pid).children(recursive=True)
    assert ranks  # rank 1 runs in a child process
    killer.send_signal(signal.SIGKILL)  # rank 1 dies with it (parent-death signal)
    killer.wait(timeout=30)
    _, alive = psutil.wait_procs(ranks, timeout=30)  # only this test's own processes
    assert not alive, alive
    assert not (run_dir / "summary.json").exists()  # killed before the end
    assert (run_dir / RANKS_DIR / "config.pkl").exists()  # what the ranks shared, left there
    # One process picks the same run (world size is not in the id) up from its newest
    # checkpoint (step 10, or a later one written before the kill landed).
    capsys.readouterr()
    resumed = run(compose(TINY + [f"storage_root={tmp_path}/two"]))
    out = capsys.readouterr().out
    assert re.search(rf"run {straight.run_id[:12]} resuming at step (10|20|30);", out), out
    assert resumed.status == "finished"
    assert not (run_dir / RANKS_DIR).exists()  # cleared by the next start, not left in /tmp
    _assert_same_curve(_losses(straight.run_dir), _losses(resumed.run_dir))


def test_world_size_must_divide_the_batch():
    from trainer.validation import problems
    found = problems(compose(TINY + ["train.world_size=3"]))
    assert found == ["train.batch_size=8 is not divisible by train.world_size=3: each rank "
                     "takes an equal share of the batch; give train.batch_size=9, or a world "
                     "size that divides 8"]
    # one problem, one sentence: the micro-batch against each rank's share (it was also said
    # against the whole batch)
    found = problems(compose(TINY + ["train.world_size=2", "train.micro_batch_size=3"]))
    assert found == ["train.micro_batch_size=3 does not divide the 4 sequences per rank "
                     "(train.batch_size / train.world_size): pick a divisor"]


def test_a_config_error_of_a_sharded_run_is_its_sentence_not_another_ranks_traceback(
        tmp_path):
    """Rank 0 raised `data.text_field=text: ...`; the run reported rank 1's gloo error
    ('Connection closed by peer') instead, and a sweep retried it three times."""
    rows = tmp_path / "a.jsonl"
    rows.write_text("".join(json.dumps({"content": f"row {i} " * 50}) + "\n" for i in range(40)))
    cmd = [sys.executable, "-m", "trainer", *[o for o in TINY if not o.startswith("data")],
           "data=files", f"data.paths=[{rows}]", f"data.cache_dir={tmp_path / 'cache'}",
           "train.world_size=2", f"storage_root={tmp_path}/runs"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: data.text_field=text: the rows of data.paths=")
    assert "gloo" not in proc.stderr and "rank 1 failed" not in proc.stderr


def test_a_config_error_raised_by_another_rank_comes_back_as_one(tmp_path):
    from trainer.distributed import _config_error_of
    from trainer.errors import ConfigError, DataUnavailable

    (tmp_path / "rank-1.error").write_text("RuntimeError: Connection closed by peer")
    assert _config_error_of({1: None}, tmp_path) is None
    (tmp_path / "rank-2.error").write_text("ConfigError: data.a is wrong: fix a\ndata.b: fix b")
    found = _config_error_of({1: None, 2: None}, tmp_path)
    assert type(found) is ConfigError and found.problems == ["data.a is wrong: fix a",
                                                             "data.b: fix b"]
    (tmp_path / "rank-2.error").write_text("DataUnavailable: the hub did not answer")
    assert type(_config_error_of({1: None, 2: None}, tmp_path)) is DataUnavailable


@pytest.mark.parametrize("every_rank", [False, True])
def test_a_stop_of_rank_0_ends_every_rank_at_one_saved_step(tmp_path, every_rank):
    """A sweep's cancel reaches rank 0 only (a terminal's Ctrl-C reaches all of them): the
    ranks agree by a sum at a settled step, save it together and stop, rather than rank 0
    killing the others where they were (the resume went back to the last cadence save)."""
    from trainer.identity import config_id
    from trainer.loop import TrainingRun
    from trainer.paths import RunPaths, saved_steps
    from trainer.reporting import NullReporter

    overrides = [*TINY, "train.world_size=2", "train.tokens=10_000_000",
                 "train.checkpoint_every_tokens=5_000_000", f"storage_root={tmp_path}"]
    cfg = compose(overrides)
    run_dir = RunPaths.for_config(cfg, config_id(cfg)).run_dir
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *overrides], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # (the signal reaches rank 0 alone)
    deadline = time.monotonic() + 180
    while not (run_dir / "metrics.jsonl").is_file() or len(
            (run_dir / "metrics.jsonl").read_text().splitlines()) < 5:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    if every_rank:  # (as a terminal's Ctrl-C reaches its foreground process group)
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.count("Ctrl-C: stopping after this step") == 1 and "Traceback" not in err
    logged = [json.loads(line)["step"] for line in
              (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert saved_steps(run_dir / "checkpoints") == [max(logged)]
    assert TrainingRun(cfg, reporter=NullReporter()).restore() == max(logged)
