"""The figures of a fit, written by `sweep fit` and logged to its MLflow run.

- `loss_vs_lr.png` (Tensor Programs V, Figure 1): final eval loss against log₂ LR, one curve
  per width (or per N, D, B, λ: the first axis that varies), a star at each curve's fitted
  optimum with its bootstrap interval, the local parabola dashed, diverged trials as crosses
  at the top of the axis. One panel per group (muP and SP side by side, sharing y). Other keys
  that vary get one figure each (`loss_vs_lr_1.png`, ...), at most `MAX_FIGURES`.
- `lr_opt_vs_width.png`: the optimal LR against width with its interval, one line per group
  (flat under muP, falling under SP when muP transfers).
- `law_LAW.png` (`law_LAW_GROUP.png` with groups): each law with its optima, their intervals
  and the fitted line on log axes; a band only when there are enough points for one
  (`fitter.fit.interval_meaningful`), otherwise the words "too few points for an interval".
  A published law is drawn beside it when its inputs are the law's axes (the others held at
  the sweep's values): Shen et al. 2024 and StepFun for the LR, StepFun for the batch size.
  DeepSeek's laws are in compute C, which no law here has as an axis, so they are not drawn.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fitter.fit import interval_meaningful, law_name
from fitter.groups import AXIS_CONFIG_KEYS, group_keys, label

STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 11}
DPI = 110
MAX_FIGURES = 6
"""Loss-vs-LR figures per fit (one per combination of the keys that are neither curve nor
panel)."""
MAX_CURVES = 8
CURVE_AXES = ("N", "D", "B", "wd")
UNITS = {"N": "non-embedding parameters N", "D": "training tokens D",
         "B": "batch size B (tokens per step)", "wd": "weight decay λ",
         "D/N": "tokens per parameter D/N", "lr_opt": "optimal learning rate",
         "tau_opt": "optimal timescale τ", "B_opt": "optimal batch size (tokens per step)",
         "B_crit": "critical batch size (tokens per step)"}
LOSS_LABEL = "final eval loss (nats per token)"


@dataclass(frozen=True)
class Published:
    """A published law: its name in the legend, which of our laws it predicts, its inputs."""

    name: str
    law: str
    inputs: tuple[str, ...]
    value: Callable[[dict], float]
    needs: tuple[str, ...] = ()
    """Other constants of the sweep it needs (e.g. seq_len to turn tokens into sequences)."""


PUBLISHED = (
    # β in sequences: our B is in tokens per step
    Published("Shen et al. 2024 (WSD): 4.6·β·T^−0.51", "lr", ("B", "D"),
              lambda p: 4.6 * (p["B"] / p["seq_len"]) * p["D"] ** -0.51, ("seq_len",)),
    Published("StepFun 2025: 1.79·N^−0.713·D^0.307", "lr", ("N", "D"),
              lambda p: 1.79 * p["N"] ** -0.713 * p["D"] ** 0.307),
    Published("StepFun 2025: 0.58·D^0.571", "batch", ("D",), lambda p: 0.58 * p["D"] ** 0.571),
)


def save_plots(result, out_dir: str | Path) -> list[Path]:
    """Write every figure of a `FitResult` under out_dir; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context(STYLE):
        if not result.optima.empty:
            figures = _loss_vs_lr_figures(plt, result)
            for i, fig in enumerate(figures):
                name = "loss_vs_lr.png" if len(figures) == 1 else f"loss_vs_lr_{i + 1}.png"
                paths.append(_save(plt, fig, out / name))
            fig = _lr_vs_width_figure(plt, result)
            if fig is not None:
                paths.append(_save(plt, fig, out / "lr_opt_vs_width.png"))
        for key, law in result.laws.items():
            group = result.groups.get(key, {})
            fig = (_loss_figure(plt, law, key) if law_name(key) == "loss"
                   else _law_figure(plt, law, key, _constants(result, group)))
            paths.append(_save(plt, fig, out / f"law_{_file_label(key)}.png"))
    return paths


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _file_label(key: str) -> str:
    return re.sub(r"[^\w.-]+", "_", key.replace("=", "-")).strip("_")


# --- loss vs LR -------------------------------------------------------------------------------

def _layout(result) -> tuple[list[str], str | None, list[str]]:
    # panel keys (groups), the curve key, and the keys that get a figure each
    optima = result.optima
    panels = [k for k in group_keys(result.runs) if k in optima and optima[k].nunique() > 1]
    varying = [k for k in result.runs.slice_keys if k in optima and k not in panels
               and optima[k].nunique(dropna=False) > 1]
    curve = next((a for a in CURVE_AXES if a in varying), varying[0] if varying else None)
    # a key that follows the curve's axis (model.width with N) needs no figure of its own
    follows = [k for k in varying if k != curve and curve and (
        k in AXIS_CONFIG_KEYS or (optima.groupby([*panels, curve], dropna=False)[k]
                                  .nunique(dropna=False) <= 1).all())]
    return panels, curve, [k for k in varying if k != curve and k not in follows]


def _loss_vs_lr_figures(plt, result) -> list:
    panels, curve, per_figure = _layout(result)
    optima = result.optima
    combos = _combinations(optima, per_figure)[:MAX_FIGURES]
    figures = []
    for combo in combos:
        rows = _select(optima, combo)
        panel_values = _combinations(rows, panels)
        fig, axes = plt.subplots(1, len(panel_values), figsize=(max(6.4, 5.2 * len(panel_values)),
                                                                5.0), sharey=True,
                                 squeeze=False, layout="constrained")
        handles = {}
        for ax, panel in zip(axes.flat, panel_values, strict=True):
            _loss_vs_lr_panel(ax, result, _select(rows, panel), curve, handles)
            ax.set_title(label(panel) or "all runs")
            ax.set_xlabel("learning rate (log₂ scale)")
        axes.flat[0].set_ylabel(LOSS_LABEL)
        _shared_ylim(axes.flat, result, rows)
        handles.update(_marker_key(handles.pop("_markers", set())))
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncol=min(3, len(handles)))
        title = "Final loss vs learning rate"
        fig.suptitle(title + (f" ({label(_text(combo))})" if combo else ""))
        figures.append(fig)
    return figures


def _loss_vs_lr_panel(ax, result, slices: pd.DataFrame, curve: str | None, handles: dict):
    slices = slices.sort_values(curve) if curve else slices
    if len(slices) > MAX_CURVES:
        slices = slices.iloc[np.linspace(0, len(slices) - 1, MAX_CURVES).round().astype(int)]
    colors = _colors(len(slices))
    usable = result.runs.usable
    for color, (_, opt) in zip(colors, slices.iterrows(), strict=True):
        runs = _select(usable, {k: opt[k] for k in result.runs.slice_keys if k in opt})
        ok = runs[runs["status"] == "finished"].groupby("lr")["loss"].mean()
        name = _curve_label(result.runs.table, runs, curve, opt)
        (line,) = ax.plot(ok.index, ok.to_numpy(), "o-", color=color, ms=4, lw=1.3)
        handles.setdefault(name, line)
        bad = runs.loc[runs["status"] == "diverged", "lr"]
        if len(bad):
            ax.scatter(bad, np.full(len(bad), 0.97), marker="x", s=40, color=color,
                       transform=ax.get_xaxis_transform(), clip_on=False, zorder=4)
            handles.setdefault("_markers", set()).add("diverged")
        handles.setdefault("_markers", set()).add(_optimum_marker(ax, opt, color))
        if opt["coef"] is not None:
            handles["_markers"].add("parabola")
    lrs = result.runs.usable["lr"]
    _log2_axis(ax.xaxis, lrs)
    ax.set_xlim(lrs.min() / 2 ** 0.3, lrs.max() * 2 ** 0.3)


def _optimum_marker(ax, opt, color) -> str | None:
    # the local parabola, and a star (bracketed optimum) or a ring (best LR at the grid edge)
    if opt["coef"] is not None:
        x = np.linspace(*np.log10(opt["window"]), 40)
        ax.plot(10 ** x, np.polyval(opt["coef"], x), "--", color=color, lw=1, alpha=0.8)
    if not np.isfinite(opt["lr_opt"]):
        return None
    bracketed = opt["edge"] in (None, "diverged") or pd.isna(opt["edge"])
    if bracketed:
        lo, hi = opt.get("lr_lo", np.nan), opt.get("lr_hi", np.nan)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.errorbar([opt["lr_opt"]], [opt["loss_opt"]], capsize=3, color=color, lw=1.2,
                        xerr=[[opt["lr_opt"] - lo], [hi - opt["lr_opt"]]], zorder=5)
        ax.scatter([opt["lr_opt"]], [opt["loss_opt"]], marker="*", s=160, color=color,
                   edgecolor="k", linewidth=0.7, zorder=6)
        return "optimum"
    ax.scatter([opt["lr_opt"]], [opt["loss_opt"]], marker="o", s=110, facecolor="none",
               edgecolor="k", linewidth=1.2, zorder=6)
    return "edge"


def _marker_key(kinds: set) -> dict:
    # legend entries for the markers, in black, after the curves
    from matplotlib.lines import Line2D

    style = {"optimum": ("fitted optimum (90% interval)",
                         {"marker": "*", "ms": 12, "mfc": "0.6", "mec": "k"}),
             "parabola": ("local parabola of the fit", {"ls": "--", "color": "0.4"}),
             "edge": ("best LR at the grid edge (not bracketed)",
                      {"marker": "o", "ms": 9, "mfc": "none", "mec": "k"}),
             "diverged": ("diverged (drawn at the top)", {"marker": "x", "ms": 7, "mec": "k"})}
    return {text: Line2D([], [], **{"ls": "none", **kw}) for kind, (text, kw) in style.items()
            if kind in kinds}


def _shared_ylim(axes, result, rows: pd.DataFrame) -> None:
    losses = result.runs.finished["loss"]
    keys = [k for k in result.runs.slice_keys if k in rows]
    if keys:
        mask = np.zeros(len(result.runs.finished), bool)
        for _, opt in rows.iterrows():
            mask |= _mask(result.runs.finished, {k: opt[k] for k in keys})
        losses = losses[mask]
    if losses.empty:
        return
    lo, hi = float(losses.min()), float(losses.max())
    span = hi - lo or 0.1
    axes[0].set_ylim(lo - 0.04 * span, hi + 0.1 * span)


def _curve_label(table: pd.DataFrame, runs: pd.DataFrame, curve: str | None, opt) -> str:
    if curve is None:
        return "runs"
    if curve == "N" and "model.width" in table and runs["model.width"].nunique() == 1:
        return f"width {runs['model.width'].iloc[0]} (N = {_short(opt['N'])})"
    names = {"N": "N", "D": "D", "B": "B", "wd": "λ"}
    return f"{names.get(curve, curve)} = {_short(opt[curve])}"


# --- optimal LR vs width ----------------------------------------------------------------------

def _lr_vs_width_figure(plt, result):
    optima = result.optima
    if "N" not in optima or optima["N"].nunique() < 2:
        return None
    panels, _, _ = _layout(result)
    others = [a for a in ("D", "B") if a in optima and optima[a].nunique() > 1]
    width = _width_map(result.runs.table)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    series = _combinations(optima, panels + others)[:MAX_CURVES]
    for color, values in zip(_colors(len(series)), series, strict=True):
        rows = _best_per_n(_select(optima, values))
        if rows.empty:
            continue
        x = rows["N"].map(width).to_numpy(float) if width else rows["N"].to_numpy(float)
        y = rows["lr_opt"].to_numpy(float)
        inside = rows["edge"].isna() | (rows["edge"] == "diverged")
        lo = np.nan_to_num(y - rows["lr_lo"].to_numpy(float))
        hi = np.nan_to_num(rows["lr_hi"].to_numpy(float) - y)
        name = label(_text(values)) or "optimum"
        drift = y[inside].max() / y[inside].min() if inside.sum() > 1 else np.nan
        name += f" (max/min {drift:.2g}×)" if np.isfinite(drift) else ""
        ax.errorbar(x, y, yerr=[lo, hi], fmt="-", color=color, capsize=3, lw=1.3)
        ax.scatter(x[inside], y[inside], color=color, s=36, zorder=5, label=name)
        if (~inside).any():
            ax.scatter(x[~inside], y[~inside], facecolor="none", edgecolor=color, s=60,
                       zorder=5, label="best LR at grid edge (a bound)")
    ax.set_xscale("log", base=2 if width else 10)
    ax.set_yscale("log")
    _value_ticks(ax.xaxis, np.array(sorted(width.values() if width else optima["N"].unique())))
    _readable_log_axis(ax.yaxis, optima["lr_opt"])
    ax.set_xlabel("width (model.width)" if width else UNITS["N"])
    ax.set_ylabel("optimal learning rate")
    ax.set_title("Optimal learning rate vs width (90% bootstrap interval)")
    ax.legend()
    return fig


def _best_per_n(rows: pd.DataFrame) -> pd.DataFrame:
    # one optimum per N: the bracketed slice with the lowest loss (e.g. over weight decays),
    # else the best edge one
    rows = rows[np.isfinite(rows["loss_opt"])]
    bracketed = rows["edge"].isna() | (rows["edge"] == "diverged")
    ranked = rows.assign(_rank=(~bracketed).astype(int)).sort_values(["_rank", "loss_opt"])
    return ranked.groupby("N", as_index=False).head(1).sort_values("N")


def _width_map(table: pd.DataFrame) -> dict:
    if "model.width" not in table:
        return {}
    pairs = table[["N", "model.width"]].dropna().drop_duplicates()
    if pairs["N"].duplicated().any():
        return {}
    return {n: float(w) for n, w in zip(pairs["N"], pairs["model.width"], strict=True)}


# --- laws -------------------------------------------------------------------------------------

def _constants(result, group: dict) -> dict:
    # N, D, B and seq_len held fixed in a group's runs, for published laws off the law's axes
    table = _select(result.runs.table, group)
    return {k: float(table[k].dropna().iloc[0]) for k in ("N", "D", "B", "seq_len")
            if k in table and table[k].nunique() == 1}


def _law_figure(plt, law, key: str, constants: dict):
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
        _published(ax, law, key, name, grid, means, constants)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _value_ticks(ax.xaxis, np.unique(x))
        _readable_log_axis(ax.yaxis, y)
        ax.set_xlabel(UNITS.get(name, name))
        ax.set_ylabel(UNITS.get(law.target, law.target)
                      + (" ÷ other factors" if others else ""))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.suptitle(f"{key}: {law.form}")
    return fig


def _law_band(ax, law, i: int, grid, means: dict) -> None:
    if not interval_meaningful(len(law.points), len(law.log_coef)):
        ax.text(0.03, 0.04, f"{len(law.points)} points: too few points for an interval",
                transform=ax.transAxes, fontsize=9, color="0.3")
        return
    shift = sum((law.boot[:, j + 1] - law.log_coef[j + 1]) * np.log10(means[a])
                for j, a in enumerate(law.axes) if a in means)
    pred = law.boot[:, [0, i + 1]] @ np.vstack([np.ones(len(grid)), np.log10(grid)])
    pred = pred + np.asarray(shift).reshape(-1, 1)
    lo, hi = np.quantile(pred, [(1 - law.ci_level) / 2, (1 + law.ci_level) / 2], axis=0)
    ax.fill_between(grid, 10 ** lo, 10 ** hi, alpha=0.2, color="C0",
                    label=f"{law.ci_level:.0%} bootstrap band")


def _law_points(ax, law, x, y, scale) -> None:
    base = law.target.split("_")[0]
    lo_col, hi_col = f"{base}_lo", f"{base}_hi"
    pts = law.points
    if lo_col in pts and hi_col in pts:
        lo = pts[lo_col].to_numpy(float) / scale
        hi = pts[hi_col].to_numpy(float) / scale
        err = [np.nan_to_num(y - lo), np.nan_to_num(hi - y)]
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="k", capsize=3, lw=1)
    ax.scatter(x, y, color="k", s=28, zorder=5, label="slice optima (90% interval)"
               if lo_col in pts else "optima")


def _published(ax, law, key: str, axis: str, grid, means: dict, constants: dict) -> None:
    for pub in PUBLISHED:
        fixed = [a for a in pub.inputs if a not in law.axes]
        if pub.law != law_name(key) or not set(law.axes) <= set(pub.inputs):
            continue
        if any(a not in constants for a in (*fixed, *pub.needs)):
            continue
        point = {**constants, **means}
        values = np.array([pub.value({**point, axis: g}) for g in grid])
        others = sum(law.log_coef[j + 1] * np.log10(means[a])
                     for j, a in enumerate(law.axes) if a in means)
        ax.plot(grid, values / 10 ** others, ":", color="C3", lw=1.8,
                label=pub.name + ", at this sweep's " + ", ".join(fixed) if fixed else pub.name)


def _loss_figure(plt, law, key: str):
    from fitter.loss_law import log_loss

    fig, ax = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
    pts = law.points
    sizes = np.unique(pts["N"])
    shown = sizes[np.linspace(0, len(sizes) - 1, min(MAX_CURVES, len(sizes))).astype(int)]
    colors = dict(zip(sizes, _colors(len(sizes)), strict=True))
    grid = np.geomspace(pts["D"].min(), pts["D"].max(), 60)
    ax.scatter(pts["D"], pts["loss"], c=[colors[n] for n in pts["N"]], s=14)
    for n in shown:
        log_n = np.full_like(grid, np.log(n))
        preds = np.exp([log_loss(t, log_n, np.log(grid)) for t in law.boot])
        lo, hi = np.quantile(preds, [(1 - law.ci_level) / 2, (1 + law.ci_level) / 2], axis=0)
        ax.fill_between(grid, lo, hi, color=colors[n], alpha=0.2)
        ax.plot(grid, np.exp(log_loss(law.theta, log_n, np.log(grid))), color=colors[n],
                label=f"N = {n:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _readable_log_axis(ax.yaxis, pts["loss"])
    ax.set_xlabel(UNITS["D"])
    ax.set_ylabel(LOSS_LABEL)
    c = law.coef
    ax.set_title(f"{key}: L = {c['E']:.3g} + {c['A']:.3g}/N^{c['alpha']:.3f} + "
                 f"{c['B']:.3g}/D^{c['beta']:.3f}")
    ax.legend(title="fit (90% band)")
    return fig


# --- helpers ----------------------------------------------------------------------------------

def _log2_axis(axis, values) -> None:
    # ticks at powers of two, at most 7 of them, labelled 2^k
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis.axes.set_xscale("log", base=2)
    lo, hi = np.log2(np.nanmin(values)), np.log2(np.nanmax(values))
    ks = np.arange(np.floor(lo), np.ceil(hi) + 1)
    step = int(np.ceil(len(ks) / 7))
    axis.set_major_locator(FixedLocator(2.0 ** ks[::step]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"$2^{{{int(round(np.log2(v)))}}}$"))
    axis.set_minor_locator(NullLocator())


def _value_ticks(axis, values) -> None:
    # ticks at the sweep's own values when there are few of them; else decades
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    values = np.unique(np.asarray(values, float))
    if len(values) <= 6:
        axis.set_major_locator(FixedLocator(values))
        axis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
        axis.set_minor_formatter(NullFormatter())


def _readable_log_axis(axis, values) -> None:
    # 1-2-5 ticks within two decades, plain numbers, no minor labels that collide
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = np.asarray(values, float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() < 100:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    axis.set_minor_formatter(NullFormatter())


def _combinations(frame: pd.DataFrame, keys: list[str]) -> list[dict]:
    if not keys or frame.empty:
        return [{}]
    combos = frame[keys].drop_duplicates().sort_values(keys)
    return [dict(zip(keys, row, strict=True)) for row in combos.itertuples(index=False)]


def _mask(frame: pd.DataFrame, values: dict) -> np.ndarray:
    mask = np.ones(len(frame), bool)
    for key, value in values.items():
        if key not in frame:
            continue
        col = frame[key]
        mask &= (col.isna() if pd.isna(value) else col == value).to_numpy()
    return mask


def _select(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    return frame[_mask(frame, values)]


def _text(values: dict) -> dict:
    return {k: _short(v) for k, v in values.items()}


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]


def _short(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(v):
        return "–"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.2g}"
