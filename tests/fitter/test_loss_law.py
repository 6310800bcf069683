"""The loss law L(N, D): Besiroglu et al.'s Chinchilla refit, and recovery on synthetic data."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitter.errors import FitError
from fitter.loss_law import fit_loss_law, huber_objective

# The workspace keeps shared/ beside the repository (also in CI's clean clone).
CHINCHILLA = Path(__file__).resolve().parents[3] / "shared" / "data" / \
    "chinchilla_svg_extracted.csv"
# Besiroglu et al. 2024, Table (their refit of Hoffmann et al.'s approach 3).
PUBLISHED = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def chinchilla_points() -> pd.DataFrame:
    """Their 240 points: D = FLOP / (6N), the 5 highest losses dropped."""
    frame = pd.read_csv(CHINCHILLA)
    size = frame["Model Size"]
    frame = frame.assign(N=size, D=frame["Training FLOP"] / (6 * size))
    return frame.sort_values("loss").iloc[:-5]


def require_chinchilla() -> None:
    """Skip without the data, except in CI (PROXYSWEEP_CI=1), where its absence fails."""
    if CHINCHILLA.exists():
        return
    message = f"{CHINCHILLA} not found (../shared/data beside the repository)"
    if os.environ.get("PROXYSWEEP_CI") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chinchilla_fit():
    require_chinchilla()
    return fit_loss_law(chinchilla_points(), n_boot=40, seed=0)


def test_chinchilla_points_are_the_papers_240():
    require_chinchilla()
    assert len(chinchilla_points()) == 240


# Tolerances: the paper prints E, α, β to 3-4 significant figures; α and β are the best
# determined (90% bootstrap half-widths ≈ 0.025 and 0.035), so ±0.003 is a tenth of that.
# A and B trade off against α and β along a flat valley (their 90% intervals span a factor of
# 2.3 and 4); ±5% is still a small fraction of that valley. Our optimum reaches a slightly lower
# objective than the published point (checked below), which accounts for the remaining gap.
@pytest.mark.parametrize(("name", "tol"), [
    ("E", 0.02), ("alpha", 0.003), ("beta", 0.003), ("A", 0.05 * 482.01), ("B", 0.05 * 2085.43),
])
def test_chinchilla_refit_lands_on_besiroglu_estimates(chinchilla_fit, name, tol):
    assert chinchilla_fit.coef[name] == pytest.approx(PUBLISHED[name], abs=tol)


def test_chinchilla_fit_is_at_least_as_good_as_the_published_point(chinchilla_fit):
    pts = chinchilla_fit.points
    args = tuple(np.log(pts[c].to_numpy()) for c in ("N", "D", "loss"))
    published = np.array([np.log(PUBLISHED["A"]), np.log(PUBLISHED["B"]), np.log(PUBLISHED["E"]),
                          PUBLISHED["alpha"], PUBLISHED["beta"]])
    ours, _ = huber_objective(chinchilla_fit.theta, *args)
    theirs, _ = huber_objective(published, *args)
    assert ours <= theirs


def test_chinchilla_intervals_contain_the_estimate(chinchilla_fit):
    for name, (lo, hi) in chinchilla_fit.ci.items():
        assert lo < chinchilla_fit.coef[name] < hi


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    log_n, log_d = rng.uniform(15, 22, 50), rng.uniform(18, 25, 50)
    log_l = np.log(1.8 + 400 / np.exp(log_n) ** 0.34 + 2000 / np.exp(log_d) ** 0.37)
    theta = np.array([6.0, 7.5, 0.5, 0.3, 0.4])
    _, grad = huber_objective(theta, log_n, log_d, log_l)
    eps = 1e-7
    numeric = [(huber_objective(theta + eps * e, log_n, log_d, log_l)[0]
                - huber_objective(theta - eps * e, log_n, log_d, log_l)[0]) / (2 * eps)
               for e in np.eye(5)]
    assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-10)


def test_recovers_a_known_law_from_noisy_synthetic_runs():
    rng = np.random.default_rng(1)
    n, d = np.meshgrid(np.geomspace(1e7, 3e9, 8), np.geomspace(1e9, 3e11, 8))
    n, d = n.ravel(), d.ravel()
    loss = (2.0 + 300 / n ** 0.3 + 1500 / d ** 0.35) * np.exp(rng.normal(0, 0.005, n.size))
    fit = fit_loss_law(pd.DataFrame({"N": n, "D": d, "loss": loss}), n_boot=30)
    assert fit.coef["E"] == pytest.approx(2.0, rel=0.05)
    assert fit.coef["alpha"] == pytest.approx(0.3, abs=0.03)
    assert fit.coef["beta"] == pytest.approx(0.35, abs=0.03)
    assert fit.predict(1e10, 1e12) == pytest.approx(2.0 + 300 / 1e10 ** 0.3 + 1500 / 1e12 ** 0.35,
                                                    rel=0.01)


def test_missing_data_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setitem(globals(), "CHINCHILLA", tmp_path / "absent.csv")
    monkeypatch.setenv("PROXYSWEEP_CI", "1")
    with pytest.raises(pytest.fail.Exception, match="absent.csv not found"):
        require_chinchilla()
    monkeypatch.delenv("PROXYSWEEP_CI")
    with pytest.raises(pytest.skip.Exception):
        require_chinchilla()


def test_points_far_off_the_law_are_listed_as_outliers():
    """Chinchilla's 245 points: the Huber loss did not keep the highest losses from moving B
    six-fold, and nothing said so."""
    require_chinchilla()
    frame = pd.read_csv(CHINCHILLA)
    size = frame["Model Size"]
    frame = frame.assign(N=size, D=frame["Training FLOP"] / (6 * size))
    every = fit_loss_law(frame[["N", "D", "loss"]], n_boot=0)
    far = every.outliers()
    worst5 = set(frame.sort_values("loss")["loss"].iloc[-5:].round(6))
    assert len(far) == 4 and {round(p["loss"], 6) for p in far} <= worst5
    assert far[0]["sigmas"] > 40 and all(p["sigmas"] > 12 for p in far)
    assert every.to_json()["outliers"] == far
    assert fit_loss_law(chinchilla_points(), n_boot=0).outliers() == []  # the 240 they keep


def test_settings_whose_best_lr_is_at_the_edge_are_left_out_of_the_loss_law():
    # At the largest width the LRs tried stop short of its optimum: their best loss is an upper
    # bound, which bent the law (E 1.89 for a true 1.80 with the LRs cut further; L(1e9, 2e10)
    # 2.497 [2.472, 2.521] for a true 2.449) without a word.
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit
    from fitter.synthetic import Truth, synthetic_runs

    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0))
    frame = synthetic_runs(truth, n_values=[1e6, 4e6, 1.6e7, 6.4e7],
                           d_values=[1e8, 4e8, 1.6e9, 6.4e9], b_values=[3e4], noise=0.001,
                           seed=1)
    big = frame["N"] == 6.4e7
    short = frame[~(big & (frame["lr"] < truth.lr_opt(6.4e7, 1, 1) * 10 ** 0.2))]
    result = fit_runs(from_short_frame(short, source="s"), laws=("loss",), n_boot=50)
    law = result.laws["loss"]
    assert law.coef["E"] == pytest.approx(1.8, abs=0.005)  # (1.811 with them in)
    assert law.predict(1e9, 2e10) == pytest.approx(1.8 + 480 / 1e9 ** 0.35 + 2000 / 2e10 ** 0.37,
                                                   abs=0.005)
    assert sorted(p["N"] for p in law.to_json()["left_out"]) == [6.4e7] * 4
    assert len(law.points) == 12
    assert ("4 (N, D) left out: their best LR is at the edge of the LRs tried, so their best "
            "loss may lie lower") in format_fit(fit_json(result, sweep="s"), recorded=False)


def test_the_loss_law_keeps_settings_of_two_lrs_and_reads_timescale_slices_by_tau():
    # Of 2 LRs the best is always an edge: a halving sweep's rung of 2 LRs was left out while
    # its rung of 1 was kept. Runs given τ have a λ per LR: grouped by λ, each was a 1-LR
    # slice, never judged.
    from fitter.data import from_short_frame
    from fitter.fit import fit_runs
    from fitter.synthetic import Truth, synthetic_runs

    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0))
    frame = synthetic_runs(truth, n_values=[1e6, 4e6, 1.6e7], d_values=[1e8, 4e8, 1.6e9],
                           b_values=[3e4], noise=0.001, lr_steps=(-0.25, 0.25), seed=1)
    law = fit_runs(from_short_frame(frame, source="s"), laws=("loss",), n_boot=20).laws["loss"]
    assert law.left_out == [] and len(law.points) == 9
    given = synthetic_runs(truth, n_values=[1e6, 4e6, 1.6e7], d_values=[1e8, 4e8, 1.6e9],
                           b_values=[3e4], noise=0.001, tau_values=[0.3],
                           lr_steps=(0.5, 0.75, 1.0), seed=1)  # every LR past the optimum
    control = synthetic_runs(truth, n_values=[1e6], d_values=[1e8], b_values=[3e4],
                             wd_values=[0.0, 0.1], noise=0.001, seed=2)
    mixed = pd.concat([given, control.assign(**{"optim.timescale": np.nan})],
                      ignore_index=True).assign(run=lambda f: [f"r{i}" for i in range(len(f))])
    # (the ninth (N, D) has the bracketed control)
    with pytest.raises(FitError, match="leaving out the 8 \\(N, D\\) points whose best LR is "
                                       "at the edge of the LRs tried"):
        fit_runs(from_short_frame(mixed, source="s"), laws=("loss",), n_boot=20)


def test_a_loss_law_short_of_points_left_out_at_the_edge_asks_only_for_what_the_sweep_lacks():
    # A stranger's 3 widths at one budget, every best LR the highest tried: "has 0 of N and 0
    # of D, leaving out the 3 (N, D) points ...; extend their LRs first, or add 3 more values
    # along model.width and 3 more values along train.tokens": it had the 3 widths.
    from fitter.data import from_short_frame
    from fitter.fit import fit_runs
    from fitter.synthetic import Truth, synthetic_runs

    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0))
    below = synthetic_runs(truth, n_values=[1e6, 4e6, 1.6e7], d_values=[1e8], b_values=[3e4],
                           noise=0.001, lr_steps=(-1.0, -0.75, -0.5), seed=1)
    with pytest.raises(FitError) as err:
        fit_runs(from_short_frame(below, source="s"), laws=("loss",), n_boot=20)
    assert str(err.value).endswith(
        "leaving out the 3 (N, D) points whose best LR is at the edge of the LRs tried (the "
        "best loss may lie lower); extend their LRs first (`next_grid` in fit.json lists them) "
        "and add 2 more values along train.tokens.")
    # (a width whose points are left out, at 3 budgets: a bracketed width instead is the
    # other way to the law)
    frame = synthetic_runs(truth, n_values=[1e6, 4e6, 1.6e7], d_values=[1e8, 4e8, 1.6e9],
                           b_values=[3e4], noise=0.001, seed=1)
    cut = frame[~((frame["N"] == 1.6e7) & (frame["lr"] > truth.lr_opt(1.6e7, 1, 1) / 2))]
    with pytest.raises(FitError) as err:
        fit_runs(from_short_frame(cut, source="s"), laws=("loss",), n_boot=20)
    assert str(err.value).endswith("lists them), or add 1 more value along model.width.")


def test_a_loss_law_with_no_floor_and_few_points_says_so_and_lists_no_outliers():
    # A stranger's 9 (N, D) of a muP sweep (widths 32-128, 65k-262k tokens): E went to 1e-19
    # with a zero-width interval, presented as known, and seed noise (0.02 in log loss) was
    # listed as two 12-σ outliers.
    points = pd.DataFrame(
        [(20576.0, 65536.0, 2.6343), (20576.0, 131072.0, 2.4636), (20576.0, 262144.0, 2.2549),
         (65728.0, 65536.0, 2.5666), (65728.0, 131072.0, 2.3874), (65728.0, 262144.0, 2.1327),
         (229760.0, 65536.0, 2.4956), (229760.0, 131072.0, 2.2941),
         (229760.0, 262144.0, 2.0531)], columns=["N", "D", "loss"])
    doc = fit_loss_law(points, n_boot=20).to_json()
    assert doc["e_at_bound"] is True and doc["outliers"] == []


def test_intervals_from_few_points_are_widened_by_the_small_sample_factor():
    """The percentile bootstrap of 16 (N, D) points held the loss at a target 30× past the
    data in 77-82% of synthetic sweeps for a nominal 90%: its spread is widened by
    sqrt(n/(n-k)) (benchmarks/loss_law_coverage.py measures what that holds)."""
    from fitter.loss_law import log_loss, small_sample_factor
    from fitter.powerlaw import _quantiles

    assert small_sample_factor(16, 5) == pytest.approx(1.2060, abs=1e-4)
    assert small_sample_factor(245, 5) == pytest.approx(1.0104, abs=1e-4)
    rng = np.random.default_rng(3)
    n, d = np.meshgrid([1e6, 3e6, 1e7, 3e7], [1e8, 3e8, 1e9, 3e9])
    loss = 1.8 + 480 / n ** 0.35 + 2000 / d ** 0.37 + rng.normal(0, 0.004, n.shape)
    law = fit_loss_law(pd.DataFrame({"N": n.ravel(), "D": d.ravel(), "loss": loss.ravel()}),
                       n_boot=100)
    centre = np.log(law.predict(1e9, 2e10))
    raw = np.log(_quantiles(np.exp([log_loss(t, np.log([1e9]), np.log([2e10]))[0]
                                    for t in law.boot])[:, None], 0.9)).ravel()
    lo, hi = np.log(law.interval(1e9, 2e10))
    assert lo - centre == pytest.approx(1.2060 * (raw[0] - centre), rel=1e-3)
    assert hi - centre == pytest.approx(1.2060 * (raw[1] - centre), rel=1e-3)
    for name, (clo, chi) in law.ci.items():
        assert clo < law.coef[name] < chi


def test_points_from_settings_of_fewer_than_three_lrs_are_counted_and_said():
    """Two LRs a setting: every best is an edge, kept (a halving sweep's upper rungs are
    such), and said nowhere while the law's intervals missed the truth (A=496 [487, 508]
    for 480)."""
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit
    from fitter.synthetic import Truth, synthetic_runs

    kw = {"n_values": [1e6, 3e6, 1e7], "d_values": [1e8, 3e8, 1e9], "b_values": [3e5],
          "noise": 0.001}
    two = synthetic_runs(Truth(), lr_steps=np.array([-0.3, 0.3]), **kw)
    result = fit_runs(from_short_frame(two, source="s"), laws=("loss",), n_boot=20)
    doc = fit_json(result, sweep="s")
    assert doc["laws"]["loss"]["few_lrs"] == 9
    assert ("9 of its 9 points come from settings of fewer than 3 LRs, whose best LR is not "
            "known to be bracketed, so their best loss may lie lower and the law with it "
            "(fit.json: few_lrs)") in format_fit(doc, recorded=False)
    five = synthetic_runs(Truth(), **kw)
    doc = fit_json(fit_runs(from_short_frame(five, source="s"), laws=("loss",), n_boot=20),
                   sweep="s")
    assert doc["laws"]["loss"]["few_lrs"] == 0
    assert "fewer than 3 LRs" not in format_fit(doc, recorded=False)
    # points without LRs (a paper's table) tried none it could count: all 9 were said to
    # come from fewer than 3
    bare = five.drop(columns="lr").drop_duplicates(["N", "D"])
    doc = fit_json(fit_runs(from_short_frame(bare, source="s"), laws=("loss",), n_boot=20),
                   sweep="s")
    assert doc["laws"]["loss"]["few_lrs"] == 0
