"""`python -m trainer`: one run at a time in a run directory."""

import subprocess
import sys
import time

import pytest

from trainer.__main__ import main
from trainer.compose import compose
from trainer.identity import config_id
from trainer.paths import RunPaths


def _overrides(tmp_path) -> list[str]:
    return ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
            "data=synthetic", "train.batch_size=4", "train.seq_len=32", "train.tokens=256",
            "schedule=constant", "schedule.warmup_tokens=0", "train.eval_tokens=512",
            "train.device=cpu", f"storage_root={tmp_path}"]


def _hold(run_dir, sweep: str) -> subprocess.Popen:
    """Another process holding the run's lease, as a training one does."""
    code = ("import sys, time\nfrom trainer.lease import Lease\n"
            f"lease = Lease.acquire({str(run_dir)!r}, sweep={sweep!r}, driver_pid=1)\n"
            "print('held', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize(("sweep", "who"), [("python -m trainer", "another `python -m trainer`"),
                                            ("demo", "sweep demo's worker")])
def test_a_run_another_process_trains_is_refused_in_one_sentence(tmp_path, capsys, sweep, who):
    """The same command typed twice at once: the second resumed from the first one's
    checkpoints while it trained, and both wrote the run's history."""
    cfg = compose(_overrides(tmp_path))
    run_id = config_id(cfg)
    run_dir = RunPaths.for_config(cfg, run_id).run_dir
    holder = _hold(run_dir, sweep)
    try:
        assert main(_overrides(tmp_path)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"error: run {run_id[:12]} is being trained by {who} (pid "
                                  f"{holder.pid} on ")
        assert err[-1].endswith(": wait for it to end, then run this command again for its "
                                "result")
        assert not (run_dir / "metrics.jsonl").exists()  # nothing trained
    finally:
        holder.kill()
        holder.wait()
    started = time.time()
    assert main(_overrides(tmp_path)) == 0  # the lock died with its holder
    assert (run_dir / "summary.json").is_file() and time.time() - started < 60
    assert not (run_dir / "lease.json").exists()  # given back
