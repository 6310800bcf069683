"""A spec's trials: the points of its grid, each composed into a trainer config with its id.

The grid uses Hydra's own sweep grammar (`choice`, `range`, `tag(log, …)`), parsed by Hydra's
override parser; a grid is the cartesian product of its axes times the seeds. Every trial is a
full trainer config composed through `trainer.compose`, so its id is the trainer's config id and
a trial that was ever finished is recognised whatever sweep or extension asks for it again.
Every problem of the grid is collected into one `ConfigError` before anything starts. A searched
sweep's points are composed as a grid's are (`make_trial`, from `orchestrator.search_space`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import sys
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from orchestrator.spec import SweepSpec, glob_problem, parse_reason
from trainer.compose import Composer
from trainer.config import Config
from trainer.errors import ConfigError
from trainer.flops import flops_per_token
from trainer.identity import config_id


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
            if type(sweep).__name__ == "ChoiceSweep":
                axes[key] = [_unquoted(v, text) for v, text in zip(
                    override.sweep_iterator(), axes[key], strict=True)]
            if type(sweep).__name__ == "RangeSweep" and any(
                    isinstance(v, float) for v in (sweep.start, sweep.stop, sweep.step)):
                axes[key] = _float_range(sweep.start, sweep.stop, sweep.step)
            spaced = [v.replace("\\ ", " ") for v in axes[key]]  # (Hydra escapes spaces)
            spaced = [v for v in spaced if len(v.split()) > 1 and all(
                _is_number(part) for part in v.split())]
            if spaced:  # (Hydra reads `choice(8 16 32)` as one value, the string "8 16 32")
                problems.append(f"grid.{key}: '{expr}' has the value '{spaced[0]}'; separate "
                                f"values with commas: choice({', '.join(spaced[0].split())})")
                continue
            if not axes[key]:
                backwards = type(sweep).__name__ == "RangeSweep" and (
                    sweep.step > 0) == (sweep.start > sweep.stop) and sweep.start != sweep.stop
                # (swapped, a range that steps by 1 over a span under 2 has one value:
                # range(0.001, 0.01) is 0.001, and the fix it was told was refused next)
                whole = abs(sweep.start - sweep.stop) >= 2 and all(
                    float(v).is_integer() for v in (sweep.start, sweep.stop))
                problems.append(f"grid.{key}: '{expr}' expands to no values" + (
                    "" if not (backwards and sweep.step > 0) else
                    f"; give range({sweep.stop}, {sweep.start}) (range counts from its first "
                    "end up to its second)" if whole else
                    f"; range counts from its first end up to its second, by 1 unless a "
                    f"third number gives the step: give range({sweep.stop:g}, {sweep.start:g}, "
                    f"{(sweep.start - sweep.stop) / 4:g}) for 4 values, or list the values "
                    f"you mean, e.g. choice({sweep.stop:g}, {sweep.start:g})"))
            elif not spec.stored and type(sweep).__name__ == "RangeSweep" \
                    and len(axes[key]) == 1 and any(
                    isinstance(v, float) and not v.is_integer()
                    for v in (sweep.start, sweep.stop, sweep.step)):
                # range(1e-4, 1e-1) steps by 1: one value where a user meant a span
                problems.append(f"grid.{key}: '{expr}' has one value ({axes[key][0]}: range "
                                f"steps by {sweep.step:g}); list the values, e.g. tag(log, "
                                "choice(1e-4, 3e-4, 1e-3))")
    return axes, problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _float_range(start: float, stop: float, step: float) -> list[str]:
    """range() over floats, its end left out and its values as written: Hydra adds the step
    up, so range(0.0, 0.1, 0.01) also gave 0.1 (0.09999999999999999 < 0.1) and values such
    as 0.030000000000000002."""
    count = max(0, math.ceil((stop - start) / step - 1e-9))
    return [repr(float(format(start + i * step, ".12g"))) for i in range(count)]


SAID_COUNT = 2000
"""A grid of at least this many trials says that it composes them (a few ms each)."""
MAX_TRIALS = 100_000
"""The most trials one grid makes: more is a range's step mistyped (range(1e-4, 1, 1e-4) is
9,999 values), whose dry run composed ~1M trials for 18 minutes and 2.6 GB before any word;
a study that size is several sweeps, each one MLflow experiment a UI can show."""


_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)")


def _unquoted(value: object, text: str) -> str:
    """A choice's value as Hydra spells it: a quoted float (`choice("1e-3")`) as the number
    it reads as unquoted, 0.001 (it was labelled `optim.lr=1e-3` there, `optim.lr=0.001` in
    another spec: one trial id, two names). Other strings, ints among them, stay as given."""
    if not isinstance(value, str) or not _FLOAT.fullmatch(value):
        return text
    parsed = OverridesParser.create().parse_overrides([f"k={value}"])[0]
    return parsed.get_value_element_as_str() if isinstance(parsed.value(), float) else text


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of the grid, composed and validated; one ConfigError lists all problems."""
    axes, problems = grid_axes(spec)
    if not spec.grid:
        problems.append("the spec's grid is empty: add at least one axis, e.g. "
                        "optim.lr: choice(1e-3, 3e-3)")
    if problems:
        raise ConfigError(problems)
    count = math.prod(len(v) for v in axes.values()) * len(spec.seeds)
    if count > MAX_TRIALS and not spec.stored:
        sizes = ", ".join(f"{key}: {len(values):,} value{'s' * (len(values) != 1)}"
                          for key, values in axes.items())
        raise ConfigError([f"the grid makes {count:,} trials ({sizes}; {len(spec.seeds)} "
                           f"seed{'s' * (len(spec.seeds) != 1)}), more than one sweep runs "
                           f"({MAX_TRIALS:,}): check each range's step, or split the grid "
                           "into sweeps"])
    composer = Composer()
    problems = _composition_problems(spec, axes, composer)
    if problems:  # every override that does not compose, said at once
        raise ConfigError(problems)
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
    found = []
    if fails(base):
        found = [f"{p} (overrides)" for o in base for p in fails([o])] or fails(base)
        # (the grid's own problems too, over the base's overrides that compose: a misspelt
        # axis was said only once the base was fixed)
        base = [o for o in base if not fails([o])]
    # (an unknown key fails at each of its values alike: said once, not counted as trials)
    return list(dict.fromkeys(found + [f"{p} (grid.{key})" for key, values in axes.items()
                                       for v in values for p in fails([*base, f"{key}={v}"])]))


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


def files_from_anywhere(cfg: Config) -> Config:
    """`cfg` with its data files, tokenizer and cache folder as absolute paths: a trial runs on
    a Ray worker, whose working folder is not the launch's (a cluster's workers start
    elsewhere). Where a fingerprint pins the files, their folders are not in the trial id, so
    this keeps it; a hub dataset's `data.name`, which is, stays as written."""
    data = cfg.data
    absolute = dataclasses.replace(
        data, paths=[os.path.abspath(p) for p in data.paths],
        val_paths=[os.path.abspath(p) for p in data.val_paths],
        tokenizer=data.tokenizer and os.path.abspath(data.tokenizer),
        cache_dir=os.path.abspath(data.cache_dir))
    if data.fingerprint is None and (absolute.paths, absolute.val_paths, absolute.tokenizer) \
            != (data.paths, data.val_paths, data.tokenizer):
        return dataclasses.replace(cfg, data=dataclasses.replace(data,
                                                                 cache_dir=absolute.cache_dir))
    return dataclasses.replace(cfg, data=absolute)


def unread_problems(spec: SweepSpec, baseline: SweepSpec | None = None,
                    axes: dict[str, list[str]] | None = None) -> list[str]:
    """Base overrides and grid axes that set a key no trial reads (`trainer.validation.
    unread`): such a key only changes the trial ids, so a grid axis over it trains the same
    model once per value, and a base value retrains a done sweep under new ids. Only what is
    new against `baseline` (the sweep's stored spec: a relaunch, a resume or an extend) is
    judged, so a sweep launched before this check stays resumable. Judged at every
    combination of the axes that decide what is read (`schedule*`, `data*`, `model`,
    `model.param`), the others at their first value. `axes`: a searched spec's, at the ends
    of its searched ranges (`search_space.axes_at_ends`)."""
    from trainer.validation import unread

    old = baseline or SweepSpec(name="")
    if axes is None:
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
    keys = {k: said for k, said in keys.items() if not _sets_its_default(spec, k, axes, composer)}
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


def _sets_its_default(spec: SweepSpec, key: str, axes: dict[str, list[str]],
                      composer: Composer) -> bool:
    """Does the base override of `key` give the value the trials would have without it?
    Then it changes no id (`model.base_width=64`, model=tiny's own, on an SP spec was refused
    as "it would only change the trial ids")."""
    given = [o for o in spec.overrides if o.partition("=")[0] == key]
    if len(given) != 1 or key in axes:
        return False
    from trainer.identity import flatten

    point = [f"{k}={v[0]}" for k, v in axes.items()]
    try:
        without = flatten(composer([*(o for o in spec.overrides if o != given[0]), *point]))
        with_it = flatten(composer([*spec.overrides, *point]))
    except ConfigError:
        return False
    return key in without and without[key] == with_it.get(key)


def print_notes(trials: list[Trial], spec: SweepSpec | None = None) -> None:
    """The trials' config notes (`trainer.validation.notes`) on stderr, each said once, and
    the values `spec`'s grid repeats."""
    from trainer.validation import notes

    for note in dedupe([f"{n} (trial {t.label})" for t in trials for n in notes(t.cfg)]):
        print(f"note: {note}", file=sys.stderr)
    for note in _across_trials(trials) + (repeated_values(spec) if spec else []):
        print(f"note: {note}", file=sys.stderr)


def repeated_values(spec: SweepSpec) -> list[str]:
    """Axes that list one value twice (`choice(8, 8)`, `choice(1e-3, 0.001)`): their trials
    are one trial each, so the sweep has fewer trials than the product of the axes' lengths
    (said once, at launch: a stored spec's resume says nothing new)."""
    if spec.stored:
        return []
    found = []
    for key, values in grid_axes(spec)[0].items():
        seen: dict[object, str] = {}
        twice = []
        for value in values:
            same = float(format(float(value), ".12g")) if _is_number(value) else value
            if same in seen and seen[same] not in twice:
                twice.append(seen[same])
            seen.setdefault(same, value)
        if twice:
            found.append(f"grid.{key}: '{spec.grid[key]}' lists {', '.join(twice)} more than "
                         "once; each value's trials run once")
    return found


def _across_trials(trials: list[Trial]) -> list[str]:
    """What no single trial's config shows: muP trials of several head widths, none with
    `model.base_head_dim`, each take their own head width for the base, and so scale their
    attention as SP does (1/√d_head), not as muP (1/d_head) across the sweep."""
    from trainer.config import Param

    found = _same_models(trials)
    heads = sorted({t.cfg.model.head_dim for t in trials if t.cfg.model.param is Param.mup
                    and t.cfg.model.base_head_dim is None})
    if len(heads) < 2:
        return found
    return found + [
            f"muP trials of {len(heads)} head widths (model.head_dim {heads[0]} to {heads[-1]}) "
            "leave model.base_head_dim unset, so each takes its own head width as the base "
            "and scales attention by 1/√d_head as SP does, not muP's 1/d_head across them: "
            f"set model.base_head_dim (e.g. {heads[0]}) for muP's attention"]


def _same_models(trials: list[Trial]) -> list[str]:
    """Trials that differ only in keys they do not read (`trainer.validation.unread`): the
    same model under several ids. A grid whose every trial ignores an axis is refused
    (`unread_problems`); where only some do (SP trials of a `model.base_width` axis beside
    muP ones), those are trained once per value, said here."""
    from trainer.identity import flatten
    from trainer.validation import unread

    by_model: dict[tuple, list[Trial]] = {}
    why: dict[str, str] = {}
    for trial in trials:
        ignored = unread(trial.cfg)
        values = {k: v for k, v in flatten(trial.cfg).items()
                  if k not in ignored and k not in ("run_dir", "checkpoint_dir")
                  and not k.startswith("tracking.")}
        by_model.setdefault(tuple(sorted((k, repr(v)) for k, v in values.items())),
                            []).append(trial)
        why.update(ignored)
    same = [group for group in by_model.values() if len(group) > 1]
    if not same:
        return []
    keys = sorted({k for group in same for k, v in flatten(group[0].cfg).items()
                   if k in why and any(flatten(t.cfg).get(k) != v for t in group[1:])})
    extra = sum(len(group) - 1 for group in same)
    reasons = "; ".join(f"{k}: {why[k]}" for k in keys)
    return [f"{extra} trial{'s' * (extra != 1)} train the same model as another under another "
            f"id, differing only in keys they do not read ({reasons}); e.g. {same[0][0].label} "
            f"and {same[0][1].label}: give the trials that do not read them a spec without those "
            "axes"]


def dedupe(problems: list[str]) -> list[str]:
    # The same bad base value fails every trial: say it once, with how many trials it hits;
    # a problem of a single trial keeps the name of that trial.
    groups: dict[str, list[str]] = {}
    for p in problems:
        groups.setdefault(p.rsplit(" (trial ", 1)[0], []).append(p)
    said = [found[0] if len(found) == 1 else f"{head} ({len(found)} trials)"
            for head, found in groups.items()]
    return _merge_values(said)


def _merge_values(problems: list[str]) -> list[str]:
    """One problem said of many values of one key (`model.width: range(32, 64)`, each width
    not a multiple of head_dim: 30 lines) in one line naming the values."""
    import re

    shape = re.compile(r"^([\w.]+)=(\S+) (.*?)(?: \((?:\d+ trials|trial .*)\))?$")
    groups: dict[tuple[str, str] | str, list[tuple[str, str]]] = {}
    for p in problems:
        m = shape.match(p)
        key = p if m is None else (m.group(1), m.group(3))
        groups.setdefault(key, []).append((m.group(2) if m else "", p))
    out = []
    for key, found in groups.items():
        if isinstance(key, str) or len(found) == 1:
            out.extend(p for _, p in found)
            continue
        values = [v for v, _ in found]
        shown = ", ".join(values) if len(values) <= 6 else \
            f"{', '.join(values[:3])}, ..., {values[-1]} ({len(values)} values)"
        out.append(f"{key[0]}={shown} {key[1]}")
    return out
