"""`sweep extend`: a sweep's stored spec with new grid values, checked so that extend only adds
trials (a plain value for an axis, or a new base value, would replace the sweep's trials).
"""

from __future__ import annotations

import dataclasses

from orchestrator.spec import SweepSpec, parse_reason, root_path
from orchestrator.trials import grid_axes
from trainer.errors import ConfigError


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
