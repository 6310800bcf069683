"""Critical batch size from steps to a target loss (Zhang et al. 2024, McCandlish et al. 2018).

For each group of runs that differ only in batch size B and learning rate, the target loss is
the highest of the per-B best losses, so every batch size reaches it. S(B) is the fewest
optimizer steps any LR needed to get there (first step where the running minimum of the
smoothed loss history is at or below the target, interpolated between logged steps). The
steps follow the hyperbola S/S_min − 1 = (E/E_min − 1)^−1 with E = B·S, i.e.
S(B) = S_min + E_min/B, fitted by non-negative least squares. Zhang et al.'s critical batch
size is where the steps exceed perfect linear scaling (S = E_min/B, the small-batch limit) by 20%:
S·B/E_min = 1 + B·S_min/E_min = 1.2, so B_crit = 0.2·E_min/S_min. The crossing of 20% read off
the measured points against the smallest batch tried is reported beside it. Then
B_crit = c · D^p across groups (B in tokens per step).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from fitter.data import slice_column
from fitter.errors import FitError
from fitter.powerlaw import LawFit, fit_power_law

OVERHEAD = 0.2
REACH = 2.0
"""How far outside the batch sizes its group tried (a factor below the smallest, above the
largest) a critical batch size may lie and still make a point of the law. The hyperbola is
fitted to the batch sizes tried; a B_crit far below them is read off the small curvature left
where every batch tried is past critical (a researcher's sweep of 1,024-4,096 tokens a step
put points at 3.8 and 130 tokens, a p of 3.9 and a recommended batch of 10^11 tokens)."""
BATCH_KEYS = frozenset({"B", "train.batch_size", "train.seq_len"})
"""B and the config keys that set it: runs that differ in them share a steps-to-target group."""


def group_keys(slice_keys) -> list[str]:
    """The keys fixed within a cbs group: every slice key but B and the keys that set it.

    A sweep of `train.batch_size` has that key among its slice keys as well as B; grouping by
    it would leave one batch size per group.
    """
    return [k for k in slice_keys if k not in BATCH_KEYS]


def steps_to_target(history: np.ndarray, target: float) -> float:
    """First optimizer step at which the running-minimum loss reaches target (NaN if never).

    Args:
        history: shape (k, 2), optimizer step and loss, in step order.
        target: the loss to reach.
    """
    steps, loss = history[:, 0], np.fmin.accumulate(smoothed(history[:, 1]))
    hit = np.flatnonzero(loss <= target)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    # linear interpolation between the last point above the target and the first below
    frac = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
    return float(steps[i - 1] + frac * (steps[i] - steps[i - 1]))


def smoothed(loss: np.ndarray) -> np.ndarray:
    """Centred mean over 5% of the logged points, so noise does not reach a target early."""
    window = max(1, len(loss) // 20)
    return pd.Series(loss).rolling(window, min_periods=1, center=True).mean().to_numpy()


def hyperbola(batch: np.ndarray, steps: np.ndarray) -> tuple[float, float]:
    """S_min and E_min of S(B) = S_min + E_min/B, both ≥ 0."""
    design = np.column_stack([np.ones_like(batch), 1.0 / batch])
    (s_min, e_min), _ = nnls(design, steps)
    return float(s_min), float(e_min)


def empirical_crossing(batch: np.ndarray, steps: np.ndarray) -> float:
    """Batch size where S·B exceeds that of the smallest batch by 20% (NaN if it never does)."""
    order = np.argsort(batch)
    b, s = batch[order], steps[order]
    overhead = s * b / (s[0] * b[0]) - 1.0
    above = np.flatnonzero(overhead > OVERHEAD)
    if above.size == 0 or above[0] == 0:
        return float("nan")
    i = int(above[0])
    lb = np.log(b[i - 1: i + 1])
    frac = (OVERHEAD - overhead[i - 1]) / (overhead[i] - overhead[i - 1])
    return float(np.exp(lb[0] + frac * (lb[1] - lb[0])))


def cbs_points(runs: pd.DataFrame, histories: dict[str, np.ndarray],
               group_keys: list[str]) -> pd.DataFrame:
    """One row per group with 3+ batch sizes: N, D, target loss, S_min, E_min, B_crit.

    Args:
        runs: finished runs (canonical columns) whose `run` has a history.
        histories: run → (step, loss) array.
        group_keys: columns fixed within a group (every slice key but B).
    """
    runs = runs[runs["run"].isin(histories.keys())]
    rows = []
    by = [slice_column(runs, k) for k in group_keys]  # (λ only where a run was given it)
    groups = runs.groupby(by, dropna=False) if group_keys else [((), runs)]
    not_hyperbola = []
    for _, group in groups:
        if group["B"].nunique() < 3:
            continue
        best = {run: np.nanmin(smoothed(histories[run][:, 1])) for run in group["run"]}
        target = group.assign(best=group["run"].map(best)).groupby("B")["best"].min().max()
        steps = group.assign(S=[steps_to_target(histories[r], target) for r in group["run"]])
        per_b = steps.groupby("B")["S"].min().dropna()
        batch, s = per_b.index.to_numpy(float), per_b.to_numpy(float)
        s_min, e_min = hyperbola(batch, s)
        if s_min <= 0 or e_min <= 0:  # (steps flat in B, or falling faster than 1/B)
            not_hyperbola.append({"N": float(group["N"].iloc[0]),
                                  "D": float(group["D"].iloc[0])})
            continue
        rows.append({"N": group["N"].iloc[0], "D": group["D"].iloc[0], "target_loss": target,
                     "S_min": s_min, "E_min": e_min, "B_noise": e_min / s_min,
                     "B_crit": OVERHEAD * e_min / s_min,
                     "B_crit_empirical": empirical_crossing(batch, s), "n_batch": len(batch),
                     "B_lo": batch.min(), "B_hi": batch.max()})
    points = pd.DataFrame(rows, columns=["N", "D", "target_loss", "S_min", "E_min", "B_noise",
                                         "B_crit", "B_crit_empirical", "n_batch", "B_lo",
                                         "B_hi"])
    points.attrs["not_hyperbola"] = not_hyperbola
    return points


def out_of_reach(points: pd.DataFrame) -> pd.Series:
    """Points whose B_crit lies more than `REACH` outside the batch sizes their group tried."""
    return (points["B_crit"] * REACH < points["B_lo"]) | (points["B_crit"] > REACH * points["B_hi"])


def unbracketed(points: pd.DataFrame) -> tuple[int, int]:
    """How many of a cbs law's points put B_crit below the smallest batch size their group
    tried, and above its largest: read off the hyperbola beyond the batch sizes measured."""
    if "B_lo" not in points:
        return 0, 0
    return int((points["B_crit"] < points["B_lo"]).sum()), int(
        (points["B_crit"] > points["B_hi"]).sum())


def cbs_law(runs: pd.DataFrame, histories: dict[str, np.ndarray], group_keys: list[str],
            **boot) -> LawFit:
    """B_crit = c · D^p from steps to target loss across batch sizes.

    Raises:
        FitError: too few batch sizes at one (N, D), or no loss histories (histories are
            only fetched for groups with 3+ batch sizes, so that is checked first).
    """
    by = [slice_column(runs, k) for k in group_keys]
    if runs.groupby(by, dropna=False)["B"].nunique().max() < 3 if group_keys else (
            runs["B"].nunique() < 3):
        raise FitError("the cbs law needs 3 or more batch sizes at one (N, D); add values "
                       "along train.batch_size.")
    if not histories:
        raise FitError("the cbs law needs per-step loss histories (MLflow metric `eval/loss` "
                       "or `train/loss`, or a CSV with run, step, loss rows) but none were "
                       "found; log them or pass such a CSV.")
    points = cbs_points(runs, histories, group_keys)
    if points.empty:
        raise FitError("the cbs law found no group whose steps-to-target follow "
                       "S = S_min + E_min/B; add batch sizes along train.batch_size.")
    far = out_of_reach(points)
    kept = points[~far].reset_index(drop=True)
    if far.any() and len(kept) < 3:  # (what `fit_power_law` needs for c and p)
        low = points.loc[far, "B_crit"] < points.loc[far, "B_lo"]
        sides = " and ".join(w for w, k in (("smaller", low.any()), ("larger", (~low).any()))
                             if k)
        raise FitError(f"the cbs law has {len(kept)} usable point{'s' * (len(kept) != 1)}: "
                       f"{_far_said(points[far])}; sweep {sides} values of train.batch_size "
                       "to measure them, or pass --batch to `sweep recommend`.")
    law = fit_power_law(kept, name="cbs", axes=("D",), exponents=("p",), target="B_crit",
                        hint="values of train.tokens, each with 3+ batch sizes", **boot)
    if far.any():
        law.extra["out_of_reach"] = _far_said(points[far])
    if points.attrs.get("not_hyperbola"):
        law.extra["not_hyperbola"] = points.attrs["not_hyperbola"]
    return law


def _far_said(far: pd.DataFrame) -> str:
    """`2 critical batch sizes (3.8, 130 tokens a step, at D = 1.31e+05, 2.62e+05) lie more
    than 2x outside the batch sizes tried (1,024-4,096), read off the hyperbola far beyond
    them, and are left out`."""
    sizes = ", ".join(f"{b:.3g}" for b in far["B_crit"])
    where = ", ".join(f"{d:.3g}" for d in far["D"])
    tried = "; ".join(dict.fromkeys(f"{lo:,.0f}-{hi:,.0f}"
                                    for lo, hi in zip(far["B_lo"], far["B_hi"], strict=True)))
    return (f"{len(far)} critical batch size{'s' * (len(far) != 1)} ({sizes} tokens a step, "
            f"at D = {where}) lie{'s' * (len(far) == 1)} more than {REACH:g}x outside the "
            "batch sizes tried "
            f"({tried}), read off the hyperbola far beyond "
            f"{'it, and is' if len(far) == 1 else 'them, and are'} left out")
