"""`search: {optuna: {...}}`: a sweep whose grid is searched per slice rather than enumerated.

The spec's grid keeps Hydra's sweep grammar. The axes named in `per_slice` stay a grid: each of
their points (times each seed) is a slice, and each slice gets its own Optuna study. Every other
sweep axis of the grid is searched, mapped onto an Optuna distribution:

    interval(a, b)             → FloatDistribution(a, b)
    tag(log, interval(a, b))   → FloatDistribution(a, b, log=True)
    choice(x, y, ...)          → CategoricalDistribution (values kept as Hydra strings)
    range(a, b[, s])           → IntDistribution(a, b - s, step=s)  (log with tag(log, ...))

Anything the mapping cannot express (a float range, a tag other than `log`, a per-slice axis
that is an interval, ...) is one problem each, all reported together with the trials' own
problems before anything runs. A point the study asks for becomes an ordinary trial: the
slice's overrides plus one `key=value` per searched axis, composed and identified exactly as a
grid trial with those values (`orchestrator.trials.make_trial`), so it has the same id, child
run and checkpoint directory.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

OBJECTIVES = ("final/eval_loss", "final/train_loss", "final/wall_s", "final/flops",
              "final/tokens", "final/steps")
"""What a study may minimise: a value every trial's summary holds (a misspelt one made every
trial fail silently, its value missing). The losses are what a sweep for hyperparameters
minimises; the others are there for a search of cost."""
LOSS_OBJECTIVES = ("final/eval_loss", "final/train_loss")
"""The objectives a pruner may judge by the eval losses a trial reports as it trains."""
SEARCH_KEYS = {"sampler", "seed", "n_trials", "per_slice", "objective", "pruner", "storage"}
SAMPLERS = {"gp": "GPSampler", "tpe": "TPESampler", "cmaes": "CmaEsSampler",
            "random": "RandomSampler", "qmc": "QMCSampler"}
PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "hyperband": "HyperbandPruner",
           "halving": "NopPruner"}
HALVING = "halving"
"""Successive halving over the `train.tokens` budgets (`orchestrator.halving`): no Optuna
pruner stops a trial; the best of each budget's study climb to the next budget."""
TOKENS_KEY = "train.tokens"
DEFAULT_SAMPLER = "gp"
"""The default sampler; why this one is measured in benchmarks/search.py (benchmarks/README)."""
STARTUP_TRIALS = 3
"""Trials a model-based sampler (gp, tpe) takes from its startup design (`startup_points`)
before it models the objective. Optuna's own default is 10 random draws, as many as a whole
study of a few proxies: nothing would be modelled."""
DEFAULT_OBJECTIVE = "final/eval_loss"


@dataclass(frozen=True)
class OptunaSearch:
    """The checked `search.optuna` mapping of a spec."""

    n_trials: int
    """Trials per study in total (asked, running or ended), not more per launch."""
    per_slice: tuple[str, ...] = ()
    """Grid axes that stay a grid; one study per point of them (and per seed)."""
    sampler: str = DEFAULT_SAMPLER
    sampler_args: dict = field(default_factory=dict)
    """Keyword arguments for the Optuna sampler (`sampler: {gp: {...}}`)."""
    seed: int = 0
    pruner: str = "none"
    pruner_args: dict = field(default_factory=dict)
    objective: str = DEFAULT_OBJECTIVE
    """A `final/*` value of the trial's summary, minimised."""
    storage: str | None = None
    """Optuna RDB storage URL; None: `OPTUNA_STORAGE`, else a SQLite file beside the MLflow
    store (`orchestrator.studies.storage_url`)."""


def is_optuna(search: object) -> bool:
    """Does a spec's `search` value ask for Optuna?"""
    return isinstance(search, dict) and "optuna" in search


def _named(value: object, key: str, known: dict, problems: list[str]) -> tuple[str, dict]:
    """`name` or `{name: {kwargs}}` → (name, kwargs); unknown names are problems."""
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
    else:
        name, args = value, {}
    if not isinstance(args, dict) or not isinstance(name, str):
        problems.append(f"search.optuna.{key}={value!r}: give one name, e.g. {key}: "
                        f"{next(iter(known))}, or {{name: {{option: value}}}}")
        return str(name), {}
    if name not in known:
        problems.append(f"search.optuna.{key}={name!r} is not known; use one of "
                        f"{', '.join(known)}")
    return str(name), dict(args)


def per_slice_axes(value: object) -> tuple[list[str], list[str]]:
    """`search.optuna.per_slice` as its axes, each once, and the problems of its shape: one
    key or a list of keys (an axis named twice would split nothing more, and is said)."""
    if value is None:
        return [], []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        return [], [f"search.optuna.per_slice={value!r}: give the grid axes that stay a grid, "
                    "one key or a list of keys, e.g. per_slice: [model.width]"]
    twice = sorted({k for k in value if value.count(k) > 1})
    return list(dict.fromkeys(value)), [
        f"search.optuna.per_slice names '{k}' twice: keep one" for k in twice]


def parse_search(raw: object, grid: dict[str, str]) -> tuple[OptunaSearch | None, list[str]]:
    """The `search` value of a spec: (None, []) for a grid, else the checked Optuna search
    and every problem of it."""
    if raw == "grid" or raw is None:
        return None, []
    if isinstance(raw, dict) and raw and any(k != "optuna" for k in raw):
        return None, [f"search: unknown key '{k}'; the one key is optuna (search: {{optuna: "
                      "{n_trials: 8, per_slice: [model.width]}})" for k in raw if k != "optuna"]
    if not is_optuna(raw) or not isinstance(raw["optuna"], dict):
        shown = f"search.optuna={raw['optuna']!r}" if is_optuna(raw) else f"search={raw!r}"
        return None, [f"{shown}: use search: grid, or search: {{optuna: {{n_trials: 8, "
                      "per_slice: [model.width]}}"]
    import difflib

    opts, problems = raw["optuna"], []
    meant = {}  # misspelt key → the known key it is closest to (said once, as that key)
    for k in opts:
        if k not in SEARCH_KEYS:
            close = difflib.get_close_matches(str(k), sorted(SEARCH_KEYS), n=1)
            meant[k] = close[0] if close else None
            problems.append(f"search.optuna: unknown key '{k}'"
                            + (f" (did you mean {close[0]}?)" if close else "")
                            + f"; known keys are {', '.join(sorted(SEARCH_KEYS))}")
    from orchestrator.trials import _is_number

    n_trials = opts.get("n_trials")
    if "n_trials" in meant.values():
        pass  # (its misspelling is said above: not a second time as missing)
    elif not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        problems.append(f"search.optuna.n_trials={n_trials!r}: give the trials per study, a "
                        "whole number >= 1" + (
                            f", written out (YAML reads {n_trials} as text)"
                            if isinstance(n_trials, str) and _is_number(n_trials) else ""))
    per_slice, shape_problems = per_slice_axes(opts.get("per_slice"))
    problems += shape_problems
    problems += [f"search.optuna.per_slice: '{k}' is not a grid axis; add it to grid or "
                 "remove it from per_slice" if k != "seed" else
                 "search.optuna.per_slice: 'seed': a sweep has one study per seed already (its "
                 "`seeds`); remove seed from per_slice" for k in per_slice if k not in grid]
    sampler, sampler_args = _named(opts.get("sampler", DEFAULT_SAMPLER), "sampler", SAMPLERS,
                                   problems)
    pruner, pruner_args = _named(opts.get("pruner", "none"), "pruner", PRUNERS, problems)
    if pruner == HALVING:
        problems += _halving_problems(pruner_args, grid, per_slice)
    if pruner == "hyperband":
        factor = pruner_args.get("reduction_factor", 3)
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
            problems.append(f"search.optuna.pruner.hyperband.reduction_factor={factor!r}: give "
                            "a whole number >= 2 (Optuna's default is 3)")
        for key, default in (("min_resource", 1), ("max_resource", "auto")):
            value = pruner_args.get(key, default)
            if not (value == "auto" and key == "max_resource") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                problems.append(f"search.optuna.pruner.hyperband.{key}={value!r}: give a whole "
                                f"number of evaluations >= 1{' or auto' * (key == 'max_resource')}"
                                f" (Optuna's default is {default})")
        low, high = pruner_args.get("min_resource", 1), pruner_args.get("max_resource", "auto")
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (low, high)) \
                and high < low:
            # (Optuna then makes no bracket, and prunes nothing without a word)
            problems.append(f"search.optuna.pruner.hyperband: max_resource={high} is below "
                            f"min_resource={low}: give max_resource >= min_resource, or auto")
    objective = str(opts.get("objective", DEFAULT_OBJECTIVE))
    if objective not in OBJECTIVES:
        problems.append(f"search.optuna.objective={objective!r}: give a value every trial's "
                        f"summary holds, one of {', '.join(OBJECTIVES)} (the default: "
                        f"{DEFAULT_OBJECTIVE})")
    elif pruner in ("median", "hyperband") and objective not in LOSS_OBJECTIVES:
        problems.append(f"search.optuna.pruner={pruner} stops trials on their eval loss, but "
                        f"the study minimises {objective}: use pruner: none (or halving), or "
                        "a loss objective")
    storage = opts.get("storage")
    if storage is not None and not isinstance(storage, str):
        problems.append(f"search.optuna.storage={storage!r}: give an RDB URL, e.g. "
                        "sqlite:////abs/path/optuna.db or postgresql://host/db, or leave it "
                        "out (a SQLite file beside the tracking store)")
    seed = opts.get("seed", 0)
    if not isinstance(seed, int):
        problems.append(f"search.optuna.seed={seed!r}: give a whole number")
    if problems:
        return None, problems
    search = OptunaSearch(n_trials=n_trials, per_slice=tuple(str(k) for k in per_slice),
                          sampler=sampler, sampler_args=sampler_args, seed=seed, pruner=pruner,
                          pruner_args=pruner_args, objective=objective,
                          storage=opts.get("storage"))
    return search, _construction_problems(search)


def _halving_problems(args: dict, grid: dict[str, str], per_slice: list) -> list[str]:
    """What `pruner: halving` needs: budgets to climb, and a whole reduction factor >= 2."""
    problems = [f"search.optuna.pruner.halving: unknown option '{k}'; the one option is "
                "reduction_factor" for k in args if k != "reduction_factor"]
    factor = args.get("reduction_factor", 2)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        problems.append(f"search.optuna.pruner.halving.reduction_factor={factor!r}: give a "
                        "whole number >= 2 (2 keeps the best half of each budget)")
    example = "such as train.tokens: choice(1_000_000, 2_000_000, 4_000_000)"
    if TOKENS_KEY in per_slice:
        problems.append("search.optuna.pruner=halving climbs the train.tokens budgets: remove "
                        "train.tokens from search.optuna.per_slice")
    elif TOKENS_KEY not in grid:
        problems.append("search.optuna.pruner=halving needs budgets to climb: add a grid axis "
                        f"{example}")
    else:
        dist, found = distribution(TOKENS_KEY, grid[TOKENS_KEY], budgets=True)
        if not found and (not hasattr(dist, "choices") or len(dist.choices) < 2):
            problems.append(f"search.optuna.pruner=halving: grid.train.tokens="
                            f"{grid[TOKENS_KEY]!r} must be a choice of two budgets or more, "
                            f"{example}")
        problems += found
    return problems


def _construction_problems(search: OptunaSearch) -> list[str]:
    """Build the sampler and pruner once, so a bad option is reported before any work."""
    problems = []
    for build, key, name in ((make_sampler, "sampler", search.sampler),
                             (make_pruner, "pruner", search.pruner)):
        try:
            build(search, study_name="check")
        except ImportError as err:
            problems.append(f"search.optuna.{key}={name} needs the package {err.name!r}: "
                            f"pip install {err.name}, or choose another {key}")
        except TypeError as err:  # an option the class does not take
            problems.append(f"search.optuna.{key}={name}: {_option_problem(err, key, name)}")
        except ValueError as err:
            problems.append(f"search.optuna.{key}={name}: {err}; fix its options")
    return problems


def sampler_seed(search: OptunaSearch, study_name: str, num_trials: int = 0) -> int:
    """The seed of a study's sampler (see `make_sampler`)."""
    return (search.seed * 1_000_003 + zlib.crc32(study_name.encode())
            + num_trials * 7919) % 2**31


def _option_problem(err: TypeError, key: str, name: str) -> str:
    """An option Optuna's class does not take, said with the ones it does (the closest
    first): "MedianPruner.__init__() got an unexpected keyword argument 'n_warmup'" named
    neither."""
    import difflib
    import inspect

    import optuna

    given = re.search(r"unexpected keyword argument '([^']+)'", str(err))
    cls = getattr(optuna.samplers if key == "sampler" else optuna.pruners,
                  (SAMPLERS if key == "sampler" else PRUNERS)[name])
    taken = [p for p in inspect.signature(cls).parameters if p not in ("self", "seed")]
    if given is None or not taken:
        return f"{err}; fix its options"
    near = difflib.get_close_matches(given[1], taken, n=1)
    return (f"{given[1]} is not an option of Optuna's {cls.__name__}"
            + (f" (did you mean {near[0]}?)" if near else "")
            + f"; its options: {', '.join(taken)}")


def make_sampler(search: OptunaSearch, *, study_name: str, num_trials: int = 0):
    """The study's sampler, seeded per study (so that slices do not all draw the same points)
    and per number of trials the study already has: a sampler's random stream restarts with
    it, so a driver resuming a study with the first driver's seed would draw that driver's
    first points again. Model-based samplers start from `STARTUP_TRIALS` random trials."""
    import warnings

    import optuna

    # QMC is marked experimental; that is no news to a user.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = sampler_seed(search, study_name, num_trials)
    args = dict(search.sampler_args)
    if search.sampler in ("gp", "tpe"):
        args.setdefault("n_startup_trials", STARTUP_TRIALS)
    if search.sampler == "cmaes":
        import cmaes  # noqa: F401  (optional: Optuna imports it only when sampling)
    cls = getattr(optuna.samplers, SAMPLERS[search.sampler])
    return cls(seed=seed, **args)


def startup_points(dists: dict, num_points: int, *, seed: int) -> list[dict]:
    """A Latin hypercube of `num_points` over the searched space: each axis cut into as many
    equal strata (in log where the axis is log), one point in each, strata paired at random.
    A model-based study starts from these rather than from random draws, which on three
    decades of LR often fall together and leave the model to explore the edges."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points: list[dict] = [{} for _ in range(num_points)]
    for key, dist in dists.items():
        units = (rng.permutation(num_points) + rng.random(num_points)) / num_points
        for point, u in zip(points, units, strict=True):
            point[key] = _from_unit(dist, float(u))
    return points


def _from_unit(dist, u: float):
    """The value at quantile `u` of a distribution's range (log scale where it is log)."""
    if hasattr(dist, "choices"):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    low, high = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
    value = low + u * (high - low)
    value = math.exp(value) if dist.log else value
    if hasattr(dist, "step") and isinstance(dist.low, int):  # IntDistribution
        step = dist.step or 1
        value = dist.low + round((value - dist.low) / step) * step
        return int(min(max(value, dist.low), dist.high))
    return min(max(value, dist.low), dist.high)


def make_pruner(search: OptunaSearch, *, study_name: str = ""):
    """The study's pruner (`NopPruner` for `none`)."""
    import optuna

    args = {} if search.pruner == HALVING else search.pruner_args
    return getattr(optuna.pruners, PRUNERS[search.pruner])(**args)


# -- the grid as slices and distributions ---------------------------------------------------

@dataclass(frozen=True)
class Slice:
    """One study's fixed part: the per-slice axes' values and a seed, as overrides."""

    point: tuple[str, ...]

    @property
    def label(self) -> str:
        return " ".join(self.point)


def distribution(key: str, expr: str, *, budgets: bool = False) -> tuple[object, list[str]]:
    """The Optuna distribution a searched grid expression maps to (or None), and problems
    (`budgets`: halving's train.tokens, whose problems it says itself)."""
    import optuna.distributions as od

    from orchestrator.spec import glob_problem, parse_reason
    from trainer.identity import whole_number_key

    try:
        override = OverridesParser.create().parse_overrides([f"{key}={expr}"])[0]
    except OverrideParseException as err:
        return None, [f"grid.{key}: cannot parse '{expr}' ({parse_reason(err)}); use "
                      "Hydra's sweep grammar, e.g. tag(log, interval(1e-4, 1e-1))"]
    if override.value_type.name == "GLOB_CHOICE_SWEEP":  # (no tags, nothing to sample)
        return None, [glob_problem(key)]
    if not override.is_sweep_override():
        return None, []  # a fixed value
    sweep = override.value()
    kind, tags = type(sweep).__name__, set(sweep.tags)
    log = "log" in tags
    problems = [f"grid.{key}: tag '{t}' has no meaning in a search; only tag(log, ...) does"
                for t in sorted(tags - {"log"})]
    if kind == "IntervalSweep":
        if sweep.start >= sweep.end or (log and sweep.start <= 0):
            fix = (f"give interval({sweep.end}, {sweep.start})" if sweep.start > sweep.end
                   else "give two different ends" if sweep.start == sweep.end
                   else "give a low end above 0, e.g. 1e-5, or drop tag(log, ...)")
            problems.append(f"grid.{key}: '{expr}' needs low < high" + (" and low > 0 on a log "
                            "scale" if log else "") + f"; {fix}")
            return None, problems
        if not budgets and whole_number_key(key):  # (each point a float the config refuses;
            # halving's train.tokens: it says what it needs, a choice of budgets)
            low, high = math.ceil(sweep.start), math.floor(sweep.end)
            form = f"range({low}, {high + 1})"
            problems.append(f"grid.{key}: '{expr}' draws real numbers, but {key} is a whole "
                            f"number: search it with {f'tag(log, {form})' if log else form}")
            return None, problems
        return od.FloatDistribution(sweep.start, sweep.end, log=log), problems
    if kind == "RangeSweep":
        ints = all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step))
        if not ints:
            problems.append(f"grid.{key}: range() with float bounds or step has no Optuna "
                            "distribution; use interval() for floats or choice()")
        elif sweep.step <= 0 or sweep.stop - sweep.step < sweep.start:
            problems.append(f"grid.{key}: '{expr}' is empty; give start < stop, step > 0")
        elif log and (sweep.step != 1 or sweep.start < 1):
            problems.append(f"grid.{key}: tag(log, range()) needs step 1 and start >= 1")
        else:
            high = sweep.start + (sweep.stop - 1 - sweep.start) // sweep.step * sweep.step
            return od.IntDistribution(sweep.start, high, log=log, step=sweep.step), problems
        return None, problems
    if kind == "ChoiceSweep":
        values = list(override.sweep_string_iterator())
        if not values:
            problems.append(f"grid.{key}: '{expr}' has no values")
            return None, problems
        return od.CategoricalDistribution(values), problems
    problems.append(f"grid.{key}: '{expr}' ({kind}) has no Optuna distribution; use "
                    "interval, tag(log, interval), choice or range")
    return None, problems


def search_space(grid: dict[str, str], search: OptunaSearch, seeds: tuple[int, ...]
                 ) -> tuple[list[Slice], dict, tuple[str, ...], list[str]]:
    """(slices, searched distributions, fixed overrides, problems) of a searched grid."""
    from orchestrator.spec import SweepSpec
    from orchestrator.trials import grid_axes

    problems, fixed, dists = [], [], {}
    # Under halving the budgets are per-slice too: one study per budget (the rungs).
    per_slice = (*search.per_slice, TOKENS_KEY) if search.pruner == HALVING else \
        search.per_slice
    slice_grid = {k: v for k, v in grid.items() if k in per_slice}
    axes, found = grid_axes(SweepSpec(name="", grid=slice_grid))
    problems += [p.replace("or search: optuna", "or remove the axis from per_slice")
                 for p in found]
    for key, expr in grid.items():
        if key in per_slice:
            continue
        dist, found = distribution(key, expr)
        problems += found
        if dist is not None:
            dists[key] = dist
        elif not found:
            fixed.append(f"{key}={expr}")
    if not dists and not problems:
        problems.append("search: optuna has nothing to search: give at least one grid axis "
                        "outside per_slice, e.g. optim.lr: tag(log, interval(1e-4, 1e-1))")
    # (a value given twice is one slice, one study, as a grid trains it once)
    axes = {key: _distinct(values) for key, values in axes.items()}
    slices = [Slice(tuple(f"{k}={v}" for k, v in zip(axes, values, strict=True))
                    + (f"seed={seed}",))
              for values in itertools.product(*axes.values()) for seed in seeds]
    return slices, dists, tuple(fixed), problems


def override_value(value: object) -> str:
    """An asked value as a Hydra override value (floats round-trip exactly)."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def corners(dists: dict) -> list[dict]:
    """Points that check the searched space before anything runs: its low and high corners,
    and each categorical value once (the other axes at their low end)."""
    low = {k: d.choices[0] if hasattr(d, "choices") else d.low for k, d in dists.items()}
    high = {k: d.choices[-1] if hasattr(d, "choices") else d.high for k, d in dists.items()}
    points = [low, high]
    for key, dist in dists.items():
        points += [{**low, key: c} for c in getattr(dist, "choices", ())[1:-1]]
    return points


CHECKED_INT_VALUES = 64
"""An integer range of at most this many values has each checked before anything runs."""


def inner_int_points(dists: dict) -> dict[str, list[dict]]:
    """Per integer range of at most `CHECKED_INT_VALUES` values, a point for each value
    between its ends (the other axes at their low end): a batch size of range(4, 17) under a
    micro-batch of 4 is valid at both ends, and 5 is not."""
    import optuna.distributions as od

    low = corners(dists)[0]
    return {key: [{**low, key: v} for v in range(dist.low + dist.step, dist.high, dist.step)]
            for key, dist in dists.items()
            if isinstance(dist, od.IntDistribution) and not dist.log
            and (dist.high - dist.low) // dist.step < CHECKED_INT_VALUES}


@dataclass
class SearchPlan:
    """A searched sweep's studies: one per slice, each over the same distributions."""

    spec: object
    """The `orchestrator.spec.SweepSpec` (storage root absolute)."""
    search: OptunaSearch
    slices: list[Slice]
    dists: dict
    fixed: tuple[str, ...]
    """Grid keys with one value: overrides of every trial."""
    rungs: object = None
    """`orchestrator.halving.Rungs` under `pruner: halving`, else None."""
    composer: object = None

    def rung(self, slice_: Slice) -> int:
        """The rung of a slice's study under halving (its budget's place), else 0."""
        if self.rungs is None:
            return 0
        value = next(p for p in slice_.point if p.startswith(TOKENS_KEY + "="))
        return self.rungs.values.index(value.split("=", 1)[1])

    def ladders(self) -> list[list[Slice]]:
        """The slices grouped by everything but the budget, each group by rung; one group
        per slice without halving."""
        groups: dict[tuple, list[Slice]] = {}
        for s in self.slices:
            base = tuple(p for p in s.point if not (self.rungs and p.startswith(TOKENS_KEY)))
            groups.setdefault(base, []).append(s)
        return [sorted(g, key=self.rung) for g in groups.values()]

    def study_name(self, slice_: Slice) -> str:
        """The study's name in the storage: the sweep's name and the slice's point."""
        return f"{self.spec.name}: {slice_.label}"

    def trial(self, slice_: Slice, params: dict, problems: list[str] | None = None):
        """The trial for asked `params` in `slice_` (None, with `problems` filled, if its
        config does not validate)."""
        from orchestrator.trials import make_trial
        from trainer.compose import Composer
        from trainer.errors import ConfigError

        if self.composer is None:
            self.composer = Composer()
        found = [] if problems is None else problems
        point = (*self.fixed, *(f"{k}={override_value(params[k])}" for k in self.dists),
                 *slice_.point)
        trial = make_trial(self.spec, point, found, self.composer)
        if trial is None and problems is None:
            raise ConfigError(found)
        return trial


def _distinct(values: list[str]) -> list[str]:
    """An axis's values, each once, in order: `8192` and `8_192` (or `8` and `8.0` for a
    number) are one value."""
    def same(value: str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    seen, distinct = set(), []
    for value in values:
        if same(value) not in seen:
            seen.add(same(value))
            distinct.append(value)
    return distinct


def axes_at_ends(spec, dists: dict) -> dict[str, list[str]]:
    """A searched spec as a grid: its per-slice axes' values and its searched axes' ends
    (what its composition and the keys its trials read are judged at)."""
    from orchestrator.trials import grid_axes

    slice_axes, _ = grid_axes(type(spec)(name="", grid={k: v for k, v in spec.grid.items()
                                                         if k not in dists}))
    return {**slice_axes, **{key: [override_value(p[key]) for p in corners({key: dist})]
                             for key, dist in dists.items()}}


def plan_search(spec) -> SearchPlan:
    """The studies of a searched spec, every slice checked at the corners of the searched
    space; one ConfigError lists every problem (grammar mapping and trial configs)."""
    from orchestrator.trials import _composition_problems, dedupe
    from trainer.compose import Composer
    from trainer.errors import ConfigError

    search = spec.optuna
    slices, dists, fixed, problems = search_space(spec.grid, search, spec.seeds)
    # Every key and value that does not compose, at once (a trial's composition stops at the
    # first): the per-slice axes' values and the searched axes' ends, over the base.
    composing = _composition_problems(spec, axes_at_ends(spec, dists), Composer())
    if problems or composing:
        raise ConfigError(dedupe(problems + composing))
    plan = SearchPlan(spec, search, slices, dists, fixed, rungs=_rungs(spec.grid, search))
    for slice_ in slices:
        for point in corners(dists):
            plan.trial(slice_, point, problems)
    if problems:  # (and the values between a range's ends, said with its end: one at a time)
        raise ConfigError(dedupe(problems + [p for slice_ in slices
                                             for p in _inner_problems(plan, slice_)]))
    return plan


def finite_points(dists: dict) -> int | None:
    """How many points a searched space holds when every axis is a choice or an integer
    range; None when one is an interval (a continuum)."""
    count = 1
    for dist in dists.values():
        if hasattr(dist, "choices"):
            count *= len(dist.choices)
        elif isinstance(getattr(dist, "step", None), int) and isinstance(dist.low, int):
            count *= (dist.high - dist.low) // dist.step + 1
        else:
            return None
    return count


MAX_LISTED_POINTS = 100_000
"""A finite space of more points than this is not listed (`all_points`): a study over it
asks a point it has tried about as rarely as over a continuum."""


def all_points(dists: dict) -> list[dict] | None:
    """Every point of a finite searched space, in a fixed order; None for a continuum or a
    space of more than `MAX_LISTED_POINTS`."""
    points = finite_points(dists)
    if points is None or points > MAX_LISTED_POINTS:
        return None
    values = [list(d.choices) if hasattr(d, "choices") else
              list(range(d.low, d.high + 1, d.step)) for d in dists.values()]
    return [dict(zip(dists, combo, strict=True)) for combo in itertools.product(*values)]


FIT_LRS = 3
"""LRs `sweep fit` needs at a budget for an LR optimum there (a vertex, not an edge)."""


def space_notes(plan: SearchPlan) -> list[str]:
    """A note when a study's n_trials reaches the points its space holds: it then tries
    each point once and stops short of n_trials (`Studies.ask`); a grid does the same. And
    one when halving leaves the budgets below the last with fewer LRs than a fit needs."""
    return _halving_notes(plan) + _finite_notes(plan) + _group_time_notes(plan)


def _group_time_notes(plan: SearchPlan) -> list[str]:
    """A time objective under fusion: a fused member's `final/wall_s` is its group's (the
    members train as one), so every member of a group tied and the study learnt nothing."""
    from orchestrator.fusion import fusion_setting, searched_fusion_off

    objective = plan.search.objective
    if "wall_s" not in objective or \
            not fusion_setting(plan.spec) or searched_fusion_off(plan) is not None:
        return []
    fuse = str(plan.spec.fuse).lower()  # (as the spec writes it: true, or a group size)
    return [f"search.optuna.objective={objective} under fuse: {fuse}: a fused "
            "member's time is its whole group's (they train as one), so the members of a "
            "group tie; give --fuse off (or fuse: false) to time each trial alone"]


def _halving_notes(plan: SearchPlan) -> list[str]:
    """Halving with few trials: `n_trials: 2` over 4 budgets climbs 2, 1, 1, 1 LRs, and no
    budget had the 3 LRs a fit needs, without a word (the README gave the rule)."""
    rungs, n_trials = plan.rungs, plan.search.n_trials
    if rungs is None or len(rungs.budgets) < 2:
        return []
    held = [rungs.nominal(n_trials, r) for r in range(len(rungs.budgets))]
    if held[-2] >= FIT_LRS:  # (the last budget holds the best few: an optimum there is rare)
        return []
    enough = next(n for n in itertools.count(n_trials)
                  if rungs.nominal(n, len(rungs.budgets) - 2) >= FIT_LRS)
    reach = sum(h >= FIT_LRS for h in held)
    return [f"under halving (reduction_factor {rungs.reduction_factor}) each slice's budgets "
            f"hold {', '.join(map(str, held))} LRs of search.optuna.n_trials={n_trials}: "
            f"sweep fit needs {FIT_LRS} or more at a budget for an LR optimum there, which "
            + (f"only the first {reach} budget{'s' * (reach != 1)} reach" if reach else
               "no budget reaches")
            + f"; search.optuna.n_trials={enough} gives {FIT_LRS} at the last budget but one"]


def _finite_notes(plan: SearchPlan) -> list[str]:
    points = finite_points(plan.dists)
    n_trials = plan.search.n_trials
    if points is None or n_trials < points:
        return []
    sizes = {key: finite_points({key: d}) for key, d in plan.dists.items()}
    axes = ", ".join(f"{key}: {n} {'choices' if hasattr(plan.dists[key], 'choices') else 'values'}"
                     for key, n in sizes.items() if n > 1)
    held = f" ({axes})" if axes else ""  # (one point: no axis with more than one value)
    return [f"search.optuna.n_trials={n_trials} reaches the {points} point"
            f"{'s' * (points != 1)} the searched space holds{held}: each study tries "
            f"every point once and stops at {points} trials; a grid (the spec without "
            "`search:`) trains the same, or search an interval"]


def check_range_values(plan: SearchPlan) -> None:
    """Each value between the ends of a short searched integer range (`inner_int_points`),
    in every slice, before a launch: a study asks them like any other. (Apart from
    `plan_search`, which `status` takes too: a sweep launched before this check is still
    said.)

    Raises:
        ConfigError: per range, its first value that does not run, and how many more.
    """
    from orchestrator.trials import dedupe
    from trainer.errors import ConfigError

    problems = [p for slice_ in plan.slices for p in _inner_problems(plan, slice_)]
    if problems:
        raise ConfigError(dedupe(problems))


def _inner_problems(plan: SearchPlan, slice_: Slice) -> list[str]:
    """Per searched integer range (`inner_int_points`), the first of its values between its
    ends that does not validate in `slice_`, with how many more do not: a study asks them
    like any other (each trial failed, with no word of why)."""
    out = []
    for key, points in inner_int_points(plan.dists).items():
        bad, first = [], []
        for point in points:
            found = []
            if plan.trial(slice_, point, found) is None:
                bad.append(str(point[key]))
                first = first or found
        if len(bad) > 1:
            out.append(f"{first[0]}; {len(bad) - 1} more values of grid.{key}="
                       f"{plan.spec.grid[key]} fail too ({', '.join(bad[1:])}): search a "
                       "range each of whose values runs")
        else:
            out += first
    return out


def _rungs(grid: dict[str, str], search: OptunaSearch):
    """The budgets a halving search climbs, smallest first (None for other pruners)."""
    from orchestrator.halving import DEFAULT_REDUCTION_FACTOR, Rungs
    from orchestrator.spec import SweepSpec
    from orchestrator.trials import grid_axes

    if search.pruner != HALVING:
        return None
    axes, _ = grid_axes(SweepSpec(name="", grid={TOKENS_KEY: grid[TOKENS_KEY]}))
    values = sorted(_distinct(axes[TOKENS_KEY]), key=lambda v: float(v))
    return Rungs(budgets=tuple(int(float(v)) for v in values), values=tuple(values),
                 reduction_factor=search.pruner_args.get("reduction_factor",
                                                         DEFAULT_REDUCTION_FACTOR))
