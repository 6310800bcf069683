"""The norm test for an adaptive batch size (Byrd et al. 2012; Bollapragada et al. 2018),
estimated from micro-batch gradients under FSDP as in Lau et al. 2024 (FSDP-Norm).

A batch of B samples is large enough while the variance of its mean gradient is small next to
the gradient itself:

    Var(∇f_i) / B  ≤  η² ‖∇F‖²,

and the batch the test asks for is B' = Var(∇f_i) / (η² ‖∇F‖²). Per-sample gradients are not
at hand in a training step, but the gradients of its K micro-batches are: on a test step FSDP
reduces the gradient after every micro-batch (not only after the last), so the accumulated
gradient after micro-batch k, minus the one before, is micro-batch k's gradient averaged over
the ranks, ĝ_k, a mean over n = B/K samples. With ḡ their mean (the step's gradient),

    S = (Σ_k ‖ĝ_k‖² − K ‖ḡ‖²) / (K − 1)      estimates Var(∇f_i) / n,
    T = S / (K ‖ḡ‖²)                          estimates Var(∇f_i) / (B ‖∇F‖²),

so the test fails when T > η², and then B' = T·B/η². With one process and one sample per
micro-batch, S is the per-sample variance itself. Norms are summed over each rank's shards and
then over ranks, so the statistic is that of the full gradient.
"""

from __future__ import annotations

import math

import torch

from trainer.distributed import Dist, all_sum


def _local(grad: torch.Tensor) -> torch.Tensor:
    # FSDP's gradients are DTensors sharded over the ranks; the local shard is this rank's part.
    return grad.to_local() if hasattr(grad, "to_local") else grad


class MicroBatchNoise:
    """Collects ‖ĝ_k‖² over the micro-batches of one step; call `after_backward` after each."""

    def __init__(self, params: list[torch.nn.Parameter], d: Dist):
        self.params, self.dist = params, d
        self.previous: list[torch.Tensor | None] = [None] * len(params)
        self.sum_sq = torch.zeros((), dtype=torch.float64, device=d.device)
        self.count = 0

    def after_backward(self, weight: float) -> None:
        """The micro-batch just back-propagated was weighted `weight` (its share of the batch)
        in the loss: the accumulated gradient grew by `weight` × its gradient."""
        total = torch.zeros((), dtype=torch.float64, device=self.dist.device)
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = _local(p.grad).detach()
            step = grad if self.previous[i] is None else grad - self.previous[i]
            total += step.double().pow(2).sum()
            self.previous[i] = grad.clone()
        self.sum_sq += total / weight**2
        self.count += 1

    def statistic(self) -> float:
        """T = S / (K ‖ḡ‖²), from the gradient now accumulated (before any clipping)."""
        mean_sq = torch.zeros((), dtype=torch.float64, device=self.dist.device)
        for p in self.params:
            if p.grad is not None:
                mean_sq += _local(p.grad).detach().double().pow(2).sum()
        sums = all_sum(torch.stack([self.sum_sq, mean_sq]), self.dist).tolist()
        k = self.count
        if k < 2 or sums[1] <= 0:
            return math.nan
        variance = (sums[0] - k * sums[1]) / (k - 1)
        return max(variance, 0.0) / (k * sums[1])


def grown_batch(statistic: float, batch_size: int, *, eta: float, unit: int, cap: int) -> int:
    """The batch size after a norm test: unchanged while T ≤ η² (or T unknown), else ⌈T·B/η²⌉
    rounded up to whole `unit`s (micro-batch × ranks), at most `cap` (0: none), never less
    than `batch_size`."""
    if not math.isfinite(statistic) or statistic <= eta**2:
        return batch_size
    wanted = math.ceil(statistic * batch_size / eta**2)
    wanted = -(-wanted // unit) * unit
    if cap:
        wanted = min(wanted, cap)
    return max(batch_size, wanted)
