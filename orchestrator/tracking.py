"""The sweep's one writer to MLflow.

Workers never talk to the tracking store: they send metrics to a single `Tracker`, run as a Ray
actor, which buffers them and writes with `log_batch` (≤ 1000 metrics per call). One writer keeps
an embedded SQLite store free of `database is locked` and the load on a real server low.

Records follow `trainer.schema`: experiment = sweep name, one parent run (tag
proxysweep.kind=sweep, the spec as artifact `sweep.yaml`), one child run per trial id, found
again by its `trial.id` tag, so a retried or resumed trial continues its own run. A resumed
trial re-reports the steps after its last checkpoint; they are dropped here (per metric, steps
at or below the last one written), so each metric's history stays one continuous curve.

A team's store is an `mlflow server`, and a server restarts. Every write goes through `_call`,
which retries a call that failed for want of the server (connection refused, timeout, 503) with
backoff for up to `outage_s`; meanwhile the actor's calls queue in Ray, workers keep training
(their metric calls do not wait) and the buffer keeps what was not written. Writes are safe to
repeat: MLflow ignores a metric logged twice, a child run is looked up by `trial.id` before one
is created. What an outage longer than that (or a killed driver) still left out is re-synced
from the trials' own `summary.json` and `metrics.jsonl` (`orchestrator.resync`).

Credentials stay out of the record: they reach the actor from the driver's environment (the
`MLFLOW_TRACKING_*`/`AWS_*` variables, as constructor arguments, not as Ray runtime-env
variables that Ray's state API lists), and any `user:password@` in a logged value is masked.
"""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from trainer.reporting import redact
from trainer.schema import (
    CODE_VERSION_TAG,
    FINAL_PREFIX,
    FINAL_STEPS,
    HISTORY_KEYS,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    PARENT_RUN_TAG,
    RUNNING,
    SPEC_ARTIFACT,
    SWEEP_CANCEL_TAG,
    SWEEP_STATUS_TAG,
    TRIAL_ATTEMPT_TAG,
    TRIAL_ID_TAG,
    TRIAL_NODE_TAG,
    TRIAL_STATUS_TAG,
    batches,
    find_or_create_run,
    run_status,
    sweep_runs,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

# MLflow is imported where it is used, not here: every trial task receives the Tracker's
# handle, and unpickling it imports this module in the worker; importing MLflow there cost
# each of a hundred workers starting at once ~40 s on a loaded 2-core machine.
MAX_BATCH = 1000
"""Buffered metrics of one trial that trigger its write (MLflow's limit per log_batch)."""
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                   "MLFLOW_TRACKING_CLIENT_CERT_PATH", "AWS_ACCESS_KEY_ID",
                   "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                   "MLFLOW_S3_ENDPOINT_URL")
INTERIM_SHARE = 0.2
"""At most this share of the tracker's time goes to writing running trials' metrics: with many
trials running, each one's metrics wait longer than `flush_every_s` (ends are never held)."""
OUTAGE_S = 900.0
"""How long a write waits for an unreachable server before giving up (then: re-sync)."""
MAX_BACKOFF_S = 8.0


def tracking_credentials() -> dict[str, str]:
    """The tracking and artifact-store credentials set in this process's environment."""
    return {k: os.environ[k] for k in CREDENTIAL_VARS if k in os.environ}


def is_transient(err: Exception) -> bool:
    """Did a call fail because the server could not be reached (worth retrying)?"""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError)):
        return True
    if isinstance(err, MlflowException):
        if err.error_code == "TEMPORARILY_UNAVAILABLE":
            return True
        # rest_utils wraps what requests raised (refused, reset, timed out) this way.
        return err.message.startswith("API request to") and "failed with" in err.message \
            and "exception" in err.message
    return False


def find_experiment(client: MlflowClient, name: str):
    """The sweep's experiment, or None."""
    return client.get_experiment_by_name(name)


def _timed(method: Callable) -> Callable:
    """Count the calls of a Tracker method and the seconds spent in them (`Tracker.stats`)."""
    name = method.__name__

    @functools.wraps(method)
    def timed(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            entry = self.busy.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - began
    return timed


class Tracker:
    """Buffered MLflow writes for one sweep. Run it as a Ray actor (`ray.remote(Tracker)`)."""

    def __init__(self, uri: str, sweep: str, *, code_version: str, spec_yaml: str,
                 flush_every_s: float = 10.0, credentials: dict[str, str] | None = None,
                 outage_s: float = OUTAGE_S):
        from mlflow import MlflowClient

        self.busy: dict[str, list] = {}  # method → [calls, seconds]
        self.born = time.perf_counter()
        os.environ.update(credentials or {})
        # MLflow's own HTTP retries (7, up to 2 min apart) would hide an outage inside one
        # call; a few quick ones, then `_call`'s backoff, which says what is going on.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        if uri.startswith("sqlite:"):
            _cheap_sqlite_commits()
        self.client = MlflowClient(tracking_uri=uri)
        self.sweep, self.code_version, self.flush_every_s = sweep, code_version, flush_every_s
        self.outage_s, self.down_since = outage_s, None
        exp = self._call(find_experiment, self.client, sweep)
        self.experiment_id = (exp.experiment_id if exp else
                              self._call(self.client.create_experiment, sweep))
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
        self.write_s = 0.02  # running mean of one log_batch's seconds
        self.created: set[str] = set()  # trials whose run this tracker created
        self.from_scratch: set[str] = set()  # trials whose worker began at step 0
        self.confirmed: set[str] = set()  # trials of this launch recorded whole (see below)
        self.received: dict[tuple, int] = {}  # (trial id, sender) → log_steps calls
        for run in self._call(sweep_runs, self.client, self.experiment_id, KIND_TRIAL):
            self.children[run.data.tags[TRIAL_ID_TAG]] = run.info.run_id
        # In the constructor, so the parent exists before any trial calls in (an actor runs
        # no method before its constructor has returned).
        self.open_sweep(spec_yaml)

    # -- the server ----------------------------------------------------------------------

    def _call(self, fn: Callable, *args, **kwargs):
        """`fn(*args, **kwargs)`, retried with backoff while the server is unreachable."""
        deadline, delay = time.monotonic() + self.outage_s, 0.5
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err) or time.monotonic() + delay > deadline:
                    raise
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    _say(f"tracking server unreachable ({redact(str(err))[:200]}); retrying "
                         f"for up to {self.outage_s:.0f} s, trials keep running")
                time.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            if self.down_since is not None:
                _say(f"tracking server back after {time.monotonic() - self.down_since:.1f} s")
                self.down_since = None
            return result

    # -- the sweep -----------------------------------------------------------------------

    def open_sweep(self, spec_yaml: str) -> str:
        """Find or create the parent run, store the spec with it, mark it running."""
        parents = self._call(sweep_runs, self.client, self.experiment_id, KIND_SWEEP)
        if parents:
            self.parent_id = parents[0].info.run_id
            self._call(self.client.update_run, self.parent_id, status="RUNNING")
        else:
            run = self._call(find_or_create_run, self.client, self.experiment_id,
                             tags={KIND_TAG: KIND_SWEEP}, name=self.sweep)
            self.parent_id = run.info.run_id
        self._call(self.client.log_text, self.parent_id, redact(spec_yaml), SPEC_ARTIFACT)
        self._call(self.client.set_tag, self.parent_id, SWEEP_CANCEL_TAG, "no")
        return self.parent_id

    def cancel_requested(self) -> bool:
        """Has `sweep cancel` asked this sweep to stop? (No, while the server is away.)"""
        try:
            run = self.client.get_run(self.parent_id)
        except Exception as err:
            if is_transient(err):
                return False
            raise
        return run.data.tags.get(SWEEP_CANCEL_TAG) == "requested"

    @_timed
    def close_sweep(self, status: str) -> None:
        """Flush everything and end the parent run (FINISHED, KILLED or FAILED)."""
        self.flush()
        self._call(self.client.set_tag, self.parent_id, SWEEP_STATUS_TAG, status)
        self._call(self.client.set_terminated, self.parent_id, status=run_status(status))

    # -- trials --------------------------------------------------------------------------
    # The driver calls start_trial when it submits a trial and finish_trial/mark_trial when it
    # ends; one caller's calls arrive in order, so an end is never overtaken by its start.
    # Workers only send begin_attempt and log_metrics, fire and forget, and never wait here;
    # either may arrive before the driver's start_trial and is then held until it comes.
    # Each write to the store costs ~10-25 ms whatever its size (a transaction), and a sweep
    # may end a trial every few tens of milliseconds, so a trial gets three writes: its run,
    # its end (metrics, params, status) and its terminal state, plus one per `flush_every_s`
    # while it runs (metrics, and params the first time).

    @_timed
    def start_trial(self, trial_id: str, params: dict, label: str) -> str:
        """Open (or reopen, one attempt later) the child run of a submitted trial; its id.
        Its params are held, and written with the trial's next write (metrics or end)."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            run = self._create_trial_run(trial_id, label)
            run_id = self.children[trial_id] = run.info.run_id
            if not run.data.metrics:
                self.created.add(trial_id)
            self.attempts[trial_id] = int(run.data.tags.get(TRIAL_ATTEMPT_TAG, 1))
            self.params_logged[trial_id] = set(run.data.params)
            self.params_unlogged[trial_id] = dict(params)
            if run.data.metrics:  # found, not created: a write lost its answer to an outage
                self._load_last_steps(trial_id)
        else:
            if trial_id not in self.attempts:  # a run of an earlier launch
                run = self._call(self.client.get_run, run_id)
                self.attempts[trial_id] = int(run.data.tags.get(TRIAL_ATTEMPT_TAG, 0))
                # MLflow refuses a param logged again with another value (a key left out of
                # the trial id, such as the world size, may differ): the first one stays.
                self.params_logged[trial_id] = set(run.data.params)
                self._load_last_steps(trial_id)
            self._next_attempt(trial_id)
            # Written again (same values) with its next write: the driver that opened the
            # run may have died holding them.
            self.params_unlogged.setdefault(trial_id, {}).update(params)
        self.phase[trial_id] = "submitted"
        if trial_id in self.early_begin:
            self.begin_attempt(trial_id, *self.early_begin.pop(trial_id))
        return run_id

    def _create_trial_run(self, trial_id: str, label: str):
        # Every child run of the sweep was loaded at start, so one not among them is new: it
        # is created straight away (a search first would cost a query per trial). Only when
        # that create failed for want of the server may it have happened anyway: then look.
        tags = {PARENT_RUN_TAG: self.parent_id, KIND_TAG: KIND_TRIAL, TRIAL_ID_TAG: trial_id,
                TRIAL_ATTEMPT_TAG: "1", TRIAL_STATUS_TAG: RUNNING,
                CODE_VERSION_TAG: self.code_version}
        try:
            return self.client.create_run(self.experiment_id, run_name=label[:250], tags=tags)
        except Exception as err:
            if not is_transient(err):
                raise
        return self._call(find_or_create_run, self.client, self.experiment_id, tags=tags,
                          name=label)

    @_timed
    def begin_attempt(self, trial_id: str, params: dict,
                      resumed_step: int | None = None) -> None:
        """A worker began the trial (from a checkpoint at `resumed_step`, or from scratch):
        hold its params (with `derived.*`, known only there). A second begin without a new
        submission is Ray re-running the task after a lost worker: one attempt more. A begin
        after the trial's end is stale and ignored."""
        phase = self.phase.get(trial_id)
        if phase is None:
            self.early_begin[trial_id] = (params, resumed_step)
            return
        if resumed_step is None:
            self.from_scratch.add(trial_id)
        if phase == "running":
            self._next_attempt(trial_id)
        elif phase != "submitted":
            return
        self.phase[trial_id] = "running"
        self.params_unlogged.setdefault(trial_id, {}).update(params)

    def _next_attempt(self, trial_id: str) -> None:
        self.attempts[trial_id] += 1
        self._write(trial_id, tags={TRIAL_ATTEMPT_TAG: str(self.attempts[trial_id]),
                                    TRIAL_STATUS_TAG: RUNNING})
        self._call(self.client.update_run, self.children[trial_id], status="RUNNING")

    def _load_last_steps(self, trial_id: str) -> None:
        # What the store holds (a new driver knows nothing else), and never less than what
        # this tracker has already accepted; buffered steps the store already has are dropped
        # (a resumed worker's metrics may arrive before the driver reopened its run).
        for key in HISTORY_KEYS:
            history = self._call(self.client.get_metric_history, self.children[trial_id], key)
            if not history:
                continue
            stored = max(m.step for m in history)
            known = self.last_step.get((trial_id, key), -1)
            self.last_step[(trial_id, key)] = max(known, stored)
            if trial_id in self.buffer:
                self.buffer[trial_id] = [m for m in self.buffer[trial_id]
                                         if m.key != key or m.step > stored]

    @_timed
    def log_metrics(self, trial_id: str, metrics: dict, step: int) -> None:
        """Buffer metrics of a step; steps already written for a metric are dropped."""
        self.log_steps(trial_id, [(step, metrics)])

    @_timed
    def log_steps(self, trial_id: str, rows: list[tuple[int, dict]],
                  sender: str | None = None) -> None:
        """Buffer the metrics of several steps, (step, {key: value}) in step order, sent by
        the trial's worker; `sender` names that worker's attempt (calls are counted per
        sender: see `finish_trial`)."""
        key = (trial_id, sender)
        self.received[key] = self.received.get(key, 0) + 1
        self._buffer_steps(trial_id, rows)

    @_timed
    def add_steps(self, trial_id: str, rows: list[tuple[int, dict]]) -> None:
        """Buffer steps that a failed attempt's worker had not sent (from the driver, which
        got them with the failure); written with the trial's next write."""
        self._buffer_steps(trial_id, rows)

    def _buffer_steps(self, trial_id: str, rows) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for step, metrics in rows:
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
            # Writing every trial's metrics once per `every` costs len × write_s per `every`.
            every = max(self.flush_every_s,
                        len(self.buffered_since) * self.write_s / INTERIM_SHARE)
            old = time.monotonic() - every
            self._flush_trials([t for t, since in self.buffered_since.items() if since <= old])

    @_timed
    def finish_trial(self, trial_id: str, status: str, summary: dict, params: dict,
                     label: str, *, node: str | None = None, rows=(),
                     sends: int | None = None, sender: str | None = None,
                     from_scratch: bool | None = None) -> None:
        """Record a trial's end: the steps its worker had not sent (`rows`), summary metrics,
        status tag, run terminated, and the Ray node that ran it last (tag `trial.node`).
        `sends`: how many log_steps calls its worker (`sender`) made; if fewer have arrived,
        some are still on their way, and the trial is not vouched for (the re-sync completes
        it). Counted per sender, so an earlier attempt's calls do not make up the count.
        `from_scratch`: its worker began at step 0, as its begin_attempt says (which, sent
        by the worker, may arrive after this call from the driver)."""
        from mlflow.entities import Metric

        if trial_id not in self.children:
            self.start_trial(trial_id, params, label)
        if from_scratch:
            self.from_scratch.add(trial_id)
        self._buffer_steps(trial_id, rows)
        step = int(summary.get(FINAL_STEPS, 0) or 0)
        final = {k: v for k, v in summary.items()
                 if k.startswith(FINAL_PREFIX) and isinstance(v, (int, float))}
        now = int(time.time() * 1000)
        self.buffer.setdefault(trial_id, []).extend(
            Metric(k, float(v), now, step) for k, v in final.items() if math.isfinite(v))
        self.mark_trial(trial_id, status, params=params,
                        tags={TRIAL_NODE_TAG: node} if node else None)
        if trial_id in self.created and trial_id in self.from_scratch \
                and self.attempts.get(trial_id) == 1 and sends is not None \
                and self.received.get((trial_id, sender), 0) >= sends:
            # Created here, trained from step 0 in one attempt, every send arrived, every
            # write done: the store holds all its worker reported. (A retried attempt may
            # have lost calls in flight with its worker; a resumed or already ended one
            # reported only part or nothing.)
            self.confirmed.add(trial_id)

    def stats(self) -> dict:
        """Calls and seconds per method (nested calls count in both), log_batch calls and
        their mean seconds, and the actor's age: where its time went."""
        return {"methods": {k: {"calls": c, "s": round(t, 3)} for k, (c, t) in self.busy.items()},
                "log_batch_calls": self.writes, "log_batch_mean_s": round(self.write_s, 4),
                "age_s": round(time.perf_counter() - self.born, 1)}

    def confirmed_trials(self) -> set[str]:
        """Trials this tracker created and recorded to their end, each trained from scratch
        in one attempt with nothing left unwritten: their record needs no re-sync."""
        return set(self.confirmed)

    @_timed
    def resync_trial(self, trial_id: str, status: str, summary: dict, params: dict, label: str,
                     history: list[dict]) -> None:
        """Complete a trial's record from its run directory: the history steps the store
        lacks (rows of `metrics.jsonl`), then its summary and status as `finish_trial`."""
        from mlflow.entities import Metric

        if trial_id not in self.children:
            self.start_trial(trial_id, params, label)
        run_id = self.children[trial_id]
        now = int(time.time() * 1000)
        for key in HISTORY_KEYS:
            written = {m.step for m in self._call(self.client.get_metric_history, run_id, key)}
            self.buffer.setdefault(trial_id, []).extend(
                Metric(key, float(row[key]), now, row["step"]) for row in history
                if row.get(key) is not None and math.isfinite(row[key])
                and row["step"] not in written)
        self.finish_trial(trial_id, status, summary, params, label)

    @_timed
    def mark_trial(self, trial_id: str, status: str, *, params: dict | None = None,
                   tags: dict | None = None) -> None:
        """Set a trial's status, with its buffered metrics and any params not yet written;
        ended runs are terminated in MLflow too."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        self._write(trial_id, metrics=self.buffer.get(trial_id, ()), params=params or {},
                    tags={**(tags or {}), TRIAL_STATUS_TAG: status})
        self.buffer.pop(trial_id, None)
        self.buffered_since.pop(trial_id, None)
        if status != RUNNING:
            self.phase[trial_id] = status
            self._call(self.client.set_terminated, run_id, status=run_status(status))

    def _write(self, trial_id: str, *, metrics=(), params: dict | None = None,
               tags: dict | None = None) -> None:
        """One log_batch (more only past MLflow's limits) with the trial's params not yet
        written (those held since its start included), metrics and tags. Params count as
        written only once their call succeeded, so a write that gives up on an unreachable
        server loses nothing: the next write carries them again."""
        from mlflow.entities import Param, RunTag

        logged = self.params_logged.setdefault(trial_id, set())
        held = self.params_unlogged.setdefault(trial_id, {})
        held.update(params or {})
        new = [Param(k, _param_value(v)) for k, v in held.items() if k not in logged]
        tag_items = [RunTag(k, v) for k, v in (tags or {}).items()]
        for chunk_metrics, chunk_params, chunk_tags in batches(metrics=metrics, params=new,
                                                               tags=tag_items):
            began = time.monotonic()
            self._call(self.client.log_batch, self.children[trial_id], metrics=chunk_metrics,
                       params=chunk_params, tags=chunk_tags)
            self.write_s = 0.9 * self.write_s + 0.1 * (time.monotonic() - began)
            logged.update(p.key for p in chunk_params)
            self.writes += 1
        held.clear()

    @_timed
    def flush(self) -> int:
        """Write the buffered metrics of every trial with a run; log_batch calls so far."""
        self._flush_trials(list(self.buffer))
        return self.writes

    def _flush_trials(self, trial_ids: list[str]) -> None:
        # One call per trial (MLflow batches per run), ~10 ms each: with a hundred trials
        # running, writing everyone's metrics every few seconds kept the tracker busy and
        # trial ends queued behind it. So a trial's metrics wait until the oldest is
        # `flush_every_s` old, and a trial shorter than that writes them once, with its end.
        # A trial's metrics leave the buffer only once written (see `_write`).
        for trial_id in trial_ids:
            if trial_id not in self.children:  # its start has not arrived yet
                continue
            self._write(trial_id, metrics=self.buffer.get(trial_id, ()))
            self.buffer.pop(trial_id, None)
            self.buffered_since.pop(trial_id, None)


def _cheap_sqlite_commits() -> None:
    """Every SQLite connection this process opens from now on uses a write-ahead log with
    synchronous=NORMAL: a commit then costs no fsync (the default spends ~9 ms on one, and
    MLflow commits several times per log_batch). The file stays safe from corruption; a
    power cut may lose the last commits, which a re-launch re-runs (the trials' own
    summaries re-sync them). Readers in other processes (the driver, `sweep status`,
    `mlflow ui`) are not blocked by the writer."""
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
    text = redact(str(value))
    return text if len(text) <= 6000 else text[:5997] + "..."


def _say(message: str) -> None:
    # The actor's stderr: Ray's worker log on the driver's node.
    print(f"[proxysweep tracker] {message}", file=sys.stderr, flush=True)
