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
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

DONE = ("finished", "diverged")
MAX_BATCH = 1000
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
                 flush_every_s: float = 2.0):
        self.client = MlflowClient(tracking_uri=uri)
        self.sweep, self.code_version, self.flush_every_s = sweep, code_version, flush_every_s
        exp = find_experiment(self.client, sweep)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(sweep)
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}  # trial id → run id
        self.last_step: dict[tuple[str, str], int] = {}
        self.buffer: dict[str, list[Metric]] = {}
        self.buffered, self.last_flush, self.writes = 0, time.monotonic(), 0
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

    def start_trial(self, trial_id: str, params: dict, label: str) -> str:
        """Open (or reopen, one attempt later) the child run of a trial; its run id."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=label[:250], tags={
                MLFLOW_PARENT_RUN_ID: self.parent_id, "proxysweep.kind": "trial",
                "trial.id": trial_id, "trial.attempt": "1", "code.version": self.code_version})
            run_id = self.children[trial_id] = run.info.run_id
            items = [Param(k, _param_value(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i:i + 100])
        else:
            attempt = int(self.client.get_run(run_id).data.tags.get("trial.attempt", 0)) + 1
            self.client.set_tag(run_id, "trial.attempt", str(attempt))
            self.client.update_run(run_id, status="RUNNING")
            self._load_last_steps(run_id)
        self.client.set_tag(run_id, "trial.status", "running")
        return run_id

    def _load_last_steps(self, run_id: str) -> None:
        # What the store holds (a new driver knows nothing else), and never less than what
        # this tracker has already accepted, flushed or not.
        self.flush()
        for key in HISTORY_KEYS:
            history = self.client.get_metric_history(run_id, key)
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
                     label: str) -> None:
        """Record a trial's end: summary metrics, status tag, run terminated."""
        if trial_id not in self.children:
            self.start_trial(trial_id, params, label)
        run_id = self.children[trial_id]
        step = int(summary.get("final/steps", 0) or 0)
        final = {k: v for k, v in summary.items()
                 if k.startswith("final/") and isinstance(v, (int, float))}
        now = int(time.time() * 1000)
        self.buffer.setdefault(run_id, []).extend(
            Metric(k, float(v), now, step) for k, v in final.items() if math.isfinite(v))
        self.flush()
        self.mark_trial(trial_id, status)

    def mark_trial(self, trial_id: str, status: str) -> None:
        """Set a trial's status; ended runs are terminated in MLflow too."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        self.flush()
        self.client.set_tag(run_id, "trial.status", status)
        if status != "running":
            mlflow_status = {"finished": "FINISHED", "diverged": "FINISHED",
                             "interrupted": "KILLED"}.get(status, "FAILED")
            self.client.set_terminated(run_id, status=mlflow_status)

    def flush(self) -> int:
        """Write every buffered metric with log_batch; the number of calls made so far."""
        for run_id, metrics in self.buffer.items():
            for i in range(0, len(metrics), MAX_BATCH):
                self.client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH])
                self.writes += 1
        self.buffer, self.buffered, self.last_flush = {}, 0, time.monotonic()
        return self.writes


def _param_value(value: object) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
