"""Trials recorded before data fingerprints keep their results under their new ids."""

import json

import yaml
from mlflow import MlflowClient

from orchestrator import cli, legacy
from orchestrator.commands import dry_run, launch
from orchestrator.driver import prepare
from orchestrator.spec import spec_from_dict
from orchestrator.tracking import Tracker
from trainer import schema
from trainer.schema import recorded_trials

TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "data=pystdlib", "train.seq_len=64", "train.tokens=32768"]


def _spec(tmp_path, lrs="3e-3, 1e-2, 3e-2") -> dict:
    return {"name": "unit", "overrides": TRIAL, "grid": {"optim.lr": f"choice({lrs})"},
            "storage_root": str(tmp_path / "runs")}


def _record(uri, tracker, trial_id, status, params):
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(tracker.experiment_id, run_name=trial_id[:8], tags={
        schema.PARENT_RUN_TAG: tracker.parent_id, schema.KIND_TAG: schema.KIND_TRIAL,
        schema.TRIAL_ID_TAG: trial_id, schema.TRIAL_STATUS_TAG: status})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def _old_sweep(tmp_path, uri):
    """A store as a launch before fingerprints left it: a finished trial and a failed one
    (with a checkpoint) under their old ids, and one recorded under its old id on a machine
    that had fingerprints already, with another corpus."""
    spec = _spec(tmp_path)
    trials = prepare(spec_from_dict(spec))[1]
    tracker = Tracker(uri, "unit", code_version="old",
                      spec_yaml=yaml.safe_dump(spec_from_dict(spec).to_dict()))
    runs = {}
    for trial, status in zip(trials, ("finished", "failed", "finished"), strict=True):
        old = legacy.legacy_id(trial)
        assert old is not None and old != trial.trial_id
        params = {"optim.lr": trial.cfg.optim.lr}
        if status == "finished" and trial is trials[2]:
            params[legacy.FINGERPRINT_PARAM] = "another-python"
        runs[trial.trial_id] = _record(uri, tracker, old, status, params)
        run_dir = tmp_path / "runs" / old
        (run_dir / "checkpoints" / "step-4").mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps({"trial.id": old, "status": status}))
    return spec, trials, runs


def test_dry_run_shows_old_ids_and_launch_moves_them_to_the_new_ids(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    spec, (done, failed, other), runs = _old_sweep(tmp_path, uri)

    plan = {t.trial_id: action for t, action in dry_run(spec_from_dict(spec), tracking_uri=uri)}
    assert plan == {done.trial_id: "done (finished, old id)",
                    failed.trial_id: "run (failed, old id)", other.trial_id: "run"}

    states = recorded_trials(uri, "unit")
    assert legacy.migrate(uri, [done, failed, other], states) == 2
    client = MlflowClient(tracking_uri=uri)
    for trial in (done, failed):
        run = client.get_run(runs[trial.trial_id])
        assert run.data.tags[schema.TRIAL_ID_TAG] == trial.trial_id
        assert run.data.tags[schema.TRIAL_LEGACY_ID_TAG] == legacy.legacy_id(trial)
        assert run.data.params[legacy.FINGERPRINT_PARAM] == trial.cfg.data.fingerprint
        new_dir = tmp_path / "runs" / trial.trial_id
        assert (new_dir / "checkpoints" / "step-4").is_dir()  # resumes from there
        assert json.loads((new_dir / "summary.json").read_text())["trial.id"] == trial.trial_id
        assert not (tmp_path / "runs" / legacy.legacy_id(trial)).exists()
    untouched = client.get_run(runs[other.trial_id])
    assert untouched.data.tags[schema.TRIAL_ID_TAG] == legacy.legacy_id(other)
    assert (tmp_path / "runs" / legacy.legacy_id(other)).is_dir()
    # Nothing left to migrate the second time.
    assert legacy.migrate(uri, [done, failed, other], recorded_trials(uri, "unit")) == 0


def test_a_sweep_done_before_fingerprints_runs_nothing_after_them(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    _old_sweep(tmp_path, uri)
    only_done = spec_from_dict(_spec(tmp_path, lrs="3e-3"))
    outcome = launch(only_done, tracking_uri=uri)  # all done: answered without Ray
    assert (outcome.trials, outcome.already_done, outcome.ran) == (1, 1, {})
    assert "1 trial recorded before data fingerprints" in capsys.readouterr().out
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, lrs="3e-3")))
    assert cli.main(["launch", str(path), "--tracking-uri", uri]) == 0
    assert "1 trial, 1 already done, nothing to run" in capsys.readouterr().out


def test_synthetic_data_has_no_fingerprint_and_keeps_its_id(tmp_path):
    spec = _spec(tmp_path)
    spec["overrides"] = [o.replace("pystdlib", "synthetic") for o in spec["overrides"]]
    for trial in prepare(spec_from_dict(spec))[1]:
        assert trial.cfg.data.fingerprint is None and legacy.legacy_id(trial) is None
