"""Synthetic sweeps drawn from known laws, for tests and benchmarks.

A run's final loss is the loss law plus quadratic penalties in log space for being away from
the optimal learning rate, batch size and timescale, plus Gaussian noise:

    L = E + A/N^α + B/D^β + k_lr·(log10 η/η_opt)² + k_B·(log10 B/B_opt)²
        + k_τ·(log10 τ/τ_opt)² + ε,     τ = B/(η λ D)

with η_opt = c·N^e_N·D^e_D·B^e_B, B_opt = c_B·D^p_B and τ_opt = c_τ·(D/N)^m. Runs with
η > `diverge_above`·η_opt diverge (no loss). The LR grid of each slice is geometric and offset
at random, so optima rarely sit on a grid point.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

LR_STEPS = tuple(np.arange(-1.0, 1.01, 0.25))
"""log10 offsets of a slice's LRs from its (jittered) centre."""


@dataclass(frozen=True)
class Truth:
    """The laws a synthetic sweep is drawn from."""

    lr: tuple[float, float, float, float] = (0.5, -0.3, -0.1, 0.4)
    """c, e_N, e_D, e_B of η_opt."""
    loss: tuple[float, float, float, float, float] = (1.8, 480.0, 2000.0, 0.35, 0.37)
    """E, A, B, α, β."""
    batch: tuple[float, float] = (0.6, 0.55)
    """c_B, p_B of B_opt."""
    timescale: tuple[float, float] = (0.5, -0.3)
    """c_τ, m of τ_opt."""
    k_lr: float = 0.05
    k_batch: float = 0.0
    k_tau: float = 0.0

    def lr_opt(self, n, d, b):
        """η_opt at (N, D, B)."""
        c, en, ed, eb = self.lr
        return c * n ** en * d ** ed * b ** eb


def synthetic_runs(truth: Truth, *, n_values, d_values, b_values, wd_values=(0.0,),
                   tau_values=None, lr_steps=LR_STEPS, noise: float = 0.002,
                   diverge_above: float | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per run with short column names (run, N, D, B, lr, wd, loss, status).

    With `tau_values` the sweep sets the timescale instead of λ, as `optim.timescale` does:
    each run has an `optim.timescale` column and λ = B/(η·τ·D), which then differs between
    the LRs of one slice.
    """
    rng = np.random.default_rng(seed)
    rows = []
    settings = wd_values if tau_values is None else tau_values
    for n, d, b, setting in itertools.product(n_values, d_values, b_values, settings):
        centre = truth.lr_opt(n, d, b) * 10 ** rng.uniform(-0.12, 0.12)
        for lr in centre * 10.0 ** np.asarray(lr_steps):
            wd = setting if tau_values is None else b / (lr * setting * d)
            loss = _loss(truth, n, d, b, lr, wd) + rng.normal(0, noise)
            diverged = diverge_above is not None and lr > diverge_above * truth.lr_opt(n, d, b)
            row = {"run": f"r{len(rows)}", "N": n, "D": d, "B": b, "lr": lr, "wd": wd,
                   "loss": np.nan if diverged else loss,
                   "status": "diverged" if diverged else "finished"}
            if tau_values is not None:
                row["optim.timescale"] = setting
            rows.append(row)
    return pd.DataFrame(rows)


def _loss(truth: Truth, n, d, b, lr, wd) -> float:
    e, a, bb, alpha, beta = truth.loss
    loss = e + a / n ** alpha + bb / d ** beta
    loss += truth.k_lr * np.log10(lr / truth.lr_opt(n, d, b)) ** 2
    loss += truth.k_batch * np.log10(b / (truth.batch[0] * d ** truth.batch[1])) ** 2
    if truth.k_tau and wd > 0:
        tau_opt = truth.timescale[0] * (d / n) ** truth.timescale[1]
        loss += truth.k_tau * np.log10(b / (lr * wd * d) / tau_opt) ** 2
    return float(loss)


def synthetic_histories(*, d_values, b_values, noise_batch: tuple[float, float],
                        n: float = 1e7, points: int = 200, noise: float = 0.0,
                        seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Runs and loss histories whose steps to any loss follow S = S_min·(1 + B_noise/B).

    The loss after S steps at batch B is g(S / (1 + B_noise/B)) with g(s) = 2 + 3·s^−0.4 and
    B_noise = c·D^p from `noise_batch` = (c, p), so the critical batch size (20% overhead) is
    0.2·B_noise exactly.
    """
    rng = np.random.default_rng(seed)
    c, p = noise_batch
    rows, histories = [], {}
    for d, b in itertools.product(d_values, b_values):
        b_noise = c * d ** p
        total = d / b
        steps = np.unique(np.geomspace(1, total, points).round())
        loss = 2 + 3 * (steps / (1 + b_noise / b)) ** -0.4 + rng.normal(0, noise, steps.size)
        run = f"r{len(rows)}"
        histories[run] = np.column_stack([steps, loss])
        rows.append({"run": run, "N": n, "D": d, "B": b, "lr": 1e-3, "wd": 0.0,
                     "loss": loss[-1], "status": "finished"})
    return pd.DataFrame(rows), histories
