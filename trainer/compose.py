"""From Hydra overrides to a typed `Config`, with Hydra's errors turned into one sentence each."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from trainer.config import CONF_DIR, Config, DataSource
from trainer.data_files import expand
from trainer.errors import ConfigError
from trainer.fingerprint import data_fingerprint
from trainer.schedules import default_warmup_tokens


def compose(overrides: Sequence[str] = ()) -> Config:
    """Compose `conf/config.yaml` with Hydra overrides into a resolved, typed `Config`.

    Keys left unset for a default rule (`schedule.warmup_tokens`) are filled in from the
    composed values, so the result has no unset key left and its id is that of its values.

    Raises:
        ConfigError: an unknown key or option, a wrong type, or an override Hydra cannot parse.
    """
    return with_defaults(_compose_unset(overrides))


def with_defaults(cfg: Config) -> Config:
    """`cfg` with every key left unset for a default rule set by that rule: the warmup from
    the budget, the data fingerprint from the data this machine reads; and `data.paths` as
    the files it names (`~` expanded, folders and patterns as their files)."""
    if cfg.schedule.warmup_tokens is None:
        warmup = default_warmup_tokens(cfg.train.tokens)
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule,
                                                                    warmup_tokens=warmup))
    d = cfg.data
    home = [p for p in (*d.paths, *d.val_paths, d.tokenizer or "") if p.startswith("~")]
    if home:  # (such a config could not run before: its ids are new either way)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            d, paths=[os.path.expanduser(p) for p in d.paths],
            val_paths=[os.path.expanduser(p) for p in d.val_paths],
            tokenizer=d.tokenizer and os.path.expanduser(d.tokenizer)))
    if cfg.data.source is DataSource.files:
        # (folders and patterns: the files they stand for)
        paths, val_paths = expand(cfg.data.paths), expand(cfg.data.val_paths)
        if (paths, val_paths) != (cfg.data.paths, cfg.data.val_paths):
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(
                cfg.data, paths=paths, val_paths=val_paths))
    if cfg.data.fingerprint is None:
        fingerprint = data_fingerprint(cfg.data)
        if fingerprint is not None:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                    fingerprint=fingerprint))
    return cfg


_COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, TypeError, AttributeError)


def _compose_unset(overrides: Sequence[str]) -> Config:
    # Hydra's compose, with keys of a default rule still unset: the rule depends on other
    # keys (warmup on train.tokens), which `Composer` may still replace.
    overrides = list(overrides)
    keyless = [o for o in overrides if not o.partition("=")[0].lstrip("+~")]
    if keyless:  # (Hydra takes it for a config group's and fails with a ValueError)
        raise ConfigError([f"{o}: an override needs a key, e.g. optim.lr=1e-3"
                           for o in keyless])
    try:
        return _to_config(_hydra_compose(overrides))
    except _COMPOSE_ERRORS as err:
        raise ConfigError(_explain(err, overrides)) from None


def _hydra_compose(overrides: list[str]) -> DictConfig:
    if problems := _group_problems(overrides):
        raise ConfigError(problems)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def _to_config(cfg: DictConfig) -> Config:
    OmegaConf.resolve(cfg)
    return OmegaConf.to_object(cfg)


class Composer:
    """`compose` for many configs that share their config-group choices (a sweep's grid).

    Hydra's compose costs ~0.1 s, and even one OmegaConf merge into a whole config ~10 ms, while
    a grid of thousands of trials differs mostly in a few plain values. So Hydra composes once
    per distinct set of group choices (`model=small`), and each distinct `key=value` is checked
    and converted once by OmegaConf itself: merged into its section of that composed
    `DictConfig`, whose typed nodes coerce it exactly as Hydra's own override would (`1` into a
    float field is 1.0, `sp` into an enum field is `Param.sp`). The trial's typed `Config` is
    the cached base with those values put in by `dataclasses.replace`. What this cannot do the
    same way (`+key`, `~key`, an interpolation, a value OmegaConf refuses, an unknown key)
    goes through the full `compose`, which also gives the standard error sentence. Keys of a
    default rule stay unset in the cached bases and are filled in last, from the trial's own
    values. Tests check that both paths give equal configs.
    """

    def __init__(self) -> None:
        self._bases: dict[tuple[str, ...], tuple[DictConfig, Config]] = {}
        self._values: dict[tuple[tuple[str, ...], str], object] = {}  # checked values
        self._parsed: dict[str, object] = {}  # override → Hydra's parse of it
        self._parser = OverridesParser.create()

    def __call__(self, overrides: Sequence[str]) -> Config:
        overrides = list(overrides)
        try:
            parsed = [self._parse(o) for o in overrides]
        except OverrideParseException:
            return compose(overrides)
        groups = tuple(o.input_line for o in parsed if _is_group_choice(o.key_or_group))
        plain = [o for o in parsed if not _is_group_choice(o.key_or_group)]
        if any(o.is_sweep_override() or o.is_add() or o.is_delete() or o.is_force_add()
               for o in plain):
            return compose(overrides)
        try:
            tree, cfg = self._base(groups)
            for o in plain:
                cfg = _replace(cfg, o.key_or_group, self._checked(groups, tree, o))
            return with_defaults(cfg)
        except _NotExact:
            return compose(overrides)  # the exact path, or the usual error sentence

    def _parse(self, override: str):
        # A grid repeats each value in many trials, and Hydra's parser costs ~1 ms a call.
        if override not in self._parsed:
            self._parsed[override] = self._parser.parse_overrides([override])[0]
        return self._parsed[override]

    def _base(self, groups: tuple[str, ...]) -> tuple[DictConfig, Config]:
        if groups not in self._bases:
            try:
                tree = _hydra_compose(list(groups))
                self._bases[groups] = (tree, _to_config(copy.deepcopy(tree)))
            except _COMPOSE_ERRORS as err:
                raise ConfigError(_explain(err, list(groups))) from None
        return self._bases[groups]

    def _checked(self, groups: tuple[str, ...], tree: DictConfig, override) -> object:
        """The override's value as OmegaConf stores it in its typed field, or _NotExact."""
        memo = (groups, override.input_line)
        if memo not in self._values:
            self._values[memo] = _omegaconf_value(tree, override.key_or_group, override.value())
        return self._values[memo]


class _NotExact(Exception):
    """The fast path cannot reproduce compose exactly for this override."""


def _omegaconf_value(tree: DictConfig, key: str, value: object) -> object:
    # Merge into the key's own section only: a whole config costs ~10 ms a merge.
    if "${" in str(value):
        raise _NotExact  # resolved against the whole config
    *parents, leaf = key.split(".")
    section = OmegaConf.select(tree, ".".join(parents)) if parents else tree
    if not isinstance(section, DictConfig) or leaf not in section:
        raise _NotExact
    try:
        merged = OmegaConf.merge(section, {leaf: value})
        checked = merged[leaf]
    except OmegaConfBaseException:
        raise _NotExact from None
    return OmegaConf.to_container(checked) if isinstance(checked, ListConfig) else checked


def _replace(cfg: Config, key: str, value: object) -> Config:
    """`cfg` with the dotted `key` set to `value`, every enclosing dataclass replaced."""
    *parents, leaf = key.split(".")
    chain = [cfg]
    for name in parents:
        chain.append(getattr(chain[-1], name))
    new = dataclasses.replace(chain[-1], **{leaf: value})
    for obj, name in zip(reversed(chain[:-1]), reversed(parents), strict=True):
        new = dataclasses.replace(obj, **{name: new})
    return new


def _is_group_choice(key: str) -> bool:
    return "." not in key and (CONF_DIR / key).is_dir()


def _group_problems(overrides: list[str]) -> list[str]:
    """One sentence for each override that does not choose one option of a config group.
    Hydra failed on `schedule=null` with a bare ValueError (a traceback), and composed
    `schedule=[wsd,cosine]` (both files merged: a cosine run holding wsd's keys) and
    `~model` (the dataclass defaults, which no option describes) without a word."""
    parser = OverridesParser.create()
    found = []
    for override in overrides:
        try:
            parsed = parser.parse_overrides([override])[0]
        except OverrideParseException:
            continue  # (Hydra's own error says it)
        group = parsed.key_or_group
        if not _is_group_choice(group) or parsed.is_sweep_override():
            continue
        options = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
        value = parsed.value()
        if parsed.is_add():
            found.append(f"{override}: config group '{group}' has an option already; choose "
                         f"another without the +, e.g. {group}={value}")
        elif parsed.is_delete() or value is None or isinstance(value, list):
            found.append(f"{override}: config group '{group}' takes exactly one option: "
                         f"choose one of {options}")
    return found


def _parses(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        return False
    return True


# Names other trainers give our keys (the last part of the key given), with ours: difflib
# finds a misspelling, not another vocabulary (`optim.learning_rate` was told nothing).
OTHER_NAMES = {
    "learning_rate": "optim.lr", "max_lr": "optim.lr", "lr_max": "optim.lr",
    "wd": "optim.weight_decay",
    "d_model": "model.width", "n_embd": "model.width", "hidden_size": "model.width",
    "dim": "model.width", "n_layer": "model.depth", "n_layers": "model.depth",
    "num_layers": "model.depth", "num_hidden_layers": "model.depth",
    "block_size": "train.seq_len", "context_length": "train.seq_len",
    "max_seq_len": "train.seq_len", "bs": "train.batch_size", "batch": "train.batch_size",
    "global_batch_size": "train.batch_size", "warmup_steps": "schedule.warmup_tokens",
    "warmup": "schedule.warmup_tokens", "max_steps": "train.tokens", "steps": "train.tokens",
    "total_steps": "train.tokens", "num_tokens": "train.tokens", "scheduler": "schedule",
    "lr_schedule": "schedule", "parametrization": "model.param", "mup": "model.param",
}


def did_you_mean(key: str) -> str:
    """"did you mean KEY? " for the config key closest to a misspelt one, or the one another
    trainer's name stands for (`optim.learning_rate`: optim.lr), else ""."""
    import difflib

    from trainer.config import Config
    from trainer.identity import flatten

    keys = list(flatten(Config()))
    lower = {k.lower(): k for k in keys}
    if key.lower() in lower and lower[key.lower()] != key:  # (OPTIM.LR: no letter is off)
        return f"did you mean {lower[key.lower()]} (keys are lower case)? "
    # (another name first: optim.wd is nearer optim.lr by its letters)
    ours = OTHER_NAMES.get(key.rpartition(".")[2].lower())
    if ours is None and (close := difflib.get_close_matches(key, keys, n=1, cutoff=0.75)):
        return f"did you mean {close[0]}? "
    if ours is None:  # (the last part misspelt under another group: train.widht)
        leaves = {k.rpartition(".")[2]: k for k in keys}
        near = difflib.get_close_matches(key.rpartition(".")[2], list(leaves), n=1, cutoff=0.8)
        ours = leaves[near[0]] if near else None
    if ours is None or ours == key:
        return ""
    counted = {"train.tokens": " (a run's length is counted in tokens)",
               "schedule.warmup_tokens": " (counted in tokens)"}.get(ours, "")
    return f"did you mean {ours}{counted}? "


def _default_value(key: str) -> object:
    """The dotted `key`'s default (None where the config has no such key)."""
    node: object = Config()
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def _example(key: str) -> str:
    """A value `key` takes: its default where it is a number (else 1)."""
    node = _default_value(key)
    return str(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else "1"


def _default(key: str) -> str:
    """`key`'s default as an override writes it (an enum by its value)."""
    node = _default_value(key)
    return str(getattr(node, "value", node))


def _explain(err: Exception, overrides: list[str]) -> str:
    """One sentence for a failed compose, from what Hydra and OmegaConf put in their exceptions
    (the missing config file and its options; the key of a refused value), not their text."""
    if isinstance(err, OverrideParseException):
        bad = next((o for o in overrides if not _parses(o)), str(err).splitlines()[0])
        key, _, value = bad.partition("=")
        if value.startswith("[") and "~" in value:  # Hydra's grammar has no bare ~ in a list
            quoted = ",".join(f'"{v.strip()}"' for v in value.strip("[]").split(","))
            return (f"cannot parse override '{bad}': a path with ~ in a list is quoted, e.g. "
                    f"'{key}=[{quoted}]' (single quotes around it all for the shell)")
        return (f"cannot parse override '{bad}': write key=value, e.g. optim.lr=0.003 "
                "(see Hydra's override grammar)")
    removed = [o for o in overrides if o.startswith("~")]
    if removed and any("does not support deletion" in str(e)
                       for e in (err, err.__cause__, err.__context__) if e is not None):
        key = removed[0][1:].partition("=")[0]
        return (f"'{removed[0]}': a config key cannot be removed (every key has a value); set "
                f"it instead, e.g. {key}=VALUE (python -m trainer --cfg prints every key with "
                "its default)")
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = [o for o in err.options or () if not o.endswith("_schema")]
        if group:
            return (f"unknown option '{option}' for config group '{group}': "
                    f"choose one of {', '.join(options)}")
    cause = err if isinstance(err, OmegaConfBaseException) else (err.__cause__ or err.__context__)
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        key = cause.full_key
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
            given = next((o.lstrip("+~").partition("=")[0] for o in overrides
                          if o.lstrip("+~").partition("=")[0].split(".")[0] == key), key)
            return (f"unknown config key '{key}': {did_you_mean(given)}check its spelling "
                    "against conf/ (python -m trainer --cfg prints every key)")
        reason = (cause.msg or str(cause)).splitlines()[0]
        # Of a key given twice, the override whose value the error quotes.
        mine = [o for o in overrides if o.lstrip("+~").partition("=")[0] == key]
        given = next((o for o in mine if f"'{o.partition('=')[2]}'" in reason),
                     mine[-1] if mine else None)
        hint = ""
        try:
            number = float(given.partition("=")[2]) if given else math.nan
        except ValueError:
            number = math.nan
        if "to Integer" in reason and math.isfinite(number) and number == int(number):
            hint = f"; write it as a whole number, e.g. {key}={int(number):_}"
        if not hint and ("to Float" in reason or "to Integer" in reason):
            kind = "whole number" if "to Integer" in reason else "number"
            value = given.partition("=")[2].strip() if given else ""
            if "of type 'list'" in reason and value.startswith("[") and value.endswith("]"):
                # (values listed to try several: a grid axis; `optim.lr=[1e-3,2e-3]`)
                hint = (f"; {key} takes one {kind}: to sweep several, write "
                        f"'{key}=choice({value[1:-1]})' (a grid axis of a sweep)")
            else:
                hint = (f"; {key} takes a {kind}, e.g. {key}={_example(key)}"
                        " (python -m trainer --cfg prints every key with its default)")
        if "is not a valid bool" in reason:  # (`train.compile=maybe`: no word of the fix)
            hint = f"; {key} takes true or false, e.g. {key}=true"
        if "is not Optional" in reason:  # (`optim.lr=null`: the key named, no fix)
            hint = (f"; {key} needs a value, e.g. {key}={_default(key)} (its default: "
                    "leave it out to keep it)")
        if "is not a ListConfig" in reason and given:
            hint = (f"; a list is written in brackets, e.g. '{key}=[{given.partition('=')[2]}]'"
                    " (quoted for the shell)")
        return f"bad value for '{key}'" + (f" in override '{given}'" if given else "") + \
            f": {reason.rstrip('.') if hint else reason}{hint}"
    if "--multirun" in str(err):  # Hydra's word for a sweep expression in one run
        swept = next((o for o in overrides if o in str(err)), "a sweep expression")
        return (f"{swept} is a sweep expression: one run takes one value per key (e.g. "
                "optim.lr=0.001); sweep several with `sweep launch SPEC` (see sweeps/*.yaml)")
    added = [o.lstrip("+").partition("=")[0] for o in overrides if o.startswith("+")]
    if isinstance(err, AttributeError) and added:
        # `+key=value` adds a key Hydra accepts and the frozen dataclass then refuses.
        return (f"unknown config key '{added[0]}': the config has no such key to add; "
                f"{did_you_mean(added[0])}check its spelling against conf/ (python -m "
                "trainer --cfg prints every key)")
    return str(err).splitlines()[0]
