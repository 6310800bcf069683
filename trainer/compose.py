"""From Hydra overrides to a typed `Config`, with Hydra's errors turned into one sentence each."""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import typing
from collections.abc import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer.config import CONF_DIR, Config
from trainer.errors import ConfigError
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
    """`cfg` with every key left unset for a default rule set by that rule."""
    if cfg.schedule.warmup_tokens is not None:
        return cfg
    warmup = default_warmup_tokens(cfg.train.tokens)
    return dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule,
                                                                 warmup_tokens=warmup))


def _compose_unset(overrides: Sequence[str]) -> Config:
    # Hydra's compose, with keys of a default rule still unset: the rule depends on other
    # keys (warmup on train.tokens), which `Composer` may still replace.
    overrides = list(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("config", overrides=overrides)
        OmegaConf.resolve(cfg)
        return OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException, TypeError, AttributeError) as err:
        raise ConfigError(_explain(err, overrides)) from None


class Composer:
    """`compose` for many configs that share their config-group choices (a sweep's grid).

    Hydra's compose costs ~0.1 s, and a grid of thousands of trials differs mostly in plain
    values. So the config is composed once per distinct set of group choices (`model=small`)
    and plain `key=value` overrides are applied to that typed `Config` with
    `dataclasses.replace`, converting each value to its field's type as OmegaConf would.
    Anything this cannot do exactly (`+key`, `~key`, an interpolation, a value of the wrong
    type, an unknown key) goes through the full `compose`, which also gives the standard
    error sentence. Keys of a default rule stay unset in the cached bases and are filled in
    last, from the trial's own values. Tests check that both paths give equal configs.
    """

    def __init__(self) -> None:
        self._bases: dict[tuple[str, ...], Config] = {}
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
            cfg = self._base(groups)
            for o in plain:
                cfg = _replace_path(cfg, o.key_or_group.split("."), o.value())
            return with_defaults(cfg)
        except _NotExact:
            return compose(overrides)  # the exact path, or the usual error sentence

    def _parse(self, override: str):
        # A grid repeats each value in many trials, and Hydra's parser costs ~1 ms a call.
        if override not in self._parsed:
            self._parsed[override] = self._parser.parse_overrides([override])[0]
        return self._parsed[override]

    def _base(self, groups: tuple[str, ...]) -> Config:
        if groups not in self._bases:
            self._bases[groups] = _compose_unset(groups)
        return self._bases[groups]


class _NotExact(Exception):
    """The fast path cannot reproduce compose exactly for this override."""


def _replace_path(obj: object, path: list[str], value: object) -> object:
    hints = _hints(type(obj))
    if not dataclasses.is_dataclass(obj) or path[0] not in hints:
        raise _NotExact
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: _coerce(value, hints[path[0]])})
    inner = _replace_path(getattr(obj, path[0]), path[1:], value)
    return dataclasses.replace(obj, **{path[0]: inner})


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}


def _coerce(value: object, hint: object) -> object:
    """`value` as OmegaConf would store it in a field typed `hint`, or _NotExact."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
    if value is None:
        raise _NotExact
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        if "${" in str(value):
            raise _NotExact
        return str(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and isinstance(value, str):
        if value in hint.__members__:
            return hint[value]
        raise _NotExact
    if typing.get_origin(hint) is list and isinstance(value, list):
        return [_coerce(v, typing.get_args(hint)[0]) for v in value]
    raise _NotExact


def _is_group_choice(key: str) -> bool:
    return "." not in key and (CONF_DIR / key).is_dir()


def _parses(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        return False
    return True


def _explain(err: Exception, overrides: list[str]) -> str:
    text = str(err)
    if isinstance(err, OverrideParseException):
        bad = next((o for o in overrides if not _parses(o)), text.splitlines()[0])
        return (f"cannot parse override '{bad}': write key=value, e.g. optim.lr=0.003 "
                "(see Hydra's override grammar)")
    if isinstance(err, MissingConfigException):
        group = re.search(r"Could not find '([^/']+)/([^']+)'", text)
        options = re.findall(r"^\t(\w[\w-]*)$", text, flags=re.MULTILINE)
        options = [o for o in options if not o.endswith("_schema")]
        if group:
            return (f"unknown option '{group.group(2)}' for config group '{group.group(1)}': "
                    f"choose one of {', '.join(options)}")
        return text.splitlines()[0]
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' not in '", text) or re.search(r"cannot assign to field '([^']+)'", text)
    if unknown:
        return (f"unknown config key '{unknown.group(1)}': check its spelling against conf/ "
                "(python -m trainer --cfg prints every key)")
    merging = re.search(r"Error merging override (\S+)", text)
    cause = err.__cause__ or err.__context__
    reason = str(cause).splitlines()[0] if cause is not None else text.splitlines()[0]
    key = re.search(r"full_key: (\S+)", str(cause) if cause else text)
    if merging:
        name = key.group(1) if key else merging.group(1).split("=")[0]
        return f"bad value for '{name}' in override '{merging.group(1)}': {reason}"
    if key:
        return f"bad value for '{key.group(1)}': {reason}"
    return text.splitlines()[0]
