"""Reading a sweep spec: `sweeps/NAME.yaml`, or the copy stored with a sweep, → a `SweepSpec`.

Every problem of a spec (an unknown key, a value of the wrong kind, and past those the problems
of its grid or its search, found on the parts that were read well) is collected into one
`ConfigError`, so that a spec's mistakes are said at once, not one kind per launch. A spec an
earlier version stored stays readable where checks added since would refuse it (`stored`).
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from orchestrator.spec import (
    FUSE_VALUES,
    RESOURCE_KEYS,
    SPEC_KEYS,
    Resources,
    SweepSpec,
    _is_sweep,
    anchored,
    parse_fuse,
    sweep_owned,
)
from orchestrator.trials import expand
from trainer.config import MAX_SEED
from trainer.errors import ConfigError


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


MAX_NAME_BYTES = 200
"""The longest sweep name (UTF-8 bytes): a folder's name holds 255 (`mlflow-artifacts/NAME`),
MLflow's experiment name 500 characters."""


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file; every problem goes into one ConfigError."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
        raise ConfigError(f"sweep spec {path} is a folder: give one of its YAML files, e.g. "
                          f"{found[0]}" if found else
                          f"sweep spec {path} is a folder, with no YAML file in it: give the "
                          "path of a spec, e.g. sweeps/demo.yaml")
    if not path.is_file():
        again = (f" (to run a recorded sweep again: sweep resume {path})"
                 if not path.suffix and len(path.parts) == 1 else "")
        raise ConfigError(f"sweep spec {path} does not exist: give the path of a "
                          f"sweeps/*.yaml{again}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"sweep spec {path} is not a text file (UTF-8 YAML): give the path "
                          "of a sweeps/*.yaml") from None
    except OSError as err:
        raise ConfigError(f"sweep spec {path} cannot be read ({err.strerror or err}): give "
                          "a file this user may read") from None
    try:
        raw = yaml.load(text, Loader=_OnceLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        fix = ("indent with spaces, not tabs" if "'\\t'" in str(err.problem)
               else "quote a value holding ': ' or braces, e.g. 'choice({a: 1}, {a: 2})'"
               if "mapping values are not allowed" in str(err.problem) else "fix the file there")
        raise ConfigError(f"{where}: YAML error, {err.problem}; {fix}") from None
    except yaml.YAMLError as err:  # (a reader's: a control character, say)
        raise ConfigError(f"{path}: YAML error, {str(err).splitlines()[0]}; fix the file "
                          "there") from None
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
    elif not stored and len(str(raw["name"]).encode()) > MAX_NAME_BYTES:
        # (MLflow takes 500 characters, a folder's name 255 bytes: a longer name passed every
        # check, and the launch failed once Ray had started, leaving an experiment behind)
        problems.append(f"{source}: name={str(raw['name'])[:40]!r}... is "
                        f"{len(str(raw['name']).encode())} bytes long: a sweep's name also names "
                        f"its MLflow experiment and folders; give one of at most "
                        f"{MAX_NAME_BYTES} bytes")
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
        shown = "null" if root is None else repr(root)  # (as the YAML wrote it, not None)
        problems.append(f"{source}: storage_root={shown}: give the folder for the trials' "
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
