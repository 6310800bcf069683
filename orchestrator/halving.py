"""Successive halving over token budgets: `search.optuna.pruner: halving`.

A searched sweep with `pruner: halving` and a `train.tokens` grid axis climbs its budgets as
rungs. Each slice (the `per_slice` point and seed) has one Optuna study per budget:

- rung 0, the smallest budget, is an ordinary study: its sampler asks `n_trials` points;
- once every trial of rung r has ended, the best `ceil(used / reduction_factor)` of them
  (finished, not diverged, by the objective) are enqueued in rung r + 1's study with the same
  searched values, and run at that budget; the rest stop there.

So with 8 trials, a factor of 2 and budgets {1, 2, 4, 8}×, the LRs run 8 at 1×, 4 at 2×, 2 at
4× and 1 at 8×: 20 budget units against 120 for the 8 LRs at every budget. Each rung's study
holds the loss of every LR that reached it, which is what the fitter reads at that budget
(its optimum needs three LRs or more around the best: choose `n_trials` ≥ 3·factor^(rungs−2)
for one at the last-but-one rung).

A rung waits for the whole rung below (synchronous halving): "the best half" is then exact and
the same on every resume, whatever order the trials ended in; other slices' studies keep the
cluster busy meanwhile. A promoted trial is the same config at the next budget, so with WSD or
the Power schedule it is a member of the same token family as its rung-below trial, and its
trunk continues from that trial's branch point (`orchestrator.sharing`): climbing a rung costs
only the increment. Promotions are computed from the studies' storage alone, so a resumed or
extended sweep (more `n_trials` at rung 0 lets more LRs climb) picks up where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_REDUCTION_FACTOR = 2
"""Successive *halving*: the best half of each rung climbs (Jamieson & Talwalkar 2016 use 2,
Hyperband's default is 3; `pruner: {halving: {reduction_factor: 3}}`)."""
DIVERGED_ATTR = "proxysweep.diverged"
"""Trial user attribute: told a finite worst value, but diverged; never promoted."""


@dataclass(frozen=True)
class Rungs:
    """The budgets a searched sweep's slices climb."""

    budgets: tuple[int, ...]
    """`train.tokens` values, smallest first."""
    values: tuple[str, ...]
    """The same budgets as written in the grid (the slices' overrides)."""
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR

    def nominal(self, n_trials: int, rung: int) -> int:
        """Trials rung `rung` holds when every trial below finishes."""
        n = n_trials
        for _ in range(rung):
            n = self.keep(n)
        return n

    def keep(self, used: int) -> int:
        """How many of a rung's `used` trials climb to the next."""
        return math.ceil(used / self.reduction_factor)


def is_open(trial) -> bool:
    """Is an Optuna trial asked and not told, or enqueued and not asked?"""
    return trial.state.name in ("RUNNING", "WAITING")


def survivors(rungs: Rungs, below: Sequence, *, quota: int) -> list[dict] | None:
    """The params that climb from a rung whose trials are `below` (Optuna FrozenTrials), or
    None while that rung is not over (fewer than `quota` trials used, or one still open)."""
    from orchestrator.studies import counts

    used = [t for t in below if counts(t)]
    if len(used) < quota or any(is_open(t) for t in below):
        return None
    good = [t for t in used if t.state.name == "COMPLETE" and math.isfinite(t.value)
            and not t.user_attrs.get(DIVERGED_ATTR)]
    good.sort(key=lambda t: (t.value, t.number))
    return [dict(t.params) for t in good[:rungs.keep(len(used))]]


def missing(climbing: list[dict], above: Sequence) -> list[dict]:
    """The climbing params not yet in the rung above (asked or enqueued there)."""
    from orchestrator.studies import VOID_ATTR

    have = [dict(t.params) or t.system_attrs.get("fixed_params", {}) for t in above
            if not t.user_attrs.get(VOID_ATTR)]  # (a void trial holds no point: enqueue again)
    return [p for p in climbing if p not in have]


def quotas(rungs: Rungs, n_trials: int, per_rung: Sequence[Sequence]) -> list[int]:
    """Trials each rung of one slice holds in the end, from its studies' trials
    (`per_rung[r]`): rung 0 `n_trials`; a rung above one that is over, what it holds plus the
    survivors it still lacks; above one that is not, the nominal count."""
    from orchestrator.studies import VOID_ATTR

    out = [n_trials]
    for r in range(1, len(rungs.budgets)):
        climbing = survivors(rungs, per_rung[r - 1], quota=out[-1])
        held = [t for t in per_rung[r] if not t.user_attrs.get(VOID_ATTR)]
        out.append(rungs.nominal(n_trials, r) if climbing is None
                   else len(held) + len(missing(climbing, per_rung[r])))
    return out
