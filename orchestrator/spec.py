"""Sweep specs: `sweeps/NAME.yaml` → validated spec → the trials of its grid.

The grid uses Hydra's own sweep grammar (`choice`, `range`, `tag(log, …)`), parsed by Hydra's
override parser; a grid is the cartesian product of its axes times the seeds. Every trial is a
full trainer config composed through `trainer.compose`, so its id is the trainer's config id and
a trial that was ever finished is recognised whatever sweep or extension asks for it again.
Every problem of a spec is collected into one `ConfigError` before anything starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from trainer.compose import Composer
from trainer.config import MAX_SEED, Config
from trainer.errors import ConfigError
from trainer.flops import flops_per_token
from trainer.identity import config_id

SPEC_KEYS = {"name", "overrides", "grid", "seeds", "resources", "max_concurrent", "retries",
             "search", "storage_root", "share_prefix", "fuse"}
RESOURCE_KEYS = {"gpus", "cpus", "world_size"}


@dataclass(frozen=True)
class Resources:
    """What one process of a trial holds; a trial of `world_size` processes holds that many
    times as much."""

    gpus: float = 0.0
    """GPUs per process; fractional (e.g. 0.25) packs tiny proxies onto one GPU."""
    cpus: float = 1.0
    """CPUs per process."""
    world_size: int = 1
    """Processes per trial (FSDP ranks); sets the trial's `train.world_size`."""

    def per_trial(self) -> Resources:
        """What a whole trial holds. It runs as one Ray task with every rank's share, which
        keeps the ranks on one node (what a STRICT_PACK placement group would do); the task
        is rank 0 and starts the other ranks itself."""
        w = self.world_size
        return Resources(gpus=self.gpus * w, cpus=self.cpus * w, world_size=w)


@dataclass(frozen=True)
class SweepSpec:
    """A sweep as its YAML file gives it, plus command-line additions."""

    name: str
    overrides: tuple[str, ...] = ()
    """Hydra overrides applied to every trial."""
    grid: dict[str, str] = field(default_factory=dict)
    """Config key → Hydra sweep expression."""
    seeds: tuple[int, ...] = (0,)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    retries: int = 2
    search: str | dict = "grid"
    """`grid`, or {"optuna": {...}} (checked by `orchestrator.search_space.parse_search`)."""
    storage_root: str = "runs"
    """Where trial directories live (a path every worker can reach)."""
    share_prefix: bool = True
    """Token budgets of one family share a trunk (`orchestrator.families`); false (or
    `--no-share`) trains every trial from scratch."""
    fuse: bool | int | str = "auto"
    """Trials equal but for per-member scalars train as fused groups (`orchestrator.fusion`):
    "auto" (the default: on for trials that hold no GPU, off for GPU trials, for the reasons
    given there), true (a group size by the rule there), false, or K members at most per
    group."""
    flagged: dict = field(default_factory=dict, compare=False)
    """Keys a command's flags (`--no-share`, `--fuse`) set for its launch only, with the
    spec's own values, which `to_dict` (what is stored) keeps (`with_flag`)."""

    stored: bool = field(default=False, compare=False)
    """Read from a sweep's record (`sweep resume`, `extend`): launched before, so checks that
    came later (`unread_problems`) do not stop it."""

    anchored: bool = field(default=False, compare=False)
    """Reading it made relative data files absolute (`anchored`): a stored spec from before
    then, which a launch stores again as read (`sweep status` from another folder)."""

    def to_dict(self) -> dict:
        """Plain data, as stored with the sweep's parent run (flags of one command not in it)."""
        out = dataclasses.asdict(self)
        out["overrides"], out["seeds"] = list(self.overrides), list(self.seeds)
        out.update(out.pop("flagged"))
        del out["stored"], out["anchored"]
        return out

    def with_flag(self, key: str, value) -> SweepSpec:
        """The spec with `key` set for this launch only (a command-line flag)."""
        return dataclasses.replace(self, **{key: value},
                                   flagged={key: getattr(self, key), **self.flagged})

    @property
    def optuna(self):
        """The checked `search.optuna` (`orchestrator.search_space.OptunaSearch`), or None
        for a grid."""
        from orchestrator.search_space import parse_search

        search, problems = parse_search(self.search, self.grid)
        if problems:
            raise ConfigError(problems)
        return search

    def with_overrides(self, args: Sequence[str]) -> SweepSpec:
        """Command-line overrides: a sweep expression sets a grid axis, a value the base,
        `search.optuna.KEY=VALUE` the search."""
        grid, base, search = dict(self.grid), list(self.overrides), self.search
        seeds, root = self.seeds, self.storage_root
        problems: list[str] = []
        for arg in args:
            try:
                key, _, expr = arg.partition("=")
                if key == "seeds":
                    seeds = _seeds_override(expr)
                    continue
                if key.lstrip("+") == "storage_root":  # the spec's (each trial's run directory)
                    if _is_sweep(arg):
                        raise ConfigError([f"{arg}: a sweep keeps its trials in one "
                                           "storage_root; give one folder, or a spec per "
                                           "folder"])
                    root = expr
                    continue
                if not key.lstrip("+~"):
                    raise ConfigError([f"{arg}: an override needs a key, e.g. optim.lr=1e-3"])
                if (why := sweep_owned(key)) is not None:
                    raise ConfigError([f"{arg}: {why}"])
                try:
                    parsed = OverridesParser.create().parse_overrides([arg])[0]
                except OverrideParseException as err:
                    raise ConfigError([f"{arg}: cannot parse it ({parse_reason(err)}); "
                                       "e.g. optim.lr=1e-3, or 'optim.lr=choice(1e-3, 3e-3)'"]) \
                        from None
                refuse_spec_key(key, expr)
                if key.lstrip("+~") == "seed":
                    try:
                        given = (list(parsed.sweep_string_iterator())
                                 if parsed.is_sweep_override() else [expr])
                    except ValueError:  # range(0, 1, 0): the example then
                        given = ["0", "1"]
                    raise ConfigError([f"{arg}: a sweep's trials take their seed from its `seeds` "
                                       f"list; give seeds=[{','.join(given)}] (sweep extend adds "
                                       "them)"])
                if key.startswith("search.optuna."):
                    search = _with_search_option(search, key.removeprefix("search.optuna."), expr)
                elif _is_sweep(arg) and key.startswith("~"):
                    raise ConfigError([f"{arg}: ~ deletes a key, and a sweep of values makes a "
                                       f"grid axis; give {arg.lstrip('~')} to sweep it"])
                elif _is_sweep(arg):
                    grid[key] = expr  # (and the base's value of it is no longer the spec's)
                    base = [o for o in base if o.partition("=")[0].lstrip("+") != key]
                else:
                    if list(grid) == [key]:  # (else "the spec's grid is empty", of a spec with it)
                        raise ConfigError([f"{arg} replaces grid.{key}, the spec's only axis; "
                                           f"give '{key}=choice({expr})' for a sweep of that "
                                           "one value"])
                    grid.pop(key, None)
                    base = [o for o in base if o.partition("=")[0] != key] + [anchored(arg)]
            except ConfigError as err:  # (every mistake of the command line said at once)
                problems += [p for p in err.problems if p not in problems]
        if problems:
            raise ConfigError(problems)
        return dataclasses.replace(self, grid=grid, overrides=tuple(base), search=search,
                                   seeds=seeds, storage_root=root)


def _seeds_override(expr: str) -> tuple[int, ...]:
    """`seeds=[0,1]` or `seeds=choice(0,1)` / `range(0,3)` on the command line."""
    try:
        value = yaml.safe_load(expr)
    except yaml.YAMLError:
        value = None
    if isinstance(value, int) and not isinstance(value, bool):  # one seed, or that many?
        raise ConfigError([f"seeds={expr}: give a list: seeds=[{expr}] for seed {expr}, or "
                           f"seeds=[0,1,2] for three seeds"])
    if not isinstance(value, list):
        try:
            override = OverridesParser.create().parse_overrides([f"seeds={expr}"])[0]
            value = [int(v) for v in override.sweep_string_iterator()] \
                if override.is_sweep_override() else None
        except (OverrideParseException, ValueError):
            value = None
    if not value or not all(isinstance(s, int) and not isinstance(s, bool)
                            and 0 <= s <= MAX_SEED for s in value):
        raise ConfigError([f"seeds={expr}: give a list of whole numbers from 0 to 2^63 - 1, "
                           "e.g. seeds=[0,1,2]"])
    return tuple(dict.fromkeys(value))


def parse_reason(err: Exception) -> str:
    """What Hydra says is wrong with an override it cannot parse: the line that says why
    (its first only repeats the override), with how to write a null in a sweep."""
    lines = [line for line in str(err).splitlines() if not line.startswith("See https://")]
    reason = lines[1] if len(lines) > 1 and lines[0].startswith("Error parsing") else lines[0]
    if "NoneType is incompatible" in reason:
        reason = (reason.split(": mismatch type")[0] + ": null cannot be a sweep's value; "
                  "quote it, e.g. choice('null', 512)")
    return reason


def glob_problem(key: str) -> str:
    """glob() picks config-group options by pattern, which a sweep does not expand: the
    options to list instead, for a group (else an example)."""
    from trainer.config import CONF_DIR

    group = key.lstrip("+~")
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) \
        if "." not in group and (CONF_DIR / group).is_dir() else []
    example = f"choice({', '.join(options)})" if options else "choice(a, b)"
    return f"grid.{key}: glob() is not supported in a sweep; list the values, e.g. {example}"


def refuse_spec_key(key: str, value: str) -> None:
    """An override names trainer config keys; a spec key given as one (`fuse=off`) would
    otherwise be refused as an unknown config key, with no word of where it goes."""
    top = key.lstrip("+~").partition(".")[0]
    if top not in SPEC_KEYS or top in ("search", "storage_root"):  # (a config key too)
        return
    flags = {"fuse": f" or --fuse {value}", "share_prefix": " or --no-share",
             "max_concurrent": f" or --max-concurrent {value}"}
    raise ConfigError([f"{key}={value} sets the sweep spec's `{top}`, not the trainer's "
                       f"config: write it in the spec{flags.get(top, '')}"])


def root_path(root: str) -> Path:
    """A spec's storage_root as the absolute folder it names (`~` expanded)."""
    return Path(root).expanduser().resolve()


def sweep_owned(key: str) -> str | None:
    """Why a trainer key cannot be set in a sweep's overrides or grid (the sweep sets it for
    every trial), with where to say it instead; None for any other key."""
    key = key.lstrip("+~")
    if key == "train.world_size":
        return ("a sweep sets each trial's train.world_size from resources.world_size; give "
                "that in the spec")
    if key in ("run_dir", "checkpoint_dir"):
        # one folder for every trial: each would find the first one's end there as its own
        return (f"a sweep gives each trial its own folder (STORAGE_ROOT/<trial id>), and one "
                f"{key} for all would mix them; remove it (the spec's storage_root moves them)")
    if key == "storage_root":
        return ("the trials' folder is the spec's own key: write storage_root: FOLDER at the "
                "top of the spec (or storage_root=FOLDER on the command line)")
    if key == "tracking" or key.startswith("tracking."):
        return ("a sweep records every trial in its own store: give --tracking-uri (or "
                "MLFLOW_TRACKING_URI) to the sweep command instead")
    return None


def _with_search_option(search: str | dict, key: str, value: str) -> dict:
    if not (isinstance(search, dict) and "optuna" in search):
        raise ConfigError(f"search.optuna.{key}={value}: this sweep is a grid (search: grid); "
                          "set search: {optuna: {...}} in its spec to search it")
    return {"optuna": {**search["optuna"], key: yaml.safe_load(value)}}


@dataclass(frozen=True)
class Trial:
    """One point of the grid: its overrides, its resolved config and its id."""

    overrides: tuple[str, ...]
    cfg: Config
    trial_id: str
    flops: float

    @property
    def label(self) -> str:
        return " ".join(self.overrides)


def _is_sweep(override: str) -> bool:
    try:
        return OverridesParser.create().parse_overrides([override])[0].is_sweep_override()
    except OverrideParseException:
        return False


FUSE_VALUES = ("give auto (the default: on for CPU trials), true or on (a group size chosen "
               "for the cluster), false or off, or the most trials per group, a whole number "
               ">= 1 (1 keeps every trial alone)")


def parse_fuse(value: object) -> bool | int | str | None:
    """The `fuse` setting from a spec's value or `--fuse`'s text: "auto" (also for no value),
    True, False or a group-size cap >= 1; None when it is none of these. The spec and the
    command line take the same words (on/true/yes, off/false/no, any case) and numbers."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value >= 1 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    if text in ("on", "true", "yes"):
        return True
    if text in ("off", "false", "no"):
        return False
    if text.isdigit() and int(text) >= 1:
        return int(text)
    return None


class _OnceLoader(yaml.SafeLoader):
    """YAML's safe loader with a key given twice in one mapping an error (PyYAML keeps the
    last without a word: `fuse: 4` then `fuse: 2` ran with 2)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may
                continue  # be given again, explicitly, on purpose
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping (keep one)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file; every problem goes into one ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"sweep spec {path} is a folder: give one of its YAML files, e.g. "
                          f"{path}/demo.yaml")
    if not path.is_file():
        again = (f" (to run a recorded sweep again: sweep resume {path})"
                 if not path.suffix and len(path.parts) == 1 else "")
        raise ConfigError(f"sweep spec {path} does not exist: give the path of a "
                          f"sweeps/*.yaml{again}")
    try:
        raw = yaml.load(path.read_text(), Loader=_OnceLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        fix = ("indent with spaces, not tabs" if "'\\t'" in str(err.problem)
               else "quote a value holding ': ' or braces, e.g. 'choice({a: 1}, {a: 2})'"
               if "mapping values are not allowed" in str(err.problem) else "fix the file there")
        raise ConfigError(f"{where}: YAML error, {err.problem}; {fix}") from None
    return spec_from_dict(raw, source=str(path))


def spec_from_dict(raw: object, *, source: str = "spec", stored: bool = False) -> SweepSpec:
    """A `SweepSpec` from parsed YAML, or (`stored`) from the copy stored in MLflow: a spec an
    earlier version launched stays readable where checks added since would refuse its
    `seeds`, `max_concurrent` or `retries` (read as they ran: 0 concurrent = no cap)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a sweep spec is a mapping with at least `name` and `grid`")
    problems = [f"{source}: unknown key '{k}'; " + (
                    f"did you mean `{near[0]}`? " if (near := difflib.get_close_matches(
                        str(k), SPEC_KEYS, n=1)) else "")
                + f"known keys are {', '.join(sorted(SPEC_KEYS))}"
                for k in raw if k not in SPEC_KEYS]
    if not raw.get("name"):
        problems.append(f"{source}: the spec has no `name`; add name: SWEEP (the MLflow "
                        "experiment)")
    elif not stored and (str(raw["name"]).strip(" .") == "" or any(
            c in str(raw["name"]) for c in "/\\")):
        problems.append(f"{source}: name={raw['name']!r}: a sweep's name also names its "
                        "folders (outputs/fit/NAME): give one without / or \\, and not . or ..")
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict):
        problems.append(f"{source}: resources={resources!r}: give a mapping, e.g. resources: "
                        "{gpus: 0.25, cpus: 1}")
        resources = {}
    problems += [f"{source}: unknown key 'resources.{k}'; use gpus, cpus, world_size"
                 for k in resources if k not in RESOURCE_KEYS]
    for key in ("gpus", "cpus"):
        value = resources.get(key, 0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            problems.append(f"{source}: resources.{key}={value!r}: give a number >= 0"
                            + (" (a fraction shares one GPU)" if key == "gpus" else ""))
            resources = {k: v for k, v in resources.items() if k != key}
    if not stored and resources.get("cpus", 1) == 0 and not resources.get("gpus"):
        problems.append(f"{source}: resources.cpus=0 with no GPU: such trials would hold "
                        "nothing and all run at once on the machine's cores; give cpus > 0 "
                        "(e.g. 1, or 0.5 to run two per core)")
    root = raw.get("storage_root", "runs")
    if not stored and (not isinstance(root, str) or not root.strip()):
        problems.append(f"{source}: storage_root={root!r}: give the folder for the trials' "
                        "run directories, e.g. storage_root: runs")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list):
        problems.append(f"{source}: overrides={overrides!r}: give a list, e.g. overrides: "
                        "[model=tiny, data=synthetic]")
        raw = {**raw, "overrides": []}
    elif not stored:
        for o in map(str, overrides):
            key = o.partition("=")[0].lstrip("+~")
            if (why := sweep_owned(key)) is not None:
                problems.append(f"{source}: overrides: {o}: {why}")
            elif _is_sweep(o):
                problems.append(f"{source}: overrides: {o} is a sweep expression; move it to "
                                f"grid ({key}: {o.partition('=')[2]})")
    gpus = resources.get("gpus", 0) or 0
    if isinstance(gpus, (int, float)) and gpus > 1 and gpus != int(gpus):
        problems.append(f"{source}: resources.gpus={gpus}: above 1 a trial takes whole GPUs; "
                        "use an integer, or a fraction below 1")
    world = resources.get("world_size", 1)
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        problems.append(f"{source}: resources.world_size={world!r} must be a whole number >= 1")
    elif world > 1 and gpus not in (0, 1):
        problems.append(f"{source}: resources.gpus={gpus} with world_size={world}: each "
                        "process of a multi-process trial takes one whole GPU (gpus: 1) or "
                        "none (gpus: 0)")
    raw_grid = raw.get("grid") or {}
    if not isinstance(raw_grid, dict):
        problems.append(f"{source}: grid={raw_grid!r}: give a mapping of config key to "
                        "values, e.g. grid: {optim.lr: 'tag(log, choice(1e-3, 3e-3))'}")
        raw_grid = {}
    for k, v in raw_grid.items():
        if isinstance(v, dict):  # (nested keys: grid: {optim: {lr: ...}})
            problems.append(f"{source}: grid.{k}: give dotted keys, one axis each "
                            f"(e.g. {k}.{next(iter(v), 'key')}: choice(...)), not a nested "
                            "mapping")
        elif str(k).startswith("~"):  # (Hydra's own words: "Could not delete from config")
            problems.append(f"{source}: grid.{k}: ~ deletes a key, and a grid axis sweeps its "
                            f"values; write {str(k).lstrip('~')}: ... to sweep it, or put "
                            f"{k} in overrides to delete it from every trial")
        elif (why := sweep_owned(str(k))) is not None:
            problems.append(f"{source}: grid.{k}: {why}")
    raw_grid = {k: v for k, v in raw_grid.items() if not isinstance(v, dict)
                and not str(k).startswith("~") and sweep_owned(str(k)) is None}
    grid = {str(k): _expr(v) for k, v in raw_grid.items()}
    problems += [f"{source}: grid.{k} has no values; give e.g. {k}: choice(1, 2), or remove it"
                 for k, v in raw_grid.items() if v is None or v == []]
    search = raw.get("search", "grid")
    from orchestrator.search_space import DEFAULT_OBJECTIVE, OBJECTIVES, is_optuna, parse_search
    if stored and is_optuna(search) and isinstance(search.get("optuna"), dict) and \
            search["optuna"].get("objective", DEFAULT_OBJECTIVE) not in OBJECTIVES:
        # (launched before objectives were checked: no trial of it could be told a value)
        search = {"optuna": {**search["optuna"], "objective": DEFAULT_OBJECTIVE}}
    search_problems = [f"{source}: {p}" for p in parse_search(search, grid)[1]]
    problems += search_problems
    share = raw.get("share_prefix", True)
    if isinstance(share, str):  # the words `fuse` takes (a quoted 'yes' was refused there)
        share = {"on": True, "true": True, "yes": True, "off": False, "false": False,
                 "no": False}.get(share.strip().lower(), share)
    if not isinstance(share, bool):
        problems.append(f"{source}: share_prefix={share!r} must be true or false")
    seeds = raw.get("seeds")
    if not stored:
        given = {"grid": [f"{k}={v}" for k, v in grid.items()],
                 "overrides": [str(o) for o in raw.get("overrides") or ()]}
        problems += [f"{source}: `seed` in `{where}` is overridden by the spec's `seeds` (each "
                     f"trial takes one of them): write seeds: {_seeds_given(seed_args)} instead"
                     for where, args in given.items()
                     if (seed_args := [a for a in args
                                       if a.partition("=")[0].lstrip("+~") == "seed"])]
    if stored:
        raw = {**raw, "max_concurrent": raw.get("max_concurrent") or None,
               "retries": max(int(raw.get("retries", 2)), 0)}
    elif seeds is not None and (not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
            for s in seeds)):
        one = (f"seeds: [{seeds}] for seed {seeds}, or " if isinstance(seeds, int)
               and not isinstance(seeds, bool) and 0 <= seeds <= MAX_SEED else "")
        problems.append(f"{source}: seeds={seeds!r}: give a list of whole numbers from 0 to "
                        f"2^63 - 1, e.g. {one}seeds: [0, 1, 2]")
    elif seeds is not None and len(set(seeds)) < len(seeds):
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        problems.append(f"{source}: seeds={seeds!r}: seed {', '.join(map(str, twice))} is "
                        "given twice (a seed is one trial per point); give each seed once")
    most = raw.get("max_concurrent")
    if most is not None and (not isinstance(most, int) or isinstance(most, bool) or most < 1):
        problems.append(f"{source}: max_concurrent={most!r}: give a whole number >= 1, or "
                        "null for as many as the cluster holds")
    retries = raw.get("retries", 2)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        problems.append(f"{source}: retries={retries!r}: give a whole number >= 0 (attempts "
                        "after a trial's first that fails)")
    fuse = parse_fuse(raw.get("fuse"))
    if fuse is None:
        problems.append(f"{source}: fuse={raw.get('fuse')!r}: {FUSE_VALUES}")
    if search_problems and not stored and is_optuna(search):
        problems += _search_plan_problems(raw, source, problems)
    elif problems and not stored and not is_optuna(search):
        problems += _grid_plan_problems(raw, source, problems)
    if problems:
        raise ConfigError(problems)
    overrides = tuple(anchored(str(o)) for o in raw.get("overrides") or ())
    return SweepSpec(
        name=str(raw["name"]), overrides=overrides,
        anchored=overrides != tuple(str(o) for o in raw.get("overrides") or ()),
        grid=grid, seeds=tuple(int(s) for s in raw.get("seeds") or (0,)),
        resources=Resources(**{k: v for k, v in resources.items()}),
        max_concurrent=raw.get("max_concurrent"), retries=int(raw.get("retries", 2)),
        search=search, storage_root=str(raw.get("storage_root", "runs")),
        share_prefix=share, fuse=fuse, stored=stored)


def _grid_plan_problems(raw: dict, source: str, found: list[str]) -> list[str]:
    """A grid spec's problems past its spec keys (its grid, its trials' configs), found on
    the spec with only the parts that were read well, so that a spec with a misspelt key
    has every problem listed at once, not one kind per launch."""
    grid = raw.get("grid")
    overrides = raw.get("overrides")
    if not isinstance(grid, dict) or not grid or not isinstance(overrides, (list, type(None))):
        return []
    clean = {"name": "stand-in", "storage_root": "runs",
             "overrides": [o for o in map(str, overrides or ())
                           if sweep_owned(o.partition("=")[0]) is None and not _is_sweep(o)],
             "grid": {k: v for k, v in grid.items()
                      if not isinstance(v, dict) and sweep_owned(str(k)) is None
                      and v not in (None, [])}}
    try:
        expand(spec_from_dict(clean, source=source))
    except ConfigError as err:
        return [p for p in err.problems if p not in found]
    except Exception:  # noqa: BLE001 (a stand-in that cannot expand: the first problems stand)
        return []
    return []


def _search_plan_problems(raw: dict, source: str, found: list[str]) -> list[str]:
    """A searched spec's problems past its `search` block (its ranges, its config keys),
    found under a stand-in search of the same per-slice axes, so that a spec with a bad
    `search` block has every problem listed at once, not one kind per launch."""
    from orchestrator.search_space import per_slice_axes, plan_search

    opts = raw["search"]["optuna"] if isinstance(raw["search"]["optuna"], dict) else {}
    per_slice, _ = per_slice_axes(opts.get("per_slice"))
    grid = raw.get("grid") or {}
    stand_in = {"optuna": {"n_trials": 1, "sampler": "random",
                           "per_slice": [k for k in per_slice if k in grid]}}
    try:
        plan_search(spec_from_dict({**raw, "search": stand_in}, source=source))
    except ConfigError as err:
        return [p for p in err.problems if p not in found]
    except Exception:  # noqa: BLE001 (a stand-in that cannot plan: the first problems stand)
        return []
    return []


def _expr(value: object) -> str:
    # YAML turns `optim.lr: 0.01` into a float and `[1, 2]` into a list; keep Hydra's spelling.
    if isinstance(value, list):
        return "choice(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def grid_axes(spec: SweepSpec) -> tuple[dict[str, list[str]], list[str]]:
    """Each grid key's values as Hydra strings, and the problems found on the way."""
    parser, axes, problems = OverridesParser.create(), {}, []
    for key, expr in spec.grid.items():
        try:
            override = parser.parse_overrides([f"{key}={expr}"])[0]
        except OverrideParseException as err:
            reason = parse_reason(err)
            problems.append(f"grid.{key}: cannot parse '{expr}' ({reason}); use Hydra's sweep "
                            "grammar, e.g. choice(1e-3, 3e-3) or tag(log, choice(...))")
            continue
        if override.value_type.name == "GLOB_CHOICE_SWEEP":  # (it selects config groups)
            problems.append(glob_problem(key))
            continue
        if not override.is_sweep_override():
            axes[key] = [override.get_value_element_as_str()]
            continue
        sweep = override.value()
        # (checks added later: a sweep launched before them stays resumable)
        problems += [] if spec.stored else [
            f"grid.{key}: unknown tag '{t}' in '{expr}'; the one tag is log, e.g. "
            "tag(log, choice(1e-3, 3e-3))" for t in sorted(set(sweep.tags) - {"log"})]
        if type(sweep).__name__ == "IntervalSweep":
            problems.append(f"grid.{key}: interval() has no grid points; use choice() or "
                            "range(), or search: optuna")
        else:
            try:
                axes[key] = list(override.sweep_string_iterator())
            except ValueError as err:  # range(0, 1, 0)
                problems.append(f"grid.{key}: '{expr}' ({err}); give a step that is not 0")
                continue
            if type(sweep).__name__ == "RangeSweep" and any(
                    isinstance(v, float) for v in (sweep.start, sweep.stop, sweep.step)):
                axes[key] = _float_range(sweep.start, sweep.stop, sweep.step)
            if not axes[key]:
                backwards = type(sweep).__name__ == "RangeSweep" and (
                    sweep.step > 0) == (sweep.start > sweep.stop) and sweep.start != sweep.stop
                problems.append(f"grid.{key}: '{expr}' expands to no values" + (
                    f"; give range({sweep.stop}, {sweep.start}) (range counts from its first "
                    "end up to its second)" if backwards and sweep.step > 0 else ""))
            elif not spec.stored and type(sweep).__name__ == "RangeSweep" \
                    and len(axes[key]) == 1 and any(
                    isinstance(v, float) and not v.is_integer()
                    for v in (sweep.start, sweep.stop, sweep.step)):
                # range(1e-4, 1e-1) steps by 1: one value where a user meant a span
                problems.append(f"grid.{key}: '{expr}' has one value ({axes[key][0]}: range "
                                f"steps by {sweep.step:g}); list the values, e.g. tag(log, "
                                "choice(1e-4, 3e-4, 1e-3))")
    return axes, problems


def _float_range(start: float, stop: float, step: float) -> list[str]:
    """range() over floats, its end left out and its values as written: Hydra adds the step
    up, so range(0.0, 0.1, 0.01) also gave 0.1 (0.09999999999999999 < 0.1) and values such
    as 0.030000000000000002."""
    count = max(0, math.ceil((stop - start) / step - 1e-9))
    return [repr(float(format(start + i * step, ".12g"))) for i in range(count)]


SAID_COUNT = 2000
"""A grid of at least this many trials says that it composes them (a few ms each)."""


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of the grid, composed and validated; one ConfigError lists all problems."""
    axes, problems = grid_axes(spec)
    if not spec.grid:
        problems.append("the spec's grid is empty: add at least one axis, e.g. "
                        "optim.lr: choice(1e-3, 3e-3)")
    if problems:
        raise ConfigError(problems)
    composer = Composer()
    problems = _composition_problems(spec, axes, composer)
    if problems:  # every override that does not compose, said at once
        raise ConfigError(problems)
    count = math.prod(len(v) for v in axes.values()) * len(spec.seeds)
    if count >= SAID_COUNT:  # (10,000 took minutes on a busy machine, without a word)
        print(f"composing and checking {count:,} trials ...", file=sys.stderr, flush=True)
    trials, seen, same = [], {}, {}
    for values in itertools.product(*axes.values()):
        for seed in spec.seeds:
            point = tuple(f"{k}={v}" for k, v in zip(axes, values, strict=True))
            trial = make_trial(spec, point + (f"seed={seed}",), problems, composer)
            if trial is not None and trial.trial_id not in seen:
                seen[trial.trial_id] = trial
                trials.append(trial)
            elif trial is not None:
                same.update(dict.fromkeys(_apart(seen[trial.trial_id], trial, axes)))
    problems += [f"grid.{key}: {spec.grid[key]} changes how a trial runs, not what it trains "
                 "(the key is not in the trial id), so each point would run once, at one of "
                 "its values; set one value in overrides" for key in same]
    if problems:
        raise ConfigError(dedupe(problems))
    return trials


def _apart(one: Trial, other: Trial, axes: dict[str, list[str]]) -> list[str]:
    """The axes on which two trials of one id differ: keys not in the id (an axis of
    `train.compile` or `train.log_every_steps` gave half the grid, without a word)."""
    from trainer.identity import flatten

    a, b = flatten(one.cfg), flatten(other.cfg)
    return [key for key in axes if key.lstrip("+~") in a
            and a[key.lstrip("+~")] != b[key.lstrip("+~")]]


def _composition_problems(spec: SweepSpec, axes: dict[str, list[str]],
                          composer: Composer) -> list[str]:
    """Hydra stops at the first override it cannot compose (an unknown key, a value of the
    wrong type), so a trial's composition names one problem. Composed one at a time over the
    base (the base's own, each over the defaults), every such override is found: they are
    reported together, not one per launch. Problems of a combination are the trials' own."""
    def fails(overrides: list[str]) -> list[str]:
        try:
            composer(overrides)
        except ConfigError as err:
            return list(err.problems)
        return []

    base = list(spec.overrides)
    if fails(base):
        found = [f"{p} (overrides)" for o in base for p in fails([o])]
        return list(dict.fromkeys(found or fails(base)))
    # (an unknown key fails at each of its values alike: said once, not counted as trials)
    return list(dict.fromkeys(f"{p} (grid.{key})" for key, values in axes.items()
                              for v in values for p in fails([*base, f"{key}={v}"])))


def make_trial(spec: SweepSpec, point: tuple[str, ...], problems: list[str],
               composer: Composer) -> Trial | None:
    """The trial of one point (`key=value` overrides over the spec's), or None with its
    problems added to `problems`."""
    from trainer.validation import problems as trial_problems

    # (quoted: a folder's name may hold what the override grammar reads, e.g. runs(1), a,b)
    root = "'" + spec.storage_root.replace("'", "\\'") + "'"
    overrides = [*spec.overrides, *point, f"storage_root={root}",
                 f"train.world_size={spec.resources.world_size}"]
    try:
        cfg = composer(overrides)
    except ConfigError as err:
        problems.extend(f"{p} (trial {' '.join(point)})" for p in err.problems)
        return None
    # (a sweep sets train.world_size from resources.world_size: the key to change is that)
    found = [p.replace("train.world_size=", "resources.world_size=")
             for p in trial_problems(cfg, network=False, here=False)]
    if cfg.train.device.startswith("cuda") and not spec.resources.gpus:
        found.append(f"train.device={cfg.train.device} with resources.gpus: 0: Ray gives the "
                     "trial no GPU; set resources.gpus (e.g. 0.125 to share one) or "
                     "train.device=auto")
    elif cfg.train.device.startswith("cuda:"):
        found.append(f"train.device={cfg.train.device}: in a sweep Ray picks each trial's GPUs "
                     "(the trial sees them as cuda:0, cuda:1, ...); use train.device=cuda or "
                     "auto")
    if found:
        problems.extend(f"{p} (trial {' '.join(point)})" for p in found)
        return None
    tokens = cfg.train.tokens
    flops = flops_per_token(cfg.model, vocab_size=256, seq_len=cfg.train.seq_len) * tokens
    return Trial(point, files_from_anywhere(cfg), config_id(cfg), flops)


FILE_KEYS = ("data.paths", "data.tokenizer")
"""Keys that name files: a spec's relative ones are made absolute when it is read
(`anchored`)."""


def anchored(override: str) -> str:
    """`override` with the files it names (`FILE_KEYS`) as absolute paths, from the folder the
    command runs in: the sweep's stored spec then reads the same files when `sweep status`,
    `resume` or `extend` run from another folder (they stopped at `data/x.txt does not exist`),
    and its workers read them wherever they start. Anything else is returned as it is (a
    sweep over paths, a value that does not parse: validation says what is wrong with it)."""
    key, sep, _ = override.partition("=")
    if not sep or key.lstrip("+~") not in FILE_KEYS:
        return override
    try:
        parsed = OverridesParser.create().parse_overrides([override])[0]
    except OverrideParseException:
        return override
    if parsed.is_sweep_override() or "${" in override:  # (an interpolation resolves later)
        return override
    value = parsed.value()

    def absolute(path: str) -> str:
        text = os.path.abspath(os.path.expanduser(path))
        return "'" + text.replace("'", "\\'") + "'"  # (as storage_root is quoted)

    if isinstance(value, str) and value:
        return f"{key}={absolute(value)}"
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return f"{key}=[" + ",".join(absolute(v) for v in value) + "]"
    return override


def files_from_anywhere(cfg: Config) -> Config:
    """`cfg` with its data files, tokenizer and cache folder as absolute paths: a trial runs on
    a Ray worker, whose working folder is not the launch's (a cluster's workers start
    elsewhere). Where a fingerprint pins the files, their folders are not in the trial id, so
    this keeps it; a hub dataset's `data.name`, which is, stays as written."""
    data = cfg.data
    absolute = dataclasses.replace(
        data, paths=[os.path.abspath(p) for p in data.paths],
        tokenizer=data.tokenizer and os.path.abspath(data.tokenizer),
        cache_dir=os.path.abspath(data.cache_dir))
    if data.fingerprint is None and (absolute.paths, absolute.tokenizer) != (data.paths,
                                                                             data.tokenizer):
        return dataclasses.replace(cfg, data=dataclasses.replace(data,
                                                                 cache_dir=absolute.cache_dir))
    return dataclasses.replace(cfg, data=absolute)


def unread_problems(spec: SweepSpec, baseline: SweepSpec | None = None) -> list[str]:
    """Base overrides and grid axes that set a key no trial reads (`trainer.validation.
    unread`): such a key only changes the trial ids, so a grid axis over it trains the same
    model once per value, and a base value retrains a done sweep under new ids. Only what is
    new against `baseline` (the sweep's stored spec: a relaunch, a resume or an extend) is
    judged, so a sweep launched before this check stays resumable. Judged at every
    combination of the axes that decide what is read (`schedule*`, `data*`, `model`,
    `model.param`), the others at their first value."""
    from trainer.validation import unread

    old = baseline or SweepSpec(name="")
    axes, problems = grid_axes(spec)
    if problems:
        return []  # (said by the expansion)
    keys = {o.partition("=")[0].lstrip("+~"): f"overrides: {o}" for o in spec.overrides
            if o not in old.overrides}
    keys.update({k: f"grid.{k}: {spec.grid[k]}" for k, v in axes.items()
                 if len(v) > 1 and old.grid.get(k) != spec.grid[k]})
    if not keys:
        return []
    deciding = [k for k in axes if k.split(".")[0] in ("schedule", "data")
                or k in ("model", "model.param", "train.batch_schedule")]
    combos = math.prod(len(axes[k]) for k in deciding)
    if combos > 4096:
        return []  # (too many to judge: left to the user)
    composer, why = Composer(), None
    for values in itertools.product(*(axes[k] for k in deciding)):
        chosen = dict(zip(deciding, values, strict=True))
        point = [f"{k}={chosen.get(k, v[0])}" for k, v in axes.items()]
        try:
            found = unread(composer([*spec.overrides, *point]))
        except ConfigError:
            return []  # (composition problems are said elsewhere)
        why = {k: w for k, w in found.items() if k in keys and (why is None or k in why)}
        if not why:
            return []
    return [f"{keys[k]}: {w}; it would only change the trial ids (the same model trained "
            "under another id, once per value): remove it" for k, w in (why or {}).items()]


def shadowed_overrides(spec: SweepSpec) -> list[str]:
    """Base overrides that a later one of the same key, or a grid axis of it, replaces in
    every trial (Hydra takes the last): allowed, since an earlier spec may hold them, but
    said."""
    def key(override: str) -> str:
        return override.partition("=")[0].lstrip("+")

    keys = [key(o) for o in spec.overrides if "=" in o and not o.startswith("~")]
    twice = [f"overrides set {k} {keys.count(k)} times ("
             + ", ".join(o for o in spec.overrides if key(o) == k)
             + "): every trial takes the last; keep one"
             for k in dict.fromkeys(k for k in keys if keys.count(k) > 1)]
    return twice + [f"overrides: {o} is swept by grid.{key(o)} too, and every trial takes the "
                    "grid's value: remove it from overrides" for o in spec.overrides
                    if key(o) in spec.grid]


def print_notes(trials: list[Trial]) -> None:
    """The trials' config notes (`trainer.validation.notes`) on stderr, each said once."""
    import sys

    from trainer.validation import notes

    for note in dedupe([f"{n} (trial {t.label})" for t in trials for n in notes(t.cfg)]):
        print(f"note: {note}", file=sys.stderr)
    for note in _across_trials(trials):
        print(f"note: {note}", file=sys.stderr)


def _across_trials(trials: list[Trial]) -> list[str]:
    """What no single trial's config shows: muP trials of several head widths, none with
    `model.base_head_dim`, each take their own head width for the base, and so scale their
    attention as SP does (1/√d_head), not as muP (1/d_head) across the sweep."""
    from trainer.config import Param

    heads = sorted({t.cfg.model.head_dim for t in trials if t.cfg.model.param is Param.mup
                    and t.cfg.model.base_head_dim is None})
    if len(heads) < 2:
        return []
    return [f"muP trials of {len(heads)} head widths (model.head_dim {heads[0]} to {heads[-1]}) "
            "leave model.base_head_dim unset, so each takes its own head width as the base "
            "and scales attention by 1/√d_head as SP does, not muP's 1/d_head across them: "
            f"set model.base_head_dim (e.g. {heads[0]}) for muP's attention"]


def _seeds_given(args: list[str]) -> list[int]:
    """The seeds `seed=...` overrides (or grid axes) name, as `seeds:` would list them; [0, 1]
    when they name none that can be one."""
    from hydra.errors import HydraException

    seeds = []
    for arg in args:
        try:
            parsed = OverridesParser.create().parse_overrides([arg])[0]
            # (at most a few: `range(0, 1e9)` would list a billion; interval() lists none)
            values = (list(itertools.islice(parsed.sweep_string_iterator(), 8))
                      if parsed.is_sweep_override() else [parsed.get_value_element_as_str()])
        except (HydraException, ValueError):  # (OverrideParseException is one)
            continue
        seeds += [int(v) for v in values if v.isdigit()]
    return list(dict.fromkeys(seeds)) or [0, 1]


def dedupe(problems: list[str]) -> list[str]:
    # The same bad base value fails every trial: say it once, with how many trials it hits;
    # a problem of a single trial keeps the name of that trial.
    groups: dict[str, list[str]] = {}
    for p in problems:
        groups.setdefault(p.rsplit(" (trial ", 1)[0], []).append(p)
    return [found[0] if len(found) == 1 else f"{head} ({len(found)} trials)"
            for head, found in groups.items()]
