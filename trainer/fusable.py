"""Which trials may train as one fused group (`trainer.fused`), without importing torch: the
sweep's driver plans its groups with these (`orchestrator.fusion`) and never loads the model.

Members may differ in `MEMBER_KEYS` and keys under `MEMBER_PREFIXES` only; `fusion_problems`
says why a set of configs cannot fuse, one sentence per problem, and `group_key` is what
fusable configs share.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from trainer.config import BatchSchedule, Config
from trainer.identity import config_id, flatten

MEMBER_KEYS = frozenset({"optim.lr", "optim.weight_decay", "optim.timescale",
                         "run_dir", "checkpoint_dir"})
"""Keys in which the members of a group may differ, besides `MEMBER_PREFIXES`."""
MEMBER_PREFIXES = ("schedule.",)


def is_member_key(key: str) -> bool:
    """May members of one group differ in the dotted config key `key`?"""
    return key in MEMBER_KEYS or key.startswith(MEMBER_PREFIXES)


def group_key(cfg: Config) -> str:
    """What the members of a group share: configs with equal keys may train as one group
    (when `fusion_problems` finds none)."""
    shared = {k: v for k, v in flatten(cfg).items() if not is_member_key(k)}
    return json.dumps(shared, sort_keys=True, default=str)


def fusion_problems(cfgs: Sequence[Config]) -> list[str]:
    """Why `cfgs` cannot train as one group, one sentence each (empty when they can)."""
    found = []
    first = flatten(cfgs[0])
    for cfg in cfgs[1:]:
        for key, value in flatten(cfg).items():
            if not is_member_key(key) and value != first[key]:
                message = (f"members differ in {key} ({first[key]!r} and {value!r}): only "
                           "optim.lr, optim.weight_decay, optim.timescale and schedule.* may "
                           "differ within a fused group")
                if message not in found:
                    found.append(message)
    ids = [config_id(cfg) for cfg in cfgs]
    if len(set(ids)) < len(ids):
        found.append("the same trial is in the group twice: list each config once")
    t = cfgs[0].train
    if t.world_size != 1:
        found.append(f"train.world_size={t.world_size}: a fused group runs in one process; "
                     "set train.world_size=1 or do not fuse")
    if t.batch_schedule is not BatchSchedule.constant:
        found.append(f"train.batch_schedule={t.batch_schedule.value} grows each member's batch "
                     "on its own: use train.batch_schedule=constant or do not fuse")
    return found
