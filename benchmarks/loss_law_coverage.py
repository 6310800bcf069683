"""How often the loss law's 90% intervals hold the true law, over synthetic sweeps.

Each draw is a sweep from `fitter.synthetic` (a known L = E + A/N^α + B/D^β, a parabola in log
LR around a known optimum, Gaussian loss noise), fitted as `sweep fit` does (the best
setting's loss at each (N, D), the Besiroglu fit, `n_boot` resamples). Two sweeps:

- `grid5`: 5 widths × 5 token budgets, 9 LRs a quarter decade apart, noise 0.005;
- `grid4`: 4 × 4, 7 LRs a factor 2 apart on a steeper curve (0.02 nats per log2² LR), noise
  0.003 (a stranger's check, which first showed the intervals short).

For each it counts the draws whose interval holds E, α, β and the loss at a target past the
data, with the intervals as `sweep fit` gives them (widened: `loss_law.small_sample_factor`)
and as the plain percentile bootstrap gave them. Prints a table (or, with --json, only JSON)
and writes benchmarks/results/loss_law_coverage.json. About 10 minutes for 100 draws of both
on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fitter.data import from_short_frame
from fitter.fit import fit_runs
from fitter.loss_law import NAMES, _natural, log_loss
from fitter.powerlaw import _quantiles
from fitter.synthetic import Truth, synthetic_runs

SETTINGS = {
    "grid5": dict(truth=Truth(lr=(0.5, -0.3, 0.0, 0.0)), noise=0.005,
                  n=[1e6, 3e6, 1e7, 3e7, 1e8], d=[1e8, 3e8, 1e9, 3e9, 1e10],
                  steps=np.arange(-1.0, 1.01, 0.25), target=(1e9, 1e11)),
    "grid4": dict(truth=Truth(lr=(0.5, -0.3, 0.0, 0.0), k_lr=0.02 / np.log10(2) ** 2),
                  noise=0.003, n=[1e6, 3e6, 1e7, 3e7], d=[1e8, 3e8, 1e9, 3e9],
                  steps=np.log10(2) * np.arange(-3, 4), target=(1e9, 2e10)),
}


def coverage(name: str, draws: int, n_boot: int) -> dict:
    s = SETTINGS[name]
    e, a, b, alpha, beta = s["truth"].loss
    truth = {"E": e, "alpha": alpha, "beta": beta}
    n_t, d_t = s["target"]
    true_loss = e + a / n_t ** alpha + b / d_t ** beta
    hits = {"widened": dict.fromkeys([*truth, "loss_at_target"], 0),
            "bootstrap": dict.fromkeys([*truth, "loss_at_target"], 0)}
    for draw in range(draws):
        runs = synthetic_runs(s["truth"], n_values=s["n"], d_values=s["d"], b_values=[3e5],
                              noise=s["noise"], lr_steps=s["steps"], seed=1000 + draw)
        law = fit_runs(from_short_frame(runs, source="synthetic"), laws=("loss",),
                       n_boot=n_boot, seed=draw).laws["loss"]
        lo, hi = law.interval(n_t, d_t)
        hits["widened"]["loss_at_target"] += lo <= true_loss <= hi
        for key, (klo, khi) in law.ci.items():
            if key in truth:
                hits["widened"][key] += klo <= truth[key] <= khi
        raw = np.apply_along_axis(_natural, 1, law.boot)
        rlo, rhi = _quantiles(raw, law.ci_level)
        for i, key in enumerate(NAMES):
            if key in truth:
                hits["bootstrap"][key] += rlo[i] <= truth[key] <= rhi[i]
        preds = np.exp([log_loss(t, np.log([n_t]), np.log([d_t]))[0] for t in law.boot])
        plo, phi = _quantiles(preds[:, None], law.ci_level)
        hits["bootstrap"]["loss_at_target"] += plo[0] <= true_loss <= phi[0]
    return {"draws": draws, "n_points": len(s["n"]) * len(s["d"]), "target": s["target"],
            **{kind: {k: v / draws for k, v in h.items()} for kind, h in hits.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {name: coverage(name, args.draws, args.n_boot) for name in SETTINGS}
    out = Path(__file__).resolve().parent / "results" / "loss_law_coverage.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'sweep':<7} {'intervals':<10} " + " ".join(f"{k:>15}" for k in
                                                      ("E", "alpha", "beta", "loss_at_target")))
    for name, res in result.items():
        for kind in ("bootstrap", "widened"):
            print(f"{name:<7} {kind:<10} " + " ".join(f"{res[kind][k]:>15.2f}" for k in
                                                     ("E", "alpha", "beta", "loss_at_target")))
    print(f"(nominal 0.90; {next(iter(result.values()))['draws']} draws each; wrote {out})")


if __name__ == "__main__":
    main()
