"""The optimum along one axis of a grid: a quadratic in log x around the lowest loss.

Used for learning rate within a slice (every key fixed but `optim.lr`), and by the batch and
timescale laws along log B and log τ. Diverged runs have no loss; they count as beyond the
edge: a diverged value above the best one brackets the optimum from above (the loss there is
effectively infinite), but the optimum is never placed past the last stable value, so such a
slice is marked `edge="diverged"` (the optimum sits at the stability limit). An optimum at
the lowest or highest value tried is marked `low`/`high`; it is the best value tried, not an
extrapolation, and comes with the next grid values that would bracket it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HALF_WINDOW = 2
"""Grid values on each side of the lowest loss that the quadratic sees."""


@dataclass(frozen=True)
class Optimum:
    """Where the loss is lowest along one axis (x is log10 of the axis value)."""

    x: float
    loss: float
    edge: str | None
    """None, `low`, `high`, `diverged` (at the stability limit) or `all_diverged`."""
    coef: tuple[float, float, float] | None
    """Quadratic a·x² + b·x + c through the window, when it was convex."""
    window: tuple[float, float]
    new_values: tuple[float, ...]
    """Axis values (not logs) that would bracket an edge optimum."""


def axis_optimum(x: np.ndarray, loss: np.ndarray, *, half_window: int = HALF_WINDOW) -> Optimum:
    """The optimum of loss along x = log10(value); NaN loss marks a diverged run.

    Args:
        x: log10 of the axis value, one entry per run (repeats allowed, e.g. seeds).
        loss: the run's loss, NaN when it diverged.
        half_window: grid values on each side of the best one given to the quadratic.
    """
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    levels = np.unique(x)
    finite = np.isfinite(loss)
    means = np.array([loss[(x == v) & finite].mean() if ((x == v) & finite).any() else np.nan
                      for v in levels])
    step = float((levels[-1] - levels[0]) / (len(levels) - 1)) if len(levels) > 1 else 0.5
    ok = np.isfinite(means)
    if not ok.any():
        low = levels[0] - step * np.arange(1, 3)
        return Optimum(np.nan, np.nan, "all_diverged", None, (levels[0], levels[-1]),
                       tuple(10.0 ** low))
    best = int(np.nanargmin(means))
    edge = _edge(ok, best)
    if edge in ("low", "high"):
        sign = -1.0 if edge == "low" else 1.0
        beyond = levels[best] + sign * step * np.arange(1, 3)
        return Optimum(levels[best], means[best], edge, None, (levels[best], levels[best]),
                       tuple(10.0 ** beyond))
    stable = levels[ok]
    pos = int(np.searchsorted(stable, levels[best]))
    window = stable[max(0, pos - half_window): pos + half_window + 1]
    lower = levels[best - 1] if best > 0 else levels[best]
    upper = levels[best] if edge == "diverged" else levels[best + 1]
    new = (float(10 ** ((levels[best] + levels[best + 1]) / 2)),) if edge == "diverged" else ()
    x_opt, loss_opt, coef = _vertex(x, loss, window, lower, upper)
    if coef is None:
        x_opt, loss_opt = levels[best], means[best]
    if edge == "diverged" and x_opt < levels[best]:
        edge, new = None, ()  # the quadratic puts the optimum inside the stable range
    return Optimum(float(x_opt), float(loss_opt), edge, coef, (window[0], window[-1]), new)


def _edge(ok: np.ndarray, best: int) -> str | None:
    if best == 0:
        return "low"
    if best == len(ok) - 1:
        return "high"
    return "diverged" if not ok[best + 1] else None


def _vertex(x, loss, window, lower, upper):
    inside = np.isfinite(loss) & (x >= window[0]) & (x <= window[-1])
    if len(window) < 3:
        return np.nan, np.nan, None
    a, b, c = np.polyfit(x[inside], loss[inside], 2)
    if a <= 0:
        return np.nan, np.nan, None
    x_opt = float(np.clip(-b / (2 * a), lower, upper))
    return x_opt, float(np.polyval((a, b, c), x_opt)), (float(a), float(b), float(c))


def lr_optima(runs: pd.DataFrame, slice_keys: tuple[str, ...]) -> pd.DataFrame:
    """One row per slice: its key values, `lr_opt`, `loss_opt`, `edge`, `extend` and counts.

    Args:
        runs: usable runs (finished, or diverged with NaN loss), canonical columns.
        slice_keys: columns that identify a slice.
    """
    rows = []
    loss = runs["loss"].where(runs["status"] == "finished")
    frame = runs.assign(_x=np.log10(runs["lr"]), _y=loss)
    groups = frame.groupby(list(slice_keys), dropna=False, sort=True) if slice_keys else [
        ((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        opt = axis_optimum(group["_x"].to_numpy(), group["_y"].to_numpy())
        rows.append({**dict(zip(slice_keys, key, strict=True)),
                     **{a: group[a].iloc[0] for a in ("N", "D", "B", "wd") if a in group},
                     "lr_opt": 10.0 ** opt.x, "loss_opt": opt.loss, "edge": opt.edge,
                     "extend": extend_override("optim.lr", opt.new_values),
                     "coef": opt.coef, "window": (10.0 ** opt.window[0], 10.0 ** opt.window[1]),
                     "n_runs": len(group), "n_diverged": int(group["_y"].isna().sum())})
    return pd.DataFrame(rows)


def extend_override(key: str, values: tuple[float, ...]) -> str | None:
    """`key=choice(v1, v2)` for `sweep extend`, or None when there is nothing to add."""
    if not values:
        return None
    return f"{key}=choice(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def next_grid(optima: pd.DataFrame) -> list[str]:
    """One `optim.lr=choice(...)` with every value that would bracket an edge optimum."""
    values = sorted({float(v) for text in optima["extend"].dropna()
                     for v in text[text.index("(") + 1:-1].split(", ")})
    return [extend_override("optim.lr", tuple(values))] if values else []


def best_per_group(optima: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Among bracketed optima, the one with the lowest loss in each group of `by`."""
    usable = optima["edge"].isna() | (optima["edge"] == "diverged")
    good = optima[usable & np.isfinite(optima["loss_opt"])]
    if good.empty:
        return good
    idx = good.groupby(by, dropna=False)["loss_opt"].idxmin() if by else [
        good["loss_opt"].idxmin()]
    return good.loc[list(idx)].reset_index(drop=True)
