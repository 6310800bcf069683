"""The handlers of `sweep fit` and `sweep recommend`: a sweep's runs (or a CSV of them) to
`fitter`, with what the fit should know of the sweep (trials not done yet, how many trials the
next grid it suggests would add).
"""

from __future__ import annotations

import sys

from orchestrator.cli_monitor import _known_sweep


def one_source(args) -> None:
    """`sweep fit`/`recommend` read a sweep or a CSV: neither or both is said first (by
    `cli._main`), before the store is looked for (a store that does not exist is not the
    problem then)."""
    from fitter.errors import FitError

    if (args.name is None) == (args.from_csv is None):
        example = ("`sweep fit demo` or `sweep fit --from-csv runs.csv --law lr`"
                   if args.command == "fit" else "`sweep recommend demo --params 1e9 "
                   "--tokens 2e10`")
        raise FitError(f"sweep {args.command} needs either a sweep NAME or --from-csv FILE "
                       f"(not both); e.g. {example}.")


def _fit(args, uri: str) -> int:
    import json
    from pathlib import Path

    from fitter.data import read_csv
    from fitter.errors import FitError
    from fitter.fit import fit_runs, format_fit, write_fit
    from fitter.groups import parse_group
    from fitter.mlflow_io import load_runs, log_fit

    if args.pool and args.group:
        raise FitError("--pool fits one law across every group and --group fits one group: "
                       "give one of them.")
    label = args.name or Path(args.from_csv).stem
    if args.name:
        _known_sweep(uri, args.name)
        runs = load_runs(uri, args.name)
        not_done = _warn_unfinished(uri, args.name)
    else:
        runs, not_done = read_csv(args.from_csv), 0
    laws = (args.law,) if args.law else None
    group = parse_group(args.group)
    out = _out_dir(args.out)  # (checked once the runs are found, before the fit)
    result = fit_runs(runs, laws=laws, n_boot=args.n_boot, pool=args.pool, group=group)
    if args.pool and not result.pooled:
        print("note: --pool changes nothing here: no key (model.param, the data, ...) splits "
              "these runs into groups, so their laws are fitted across all of them anyway",
              file=sys.stderr)
    # What was fitted: every group, one (--group) or all pooled (--pool); a fit of one group
    # or pooled goes to its own folder by default, not over the full fit's
    selection = ",".join(f"{k}={v}" for k, v in group.items()) or (
        "pooled" if result.pooled else "")
    if args.law:  # (a fit of one law, too: it replaced the full fit's fit.json and plots)
        selection = ",".join(filter(None, [selection, f"law={args.law}"]))
    default = Path("outputs") / "fit" / label
    out = out or (default / selection.replace("/", "_") if selection else default)
    doc = write_fit(result, out, sweep=label, next_trials=_next_n_trials(uri, args.name),
                    selection={"group": group, "pooled": result.pooled})
    if args.name:  # (next_grid_trials 0 when there is nothing to add: it was absent then)
        doc["next_grid_trials"] = (doc["next_grid"] and _extension_size(
            uri, args.name, doc["next_grid"])) or 0
        doc["fit_run_id"] = log_fit(uri, args.name, out, doc)
        # (the file on disk names the run that holds its copy; that copy is the fit as it was)
        (out / "fit.json").write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_fit(doc, recorded=args.name is not None, not_done=not_done,
                         seeds=_stored_seeds(uri, args.name) if args.name else (0,)))
        print(f"wrote {out / 'fit.json'} and {len(doc['plots'])} "
              f"plot{'s' * (len(doc['plots']) != 1)}"
              + (f"; MLflow fit run {doc['fit_run_id']}" if args.name else ""))
    return 0


def _out_dir(text: str | None):
    """`--out` as a folder that can be made or written, checked before anything is fitted
    (and made only once there is a fit to write: a refused fit left it empty)."""
    from pathlib import Path

    from fitter.errors import FitError

    if text is None:
        return None
    from trainer.paths import folder_problem

    if reason := folder_problem(text, create=False, probe=True):
        raise FitError(f"--out {text}: {reason}; give a folder you can write fit.json and the "
                       "plots to.")
    return Path(text)


def _warn_unfinished(uri: str, name: str) -> int:
    """A fit of a sweep with trials not done (pending, running, interrupted, failed) sees only
    the ended ones: said on stderr, counted as `sweep status` counts them, with what finishes
    the others. The number of those that its driver, or a `sweep resume`, will still end:
    trials of its spec pending, running or interrupted, and failed ones of a grid that did not
    fail on a config error (0 when none; not those of an earlier spec, which resume leaves)."""
    from mlflow import MlflowClient

    from orchestrator.status import trial_counts
    from orchestrator.sweep_record import live_status, parent_run, stored_spec
    from trainer.schema import (
        DONE,
        FAILED,
        INTERRUPTED,
        PRUNED,
        RUNNING,
        TRIAL_ERROR_TAG,
        recorded_trials,
    )

    states = recorded_trials(uri, name)
    status, gone = live_status(parent_run(MlflowClient(tracking_uri=uri), name))
    searched = False
    try:
        spec = stored_spec(uri, name)
        searched = spec.optuna is not None
        counts, _, ids = trial_counts(uri, spec, states, gone)
    except Exception:  # noqa: BLE001 (a note: without the spec, the trials recorded)
        counts, ids = {}, []

    def config_error(trial_id: str) -> bool:
        state = states.get(trial_id)
        return state is not None and state["status"] == FAILED and state["run"].data.tags.get(
            TRIAL_ERROR_TAG, "").startswith("ConfigError")

    finishable = sum(counts.get(s, 0) for s in ("pending", RUNNING, INTERRUPTED)) + (
        0 if searched else counts.get(FAILED, 0) - sum(map(config_error, ids)))
    # (and the trials of an earlier spec: the fit reads every trial of the experiment)
    earlier = 0
    for trial_id, state in states.items():
        if trial_id not in set(ids):
            s = INTERRUPTED if state["status"] == RUNNING and gone is not None else \
                state["status"]
            counts[s] = counts.get(s, 0) + 1
            earlier += s not in (*DONE, PRUNED)
    open_ = {s: n for s, n in counts.items() if s not in (*DONE, PRUNED)}
    refused = sum(state["status"] in open_ and state["run"].data.tags.get(
        TRIAL_ERROR_TAG, "").startswith("ConfigError") for state in states.values())
    not_done = sum(open_.values())
    if open_ and refused == not_done:  # resume would fail them the same way
        print(f"note: {refused} of sweep {name}'s trials failed on a config error (`sweep "
              f"status {name}` shows it): this fit has only the ended ones; `sweep resume` "
              "would fail them the same way: fix what the error names in the spec and "
              "launch it again", file=sys.stderr)
        return 0
    if open_:
        counts_text = ", ".join(f"{n} {s}" for s, n in sorted(open_.items()))
        if searched and set(open_) == {"failed"}:
            how = (f"a searched trial that failed counts toward its study's n_trials (resume "
                   f"does not ask it again): `sweep extend {name} search.optuna.n_trials=N` "
                   "asks for more")
        elif not finishable:
            how = ("they are trials of an earlier spec of the sweep, which `sweep resume` "
                   "does not run (launch that spec again to finish them)")
        else:
            how = ("its driver is running them: wait for it (`sweep status "
                   f"{name}`), then fit again" if status == RUNNING else
                   f"`sweep resume {name}` finishes them")
            how += (f" ({earlier} of an earlier spec it does not run)" if earlier else "")
            how += ("; a failed searched trial counts toward n_trials and is not asked again"
                    if searched and "failed" in open_ else "")
        print(f"note: {not_done} of sweep {name}'s trials are not done ({counts_text}): "
              f"this fit has only the ended ones; {how}", file=sys.stderr)
    return finishable


def _stored_search(uri: str, name: str):
    """The Optuna search of a stored sweep, or None: a grid, or runs logged without a sweep
    spec (the fitter reads any experiment's runs)."""
    from mlflow.exceptions import MlflowException

    from orchestrator.sweep_record import stored_spec
    from trainer.errors import ConfigError

    try:
        return stored_spec(uri, name).optuna
    except (ConfigError, MlflowException):
        return None


def _stored_seeds(uri: str, name: str) -> tuple[int, ...]:
    """The seeds of a stored sweep's spec; (0,) where there is none (runs logged without a
    sweep spec)."""
    from mlflow.exceptions import MlflowException

    from orchestrator.sweep_record import stored_spec
    from trainer.errors import ConfigError

    try:
        return tuple(stored_spec(uri, name).seeds) or (0,)
    except (ConfigError, MlflowException):
        return (0,)


def _extension_size(uri: str, name: str, overrides: list[str]) -> int | None:
    """How many trials `sweep extend NAME OVERRIDES` (a fit's `next_grid`: LRs to add to a
    grid) would add: every new LR at every point of the other axes and seed. None where that
    cannot be read (a searched sweep, a spec that no longer parses)."""
    import math

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from orchestrator.sweep_record import stored_spec
    from orchestrator.trials import grid_axes

    try:
        spec = stored_spec(uri, name)
        axes, problems = grid_axes(spec)
        (override,) = OverridesParser.create().parse_overrides(list(overrides))
        key = override.key_or_group
        if spec.optuna is not None or problems:
            return None
        # (an LR the spec fixes in its overrides becomes an axis of its value and these)
        have = {float(v) for v in axes.get(key, [])} or {
            float(o.split("=", 1)[1]) for o in spec.overrides if o.split("=", 1)[0] == key}
        new = [v for v in override.sweep_string_iterator() if float(v) not in have]
    except Exception:  # noqa: BLE001 (a count beside a hint: without it, the hint stands)
        return None
    rest = math.prod(len(values) for k, values in axes.items() if k != key)
    return len(new) * rest * len(spec.seeds)


def _next_n_trials(uri: str, name: str | None) -> int | None:
    """For a searched sweep, the `n_trials` a fit suggests when an optimum is not bracketed:
    twice the trials, and under halving at least enough for three LRs in the top rung (twice
    8 trials halving over four budgets still left two there). None for a grid."""
    from orchestrator.search_space import plan_search
    from orchestrator.sweep_record import stored_spec
    from trainer.errors import ConfigError

    search = name and _stored_search(uri, name)
    if not search:
        return None
    more = 2 * search.n_trials
    try:
        rungs = plan_search(stored_spec(uri, name)).rungs
    except ConfigError:
        rungs = None
    while rungs is not None and rungs.nominal(more, len(rungs.budgets) - 1) < 3:
        more += 1
    return more


def _recommend(args, uri: str) -> int:
    import json

    from fitter.data import read_csv
    from fitter.errors import FitError
    from fitter.fit import fit_runs
    from fitter.groups import group_keys, parse_group
    from fitter.mlflow_io import load_runs
    from fitter.recommend import format_recommendation, recommend

    if args.pool:
        raise FitError("sweep recommend has no --pool: a law pooled over groups (muP with SP) "
                       "mixes LRs that mean different things, so it recommends none; give the "
                       "group whose laws to use, e.g. --group model.param=mup.")
    group = parse_group(args.group)
    if args.name:
        _known_sweep(uri, args.name)
        runs = load_runs(uri, args.name)
        _warn_unfinished(uri, args.name)
    else:
        runs = read_csv(args.from_csv)
    # A key that splits the runs into groups chooses one group's laws; any other key that
    # varies (optim.timescale=3, model.depth=4) fits the laws of those runs only, as `sweep
    # fit --group` does (it was refused: "one set of laws for all its runs; drop --group").
    if set(group) <= set(group_keys(runs)):
        result = fit_runs(runs, n_boot=args.n_boot)
        rec = recommend(result, params=args.params, tokens=args.tokens, batch=args.batch,
                        group=group)
    else:
        result = fit_runs(runs, n_boot=args.n_boot, group=group)
        try:
            rec = recommend(result, params=args.params, tokens=args.tokens, batch=args.batch)
        except FitError as err:  # (several groups left: the choice it asks for goes beside
            # these --group, which following it alone dropped)
            from fitter.groups import label

            held = [key for key in group if f"along {key}" in str(err)]
            if held:  # (it asked for values along the key --group held at one value)
                raise FitError(f"{str(err).rstrip('.')} (--group {label(group)} keeps one "
                               f"value of {', '.join(held)}: drop it for laws along "
                               f"{'it' if len(held) == 1 else 'them'}).") from None
            if "choose one with --group" not in str(err):
                raise
            raise FitError(f"{str(err).rstrip('.')}, beside --group {label(group)}.") from None
        rec["group"] = {**group, **rec["group"]}
    print(json.dumps(rec, indent=2) if args.json else format_recommendation(rec))
    return 0
