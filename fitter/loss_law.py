"""L(N, D) = E + A/N^α + B/D^β, fitted as Besiroglu et al. 2024 (arXiv 2404.10102) do.

In log space with a log-sum-exp parametrisation, A = e^a, B = e^b, E = e^e:

    log L̂ = LSE(a − α log N, b − β log D, e)

minimising Σ Huber_δ(log L̂ − log L) with δ = 1e-3 by L-BFGS-B from a grid of starts
(Hoffmann et al.'s grid: a, b ∈ {0, 5, …, 25}, e ∈ {−1, −0.5, …, 1}, α, β ∈ {0, 0.5, …, 2}).
The objective is evaluated at all 4,500 starts at once and L-BFGS-B runs from the best
`N_STARTS` of them; bootstrap refits (runs resampled with replacement) start from the full-data
optimum. The gradient is analytic.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from fitter.errors import FitError
from fitter.powerlaw import CI_LEVEL, _quantiles, interval_meaningful, more

DELTA = 1e-3
OUTLIER_SIGMAS = 12.0
"""A point whose log-loss residual exceeds this many robust σ (1.4826 × the median absolute
deviation of the residuals) is listed as an outlier: the Huber loss bounds its pull but does
not remove it (on Chinchilla's 245 points, 4 such points, at 13-45 σ, move B six-fold and β by
0.09). Real residuals have heavy tails: the 240 points Besiroglu et al. keep still reach 10 σ,
so a lower bar would list points the law describes."""
MIN_POINTS_FOR_OUTLIERS = 8 + 5
"""Points the law needs before any is called an outlier: 8 beyond its 5 coefficients. With 9
points the fit passes almost through most of them, their median deviation is tiny, and seed
noise (0.02 in log loss) read as 12 σ in a stranger's sweep."""
E_AT_BOUND = 1e-6
"""E below this fraction of the lowest loss: the fit puts no floor under the losses (E is
parametrized through its log, so it went to 1e-19 with a zero-width interval)."""
N_STARTS = 24
NAMES = ("E", "A", "B", "alpha", "beta")
GRID = np.array(list(itertools.product(
    np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
    np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))))
"""Starts as rows (a, b, e, α, β)."""


def small_sample_factor(n: int, k: int) -> float:
    """How much wider than a bootstrap's spread an interval from n points and k coefficients
    is made: sqrt(n/(n−k)), for the residual variance that resampling n points underestimates
    by (n−k)/n (a least-squares fit's residuals are smaller than its noise by that much).

    Resampling the 16 (N, D) points of a 4×4 sweep held the true law's loss at a target
    30× past the data in 84% of 100 synthetic sweeps for a nominal 90% (77% and 82% in two
    smaller checks), widened in 88%; of a 5×5 sweep's 25, 90% and 94%, and E, α and β
    89-96% widened (`benchmarks/loss_law_coverage.py`)."""
    return float(np.sqrt(n / (n - k))) if n > k else 1.0


@dataclass
class LossFit:
    """The fitted loss law, its points and its bootstrap."""

    theta: np.ndarray
    """a, b, e, α, β."""
    boot: np.ndarray
    points: pd.DataFrame
    """N, D, loss."""
    ci_level: float = CI_LEVEL
    left_out: list[dict] = field(default_factory=list)
    """(N, D, loss) not fitted: their best LR at the edge of the LRs tried."""
    few_lrs: int = 0
    """Points fitted whose setting tried fewer than 3 LRs (not known to be bracketed)."""

    @property
    def coef(self) -> dict[str, float]:
        """E, A, B, alpha, beta."""
        return dict(zip(NAMES, map(float, _natural(self.theta)), strict=True))

    @property
    def has_interval(self) -> bool:
        """Are there intervals to show: resamples drawn (`--n-boot` above 0) and enough points
        for them to mean something (`interval_meaningful`)?"""
        return len(self.boot) > 0 and interval_meaningful(len(self.points), len(self.coef))

    @property
    def ci(self) -> dict[str, list[float]]:
        """Percentile intervals of each coefficient (of the widened resamples, `widened`)."""
        lo, hi = _quantiles(np.apply_along_axis(_natural, 1, self.widened), self.ci_level)
        return {k: [float(lo[i]), float(hi[i])] for i, k in enumerate(NAMES)}

    @property
    def widened(self) -> np.ndarray:
        """The resamples' deviations from the fit, scaled by `small_sample_factor`."""
        return self.theta + small_sample_factor(len(self.points), len(NAMES)) \
            * (self.boot - self.theta)

    def predict(self, N: float, D: float) -> float:  # noqa: N803 - the law's own symbols
        """L(N, D)."""
        return float(np.exp(log_loss(self.theta, np.log([N]), np.log([D])))[0])

    def interval(self, N: float, D: float) -> tuple[float, float]:  # noqa: N803
        """Bootstrap interval of L(N, D) (its log's deviations widened as `widened`)."""
        preds = np.array([log_loss(t, np.log([N]), np.log([D]))[0] for t in self.boot])
        centre = log_loss(self.theta, np.log([N]), np.log([D]))[0]
        preds = centre + small_sample_factor(len(self.points), len(NAMES)) * (
            preds - centre)
        lo, hi = _quantiles(np.exp(preds)[:, None], self.ci_level)
        return float(lo[0]), float(hi[0])

    def residuals(self) -> np.ndarray:
        """log(observed) − log(fit)."""
        p = self.points
        return np.log(p["loss"].to_numpy()) - log_loss(self.theta, np.log(p["N"].to_numpy()),
                                                       np.log(p["D"].to_numpy()))

    def to_json(self) -> dict:
        """The law as it appears in fit.json."""
        res = self.residuals()
        ci = self.ci if self.has_interval else None
        return {"form": "loss = E + A / N^alpha + B / D^beta", "coef": self.coef, "ci": ci,
                "ci_level": self.ci_level, "n_points": len(self.points),
                "n_boot": len(self.boot), "method": "Besiroglu et al. 2024: Huber(1e-3) on "
                "log loss, L-BFGS-B from a grid of starts",
                "rmse_log": float(np.sqrt(np.mean(res ** 2))),
                "range": {k: [float(self.points[k].min()), float(self.points[k].max())]
                          for k in ("N", "D")},
                "points": self.points[["N", "D", "loss"]].to_dict("records"),
                "residuals_log": res.tolist(), "outliers": self.outliers(),
                "left_out": self.left_out, "few_lrs": self.few_lrs,
                "e_at_bound": self.e_at_bound}

    @property
    def e_at_bound(self) -> bool:
        """Whether E sits at its bound, 0: these losses show no irreducible floor, so E and
        its interval (the bootstrap starts there and stays) say nothing, and the law's
        extrapolations far past the data lean on a floor it did not measure."""
        return self.coef["E"] < E_AT_BOUND * float(self.points["loss"].min())

    def outliers(self) -> list[dict]:
        """Points more than `OUTLIER_SIGMAS` robust σ off the law, farthest first: N, D,
        loss, the law's loss there and the residual in σ."""
        res = self.residuals()
        if len(res) < MIN_POINTS_FOR_OUTLIERS:
            return []
        sigma = 1.4826 * float(np.median(np.abs(res - np.median(res))))
        if sigma <= 0:
            return []
        z = res / sigma
        far = np.flatnonzero(np.abs(z) > OUTLIER_SIGMAS)
        p = self.points.reset_index(drop=True)
        return [{"N": float(p.loc[i, "N"]), "D": float(p.loc[i, "D"]),
                 "loss": float(p.loc[i, "loss"]),
                 "fitted": float(p.loc[i, "loss"] / np.exp(res[i])), "sigmas": float(z[i])}
                for i in far[np.argsort(-np.abs(z[far]))]]


def log_loss(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """log L̂ for parameters (a, b, e, α, β)."""
    return _terms(theta, log_n, log_d)[0]


def _terms(theta, log_n, log_d):
    # log-sum-exp of the three terms, and each term's share of the sum (its softmax weight)
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(t1, t2), e)
    x1, x2, x3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
    total = x1 + x2 + x3
    return top + np.log(total), x1 / total, x2 / total, x3 / total


def huber_objective(theta, log_n, log_d, log_l, weights=None):
    """Σ Huber_δ(log L̂ − log L) and its gradient in (a, b, e, α, β)."""
    lse, s1, s2, s3 = _terms(theta, log_n, log_d)
    r = lse - log_l
    abs_r = np.abs(r)
    h = np.where(abs_r <= DELTA, 0.5 * r * r, DELTA * (abs_r - 0.5 * DELTA))
    dr = np.clip(r, -DELTA, DELTA)
    if weights is not None:
        h, dr = h * weights, dr * weights
    # elementwise sums, not BLAS dot products: BLAS threads on vectors this short cost more
    # in synchronisation than they save, badly so on a busy machine
    g1, g2 = dr * s1, dr * s2
    grad = np.array([g1.sum(), g2.sum(), (dr * s3).sum(), -(g1 * log_n).sum(),
                     -(g2 * log_d).sum()])
    return float(h.sum()), grad


def fit_loss_law(points: pd.DataFrame, *, n_boot: int = 200, ci_level: float = CI_LEVEL,
                 seed: int = 0, left_out: pd.DataFrame | None = None) -> LossFit:
    """Fit L(N, D) to points with columns N, D, loss (one row per run or per (N, D));
    `left_out`: the (N, D) not among them because their best LR is at the edge of those
    tried, which a too-few-points message then names first.

    Raises:
        FitError: fewer than 6 points, or fewer than 3 distinct values of N or of D.
    """
    n_left = 0 if left_out is None else len(left_out)
    left = (f", leaving out the {n_left} (N, D) point{'s' * (n_left != 1)} whose best LR "
            "is at the edge of the LRs tried (the best loss may lie lower); extend "
            f"{'its' if n_left == 1 else 'their'} LRs first (`next_grid` in fit.json lists "
            "them)") if n_left else ""
    short = [(axis, key, points[axis].nunique()) for axis, key in
             (("N", "model.width"), ("D", "train.tokens")) if points[axis].nunique() < 3]
    if short:  # (both axes at once: it asked for N, then once that was met, for D)
        has = " and ".join(f"{n} value{'s' * (n != 1)} of {axis}" for axis, _, n in short)
        # Values the sweep has, their points left out, need their LRs, not more values (3
        # widths, each best at its highest LR, were told to add 3 more widths): what is
        # short counting those too is needed anyway, what is short only without them is the
        # other way to the law.
        tried = points if not n_left else pd.concat([points, left_out], ignore_index=True)
        anyway = [(axis, key, tried[axis].nunique()) for axis, key, _ in short
                  if tried[axis].nunique() < 3]
        add = anyway or short
        needs = " and ".join(f"{3 - n} more value{'s' * (3 - n != 1)} along {key}"
                             for _, key, n in add)
        join = ";" if not n_left else " and" if anyway else ", or"
        raise FitError(f"the loss law needs losses at 3 or more values of N and of D (and 6 "
                       f"(N, D) points) but has {has}{left}{join} add {needs}.")
    if len(points) < 6:
        raise FitError(f"the loss law needs at least 6 (N, D) points but has {len(points)}"
                       f"{left}{', or' if n_left else ';'} add "
                       f"{more(6 - len(points), 'point')} along model.width or train.tokens.")
    log_n, log_d, log_l = (np.log(points[c].to_numpy(float)) for c in ("N", "D", "loss"))
    with _one_blas_thread():
        theta = _best_of_grid(log_n, log_d, log_l)
        rng = np.random.default_rng(seed)
        boot = np.empty((n_boot, 5))
        for i in range(n_boot):
            counts = np.bincount(rng.integers(0, len(log_l), len(log_l)), minlength=len(log_l))
            boot[i] = _lbfgs(theta, log_n, log_d, log_l, counts.astype(float)).x
    return LossFit(theta, boot, points[["N", "D", "loss"]].reset_index(drop=True), ci_level)


def _one_blas_thread():
    # L-BFGS-B's 5×5 linear algebra goes through BLAS; its threads only add synchronisation
    # (30× slower on a busy 2-core machine), so the fit runs with one.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _best_of_grid(log_n, log_d, log_l) -> np.ndarray:
    a, b, e, alpha, beta = (GRID[:, i:i + 1] for i in range(5))
    lse = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
    r = np.abs(lse - log_l)
    values = np.where(r <= DELTA, 0.5 * r ** 2, DELTA * (r - 0.5 * DELTA)).sum(axis=1)
    starts = GRID[np.argsort(values)[:N_STARTS]]
    fits = [_lbfgs(start, log_n, log_d, log_l) for start in starts]
    return min(fits, key=lambda f: f.fun).x


def _lbfgs(start, log_n, log_d, log_l, weights=None):
    return minimize(huber_objective, start, args=(log_n, log_d, log_l, weights), jac=True,
                    method="L-BFGS-B", options={"maxiter": 500, "ftol": 1e-14, "gtol": 1e-10})


def _natural(theta: np.ndarray) -> np.ndarray:
    a, b, e, alpha, beta = theta
    return np.array([np.exp(e), np.exp(a), np.exp(b), alpha, beta])

