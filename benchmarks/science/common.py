"""What every claim of the science suite does: launch its sweep through `sweep`, bracket the
LR optima with `sweep extend` where `sweep fit` says they sit on the grid's edge, fit, and save.

Each claim works in its own directory (default benchmarks/results/science/CLAIM/): the MLflow
store `mlflow.db`, the trial directories `runs/`, the fit (`fit/fit.json`, `fit/plots/`) and
the claim's numbers (`CLAIM.json`). Everything goes through the `sweep` command as a user runs
it, so re-running a claim trains nothing that is done (trials are content-addressed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP = [sys.executable, "-m", "orchestrator.cli"]


def arguments(claim: str, doc: str) -> argparse.Namespace:
    """--out DIR and --extend-rounds N, the options every claim takes."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "science" / claim),
                        help="working directory of the claim (store, runs, fit, JSON)")
    parser.add_argument("--extend-rounds", type=int, default=1,
                        help="times to `sweep extend` with the LRs that bracket edge optima")
    return parser.parse_args()


def sweep(out: Path, *args: str) -> str:
    """Run `sweep ARGS --tracking-uri sqlite:///OUT/mlflow.db` in OUT; its stdout."""
    uri = f"sqlite:///{out / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*SWEEP, *args, "--tracking-uri", uri], cwd=out, env=env, text=True,
                          stdout=subprocess.PIPE, check=True)
    return done.stdout


def run_claim(out: Path, spec: Path, *, extend_rounds: int) -> dict:
    """Launch the spec, extend edge optima up to `extend_rounds` times, fit; fit.json."""
    out.mkdir(parents=True, exist_ok=True)
    name = _spec_name(spec)
    print(sweep(out, "launch", str(spec)), flush=True)
    doc = fit(out, name)
    for _ in range(extend_rounds):
        if not doc["next_grid"]:
            break
        print(f"extending {name} with {' '.join(doc['next_grid'])}", flush=True)
        print(sweep(out, "extend", name, *doc["next_grid"]), flush=True)
        doc = fit(out, name)
    return doc


def fit(out: Path, name: str) -> dict:
    """`sweep fit NAME --out OUT/fit`; the fit.json document."""
    print(sweep(out, "fit", name, "--out", str(out / "fit")), flush=True)
    return json.loads((out / "fit" / "fit.json").read_text())


def save(out: Path, claim: str, result: dict) -> Path:
    """Write OUT/CLAIM.json and print it."""
    path = out / f"{claim}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote {path} and figures under {out / 'fit' / 'plots'}")
    return path


def _spec_name(spec: Path) -> str:
    import yaml

    return yaml.safe_load(spec.read_text())["name"]
