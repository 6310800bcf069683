import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from trainer.checkpoint import atomic_save, load_latest, save
from trainer.distributed import Dist
from trainer.errors import ConfigError
from trainer.paths import list_checkpoints


def _model_and_optimizer(width: int, value: float):
    model = torch.nn.Linear(width, width, bias=False)
    torch.nn.init.constant_(model.weight, value)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, width)).sum().backward()
    optimizer.step()  # so that the optimizer has state to save
    return model, optimizer


def test_keeps_newest_and_prunes(tmp_path):
    model, optimizer = _model_and_optimizer(4, 1.0)
    for step in (10, 20, 30):
        save(tmp_path, step=step, keep=2, model=model, optimizer=optimizer,
             train_state={"step": step}, d=Dist())
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000020",
                                                            "step-000000030"]
    fresh, fresh_optimizer = _model_and_optimizer(4, 0.0)
    assert load_latest(tmp_path, model=fresh, optimizer=fresh_optimizer)["step"] == 30
    assert torch.equal(fresh.weight, model.weight)
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"],
                       optimizer.state_dict()["state"][0]["exp_avg"])


def test_kill_during_write_leaves_previous_checkpoint_good(tmp_path):
    small, small_optimizer = _model_and_optimizer(4, 1.0)
    save(tmp_path, step=1, keep=2, model=small, optimizer=small_optimizer,
         train_state={"step": 1}, d=Dist())
    # A child process writes a large checkpoint through the same function and is SIGKILLed
    # while its temporary directory is being filled.
    script = textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from trainer.checkpoint import save
        from trainer.distributed import Dist
        model = torch.nn.Linear(4, 4, bias=False)
        model.register_buffer("big", torch.randn(100_000_000))
        optimizer = torch.optim.AdamW(model.parameters())
        save(Path({str(tmp_path)!r}), step=2, keep=2, model=model, optimizer=optimizer,
             train_state={{"step": 2}}, d=Dist())
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    torn = tmp_path / ".step-000000002.tmp"
    deadline = time.monotonic() + 120
    while not (torn.is_dir() and any(torn.iterdir())):
        assert time.monotonic() < deadline and child.poll() is None, "child never wrote"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert torn.is_dir()  # the torn write is there, under a name readers skip
    fresh, fresh_optimizer = _model_and_optimizer(4, 0.0)
    assert load_latest(tmp_path, model=fresh, optimizer=fresh_optimizer)["step"] == 1
    assert torch.equal(fresh.weight, small.weight)


def test_a_damaged_newest_checkpoint_is_kept_aside_and_the_one_before_loads(tmp_path, capsys):
    """Files of the newest checkpoint cut short (a full disk, a partial copy of the folder):
    resume raised EOFError with its stack, though the checkpoint before it was whole."""
    model, optimizer = _model_and_optimizer(4, 1.0)
    save(tmp_path, step=10, keep=2, model=model, optimizer=optimizer,
         train_state={"step": 10}, d=Dist())
    later, later_optimizer = _model_and_optimizer(4, 2.0)
    save(tmp_path, step=20, keep=2, model=later, optimizer=later_optimizer,
         train_state={"step": 20}, d=Dist())
    for f in (tmp_path / "step-000000020").iterdir():
        os.truncate(f, 100)
    fresh, fresh_optimizer = _model_and_optimizer(4, 0.0)
    assert load_latest(tmp_path, model=fresh, optimizer=fresh_optimizer)["step"] == 10
    assert torch.equal(fresh.weight, model.weight)  # every tensor from step 10, none from 20
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"],
                       optimizer.state_dict()["state"][0]["exp_avg"])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000010"]
    assert (tmp_path / ".step-000000020.damaged").is_dir()  # kept, under a name readers skip
    err = capsys.readouterr().err
    assert err.startswith(f"note: checkpoint {tmp_path / 'step-000000020'} cannot be read (")
    assert err.rstrip().endswith("kept as .step-000000020.damaged; resuming from the one "
                                 "before it")
    for f in (tmp_path / "step-000000010").iterdir():
        os.truncate(f, 100)
    capsys.readouterr()
    with pytest.raises(ConfigError, match=r"no checkpoint in .* can be read \(each is kept as "
                                          r"\.step-\*\.damaged\): run it again to train it "
                                          "from its start"):
        load_latest(tmp_path, model=fresh, optimizer=fresh_optimizer)
    # (the last one's note said "resuming from the one before it": there was none)
    assert capsys.readouterr().err.rstrip().endswith(
        "kept as .step-000000010.damaged; there is none before it")
    assert load_latest(tmp_path, model=fresh, optimizer=fresh_optimizer) is None


@pytest.mark.parametrize("error", [KeyboardInterrupt, lambda: OSError(5, "Input/output error"),
                                   lambda: torch.OutOfMemoryError("CUDA out of memory")])
def test_a_stop_or_an_error_while_loading_sets_no_checkpoint_aside(tmp_path, monkeypatch, error):
    """DCP wraps whatever its read raises, Ctrl-C included, in its CheckpointException: a stop
    or an error a whole checkpoint meets too (no memory, a passing I/O error) set the newest
    good checkpoint aside as damaged and went on from the one before."""
    import torch.distributed.checkpoint as dcp

    model, optimizer = _model_and_optimizer(4, 1.0)
    for step in (10, 20):
        save(tmp_path, step=step, keep=2, model=model, optimizer=optimizer,
             train_state={"step": step}, d=Dist())

    def fails(self, plan, planner):
        raise error()

    monkeypatch.setattr(dcp.FileSystemReader, "read_data", fails)
    fresh, fresh_optimizer = _model_and_optimizer(4, 0.0)
    with pytest.raises(BaseException) as raised:
        load_latest(tmp_path, model=fresh, optimizer=fresh_optimizer)
    assert not isinstance(raised.value, ConfigError)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000010", "step-000000020"]
    assert not list(tmp_path.glob(".*.damaged"))


def test_atomic_save_replaces_whole_file(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": 1}, path)
    atomic_save({"a": 2}, path)
    assert torch.load(path)["a"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_a_checkpoint_before_the_first_step_leaves_the_run_as_it_was(tmp_path):
    """`get_state_dict` fills an optimizer with no state by a step at LR 0: AdamW's step
    count went to 1, so the first real update was bias-corrected as a second one (a trunk
    whose branch point falls in its first batch saves at step 0, and trained another run)."""
    def run(save_first: bool) -> tuple[torch.Tensor, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 4)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        if save_first:
            save(tmp_path, step=0, keep=1, model=model, optimizer=optimizer,
                 train_state={"step": 0}, d=Dist())
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.arange(4.0)).square().sum().backward()
            optimizer.step()
        return model.weight.detach().clone(), optimizer

    alone, _ = run(save_first=False)
    saved, optimizer = run(save_first=True)
    assert torch.equal(saved, alone)
    assert float(optimizer.state_dict()["state"][0]["step"]) == 3.0
    torch.manual_seed(1)
    fresh = torch.nn.Linear(4, 4)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    load_latest(tmp_path, model=fresh, optimizer=fresh_optimizer)
    assert float(fresh_optimizer.state_dict()["state"][0]["step"]) == 0.0


def test_a_step_damaged_again_is_set_aside_beside_the_first(tmp_path, capsys):
    """A step damaged, trained again and damaged again (a disk that fills up again): the
    rename onto the first `.damaged` folder failed inside the handler, a traceback."""
    from trainer.checkpoint import set_aside

    for n in range(3):
        (tmp_path / "step-000000016").mkdir()
        (tmp_path / "step-000000016" / "f").write_text(str(n))
        set_aside(tmp_path / "step-000000016", "EOFError")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".step-000000016.damaged", ".step-000000016.damaged-2", ".step-000000016.damaged-3"]
    assert (tmp_path / ".step-000000016.damaged-3" / "f").read_text() == "2"
    assert capsys.readouterr().err.count("cannot be read (EOFError)") == 3
