import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from trainer.checkpoint import atomic_save, list_checkpoints, load_latest, save_checkpoint


def test_keeps_newest_and_prunes(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint({"step": step}, tmp_path, step=step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000020.pt",
                                                            "step-000000030.pt"]
    assert load_latest(tmp_path)["step"] == 30


def test_kill_during_write_leaves_previous_checkpoint_good(tmp_path):
    save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path, step=1, keep=2)
    # A child process writes a large checkpoint through the same function and is SIGKILLed
    # while its temporary file is growing.
    script = textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from trainer.checkpoint import save_checkpoint
        big = {{"step": 2, "w": torch.randn(400_000_000 // 4 * 4)}}
        save_checkpoint(big, Path({str(tmp_path)!r}), step=2, keep=2)
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and child.poll() is None, "child never wrote"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the torn write is there
    saved = load_latest(tmp_path)
    assert saved["step"] == 1 and torch.equal(saved["w"], torch.ones(3))


def test_atomic_save_replaces_whole_file(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": 1}, path)
    atomic_save({"a": 2}, path)
    assert torch.load(path)["a"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
