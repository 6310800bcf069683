"""Trials recorded before data fingerprints keep their results under their new ids."""

import dataclasses
import json

import yaml
from mlflow import MlflowClient

from orchestrator import cli, legacy
from orchestrator.commands import dry_run, launch
from orchestrator.driver import prepare
from orchestrator.spec_file import spec_from_dict
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
        old = legacy.legacy_ids(trial)[-1]
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
        assert run.data.tags[schema.TRIAL_LEGACY_ID_TAG] == legacy.legacy_ids(trial)[-1]
        assert run.data.params[legacy.FINGERPRINT_PARAM] == trial.cfg.data.fingerprint
        new_dir = tmp_path / "runs" / trial.trial_id
        assert (new_dir / "checkpoints" / "step-4").is_dir()  # resumes from there
        assert json.loads((new_dir / "summary.json").read_text())["trial.id"] == trial.trial_id
        assert not (tmp_path / "runs" / legacy.legacy_ids(trial)[-1]).exists()
    untouched = client.get_run(runs[other.trial_id])
    assert untouched.data.tags[schema.TRIAL_ID_TAG] == legacy.legacy_ids(other)[-1]
    assert (tmp_path / "runs" / legacy.legacy_ids(other)[-1]).is_dir()
    # Nothing left to migrate the second time.
    assert legacy.migrate(uri, [done, failed, other], recorded_trials(uri, "unit")) == 0


def test_a_sweep_done_before_fingerprints_runs_nothing_after_them(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    _old_sweep(tmp_path, uri)
    only_done = spec_from_dict(_spec(tmp_path, lrs="3e-3"))
    outcome = launch(only_done, tracking_uri=uri)  # all done: answered without Ray
    assert (outcome.trials, outcome.already_done, outcome.ran) == (1, 1, {})
    assert "1 trial recorded under the id an earlier version gave them" in capsys.readouterr().out
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, lrs="3e-3")))
    assert cli.main(["launch", str(path), "--tracking-uri", uri]) == 0
    assert "1 trial, 1 already done, nothing to run" in capsys.readouterr().out


def test_synthetic_data_has_no_fingerprint_and_keeps_its_id(tmp_path):
    spec = _spec(tmp_path)
    spec["overrides"] = [o.replace("pystdlib", "synthetic") for o in spec["overrides"]]
    for trial in prepare(spec_from_dict(spec))[1]:
        assert trial.cfg.data.fingerprint is None and legacy.legacy_ids(trial) == []


def test_trunks_and_lost_records_of_files_named_with_their_folders_move_too(
        tmp_path, monkeypatch):
    """A sweep of token budgets on `data/a.txt` recorded when paths entered ids as written: its
    trunk's folder and MLflow run take the trunk id now (its budgets branch from what it
    trained), and a trial folder whose record was lost takes its trial id (it is then recorded
    from its files, not trained)."""
    from orchestrator.families import family_id
    from trainer.identity import written_id, written_json

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("some words to train on\n" * 2000)
    spec = {"name": "unit", "storage_root": str(tmp_path / "runs"),
            "overrides": [o.replace("data=pystdlib", "data=files") for o in TRIAL]
            + ["data.paths=[data/a.txt]", "schedule=wsd", "schedule.warmup_tokens=1024"],
            "grid": {"train.tokens": "choice(32768, 65536)"}}
    trials = prepare(spec_from_dict(spec))[1]
    # (the spec holds them absolute: status, resume and extend read them from anywhere)
    assert all(t.cfg.data.paths == [str(tmp_path / "data" / "a.txt")] for t in trials)

    def as_written(trial):  # as an earlier version composed it
        return dataclasses.replace(trial.cfg, data=dataclasses.replace(
            trial.cfg.data, paths=["data/a.txt"]))

    old_trunk = family_id(as_written(trials[0]), canonical=written_json)
    new_trunk = family_id(trials[0].cfg)
    assert old_trunk != new_trunk and family_id(trials[1].cfg) == new_trunk
    (tmp_path / "runs" / "trunks" / old_trunk / "checkpoints").mkdir(parents=True)
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "unit", code_version="old",
                      spec_yaml=yaml.safe_dump(spec_from_dict(spec).to_dict()))
    client = MlflowClient(tracking_uri=uri)
    trunk_run = client.create_run(tracker.experiment_id, run_name="trunk", tags={
        schema.PARENT_RUN_TAG: tracker.parent_id, schema.KIND_TAG: schema.KIND_TRUNK,
        schema.TRUNK_ID_TAG: old_trunk}).info.run_id
    lost = trials[1]
    old_dir = tmp_path / "runs" / written_id(as_written(lost))
    old_dir.mkdir()
    (old_dir / "summary.json").write_text(json.dumps({"trial.id": old_dir.name,
                                                      "status": "finished"}))
    (old_dir / "config.json").write_text(json.dumps({
        "trial.id": old_dir.name, "data.fingerprint": lost.cfg.data.fingerprint}))

    assert legacy.migrate(uri, trials, recorded_trials(uri, "unit"), sweep="unit") == 0
    assert (tmp_path / "runs" / "trunks" / new_trunk / "checkpoints").is_dir()
    assert not (tmp_path / "runs" / "trunks" / old_trunk).exists()
    assert client.get_run(trunk_run).data.tags[schema.TRUNK_ID_TAG] == new_trunk
    new_dir = tmp_path / "runs" / lost.trial_id
    assert not old_dir.exists()
    for name in ("summary.json", "config.json"):
        stored = json.loads((new_dir / name).read_text())
        assert (stored["trial.id"], stored["trial.legacy_id"]) == (lost.trial_id, old_dir.name)


def test_a_lost_record_s_folder_with_another_corpus_stays_where_it_is(tmp_path, monkeypatch):
    """Under the id from before fingerprints a folder may hold a run on other data: its
    `config.json` says so, and it is not taken for this trial's."""
    spec = _spec(tmp_path, lrs="3e-3")
    (trial,) = prepare(spec_from_dict(spec))[1]
    old_dir = tmp_path / "runs" / legacy.legacy_ids(trial)[-1]
    old_dir.mkdir(parents=True)
    (old_dir / "config.json").write_text(json.dumps({"trial.id": old_dir.name,
                                                     "data.fingerprint": "another-python"}))
    legacy.migrate(f"sqlite:///{tmp_path}/m.db", [trial], {}, sweep="unit")
    assert old_dir.is_dir() and not (tmp_path / "runs" / trial.trial_id).exists()


def test_a_folder_another_driver_trains_in_is_not_moved_from_under_it(tmp_path):
    """A launch after an upgrade, while the earlier version's driver still trained the sweep,
    renamed a live trial's folder: that driver trained it again, and the other twice."""
    import subprocess
    import sys

    import pytest

    from trainer.errors import ConfigError

    spec = _spec(tmp_path, lrs="3e-3")
    (trial,) = prepare(spec_from_dict(spec))[1]
    old_dir = tmp_path / "runs" / legacy.legacy_ids(trial)[-1]
    old_dir.mkdir(parents=True)
    code = ("import time\nfrom trainer.lease import Lease\n"
            f"lease = Lease.acquire({str(old_dir)!r}, sweep='unit', driver_pid=1)\n"
            "print('held', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"^{old_dir} is being trained by unit \(host "
                                              r".+, pid 1\) under the id an earlier version "
                                              r"gave it: let that finish, or stop it, then run "
                                              r"this again$"):
            legacy.migrate(f"sqlite:///{tmp_path}/m.db", [trial], {}, sweep="unit")
        assert old_dir.is_dir() and not (tmp_path / "runs" / trial.trial_id).exists()
    finally:
        holder.kill()
        holder.wait()
    legacy.migrate(f"sqlite:///{tmp_path}/m.db", [trial], {}, sweep="unit")  # gone: moved
    assert (tmp_path / "runs" / trial.trial_id).is_dir()


def test_status_counts_trials_under_their_old_ids_before_a_launch_migrates_them(tmp_path):
    """Right after an upgrade `sweep status` (and `list`, `fit`) read every such trial as
    pending, where the dry run said done (old id)."""
    from orchestrator.status import status

    uri = f"sqlite:///{tmp_path}/m.db"
    _old_sweep(tmp_path, uri)
    report = status(uri, "unit")
    assert report["counts"] == {"finished": 1, "failed": 1, "pending": 1}
    assert report["best"] is not None


def test_a_stored_spec_with_relative_data_files_is_stored_again_absolute(tmp_path, monkeypatch):
    """A sweep launched before data paths were made absolute, with nothing left to run, kept
    its relative spec: `sweep status` from another folder then failed on its files."""
    from orchestrator.commands import launch
    from orchestrator.status import status
    from orchestrator.sweep_record import stored_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("some words to train on\n" * 2000)
    raw = {"name": "unit", "storage_root": str(tmp_path / "runs"),
           "overrides": [o.replace("data=pystdlib", "data=files") for o in TRIAL]
           + ["data.paths=[data/a.txt]"], "grid": {"optim.lr": "choice(3e-3)"}}
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "unit", code_version="old", spec_yaml=yaml.safe_dump(raw))
    (trial,) = prepare(spec_from_dict(raw))[1]
    _record(uri, tracker, trial.trial_id, "finished", {"optim.lr": 3e-3})
    assert launch(spec_from_dict(raw), tracking_uri=uri).already_done == 1
    monkeypatch.chdir(tmp_path / "runs")
    assert f"data.paths=['{tmp_path / 'data' / 'a.txt'}']" in stored_spec(uri, "unit").overrides
    assert status(uri, "unit")["counts"] == {"finished": 1}
