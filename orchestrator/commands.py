"""What each `sweep` subcommand does, apart from argument parsing.

`launch`, `resume` and `extend` are one operation: work out the sweep's trials, skip those
MLflow records as done, run the rest. `resume` and `extend` read the spec stored with the
sweep's parent run, so they need only the name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from mlflow import MlflowClient

from orchestrator import legacy
from orchestrator.driver import (
    SweepOutcome,
    ended_on_disk,
    init_ray,
    local_cluster,
    prepare,
    resource_problems,
    run_sweep,
    storage_problem,
)
from orchestrator.spec import SweepSpec, parse_reason, root_path
from orchestrator.spec_file import load_spec, spec_from_dict
from orchestrator.store import create_sqlite_store_once, missing_sqlite, spec_changed_since_read
from orchestrator.trials import Trial, grid_axes, print_notes, unread_problems
from trainer.errors import ConfigError
from trainer.lease import driver_label, gone_driver
from trainer.reporting import redact
from trainer.schema import (
    DONE,
    DRIVER_SILENT_S,
    FAILED,
    FINAL_EVAL_LOSS,
    FINAL_WALL_S,
    FINISHED,
    INTERRUPTED,
    KIND_SWEEP,
    KIND_TRIAL,
    KIND_TRUNK,
    PARAM_TOKENS,
    RUNNING,
    SPEC_ARTIFACT,
    SWEEP_CANCEL_TAG,
    SWEEP_DRIVER_TAG,
    SWEEP_DRIVERS_PREFIX,
    SWEEP_HEARTBEAT_TAG,
    SWEEP_STATUS_TAG,
    TOKENS_IF_INDEPENDENT,
    TOKENS_RATIO,
    TOKENS_TRAINED,
    TRIAL_ERROR_TAG,
    TRIAL_ID_TAG,
    TRIAL_STATUS_TAG,
    TRUNK_ID_TAG,
    TRUNK_STATUS_TAG,
    recorded_trials,
    run_status,
    sweep_runs,
    token_totals,
)


def launch(spec: SweepSpec, *, tracking_uri: str, address: str | None = None,
           progress: bool = True, based_on: SweepSpec | None = None,
           notes: Sequence[str] = ()) -> SweepOutcome:
    """Validate every trial and the spec's resources, then run the trials not yet done
    (`based_on`: the stored spec `sweep extend` extended, see `run_sweep`). `notes`: said
    once the checks have passed.

    Raises:
        ConfigError: every problem found, of the trials' configs and of the cluster (no node
            holds a trial, or no cluster at `address`) together, before anything runs.
    """
    if spec.optuna is not None:
        return _launch_search(spec, tracking_uri=tracking_uri, address=address,
                              progress=progress, based_on=based_on, notes=notes)
    try:
        spec, trials = prepare(spec)
        storage_problem(spec.storage_root, create=True)
        _check_hub_once(trials)
        _refuse_unread(spec, tracking_uri, based_on)
        print_notes(trials)
    except ConfigError as err:
        # Still ask the cluster, so that its problems are reported with these; with no cluster
        # named, measure this machine rather than start (and print) a Ray runtime to say so.
        named = address or os.environ.get("RAY_ADDRESS")
        cluster = (_cluster_problems(spec, address) if named
                   else resource_problems(spec, local_cluster()))
        raise ConfigError(list(err.problems) + cluster) from None
    say_notes(notes)
    create_sqlite_store_once(tracking_uri)
    states = recorded_trials(tracking_uri, spec.name)
    say_notes(other_data(spec.name, trials, states))
    _relabel(tracking_uri, trials, states)
    migrated = legacy.migrate(tracking_uri, trials, states, sweep=spec.name)
    if migrated:
        print(f"{migrated} trial{'s' if migrated > 1 else ''} recorded under the id an earlier "
              "version gave them (before data fingerprints, or with their data files' folders) "
              "now carry their new id (see orchestrator/legacy.py)")
    todo_ids = [t.trial_id for t in trials if states.get(t.trial_id, {}).get("status")
                not in DONE]
    if not todo_ids:
        # Nothing to run: answer from the store without starting Ray.
        _store_spec(tracking_uri, spec, based_on, trials)
        _close_as_finished(tracking_uri, spec.name)
        return SweepOutcome(trials=len(trials), already_done=len(trials))
    marked = _start(spec, tracking_uri, address, based_on)
    if marked.cancelled:  # (its spec kept: `resume` runs its trials)
        _store_spec(tracking_uri, spec, based_on, trials)
        return SweepOutcome(trials=len(trials), already_done=len(trials) - len(todo_ids),
                            interrupted=True)
    with marked.undone_on_error():
        return run_sweep(spec, trials, tracking_uri=tracking_uri, progress=progress,
                         based_on=based_on)


def _relabel(tracking_uri: str, trials: list[Trial], states: dict) -> None:
    """Name each recorded trial's run after its label in this launch's spec: an axis `extend`
    added (`optim.weight_decay=choice(0.0, 0.1)`) is in the new trials' names, and the old
    trials' names lacked it, so two trials read alike in `status` and the MLflow UI."""
    client = None
    for trial in trials:
        run = states.get(trial.trial_id, {}).get("run")
        if run is not None and run.info.run_name != trial.label[:250]:
            client = client or MlflowClient(tracking_uri=tracking_uri)
            client.update_run(run.info.run_id, name=trial.label[:250])


def _refuse_unread(spec: SweepSpec, tracking_uri: str, based_on: SweepSpec | None) -> None:
    """Keys no trial reads, new in this launch against the sweep's stored spec (`based_on`
    for an extend), refused before anything runs (`orchestrator.trials.unread_problems`)."""
    baseline = based_on
    if baseline is None and not missing_sqlite(tracking_uri):  # (no store: all is new)
        create_sqlite_store_once(tracking_uri)
        try:
            baseline = stored_spec(tracking_uri, spec.name)
        except Exception:  # noqa: BLE001 (no such sweep yet, or no readable spec: all is new)
            baseline = None
    if problems := unread_problems(spec, baseline):
        raise ConfigError(problems)


def _store_spec(tracking_uri: str, spec: SweepSpec, based_on: SweepSpec | None,
                trials: list[Trial] | None = None) -> None:
    """A launch with nothing to run stores its spec as one that runs does (`sweep status`
    and `extend` follow it): a relaunch of the plain spec after one with overrides once left
    the sweep on the overrides'. An extend whose stored spec changed since it read it stops,
    as in `run_sweep`. A stored spec with trials not done beyond this one's (`trials`; a
    searched one: more n_trials) is kept: `resume` finishes them."""
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        parent = parent_run(client, spec.name)
    except ConfigError:
        return  # no parent to store it with
    try:
        old = stored_spec(tracking_uri, spec.name)
    except Exception:  # noqa: BLE001 (none stored, or unreadable: this one replaces it)
        old = None
    stored = None if old is None else old.to_dict()
    mine = yaml.safe_load(redact(yaml.safe_dump(spec.to_dict(), sort_keys=False)))
    # (compared as stored: a password in search.optuna.storage is stored masked)
    if based_on is not None and stored not in (None, based_on.to_dict()):
        raise ConfigError(spec_changed_since_read(spec.name))
    if old is not None and stored != mine and _unfinished_beyond(old, spec, trials,
                                                                 tracking_uri):
        # (an extend interrupted, then the spec before it launched: the extension stays)
        print(f"note: sweep {spec.name}'s stored spec holds trials not done that this spec "
              f"does not: it is kept, and `sweep resume {spec.name}` finishes them",
              file=sys.stderr)
        return
    if stored != mine or (old is not None and old.anchored):  # (relative files: absolute)
        client.log_text(parent.info.run_id, redact(yaml.safe_dump(spec.to_dict(),
                                                                  sort_keys=False)),
                        SPEC_ARTIFACT)


def _unfinished_beyond(old: SweepSpec, spec: SweepSpec, trials: list[Trial] | None,
                       tracking_uri: str) -> bool:
    """Does the stored spec `old` hold trials not done that `spec` (its `trials`) does not?"""
    if old.optuna is not None or trials is None:
        if not (old.optuna is not None and spec.optuna is not None
                and old.optuna.n_trials > spec.optuna.n_trials):
            return False
        from orchestrator import search

        try:  # its studies short of the stored n_trials (every one at it: nothing beyond)
            old, plan, storage = search.prepare_search(old, tracking_uri, create=False)
            return search.has_work(plan, storage, tracking_uri)
        except ConfigError:
            return False  # (a stored spec that no longer composes holds nothing to resume)
        except Exception:  # noqa: BLE001 (its studies unreadable now: kept, as before)
            return True
    try:
        _, theirs = prepare(old)
    except ConfigError:
        return False  # (a stored spec that no longer composes holds nothing to resume)
    states, mine = recorded_trials(tracking_uri, spec.name), {t.trial_id for t in trials}
    return any(t.trial_id not in mine and states.get(t.trial_id, {}).get("status") not in DONE
               for t in theirs)


def _close_as_finished(tracking_uri: str, name: str) -> None:
    """A sweep whose every trial is done reads `finished`, though its last launch ended
    otherwise (interrupted after its last trial, failed trials another launch then did).
    One that runs is left to its driver (not one killed, or silent from another host)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        parent = parent_run(client, name)
    except ConfigError:
        return  # recorded trials but no parent: nothing to correct
    status, _ = live_status(parent)
    if status not in (RUNNING, FINISHED) or driver_silent_s(parent, status) is not None:
        client.set_tag(parent.info.run_id, SWEEP_STATUS_TAG, FINISHED)
        client.set_terminated(parent.info.run_id, status=run_status(FINISHED))


def _launch_search(spec: SweepSpec, *, tracking_uri: str, address: str | None,
                   progress: bool, based_on: SweepSpec | None = None,
                   notes: Sequence[str] = ()) -> SweepOutcome:
    """`launch` of a searched sweep (`orchestrator.search`): the same checks, then the
    studies run to their n_trials."""
    from orchestrator import search

    try:
        spec, plan, storage = search.prepare_search(spec, tracking_uri)
        storage_problem(spec.storage_root, create=True)
        search.check_studies_space(plan, storage)
        _check_hub_once(search.example_trials(plan))
    except ConfigError as err:
        named = address or os.environ.get("RAY_ADDRESS")
        cluster = (_cluster_problems(spec, address) if named
                   else resource_problems(spec, local_cluster()))
        raise ConfigError(list(err.problems) + cluster) from None
    say_notes(notes)
    create_sqlite_store_once(tracking_uri)
    lost: list[Trial] = []
    if not search.has_work(plan, storage, tracking_uri, lost):  # all told and recorded
        if lost:  # (the tracking store and run directories removed, the studies kept)
            print(f"note: sweep {spec.name}'s studies ({redact(storage)}) hold {len(lost)} "
                  "trials that are neither in the tracking store nor in their run "
                  "directories: their results are gone; to search again, give the spec "
                  "another name or remove the studies", file=sys.stderr)
        if based_on is not None and based_on.grid != spec.grid:
            print(f"note: every study of sweep {spec.name} has its n_trials already: a changed "
                  "range changes where the next trials are asked, and there are none; add "
                  f"some with `sweep extend {spec.name} search.optuna.n_trials="
                  f"{plan.search.n_trials * 2}`", file=sys.stderr)
        _store_spec(tracking_uri, spec, based_on)
        used = sum(row["used"] for row in search.search_status(plan, storage))
        return SweepOutcome(trials=used, already_done=used)
    marked = _start(spec, tracking_uri, address, based_on)
    if marked.cancelled:
        _store_spec(tracking_uri, spec, based_on)
        used = sum(row["used"] for row in search.search_status(plan, storage))
        return SweepOutcome(trials=used, already_done=used, interrupted=True)
    with marked.undone_on_error():
        return search.run_search(spec, plan, tracking_uri=tracking_uri, storage=storage,
                                 progress=progress, based_on=based_on)


@dataclasses.dataclass
class Marked:
    """A sweep this launch marked running before it started Ray (`mark_starting`)."""

    tracking_uri: str
    name: str
    before: dict | None
    """The parent run's id and its tags before the mark (None: no sweep by that name yet)."""
    cancelled: bool = False
    """A `sweep cancel` came while Ray started: the launch runs nothing."""

    def undo(self) -> None:
        unmark_starting(self.tracking_uri, self.name, self.before)

    @contextlib.contextmanager
    def undone_on_error(self):
        """The mark undone when what follows refuses to run (a stale extend's ConfigError,
        raised before its driver opened the sweep)."""
        try:
            yield
        except ConfigError:
            self.undo()
            raise


def _start(spec: SweepSpec, tracking_uri: str, address: str | None,
           based_on: SweepSpec | None = None) -> Marked:
    """Raise the cluster's problems (a fresh local one's before Ray starts), with the sweep
    marked running by this driver meanwhile: a `sweep cancel` typed while Ray starts (10-20 s)
    is then seen by this launch instead of answered `not running` and lost. When it was, the
    launch runs nothing and the sweep reads interrupted (a cancel later still is seen by the
    driver's loop, `Tracker.open_sweep` keeping it). A launch that stops on an error here
    leaves the sweep as it found it."""
    if _fresh_local_ray(address) and (problems := resource_problems(spec, local_cluster())):
        raise ConfigError(problems)
    if based_on is not None:  # (refused before the mark; the tracker checks again, later)
        _refuse_a_changed_spec(tracking_uri, spec.name, based_on)
    marked = Marked(tracking_uri, spec.name, mark_starting(tracking_uri, spec.name))
    try:
        problems = _cluster_problems(spec, address)
        if problems:
            raise ConfigError(problems)
    except BaseException:
        marked.undo()
        raise
    if marked.before is None:
        return marked
    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = marked.before["run_id"]
    if client.get_run(run_id).data.tags.get(SWEEP_CANCEL_TAG) == "requested":
        client.set_tag(run_id, SWEEP_STATUS_TAG, INTERRUPTED)
        client.set_terminated(run_id, status=run_status(INTERRUPTED))
        marked.cancelled = True
    return marked


def _fresh_local_ray(address: str | None) -> bool:
    """Would this launch start a Ray of its own on this machine (no address, none running in
    this process, no cluster `ray start` left here), whose resources are this machine's?"""
    if address or os.environ.get("RAY_ADDRESS"):
        return False
    import ray

    if ray.is_initialized():
        return False
    try:
        from ray._private.services import find_bootstrap_address
        return not find_bootstrap_address(None)
    except Exception:  # noqa: BLE001 (another Ray's internals: ask the cluster it starts)
        return False


def _refuse_a_changed_spec(tracking_uri: str, name: str, based_on: SweepSpec) -> None:
    """The ConfigError of an extend whose stored spec another extend or launch changed after
    this one read it (as `Tracker.open_sweep` finds it)."""
    try:
        stored = stored_spec(tracking_uri, name).to_dict()
    except ConfigError:
        return  # (none to compare with: the tracker decides)
    if stored != based_on.to_dict():
        raise ConfigError(spec_changed_since_read(name))


def _sweep_parent(client, name: str):
    """The sweep's parent run (the oldest, should a race have made two), or None."""
    exp = client.get_experiment_by_name(name)
    parents = sweep_runs(client, exp.experiment_id, KIND_SWEEP) if exp else []
    return min(parents, key=lambda run: (run.info.start_time, run.info.run_id), default=None)


def mark_starting(tracking_uri: str, name: str) -> dict | None:
    """Mark an existing sweep running under this process (`driver_label`), its cancel cleared
    and its heartbeat fresh; the parent's id and tags before (None: no sweep by that name)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = _sweep_parent(client, name)
    if parent is None:
        return None
    from mlflow.entities import RunTag

    marks = {SWEEP_STATUS_TAG: RUNNING, SWEEP_CANCEL_TAG: "no", SWEEP_DRIVER_TAG: driver_label(),
             SWEEP_HEARTBEAT_TAG: str(int(time.time()))}
    client.log_batch(parent.info.run_id, tags=[RunTag(k, v) for k, v in marks.items()])
    return {"run_id": parent.info.run_id, "marks": marks,
            "tags": {k: parent.data.tags.get(k) for k in marks}}


def close_left_running(tracking_uri: str, name: str) -> bool | None:
    """After a Ctrl-C that stopped this process before its driver could close the sweep
    (while Ray started, or while the end waited on the store): the sweep it left marked
    running under it, interrupted, as its driver's close would (unless another driver runs
    it). None when the store holds no such sweep (nothing of it was recorded); else whether
    it was closed here. `sweep status` read it "killed" before."""
    from mlflow.entities import RunTag

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = _sweep_parent(client, name)
    if parent is None:
        return None
    tags, me = parent.data.tags, driver_label()
    if tags.get(SWEEP_STATUS_TAG, RUNNING) != RUNNING or tags.get(SWEEP_DRIVER_TAG) != me:
        return False
    if SWEEP_DRIVERS_PREFIX + me in tags:
        client.delete_tag(parent.info.run_id, SWEEP_DRIVERS_PREFIX + me)
    from orchestrator.tracking import driver_alive

    if any(key.startswith(SWEEP_DRIVERS_PREFIX)
           and driver_alive(key[len(SWEEP_DRIVERS_PREFIX):], value)
           for key, value in tags.items() if key != SWEEP_DRIVERS_PREFIX + me):
        return False  # another driver runs it: its close ends the sweep
    client.log_batch(parent.info.run_id, tags=[RunTag(SWEEP_STATUS_TAG, INTERRUPTED)])
    client.set_terminated(parent.info.run_id, status=run_status(INTERRUPTED))
    return True


def unmark_starting(tracking_uri: str, name: str, before: dict | None) -> None:
    """Undo `mark_starting`: the launch stopped before its driver opened the sweep. A tag that
    changed since the mark (a cancel typed meanwhile, another driver's open) stays."""
    if before is None:
        return
    client = MlflowClient(tracking_uri=tracking_uri)
    with contextlib.suppress(Exception):  # (the error that stopped the launch matters more)
        now = client.get_run(before["run_id"]).data.tags
        for key, value in before["tags"].items():
            if now.get(key) != before["marks"][key]:
                continue
            if value is None:
                client.delete_tag(before["run_id"], key)
            else:
                client.set_tag(before["run_id"], key, value)


def _cluster_problems(spec: SweepSpec, address: str | None) -> list[str]:
    """The problems of the cluster at `address` (or a local one, started) with the spec."""
    try:
        init_ray(address)
    except ConfigError as err:
        return list(err.problems)
    return resource_problems(spec)


def _check_hub_once(trials: list[Trial]) -> None:
    from trainer.validation import check

    hub = next((t for t in trials if t.cfg.data.source.value == "hf"), None)
    if hub is not None:
        check(hub.cfg, network=True)


def say_notes(notes: Sequence[str]) -> None:
    """Notes on a launch (see `cli._another_base`), on stderr."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def other_data(name: str, trials: list[Trial], states: dict) -> list[str]:
    """Notes when the sweep's recorded trials read other data than its trials would now: the
    data's fingerprint is part of a trial id (`trainer.fingerprint`), so files changed under
    `data.paths` (or `data.tokenizer`), or another Python's standard library for
    `data=pystdlib`, make every trial a new one, trained from the start beside the old ones,
    and without a word that was a mystery. Trials not ended (interrupted, failed) are said
    apart: their checkpoints are for the old data, and a resume leaves them where they are."""
    ids = {t.trial_id for t in trials}
    now = {t.cfg.data.fingerprint for t in trials} - {None}
    if not now:
        return []
    what = ("the files under data.paths or data.tokenizer (for data=pystdlib, this Python's "
            "standard library) differ from theirs")
    notes = []
    for ended, whose in ((True, "ended trials"), (False, "trials not ended (interrupted or "
                                                          "failed)")):
        before = [state["run"].data.params.get("data.fingerprint")
                  for trial_id, state in states.items()
                  if trial_id not in ids and (state["status"] in DONE) == ended]
        others = sorted({f for f in before if f not in (None, "None") and f not in now})
        if not others:
            continue
        count = sum(f in others for f in before)
        then = (f"data.fingerprint {', '.join(f[:12] for f in others)}; now "
                f"{', '.join(f[:12] for f in sorted(now))}")
        notes.append(
            f"{count} of sweep {name}'s {whose} read other data ({then}): {what}, so these "
            "trials are new ones and train from the start; `sweep fit` reads both" if ended
            else f"{count} of sweep {name}'s {whose} read other data ({then}): {what}, so "
            "their checkpoints are not resumed and their trials train again from the start "
            "under new ids; put the old data back to resume them instead")
    return notes


def dry_run(spec: SweepSpec, *, tracking_uri: str,
            notes: Sequence[str] = ()) -> list[tuple[Trial, str]]:
    """Every trial with what a launch would do to it: `done (status)`, `run`, or `wait` for
    the other driver that trains it now. A trial this sweep has not recorded as done but whose
    run directory holds its end (trained by another sweep over the same `storage_root`, or a
    record the store lost) is `done (status, on disk)`: a launch records it from its files
    and trains nothing. (A searched sweep has no trials before it runs: see
    `search_dry_run`.)"""
    from trainer.lease import current_holder
    from trainer.paths import RunPaths

    spec, trials = prepare(spec)
    storage_problem(spec.storage_root, create=False, probe=True)  # what the launch refuses
    _refuse_unread(spec, tracking_uri, None)
    say_notes(notes)
    print_notes(trials)
    if missing_sqlite(tracking_uri):  # nothing recorded; a dry run creates no store
        states = {}
    else:
        create_sqlite_store_once(tracking_uri)
        states = recorded_trials(tracking_uri, spec.name)
        say_notes(other_data(spec.name, trials, states))
    old = legacy.legacy_records(trials, states)  # a launch would migrate these first
    plan = []
    for trial in sorted(trials, key=lambda t: t.flops, reverse=True):
        status = (states.get(trial.trial_id) or old.get(trial.trial_id) or {}).get("status")
        note = ", old id" if trial.trial_id in old else ""
        if status in DONE:
            plan.append((trial, f"done ({status}{note})"))
        elif holder := current_holder(RunPaths.for_config(trial.cfg, trial.trial_id).run_dir):
            plan.append((trial, f"wait ({holder.host} pid {holder.driver_pid})"))
        elif stored := ended_on_disk(trial):
            plan.append((trial, f"done ({stored}, on disk)"))
        else:
            # (recorded running, and no worker holds it: its driver was killed, as `status`
            # says; "run (running)" read as if something trained it)
            said = INTERRUPTED if status == RUNNING else status
            plan.append((trial, "run" if status is None else f"run ({said}{note})"))
    return plan


def search_dry_run(spec: SweepSpec, *, tracking_uri: str,
                   notes: Sequence[str] = ()) -> list[tuple[str, int, int, int]]:
    """A searched sweep's studies: (slice, trials used, trials it may still ask, trials it
    asked and was never told, which a launch runs again from their checkpoints or tells from
    their record: the dry run said nothing of them, and the launch then ran one)."""
    from orchestrator import search

    spec, plan, storage = search.prepare_search(spec, tracking_uri, create=False)
    search.check_studies_space(plan, storage)
    say_notes(notes)
    return [(row["slice"], row["used"], max(row["n_trials"] - row["used"], 0),
             row["states"].get("running", 0)) for row in search.search_status(plan, storage)]


SPEC_STORED_WITHIN_S = 120.0
"""A new sweep's parent run without its spec for longer than this has lost it (a driver stores
it a moment after creating the run, Ray's start-up aside)."""


def stored_spec(tracking_uri: str, name: str) -> SweepSpec:
    """The spec saved with the sweep's parent run."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = parent_run(client, name)
    try:
        path = client.download_artifacts(parent.info.run_id, SPEC_ARTIFACT)
    except (MlflowException, OSError):
        if client.list_artifacts(parent.info.run_id):  # (its error, if any, is the reason)
            raise
        age_s = time.time() - parent.info.start_time / 1000
        if parent.info.status == "RUNNING" and age_s < SPEC_STORED_WITHIN_S:
            raise ConfigError(f"sweep {name!r} is starting: its spec is stored a moment after "
                              "its record; ask again in a few seconds") from None
        raise ConfigError(
            f"sweep {name!r} has lost its stored spec ({SPEC_ARTIFACT} is not in "
            f"{parent.info.artifact_uri}: that folder was moved or deleted); launch its spec "
            "file again (`sweep launch SPEC`: it trains only what is not done) to store it "
            "anew") from None
    with open(path) as f:
        return spec_from_dict(yaml.safe_load(f), source=f"stored spec of sweep {name!r}",
                              stored=True)


def parent_run(client: MlflowClient, name: str):
    parent = _sweep_parent(client, name)
    if parent is None:
        known = sorted(e.name for e in client.search_experiments()
                       if sweep_runs(client, e.experiment_id, KIND_SWEEP))
        hint = f"known sweeps: {', '.join(known)}" if known else "no sweep is recorded there"
        if name.endswith((".yaml", ".yml")) or "/" in name:  # a spec file given for a name
            try:
                named = f" (its name: is {load_spec(name).name})" if Path(name).is_file() else ""
            except ConfigError:
                named = ""
            raise ConfigError(f"no sweep named {name!r} ({hint}): give the sweep's name, not "
                              f"its spec file{named}")
        raise ConfigError(f"no sweep named {name!r} in the tracking store ({hint}): check the "
                          "name or --tracking-uri (a sweep just launched is recorded once its "
                          "driver has started)")
    return parent


def live_status(parent) -> tuple[str, int | None]:
    """A sweep's status from its parent run, and the pid of its driver when that was killed:
    a driver killed (SIGKILL, a lost node) could not close its sweep, which then reads
    `interrupted` here (on the driver's host; elsewhere as recorded, see `driver_silent_s`)."""
    status = parent.data.tags.get(SWEEP_STATUS_TAG, RUNNING)
    gone = gone_driver(parent.data.tags.get(SWEEP_DRIVER_TAG)) if status == RUNNING else None
    return (INTERRUPTED, gone) if gone is not None else (status, None)


def driver_silent_s(parent, status: str) -> float | None:
    """Seconds since a running sweep's last heartbeat when that is more than
    `DRIVER_SILENT_S` ago, else None: its driver was killed, lost its node or is cut off from
    the store, which a driver on another host can tell no other way. Not a status: the
    driver may only be cut off, and goes on when the store is back."""
    beat = parent.data.tags.get(SWEEP_HEARTBEAT_TAG, "")
    if status != RUNNING or not beat.isdigit():
        return None  # ended, or launched by a version that beat no heart
    silent = time.time() - int(beat)
    return silent if silent > DRIVER_SILENT_S else None


def trial_counts(tracking_uri: str, spec: SweepSpec, states: dict, gone: int | None
                 ) -> tuple[dict[str, int], list[dict] | None, dict[str, float | None]]:
    """The sweep's trials per status, `pending` those not begun (a grid's trials not in the
    store; a searched sweep's trials its studies have still to ask), as `status` and `list`
    count them; a searched sweep's studies (`search.search_status`), else None; and the ids
    of the sweep's trials, each with its training FLOPs (None in a searched sweep). Trials
    recorded under an old id (`orchestrator.legacy`) move to theirs in `states`."""
    counts: dict[str, int] = {}
    slices = None
    ids: dict[str, float | None]
    if spec.optuna is None:
        _, trials = prepare(spec)
        ids = {trial.trial_id: trial.flops for trial in trials}
        # (recorded under an id an earlier version gave them, until a launch migrates them:
        # theirs, as the dry run says; added to `states`, which the caller reads on)
        for new_id, state in legacy.legacy_records(trials, states).items():
            states[new_id] = states.pop(state["run"].data.tags[TRIAL_ID_TAG])
    else:  # a searched sweep's trials are those its studies asked for, and those to ask
        from orchestrator import search
        _, plan, storage = search.prepare_search(spec, tracking_uri, create=False)
        slices = search.search_status(plan, storage)
        ids = dict.fromkeys(states)
        # Pending: the points the studies have still to ask, and those asked but not begun
        # (not in the store). A point asked twice is one trial: counting n_trials against
        # the trials in the store left a finished study with "2 pending".
        pending = sum(max(s["n_trials"] - s["used"], 0) for s in slices) + max(
            search.asked_points(plan, storage) - len(ids), 0)
        counts.update({"pending": pending} if pending > 0 else {})
    for trial_id in ids:
        s = states.get(trial_id, {}).get("status", "pending")
        s = INTERRUPTED if s == RUNNING and gone is not None else s
        counts[s] = counts.get(s, 0) + 1
    return counts, slices, ids


def sweeps(tracking_uri: str) -> list[dict]:
    """Every sweep in the store, oldest first: name, status (as `status` tells it, a killed
    driver included), trials per status as `status` counts them (pending included), and when
    it started (epoch ms)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    out = []
    for exp in client.search_experiments():
        parents = sweep_runs(client, exp.experiment_id, KIND_SWEEP)
        if not parents:
            continue  # not a sweep (MLflow's Default, a user's own experiment)
        parent = min(parents, key=lambda run: (run.info.start_time, run.info.run_id))
        status, gone = live_status(parent)
        silent = driver_silent_s(parent, status)
        try:
            counts, _, _ = trial_counts(tracking_uri, stored_spec(tracking_uri, exp.name),
                                        recorded_trials(tracking_uri, exp.name), gone)
        except Exception:  # a spec that no longer composes (a config key since removed), or
            # one not stored yet (its launch is starting): the trials recorded, as recorded
            counts = {}
            for run in sweep_runs(client, exp.experiment_id, KIND_TRIAL):
                s = run.data.tags.get(TRIAL_STATUS_TAG, RUNNING)
                s = INTERRUPTED if s == RUNNING and gone is not None else s
                counts[s] = counts.get(s, 0) + 1
        out.append({"sweep": exp.name, "status": status, "counts": counts,
                    "started_ms": parent.info.start_time, "driver_silent_s": silent})
    return sorted(out, key=lambda row: row["started_ms"] or 0)


def format_sweeps(rows: list[dict]) -> str:
    """The human-readable `sweep list`."""
    if not rows:
        return "no sweep is recorded in this store (sweep launch SPEC starts one)"
    width = max(len(row["sweep"]) for row in rows)
    lines = []
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime((row["started_ms"] or 0) / 1000))
        total = sum(row["counts"].values())
        counts = ", ".join(f"{n} {s}" for s, n in sorted(row["counts"].items()))
        silent = (f"; driver silent for {row['driver_silent_s'] / 60:.0f} min"
                  if row.get("driver_silent_s") else "")
        lines.append(f"{row['sweep']:<{width}}  {row['status']:<11}  started {when}  "
                     f"{total} trial{'s' * (total != 1)}" + (f" ({counts})" if counts else "")
                     + silent)
    return "\n".join(lines)


def extended(spec: SweepSpec, args: list[str]) -> SweepSpec:
    """The spec with new grid values: a sweep expression on an existing axis adds its values
    to that axis (old trials stay in the sweep); a new axis or a plain value applies as in
    `launch`."""
    if not args:
        raise ConfigError("sweep extend needs overrides, e.g. 'optim.lr=choice(3e-2)'")
    _refuse_replacing_an_axis(spec, args)
    _refuse_changing_the_base(spec, args)
    updated = spec.with_overrides(args)
    updated = dataclasses.replace(updated, seeds=tuple(dict.fromkeys(
        spec.seeds + updated.seeds)))  # seeds=[...] adds seeds
    grid = dict(updated.grid)
    searched = () if spec.optuna is None else [
        k for k in spec.grid if k not in spec.optuna.per_slice
        and not (k == "train.tokens" and spec.optuna.pruner == "halving")]  # budgets: rungs
    for key, old_expr in spec.grid.items():
        if key in searched:  # a searched range is replaced, not merged
            continue
        if key in grid and grid[key] != old_expr:
            old, _ = grid_axes(dataclasses.replace(spec, grid={key: old_expr}))
            new, problems = grid_axes(dataclasses.replace(spec, grid={key: grid[key]}))
            if problems:
                raise ConfigError(problems)
            values = old[key] + [v for v in new[key] if v not in old[key]]
            grid[key] = _tagged(old_expr, "choice(" + ", ".join(values) + ")")
    updated = _keep_current_values(spec, dataclasses.replace(updated, grid=grid))
    if spec.optuna is not None:
        from orchestrator.search import check_extension
        check_extension(spec, updated, args)
    return updated


def _tagged(expr: str, choice: str) -> str:
    """`choice` with the tags of the axis it extends (tag(log, ...) stays)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_overrides([f"k={expr}"])[0].value()
    tags = sorted(getattr(value, "tags", None) or ())
    return f"tag({', '.join(tags)}, {choice})" if tags else choice


def _refuse_replacing_an_axis(spec: SweepSpec, args: list[str]) -> None:
    """A plain value for a grid axis would make it a base value: the axis and every trial
    at its other values would leave the sweep. `extend` adds; say how."""
    from orchestrator.spec import _is_sweep

    optuna = spec.optuna
    searched = set() if optuna is None else {
        k for k in spec.grid if k not in optuna.per_slice
        and not (k == "train.tokens" and optuna.pruner == "halving")}
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    problems = []
    for arg in args:
        key, _, value = arg.partition("=")
        try:
            if key not in ("storage_root", "seeds"):  # (a path, a list: read as they are)
                OverridesParser.create().parse_overrides([arg])
        except OverrideParseException as err:  # (not a plain value: said as it is)
            problems.append(f"{arg}: cannot parse it ({parse_reason(err)}); use Hydra's "
                            f"sweep grammar, e.g. '{key}=choice(1e-3, 3e-3)'")
            continue
        if key in searched and not _is_sweep(arg):
            problems.append(f"{arg}: sweep {spec.name} searches {key} over {spec.grid[key]}; "
                            "extend may move or widen that range, in the same form")
        elif key in spec.grid and not _is_sweep(arg):
            problems.append(f"{arg}: {key} is an axis of sweep {spec.name} and extend adds "
                            f"values to it: give '{key}=choice({value})'")
        elif optuna is not None and key not in spec.grid and _is_sweep(arg) and \
                key not in optuna.per_slice:
            problems.append(f"{arg}: a new searched axis would change what the studies of "
                            f"sweep {spec.name} search, with their trials done without it; "
                            "search it in a new sweep (another name)")
    if problems:
        raise ConfigError(problems)


def _refuse_changing_the_base(spec: SweepSpec, args: list[str]) -> None:
    """A plain value for a key that is no axis (`schedule=cosine`, `optim.weight_decay=0.1`)
    would change every trial of the sweep, which would leave it to be trained again: `extend`
    adds trials. A value the trials already have is no change and passes; so does
    `storage_root=` where the sweep's runs are."""
    from orchestrator.spec import _is_sweep
    from trainer.compose import Composer
    from trainer.identity import canonical_json, flatten

    problems, base = [], None
    for arg in args:
        key, _, value = arg.partition("=")
        bare = key.lstrip("+~")
        if bare == "storage_root":
            if spec.storage_root is not None and \
                    root_path(value) != root_path(spec.storage_root):
                problems.append(f"{arg}: sweep {spec.name} keeps its runs under "
                                f"{spec.storage_root}, and extend adds to them there; launch a "
                                "new sweep (another name) for another storage_root")
            continue
        if bare in ("seeds", "seed", "train.world_size") or bare.startswith("search.") \
                or bare in spec.grid or _is_sweep(arg):
            continue  # (with_overrides says what is wrong with world_size and seed)
        try:
            if base is None:
                composed = Composer()(list(spec.overrides))
                base, base_id = flatten(composed), canonical_json(composed)
            # What a trial's id reads: a logging cadence or a cache folder changes no trial.
            changed = canonical_json(Composer()([*spec.overrides, arg])) != base_id
        except ConfigError:
            continue  # with_overrides and validation name what is wrong with it
        if changed:
            current = next((o.partition("=")[2] for o in spec.overrides
                            if o.lstrip("+").partition("=")[0] == bare), None)
            if current is None:  # a leaf's value, or the name of a group's chosen config
                found = base[bare] if bare in base else base.get(f"{bare}.name", "CURRENT")
                found = getattr(found, "value", found)
                current = "null" if found is None else str(found)
            problems.append(f"{arg}: every trial of sweep {spec.name} has {bare}={current}, "
                            "and extend only adds trials (this would replace them all): give "
                            f"'{bare}=choice({current}, {value})' to add it as an axis, or "
                            "launch a new sweep (another name)")
    if problems:
        raise ConfigError(problems)


def _keep_current_values(old: SweepSpec, new: SweepSpec) -> SweepSpec:
    """A new axis holds the value the sweep's trials had for its key, so that they stay in the
    sweep (extend adds): `optim.weight_decay=choice(0.1)` on trials at 0.0 is choice(0.0, 0.1)."""
    added = [k for k in new.grid if k not in old.grid and not (
        new.optuna is not None and k not in new.optuna.per_slice)]
    if not added:
        return new
    from orchestrator.trials import grid_axes
    from trainer.compose import Composer
    from trainer.identity import flatten

    try:  # the base, without the grid: the new key is none of its axes
        current = flatten(Composer()(list(old.overrides)))
    except ConfigError:
        current = {}
    grid, problems = dict(new.grid), []
    for key in added:
        base = next((o.partition("=")[2] for o in old.overrides
                     if o.lstrip("+").partition("=")[0] == key), None)
        if any(key.startswith(g + ".") for g in old.grid if "." not in g):
            base = None  # under a config group the grid varies: its value may too
        elif base is None and key in current:
            value = current[key]
            base = getattr(value, "value", value)
            base = "null" if base is None else str(base)
        axes, _ = grid_axes(dataclasses.replace(new, grid={key: grid[key]}))
        values = axes.get(key, [])
        under_group = any(key.startswith(g + ".") for g in old.grid if "." not in g)
        bare = key.lstrip("+~")
        known = bare in current or any(k.startswith(bare + ".") for k in current)  # (a group)
        if base is None and current and not known and not under_group:
            from trainer.compose import did_you_mean

            problems.append(f"{key}={grid[key]}: unknown config key '{key}': "
                            f"{did_you_mean(key)}check its spelling against conf/ (python -m "
                            "trainer --cfg prints every key)")
        elif base is None:
            problems.append(f"{key}={grid[key]}: a new axis of sweep {old.name}; give its "
                            "current value too, so that the sweep's trials stay in it, e.g. "
                            f"'{key}=choice(CURRENT, ...)'")
        elif not any(_same_value(base, v) for v in values):
            grid[key] = _tagged(grid[key], "choice(" + ", ".join([base, *values]) + ")")
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(new, grid=grid)


def _same_value(a: str, b: str) -> bool:
    """Equal as the config reads them: 0.1 and 1e-1, 0 and 0.0."""
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def _short_label(label: str) -> str:
    """A trial's label with its searched values to 4 significant digits, as the slice lines
    print them (optim.lr=0.0043066092130092095 reads optim.lr=0.004307)."""
    def short(item: str) -> str:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            return item
        return f"{key}={number:.4g}" if sep and len(value) > 8 and "." in value else item
    return " ".join(short(item) for item in label.split(" "))


def _trunk_tokens(run, storage_root: str) -> int | None:
    """The tokens a training trunk has reached: its folder's metrics.jsonl (on this machine),
    else what the store holds, else None."""
    from trainer.branching import trunk_dir

    trunk_id = run.data.tags.get(TRUNK_ID_TAG, "")
    row = _last_metrics(trunk_dir(root_path(storage_root), trunk_id) / "metrics.jsonl") \
        if trunk_id else None
    tokens = (row or {}).get("train/tokens", run.data.metrics.get("train/tokens"))
    return None if tokens is None else int(tokens)


def _stopped_trunks(runs: list, storage_root: str) -> list[dict]:
    """The trunks of a stopped sweep that did not end (a driver killed or stopped while they
    trained), with the tokens their folder holds (a killed driver wrote none to MLflow)."""
    from trainer.branching import read_index, trunk_dir

    out = []
    for run in runs:
        if run.data.tags.get(TRUNK_STATUS_TAG) not in (RUNNING, INTERRUPTED, FAILED):
            continue
        trunk_id = run.data.tags.get(TRUNK_ID_TAG, "")
        index = read_index(trunk_dir(root_path(storage_root), trunk_id)) if trunk_id else {}
        tokens = index.get("tokens") or run.data.metrics.get("final/tokens") or 0
        out.append({"trunk": run.info.run_name, "tokens": int(tokens)})
    return out


def status(tracking_uri: str, name: str) -> dict:
    """Counts per status, running trials with progress, best trial so far, ETA, and the
    tokens trained against the tokens the done trials would have trained alone."""
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = parent_run(client, name)
    spec = stored_spec(tracking_uri, name)
    states = recorded_trials(tracking_uri, name)
    # (a killed driver's trials left `running` are counted as what they are, interrupted)
    status, gone = live_status(parent)
    counts, slices, ids = trial_counts(tracking_uri, spec, states, gone)
    running = [_progress(state["run"], spec.storage_root) for state in states.values()
               if state["status"] == RUNNING and gone is None]
    trunk_runs = sweep_runs(client, parent.info.experiment_id, KIND_TRUNK)
    training = [] if status != RUNNING else [
        run for run in trunk_runs if run.data.tags.get(TRUNK_STATUS_TAG) == RUNNING]
    trunks = [run.info.run_name for run in training]
    stopped = [] if status == RUNNING else _stopped_trunks(trunk_runs, spec.storage_root)
    failed = [{"trial": state["run"].info.run_name,
               "error": state["run"].data.tags.get(TRIAL_ERROR_TAG)}
              for state in states.values() if state["status"] == FAILED]
    # (the trials of the spec as launched last: a name reused for another spec keeps the
    # other's runs in its experiment, which are not this sweep's best)
    mine = set(ids)
    finished = [state["run"] for trial_id, state in states.items()
                if state["status"] == FINISHED and trial_id in mine]
    best = min(finished, key=lambda r: r.data.metrics.get(FINAL_EVAL_LOSS, math.inf),
               default=None)
    return {
        "sweep": name, "status": status, "driver_gone": gone,
        "driver": parent.data.tags.get(SWEEP_DRIVER_TAG),
        "driver_silent_s": driver_silent_s(parent, status),
        "trials": sum(counts.values()), "counts": counts, "running": running,
        "trunks_running": trunks, "trunks_stopped": stopped,
        "trunk_tokens": [_trunk_tokens(run, spec.storage_root) for run in training],
        "failed": failed,
        "best": None if best is None else {
            "trial": best.info.run_name, TRIAL_ID_TAG: best.data.tags[TRIAL_ID_TAG],
            FINAL_EVAL_LOSS: best.data.metrics.get(FINAL_EVAL_LOSS)},
        "eta_s": _eta(finished, counts, running, ids, states) if status == RUNNING else None,
        **_tokens(token_totals(client, parent.info.experiment_id),
                  ended=not any(counts.get(s) for s in ("pending", RUNNING, INTERRUPTED))),
        **({} if slices is None else {"slices": slices}),
        "ended_unrecorded": _ended_unrecorded(spec, states, status, counts),
        # (a launch of a narrower spec re-points the sweep: what the wider one recorded stays)
        "outside_spec": sum(1 for trial_id in states if trial_id not in mine),
    }


def _ended_unrecorded(spec: SweepSpec, states: dict, status: str, counts: dict) -> int:
    """Trials of a stopped grid sweep that the store holds unfinished (interrupted, running
    under a driver that is gone, failed) but whose folder says they ended: their driver lost
    the store before it could record them (`sweep resume` records them, training nothing).
    `status` counted them interrupted, which read as work lost."""
    if status == RUNNING or spec.optuna is not None or not any(
            counts.get(s) for s in (INTERRUPTED, RUNNING, FAILED)):
        return 0
    from orchestrator.driver import ended_on_disk

    return sum(1 for trial in prepare(spec)[1]
               if states.get(trial.trial_id, {}).get("status") in (INTERRUPTED, RUNNING, FAILED)
               and ended_on_disk(trial))


def _tokens(totals: dict[str, float], *, ended: bool) -> dict:
    """The token totals; their ratio only once every trial has ended: before, the trunks'
    tokens count trunks trained for branches not done, against the done trials alone."""
    return {"tokens_trained": int(totals[TOKENS_TRAINED]),
            "tokens_if_independent": int(totals[TOKENS_IF_INDEPENDENT]),
            "tokens_ratio": totals[TOKENS_RATIO]
            if ended and totals[TOKENS_IF_INDEPENDENT] else None}


def _progress(run, storage_root: str) -> dict:
    """A running trial's share of its budget and last loss: as recorded, else (its metrics
    not written to the store yet: the tracker writes them every few seconds) from its
    `metrics.jsonl`, where the folder is on this machine."""
    budget = float(run.data.params.get(PARAM_TOKENS, "nan"))
    metrics = run.data.metrics
    if "train/tokens" not in metrics:  # (nor its params: they go with its first metrics)
        folder = root_path(storage_root) / run.data.tags[TRIAL_ID_TAG]
        metrics = _last_metrics(folder / "metrics.jsonl") or metrics
        if not budget > 0:
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                budget = float(json.loads((folder / "config.json").read_text())[PARAM_TOKENS])
    seen = metrics.get("train/tokens", 0.0)
    return {"trial": run.info.run_name, TRIAL_ID_TAG: run.data.tags[TRIAL_ID_TAG],
            "progress": seen / budget if budget > 0 else None,
            "train/loss": metrics.get("train/loss")}


def _last_metrics(path: Path) -> dict | None:
    """The last whole row with `train/tokens` of a metrics.jsonl (its tail only), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 8192, 0))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            row = json.loads(line)
        except ValueError:  # (the first line cut by the seek, or one being written)
            continue
        if isinstance(row, dict) and "train/tokens" in row:
            return row
    return None


def _eta(finished: list, counts: dict[str, int], running: list[dict],
         flops: dict[str, float | None], states: dict) -> float | None:
    """Seconds until the trials not done have run, at the pace of those finished and as
    many at once as run now. A grid's trials are weighed by their FLOPs (an extend to a
    wider model takes as much longer as its trials cost more: a mean over trials read ~2 min
    for ~10); a searched sweep's, whose trials to come are not known yet, by their mean."""
    done = [r for r in finished if FINAL_WALL_S in r.data.metrics]
    left = sum(n for s, n in counts.items() if s not in DONE)
    if not done or not left:
        return 0.0 if not left else None
    wall = sum(r.data.metrics[FINAL_WALL_S] for r in done)
    at_once = max(len(running), 1)
    cost = [flops.get(r.data.tags[TRIAL_ID_TAG]) for r in done]
    if any(c is None or c <= 0 for c in cost):
        return wall / len(done) * left / at_once
    progress = {p[TRIAL_ID_TAG]: p["progress"] or 0.0 for p in running}
    to_run = sum(f * (1.0 - min(progress.get(trial_id, 0.0), 1.0))
                 for trial_id, f in flops.items()
                 if states.get(trial_id, {}).get("status") not in DONE)
    return wall / sum(cost) * to_run / at_once


class NotRunning(Exception):
    """`cancel` of a sweep that has ended: nothing to stop, and its status stays."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def cancel(tracking_uri: str, name: str, *, wait_s: float = 10.0) -> int | None:
    """Ask the running driver to stop; trials left `running` with no driver become
    `interrupted`. Returns how many trials were marked, or None when a live driver is still
    stopping them after `wait_s` (it records them itself: marking them here could overwrite
    an end it is writing).

    Raises:
        NotRunning: the sweep has ended (finished, failed, interrupted) already.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = parent_run(client, name)
    ended = parent.data.tags.get(SWEEP_STATUS_TAG, RUNNING)
    if ended != RUNNING:
        raise NotRunning(ended)
    client.set_tag(parent.info.run_id, SWEEP_CANCEL_TAG, "requested")
    alive = (gone_driver(parent.data.tags.get(SWEEP_DRIVER_TAG)) is None
             and driver_silent_s(parent, RUNNING) is None)
    if not alive:
        wait_s = 0.0  # no driver to see the request
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if client.get_run(parent.info.run_id).info.status != "RUNNING":
            return 0
        time.sleep(0.5)
    if alive:
        return None
    marked = 0
    for state in recorded_trials(tracking_uri, name).values():
        if state["status"] == RUNNING:
            client.set_tag(state["run"].info.run_id, TRIAL_STATUS_TAG, INTERRUPTED)
            client.set_terminated(state["run"].info.run_id, status=run_status(INTERRUPTED))
            marked += 1
    client.set_tag(parent.info.run_id, SWEEP_STATUS_TAG, INTERRUPTED)
    client.set_terminated(parent.info.run_id, status=run_status(INTERRUPTED))
    return marked


def format_status(report: dict) -> str:
    """The human-readable `sweep status`."""
    gone = report.get("driver_gone")
    lines = [f"sweep {report['sweep']}: {report['status']}"
             + (f" (its driver, pid {gone}, was killed before it could close the sweep: "
                f"`sweep resume {report['sweep']}` goes on)" if gone else "")
             + f", {report['trials']} trial{'s' * (report['trials'] != 1)}"]
    if silent := report.get("driver_silent_s"):
        lines.append(f"  its driver ({report.get('driver') or 'unknown'}) has not been heard "
                     f"from for {silent / 60:.0f} min: killed, lost or cut off from the store? "
                     f"If it is gone, `sweep resume {report['sweep']}` goes on")
    # (a running sweep's interrupted trials are queued to go on: as "interrupted" alone, a
    # resume read as if it had stopped them)
    again = " (to go on)" if report["status"] == RUNNING else ""
    lines.append("  " + ", ".join(f"{n} {s}{again if s == INTERRUPTED else ''}"
                                  for s, n in sorted(report["counts"].items())))
    if n := report.get("ended_unrecorded"):
        lines.append(f"  {n} of them ended in their folders (the store lost their end): "
                     f"`sweep resume {report['sweep']}` records {'it' if n == 1 else 'them'}, "
                     "training nothing")
    for r in report["running"]:
        if r["progress"] is None and r["train/loss"] is None:
            # (a running trial's metrics reach the store every 10 s or so, a short one's at
            # its end)
            lines.append(f"  running {_short_label(r['trial'])}: no metrics written yet")
            continue
        pct = f"{r['progress']:.0%}" if r["progress"] is not None else "?"
        loss = f"{r['train/loss']:.3f}" if r["train/loss"] is not None else "n/a"
        lines.append(f"  running {_short_label(r['trial'])}: {pct}, loss {loss}")
    if trunks := report.get("trunks_running"):
        at = [t for t in report.get("trunk_tokens", []) if t is not None]
        lines.append(f"  {len(trunks)} trunk{'s' * (len(trunks) != 1)} training (the shared "
                     "start of token budgets, which follow as their trunk passes them)"
                     + (f": at {', '.join(f'{t:,}' for t in at[:5])}"
                        f"{', ...' if len(at) > 5 else ''} tokens" if at else ""))
    if stopped := report.get("trunks_stopped"):
        one = len(stopped) == 1
        tokens = ", ".join(f"{t['tokens']:,}" for t in stopped[:5]) + (
            ", ..." if len(stopped) > 5 else "")
        lines.append(f"  {len(stopped)} trunk{'' if one else 's'} (the shared start of token "
                     f"budgets) stopped partway, at {tokens} tokens: "
                     f"`sweep resume {report['sweep']}` goes on from {'its' if one else 'their'} "
                     "checkpoints")
    failed = report.get("failed", [])
    for r in failed[:5]:
        lines.append(f"  failed {r['trial']}: {r['error'] or 'no error recorded'}")
    if len(failed) > 5:
        lines.append(f"  ... {len(failed) - 5} more failed (sweep status NAME --json lists all)")
    if report["best"]:
        lines.append(f"  best: {_short_label(report['best']['trial'])} (eval loss "
                     f"{report['best']['final/eval_loss']:.4f})")
    for s in report.get("slices", ()):
        searched = s.get("searched") or []
        axis = next((k for k in searched if k.endswith(".lr")), None) or next(iter(searched),
                                                                               "its range")
        best = (f"none: every trial diverged (move {axis} lower with sweep extend)"
                if s.get("all_diverged") else "none yet") if s["best"] is None else (
            f"{s['best']:.4f} at " + " ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                              else f"{k}={v}"
                                              for k, v in s["best_params"].items()))
        edge = "".join(f"; at the {end} end of {key}'s range: widen it"
                       for key, end in s.get("edge", {}).items())
        lines.append(f"  slice {s['slice']}: {s['used']}/{s['n_trials']} trials, best {best}"
                     + edge)
    if outside := report.get("outside_spec"):
        one = outside == 1
        lines.append(f"  {outside} more trial{'' if one else 's'} of earlier specs of this sweep "
                     f"{'is' if one else 'are'} recorded but not in its spec now (a launch of "
                     "another spec re-pointed it): the token totals count them and `sweep fit` "
                     "reads them; launch the wider spec again (or `sweep extend`) to take "
                     f"{'it' if one else 'them'} back in")
    if report["eta_s"]:
        lines.append(f"  ETA: {report['eta_s'] / 60:.1f} min")
    if report.get("tokens_if_independent") and report.get("tokens_ratio") is not None:
        lines.append(f"  tokens: {report['tokens_trained']:,} trained, "
                     f"{report['tokens_if_independent']:,} if independent "
                     f"(ratio {report['tokens_ratio']:.2f})")
    elif report.get("tokens_trained"):
        lines.append(f"  tokens: {report['tokens_trained']:,} trained by the trials and "
                     "trunks that have ended (the running ones count at their end, and the "
                     "ratio to training each trial alone shows once every trial has ended)")
    return "\n".join(lines)


def as_json(report: dict) -> str:
    return json.dumps(report, indent=1, default=str)
