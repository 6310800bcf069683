"""Figures: written for every case, with the layout and honesty rules of issue 14."""

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from fitter import law_plots, plot_style, plots  # noqa: E402
from fitter.data import from_short_frame  # noqa: E402
from fitter.fit import fit_runs, write_fit  # noqa: E402
from fitter.powerlaw import interval_meaningful  # noqa: E402
from fitter.synthetic import Truth, synthetic_runs  # noqa: E402

LR6 = 2e-3 * 2.0 ** np.arange(6)
# issue 14's measured sweep: (param, width, N, losses at LR6)
MEASURED = [("mup", 64, 1.2e5, [2.062, 1.981, 1.907, 1.947, 2.073, 2.471]),
            ("mup", 128, 4.3e5, [1.995, 1.909, 1.825, 1.924, 2.045, 2.379]),
            ("mup", 256, 1.6e6, [1.944, 1.845, 1.782, 1.805, 2.001, 2.383]),
            ("sp", 128, 4.3e5, [1.787, 1.770, 1.848, 2.272, 2.542, 2.689])]


def _loss_vs_lr_labels(result) -> list[str]:
    """The legend's texts of a one-figure loss-vs-LR plot of `result`."""
    with plt.rc_context(plot_style.STYLE):
        ((_, fig),) = plots._loss_vs_lr_figures(plt, result)
    legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    plt.close(fig)
    return labels


@pytest.fixture(scope="module")
def measured():
    rows = [{"model.param": p, "model.width": str(w), "N": n, "D": 1e6, "B": 2048,
             "seq_len": 128, "lr": lr, "loss": loss, "status": "finished"}
            for p, w, n, losses in MEASURED for lr, loss in zip(LR6, losses, strict=True)]
    rows.append({**rows[-1], "lr": 0.256, "loss": np.nan, "status": "diverged"})
    frame = pd.DataFrame(rows).assign(run=lambda f: [f"r{i}" for i in range(len(f))])
    return fit_runs(from_short_frame(frame, source="measured"), laws=("lr",), n_boot=100)


def test_measured_sweep_writes_the_tp5_figure_width_figure_and_the_mup_law(measured, tmp_path):
    doc = write_fit(measured, tmp_path, sweep="transfer")
    assert doc["plots"] == ["plots/loss_vs_lr.png", "plots/lr_opt_vs_width.png",
                            "plots/law_lr_model.param-mup.png"]
    for path in doc["plots"]:
        assert (tmp_path / path).stat().st_size > 10_000


def test_a_refit_leaves_no_figure_of_a_law_it_no_longer_fits(measured, tmp_path):
    # A timescale law fitted once (to grid values) and skipped after a fix kept its figure in
    # plots/, and the science suite published it.
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "law_timescale.png").write_bytes(b"stale")
    doc = write_fit(measured, tmp_path, sweep="transfer")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        Path(p).name for p in doc["plots"])


def test_tp5_figure_has_one_panel_per_group_sharing_y_and_one_curve_per_width(measured):
    with plt.rc_context(plot_style.STYLE):
        ((_, fig),) = plots._loss_vs_lr_figures(plt, measured)
    mup, sp = fig.axes
    assert [mup.get_title(), sp.get_title()] == ["model.param=mup", "model.param=sp"]
    assert mup.get_ylim() == sp.get_ylim()
    assert mup.xaxis.get_scale() == "log" and "log₂" in mup.get_xlabel()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["width 64 (N = 1.2e+05)", "width 128 (N = 4.3e+05)",
                          "width 256 (N = 1.6e+06)"]
    assert "diverged (drawn at the top)" in labels
    assert "nan" not in fig.texts[0].get_text() if fig.texts else True
    plt.close(fig)


def test_every_text_is_at_least_9_points(measured):
    with plt.rc_context(plot_style.STYLE):
        ((_, fig),) = plots._loss_vs_lr_figures(plt, measured)
        sizes = [t.get_fontsize() for ax in fig.axes
                 for t in [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label]]
    assert min(sizes) >= 9
    plt.close(fig)


def test_law_from_three_points_says_so_instead_of_drawing_a_band(measured):
    from fitter.powerlaw import fit_power_law

    law = measured.laws["lr[model.param=mup]"]
    assert len(law.points) == 3 and not interval_meaningful(3, 2)
    # its optima have intervals of their own: the band comes from them, and says so
    with plt.rc_context(plot_style.STYLE):
        fig = law_plots.law_figure(plt, law, "lr[model.param=mup]", {"D": 1e6, "B": 2048})
    assert "90% interval (from the 3 optima's own)" in [
        t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    # optima without their own (a hand-written CSV's): no band, and the legend says why
    law = fit_power_law(law.points[["N", "lr_opt"]], name="lr", axes=("N",),
                        exponents=("a_N",), target="lr_opt")
    with plt.rc_context(plot_style.STYLE):
        fig = law_plots.law_figure(plt, law, "lr[model.param=mup]", {"D": 1e6, "B": 2048})
    ax = fig.axes[0]
    # said in the legend, below the axes: drawn in the plot's corner, it crossed the first
    # point's error bar in a researcher's 3-width muP law
    assert "3 points: too few points for an interval" in [
        t.get_text() for t in ax.get_legend().get_texts()]
    assert not ax.texts
    assert not ax.collections or all(type(c).__name__ != "PolyCollection"
                                      for c in ax.collections)
    plt.close(fig)


def _shown(ax, prefix: str) -> bool:
    """A published law drawn, or said to be too far off to draw: in the legend either way."""
    return any(t.get_text().startswith(prefix) for t in ax.get_legend().get_texts())


def test_law_with_enough_points_draws_its_band_and_the_published_law():
    frame = synthetic_runs(Truth(lr=(0.5, -0.3, -0.1, 0.0)), n_values=[1e6, 4e6, 1.6e7],
                           d_values=[1e8, 4e8, 1.6e9], b_values=[1e5], noise=0.001)
    law = fit_runs(from_short_frame(frame, source="s"), laws=("lr",), n_boot=50).laws["lr"]
    with plt.rc_context(plot_style.STYLE):
        fig = law_plots.law_figure(plt, law, "lr", {"B": 1e5})
    for ax in fig.axes:
        kinds = {type(c).__name__ for c in ax.collections}
        assert "PolyCollection" in kinds or "FillBetweenPolyCollection" in kinds
        assert _shown(ax, "StepFun 2025")
        assert not _shown(ax, "Shen")  # needs B as an axis
    # Along D, StepFun's LR is 11-41x these synthetic optima: said, not drawn (drawn, it set
    # the axis and squeezed the optima into a band)
    along_d = fig.axes[1]
    assert "StepFun 2025: 11-41x above these optima (not drawn)" in [
        t.get_text() for t in along_d.get_legend().get_texts()]
    assert along_d.get_ylim()[1] < 0.2
    plt.close(fig)
    # StepFun's LR law is a standard parametrization's: not drawn beside a muP law
    for param, drawn in (("mup", False), ("sp", True)):
        with plt.rc_context(plot_style.STYLE):
            fig = law_plots.law_figure(plt, law, "lr", {"B": 1e5, "param": param})
        for ax in fig.axes:
            assert _shown(ax, "StepFun 2025") == drawn, param
        plt.close(fig)
    table = from_short_frame(frame.assign(**{"model.param": "mup"}), source="s")
    assert law_plots.constants_of(fit_runs(table, laws=("lr",), n_boot=0), {})["param"] == "mup"
    # a law pooled over muP and SP runs (--pool) is neither parametrization's: StepFun's SP
    # law was drawn beside it as if it applied
    both = pd.concat([frame.assign(**{"model.param": "mup"}),
                      frame.assign(**{"model.param": "sp", "run": frame["run"] + "s"})],
                     ignore_index=True)
    pooled = fit_runs(from_short_frame(both, source="s"), laws=("lr",), n_boot=0, pool=True)
    assert law_plots.constants_of(pooled, {})["param"] == "mixed"
    with plt.rc_context(plot_style.STYLE):
        fig = law_plots.law_figure(plt, law, "lr", {"B": 1e5, "param": "mixed"})
    assert not any(_shown(ax, "StepFun 2025") for ax in fig.axes)
    plt.close(fig)


def test_shen_power_law_is_drawn_over_b_and_d_with_batch_in_sequences():
    frame = synthetic_runs(Truth(lr=(0.5, 0.0, -0.5, 1.0)), n_values=[1e6],
                           d_values=[1e8, 4e8, 1.6e9], b_values=[1e4, 4e4, 1.6e5], noise=0.001)
    frame["seq_len"] = 128
    result = fit_runs(from_short_frame(frame, source="s"), laws=("lr",), n_boot=50)
    law = result.laws["lr"]
    assert law.axes == ("D", "B")
    with plt.rc_context(plot_style.STYLE):
        fig = law_plots.law_figure(plt, law, "lr", law_plots.constants_of(result, {}))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(text.startswith("Shen et al. 2024") for text in labels)
    plt.close(fig)
    # η = 4.6 · (B / seq_len) · D^−0.51, B in tokens
    shen = law_plots.PUBLISHED[0].value({"B": 128 * 16, "seq_len": 128, "D": 1e9})
    assert shen == pytest.approx(4.6 * 16 * 1e9 ** -0.51)


def test_the_loss_axis_holds_the_stars_of_the_fitted_optima():
    """A parabola's vertex below every run was drawn off the bottom of loss_vs_lr.png."""
    grid = np.log10([1e-3, 3e-3, 1e-2, 3e-2])
    frame = pd.DataFrame([{"run": f"r{i}", "B": 1e4, "N": 1e6, "D": 1e8, "wd": 0.0,
                           "lr": 10 ** x, "loss": 3.0 + 2.0 * (x + 2.25) ** 2,
                           "status": "finished"} for i, x in enumerate(grid)])
    result = fit_runs(from_short_frame(frame, source="s"), n_boot=20)
    rows = result.optima
    assert float(rows["loss_opt"].min()) < frame["loss"].min()  # the vertex is below the runs
    fig, ax = plt.subplots()
    plots._shared_ylim([ax], result, rows)
    assert ax.get_ylim()[0] <= float(rows["loss_opt"].min())
    plt.close(fig)



def test_a_slice_left_out_for_a_conflict_is_drawn_as_left_out():
    """A divergence between finished LRs that beat the LR below it leaves the slice out of
    the laws; its figure drew that optimum as a fitted star all the same."""
    frame = pd.DataFrame({"N": 1e6, "D": 1e9, "B": 65536, "lr": [5e-3, 1e-2, 2e-2, 4e-2, 8e-2],
                          "loss": [3.2, 3.1, np.nan, 3.05, 3.3],
                          "status": ["finished", "finished", "diverged", "finished", "finished"]})
    result = fit_runs(from_short_frame(frame.assign(run=[f"r{i}" for i in range(5)]),
                                       source="c"), n_boot=0)
    assert result.optima["conflict"].tolist() == [True]
    labels = _loss_vs_lr_labels(result)
    assert "contradicted: left out of the laws" in labels
    assert "fitted optimum (90% interval)" not in labels


def test_lr_opt_vs_width_draws_the_points_the_lr_law_takes():
    """The figure drew each width's best *bracketed* slice's LR, while the lr law takes the
    LR read at the best weight decay between those tried (an LR up to a third off)."""
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    frame = synthetic_runs(truth, n_values=[1e6, 4e6, 1.6e7], d_values=[1e8], b_values=[3e4],
                           wd_values=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0], noise=0.001,
                           lr_steps=np.arange(-1.5, 1.51, 0.25))
    result = fit_runs(from_short_frame(frame, source="s"), laws=("lr",), n_boot=20)
    points = result.laws["lr"].points.sort_values("N")
    assert (points["at_timescale"] == "interpolated").all()
    drawn = plots._best_per_n(result.optima)
    assert drawn["N"].tolist() == points["N"].tolist()
    assert drawn["lr_opt"].to_numpy() == pytest.approx(points["lr_opt"].to_numpy(), rel=1e-12)
    best_slice = result.optima.loc[result.optima.groupby("N")["loss_opt"].idxmin()]
    assert not np.allclose(best_slice.sort_values("N")["lr_opt"], points["lr_opt"], rtol=1e-3)


def test_a_timescale_sweep_draws_a_panel_per_width_and_its_timescales_as_curves():
    """Its widths were the curves and its τ were not told apart: 15 curves in one figure, one
    legend entry per width, and MAX_CURVES = 8 dropped the rest."""
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    frame = synthetic_runs(truth, n_values=[1e6, 4e6, 1.6e7], d_values=[1e8, 4e8],
                           b_values=[3e4], tau_values=[0.1, 0.3, 1, 3, 10], noise=0.001)
    frame["model.width"] = frame["N"].map({1e6: 32, 4e6: 64, 1.6e7: 128})
    one = frame[frame["optim.timescale"] == 0.1]
    control = one.assign(**{"optim.timescale": np.nan, "wd": 0.1, "run": one["run"] + "c"})
    result = fit_runs(from_short_frame(pd.concat([frame, control], ignore_index=True),
                                       source="s"), n_boot=10)
    with plt.rc_context(plot_style.STYLE):
        named = plots._loss_vs_lr_figures(plt, result)
    assert [holds for holds, _ in named] == ["D=1e+08", "D=4e+08"]
    figures = [fig for _, fig in named]
    assert [f._suptitle.get_text() for f in figures] == [
        "Final loss vs learning rate (D=1e+08)", "Final loss vs learning rate (D=4e+08)"]
    for fig in figures:
        panels = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_title() for ax in panels] == [
            "width 32 (N = 1e+06)", "width 64 (N = 4e+06)", "width 128 (N = 1.6e+07)"]
        assert all(len(ax.get_lines()) >= 6 for ax in panels)  # every τ and the control
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels[:6] == ["τ = 0.1", "τ = 0.3", "τ = 1", "τ = 3", "τ = 10",
                              "λ = 0.1 (no τ)"]
        plt.close(fig)


def test_an_optimum_without_an_interval_is_drawn_hollow_and_said_so():
    """Optima with no interval (one seed, too few LRs) were drawn as filled stars beside a
    legend of "fitted optimum (90% interval)": they read as precise."""
    frame = synthetic_runs(Truth(lr=(0.5, -0.3, 0.0, 0.0)), n_values=[1e6, 4e6],
                           d_values=[1e9], b_values=[1e5], noise=0.001,
                           lr_steps=np.array([-0.5, 0.0, 0.5]))  # (3 LRs: no noise measured)
    result = fit_runs(from_short_frame(frame, source="s"), n_boot=50)
    assert result.optima["lr_lo"].isna().all()
    labels = _loss_vs_lr_labels(result)
    assert "fitted optimum, no interval (the loss noise was not measured)" in labels
    assert "fitted optimum (90% interval)" not in labels


def test_the_loss_law_figure_s_band_is_the_interval_the_fit_gives():
    """The band was drawn from the plain bootstrap, narrower than the widened interval that
    fit.json, the terminal and recommend give."""
    from fitter.law_plots import loss_figure
    from fitter.loss_law import fit_loss_law

    rng = np.random.default_rng(3)
    n, d = np.meshgrid([1e6, 3e6, 1e7, 3e7], [1e8, 3e8, 1e9, 3e9])
    loss = 1.8 + 480 / n ** 0.35 + 2000 / d ** 0.37 + rng.normal(0, 0.004, n.shape)
    law = fit_loss_law(pd.DataFrame({"N": n.ravel(), "D": d.ravel(), "loss": loss.ravel()}),
                       n_boot=100)
    with plt.rc_context(plot_style.STYLE):
        fig = loss_figure(plt, law, "loss")
    band = fig.axes[0].collections[1]  # (after the points: the first width's band)
    edge = band.get_paths()[0].vertices
    first = edge[1]  # (the band's lower edge at the grid's first D)
    lo, _ = law.interval(1e6, first[0])
    assert first[1] == pytest.approx(lo, rel=1e-6)
    plt.close(fig)


def test_a_slice_of_seeds_at_other_lrs_is_drawn_as_fitted_each_run_less_its_seed_offset():
    """Two seeds' studies, each at its own LRs, one curve 0.17 nats below the other: the
    parabola goes through the mean seed's losses, and the points drawn beside it were the
    runs as measured, a zigzag a seed's offset off it."""
    rng = np.random.default_rng(0)
    rows = [{"N": 1e6, "D": 32768.0, "B": 4096.0, "lr": 0.01 * 10 ** step, "seed": str(seed),
             "loss": 2.9 + 0.3 * step ** 2 - 0.17 * seed + rng.normal(0, 0.002),
             "status": "finished"}
            for seed, steps in ((0, (-0.6, -0.4, -0.2, 0.0, 0.2, 0.4)),
                                (1, (-0.3, 0.1, 0.3, 0.5, 0.7))) for step in steps]
    result = fit_runs(from_short_frame(pd.DataFrame(rows), source="s"), n_boot=50)
    with plt.rc_context(plot_style.STYLE):
        ((_, fig),) = plots._loss_vs_lr_figures(plt, result)
    points = next(line for line in fig.axes[0].get_lines() if line.get_marker() == "o")
    lrs, losses = points.get_data()
    mean_curve = 2.9 + 0.3 * np.log10(np.asarray(lrs) / 0.01) ** 2 - 0.17 / 2
    assert np.abs(np.asarray(losses) - mean_curve).max() < 0.01
    legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
    assert "runs less their seed's offset (not every seed at every LR)" in [
        t.get_text() for t in legend.get_texts()]
    plt.close(fig)
    # a grid's seeds share their LRs: drawn as measured, and not said
    shared = [{**rows[0], "seed": str(seed), "lr": 0.01 * 10 ** step,
               "loss": 2.9 + 0.3 * step ** 2 - 0.17 * seed + rng.normal(0, 0.002)}
              for seed in (0, 1) for step in (-0.6, -0.4, -0.2, 0.0, 0.2, 0.4)]
    assert not any("seed's offset" in t for t in _loss_vs_lr_labels(
        fit_runs(from_short_frame(pd.DataFrame(shared), source="s"), n_boot=50)))
    # one whose run at an LR failed: that LR's point is the mean seed's, and said so
    assert any("seed's offset" in t for t in _loss_vs_lr_labels(
        fit_runs(from_short_frame(pd.DataFrame(shared[:-1]), source="s"), n_boot=50)))


def test_a_sweep_of_one_lr_with_no_optimum_draws_no_empty_width_figure_and_ticks_its_lr(
        tmp_path, recwarn):
    """Every slice at one LR, each with a run that diverged there: `lr_opt_vs_width.png` was
    an empty plot with an empty legend (and matplotlib's "No artists" warning), and the loss
    figure's LR axis had no tick to read the LR by (no power of two inside it)."""
    rows = [{"N": n, "D": 1e8, "B": 65536, "lr": 0.01, "seed": seed,
             "loss": np.nan if seed else 9.0 - k, "status": "diverged" if seed else "finished"}
            for k, n in enumerate((1e5, 2e5, 4e5)) for seed in (0, 1)]
    frame = pd.DataFrame(rows).assign(run=lambda f: [f"r{i}" for i in range(len(f))])
    result = fit_runs(from_short_frame(frame, source="one lr"), n_boot=0)
    doc = write_fit(result, tmp_path, sweep="one lr")
    assert doc["plots"] == ["plots/loss_vs_lr.png"]
    assert not [w for w in recwarn if "No artists" in str(w.message)]
    with plt.rc_context(plot_style.STYLE):
        ((_, fig),) = plots._loss_vs_lr_figures(plt, result)
    ax = fig.axes[0]
    fig.canvas.draw()
    shown = [(t.get_position()[0], t.get_text()) for t in ax.get_xticklabels()
             if ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    plt.close(fig)
    assert shown == [(0.01, "0.01")]
