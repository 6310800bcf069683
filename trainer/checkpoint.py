"""Run checkpoints in `torch.distributed.checkpoint` (DCP) format, atomic and reshardable.

A checkpoint is a directory `step-NNNNNNNNN/`: each rank writes its shards of the model and
optimizer (as `get_state_dict` names them, so they load into any world size, sharded or not)
into a hidden temporary directory; rank 0 then adds `train_state.pt` (counters, RNG) and renames
the directory to its final name only after every rank has finished (rename is atomic on POSIX);
only then are older checkpoints pruned. Readers consider only final names, so a run killed
mid-write resumes from the previous checkpoint.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from trainer.distributed import Dist, barrier
from trainer.errors import ConfigError, stopped_by
from trainer.paths import list_checkpoints

# Without a process group DCP warns, at each save and load, that it assumes one process: a
# run of one process is one (every resume printed it). Process-wide and for that sentence
# only (a context manager around each call would not be thread-safe); a sharded run has its
# group, so it never meets the warning.
warnings.filterwarnings("ignore", category=UserWarning,
                        message="torch.distributed is disabled, unavailable or uninitialized")

TRAIN_STATE = "train_state.pt"


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
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def path_of(directory: Path, step: int) -> Path:
    """The checkpoint directory of `step` in `directory`."""
    return directory / f"step-{step:09d}"


def save(directory: Path, *, step: int, keep: int, model: torch.nn.Module,
         optimizer: torch.optim.Optimizer, train_state: dict, d: Dist) -> Path:
    """Write the checkpoint of `step` from every rank; keep only the newest `keep`."""
    final = path_of(directory, step)
    tmp = directory / f".step-{step:09d}.tmp"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    fresh = not optimizer.state
    model_sd, optim_sd = get_state_dict(model, optimizer)
    if fresh:  # (a checkpoint before the first step: a trunk's branch point in its 1st batch)
        _unstep(optimizer, optim_sd)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
    barrier(d)
    if d.is_main:
        atomic_save(train_state, tmp / TRAIN_STATE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        fsync_dir(directory)
        for old in list_checkpoints(directory)[:-max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(d)
    return final


def _unstep(optimizer: torch.optim.Optimizer, optim_sd: dict) -> None:
    """Undo the step count that `get_state_dict` gives an optimizer with no state yet.

    It fills that state by a step at LR 0: moments zero, as before any step, but AdamW's
    `step` at 1, so the run's first real update was bias-corrected as its second (and the
    checkpoint said so too): a trunk that saved at step 0 trained another run than alone."""
    states = [*optimizer.state.values(), *optim_sd.get("state", {}).values()]
    for state in states:
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            step.zero_()
        elif step is not None:
            state["step"] = 0


def load_latest(directory: Path, *, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> dict | None:
    """Load the newest checkpoint into `model` and `optimizer` (every rank calls this);
    its train state, or None when there is no checkpoint.

    A checkpoint that cannot be read (its files cut short by a full disk or a partial copy of
    the run's folder: a kill cannot do it, see the module docstring) is renamed aside,
    `.step-NNNNNNNNN.damaged`, and the one before it is loaded: every full load overwrites
    every tensor a failed one may have touched. A run of several ranks stops instead (its
    ranks could fall back to different steps).

    Raises:
        NoCheckpointReadable: no checkpoint can be read.
        ConfigError: one cannot, in a run of several ranks.
    """
    found = list_checkpoints(directory)
    if not found:
        return None
    several = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    for path in reversed(found):
        try:
            return load(path, model=model, optimizer=optimizer)
        # (DCP's CheckpointException derives from BaseException, not Exception)
        except (Exception, CheckpointException) as err:
            if not damaged(err):
                raise  # a stop, out of memory, an I/O error: the checkpoint may be whole
            why = damage_said(err)
            if several:
                raise ConfigError([f"checkpoint {path} cannot be read ({why}): move it aside "
                                   f"(e.g. to .{path.name}.damaged) to resume from the one "
                                   "before it"]) from err
            set_aside(path, why)
    raise NoCheckpointReadable([f"no checkpoint in {directory} can be read (each is kept as "
                                ".step-*.damaged): run it again to train it from its start"])


def damage_said(err: BaseException) -> str:
    """What failed, in a few words, of an error that `damaged` says cut a checkpoint short."""
    lines = str(err).strip().splitlines() or [""]
    # (DCP's exception holds each rank's traceback: its last line says what failed)
    return lines[-1][:200] if isinstance(err, CheckpointException) else \
        f"{type(err).__name__}: {lines[0][:160]}".rstrip(": ")


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged checkpoint `.step-NNNNNNNNN.damaged` (`.damaged-2`, ... when that is
    taken; kept, no longer listed), saying so; its new path."""
    aside, n = path.with_name(f".{path.name}.damaged"), 1
    while aside.exists():  # (that step was damaged before, trained again, and is again)
        n += 1
        aside = path.with_name(f".{path.name}.damaged-{n}")
    path.rename(aside)
    # (it said "resuming from the one before it" where there was none, then that none could)
    before = [p for p in list_checkpoints(path.parent) if p.name < path.name]
    print(f"note: checkpoint {path} cannot be read ({why}): kept as {aside.name}; "
          + ("resuming from the one before it" if before else "there is none before it"),
          file=sys.stderr)
    return aside


class SetAside(Exception):  # noqa: N818 (not an error: what the group does next)
    """A fused group's member had a damaged checkpoint, now set aside (`set_aside`): the
    group's models may hold part of it, so its caller forms the groups again from fresh runs
    (the member now resumes from its checkpoint before, apart from the others)."""


class NoCheckpointReadable(ConfigError):
    """Every checkpoint of a run was damaged (each now set aside): the model and optimizer
    may hold part of one, so the run starts again from a new process or a new `TrainingRun`
    (`trainer.loop.run` does that for one process)."""


_DAMAGE = (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, FileNotFoundError)
_DAMAGE_WORDS = ("truncated", "unexpected eof", "pytorchstreamreader", "central directory",
                 "metadata is none", "invalid load key", "no such file")


def damaged(err: BaseException) -> bool:
    """Does `err`, raised while loading a checkpoint, say that its files are cut short or
    missing (rather than a stop, or an error that a whole checkpoint can meet as well)?"""
    if stopped_by(err) is not None:
        return False
    failures = getattr(err, "failures", None)  # (DCP's: each rank's exception)
    causes = [f[0] if isinstance(f, tuple) else f for f in failures.values()] \
        if isinstance(failures, dict) else []
    for cause in [err, *causes]:
        while cause is not None:
            if isinstance(cause, _DAMAGE) or any(w in str(cause).lower() for w in _DAMAGE_WORDS):
                return True
            cause = cause.__cause__ or cause.__context__
    return False


def load(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load the checkpoint at `path` (a `step-NNNNNNNNN` directory) into `model` and
    `optimizer` (every rank calls this); its train state."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    return torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=False)

