"""Fitter benchmark: the loss law on Chinchilla's 240 points, and the lr law on 10,000 runs.

Targets (issue 5): each under 10 s. Prints a table (or, with --json, only JSON) and writes
benchmarks/results/fitter_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fitter.data import from_short_frame
from fitter.fit import fit_runs
from fitter.loss_law import fit_loss_law
from fitter.synthetic import Truth, synthetic_runs

CHINCHILLA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "chinchilla_svg_extracted.csv"
LIMIT_S = 10.0


def bench_loss(n_boot: int) -> dict:
    """Besiroglu fit with n_boot bootstrap refits on the 240 Chinchilla points."""
    frame = pd.read_csv(CHINCHILLA)
    size = frame["Model Size"]
    frame = frame.assign(N=size, D=frame["Training FLOP"] / (6 * size))
    points = frame.sort_values("loss").iloc[:-5]
    start = time.perf_counter()
    fit = fit_loss_law(points, n_boot=n_boot)
    wall = time.perf_counter() - start
    return {"case": "loss law, Chinchilla", "points": len(points), "n_boot": n_boot,
            "wall_s": wall, "coef": fit.coef}


def bench_lr(n_boot: int) -> dict:
    """lr law (slice optima + power law + bootstrap) on 10,000 synthetic runs."""
    frame = synthetic_runs(Truth(), n_values=np.geomspace(1e6, 1e8, 10),
                           d_values=np.geomspace(1e8, 1e10, 10),
                           b_values=np.geomspace(1e4, 1e6, 10),
                           lr_steps=np.linspace(-1, 1, 10), diverge_above=5, seed=0)
    runs = from_short_frame(frame, source="synthetic")
    start = time.perf_counter()
    result = fit_runs(runs, laws=("lr",), n_boot=n_boot)
    wall = time.perf_counter() - start
    return {"case": "lr law, synthetic", "points": len(frame), "n_boot": n_boot,
            "wall_s": wall, "slices": len(result.optima), "coef": result.laws["lr"].coef}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args()
    rows = [bench_loss(args.n_boot), bench_lr(args.n_boot)]
    for row in rows:
        row["limit_s"], row["ok"] = LIMIT_S, row["wall_s"] < LIMIT_S
    report = {"host": platform.node(), "cpus": os.cpu_count(), "results": rows}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "fitter_bench.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'case':<24}{'runs':>8}{'n_boot':>8}{'wall s':>9}{'limit':>7}  coefficients")
    for row in rows:
        coef = ", ".join(f"{k}={v:.4g}" for k, v in row["coef"].items())
        print(f"{row['case']:<24}{row['points']:>8}{row['n_boot']:>8}{row['wall_s']:>9.2f}"
              f"{row['limit_s']:>7.0f}  {coef}")


if __name__ == "__main__":
    main()
