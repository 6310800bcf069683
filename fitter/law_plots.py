"""Figures of the fitted laws: optima with their intervals, the fit, its band when there are
enough points for one, and a published law where its inputs are the law's axes.

Published laws drawn: Shen et al. 2024 (Power scheduler, WSD) η_opt = 4.6·β·T^−0.51 with β the
batch in sequences (our B is in tokens: β = B / seq_len) and T tokens; StepFun 2025
η_opt = 1.79·N^−0.713·D^0.307 and B_opt = 0.58·D^0.571. One is drawn when the law's axes are
among its inputs and its other inputs are fixed in the sweep, and an LR law only beside runs of
its parametrization (Shen et al.'s muP, StepFun's standard one) where the runs name theirs;
one that lies `FAR_FROM_DATA` times off every optimum is named in the legend, not drawn.
DeepSeek's laws are in compute C, which no law here has as an axis, so they are not drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fitter.data import PARAM_KEY
from fitter.fit import law_name
from fitter.plot_style import (
    LOSS_LABEL,
    MAX_CURVES,
    UNITS,
    palette,
    readable_log_axis,
    select,
    value_ticks,
)


@dataclass(frozen=True)
class Published:
    """A published law: its name in the legend, which of our laws it predicts, its inputs."""

    name: str
    law: str
    inputs: tuple[str, ...]
    value: Callable[[dict], float]
    needs: tuple[str, ...] = ()
    """Other constants of the sweep it needs (e.g. seq_len to turn tokens into sequences)."""
    param: str | None = None
    """The parametrization its models were trained in, where its LR depends on it: it is
    drawn only beside laws of runs in that one (or whose parametrization is not known)."""


PUBLISHED = (
    # β in sequences: our B is in tokens per step
    # (Shen et al. train with muP; StepFun's LR falls with N as a standard parametrization's)
    Published("Shen et al. 2024 (WSD): 4.6·β·T^−0.51", "lr", ("B", "D"),
              lambda p: 4.6 * (p["B"] / p["seq_len"]) * p["D"] ** -0.51, ("seq_len",), "mup"),
    Published("StepFun 2025: 1.79·N^−0.713·D^0.307", "lr", ("N", "D"),
              lambda p: 1.79 * p["N"] ** -0.713 * p["D"] ** 0.307, param="sp"),
    Published("StepFun 2025: 0.58·D^0.571", "batch", ("D",), lambda p: 0.58 * p["D"] ** 0.571),
)


def constants_of(result, group: dict) -> dict:
    # N, D, B and seq_len held fixed in a group's runs, for published laws off the law's axes
    # (and the parametrization, `param`, where the group's runs have one)
    table = select(result.runs.table, group)
    out = {k: float(table[k].dropna().iloc[0]) for k in ("N", "D", "B", "seq_len")
           if k in table and table[k].nunique() == 1}
    if PARAM_KEY in table and table[PARAM_KEY].nunique() == 1:
        out["param"] = str(table[PARAM_KEY].dropna().iloc[0])
    elif PARAM_KEY in table and table[PARAM_KEY].nunique() > 1:
        out["param"] = "mixed"  # (a pooled law of muP and SP runs: neither published law's)
    return out


def law_figure(plt, law, key: str, constants: dict):
    # One panel per axis: the target with the other axes' fitted factors divided out.
    names = law.axes
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False,
                             layout="constrained")
    pts = law.points
    for i, (ax, name) in enumerate(zip(axes.flat, names, strict=True)):
        others = [j for j in range(len(names)) if j != i]
        log_other = sum(law.log_coef[j + 1] * np.log10(pts[names[j]]) for j in others)
        scale = 10 ** np.asarray(log_other, float)
        y = pts[law.target].to_numpy(float) / scale
        x = pts[name].to_numpy(float)
        grid = np.geomspace(x.min() / 1.15, x.max() * 1.15, 60)
        means = {names[j]: 10 ** np.log10(pts[names[j]]).mean() for j in others}
        _law_band(ax, law, i, grid, means)
        ax.plot(grid, 10 ** (law.log_coef[0] + law.log_coef[i + 1] * np.log10(grid)),
                color="C0", lw=1.6, label=f"fit: exponent {law.log_coef[i + 1]:.3f}")
        _law_points(ax, law, x, y, scale)
        _published(ax, law, key, name, grid, means, constants, y)
        ax.set_xscale("log")
        ax.set_yscale("log")
        value_ticks(ax.xaxis, np.unique(x))
        readable_log_axis(ax.yaxis, y)
        ax.set_xlabel(UNITS.get(name, name))
        # (the factors divided out named: "÷ other factors" left a reader to guess why the
        # values sat 3x above the optima the sweep measured)
        ax.set_ylabel(UNITS.get(law.target, law.target) + (" ÷ " + "·".join(
            f"{names[j]}^{law.log_coef[j + 1]:.3g}" for j in others) if others else ""))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.suptitle(f"{key}: {law.form}")
    return fig


def _law_band(ax, law, i: int, grid, means: dict) -> None:
    if not law.has_interval:
        why = ("no interval (--n-boot 0)" if not len(law.boot)
               else f"{len(law.points)} points: too few points for an interval")
        # (in the legend, below the axes: written in the plot's corner it crossed the lowest
        # point's error bar)
        ax.plot([], [], " ", label=why)
        return
    shift = sum((law.boot[:, j + 1] - law.log_coef[j + 1]) * np.log10(means[a])
                for j, a in enumerate(law.axes) if a in means)
    pred = law.boot[:, [0, i + 1]] @ np.vstack([np.ones(len(grid)), np.log10(grid)])
    pred = pred + np.asarray(shift).reshape(-1, 1)
    lo, hi = np.quantile(pred, [(1 - law.ci_level) / 2, (1 + law.ci_level) / 2], axis=0)
    ax.fill_between(grid, 10 ** lo, 10 ** hi, alpha=0.2, color="C0",
                    label=f"{law.ci_level:.0%} interval" + (
                        f" (from the {len(law.points)} optima's own)"
                        if law.interval_source == "points" else ""))


def _law_points(ax, law, x, y, scale) -> None:
    base = law.target.split("_")[0]
    lo_col, hi_col = f"{base}_lo", f"{base}_hi"
    pts = law.points
    if lo_col in pts and hi_col in pts:
        lo = pts[lo_col].to_numpy(float) / scale
        hi = pts[hi_col].to_numpy(float) / scale
        # (clipped: a slice's bootstrap interval need not hold its point estimate)
        err = [np.clip(np.nan_to_num(y - lo), 0, None), np.clip(np.nan_to_num(hi - y), 0, None)]
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="k", capsize=3, lw=1)
    intervals = lo_col in pts and bool(np.isfinite(pts[lo_col]).any())
    limit = pts["at_stability_limit"].to_numpy(bool) if "at_stability_limit" in pts else \
        np.zeros(len(pts), bool)
    said = ("slice optima (90% interval)" if intervals
            else "slice optima" if lo_col in pts else "optima")
    # A pooled law over groups (muP with SP, `--pool`): each group's points its own marker,
    # so that whose optimum sits where can be read (they were all one black dot)
    mixed = next(iter(law.extra.get("mixes", {})), None)
    if mixed is None:
        ax.scatter(x[~limit], y[~limit], color="k", s=28, zorder=5, label=said)
    else:
        values = pts[mixed].astype(str).to_numpy()
        for value, marker in zip(sorted(set(values)), "osDvP*Xh", strict=False):
            mine = ~limit & (values == value)
            ax.scatter(x[mine], y[mine], color="k", marker=marker, s=28, zorder=5,
                       label=f"{said}, {mixed}={value}")
    if limit.any():
        ax.scatter(x[limit], y[limit], marker="^", facecolors="none", edgecolors="k", s=44,
                   zorder=5, label="at the stability limit (next LR diverged): a lower bound")


FAR_FROM_DATA = 5.0
"""A published law whose curve lies this many times above (or below) every optimum is said in
the legend, not drawn: drawn 10-40x above a researcher's optima, with the other slope, it
set the axis and squeezed the optima and the fit into a band."""


def _published(ax, law, key: str, axis: str, grid, means: dict, constants: dict,
               y: np.ndarray) -> None:
    # each published law its own colour and dash, so that two of them are told apart
    styles = iter([("C3", ":"), ("C2", "-."), ("C4", "--"), ("C5", ":")])
    for pub in PUBLISHED:
        fixed = [a for a in pub.inputs if a not in law.axes]
        if pub.law != law_name(key) or not set(law.axes) <= set(pub.inputs):
            continue
        if any(a not in constants for a in (*fixed, *pub.needs)):
            continue
        if pub.param is not None and constants.get("param", pub.param) != pub.param:
            continue
        point = {**constants, **means}
        values = np.array([pub.value({**point, axis: g}) for g in grid])
        others = sum(law.log_coef[j + 1] * np.log10(means[a])
                     for j, a in enumerate(law.axes) if a in means)
        curve = values / 10 ** others
        above, below = curve.min() / np.max(y), np.min(y) / curve.max()
        if max(above, below) > FAR_FROM_DATA:
            lo, hi = sorted((curve.min() / np.max(y), curve.max() / np.min(y)) if above > 1
                            else (np.min(y) / curve.max(), np.max(y) / curve.min()))
            # (a legend entry with no line: the plot's area stays the optima's)
            ax.plot([], [], " ", label=f"{pub.name.split(':')[0]}: {lo:.2g}-{hi:.2g}x "
                    f"{'above' if above > 1 else 'below'} these optima (not drawn)")
            continue
        color, dash = next(styles)
        ax.plot(grid, curve, dash, color=color, lw=1.8,
                label=pub.name + ", at this sweep's " + ", ".join(fixed) if fixed else pub.name)


def loss_figure(plt, law, key: str):
    from fitter.loss_law import log_loss, small_sample_factor

    fig, ax = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
    pts = law.points
    sizes = np.unique(pts["N"])
    shown = sizes[np.linspace(0, len(sizes) - 1, min(MAX_CURVES, len(sizes))).astype(int)]
    colors = dict(zip(sizes, palette(len(sizes)), strict=True))
    grid = np.geomspace(pts["D"].min(), pts["D"].max(), 60)
    ax.scatter(pts["D"], pts["loss"], c=[colors[n] for n in pts["N"]], s=14)
    for n in shown:
        log_n = np.full_like(grid, np.log(n))
        if law.has_interval:
            # (widened as `LossFit.interval` widens what the terminal and recommend give)
            centre = log_loss(law.theta, log_n, np.log(grid))
            spread = small_sample_factor(len(law.points), len(law.theta))
            preds = np.exp(centre + spread * (np.array(
                [log_loss(t, log_n, np.log(grid)) for t in law.boot]) - centre))
            lo, hi = np.quantile(preds, [(1 - law.ci_level) / 2, (1 + law.ci_level) / 2],
                                 axis=0)
            ax.fill_between(grid, lo, hi, color=colors[n], alpha=0.2)
        ax.plot(grid, np.exp(log_loss(law.theta, log_n, np.log(grid))), color=colors[n],
                label=f"N = {n:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    readable_log_axis(ax.yaxis, pts["loss"])
    ax.set_xlabel(UNITS["D"])
    ax.set_ylabel(LOSS_LABEL)
    c = law.coef
    ax.set_title(f"{key}: L = {c['E']:.3g} + {c['A']:.3g}/N^{c['alpha']:.3f} + "
                 f"{c['B']:.3g}/D^{c['beta']:.3f}")
    ax.legend(title="fit (90% band)" if law.has_interval else "fit")
    return fig


