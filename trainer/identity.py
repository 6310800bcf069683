"""Trial identity: the SHA-256 of a run's canonical config.

Two configs that train the same model on the same tokens get the same id, so a run (or a sweep
trial) is never trained twice. Keys that cannot change the result are left out: where metrics go
(`tracking`), where files go (`storage_root`, `run_dir`, `checkpoint_dir`, `data.cache_dir`) and
how often the loop logs or checkpoints (checkpoints resume exactly), and over how many
processes a run is sharded (the same global batch gives the same run up to float rounding, and
a checkpoint resumes at any world size). Not for the norm-test batch schedule: its test and its
growth work in micro-batches of every rank, so over W > 1 processes it is another run, and
`train.world_size` enters its id.

A key added later is left out while it is at the default it was introduced with (`INTRODUCED`):
a config that does not use it trained as before the key existed, so it keeps the id it had.
Every new key that changes nothing at its default follows this rule by one entry in the table.
(The norm-test keys used to enter the id of every `norm_test` run, whatever their value; under
this rule a key of a `norm_test` run that sits at its default is left out, which moved the ids
of such runs once, unless all three were set. Runs of a constant batch, the stored majority,
keep theirs, as they did under the special case this rule replaced.) A rule that changes what
a config trains is not a new key: see `ATTENTION_RULE_KEYS`.

The data a run reads is part of its id through `data.fingerprint` (see `trainer.fingerprint`):
the same config on a machine with another Python reads another standard library, so it is
another trial. This moved the ids of runs on `pystdlib`, `files` or a tokenizer file once
(their fingerprint was unset before, and is a hash now). Their results are migrated, not
trained again: `orchestrator.legacy` gives a trial recorded under its old id (the same config
with `data.fingerprint=None`), before fingerprints existed, its new id in MLflow and on disk,
assuming it read the data this machine reads. Runs on `synthetic` or `hf` data, whose keys pin
their data, have no fingerprint and keep their ids.

Where a fingerprint pins the data, the folders of its files are where files are, like
`run_dir`: `data.paths` and `data.tokenizer` enter the id as file names (the fingerprint hashes
each file's name and bytes, in order), so `data/a.txt`, `./data/a.txt` and `/abs/data/a.txt`
name one trial, and a corpus moved to another folder keeps its trials. Until then the paths
entered as written, which moved the ids of runs on files in a folder once more; they are
migrated as above (`past_ids` gives the ids a config had under the earlier rules).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
from pathlib import PurePath
from typing import Any

from trainer.config import Config

IGNORED_KEYS = frozenset({
    "tracking", "storage_root", "run_dir", "checkpoint_dir", "data.cache_dir",
    "train.log_every_steps", "train.checkpoint_every_tokens", "train.keep_checkpoints",
    "train.world_size",
})


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key → plain value (enums as their values) for a config dataclass."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value.value if isinstance(value, enum.Enum) else value
    return out


def whole_number_key(key: str) -> bool:
    """Is `key` a config key that holds a whole number (by its default's type)?"""
    value = flatten(Config()).get(key)
    return isinstance(value, int) and not isinstance(value, bool)


def _normalise(value: Any) -> Any:
    # 1e-3 written as 0.001, 1.0e-3 or 0.0010 is one float; `.12g` also absorbs the last-bit
    # noise of values computed in a grid (3 * 0.1).
    if isinstance(value, float):
        return float(format(value, ".12g"))
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


INTRODUCED: dict[str, Any] = {
    # adaptive batch (train.batch_schedule=norm_test): read only by that schedule
    "train.norm_test_eta": 0.1, "train.norm_test_every": 10, "train.max_batch_size": 0,
    "data.revision": None, "data.fingerprint": None, "data.val_paths": [],
}
"""Keys added after the first ids, with the default each was introduced with. At that value
the key is left out of the hash, so configs that do not use it keep their ids."""


ATTENTION_RULE_KEYS = frozenset({"model.base_head_dim"})
"""Keys of the attention-scale rule attn_mult·√d₀/d (`trainer.model.attention_scale`). That rule
changed the network of every muP run (its scores were attn_mult/d, a different network from SP
at base width) and of SP runs with attn_mult ≠ 1 (SP ignored attn_mult), so those runs carry
these keys in their id and are not taken for results of the old network. SP runs at
attn_mult = 1 trained the same network before and keep their ids."""


def _ignored(flat: dict[str, Any]) -> frozenset[str]:
    ignored = IGNORED_KEYS | {k for k, default in INTRODUCED.items()
                              if _normalise(flat[k]) == _normalise(default)}
    if flat["model.param"] == "sp" and flat["model.attn_mult"] == 1.0:
        ignored |= ATTENTION_RULE_KEYS
    if flat["train.batch_schedule"] == "norm_test" and flat["train.world_size"] != 1:
        # The norm test's unit is a micro-batch of every rank, and the batch grows in whole
        # such units: over W processes it estimates and grows otherwise, a run of its own.
        # (One process keeps the id it had when no world size entered any id.)
        ignored -= {"train.world_size"}
    return ignored


EXECUTION_KEYS: dict[str, Any] = {"train.compile": False}
"""Keys that say how a run executes, not what it trains, but were hashed before that was
decided: each is hashed at the value every run had then, whatever it is set to, so ids did not
move. `train.compile` changes results only by float rounding (like `train.world_size`); its
default became `null` (compile on CUDA) and a run keeps its id whether or not it compiles. (A
run stored with `train.compile=true` before then had it in its id; that id moved once.)"""


def _file_names(flat: dict[str, Any]) -> None:
    # The fingerprint hashes the files' names and bytes: their folders say only where they are.
    if flat["data.fingerprint"] is None:
        return
    flat["data.paths"] = [_name(p) for p in flat["data.paths"]]
    flat["data.val_paths"] = [_name(p) for p in flat["data.val_paths"]]
    if flat["data.tokenizer"] is not None:
        flat["data.tokenizer"] = _name(flat["data.tokenizer"])


def _name(path: str) -> str:
    # `PurePath(path).name` (what ids were computed with) for the paths a config holds, ~20x
    # faster: a folder of shards puts thousands in each trial's config.
    name = os.path.basename(path.rstrip("/"))
    return name if name not in (".", "..") and "/." not in path else PurePath(path).name


POWER_ANCHOR_KEY = "schedule.power_anchor"
"""Not a config key: the phases a Power run trains otherwise under the paper's anchors
(`trainer.schedules.power_anchor`) than before them, in the id of such runs only. Before, the
warmup and the decay multiplied η_power(n) itself; that differs from the paper's schedule
only where β·a·n^b falls below `optim.lr`: in the decay where it does by the budget's end, in
the warmup where it does by the warmup's end. Those runs trained another LR curve, so their
stored results are not taken for the paper's (nor a half-done one resumed under the other
rule); every other Power run trained the same curve and keeps its id."""


def power_anchored(flat: dict[str, Any], *, phases: tuple[str, ...] = ("warmup", "decay")
                   ) -> str | None:
    """Which of `phases` a Power run (its flat config) trains otherwise under the paper's
    anchors than under the rule before them ("warmup", "decay" or "warmup+decay"), else
    None. Read at the starting batch: a norm-test run's batch only grows, which raises
    β·a·n^b, so a run is marked where any batch of it might differ."""
    from trainer.schedules import default_warmup_tokens

    if flat["schedule.name"] != "power" or not flat["schedule.b"] < 0:
        return None
    total, decay = flat["train.tokens"], flat["schedule.decay_fraction"]
    warmup = flat["schedule.warmup_tokens"]
    warmup = default_warmup_tokens(total) if warmup is None else warmup
    scale = flat["train.batch_size"] * flat["schedule.a"]

    def below_cap(n: float) -> bool:
        return n > 0 and scale * n ** flat["schedule.b"] < flat["optim.lr"]

    found = [phase for phase, differs in (
        ("warmup", warmup > 0 and below_cap(warmup)),
        ("decay", decay > 0 and below_cap(total))) if phase in phases and differs]
    return "+".join(found) or None


def _canonical(flat: dict[str, Any]) -> str:
    ignored = _ignored(flat)
    items = {k: _normalise(v) for k, v in flat.items()
             if k not in ignored and k.split(".")[0] not in ignored}
    if anchored := power_anchored(flat):
        items[POWER_ANCHOR_KEY] = anchored
    return json.dumps(items, sort_keys=True, separators=(",", ":"))


def canonical_json(cfg: Config) -> str:
    """Sorted-key JSON of the keys that change the result, floats normalised."""
    flat = {**flatten(cfg), **EXECUTION_KEYS}
    _file_names(flat)
    return _canonical(flat)


def written_json(cfg: Config) -> str:
    """`canonical_json` under the rule before fingerprinted data's folders left the id: its
    data paths as written (`past_ids`)."""
    return _canonical({**flatten(cfg), **EXECUTION_KEYS})


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_id(cfg: Config) -> str:
    """The trial id: SHA-256 hex digest of `canonical_json(cfg)`."""
    return _sha(canonical_json(cfg))


def written_id(cfg: Config) -> str:
    """The id under the rule before fingerprinted data's folders left it (`written_json`)."""
    return _sha(written_json(cfg))


def spellings(cfg: Config) -> list[Config]:
    """`cfg` with its data files written as an earlier version likely had them, when paths
    entered the id as written: as they are, relative to the folder this process runs in,
    that with `./`, and absolute. Just `cfg` where no fingerprint pins files (their paths
    are still in the id as written)."""
    data = cfg.data
    if data.fingerprint is None or not (data.paths or data.tokenizer):
        return [cfg]

    def written(style) -> Config:
        return dataclasses.replace(cfg, data=dataclasses.replace(
            data, paths=[style(p) for p in data.paths],
            tokenizer=data.tokenizer and style(data.tokenizer)))

    def relative(path: str) -> str:
        return os.path.relpath(path) if os.path.isabs(path) else path

    return [cfg, written(relative), written(lambda p: os.path.join(".", relative(p))),
            written(os.path.abspath)]


def past_ids(cfg: Config) -> list[str]:
    """The ids this config had under earlier rules, where they differ from its id now, for
    each way its files were likely written (`spellings`): its data paths as written (before
    fingerprinted files entered by name), and before that without its data fingerprint.
    `orchestrator.legacy` and `trainer.loop.run` find what was stored under them."""
    if cfg.data.fingerprint is None:
        return []
    found = []
    for written in spellings(cfg):
        unpinned = dataclasses.replace(written, data=dataclasses.replace(written.data,
                                                                          fingerprint=None))
        found += [written_id(written), config_id(unpinned)]
    now = config_id(cfg)
    return [i for i in dict.fromkeys(found) if i != now]
