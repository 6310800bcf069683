"""`python -m trainer`: one run at a time in a run directory."""

import re
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


def test_sigterm_says_how_to_resume_and_gives_the_lease_back(tmp_path):
    """A scheduler's SIGTERM ended the run with exit 143 and no word (Ctrl-C said how to
    resume)."""
    import signal

    overrides = [*_overrides(tmp_path), "train.tokens=10_000_000",
                 "train.checkpoint_every_tokens=2048"]
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = RunPaths.for_config(compose(overrides), config_id(compose(overrides))).run_dir
    deadline = time.time() + 120
    while not list((run_dir / "checkpoints").glob("step-*")):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == ("terminated (SIGTERM): re-run the same command to "
                                            "resume from the last checkpoint")
    assert not (run_dir / "lease.json").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_ends_the_run_after_its_step_with_a_checkpoint_of_it(tmp_path, sig):
    """Ctrl-C (or SIGTERM) ended the run where it landed, and a resume went back to the last
    cadence checkpoint: every step since was trained again. Now the step in progress ends,
    is saved, and the run stops: the resume starts at the step the history ends at."""
    import json
    import signal

    from trainer.loop import TrainingRun
    from trainer.reporting import NullReporter

    overrides = [*_overrides(tmp_path), "train.tokens=10_000_000", "train.log_every_steps=1",
                 "train.checkpoint_every_tokens=5_000_000"]  # (no cadence save before the stop)
    cfg = compose(overrides)
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = RunPaths.for_config(cfg, config_id(cfg)).run_dir
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or len(
            (run_dir / "metrics.jsonl").read_text().splitlines()) < 5:
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig), err[-2000:]
    said = "Ctrl-C" if sig == "SIGINT" else "SIGTERM"
    assert f"{said}: stopping after this step, with a checkpoint of it (again to stop at " \
           "once)" in err
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["step"] for r in rows)
    assert last >= 5
    assert [p.name for p in (run_dir / "checkpoints").glob("step-*")] == [f"step-{last:09d}"]
    assert TrainingRun(cfg, reporter=NullReporter()).restore() == last


def test_a_second_signal_stops_at_once_and_the_handlers_come_back():
    import os
    import signal

    from trainer import stopping

    before = signal.getsignal(signal.SIGINT)
    with stopping.between_steps(enabled=True):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # (the handler runs between bytecodes of this thread)
        assert stopping.requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before and not stopping.requested()
    with stopping.between_steps(enabled=False):  # (a run of several processes)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_a_ctrl_c_while_torch_loads_is_told_as_a_stop(monkeypatch, capsys):
    """Ctrl-C in a run's first seconds, while `python -m trainer` imported torch, printed a
    KeyboardInterrupt traceback (the import came before the stop was handled) and exit -2."""
    class Interrupted:  # (an import finder: the Ctrl-C lands inside the import)
        def find_spec(self, name, path=None, target=None):
            if name == "trainer.distributed":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "trainer.distributed", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    try:
        code = main(["--cfg"])
    except KeyboardInterrupt:  # (pytest would take it for its own Ctrl-C and stop)
        pytest.fail("the Ctrl-C left main() as a KeyboardInterrupt: a traceback")
    assert code == 130
    assert capsys.readouterr().err.strip() == ("interrupted: re-run the same command to resume "
                                               "from the last checkpoint")
    # under torchrun each rank said it: rank 0 alone does
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, said in (("1", ""), ("0", "interrupted: re-run the same command to resume from "
                                        "the last checkpoint")):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.delitem(sys.modules, "trainer.distributed", raising=False)
        assert main(["--cfg"]) == 130
        assert capsys.readouterr().err.strip() == said


def test_a_stop_inside_a_checkpoint_write_is_told_as_a_stop():
    """Ctrl-C or SIGTERM while DCP writes a checkpoint reaches the command wrapped in DCP's
    CheckpointException: it printed that stack and exited 1."""
    import traceback

    from torch.distributed.checkpoint.api import CheckpointException

    from trainer.errors import Terminated, stopped_by

    def wrapped(err):
        return CheckpointException("write failed", {0: (err, traceback.StackSummary())})

    assert stopped_by(wrapped(Terminated())) is Terminated
    assert stopped_by(wrapped(KeyboardInterrupt())) is KeyboardInterrupt
    assert stopped_by(KeyboardInterrupt()) is KeyboardInterrupt
    assert stopped_by(wrapped(OSError("disk full"))) is None


def test_a_key_no_run_reads_or_given_twice_is_noted(tmp_path, capsys):
    """`schedule=cosine schedule.b=0.5` trained the same model under another id, and
    `optim.lr=1e-3 optim.lr=2e-3` took the last, both without a word (a sweep refuses the
    first)."""
    overrides = [*_overrides(tmp_path), "schedule.b=0.5", "optim.lr=1e-3", "optim.lr=2e-3"]
    assert main([*overrides, "--cfg"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: optim.lr is given 2 times: the run takes the last, optim.lr=2e-3",
        "note: schedule.b is not read here: schedule=constant does not read it (only power "
        "does); it only changes the run id (the same model under another)"]


@pytest.mark.parametrize("schedule", ["wsd", "power"])
def test_a_decay_key_without_a_decay_is_noted(tmp_path, capsys, schedule):
    """`schedule.decay_fraction=0 schedule.decay_shape=linear` trained the model of
    decay_fraction=0 alone under another id, without a word (as under cosine it is said)."""
    overrides = [*(o for o in _overrides(tmp_path) if not o.startswith("schedule=")),
                 f"schedule={schedule}", "schedule.decay_fraction=0",
                 "schedule.decay_shape=linear", "schedule.min_lr_ratio=0.1"]
    assert main([*overrides, "--cfg"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: schedule.{key} is not read here: schedule.decay_fraction=0 leaves "
        f"schedule={schedule} no final decay to shape; it only changes the run id (the same "
        "model under another)" for key in ("decay_shape", "min_lr_ratio")]


def test_tracking_given_after_the_run_ended_records_it_from_its_files(tmp_path, capsys):
    # The README's `python -m trainer tracking.uri=...` after a run without it: "nothing to
    # train ... nothing written", so the run never reached MLflow short of training it again.
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    assert main(_overrides(tmp_path)) == 0
    capsys.readouterr()
    assert main([*_overrides(tmp_path), f"tracking.uri={uri}"]) == 0
    out = capsys.readouterr().out
    assert "the ended run recorded from its files" in out
    # (--help promised the result of an ended run: its status alone was said)
    assert re.search(r"^this run has already ended \(finished: final eval loss \d+\.\d{4} "
                     r"after [\d,]+ tokens\); nothing to train\.$", out, re.M), out
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("proxysweep").experiment_id])
    assert run.data.tags["trial.status"] == "finished" and run.info.status == "FINISHED"
    assert run.data.params["derived.n_params"] and run.data.metrics["final/eval_loss"] > 0
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert logged and logged == sorted(set(logged))
    assert main([*_overrides(tmp_path), f"tracking.uri={uri}"]) == 0  # once only
    assert "its record was there already" in capsys.readouterr().out
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_every_override_that_cannot_compose_is_said_at_once(capsys):
    """Hydra stops at the first: four mistakes took four runs of the command to see."""
    assert main(["--cfg", "optim.lrr=1", "train.batchsize=3", "schedule=bogus",
                 "optim.lr=abc"]) == 2
    err = capsys.readouterr().err
    for said in ("unknown config key 'optim.lrr': did you mean optim.lr?",
                 "unknown config key 'train.batchsize': did you mean train.batch_size?",
                 "unknown option 'bogus' for config group 'schedule'",
                 "bad value for 'optim.lr' in override 'optim.lr=abc'"):
        assert said in err
