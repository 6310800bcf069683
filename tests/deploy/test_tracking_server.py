"""A sweep against a real `mlflow server` on PostgreSQL, with basic auth, as a team runs it.

The server is killed in the middle of the sweep and started again on the same port; the
sweep (the `sweep` command in its own process, on a local Ray) must lose nothing. The
password lives only in the environment and, on purpose, in a URI in the spec's overrides;
no param, tag, run name or artifact may contain it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from orchestrator.tracking import Tracker
from trainer.schema import sweep_runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]

def test_server_restart_mid_sweep_loses_no_run_param_or_metric(sweep_on_server):
    client, exp = sweep_on_server["client"], sweep_on_server["experiment"]
    outage = sweep_on_server["outage"]
    # The restart really fell inside the sweep: trials went on logging while it was down.
    assert outage["driver_running_after"] and outage["lines_logged_during"] > 0
    (parent,) = sweep_runs(client, exp.experiment_id, "sweep")
    assert parent.data.tags["sweep.status"] == "finished"
    children = sweep_runs(client, exp.experiment_id, "trial")
    assert len(children) == 4 and len({c.data.tags["trial.id"] for c in children}) == 4
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert tags["trial.status"] == "finished"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        for key in ("optim.lr", "train.batch_size", "derived.n_params", "derived.total_steps"):
            assert key in params, key
        run_dir = sweep_on_server["storage"] / tags["trial.id"]
        summary = json.loads((run_dir / "summary.json").read_text())
        for key, value in summary.items():
            if key.startswith("final/"):
                assert metrics[key] == pytest.approx(value), key
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        for key in ("train/loss", "train/lr", "eval/loss"):
            logged = [r["step"] for r in rows if r.get(key) is not None]
            stored = sorted(m.step for m in client.get_metric_history(child.info.run_id, key))
            assert stored == logged, key  # every step, once


def test_the_tracking_password_is_in_no_param_tag_name_or_artifact(sweep_on_server, tmp_path):
    client, exp = sweep_on_server["client"], sweep_on_server["experiment"]
    secret = sweep_on_server["secret"]
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == 5
    assert secret not in sweep_on_server["stdout"]
    assert all(secret not in f"{k}={v}" for k, v in exp.tags.items())
    checked = 0
    for run in runs:
        assert secret not in (run.info.run_name or "")
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert secret not in key and secret not in value, (run.info.run_name, key)
        for path in _artifact_files(client, run.info.run_id):
            local = client.download_artifacts(run.info.run_id, path, str(tmp_path))
            assert secret.encode() not in Path(local).read_bytes(), path
            checked += 1
    assert checked >= 1  # the stored spec at least


def _artifact_files(client, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path):
        files += _artifact_files(client, run_id, item.path) if item.is_dir else [item.path]
    return files


def test_tracker_keeps_its_buffer_when_it_gives_up_and_waits_out_an_outage(sweep_on_server,
                                                                            monkeypatch):
    """The retry layer on its own: no MLflow HTTP retries underneath, the server killed."""
    for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
                       ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")):
        monkeypatch.setenv(var, value)
    server, client = sweep_on_server["server"], sweep_on_server["client"]
    trial = "f" * 64
    tracker = Tracker(server.url, "outage", code_version="test", spec_yaml="name: outage\n",
                      flush_every_s=1e9, outage_s=1.0)
    tracker.begin(trial, "optim.lr=0.01", {"optim.lr": 0.01})
    run_id = tracker.children[trial]
    server.kill()
    tracker.log_steps(trial, [(step, {"train/loss": 5.0 - step / 100}) for step in range(1, 51)])
    with pytest.raises(MlflowException, match="failed with exception"):
        tracker.flush()  # gave up after outage_s ...
    assert len(tracker.buffer[trial]) == 50  # ... and kept every metric

    tracker.call.outage_s = 300.0
    restart = threading.Thread(target=server.start)
    restart.start()
    began = time.monotonic()
    tracker.end(trial, "finished", {"final/steps": 50, "final/train_loss": 4.5})  # waits
    waited = time.monotonic() - began
    restart.join()
    assert waited > 1.0
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 51))
    run = client.get_run(run_id)
    assert run.data.tags["trial.status"] == "finished" and run.info.status == "FINISHED"
    assert run.data.metrics["final/train_loss"] == 4.5
