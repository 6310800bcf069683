"""muP's optimizer side, and the coordinate check that shows the parametrization is right.

Adam's update of a matrix has entries of order η whatever its fan-in, so a hidden matrix (both
dimensions grow with width) must take LR η/m to keep its effect on activations of order one
(Tensor Programs V, Table 3). Vector-like parameters (embeddings, readout, norm gains) keep η;
the readout's width dependence sits in its forward multiplier α_out/m.

Weight decay on hidden matrices: PyTorch's AdamW shrinks a weight by lr·λ per step. With
lr = η/m that per-step decay falls as 1/m unless λ is multiplied by m; `width_invariant` (the
default, as in the `mup` package) does that, `constant` does not. Norm gains are never decayed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import HiddenWeightDecay, ModelConfig, OptimConfig
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


def param_groups(model: GPT, *, weight_decay: float,
                 hidden_wd: HiddenWeightDecay) -> list[dict]:
    """AdamW parameter groups, each carrying its `lr_mult` for the schedule to apply."""
    rules = group_rules(model.shape, hidden_wd)
    hidden_ids = {id(p) for p in model.hidden_matrices()}
    members: dict[str, list[nn.Parameter]] = {name: [] for name in rules}
    for p in model.parameters():
        if id(p) in hidden_ids:
            members["hidden"].append(p)
        elif p.ndim >= 2:
            members["vector_like"].append(p)
        else:
            members["gains"].append(p)
    return [{"params": params, "name": name, "lr_mult": rules[name].lr_mult,
             "weight_decay": weight_decay * rules[name].wd_mult}
            for name, params in members.items() if params]


def build_optimizer(model: GPT, cfg: OptimConfig, *, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the parametrization's groups; LRs are set each step by `set_lr`."""
    groups = param_groups(model, weight_decay=weight_decay, hidden_wd=cfg.hidden_weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's LR to lr × its muP multiplier."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


@dataclass(frozen=True)
class CoordCheck:
    """Mean |coordinate| of each layer's output, per width and per step.

    `scales[width][layer][step]`; layers are `embed`, `block0`…, `logits`.
    """

    scales: dict[int, dict[str, list[float]]]

    def growth(self, layer: str, step: int) -> float:
        """Scale at the largest width over scale at the smallest, for one layer and step."""
        widths = sorted(self.scales)
        return self.scales[widths[-1]][layer][step] / self.scales[widths[0]][layer][step]


def coord_check(model_cfg: ModelConfig, widths: list[int], *, lr: float = 1e-2,
                num_steps: int = 4, vocab_size: int = 256, batch_size: int = 8,
                seq_len: int = 64, seed: int = 0) -> CoordCheck:
    """Train one model per width for a few Adam steps on the same random tokens and record
    the mean |x| of every layer's output at each step (step 0 is the initial network).

    Under muP the scales stay flat across width; under SP they grow. This is the check of
    Tensor Programs V / the `mup` README, callable on any model config.
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=gen)
    scales = {}
    for width in widths:
        torch.manual_seed(seed)
        cfg = _with_width(model_cfg, width)
        model = GPT(GPTShape(cfg, vocab_size))
        optimizer = build_optimizer(model, OptimConfig(lr=lr), weight_decay=0.0)
        set_lr(optimizer, lr)
        scales[width] = _record_steps(model, optimizer, tokens, num_steps)
    return CoordCheck(scales)


def _with_width(cfg: ModelConfig, width: int) -> ModelConfig:
    return replace(cfg, width=width)


def _record_steps(model: GPT, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
                  num_steps: int) -> dict[str, list[float]]:
    record: dict[str, list[float]] = {}

    def hook(name):
        def fn(_module, _inputs, output):
            record.setdefault(name, []).append(output.detach().abs().mean().item())
        return fn

    handles = [model.embed.register_forward_hook(hook("embed"))]
    handles += [b.register_forward_hook(hook(f"block{i}")) for i, b in enumerate(model.blocks)]
    handles.append(model.readout.register_forward_hook(hook("readout")))
    logits_scale = []
    for _ in range(num_steps + 1):
        logits = model(tokens[:, :-1])
        logits_scale.append(logits.detach().abs().mean().item())
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for h in handles:
        h.remove()
    record.pop("readout", None)
    record["logits"] = logits_scale
    return record
