"""The sweep's one writer to MLflow.

Workers never talk to the tracking store: they send metrics to a single `Tracker`, run as a Ray
actor, which buffers them and writes with `log_batch` (≤ 1000 metrics per call). One writer keeps
an embedded SQLite store free of `database is locked` and the load on a real server low.

Records follow DESIGN.md: experiment = sweep name, one parent run (tag proxysweep.kind=sweep,
the spec as artifact `sweep.yaml`), one child run per trial id, found again by its `trial.id`
tag, so a retried or resumed trial continues its own run. A resumed trial re-reports the steps
after its last checkpoint; they are dropped here (per metric, steps at or below the last one
written), so each metric's history stays one continuous curve.

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

import math
import os
import re
import sys
import time
from collections.abc import Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

DONE = ("finished", "diverged")
MAX_BATCH = 1000
HISTORY_KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens",
                "train/batch_tokens", "eval/loss", "perf/tokens_per_s", "perf/mfu")
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                   "MLFLOW_TRACKING_CLIENT_CERT_PATH", "AWS_ACCESS_KEY_ID",
                   "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                   "MLFLOW_S3_ENDPOINT_URL")
OUTAGE_S = 900.0
"""How long a write waits for an unreachable server before giving up (then: re-sync)."""
MAX_BACKOFF_S = 8.0
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@")


def redact(text: str) -> str:
    """`scheme://user:password@host` → `scheme://user:***@host`, anywhere in `text`."""
    return _USERINFO.sub(r"\g<head>:***@", text)


def tracking_credentials() -> dict[str, str]:
    """The tracking and artifact-store credentials set in this process's environment."""
    return {k: os.environ[k] for k in CREDENTIAL_VARS if k in os.environ}


def is_transient(err: Exception) -> bool:
    """Did a call fail because the server could not be reached (worth retrying)?"""
    import requests

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
                 flush_every_s: float = 2.0, credentials: dict[str, str] | None = None,
                 outage_s: float = OUTAGE_S):
        os.environ.update(credentials or {})
        # MLflow's own HTTP retries (7, up to 2 min apart) would hide an outage inside one
        # call; a few quick ones, then `_call`'s backoff, which says what is going on.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self.client = MlflowClient(tracking_uri=uri)
        self.sweep, self.code_version, self.flush_every_s = sweep, code_version, flush_every_s
        self.outage_s, self.down_since = outage_s, None
        exp = self._call(find_experiment, self.client, sweep)
        self.experiment_id = (exp.experiment_id if exp else
                              self._call(self.client.create_experiment, sweep))
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}  # trial id → run id
        self.last_step: dict[tuple[str, str], int] = {}
        self.buffer: dict[str, list[Metric]] = {}
        self.buffered, self.last_flush, self.writes = 0, time.monotonic(), 0
        for run in self._call(sweep_runs, self.client, self.experiment_id, "trial"):
            self.children[run.data.tags["trial.id"]] = run.info.run_id
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
        parents = self._call(sweep_runs, self.client, self.experiment_id, "sweep")
        if parents:
            self.parent_id = parents[0].info.run_id
            self._call(self.client.update_run, self.parent_id, status="RUNNING")
        else:
            run = self._call(self._find_or_create, "sweep", {"proxysweep.kind": "sweep"},
                             self.sweep)
            self.parent_id = run.info.run_id
        self._call(self.client.log_text, self.parent_id, redact(spec_yaml), "sweep.yaml")
        self._call(self.client.set_tag, self.parent_id, "sweep.cancel", "no")
        return self.parent_id

    def _find_or_create(self, kind: str, tags: dict, name: str):
        # A create whose answer was lost to an outage may still have happened: look first.
        query = f"tags.`proxysweep.kind` = '{kind}'"
        if kind == "trial":
            query += f" and tags.`trial.id` = '{tags['trial.id']}'"
        found = self.client.search_runs([self.experiment_id], query, max_results=1)
        if found:
            return found[0]
        return self.client.create_run(self.experiment_id, run_name=name[:250], tags=tags)

    def cancel_requested(self) -> bool:
        """Has `sweep cancel` asked this sweep to stop? (No, while the server is away.)"""
        try:
            run = self.client.get_run(self.parent_id)
        except Exception as err:
            if is_transient(err):
                return False
            raise
        return run.data.tags.get("sweep.cancel") == "requested"

    def close_sweep(self, status: str) -> None:
        """Flush everything and end the parent run (FINISHED, KILLED or FAILED)."""
        self.flush()
        self._call(self.client.set_tag, self.parent_id, "sweep.status", status)
        mlflow_status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self._call(self.client.set_terminated, self.parent_id, status=mlflow_status)

    # -- trials --------------------------------------------------------------------------

    def start_trial(self, trial_id: str, params: dict, label: str) -> str:
        """Open (or reopen, one attempt later) the child run of a trial; its run id."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            run = self._call(self._find_or_create, "trial", {
                MLFLOW_PARENT_RUN_ID: self.parent_id, "proxysweep.kind": "trial",
                "trial.id": trial_id, "trial.attempt": "1", "code.version": self.code_version},
                label)
            run_id = self.children[trial_id] = run.info.run_id
            items = [Param(k, _param_value(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self._call(self.client.log_batch, run_id, params=items[i:i + 100])
        else:
            run = self._call(self.client.get_run, run_id)
            attempt = int(run.data.tags.get("trial.attempt", 0)) + 1
            self._call(self.client.set_tag, run_id, "trial.attempt", str(attempt))
            self._call(self.client.update_run, run_id, status="RUNNING")
            self._load_last_steps(run_id)
        self._call(self.client.set_tag, run_id, "trial.status", "running")
        return run_id

    def _load_last_steps(self, run_id: str) -> None:
        # What the store holds (a new driver knows nothing else), and never less than what
        # this tracker has already accepted, flushed or not.
        self.flush()
        for key in HISTORY_KEYS:
            history = self._call(self.client.get_metric_history, run_id, key)
            if history:
                known = self.last_step.get((run_id, key), -1)
                self.last_step[(run_id, key)] = max(known, max(m.step for m in history))

    def log_metrics(self, trial_id: str, metrics: dict, step: int) -> None:
        """Buffer metrics of a step; steps already written for a metric are dropped."""
        run_id = self.children[trial_id]
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is None or not math.isfinite(float(value)):
                continue
            if step <= self.last_step.get((run_id, key), -1):
                continue
            self.last_step[(run_id, key)] = step
            self.buffer.setdefault(run_id, []).append(Metric(key, float(value), now, step))
            self.buffered += 1
        if self.buffered >= MAX_BATCH or time.monotonic() - self.last_flush > self.flush_every_s:
            self.flush()

    def finish_trial(self, trial_id: str, status: str, summary: dict, params: dict,
                     label: str, *, node: str | None = None) -> None:
        """Record a trial's end: summary metrics, status tag, run terminated, and the Ray
        node that ran it last (tag `trial.node`)."""
        if trial_id not in self.children:
            self.start_trial(trial_id, params, label)
        run_id = self.children[trial_id]
        if node:
            self._call(self.client.set_tag, run_id, "trial.node", node)
        step = int(summary.get("final/steps", 0) or 0)
        final = {k: v for k, v in summary.items()
                 if k.startswith("final/") and isinstance(v, (int, float))}
        now = int(time.time() * 1000)
        self.buffer.setdefault(run_id, []).extend(
            Metric(k, float(v), now, step) for k, v in final.items() if math.isfinite(v))
        self.flush()
        self.mark_trial(trial_id, status)

    def resync_trial(self, trial_id: str, status: str, summary: dict, params: dict, label: str,
                     history: list[dict]) -> None:
        """Complete a trial's record from its run directory: the history steps the store
        lacks (rows of `metrics.jsonl`), then its summary and status as `finish_trial`."""
        if trial_id not in self.children:
            self.start_trial(trial_id, params, label)
        run_id = self.children[trial_id]
        now = int(time.time() * 1000)
        for key in HISTORY_KEYS:
            written = {m.step for m in self._call(self.client.get_metric_history, run_id, key)}
            self.buffer.setdefault(run_id, []).extend(
                Metric(key, float(row[key]), now, row["step"]) for row in history
                if row.get(key) is not None and math.isfinite(row[key])
                and row["step"] not in written)
        self.finish_trial(trial_id, status, summary, params, label)

    def mark_trial(self, trial_id: str, status: str) -> None:
        """Set a trial's status; ended runs are terminated in MLflow too."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        self.flush()
        self._call(self.client.set_tag, run_id, "trial.status", status)
        if status != "running":
            mlflow_status = {"finished": "FINISHED", "diverged": "FINISHED",
                             "interrupted": "KILLED"}.get(status, "FAILED")
            self._call(self.client.set_terminated, run_id, status=mlflow_status)

    def flush(self) -> int:
        """Write every buffered metric with log_batch; the number of calls made so far.

        A batch leaves the buffer only once written, so a flush that gives up on an
        unreachable server loses nothing: the next one writes it.
        """
        for run_id in list(self.buffer):
            metrics = self.buffer[run_id]
            while metrics:
                self._call(self.client.log_batch, run_id, metrics=metrics[:MAX_BATCH])
                self.writes += 1
                self.buffered -= len(metrics[:MAX_BATCH])
                metrics = self.buffer[run_id] = metrics[MAX_BATCH:]
            del self.buffer[run_id]
        self.buffered, self.last_flush = 0, time.monotonic()
        return self.writes


def _param_value(value: object) -> str:
    text = redact(str(value))
    return text if len(text) <= 6000 else text[:5997] + "..."


def _say(message: str) -> None:
    # The actor's stderr: Ray's worker log on the driver's node.
    print(f"[proxysweep tracker] {message}", file=sys.stderr, flush=True)
