"""What runs on a Ray worker: one trial through `trainer.run`, reporting to the tracker.

Metrics also go to the trial's own `metrics.jsonl`, beside its `summary.json`: what the
tracking server missed (a long outage, a dead driver) is re-synced from there.
"""

from __future__ import annotations

import os


class TrackerReporter:
    """The trainer's Reporter, forwarding to the sweep's tracking actor."""

    def __init__(self, tracker, trial_id: str, label: str):
        self.tracker, self.trial_id, self.label = tracker, trial_id, label

    def start(self, *, run_id: str, params: dict, resumed_step: int | None) -> None:
        # Fire and forget: the driver opened the trial's run when it submitted the task, so
        # the trial never waits on the tracker (which may still be starting).
        self.tracker.begin_attempt.remote(self.trial_id, params)

    def log_metrics(self, metrics: dict, *, step: int) -> None:
        # Fire and forget: calls from one worker to one actor arrive in order.
        self.tracker.log_metrics.remote(self.trial_id, metrics, step)

    def finish(self, *, status: str, summary: dict) -> None:
        """The driver records the end from the task's result, once, whatever the path."""


def run_trial(cfg, tracker, label: str, threads: int) -> dict:
    """Train one trial to its end; {status, summary, params} for the driver to record."""
    import ray
    import torch

    import trainer
    from trainer.loop import RunPaths
    from trainer.reporting import JsonlReporter, MultiReporter

    torch.set_num_threads(max(1, threads))
    trial_id = trainer.config_id(cfg)
    history = JsonlReporter(RunPaths.for_config(cfg, trial_id).metrics, echo=False)
    result = trainer.run(cfg, MultiReporter(history, TrackerReporter(tracker, trial_id, label)))
    params = trial_params(cfg, result.summary)
    return {"status": result.status, "summary": result.summary, "params": params,
            "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}


def trial_params(cfg, summary: dict) -> dict:
    """A child run's params: every config key, dotted, and the summary's `derived.*`."""
    from trainer.identity import flatten

    return {**flatten(cfg), **{k: v for k, v in summary.items() if k.startswith("derived.")}}
