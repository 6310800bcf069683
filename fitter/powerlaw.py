"""Power laws y = c · ∏ x_k^e_k, fitted by least squares in log space, with intervals.

The points are optima (one per slice or group), a handful per law. Intervals come from draws
of the coefficients from their least-squares sampling distribution with the noise estimated
from the residuals: a multivariate Student t with n − k degrees of freedom around the fit,
scaled by s²·(XᵀX)⁻¹ (n points, k coefficients). Its percentiles are the classical t
intervals, exact for log-normal scatter about the law, and the draws carry the coefficients'
correlation into predictions (`interval`, the figures' bands, `recommend`).

A law of one residual degree of freedom (3 points for c and one exponent: a sweep over 3
widths or 3 budgets) has no residual noise to speak of. Where its points carry intervals of
their own (each slice optimum's bootstrap interval), the draws then come from those instead:
the least-squares coefficients' covariance (XᵀX)⁻¹Xᵀ Σ X(XᵀX)⁻¹ under the points' own variances
Σ, normal. That interval holds how far the points' noise moves the law, and not scatter about
the law beyond it (which one residual cannot measure): `interval_source` "points", said
wherever it is shown. Without it a 3-point muP law gave a bare a_N of 0.097 from optima whose
intervals all overlapped, and `recommend` a bare LR 2.5x every optimum measured.

Not a pairs bootstrap (resampling the points), which we used first: over 4-12 points it held
the true exponent in 80-87% of synthetic fits at a nominal 90% (a resample repeats points and
its spread misses the t quantile's widening), and a researcher read those intervals as the
uncertainty of an extrapolation. The draws are still called the law's bootstrap (`boot`,
`--n-boot`): they play its part everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fitter.errors import FitError

N_BOOT = 500
CI_LEVEL = 0.9
CI_METHOD = "least-squares Student t (n - k degrees of freedom), drawn"
POINTS_CI_METHOD = ("the points' own intervals propagated through least squares (normal), "
                    "drawn: one residual degree of freedom, so scatter about the law beyond "
                    "them is not in it")
_KEYS = {"N": "model.width", "D": "train.tokens", "B": "train.batch_size"}


@dataclass
class LawFit:
    """A fitted power law, its points and draws of its coefficients."""

    name: str
    axes: tuple[str, ...]
    """Columns of `points` the law depends on (e.g. N, D, or D/N)."""
    exponents: tuple[str, ...]
    """Coefficient name of each axis's exponent (e.g. a_N, m, p), never an axis's own name."""
    target: str
    points: pd.DataFrame
    """The fitted points: axes, target, and whatever else describes them."""
    log_coef: np.ndarray
    """log10 c followed by the exponents."""
    boot: np.ndarray
    """Draws of log_coef from its sampling distribution, shape (n_boot, 1 + k)."""
    ci_level: float = CI_LEVEL
    extra: dict = field(default_factory=dict)
    interval_source: str = "residuals"
    """What the draws' spread comes from: "residuals" (the scatter about the law) or "points"
    (the points' own intervals, where one residual measures nothing)."""

    @property
    def coef(self) -> dict[str, float]:
        """c and one exponent per axis."""
        return {"c": float(10 ** self.log_coef[0]),
                **{e: float(v) for e, v in zip(self.exponents, self.log_coef[1:], strict=True)}}

    @property
    def has_interval(self) -> bool:
        """Are there intervals to show: resamples drawn (`--n-boot` above 0) and enough points
        for them to mean something (`interval_meaningful`)?"""
        return len(self.boot) > 0 and (self.interval_source == "points" or interval_meaningful(
            len(self.points), len(self.coef)))

    @property
    def ci(self) -> dict[str, list[float]]:
        """Percentile intervals of each coefficient."""
        lo, hi = _quantiles(self.boot, self.ci_level)
        out = {"c": [float(10 ** lo[0]), float(10 ** hi[0])]}
        out.update({e: [float(lo[i + 1]), float(hi[i + 1])] for i, e in enumerate(self.exponents)})
        return out

    @property
    def form(self) -> str:
        """The law as text."""
        return f"{self.target} = c * " + " * ".join(
            f"({a})^{e}" if "/" in a else f"{a}^{e}"
            for a, e in zip(self.axes, self.exponents, strict=True))

    def predict(self, **x: float) -> float:
        """The law at one point (keyword per axis)."""
        return float(10 ** (_design(self.axes, x) @ self.log_coef))

    def interval(self, **x: float) -> tuple[float, float]:
        """Interval of the law's value at one point (from the draws)."""
        pred = self.boot @ _design(self.axes, x)
        lo, hi = _quantiles(pred[:, None], self.ci_level)
        return float(10 ** lo[0]), float(10 ** hi[0])

    def residuals(self) -> np.ndarray:
        """log10(observed) − log10(law) at each point."""
        return np.log10(self.points[self.target].to_numpy()) - self._log_fit()

    def _log_fit(self) -> np.ndarray:
        return _design_matrix(self.points, self.axes) @ self.log_coef

    def to_json(self) -> dict:
        """The law as it appears in fit.json."""
        res = self.residuals()
        cols = [*self.axes, self.target, *[c for c in self.points.columns
                                           if c not in (*self.axes, self.target)]]
        ci = self.ci if self.has_interval else None
        return {"form": self.form, "coef": self.coef, "ci": ci, "ci_level": self.ci_level,
                "ci_method": POINTS_CI_METHOD if self.interval_source == "points" else CI_METHOD,
                "interval_source": self.interval_source,
                "n_points": len(self.points), "n_boot": len(self.boot),
                "rmse_log10": float(np.sqrt(np.mean(res ** 2))),
                "range": {a: [float(self.points[a].min()), float(self.points[a].max())]
                          for a in self.axes},
                "points": _records(self.points[cols]), "residuals_log10": res.tolist(),
                **self.extra}


def interval_meaningful(n_points: int, n_coef: int) -> bool:
    """Whether an interval over n_points means anything: 2 points more than coefficients.

    With fewer (3 points for c and one exponent) one residual measures the noise, and the t
    interval is 6.3 of it either side: a band wide or narrow by the luck of one point.
    fit.json then has no `ci`, and neither the terminal nor `recommend` shows an interval.
    """
    return n_points >= n_coef + 2


def fit_power_law(points: pd.DataFrame, *, name: str, axes: tuple[str, ...],
                  exponents: tuple[str, ...], target: str, n_boot: int = N_BOOT,
                  ci_level: float = CI_LEVEL, seed: int = 0, hint: str = "",
                  point_sigma: np.ndarray | None = None) -> LawFit:
    """Fit target = c · ∏ axes^exponents to the points, with draws for its intervals.

    Args:
        points: one row per point; positive values in the axes and target columns.
        name: the law's name, for messages.
        axes: columns the law depends on.
        exponents: coefficient names of their exponents.
        target: the fitted column.
        n_boot: draws of the coefficients for the intervals.
        ci_level: coverage of the reported intervals.
        seed: seed of the draws.
        hint: what to sweep to get more points, appended to a too-few-points message.
        point_sigma: each point's own standard error of log10(target), from its interval;
            the draws' source where one residual degree of freedom is all there is (not
            used when an entry is missing or 0: the law then has no interval there).

    Raises:
        FitError: too few points, an axis with a single value, or axes that move together.
    """
    need = len(axes) + 2
    single = [a for a in axes if points[a].nunique() < 2]
    if single:  # (with the count it needs too: said one need at a time, it took rounds)
        a = single[0]
        distinct = points[a].nunique()
        also = (f" (and {need} points in all: it has {len(points)})"
                if len(points) < need else "")
        add = more(max(2 - distinct, need - len(points)), "point")
        raise FitError(f"the {name} law needs optima at 2 or more values of {a} but has "
                       f"{distinct}{also}; add {add}: more {hint}.")
    if len(points) < need:
        raise FitError(f"the {name} law needs at least {need} points but has {len(points)}; "
                       f"add {more(need - len(points), 'point')}: more {hint}.")
    X = _design_matrix(points, axes)
    _refuse_collinear(X, points, name, axes)
    y = np.log10(points[target].to_numpy(float))
    log_coef = np.linalg.lstsq(X, y, rcond=None)[0]
    # one stream per law: `recommend` combines the draws of two laws as independent
    rng = np.random.default_rng([seed, *name.encode()])
    source = "residuals"
    if interval_meaningful(*X.shape) or not _usable(point_sigma, len(points)):
        boot = _draws(X, y, log_coef, n_boot, rng)
    else:
        boot, source = _draws_from_points(X, log_coef, np.asarray(point_sigma), n_boot, rng), \
            "points"
    law = LawFit(name, axes, exponents, target, points.reset_index(drop=True), log_coef, boot,
                 ci_level, interval_source=source)
    if source == "points" and (p := _misfit_p(X, y - X @ log_coef, np.asarray(point_sigma))) \
            < MISFIT_P:
        law.extra["points_misfit_p"] = p
    return law


MISFIT_P = 0.1
"""Below this p-value, a law whose interval comes from its points' own intervals is said to
lie off them by more than those allow (`_misfit_p`): its interval is then too narrow."""


def _misfit_p(X: np.ndarray, resid: np.ndarray, sigma: np.ndarray) -> float:
    """P(a residual as large) under the points' own variances, for a law of one residual
    degree of freedom: u the unit vector of the residual space (XᵀU = 0), uᵀr ~ N(0, uᵀΣu)."""
    from scipy.stats import chi2

    u = np.linalg.svd(X, full_matrices=True)[0][:, X.shape[1]:]  # (n, n - k) = (n, 1)
    stat = float((u.T @ resid) @ np.linalg.solve(u.T @ np.diag(sigma ** 2) @ u, u.T @ resid))
    return float(chi2.sf(stat, u.shape[1]))


def _usable(sigma: np.ndarray | None, n: int) -> bool:
    return sigma is not None and len(sigma) == n and bool(np.all(np.isfinite(sigma))) and \
        bool(np.all(np.asarray(sigma) > 0))


def _draws_from_points(X: np.ndarray, coef: np.ndarray, sigma: np.ndarray, n_draws: int,
                       rng) -> np.ndarray:
    """n_draws samples of the least-squares coefficients when each point's log10 value has
    its own known standard error `sigma`: coef + chol(A Σ Aᵀ) z, A = (XᵀX)⁻¹Xᵀ."""
    if n_draws == 0:
        return np.empty((0, X.shape[1]))
    A = np.linalg.solve(X.T @ X, X.T)
    cov = A @ np.diag(sigma ** 2) @ A.T
    z = rng.standard_normal((n_draws, X.shape[1]))
    return coef + z @ np.linalg.cholesky(cov).T


def _draws(X: np.ndarray, y: np.ndarray, coef: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """n_draws samples of the coefficients: coef + t_(n−k) · s · chol((XᵀX)⁻¹) z."""
    n, k = X.shape
    dof = n - k
    if n_draws == 0 or dof < 1:
        return np.empty((0, k))
    resid = y - X @ coef
    scale = np.sqrt(resid @ resid / dof)
    chol = np.linalg.cholesky(np.linalg.inv(X.T @ X))
    z = rng.standard_normal((n_draws, k))
    # a multivariate t: one chi-square per draw scales all its coefficients together
    shrink = np.sqrt(dof / rng.chisquare(dof, n_draws))
    return coef + scale * shrink[:, None] * (z @ chol.T)


def _refuse_collinear(X: np.ndarray, points: pd.DataFrame, name: str,
                      axes: tuple[str, ...]) -> None:
    """A law over several axes whose points move them together (log D = a + b·log N at every
    point) cannot tell their exponents apart: least squares would split one slope between them
    at random. Say which axes and what to add."""
    if np.linalg.matrix_rank(X) == X.shape[1]:
        return
    logs = np.log10(points[list(axes)].to_numpy(float))
    for i in range(len(axes)):
        for j in range(i + 1, len(axes)):
            pair = np.column_stack([np.ones(len(logs)), logs[:, i], logs[:, j]])
            if np.linalg.matrix_rank(pair) < 3:
                slope = np.polyfit(logs[:, i], logs[:, j], 1)[0]
                raise FitError(
                    f"the {name} law cannot tell the exponents of {axes[i]} and {axes[j]} "
                    f"apart: at every one of its {len(points)} points {axes[j]} grows as "
                    f"{axes[i]}^{slope:.3g}; add optima off that line (another "
                    f"{_KEYS.get(axes[j], axes[j])} at one {_KEYS.get(axes[i], axes[i])}).")
    raise FitError(f"the {name} law cannot tell the exponents of {', '.join(axes)} apart: "
                   "its points lie on one plane in log space; add optima off it (vary one "
                   "of them alone).")


def _design(axes: tuple[str, ...], x: dict) -> np.ndarray:
    missing = [a for a in axes if a not in x]
    if missing:
        raise KeyError(f"law needs values for {missing}")
    return np.array([1.0, *[np.log10(float(x[a])) for a in axes]])


def _design_matrix(points: pd.DataFrame, axes: tuple[str, ...]) -> np.ndarray:
    cols = [np.log10(points[a].to_numpy(float)) for a in axes]
    return np.column_stack([np.ones(len(points)), *cols])


def _quantiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2
    return np.quantile(samples, tail, axis=0), np.quantile(samples, 1 - tail, axis=0)


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for row in frame.to_dict("records"):
        out.append({k: (bool(v) if isinstance(v, (bool, np.bool_)) else
                        float(v) if isinstance(v, (int, float, np.number)) else
                        (None if v is None else str(v))) for k, v in row.items()})
    return out


def more(n: int, noun: str) -> str:
    """'1 more point', '2 more points'."""
    return f"{n} more {noun}" + ("" if n == 1 else "s")


def with_interval(value: float, lo: float, hi: float, *, digits: int = 3,
                  value_digits: int = 3) -> str:
    """`value [lo, hi]` with the significant digits that tell the three apart (2.306 [2.31,
    2.31] read as a value outside its interval): at least `digits` (`value_digits` for the
    value), more while a bound that differs from the value, or from the other bound, prints
    alike."""
    def text(x: float, d: int) -> str:
        return f"{x:.{d}g}"

    for d in range(digits, 10):
        if ((lo == value or text(lo, d) != text(value, d))
                and (hi == value or text(hi, d) != text(value, d))
                and (lo == hi or text(lo, d) != text(hi, d))):
            break
    return f"{text(value, max(d, value_digits))} [{text(lo, d)}, {text(hi, d)}]"
