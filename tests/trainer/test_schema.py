"""The record schema: one module, importable without torch or Ray, and its shared writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import schema


def test_importing_the_schema_users_imports_neither_torch_nor_ray():
    code = ("import orchestrator.commands, orchestrator.status, orchestrator.cancel, "
            "orchestrator.sweep_record, orchestrator.tracking, orchestrator.resync, "
            "fitter.data, fitter.mlflow_io, trainer.reporting, trainer.schema, sys; "
            "assert 'torch' not in sys.modules, 'torch'; assert 'ray' not in sys.modules, 'ray'")
    repo = str(Path(__file__).resolve().parents[2])  # this checkout, not an installed one
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=repo,
                   env={**os.environ, "PYTHONPATH": repo})


def test_the_readme_s_python_entry_point_imports_functions():
    # `from trainer import compose` gave the submodule trainer.compose, not the function.
    code = ("from trainer import compose, run, check, config_id; import trainer.compose; "
            "import trainer, sys; cfg = compose(['model=tiny']); "
            "assert callable(run) and trainer.compose is compose, trainer.compose; "
            "assert config_id(cfg)")
    repo = str(Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=repo,
                   env={**os.environ, "PYTHONPATH": repo})


@pytest.mark.parametrize("status, run_status", [
    ("finished", "FINISHED"), ("diverged", "FINISHED"), ("interrupted", "KILLED"),
    ("failed", "FAILED"), ("pruned", "KILLED"),  # stopped on purpose by a search, not an error
])
def test_trial_status_to_mlflow_run_status(status, run_status):
    assert status in schema.STATUSES and schema.run_status(status) == run_status


def test_done_is_finished_or_diverged():
    assert schema.DONE == ("finished", "diverged")


@pytest.mark.parametrize("metrics, params, tags, sizes", [
    (0, 0, 0, []),
    (10, 3, 2, [(10, 3, 2)]),
    (1000, 100, 100, [(1000, 100, 100)]),
    (2500, 150, 1, [(1000, 100, 1), (1000, 50, 0), (500, 0, 0)]),
])
def test_batches_keep_within_mlflows_limits(metrics, params, tags, sizes):
    chunks = list(schema.batches(metrics=range(metrics), params=range(params), tags=range(tags)))
    assert [tuple(map(len, c)) for c in chunks] == sizes
    assert [x for c in chunks for x in c[0]] == list(range(metrics))  # in order, none lost


def test_a_trial_run_is_found_before_one_is_created(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("s")
    tags = {schema.KIND_TAG: schema.KIND_TRIAL, schema.TRIAL_ID_TAG: "abc"}
    first = schema.find_or_create_run(client, exp, tags=tags, name="t")
    again = schema.find_or_create_run(client, exp, tags=tags, name="t")
    other = schema.find_or_create_run(client, exp, tags={**tags, schema.TRIAL_ID_TAG: "x"},
                                      name="u")
    assert first.info.run_id == again.info.run_id != other.info.run_id
    assert [r.info.run_id for r in schema.sweep_runs(client, exp, schema.KIND_TRIAL)] \
        and set(schema.recorded_trials(f"sqlite:///{tmp_path}/m.db", "s")) == {"abc", "x"}


def test_a_pruned_trials_tokens_count_as_trained():
    """`sweep status` left out the tokens pruned trials trained before they stopped."""
    from trainer.schema import (
        FINAL_TOKENS,
        TOKENS_IF_INDEPENDENT,
        TOKENS_TRAINED,
        totals_of,
    )

    totals = totals_of([("finished", {FINAL_TOKENS: 65536.0}),
                        ("pruned", {FINAL_TOKENS: 8192.0}),
                        ("failed", {FINAL_TOKENS: 4096.0})], [])
    assert totals[TOKENS_TRAINED] == totals[TOKENS_IF_INDEPENDENT] == 65536.0 + 8192.0
