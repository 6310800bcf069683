"""All laws of one sweep, and the fit.json that records them.

`fit_runs` turns a `Runs` table into slice optima and every law the data supports. Asked for
one law, it raises that law's `FitError`; asked for all, it records why each missing law was
skipped and raises only when nothing at all could be fitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fitter.cbs import cbs_law
from fitter.data import Runs, require
from fitter.errors import FitError
from fitter.laws import batch_law, lr_law, timescale_law
from fitter.loss_law import fit_loss_law
from fitter.slices import lr_optima, next_grid

LAWS = ("loss", "lr", "timescale", "batch", "cbs")
SLICE_LAWS = ("lr", "timescale", "batch")


@dataclass
class FitResult:
    """Slice optima and fitted laws of one sweep."""

    runs: Runs
    optima: pd.DataFrame
    laws: dict = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def fit_runs(runs: Runs, *, laws: tuple[str, ...] | None = None, n_boot: int = 500,
             seed: int = 0) -> FitResult:
    """Slice optima and the requested laws (all that the data supports when laws is None).

    Raises:
        FitError: an unknown law; a requested law that cannot be fitted; or no law at all.
    """
    wanted = LAWS if laws is None else laws
    unknown = [law for law in wanted if law not in LAWS]
    if unknown:
        raise FitError(f"unknown law {unknown[0]!r}; choose one of {', '.join(LAWS)}.")
    require(runs, ("loss",), law=wanted[0])
    result = FitResult(runs, pd.DataFrame())
    if any(law in SLICE_LAWS for law in wanted) or laws is None:
        try:
            result.optima = _optima(runs, wanted[0] if laws else "lr")
        except FitError as err:
            if laws is not None:
                raise
            result.skipped.update({law: str(err) for law in SLICE_LAWS})
    for law in wanted:
        if law in result.skipped:
            continue
        try:
            result.laws[law] = _fit_one(law, result, n_boot=n_boot, seed=seed)
        except FitError as err:
            if laws is not None:
                raise
            result.skipped[law] = str(err)
    if not result.laws and result.optima.empty:
        raise FitError(next(iter(result.skipped.values())))
    return result


def _optima(runs: Runs, law: str) -> pd.DataFrame:
    usable = require(runs, ("lr",), law=law)
    return lr_optima(usable, runs.slice_keys)


def _fit_one(law: str, result: FitResult, *, n_boot: int, seed: int):
    runs, optima = result.runs, result.optima
    boot = {"n_boot": n_boot, "seed": seed}
    if law == "loss":
        finished = require(runs, ("N", "D", "loss"), law="loss")
        finished = finished[finished["status"] == "finished"]
        points = finished.groupby(["N", "D"], as_index=False)["loss"].min()
        return fit_loss_law(points, n_boot=min(n_boot, 200), seed=seed)
    if law == "lr":
        return lr_law(optima, **boot)
    needs = {"timescale": ("N", "D", "B", "wd"), "batch": ("N", "D", "B"), "cbs": ("N", "D", "B")}
    require(runs, needs[law], law=law)
    if law == "timescale":
        return timescale_law(optima, **boot)
    if law == "batch":
        return batch_law(optima, **boot)
    keys = [k for k in runs.slice_keys if k != "B"]
    return cbs_law(runs.finished, runs.histories, keys, **boot)


def fit_json(result: FitResult, *, sweep: str) -> dict:
    """The fit.json document (see DESIGN.md): laws, slices, skipped laws and the next grid."""
    table = result.runs.table
    optima = result.optima
    doc = {
        "sweep": sweep, "source": result.runs.source,
        "n_runs": len(table), "n_finished": int((table["status"] == "finished").sum()),
        "n_diverged": int((table["status"] == "diverged").sum()),
        "laws": {name: law.to_json() for name, law in result.laws.items()},
        "skipped": result.skipped,
        "slices": _slices_json(optima),
        "next_grid": next_grid(optima) if not optima.empty else [],
    }
    return _clean(doc)


def write_fit(result: FitResult, out_dir: str | Path, *, sweep: str) -> dict:
    """Write fit.json and plots/*.png under out_dir; the fit.json document."""
    from fitter.plots import save_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = fit_json(result, sweep=sweep)
    doc["plots"] = [str(p.relative_to(out)) for p in save_plots(result, out / "plots")]
    (out / "fit.json").write_text(json.dumps(doc, indent=2))
    return doc


def _slices_json(optima: pd.DataFrame) -> list[dict]:
    if optima.empty:
        return []
    keep = [c for c in optima.columns if c not in ("coef", "window")]
    rows = optima[keep].to_dict("records")
    for row, window in zip(rows, optima["window"], strict=True):
        row["window"] = list(window)
    return rows


def _clean(value):
    # JSON has no NaN, numpy scalars or tuples
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def format_fit(doc: dict) -> str:
    """Plain-text summary of a fit.json document for the terminal."""
    lines = [f"{doc['sweep']}: {doc['n_runs']} runs ({doc['n_finished']} finished, "
             f"{doc['n_diverged']} diverged), {len(doc['slices'])} LR slices"]
    for name, law in doc["laws"].items():
        level = f"{law['ci_level']:.0%}"
        coefs = ", ".join(f"{k}={v:.4g} [{law['ci'][k][0]:.3g}, {law['ci'][k][1]:.3g}]"
                          for k, v in law["coef"].items())
        lines.append(f"  {name:<10} {law['form']}   ({law['n_points']} points, {level} CI)")
        lines.append(f"             {coefs}")
    for name, reason in doc["skipped"].items():
        lines.append(f"  {name:<10} skipped: {reason}")
    edges = [s for s in doc["slices"] if s.get("edge") in ("low", "high", "all_diverged")]
    if edges:
        lines.append(f"  {len(edges)} slices have their best LR at the grid edge; to bracket "
                     "them: sweep extend " + doc["sweep"] + " " + " ".join(doc["next_grid"]))
    return "\n".join(lines)
