"""Trials recorded under an id an earlier rule gave them, taken over by their id now.

Two rules moved trial ids (`trainer.identity`): the data fingerprint entered the id of every
config that reads `pystdlib`, `files` or a tokenizer file, and later the folders of such files
left it (`data/a.txt` and `/abs/data/a.txt` name one trial; the fingerprint pins the bytes).
A sweep recorded before either holds its trials under an old id (`trainer.identity.past_ids`),
which no launch asks for any more: without this module they would all be trained again. So
`launch`, `resume` and `extend` migrate them first: a child run under an old id gets the new id
in its `trial.id` tag (the old one in `trial.legacy_id`) and the fingerprint as a param if it had
none, and its run directory is renamed to the new id, so a finished trial is done and an
unfinished one resumes from its checkpoints. A trunk of shared token budgets whose id moved the
same way keeps its folder (renamed) and its MLflow run (re-tagged), so its budgets branch from
what it trained; a trial folder whose record was lost is renamed too, and is then recorded from
its files like any other.

What is assumed for a record from before fingerprints: that its trial read the data this
machine reads now. Its data cannot be known (that is why the fingerprint exists), and a store
recorded before the fingerprint is normally the store of the machine that reads it. A store
filled by machines with different Pythons had that mix already; the fingerprint keeps it from
happening again. A record with another fingerprint is never taken. `sweep launch --dry-run`
lists the trials it would migrate.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.trials import Trial
from trainer.schema import TRIAL_ID_TAG, TRIAL_LEGACY_ID_TAG, TRUNK_ID_TAG

FINGERPRINT_PARAM = "data.fingerprint"


def legacy_ids(trial: Trial) -> list[str]:
    """The ids the trial had under earlier rules (none if it never moved), under each way its
    data paths were likely written (`trainer.identity.past_ids`)."""
    from trainer.identity import past_ids

    return past_ids(trial.cfg)


def legacy_records(trials: list[Trial], states: dict[str, dict]) -> dict[str, dict]:
    """new trial id → the stored state (`recorded_trials`) of its trial under an old id, for
    each trial recorded only under an old id, with its fingerprint or before fingerprints."""
    if not set(states) - {t.trial_id for t in trials}:
        return {}  # (every record is a trial's now: no old id to look for)
    found = {}
    for trial in trials:
        if trial.trial_id in states:
            continue
        for old in legacy_ids(trial):
            stored = states.get(old)
            if stored and stored["run"].data.params.get(FINGERPRINT_PARAM) in (
                    None, trial.cfg.data.fingerprint):
                found[trial.trial_id] = stored
                break
    return found


def migrate(uri: str, trials: list[Trial], states: dict[str, dict], *,
            sweep: str | None = None) -> int:
    """Give each trial recorded only under an old id its new id, in MLflow and on disk, and
    the trunks of `sweep` theirs; how many trial records were migrated."""
    from mlflow import MlflowClient

    from trainer.paths import RunPaths, adopt_run_dir

    found = legacy_records(trials, states)
    client = MlflowClient(tracking_uri=uri)
    by_id = {t.trial_id: t for t in trials}
    for new_id, state in found.items():
        trial = by_id[new_id]
        run = state["run"]
        old = run.data.tags[TRIAL_ID_TAG]
        adopt_run_dir(RunPaths.for_config(trial.cfg, old).run_dir,
                      RunPaths.for_config(trial.cfg, new_id).run_dir, new_id=new_id)
        if FINGERPRINT_PARAM not in run.data.params:
            client.log_param(run.info.run_id, FINGERPRINT_PARAM, trial.cfg.data.fingerprint)
        client.set_tag(run.info.run_id, TRIAL_LEGACY_ID_TAG, old)
        client.set_tag(run.info.run_id, TRIAL_ID_TAG, new_id)  # last: until here the old trial
        states[new_id] = state
    _adopt_folders(trials, states)
    _move_trunks(client, trials, sweep)
    return len(found)


def _adopt_folders(trials: list[Trial], states: dict[str, dict]) -> None:
    """Folders under an old id whose record is lost (or was never written) take the new id,
    unless their `config.json` names other data. (Only where the storage holds folders no
    trial of the sweep is named by: a first launch computes no old ids.)"""
    from trainer.paths import RunPaths, adopt_run_dir

    roots = {Path(t.cfg.storage_root) for t in trials}
    strangers = {p.name for root in roots if root.is_dir() for p in root.iterdir()
                 if len(p.name) == 64} - {t.trial_id for t in trials}
    if not strangers:
        return
    for trial in trials:
        if trial.trial_id in states:
            continue
        new_dir = RunPaths.for_config(trial.cfg, trial.trial_id).run_dir
        for old in legacy_ids(trial):
            old_dir = RunPaths.for_config(trial.cfg, old).run_dir
            if (old in strangers and old not in states
                    and _stored_fingerprint(old_dir) in (None, trial.cfg.data.fingerprint)
                    and adopt_run_dir(old_dir, new_dir, new_id=trial.trial_id)):
                break


def _stored_fingerprint(run_dir) -> str | None:
    """The data fingerprint in a run directory's `config.json` (None: none, or unreadable)."""
    try:
        return json.loads((run_dir / "config.json").read_text()).get(FINGERPRINT_PARAM)
    except (OSError, ValueError, AttributeError):
        return None


def _move_trunks(client, trials: list[Trial], sweep: str | None) -> None:
    """Each trunk whose id moved with its data paths' rule: its folder and MLflow run. (Only
    where the storage or the sweep holds trunks no family of the sweep is named by.)"""
    from orchestrator.families import family_id
    from trainer.branching import trunk_dir
    from trainer.identity import spellings, written_json
    from trainer.paths import refuse_if_held
    from trainer.schema import KIND_TRUNK, sweep_runs

    pinned = [t for t in trials if t.cfg.data.fingerprint is not None
              and (t.cfg.data.paths or t.cfg.data.tokenizer)]
    if not pinned:
        return
    current = {family_id(t.cfg) for t in pinned}
    roots = {t.cfg.storage_root for t in pinned}
    folders = {p.name for root in roots if trunk_dir(root, "x").parent.is_dir()
               for p in trunk_dir(root, "x").parent.iterdir()} - current
    experiment = client.get_experiment_by_name(sweep) if sweep else None
    runs = [run for run in sweep_runs(client, experiment.experiment_id, KIND_TRUNK)
            if run.data.tags.get(TRUNK_ID_TAG) not in current] if experiment else []
    if not folders and not runs:
        return
    moved = {}
    for trial in pinned:
        new = family_id(trial.cfg)
        for cfg in spellings(trial.cfg):
            old = family_id(cfg, canonical=written_json)
            if old == new or old in moved:
                continue
            moved[old] = new
            root = trial.cfg.storage_root
            if old in folders and not trunk_dir(root, new).exists():
                refuse_if_held(trunk_dir(root, old))
                trunk_dir(root, old).rename(trunk_dir(root, new))
    for run in runs:
        new = moved.get(run.data.tags.get(TRUNK_ID_TAG))
        if new is not None:
            client.set_tag(run.info.run_id, TRUNK_ID_TAG, new)
