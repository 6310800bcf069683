"""FSDP2 for the GPT, apart from the model: each block, then final norm + readout, then root.

Sharding each block separately lets FSDP all-gather one block's parameters while the previous
block computes and free them right after; the root group holds what is left (the embedding).
On CUDA, parameters are gathered in bf16 and gradients reduced in fp32.
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from trainer.model import GPT


def shard_model(model: GPT, device: torch.device) -> GPT:
    """Apply `fully_shard` in place (the default mesh is every rank) and return the model."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if device.type == "cuda" else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard([model.norm, model.readout], mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model
