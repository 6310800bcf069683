"""The handlers of `sweep launch`, `resume` and `extend`: the command's flags applied to the
spec, the notes said before a launch (another spec under the sweep's name), the dry run's
listing, the summary after the run, and what a Ctrl-C outside the driver's loop leaves.
The work itself is `orchestrator.commands`'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys


def _launch(args, uri: str) -> int:
    from orchestrator.spec import shadowed_overrides
    from orchestrator.spec_file import load_spec

    _spec_first(args.spec, args.overrides)
    read = load_spec(args.spec)
    spec = read.with_overrides(args.overrides)
    return _run(spec, args, uri, notes=[*shadowed_overrides(spec), *_replaced_axes(read, spec),
                                        *_another_base(spec, uri),
                                        *_storage_not_here(spec, uri)])


def _spec_first(spec: str, overrides: list[str]) -> None:
    """`sweep launch optim.lr=0.1 spec.yaml` read the override as the spec ("sweep spec
    optim.lr=0.1 does not exist"): said as the order."""
    from pathlib import Path

    from trainer.errors import ConfigError

    files = [o for o in overrides if "=" not in o and Path(o).is_file()]
    if "=" in spec and not Path(spec).exists() and files:
        rest = " ".join([spec, *(o for o in overrides if o != files[0])])
        raise ConfigError(f"{files[0]} is the spec and {spec} an override: give the spec "
                          f"first (sweep launch {files[0]} {rest})")


def _replaced_axes(read, spec) -> list[str]:
    """A plain value on the command line for a key the spec's grid sweeps replaces that axis
    (every trial takes the value): said, since the same key in the spec's overrides is the
    other way round (the grid wins) and the axis went without a word."""
    return [f"{key}={value} on the command line replaces the spec's grid.{key}: "
            f"{read.grid[key]}: every trial takes {value} (give '{key}=choice(...)' to sweep "
            "other values)"
            for key, value in (o.partition("=")[::2] for o in spec.overrides
                               if o not in read.overrides)
            if key in read.grid and key not in spec.grid]


def _another_base(spec, uri: str) -> list[str]:
    """A launch under a sweep's name with another spec (other base overrides, grid, seeds)
    adds other trials to its experiment: allowed (a launch with overrides does it on
    purpose), but said, since `status` then follows the new spec and `fit` reads them all:
    the notes, said once the launch's checks have passed (before an error they were noise)."""
    from orchestrator.store import existing_sqlite_ready
    from trainer.errors import ConfigError

    if not existing_sqlite_ready(uri):
        return []  # no store yet: a new sweep
    from orchestrator.sweep_record import stored_spec

    try:
        stored = stored_spec(uri, spec.name)
    except ConfigError:
        return []  # no such sweep yet
    from orchestrator.search import check_relaunch

    check_relaunch(stored, spec)
    if kept := _kept(stored, spec):
        return [kept]
    before, now = set(stored.overrides), set(spec.overrides)

    from orchestrator.spec import root_path

    notes = []
    if root_path(stored.storage_root) != root_path(spec.storage_root):
        notes.append(f"sweep {spec.name} was launched before with storage_root "
                     f"{stored.storage_root}, now {root_path(spec.storage_root)}: its trials' "
                     "run directories and checkpoints are there, and an unfinished trial "
                     "would start over here")
    changes = [f"without {o}" for o in sorted(before - now)] + [
        f"now {o}" for o in sorted(now - before)]
    changes += [said for k in dict.fromkeys([*stored.grid, *spec.grid])
                if stored.grid.get(k) != spec.grid.get(k)
                and (said := _axis_change(k, stored, spec))]
    if stored.seeds != spec.seeds:
        changes.append(f"seeds: {list(stored.seeds)} → {list(spec.seeds)}")
    from trainer.reporting import redact

    if redact(str(stored.search)) != redact(str(spec.search)):  # (stored: its password masked)
        changes += _search_changes(stored.search, spec.search) or ["another search block"]
    settings = [f"{key}: {_setting(stored, key)} → {_setting(spec, key)}"
                for key in ("max_concurrent", "retries", "resources", "fuse", "share_prefix")
                if _setting(stored, key) != _setting(spec, key)]
    if settings and not changes:
        notes.append(f"sweep {spec.name} now runs with {'; '.join(settings)} (its trials stay "
                     "as they are; `sweep status`, `resume` and `extend` follow this spec)")
    changes += settings
    if changes and len(changes) > len(settings):
        notes.append(f"sweep {spec.name} was launched before with another spec "
                     f"({'; '.join(changes)}): its trials so far stay in its experiment, "
                     "`sweep status` and `sweep extend` follow this spec and `sweep fit` reads "
                     f"every trial; to add to the sweep use `sweep extend {spec.name} ...`, or "
                     "give this spec another name to keep the two apart")
    return notes


def _axis_change(key: str, stored, spec) -> str | None:
    """How a grid axis differs between two specs, by the values it takes: None where only
    their spelling differs (2e-3 for 0.002: the relaunch of a spec after an extend listed
    every value as changed), else the values left out and added."""
    from orchestrator.trials import grid_axes

    before, now = (grid_axes(s)[0].get(key) for s in (stored, spec))
    if before is None or now is None:
        return f"grid.{key}: {stored.grid.get(key, '(none)')} → {spec.grid.get(key, '(none)')}"

    def number(text: str):
        try:
            return float(text)
        except ValueError:
            return text

    old, new = ({number(v): v for v in values} for values in (before, now))
    if old.keys() == new.keys():
        return None
    parts = [f"without {', '.join(old[v] for v in old if v not in new)}" if set(old) - set(new)
             else "", f"with {', '.join(new[v] for v in new if v not in old)}"
             if set(new) - set(old) else ""]
    return f"grid.{key} {' and '.join(p for p in parts if p)}"


def _kept(stored, spec) -> str:
    """The note of a launch whose spec the sweep's stored one holds with more (the spec file
    relaunched after `sweep extend`): the stored spec stays the sweep's
    (`commands._holds_more`). '' otherwise, or when either cannot expand."""
    from orchestrator.commands import _holds_more
    from orchestrator.driver import prepare

    try:
        mine = None if spec.optuna is not None else prepare(spec)[1]
        if not _holds_more(stored, spec, mine):
            return ""
        if spec.optuna is not None:
            more = f"asks {stored.optuna.n_trials} trials per study, this spec " \
                   f"{spec.optuna.n_trials}"
        else:
            count = len(prepare(stored)[1])
            more = f"holds this spec's {len(mine)} trials and {count - len(mine)} more"
    except Exception:  # noqa: BLE001 (a spec that does not compose: the checks say so)
        return ""
    # (it re-pointed the sweep to this spec's part, in a 900-character note, and the rest
    # came back only by typing every extend again)
    return (f"sweep {spec.name}'s stored spec (extended since this file) {more}: it stays the "
            f"sweep's spec, so `sweep status`, `resume` and `extend` keep all of it; give this "
            "spec another name for a sweep of its own")


def _setting(spec, key: str) -> str:
    """How a note shows one of the spec keys that say how its trials run, not which."""
    value = getattr(spec, key)
    if key == "resources":
        return ", ".join(f"{k}={v:g}" for k, v in dataclasses.asdict(value).items())
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def _search_changes(before, now) -> list[str]:
    """The search options a launch changes, `search.optuna.n_trials: 5 → 3` (a relaunch of
    the spec file after an extend lowered n_trials behind "another search block")."""
    from trainer.reporting import redact

    def options(search) -> dict:
        return dict(search["optuna"]) if isinstance(search, dict) and isinstance(
            search.get("optuna"), dict) else {}

    old, new = options(before), options(now)
    if not old or not new:
        return []
    from orchestrator.search_space import OptunaSearch

    # (an option not given is its default: "sampler: (none) → tpe" hid that it was gp)
    default = {f.name: f.default for f in dataclasses.fields(OptunaSearch)
               if f.default is not dataclasses.MISSING and f.default is not None}
    old = {k: old.get(k, default.get(k)) for k in dict.fromkeys([*old, *new])}
    new = {k: new.get(k, default.get(k)) for k in old}
    return [f"search.optuna.{k}: {redact(str(old[k]) if old[k] is not None else '(none)')} → "
            f"{redact(str(new[k]) if new[k] is not None else '(none)')}"
            for k in old if redact(str(old[k])) != redact(str(new[k]))]


def _run(spec, args, uri: str, based_on=None, notes: list[str] = ()) -> int:
    from orchestrator import commands

    # A flag is this command's: the stored spec keeps its own value for later commands.
    if getattr(args, "no_share", False):
        spec = spec.with_flag("share_prefix", False)
    if getattr(args, "fuse", None) is not None:
        spec = spec.with_flag("fuse", args.fuse)
    if getattr(args, "max_concurrent", None) is not None:
        spec = spec.with_flag("max_concurrent", args.max_concurrent)
    asked = "true" if spec.fuse is True else spec.fuse if (
        type(spec.fuse) is int and spec.fuse > 1) else None  # (True == 1: tested first)
    if asked is not None and spec.resources.world_size > 1:
        from orchestrator.fusion import fusion_off_reason

        notes = [*notes, f"fuse: {asked} fuses nothing here: {fusion_off_reason(spec)}"]
    from orchestrator.driver import cluster_address

    if getattr(args, "dry_run", False) and not cluster_address(args.address):
        from orchestrator.driver import local_cluster, resource_problems

        for problem in resource_problems(spec, local_cluster()):  # a launch here refuses it
            print(f"note: on this machine the launch would refuse it: {problem} (a cluster's "
                  "nodes count with --address)", file=sys.stderr)
    if getattr(args, "dry_run", False) and spec.optuna is not None:
        for label, used, left, began, unbegun in commands.search_dry_run(
                spec, tracking_uri=uri, notes=notes):
            print(f"study {label}: {used} trial{'s' * (used != 1)} used, would ask {left} more"
                  + (f"; {began} of those used never ended (interrupted): run again from "
                     "their checkpoints, or told from their record if they ended" if began
                     else "")
                  + (f"; {unbegun} of those used were asked and never began: they run first"
                     if unbegun else ""))
        from orchestrator.search_space import HALVING, plan_search

        if spec.optuna.pruner == HALVING:
            print("halving: a budget above the first takes the best of the one below once "
                  "that whole rung has ended, so its counts are for the rung below as it "
                  "stands (new trials below, from an extend, can send more up)")
        from orchestrator.fusion import fusion_setting, searched_fusion_off

        fuse = fusion_setting(spec)
        why = searched_fusion_off(plan_search(spec)) if fuse else None
        if why:  # (as the launch: each study asks one point at a time)
            print(f"no fused groups: {why}")
        elif fuse is True or (fuse is not False and fuse > 1):
            if fuse is True:
                from orchestrator.driver import local_cluster
                from orchestrator.fusion import at_once, searched_group_size
                from orchestrator.placement import Request

                res = spec.resources.per_trial()
                slots = at_once(spec, local_cluster().capacity(Request(gpus=res.gpus,
                                                                       cpus=res.cpus)))
                size = searched_group_size(True, points_left=spec.optuna.n_trials,
                                           slots=slots)
                most = (f"up to {size} points at once (its points over two rounds of the "
                        f"{slots} trials this machine runs at once)")
            else:
                size, most = fuse, f"up to {fuse} points at once"
            cap = spec.max_concurrent
            if cap and cap < 2:  # (a group's members count toward it: room for one point)
                print(f"no fused groups: max_concurrent {cap} leaves room for one point at a "
                      "time (each member counts)")
            else:
                if cap and cap < size:
                    most = f"up to {cap} points at once (max_concurrent {cap})"
                print(f"fused: each study asks {most} and trains them as one group"
                      + (f"; max_concurrent {cap} counts each member" if cap else ""))
        return 0
    if getattr(args, "dry_run", False):
        plan = commands.dry_run(spec, tracking_uri=uri, notes=notes)
        for trial, action in plan:
            print(f"{action:<18} {trial.trial_id[:12]}  {trial.label}")
        todo = sum(action.startswith("run") for _, action in plan)
        held = sum(action.startswith("wait") for _, action in plan)
        print(f"{len(plan)} trial{'s' * (len(plan) != 1)}: {len(plan) - todo - held} done, "
              f"{todo} would run"
              + (f", {held} running under another driver" if held else ""))
        from orchestrator.families import describe, plan_sharing

        trials = [trial for trial, _ in plan]
        to_run = [t for t, action in plan if action.startswith("run")]
        sharing = plan_sharing(trials, share=spec.share_prefix)
        from orchestrator.spec import root_path
        from trainer.branching import read_index, trunk_dir

        root = root_path(spec.storage_root)
        trunk_at = {f.trunk_id: int(read_index(trunk_dir(root, f.trunk_id)).get("tokens") or 0)
                    for f in sharing.families}
        from orchestrator.sharing import checkpoint_tokens, resumes_itself

        own = {t.trial_id: checkpoint_tokens(t) for t in to_run if resumes_itself(t)}
        for line in describe(sharing, trials, to_run={t.trial_id for t in to_run},
                             trunk_at=trunk_at, own=own):
            print(line)
        from orchestrator.fusion import fusion_off_reason, fusion_setting

        if fusion_setting(spec) and to_run:
            print_fusion(spec, to_run, sharing)
        elif len(to_run) > 1:  # (said in full by the note above where fuse asked for it)
            print("no fused groups: " + (f"resources.world_size {spec.resources.world_size} "
                                         "(the note above)" if asked is not None
                                         and spec.resources.world_size > 1
                                         else fusion_off_reason(spec)))
        return 0
    from orchestrator.starting import announced

    with announced(uri, spec.name):  # (a `sweep cancel` before the sweep is recorded: seen)
        outcome = commands.launch(spec, tracking_uri=uri, address=args.address,
                                  progress=sys.stdout.isatty(), based_on=based_on, notes=notes)
    from trainer.schema import DONE, PRUNED

    ran = outcome.ran.values()
    ended = [*ran, *outcome.found_ended.values()]
    # (as a shell reports a process a signal ended; a pruned trial is a search working as
    # meant, not a failure)
    code = (128 + signal.SIGTERM if outcome.terminated else 130) if outcome.interrupted else (
        0 if all(s in (*DONE, PRUNED) for s in ended) else 1)
    ENDED["code"] = code
    summary = ", ".join(f"{sum(s == k for s in ran)} {k}" for k in sorted(set(ran)))
    print(f"sweep {spec.name}: {outcome.trials} trial{'s' * (outcome.trials != 1)}, "
          f"{outcome.already_done} already done"
          + (f", ran {len(outcome.ran)} ({summary})" if outcome.ran else
             ", stopped before any trial ran" if outcome.interrupted else ", nothing to run")
          # (another launch's, or ends a killed tracker never recorded: "by another launch"
          # named one that never was)
          + (f", {len(outcome.found_ended)} found ended in their folders"
             if outcome.found_ended else "")
          + (f", {not_started} not started" if outcome.interrupted and outcome.ran
             and (not_started := outcome.trials - outcome.already_done - len(outcome.ran)
                  - len(outcome.found_ended)) > 0 else ""))
    from trainer.schema import TOKENS_IF_INDEPENDENT, TOKENS_RATIO, TOKENS_TRAINED

    ratio = outcome.tokens.get(TOKENS_RATIO, math.nan)
    if not outcome.interrupted and math.isfinite(ratio) and ratio < 1.0:
        # (what sharing saved, said where the sweep ends rather than only by `sweep status`)
        print(f"tokens: {outcome.tokens[TOKENS_TRAINED]:,.0f} trained across the sweep, "
              f"{outcome.tokens[TOKENS_IF_INDEPENDENT]:,.0f} if each trial trained alone "
              f"(ratio {ratio:.2f})")
    by = "SIGTERM" if outcome.terminated else "Ctrl-C or `sweep cancel`"
    if outcome.unrecorded:
        print(f"sweep {spec.name} stopped before it began (`sweep cancel`): nothing of it was "
              "recorded; launch the spec again to run it")
    elif outcome.interrupted:
        print(f"sweep {spec.name} stopped before its end ({by}): nothing done is lost, "
              f"`sweep resume {spec.name}` goes on")
    elif outcome.stopped_at_end:
        print(f"sweep {spec.name}: the stop ({by}) came as its last trials ended; every trial "
              "has ended, nothing to resume")
    for note in data_notes(outcome):
        print(f"note: {note}", file=sys.stderr)
    import shlex

    from orchestrator.tracking import redact

    name = shlex.quote(spec.name)
    if not outcome.unrecorded:  # (a sweep the store does not hold: nothing to monitor)
        print(f"monitor: sweep status {name}   |   UI: sweep ui {name}  "
              f"(store {redact(uri)})")
    return code


def _resume(args, uri: str) -> int:
    from orchestrator.sweep_record import stored_spec
    from trainer.errors import ConfigError

    if args.overrides:
        from orchestrator.spec import refuse_spec_key

        for arg in args.overrides:  # (a spec key given as one: where it goes, not extend)
            if arg.partition("=")[0] != "seeds":  # (which extend adds to, as given)
                refuse_spec_key(*arg.partition("=")[::2])
        import shlex

        from orchestrator.spec import _is_sweep

        # (as extend takes them: a plain value was suggested, which extend refuses)
        added = [arg if _is_sweep(arg) or not arg.partition("=")[2]
                 or arg.startswith("seeds=") else "{0}=choice({2})".format(*arg.partition("="))
                 for arg in args.overrides]
        raise ConfigError(f"sweep resume runs sweep {args.name} as it was launched, without "
                          f"{' '.join(args.overrides)}: to add values use `sweep extend "
                          f"{shlex.quote(args.name)} {' '.join(map(shlex.quote, added))}`; for "
                          "another base, launch a spec under another name")
    from orchestrator.commands import refuse_other_data

    stored = stored_spec(uri, args.name)
    refuse_other_data(stored, uri, command="resume")
    return _run(stored, args, uri, notes=_storage_not_here(stored, uri))


def _storage_not_here(spec, uri: str) -> list[str]:
    """A resume (or a launch of the spec again) on a machine that does not see the sweep's
    `storage_root` (another user's disk, a share not mounted here) starts its begun trials
    over in a new folder: said, as a launch from another folder says it of a relative
    root."""
    from orchestrator.spec import root_path
    from orchestrator.store import existing_sqlite_ready
    from trainer.schema import DONE, recorded_trials

    root = root_path(spec.storage_root)
    if root.exists() or not existing_sqlite_ready(uri):
        return []
    begun = sum(state["status"] not in DONE and bool(state["run"].data.metrics)
                for state in recorded_trials(uri, spec.name).values())
    if not begun:
        return []
    return [f"storage_root {root} is not on this machine: the checkpoints of the {begun} "
            f"unfinished trial{'s' * (begun != 1)} that trained are where the sweep ran, and "
            f"here {'they' if begun != 1 else 'it'} would start over; resume where {root} is "
            "mounted to go on from them"]


def _extend(args, uri: str) -> int:
    from orchestrator.commands import refuse_other_data
    from orchestrator.extend import extended
    from orchestrator.sweep_record import stored_spec

    stored = stored_spec(uri, args.name)
    refuse_other_data(stored, uri, command="extend")
    spec = extended(stored, args.overrides)
    return _run(spec, args, uri, based_on=stored, notes=_adds_nothing(stored, spec,
                                                                       args.overrides))


def _adds_nothing(stored, spec, overrides: list[str]) -> list[str]:
    """The note of an extend of a grid sweep by values it has already (`choice(4e-3)` on an
    axis holding 0.004, `seeds=[0]`): it printed "36 trials: 36 done, 0 would run" as if
    that were the extension's outcome."""
    from orchestrator.trials import grid_axes

    if stored.optuna is not None or tuple(stored.overrides) != tuple(spec.overrides) \
            or set(stored.seeds) != set(spec.seeds):
        return []
    (before, _), (after, _) = grid_axes(stored), grid_axes(spec)
    if before.keys() != after.keys() or any(set(before[k]) != set(after[k]) for k in after):
        return []
    return [f"sweep {spec.name} has every value given already ({' '.join(overrides)}): this "
            "extend adds no trial"]


def data_notes(outcome) -> list[str]:
    """What the trainer notes of a trial's data, once for the trials this launch ran: a
    worker's notes stay in its log, and a sweep over a 65k-token file said only "ran 3"."""
    notes = []
    if repeats := outcome.repeats:
        count = len(repeats)
        whose = "their" if count != 1 else "its"
        notes.append(f"{count} trial{'s' * (count != 1)} repeated {whose} data (up to "
                     f"{max(repeats.values()):.3g} passes over the training split; "
                     "`derived.data_passes` in MLflow): a proxy for a run that never repeats "
                     "its data should not; give more data, or smaller train.tokens")
    if short := outcome.short_eval:
        count = len(short)
        notes.append(f"{count} trial{'s' * (count != 1)} had an eval split smaller than "
                     f"train.eval_tokens (each eval read as few as {min(short.values()):,} "
                     "tokens; `derived.eval_tokens`): their eval loss is noisy; give more eval "
                     "data (a larger data.holdout_fraction, or more files in data.val_paths)")
    return notes


def print_fusion(spec, trials, sharing) -> None:
    """The fused groups that the trials to run, and the trunks of their families (`sharing`),
    would form on this machine (a cluster may hold more trials at once, and then makes
    smaller groups when `fuse: true`)."""
    from orchestrator.driver import local_cluster
    from orchestrator.families import branch_tokens
    from orchestrator.fusion import at_once, fusion_setting, plan_fusion
    from orchestrator.fusion import describe as describe_groups
    from orchestrator.placement import Request
    from orchestrator.sharing import plan_trunk_groups, resumes_itself
    from trainer import branching
    from trainer.lease import current_holder

    res = spec.resources.per_trial()
    slots = at_once(spec, local_cluster().capacity(Request(gpus=res.gpus, cpus=res.cpus)))
    fuse = fusion_setting(spec)
    pending = []  # each family's trunk to train, to the branch points it has not passed
    for family in sharing.families:
        directory = branching.trunk_dir(spec.storage_root, family.trunk_id)
        if current_holder(directory) is not None:
            continue  # another driver's worker trains it
        index = branching.read_index(directory)
        ids = {m.trial_id for m in family.members}
        # (a point under one batch needs no trunk: the branch starts from step 0)
        points = {p for t in trials if t.trial_id in ids and not resumes_itself(t)
                  and (p := branch_tokens(t.cfg)) >= family.batch_tokens
                  and not branching.passed(index, p)}
        if points:
            pending.append((family, tuple(sorted(points))))
    units = plan_trunk_groups(pending, storage_root=spec.storage_root, fuse=fuse, slots=slots)
    fused_trunks = [u for u in units if len(u) > 1]
    for unit in fused_trunks:
        print(f"fused {len(unit)} trunks in one task: "
              + ", ".join(f.trunk_id[:12] for f in unit))
    groups, alone = plan_fusion([t for t in trials if sharing.family_of(t.trial_id) is None],
                                fuse=fuse, slots=slots)
    for line in describe_groups(groups):
        print(line)
    if groups or alone:
        print(f"{len(groups)} fused group{'s' * (len(groups) != 1)}, "
              f"{len(alone)} trial{'s' * (len(alone) != 1)} alone")
    if units:
        fused, total = sum(map(len, fused_trunks)), sum(map(len, units))
        print(f"{total} trunk{'s' * (total != 1)} to train: "
              + (f"{fused} in {len(fused_trunks)} fused group{'s' * (len(fused_trunks) != 1)}, "
                 f"{len(units) - len(fused_trunks)} alone; a group's budgets of one size fuse "
                 "as it releases them" if fused else "each alone"))
    # (fusion on, but a config that cannot fuse at all: said, as sharing says why it does not)
    from trainer.fusable import fusion_problems

    # (each config's own problems: a norm-test trial first in the list was said to be why
    # nothing fused, beside constant-batch trials that could)
    cannot, some = [], []
    for cfgs in ([u[0].members[-1].cfg for u in units] if units and not fused_trunks
                 and len(units) > 1 else [],
                 [t.cfg for t in alone] if not groups and len(alone) > 1 else []):
        found = [fusion_problems([cfg]) for cfg in cfgs] if fuse else []
        if found and all(found):
            cannot += [problem for problems in found for problem in problems]
        elif any(found):
            some += [f"{sum(map(bool, found))} of the trials cannot fuse: {problem}"
                     for problems in found for problem in problems]
    for problem in dict.fromkeys(cannot):
        print(f"nothing fuses: {problem}")
    for line in dict.fromkeys(some):
        print(line)
    from orchestrator.fusion import group_size
    from trainer.fusable import group_key

    keys = [group_key(t.cfg) for t in alone if not fusion_problems([t.cfg])]
    fusable = [k for k in keys if keys.count(k) > 1]
    if not cannot and fuse is True and len(fusable) > 1 \
            and group_size(fuse, num_trials=len(fusable), slots=slots) == 1:
        # (`fuse: auto` spreads trials over the slots first: said, or it reads as a fault)
        print(f"nothing fuses: this machine runs {slots} trials at once, as many as there are "
              f"to fuse ({len(fusable)}), so each runs alone beside the others (`fuse: K` "
              "fuses them anyway)")


def _interrupted_hint(args, uri: str) -> tuple[str, bool]:
    """What goes on after a Ctrl-C that stopped the command outside its driver's loop (while
    Ray started, or while the end waited on the store): the sweep it left running closed as
    interrupted, and the command that goes on, with the sweep's name (it said `NAME` for a
    launch), or, when nothing of it was recorded, the launch again; and whether every trial
    had ended (the stop came as the launch closed its finished sweep: nothing to resume)."""
    name = getattr(args, "name", None)
    with contextlib.suppress(Exception):  # (a spec that cannot be read: the hint stays general)
        if name is None and args.command == "launch":
            from orchestrator.spec_file import load_spec

            name = load_spec(args.spec).name
    recorded, ended = True, False
    with contextlib.suppress(Exception):  # (a store it cannot reach: what it has is said)
        from trainer.reporting import unreachable_server

        if name is not None and not unreachable_server(uri, answer=False):
            from orchestrator.driver import loop_ended
            from orchestrator.store import existing_sqlite_ready
            from orchestrator.sweep_record import close_left_running, sweep_finished

            with _no_http_retries():  # (a server that stopped answering: no 4-minute wait)
                recorded = existing_sqlite_ready(uri) and close_left_running(uri, name) is not None
                # (a stop as the launch closed the sweep said "resume goes on", exit 130, of
                # a sweep that had ended; only after its loop: a stop while Ray started finds
                # the sweep its last launch closed finished, with this spec's trials to run)
                ended = recorded and loop_ended() and sweep_finished(uri, name)
    import shlex

    from trainer.reporting import redact

    again = shlex.join(redact(a) for a in getattr(args, "argv", None) or [args.command])
    if name is not None and not recorded and args.command == "launch":
        return f"; nothing of the sweep was recorded yet: `sweep {again}` starts it again", False
    if name is not None and recorded and _not_stored_yet(args, uri, name):
        # (stopped while Ray started: its spec was not stored, and a resume runs the old one)
        what = "extension" if args.command == "extend" else "new spec"
        return (f"; the sweep's {what} was not stored yet: `sweep {again}` goes on (nothing "
                f"that finished is lost or trained again)"), False
    if ended:
        return ENDED_HINT.replace("NAME", shlex.quote(name)), True
    return INTERRUPTED_HINT.replace("NAME", shlex.quote(name) if name else "NAME"), False


def _not_stored_yet(args, uri: str, name: str) -> bool:
    """Did the interrupted `extend` or `launch` stop before it stored its spec (the sweep's
    stored spec is not the one it would have run)? A resume would run the old one: it said
    `sweep resume` goes on, which then found nothing of the extension to run."""
    if args.command not in ("extend", "launch"):
        return False
    from orchestrator.extend import extended
    from orchestrator.spec import root_path
    from orchestrator.spec_file import load_spec
    from orchestrator.sweep_record import stored_spec

    try:
        with _no_http_retries():
            stored = stored_spec(uri, name)
        if args.command == "extend":
            wanted = extended(stored, args.overrides)
        else:
            wanted = load_spec(args.spec).with_overrides(args.overrides)
    except Exception:  # noqa: BLE001 (an extend that adds nothing now: it was stored)
        return False
    keys = ("overrides", "grid", "seeds", "search")
    mine = {k: v for k, v in wanted.to_dict().items() if k in keys}
    theirs = {k: v for k, v in stored.to_dict().items() if k in keys}
    return mine != theirs or root_path(wanted.storage_root) != root_path(stored.storage_root)


@contextlib.contextmanager
def _no_http_retries():
    """MLflow's client without its retries and with a short timeout, for one last write
    after a Ctrl-C: the user asked to stop, not to wait out a server that does not answer."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


ENDED: dict[str, int] = {}
"""{"code": exit code} once a launch, resume or extend has its outcome, before its last lines
print: a Ctrl-C while they print (the test's "monitor:" line read, the command not yet
returned) keeps that code, and says nothing (it said "interrupted ...: `sweep resume` goes on",
exit 130, of a finished sweep)."""

ENDED_HINT = ("; the sweep had ended as it came: every trial has ended and is recorded, "
              "nothing to resume (`sweep status NAME`)")
INTERRUPTED_HINT = ("; nothing that finished is lost: `sweep resume NAME` goes on from there "
                    "(`sweep status NAME` shows where it stands)")
