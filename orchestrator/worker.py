"""What runs on a Ray worker: one trial through `trainer.run`, reporting to the tracker.

The worker is the one sender of its attempt's record (see `orchestrator.tracking`). Metrics also
go to the trial's own `metrics.jsonl`, beside its `summary.json`: what the tracking server
missed (a lost worker, a long outage, a dead driver) is re-synced from there.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import asdict
from pathlib import Path

from trainer.lease import ENDED, HELD, Holder, Lease

SEND_EVERY_S = 2.0
"""A worker sends its metrics to the tracker at most this often; the rest goes with its end."""
RECORD_WAIT_S = 30.0
"""How long a worker keeps a trial's lease after the trial's end for the tracker to write that
end. A driver that finds the lease free takes what the store then holds as the record and fills
its gaps from the trial's files: released before the tracker wrote the end, the two wrote the
last steps twice. Past this (a store out longer), the lease goes and the rare double write
is the price of not holding every ending trial's slot through an outage."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_error(err: BaseException) -> str:
    """What a failed trial says about its error, on one line: the exception a Ray actor
    call raised rather than Ray's wrapper (colour codes, the actor's repr and its remote
    traceback), and no terminal colour codes."""
    cause = getattr(err, "cause", None)  # RayTaskError and its kin wrap the original
    if isinstance(cause, BaseException):
        err = cause
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    return f"{type(err).__name__}: {'; '.join(lines)}" if lines else type(err).__name__


def lost_errors() -> tuple[type, ...]:
    """The Ray errors of a task whose worker or node died, which Ray re-runs itself
    (`max_retries`): past them, resubmitting would run the trial (retries + 1)² times."""
    import ray.exceptions as e

    return (e.WorkerCrashedError, e.NodeDiedError, e.OutOfMemoryError)


def trial_task(fn, *, sweep: str, driver_pid: int):
    """`fn` under the trial's lease: what the driver hands to Ray for every trial.

    A trial whose lease another live attempt holds (another driver's) is not run: the task
    returns `{"status": HELD, "holder": ...}` at once, and sends nothing to the tracker. One that
    has ended meanwhile (read under the lease, so no attempt can be ending it) returns
    `{"status": ENDED, "summary": ...}`: whoever ended it records it.

    (Trials used to run at CPU niceness 19, below the tracking actor; measured on the scheduler
    benchmark after the one-sender protocol, it no longer paid: benchmarks/README.md.)
    """
    def run_as_trial(cfg, *args):
        lease = Lease.acquire(_run_dir(cfg), sweep=sweep, driver_pid=driver_pid)
        if isinstance(lease, Holder):
            return {"status": HELD, "holder": asdict(lease)}
        with lease:
            summary = _ended_summary(cfg)
            if summary is not None:
                return {"status": ENDED, "summary": summary}
            with _cpu_unless_given_a_gpu():
                result = fn(cfg, *args)
            await_records([result])
            return result
    # Ray names the task, and its worker's process title, after the function: keep `run_trial`.
    run_as_trial.__name__ = run_as_trial.__qualname__ = fn.__name__
    return run_as_trial


def trunk_task(fn, *, sweep: str, driver_pid: int):
    """`fn` (`orchestrator.sharing.run_trunk`) under the lease of the trunk's directory, its
    fourth argument: one live trainer per trunk across drivers, as for trials. Held by another
    driver's worker, the task returns `{"status": HELD, "holder": ...}` at once; its branches
    follow that trunk's checkpoints all the same."""
    def run_as_trunk(cfg, tracker, trunk_id, directory, *args):
        lease = Lease.acquire(directory, sweep=sweep, driver_pid=driver_pid)
        if isinstance(lease, Holder):
            return {"status": HELD, "holder": asdict(lease)}
        with lease, _cpu_unless_given_a_gpu():
            return fn(cfg, tracker, trunk_id, directory, *args)
    run_as_trunk.__name__ = run_as_trunk.__qualname__ = fn.__name__
    return run_as_trunk


def trunk_group_task(fn, *, sweep: str, driver_pid: int):
    """`fn` (`orchestrator.sharing.run_trunk_group`) under the lease of each trunk's
    directory: a trunk another driver's worker holds is answered HELD (as `trunk_task`
    answers) and the others train; {trunk id: result} for every trunk."""
    def run_as_trunk_group(cfgs, tracker, trunk_ids, directories, *args):
        from contextlib import ExitStack

        answers, free = {}, []
        with ExitStack() as leases:
            for k, directory in enumerate(directories):
                lease = Lease.acquire(directory, sweep=sweep, driver_pid=driver_pid)
                if isinstance(lease, Holder):
                    answers[trunk_ids[k]] = {"status": HELD, "holder": asdict(lease)}
                else:
                    leases.enter_context(lease)
                    free.append(k)
            if free:
                with _cpu_unless_given_a_gpu():
                    answers.update(fn([cfgs[k] for k in free], tracker,
                                      [trunk_ids[k] for k in free],
                                      [directories[k] for k in free], *args))
        return answers
    run_as_trunk_group.__name__ = run_as_trunk_group.__qualname__ = fn.__name__
    return run_as_trunk_group


def group_task(fn, *, sweep: str, driver_pid: int):
    """`fn` (`run_group_trials`) under the lease of each member of a fused group: the members
    another live attempt holds, or that have ended, are answered as `trial_task` answers for
    them (HELD, ENDED) and the group trains the rest; {trial id: result} for every member."""
    def run_as_group(cfgs, *args):
        from contextlib import ExitStack

        from trainer.identity import config_id

        answers, free = {}, []
        with ExitStack() as leases:
            for cfg in cfgs:
                trial_id = config_id(cfg)
                lease = Lease.acquire(_run_dir(cfg), sweep=sweep, driver_pid=driver_pid)
                if isinstance(lease, Holder):
                    answers[trial_id] = {"status": HELD, "holder": asdict(lease)}
                    continue
                leases.enter_context(lease)
                summary = _ended_summary(cfg)
                if summary is not None:
                    answers[trial_id] = {"status": ENDED, "summary": summary}
                else:
                    free.append(cfg)
            if free:
                with _cpu_unless_given_a_gpu():
                    answers.update(fn(free, *args))
                await_records(answers.values())
        return answers
    run_as_group.__name__ = run_as_group.__qualname__ = fn.__name__
    return run_as_group


def await_records(answers) -> None:
    """Wait (at most `RECORD_WAIT_S`) for the tracker to write the ends that `answers` (a
    trial task's results) sent: their `recorded` ObjectRefs. A failed write counts as done:
    the driver re-syncs that trial."""
    import ray

    refs = [a["recorded"] for a in answers
            if isinstance(a, dict) and isinstance(a.get("recorded"), ray.ObjectRef)]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=RECORD_WAIT_S)


@contextlib.contextmanager
def _cpu_unless_given_a_gpu():
    """A task that Ray gave no GPU trains `train.device=auto` on the CPU (`NO_GPU_ENV`, which
    the processes it starts inherit): it must not take a GPU scheduled for other trials."""
    import ray

    from trainer.distributed import NO_GPU_ENV

    # (Called outside Ray, as tests do, it changes nothing: asking for the runtime context
    # would start a Ray.)
    if not ray.is_initialized() or ray.get_runtime_context().get_accelerator_ids().get("GPU"):
        yield
        return
    before = os.environ.get(NO_GPU_ENV)
    os.environ[NO_GPU_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NO_GPU_ENV, None)
        else:
            os.environ[NO_GPU_ENV] = before


def run_group_trials(cfgs, tracker, labels: dict, threads: int, *, pruners=None) -> dict:
    """Train a fused group (`trainer.run_group`), each member reporting to `tracker` as its
    own trial; {trial id: {status, summary, error, recorded}}, as `run_trial` answers. The
    trainer raising fails every member (the driver tries the group again). `pruners`: one
    per member, an adaptive search's (`trainer.loop.Pruner`)."""
    import torch

    import trainer
    from trainer.paths import RunPaths
    from trainer.reporting import JsonlReporter, MultiReporter
    from trainer.schema import FAILED

    torch.set_num_threads(max(1, threads))
    ids = [trainer.config_id(cfg) for cfg in cfgs]
    reporters = [TrackerReporter(tracker, tid, labels[tid], trial_params(cfg, {}))
                 for tid, cfg in zip(ids, cfgs, strict=True)]
    histories = [MultiReporter(JsonlReporter(RunPaths.for_config(cfg, tid).metrics,
                                             echo=False), rep)
                 for tid, cfg, rep in zip(ids, cfgs, reporters, strict=True)]
    try:
        results = trainer.run_group(cfgs, histories, pruners)
    except Exception as err:
        error = describe_error(err)
        answers = {}
        for tid, rep in zip(ids, reporters, strict=True):
            if rep.ended is not None:  # it ended in the group before the error (a pruned
                status, summary = rep.ended  # member, an earlier set): as it ended
                answers[tid] = {"status": status, "summary": summary, "recorded": rep.recorded}
                continue
            rep.finish(status=FAILED, summary={})
            answers[tid] = {"status": FAILED, "summary": {}, "error": error,
                            "recorded": rep.recorded}
        return answers
    answers = {}
    for tid, rep, result in zip(ids, reporters, results, strict=True):
        if rep.recorded is None:  # it had ended before: the group only read its summary
            rep.finish(status=result.status, summary=result.summary)
        answers[tid] = {"status": result.status, "summary": result.summary,
                        "recorded": rep.recorded}
    return answers


class TrackerReporter:
    """The trainer's Reporter in a sweep: the one sender of an attempt's record.

    `start` sends the tracker `begin`, metrics go in one `log_steps` call per `SEND_EVERY_S`
    (rather than one per logged step: a hundred trials each calling the actor a few times a
    second kept it, and the CPUs, busy with call handling on a small machine), and `finish`
    sends `end` with what is left. All from this process, so the tracker receives them in
    order. `recorded` is the end call's ObjectRef, for the driver to wait on. A worker that
    dies loses what it had not sent; the trial's `metrics.jsonl` has it, and the re-sync at the
    end of the launch restores it.
    """

    def __init__(self, tracker, trial_id: str, label: str, params: dict):
        self.tracker, self.trial_id, self.label, self.params = tracker, trial_id, label, params
        self.pending: list[tuple[int, dict]] = []
        self.sent_at = time.monotonic()
        self.began = False
        self.recorded = None  # ObjectRef of the tracker's answer to `end`
        self.ended: tuple[str, dict] | None = None  # (status, summary) sent with `end`

    def start(self, *, run_id: str, params: dict, resumed_step: int | None) -> None:
        # Fire and forget, as every call here: no trial waits on the tracker. The clock is
        # this worker's: the tracker may take the call later (it may still be starting).
        self.tracker.begin.remote(self.trial_id, self.label, params, resumed_step,
                                  started_ms=int(time.time() * 1000))
        self.began = True

    def log_metrics(self, metrics: dict, *, step: int) -> None:
        self.pending.append((step, dict(metrics)))
        if time.monotonic() - self.sent_at >= SEND_EVERY_S:
            self.tracker.log_steps.remote(self.trial_id, self.pending)
            self.pending, self.sent_at = [], time.monotonic()

    def finish(self, *, status: str, summary: dict) -> None:
        """Send the end. An attempt that trained nothing (its trial had ended before, or it
        failed first) begins here, at the step it stopped at: its record is not whole."""
        import ray

        if not self.began:
            derived = {k: v for k, v in summary.items() if k.startswith("derived.")}
            self.start(run_id=self.trial_id, params={**self.params, **derived},
                       resumed_step=int(summary.get("final/steps") or 0))
        self.ended = (status, summary)
        self.recorded = self.tracker.end.remote(
            self.trial_id, status, summary, self.pending,
            node=ray.get_runtime_context().get_node_id(), ended_ms=int(time.time() * 1000))
        self.pending = []


def run_trial(cfg, tracker, label: str, threads: int, *, pruner=None) -> dict:
    """Train one trial to its end, reporting to `tracker`; {status, summary, error, recorded}
    for the driver, `recorded` being the ObjectRef of the tracker's end write. A trainer that
    raised ends the attempt `failed` (its history kept to that point); the driver decides
    whether to try again. `pruner` is an adaptive search's (`trainer.loop.Pruner`)."""
    import torch

    import trainer
    from trainer.paths import RunPaths
    from trainer.reporting import JsonlReporter, MultiReporter
    from trainer.schema import FAILED

    torch.set_num_threads(max(1, threads))
    trial_id = trainer.config_id(cfg)
    history = JsonlReporter(RunPaths.for_config(cfg, trial_id).metrics, echo=False)
    reporter = TrackerReporter(tracker, trial_id, label, trial_params(cfg, {}))
    try:
        result = trainer.run(cfg, MultiReporter(history, reporter), pruner=pruner)
    except Exception as err:
        if reporter.recorded is None:  # else it failed after its end (tearing down)
            reporter.finish(status=FAILED, summary={})
        return {"status": FAILED, "summary": {}, "error": describe_error(err),
                "recorded": reporter.recorded}
    if reporter.recorded is None:  # it had ended before: the trainer only read its summary
        reporter.finish(status=result.status, summary=result.summary)
    return {"status": result.status, "summary": result.summary, "recorded": reporter.recorded}


def _paths(cfg):
    from trainer.identity import config_id
    from trainer.paths import RunPaths

    return RunPaths.for_config(cfg, config_id(cfg))


def _run_dir(cfg) -> Path:
    return _paths(cfg).run_dir


def _ended_summary(cfg) -> dict | None:
    """The trial's stored summary if it has ended (finished or diverged), else None."""
    from trainer.paths import read_summary
    from trainer.schema import DONE

    summary = read_summary(_paths(cfg))
    return summary if summary is not None and summary.get("status") in DONE else None


def trial_params(cfg, summary: dict) -> dict:
    """A child run's params as the trainer logs them: every config key, dotted, the
    summary's `derived.*` and `trial.id` (a run the re-sync completed lacked it)."""
    from trainer.identity import config_id, flatten

    return {**flatten(cfg), **{k: v for k, v in summary.items() if k.startswith("derived.")},
            "trial.id": config_id(cfg)}
