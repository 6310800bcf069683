"""`sweep launch`, `resume` and `extend`: what they do apart from argument parsing, and their
dry runs.

The three are one operation: work out the sweep's trials, skip those MLflow records as done,
run the rest. `resume` and `extend` read the spec stored with the sweep's parent run
(`orchestrator.sweep_record`), so they need only the name; `extend` adds to that spec first
(`orchestrator.extend`). `sweep status`, `list` and `cancel` are `orchestrator.status` and
`orchestrator.cancel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence

import yaml
from mlflow import MlflowClient

from orchestrator import legacy
from orchestrator.driver import (
    SweepOutcome,
    cluster_address,
    ended_on_disk,
    init_ray,
    local_cluster,
    prepare,
    resource_problems,
    run_sweep,
    storage_problem,
)
from orchestrator.spec import SweepSpec
from orchestrator.store import (
    create_sqlite_store_once,
    existing_sqlite_ready,
    spec_changed_since_read,
)
from orchestrator.sweep_record import (
    driver_silent_s,
    live_status,
    mark_starting,
    parent_run,
    record_driver_error,
    stored_spec,
    unmark_starting,
)
from orchestrator.trials import Trial, print_notes, unread_problems
from trainer.errors import ConfigError
from trainer.reporting import redact
from trainer.schema import (
    DONE,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    SPEC_ARTIFACT,
    SWEEP_CANCEL_TAG,
    SWEEP_STATUS_TAG,
    recorded_trials,
    run_status,
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
        print_notes(trials, spec)
    except ConfigError as err:
        # Still ask the cluster, so that its problems are reported with these; with no cluster
        # named, measure this machine rather than start (and print) a Ray runtime to say so.
        named = cluster_address(address)
        cluster = (_cluster_problems(spec, address) if named
                   else resource_problems(spec, local_cluster()))
        raise ConfigError(list(err.problems) + cluster) from None
    say_notes([*notes, *_unshared_budgets(spec, trials)])
    create_sqlite_store_once(tracking_uri)
    states = recorded_trials(tracking_uri, spec.name)
    say_notes(other_data(spec, trials, states))
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
    # (those whose folders hold their end are recorded from them, not trained: the line said
    # "30 of its 30 trials to run" where the dry run had said all 30 done, on disk)
    todo = set(todo_ids)
    on_disk = sum(ended_on_disk(t) is not None for t in trials if t.trial_id in todo)
    work = (f"{len(todo_ids) - on_disk} of its {len(trials)} trials to run"
            if len(todo_ids) > on_disk else "nothing to train")
    if on_disk:
        work += (f"{', and' if len(todo_ids) > on_disk else ':'} {on_disk} ended in "
                 f"{'its folder' if on_disk == 1 else 'their folders'} to record")
    marked = _start(spec, tracking_uri, address, based_on, work=work)
    if marked.cancelled:  # (its spec kept: `resume` runs its trials)
        _store_spec(tracking_uri, spec, based_on, trials)
        return SweepOutcome(trials=len(trials), already_done=len(trials) - len(todo_ids),
                            interrupted=True, unrecorded=marked.before is None)
    with marked.undone_on_error():
        return run_sweep(spec, trials, tracking_uri=tracking_uri, progress=progress,
                         based_on=based_on, stored_as=kept_spec(tracking_uri, spec, trials))


def _unshared_budgets(spec: SweepSpec, trials: list[Trial]) -> list[str]:
    """A note when the grid's token budgets share no trunk though sharing is on (a cosine
    schedule's LR depends on its budget from the first step): the launch trained every budget
    from scratch without a word, which only `--dry-run` said."""
    budgets = {t.cfg.train.tokens for t in trials}
    if not spec.share_prefix or len(budgets) < 2:
        return []
    from orchestrator.families import ALONE, plan_sharing

    plan = plan_sharing(trials)
    if plan.families:
        return []
    reasons = {plan.alone.get(t.trial_id) for t in trials} - {None, ALONE}
    return [f"the sweep's {len(budgets)} train.tokens budgets share no trunk: each trains "
            "from scratch ("
            + (reasons.pop() if len(reasons) == 1 else "`--dry-run` says why for each trial")
            + ")"]


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


def _refuse_unread(spec: SweepSpec, tracking_uri: str, based_on: SweepSpec | None,
                   axes: dict[str, list[str]] | None = None) -> None:
    """Keys no trial reads, new in this launch against the sweep's stored spec (`based_on`
    for an extend), refused before anything runs (`orchestrator.trials.unread_problems`)."""
    baseline = based_on
    if baseline is None and existing_sqlite_ready(tracking_uri):  # (no store: all is new)
        try:
            baseline = stored_spec(tracking_uri, spec.name)
        except Exception:  # noqa: BLE001 (no such sweep yet, or no readable spec: all is new)
            baseline = None
    if problems := unread_problems(spec, baseline, axes):
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
    if old is not None and stored != mine:
        # (an extend interrupted, then the spec before it launched: the extension stays; and
        # one that ended, said where the launch begins: `cli_launch._kept`)
        if _unfinished_beyond(old, spec, trials, tracking_uri):
            print(f"note: sweep {spec.name}'s stored spec holds trials not done that this "
                  f"spec does not: it is kept, and `sweep resume {spec.name}` finishes them",
                  file=sys.stderr)
            return
        if _holds_more(old, spec, trials):
            return
    if stored != mine or (old is not None and old.anchored):  # (relative files: absolute)
        client.log_text(parent.info.run_id, redact(yaml.safe_dump(spec.to_dict(),
                                                                  sort_keys=False)),
                        SPEC_ARTIFACT)


def kept_spec(tracking_uri: str, spec: SweepSpec, trials: list[Trial] | None
              ) -> SweepSpec | None:
    """The sweep's stored spec where it holds every trial of `spec` and more (`_holds_more`):
    a launch of `spec` keeps it as the sweep's. None otherwise (no sweep yet, or another)."""
    if not existing_sqlite_ready(tracking_uri):
        return None
    try:
        old = stored_spec(tracking_uri, spec.name)
    except Exception:  # noqa: BLE001 (no such sweep yet, or no readable spec)
        return None
    return old if _holds_more(old, spec, trials) else None


def _holds_more(old: SweepSpec, spec: SweepSpec, trials: list[Trial] | None) -> bool:
    """Does the stored spec `old` hold every trial of `spec` (its `trials`) and more, with
    nothing else changed: the spec file relaunched after `sweep extend` widened its sweep?
    That launch keeps the stored spec (storing the file's re-pointed the sweep to its part
    of it, and `status` and `resume` lost the rest until every extend was typed again).
    A searched spec holds more where it asks more trials of the same studies."""
    if old.optuna is not None or spec.optuna is not None:
        if old.optuna is None or spec.optuna is None \
                or old.optuna.n_trials <= spec.optuna.n_trials:
            return False
        wider = old.to_dict()
        if not isinstance(wider.get("search"), dict) or \
                not isinstance(wider["search"].get("optuna"), dict):
            return False
        wider["search"] = {**wider["search"], "optuna": {
            **wider["search"]["optuna"], "n_trials": spec.optuna.n_trials}}
        mine = yaml.safe_load(redact(yaml.safe_dump(spec.to_dict(), sort_keys=False)))
        return wider == mine  # (compared as stored: a password in the storage URL masked)
    from orchestrator.spec import root_path

    if trials is None or root_path(old.storage_root) != root_path(spec.storage_root):
        return False  # (another storage_root: its trials' folders are elsewhere, said so)
    from orchestrator.trials import grid_axes

    # (cheap first: every launch asks, and a resume's spec is the stored one; composing the
    # stored spec's trials again took minutes for a grid of thousands)
    axes, problems = grid_axes(old)
    if old.to_dict() == spec.to_dict() or problems or \
            math.prod(map(len, axes.values())) * len(old.seeds) <= len(trials):
        return False
    try:
        theirs = {t.trial_id for t in prepare(old)[1]}
    except ConfigError:
        return False  # (a stored spec that no longer composes holds nothing to keep)
    return {t.trial_id for t in trials} < theirs


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
    from orchestrator.search_space import axes_at_ends, check_range_values, space_notes

    try:
        spec, plan, storage = search.prepare_search(spec, tracking_uri)
        storage_problem(spec.storage_root, create=True)
        search.check_studies_space(plan, storage)
        check_range_values(plan)
        _check_hub_once(search.example_trials(plan))
        # (keys no trial reads: a searched one spends the study's trials on nothing)
        _refuse_unread(spec, tracking_uri, based_on, axes_at_ends(spec, plan.dists))
    except ConfigError as err:
        named = cluster_address(address)
        cluster = (_cluster_problems(spec, address) if named
                   else resource_problems(spec, local_cluster()))
        raise ConfigError(list(err.problems) + cluster) from None
    kept = kept_spec(tracking_uri, spec, None)  # (then the notes of this file's space are
    # not the sweep's: "budgets hold 6, 3, 2, 1 LRs" of a sweep extended to 8)
    say_notes([*notes, *([] if kept else space_notes(plan))])
    create_sqlite_store_once(tracking_uri)
    lost: list[Trial] = []
    if not search.has_work(plan, storage, tracking_uri, lost):  # all told and recorded
        if lost:  # (the tracking store and run directories removed, the studies kept)
            print(f"note: sweep {spec.name}'s studies ({redact(storage)}) hold {len(lost)} "
                  "trials that are neither in the tracking store nor in their run "
                  "directories: their results are gone; to search again, give the spec "
                  "another name or remove the studies", file=sys.stderr)
        moved = [] if based_on is None else [
            k for k in plan.dists if based_on.grid.get(k) != spec.grid.get(k)]
        if moved:
            print(f"note: every study of sweep {spec.name} has its n_trials already: a changed "
                  "range changes where the next trials are asked, and there are none; add "
                  f"some with `sweep extend {spec.name} search.optuna.n_trials=N` (N above "
                  f"{plan.search.n_trials})", file=sys.stderr)
        elif based_on is not None:  # (it said nothing: as a grid sweep's extend says it)
            print(f"note: this extend adds no trial to sweep {spec.name}: its studies hold "
                  f"their search.optuna.n_trials={plan.search.n_trials} already, at the values "
                  "given", file=sys.stderr)
        _store_spec(tracking_uri, spec, based_on)
        used = sum(row["used"] for row in search.search_status(plan, storage))
        return SweepOutcome(trials=used, already_done=used)
    marked = _start(spec, tracking_uri, address, based_on,
                    work=f"{len(plan.slices)} stud{'ies' if len(plan.slices) != 1 else 'y'} "
                         "to search")
    if marked.cancelled:
        _store_spec(tracking_uri, spec, based_on)
        rows = search.search_status(plan, storage)
        used = sum(row["used"] for row in rows)
        # (the points asked and never told, interrupted or never begun, are not done: "5
        # already done" was said of 3 finished)
        return SweepOutcome(trials=used, already_done=used - sum(len(row["open_params"])
                                                                 for row in rows),
                            interrupted=True, unrecorded=marked.before is None)
    with marked.undone_on_error():
        return search.run_search(spec, plan, tracking_uri=tracking_uri, storage=storage,
                                 progress=progress, based_on=based_on, stored_as=kept)


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
        raised before its driver opened the sweep). Any other error left the sweep marked
        running under this driver, which `sweep status` then read as killed: the error is
        recorded for it to say (`record_driver_error`)."""
        try:
            yield
        except ConfigError:
            self.undo()
            raise
        except Exception as err:
            record_driver_error(self.tracking_uri, self.name, err)
            raise


def _start(spec: SweepSpec, tracking_uri: str, address: str | None,
           based_on: SweepSpec | None = None, *, work: str) -> Marked:
    """Raise the cluster's problems (a fresh local one's before Ray starts), with the sweep
    marked running by this driver meanwhile: a `sweep cancel` typed while Ray starts (10-20 s)
    is then seen by this launch instead of answered `not running` and lost. When it was, the
    launch runs nothing and the sweep reads interrupted (a cancel later still is seen by the
    driver's loop, `Tracker.open_sweep` keeping it). A launch that stops on an error here
    leaves the sweep as it found it. `work`: what the launch has to do, said first (Ray takes
    10-20 s to start, and the launch said nothing until then)."""
    import ray

    fresh = _fresh_local_ray(address)
    if fresh and (problems := resource_problems(spec, local_cluster())):
        raise ConfigError(problems)
    if not ray.is_initialized():
        named = cluster_address(address)
        where = ("starting Ray on this machine" if fresh else
                 f"connecting to the Ray cluster at {named}" if named else
                 "connecting to the Ray cluster `ray start` runs here")
        # (not "sweep NAME: ...", the form of the summary line that scripts read)
        print(f"launching sweep {spec.name}: {work}; {where} ...", flush=True)
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
    if marked.before is None:  # a new sweep: a cancel meanwhile found none to ask
        from orchestrator.starting import take_cancel

        marked.cancelled = take_cancel(tracking_uri, spec.name)
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
    import ray

    if cluster_address(address) or ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):  # `local`: a Ray of its own, always
        return True
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


def _cluster_problems(spec: SweepSpec, address: str | None) -> list[str]:
    """The problems of the cluster at `address` (or a local one, started) with the spec."""
    from orchestrator.code_check import cluster_code_problems

    try:
        init_ray(address)
    except ConfigError as err:
        return list(err.problems)
    return cluster_code_problems() + resource_problems(spec)


def _check_hub_once(trials: list[Trial]) -> None:
    from trainer.validation import check

    hub = next((t for t in trials if t.cfg.data.source.value == "hf"), None)
    if hub is not None:
        check(hub.cfg, network=True)


def say_notes(notes: Sequence[str]) -> None:
    """Notes on a launch (see `cli_launch._another_base`), on stderr."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def other_data(spec: SweepSpec, trials: list[Trial], states: dict) -> list[str]:
    """Notes when the sweep's recorded trials read other data than its trials would now: the
    data's fingerprint is part of a trial id (`trainer.fingerprint`), so files changed under
    `data.paths` (or `data.tokenizer`), or another Python's standard library for
    `data=pystdlib`, make every trial a new one, trained from the start beside the old ones,
    and without a word that was a mystery. Trials not ended (interrupted, failed) are said
    apart: their checkpoints are for the old data, and a resume leaves them where they are."""
    ids, name = {t.trial_id for t in trials}, spec.name
    now = {t.cfg.data.fingerprint for t in trials} - {None}
    if not now:
        return []
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
        changed = files_changed(spec, trials, states, others)
        what = changed or ("the files under data.paths, data.val_paths or data.tokenizer (for "
                           "data=pystdlib, this Python's standard library) differ from theirs")
        notes.append(
            f"{count} of sweep {name}'s {whose} read other data ({then}): {what}, so these "
            "trials are new ones and train from the start; `sweep fit` reads both" if ended
            else f"{count} of sweep {name}'s {whose} read other data ({then}): {what}, so "
            "their checkpoints are not resumed and their trials train again from the start "
            "under new ids; put the old data back to resume them instead")
    return notes


def refuse_other_data(spec: SweepSpec, tracking_uri: str, *, command: str) -> None:
    """`sweep resume` and `sweep extend` go on with a sweep as it was launched: where its
    ended trials read other data than its data files hold now, and none of its trials has
    read this data yet (its last launch was on the old data), they would train every trial
    again on the new data, beside the old, with only a note (`other_data`) that a resume
    scrolled past. Launching the spec again does that when it is meant.

    Raises:
        ConfigError: the data changed since the sweep's trials read it.
    """
    if spec.optuna is not None:
        return
    _, trials = prepare(spec)
    ids = {trial.trial_id for trial in trials}
    now = {trial.cfg.data.fingerprint for trial in trials} - {None}
    states = recorded_trials(tracking_uri, spec.name)
    if not now or any(trial_id in states for trial_id in ids):
        return
    before = [state["run"].data.params.get("data.fingerprint")
              for trial_id, state in states.items() if state["status"] in DONE]
    others = sorted({f for f in before if f not in (None, "None") and f not in now})
    if not others:
        return
    count = sum(f in others for f in before)
    sources = {trial.cfg.data.source.value for trial in trials}
    here = ("this Python's standard library (data=pystdlib) differs from the one"
            if sources == {"pystdlib"} else
            f"the data files of sweep {spec.name} (data.paths, data.val_paths, data.tokenizer) "
            "hold other data than")
    changed = files_changed(spec, trials, states, others)
    raise ConfigError([
        f"{here} its {count} ended trial{'s' * (count != 1)} read (data.fingerprint "
        f"{', '.join(f[:12] for f in others)}; now {', '.join(f[:12] for f in sorted(now))}"
        + (f"; {changed}" if changed else "") + "): "
        f"`sweep {command}` would train every trial again on it; put the data they read back, "
        "or launch the spec file again to train on this data beside them (or under another "
        "`name` for a sweep of its own)"])


def files_changed(spec: SweepSpec, trials: list[Trial], states: dict,
                  fingerprints: Sequence[str]) -> str | None:
    """What changed in the files of a data=files sweep since a recorded trial that read data
    `fingerprints` ran (its `config.json` holds the files it read): files a folder or pattern
    of `data.paths` or `data.val_paths` matches now and did not then (a shard added to the
    folder), or no longer matches; the same files, edited, when neither. None where that
    trial's files are not known here (data=hf, or its folder is elsewhere)."""
    from orchestrator.spec import root_path

    cfg = trials[0].cfg
    if cfg.data.source.value != "files":
        return None
    then = None
    for trial_id, state in states.items():
        if state["run"].data.params.get("data.fingerprint") in fingerprints:
            with contextlib.suppress(OSError, ValueError, TypeError):
                then = json.loads((root_path(spec.storage_root) / trial_id / "config.json")
                                  .read_text())
            if isinstance(then, dict):
                break
    if not isinstance(then, dict):
        return None
    said = []
    for key in ("data.paths", "data.val_paths"):
        old = then.get(key) or []
        new = list(getattr(cfg.data, key.partition(".")[2]) or [])
        if not isinstance(old, list) or old == new:
            continue
        given = next((o.partition("=")[2] for o in reversed(spec.overrides)
                      if o.partition("=")[0].lstrip("+") == key), None)
        with contextlib.suppress(yaml.YAMLError):  # (a stored spec writes ['a', 'b'])
            if isinstance(listed := yaml.safe_load(given or ""), list):
                given = f"[{','.join(map(str, listed))}]"
        added, gone = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        parts = [f"{len(added)} file{'s' * (len(added) != 1)} more ({', '.join(added[:2])}"
                 f"{', ...' if len(added) > 2 else ''})" if added else "",
                 f"{len(gone)} fewer ({', '.join(gone[:2])}{', ...' if len(gone) > 2 else ''})"
                 if gone else ""]
        said.append(f"{key}{'=' + given if given else ''} now holds "
                    + " and ".join(p for p in parts if p) + " than when they trained"
                    if added or gone else f"{key} holds its files in another order")
    if then.get("data.tokenizer") != cfg.data.tokenizer:
        said.append(f"data.tokenizer was {then.get('data.tokenizer')}")
    return "; ".join(said) if said else ("the same files: one of them (or data.tokenizer's) "
                                         "was edited since they trained")


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
    _check_hub_once(trials)  # (as the launch: a hub dataset it cannot reach passed the dry run)
    _refuse_unread(spec, tracking_uri, None)
    say_notes(notes)
    print_notes(trials, spec)
    if not existing_sqlite_ready(tracking_uri):  # nothing recorded; a dry run creates none
        states = {}
    else:
        states = recorded_trials(tracking_uri, spec.name)
        say_notes(other_data(spec, trials, states))
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
                   notes: Sequence[str] = ()) -> list[tuple[str, int, int, int, int]]:
    """A searched sweep's studies: (slice, trials used, trials it may still ask, and of the
    trials it asked and was never told, which a launch runs again from their checkpoints or
    tells from their record, those that began (interrupted) and those that never did: the
    dry run said nothing of them, and the launch then ran one; then it said "3 never ended
    (interrupted)" where `status` read 1 interrupted and 2 pending)."""
    from orchestrator import search
    from orchestrator.search_space import (
        axes_at_ends,
        check_range_values,
        finite_points,
        space_notes,
    )
    from trainer.paths import RunPaths

    spec, plan, storage = search.prepare_search(spec, tracking_uri, create=False)
    search.check_studies_space(plan, storage)
    check_range_values(plan)
    _check_hub_once(search.example_trials(plan))
    _refuse_unread(spec, tracking_uri, None, axes_at_ends(spec, plan.dists))
    say_notes([*notes, *space_notes(plan)])
    rows = search.search_status(plan, storage)
    states = recorded_trials(tracking_uri, spec.name) if any(
        row["open_params"] for row in rows) and existing_sqlite_ready(tracking_uri) else {}
    points = finite_points(plan.dists)  # (a finite space: a study asks each point once)
    out = []
    for slice_, row in zip(plan.slices, rows, strict=True):
        # (one asked without its point is void at the next launch: neither)
        trials = [plan.trial(slice_, params, []) for params in row["open_params"]
                  if all(key in params for key in plan.dists)]
        began = sum(t is not None and (t.trial_id in states or RunPaths.for_config(
            t.cfg, t.trial_id).run_dir.exists()) for t in trials)
        left = 0 if row["tried_all"] else max(row["n_trials"] - row["used"], 0)
        if points is not None:  # (it said "would ask 5 more" of a space of 3 points)
            left = min(left, max(points - row["used"], 0))
        out.append((row["slice"], row["used"], left, began, len(trials) - began))
    return out
