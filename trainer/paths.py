"""Where a run keeps its files, and its stored summary: apart from the training loop, so the
sweep driver's re-sync reads run directories without importing the loop's model, data and
optimizer code."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from trainer.config import Config


@dataclass(frozen=True)
class RunPaths:
    """Where one run keeps its files."""

    run_dir: Path
    checkpoints: Path

    @classmethod
    def for_config(cls, cfg: Config, run_id: str) -> RunPaths:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(cfg.storage_root) / run_id
        checkpoints = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else run_dir / "checkpoints"
        return cls(run_dir, checkpoints)

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.jsonl"


def refuse_if_held(folder: Path) -> None:
    """Stop before a folder kept under an old id is renamed while a process trains in it (a
    driver of the version before, still running the sweep): the rename moved its files away
    under it, and that trial was trained again.

    Raises:
        ConfigError: a live process holds the folder's lease.
    """
    from trainer.errors import ConfigError
    from trainer.lease import current_holder

    if holder := current_holder(folder):
        raise ConfigError(f"{folder} is being trained by {holder.sweep} (host {holder.host}, "
                          f"pid {holder.driver_pid}) under the id an earlier version gave it: "
                          "let that finish, or stop it, then run this again")


def adopt_run_dir(old: Path, new: Path, *, new_id: str) -> bool:
    """Rename the run directory `old`, kept under an id an earlier rule gave its config
    (`trainer.identity.past_ids`), to `new`, its summary and config naming `new_id` (the old id
    as `trial.legacy_id`); whether it did. Nothing when there is no `old`, or `new` exists
    already (a run under the new id has its own files), or another process renamed it first.

    Raises:
        ConfigError: a live process trains in `old` (`refuse_if_held`).
    """
    if not old.is_dir() or new.exists():
        return False
    refuse_if_held(old)
    try:
        old.rename(new)
    except OSError:
        return False
    for name in ("summary.json", "config.json"):
        path = new / name
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict) and stored.get("trial.id") not in (None, new_id):
            stored["trial.legacy_id"], stored["trial.id"] = stored["trial.id"], new_id
            tmp = path.with_name(f".{name}.migrating")
            tmp.write_text(json.dumps(stored, indent=2))
            os.replace(tmp, path)
    return True


def read_summary(paths: RunPaths) -> dict | None:
    """The stored summary of an ended run, or None."""
    if not paths.summary.exists():
        return None
    return json.loads(paths.summary.read_text())


_CHECKPOINT = re.compile(r"^step-(\d{9})$")


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first (a checkpoint being written is a
    hidden `.step-*.tmp` until it is complete)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name))


def saved_steps(directory: Path) -> list[int]:
    """Steps of the complete checkpoints in `directory`, oldest first."""
    return [int(_CHECKPOINT.match(p.name).group(1)) for p in list_checkpoints(directory)]


def folder_problem(path: str | Path, *, create: bool = True, probe: bool = False
                   ) -> str | None:
    """Why files cannot be written under `path` (a file in its way; with `create`, a folder
    that cannot be made or written), or None. `create` makes the folder now, as its writer
    would: permissions alone do not tell (root under /proc, a read-only mount). `probe`
    (without `create`: a dry run) tries a file in the deepest folder that exists, making
    none; neither, only a file in the way is said (what a command that reads needs)."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if probe and not create:
        import tempfile

        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            return f"cannot write there ({err.strerror or err})"
        return None
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as err:
            return f"cannot write there ({err.strerror or err})"
    return None
