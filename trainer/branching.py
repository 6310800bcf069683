"""Where a branch starts: a trial's `branch.json`, a trunk's `trunk.json`, read without torch.

A trunk (`trainer.trunk`) trains the stable phase that the token budgets of one family share;
each budget is a branch, an ordinary run that starts from a trunk checkpoint instead of from
step 0. Two small files connect them, both written atomically:

- `RUN_DIR/branch.json` of a trial (written by the orchestrator before it runs the trial):
  the trunk's directory and the trial's branch point s = (1 − f)·D in tokens. A trial that
  has no checkpoint of its own starts from the trunk's newest checkpoint at or below s, and
  trains the gap (if any) and its decay itself. Any such checkpoint gives the exact run: every
  trunk step before it ended at or below s, where the trial's LR equals the trunk's.
- `TRUNK_DIR/trunk.json` of a trunk (written by the trunk after every checkpoint and at its
  end): each checkpoint's token count, which branch points have theirs, where the trunk has
  got to, and whether and where it diverged. A trunk that diverged within a trial's stable
  phase means the trial diverges at the same step: the trial then takes the trunk's record up
  to that step as its own, without training.

The sweep driver reads the same files to know when a branch can start (`passed`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

BRANCH_FILE = "branch.json"
TRUNK_FILE = "trunk.json"


@dataclass(frozen=True)
class Divergence:
    """Where a trunk diverged: the state after the step that did it."""

    step: int
    tokens: int
    loss: float
    wall_s: float
    initial_loss: float | None = None
    batch_size: int = 0
    """The global batch after that step (it may have grown under the norm test)."""


@dataclass(frozen=True)
class BranchSource:
    """What a branch starts from: a trunk checkpoint, or a divergence it inherits."""

    trunk_dir: Path
    step: int
    """Trunk step the branch takes over (its history up to here is the trunk's)."""
    tokens: int
    checkpoint: Path | None
    """None when the branch inherits `diverged`."""
    diverged: Divergence | None = None


def trunk_dir(storage_root: str | Path, trunk_id: str) -> Path:
    """Where the trunk of family `trunk_id` keeps its files."""
    return Path(storage_root) / "trunks" / trunk_id


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write `obj` as JSON so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def write_branch(run_dir: Path, *, trunk_dir: Path, branch_tokens: int) -> None:
    """Mark `run_dir`'s trial as a branch of the trunk in `trunk_dir` at `branch_tokens`."""
    write_json_atomic(Path(run_dir) / BRANCH_FILE, {"trunk_dir": str(trunk_dir),
                                                    "branch_tokens": int(branch_tokens)})


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def read_index(trunk_dir: Path) -> dict:
    """A trunk's `trunk.json` (an empty index when it has not saved anything yet)."""
    return read_json(Path(trunk_dir) / TRUNK_FILE) or {"checkpoints": {}, "points": {},
                                                       "tokens": 0, "status": "new"}


def branch_source(run_dir: Path) -> BranchSource | None:
    """Where the trial in `run_dir` starts when it has no checkpoint of its own: None for a
    trial that is no branch, or whose trunk has nothing at or below its branch point yet
    (it then trains from step 0, which is exact too)."""
    marker = read_json(Path(run_dir) / BRANCH_FILE)
    if marker is None:
        return None
    trunk_dir, point = Path(marker["trunk_dir"]), int(marker["branch_tokens"])
    index = read_index(trunk_dir)
    diverged = index.get("diverged")
    if diverged is not None and diverged["tokens"] <= point:
        d = Divergence(**diverged)
        return BranchSource(trunk_dir, d.step, d.tokens, None, d)
    below = [(tokens, name) for name, tokens in index["checkpoints"].items()
             if tokens <= point]
    if not below:
        return None
    tokens, name = max(below)
    return BranchSource(trunk_dir, int(name.split("-")[1]), tokens,
                        trunk_dir / "checkpoints" / name)


def start_position(run_dir: Path, checkpoints: Path) -> tuple | None:
    """Where the next attempt of the trial in `run_dir` starts: ("checkpoint", step) from its
    newest checkpoint (in `checkpoints`), ("branch", step) from its trunk's checkpoint of that
    step, ("diverged", run_dir) when it takes over its trunk's divergence (and trains
    nothing), None from step 0. Fused groups (`trainer.fused`) form of trials at one
    position."""
    from trainer.paths import saved_steps

    steps = saved_steps(Path(checkpoints))
    if steps:
        return ("checkpoint", steps[-1])
    source = branch_source(run_dir)
    if source is None:
        return None
    if source.diverged is not None:
        return ("diverged", str(run_dir))
    return ("branch", source.step)


TRUNK_CHECKPOINTS = 8
"""Cadence checkpoints over the first launch's trunk."""


def cadence_tokens(index: dict, cfg, branch_points: list[int]) -> int:
    """Tokens between a trunk's cadence checkpoints: fixed in its `index` for its life, else
    (a new trunk) an eighth of the largest branch point, in whole batches of `cfg` (at least
    one). Trunks of equal cadence, branch points and position may train as one fused group."""
    if index.get("cadence_tokens"):
        return int(index["cadence_tokens"])
    bt = cfg.train.batch_size * cfg.train.seq_len
    return max(bt, max(branch_points) // TRUNK_CHECKPOINTS // bt * bt)


def passed(index: dict, point: int) -> bool:
    """Has the trunk of `index` got as far as a branch at `point` needs: its checkpoint at
    the point's batch boundary exists, the trunk is past the point, or it has diverged (and
    will never get there)?"""
    return (str(point) in index.get("points", {})
            or any(t > point for t in index.get("checkpoints", {}).values())
            or index.get("diverged") is not None)


def trunk_history(trunk_dir: Path, step: int) -> list[dict]:
    """The trunk's logged rows up to `step` ({"step": n, key: value, ...}), in order. The
    trunk may be appending meanwhile: a last line cut short is not one of them."""
    path = Path(trunk_dir) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["step"] <= step:
            rows.append(row)
    return rows


def trunk_summary(index: dict) -> dict:
    """The trunk's end as `final/*` values (tokens and steps trained, seconds)."""
    return {"final/tokens": index.get("tokens", 0), "final/steps": index.get("steps", 0),
            "final/wall_s": index.get("wall_s", 0.0)}
