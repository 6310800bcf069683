"""Re-sync from run directories: what MLflow lost comes back from summary.json/metrics.jsonl,
and nothing is trained again."""

import json
from pathlib import Path

import mlflow
import pytest

from orchestrator.commands import launch
from orchestrator.spec_file import spec_from_dict
from trainer.schema import sweep_runs

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def _children(client):
    return sweep_runs(client, client.get_experiment_by_name("unit").experiment_id, "trial")


def test_lost_records_come_back_from_run_directories_without_training_again(spec_dict, uri):
    spec_dict["grid"] = {"optim.lr": "choice(3e-3, 1e-2)"}
    spec = spec_from_dict(spec_dict)
    assert sorted(launch(spec, tracking_uri=uri, progress=False).ran.values()) == \
        ["finished"] * 2
    client = mlflow.MlflowClient(tracking_uri=uri)
    lost, left_running = _children(client)
    lost_id = lost.data.tags["trial.id"]
    # What a tracking outage plus a dead driver can leave: one trial with no record at all,
    # one recorded as still running.
    client.delete_run(lost.info.run_id)
    client.set_tag(left_running.info.run_id, "trial.status", "running")
    client.update_run(left_running.info.run_id, status="RUNNING")
    runs = Path(spec_dict["storage_root"])
    mtimes = {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}

    again = launch(spec, tracking_uri=uri, progress=False)
    assert again.already_done == 0 and again.ran == {}  # neither trained again
    assert sorted(again.found_ended.values()) == ["finished"] * 2
    assert lost_id in again.resynced  # its new record got its history from metrics.jsonl
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")} == mtimes
    children = _children(client)
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 2
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        run_dir = runs / child.data.tags["trial.id"]
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((run_dir / "summary.json").read_text())
        stored = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert sorted(stored) == [r["step"] for r in rows if "train/loss" in r]
        assert child.data.metrics["final/eval_loss"] == pytest.approx(summary["final/eval_loss"])
        # the params the trainer logs, all of them (trial.id was missing from a re-synced run)
        assert child.data.params["trial.id"] == child.data.tags["trial.id"]
        assert set(child.data.params) == set(children[0].data.params)
