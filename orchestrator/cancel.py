"""`sweep cancel`: ask a running sweep's driver to stop, or mark the trials of one whose driver
is gone interrupted.
"""

from __future__ import annotations

import time

from mlflow import MlflowClient

from orchestrator.sweep_record import driver_gone, driver_silent_s, parent_run
from trainer.schema import (
    INTERRUPTED,
    RUNNING,
    SWEEP_CANCEL_TAG,
    SWEEP_STATUS_TAG,
    TRIAL_STATUS_TAG,
    recorded_trials,
    run_status,
)


class NotRunning(Exception):
    """`cancel` of a sweep that has ended: nothing to stop, and its status stays."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def cancel(tracking_uri: str, name: str, *, wait_s: float = 10.0) -> int | None:
    """Ask the running driver to stop; trials left `running` with no driver become
    `interrupted`. Returns how many trials were marked, or None when a live driver is still
    stopping them after `wait_s` (it records them itself: marking them here could overwrite
    an end it is writing).

    Raises:
        NotRunning: the sweep has ended (finished, failed, interrupted) already.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = parent_run(client, name)
    ended = parent.data.tags.get(SWEEP_STATUS_TAG, RUNNING)
    if ended != RUNNING:
        raise NotRunning(ended)
    client.set_tag(parent.info.run_id, SWEEP_CANCEL_TAG, "requested")
    alive = (driver_gone(parent) is None
             and driver_silent_s(parent, RUNNING) is None)
    if not alive:
        wait_s = 0.0  # no driver to see the request
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if client.get_run(parent.info.run_id).info.status != "RUNNING":
            return 0
        time.sleep(0.5)
    if alive:
        return None
    marked = 0
    for state in recorded_trials(tracking_uri, name).values():
        if state["status"] == RUNNING:
            client.set_tag(state["run"].info.run_id, TRIAL_STATUS_TAG, INTERRUPTED)
            client.set_terminated(state["run"].info.run_id, status=run_status(INTERRUPTED))
            marked += 1
    client.set_tag(parent.info.run_id, SWEEP_STATUS_TAG, INTERRUPTED)
    client.set_terminated(parent.info.run_id, status=run_status(INTERRUPTED))
    return marked
