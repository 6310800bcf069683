"""Hyperparameter laws from slice optima: learning rate, weight-decay timescale, batch size.

- `lr`: η_opt = c · N^a_N · D^a_D · B^a_B over the axes among N, D, B that vary (the
  exponent of N is `a_N`, and so on). Within each (N, D, B) the
  slice with the lowest optimal loss is used (the LR at the best setting of the other keys),
  or with 3+ weight decays around the best, the LR at the best λ between them.
- `timescale`: τ = B / (η λ D) (Power Lines, B and D both in tokens). Per (N, D, B), τ at each
  slice's LR optimum (the τ the slice was given, when the sweep sets `optim.timescale`); with 3
  or more weight decays a quadratic in log τ gives τ_opt, otherwise the best slice's τ is
  τ_opt unless it is the lowest or highest τ tried (an edge, left out of the law). Then
  τ_opt = c · (D/N)^m.
- `batch`: per (N, D), the best loss at each batch size; a quadratic in log B gives B_opt; then
  B_opt = c · D^p.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from fitter.data import MLFLOW_KEYS
from fitter.errors import FitError
from fitter.plot_style import UNITS
from fitter.powerlaw import LawFit, fit_power_law
from fitter.slices import CI_LEVEL as SLICE_CI_LEVEL
from fitter.slices import axis_optimum, best_per_group, usable

AXIS_KEYS = {"N": "model.width", "D": "train.tokens", "B": "train.batch_size"}
NEXT_GRID = "`next_grid` in fit.json lists the LRs to add; `sweep fit` without --law writes it"


def lr_law(optima: pd.DataFrame, *, carry: tuple[str, ...] = (), **boot) -> LawFit:
    """η_opt = c · N^a_N · D^a_D · B^a_B over the varying axes among N, D, B.

    Each point keeps its slice's bootstrap interval (`lr_lo`, `lr_hi`) for the figures, and
    its value of each key in `carry` (the group keys of a pooled fit): where the points take
    several values of one (`mixes`: key → value → points), the law runs across groups (muP
    at one width, SP at the next), whose optimal LRs differ by more than the law's axes say.
    """
    axes = [a for a in ("N", "D", "B") if a in optima and optima[a].notna().all()]
    points = at_best_timescale(optima, best_per_group(optima, axes), axes)
    scored = optima[np.isfinite(optima["loss_opt"].astype(float))]
    unbracketed = (scored.groupby(axes, dropna=False).ngroups if axes else int(
        not scored.empty)) - len(points)
    conflicts = int(optima["conflict"].fillna(False).astype(bool).sum()) \
        if "conflict" in optima else 0
    _enough(points, "lr", f"slices with a bracketed LR optimum ({NEXT_GRID})"
            + (f"; {conflicts} slice{'s' * (conflicts != 1)} left out: a run diverged at an "
               "LR that finished runs at or above it contradict (check or rerun the "
               "runs that diverged)" if conflicts else ""))
    varying = tuple(a for a in axes if points[a].nunique() > 1)
    if not varying:
        # An axis the runs vary by its config key but do not give (a hand-written CSV with
        # model.width and no N column): the law cannot see it.
        unread = [a for a in ("N", "D", "B") if a not in axes and AXIS_KEYS[a] in optima
                  and optima[AXIS_KEYS[a]].nunique() > 1]
        if unread:
            a = unread[0]
            raise FitError(f"the lr law reads {a}, which the runs do not give, while their "
                           f"{AXIS_KEYS[a]} varies; add the column {a}: {UNITS[a]}.")
        swept = [a for a in axes if optima[a].nunique() > 1]
        # (and what the fit needs then, said at once: 3 points along one axis; it told the
        # next need only once the first was met)
        if swept:  # the sweep varies it, but its other slices' optima are at an edge
            a = swept[0]
            raise FitError(f"the lr law needs bracketed LR optima at 2 or more values of N, D "
                           f"or B (and 3 points for a law along one of them), but only one "
                           f"value of {a} ({AXIS_KEYS[a]}) has one: the other slices' best LR "
                           f"is at the edge of the LRs tried; extend them ({NEXT_GRID}).")
        absent = [a for a in ("N", "D") if a not in optima or optima[a].isna().all()]
        if absent:  # (a CSV without N: its sizes merged into one slice, "the sweep has one")
            raise FitError(
                f"the lr law needs LR optima at 2 or more values of N, D or B, and the runs "
                f"give no {' and no '.join(f'{a} (`{MLFLOW_KEYS[a]}`)' for a in absent)}: runs "
                f"that differ in {' or '.join(absent)} read as one slice; add the column"
                f"{'s' * (len(absent) > 1)} {', '.join(absent)} "
                f"({'; '.join(UNITS[a] for a in absent)}).")
        keys = " or ".join(AXIS_KEYS[a] for a in axes) or "model.width, train.tokens"
        raise FitError(f"the lr law needs LR optima at 2 or more values of N, D or B (and 3 "
                       f"points for a law along one of them) but the sweep has one; add values "
                       f"along {keys}.")
    # A slice whose next LR up diverged has its optimum at the stability limit: a lower
    # bound (the optimum lies between it and the LR that diverged), marked in fit.json and
    # drawn apart in the law's figure.
    carry = [k for k in carry if k in points]
    points = points.assign(at_stability_limit=points["edge"] == "diverged")[
        [*varying, "lr_opt", "lr_lo", "lr_hi", "loss_opt", "at_stability_limit",
         "at_timescale", *carry]]
    varying, along = _along_a_line(points, varying)
    hint = "slices with bracketed LR optima along " + ", ".join(AXIS_KEYS[a] for a in varying)
    law = fit_power_law(points, name="lr", axes=varying, exponents=lr_exponents(varying),
                        target="lr_opt", hint=hint, point_sigma=_log_sigma(points), **boot)
    if along:
        law.extra["along"] = along
    mixes = {k: points[k].astype(str).value_counts().sort_index().to_dict() for k in carry
             if points[k].nunique() > 1}
    if mixes:
        law.extra["mixes"] = mixes
    if unbracketed > 0:  # (their best setting's LR at the grid's edge: `best_per_group`)
        law.extra["unbracketed"] = unbracketed
    capped = int(points["at_stability_limit"].sum())
    if capped * 2 > len(points):  # (most of the law is the largest stable LR, not a vertex)
        law.extra["at_stability_limit"] = capped
    return law


def _log_sigma(points: pd.DataFrame) -> np.ndarray:
    """Each point's standard error of log10(lr_opt) read from its slice's interval (`lr_lo`,
    `lr_hi`, at `slices.CI_LEVEL`) as a normal one's; NaN where it has none, or where the
    optimum is only a lower bound (at the stability limit: its interval is not its noise)."""
    z = NormalDist().inv_cdf(1 - (1 - SLICE_CI_LEVEL) / 2)
    width = np.log10(points["lr_hi"].astype(float)) - np.log10(points["lr_lo"].astype(float))
    return np.where(points["at_stability_limit"].astype(bool), np.nan,
                    width.to_numpy() / (2 * z))


def _along_a_line(points: pd.DataFrame, varying: tuple[str, ...]
                  ) -> tuple[tuple[str, ...], dict]:
    """Axes that move together at every point (token budgets that grow with the width, D =
    20·N): least squares cannot tell their exponents apart (it split one slope between a_N and
    a_D at random), but the law along that line holds. The later axis is dropped, its
    exponent folded into the earlier one's, and the line kept (`along`: axis → {"of": axis,
    "power": s, "factor": c}, i.e. axis = c·of^s) for the summary and `recommend` to say."""
    along = {}
    kept = list(varying)
    for later in varying[1:]:
        for earlier in kept[:kept.index(later)]:
            x = np.log10(points[earlier].to_numpy(float))
            y = np.log10(points[later].to_numpy(float))
            s, c = np.polyfit(x, y, 1)
            if np.max(np.abs(y - (c + s * x))) < 1e-6 * max(1.0, float(np.abs(y).max())):
                along[later] = {"of": earlier, "power": float(s), "factor": float(10 ** c)}
                kept.remove(later)
                break
    return tuple(kept), along


def at_best_timescale(optima: pd.DataFrame, points: pd.DataFrame, axes: list[str]
                       ) -> pd.DataFrame:
    """Each point's LR at the best weight decay between the ones tried, where the sweep tried
    3 or more that bracket it (`at_timescale`: `interpolated`; else `best slice`).

    The LR optimum moves with λ: at a λ off the best one, the best LR makes up for the
    timescale τ = B/(η·λ·D) being off too. The best slice's λ is off the best λ by up to half
    a grid step (or more: `edge`, the best λ is the lowest or highest tried, the point kept),
    by an amount that drifts with D/N, so its LR put a D exponent into the law that was not
    there (a_D = +0.06 [0.04, 0.08] for a true 0, the LR at a big run 33% high).
    The best λ is the vertex of a parabola of the slices' optimal losses in log λ (log τ
    where the sweep sets `optim.timescale`); the LR there, from a line through log LR
    against log λ of the three slices nearest it.
    """
    points = points.assign(at_timescale="best slice")
    if points.empty or "wd" not in optima:
        return points
    given = "tau" in optima and optima["tau"].notna().any()
    knob = optima["tau"] if given else optima["wd"]
    good = optima[usable(optima) & (optima["wd"] > 0) & knob.notna()].assign(_k=knob)
    for i, point in points.iterrows():
        if not float(point["wd"]) > 0:  # (no weight decay did best: no λ to read it at)
            continue
        same = np.ones(len(good), bool)
        for a in axes:
            same &= np.isclose(good[a].to_numpy(float), float(point[a]))
        group = good[same]
        if group["_k"].nunique() < 3 or len(group) != group["_k"].nunique():
            continue  # (another key varies here too: the best slice stands)
        x = np.log10(group["_k"].to_numpy(float))
        opt = axis_optimum(x, group["loss_opt"].to_numpy(float))
        if opt.edge is not None:  # the best λ lies past those tried: said, not hidden
            points.loc[i, "at_timescale"] = "edge"
            continue
        near = np.argsort(np.abs(x - opt.x))[:3]
        slope, icept = np.polyfit(x[near], np.log10(group["lr_opt"].to_numpy(float)[near]), 1)
        lr = 10 ** (icept + slope * opt.x)
        shift = lr / float(point["lr_opt"])
        points.loc[i, ["lr_opt", "lr_lo", "lr_hi", "loss_opt", "at_timescale"]] = [
            lr, point["lr_lo"] * shift, point["lr_hi"] * shift, opt.loss, "interpolated"]
    return points


def lr_exponents(axes: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the lr law's exponents: `a_N` for N, so the law reads `N^a_N`, not `N^N`."""
    return tuple(f"a_{a}" for a in axes)


def timescale_points(optima: pd.DataFrame) -> pd.DataFrame:
    """τ_opt per (N, D, B), with λ_opt and the number of weight decays it came from.

    A slice's τ is the timescale its runs were given (`tau`) when the sweep set
    `optim.timescale`: then λ = B/(η·τ·D) differs between the LRs of the slice and τ does not.
    Otherwise the slice has one λ and τ = B/(η_opt·λ·D) at its LR optimum.

    With 3 or more usable τ, the vertex of a parabola in log τ (or its edge). With fewer (slices
    whose LR optimum sits on the LR grid's edge are not usable), the best usable τ, flagged as
    an edge when the sweep tried several τ at that (N, D, B) and it is the lowest or highest of
    them: the optimum may lie beyond it, and the law leaves it out. Where the sweep tried one
    τ (one λ), the point is flagged `one`: τ there is the λ chosen, not an optimum.
    """
    given = optima["tau"] if "tau" in optima else pd.Series(np.nan, index=optima.index)
    optima = optima.assign(tau=given.fillna(
        optima["B"] / (optima["lr_opt"] * optima["wd"] * optima["D"])))
    tried = optima[optima["wd"] > 0].groupby(["N", "D", "B"])["tau"].agg(["min", "max"])
    scored = optima[(optima["wd"] > 0) & np.isfinite(optima["loss_opt"].astype(float))]
    ok = usable(optima)
    rows = []
    for (n, d, b), every in scored.groupby(["N", "D", "B"]):
        top = every.loc[every["loss_opt"].idxmin()]
        group = every[ok[every.index]]
        if not ok[top.name] or group.empty:
            # The lowest loss is at a τ whose LR optimum is at the LR grid's edge: the best τ
            # is there (or past it), not among the bracketed slices, whose best pointed a
            # stranger to lower τ while the loss fell toward higher ones. Its LRs first.
            rows.append({"N": n, "D": d, "B": b, "D/N": d / n, "tau_opt": top["tau"],
                         "wd_opt": top["wd"], "n_wd": every["tau"].nunique(), "edge": "lr"})
            continue
        best = group.loc[group["loss_opt"].idxmin()]
        tau, edge = best["tau"], None
        if group["tau"].nunique() >= 3:
            opt = axis_optimum(np.log10(group["tau"].to_numpy()), group["loss_opt"].to_numpy())
            edge = opt.edge
            tau = 10 ** opt.x if edge is None else tau
        elif _tried_several(tried.loc[(n, d, b)]):
            edge = ("high" if np.isclose(tau, tried.loc[(n, d, b), "max"]) else
                    "low" if np.isclose(tau, tried.loc[(n, d, b), "min"]) else None)
        else:
            # One λ (or τ) tried: its τ follows from the λ chosen and the LR optimum, not
            # from the loss; it is no optimum of τ.
            edge = "one"
        rows.append({"N": n, "D": d, "B": b, "D/N": d / n, "tau_opt": tau,
                     "wd_opt": b / (best["lr_opt"] * tau * d), "n_wd": group["tau"].nunique(),
                     "edge": edge})
    return pd.DataFrame(rows, columns=["N", "D", "B", "D/N", "tau_opt", "wd_opt", "n_wd", "edge"])


def _tried_several(tried: pd.Series) -> bool:
    """Whether a setting tried more than one τ (one λ and one LR optimum give one τ: no edge)."""
    return not np.isclose(tried["min"], tried["max"])


def timescale_law(optima: pd.DataFrame, **boot) -> LawFit:
    """τ_opt = c · (D/N)^m."""
    if not (optima["wd"] > 0).any():
        raise FitError("the timescale law needs runs with non-zero weight decay "
                       "(optim.weight_decay or optim.timescale); add some to the sweep.")
    found = timescale_points(optima)
    points = found[found["edge"].isna()].drop(columns=["edge"])
    lr_edge = int((found["edge"] == "lr").sum())
    # (a setting whose best LR is at the edge tried one weight decay all the same)
    single = int(((found["edge"] == "one") | ((found["edge"] == "lr")
                                             & (found.get("n_wd") == 1))).sum())
    # Settings of one weight decay stay short whatever LRs are added: when they leave fewer
    # than 3 settings, that is said first (extending the LRs, said first, gave no law).
    if len(points) < 3 and lr_edge and len(found) - single >= 3:
        raise FitError(f"the timescale law has {len(points)} usable point"
                       f"{'s' * (len(points) != 1)}: at {lr_edge} of its {len(found)} settings "
                       "the τ with the lowest loss has its best LR at the edge of the LRs "
                       f"tried, so neither optimum is known there; extend those LRs first "
                       f"({NEXT_GRID}).")
    if len(points) < 3 and single:
        given = optima["tau"].notna().any() if "tau" in optima else False
        key = "optim.timescale" if given else "optim.weight_decay"
        which = ("its one setting" if len(found) == 1 else
                 f"all {single} of its settings" if single == len(found) else
                 f"{single} of its {len(found)} settings")
        raise FitError(f"the timescale law needs the best τ at each setting, from 3 or more "
                       f"values of {key} there, but {which} tried only one"
                       + (" above 0" if not given else "")
                       + " (τ = B/(η·λ·D) then follows from the λ chosen, not from the "
                       f"loss); add values along {key} (e.g. three a factor 3 apart)"
                       + (f", and extend the LRs of the {lr_edge} setting"
                          f"{'s' * (lr_edge != 1)} whose best LR is at the edge of those "
                          f"tried ({NEXT_GRID})" if lr_edge else "") + ".")
    if len(points) < 3 and lr_edge:
        raise FitError(f"the timescale law has {len(points)} usable point"
                       f"{'s' * (len(points) != 1)}: at {lr_edge} of its {len(found)} settings "
                       "the τ with the lowest loss has its best LR at the edge of the LRs "
                       f"tried, so neither optimum is known there; extend those LRs first "
                       f"({NEXT_GRID}).")
    given = optima["tau"].notna().any() if "tau" in optima else False
    tried = sorted(optima.loc[optima["tau"].notna(), "tau"].unique()) if given else \
        sorted(optima.loc[optima["wd"] > 0, "wd"].unique())
    key = "optim.timescale" if given else "optim.weight_decay"
    if len(points) < 3:  # (a high τ is a low λ: λ = B/(η·τ·D))
        _refuse_edges(found, "timescale", "τ", key, tried, mirrored=not given)
    _enough(points, "timescale", "(N, D) settings with an LR optimum and weight decay > 0")
    law = fit_power_law(points, name="timescale", axes=("D/N",), exponents=("m",),
                        target="tau_opt", hint="values of D/N (model.width or train.tokens)",
                        **boot)
    left = found[found["edge"].notna()]
    if len(left):  # (fitted without them, which biases m: said, with what brackets them)
        law.extra["edges"] = [{"N": float(r.N), "D": float(r.D), "B": float(r.B),
                               "edge": r.edge} for r in left.itertuples()]
        sides = sorted(set(left["edge"]) & {"low", "high"})
        if sides:
            law.extra["edges_fix"] = _past_edges(sides, key, tried, mirrored=not given)
    return law


def batch_points(optima: pd.DataFrame) -> pd.DataFrame:
    """B_opt per (N, D) from the best loss at each batch size; edge flags kept."""
    good = optima[usable(optima)]
    rows = []
    for (n, d), group in good.groupby(["N", "D"]):
        per_b = group.groupby("B")["loss_opt"].min()
        if len(per_b) < 3:
            continue
        opt = axis_optimum(np.log10(per_b.index.to_numpy(float)), per_b.to_numpy())
        rows.append({"N": n, "D": d, "B_opt": 10 ** opt.x, "loss_opt": opt.loss,
                     "n_batch": len(per_b), "edge": opt.edge})
    return pd.DataFrame(rows, columns=["N", "D", "B_opt", "loss_opt", "n_batch", "edge"])


def batch_law(optima: pd.DataFrame, **boot) -> LawFit:
    """B_opt = c · D^p."""
    if optima.groupby(["N", "D"])["B"].nunique().max() < 3:
        raise FitError("the batch law needs 3 or more batch sizes at one (N, D) but the sweep "
                       "has at most "
                       f"{optima.groupby(['N', 'D'])['B'].nunique().max()}; add values along "
                       "train.batch_size.")
    found = batch_points(optima)
    points = found[found["edge"].isna()].drop(columns=["edge"])
    if len(points) < 3:
        edges = found[found["edge"].isin(["low", "high"])]
        if not edges.empty:
            fix = _batch_edges_fix(optima, sorted(set(edges["edge"])))
            raise FitError(_edges_refusal(found, edges, "batch", "batch size", fix))
    _enough(points, "batch", "(N, D) settings with 3+ batch sizes bracketing the best")
    law = fit_power_law(points, name="batch", axes=("D",), exponents=("p",), target="B_opt",
                        hint="values of train.tokens, each with 3+ batch sizes", **boot)
    left = found[found["edge"].notna()]
    if len(left):  # (fitted without them, which biases p: said, with what brackets them)
        law.extra["edges"] = [{"N": float(r.N), "D": float(r.D), "edge": r.edge}
                              for r in left.itertuples()]
        sides = sorted(set(left["edge"]) & {"low", "high"})
        if sides:
            law.extra["edges_fix"] = _batch_edges_fix(optima, sides)
    return law


def _batch_edges_fix(optima: pd.DataFrame, sides: list[str]) -> str:
    """What to add to bracket the best batch size at `sides` of those tried: values of
    train.batch_size where the runs give it (a sweep's), else batches in tokens (a CSV's B)."""
    if "train.batch_size" in optima:
        tried = sorted(pd.to_numeric(optima["train.batch_size"]).unique())
        return _past_edges(sides, "train.batch_size", tried, mirrored=False)
    tried = sorted(optima["B"].astype(float).unique())
    add = [tried[0] * tried[0] / tried[1] if side == "low" else tried[-1] * tried[-1] / tried[-2]
           for side in sides]
    return ("add runs at batches of " + " and ".join(f"{v:,.0f}" for v in sorted(add))
            + " tokens (train.batch_size × train.seq_len)")


def _refuse_edges(found: pd.DataFrame, law: str, what: str, key: str, tried: list,
                  *, mirrored: bool) -> None:
    """When edge points are what leaves a law short: say so, with the values of `key` one
    step past the edge (`tried`: the values swept; `mirrored`: the key grows as the law's
    quantity falls, as λ does with τ)."""
    edges = found[found["edge"].isin(["low", "high"])]
    if edges.empty:
        return
    how = _past_edges(sorted(set(edges["edge"])), key, tried, mirrored=mirrored)
    raise FitError(_edges_refusal(found, edges, law, what, how))


def _edges_refusal(found: pd.DataFrame, edges: pd.DataFrame, law: str, what: str,
                   how: str) -> str:
    side = " or ".join(f"the {s}est" for s in sorted(set(edges["edge"])))
    return (f"the {law} law has {len(found) - len(edges)} usable point"
            f"{'s' * (len(found) - len(edges) != 1)}: at {len(edges)} of its "
            f"{len(found)} settings the best {what} is {side} one tried, so the optimum "
            f"may lie beyond it; {how}.")


def _past_edges(sides: list[str], key: str, tried: list, *, mirrored: bool) -> str:
    """What to add to bracket optima at the `sides` ("low", "high") of the values tried."""
    add = []
    if len(tried) >= 2:
        step_up, step_down = tried[-1] / tried[-2], tried[1] / tried[0]
        for side in sides:
            up = (side == "high") != mirrored
            add.append(tried[-1] * step_up if up else tried[0] / step_down)
    if key == "train.batch_size":  # whole sequences, at least one, past the edge
        add = [v for v in (math.ceil(v) if v > tried[-1] else math.floor(v) for v in add)
               if v >= 1 and v not in tried]
    values = ", ".join(str(v) if isinstance(v, int) else f"{v:.3g}" for v in sorted(add))
    return (f"add {key}=choice({values}) to the sweep (`sweep extend` takes it)" if add
            else f"extend {key} past the edge" if key != "train.batch_size"
            else "the smallest batch, one sequence, was tried: a smaller one takes shorter "
                 "sequences (train.seq_len)")


def _enough(points: pd.DataFrame, law: str, what: str) -> None:
    if points.empty:
        raise FitError(f"the {law} law has no usable points; it needs {what}.")
