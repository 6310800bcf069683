"""Groups: runs that share the categorical keys a law does not depend on.

A law relates an optimum to its axes (N, D, B, and the weight decay λ behind τ). Any other key
that varies across a sweep — `model.param` (muP or SP), the schedule, the data source, a muP
multiplier — changes the optimum in a way no axis describes, so each law is fitted separately
for each combination of those keys: a *group*. muP and SP runs never share an lr law unless the
user pools them (`sweep fit --pool`), in which case each (N, D, B) takes its best slice across
the groups, as every other non-axis key does within a group.

Not group keys: the axes themselves, config keys that set them (`AXIS_CONFIG_KEYS`), and any
other numeric key that takes one value per setting of the axes (e.g. a head count that grows
with the width).

A group is named by its label, `key=value` pairs joined by commas (`model.param=mup`); in
fit.json a law of a sweep with several groups is keyed `LAW[LABEL]`, e.g. `lr[model.param=mup]`.
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from fitter.data import Runs
from fitter.errors import FitError

AXES = ("N", "D", "B", "wd")
AXIS_CONFIG_KEYS = frozenset({
    "model.width", "model.depth", "model.head_dim", "model.n_head", "model.n_heads",
    "train.tokens", "train.batch_size", "train.seq_len", "optim.weight_decay", "optim.timescale",
})
"""Config keys whose effect a law sees through N, D, B or λ."""


def group_keys(runs: Runs) -> tuple[str, ...]:
    """The slice keys that split a sweep into groups (see the module docstring)."""
    table = runs.table
    axes = [a for a in AXES if a in runs.slice_keys]
    keys = []
    for key in runs.slice_keys:
        if key in AXES or key in AXIS_CONFIG_KEYS:
            continue
        numeric = pd.to_numeric(table[key], errors="coerce").notna().all()
        if numeric and axes and (table.groupby(axes, dropna=False)[key]
                                 .nunique(dropna=False) <= 1).all():
            continue
        keys.append(key)
    return tuple(keys)


def split(runs: Runs, keys: tuple[str, ...]) -> list[tuple[dict[str, str], Runs]]:
    """(group, runs of that group) for each combination of the keys, in sorted order."""
    if not keys:
        return [({}, runs)]
    rest = tuple(k for k in runs.slice_keys if k not in keys)
    out = []
    usable = runs.usable.index
    for values, table in runs.table.groupby(list(keys), dropna=False, sort=True):
        if not table.index.isin(usable).any():
            continue  # only trials that have not reported: no group to fit yet
        values = values if isinstance(values, tuple) else (values,)
        group = {k: str(v) for k, v in zip(keys, values, strict=True)}
        out.append((group, Runs(table.reset_index(drop=True), rest, runs.source,
                                runs.histories)))
    return out


def label(group: dict[str, str]) -> str:
    """`model.param=mup,schedule=wsd`; empty for the one group of an ungrouped sweep."""
    return ",".join(f"{k}={v}" for k, v in group.items())


def law_key(law: str, group: dict[str, str], *, grouped: bool) -> str:
    """The key of a law in fit.json: `lr`, or `lr[model.param=mup]` when there are groups."""
    return f"{law}[{label(group)}]" if grouped else law


def parse_group(pairs: list[str] | None) -> dict[str, str]:
    """`--group KEY=VALUE` arguments (repeatable, or comma-separated) as a dict.

    Raises:
        FitError: an argument that is not KEY=VALUE.
    """
    out = {}
    for text in pairs or []:
        for pair in text.split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise FitError(f"--group {pair!r} is not KEY=VALUE; write e.g. "
                               "--group model.param=mup.")
            key, value = key.strip(), value.strip()
            if key in out and out[key] != value:
                raise FitError(f"--group {key} is given twice ({out[key]}, {value}): a fit "
                               "takes one group; give one value per key (or fit each in turn).")
            out[key] = value
    return out


SHORT_AXIS_KEYS = {"N": "model.width", "D": "train.tokens", "B": "train.batch_size"}
"""The config key that sets each axis, which a message names in its place."""


def select(runs: Runs, wanted: dict[str, str]) -> Runs:
    """Only the runs of one group (`sweep fit --group`).

    Raises:
        FitError: a key that does not vary in the sweep, or a value no run has.
    """
    table = runs.table
    for key, value in wanted.items():
        if key not in runs.slice_keys or key not in table:
            varying = [k for k in runs.slice_keys if k in table]
            # (N, D, B by their config keys where the runs have those: model.width, not N)
            shown = [k for k in varying if SHORT_AXIS_KEYS.get(k) not in varying]
            keys = ", ".join(shown) or "none"
            if key in table:  # (a key the runs have, at one value)
                one = table[key].astype(str).unique()
                raise FitError(f"--group {key}={value}: {key} does not vary in {runs.source} "
                               f"(every run has {key}={one[0] if len(one) == 1 else '?'}); the "
                               f"keys that do: {keys}.")
            near = difflib.get_close_matches(key, shown, n=1, cutoff=0.75)
            raise FitError(f"--group {key}={value}: {key} does not vary in {runs.source}"
                           + (f" (did you mean {near[0]}?)" if near else "")
                           + f"; the keys that do: {keys}.")
        values = sorted(table[key].astype(str).unique())
        same = table[key].astype(str) == value
        number = pd.to_numeric(table[key], errors="coerce")
        if not same.any() and _is_number(value) and number.notna().any():
            same = np.isclose(number, float(value))  # (3 names the runs at 3.0, as printed)
        if not same.any():
            raise FitError(f"--group {key}={value}: no run in {runs.source} has it; choose one "
                           f"of {', '.join(f'{key}={v}' for v in values)}.")
        table = table[np.asarray(same)]
    rest = tuple(k for k in runs.slice_keys if k not in wanted)
    return Runs(table.reset_index(drop=True), rest, runs.source, runs.histories)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
