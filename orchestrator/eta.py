"""The ETA of `sweep status`: the FLOPs left at the pace this launch has kept.

A grid trial's progress is the part of its FLOPs it has: all of them once done (finished or
diverged), the tokens it has trained while it runs or after it stopped, and for a branch not
begun the stable phase its trunk has trained for it (the trunk's tokens up to the branch's
checkpoint). The sweep's progress is their sum. Each launch notes the time and the sweep's
progress as it starts training (`sweep.launch`, with the time its first trial began); `status`
takes the progress since over the time since as the pace, and divides the FLOPs still to have
by it.

Not the finished trials' `final/wall_s`: a branch's counts its trunk's seconds (shared with
every budget of its family), a fused member's counts its group's (shared with every member),
and while trunks train no trial runs, so "trials at once" read 1. In a researcher's sweep
(tiny models, WSD, 3 budgets per trunk, groups of 6 on CPU) that said 66.6 min for a 6-min
launch and 126.7 min for a 10-min extend. The pace also counts what FLOPs miss: Ray's start,
evaluations, the tracker's writes, a cluster shared with other work.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.families import plan_sharing
from orchestrator.trials import Trial
from trainer.schema import DONE


def last_metrics(path: Path) -> dict | None:
    """The last whole row with `train/tokens` of a metrics.jsonl (its tail only), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 8192, 0))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            row = json.loads(line)
        except ValueError:  # (the first line cut by the seek, or one being written)
            continue
        if isinstance(row, dict) and "train/tokens" in row:
            return row
    return None


def progress_flops(trials: Sequence[Trial], states: dict, *, share: bool) -> tuple[float, float]:
    """(FLOPs the grid's `trials` have, as the module docstring counts them, FLOPs of all).

    Args:
        trials: the sweep's trials.
        states: the store's record (`trainer.schema.recorded_trials`).
        share: whether budgets share trunks (`share_prefix`).
    """
    from trainer.branching import read_index, trunk_dir
    from trainer.paths import RunPaths

    family_of = {t.trial_id: f for f in plan_sharing(trials, share=share).families
                 for t in f.members}
    trunk_tokens: dict[str, float] = {}
    had = total = 0.0
    for trial in trials:
        total += trial.flops
        state = states.get(trial.trial_id, {})
        if state.get("status") in DONE:
            had += trial.flops
            continue
        row = last_metrics(RunPaths.for_config(trial.cfg, trial.trial_id).metrics)
        tokens = (row or {}).get("train/tokens") or (
            state["run"].data.metrics.get("train/tokens", 0.0) if "run" in state else 0.0)
        if family := family_of.get(trial.trial_id):
            if family.trunk_id not in trunk_tokens:
                folder = trunk_dir(trial.cfg.storage_root, family.trunk_id)
                trunk_tokens[family.trunk_id] = max(
                    read_index(folder).get("tokens") or 0,
                    (last_metrics(folder / "metrics.jsonl") or {}).get("train/tokens", 0))
            tokens = max(tokens, min(trunk_tokens[family.trunk_id],
                                     family.branch_checkpoint_tokens(trial)))
        had += trial.flops * min(tokens / trial.cfg.train.tokens, 1.0)
    return had, total


def launch_note(had_flops: float, *, now: float | None = None) -> str:
    """The `sweep.launch` tag a launch sets as it starts: when, and the FLOPs had then."""
    return json.dumps({"at": time.time() if now is None else now, "flops": had_flops})


def eta_s(had_flops: float, total_flops: float, note: str | None, *,
          now: float | None = None) -> float | None:
    """Seconds until the sweep has all its FLOPs at the pace kept since the launch `note`
    (`launch_note`) began training (its `begun`, set by the tracker as the first trial or
    trunk begins: the workers' start-up, 10-20 s, read as a slow pace right after a launch,
    10 min for a 40 s sweep): 0 when nothing is left, None without a note (a launch by an
    earlier version) or before this launch has made any progress."""
    left = max(total_flops - had_flops, 0.0)
    if left <= 0:
        return 0.0
    try:
        start = json.loads(note or "")
        since_s = (time.time() if now is None else now) - float(start.get("begun", start["at"]))
        gained = had_flops - float(start["flops"])
    except (ValueError, TypeError, KeyError):
        return None
    if gained <= 0 or since_s <= 0:
        return None
    return left / (gained / since_s)
