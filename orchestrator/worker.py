"""What runs on a Ray worker: one trial through `trainer.run`, reporting to the tracker.

Metrics also go to the trial's own `metrics.jsonl`, beside its `summary.json`: what the
tracking server missed (a long outage, a dead driver) is re-synced from there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SEND_EVERY_S = 2.0
"""A worker sends its metrics to the tracker at most this often; the rest goes with its end."""
TRIAL_NICENESS = 19
"""A trial's processes run at this CPU niceness (Ray starts workers at 15, its daemons at 0)."""


def trial_task(fn):
    """`fn`, run at `TRIAL_NICENESS`: what the driver hands to Ray for every trial.

    The sweep's tracking actor is a Ray worker too, at Ray's worker niceness, and on the
    driver's node it shares the CPUs with trial processes. When trials end faster than it
    writes them (many short proxies) it falls behind, and the sweep is not over until it has
    caught up; with the trials below it, it gets the CPU first (in the scheduler benchmark on
    2 cores its backlog after the last trial went from 9.6-14.1 s to 5.8-11.6 s). Where the CPUs are
    not contended (a GPU node runs a few trainers on many cores) niceness changes nothing. A
    process may lower its own priority without privileges, never raise it: the worker keeps
    it for the next trial Ray gives it, which is again a trial.
    """
    def run_as_trial(*args):
        _lower_priority(TRIAL_NICENESS)
        return fn(*args)
    # Ray names the task, and its worker's process title, after the function: keep `run_trial`.
    run_as_trial.__name__ = run_as_trial.__qualname__ = fn.__name__
    return run_as_trial


class TrackerReporter:
    """The trainer's Reporter, forwarding to the sweep's tracking actor.

    Metrics go in one call per `SEND_EVERY_S` rather than one per logged step: a hundred
    trials each calling the actor a few times a second kept it (and the CPUs) busy with call
    handling on a small machine, and the tracker writes a running trial's metrics no more
    often than every 10 s anyway. A worker that dies loses what it had not sent; the trial's
    `metrics.jsonl` has it, and the re-sync at the end of the launch restores it.

    What is left at the end is not sent: it goes back to the driver with the task's result
    (`end_report`), and from there to the tracker in the same call as the trial's end. Sent
    from here, it could reach the tracker after that end (the driver's calls and this
    worker's are not ordered), and then after the sweep was closed: steps lost. The count of
    sends goes with it, so the tracker knows whether all of them have arrived.
    """

    def __init__(self, tracker, trial_id: str, label: str):
        self.tracker, self.trial_id, self.label = tracker, trial_id, label
        self.pending: list[tuple[int, dict]] = []
        self.sent_at = time.monotonic()
        self.sends = 0
        self.sender = os.urandom(6).hex()  # this attempt, for the tracker's count of sends
        self.from_scratch: bool | None = None

    def start(self, *, run_id: str, params: dict, resumed_step: int | None) -> None:
        # Fire and forget: the driver opened the trial's run when it submitted the task, so
        # the trial never waits on the tracker (which may still be starting).
        self.tracker.begin_attempt.remote(self.trial_id, params, resumed_step)
        self.from_scratch = resumed_step is None

    def log_metrics(self, metrics: dict, *, step: int) -> None:
        self.pending.append((step, dict(metrics)))
        if time.monotonic() - self.sent_at >= SEND_EVERY_S:
            self.send()

    def send(self) -> None:
        # Fire and forget: calls from one worker to one actor arrive in order.
        if self.pending:
            self.tracker.log_steps.remote(self.trial_id, self.pending, self.sender)
            self.sends += 1
        self.pending, self.sent_at = [], time.monotonic()

    def finish(self, *, status: str, summary: dict) -> None:
        """Nothing is sent: the driver records the end from the task's result, once."""

    def end_report(self) -> dict:
        """For the task's result: the steps not sent, how many sends went before, and whether
        this attempt began at step 0 (the begin above may reach the tracker after the end the
        driver sends: a worker's first call waits while the actor is still starting)."""
        return {"unsent": self.pending, "sends": self.sends, "sender": self.sender,
                "from_scratch": self.from_scratch}


def _lower_priority(niceness: int) -> None:
    """Every thread of this process to `niceness` (if it was below): on Linux a niceness
    belongs to a thread, and Ray's own threads (RPC, event loops) were started at 0."""
    if not hasattr(os, "setpriority"):  # not on Windows
        return
    tasks = Path("/proc/self/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except OSError:  # a thread that ended meanwhile
            pass


class TrialFailed(Exception):
    """The trainer raised. Carries its error and the reporter's `end_report`: the steps the
    worker had not sent (up to `SEND_EVERY_S` of them), which the driver hands to the tracker
    with the failure; the trial's MLflow history would otherwise stop short of its end."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report

    def __reduce__(self):  # Ray pickles the exception back to the driver
        return TrialFailed, (self.args[0], self.report)


def run_trial(cfg, tracker, label: str, threads: int) -> dict:
    """Train one trial to its end; {status, summary, params, node, unsent, sends, sender,
    from_scratch} for the driver to record."""
    import ray
    import torch

    import trainer
    from trainer.paths import RunPaths
    from trainer.reporting import JsonlReporter, MultiReporter

    torch.set_num_threads(max(1, threads))
    trial_id = trainer.config_id(cfg)
    history = JsonlReporter(RunPaths.for_config(cfg, trial_id).metrics, echo=False)
    reporter = TrackerReporter(tracker, trial_id, label)
    try:
        result = trainer.run(cfg, MultiReporter(history, reporter))
    except Exception as err:
        raise TrialFailed(f"{type(err).__name__}: {err}", reporter.end_report()) from err
    params = trial_params(cfg, result.summary)
    return {"status": result.status, "summary": result.summary, "params": params,
            "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
            **reporter.end_report()}


def trial_params(cfg, summary: dict) -> dict:
    """A child run's params: every config key, dotted, and the summary's `derived.*`."""
    from trainer.identity import flatten

    return {**flatten(cfg), **{k: v for k, v in summary.items() if k.startswith("derived.")}}
