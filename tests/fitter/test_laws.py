"""Hyperparameter laws recovered from synthetic sweeps drawn from known laws with noise."""

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitter.data import Runs, from_short_frame
from fitter.errors import FitError
from fitter.fit import fit_json, fit_runs, format_fit
from fitter.laws import timescale_law, timescale_points
from fitter.powerlaw import with_interval
from fitter.synthetic import Truth, synthetic_histories, synthetic_runs

N3, D3 = [1e6, 4e6, 1.6e7], [1e8, 4e8, 1.6e9]
ROOT = Path(__file__).parents[2]


def fit(frame, law, **kw):
    return fit_runs(from_short_frame(frame, source="synthetic"), laws=(law,), **kw).laws[law]


def test_lr_law_recovers_exponents_over_n_d_b():
    truth = Truth(lr=(0.5, -0.3, -0.1, 0.4))
    frame = synthetic_runs(truth, n_values=N3, d_values=D3, b_values=[1e4, 4e4, 1.6e5],
                           noise=0.002, seed=3)
    law = fit(frame, "lr", n_boot=200)
    assert law.axes == ("N", "D", "B")
    for name, true in zip(("N", "D", "B"), truth.lr[1:], strict=True):
        assert law.coef[f"a_{name}"] == pytest.approx(true, abs=0.04)
        lo, hi = law.ci[f"a_{name}"]
        assert lo < law.coef[f"a_{name}"] < hi
    assert law.predict(N=1e8, D=1e10, B=1e6) == pytest.approx(truth.lr_opt(1e8, 1e10, 1e6),
                                                              rel=0.35)


def test_lr_law_uses_only_the_axes_that_vary():
    frame = synthetic_runs(Truth(), n_values=N3 + [6.4e7], d_values=[1e9], b_values=[1e5])
    law = fit(frame, "lr", n_boot=50)
    assert law.axes == ("N",)
    assert law.coef["a_N"] == pytest.approx(-0.3, abs=0.04)


def test_lr_law_interval_covers_the_truth_at_about_its_level():
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0))
    hits, trials = 0, 40
    for seed in range(trials):
        frame = synthetic_runs(truth, n_values=np.geomspace(1e6, 1e8, 8), d_values=[1e9],
                               b_values=[1e5], noise=0.004, seed=seed)
        lo, hi = fit(frame, "lr", n_boot=200, seed=seed).ci["a_N"]
        hits += lo <= -0.3 <= hi
    # nominal 90%; a percentile bootstrap over 8 points under-covers a little. 40 trials give a
    # binomial sd of ~5%, so [0.7, 1.0] fails for intervals that are clearly too narrow.
    assert 0.7 <= hits / trials <= 1.0


def test_diverged_runs_are_beyond_the_edge_and_do_not_bias_the_law():
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0))
    kw = {"n_values": np.geomspace(1e6, 1e8, 5), "d_values": [1e9], "b_values": [1e5],
          "noise": 0.001, "seed": 7}
    clean = fit(synthetic_runs(truth, **kw), "lr", n_boot=50)
    frame = synthetic_runs(truth, diverge_above=2.5, **kw)
    assert (frame["status"] == "diverged").sum() > 0
    result = fit_runs(from_short_frame(frame, source="synthetic"), laws=("lr",), n_boot=50)
    assert result.laws["lr"].coef["a_N"] == pytest.approx(clean.coef["a_N"], abs=0.02)
    assert result.optima["n_diverged"].sum() == (frame["status"] == "diverged").sum()


def test_optima_at_the_stability_limit_are_marked_in_the_law_and_its_figure(tmp_path):
    # A slice whose next LR up diverged gives a lower bound of its optimum; such points went
    # into the law, fit.json and the figure like bracketed ones.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fitter.law_plots import law_figure

    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0))
    kw = {"n_values": np.geomspace(1e6, 1e8, 5), "d_values": [1e9], "b_values": [1e5],
          "noise": 0.001, "seed": 7}
    result = fit_runs(from_short_frame(synthetic_runs(truth, diverge_above=1.3, **kw),
                                       source="s"), laws=("lr",), n_boot=50)
    law = result.laws["lr"]
    capped = (result.optima["edge"] == "diverged").tolist()
    assert law.points["at_stability_limit"].tolist() == capped == [False, True, True, True,
                                                                   False]
    assert [p["at_stability_limit"] for p in law.to_json()["points"]] == capped
    fig = law_figure(plt, law, "lr", {})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "at the stability limit (next LR diverged): a lower bound" in labels
    plt.close(fig)
    # 3 of 5: most of the law follows divergence, said under it and its recommendation (a
    # law of 16 such points and its LR were printed as any other)
    from fitter.recommend import format_recommendation, recommend

    said = ("3 of its 5 points are at the stability limit (the next LR diverged): there the "
            "loss still fell at the largest stable LR, so the law follows where runs diverge, "
            "a lower bound of the optimum, not where the loss is lowest; a big run at this LR "
            "has no margin below divergence")
    assert law.extra["at_stability_limit"] == 3
    assert "             " + said in format_fit(fit_json(result, sweep="s"), recorded=False)
    rec = recommend(result, params=1e9, tokens=1e9)
    assert said in rec["lr"]["warnings"] and said in format_recommendation(rec)
    one = fit_runs(from_short_frame(synthetic_runs(truth, diverge_above=2.0, **kw),
                                    source="s"), laws=("lr",), n_boot=50).laws["lr"]
    assert one.points["at_stability_limit"].sum() <= 2 and "at_stability_limit" not in one.extra


def test_timescale_and_batch_laws_recover_power_lines_exponents():
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_batch=0.03, k_tau=0.04, timescale=(0.5, -0.3),
                  batch=(0.6, 0.55))
    frame = synthetic_runs(truth, n_values=N3, d_values=D3,
                           b_values=[3e4 * 2.0 ** k for k in range(-3, 4)],
                           wd_values=[0.01, 0.03, 0.1, 0.3, 1.0], noise=0.001,
                           lr_steps=np.arange(-1.5, 1.51, 0.25))
    result = fit_runs(from_short_frame(frame, source="synthetic"), laws=("timescale", "batch"),
                      n_boot=100)
    tau, batch = result.laws["timescale"], result.laws["batch"]
    assert tau.coef["m"] == pytest.approx(-0.3, abs=0.03)
    assert tau.coef["c"] == pytest.approx(0.5, rel=0.15)
    assert batch.coef["p"] == pytest.approx(0.55, abs=0.03)


def test_runs_whose_batch_grows_make_no_batch_law():
    """Norm-test runs record the batch they start at as B: a batch law over them named a best
    starting batch as the batch for a big run. Their group has no batch law, and says why;
    the fixed-batch group beside them has its own."""
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_batch=0.03, batch=(0.6, 0.55))
    frame = synthetic_runs(truth, n_values=N3, d_values=D3,
                           b_values=[3e4 * 2.0 ** k for k in range(-3, 4)], noise=0.001,
                           lr_steps=np.arange(-1.5, 1.51, 0.25))
    grown = from_short_frame(frame.assign(**{"train.batch_schedule": "norm_test"}),
                             source="runs.csv")
    with pytest.raises(FitError) as err:
        fit_runs(grown, laws=("batch",), n_boot=20)
    assert str(err.value) == (
        f"the batch law needs runs of a fixed batch, and {len(frame)} of {len(frame)} runs in "
        "runs.csv grow theirs (train.batch_schedule=norm_test: their B is the batch they "
        "started at); sweep train.batch_size with train.batch_schedule=constant for it.")
    assert "lr" in fit_runs(grown, laws=("lr",), n_boot=20).laws  # (B: where each started)
    both = pd.concat([frame.assign(**{"train.batch_schedule": "constant"}),
                      frame.assign(**{"train.batch_schedule": "norm_test",
                                      "run": frame["run"] + "n"})], ignore_index=True)
    result = fit_runs(from_short_frame(both, source="runs.csv"), laws=None, n_boot=20)
    assert [k for k in result.laws if k.startswith("batch")] == [
        "batch[train.batch_schedule=constant]"]
    assert result.laws["batch[train.batch_schedule=constant]"].coef["p"] == pytest.approx(
        0.55, abs=0.03)
    assert "grow theirs" in result.skipped["batch[train.batch_schedule=norm_test]"]


def test_timescale_law_from_a_sweep_of_optim_timescale():
    # A sweep of optim.timescale derives λ = B/(η·τ·D) per run, so λ differs between the LRs of
    # one slice. Keying slices by λ made every run its own slice: no LR optimum, no law.
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    frame = synthetic_runs(truth, n_values=N3, d_values=D3, b_values=[3e4],
                           tau_values=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2], noise=0.001,
                           lr_steps=np.arange(-1.0, 1.01, 0.25))
    runs = from_short_frame(frame, source="synthetic")
    assert "wd" not in runs.slice_keys and "optim.timescale" in runs.slice_keys
    result = fit_runs(runs, laws=("timescale",), n_boot=100)
    assert result.optima["edge"].isna().all()
    tau = result.laws["timescale"]
    assert tau.coef["m"] == pytest.approx(-0.3, abs=0.05)
    assert tau.coef["c"] == pytest.approx(0.5, rel=0.2)


def test_timescale_and_batch_laws_short_of_points_by_edges_say_which_values_to_add():
    # Every best τ was the highest tried: "needs (N, D) settings with an LR optimum and weight
    # decay > 0", which the sweep had, and no word of the edge or what to add.
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    frame = synthetic_runs(truth, n_values=N3[:2], d_values=D3[:2], b_values=[3e4],
                           tau_values=[0.001, 0.002, 0.004], noise=0.001,
                           lr_steps=np.arange(-1.0, 1.01, 0.25))
    with pytest.raises(FitError) as err:
        fit_runs(from_short_frame(frame, source="s"), laws=("timescale",), n_boot=0)
    assert str(err.value) == (
        "the timescale law has 0 usable points: at 4 of its 4 settings the best τ is the "
        "highest one tried, so the optimum may lie beyond it; add optim.timescale=choice(0.008) "
        "to the sweep (`sweep extend` takes it).")
    # A sweep of λ: a high τ is a low λ
    by_wd = synthetic_runs(truth, n_values=N3[:2], d_values=D3[:2], b_values=[3e4],
                           wd_values=[1.0, 2.0, 4.0], noise=0.001,
                           lr_steps=np.arange(-1.0, 1.01, 0.25))
    with pytest.raises(FitError, match=r"the best τ is the highest one tried, so the optimum "
                                       r"may lie beyond it; add optim.weight_decay=choice\(0.5\)"):
        fit_runs(from_short_frame(by_wd, source="s"), laws=("timescale",), n_boot=0)
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_batch=0.03, batch=(0.6, 0.55))
    frame = synthetic_runs(truth, n_values=N3[:1], d_values=D3, b_values=[1e6, 2e6, 4e6],
                           noise=0.001, lr_steps=np.arange(-1.0, 1.01, 0.25))
    frame["train.batch_size"] = (frame["B"] / 1000).astype(int).astype(str)
    with pytest.raises(FitError) as err:
        fit_runs(from_short_frame(frame, source="s"), laws=("batch",), n_boot=0)
    assert str(err.value) == (
        "the batch law has 0 usable points: at 3 of its 3 settings the best batch size is the "
        "lowest one tried, so the optimum may lie beyond it; add train.batch_size=choice(500) "
        "to the sweep (`sweep extend` takes it).")
    # whole sequences (2.5 rounds down past the edge, not to 2 by banker's rounding up), and
    # none below one (a zero batch was suggested)
    for per_sequence, said in ((2e5, "add train.batch_size=choice(2) to the sweep"),
                               (1e6, "the smallest batch, one sequence, was tried: a smaller "
                                     "one takes shorter sequences (train.seq_len).")):
        frame["train.batch_size"] = (frame["B"] / per_sequence).astype(int).astype(str)
        with pytest.raises(FitError) as err:
            fit_runs(from_short_frame(frame, source="s"), laws=("batch",), n_boot=0)
        assert said in str(err.value)


def test_one_weight_decay_per_setting_is_said_before_the_lrs_to_extend():
    """A grid of weight decay (0.0, 0.1) whose LRs missed the optimum was told to extend its
    LRs first; once they were (24 more trials), the law still needed more weight decays."""
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    frame = synthetic_runs(truth, n_values=N3, d_values=D3[:1], b_values=[3e4],
                           wd_values=[0.0, 0.1], noise=0.001, lr_steps=np.array([0.5, 0.75]))
    with pytest.raises(FitError) as err:
        fit_runs(from_short_frame(frame, source="s"), laws=("timescale",), n_boot=0)
    assert str(err.value) == (
        "the timescale law needs the best τ at each setting, from 3 or more values of "
        "optim.weight_decay there, but all 3 of its settings tried only one above 0 (τ = "
        "B/(η·λ·D) then follows from the λ chosen, not from the loss); add values along "
        "optim.weight_decay (e.g. three a factor 3 apart), and extend the LRs of the 3 "
        "settings whose best LR is at the edge of those tried (`next_grid` in fit.json lists "
        "the LRs to add; `sweep fit` without --law writes it).")


def test_edges_on_both_sides_are_said_as_either():
    from fitter.laws import _edges_refusal

    found = pd.DataFrame({"edge": ["low", "high", None]})
    assert _edges_refusal(found, found[found["edge"].notna()], "timescale", "τ", "add X") == (
        "the timescale law has 1 usable point: at 2 of its 3 settings the best τ is the "
        "highest or the lowest one tried, so the optimum may lie beyond it; add X.")


@pytest.mark.parametrize("control_wds", [[0.0], [0.0, 1e-3]])
def test_timescale_sweep_with_weight_decay_controls_keeps_its_slices(control_wds, tmp_path):
    # `optim.timescale: choice(..., null)`: runs given λ beside runs given τ. λ was a slice key
    # as soon as one run lacked τ, and split every τ slice into one-run slices with no optimum.
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    lr_steps = np.arange(-1.0, 1.01, 0.25)
    frame = synthetic_runs(truth, n_values=N3, d_values=D3, b_values=[3e4],
                           tau_values=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2], noise=0.001,
                           lr_steps=lr_steps)
    one_tau = frame[frame["optim.timescale"] == frame["optim.timescale"].iloc[0]]
    controls = [one_tau.assign(**{"optim.timescale": np.nan, "wd": wd,
                                  "run": one_tau["run"] + f"-wd{wd}"}) for wd in control_wds]
    runs = from_short_frame(pd.concat([frame, *controls], ignore_index=True), source="mixed")
    assert ("wd" in runs.slice_keys) == (len(control_wds) > 1)
    result = fit_runs(runs, laws=("timescale",), n_boot=100)
    optima = result.optima
    n_lrs = len(lr_steps)
    assert (optima["n_runs"] == n_lrs).all()  # every slice holds its whole LR grid
    assert len(optima) == len(frame) // n_lrs + len(controls) * len(one_tau) // n_lrs
    given = optima[optima["tau"].isna()]
    assert sorted(given["wd"].unique()) == sorted(control_wds)
    tau = result.laws["timescale"]
    assert tau.coef["m"] == pytest.approx(-0.3, abs=0.05)
    assert tau.coef["c"] == pytest.approx(0.5, rel=0.2)
    # a figure per D, as without controls (split by each τ run's λ, 69 were asked for)
    from fitter.plots import save_plots

    figures = [p.name for p in save_plots(result, tmp_path)]
    assert sum(name.startswith("loss_vs_lr") for name in figures) == len(D3)


@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_cbs_law_recovers_critical_batch_from_steps_to_target(noise):
    frame, histories = synthetic_histories(d_values=[1e8, 4e8, 1.6e9, 6.4e9],
                                           b_values=[1e3 * 2 ** k for k in range(10)],
                                           noise_batch=(0.5, 0.5), noise=noise, seed=2)
    runs = from_short_frame(frame, source="synthetic")
    runs = Runs(runs.table, runs.slice_keys, runs.source, histories)
    law = fit_runs(runs, laws=("cbs",), n_boot=100).laws["cbs"]
    # B_noise = 0.5·D^0.5, so B_crit (20% over linear scaling) = 0.1·D^0.5
    assert law.coef["p"] == pytest.approx(0.5, abs=0.05)
    # c and p trade off; the law's value mid-range is what the data pin down
    assert law.predict(D=8e8) == pytest.approx(0.1 * 8e8 ** 0.5, rel=0.25 if noise else 0.03)


def _cbs_fit(d_values, b_values, noise_batch=(0.5, 0.5)):
    frame, histories = synthetic_histories(d_values=d_values, b_values=b_values,
                                           noise_batch=noise_batch, seed=2)
    runs = from_short_frame(frame, source="synthetic")
    return fit_runs(Runs(runs.table, runs.slice_keys, runs.source, histories),
                    laws=("cbs",), n_boot=0)


def test_a_batch_recommended_from_critical_batch_sizes_below_the_sweep_says_so():
    # B_crit = 0.1·D^0.5 is 5,000 to 9,500 tokens, the batch sizes swept start at 10,000: the
    # law's points come from the hyperbola's near end, and recommend took it as the batch size
    # without a word.
    from fitter.recommend import format_recommendation, recommend

    result = _cbs_fit([2.5e9, 4e9, 6.4e9, 9e9], [1e4 * 2 ** k for k in range(8)])
    points = result.laws["cbs"].points
    assert (points["B_crit"] < points["B_lo"]).all() and (points["B_lo"] == 1e4).all()
    rec = recommend(result, params=1e8, tokens=1e10)
    assert rec["batch_tokens"]["law"] == "cbs"
    caveat = ("of the 4 critical batch sizes behind the cbs law, 4 lie below the smallest "
              "batch size their sweep tried: read off the fitted hyperbola, not measured; "
              "sweep batch sizes around them, or pass --batch")
    assert rec["batch_tokens"]["caveat"] == caveat
    assert caveat in format_recommendation(rec)
    result = _cbs_fit([1e8, 4e8, 1.6e9, 6.4e9], [1e2 * 2 ** k for k in range(10)])
    assert "caveat" not in recommend(result, params=1e8, tokens=1e9)["batch_tokens"]


def test_critical_batch_sizes_far_below_the_batches_tried_make_no_law():
    """A researcher's sweep of 1,024-4,096 tokens a step put B_crit at 3.8 and 130 tokens
    (every batch tried past critical: the hyperbola's small curvature decides E_min): the law
    had p = 3.9 and recommend a batch of 10^11 tokens for a run of 10^8. Points more than
    `REACH` outside the batch sizes tried are left out, and said."""
    from fitter.cbs import REACH

    # B_crit = 1,000 / 2,000 / 4,000 / 8,000 against batches from 10,000: one within 2x
    with pytest.raises(FitError) as err:
        _cbs_fit([1e8, 4e8, 1.6e9, 6.4e9], [1e4 * 2 ** k for k in range(8)])
    assert REACH == 2.0 and re.fullmatch(
        r"the cbs law has 1 usable point: 3 critical batch sizes \(9\d\d, 2\.\d+e\+03, "
        r"4\.\d+e\+03 tokens a step, at D = 1e\+08, 4e\+08, 1\.6e\+09\) lie more than 2x "
        r"outside the batch sizes tried \(10,000-1,280,000\), read off the hyperbola far "
        r"beyond them, and are left out; sweep smaller values of train.batch_size to measure "
        r"them, or pass --batch to `sweep recommend`\.", str(err.value)), str(err.value)
    # three within reach and one far: the law takes the three, and the summary says so
    result = _cbs_fit([1e8, 2.5e9, 6.4e9, 2.56e10], [1e4 * 2 ** k for k in range(8)])
    law = result.laws["cbs"]
    assert sorted(law.points["D"]) == [2.5e9, 6.4e9, 2.56e10]
    assert re.match(r"1 critical batch size \(9\d\d tokens a step, at D = 1e\+08\) lies ",
                    law.extra["out_of_reach"]), law.extra["out_of_reach"]
    from fitter.fit import fit_json, format_fit

    said = format_fit(fit_json(result, sweep="s"))
    assert f"{law.extra['out_of_reach']}: to use such points, sweep batch sizes around them" \
        in said
    assert ("2 of its points lie outside the batch sizes their sweep tried (within 2x): read "
            "off the fitted hyperbola, not measured") in said


def test_a_batch_law_that_gives_more_than_the_run_is_not_taken():
    # (a law fitted where it holds, asked far out: B_crit = 0.2e-6·D^1.5 passes D at 2.5e13;
    # fitted, p = 1.41, at 1e15)
    from fitter.recommend import recommend

    result = _cbs_fit([1e8, 2e8, 4e8, 8e8], [1e5 * 2 ** k for k in range(7)],
                      noise_batch=(1e-6, 1.5))
    assert recommend(result, params=1e8, tokens=1e12)["batch_tokens"]["law"] == "cbs"
    # (its reasons joined as "...; ...", each without its own full stop: it read ".;")
    with pytest.raises(FitError, match=r"^no law in synthetic gives a learning rate, batch "
                                       r"size or loss: lr: no lr law; batch_tokens: the cbs "
                                       r"law gives \d\.\d+e\+16 tokens a step, more than the "
                                       r"run's 1e\+16 tokens: it does not hold out here; pass "
                                       r"--batch \(tokens per step\)\.$"):
        recommend(result, params=1e8, tokens=1e16)


def test_a_timescale_sweep_with_weight_decay_controls_keeps_its_cbs_groups():
    # A run given τ derives λ from B and its LR: grouped by λ, every τ run of the cbs law
    # stood alone (8 points of 16), and only the controls' histories were fetched.
    from fitter.mlflow_io import _cbs_candidates

    frame, histories = synthetic_histories(d_values=[1e8, 4e8, 1.6e9, 6.4e9],
                                           b_values=[1e2 * 2 ** k for k in range(10)],
                                           noise_batch=(0.5, 0.5), seed=2)
    parts, by_run = [], {}
    for tau in (0.5, 1.0):
        part = frame.assign(**{"optim.timescale": tau}, run=frame["run"] + f"-t{tau}")
        parts.append(part.assign(wd=part["B"] / (part["lr"] * tau * part["D"])))
    parts += [frame.assign(**{"optim.timescale": np.nan}, wd=wd, run=frame["run"] + f"-w{wd}")
              for wd in (0.0, 1e-3)]
    for part in parts:
        by_run.update({run: histories[run.split("-")[0]] for run in part["run"]})
    runs = from_short_frame(pd.concat(parts, ignore_index=True), source="m")
    assert "wd" in runs.slice_keys
    assert len(_cbs_candidates(runs)) == sum(map(len, parts))
    result = fit_runs(Runs(runs.table, runs.slice_keys, runs.source, by_run), laws=("cbs",),
                      n_boot=0)
    assert len(result.laws["cbs"].points) == 4 * 4  # a point per D and per τ or λ


def test_cbs_law_of_a_sweep_of_train_batch_size():
    # A sweep's config keys come with the runs: train.batch_size varies with B and is a slice
    # key too. Grouping steps-to-target by it left one batch size per group ("needs 3 or more
    # batch sizes") on a sweep that had ten.
    frame, histories = synthetic_histories(d_values=[1e8, 4e8, 1.6e9],
                                           b_values=[1e3 * 2 ** k for k in range(6)],
                                           noise_batch=(0.5, 0.5), seed=2)
    frame["train.batch_size"] = (frame["B"] / 128).astype(int).astype(str)
    frame["train.tokens"] = frame["D"].astype(int).astype(str)
    runs = from_short_frame(frame, source="synthetic")
    assert "train.batch_size" in runs.slice_keys
    runs = Runs(runs.table, runs.slice_keys, runs.source, histories)
    law = fit_runs(runs, laws=("cbs",), n_boot=50).laws["cbs"]
    assert law.coef["p"] == pytest.approx(0.5, abs=0.05)


def test_a_best_timescale_at_the_largest_tried_is_an_edge_not_an_optimum():
    # With the small τ's slices on the LR grid's edge, one usable τ was left per setting, and
    # that τ, the largest tried, became τ_opt: a law fitted to grid values (m = 0, c = τ_max).
    rows = []
    for d in (2.6e5, 1e6, 4e6):
        for tau, lr_edge, loss in ((0.1, "high", 2.0), (0.3, "high", 1.9), (0.9, None, 1.8)):
            rows.append({"N": 1e5, "D": d, "B": 2048.0, "wd": 1.0, "tau": tau, "lr_opt": 0.01,
                         "loss_opt": loss, "edge": lr_edge})
    points = timescale_points(pd.DataFrame(rows))
    assert (points["edge"] == "high").all() and (points["tau_opt"] == 0.9).all()
    with pytest.raises(FitError, match="0 usable points: at 3 of its 3 settings the best τ "
                                       "is the highest one tried"):
        timescale_law(pd.DataFrame(rows))


def test_a_law_of_too_few_points_has_no_interval_anywhere():
    """3 points for c and one exponent: the terminal says "too few points for an interval",
    and fit.json's `ci` and `recommend`'s interval say the same (none), not a band pinned at
    the data's centre; a fourth point gives all three."""
    from fitter.powerlaw import fit_power_law
    from fitter.recommend import _entry

    def law(n):
        d = np.array([1e8, 2e8, 4e8, 8e8][:n])
        lr = 0.01 * (d / 1e8) ** -0.2 * np.array([1.0, 1.03, 0.98, 1.01][:n])
        return fit_power_law(pd.DataFrame({"D": d, "lr_opt": lr}), name="lr", axes=("D",),
                             exponents=("a_D",), target="lr_opt", n_boot=50)

    three, four = law(3), law(4)
    assert three.to_json()["ci"] is None and _entry(three, {"D": 1e10}, "lr")["interval"] is None
    assert set(four.to_json()["ci"]) == {"c", "a_D"}
    lo, hi = _entry(four, {"D": 1e10}, "lr")["interval"]
    assert lo < four.predict(D=1e10) < hi


def test_a_recommendation_from_a_law_without_an_interval_says_why_it_has_none():
    # A researcher's 3-width muP sweep: `recommend` gave "lr 0.004264  law: lr  extrapolates
    # N 8.7e+03x beyond the data", one number with no band and no word of why there was none.
    from fitter.recommend import format_recommendation, recommend

    frame = synthetic_runs(Truth(), n_values=N3, d_values=[1e9], b_values=[1e5], seed=2)
    result = fit_runs(from_short_frame(frame, source="synthetic"), laws=("lr",), n_boot=0)
    rec = recommend(result, params=1e9, tokens=1e9)
    assert rec["lr"]["interval"] is None
    assert "(no interval: --n-boot 0)" in format_recommendation(rec).splitlines()[0]
    # 3 points whose optima have no interval of their own (the points of a hand-written CSV)
    from fitter.powerlaw import fit_power_law
    from fitter.recommend import _entry

    points = pd.DataFrame({"N": N3, "lr_opt": [0.01, 0.008, 0.0065]})
    bare = fit_power_law(points, name="lr", axes=("N",), exponents=("a_N",), target="lr_opt",
                         n_boot=50)
    assert _entry(bare, {"N": 1e9}, "lr")["no_interval"] == (
        "the lr law has 3 points and an interval needs 4, or an interval on each of its optima")
    four = synthetic_runs(Truth(), n_values=N3 + [6.4e7], d_values=[1e9], b_values=[1e5])
    rec = recommend(fit_runs(from_short_frame(four, source="synthetic"), laws=("lr",),
                             n_boot=50), params=1e9, tokens=1e9)
    assert rec["lr"]["interval"] and "no_interval" not in rec["lr"]
    assert "no interval" not in format_recommendation(rec)


def test_laws_skipped_while_trials_are_not_done_say_those_may_hold_what_they_ask_for():
    # A researcher's 3-width sweep, interrupted with one width done: the lr law was skipped
    # with "the sweep has one; add values along model.width", while its other widths were
    # the trials `sweep resume` would finish.
    from fitter.fit import fit_json, format_fit

    frame = synthetic_runs(Truth(), n_values=N3[:1], d_values=[1e9], b_values=[1e5], seed=2)
    doc = fit_json(fit_runs(from_short_frame(frame, source="sweep s"), n_boot=20), sweep="s")
    assert "add values along model.width" in doc["skipped"]["lr"]
    wait = ("these skipped laws count only the ended trials; 20 of the sweep's trials are not "
            "done yet and may hold the values asked for: let them finish (`sweep resume s` if "
            "its driver stopped) and fit again before adding any")
    assert wait in format_fit(doc, not_done=20)
    assert "not done" not in format_fit(doc)


def test_an_lr_law_with_one_bracketed_value_of_a_swept_axis_says_the_others_are_at_an_edge():
    # Five token budgets, four with their best LR at the edge: the fitter said "the sweep has
    # one" value of D and asked for more budgets (a stranger's token_budgets fit).
    from fitter.laws import lr_law

    optima = pd.DataFrame({"N": [1e6] * 3, "D": [1e9, 2e9, 4e9], "B": [1e5] * 3,
                           "lr_opt": [1e-3, 2e-3, 3e-3], "lr_lo": [np.nan] * 3,
                           "lr_hi": [np.nan] * 3, "loss_opt": [3.0, 2.9, 2.8],
                           "edge": [None, "high", "low"]})
    with pytest.raises(FitError) as err:
        lr_law(optima)
    assert str(err.value) == (
        "the lr law needs bracketed LR optima at 2 or more values of N, D or B (and 3 points "
        "for a law along one of them), but only one value of D (train.tokens) has one: the "
        "other slices' best LR is at the edge of the LRs tried; extend them (`next_grid` in "
        "fit.json lists the LRs to add; `sweep fit` without --law writes it).")


def test_a_law_short_of_points_says_every_need_at_once():
    """The fit told one need at a time: 3 values of N, then (once there) 3 of D; 2 values of
    an axis, then (once there) 3 points."""
    from fitter.loss_law import fit_loss_law
    from fitter.powerlaw import fit_power_law

    points = pd.DataFrame({"N": [1e6, 1e6, 4e6], "D": [1e8, 2e8, 1e8],
                           "loss": [3.0, 2.9, 2.8]})
    with pytest.raises(FitError) as err:
        fit_loss_law(points)
    assert str(err.value) == (
        "the loss law needs losses at 3 or more values of N and of D (and 6 (N, D) points) but "
        "has 2 values of N and 2 values of D; add 1 more value along model.width and 1 more "
        "value along "
        "train.tokens.")
    with pytest.raises(FitError) as err:
        fit_power_law(pd.DataFrame({"N": [1e6, 1e6], "lr_opt": [1e-2, 2e-2]}), name="lr",
                      axes=("N",), exponents=("a_N",), target="lr_opt", hint="widths")
    assert str(err.value) == ("the lr law needs optima at 2 or more values of N but has 1 (and "
                              "3 points in all: it has 2); add 1 more point: more widths.")


def test_a_power_law_interval_holds_the_truth_at_its_nominal_level_over_few_points():
    # 5 optima with log-normal scatter about a known law: the 90% intervals of the exponent and
    # of an extrapolation 10x past the data hold the truth in 90% of 600 sweeps (binomial sd
    # 1.2%). A pairs bootstrap held it in ~85% (its resamples repeat points).
    from fitter.powerlaw import fit_power_law

    rng = np.random.default_rng(0)
    n = np.geomspace(1e6, 1e8, 5)
    hits = np.zeros(2)
    for seed in range(600):
        lr = 0.5 * n ** -0.3 * 10 ** rng.normal(0, 0.03, len(n))
        law = fit_power_law(pd.DataFrame({"N": n, "lr_opt": lr}), name="lr", axes=("N",),
                            exponents=("a_N",), target="lr_opt", n_boot=400, seed=seed)
        lo, hi = law.ci["a_N"]
        plo, phi = law.interval(N=1e9)
        hits += [lo <= -0.3 <= hi, plo <= 0.5 * 1e9 ** -0.3 <= phi]
    assert np.all(np.abs(hits / 600 - 0.9) <= 0.035), hits / 600


def test_a_law_whose_axes_move_together_is_refused_not_split_at_random():
    # Token budgets that grow with the width (D = 20 N at every optimum): least squares split
    # one slope between a_N and a_D (-0.11 and -0.19 for a true -0.3 in N) and printed both.
    from fitter.powerlaw import fit_power_law

    n = np.array([1e6, 2e6, 4e6, 8e6])
    points = pd.DataFrame({"N": n, "D": 20 * n, "lr_opt": 0.5 * n ** -0.3})
    with pytest.raises(FitError) as err:
        fit_power_law(points, name="lr", axes=("N", "D"), exponents=("a_N", "a_D"),
                      target="lr_opt")
    assert str(err.value) == (
        "the lr law cannot tell the exponents of N and D apart: at every one of its 4 points D "
        "grows as N^1; add optima off that line (another train.tokens at one model.width).")
    points.loc[0, "D"] = 4e7  # one optimum off the line: the exponents are told apart
    law = fit_power_law(points, name="lr", axes=("N", "D"), exponents=("a_N", "a_D"),
                        target="lr_opt", n_boot=50)
    assert law.coef["a_N"] == pytest.approx(-0.3, abs=1e-9)
    assert law.coef["a_D"] == pytest.approx(0.0, abs=1e-9)


def test_recommended_weight_decay_follows_the_laws_and_says_the_lr_laws_extrapolation():
    # λ = B/(η·τ·D) takes η from the lr law: 10x past the widths swept, the weight decay said
    # "inside the data" (its timescale law's D/N range held the point).
    from fitter.recommend import recommend

    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    frame = synthetic_runs(truth, n_values=N3, d_values=D3, b_values=[3e4],
                           wd_values=[0.01, 0.03, 0.1, 0.3, 1.0], noise=0.001,
                           lr_steps=np.arange(-1.5, 1.51, 0.25))
    result = fit_runs(from_short_frame(frame, source="synthetic"), n_boot=100)
    n, d = 1.6e8, 1.6e8 * 100  # D/N = 100 lies inside the sweep's D/N (6.25 to 1600)
    rec = recommend(result, params=n, tokens=d, batch=3e4)
    wd = rec["weight_decay"]
    assert wd["value"] == pytest.approx(3e4 / (rec["lr"]["value"] * wd["timescale"] * d))
    assert wd["interval"][0] < wd["value"] < wd["interval"][1]
    assert wd["extrapolation"]["D/N"] == 1.0 and wd["extrapolation"]["N"] == pytest.approx(10.0)
    true_tau = 0.5 * 100 ** -0.3
    assert wd["timescale"] == pytest.approx(true_tau, rel=0.15)
    assert wd["value"] == pytest.approx(3e4 / (truth.lr_opt(n, d, 3e4) * true_tau * d), rel=0.3)
    # without --batch and no law for it: said what to pass (it said "needs the lr and timescale
    # laws and a batch size" while both laws were there)
    assert recommend(result, params=n, tokens=d)["unavailable"]["weight_decay"] == (
        "λ = B/(η·τ·D) needs the big run's batch size, which no law gives here: pass --batch "
        "(tokens per step)")


def test_the_lr_law_takes_each_points_lr_at_its_best_weight_decay():
    # The best slice's λ is off the best λ by up to half a grid step, by an amount that drifts
    # with D/N, and its LR makes up for it: the law got a_D = +0.06 [0.04, 0.08] for a true 0
    # and an LR 33% high at (1e9, 2e10). Interpolated to the best λ, the exponent is the true
    # one; a λ grid whose best is at its edge is said.
    from fitter.fit import fit_json, format_fit

    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    kw = {"n_values": N3, "d_values": D3, "b_values": [3e4], "noise": 0.001,
          "lr_steps": np.arange(-1.5, 1.51, 0.25)}
    frame = synthetic_runs(truth, wd_values=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0], **kw)
    law = fit(frame, "lr", n_boot=50)
    assert (law.points["at_timescale"] == "interpolated").all()
    assert law.coef["a_D"] == pytest.approx(0.0, abs=0.015)
    assert law.coef["a_N"] == pytest.approx(-0.3, abs=0.015)
    assert law.predict(N=1e9, D=2e10) == pytest.approx(truth.lr_opt(1e9, 2e10, 3e4), rel=0.1)
    narrow = synthetic_runs(truth, wd_values=[0.03, 0.1, 0.3, 1.0, 3.0], **kw)
    result = fit_runs(from_short_frame(narrow, source="s"), laws=("lr",), n_boot=50)
    assert (result.laws["lr"].points["at_timescale"] == "edge").sum() == 3  # (D = 1.6e9)
    assert ("3 of its points take the LR of a weight decay at the edge of those tried" in
            format_fit(fit_json(result, sweep="s"), recorded=False))


def test_an_lr_law_whose_token_budgets_grow_with_the_width_is_fitted_along_that_line():
    # D = 20·N at every optimum: least squares split one slope between a_N and a_D at random
    # (-0.11 and -0.19 for a true -0.3 and 0); refusing the law took it from a Chinchilla-style
    # sweep, where it holds along the line. `recommend` says when a run is off the line.
    from fitter.fit import fit_json, format_fit
    from fitter.recommend import recommend

    truth = Truth(lr=(0.5, -0.3, -0.1, 0.0))
    frames = [synthetic_runs(truth, n_values=[n], d_values=[20 * n], b_values=[3e4],
                             noise=0.001, seed=i) for i, n in enumerate([1e6, 2e6, 4e6, 8e6])]
    frame = pd.concat(frames, ignore_index=True).assign(
        run=lambda f: [f"r{i}" for i in range(len(f))])
    result = fit_runs(from_short_frame(frame, source="s"), laws=("lr",), n_boot=100)
    law = result.laws["lr"]
    assert law.axes == ("N",)
    assert law.coef["a_N"] == pytest.approx(-0.4, abs=0.03)  # a_N + a_D, along D ∝ N
    assert law.extra["along"]["D"]["of"] == "N"
    assert law.extra["along"]["D"]["factor"] == pytest.approx(20)
    assert ("D grows as 20·N^1 at every point, so the law is along that line" in
            format_fit(fit_json(result, sweep="s"), recorded=False))
    on = recommend(result, params=1e8, tokens=2e9, batch=3e4)["lr"]
    assert on["value"] == pytest.approx(truth.lr_opt(1e8, 2e9, 3e4), rel=0.15)
    assert "caveat" not in on
    off = recommend(result, params=1e8, tokens=2e11, batch=3e4)["lr"]
    assert off["caveat"].startswith("the lr law was fitted where D = 20·N^1 (D = 2e+09 here), "
                                    "and this run has D = 2e+11")


def test_a_setting_whose_lowest_loss_has_its_lr_at_the_edge_gives_no_point_to_either_law():
    # The lowest loss at (N, D, B) was at τ = 1, whose LRs all lay past its optimum; the laws
    # took the best bracketed slices instead (0.1-0.15 nats worse), and the timescale law
    # told a stranger to add lower τ while the loss fell toward higher ones.
    from fitter.slices import best_per_group

    rows = []
    for d, tau_edge in ((1e8, True), (4e8, False), (1.6e9, False), (6.4e9, False)):
        for tau, loss in ((0.1, 3.2), (0.3, 3.1), (1.0, 3.0)):
            edge = "high" if tau_edge and tau == 1.0 else None
            rows.append({"N": 1e6, "D": d, "B": 3e4, "tau": tau, "lr_opt": 1e-2,
                         "wd": 3e4 / (1e-2 * tau * d), "lr_lo": np.nan, "lr_hi": np.nan,
                         "loss_opt": loss - 0.1 * np.log10(d), "edge": edge})
    optima = pd.DataFrame(rows)
    best = best_per_group(optima, ["N", "D", "B"])
    assert sorted(best["D"]) == [4e8, 1.6e9, 6.4e9] and (best["tau"] == 1.0).all()
    found = timescale_points(optima)
    assert found.set_index("D").loc[1e8, "edge"] == "lr"
    from fitter.laws import lr_law

    assert lr_law(optima, n_boot=20).extra["unbracketed"] == 1
    only = optima[optima["D"] <= 4e8]
    with pytest.raises(FitError, match=r"the timescale law has 0 usable points: at 1 of its 2 "
                                       r"settings the τ with the lowest loss has its best LR at "
                                       r"the edge of the LRs tried"):
        timescale_law(only.assign(loss_opt=only["loss_opt"]).query("D == 1e8 or tau != 1.0"))


def test_a_slice_given_tau_reports_the_weight_decay_at_its_optimum():
    # λ = B/(η·τ·D) differs per LR: the slice said its first run's λ, 2-4x off the optimum's.
    from fitter.slices import lr_optima

    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), k_tau=0.04, timescale=(0.5, -0.3))
    frame = synthetic_runs(truth, n_values=[1e6], d_values=[1e8], b_values=[3e4],
                           tau_values=[0.3], noise=0.001)
    runs = from_short_frame(frame, source="s")
    (row,) = lr_optima(runs.table, runs.slice_keys, n_boot=0).to_dict("records")
    assert row["wd"] == pytest.approx(3e4 / (row["lr_opt"] * 0.3 * 1e8))


def test_a_font_cache_without_matplotlibs_own_fonts_prints_no_findfont_lines(tmp_path):
    """A font cache built without matplotlib's STIX and Computer Modern fonts (one a machine's
    other install left): every fit printed ~20 "findfont: ... Falling back" lines."""
    import subprocess
    import sys

    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    stale = ("import matplotlib, matplotlib.font_manager as fm, os\n"
             "fm.fontManager.ttflist = [f for f in fm.fontManager.ttflist\n"
             "    if 'STIX' not in f.name and not f.name.startswith('cm')]\n"
             "fm.json_dump(fm.fontManager, os.path.join(matplotlib.get_cachedir(),\n"
             "    f'fontlist-v{fm.FontManager.__version__}.json'))\n")
    subprocess.run([sys.executable, "-c", stale], env=env, check=True, timeout=120)
    fit = ("import sys; from fitter.synthetic import synthetic_runs, Truth\n"
           "from fitter.data import from_short_frame; from fitter.fit import fit_runs\n"
           "from fitter.plots import save_plots\n"
           "frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e8],\n"
           "                       b_values=[3e4], noise=0.001)\n"
           "save_plots(fit_runs(from_short_frame(frame, source='s'), n_boot=0), sys.argv[1])\n")
    proc = subprocess.run([sys.executable, "-c", fit, str(tmp_path / "plots")], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "plots").glob("*.png"))
    assert "findfont" not in proc.stderr


def test_recommend_without_a_batch_says_which_batch_laws_were_not_fitted():
    # A researcher's sweep of 3 batch sizes read "sweep 3+ batch sizes for the batch law":
    # it had them; its batch and cbs laws were skipped for other reasons, which fit says.
    from fitter.recommend import recommend

    frame = synthetic_runs(Truth(lr=(0.5, -0.3, -0.1, 0.4)), n_values=N3, d_values=D3,
                           b_values=[1e4, 4e4, 1.6e5], noise=0.002, seed=3)
    result = fit_runs(from_short_frame(frame, source="synthetic"), n_boot=0)
    assert "B" in result.laws["lr"].axes and {"batch", "cbs"} <= set(result.skipped)
    with pytest.raises(FitError, match=r"^the lr law depends on B but no batch size is known: "
                                       r"the batch and cbs laws were not fitted \(`sweep fit` "
                                       r"says why\); pass --batch \(tokens per step\)\.$"):
        recommend(result, params=1e8, tokens=1e10)


def test_an_lr_law_from_one_seed_says_its_intervals_can_be_too_narrow():
    # A researcher's one-seed law had a_D in [-0.136, -0.054]; a fourth budget of the same
    # seed moved it to -0.038, and a second seed's put both exponents' intervals across 0.
    from fitter.fit import fit_json, format_fit

    caveat = "its points come from one seed: the intervals take their scatter"
    frame = synthetic_runs(Truth(lr=(0.5, -0.3, -0.1, 0.4)), n_values=N3, d_values=D3,
                           b_values=[1e4], noise=0.002, seed=3)
    result = fit_runs(from_short_frame(frame, source="synthetic"), laws=("lr",), n_boot=50)
    assert caveat in format_fit(fit_json(result, sweep="s"))
    # (a law without intervals has nothing to caveat: the demo's 3 points)
    result = fit_runs(from_short_frame(frame, source="synthetic"), laws=("lr",), n_boot=0)
    assert caveat not in format_fit(fit_json(result, sweep="s"))
    two = pd.concat([frame.assign(seed=0), synthetic_runs(
        Truth(lr=(0.5, -0.3, -0.1, 0.4)), n_values=N3, d_values=D3, b_values=[1e4],
        noise=0.002, seed=4).assign(seed=1)], ignore_index=True)
    result = fit_runs(from_short_frame(two, source="synthetic"), laws=("lr",), n_boot=50)
    assert "lr" in result.laws and caveat not in format_fit(fit_json(result, sweep="s"))


def test_the_fit_header_counts_the_runs_it_does_not_use():
    # Mid-sweep the header read "20 runs (10 finished, 0 diverged)" with 10 running.
    from fitter.fit import fit_json, format_fit

    frame = synthetic_runs(Truth(), n_values=N3, d_values=[1e9], b_values=[1e5], seed=2)
    frame.loc[frame.index[:3], "status"] = "running"
    frame.loc[frame.index[:3], "loss"] = np.nan
    frame.loc[frame.index[3], "status"] = "interrupted"
    doc = fit_json(fit_runs(from_short_frame(frame, source="sweep s"), n_boot=20), sweep="s")
    assert doc["n_other"] == {"interrupted": 1, "running": 3}
    finished = len(frame) - 4 - doc["n_diverged"]
    assert format_fit(doc).splitlines()[0].startswith(
        f"s: {len(frame)} runs ({finished} finished, {doc['n_diverged']} diverged, "
        "1 interrupted, 3 running), ")


@pytest.mark.parametrize("value, said", [(131072.0, "131072"), ("131072.0", "131072"),
                                         (1e9, "1e+09"), ("3e-3", "0.003"), ("64", "64"),
                                         (0.00015, "0.00015"), ("mup", "mup")])
def test_a_slice_value_is_said_as_a_person_reads_it(value, said):
    # A slice at train.tokens=131072 was named train.tokens=1.311e+05 (a CSV's float column).
    from fitter.fit import _short

    assert _short(value) == said


def test_the_batch_law_says_the_settings_whose_best_batch_is_at_an_edge():
    """Settings whose best batch size was the smallest or largest tried were left out of the
    batch law without a word (31 of 100 in a user's sweep, its exponent 0.50 for a true 0.55,
    outside the interval): they are listed, with the batches that would bracket them."""
    truth = Truth(k_batch=0.02)  # B_opt = 0.6 · D^0.55
    frame = synthetic_runs(truth, n_values=[1e7], d_values=np.geomspace(1e8, 1e10, 10),
                           b_values=[16384, 32768, 65536, 131072], noise=0.002, seed=0)
    result = fit_runs(from_short_frame(frame, source="s"), laws=("batch",), n_boot=0)
    doc = fit_json(result, sweep="s")
    law = doc["laws"]["batch"]
    edges = law["edges"]
    assert {e["edge"] for e in edges} == {"low", "high"}
    assert law["n_points"] + len(edges) == 10
    assert all(e["D"] < 3e8 for e in edges if e["edge"] == "low")
    assert all(e["D"] > 1e9 for e in edges if e["edge"] == "high")
    # a CSV gives batches in tokens (no train.batch_size to extend): said in tokens
    assert law["edges_fix"] == ("add runs at batches of 8,192 and 262,144 tokens "
                                "(train.batch_size × train.seq_len)")
    summary = format_fit(doc)
    assert (f"{len(edges)} settings left out (" in summary and "where the best batch size is "
            "the smallest tried" in summary and "the law is fitted without them; to fit it on "
            "all, add runs at batches of 8,192 and 262,144 tokens" in summary)
    # a sweep's runs give train.batch_size: the values to extend it with
    sweep = frame.assign(**{"train.batch_size": (frame["B"] // 128).astype(int).astype(str)})
    law = fit_json(fit_runs(from_short_frame(sweep, source="s"), laws=("batch",), n_boot=0),
                   sweep="s")["laws"]["batch"]
    assert law["edges_fix"] == ("add train.batch_size=choice(64, 2048) to the sweep (`sweep "
                                "extend` takes it)")


@pytest.mark.parametrize("value, lo, hi, said", [
    (2.306, 2.3058, 2.3076, "2.306 [2.3058, 2.3076]"),  # (was 2.306 [2.31, 2.31])
    (0.35, 0.3497, 0.3503, "0.35 [0.3497, 0.3503]"),
    (0.0123, 0.01, 0.015, "0.0123 [0.01, 0.015]"),
    (1.0, 1.0, 1.0, "1 [1, 1]"),
    (5.408e5, 4.92e5, 5.98e5, "5.408e+05 [4.92e+05, 5.98e+05]"),
])
def test_an_interval_prints_with_the_digits_that_tell_it_from_its_value(value, lo, hi, said):
    assert with_interval(value, lo, hi, value_digits=4) == said


def test_a_three_point_lr_law_takes_its_interval_from_its_optimas_own():
    """A researcher's 3-width muP sweep, 3 seeds: optima 0.00474 [0.00319, 0.00712], 0.005
    [0.004, 0.00621], 0.00608 [0.00351, 0.008], all overlapping, gave a bare a_N=0.097 and a
    bare LR 2.5x every optimum, 2,300x past the widths: one residual measures no noise. The
    interval comes from the optima's own, and says so; the exponent's holds 0 and is said."""
    from fitter.recommend import format_recommendation, recommend

    widths = np.array([32.0, 64.0, 128.0])
    frame = pd.DataFrame({"N": 12 * 2 * widths ** 2, "lr_opt": [0.00474, 0.005, 0.00608],
                          "lr_lo": [0.00319, 0.004, 0.00351], "lr_hi": [0.00712, 0.00621, 0.008],
                          "loss_opt": [2.6, 2.5, 2.4], "edge": [None] * 3,
                          "at_timescale": [None] * 3})
    from fitter.laws import _log_sigma
    from fitter.powerlaw import fit_power_law

    sigma = _log_sigma(frame.assign(at_stability_limit=False))
    law = fit_power_law(frame, name="lr", axes=("N",), exponents=("a_N",), target="lr_opt",
                        n_boot=4000, point_sigma=sigma)
    assert law.interval_source == "points" and law.has_interval
    # the least-squares slope's standard error under the points' own: (XᵀX)⁻¹Xᵀ Σ X(XᵀX)⁻¹
    x = np.log10(frame["N"].to_numpy())
    se = np.sqrt(np.sum(((x - x.mean()) / np.sum((x - x.mean()) ** 2)) ** 2 * sigma ** 2))
    lo, hi = law.ci["a_N"]
    assert (hi - lo) / 2 == pytest.approx(1.6449 * se, rel=0.05)
    slope = np.polyfit(x, np.log10(frame["lr_opt"].to_numpy()), 1)[0]
    assert lo < 0 < hi and law.coef["a_N"] == pytest.approx(slope, rel=1e-9)
    doc = law.to_json()
    assert doc["interval_source"] == "points" and doc["ci"]["a_N"] == [lo, hi]
    from fitter.recommend import _entry, _flat_in_n

    assert _flat_in_n(law, _entry(law, {"N": 1e9}, "lr")) == (
        f"a_N's 90% interval [{lo:.3g}, {hi:.3g}] holds 0: these optima do not show the best "
        f"LR moving with N (muP predicts it does not), and this value carries the fitted slope "
        f"{law.coef['a_N']:.3g} {1e9 / frame['N'].max():.3g}× past them; the interval is that "
        "uncertainty")
    assert _flat_in_n(law, _entry(law, {"N": 1e5}, "lr")) is None  # (within the widths)
    # a point whose optimum is only a lower bound has no noise to give: no interval
    capped = _log_sigma(frame.assign(at_stability_limit=[False, False, True]))
    assert not fit_power_law(frame, name="lr", axes=("N",), exponents=("a_N",),
                             target="lr_opt", n_boot=50, point_sigma=capped).has_interval
    # a fourth point: the residuals give it, as before
    four = pd.concat([frame, frame.iloc[[0]].assign(N=12 * 2 * 256.0 ** 2)])
    assert fit_power_law(four, name="lr", axes=("N",), exponents=("a_N",), target="lr_opt",
                         n_boot=50, point_sigma=np.r_[sigma, sigma[0]]).interval_source == \
        "residuals"
    # through the fitter and recommend, from runs: the synthetic sweep's 3 widths
    runs = synthetic_runs(Truth(), n_values=N3, d_values=[1e9], b_values=[1e5], seed=2)
    result = fit_runs(from_short_frame(runs, source="synthetic"), laws=("lr",), n_boot=200)
    text = format_fit(fit_json(result, sweep="s"), recorded=False)
    assert "(3 points, 90% CI from the points' own intervals: one residual cannot measure " \
           "scatter about the law beyond them)" in text
    rec = recommend(result, params=1e9, tokens=1e9)
    lo, hi = rec["lr"]["interval"]
    assert lo < rec["lr"]["value"] < hi
    assert "(interval from the 3 optima's own intervals alone, not scatter about the lr law " \
           "beyond them)" in format_recommendation(rec).splitlines()[0]
    # optima off the law by more than their intervals allow: said under the law
    doc = fit_json(result, sweep="s")
    doc["laws"]["lr"]["points_misfit_p"] = 0.031
    assert ("its optima lie off the law by more than their own intervals allow (p=0.031): the "
            "interval, taken from those, is too narrow") in format_fit(doc, recorded=False)


def test_a_three_point_lr_laws_interval_from_its_optima_holds_the_truth_at_its_level():
    # Optima scattered about a known law by their own noise, each optimum's 90% interval
    # from that noise: the exponent's and an extrapolation's interval (100x past the widths)
    # hold the truth in 90% of 600 sweeps (binomial sd 1.2%).
    from fitter.powerlaw import fit_power_law

    rng = np.random.default_rng(1)
    n = np.array([1e5, 4e5, 1.6e6])
    sigma = np.array([0.08, 0.05, 0.1])  # log10 standard errors, one per optimum
    hits, flagged = np.zeros(2), np.zeros(2)
    for seed in range(600):
        lr = 0.5 * n ** -0.1 * 10 ** rng.normal(0, sigma)
        law = fit_power_law(pd.DataFrame({"N": n, "lr_opt": lr}), name="lr", axes=("N",),
                            exponents=("a_N",), target="lr_opt", n_boot=400, seed=seed,
                            point_sigma=sigma)
        lo, hi = law.ci["a_N"]
        plo, phi = law.interval(N=1.6e8)
        hits += [lo <= -0.1 <= hi, plo <= 0.5 * 1.6e8 ** -0.1 <= phi]
        # optima scattered 3x more than their intervals say: the misfit test tells
        off = 0.5 * n ** -0.1 * 10 ** rng.normal(0, 3 * sigma)
        flagged += ["points_misfit_p" in law.extra, "points_misfit_p" in fit_power_law(
            pd.DataFrame({"N": n, "lr_opt": off}), name="lr", axes=("N",), exponents=("a_N",),
            target="lr_opt", n_boot=0, point_sigma=sigma).extra]
    assert np.all(np.abs(hits / 600 - 0.9) <= 0.035), hits / 600
    # (measured: 10% of honest sweeps flagged at p < 0.1, as it should; 58% of the 3x ones)
    assert abs(flagged[0] / 600 - 0.1) <= 0.035 and flagged[1] / 600 > 0.45, flagged / 600
