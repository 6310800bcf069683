"""The sweep's one writer to MLflow.

Workers never talk to the tracking store: they send metrics to a single `Tracker`, run as a Ray
actor, which buffers them and writes with `log_batch` (≤ 1000 metrics per call). One writer keeps
an embedded SQLite store free of `database is locked` and the load on a real server low.

Records follow DESIGN.md: experiment = sweep name, one parent run (tag proxysweep.kind=sweep,
the spec as artifact `sweep.yaml`), one child run per trial id, found again by its `trial.id`
tag, so a retried or resumed trial continues its own run. A resumed trial re-reports the steps
after its last checkpoint; they are dropped here (per metric, steps at or below the last one
written), so each metric's history stays one continuous curve.
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

# MLflow is imported where it is used, not here: every trial task receives the Tracker's
# handle, and unpickling it imports this module in the worker; importing MLflow there cost
# each of a hundred workers starting at once ~40 s on a loaded 2-core machine.
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"  # mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID

DONE = ("finished", "diverged")
MAX_BATCH = 1000
MAX_PARAMS = 100  # params, and tags, per log_batch call
HISTORY_KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens",
                "train/batch_tokens", "eval/loss", "perf/tokens_per_s", "perf/mfu")


def find_experiment(client: MlflowClient, name: str):
    """The sweep's experiment, or None."""
    return client.get_experiment_by_name(name)


def sweep_runs(client: MlflowClient, experiment_id: str, kind: str) -> list:
    """All runs of one `proxysweep.kind` in an experiment (paged through)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.`proxysweep.kind` = '{kind}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def recorded_trials(uri: str, sweep: str) -> dict[str, dict]:
    """trial id → {status, attempt, run} of every child run of a sweep (empty if unknown)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = find_experiment(client, sweep)
    if exp is None:
        return {}
    states = {}
    for run in sweep_runs(client, exp.experiment_id, "trial"):
        tags = run.data.tags
        states[tags["trial.id"]] = {"status": tags.get("trial.status", "running"),
                                    "attempt": int(tags.get("trial.attempt", 1)), "run": run}
    return states


class Tracker:
    """Buffered MLflow writes for one sweep. Run it as a Ray actor (`ray.remote(Tracker)`)."""

    def __init__(self, uri: str, sweep: str, *, code_version: str, spec_yaml: str,
                 flush_every_s: float = 10.0):
        from mlflow import MlflowClient

        if uri.startswith("sqlite:"):
            _cheap_sqlite_commits()
        self.client = MlflowClient(tracking_uri=uri)
        self.sweep, self.code_version, self.flush_every_s = sweep, code_version, flush_every_s
        exp = find_experiment(self.client, sweep)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(sweep)
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}  # trial id → run id
        self.attempts: dict[str, int] = {}  # trial id → attempt, for trials this tracker saw
        self.phase: dict[str, str] = {}  # trial id → submitted, running or its end status
        self.early_begin: dict[str, dict] = {}  # begins that came before their start_trial
        self.params_logged: dict[str, set[str]] = {}
        self.params_unlogged: dict[str, dict] = {}  # trial id → params held since its start
        self.last_step: dict[tuple[str, str], int] = {}  # (trial id, metric) → last step
        self.buffer: dict[str, list[Metric]] = {}  # trial id → metrics not yet written
        self.buffered_since: dict[str, float] = {}  # trial id → its oldest unwritten metric
        self.writes, self.next_check = 0, time.monotonic()
        for run in sweep_runs(self.client, self.experiment_id, "trial"):
            self.children[run.data.tags["trial.id"]] = run.info.run_id
        # In the constructor, so the parent exists before any trial calls in (an actor runs
        # no method before its constructor has returned).
        self.open_sweep(spec_yaml)

    # -- the sweep -----------------------------------------------------------------------

    def open_sweep(self, spec_yaml: str) -> str:
        """Find or create the parent run, store the spec with it, mark it running."""
        parents = sweep_runs(self.client, self.experiment_id, "sweep")
        if parents:
            self.parent_id = parents[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=self.sweep,
                                         tags={"proxysweep.kind": "sweep"})
            self.parent_id = run.info.run_id
        self.client.log_text(self.parent_id, spec_yaml, "sweep.yaml")
        self.client.set_tag(self.parent_id, "sweep.cancel", "no")
        return self.parent_id

    def cancel_requested(self) -> bool:
        """Has `sweep cancel` asked this sweep to stop?"""
        return self.client.get_run(self.parent_id).data.tags.get("sweep.cancel") == "requested"

    def close_sweep(self, status: str) -> None:
        """Flush everything and end the parent run (FINISHED, KILLED or FAILED)."""
        self.flush()
        self.client.set_tag(self.parent_id, "sweep.status", status)
        mlflow_status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.parent_id, status=mlflow_status)

    # -- trials --------------------------------------------------------------------------
    # The driver calls start_trial when it submits a trial and finish_trial/mark_trial when it
    # ends; one caller's calls arrive in order, so an end is never overtaken by its start.
    # Workers only send begin_attempt and log_metrics, fire and forget, and never wait here;
    # either may arrive before the driver's start_trial and is then held until it comes.
    # Each write to the store costs ~10-25 ms whatever its size (a transaction), and a sweep
    # may end a trial every few tens of milliseconds, so a trial gets three writes: its run,
    # its end (metrics, params, status) and its terminal state, plus one per `flush_every_s`
    # while it runs (metrics, and params the first time).

    def start_trial(self, trial_id: str, params: dict, label: str) -> str:
        """Open (or reopen, one attempt later) the child run of a submitted trial; its id.
        Its params are held, and written with the trial's next write (metrics or end)."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=label[:250], tags={
                MLFLOW_PARENT_RUN_ID: self.parent_id, "proxysweep.kind": "trial",
                "trial.id": trial_id, "trial.attempt": "1", "trial.status": "running",
                "code.version": self.code_version})
            run_id = self.children[trial_id] = run.info.run_id
            self.attempts[trial_id] = 1
            self.params_unlogged[trial_id] = dict(params)
        else:
            if trial_id not in self.attempts:  # a run of an earlier launch
                tags = self.client.get_run(run_id).data.tags
                self.attempts[trial_id] = int(tags.get("trial.attempt", 0))
                self._load_last_steps(trial_id)
            self._next_attempt(trial_id)
            # Written again (same values) with its next write: the driver that opened the
            # run may have died holding them.
            self.params_unlogged.setdefault(trial_id, {}).update(params)
        self.phase[trial_id] = "submitted"
        if trial_id in self.early_begin:
            self.begin_attempt(trial_id, self.early_begin.pop(trial_id))
        return run_id

    def begin_attempt(self, trial_id: str, params: dict) -> None:
        """A worker began the trial: hold its params (with `derived.*`, known only there).
        A second begin without a new submission is Ray re-running the task after a lost
        worker: one attempt more. A begin after the trial's end is stale and ignored."""
        phase = self.phase.get(trial_id)
        if phase is None:
            self.early_begin[trial_id] = params
            return
        if phase == "running":
            self._next_attempt(trial_id)
        elif phase != "submitted":
            return
        self.phase[trial_id] = "running"
        self.params_unlogged.setdefault(trial_id, {}).update(params)

    def _next_attempt(self, trial_id: str) -> None:
        run_id = self.children[trial_id]
        self.attempts[trial_id] += 1
        self._write(trial_id, tags={"trial.attempt": str(self.attempts[trial_id]),
                                    "trial.status": "running"})
        self.client.update_run(run_id, status="RUNNING")

    def _load_last_steps(self, trial_id: str) -> None:
        # What the store holds (a new driver knows nothing else), and never less than what
        # this tracker has already accepted, flushed or not.
        for key in HISTORY_KEYS:
            history = self.client.get_metric_history(self.children[trial_id], key)
            if history:
                known = self.last_step.get((trial_id, key), -1)
                self.last_step[(trial_id, key)] = max(known, max(m.step for m in history))

    def log_metrics(self, trial_id: str, metrics: dict, step: int) -> None:
        """Buffer metrics of a step; steps already written for a metric are dropped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is None or not math.isfinite(float(value)):
                continue
            if step <= self.last_step.get((trial_id, key), -1):
                continue
            self.last_step[(trial_id, key)] = step
            self.buffer.setdefault(trial_id, []).append(Metric(key, float(value), now, step))
            self.buffered_since.setdefault(trial_id, time.monotonic())
        if len(self.buffer.get(trial_id, ())) >= MAX_BATCH:
            self._flush_trials([trial_id])
        if time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + 1.0
            old = time.monotonic() - self.flush_every_s
            self._flush_trials([t for t, since in self.buffered_since.items() if since <= old])

    def finish_trial(self, trial_id: str, status: str, summary: dict, params: dict,
                     label: str) -> None:
        """Record a trial's end: summary metrics, status tag, run terminated."""
        from mlflow.entities import Metric

        if trial_id not in self.children:
            self.start_trial(trial_id, params, label)
        step = int(summary.get("final/steps", 0) or 0)
        final = {k: v for k, v in summary.items()
                 if k.startswith("final/") and isinstance(v, (int, float))}
        now = int(time.time() * 1000)
        self.buffer.setdefault(trial_id, []).extend(
            Metric(k, float(v), now, step) for k, v in final.items() if math.isfinite(v))
        self.mark_trial(trial_id, status, params=params)

    def mark_trial(self, trial_id: str, status: str, *, params: dict | None = None) -> None:
        """Set a trial's status, with its buffered metrics and any params not yet written;
        ended runs are terminated in MLflow too."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        metrics = self.buffer.pop(trial_id, [])
        self.buffered_since.pop(trial_id, None)
        self._write(trial_id, metrics=metrics, params=params or {},
                    tags={"trial.status": status})
        if status != "running":
            self.phase[trial_id] = status
            mlflow_status = {"finished": "FINISHED", "diverged": "FINISHED",
                             "interrupted": "KILLED"}.get(status, "FAILED")
            self.client.set_terminated(run_id, status=mlflow_status)

    def _write(self, trial_id: str, *, metrics: list[Metric] = (), params: dict | None = None,
               tags: dict | None = None) -> None:
        """One log_batch (more only past MLflow's limits) with the trial's params not yet
        written (those held since its start included), metrics and tags."""
        from mlflow.entities import Param, RunTag

        logged = self.params_logged.setdefault(trial_id, set())
        params = {**self.params_unlogged.pop(trial_id, {}), **(params or {})}
        new = [Param(k, _param_value(v)) for k, v in params.items() if k not in logged]
        logged.update(params)
        tag_items = [RunTag(k, v) for k, v in (tags or {}).items()]
        metrics = list(metrics)
        while new or tag_items or metrics:
            self.client.log_batch(self.children[trial_id], metrics=metrics[:MAX_BATCH],
                                  params=new[:MAX_PARAMS], tags=tag_items[:MAX_PARAMS])
            metrics, new, tag_items = (metrics[MAX_BATCH:], new[MAX_PARAMS:],
                                       tag_items[MAX_PARAMS:])
            self.writes += 1

    def flush(self) -> int:
        """Write the buffered metrics of every trial with a run; log_batch calls so far."""
        self._flush_trials(list(self.buffer))
        return self.writes

    def _flush_trials(self, trial_ids: list[str]) -> None:
        # One call per trial (MLflow batches per run), ~10 ms each: with a hundred trials
        # running, writing everyone's metrics every few seconds kept the tracker busy and
        # trial ends queued behind it. So a trial's metrics wait until the oldest is
        # `flush_every_s` old, and a trial shorter than that writes them once, with its end.
        for trial_id in trial_ids:
            if trial_id not in self.children:  # its start has not arrived yet
                continue
            self._write(trial_id, metrics=self.buffer.pop(trial_id, []))
            self.buffered_since.pop(trial_id, None)


def _cheap_sqlite_commits() -> None:
    """Every SQLite connection this process opens from now on uses a write-ahead log with
    synchronous=NORMAL: a commit then costs no fsync (the default spends ~9 ms on one, and
    MLflow commits several times per log_batch). The file stays safe from corruption; a
    power cut may lose the last commits, which a re-launch re-runs. Readers in other
    processes (the driver, `sweep status`, `mlflow ui`) are not blocked by the writer."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if event.contains(Engine, "connect", _wal_pragmas):
        return
    event.listen(Engine, "connect", _wal_pragmas)


def _wal_pragmas(dbapi_conn, _record) -> None:
    if not isinstance(dbapi_conn, sqlite3.Connection):
        return
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # another connection holds a lock: keep the journal
        pass
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _param_value(value: object) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
