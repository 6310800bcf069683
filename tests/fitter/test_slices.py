"""Per-slice LR optima: parabola vertex, edges, diverged runs."""

import numpy as np
import pandas as pd
import pytest

from fitter.slices import axis_optimum, extend_override, lr_optima, next_grid

GRID = np.log10([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])


def parabola(x, vertex, curvature=0.1, floor=3.0):
    return floor + curvature * (x - vertex) ** 2


@pytest.mark.parametrize("vertex", [-3.3, -3.0, -2.75, -2.4])
def test_vertex_of_an_exact_parabola_is_recovered(vertex):
    opt = axis_optimum(GRID, parabola(GRID, vertex))
    assert opt.edge is None
    assert opt.x == pytest.approx(vertex, abs=1e-9)
    assert opt.loss == pytest.approx(3.0, abs=1e-9)


STEP = (GRID[-1] - GRID[0]) / 5  # mean spacing of the grid, in log10


@pytest.mark.parametrize(("vertex", "edge", "new"), [
    (-5.0, "low", (1e-4 / 10 ** STEP, 1e-4 / 10 ** (2 * STEP))),
    (-1.0, "high", (3e-2 * 10 ** STEP, 3e-2 * 10 ** (2 * STEP))),
])
def test_edge_optimum_is_flagged_with_bracketing_values(vertex, edge, new):
    opt = axis_optimum(GRID, parabola(GRID, vertex))
    assert opt.edge == edge
    # the best value tried, not an extrapolation
    assert opt.x == pytest.approx(GRID[0] if edge == "low" else GRID[-1])
    assert np.allclose(opt.new_values, new, rtol=0.01)


def test_extend_override_is_ready_for_sweep_extend():
    assert extend_override("optim.lr", (0.0949, 0.3)) == "optim.lr=choice(0.0949, 0.3)"
    assert extend_override("optim.lr", ()) is None


def test_diverged_runs_bracket_from_above_but_never_move_the_optimum_past_them():
    loss = parabola(GRID, -1.5)  # true optimum beyond the stable range
    loss[-1] = np.nan  # 3e-2 diverged
    opt = axis_optimum(GRID, loss)
    assert opt.edge == "diverged"
    assert opt.x <= GRID[-2] + 1e-12  # at most the last stable LR
    assert opt.new_values == pytest.approx((10 ** ((GRID[-2] + GRID[-1]) / 2),))


def test_diverged_run_beyond_a_bracketed_minimum_changes_nothing():
    loss = parabola(GRID, -2.9)
    clean = axis_optimum(GRID, loss)
    loss[-1] = np.nan
    opt = axis_optimum(GRID, loss)
    assert opt.edge is None
    assert opt.x == pytest.approx(clean.x, abs=1e-9)


def test_all_diverged_slice_suggests_lower_values():
    opt = axis_optimum(GRID, np.full(len(GRID), np.nan))
    assert opt.edge == "all_diverged"
    assert max(opt.new_values) < 1e-4


def test_repeated_seeds_are_averaged_by_the_fit():
    x = np.repeat(GRID, 2)
    y = parabola(x, -2.6) + np.tile([0.01, -0.01], len(GRID))
    assert axis_optimum(x, y).x == pytest.approx(-2.6, abs=1e-6)


def test_lr_optima_one_row_per_slice_and_next_grid_merges_edges():
    import pandas as pd

    rows = []
    for b, vertex in ((1e4, -2.7), (4e4, -1.0)):
        for x in GRID:
            rows.append({"B": b, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
                         "loss": parabola(x, vertex), "status": "finished"})
    optima = lr_optima(pd.DataFrame(rows), ("B",))
    assert [e if isinstance(e, str) else None for e in optima["edge"]] == [None, "high"]
    assert optima.loc[0, "lr_opt"] == pytest.approx(10 ** -2.7)
    assert next_grid(optima) == ["optim.lr=choice(0.0939, 0.294)"]


# Measured: loss vs LR at 1M tokens (issue 14's muP-transfer sweep), width → (LRs, losses).
LR6 = 2e-3 * 2.0 ** np.arange(6)
MEASURED = {
    "sp128": (LR6, [1.787, 1.770, 1.848, 2.272, 2.542, 2.689], 0.0032),
    "sp256": (5e-4 * 2.0 ** np.arange(8), [1.804, 1.716, 1.692, 1.808, 2.146, 2.370, 2.641, 2.750],
              0.00159),
    "mup64": (LR6, [2.062, 1.981, 1.907, 1.947, 2.073, 2.471], 0.0088),
    "mup128": (LR6, [1.995, 1.909, 1.825, 1.924, 2.045, 2.379], 0.0078),
    "mup256": (LR6, [1.944, 1.845, 1.782, 1.805, 2.001, 2.383], 0.0094),
}


@pytest.mark.parametrize("name", MEASURED)
def test_window_is_local_to_the_minimum_on_measured_curves(name):
    lr, loss, vertex = MEASURED[name]
    x, loss = np.log10(lr), np.array(loss)
    opt = axis_optimum(x, loss)
    assert opt.edge is None
    assert 10 ** opt.x == pytest.approx(vertex, rel=0.02)
    # the window is the best LR and its two neighbours, and the curve goes through them
    best = int(np.argmin(loss))
    assert opt.window == pytest.approx((x[best - 1], x[best + 1]))
    inside = slice(best - 1, best + 2)
    assert np.polyval(opt.coef, x[inside]) == pytest.approx(loss[inside], abs=1e-9)
    if best < 2:  # (one seed, four LRs within two of the best: one degree of freedom)
        assert opt.interval is None
        return
    lo, hi = opt.interval
    # (one seed: σ from a misfit with 2 degrees of freedom, drawn per resample, so the best
    # LR itself may move to a neighbour; the interval is still narrower than the bracket)
    assert lo <= opt.x <= hi and hi - lo < x[best + 1] - x[best - 1]


def test_sp128_parabola_through_the_whole_range_would_miss_the_points():
    # regression: a 5-point window (the old rule) put the vertex at 0.0035 and missed by 0.04
    lr, loss, _ = MEASURED["sp128"]
    x = np.log10(lr)
    wide = np.polyfit(x[:4], loss[:4], 2)
    assert np.max(np.abs(np.polyval(wide, x[:4]) - loss[:4])) > 0.03
    assert 10 ** axis_optimum(x, np.array(loss)).x == pytest.approx(0.0032, rel=0.01)


def test_flat_noisy_curve_widens_the_window_to_five_points():
    rng = np.random.default_rng(0)
    x = np.linspace(-4, -2, 9)
    loss = parabola(x, -3.1, curvature=0.05) + rng.normal(0, 0.002, x.size)
    opt = axis_optimum(x, loss)
    assert opt.window[1] - opt.window[0] == pytest.approx(4 * (x[1] - x[0]))


def test_a_wide_window_whose_vertex_leaves_the_bracket_is_not_taken():
    """Measured (tiny model, 65,536 tokens): the five-point quadratic is within 0.5% of every
    point, but its vertex (0.0039) lies past the lower neighbour, so clipped there it reported
    0.004, worse by 0.006 than the measured 0.008, with a loss above the best one measured.
    The three-point window around 0.008 is taken instead."""
    lr = [0.002, 0.004, 0.008, 0.016, 0.032]
    loss = np.array([2.6689, 2.6679, 2.6618, 2.7013, 2.7305])
    x = np.log10(lr)
    wide = np.polyfit(x, loss, 2)
    assert np.max(np.abs(np.polyval(wide, x) - loss)) <= 0.005 * loss.min()  # within tolerance
    assert 10 ** (-wide[1] / (2 * wide[0])) < 0.004  # ... but its vertex past the neighbour
    opt = axis_optimum(x, loss)
    assert opt.window == pytest.approx((x[1], x[3]))
    assert 0.004 < 10 ** opt.x < 0.016 and 10 ** opt.x == pytest.approx(0.0062, rel=0.01)
    assert opt.loss <= loss.min()  # the vertex of a curve through the best point


def test_interval_from_seed_replicates_covers_the_vertex():
    rng = np.random.default_rng(1)
    x = np.repeat(GRID, 3)
    y = parabola(x, -2.6, curvature=0.2) + rng.normal(0, 0.005, x.size)
    opt = axis_optimum(x, y)
    lo, hi = opt.interval
    assert lo < -2.6 < hi and hi - lo < 0.5


def test_searched_lrs_a_hair_apart_are_one_level_not_a_steep_parabola():
    # What a GP study asked around its best point (a stranger's fit of adaptive_lr): the
    # three-point quadratic through 0.006228, its neighbour 0.006232 and 0.0045 put the
    # optimum at 0.00532 with a loss of 2.243, below every run, and named the wrong best slice.
    lr = np.array([0.004503, 0.006228, 0.006232, 0.006255, 0.006278])
    loss = np.array([2.7988, 2.7353, 2.7394, 2.7397, 2.7364])
    opt = axis_optimum(np.log10(lr), loss)
    assert opt.edge == "high"  # nothing well above 0.0063 was tried
    assert 10 ** opt.x == pytest.approx(np.exp(np.log(lr[1:]).mean()), rel=1e-9)
    assert opt.loss == pytest.approx(loss[1:].mean())
    # in the middle of a bracket the close pair is one level of two replicates
    opt = axis_optimum(np.log10([1e-3, 3e-3, 3.02e-3, 1e-2]), np.array([3.0, 2.80, 2.81, 2.95]))
    assert opt.edge is None and 1e-3 < 10 ** opt.x < 1e-2
    assert 2.79 < opt.loss <= 2.805
    assert opt.interval is not None  # the pair's spread is a noise estimate
    # a diverged LR a hair above a stable one stays the cap: pooled with it, the optimum was
    # put above every stable run and the next grid asked for LRs past one that diverged
    opt = axis_optimum(np.log10([1e-3, 3e-3, 1e-2, 1.04e-2]), np.array([3.0, 2.5, 2.45, np.nan]))
    assert opt.edge is None and opt.new_values == ()
    assert 10 ** opt.x <= 1e-2


def test_no_interval_without_replicates_and_with_three_stable_values():
    x = GRID[:3]
    opt = axis_optimum(x, parabola(x, GRID[1] + 0.1))
    assert opt.edge is None and opt.interval is None


def test_one_seed_over_four_lrs_gives_no_interval():
    """A researcher's slice: one seed at 0.002-0.016, its four losses almost exactly on a
    quadratic; σ from that one residual gave 0.0055 [0.00549, 0.00551], and the second seed's
    optimum was 0.0069."""
    x = np.log10([0.002, 0.004, 0.008, 0.016])
    opt = axis_optimum(x, np.array([2.3305, 2.2402, 2.2441, 2.3417]))
    assert opt.edge is None and 10 ** opt.x == pytest.approx(0.0055, rel=0.01)
    assert opt.interval is None and opt.noise == "none"
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rows = [{"N": 1e5, "D": 1e6, "B": 1024.0, "wd": 0.0, "lr": 10 ** v, "loss": y,
             "status": "finished"} for v, y in zip(x, [2.3305, 2.2402, 2.2441, 2.3417],
                                                   strict=True)]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=50),
                   sweep="s")
    assert ("1 slice has no LR interval: one seed with fewer than 5 LRs within two grid steps "
            "of its best does not measure the loss noise (a quadratic through 3 or 4 points "
            "leaves at most one residual); add a seed (sweep extend s 'seeds=[0,1]') or LRs "
            "around the best"
            ) in format_fit(doc)
    # two such slices are named; with trials not done, those may hold the seed or LRs
    wider = rows + [{**r, "N": 4e5} for r in rows]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(wider), source="s"), n_boot=50),
                   sweep="s")
    assert ("  2 slices (N=1e+05; N=4e+05) have no LR interval: one seed with fewer than 5 LRs "
            "within two grid steps of its best does not measure the loss noise (a quadratic "
            "through 3 or 4 points leaves at most one residual); add a seed or LRs around the "
            "best; 3 of "
            "the sweep's trials are not done yet and may hold them: let them finish (`sweep "
            "resume s` if its driver stopped) and fit again before adding any"
            ) in format_fit(doc, not_done=3).splitlines()
    # with a second seed the replicates give one
    opt = axis_optimum(np.concatenate([x, x[1:3]]),
                       np.array([2.3305, 2.2402, 2.2441, 2.3417, 2.3112, 2.2441]))
    assert opt.interval is not None and opt.noise in ("seeds", "misfit")


def test_a_searched_sweep_with_an_edge_slice_is_told_to_search_more_not_to_list_lrs():
    # A study's LRs are the sampler's: new grid values would turn its interval into a list.
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rows = [{"run": f"r{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
             "loss": parabola(x, -4.5), "status": "finished"} for i, x in enumerate(GRID)]
    import pandas as pd

    result = fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=20)
    assert fit_json(result, sweep="s")["next_grid"][0].startswith("optim.lr=choice(")
    doc = fit_json(result, sweep="s", next_trials=12)
    assert doc["next_grid"] == ["search.optuna.n_trials=12"]
    assert [s["extend"] for s in doc["slices"]] == ["search.optuna.n_trials=12"]
    assert ("1 slice has no LR optimum inside the LRs its study tried; to bracket it: sweep "
            "extend s search.optuna.n_trials=12") in format_fit(doc)
    # a grid's hint is a command to paste: its choice(...) quoted for the shell
    grid_doc = fit_json(result, sweep="s")
    text = format_fit(grid_doc)
    hint = f"to bracket it: sweep extend s '{grid_doc['next_grid'][0]}'"
    assert hint in text and "(" in grid_doc["next_grid"][0]
    # with what it costs, where `sweep fit` could count it from the stored spec
    assert f"{hint} (adds 12 trials: every new LR at every point of the grid's other axes)" in (
        format_fit({**grid_doc, "next_grid_trials": 12}))
    # a CSV's fit names no sweep to extend
    assert "sweep extend" not in format_fit(grid_doc, recorded=False)
    assert "add to its sweep: optim.lr=choice(" in format_fit(grid_doc, recorded=False)
    # trials not done may be the very LRs the slice lacks: extending would add them twice
    waiting = format_fit(grid_doc, not_done=3)
    assert ("1 slice has its best LR at the grid edge; 3 of the sweep's trials are not done yet "
            "and may bracket it: let them finish (`sweep resume s` if its driver stopped) and "
            "fit again before extending") in waiting
    assert "sweep extend" not in waiting


def test_a_slice_that_diverged_at_every_lr_is_not_said_to_be_at_the_edge():
    import pandas as pd

    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rows = [{"run": f"a{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
             "loss": float("nan"), "status": "diverged"} for i, x in enumerate(GRID)]
    good = [{"run": f"c{i}", "B": 1e4, "N": 4e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
             "loss": parabola(x, GRID[2]), "status": "finished"} for i, x in enumerate(GRID)]
    result = fit_runs(from_short_frame(pd.DataFrame(rows + good), source="s"), n_boot=0)
    assert "1 slice diverged at every LR; to bracket it: sweep extend s" in format_fit(
        fit_json(result, sweep="s"))
    rows += [{"run": f"b{i}", "B": 1e4, "N": 2e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
              "loss": parabola(x, -4.5), "status": "finished"} for i, x in enumerate(GRID)]
    result = fit_runs(from_short_frame(pd.DataFrame(rows + good), source="s"), n_boot=0)
    assert ("2 slices have no LR optimum inside the LRs tried (1 at the grid edge, 1 diverged "
            "at every LR); to bracket them: sweep extend s") in format_fit(
        fit_json(result, sweep="s"))


def test_intervals_from_one_seed_say_they_miss_the_spread_between_seeds():
    """Without replicates, σ is the residual of one seed's losses around the local quadratic:
    all its LRs share one init and data order, so the optimum's move between seeds is not in
    it (a ±2% interval where another seed's optimum lay 15% away). Said, not hidden."""
    import pandas as pd

    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rng = np.random.default_rng(0)
    rows = [{"run": f"a{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
             "loss": parabola(x, GRID[3]) + rng.normal(0, 0.002), "status": "finished"}
            for i, x in enumerate(GRID)]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=100),
                   sweep="s")
    assert [s["interval_noise"] for s in doc["slices"]] == ["fit"]
    assert ("the LR intervals of 1 slice come from one seed's losses around their fitted "
            "curve: they miss how the optimum moves between seeds, often by more; for "
            "intervals that hold it add a seed (sweep extend s 'seeds=[0,1]')") in format_fit(doc)
    seeds = rows + [{**r, "run": f"b{i}", "loss": r["loss"] + rng.normal(0, 0.002)}
                    for i, r in enumerate(rows)]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(seeds), source="s"), n_boot=100),
                   sweep="s")
    assert [s["interval_noise"] for s in doc["slices"]] == ["seeds"]
    assert "one seed's losses" not in format_fit(doc)


def test_one_lr_tried_is_no_edge_and_asks_for_values_on_both_sides():
    """A slice that tried a single LR knows nothing of either side: not a `low` edge that
    asks for lower LRs only."""
    opt = axis_optimum(np.log10([3e-3, 3e-3]), np.array([2.5, 2.6]), n_boot=50)
    assert opt.edge == "single" and opt.interval is None
    low, high = opt.new_values
    assert low == pytest.approx(3e-3 / 10 ** 0.5) and high == pytest.approx(3e-3 * 10 ** 0.5)


def test_a_single_lr_slice_prints_its_optimum_with_its_interval():
    """One LR sweep is the plainest use: its optimum was only in fit.json, no line said it."""
    import pandas as pd

    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rng = np.random.default_rng(0)
    x = np.repeat(GRID, 2)
    rows = [{"run": f"r{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** v,
             "loss": parabola(v, -2.6) + rng.normal(0, 0.003), "status": "finished"}
            for i, v in enumerate(x)]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=50),
                   sweep="s")
    (only,) = doc["slices"]
    line = next(ln for ln in format_fit(doc).splitlines() if "LR optimum" in ln)
    assert line == (f"  LR optimum: optim.lr={only['lr_opt']:.3g} [{only['lr_lo']:.3g}, "
                    f"{only['lr_hi']:.3g}] (fitted loss {only['loss_opt']:.4f}; best tried: "
                    f"optim.lr={only['lr_best']:.3g}, loss {only['loss_best']:.4f})")
    tried = {v: np.mean([r["loss"] for r in rows if r["lr"] == 10 ** v]) for v in GRID}
    assert only["loss_best"] == pytest.approx(min(tried.values()), abs=1e-12)
    assert np.log10(only["lr_best"]) == pytest.approx(min(tried, key=tried.get))
    assert only["lr_lo"] < only["lr_opt"] < only["lr_hi"]
    # at the grid's edge it is no optimum: said so (the edge line follows)
    falling = [{**r, "loss": 3.0 - np.log10(r["lr"]) / 10} for r in rows]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(falling), source="s"), n_boot=50),
                   sweep="s")
    text = format_fit(doc)
    assert "  LR optimum: none bracketed (the best LR tried: optim.lr=0.03, loss " in text
    assert "has its best LR at the grid edge" in text


def test_a_best_slice_at_the_end_of_a_tuned_axis_is_flagged():
    """Base-multiplier tuning: the best init_std was the largest tried, said nowhere, and the
    README tells users to copy the best slice's multipliers."""
    import pandas as pd

    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rows = [{"run": f"r{std}-{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
             "loss": parabola(x, -2.6, floor=3.0 - std), "status": "finished",
             "model.init_std": std, "model.output_mult": mult}
            for std in (0.02, 0.04, 0.08) for mult in (1.0, 2.0) for i, x in enumerate(GRID)
            if not (mult == 2.0 and std != 0.04)]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=20),
                   sweep="s")
    text = format_fit(doc)
    assert ("the best slice is at the high end of model.init_std (0.08 of 0.02-0.08): the "
            "best may lie beyond what was tried; extend those axes before taking these "
            "values") in text  # (output_mult: two values, which no third brackets)
    inside = [{**r, "loss": parabola(np.log10(r["lr"]), -2.6,
                                     floor=3.0 + 100 * (r["model.init_std"] - 0.04) ** 2)}
              for r in rows if r["model.output_mult"] == 1.0]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(inside), source="s"), n_boot=20),
                   sweep="s")
    assert "best slice: model.init_std=0.04" in format_fit(doc)
    assert "is at the" not in format_fit(doc)  # bracketed: nothing to say
    # A key that moves with a scale axis (a warmup per budget) is no tuned axis
    budgets = [{**r, "D": d, "schedule.warmup_tokens": d / 100,
                "loss": parabola(np.log10(r["lr"]), -2.6, floor=3.0 - d / 1e9)}
               for r in rows if r["model.init_std"] == 0.04 and r["model.output_mult"] == 1.0
               for d in (1e8, 2e8, 4e8)]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(budgets), source="s"), n_boot=20),
                   sweep="s")
    assert "is at the" not in format_fit(doc)


def test_n_boot_given_is_used_for_the_slice_optima_too():
    """--n-boot 2000 gave the slice intervals of 200: a silent cap."""
    import pandas as pd

    from fitter.data import from_short_frame
    from fitter.fit import fit_runs

    rng = np.random.default_rng(3)
    rows = [{"run": f"r{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** v,
             "loss": parabola(v, -2.6) + rng.normal(0, 0.003), "status": "finished"}
            for i, v in enumerate(np.repeat(GRID, 2))]
    runs = from_short_frame(pd.DataFrame(rows), source="s")
    widths = [float(fit_runs(runs, n_boot=n).optima["lr_hi"].iloc[0]
                    - fit_runs(runs, n_boot=n).optima["lr_lo"].iloc[0]) for n in (200, 400)]
    assert widths[0] != widths[1]
    default = fit_runs(runs).optima
    assert float(default["lr_hi"].iloc[0]) == float(fit_runs(runs, n_boot=200).optima[
        "lr_hi"].iloc[0])  # the default for slices is 200


def test_a_divergence_between_stable_lrs_caps_the_optimum_below_it():
    """A diverged LR with stable LRs above it was skipped: the optimum landed beside it, with
    a tight interval."""
    loss = parabola(GRID, -2.0)  # best at 1e-2
    loss[3] = np.nan  # 3e-3 diverged; 1e-2 and 3e-2 finished
    opt = axis_optimum(GRID, loss)
    assert opt.x == pytest.approx(GRID[2])  # the largest LR below the first divergence
    assert opt.edge == "diverged"
    assert opt.limit == pytest.approx(3e-3)
    assert opt.beyond == pytest.approx((1e-2, 3e-2))


def test_an_lr_where_some_seeds_diverged_is_past_the_stability_limit():
    x = np.repeat(GRID, 3)
    y = parabola(x, -2.0) + np.tile([0.004, -0.003, 0.0], len(GRID))
    y[[12, 13]] = np.nan  # two of the three seeds at 1e-2, the best LR, diverged
    opt = axis_optimum(x, y)
    assert opt.x == pytest.approx(GRID[3])  # 3e-3: every seed finished there
    assert opt.edge == "diverged" and opt.limit == pytest.approx(1e-2)
    assert opt.beyond == pytest.approx((1e-2, 3e-2))
    # the interval of an optimum at the stability limit reaches the LR that diverged
    assert opt.interval[1] == pytest.approx(GRID[4])
    assert opt.interval[0] <= GRID[3]


@pytest.mark.parametrize("replicates", [2, 3, 5])
def test_replicates_that_agree_exactly_give_no_interval_not_a_zero_width_one(replicates):
    # (the mean of three equal floats is not always exactly them: σ came out at 1e-16)
    x = np.repeat(GRID, replicates)
    y = parabola(x, -2.6)  # every replicate the same to the last digit, no residual either
    opt = axis_optimum(x, y)
    assert opt.edge is None and opt.x == pytest.approx(-2.6)
    assert opt.interval is None


def test_a_divergence_at_the_second_lr_is_kept_with_an_edge_optimum():
    """The low/high returns dropped the limit: the summary advised lower LRs and never named
    the finished runs above the divergence, which beat the edge."""
    x = np.log10([1e-3, 3e-3, 3e-3, 1e-2, 3e-2])
    opt = axis_optimum(x, np.array([3.5, 3.4, np.nan, 3.3, 3.6]))
    assert opt.edge == "low" and opt.limit == pytest.approx(3e-3)
    assert opt.beyond == pytest.approx((3e-3, 1e-2, 3e-2)) and opt.beyond_loss == 3.3
    assert opt.conflict  # finished runs past the limit beat the only LR below it
    flaky = axis_optimum(GRID, np.array([np.nan, *parabola(GRID[1:], -2.6)]))
    assert flaky.edge == "all_diverged" and flaky.conflict


def test_finished_runs_past_the_limit_that_lose_are_no_conflict():
    x = np.repeat(GRID, 2)
    y = parabola(x, -2.6)
    y[-1] = np.nan  # one seed of two at 3e-2, far above the optimum, diverged
    opt = axis_optimum(x, y)
    assert opt.limit == pytest.approx(3e-2) and opt.beyond == pytest.approx((3e-2,))
    assert not opt.conflict and opt.x == pytest.approx(-2.6, abs=0.02)


def test_a_conflicting_slice_is_left_out_of_the_laws():
    """One flaky seed capped its slice at a tenth of its optimum, and the lr law took it."""
    from fitter.slices import best_per_group

    rows = []
    for d, vertex in ((1e8, -2.4), (1e9, -2.7), (1e10, -3.0)):
        for seed in (0, 1):
            for xv in GRID:
                loss = parabola(xv, vertex) + 0.001 * seed
                if d == 1e9 and seed == 1 and xv == GRID[1]:
                    loss = np.nan  # a flaky seed at 3e-4
                rows.append({"D": d, "lr": 10 ** xv, "loss": loss,
                             "status": "finished" if np.isfinite(loss) else "diverged"})
    optima = lr_optima(pd.DataFrame(rows), ("D",), n_boot=0)
    flaky = optima[optima["D"] == 1e9].iloc[0]
    assert flaky["conflict"] and flaky["extend"] is None
    assert set(best_per_group(optima, ["D"])["D"]) == {1e8, 1e10}


def test_a_low_edge_under_a_divergence_asks_for_lrs_on_both_sides():
    """Grid 3e-3, 1, 10 with only 3e-3 stable: the next grid was two grid steps down (9e-7,
    5.2e-5) and nothing between 3e-3 and the divergence at 1, where the optimum may be."""
    opt = axis_optimum(np.log10([3e-3, 1.0, 10.0]), np.array([2.5, np.nan, np.nan]))
    assert opt.edge == "low" and opt.limit == pytest.approx(1.0)
    low, high = opt.new_values
    assert low == pytest.approx(3e-3 / (1 / 3e-3) ** 0.5)
    assert high == pytest.approx((3e-3 * 1.0) ** 0.5)
    # an edge with a stable LR above it still looks further down, a grid step at a time
    stable = axis_optimum(np.log10([1e-3, 2e-3, 4e-3]), np.array([2.5, 2.6, 2.7]))
    assert stable.new_values == pytest.approx((5e-4, 2.5e-4))


def test_lr_drift_over_widths_counts_an_edge_past_the_bracketed_optima_as_a_bound():
    """An SP width whose best LR was the lowest tried was left out of the drift: SP read
    '2×' beside muP's '1.5×' where its optimum moved at least 4.5×."""
    from fitter.slices import lr_drift

    assert lr_drift([4e-3, 6e-3], [None, None]) == pytest.approx((1.5, False))
    assert lr_drift([1e-3, 2e-3, 4.5e-3], ["low", None, None]) == pytest.approx((4.5, True))
    assert lr_drift([8e-3, 2e-3, 4e-3], ["high", None, None]) == pytest.approx((4.0, True))
    # an edge inside the bracketed range says nothing more
    assert lr_drift([3e-3, 2e-3, 4e-3], ["low", None, None]) == pytest.approx((2.0, False))
    assert lr_drift([1e-3, 2e-3], ["low", None]) == pytest.approx((2.0, True))
    drift, bound = lr_drift([1e-3, 2e-3], ["low", "high"])
    assert np.isnan(drift) and not bound  # (no optimum bracketed at all)


def test_the_mup_transfer_verdict_says_cannot_tell_rather_than_crash():
    """With under two bracketed widths the script's verdict compared None with 1.5 and
    crashed at the end of its half-hour sweep."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "science" / "mup_transfer.py"
    spec = importlib.util.spec_from_file_location("mup_transfer", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    one = {64: {"lr_opt": 3e-3, "edge": None}, 128: {"lr_opt": 1e-3, "edge": "low"},
           256: {"lr_opt": 1e-3, "edge": "single"}}
    assert module._drift(one) == {"factor": pytest.approx(3.0), "at_least": True,
                                  "widths": [64], "edge_widths": [128, 256]}
    assert module._drift({64: {"lr_opt": 3e-3, "edge": "high"}})["factor"] is None


@pytest.mark.parametrize("repeats", [0, 1])
def test_optimum_intervals_from_few_degrees_of_freedom_hold_the_truth_at_their_level(repeats):
    # One seed over 11 LRs (σ from a quadratic's residuals: 2 degrees of freedom), or with one
    # run repeated (σ from 1): σ was taken as known and the 90% intervals held the true optimum
    # in 79% and 70% of 300 synthetic slices. Binomial sd at 300: 1.7%.
    rng = np.random.default_rng(1)
    grid = np.arange(-4, -1.49, 0.25)
    hits = n = 0
    for r in range(300):
        truth = rng.uniform(-3.0, -2.5)
        x = np.concatenate([grid, grid[np.argsort(np.abs(grid - truth))[:repeats]]])
        y = 3 + 0.05 * (x - truth) ** 2 + rng.normal(0, 0.002, x.size)
        opt = axis_optimum(x, y, n_boot=200, seed=r)
        if opt.interval is None or opt.edge:
            continue
        n += 1
        hits += opt.interval[0] <= truth <= opt.interval[1]
    assert n > 250 and 0.85 <= hits / n <= 0.96, (n, hits / n)


PER_LOG2 = 0.012 / np.log10(2) ** 2  # 0.012 nats a factor 2 from the optimum (below it)


def _skewed(x, truth, ratio=3.0, curvature=PER_LOG2):
    """A loss curve `ratio` times as steep above its optimum as below it (in log LR)."""
    d = x - truth
    return 3.0 + curvature * d ** 2 * np.where(d > 0, ratio, 1.0)


def _three_seed_slices(ratio: float, count: int, seed: int) -> tuple[int, float, float]:
    """`count` synthetic slices of 3 seeds on a factor-2 grid, optimum anywhere within half a
    step of its middle: how many had an interval, the share of those whose σ was the misfit's,
    and the share that held the true optimum."""
    rng = np.random.default_rng(seed)
    x = np.repeat(np.log10(2.0) * np.arange(-3, 4), 3)
    hits = n = misfits = 0
    for r in range(count):
        truth = rng.uniform(-0.5, 0.5) * np.log10(2.0)
        y = _skewed(x, truth, ratio=ratio) + rng.normal(0, 0.003, x.size)
        opt = axis_optimum(x, y, n_boot=200, seed=r)
        if opt.interval is None or opt.edge:
            continue
        n += 1
        misfits += opt.noise == "misfit"
        hits += opt.interval[0] <= truth <= opt.interval[1]
    return n, misfits / n, hits / n


def test_seed_replicates_of_a_skewed_curve_take_the_misfit_into_the_interval():
    """Replicates measure the noise, not the local quadratic's bias on a curve steeper above
    its optimum: with three seeds such intervals held the true optimum in 7% of synthetic
    slices at a nominal 90%. The misfit, tested against the seeds' noise, widens them."""
    n, misfit, coverage = _three_seed_slices(ratio=3.0, count=150, seed=3)
    assert n > 140 and misfit > 0.8 and coverage >= 0.85, (n, misfit, coverage)


def test_seed_replicates_of_a_symmetric_curve_keep_their_noise_and_their_level():
    # (the F test at 0.9 takes 10% of exact quadratics for skewed: those intervals widen)
    n, misfit, coverage = _three_seed_slices(ratio=1.0, count=300, seed=4)
    assert n > 280 and misfit < 0.2 and 0.85 <= coverage <= 0.96, (n, misfit, coverage)


def test_a_misfit_interval_is_said_in_the_summary():
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rng = np.random.default_rng(1)
    grid = np.log10(2.0) * np.arange(-3, 4) - 2.5
    rows = [{"run": f"s{seed}-{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** x,
             "loss": _skewed(x, -2.45) + rng.normal(0, 0.002), "status": "finished"}
            for seed in range(3) for i, x in enumerate(grid)]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=100),
                   sweep="s")
    assert [s["interval_noise"] for s in doc["slices"]] == ["misfit"]
    assert ("the LR intervals of 1 slice are as wide as the local quadratic's misfit, beyond "
            "what the seeds' noise explains (a test at 90%: on a true parabola it says so one "
            "time in ten): a loss curve skewed around the optimum") \
        in format_fit(doc)


def test_a_three_level_window_below_a_wall_keeps_the_best_lr_tried_in_its_interval():
    """A researcher's muP width 128, three seeds: every seed best at 0.008, a wall at 0.016.
    The quadratic through 0.004, 0.008, 0.016 puts the vertex at 0.006 and every resample
    with it: the 90% interval was [0.0024, 0.0074], without the LR every seed found best."""
    lr = np.repeat([0.001, 0.002, 0.004, 0.008, 0.016, 0.032], 3)
    loss = np.array([2.727285, 2.722795, 2.713474, 2.644076, 2.623308, 2.617511,
                     2.615787, 2.589426, 2.592762, 2.609182, 2.585127, 2.572223,
                     2.728456, 2.820590, 2.599180, 2.821074, 2.956384, 2.835981])
    opt = axis_optimum(np.log10(lr), loss)
    assert opt.noise == "seeds" and 10 ** opt.x == pytest.approx(0.00596, rel=1e-3)
    lo, hi = (10 ** v for v in opt.interval)
    assert lo < 10 ** opt.x and hi == pytest.approx(0.008)


def test_the_summary_gives_each_slices_optimum_for_a_transfer_study():
    """The optimum per width (what an LR transfer study reads) was only in fit.json and a
    plot: the summary named the best slice alone."""
    import pandas as pd

    from fitter.data import from_short_frame
    from fitter.fit import SLICES_SAID, fit_json, fit_runs, format_fit

    def doc(widths):
        rows = [{"run": f"r{n}-{v}", "B": 1e4, "N": n, "D": 1e8, "wd": 0.0, "lr": 10 ** v,
                 "loss": parabola(v, -2.6 - 0.1 * k), "status": "finished"}
                for k, n in enumerate(widths) for v in GRID]
        return fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=0),
                        sweep="s")

    three = doc([1e6, 4e6, 1.6e7])
    lines = format_fit(three).splitlines()
    at = lines.index("  LR optimum per slice (fit.json: slices):")
    said = lines[at + 1:at + 4]
    assert said == [f"    N={n}: optim.lr={s['lr_opt']:.3g}"
                    for n, s in zip(("1e+06", "4e+06", "1.6e+07"), three["slices"], strict=True)]
    assert [np.log10(s["lr_opt"]) for s in three["slices"]] == pytest.approx(
        [-2.6, -2.7, -2.8], abs=1e-6)
    many = doc([1e6 * 2 ** k for k in range(SLICES_SAID + 1)])
    assert "LR optimum per slice" not in format_fit(many)
    rows = [{"run": f"r{n}-{v}", "B": 1e4, "N": n, "D": 1e8, "wd": 0.0, "lr": 10 ** v,
             "loss": np.nan if n > 1e7 else parabola(v, -2.6), "status":
             "diverged" if n > 1e7 else "finished"} for n in (1e6, 4e6, 1.6e7) for v in GRID]
    lost = fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=0),
                    sweep="s")
    lines = format_fit(lost).splitlines()
    at = lines.index("  LR optimum per slice (fit.json: slices):")
    assert lines[at + 3] == "    N=1.6e+07: every LR diverged"  # (it was left out)


def test_below_a_diverged_lr_the_interval_keeps_the_best_lr_tried_and_lr_best_stays_below():
    """Every seed best at 0.008 and 0.016 diverged (the steepest wall): the window below the
    cap passed the fit tolerance with four levels and the interval [0.0063, 0.0070] left out
    0.008. And a seed that survived at the limit made the summary's best tried LR 0.016, the
    one the slice calls unsafe, on that one run's loss."""
    import pandas as pd

    from fitter.data import from_short_frame

    lr = np.repeat([0.001, 0.002, 0.004, 0.008, 0.016], 3)
    jitter = np.tile([-0.002, 0.0, 0.002], 5)
    loss = np.repeat([2.72, 2.64, 2.60, 2.59, np.nan], 3) + jitter
    opt = axis_optimum(np.log10(lr), loss)
    assert opt.noise == "seeds" and 10 ** opt.x < 0.008
    assert 10 ** opt.interval[1] == pytest.approx(0.008)
    loss[-3] = 2.587  # one seed of 0.016 finished, below every mean: past the limit all the same
    frame = pd.DataFrame({"run": [f"r{i}" for i in range(len(lr))], "N": 1e6, "D": 1e8,
                          "B": 1e4, "wd": 0.0, "lr": lr, "loss": loss,
                          "status": np.where(np.isnan(loss), "diverged", "finished")})
    runs = from_short_frame(frame, source="s")
    (row,) = lr_optima(runs.table, runs.slice_keys).to_dict("records")
    assert row["stability_limit"] == pytest.approx(0.016)
    assert row["lr_best"] == pytest.approx(0.008)
    assert row["loss_best"] == pytest.approx(2.59)


@pytest.mark.parametrize(("ratio", "bias_before"), [(3.0, -0.45), (2.0, -0.29)])
def test_seed_replicates_that_find_a_skewed_curve_keep_the_window_at_three_levels(
        ratio, bias_before):
    """On a shallow curve steeper above its optimum, a five-level quadratic lies within
    `FIT_TOLERANCE` of the points and puts its vertex farther toward the gentle side than the
    three-level one (0.45 of a grid step low at 3x, 0.29 at 2x, over these slices). Three
    seeds see that misfit; the window then stays at three levels: 0.23 and 0.15."""
    rng = np.random.default_rng(11)
    x = np.repeat(np.log10(2.0) * np.arange(-3, 4), 3)
    errors, wide = [], 0
    for _ in range(100):
        truth = rng.uniform(-0.5, 0.5) * np.log10(2.0)
        opt = axis_optimum(x, _skewed(x, truth, ratio=ratio) + rng.normal(0, 0.003, x.size),
                           n_boot=0)
        if opt.edge:
            continue
        errors.append((opt.x - truth) / np.log10(2.0))
        wide += opt.window[1] - opt.window[0] > 2.5 * np.log10(2.0)
    bias = float(np.mean(errors))
    assert len(errors) > 90 and wide / len(errors) < 0.1, (len(errors), wide)
    assert bias_before / 2 - 0.05 < bias < 0, (bias, bias_before)


def _two_studies(offset: float, rng: np.random.Generator) -> pd.DataFrame:
    """Two seeds' studies of one slice, each at its own LRs (as a searched sweep asks), on
    one curve whose optimum is 0.01, seed 1's curve `offset` nats lower."""
    rows = []
    for seed, steps in ((0, (-0.6, -0.4, -0.2, 0.0, 0.2, 0.4)),
                        (1, (-0.3, 0.1, 0.3, 0.5, 0.7))):
        for step in steps:
            loss = 2.9 + 0.3 * step ** 2 - offset * seed + rng.normal(0, 0.002)
            rows.append({"lr": 0.01 * 10 ** step, "loss": loss, "status": "finished",
                         "seed": str(seed), "D": 32768.0})
    return pd.DataFrame(rows)


def test_seeds_that_tried_different_lrs_are_read_about_one_curve():
    """A searched sweep's two seeds, 0.17 nats apart at 32k tokens, asked their own LRs: a
    quadratic through levels of either seed put a researcher's optimum 0.11 nats below every
    run, and here at 0.0125 for 0.01 (the lower seed's LRs lie above the optimum). Each
    seed's offset is fitted with the curve and taken out."""
    runs = _two_studies(0.17, np.random.default_rng(0))
    row = lr_optima(runs, (), n_boot=200).iloc[0]
    assert row["lr_opt"] == pytest.approx(0.01, rel=0.05)
    assert row["seed_offset"] == pytest.approx(0.17, abs=0.01)
    assert row["n_seeds"] == 2
    # the mean seed's curve: its loss lies between the two seeds' at the optimum
    assert row["loss_opt"] == pytest.approx(2.9 - 0.17 / 2, abs=0.005)
    assert row["lr_lo"] < 0.01 < row["lr_hi"]
    blind = lr_optima(runs.drop(columns="seed"), (), n_boot=0).iloc[0]  # (as it was read)
    assert abs(np.log10(blind["lr_opt"] / 0.01)) > 3 * abs(np.log10(row["lr_opt"] / 0.01))


def test_a_grid_s_seed_offsets_keep_its_optimum_and_leave_its_noise():
    """A grid's seeds share every LR: a level's mean holds each seed, the offsets cancel, and
    the optimum is what it was without the seed column. Its interval is not: the spread of a
    level's seeds held their offsets (0.1 nats apart, 50x the noise), and the interval was as
    wide as a factor 4; it is now the one of the same grid without offsets."""
    def grid(offset):
        rng = np.random.default_rng(1)
        return pd.DataFrame([
            {"lr": 0.01 * 10 ** step, "loss": 2.9 + 0.3 * step ** 2 - offset * seed
             + rng.normal(0, 0.002), "status": "finished", "seed": str(seed), "D": 1.0}
            for seed in (0, 1, 2) for step in np.arange(-0.9, 0.91, 0.3)])

    runs = grid(0.1)
    with_seeds, without, level = (lr_optima(r, (), n_boot=100).iloc[0] for r in (
        runs, runs.drop(columns="seed"), grid(0.0)))
    assert with_seeds["seed_offset"] is None and with_seeds["n_seeds"] == 3
    for key in ("lr_opt", "loss_opt"):
        assert with_seeds[key] == pytest.approx(without[key], rel=1e-12)
    for key in ("lr_opt", "lr_lo", "lr_hi"):
        assert with_seeds[key] == pytest.approx(level[key], rel=1e-9)
    assert with_seeds["lr_lo"] < 0.01 < with_seeds["lr_hi"] < 1.01 * with_seeds["lr_lo"]
    assert without["lr_hi"] / without["lr_lo"] > 4  # (read without the seeds: as it was)


def test_a_slice_of_several_seeds_without_an_interval_is_not_said_to_be_one_seed():
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rows = [{"N": 1e6, "D": 32768.0, "B": 4096.0, "lr": 0.01 * 10 ** step, "seed": seed,
             "loss": 2.9 + 0.3 * step ** 2 - 0.1 * seed, "status": "finished"}
            for seed, steps in ((0, (-0.4, 0.1)), (1, (-0.1, 0.4))) for step in steps]
    result = fit_runs(from_short_frame(pd.DataFrame(rows), source="runs.csv"), n_boot=50)
    doc = fit_json(result, sweep="runs.csv")
    assert doc["slices"][0]["n_seeds"] == 2 and doc["slices"][0]["interval_noise"] == "none"
    text = format_fit(doc, recorded=False)
    assert ("  1 slice has no LR interval: fewer than 5 LRs within two grid steps of the best, "
            "none tried by two seeds, do not measure the loss noise; add LRs around the best"
            in text.splitlines())
    assert "one seed" not in text


def test_the_summary_says_a_slice_of_seeds_at_other_lrs_gives_the_mean_seed_s_loss():
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    runs = _two_studies(0.17, np.random.default_rng(0)).assign(N=1e6, B=4096.0)
    doc = fit_json(fit_runs(from_short_frame(runs, source="s"), n_boot=50), sweep="s")
    assert "(the mean seed's: each seed's offset taken out)" in format_fit(doc, recorded=False)


def test_a_csv_s_slices_at_the_edge_are_told_a_grid_adds_each_value_to_every_slice():
    """16 slices each short of two LRs were told to add 32 values, which a grid sweep adds
    to every slice."""
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit
    from fitter.synthetic import Truth, synthetic_runs

    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6], d_values=[1e9], b_values=[1e5],
                           noise=0.001, lr_steps=np.array([-0.3, 0.0]))
    doc = fit_json(fit_runs(from_short_frame(frame, source="s"), n_boot=0), sweep="s")
    assert "(a grid adds every value to every slice; fit.json's slices[].extend gives each " \
           "slice's own)" in format_fit(doc, recorded=False)
    assert all(s["extend"] for s in doc["slices"])


def test_a_grid_missing_one_run_keeps_its_interval_and_blank_seeds_are_no_seed():
    """One failed run of a 3-seed grid switched the slice to fitted offsets (an interval 30x
    narrower); its level's mean is now the mean seed's, the interval as the whole grid's. Runs
    with a blank seed were one more seed, "nan"."""
    rng = np.random.default_rng(2)
    rows = [{"lr": 0.01 * 10 ** step, "loss": 2.9 + 0.3 * step ** 2 + 0.1 * seed
             + rng.normal(0, 0.002), "status": "finished", "seed": str(seed), "D": 1.0}
            for seed in (0, 1, 2) for step in np.arange(-0.9, 0.91, 0.3)]
    runs = pd.DataFrame(rows)
    whole = lr_optima(runs, (), n_boot=100).iloc[0]
    assert whole["seed_offset"] is None
    # seed 1 at the best LR failed (that level's mean was seeds 0 and 2's: the offsets cancel
    # there), or seed 2 there (the mean was 0.05 nats off the others')
    for missing in (7 + 3, 14 + 3):
        short = lr_optima(runs.drop(index=missing), (), n_boot=100).iloc[0]
        assert short["seed_offset"] == pytest.approx(0.2, abs=0.005)  # (said: mean seed's)
        assert 0.5 < (short["lr_hi"] / short["lr_lo"]) / (whole["lr_hi"] / whole["lr_lo"]) < 2
        assert short["lr_opt"] == pytest.approx(whole["lr_opt"], rel=0.01)
        # (a level without seed 2 read as measured was 0.05 nats low; the noise is 0.002)
        assert short["loss_opt"] == pytest.approx(whole["loss_opt"], abs=0.005)
    blank = runs.assign(seed=["0"] * 7 + ["nan"] * 14)
    row = lr_optima(blank, (), n_boot=0).iloc[0]
    assert row["n_seeds"] == 1 and row["seed_offset"] is None


def test_a_divergence_far_above_the_optimum_does_not_widen_its_interval():
    """Only the top LR diverged, three grid steps above the optimum: the interval was widened
    to hold the best LR tried, as below a wall right above it (20x wider; the helper's
    D=8e6 slice: [0.004, 0.00539] for [0.00531, 0.00539])."""
    x = np.log10([1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2])
    rng = np.random.default_rng(0)
    xs = np.tile(x, 3)  # (three seeds)
    loss = parabola(xs, np.log10(5.3e-3), curvature=0.4) + rng.normal(0, 0.002, len(xs))
    stable = axis_optimum(xs, loss, n_boot=200)
    loss[xs == x[-1]] = np.nan
    walled = axis_optimum(xs, loss, n_boot=200)
    assert walled.limit == pytest.approx(6.4e-2) and walled.edge is None
    assert walled.x == pytest.approx(stable.x, abs=1e-9)
    width = np.diff(walled.interval)[0]
    assert width < 2 * np.diff(stable.interval)[0]
    assert walled.interval[0] > x[2] + 0.5 * width  # (not down to the best LR tried, 0.004)


@pytest.mark.parametrize("noise, at_edge", [(0.06, ["low"]), (0.02, None)])
def test_an_interval_that_stops_at_the_lowest_lr_tried_says_so(noise, at_edge):
    """A slice's interval ended at the lowest LR tried ([0.002, 0.008] in a stranger's muP
    sweep, 0.002 the grid's first LR), where resamples whose best LR is the grid's first
    stop it: read as a measured bound. The summary says it may be wider."""
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit

    rng = np.random.default_rng(3)
    rows = [{"run": f"r{s}-{v}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0, "lr": 10 ** v,
             "seed": s, "loss": parabola(v, -3.4) + rng.normal(0, noise), "status": "finished"}
            for s in range(3) for v in GRID]
    doc = fit_json(fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=200),
                   sweep="s")
    (row,) = doc["slices"]
    assert row["interval_at_edge"] == at_edge
    said = "(its interval stops at the lowest LR tried: it may be wider; an LR past it would tell)"
    assert (said in format_fit(doc)) == (at_edge is not None)
    if at_edge:
        assert row["lr_lo"] == pytest.approx(1e-4)
