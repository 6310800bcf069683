"""Claim: muP's best LR transfers across width, and muP tuned is no worse than SP tuned.

Launches sweeps/science/mup_transfer.yaml through `sweep` (widths 64-256, 7 LRs, muP and SP),
brackets edge optima with `sweep extend`, fits with `sweep fit`, and reports per width and
parametrization: the optimal LR (vertex of the local parabola in log LR, with its bootstrap
interval), the drift max/min of the optima, and the tuned loss (the best LR's final eval
loss) of muP against SP. Expected (Tensor Programs V): muP drift <= 1.5x, SP drift clearly
larger, muP tuned loss <= SP tuned loss + 0.5% at each width.

    python benchmarks/science/mup_transfer.py [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, arguments, publish, run_claim, save  # noqa: E402

CLAIM = "mup_transfer"
SPEC = ROOT / "sweeps" / "science" / "mup_transfer.yaml"


def summarise(doc: dict, runs) -> dict:
    """Optima, drift and muP-vs-SP gaps from fit.json and the sweep's runs table."""
    optima: dict[str, dict[int, dict]] = {}
    for s in doc["slices"]:
        optima.setdefault(s["model.param"], {})[int(s["model.width"])] = {
            "lr_opt": s["lr_opt"], "lr_interval": [s.get("lr_lo"), s.get("lr_hi")],
            "edge": s["edge"], "loss_at_vertex": s["loss_opt"]}
    finished = runs.finished
    for param, widths in optima.items():
        for width, row in widths.items():
            mine = finished[(finished["model.param"] == param)
                            & (finished["model.width"] == str(width))]
            best = mine.loc[mine["loss"].idxmin()]
            row.update(tuned_loss=float(best["loss"]), tuned_lr=float(best["lr"]))
    drift = {param: _drift(widths) for param, widths in optima.items()}
    gaps = {}
    if {"mup", "sp"} <= optima.keys():
        for width in sorted(optima["mup"]):
            if width in optima["sp"]:
                mup, sp = optima["mup"][width]["tuned_loss"], optima["sp"][width]["tuned_loss"]
                gaps[width] = {"mup": mup, "sp": sp, "gap_pct": 100 * (mup / sp - 1)}
    mup, sp = (drift.get(p, {}).get("factor") for p in ("mup", "sp"))
    # (None where the sweep cannot tell: too few bracketed widths, or a bound that does not
    # decide; a crash at the end of a half-hour run said nothing)
    mup_bound = drift.get("mup", {}).get("at_least", False)
    verdict = {
        "mup_drift_within_1.5x": None if mup is None or (mup_bound and mup <= 1.5)
        else mup <= 1.5,
        "sp_drift_larger": None if mup is None or sp is None or (mup_bound and sp <= mup)
        else sp > mup,
        "mup_tuned_within_0.5pct_of_sp": all(g["gap_pct"] <= 0.5 for g in gaps.values()),
    }
    return {"claim": CLAIM, "optima": optima, "drift": drift, "mup_vs_sp": gaps,
            "verdict": verdict, "next_grid_left": doc["next_grid"]}


def _drift(widths: dict[int, dict]) -> dict:
    """max/min of the optimal LR over widths (`fitter.slices.lr_drift`: an edge optimum past
    the bracketed ones makes it a lower bound, `at_least`); factor None when under two widths
    say anything."""
    from fitter.slices import lr_drift

    bracketed = sorted(w for w, r in widths.items() if r["edge"] in (None, "diverged"))
    edges = sorted(w for w, r in widths.items() if r["edge"] not in (None, "diverged"))
    factor, at_least = lr_drift([r["lr_opt"] for r in widths.values()],
                                [r["edge"] for r in widths.values()])
    return {"factor": None if factor != factor else factor, "at_least": at_least,
            "widths": bracketed, "edge_widths": edges}


def main() -> None:
    from fitter.mlflow_io import load_runs

    args = arguments(CLAIM, __doc__)
    out = Path(args.out)
    doc = run_claim(out, SPEC, extend_rounds=args.extend_rounds)
    runs = load_runs(f"sqlite:///{out / 'mlflow.db'}", "mup_transfer", histories=False)
    path = save(out, CLAIM, summarise(doc, runs))
    plots = out / "fit" / "plots"
    publish(args.docs, CLAIM, path, {"loss_vs_lr": plots / "loss_vs_lr.png",
                                     "lr_opt_vs_width": plots / "lr_opt_vs_width.png"})


if __name__ == "__main__":
    main()
