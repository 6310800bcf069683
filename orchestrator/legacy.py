"""Trials recorded before the data fingerprint entered the trial id, taken over by their new id.

`data.fingerprint` (see `trainer.fingerprint`) moved the id of every config that reads
`pystdlib`, `files` or a tokenizer file. A sweep recorded before then holds those trials under
their old id (the same config with `data.fingerprint=None`), which no launch asks for any more:
without this module they would all be trained again. So `launch`, `resume` and `extend`
migrate them first: a child run under the old id, recorded before fingerprints existed (no
`data.fingerprint` param), gets the new id in its `trial.id` tag (the old one in
`trial.legacy_id`) and the fingerprint as a param, and its run directory is renamed to the new
id, so a finished trial is done and an unfinished one resumes from its checkpoints.

What is assumed: that such a trial read the data this machine reads now. Its data cannot be
known (that is why the fingerprint exists), and a store recorded before the fingerprint is
normally the store of the machine that reads it. A store filled by machines with different
Pythons had that mix already; the fingerprint keeps it from happening again. Runs recorded with
a fingerprint are never touched. `sweep launch --dry-run` lists the trials it would migrate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from orchestrator.spec import Trial
from trainer.schema import TRIAL_ID_TAG, TRIAL_LEGACY_ID_TAG

FINGERPRINT_PARAM = "data.fingerprint"


def legacy_id(trial: Trial) -> str | None:
    """The id the trial had before data fingerprints, or None if it has not changed."""
    from trainer.identity import config_id

    if trial.cfg.data.fingerprint is None:
        return None
    data = dataclasses.replace(trial.cfg.data, fingerprint=None)
    return config_id(dataclasses.replace(trial.cfg, data=data))


def legacy_records(trials: list[Trial], states: dict[str, dict]) -> dict[str, dict]:
    """new trial id → the stored state (`recorded_trials`) of its trial under its old id, for
    each trial recorded only under the old id, before fingerprints existed."""
    if not states:
        return {}
    found = {}
    for trial in trials:
        if trial.trial_id in states or (old := legacy_id(trial)) not in states:
            continue
        if FINGERPRINT_PARAM not in states[old]["run"].data.params:
            found[trial.trial_id] = states[old]
    return found


def migrate(uri: str, trials: list[Trial], states: dict[str, dict]) -> int:
    """Give each trial recorded only under its old id its new id, in MLflow and on disk; how
    many were migrated."""
    from mlflow import MlflowClient

    from trainer.paths import RunPaths

    found = legacy_records(trials, states)
    if not found:
        return 0
    client = MlflowClient(tracking_uri=uri)
    by_id = {t.trial_id: t for t in trials}
    for new_id, state in found.items():
        trial = by_id[new_id]
        run_id = state["run"].info.run_id
        old = state["run"].data.tags[TRIAL_ID_TAG]
        _move(RunPaths.for_config(trial.cfg, old).run_dir,
              RunPaths.for_config(trial.cfg, new_id).run_dir, new_id=new_id)
        client.log_param(run_id, FINGERPRINT_PARAM, trial.cfg.data.fingerprint)
        client.set_tag(run_id, TRIAL_LEGACY_ID_TAG, old)
        client.set_tag(run_id, TRIAL_ID_TAG, new_id)  # last: until here it is the old trial
        states[new_id] = state
    return len(found)


def _move(old: Path, new: Path, *, new_id: str) -> None:
    """The old run directory becomes the new one (unless there is none, or already a new one:
    a run under the new id has its own files), its summary naming the new id."""
    if not old.is_dir() or new.exists():
        return
    old.rename(new)
    summary = new / "summary.json"
    if summary.is_file():
        stored = json.loads(summary.read_text())
        stored["trial.legacy_id"], stored["trial.id"] = stored.get("trial.id"), new_id
        tmp = summary.with_name(".summary.json.migrating")
        tmp.write_text(json.dumps(stored, indent=2))
        os.replace(tmp, summary)
