"""The optimum along one axis of a grid: a quadratic in log x through the lowest loss and its
nearest neighbours.

Used for learning rate within a slice (every key fixed but `optim.lr`), and by the batch and
timescale laws along log B and log τ. The quadratic is local: it goes through the best grid
value and the nearest stable value on each side (three levels, replicate runs averaged), so an
asymmetric curve (a gentle rise towards small LRs, a steep one towards divergence) does not pull
the vertex away from the points around the minimum, and the curve passes through them.
On a fine, noisy grid three levels are too few; there the window widens to two levels on each
side, but only if that quadratic stays within 0.5% of every point it spans (`FIT_TOLERANCE`),
puts its vertex between the best level's neighbours, and, where there are replicate runs,
passes the lack-of-fit test against their noise (`_noise`). Loss-vs-LR curves are skewed,
steeper above the optimum (2-4x in the muP-transfer sweep's curves, 18x in one SP curve); a
shallow one lies within 0.5% of a five-level quadratic whose vertex sits farther toward the
gentle side than the three-level one: with three seeds on a factor-2 grid, curves 3x as steep
above (0.012 nats a factor 2 below the optimum) put the optimum 0.45 of a grid step low, and
0.23 with the test (0.29 → 0.15 at 2x); on symmetric curves the test's false alarms (10%)
cost little (root-mean-square error 0.026 → 0.045 of a step). The local vertex keeps that
bias on skewed curves; a model with a curvature per side removes it there but is as far off
the other way on curves that are not piecewise quadratics (an exponential rise above the
optimum, a flat bottom), so it is not used.

Values closer than `MIN_SPACING` (in log10) are pooled into one level first, their runs
counted as replicates. A search's study samples around its best point, and two LRs 0.1% apart
carry no curvature: a quadratic through them and one far neighbour is as steep as their noise
makes it, and once put an optimum 0.5 nats below every run it was fitted through.

Diverged runs have no loss; they count as beyond the edge: a diverged value above the best
one brackets the optimum from above (the loss there is effectively infinite), but the optimum
is never placed past the last stable value, so such a slice is marked `edge="diverged"` (the optimum
sits at the stability limit) and its window is the best value and the two stable values below
it. The stability limit is the lowest value at which any run diverged: a seed that survived
where others diverged, or a stable value above a diverged one, does not make that value safe
to recommend, so every value from the limit up counts as beyond the edge (`Optimum.beyond`
lists those that had stable runs, for the summary to say so).

An optimum at the lowest or highest value tried is marked `low`/`high`; it is the best value
tried, not an extrapolation, and comes with the next grid values that would bracket it.

Interval of a bracketed optimum: a parametric bootstrap of the whole procedure. The loss noise
σ is the pooled spread of replicate runs (seeds, less each seed's offset: `mean_seed_loss`) when
the slice has any, else the residual of a
quadratic through up to five stable values around the best (a misfit there inflates σ, so the
interval errs wide); with replicates whose noise does not explain that quadratic's misfit (a
curve skewed around its optimum, whose vertex the misfit biases), the misfit's σ. Each
resample adds N(0, σ²/n) noise to every stable level's mean loss
(n runs at that level; σ drawn per resample from its own uncertainty, σ·sqrt(dof/χ²_dof)),
picks the best level again and takes the local vertex again; the interval is the central
`CI_LEVEL` of those vertices. Where the misfit test (over up to five levels) did not find
the quadratic's misfit, an interval from a three-level window, or from a window below a
diverged value, is widened to hold the best value tried: below a steep wall (a divergence is
the steepest) the vertex sits up to half a grid step under the best value, every resample
with it, and a researcher's sweep had every seed best at 0.008 and an interval of
[0.0024, 0.0074] around 0.006. The best value tried is the estimate that assumes no shape of
the curve. A slice with no replicates and fewer than `MIN_FIT_LEVELS` stable values around its
best has no interval: four leave one residual degree of freedom, whose σ is a tenth of the
truth or less one time in twelve (a researcher's four LRs gave 0.0055 [0.00549, 0.00551];
the second seed's optimum was 0.0069).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fitter.data import slice_column

MAX_HALF_WINDOW = 2
"""Stable grid values on each side of the best one that a widened window may reach."""
FIT_TOLERANCE = 0.005
"""A window widens only if its quadratic stays within this fraction of the loss at every point."""
MIN_SPACING = 0.05
"""Axis values closer than this in log10 (a factor 1.12) are one level: finer grids than that
are not used to find an optimum, and searched points that close differ by noise only."""
NOISE_HALF_WINDOW = 2
"""Stable grid values on each side of the best one used to estimate σ (without replicates)."""
N_BOOT = 200
"""Bootstrap resamples of each optimum."""
CI_LEVEL = 0.9


@dataclass(frozen=True)
class Optimum:
    """Where the loss is lowest along one axis (x is log10 of the axis value)."""

    x: float
    loss: float
    edge: str | None
    """None, `low`, `high`, `diverged` (at the stability limit), `all_diverged` or `single`
    (one value tried)."""
    coef: tuple[float, float, float] | None
    """Quadratic a·x² + b·x + c through the window, when it was convex."""
    window: tuple[float, float]
    new_values: tuple[float, ...]
    """Axis values (not logs) that would bracket an edge optimum."""
    interval: tuple[float, float] | None = None
    """Bootstrap interval of x (`CI_LEVEL`), None when it cannot be estimated."""
    beyond: tuple[float, ...] = ()
    """Axis values (not logs) at or above the stability limit that had stable runs too: a
    value where some seeds diverged, or a stable value above a diverged one."""
    limit: float | None = None
    """The stability limit: the lowest axis value (not log) at which a run diverged."""
    beyond_loss: float | None = None
    """The lowest mean loss of the finished runs at `beyond` (None when there are none)."""
    best_x: float = np.nan
    """The best stable level tried (log10; pooled levels are their mean) and its mean loss:
    the estimate that assumes no shape of the curve."""
    best_loss: float = np.nan
    noise: str | None = None
    """Where the interval's σ came from: `seeds` (replicate runs), `fit` (the residuals of
    one seed's losses around the local quadratic, which miss how the whole curve moves
    between seeds: such an interval is narrower than the optimum's spread over seeds) or
    `misfit` (replicates, whose noise did not explain the quadratic's misfit: the misfit's);
    `none` where an interval was asked for and nothing measured the noise (one seed with
    fewer than `MIN_FIT_LEVELS` stable values around the best, replicates that agree exactly)."""

    @property
    def conflict(self) -> bool:
        """Do finished runs past the stability limit beat the optimum below it (or is there
        no optimum below it)? Then the divergence contradicts the finished runs (a flaky seed,
        a lucky one): the optimum stands on one side of that contradiction and no law
        should take it until the runs there are checked."""
        if self.beyond_loss is None:
            return False
        return not np.isfinite(self.loss) or self.beyond_loss < self.loss


def axis_optimum(x: np.ndarray, loss: np.ndarray, *, n_boot: int = N_BOOT,
                 seed: int = 0, effects_dof: int = 0) -> Optimum:
    """The optimum of loss along x = log10(value); NaN loss marks a diverged run.

    Args:
        x: log10 of the axis value, one entry per run (repeats allowed, e.g. seeds).
        loss: the run's loss, NaN when it diverged.
        n_boot: bootstrap resamples for the interval (0: no interval).
        seed: seed of the bootstrap.
        effects_dof: degrees of freedom taken from `loss` before (seed effects fitted and
            taken out: `mean_seed_loss`), which its replicates' noise has not.
    """
    loss = np.asarray(loss, float)
    x = pooled_levels(np.asarray(x, float), stable=np.isfinite(loss))
    levels = np.unique(x)
    finite = np.isfinite(loss)
    counts = np.array([((x == v) & finite).sum() for v in levels])
    means = np.array([loss[(x == v) & finite].mean() if n else np.nan
                      for v, n in zip(levels, counts, strict=True)])
    diverged = np.array([((x == v) & ~finite).any() for v in levels])
    past: dict = {}  # what is known past the stability limit, for every Optimum below
    if diverged.any():  # the stability limit: from there up, nothing counts as stable
        limit = int(np.argmax(diverged))
        kept = counts[limit:] > 0
        past = {"limit": float(10.0 ** levels[limit]),
                "beyond": tuple(float(10.0 ** v) for v in levels[limit:][kept]),
                "beyond_loss": float(np.min(means[limit:][kept])) if kept.any() else None}
        means[limit:] = np.nan
    step = float((levels[-1] - levels[0]) / (len(levels) - 1)) if len(levels) > 1 else 0.5
    ok = np.isfinite(means)
    if not ok.any():
        low = levels[0] - step * np.arange(1, 3)
        return Optimum(np.nan, np.nan, "all_diverged", None, (levels[0], levels[-1]),
                       tuple(10.0 ** low), **past)
    best = int(np.nanargmin(means))
    past["best_x"], past["best_loss"] = float(levels[best]), float(means[best])
    if len(levels) == 1:  # one value tried: nothing is known on either side
        around = levels[0] + step * np.array([-1.0, 1.0])
        return Optimum(levels[0], means[0], "single", None, (levels[0], levels[0]),
                       tuple(10.0 ** around), **past)
    edge = _edge(ok, best)
    if edge == "low" and not ok[best + 1]:
        # The next LR up diverged: the loss may still fall toward it, so the next grid looks
        # on both sides, half the gap each way (with a grid of 3e-3, 1, 10 and only 3e-3
        # stable, two grid steps down gave 9e-7 and 5e-5 and nothing between 3e-3 and 1).
        half = (levels[best + 1] - levels[best]) / 2
        return Optimum(levels[best], means[best], edge, None, (levels[best], levels[best]),
                       tuple(10.0 ** (levels[best] + np.array([-half, half]))), **past)
    if edge in ("low", "high"):
        sign = -1.0 if edge == "low" else 1.0
        outside = levels[best] + sign * step * np.arange(1, 3)
        return Optimum(levels[best], means[best], edge, None, (levels[best], levels[best]),
                       tuple(10.0 ** outside), **past)
    # a diverged value above the last stable one bounds every resample's optimum too
    capped = bool(np.flatnonzero(ok)[-1] < len(levels) - 1)
    stable, stable_means = levels[ok], means[ok]
    used = finite & np.isin(x, stable)  # (not the runs beyond the stability limit)
    sigma, noise, dof = _noise(x[used], loss[used], stable, stable_means, best=int(
        np.searchsorted(stable, levels[best])), spent=effects_dof)
    # replicates that find the quadratic's misfit keep the window at three levels
    narrow = noise == "misfit"
    x_opt, coef, window = local_vertex(stable, stable_means, capped=capped, narrow=narrow)
    loss_opt = float(np.polyval(coef, x_opt)) if coef is not None else means[best]
    new = (float(10 ** ((levels[best] + levels[best + 1]) / 2)),) if edge else ()
    if edge and x_opt < levels[best]:
        edge, new = None, ()  # the quadratic puts the optimum inside the stable range
    interval = None
    if n_boot:
        if sigma is not None:
            interval = _bootstrap(stable, stable_means, counts[ok], sigma, dof, capped=capped,
                                  narrow=narrow, n_boot=n_boot,
                                  rng=np.random.default_rng(seed))
        # (a divergence right above the best value is its wall; one farther up, past stable
        # values the quadratic went through, is not: a wall three grid steps above the
        # optima widened their intervals 20x, down to the best value tried)
        walled = capped and levels[best] >= stable[-1]
        if interval is not None and noise != "misfit" and (walled or np.count_nonzero(
                (stable >= window[0]) & (stable <= window[1])) == 3):
            # (the best value tried stays in: see the module docstring)
            interval = (min(interval[0], float(levels[best])),
                        max(interval[1], float(levels[best])))
        if interval and edge == "diverged":  # the optimum lies below the value that diverged
            interval = (interval[0], float(levels[best + 1]))
    else:
        noise = None
    if n_boot and interval is None and edge in (None, "diverged"):
        noise = "none"  # (asked for, and nothing measured the loss noise)
    return Optimum(float(x_opt), float(loss_opt), edge, coef, window, new, interval, **past,
                   noise=noise if interval or noise == "none" else None)


def pooled_levels(x: np.ndarray, stable: np.ndarray) -> np.ndarray:
    """x with each run of values that lie within `MIN_SPACING` of the run's first value
    replaced by their mean: one level, its runs replicates of it. Only values with a stable
    run pool: a value where every run diverged stays its own level, the cap on the optimum
    (pooled with a stable neighbour it vanished, and the optimum could pass it)."""
    levels = np.unique(x)
    poolable = {v for v in levels.tolist() if stable[x == v].any()}
    same, group = {}, []
    for v in [*levels.tolist(), None]:
        if v is not None and v in poolable and group and v - group[0] < MIN_SPACING:
            group.append(v)
            continue
        if group:
            same.update(dict.fromkeys(group, float(np.mean(group))))
        group = [v] if v is not None and v in poolable else []
        if v is not None and v not in poolable:
            same[v] = v
    return np.array([same[v] for v in x.tolist()], float)


def local_vertex(levels: np.ndarray, means: np.ndarray, *, capped: bool = False,
                 narrow: bool = False, cache: dict | None = None
                 ) -> tuple[float, tuple[float, float, float] | None, tuple[float, float]]:
    """Vertex of the quadratic through the best level and its stable neighbours.

    The window is the best level and one neighbour on each side (the two below it when a
    diverged value caps it from above); it widens to two on each side only when that wider
    quadratic still passes within `FIT_TOLERANCE` of every point in it, which is when the
    curve is flat and noisy rather than steep and asymmetric.

    Args:
        levels: stable grid values (log10), increasing.
        means: mean loss at each level.
        capped: a diverged value lies above the last level, which bounds the optimum.
        narrow: never widen (replicates found the quadratic's misfit: `_noise`).
        cache: reused between calls on the same levels (the bootstrap), to keep them cheap.

    Returns:
        The vertex (clipped to the neighbours; the best level when the quadratic is not
        convex or the best level is at the edge), the quadratic's coefficients (None when not
        convex) and the window (first and last level the quadratic went through).
    """
    cache = {} if cache is None else cache
    best = int(np.argmin(means))
    last = len(levels) - 1
    if best == 0 or (best == last and not capped) or len(levels) < 3:
        return float(levels[best]), None, (float(levels[best]), float(levels[best]))
    for half in (1,) if narrow else (MAX_HALF_WINDOW, 1):
        lo, hi = (best - half, best + half) if best < last else (best - 2 * half, best)
        idx = np.arange(max(lo, 0), min(hi, last) + 1)
        if half > 1 and len(idx) < 4:
            continue
        key = (int(idx[0]), int(idx[-1]))
        if key not in cache:
            cache[key] = np.linalg.pinv(np.vander(levels[idx], 3))
        coef = cache[key] @ means[idx]
        resid = means[idx] - np.polyval(coef, levels[idx])
        if half == 1 or (np.max(np.abs(resid)) <= FIT_TOLERANCE * abs(means[best])
                         and _vertex_between_neighbours(coef, levels, best)):
            break
    a, b, c = (float(v) for v in coef)
    window = (float(levels[idx[0]]), float(levels[idx[-1]]))
    if a <= 0:
        return float(levels[best]), None, window
    upper = levels[best + 1] if best < last else levels[best]
    x_opt = float(np.clip(-b / (2 * a), levels[best - 1], upper))
    return x_opt, (a, b, c), window


def _vertex_between_neighbours(coef: np.ndarray, levels: np.ndarray, best: int) -> bool:
    """Does a widened window's quadratic agree with the points around the minimum: convex,
    its vertex strictly between the best level's neighbours? A five-point quadratic within
    `FIT_TOLERANCE` can still put its vertex past a neighbour (a gentle rise on one side
    pulling it there), which would report a level whose measured loss is worse than the best
    one's as the optimum; the three-point window is taken then."""
    a, b, _ = coef
    if a <= 0:
        return False
    upper = levels[best + 1] if best + 1 < len(levels) else levels[best]
    return bool(levels[best - 1] < -b / (2 * a) < upper)


def _noise(x, loss, stable, stable_means, *, best: int, spent: int = 0
           ) -> tuple[float | None, str | None, int]:
    """σ of one run's loss, where it came from and its degrees of freedom: from replicates
    (`seeds`) when there are any, else quadratic residuals (`fit`); (None, None, 0) when
    neither gives one. A σ of exactly zero (replicates that agree to the last digit, four
    values that happen to lie on a parabola) is no measurement of the noise, and would give a
    zero-width interval: the other estimate is tried, then none.

    With replicates, the quadratic's misfit is tested against their noise (the lack-of-fit F
    test, Draper & Smith §2.1): a curve skewed around its optimum (steeper above it, as
    loss-vs-LR curves are) puts the local vertex off the true optimum by up to a quarter grid
    step, a bias replicates do not see, and with three seeds on such curves the intervals held
    the true optimum in 7% of synthetic slices at a nominal 90%. Where the misfit is larger
    than the noise explains (`MISFIT_LEVEL`), σ is the misfit's, as one seed's residuals give
    it (`misfit`): the interval then errs wide, as one seed's does. `spent`: degrees of
    freedom that seed effects taken out of `loss` took from the replicates."""
    level_mean = dict(zip(stable, stable_means, strict=True))
    replicate_dof = len(x) - len(np.unique(x)) - spent
    window = _noise_window(len(stable), best)
    xs, ys = stable[window], stable_means[window]
    if replicate_dof > 0:
        resid = loss - np.array([level_mean[v] for v in x])
        sigma = float(np.sqrt(np.sum(resid ** 2) / replicate_dof))
        if sigma > _ROUNDING * float(np.abs(loss).max()):
            misfit = _misfit(xs, ys, x, sigma, replicate_dof)
            if misfit is not None:
                return misfit, "misfit", len(xs) - 3
            return sigma, "seeds", replicate_dof
    if len(xs) < MIN_FIT_LEVELS:
        return None, None, 0
    resid = ys - np.polyval(np.polyfit(xs, ys, 2), xs)
    sigma = float(np.sqrt(np.sum(resid ** 2) / (len(xs) - 3)))
    if sigma > _ROUNDING * float(np.abs(ys).max()):
        return sigma, "fit", len(xs) - 3
    return None, None, 0


MIN_FIT_LEVELS = 5
"""Stable levels a σ from one seed's residuals needs (two degrees of freedom)."""
MISFIT_LEVEL = 0.9
"""The lack-of-fit F test's level: a misfit beyond this quantile of what the replicates' noise
gives replaces their σ (`_noise`)."""


def _noise_window(n_stable: int, best: int) -> slice:
    """The stable levels σ is estimated over: up to `NOISE_HALF_WINDOW` on each side of the
    best one. Not the five nearest it where one side is short (a best LR at the stability
    limit): a quadratic through the gentle side below it fits well, its σ misses the steep
    side's misfit, and on curves three times as steep above the optimum such intervals held
    the truth in 52% of synthetic slices at a nominal 90% (with none there, 68% of the rest)."""
    return slice(max(0, best - NOISE_HALF_WINDOW), best + NOISE_HALF_WINDOW + 1)


def _misfit(xs, ys, x, sigma, dof) -> float | None:
    """σ of one run implied by the quadratic's misfit to the level means `ys` (at `xs`, with
    the runs `x`), when the lack-of-fit F test finds it beyond the replicates' σ (`dof`
    degrees of freedom) at `MISFIT_LEVEL`; else None."""
    from scipy.stats import f as f_dist

    if len(xs) < 4:
        return None
    counts = np.array([np.sum(x == v) for v in xs])
    coef = np.polyfit(xs, ys, 2, w=np.sqrt(counts))
    lof_dof = len(xs) - 3
    lof = float(np.sum(counts * (ys - np.polyval(coef, xs)) ** 2)) / lof_dof
    if lof / sigma ** 2 <= f_dist.ppf(MISFIT_LEVEL, lof_dof, dof):
        return None
    return float(np.sqrt(lof))


_ROUNDING = 1e-9
"""A σ below this fraction of the losses is rounding (the mean of three equal floats is not
always exactly them; a fit exact to rounding leaves residuals of ~1e-16), not noise."""


def _bootstrap(stable, means, counts, sigma, dof, *, capped, narrow, n_boot, rng
               ) -> tuple[float, float]:
    # σ is itself estimated, from `dof` degrees of freedom (2 from one seed's five values, 1
    # from one repeated run): each resample draws its own, σ·sqrt(dof/χ²_dof), as the t
    # distribution widens an interval. With σ taken as known, one seed's intervals held the
    # true optimum in 79% of synthetic slices at a nominal 90%.
    scale = sigma * np.sqrt(dof / rng.chisquare(dof, n_boot))
    noise = rng.normal(0.0, 1.0, (n_boot, len(means))) * scale[:, None] / np.sqrt(counts)
    cache: dict = {}
    draws = [local_vertex(stable, means + row, capped=capped, narrow=narrow, cache=cache)[0]
             for row in noise]
    tail = (1 - CI_LEVEL) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return float(lo), float(hi)


def _edge(ok: np.ndarray, best: int) -> str | None:
    if best == 0:
        return "low"
    if best == len(ok) - 1:
        return "high"
    return "diverged" if not ok[best + 1] else None


def _known_seeds(seeds: np.ndarray) -> np.ndarray:
    """Which runs name their seed (a CSV's blank cell is NaN, or "nan" once read as text)."""
    text = pd.Series(seeds).astype(str).str.strip().str.lower()
    return (pd.notna(seeds) & ~text.isin(["nan", "none", ""]).to_numpy())


SEED_OFFSET_DECADES = 1.0
"""Runs within this many decades of a slice's best one (log10) estimate its seeds' offsets."""


def seed_offsets(x: np.ndarray, loss: np.ndarray, seeds: np.ndarray) -> np.ndarray | None:
    """Each run's seed's offset from the slice's common curve (mean zero over the seeds), for
    a slice whose seeds tried different values; None where most values were tried by every
    seed (or one seed is known).

    One seed's whole curve sits higher than another's (its init and data order), by more than
    the curves differ in shape: 0.17 nats at 32k tokens in a tiny model. Where every seed tried
    the same LRs, a level's mean holds every seed and the offsets cancel. Where they did not
    (a searched sweep's studies, one per seed, ask their own LRs; a grid extended with a seed
    at some LRs only), a level's mean is its seeds' curve, and a quadratic through levels of
    different seeds put the optimum 0.11 nats below every run it went through. So the curve
    and an offset per seed are fitted together (least squares: a·x² + b·x + c + s_seed, over
    the runs within `SEED_OFFSET_DECADES` of the best), and each run's loss is read less its
    seed's offset: the mean seed's curve."""
    finite = np.isfinite(loss)
    known = _known_seeds(seeds)
    kinds = list(pd.unique(seeds[known]))
    if len(kinds) < 2:
        return None
    # Where most LRs were tried by every seed (a grid, one of whose runs failed), the level
    # means are every seed's, as without the offsets: the slice is read so (one failed run
    # switched its interval from the replicates' spread to the offsets' residuals, 30x
    # narrower); where most were not (a study per seed), offsets.
    tried = [set(np.round(x[seeds == s], 3)) for s in kinds]
    every = set.intersection(*tried)
    if len(every) * 2 >= len(set.union(*tried)):
        return None
    best = int(np.argmin(np.where(finite, loss, np.inf)))
    near = finite & known & (np.abs(x - x[best]) <= SEED_OFFSET_DECADES)
    present = [s for s in kinds if (near & (seeds == s)).any()]
    columns = [x[near] ** 2, x[near], np.ones(int(near.sum()))]
    columns += [(seeds[near] == s).astype(float) for s in present[1:]]
    if len(present) < 2 or near.sum() <= len(columns):  # (no degree of freedom left)
        return None
    coef = np.linalg.lstsq(np.column_stack(columns), loss[near], rcond=None)[0]
    by_seed = dict(zip(present, [0.0, *coef[3:]], strict=True))
    centre = float(np.mean(list(by_seed.values())))
    return np.array([by_seed.get(s, centre) - centre for s in seeds])


@dataclass(frozen=True)
class SeedReading:
    """A slice's runs' losses as the mean seed's (`mean_seed_loss`)."""

    loss: np.ndarray
    """Each run's loss less its seed's effect (NaN where the run did not finish)."""
    effects: np.ndarray | None
    """Each run's seed's effect, centred over the seeds (None: the losses as measured)."""
    dof: int
    """Degrees of freedom the effects took (the seeds fitted, less one)."""
    moved: bool
    """Do the effects move the slice's LR level means (seeds at different LRs)? Then its
    points and fitted loss are the mean seed's, and the summary and figure say so."""


def mean_seed_loss(runs: pd.DataFrame) -> SeedReading:
    """A slice's runs' losses as the mean seed's: each run's less its seed's effect, from
    `seed_offsets` where the seeds tried different LRs, else (a grid) `grid_seed_effects`."""
    x = np.log10(runs["lr"].to_numpy(dtype=float))
    y = runs["loss"].where(runs["status"] == "finished").to_numpy(dtype=float)
    seeds = runs["seed"].to_numpy() if "seed" in runs else None
    if seeds is not None and (offsets := seed_offsets(x, y, seeds)) is not None:
        fitted = len(set(offsets[_known_seeds(seeds)].tolist()))
        return SeedReading(y - offsets, offsets, max(fitted - 1, 0), True)
    if seeds is not None and (grid := grid_seed_effects(x, y, seeds)) is not None:
        effects, dof, moved = grid
        return SeedReading(y - effects, effects, dof, moved)
    return SeedReading(y, None, 0, False)


def grid_seed_effects(x: np.ndarray, loss: np.ndarray, seeds: np.ndarray
                      ) -> tuple[np.ndarray, int, bool] | None:
    """Each run's seed's effect in a slice where most LRs were tried by every seed (a grid),
    the degrees of freedom the effects took, and whether a level misses a seed; None with
    fewer than two seeds (or nothing left to measure the noise).

    The additive model loss = level + seed is fitted by least squares over the finished runs
    at the stable levels within `SEED_OFFSET_DECADES` of the best (the two-way layout without
    replication; what is left is the interaction of level and seed: how the seeds' curves
    differ in shape, which is what moves the optimum), and centred over the seeds. With every
    seed at every level the effects cancel in each level's mean, which stays as measured; but
    the spread of a level's replicates held them, and one seed's whole curve sits 0.1-0.2
    nats off another's, far more than the curves differ in shape: taken as the loss noise,
    that spread gave a three-seed grid whose seeds sat 0.1 nats apart LR intervals 80x as
    wide as its optimum's spread over noise draws. A level that misses a seed (its run
    failed) had its mean off by that seed's effect; it is now the mean seed's too."""
    finite = np.isfinite(loss)
    known = _known_seeds(seeds)
    level = pooled_levels(x, stable=finite)
    limit = level[~finite].min() if (~finite).any() else np.inf  # (the stability limit)
    ok = finite & known & (level < limit)
    if not ok.any():
        return None
    means = pd.Series(loss[ok]).groupby(level[ok]).mean()
    near = ok & (np.abs(level - float(means.idxmin())) <= SEED_OFFSET_DECADES)
    kinds = list(pd.unique(seeds[near]))
    levels = np.unique(level[near])
    if len(kinds) < 2:
        return None
    design = np.column_stack([(level[near] == v).astype(float) for v in levels]
                             + [(seeds[near] == s).astype(float) for s in kinds[1:]])
    if near.sum() <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        return None  # (no residual left, or seeds that share no level: not one layout)
    coef = np.linalg.lstsq(design, loss[near], rcond=None)[0]
    by_seed = dict(zip(kinds, [0.0, *coef[len(levels):]], strict=True))
    centre = float(np.mean(list(by_seed.values())))
    effects = np.array([by_seed[s] - centre if k and s in by_seed else 0.0
                        for s, k in zip(seeds.tolist(), known, strict=True)])
    complete = all(set(kinds) <= set(seeds[near & (level == v)].tolist()) for v in levels)
    return effects, len(kinds) - 1, not complete


def lr_optima(runs: pd.DataFrame, slice_keys: tuple[str, ...], *, n_boot: int = N_BOOT,
              seed: int = 0) -> pd.DataFrame:
    """One row per slice: its key values, `lr_opt` with its interval (`lr_lo`, `lr_hi`; NaN
    when there is none), `loss_opt`, the best LR tried and its mean loss (`lr_best`,
    `loss_best`), `edge`, `extend`, counts, `stability_limit` (the lowest
    LR at which a run diverged), `beyond_limit` (LRs with stable runs at or above it, which
    the optimum did not use) and `conflict` (those runs beat the optimum: no law takes it).

    Args:
        runs: usable runs (finished, or diverged with NaN loss), canonical columns.
        slice_keys: columns that identify a slice.
        n_boot: bootstrap resamples of each optimum.
        seed: seed of the bootstrap.
    """
    rows = []
    loss = runs["loss"].where(runs["status"] == "finished")
    frame = runs.assign(_x=np.log10(runs["lr"]), _y=loss)
    by = [slice_column(frame, k) for k in slice_keys]
    groups = frame.groupby(by, dropna=False, sort=True) if slice_keys else [((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        reading = mean_seed_loss(group)
        opt = axis_optimum(group["_x"].to_numpy(), reading.loss, n_boot=n_boot, seed=seed,
                           effects_dof=reading.dof)
        lo, hi = opt.interval if opt.interval else (np.nan, np.nan)
        rows.append({**dict(zip(slice_keys, key, strict=True)),
                     **{a: group[a].iloc[0] for a in ("N", "D", "B", "wd", "tau")
                        if a in group},
                     "lr_opt": 10.0 ** opt.x, "lr_lo": 10.0 ** lo, "lr_hi": 10.0 ** hi,
                     "loss_opt": opt.loss, "edge": opt.edge,
                     # the best LR tried below the stability limit and its mean loss (a
                     # level's runs, pooled as the optimum pools them), beside the vertex
                     "lr_best": 10.0 ** opt.best_x, "loss_best": opt.best_loss,
                     # (a conflict is settled by checking runs, not by more LRs)
                     "extend": None if opt.conflict else extend_override("optim.lr",
                                                                         opt.new_values),
                     "coef": opt.coef, "window": (10.0 ** opt.window[0], 10.0 ** opt.window[1]),
                     "n_runs": len(group), "n_diverged": int(group["_y"].isna().sum()),
                     "stability_limit": opt.limit, "beyond_limit": list(opt.beyond),
                     "conflict": opt.conflict, "interval_noise": opt.noise,
                     "n_seeds": int(group["seed"][_known_seeds(group["seed"].to_numpy())]
                                    .nunique()) if "seed" in group else None,
                     # (the effects' spread where they moved the slice's points)
                     "seed_offset": float(np.ptp(reading.effects)) if reading.moved
                     else None})
        row = rows[-1]
        # An interval end at the lowest or highest LR that trained (a resample's best at the
        # grid's edge gives that edge): the interval stops there, and may be wider than said.
        tried = group["_x"][np.isfinite(group["_y"].to_numpy(float))]
        row["interval_at_edge"] = [side for side, end, edge in (
            ("low", lo, tried.min() if len(tried) else np.nan),
            ("high", hi, tried.max() if len(tried) else np.nan))
            if np.isfinite(end) and np.isfinite(edge) and abs(end - edge) < 1e-9
            and not (side == "high" and opt.edge == "diverged")] or None
        if pd.notna(row.get("tau", np.nan)) and {"B", "D"} <= set(row):
            # (a run given τ has its own λ = B/(η·τ·D): the slice's is the one at its optimum,
            # not its first run's, which was 2-4x off in the summary's best slice)
            row["wd"] = row["B"] / (row["lr_opt"] * row["tau"] * row["D"])
    return pd.DataFrame(rows)


def extend_override(key: str, values: tuple[float, ...]) -> str | None:
    """`key=choice(v1, v2)` for `sweep extend`, or None when there is nothing to add."""
    if not values:
        return None
    # (ascending, as `next_grid` lists them: a low edge's values came highest first)
    return f"{key}=choice(" + ", ".join(f"{v:.3g}" for v in sorted(values)) + ")"


def next_grid(optima: pd.DataFrame) -> list[str]:
    """One `optim.lr=choice(...)` with every value that would bracket an edge optimum."""
    values = sorted({float(v) for text in optima["extend"].dropna()
                     for v in text[text.index("(") + 1:-1].split(", ")})
    return [extend_override("optim.lr", tuple(values))] if values else []


def lr_drift(lr_opt, edges) -> tuple[float, bool]:
    """How far the optimal LR moves over slices (max / min), and whether that is a lower
    bound: an optimum at the low edge lies at or below its LR, one at the high edge at or
    above, so where such an LR lies past the bracketed ones the drift is at least that far
    (an SP width whose best LR was the lowest tried made SP's drift look like muP's). NaN
    when fewer than two optima say anything."""
    pairs = list(zip(map(float, lr_opt), edges, strict=True))
    bracketed = [v for v, e in pairs if e is None or e == "diverged" or e != e]
    if not bracketed:
        return float("nan"), False
    lo, hi, stretched = min(bracketed), max(bracketed), False
    for v, e in pairs:
        if e == "low" and v < lo:
            lo, stretched = v, True
        elif e == "high" and v > hi:
            hi, stretched = v, True
    if len(bracketed) < 2 and not stretched:
        return float("nan"), False
    return hi / lo, stretched


def usable(optima: pd.DataFrame) -> pd.Series:
    """Optima a law may take: bracketed (or at the stability limit), with a loss, and not
    contradicted by finished runs past their stability limit (`Optimum.conflict`)."""
    ok = (optima["edge"].isna() | (optima["edge"] == "diverged")) \
        & np.isfinite(optima["loss_opt"].astype(float))
    if "conflict" in optima:
        ok &= ~optima["conflict"].fillna(False).astype(bool)
    return ok


def best_per_group(optima: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The optimum with the lowest loss in each group of `by`, for the groups where it is
    usable (`usable`). A group whose lowest loss is a slice whose best LR is at the grid's edge
    has no point: its measured loss is already below every bracketed slice's (the best
    setting is there, or past it), and the best bracketed slice's LR, at a worse setting, put
    0.1-0.15 nats worse points into a stranger's lr law. `lr_law` says how many."""
    scored = optima[np.isfinite(optima["loss_opt"].astype(float))]
    if scored.empty:
        return scored
    idx = scored.groupby(by, dropna=False)["loss_opt"].idxmin() if by else [
        scored["loss_opt"].idxmin()]
    best = scored.loc[list(idx)]
    return best[usable(best)].reset_index(drop=True)
