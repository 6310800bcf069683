"""muP's optimizer side: per-group Adam LR and weight-decay multipliers.

The coordinate check that shows the parametrization is right lives in `trainer.coord_check`.

Adam's update of a matrix has entries of order η whatever its fan-in, so a hidden matrix (both
dimensions grow with width) must take LR η/m to keep its effect on activations of order one
(Tensor Programs V, Table 3). Vector-like parameters (embeddings, readout, norm gains) keep η;
the readout's width dependence sits in its forward multiplier α_out/m.

Weight decay on hidden matrices: PyTorch's AdamW shrinks a weight by lr·λ per step. With
lr = η/m that per-step decay falls as 1/m unless λ is multiplied by m; `width_invariant` (the
default, as in the `mup` package) does that, `constant` does not. Norm gains are never decayed.

Weight decay as a timescale (Power Lines, Bergsma et al. 2025): AdamW's weights are an
exponential moving average of past updates over τ = B/(η·λ·D) of the training run (B the batch
and D the budget, both in tokens). A config may set `optim.timescale` instead of
`optim.weight_decay`; `resolved_weight_decay` turns it into λ = B/(η·τ·D), the base λ that
`group_rules` then multiplies per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.config import Config, HiddenWeightDecay, OptimConfig
from trainer.model import GPT, GPTShape


@dataclass(frozen=True)
class GroupRule:
    """Multipliers a parameter group applies to the base LR η and weight decay λ."""

    lr_mult: float
    wd_mult: float


def group_rules(shape: GPTShape, hidden_wd: HiddenWeightDecay) -> dict[str, GroupRule]:
    """LR and WD multipliers per group: `hidden`, `vector_like` (embeddings, readout), `gains`."""
    m = shape.width_mult
    return {
        "hidden": GroupRule(lr_mult=1.0 / m,
                            wd_mult=m if hidden_wd is HiddenWeightDecay.width_invariant else 1.0),
        "vector_like": GroupRule(lr_mult=1.0, wd_mult=1.0),
        "gains": GroupRule(lr_mult=1.0, wd_mult=0.0),
    }


def weight_decay_from_timescale(*, lr: float, timescale: float, batch_tokens: int,
                                tokens: int) -> float:
    """λ = B/(η·τ·D): the weight decay that gives timescale τ (a fraction of the run)."""
    return batch_tokens / (lr * timescale * tokens)


def resolved_weight_decay(cfg: Config) -> float:
    """The base λ of a run: `optim.weight_decay`, or derived from `optim.timescale`."""
    if cfg.optim.timescale is None:
        return cfg.optim.weight_decay
    return weight_decay_from_timescale(lr=cfg.optim.lr, timescale=cfg.optim.timescale,
                                       batch_tokens=cfg.train.batch_size * cfg.train.seq_len,
                                       tokens=cfg.train.tokens)


def group_names(model: GPT) -> dict[str, str]:
    """Parameter name → the name of its group in `group_rules`, in `named_parameters` order."""
    hidden_ids = {id(p) for p in model.hidden_matrices()}
    return {name: "hidden" if id(p) in hidden_ids else "vector_like" if p.ndim >= 2 else "gains"
            for name, p in model.named_parameters()}


def param_groups(model: GPT, *, weight_decay: float,
                 hidden_wd: HiddenWeightDecay) -> list[dict]:
    """AdamW parameter groups, each carrying its `lr_mult` for the schedule to apply."""
    rules = group_rules(model.shape, hidden_wd)
    members: dict[str, list[nn.Parameter]] = {name: [] for name in rules}
    names = group_names(model)
    for name, p in model.named_parameters():
        members[names[name]].append(p)
    return [{"params": params, "name": name, "lr_mult": rules[name].lr_mult,
             "weight_decay": weight_decay * rules[name].wd_mult}
            for name, params in members.items() if params]


def build_optimizer(model: GPT, cfg: OptimConfig, *, weight_decay: float,
                    fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the parametrization's groups; LRs are set each step by `set_lr`. `fused`
    takes PyTorch's one-kernel implementation (CPU or CUDA parameters, not DTensors here)."""
    groups = param_groups(model, weight_decay=weight_decay, hidden_wd=cfg.hidden_weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=True if fused else None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's LR to lr × its muP multiplier."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
