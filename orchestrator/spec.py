"""Sweep specs: the `SweepSpec` a `sweeps/NAME.yaml` gives, and the command line's changes to it.

`orchestrator.spec_file` reads and checks a spec file into a `SweepSpec`, and
`orchestrator.trials` expands its grid into trials. Here: the spec itself, the overrides a
command line adds to it (`SweepSpec.with_overrides`: a sweep expression sets a grid axis, a
plain value the base), and the checks an override gets wherever it is written (keys a sweep sets
itself, what Hydra cannot parse, data files made absolute). Every problem is collected into one
`ConfigError` before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from trainer.config import MAX_SEED
from trainer.errors import ConfigError

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
        if spaced := _spaced_equals(args):
            raise ConfigError(spaced)
        problems: list[str] = []
        given: dict[str, str] = {}
        for arg in args:
            try:
                key, _, expr = arg.partition("=")
                name = key.strip().lstrip("+~")
                if name and name in given:  # (the last one was taken, without a word)
                    raise ConfigError([f"{name} is given twice on the command line "
                                       f"({given[name]} and {arg}); give it once"])
                given[name] = arg
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
                    # (of the key given: it named optim.lr for train.tokens=choice()
                    name = key.lstrip("+~")
                    raise ConfigError([f"{arg}: cannot parse it ({parse_reason(err)}); "
                                       f"write e.g. {name}=VALUE, or '{name}=choice(A, B)' "
                                       "for a grid axis"]) \
                        from None
                refuse_spec_key(key, expr)
                if key.lstrip("+~") == "seed":
                    try:
                        value = None if parsed.is_sweep_override() else parsed.value()
                        given = (list(parsed.sweep_string_iterator()) if value is None
                                 # (seed=[0,1] is a list already: not seeds=[[0,1]])
                                 else [str(v) for v in value] if isinstance(value, list)
                                 else [expr])
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


def _spaced_equals(args: Sequence[str]) -> list[str]:
    """`optim.lr = 0.1` (the shell's three words) was three sentences, the last telling to
    write `0.1=VALUE`: one, that says to remove the spaces."""
    problems, i = [], 0
    while i < len(args) - 1:
        here, after = args[i], args[i + 1]
        words = None
        if "=" not in here and (after == "=" or after.startswith("=")):
            words = [here, after] + ([args[i + 2]] if after == "=" and i + 2 < len(args)
                                     and "=" not in args[i + 2] else [])
        elif here.endswith("=") and here.count("=") == 1 and "=" not in after:
            words = [here, after]
        if words:
            problems.append(f"'{' '.join(words)}': remove the spaces around = "
                            f"({''.join(words)})")
            i += len(words)
        else:
            i += 1
    return problems


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
    # ("ValueError while evaluating 'choice()': empty choice is not legal": the class is
    # Hydra's, noise to a user)
    reason = re.sub(r"^\w+Error while evaluating ('[^']*'): ", r"\1: ", reason)
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
    flags = {"fuse": f", or give --fuse {value}", "share_prefix": ", or give --no-share",
             # (--max-concurrent 0 was suggested, which the flag refuses)
             "max_concurrent": f", or give --max-concurrent {value}"
             if value.isdigit() and int(value) >= 1 else " (a whole number >= 1, or null)"}
    # (for resume and extend too: the spec file launched again is the same sweep)
    raise ConfigError([f"{key}={value} sets the sweep spec's `{top}`, not the trainer's "
                       "config: write it in the spec file and launch that (nothing done "
                       f"trains again){flags.get(top, '')}"])


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
    # (train.checkpoint_dir was refused as unknown with "did you mean checkpoint_dir?", a key
    # the sweep then refused in turn: name the sweep's own place for it at once)
    owned = {"run_dir": "run_dir", "checkpoint_dir": "checkpoint_dir",
             "world_size": "train.world_size", "storage_root": "storage_root"}.get(
        key.rpartition(".")[2])
    if owned is not None:
        return f"there is no config key {key}; the nearest, {owned}, is the sweep's: " \
               f"{sweep_owned(owned)}"
    return None


def _with_search_option(search: str | dict, key: str, value: str) -> dict:
    if not (isinstance(search, dict) and "optuna" in search):
        raise ConfigError(f"search.optuna.{key}={value}: this sweep is a grid (search: grid); "
                          "set search: {optuna: {...}} in its spec to search it")
    return {"optuna": {**search["optuna"], key: yaml.safe_load(value)}}


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


FILE_KEYS = ("data.paths", "data.val_paths", "data.tokenizer")
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
