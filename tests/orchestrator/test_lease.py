"""Trial leases: one live attempt per trial, with holders in other processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from orchestrator.worker import trial_task
from trainer import lease
from trainer.compose import compose
from trainer.identity import config_id
from trainer.lease import HELD, Holder, Lease, current_holder, describe_holders
from trainer.paths import RunPaths

HOLD = """
import sys, time
from trainer.lease import Lease
held = Lease.acquire(sys.argv[1], sweep="other", driver_pid=4242)
print("held" if isinstance(held, Lease) else "refused", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder_process(tmp_path):
    """Start a process that takes the lease of a directory and keeps it until killed."""
    procs = []

    def start(run_dir):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_held_lease_names_its_holder_and_is_taken_over_when_its_process_dies(
        tmp_path, holder_process):
    run_dir = tmp_path / "trial"
    proc = holder_process(run_dir)

    found = Lease.acquire(run_dir, sweep="mine", driver_pid=os.getpid())
    assert isinstance(found, Holder)
    assert (found.sweep, found.host, found.pid, found.driver_pid) == (
        "other", socket.gethostname(), proc.pid, 4242)
    assert current_holder(run_dir) == found

    proc.send_signal(signal.SIGKILL)  # no chance to release: lease.json stays behind
    proc.wait()
    assert (run_dir / lease.LEASE_FILE).exists()
    assert current_holder(run_dir) is None  # its process is gone
    taken = Lease.acquire(run_dir, sweep="mine", driver_pid=os.getpid())
    assert isinstance(taken, Lease)
    assert current_holder(run_dir).pid == os.getpid()
    taken.release()
    assert current_holder(run_dir) is None
    assert not (run_dir / lease.LEASE_FILE).exists()
    assert (run_dir / lease.LOCK_FILE).exists()  # never deleted


def test_a_released_lease_goes_to_the_next_process(tmp_path, holder_process):
    run_dir = tmp_path / "trial"
    with Lease.acquire(run_dir, sweep="mine", driver_pid=os.getpid()):
        check = subprocess.run(
            [sys.executable, "-c", HOLD.replace("time.sleep(600)", ""), str(run_dir)],
            capture_output=True, text=True, timeout=60)
        assert check.stdout.strip() == "refused"
    proc = holder_process(run_dir)  # asserts that it got it
    assert current_holder(run_dir).pid == proc.pid


def _foreign(run_dir, *, age_s):
    now = time.time()
    holder = {"sweep": "other", "host": "node-7.cluster", "pid": 1, "driver_pid": 1,
              "since": now - age_s, "heartbeat": now - age_s}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / lease.LEASE_FILE).write_text(json.dumps(holder))


def test_a_fresh_lease_from_another_host_holds_even_where_locks_are_not_shared(tmp_path):
    run_dir = tmp_path / "trial"
    _foreign(run_dir, age_s=5)  # its lock is on another node's view of the filesystem
    found = Lease.acquire(run_dir, sweep="mine", driver_pid=os.getpid())
    assert isinstance(found, Holder) and found.host == "node-7.cluster"
    # The lock was not kept: once that holder's heartbeat is stale, the lease is free.
    _foreign(run_dir, age_s=lease.STALE_S + 1)
    assert current_holder(run_dir) is None
    taken = Lease.acquire(run_dir, sweep="mine", driver_pid=os.getpid())
    assert isinstance(taken, Lease)
    taken.release()


def test_the_holder_beats_while_it_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    run_dir = tmp_path / "trial"
    with Lease.acquire(run_dir, sweep="mine", driver_pid=os.getpid()) as held:
        first = current_holder(run_dir).heartbeat
        deadline = time.monotonic() + 30
        while current_holder(run_dir).heartbeat == first:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
        assert current_holder(run_dir).since == held.holder.since


def test_describe_holders_one_line_per_driver():
    at = time.mktime((2026, 11, 29, 14, 2, 31, 0, 0, -1))
    a = Holder("s", "gpu-1", 11, 10, at, at)
    b = Holder("s", "gpu-1", 12, 10, at + 60, at + 60)
    c = Holder("s", "gpu-2", 21, 20, at, at)
    assert describe_holders([a, b, c]) == [
        "2 trials are running under another driver (host gpu-1, pid 10, since 14:02:31)",
        "1 trial is running under another driver (host gpu-2, pid 20, since 14:02:31)"]


def test_a_trial_task_whose_lease_is_held_returns_held_without_running(tmp_path,
                                                                      holder_process):
    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    run_dir = RunPaths.for_config(cfg, config_id(cfg)).run_dir
    proc = holder_process(run_dir)
    calls = []
    task = trial_task(lambda *args: calls.append(args) or {"status": "finished"},
                      sweep="mine", driver_pid=os.getpid())

    result = task(cfg, None, "label", 1)
    assert result["status"] == HELD and calls == []
    assert Holder(**result["holder"]).pid == proc.pid

    proc.kill()
    proc.wait()
    assert task(cfg, None, "label", 1) == {"status": "finished"}
    assert len(calls) == 1
    assert current_holder(run_dir) is None  # released when the trial returned


def test_a_trial_task_that_finds_its_trial_ended_returns_its_summary_without_running(tmp_path):
    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    paths = RunPaths.for_config(cfg, config_id(cfg))
    paths.run_dir.mkdir(parents=True)
    summary = {"status": "finished", "final/eval_loss": 2.5, "final/steps": 10}
    paths.summary.write_text(json.dumps(summary))
    calls = []
    task = trial_task(lambda *args: calls.append(args), sweep="mine", driver_pid=os.getpid())
    assert task(cfg, None, "label", 1) == {"status": "ended", "summary": summary}
    assert calls == []
    paths.summary.write_text(json.dumps({**summary, "status": "failed"}))  # not ended: runs
    task(cfg, None, "label", 1)
    assert len(calls) == 1


RECORD_THEN_RELEASE = """
import sys, time
from trainer.lease import Lease
from orchestrator.tracking import Tracker
from pathlib import Path
run_dir, uri, trial_id, go = sys.argv[1:]
tracker = Tracker(uri, "unit", code_version="test", spec_yaml="")
held = Lease.acquire(run_dir, sweep="unit", driver_pid=4242)
print("held", flush=True)
while not Path(go).exists():  # the tracker is busy with other trials' ends
    time.sleep(0.05)
tracker.begin(trial_id, "x", {})
tracker.end(trial_id, "finished", {"final/steps": 4})
held.release()
"""


def test_a_trial_another_driver_ended_is_read_once_its_record_is_written(tmp_path,
                                                                        monkeypatch):
    """At the end of a launch, a trial another driver ended whose record the store lacks is
    re-synced from its files, unless that driver is still writing it: a worker keeps the
    lease until its end is written, so the store is read again once the lease is free (read
    at once, the store lacked the end and both drivers wrote the last steps)."""
    from orchestrator import driver
    from orchestrator.driver import records_of_others
    from orchestrator.trials import Trial
    from trainer.schema import DONE

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose(["model=tiny", "data=synthetic", f"storage_root={tmp_path}"])
    trial = Trial(overrides=(), cfg=cfg, trial_id=config_id(cfg), flops=0.0)
    run_dir = RunPaths.for_config(cfg, trial.trial_id).run_dir
    go = tmp_path / "go"
    read = driver.recorded_trials

    def read_then_let_the_other_write(*args):  # the other driver's tracker writes the end
        stored = read(*args)  # only once this driver has read the store
        go.touch()
        return stored

    monkeypatch.setattr(driver, "recorded_trials", read_then_let_the_other_write)
    proc = subprocess.Popen([sys.executable, "-c", RECORD_THEN_RELEASE, str(run_dir), uri,
                             trial.trial_id, str(go)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        stored = records_of_others([trial], uri, "unit", DONE)
    finally:
        proc.wait(timeout=60)
    assert stored[trial.trial_id]["status"] == "finished"
    assert records_of_others([], uri, "unit", DONE) == {}
