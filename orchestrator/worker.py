"""What runs on a Ray worker: one trial through `trainer.run`, reporting to the tracker."""

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
    import torch

    import trainer
    from trainer.identity import flatten

    torch.set_num_threads(max(1, threads))
    result = trainer.run(cfg, TrackerReporter(tracker, trainer.config_id(cfg), label))
    params = {**flatten(cfg), **{k: v for k, v in result.summary.items()
                                 if k.startswith("derived.")}}
    return {"status": result.status, "summary": result.summary, "params": params,
            "pid": os.getpid()}
