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
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP = [sys.executable, "-m", "orchestrator.cli"]


def arguments(claim: str, doc: str, *, workdir: str | None = None) -> argparse.Namespace:
    """--out DIR, --extend-rounds N and --docs DIR, the options every claim takes.

    Args:
        claim: the claim's name (its JSON, its figures' prefix, its default directory).
        doc: the script's docstring, for --help.
        workdir: default directory name when the claim shares another claim's sweep (and so
            its store and trials), instead of its own.
    """
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default = ROOT / "benchmarks" / "results" / "science" / (workdir or claim)
    parser.add_argument("--out", default=str(default),
                        help="working directory of the claim (store, runs, fit, JSON)")
    parser.add_argument("--extend-rounds", type=int, default=1,
                        help="times to `sweep extend` with the LRs that bracket edge optima")
    parser.add_argument("--docs", default=str(ROOT / "docs" / "science"),
                        help="where the claim's JSON and figures are copied for docs/science.md "
                             "('' to copy nothing)")
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


def launch(out: Path, spec: Path, *overrides: str) -> None:
    """`sweep launch SPEC OVERRIDES` in OUT (a claim's second sweep, or one with no LR axis)."""
    out.mkdir(parents=True, exist_ok=True)
    print(sweep(out, "launch", str(spec), *overrides), flush=True)


def fit(out: Path, name: str, *args: str, subdir: str = "fit") -> dict:
    """`sweep fit NAME ARGS --out OUT/SUBDIR`; the fit.json document."""
    print(sweep(out, "fit", name, *args, "--out", str(out / subdir)), flush=True)
    return json.loads((out / subdir / "fit.json").read_text())


def runs_of(out: Path, name: str, *, histories: bool = False):
    """The `fitter.data.Runs` of sweep NAME in OUT's store, as `sweep fit` reads them."""
    from fitter.mlflow_io import load_runs

    return load_runs(f"sqlite:///{out / 'mlflow.db'}", name, histories=histories)


def trial_frame(out: Path, name: str):
    """The `mlflow.search_runs` frame of sweep NAME's trials in OUT's store (every param and
    metric, e.g. `metrics.final/steps`), for numbers the fitter's table does not keep."""
    import mlflow

    from trainer.schema import KIND_TRIAL, kind_filter

    uri = f"sqlite:///{out / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[name], filter_string=kind_filter(KIND_TRIAL))


def metric_history(out: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of one metric of one run, in step order."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def publish(docs: str, claim: str, json_path: Path, figures: dict[str, Path]) -> None:
    """Copy the claim's JSON and figures into DOCS as CLAIM.json and CLAIM_NAME.png."""
    if not docs:
        return
    target = Path(docs)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(json_path, target / f"{claim}.json")
    for name, path in figures.items():
        if path.is_file():
            shutil.copyfile(path, target / f"{claim}_{name}.png")
    print(f"copied {claim}.json and {len(figures)} figures to {target}")


def figure_style():
    """pyplot under the fitter's figure style (9-11 pt text at the saved size), headless."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fitter.plot_style import STYLE

    plt.rcParams.update(STYLE)
    return plt


def save(out: Path, claim: str, result: dict) -> Path:
    """Write OUT/CLAIM.json and print it."""
    path = out / f"{claim}.json"
    text = json.dumps(_finite(result), indent=1)
    path.write_text(text)
    print(text)
    print(f"wrote {path} and figures under {out / 'fit' / 'plots'}")
    return path


def _finite(value):
    # JSON has no NaN: a loss that does not exist (a diverged run) is null
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _spec_name(spec: Path) -> str:
    import yaml

    return yaml.safe_load(spec.read_text())["name"]
