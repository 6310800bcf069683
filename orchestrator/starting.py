"""A new sweep's launch before its record exists, and `sweep cancel` of it.

A launch records its sweep (the MLflow parent run) once its driver has started, after Ray:
10-20 s in which `sweep cancel NAME` found no sweep of that name, said so, and the launch then
ran every trial. Meanwhile the launch keeps a marker file on this host, named by the store
and the sweep; a cancel that finds no sweep but a live launch's marker leaves a request beside
it, which the launch takes at its first look (`commands._start`), or, if the launch has
passed that look, the cancel waits for the sweep's record and asks its driver as for any
running sweep. Markers are per host (a temporary folder): a launch starting on another host
is not seen until it is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from trainer.lease import driver_label, gone_driver


def _marker(tracking_uri: str, name: str) -> Path:
    key = hashlib.sha256(f"{tracking_uri}\0{name}".encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"proxysweep-{os.getuid()}" / "starting" / key


@contextlib.contextmanager
def announced(tracking_uri: str, name: str) -> Iterator[None]:
    """While a launch of a sweep not yet recorded starts: its marker, removed at the end."""
    marker = _marker(tracking_uri, name)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"driver": driver_label(), "sweep": name}))
    except OSError:  # (no marker: a cancel meanwhile is answered as before)
        yield
        return
    try:
        yield
    finally:
        for path in (marker, _request(marker)):
            with contextlib.suppress(OSError):
                path.unlink()


def _request(marker: Path) -> Path:
    return marker.with_suffix(".cancel")


def take_cancel(tracking_uri: str, name: str) -> bool:
    """Has a `sweep cancel` asked this launch (not yet recorded) to stop? Taken once."""
    try:
        _request(_marker(tracking_uri, name)).unlink()
    except OSError:
        return False
    return True


def starting_driver(tracking_uri: str, name: str) -> str | None:
    """The driver ("HOST PID") of a live launch on this host of sweep `name`, not yet
    recorded, else None."""
    marker = _marker(tracking_uri, name)
    try:  # (its launch wrote it: alive then)
        label, written = json.loads(marker.read_text())["driver"], marker.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return label if gone_driver(label, written) is None else None


def cancel_starting(tracking_uri: str, name: str, *, recorded, wait_s: float = 60.0
                    ) -> str | None:
    """Ask a starting launch of `name` to stop; what to say, or None when none starts here.
    `recorded()` says whether the sweep is recorded by now (then the caller cancels it as a
    running sweep: "recorded")."""
    label = starting_driver(tracking_uri, name)
    if label is None:
        return None
    request = _request(_marker(tracking_uri, name))
    request.write_text(label)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not request.exists():  # taken at the launch's first look, or the launch ended
            return (f"sweep {name} was starting ({label}, not recorded yet): it stops before "
                    "any trial runs, and records nothing")
        if recorded():
            with contextlib.suppress(OSError):
                request.unlink()
            return "recorded"
        time.sleep(0.5)
    return (f"cancel requested for sweep {name}, which is starting ({label}, not recorded "
            "yet): it stops at its first look")
