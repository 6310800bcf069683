"""What every figure of a fit shares: text sizes, axis labels with units, readable log ticks."""

from __future__ import annotations

import numpy as np
import pandas as pd

STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 11}
"""Text of 9-11 pt at the saved size."""
DPI = 110
MAX_CURVES = 8
UNITS = {"N": "parameters N (readout in, input embedding out)", "D": "training tokens D",
         "B": "batch size B (tokens per step)", "wd": "weight decay λ",
         "D/N": "tokens per parameter D/N", "lr_opt": "optimal learning rate",
         "tau_opt": "optimal timescale τ", "B_opt": "optimal batch size (tokens per step)",
         "B_crit": "critical batch size (tokens per step)"}
LOSS_LABEL = "final eval loss (nats per token)"


def log2_axis(axis, values) -> None:
    # ticks at powers of two, at most 7 of them, labelled 2^k
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis.axes.set_xscale("log", base=2)
    lo, hi = np.log2(np.nanmin(values)), np.log2(np.nanmax(values))
    ks = np.arange(np.floor(lo), np.ceil(hi) + 1)
    axis.set_minor_locator(NullLocator())
    if np.count_nonzero((ks >= lo - 0.3) & (ks <= hi + 0.3)) < 2:
        # (values within an octave, one LR say: no power of two inside the axis, no tick to
        # read the LR by) the values themselves
        mine = np.asarray(values, float)
        mine = np.unique(mine[np.isfinite(mine)])
        axis.set_major_locator(FixedLocator(mine[np.linspace(0, len(mine) - 1, min(
            len(mine), 6)).round().astype(int)]))
        axis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
        return
    step = int(np.ceil(len(ks) / 7))
    axis.set_major_locator(FixedLocator(2.0 ** ks[::step]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"$2^{{{int(round(np.log2(v)))}}}$"))


def value_ticks(axis, values) -> None:
    # ticks at the sweep's own values when there are few of them; else decades
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    values = np.unique(np.asarray(values, float))
    if len(values) <= 6:
        axis.set_major_locator(FixedLocator(values))
        axis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
        axis.set_minor_formatter(NullFormatter())


def readable_log_axis(axis, values) -> None:
    # 1-2-5 ticks within two decades, plain numbers, no minor labels that collide
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = np.asarray(values, float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() < 100:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    axis.set_minor_formatter(NullFormatter())


def combinations(frame: pd.DataFrame, keys: list[str]) -> list[dict]:
    if not keys or frame.empty:
        return [{}]
    combos = frame[keys].drop_duplicates().sort_values(keys)
    return [dict(zip(keys, row, strict=True)) for row in combos.itertuples(index=False)]


def row_mask(frame: pd.DataFrame, values: dict) -> np.ndarray:
    mask = np.ones(len(frame), bool)
    for key, value in values.items():
        if key not in frame:
            continue
        col = frame[key]
        mask &= (col.isna() if pd.isna(value) else col == value).to_numpy()
    return mask


def select(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    return frame[row_mask(frame, values)]


def as_text(values: dict) -> dict:
    return {k: short(v) for k, v in values.items()}


def palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]


def short(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(v):
        return "–"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.2g}"
