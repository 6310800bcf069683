"""Lost workers and a killed driver, with the `sweep` command in its own process."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml

from trainer.schema import sweep_runs

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).parents[2]


def _sweep(*args, uri):
    # Ctrl-C must reach the driver even when pytest itself runs as a background job, whose
    # shell hands it (and every child) SIGINT ignored.
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "--tracking-uri", uri,
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children(uri, name="unit"):
    from orchestrator.store import create_sqlite_store_once

    # (under the sweep's own lock: a client opening a new store creates its tables, and one
    # polled while the launch created them collided with it, "table already exists")
    create_sqlite_store_once(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return (client, []) if exp is None else (client, sweep_runs(client, exp.experiment_id,
                                                               "trial"))


def _newest_step(checkpoints: Path) -> int:
    from trainer.paths import saved_steps

    return max(saved_steps(checkpoints), default=0)


def _wait(predicate, timeout, proc):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _trial_workers(proc):
    """Trial workers of this test's sweep: descendants of its driver (its Ray is local), not
    those of other sweeps that may run on the same machine."""
    found = []
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in children:
        try:
            if " ".join(p.cmdline()).startswith("ray::run_trial"):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def test_killed_worker_is_retried_from_its_checkpoint(spec_dict, uri, tmp_path):
    spec_dict["grid"] = {"optim.lr": "choice(1e-2)"}
    spec_dict["overrides"] += ["train.batch_size=8", "train.log_every_steps=1"]
    spec_dict["overrides"] = [o for o in spec_dict["overrides"] if "train.tokens" not in o]
    spec_dict["overrides"] += ["train.tokens=153600", "train.checkpoint_every_tokens=20480"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)
    ckpts = lambda: list(Path(spec_dict["storage_root"]).glob("*/checkpoints/step-*"))  # noqa: E731
    _wait(lambda: ckpts() and _trial_workers(proc), 240, proc)
    (worker,) = _trial_workers(proc)
    worker.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    client, children = _children(uri)
    assert len(children) == 1
    child = children[0]
    assert child.data.tags["trial.status"] == "finished"
    assert int(child.data.tags["trial.attempt"]) == 2
    # One continuous history, nothing twice. (Steps the killed worker had not sent yet come
    # back from metrics.jsonl at the end of the launch, so the store's order is not by step.)
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 301))


def test_killed_driver_then_resume_finishes_every_trial_once(spec_dict, uri, tmp_path):
    spec_dict["max_concurrent"] = 1
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)

    def one_finished():
        return any(c.data.tags.get("trial.status") == "finished" for c in _children(uri)[1])

    _wait(one_finished, 240, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _sweep("resume", "unit", uri=uri)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err
    assert "already done" in out
    _, children = _children(uri)
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 4
    assert len({c.data.tags["trial.id"] for c in children}) == 4


def test_bad_spec_prints_one_line_and_launches_nothing(spec_dict, uri, tmp_path):
    spec_dict["grid"] = {"optim.lr": "choice(-1, 1e-3)"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == ("error: optim.lr=-1.0 must be > 0 and finite: give a positive "
                           "learning rate (trial optim.lr=-1 seed=0)")
    assert _children(uri)[1] == []


def test_ctrl_c_after_the_summary_keeps_the_finished_launchs_exit_code(spec_dict, uri,
                                                                       tmp_path):
    """Ctrl-C while a finished launch exits (Ray shutting down, Python freeing torch's and
    MLflow's modules: seconds) ended it by the signal (-2), though every trial had finished."""
    spec_dict["grid"] = {"optim.lr": "choice(3e-3)", "train.batch_size": "choice(8)"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)
    for line in proc.stdout:  # (the summary, then where to look: the command has ended)
        if line.startswith("monitor: "):
            break
    uncaught = []  # moments where Ctrl-C would end it by the signal (not caught, alive)
    while proc.poll() is None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = dict(line.split(":", 1) for line in
                          Path(f"/proc/{proc.pid}/status").read_text().splitlines())
            if not fields["State"].strip().startswith(("Z", "X")) and not (
                    int(fields["SigCgt"], 16) & 1 << (signal.SIGINT - 1)):
                uncaught.append(fields["State"].strip())
        time.sleep(0.001)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not uncaught, uncaught
    # and one Ctrl-C in that time still ends it with the launch's code, saying nothing
    proc = _sweep("launch", str(path), uri=uri)
    for line in proc.stdout:
        if line.startswith("monitor: "):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert sorted(c.data.tags["trial.status"] for c in _children(uri)[1]) == ["finished"]


def test_ctrl_c_records_interrupted_and_resume_continues(spec_dict, uri, tmp_path):
    spec_dict["max_concurrent"] = 1
    spec_dict["fuse"] = False  # (one trial at a time: fused, the two were one group)
    spec_dict["grid"] = {"optim.lr": "choice(3e-3, 1e-2)"}
    spec_dict["overrides"] = [o for o in spec_dict["overrides"] if "train.tokens" not in o]
    spec_dict["overrides"] += ["train.tokens=409600", "train.checkpoint_every_tokens=16384",
                               "train.batch_size=8"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)
    ckpts = lambda: list(Path(spec_dict["storage_root"]).glob("*/checkpoints/step-*"))  # noqa: E731

    def logged_past_its_checkpoint():  # (a stop now would train those steps again)
        for ckpt in ckpts():
            steps = [json.loads(line)["step"] for line in
                     (ckpt.parent.parent / "metrics.jsonl").read_text().splitlines()[:-1]]
            if max(steps, default=0) > _newest_step(ckpt.parent):
                return ckpt.parent.parent
        return None

    seen = {}  # the trial seen ahead of its checkpoint (asked again, it may have caught up)

    def ahead_and_running():
        seen["run_dir"] = logged_past_its_checkpoint()
        return seen["run_dir"] is not None and _trial_workers(proc)

    _wait(ahead_and_running, 240, proc)
    run_dir = seen["run_dir"]
    workers = _trial_workers(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping: 1 running task saves the step in progress first (up to 30 s; Ctrl-C " \
           "again to stop at once)" in err, err
    # The step in progress was saved: every step it logged is in its newest checkpoint.
    logged = [json.loads(line)["step"] for line in
              (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert _newest_step(run_dir / "checkpoints") >= max(logged)
    client, children = _children(uri)
    statuses = sorted(c.data.tags["trial.status"] for c in children)
    assert statuses in (["interrupted"], ["finished", "interrupted"])
    # every step the trials logged before the stop is in MLflow now, not only after a resume
    # (the steps a stopped worker had not sent yet were missing until then, or for good)
    for child in children:
        rows = (Path(spec_dict["storage_root"]) / child.data.tags["trial.id"]
                / "metrics.jsonl").read_text().splitlines()
        assert {row["step"] for line in rows if "train/loss" in (row := json.loads(line))} == {
            m.step for m in client.get_metric_history(child.info.run_id, "train/loss")}
    # the summary counts the trial that never started (it told only of those that ran)
    assert (", 1 not started" in out) == (statuses == ["interrupted"]), out
    psutil.wait_procs(workers, timeout=10)
    assert not [w for w in workers if w.is_running()]  # nothing left running

    resumed = _sweep("resume", "unit", uri=uri)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err
    client, children = _children(uri)
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 2
    (again,) = [c for c in children if c.data.tags["trial.attempt"] == "2"]
    steps = [m.step for m in client.get_metric_history(again.info.run_id, "train/loss")]
    assert len(steps) == len(set(steps))  # nothing twice ...
    assert set(range(10, max(steps) + 1, 10)) <= set(steps)  # ... and no step missing


def test_sigterm_stops_a_launch_as_ctrl_c_does_and_resume_continues(spec_dict, uri, tmp_path):
    """A scheduler's stop (SLURM, Kubernetes, systemd: SIGTERM) printed Ray's crash report
    ("*** SIGTERM received at time=...", three times) and no word of what to do; it now stops
    the launch as Ctrl-C does: trials recorded interrupted, `sweep resume` named, exit 143."""
    spec_dict["max_concurrent"] = 1
    spec_dict["fuse"] = False  # (one trial at a time: fused, the two were one group)
    spec_dict["grid"] = {"optim.lr": "choice(3e-3, 1e-2)"}
    spec_dict["overrides"] = [o for o in spec_dict["overrides"] if "train.tokens" not in o]
    spec_dict["overrides"] += ["train.tokens=409600", "train.checkpoint_every_tokens=16384",
                               "train.batch_size=8"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)
    ckpts = lambda: list(Path(spec_dict["storage_root"]).glob("*/checkpoints/step-*"))  # noqa: E731
    _wait(lambda: ckpts() and _trial_workers(proc), 240, proc)
    workers = _trial_workers(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "SIGTERM received" not in out + err
    assert ("sweep unit stopped before its end (SIGTERM): nothing done is lost, "
            "`sweep resume unit` goes on") in out.splitlines(), out + err
    client, children = _children(uri)
    statuses = sorted(c.data.tags["trial.status"] for c in children)
    assert statuses in (["interrupted"], ["finished", "interrupted"])
    parent = client.get_run(children[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["sweep.status"] == "interrupted"
    assert "sweep.launch" in parent.data.tags  # (the start of the pace `status` reads)
    psutil.wait_procs(workers, timeout=10)
    assert not [w for w in workers if w.is_running()]  # nothing left running

    resumed = _sweep("resume", "unit", uri=uri)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out + err
    done = statuses.count("finished")  # (not trained again)
    assert f"2 trials, {done} already done, ran {2 - done} " in out, out
    client, children = _children(uri)
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 2
    (again,) = [c for c in children if c.data.tags["trial.attempt"] == "2"]  # from its checkpoint
    steps = [m.step for m in client.get_metric_history(again.info.run_id, "train/loss")]
    assert len(steps) == len(set(steps))


def _ran(out):
    """How many trials a `sweep` command trained, from its summary line."""
    line = next(line for line in out.splitlines() if line.startswith("sweep unit:"))
    return int(line.split("ran ")[1].split()[0]) if "ran " in line else 0


def _trained_once(uri, storage_root, num_trials):
    """Every trial has one child run, finished on its first attempt, and no step twice in
    MLflow or in its metrics.jsonl."""
    client, children = _children(uri)
    assert len(children) == num_trials
    assert len({c.data.tags["trial.id"] for c in children}) == num_trials
    for child in children:
        assert child.data.tags["trial.status"] == "finished"
        assert child.data.tags["trial.attempt"] == "1"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert steps and len(steps) == len(set(steps))
        rows = (Path(storage_root) / child.data.tags["trial.id"] / "metrics.jsonl")
        logged = [json.loads(line)["step"] for line in rows.read_text().splitlines()
                  if "train/loss" in line]
        assert sorted(logged) == sorted(steps)


def test_two_launches_at_once_train_every_trial_once(spec_dict, uri, tmp_path):
    spec_dict["max_concurrent"] = 1  # each driver one trial at a time: they meet on the queue
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    first, second = _sweep("launch", str(path), uri=uri), _sweep("launch", str(path), uri=uri)
    (out1, err1), (out2, err2) = first.communicate(timeout=400), second.communicate(timeout=400)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    _trained_once(uri, spec_dict["storage_root"], 4)
    # Both began with nothing done: every trial trained by exactly one of them (the later
    # one may find some already done, trained by the first).
    assert _ran(out1) + _ran(out2) == 4


def _long_trials(spec_dict, tokens: int = 409600):
    spec_dict["max_concurrent"] = 1
    spec_dict["fuse"] = False  # (one trial at a time, each its own lease: fused, one group)
    spec_dict["grid"] = {"optim.lr": "choice(3e-3, 1e-2)"}
    spec_dict["overrides"] = [o for o in spec_dict["overrides"] if "train.tokens" not in o]
    spec_dict["overrides"] += [f"train.tokens={tokens}", "train.checkpoint_every_tokens=16384",
                               "train.batch_size=8"]


def test_resume_while_running_waits_for_the_trial_the_other_driver_trains(
        spec_dict, uri, tmp_path):
    # Trials long enough (~15 s each here) that the second driver, which takes seconds to
    # start, finds the first one still training: at 409,600 tokens a CI run once saw the
    # first driver end both trials before the second one looked.
    _long_trials(spec_dict, tokens=1_228_800)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    first = _sweep("launch", str(path), uri=uri)
    ckpts = lambda: list(Path(spec_dict["storage_root"]).glob("*/checkpoints/step-*"))  # noqa: E731
    _wait(lambda: ckpts() and _children(uri)[1], 240, first)
    second = _sweep("resume", "unit", uri=uri)
    out2, err2 = second.communicate(timeout=400)
    out1, err1 = first.communicate(timeout=400)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    # Whichever found the other's lease says so: the resume at its start (the first trial is
    # being trained), or either driver on a trial they both reached.
    said = [f"1 trial is running under another driver (host {socket.gethostname()}, "
            f"pid {other.pid}, since " in out for out, other in ((out2, first), (out1, second))]
    assert any(said), out1 + out2
    _trained_once(uri, spec_dict["storage_root"], 2)
    assert _ran(out1) + _ran(out2) == 2


def test_a_killed_drivers_leases_are_taken_over_by_resume(spec_dict, uri, tmp_path):
    _long_trials(spec_dict)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    proc = _sweep("launch", str(path), uri=uri)
    leases = lambda: list(Path(spec_dict["storage_root"]).glob("*/lease.json"))  # noqa: E731
    ckpts = lambda: list(Path(spec_dict["storage_root"]).glob("*/checkpoints/step-*"))  # noqa: E731
    _wait(lambda: ckpts() and leases() and _trial_workers(proc), 240, proc)
    (held,) = leases()
    os.kill(proc.pid, signal.SIGKILL)  # its worker holds the lease until it dies
    proc.wait()
    assert held.exists()  # left behind: nobody gave it back
    resumed = _sweep("resume", "unit", uri=uri)
    out, err = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out + err
    assert _ran(out) == 2  # the held trial taken over, the other one started
    client, children = _children(uri)
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 2
    (again,) = [c for c in children if c.data.tags["trial.id"] == held.parent.name]
    assert again.data.tags["trial.attempt"] == "2"  # resumed, under the same child run
    steps = [m.step for m in client.get_metric_history(again.info.run_id, "train/loss")]
    assert len(steps) == len(set(steps))
    assert not leases()  # every lease given back


def test_two_launches_of_a_shared_sweep_train_each_trunk_once(spec_dict, uri, tmp_path):
    spec_dict["overrides"] = [o for o in spec_dict["overrides"] if "train.tokens" not in o]
    spec_dict["overrides"] += ["train.batch_size=8", "schedule.decay_fraction=0.1"]
    spec_dict["grid"] = {"train.tokens": "choice(65536, 131072, 262144)"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    first, second = _sweep("launch", str(path), uri=uri), _sweep("launch", str(path), uri=uri)
    (out1, err1), (out2, err2) = first.communicate(timeout=600), second.communicate(timeout=600)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    _trained_once(uri, spec_dict["storage_root"], 3)
    assert _ran(out1) + _ran(out2) == 3
    (trunk_dir,) = (Path(spec_dict["storage_root"]) / "trunks").iterdir()
    steps = [json.loads(line)["step"] for line in (trunk_dir / "metrics.jsonl").read_text()
             .splitlines() if "train/loss" in line]
    assert steps and len(steps) == len(set(steps))  # one trainer, once
    assert "trunk " in out1 + out2 and "running under another driver" in out1 + out2
