"""Atomic checkpoints: a kill at any moment leaves the newest complete checkpoint loadable.

A checkpoint is written to a temporary file in the same directory, flushed to disk, and renamed
over its final name (rename is atomic on POSIX); only then are older ones pruned. Readers only
consider names that match the final pattern, so a half-written temporary file is never loaded.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step-(\d{9})\.pt$")


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` so that `path` holds either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def save_checkpoint(state: dict, directory: Path, *, step: int, keep: int) -> Path:
    """Write the checkpoint of `step` atomically, then keep only the newest `keep`."""
    path = checkpoint_path(directory, step)
    atomic_save(state, path)
    for old in list_checkpoints(directory)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def load_latest(directory: Path) -> dict | None:
    """The newest complete checkpoint's state, or None when there is none."""
    found = list_checkpoints(directory)
    if not found:
        return None
    return torch.load(found[-1], map_location="cpu", weights_only=False)
