"""A sweep against a real `mlflow server` on PostgreSQL, with basic auth, as a team runs it.

The server is killed in the middle of the sweep and started again on the same port; the
sweep (the `sweep` command in its own process, on a local Ray) must lose nothing. The
password lives only in the environment and, on purpose, in a URI in the spec's overrides;
no param, tag, run name or artifact may contain it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.exceptions import MlflowException

from orchestrator.tracking import Tracker, sweep_runs
from tests.deploy.services import ROOT, MlflowServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SECRET = "s3cr3t-" + os.urandom(6).hex()
TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "data=synthetic", "data.num_tokens=200_000", "train.seq_len=64",
         "train.eval_tokens=4096", "schedule=wsd", "schedule.warmup_tokens=1024",
         "train.log_every_steps=2", "train.tokens=163840"]


@pytest.fixture(scope="module")
def sweep_on_server(tmp_path_factory, postgres):
    """A 2 × 2 sweep run through a server restart, and the server it ran against."""
    tmp = tmp_path_factory.mktemp("server-sweep")
    workdir = tmp / "server"
    workdir.mkdir()
    server = MlflowServer(postgres.create_database("sweeps"), workdir, username="sweeper",
                          password=SECRET)
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "sweeper",
           "MLFLOW_TRACKING_PASSWORD": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET}
    storage = tmp / "runs"
    spec = {"name": "served", "overrides": TRIAL + [
                f"tracking.uri=http://sweeper:{SECRET}@127.0.0.1:{server.port}"],
            "grid": {"optim.lr": "tag(log, choice(3e-3, 1e-2))",
                     "train.batch_size": "choice(8, 16)"},
            "seeds": [0], "resources": {"cpus": 1, "gpus": 0}, "max_concurrent": 2,
            "retries": 1, "storage_root": str(storage)}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.MonkeyPatch.context() as env_of_tests:
        # This process's MLflow client (the tests' checks) uses the same credentials.
        env_of_tests.setenv("MLFLOW_TRACKING_USERNAME", "sweeper")
        env_of_tests.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
        proc = None
        try:
            server.start()
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli",
                                     "--tracking-uri", server.url, "launch",
                                     str(tmp / "spec.yaml")], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Kill the server while a trial is training (its history grows, it has no
            # summary yet), so that the outage falls inside trials, not between them.
            wait_until(lambda: _training(storage), timeout_s=240, proc=proc,
                       what="a trial in mid-training")
            server.kill()
            lines_at_kill = _history_lines(storage)
            time.sleep(3)
            server.start()
            outage = {"driver_running_after": proc.poll() is None,
                      "lines_logged_during": _history_lines(storage) - lines_at_kill}
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:] + server.log()
            client = mlflow.MlflowClient(tracking_uri=server.url)
            yield {"server": server, "client": client, "storage": storage, "outage": outage,
                   "experiment": client.get_experiment_by_name("served"), "stdout": out + err}
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
            server.kill()


def _training(storage: Path) -> bool:
    return any(len(p.read_text().splitlines()) >= 10 and not (p.parent / "summary.json").exists()
               for p in storage.glob("*/metrics.jsonl"))


def _history_lines(storage: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in storage.glob("*/metrics.jsonl"))


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
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == 5
    assert SECRET not in sweep_on_server["stdout"]
    assert all(SECRET not in f"{k}={v}" for k, v in exp.tags.items())
    checked = 0
    for run in runs:
        assert SECRET not in (run.info.run_name or "")
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert SECRET not in key and SECRET not in value, (run.info.run_name, key)
        for path in _artifact_files(client, run.info.run_id):
            local = client.download_artifacts(run.info.run_id, path, str(tmp_path))
            assert SECRET.encode() not in Path(local).read_bytes(), path
            checked += 1
    assert checked >= 1  # the stored spec, which named the password in a URI
    params = next(r for r in runs if r.data.tags.get("proxysweep.kind") == "trial").data.params
    assert params["tracking.uri"].startswith("http://sweeper:***@127.0.0.1:")


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
    run_id = tracker.start_trial(trial, {"optim.lr": 0.01}, "optim.lr=0.01")
    server.kill()
    for step in range(1, 51):
        tracker.log_metrics(trial, {"train/loss": 5.0 - step / 100}, step)
    with pytest.raises(MlflowException, match="failed with exception"):
        tracker.flush()  # gave up after outage_s ...
    assert len(tracker.buffer[run_id]) == 50  # ... and kept every metric

    tracker.outage_s = 120.0
    restart = threading.Thread(target=server.start)
    restart.start()
    began = time.monotonic()
    tracker.finish_trial(trial, "finished", {"final/steps": 50, "final/train_loss": 4.5},
                         {"optim.lr": 0.01}, "optim.lr=0.01")  # waits for the server
    waited = time.monotonic() - began
    restart.join()
    assert waited > 1.0
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 51))
    run = client.get_run(run_id)
    assert run.data.tags["trial.status"] == "finished" and run.info.status == "FINISHED"
    assert run.data.metrics["final/train_loss"] == 4.5
