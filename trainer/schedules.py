"""Learning-rate schedules as pure functions of tokens seen.

A schedule never looks at the step index: the LR of an update is a function of the number of
tokens the run has seen, so the batch size may change during a run and runs with different
budgets share their prefix. The loop evaluates the schedule at the middle of each batch,
n = tokens before the batch + batch tokens / 2, so that the first update has a non-zero LR
under warmup and the last one a non-zero LR under a decay to zero.

Power (Shen et al. 2024, arXiv 2408.13359): η_power(n) = min(η_max, β·a·n^b) with β the batch
size in sequences, paper constants a = 4, b = −0.51. The warmup ramps linearly to
η_power(N_warmup), the stable phase is η_power(n), and the final decay scales
η_power(N − N_decay), the value where it starts (the paper's schedule; the authors' code ramps
its warmup to η_power(N_warmup) too). η_max is `optim.lr`. Before this rule the warmup and the
decay multiplied η_power(n) itself, which differs where the power law is below the cap: a ramp
above the paper's in the warmup (2x at a quarter of it), an LR still falling with n^b inside
the decay (5% lower at the end of a 10% decay); `trainer.identity.POWER_ANCHOR_KEY` keeps such
runs apart.
WSD (Hägele et al. 2024, arXiv 2405.18392): warmup, constant, then a decay over the last fraction
of tokens with shape linear, cosine, exp or 1-sqrt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from trainer.config import DecayShape, ScheduleConfig, ScheduleName


@dataclass(frozen=True)
class ScheduleInputs:
    """What a schedule may depend on besides tokens seen."""

    peak_lr: float
    """`optim.lr`: the peak LR (the cap η_max under the Power schedule)."""
    total_tokens: int
    """Training budget T."""
    batch_size: int
    """Sequences per optimizer step (β of the Power schedule)."""


DEFAULT_WARMUP_TOKENS = 65_536
"""Warmup of a run that leaves `schedule.warmup_tokens` unset, when its budget holds it."""
SMALL_BUDGET_WARMUP_DIVISOR = 10
"""A budget under `DEFAULT_WARMUP_TOKENS` warms up over a tenth of itself instead."""


def default_warmup_tokens(total_tokens: int) -> int:
    """The warmup of a run that does not set one: 65,536 tokens, or a tenth of a smaller budget.

    A default must never make a config invalid, and it must not move a trial id: every
    budget that held the fixed 65,536 before this rule existed keeps exactly that (and so its
    id); only budgets the fixed value could not serve, which were refused, get a fraction.
    """
    if total_tokens >= DEFAULT_WARMUP_TOKENS:
        return DEFAULT_WARMUP_TOKENS
    return max(total_tokens, 0) // SMALL_BUDGET_WARMUP_DIVISOR


def warmup_factor(tokens: float, warmup_tokens: int) -> float:
    """Linear warmup from 0 to 1 over `warmup_tokens` (1 when there is no warmup)."""
    if warmup_tokens <= 0:
        return 1.0
    return min(1.0, max(tokens, 0.0) / warmup_tokens)


def decay_factor(progress: float, shape: DecayShape, *, min_ratio: float = 0.0,
                 exp_final_ratio: float = 0.01) -> float:
    """Multiplier at `progress` ∈ [0, 1] through a decay window; 1 at its start.

    linear, cosine and 1-sqrt end at `min_ratio`; exp decays geometrically to `exp_final_ratio`.
    """
    p = min(max(progress, 0.0), 1.0)
    if shape is DecayShape.exp:
        return exp_final_ratio**p
    if shape is DecayShape.linear:
        g = 1.0 - p
    elif shape is DecayShape.cosine:
        g = 0.5 * (1.0 + math.cos(math.pi * p))
    else:  # 1-sqrt
        g = 1.0 - math.sqrt(p)
    return min_ratio + (1.0 - min_ratio) * g


def power_lr(tokens: float, *, max_lr: float, batch_size: int, a: float, b: float) -> float:
    """The Power scheduler's stable phase: min(η_max, β·a·n^b)."""
    if tokens <= 0:  # (n^b at 0: unbounded for b < 0, 1 for b = 0)
        return max_lr if b < 0 else min(max_lr, batch_size * a)
    return min(max_lr, batch_size * a * tokens**b)


def _final_decay(cfg: ScheduleConfig, tokens: float, total: int) -> float:
    decay_start = total * (1.0 - cfg.decay_fraction)
    if cfg.decay_fraction <= 0 or tokens <= decay_start:
        return 1.0
    progress = (tokens - decay_start) / (total - decay_start)
    return decay_factor(progress, DecayShape(cfg.decay_shape), min_ratio=cfg.min_lr_ratio,
                        exp_final_ratio=cfg.exp_final_ratio)


def power_anchor(cfg: ScheduleConfig, total_tokens: int, tokens: float) -> float:
    """Where the Power schedule reads η_power at `tokens`: N_warmup during the warmup, the
    decay's start N − N_decay during the decay, `tokens` between. A warmup that reaches into
    the decay keeps its own anchor throughout: the LR before a budget's decay must not depend
    on the budget, or budgets could not share their trunk."""
    decay_start = total_tokens * (1.0 - cfg.decay_fraction) if cfg.decay_fraction > 0 \
        else math.inf
    return max(min(tokens, decay_start), float(warmup_tokens(cfg, total_tokens)))


def _power(cfg: ScheduleConfig, inp: ScheduleInputs, tokens: float) -> float:
    stable = power_lr(power_anchor(cfg, inp.total_tokens, tokens), max_lr=inp.peak_lr,
                      batch_size=inp.batch_size, a=cfg.a, b=cfg.b)
    return stable * _final_decay(cfg, tokens, inp.total_tokens)


def _wsd(cfg: ScheduleConfig, inp: ScheduleInputs, tokens: float) -> float:
    return inp.peak_lr * _final_decay(cfg, tokens, inp.total_tokens)


def _cosine(cfg: ScheduleConfig, inp: ScheduleInputs, tokens: float) -> float:
    progress = tokens / inp.total_tokens
    return inp.peak_lr * decay_factor(progress, DecayShape.cosine, min_ratio=cfg.min_lr_ratio)


def _linear(cfg: ScheduleConfig, inp: ScheduleInputs, tokens: float) -> float:
    progress = tokens / inp.total_tokens
    return inp.peak_lr * decay_factor(progress, DecayShape.linear, min_ratio=cfg.min_lr_ratio)


def _constant(cfg: ScheduleConfig, inp: ScheduleInputs, tokens: float) -> float:
    return inp.peak_lr


SCHEDULES: dict[ScheduleName, Callable[[ScheduleConfig, ScheduleInputs, float], float]] = {
    ScheduleName.power: _power,
    ScheduleName.wsd: _wsd,
    ScheduleName.cosine: _cosine,
    ScheduleName.linear: _linear,
    ScheduleName.constant: _constant,
}


def warmup_tokens(cfg: ScheduleConfig, total_tokens: int) -> int:
    """The warmup a schedule config gives (its default rule where it is unset: a config built
    by hand rather than by `compose`)."""
    return default_warmup_tokens(total_tokens) if cfg.warmup_tokens is None \
        else cfg.warmup_tokens


def learning_rate(cfg: ScheduleConfig, inp: ScheduleInputs, tokens: float) -> float:
    """LR after `tokens` tokens seen: warmup × the named schedule."""
    return (warmup_factor(tokens, warmup_tokens(cfg, inp.total_tokens))
            * SCHEDULES[cfg.name](cfg, inp, tokens))
