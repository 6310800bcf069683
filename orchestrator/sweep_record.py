"""A sweep's record in the tracking store, as the commands read it: its parent run, the spec
stored with it, and whether its driver lives (a killed driver cannot close its sweep).

A launch marks the parent run running under its own process before it starts Ray
(`mark_starting`), so that a `sweep cancel` typed meanwhile is seen; the mark is undone when
the launch stops before its driver opened the sweep (`unmark_starting`), and a Ctrl-C that
stopped the command before the driver could close the sweep closes it here
(`close_left_running`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import yaml
from mlflow import MlflowClient

from orchestrator.spec import SweepSpec
from orchestrator.spec_file import load_spec, spec_from_dict
from trainer.errors import ConfigError
from trainer.lease import driver_label, gone_driver
from trainer.schema import (
    DRIVER_SILENT_S,
    FINISHED,
    INTERRUPTED,
    KIND_SWEEP,
    RUNNING,
    SPEC_ARTIFACT,
    SWEEP_CANCEL_TAG,
    SWEEP_DRIVER_ERROR_TAG,
    SWEEP_DRIVER_TAG,
    SWEEP_DRIVERS_PREFIX,
    SWEEP_HEARTBEAT_TAG,
    SWEEP_STATUS_TAG,
    run_status,
    sweep_runs,
)


def _sweep_parent(client, name: str):
    """The sweep's parent run (the oldest, should a race have made two), or None."""
    exp = client.get_experiment_by_name(name)
    parents = sweep_runs(client, exp.experiment_id, KIND_SWEEP) if exp else []
    return min(parents, key=lambda run: (run.info.start_time, run.info.run_id), default=None)


def mark_starting(tracking_uri: str, name: str) -> dict | None:
    """Mark an existing sweep running under this process (`driver_label`), its cancel cleared
    and its heartbeat fresh; the parent's id and tags before (None: no sweep by that name)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = _sweep_parent(client, name)
    if parent is None:
        return None
    from mlflow.entities import RunTag

    marks = {SWEEP_STATUS_TAG: RUNNING, SWEEP_CANCEL_TAG: "no", SWEEP_DRIVER_TAG: driver_label(),
             SWEEP_HEARTBEAT_TAG: str(int(time.time()))}
    client.log_batch(parent.info.run_id, tags=[RunTag(k, v) for k, v in marks.items()])
    return {"run_id": parent.info.run_id, "marks": marks,
            "tags": {k: parent.data.tags.get(k) for k in marks}}


def close_left_running(tracking_uri: str, name: str) -> bool | None:
    """After a Ctrl-C that stopped this process before its driver could close the sweep
    (while Ray started, or while the end waited on the store): the sweep it left marked
    running under it, interrupted, as its driver's close would (unless another driver runs
    it). None when the store holds no such sweep (nothing of it was recorded); else whether
    it was closed here. `sweep status` read it "killed" before."""
    from mlflow.entities import RunTag

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = _sweep_parent(client, name)
    if parent is None:
        return None
    tags, me = parent.data.tags, driver_label()
    if tags.get(SWEEP_STATUS_TAG, RUNNING) != RUNNING or tags.get(SWEEP_DRIVER_TAG) != me:
        return False
    if SWEEP_DRIVERS_PREFIX + me in tags:
        client.delete_tag(parent.info.run_id, SWEEP_DRIVERS_PREFIX + me)
    from orchestrator.tracking import driver_alive

    if any(key.startswith(SWEEP_DRIVERS_PREFIX)
           and driver_alive(key[len(SWEEP_DRIVERS_PREFIX):], value)
           for key, value in tags.items() if key != SWEEP_DRIVERS_PREFIX + me):
        return False  # another driver runs it: its close ends the sweep
    client.log_batch(parent.info.run_id, tags=[RunTag(SWEEP_STATUS_TAG, INTERRUPTED)])
    client.set_terminated(parent.info.run_id, status=run_status(INTERRUPTED))
    return True


def sweep_finished(tracking_uri: str, name: str) -> bool:
    """Is the sweep closed finished (every trial of it ended and recorded)?"""
    parent = _sweep_parent(MlflowClient(tracking_uri=tracking_uri), name)
    return parent is not None and parent.data.tags.get(SWEEP_STATUS_TAG) == FINISHED


def record_driver_error(tracking_uri: str, name: str, err: BaseException) -> None:
    """Record on the sweep's parent the error that stopped this driver (`sweep.driver_error`)
    while the sweep is still marked running under it; nothing when the store cannot take it
    (the error may be that store's), or another driver has opened the sweep since."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, (MlflowException, OSError)):  # (the store's own, or the network's:
        return  # its writes would be retried for minutes before the error is said)
    with contextlib.suppress(Exception):  # (the error itself matters more than its record)
        client = MlflowClient(tracking_uri=tracking_uri)
        parent = _sweep_parent(client, name)
        me = driver_label()
        if parent is None or parent.data.tags.get(SWEEP_DRIVER_TAG) != me \
                or parent.data.tags.get(SWEEP_STATUS_TAG, RUNNING) != RUNNING:
            return
        said = (str(err).strip().splitlines() or [""])[0] or type(err).__name__
        client.set_tag(parent.info.run_id, SWEEP_DRIVER_ERROR_TAG, f"{me}\t{said[:500]}")


def driver_error(parent) -> str | None:
    """The error that stopped the driver `sweep.driver` names, when one was recorded."""
    label, _, said = parent.data.tags.get(SWEEP_DRIVER_ERROR_TAG, "").partition("\t")
    return said or None if label and label == parent.data.tags.get(SWEEP_DRIVER_TAG) else None


def unmark_starting(tracking_uri: str, name: str, before: dict | None) -> None:
    """Undo `mark_starting`: the launch stopped before its driver opened the sweep. A tag that
    changed since the mark (a cancel typed meanwhile, another driver's open) stays."""
    if before is None:
        return
    client = MlflowClient(tracking_uri=tracking_uri)
    with contextlib.suppress(Exception):  # (the error that stopped the launch matters more)
        now = client.get_run(before["run_id"]).data.tags
        for key, value in before["tags"].items():
            if now.get(key) != before["marks"][key]:
                continue
            if value is None:
                client.delete_tag(before["run_id"], key)
            else:
                client.set_tag(before["run_id"], key, value)


SPEC_STORED_WITHIN_S = 120.0
"""A new sweep's parent run without its spec for longer than this has lost it (a driver stores
it a moment after creating the run, Ray's start-up aside)."""


def stored_spec(tracking_uri: str, name: str) -> SweepSpec:
    """The spec saved with the sweep's parent run."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = parent_run(client, name)
    try:
        path = client.download_artifacts(parent.info.run_id, SPEC_ARTIFACT)
    except (MlflowException, OSError):
        if client.list_artifacts(parent.info.run_id):  # (its error, if any, is the reason)
            raise
        age_s = time.time() - parent.info.start_time / 1000
        if parent.info.status == "RUNNING" and age_s < SPEC_STORED_WITHIN_S:
            raise ConfigError(f"sweep {name!r} is starting: its spec is stored a moment after "
                              "its record; ask again in a few seconds") from None
        raise ConfigError(
            f"sweep {name!r} has lost its stored spec ({SPEC_ARTIFACT} is not in "
            f"{parent.info.artifact_uri}: that folder was moved or deleted); launch its spec "
            "file again (`sweep launch SPEC`: it trains only what is not done) to store it "
            "anew") from None
    with open(path) as f:
        return spec_from_dict(yaml.safe_load(f), source=f"stored spec of sweep {name!r}",
                              stored=True)


def parent_run(client: MlflowClient, name: str):
    parent = _sweep_parent(client, name)
    if parent is None:
        known = sorted(e.name for e in client.search_experiments()
                       if sweep_runs(client, e.experiment_id, KIND_SWEEP))
        hint = f"known sweeps: {', '.join(known)}" if known else "no sweep is recorded there"
        import difflib

        # (a name typed in another case, or one character short, was told the whole list)
        near = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(
            name, known, n=1, cutoff=0.75)
        if near:
            hint = f"did you mean {near[0]}? {hint}"
        if name.endswith((".yaml", ".yml")) or "/" in name:  # a spec file given for a name
            try:
                named = f" (its name is {load_spec(name).name})" if Path(name).is_file() else ""
            except ConfigError:
                named = ""
            raise ConfigError(f"no sweep named {name!r} ({hint}): give the sweep's name, not "
                              f"its spec file{named}")
        raise ConfigError(f"no sweep named {name!r} in the tracking store ({hint}): check the "
                          "name or --tracking-uri (a sweep just launched is recorded once its "
                          "driver has started)")
    return parent


def live_status(parent) -> tuple[str, int | None]:
    """A sweep's status from its parent run, and the pid of its driver when that was killed:
    a driver killed (SIGKILL, a lost node) could not close its sweep, which then reads
    `interrupted` here (on the driver's host; elsewhere as recorded, see `driver_silent_s`)."""
    status = parent.data.tags.get(SWEEP_STATUS_TAG, RUNNING)
    gone = driver_gone(parent) if status == RUNNING else None
    return (INTERRUPTED, gone) if gone is not None else (status, None)


def driver_gone(parent) -> int | None:
    """`trainer.lease.gone_driver` of a sweep's driver, which lived at its last heartbeat."""
    beat = parent.data.tags.get(SWEEP_HEARTBEAT_TAG, "")
    return gone_driver(parent.data.tags.get(SWEEP_DRIVER_TAG),
                       int(beat) if beat.isdigit() else None)


def driver_silent_s(parent, status: str) -> float | None:
    """Seconds since a running sweep's last heartbeat when that is more than
    `DRIVER_SILENT_S` ago, else None: its driver was killed, lost its node or is cut off from
    the store, which a driver on another host can tell no other way. Not a status: the
    driver may only be cut off, and goes on when the store is back."""
    beat = parent.data.tags.get(SWEEP_HEARTBEAT_TAG, "")
    if status != RUNNING or not beat.isdigit():
        return None  # ended, or launched by a version that beat no heart
    silent = time.time() - int(beat)
    return silent if silent > DRIVER_SILENT_S else None
