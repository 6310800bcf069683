"""A searched sweep as a team runs it: the tracking server on PostgreSQL, the Optuna studies
in a PostgreSQL database of their own (`search.optuna.storage`, with its password in the URL),
the `sweep` command in its own process. The studies hold every trial; the password is in no
output, MLflow param, tag or artifact; reading the sweep back needs `OPTUNA_STORAGE`."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
import yaml

from tests.deploy.services import ROOT, SWEEP_TRIAL

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _sweep(*args, server, secret, env=None):
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "sweeper",
           "MLFLOW_TRACKING_PASSWORD": secret, **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--tracking-uri",
                           server.url], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_halving_search_keeps_its_studies_in_postgres_with_the_password_masked(
        sweep_on_server, postgres, tmp_path):
    server, secret = sweep_on_server["server"], sweep_on_server["secret"]
    storage = postgres.create_database("studies")
    spec = {"name": "searched", "overrides": [o for o in SWEEP_TRIAL if "tokens=" not in o],
            "grid": {"optim.lr": "tag(log, interval(1e-3, 3e-2))",
                     "train.tokens": "choice(4096, 8192)"},
            "search": {"optuna": {"n_trials": 2, "sampler": "random", "pruner": "halving",
                                  "storage": storage}},
            "resources": {"cpus": 1, "gpus": 0}, "max_concurrent": 2,
            "storage_root": str(tmp_path / "runs")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    launched = _sweep("launch", str(tmp_path / "spec.yaml"), server=server, secret=secret)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert postgres.password not in launched.stdout + launched.stderr

    rungs = [optuna.load_study(study_name=f"searched: train.tokens={t} seed=0", storage=storage)
             for t in (4096, 8192)]
    assert [[t.state.name for t in r.trials] for r in rungs] == [["COMPLETE"] * 2,
                                                                 ["COMPLETE"]]
    client = sweep_on_server["client"]
    exp = client.get_experiment_by_name("searched")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert sorted(r.data.tags.get("trial.status", "") for r in runs
                  if r.data.tags.get("proxysweep.kind") == "trial") == ["finished"] * 3
    for run in runs:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert postgres.password not in value, (run.info.run_name, key)
    parent = next(r for r in runs if r.data.tags.get("proxysweep.kind") == "sweep")
    stored = yaml.safe_load(open(client.download_artifacts(parent.info.run_id, "sweep.yaml",
                                                           str(tmp_path))))
    assert stored["search"]["optuna"]["storage"] == storage.replace(postgres.password, "***")

    # The stored spec has no password: reading the sweep back asks for the environment's.
    blind = _sweep("status", "searched", server=server, secret=secret)
    assert blind.returncode != 0
    assert "was stored with its password masked: set OPTUNA_STORAGE" in blind.stderr
    assert "Traceback" not in blind.stderr
    seen = _sweep("status", "searched", server=server, secret=secret,
                  env={"OPTUNA_STORAGE": storage})
    assert seen.returncode == 0, seen.stderr[-3000:]
    assert "slice train.tokens=4096 seed=0: 2/2 trials, best" in seen.stdout
    assert "slice train.tokens=8192 seed=0: 1/1 trials, best" in seen.stdout
    assert postgres.password not in seen.stdout + seen.stderr
