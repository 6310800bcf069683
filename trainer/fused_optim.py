"""AdamW over stacked parameters: one update for K members, each with its own LR and weight decay.

Member k of a `StackedGPT` takes exactly the update that `torch.optim.AdamW` with the groups of
`trainer.mup.param_groups` gives the same member alone: the muP group multipliers (hidden
matrices η/m and λ·m, norm gains undecayed) apply per member to its own base η and λ.

Two ways, one update:
- eager on CPU: PyTorch's fused AdamW kernel, the one a lone run takes
  (`trainer.loop` builds its AdamW with `fused=True`), called once per member and muP group
  on that member's rows (contiguous slices of the stacked tensors) with the member's own LR and
  weight decay. The kernel is elementwise and a member's rows are a tensor of the lone
  run's size, so a member's update is its lone run's bit for bit (checked, with 1 and 2
  threads, tests/trainer/test_fused.py and by hand).
- compiled (CUDA's default), and eager on CUDA (where a step count per member would be one
  host-to-device copy each): every scalar PyTorch computes in double on the host
  (1 − η·λ, η / (1 − β₁ᵗ), √(1 − β₂ᵗ)) is computed the same way per member and enters the
  update as a (K, 1, …) fp32 tensor, in the order of PyTorch's single-tensor AdamW, so that a
  few fused kernels update every member at once; it matches the fused kernel to fp32 rounding.

`keep_members` drops members (a diverged one) from the moments along with the model's rows.

Gradient clipping is per member too (`clip_grad_norms_`): each member's global norm over its own
rows of every parameter, as `torch.nn.utils.clip_grad_norm_` computes it for the member alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from trainer.config import OptimConfig
from trainer.fused_model import StackedGPT
from trainer.loop import compile_step
from trainer.model import GPT
from trainer.mup import GroupRule, group_names, group_rules


def clip_grad_norms_(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each member's gradient to global norm `max_norm` (inf: no clipping); the (K,)
    norms before clipping."""
    norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params])
    total = torch.linalg.vector_norm(norms, dim=0)  # (K,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef.view(-1, *[1] * (p.ndim - 1)))
    return total


class StackedAdamW:
    """AdamW for the parameters of a `StackedGPT`, with per-member base LR and weight decay.

    Args:
        model: the stacked members.
        template: one member as an ordinary `GPT`; it names each parameter's muP group.
        cfg: β₁, β₂, ε and the hidden weight-decay rule (shared by the members).
        weight_decays: each member's base λ (`trainer.mup.resolved_weight_decay`).
    """

    def __init__(self, model: StackedGPT, template: GPT, cfg: OptimConfig, *,
                 weight_decays: Sequence[float], compiled: bool = False):
        rules = group_rules(template.shape, cfg.hidden_weight_decay)
        groups = group_names(template)
        self.params: list[tuple[str, torch.nn.Parameter, GroupRule]] = [
            (name, p, rules[groups[name]]) for name, p in model.named_parameters()]
        self.weight_decays = list(weight_decays)
        self.beta1, self.beta2, self.eps = cfg.beta1, cfg.beta2, cfg.eps
        self.exp_avg = {name: torch.zeros_like(p) for name, p, _ in self.params}
        self.exp_avg_sq = {name: torch.zeros_like(p) for name, p, _ in self.params}
        self.steps = [0] * model.num_members
        """Updates each member has taken."""
        # Compiled, a few fused kernels for all of them (the per-member factors are tensors,
        # so a new step does not recompile).
        self.compiled = compiled
        self._by_rule: dict[GroupRule, list[tuple[str, torch.nn.Parameter]]] = {}
        for name, p, rule in self.params:
            self._by_rule.setdefault(rule, []).append((name, p))
        self._update_all = compile_step(self._update_each) if compiled else self._update_each

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One AdamW update of every member, member k at base LR `lrs[k]`."""
        self.steps = [t + 1 for t in self.steps]
        if not self.compiled and self.params[0][1].device.type == "cpu":
            self._fused_step(lrs)
            return
        rules = list(dict.fromkeys(rule for _, _, rule in self.params))
        scalars = dict(zip(rules, self._upload([self._scalars(rule, lrs) for rule in rules]),
                           strict=True))
        self._update_all([p for _, p, _ in self.params], [p.grad for _, p, _ in self.params],
                         [self.exp_avg[name] for name, _, _ in self.params],
                         [self.exp_avg_sq[name] for name, _, _ in self.params],
                         [scalars[rule] for _, _, rule in self.params])

    def _fused_step(self, lrs: Sequence[float]) -> None:
        """PyTorch's fused AdamW kernel per member and group, with the group's LR and weight
        decay computed as `trainer.mup.set_lr` and `param_groups` compute them."""
        device = self.params[0][1].device
        for k, (lr, wd, step) in enumerate(zip(lrs, self.weight_decays, self.steps, strict=True)):
            count = torch.tensor(float(step), device=device)  # as AdamW holds a step count
            for rule, named in self._by_rule.items():
                torch._fused_adamw_(
                    [p[k] for _, p in named], [p.grad[k] for _, p in named],
                    [self.exp_avg[name][k] for name, _ in named],
                    [self.exp_avg_sq[name][k] for name, _ in named], [], [count] * len(named),
                    amsgrad=False, lr=lr * rule.lr_mult, beta1=self.beta1, beta2=self.beta2,
                    weight_decay=wd * rule.wd_mult, eps=self.eps, maximize=False,
                    grad_scale=None, found_inf=None)

    def _update_each(self, params: list[torch.Tensor], grads: list[torch.Tensor],
                     exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                     scalars: list[tuple[torch.Tensor | None, ...]]) -> None:
        for p, grad, exp_avg, exp_avg_sq, factors in zip(params, grads, exp_avgs, exp_avg_sqs,
                                                         scalars, strict=True):
            self._update(p, grad, exp_avg, exp_avg_sq, *factors)

    @torch.no_grad()
    def keep_members(self, rows: list[int]) -> None:
        """Keep only the members at `rows`, in that order, as `StackedGPT.keep_members` does
        with their weights."""
        index = torch.tensor(rows, dtype=torch.long, device=self.params[0][1].device)
        for moments in (self.exp_avg, self.exp_avg_sq):
            for name in moments:
                moments[name] = moments[name].index_select(0, index)
        self.steps = [self.steps[r] for r in rows]
        self.weight_decays = [self.weight_decays[r] for r in rows]

    def _scalars(self, rule: GroupRule, lrs: Sequence[float]) -> list[list[float] | None]:
        """A group's per-member factors, each computed in double on the host as PyTorch
        computes it: 1 − η·λ (None without decay), −η / (1 − β₁ᵗ) and √(1 − β₂ᵗ)."""
        group_lrs = [lr * rule.lr_mult for lr in lrs]
        group_wds = [wd * rule.wd_mult for wd in self.weight_decays]
        decays = None
        if any(wd != 0 for wd in group_wds):
            decays = [1 - lr * wd for lr, wd in zip(group_lrs, group_wds, strict=True)]
        neg_steps = [-(lr / (1 - self.beta1**t))
                     for lr, t in zip(group_lrs, self.steps, strict=True)]
        bias2_sqrt = [(1 - self.beta2**t) ** 0.5 for t in self.steps]
        return [decays, neg_steps, bias2_sqrt]

    def _upload(self, factors: list[list[list[float] | None]]
                ) -> list[tuple[torch.Tensor | None, ...]]:
        """Every group's (K,) factors as fp32 tensors on the parameters' device, in one copy:
        on CUDA, one non-blocking copy from pinned memory, so that the host never waits for
        the device here (a `torch.tensor(..., device="cuda")` per factor waits each time)."""
        num_members = len(self.steps)
        table = torch.tensor([v if v is not None else [0.0] * num_members
                              for group in factors for v in group], dtype=torch.float32)
        device = self.params[0][1].device
        if device.type == "cuda":
            table = table.pin_memory().to(device, non_blocking=True)
        rows = table.view(len(factors), -1, num_members).unbind(0)  # a (3, K) table a group
        return [tuple(None if v is None else row for v, row in zip(group, table_rows,
                                                                   strict=True))
                for group, table_rows in zip(factors, rows, strict=True)]

    def _update(self, p: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                exp_avg_sq: torch.Tensor, decay: torch.Tensor | None, neg_step: torch.Tensor,
                bias2_sqrt: torch.Tensor) -> None:
        # PyTorch's _single_tensor_adam with decoupled weight decay, a member per row.
        def rows(v: torch.Tensor) -> torch.Tensor:  # (K,) → (K, 1, …) against p
            return v.view(-1, *[1] * (p.ndim - 1))

        if decay is not None:
            p.mul_(rows(decay))
        exp_avg.lerp_(grad, 1 - self.beta1)
        exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        denom = (exp_avg_sq.sqrt() / rows(bias2_sqrt)).add_(self.eps)
        # PyTorch's addcdiv_(exp_avg, denom, value=-s) computes p + (-s·exp_avg) / denom.
        p.addcdiv_(exp_avg * rows(neg_step), denom)

    # -- a member's state as PyTorch's AdamW holds it (checkpoints) --------------------------

    @torch.no_grad()
    def store_member(self, k: int, model: GPT, optimizer: torch.optim.AdamW) -> None:
        """Write member k's moments and step count into `optimizer` over `model`'s parameters,
        as if that optimizer had trained the member alone."""
        target = dict(model.named_parameters())
        for name, _, _ in self.params:
            optimizer.state[target[name]] = {
                "step": torch.tensor(float(self.steps[k])),
                "exp_avg": self.exp_avg[name][k].clone(),
                "exp_avg_sq": self.exp_avg_sq[name][k].clone()}

    @torch.no_grad()
    def load_member(self, k: int, model: GPT, optimizer: torch.optim.AdamW) -> None:
        """Take member k's moments and step count from `optimizer` over `model` (a member
        restored from its own checkpoint); zeros when it has taken no step."""
        source = dict(model.named_parameters())
        steps = set()
        for name, _, _ in self.params:
            state = optimizer.state.get(source[name], {})
            steps.add(int(math.floor(float(state.get("step", 0)))))
            for moments, key in ((self.exp_avg, "exp_avg"), (self.exp_avg_sq, "exp_avg_sq")):
                if key in state:
                    moments[name][k].copy_(state[key])
                else:
                    moments[name][k].zero_()
        (self.steps[k],) = steps
