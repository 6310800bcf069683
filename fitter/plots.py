"""The figures of a fit, written by `sweep fit` and logged to its MLflow run.

- `loss_vs_lr.png` (Tensor Programs V, Figure 1): final eval loss against log₂ LR, one curve
  per width (or per N, D, B, λ: the first axis that varies), a star at each curve's fitted
  optimum with its bootstrap interval, the local parabola dashed, diverged trials as crosses
  at the top of the axis. One panel per group (muP and SP side by side, sharing y). Other keys
  that vary get one figure each (`loss_vs_lr_1_B-8.png`, ...: numbered, then what the figure
  holds), at most `MAX_FIGURES`.
- `lr_opt_vs_width.png`: the optimal LR against width with its interval, one line per group
  (flat under muP, falling under SP when muP transfers).
- `law_LAW.png` (`law_LAW_GROUP.png` with groups): each law with its optima, their intervals
  and the fitted line on log axes; a band only when there are enough points for one
  (`fitter.fit.interval_meaningful`), otherwise the words "too few points for an interval",
  and a published law beside it where one applies (`fitter.law_plots`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from fitter.data import slice_column, slice_values
from fitter.fit import law_name
from fitter.groups import AXIS_CONFIG_KEYS, group_keys, label
from fitter.law_plots import constants_of, law_figure, loss_figure
from fitter.laws import at_best_timescale
from fitter.plot_style import (
    DPI,
    LOSS_LABEL,
    MAX_CURVES,
    STYLE,
    UNITS,
    as_text,
    combinations,
    log2_axis,
    palette,
    readable_log_axis,
    row_mask,
    select,
    short,
    value_ticks,
)
from fitter.slices import lr_drift, mean_seed_loss, usable
from trainer.schema import PARAM_TIMESCALE

MAX_FIGURES = 6
"""Loss-vs-LR figures per fit (one per combination of the keys that are neither curve nor
panel)."""
CURVE_AXES = ("N", "D", "B", "wd")
MAX_PANEL_COLUMNS = 3
"""Panels (groups) per row of a loss-vs-LR figure; more groups wrap to further rows."""
LEGEND_COLUMN_CHARS = 42
"""Longest legend entry that two legend columns under one panel hold (else one column)."""


def save_plots(result, out_dir: str | Path) -> list[Path]:
    """Write every figure of a `FitResult` under out_dir; the paths written."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A font cache built without matplotlib's own fonts (one shared by another install) made
    # every fit print ~20 "findfont: ... Falling back to DejaVu Sans" lines; the fallback is
    # all that happens, and these figures need no particular font.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # a law fitted last time but not now must not linger
        stale.unlink()
    paths = []
    with plt.rc_context(STYLE):
        if not result.optima.empty:
            figures = _loss_vs_lr_figures(plt, result)
            for i, (holds, fig) in enumerate(figures):
                # (numbered in the figures' order, and named by what each holds: `_1_B-8`)
                name = ("loss_vs_lr.png" if len(figures) == 1 else
                        f"loss_vs_lr_{i + 1}_{_file_label(holds)}.png")
                paths.append(_save(plt, fig, out / name))
            fig = _lr_vs_width_figure(plt, result)
            if fig is not None:
                paths.append(_save(plt, fig, out / "lr_opt_vs_width.png"))
        for key, law in result.laws.items():
            group = result.groups.get(key, {})
            fig = (loss_figure(plt, law, key) if law_name(key) == "loss"
                   else law_figure(plt, law, key, constants_of(result, group)))
            paths.append(_save(plt, fig, out / f"law_{_file_label(key)}.png"))
    return paths


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _file_label(key: str) -> str:
    return re.sub(r"[^\w.-]+", "_", key.replace("=", "-").replace("e+", "e")).strip("_")


# --- loss vs LR -------------------------------------------------------------------------------

def _by_slice(optima: pd.DataFrame) -> pd.DataFrame:
    """The optima with λ as the slice key it is (`fitter.data.slice_column`): NaN for a slice
    given τ, whose `wd` is the λ of its first LR and names no figure or curve."""
    return optima.assign(wd=slice_column(optima, "wd")) if "wd" in optima else optima


def _layout(result) -> tuple[list[str], str | None, list[str]]:
    # panel keys (groups), the curve key, and the keys that get a figure each
    optima = _by_slice(result.optima)
    panels = [k for k in group_keys(result.runs) if k in optima and optima[k].nunique() > 1]
    varying = [k for k in result.runs.slice_keys if k in optima and k not in panels
               and optima[k].nunique(dropna=False) > 1]
    curve = next((a for a in CURVE_AXES if a in varying), varying[0] if varying else None)
    # a key that follows the curve's axis (model.width with N) needs no figure of its own
    # (nor does λ beside τ: the weight-decay controls of a timescale sweep are curves of its
    # figures, as its timescales are: see `_loss_vs_lr_figures`)
    timescales = "tau" in optima and optima["tau"].notna().any()
    follows = [k for k in varying if k != curve and curve and (
        (k in AXIS_CONFIG_KEYS and k != PARAM_TIMESCALE) or (k == "wd" and timescales)
        or (optima.groupby([*panels, curve], dropna=False)[k].nunique(dropna=False) <= 1)
        .all())]
    return panels, curve, [k for k in varying if k != curve and k not in follows]


def _loss_vs_lr_figures(plt, result) -> list[tuple[str, object]]:
    """(what it holds, e.g. `B=8`, or "" for the one figure; the figure) per figure."""
    panels, curve, per_figure = _layout(result)
    # A timescale sweep: a panel per width (each its own loss axis), its timescales as curves
    # (τ = ...; λ = ... for runs given a weight decay). As curves of one figure, every width's
    # τ shared one legend entry per width, and MAX_CURVES dropped all but 8 of them.
    by_width = curve is not None and PARAM_TIMESCALE in per_figure
    if by_width:
        per_figure = [k for k in per_figure if k != PARAM_TIMESCALE]
        panels, curve = [*panels, curve], PARAM_TIMESCALE
    optima = _by_slice(result.optima)
    combos = combinations(optima, per_figure)[:MAX_FIGURES]
    figures = []
    for combo in combos:
        rows = select(optima, combo)
        panel_values = combinations(rows, panels)
        cols = min(MAX_PANEL_COLUMNS, len(panel_values))
        rows_of_panels = -(-len(panel_values) // cols)
        fig, axes = plt.subplots(rows_of_panels, cols, sharey=not by_width, squeeze=False,
                                 figsize=(max(6.4, 5.2 * cols), 1.0 + 4.2 * rows_of_panels),
                                 layout="constrained")
        for ax in axes.flat[len(panel_values):]:
            ax.axis("off")
        handles = {}
        for ax, panel in zip(axes.flat, panel_values, strict=False):
            _loss_vs_lr_panel(ax, result, select(rows, panel), curve, handles)
            ax.set_title(_panel_title(result.runs.table, panel) or "all runs")
            ax.set_xlabel("learning rate (log₂ scale)")
            if by_width:
                _shared_ylim([ax], result, select(rows, panel))
        axes.flat[0].set_ylabel(LOSS_LABEL)
        if not by_width:
            _shared_ylim(axes.flat, result, rows)
        handles.update(_marker_key(handles.pop("_markers", set())))
        # (two columns under one panel: three of "width 128 (N = 4.3e+05)" overflow it, and
        # so do two of a long curve label)
        ncol = 3 if cols > 1 else (2 if max(map(len, handles)) <= LEGEND_COLUMN_CHARS else 1)
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncol=min(ncol, len(handles)))
        title = "Final loss vs learning rate"
        fig.suptitle(title + (f" ({label(as_text(combo))})" if combo else ""))
        figures.append((label(as_text(combo)), fig))
    return figures


def _loss_vs_lr_panel(ax, result, slices: pd.DataFrame, curve: str | None, handles: dict):
    slices = slices.sort_values(curve, key=_numeric_first) if curve else slices
    if len(slices) > MAX_CURVES:
        slices = slices.iloc[np.linspace(0, len(slices) - 1, MAX_CURVES).round().astype(int)]
    colors = palette(len(slices))
    usable = result.runs.usable
    for color, (_, opt) in zip(colors, slices.iterrows(), strict=True):
        runs = select(usable, slice_values(opt, result.runs.slice_keys))
        # (a slice whose seeds tried different LRs is fitted on the mean seed's losses: drawn
        # as measured, its runs sat a seed's offset off the parabola through them)
        reading = mean_seed_loss(runs)
        ok = pd.Series(reading.loss, index=runs["lr"]).dropna().groupby(level=0).mean()
        if reading.moved:
            handles.setdefault("_markers", set()).add("seed_offsets")
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
    log2_axis(ax.xaxis, lrs)
    ax.set_xlim(lrs.min() / 2 ** 0.3, lrs.max() * 2 ** 0.3)


def _numeric_first(values: pd.Series) -> pd.Series:
    # a config key's values are labels: τ 10 sorted between 1 and 3, and took its colour
    number = pd.to_numeric(values, errors="coerce")
    return number if number.notna().any() else values


def _optimum_marker(ax, opt, color) -> str | None:
    # the local parabola, and a star (bracketed optimum) or a ring (best LR at the grid edge)
    if opt["coef"] is not None:
        x = np.linspace(*np.log10(opt["window"]), 40)
        ax.plot(10 ** x, np.polyval(opt["coef"], x), "--", color=color, lw=1, alpha=0.8)
    if not np.isfinite(opt["lr_opt"]):
        return None
    if _conflict(opt):
        ax.scatter([opt["lr_opt"]], [opt["loss_opt"]], marker="s", s=80, facecolor="none",
                   edgecolor="k", linewidth=1.2, zorder=6)
        return "conflict"
    bracketed = opt["edge"] in (None, "diverged") or pd.isna(opt["edge"])
    if bracketed:
        lo, hi = opt.get("lr_lo", np.nan), opt.get("lr_hi", np.nan)
        measured = bool(np.isfinite(lo) and np.isfinite(hi))
        if measured:
            ax.errorbar([opt["lr_opt"]], [opt["loss_opt"]], capsize=3, color=color, lw=1.2,
                        # (a bootstrap interval need not hold the point estimate)
                        xerr=[[max(opt["lr_opt"] - lo, 0.0)], [max(hi - opt["lr_opt"], 0.0)]],
                        zorder=5)
        # (hollow without an interval: drawn alike, it read as a precise one)
        ax.scatter([opt["lr_opt"]], [opt["loss_opt"]], marker="*", s=160,
                   color=color if measured else "white", edgecolor="k" if measured else color,
                   linewidth=0.7 if measured else 1.2, zorder=6)
        return "optimum" if measured else "bare"
    ax.scatter([opt["lr_opt"]], [opt["loss_opt"]], marker="o", s=110, facecolor="none",
               edgecolor="k", linewidth=1.2, zorder=6)
    return "edge"


def _marker_key(kinds: set) -> dict:
    # legend entries for the markers, in black, after the curves
    from matplotlib.lines import Line2D

    style = {"optimum": ("fitted optimum (90% interval)",
                         {"marker": "*", "ms": 12, "mfc": "0.6", "mec": "k"}),
             "bare": ("fitted optimum, no interval (the loss noise was not measured)",
                      {"marker": "*", "ms": 12, "mfc": "white", "mec": "0.3"}),
             "parabola": ("local parabola of the fit", {"ls": "--", "color": "0.4"}),
             "edge": ("best LR at the grid edge (not bracketed)",
                      {"marker": "o", "ms": 9, "mfc": "none", "mec": "k"}),
             "conflict": ("contradicted: left out of the laws",
                          {"marker": "s", "ms": 8, "mfc": "none", "mec": "k"}),
             "seed_offsets": ("runs less their seed's offset (not every seed at every LR)",
                              {"marker": "o", "ms": 4, "color": "0.4"}),
             "diverged": ("diverged (drawn at the top)", {"marker": "x", "ms": 7, "mec": "k"})}
    return {text: Line2D([], [], **{"ls": "none", **kw}) for kind, (text, kw) in style.items()
            if kind in kinds}


def _shared_ylim(axes, result, rows: pd.DataFrame) -> None:
    losses = result.runs.finished["loss"]
    keys = [k for k in result.runs.slice_keys if k in rows]
    if keys:
        mask = np.zeros(len(result.runs.finished), bool)
        for _, opt in rows.iterrows():
            mask |= row_mask(result.runs.finished, slice_values(opt, tuple(keys)))
        losses = losses[mask]
    if losses.empty:
        return
    lo, hi = float(losses.min()), float(losses.max())
    # the stars at the fitted optima (a parabola's vertex may sit below every run)
    if "loss_opt" in rows and rows["loss_opt"].notna().any():
        lo = min(lo, float(rows["loss_opt"].min()))
    span = hi - lo or 0.1
    axes[0].set_ylim(lo - 0.04 * span, hi + 0.1 * span)


def _panel_title(table: pd.DataFrame, panel: dict) -> str:
    # a group's label; a width's panel (a timescale sweep's) named as its curve would be
    if "N" not in panel:
        return label(panel)
    runs = table[np.isclose(table["N"].astype(float), float(panel["N"]))]
    rest = label({k: v for k, v in panel.items() if k != "N"})
    width = (f"width {runs['model.width'].iloc[0]} (N = {short(panel['N'])})"
             if "model.width" in runs and runs["model.width"].nunique() == 1
             else f"N = {short(panel['N'])}")
    return ", ".join(filter(None, [rest, width]))


def _curve_label(table: pd.DataFrame, runs: pd.DataFrame, curve: str | None, opt) -> str:
    if curve is None:
        return "runs"
    if curve == PARAM_TIMESCALE:  # (a run given λ instead of τ: a control of the sweep)
        return (f"τ = {short(opt['tau'])}" if pd.notna(opt.get("tau")) else
                f"λ = {short(opt['wd'])} (no τ)")
    if curve == "N" and "model.width" in table and runs["model.width"].nunique() == 1:
        return f"width {runs['model.width'].iloc[0]} (N = {short(opt['N'])})"
    names = {"N": "N", "D": "D", "B": "B", "wd": "λ"}
    return f"{names.get(curve, curve)} = {short(opt[curve])}"


# --- optimal LR vs width ----------------------------------------------------------------------

def _lr_vs_width_figure(plt, result):
    optima = result.optima
    if "N" not in optima or optima["N"].nunique() < 2 \
            or not np.isfinite(optima["loss_opt"].astype(float)).any():
        return None  # (no slice has an optimum: an empty figure, and a warning, were drawn)
    panels, _, _ = _layout(result)
    others = [a for a in ("D", "B") if a in optima and optima[a].nunique() > 1]
    width = _width_map(result.runs.table)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    series = combinations(optima, panels + others)[:MAX_CURVES]
    for color, values in zip(palette(len(series)), series, strict=True):
        rows = _best_per_n(select(optima, values))
        if rows.empty:
            continue
        x = rows["N"].map(width).to_numpy(float) if width else rows["N"].to_numpy(float)
        y = rows["lr_opt"].to_numpy(float)
        inside = _bracketed(rows)
        lo = np.clip(np.nan_to_num(y - rows["lr_lo"].to_numpy(float)), 0, None)
        hi = np.clip(np.nan_to_num(rows["lr_hi"].to_numpy(float) - y), 0, None)
        name = label(as_text(values)) or "optimum"
        drift, bound = lr_drift(y, [e if ok or e in ("low", "high") else "left out"
                                    for e, ok in zip(rows["edge"], inside, strict=True)])
        name += f" (max/min {'≥ ' * bound}{drift:.2g}×)" if np.isfinite(drift) else ""
        # (SP dashed beside muP: 8 lines of one colour map were told apart by shade alone)
        style = "--" if str(values.get("model.param")) == "sp" else "-"
        ax.errorbar(x, y, yerr=[lo, hi], fmt=style, color=color, capsize=3, lw=1.3)
        ax.scatter(x[inside], y[inside], color=color, s=36, zorder=5, label=name)
        if (~inside).any():
            ax.scatter(x[~inside], y[~inside], facecolor="none", edgecolor=color, s=60,
                       zorder=5, label="best LR at the grid edge, or left out of the laws")
    ax.set_xscale("log", base=2 if width else 10)
    ax.set_yscale("log")
    value_ticks(ax.xaxis, np.array(sorted(width.values() if width else optima["N"].unique())))
    readable_log_axis(ax.yaxis, optima["lr_opt"])
    ax.set_xlabel("width (model.width)" if width else UNITS["N"])
    ax.set_ylabel("optimal learning rate")
    # (one line ran past the figure's edge; a legend of many lines covered them: below then)
    ax.set_title(f"Optimal learning rate vs {'width' if width else 'model size N'}\n"
                 "(90% bootstrap interval where drawn)")
    if len(ax.get_legend_handles_labels()[1]) > 4:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small")
    else:
        ax.legend()
    return fig


def _best_per_n(rows: pd.DataFrame) -> pd.DataFrame:
    """One optimum per N, as the lr law takes it (`fitter.laws.lr_law`): the slice with the
    lowest loss (over weight decays, say), its LR read at the best λ between those tried
    where the law reads it there; a lowest-loss slice whose best LR is at the grid's edge is
    kept, and drawn apart (the law leaves it out). The figure showed the best bracketed
    slice's LR while the law took the interpolated one, or none."""
    rows = rows[np.isfinite(rows["loss_opt"].astype(float))]
    if rows.empty:
        return rows
    best = rows.loc[rows.groupby("N")["loss_opt"].idxmin()].reset_index(drop=True)
    axes = [a for a in ("N", "D", "B") if a in rows and rows[a].notna().all()]
    read = at_best_timescale(rows, best[usable(best)], axes)
    cols = ["lr_opt", "lr_lo", "lr_hi"]
    best.loc[read.index, cols] = read[cols]
    return best.sort_values("N")


def _conflict(opt) -> bool:
    # finished runs past the slice's stability limit beat its optimum: no law takes it
    value = opt.get("conflict", False)
    return bool(value) if not pd.isna(value) else False


def _bracketed(rows: pd.DataFrame) -> pd.Series:
    # optima a law takes: inside the LRs tried (or capped by a divergence), not contradicted
    inside = rows["edge"].isna() | (rows["edge"] == "diverged")
    if "conflict" in rows:
        inside &= ~rows["conflict"].fillna(False).astype(bool)
    return inside


def _width_map(table: pd.DataFrame) -> dict:
    if "model.width" not in table:
        return {}
    pairs = table[["N", "model.width"]].dropna().drop_duplicates()
    if pairs["N"].duplicated().any():
        return {}
    return {n: float(w) for n, w in zip(pairs["N"], pairs["model.width"], strict=True)}


