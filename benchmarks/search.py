"""Adaptive search against a dense grid: how close to the grid's best LR, with how many trials.

Real CPU trials of sweeps/adaptive_lr.yaml (a 2-layer, 32-wide model on the embedded corpus;
two slices, batch sizes 8 and 16; LR in tag(log, interval(1e-4, 1e-1))). The reference is a
dense grid of 12 log-spaced LRs over the same range per slice. Each sampler runs its studies
at `n_trials` per slice, for a few sampler seeds. Per slice and run it reports the trials used,
the best loss found, regret = loss_found / loss_grid_best - 1, and the compute against the
grid's (FLOPs of the trials trained). Target: regret <= 0.5% with <= 50% of the grid's trials
and compute, for the default sampler.

Every sweep runs in-process through `orchestrator.commands.launch`, as `sweep launch` does,
in one working directory (default benchmarks/results/search/): the MLflow store `mlflow.db`,
the studies `optuna.db`, the trials `runs/`. Trials are content-addressed, so a re-run trains
only what is missing.

    python benchmarks/search.py [--json] [--samplers gp tpe random qmc] [--seeds 0 1 2]
                                [--n-trials 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import save  # noqa: E402

SPEC = ROOT / "sweeps" / "adaptive_lr.yaml"
GRID_POINTS = 12
TARGET_REGRET = 0.005


def grid_lrs(low: float = 1e-4, high: float = 1e-1, n: int = GRID_POINTS) -> list[float]:
    """`n` log-spaced LRs from `low` to `high`, rounded to 3 significant digits."""
    return [float(f"{low * (high / low) ** (i / (n - 1)):.3g}") for i in range(n)]


def _launch(spec, uri: str):
    from orchestrator.commands import launch

    began = time.monotonic()
    outcome = launch(spec, tracking_uri=uri, progress=False)
    return outcome, time.monotonic() - began


def _trained(uri: str, name: str, batch_size: int) -> list:
    """The finished child runs of a sweep in one slice."""
    from trainer.schema import recorded_trials

    return [s["run"] for s in recorded_trials(uri, name).values()
            if s["run"].data.params.get("train.batch_size") == str(batch_size)]


def run_grid(base, uri: str) -> dict[int, dict]:
    """The dense grid's per-slice best loss, LR, trials and FLOPs."""
    spec = dataclasses.replace(base, name="search_bench_grid", search="grid", grid={
        "optim.lr": "choice(" + ", ".join(str(x) for x in grid_lrs()) + ")",
        "train.batch_size": base.grid["train.batch_size"]})
    _, wall = _launch(spec, uri)
    out = {}
    for batch in (8, 16):
        runs = _trained(uri, spec.name, batch)
        best = min(runs, key=lambda r: r.data.metrics.get("final/eval_loss", math.inf))
        out[batch] = {"trials": len(runs), "best_loss": best.data.metrics["final/eval_loss"],
                      "best_lr": float(best.data.params["optim.lr"]),
                      "flops": sum(r.data.metrics.get("final/flops", 0) for r in runs),
                      "losses": sorted((float(r.data.params["optim.lr"]),
                                        r.data.metrics.get("final/eval_loss")) for r in runs)}
    out["wall_s"] = wall
    return out


def run_search(base, uri: str, sampler: str, seed: int, n_trials: int, grid: dict) -> dict:
    """One sampler at one seed: per slice trials used, best loss, regret, compute share."""
    from orchestrator.search import prepare_search, search_status

    raw = dict(base.search["optuna"], sampler=sampler, seed=seed, n_trials=n_trials)
    spec = dataclasses.replace(base, name=f"search_bench_{sampler}_s{seed}",
                               search={"optuna": raw})
    _, wall = _launch(spec, uri)
    _, plan, storage = prepare_search(spec, uri)
    slices = {}
    for row in search_status(plan, storage):
        batch = int(row["slice"].split()[0].split("=")[1])
        runs = _trained(uri, spec.name, batch)
        flops = sum(r.data.metrics.get("final/flops", 0) for r in runs)
        slices[batch] = {
            "trials_used": row["used"], "trials_trained": len(runs),
            "best_loss": row["best"], "best_lr": row["best_params"]["optim.lr"],
            "regret": row["best"] / grid[batch]["best_loss"] - 1,
            "trial_share": row["used"] / grid[batch]["trials"],
            "compute_share": flops / grid[batch]["flops"]}
    return {"sampler": sampler, "seed": seed, "wall_s": wall, "slices": slices}


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per sampler: mean and worst regret, and the share of (slice, seed) within target."""
    out = {}
    for sampler in dict.fromkeys(r["sampler"] for r in runs):
        regrets = [s["regret"] for r in runs if r["sampler"] == sampler
                   for s in r["slices"].values()]
        shares = [s["compute_share"] for r in runs if r["sampler"] == sampler
                  for s in r["slices"].values()]
        out[sampler] = {"mean_regret": sum(regrets) / len(regrets), "max_regret": max(regrets),
                        "within_target": sum(g <= TARGET_REGRET for g in regrets) / len(regrets),
                        "max_compute_share": max(shares), "n": len(regrets)}
    return out


def table(result: dict) -> str:
    lines = ["slice   run         trials  best loss  best LR    regret    compute"]
    for batch in (8, 16):
        g = result["grid"][str(batch)]
        lines.append(f"B={batch:<5} grid        {g['trials']:>6}  {g['best_loss']:.4f}     "
                     f"{g['best_lr']:<9.3g}  -         1.00")
        for r in result["runs"]:
            s = r["slices"][str(batch)]
            lines.append(f"B={batch:<5} {r['sampler']:<5} s{r['seed']:<4} {s['trials_used']:>6}  "
                         f"{s['best_loss']:.4f}     {s['best_lr']:<9.3g}  "
                         f"{100 * s['regret']:+.2f}%   {s['compute_share']:.2f}")
    lines.append("")
    lines.append("sampler  mean regret  max regret  within 0.5%  max compute share")
    for name, s in result["summary"].items():
        lines.append(f"{name:<8} {100 * s['mean_regret']:+.2f}%       {100 * s['max_regret']:+.2f}%"
                     f"      {s['within_target']:.0%} of {s['n']}     {s['max_compute_share']:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the JSON, not the table")
    parser.add_argument("--samplers", nargs="+", default=["gp", "tpe", "random", "qmc"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=GRID_POINTS // 2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search"))
    args = parser.parse_args()

    import logging

    from orchestrator.spec_file import load_spec
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # MLflow's artifacts (the stored specs) go under the working directory
    uri = f"sqlite:///{out / 'mlflow.db'}"
    base = dataclasses.replace(load_spec(SPEC), storage_root=str(out / "runs"))
    grid = run_grid(base, uri)
    runs = [run_search(base, uri, sampler, seed, args.n_trials, grid)
            for sampler in args.samplers for seed in args.seeds]
    result = json.loads(json.dumps({
        "spec": str(SPEC.relative_to(ROOT)), "n_trials": args.n_trials,
        "grid_points": GRID_POINTS, "grid": grid, "runs": runs, "target_regret": TARGET_REGRET,
        "summary": summarise(runs), "cpu_count": os.cpu_count(),
        "load_1m": os.getloadavg()[0]}))
    path = save("search", result)
    print(json.dumps(result, indent=1) if args.json else table(result))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
