"""Reading a sweep's runs from MLflow and recording a fit there (schema: `trainer.schema`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fitter.cbs import group_keys as cbs_group_keys
from fitter.data import Runs, from_mlflow_frame, slice_column
from fitter.errors import FitError
from trainer.schema import (
    FINISHED,
    FIT_SELECTION_TAG,
    KIND_FIT,
    KIND_TAG,
    KIND_TRIAL,
    kind_filter,
    run_status,
)

LOSS_HISTORY_KEYS = ("eval/loss", "train/loss")
"""Per-step loss metrics for steps-to-target, in order of preference."""


def load_runs(uri: str, sweep: str, *, histories: bool = True) -> Runs:
    """The trial runs of a sweep (experiment `sweep`), normalised.

    Args:
        uri: MLflow tracking URI.
        sweep: sweep name (= experiment name).
        histories: also fetch loss histories of runs in groups with 3+ batch sizes (cbs law).

    Raises:
        FitError: unknown sweep, or a sweep with no trial runs.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        raise FitError(f"no sweep named {sweep!r} in tracking store {uri}; check the name "
                       "(it is the experiment name) or pass --tracking-uri.")
    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(experiment_ids=[exp.experiment_id],
                               filter_string=kind_filter(KIND_TRIAL),
                               output_format="pandas")
    if frame.empty:
        raise FitError(f"sweep {sweep!r} has no trial runs yet: wait for its first trials to "
                       f"end (`sweep status {sweep}`), or run them (`sweep resume {sweep}`).")
    runs = from_mlflow_frame(frame, source=f"sweep {sweep}")
    if histories:
        runs = Runs(runs.table, runs.slice_keys, runs.source,
                    load_histories(client, _cbs_candidates(runs)))
    return runs


MIN_HISTORY_POINTS = 8
"""Points a loss history needs to place a target crossing better than between a few evals."""


def load_histories(client, run_ids: list[str]) -> dict[str, np.ndarray]:
    """run → (step, loss) array, every run from the same metric of LOSS_HISTORY_KEYS.

    Steps-to-target compares losses across runs and budgets, so all runs take one metric: the
    first that every run logged at MIN_HISTORY_POINTS steps or more (eval loss at a coarse
    cadence, e.g. four points, falls back to the train loss); failing that, the metric with 2+
    points in the most runs, and only those runs.
    """
    by_key: dict[str, dict[str, np.ndarray]] = {key: {} for key in LOSS_HISTORY_KEYS}
    for run_id in run_ids:
        for key in LOSS_HISTORY_KEYS:
            history = client.get_metric_history(run_id, key)
            if len(history) >= 2:
                by_key[key][run_id] = np.array(sorted((m.step, m.value) for m in history),
                                               float)
    for key in LOSS_HISTORY_KEYS:
        found = by_key[key]
        if len(found) == len(run_ids) and found and min(map(len, found.values())) >= (
                MIN_HISTORY_POINTS):
            return found
    return max(by_key.values(), key=len)


def _cbs_candidates(runs: Runs) -> list[str]:
    finished = runs.finished
    keys = cbs_group_keys(runs.slice_keys)
    if finished.empty or finished["B"].nunique() < 3:
        return []
    if not keys:
        return finished["run"].tolist()
    by = [slice_column(finished, k) for k in keys]  # (λ only where a run was given it)
    counts = finished.groupby(by, dropna=False)["B"].transform("nunique")
    return finished.loc[counts >= 3, "run"].tolist()


def metric_name(law: dict, coef: str) -> str:
    """`lr.a_N` for an ungrouped law, `lr/model.param-mup/a_N` for a group's law.

    MLflow metric names allow no `=`, `[` or `,`, so a group's label is spelled with dashes.
    """
    if not law.get("group"):
        return f"{law['law']}.{coef}"
    group = re.sub(r"[^\w.\- ]", "_", "-".join(f"{k}-{v}" for k, v in law["group"].items()))
    return f"{law['law']}/{group}/{coef}"


def log_fit(uri: str, sweep: str, out_dir: str | Path, doc: dict) -> str:
    """Record a fit run (tag proxysweep.kind=fit) with fit.json and plots/; its run id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(sweep)
    selection = doc.get("selection") or {}
    group = ",".join(f"{k}={v}" for k, v in (selection.get("group") or {}).items())
    fitted = group or ("pooled" if selection.get("pooled") else "all")
    run = client.create_run(exp.experiment_id,
                            run_name=f"fit {sweep}" + ("" if fitted == "all" else f" [{fitted}]"),
                            tags={KIND_TAG: KIND_FIT, FIT_SELECTION_TAG: fitted})
    run_id = run.info.run_id
    metrics = {metric_name(body, name): value for body in doc["laws"].values()
               for name, value in body["coef"].items() if value is not None}
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    out = Path(out_dir)
    client.log_artifact(run_id, str(out / "fit.json"))
    if (out / "plots").is_dir():
        client.log_artifacts(run_id, str(out / "plots"), artifact_path="plots")
    client.set_terminated(run_id, run_status(FINISHED))
    return run_id
