"""Laws per group of categorical keys: muP and SP runs never share a law unless pooled."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitter.data import from_short_frame
from fitter.errors import FitError
from fitter.fit import fit_json, fit_runs, format_fit
from fitter.groups import group_keys, label, parse_group
from fitter.mlflow_io import metric_name
from fitter.recommend import format_recommendation, recommend
from fitter.synthetic import Truth, synthetic_runs
from orchestrator.cli import main

NS = [1e6, 4e6, 1.6e7, 6.4e7]
# muP: the optimal LR does not move with N; SP: it falls as N^-0.5
MUP = Truth(lr=(0.01, 0.0, 0.0, 0.0))
SP = Truth(lr=(10.0, -0.5, 0.0, 0.0))


def mup_and_sp(**extra) -> pd.DataFrame:
    kw = {"n_values": NS, "d_values": [1e9], "b_values": [1e5], "noise": 0.001, "seed": 4}
    mup = synthetic_runs(MUP, **kw).assign(**{"model.param": "mup"}, **extra)
    sp = synthetic_runs(SP, **kw).assign(**{"model.param": "sp"}, **extra)
    frame = pd.concat([mup, sp], ignore_index=True)
    return frame.assign(run=[f"r{i}" for i in range(len(frame))])


@pytest.fixture(scope="module")
def grouped():
    return fit_runs(from_short_frame(mup_and_sp(), source="muP+SP"), laws=("lr",), n_boot=100)


def test_recommend_with_no_law_in_any_group_says_so_not_which_group():
    """It asked to choose among 6 groups, none of which had a law."""
    frame = mup_and_sp()
    one_width = frame[frame["N"] == frame["N"].min()]
    result = fit_runs(from_short_frame(one_width, source="one width"), n_boot=20)
    assert not result.laws and len(result.group_list) == 2
    with pytest.raises(FitError) as err:
        recommend(result, params=1e8, tokens=1e9, batch=1e5)
    said = str(err.value)
    assert said.startswith("one width has no law in any group to recommend from:\n  ")
    assert "choose one" not in said and ".;" not in said
    # each group's reasons, named (they read as one list, "the timescale and timescale laws")
    lines = said.splitlines()[1:]
    groups = [label(g) for g in result.group_list]
    assert all(any(line.startswith(f"  {g}: ") for g in groups) for line in lines)
    assert {g for g in groups if any(line.startswith(f"  {g}: ") for line in lines)} == \
        set(groups)
    assert not any(f"{law} and {law}" in said for law in ("loss", "lr", "timescale", "batch"))
    # --group: that group's reasons alone; a group that is not one: said first
    with pytest.raises(FitError) as err:
        recommend(result, params=1e8, tokens=1e9, batch=1e5,
                  group={"model.param": "sp"})
    assert str(err.value).startswith("group model.param=sp of one width has no law to "
                                     "recommend from:\n  ")
    assert "model.param=mup" not in str(err.value)
    with pytest.raises(FitError) as err:
        recommend(result, params=1e8, tokens=1e9, batch=1e5, group={"model.param": "xx"})
    assert str(err.value) == ("--group model.param=xx matches none of the groups of one "
                              "width; choose one of: --group model.param=mup; --group "
                              "model.param=sp.")


def test_mup_and_sp_get_one_lr_law_each(grouped):
    assert set(grouped.laws) == {"lr[model.param=mup]", "lr[model.param=sp]"}
    mup, sp = grouped.laws["lr[model.param=mup]"], grouped.laws["lr[model.param=sp]"]
    assert mup.coef["a_N"] == pytest.approx(0.0, abs=0.04)
    assert sp.coef["a_N"] == pytest.approx(-0.5, abs=0.04)
    # none mixed: each law's points are its own group's slice optima, one per N
    assert len(mup.points) == len(sp.points) == len(NS)
    assert mup.points["lr_opt"].to_numpy() == pytest.approx(0.01, rel=0.35)
    assert grouped.groups["lr[model.param=sp]"] == {"model.param": "sp"}


def test_pooling_is_asked_for_and_gives_one_law():
    runs = from_short_frame(mup_and_sp(), source="muP+SP")
    pooled = fit_runs(runs, laws=("lr",), n_boot=50, pool=True)
    assert list(pooled.laws) == ["lr"] and pooled.pooled


def test_a_pooled_lr_law_across_mup_and_sp_says_its_points_mix_them():
    # A researcher's `sweep fit --pool` of muP and SP at widths 32/48/64 took muP's optimum at
    # two widths and SP's at the third, and printed a_N=-0.43 with nothing to say so: fit.json's
    # points did not name their parametrization either.
    frame = mup_and_sp()
    worse = ((frame["model.param"] == "sp") == (frame["N"] < 1.6e7))  # muP best below 1.6e7
    frame.loc[worse, "loss"] += 0.05
    pooled = fit_runs(from_short_frame(frame, source="muP+SP"), laws=("lr",), n_boot=50,
                      pool=True)
    law = pooled.laws["lr"]
    assert law.points["model.param"].tolist() == ["mup", "mup", "sp", "sp"]
    assert law.extra["mixes"] == {"model.param": {"mup": 2, "sp": 2}}
    doc = fit_json(pooled, sweep="transfer")
    assert [p["model.param"] for p in doc["laws"]["lr"]["points"]] == ["mup", "mup", "sp", "sp"]
    assert ("its points come from several groups (2 of model.param=mup, 2 of model.param=sp), "
            "the best slice at each point: muP scales its hidden matrices' LR by "
            "base_width/width and SP does not") in format_fit(doc)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fitter import law_plots

    fig = law_plots.law_figure(plt, law, "lr", law_plots.constants_of(pooled, {}))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]  # (one black dot)
    assert [label for label in labels if label.startswith("slice optima")] == [
        "slice optima (90% interval), model.param=mup",
        "slice optima (90% interval), model.param=sp"]
    assert not any(label.startswith(("StepFun", "Shen")) for label in labels)  # neither's law
    plt.close(fig)
    # (every point from one group: nothing mixed, nothing said)
    frame.loc[frame["model.param"] == "sp", "loss"] += 1.0
    one = fit_runs(from_short_frame(frame, source="muP+SP"), laws=("lr",), n_boot=50,
                   pool=True)
    assert "mixes" not in one.laws["lr"].extra
    assert "several groups" not in format_fit(fit_json(one, sweep="transfer"))


def test_fit_json_names_the_groups_and_the_summary_says_so(grouped):
    doc = fit_json(grouped, sweep="transfer")
    assert doc["group_keys"] == ["model.param"]
    assert doc["groups"] == ["model.param=mup", "model.param=sp"]
    law = doc["laws"]["lr[model.param=sp]"]
    assert law["law"] == "lr" and law["group"] == {"model.param": "sp"}
    assert law["form"] == "lr_opt = c * N^a_N"
    assert {s["model.param"] for s in doc["slices"]} == {"mup", "sp"}
    json.dumps(doc)
    text = format_fit(doc)
    assert "lr[model.param=mup]" in text and "per group of model.param" in text


def test_ungrouped_fit_json_keeps_the_plain_law_key():
    frame = synthetic_runs(Truth(), n_values=NS, d_values=[1e9], b_values=[1e5], noise=0.001)
    frame["model.param"] = "mup"  # constant: not a group
    doc = fit_json(fit_runs(from_short_frame(frame, source="s"), laws=("lr",), n_boot=50),
                   sweep="s")
    assert list(doc["laws"]) == ["lr"] and doc["laws"]["lr"]["group"] == {}
    assert doc["groups"] == [] and set(doc["laws"]["lr"]["coef"]) == {"c", "a_N"}


def test_a_numeric_key_that_follows_the_width_is_not_a_group():
    frame = mup_and_sp()
    frame["model.n_layer"] = frame["N"].map({n: str(2 + i) for i, n in enumerate(NS)})
    frame["optim.beta2"] = "0.95"
    frame.loc[::2, "optim.beta2"] = "0.99"  # varies within (N, D, B): a group key
    runs = from_short_frame(frame, source="s")
    assert group_keys(runs) == ("model.param", "optim.beta2")


def test_recommend_asks_which_group_in_one_sentence(grouped):
    with pytest.raises(FitError) as err:
        recommend(grouped, params=1e8, tokens=1e9, batch=1e5)
    message = str(err.value)
    assert "--group model.param=mup" in message and "\n" not in message
    rec = recommend(grouped, params=2.56e8, tokens=1e9, batch=1e5,
                    group={"model.param": "sp"})
    assert rec["group"] == {"model.param": "sp"}
    assert rec["lr"]["value"] == pytest.approx(SP.lr_opt(2.56e8, 1, 1), rel=0.35)
    with pytest.raises(FitError, match="matches none"):
        recommend(grouped, params=1e8, tokens=1e9, batch=1e5, group={"model.param": "x"})


def test_recommend_names_the_group_and_the_groups_left_out_without_a_law():
    """muP and SP, every SP optimum past the grid's edge: the recommendation came from the muP
    law without naming it, and --group model.param=sp 'matched none of the groups'."""
    kw = {"n_values": NS, "d_values": [1e9], "b_values": [1e5], "noise": 0.001, "seed": 4}
    mup = synthetic_runs(MUP, **kw).assign(**{"model.param": "mup"})
    sp = synthetic_runs(SP, **kw, lr_steps=np.arange(0.5, 1.51, 0.25)).assign(
        **{"model.param": "sp"})
    frame = pd.concat([mup, sp], ignore_index=True)
    result = fit_runs(from_short_frame(frame.assign(run=[f"r{i}" for i in range(len(frame))]),
                                       source="sweep t"), laws=("lr",), n_boot=50)
    assert list(result.laws) == ["lr[model.param=mup]"]
    rec = recommend(result, params=1e8, tokens=1e9, batch=1e5)
    assert rec["group"] == {"model.param": "mup"}
    assert rec["groups_without_laws"] == ["model.param=sp"]
    assert format_recommendation(rec).splitlines()[:2] == [
        "group         model.param=mup: the laws of these runs only",
        "              (model.param=sp has no law to recommend from: `sweep fit` says why)"]
    with pytest.raises(FitError) as err:
        recommend(result, params=1e8, tokens=1e9, batch=1e5, group={"model.param": "sp"})
    assert str(err.value).startswith("group model.param=sp of sweep t has no law to recommend "
                                     "from: the lr law has no usable points; ")
    assert str(err.value).endswith("Groups with laws: --group model.param=mup.")


def test_a_mup_recommendation_names_the_base_width_its_lr_holds_at():
    # A muP optim.lr is the hidden matrices' LR at the sweep's base width: a tiny sweep
    # (model.base_width=64) read into a model=gpt124m run (its default 256) scales the hidden
    # LR 4x. `recommend` gave the LR without a word of it.
    frame = mup_and_sp(**{"model.base_width": 64})
    result = fit_runs(from_short_frame(frame, source="muP+SP"), laws=("lr",), n_boot=50)
    mup = recommend(result, params=1e8, tokens=1e9, batch=1e5, group={"model.param": "mup"})
    assert mup["lr"]["base_width"] == 64
    assert ("a muP LR: it holds with model.base_width=64, the sweep's (hidden matrices take it "
            "times 64/width); set model.base_width=64 in the big run") in \
        format_recommendation(mup)
    sp = recommend(result, params=1e8, tokens=1e9, batch=1e5, group={"model.param": "sp"})
    assert "base_width" not in sp["lr"] and "base_width" not in format_recommendation(sp)


def test_group_arguments_parse_and_bad_ones_say_how():
    assert parse_group(["model.param=mup", "schedule=wsd"]) == {"model.param": "mup",
                                                                "schedule": "wsd"}
    with pytest.raises(FitError, match="KEY=VALUE"):
        parse_group(["mup"])
    with pytest.raises(FitError, match=r"--group model.param is given twice \(mup, sp\): a fit "
                                       "takes one group"):
        parse_group(["model.param=mup", "model.param=sp"])
    assert parse_group(["model.param=mup", "model.param=mup"]) == {"model.param": "mup"}


def test_metric_names_of_group_laws_are_valid_mlflow_names():
    assert metric_name({"law": "lr", "group": {}}, "a_N") == "lr.a_N"
    name = metric_name({"law": "lr", "group": {"model.param": "mup"}}, "a_N")
    assert name == "lr/model.param-mup/a_N"


def test_sweep_fit_one_group_from_csv(tmp_path, capsys):
    mup_and_sp().to_csv(tmp_path / "runs.csv", index=False)
    args = ["fit", "--from-csv", str(tmp_path / "runs.csv"), "--law", "lr", "--json",
            "--out", str(tmp_path / "out"), "--n-boot", "50"]
    assert main([*args, "--group", "model.param=sp"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["laws"]) == ["lr"]
    assert doc["laws"]["lr"]["coef"]["a_N"] == pytest.approx(-0.5, abs=0.05)
    assert main([*args, "--group", "model.param=xp"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.param=mup" in err and err.count("\n") == 0


def test_a_group_that_cannot_be_fitted_is_skipped_by_name():
    frame = mup_and_sp()
    sp = frame["model.param"] == "sp"
    frame.loc[sp, ["loss", "status"]] = [np.nan, "diverged"]
    result = fit_runs(from_short_frame(frame, source="s"), n_boot=50)
    assert "lr[model.param=mup]" in result.laws
    assert "diverged" in result.skipped["lr[model.param=sp]"]


def test_sweep_fit_logs_each_groups_law_and_plots_to_the_fit_run(tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # (the default outputs/fit/... lands here)
    from mlflow import MlflowClient

    from tests.fitter.test_cli import log_sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_sweep(uri, "transfer", mup_and_sp())
    out = tmp_path / "fit"
    assert main(["--tracking-uri", uri, "fit", "transfer", "--law", "lr", "--out", str(out),
                 "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "lr[model.param=mup]" in printed and "lr[model.param=sp]" in printed
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("transfer")
    (fit,) = client.search_runs([exp.experiment_id], "tags.`proxysweep.kind` = 'fit'")
    assert fit.data.metrics["lr/model.param-sp/a_N"] == pytest.approx(-0.5, abs=0.05)
    logged = {a.path for a in client.list_artifacts(fit.info.run_id, "plots")}
    assert {"plots/loss_vs_lr.png", "plots/lr_opt_vs_width.png",
            "plots/law_lr_model.param-mup.png", "plots/law_lr_model.param-sp.png"} <= logged
    assert fit.data.tags["fit.selection"] == "all" and fit.info.run_name == "fit transfer"
    # A fit of one group, or pooled, says so in its run and fit.json, and by default goes to
    # its own folder, not over the full fit's
    for extra, selection in ((["--group", "model.param=mup"], "model.param=mup"),
                             (["--pool"], "pooled")):
        assert main(["--tracking-uri", uri, "fit", "transfer", "--law", "lr", "--n-boot", "20",
                     *extra]) == 0
        out_line = capsys.readouterr().out.splitlines()[-1]
        assert f"outputs/fit/transfer/{selection},law=lr/fit.json" in out_line
        (run,) = [r for r in client.search_runs([exp.experiment_id],
                                                "tags.`proxysweep.kind` = 'fit'")
                  if r.data.tags["fit.selection"] == selection]
        assert run.info.run_name == f"fit transfer [{selection}]"
        doc = json.loads((Path("outputs/fit/transfer") / f"{selection},law=lr" / "fit.json"
                          ).read_text())
        assert doc["selection"] == {"group": {"model.param": "mup"} if selection != "pooled"
                                    else {}, "pooled": selection == "pooled"}
        # the law of one group names it, as a grouped fit's laws do (it said "group": {})
        assert doc["laws"]["lr"]["group"] == doc["selection"]["group"]


def test_trials_that_have_not_started_do_not_make_every_key_a_group():
    """Regression: a pending trial has no params in MLflow; its NaNs made every config key look
    varied, so `sweep fit` on a running sweep split it into one group per key."""
    from fitter.data import from_mlflow_frame

    rows = [{"run_id": f"r{i}", "tags.trial.status": "finished", "params.optim.lr": lr,
             "params.model.init_std": std, "params.model.depth": "2",
             "params.derived.n_params": "1000", "params.train.tokens": "1000",
             "params.derived.batch_tokens": "64", "metrics.final/eval_loss": loss}
            for i, (lr, std, loss) in enumerate([("0.01", "0.02", 2.0), ("0.02", "0.02", 1.9),
                                                  ("0.01", "0.08", 1.8), ("0.02", "0.08", 1.7)])]
    rows.append({"run_id": "pending", "tags.trial.status": "running"})
    runs = from_mlflow_frame(pd.DataFrame(rows), source="test")
    assert runs.slice_keys == ("model.init_std",)
    assert "model.depth" not in runs.table


def test_slice_keys_keep_one_order_whatever_the_stores_column_order():
    """Two fits of one sweep labelled its slices `train.batch_size=8 train.tokens=...` and
    then `train.tokens=... train.batch_size=8`: the store's columns come in no set order."""
    from fitter.data import from_mlflow_frame

    rows = [{"run_id": f"r{i}", "tags.trial.status": "finished", "params.optim.lr": "0.01",
             "params.model.init_std": std, "params.model.depth": depth,
             "params.derived.n_params": "1000", "params.train.tokens": "1000",
             "params.derived.batch_tokens": "64", "metrics.final/eval_loss": 2.0 - i / 10}
            for i, (std, depth) in enumerate([("0.02", "2"), ("0.08", "2"), ("0.02", "4"),
                                              ("0.08", "4")])]
    frame = pd.DataFrame(rows)
    for columns in (list(frame.columns), list(reversed(frame.columns))):
        runs = from_mlflow_frame(frame[columns], source="test")
        assert runs.slice_keys == ("model.depth", "model.init_std"), columns


def test_an_exported_experiment_counts_only_its_trial_runs():
    """`mlflow.search_runs` of a sweep's experiment holds its parent, trunk and fit runs too:
    a CSV of it fits the trials alone (they were counted as runs without a loss)."""
    from fitter.data import from_mlflow_frame

    rows = [{"run_id": f"r{i}", "tags.proxysweep.kind": "trial",
             "tags.trial.status": "finished", "params.optim.lr": lr,
             "params.derived.n_params": "1000", "params.train.tokens": "1000",
             "params.derived.batch_tokens": "64", "metrics.final/eval_loss": loss}
            for i, (lr, loss) in enumerate([("0.01", 2.0), ("0.02", 1.9), ("0.04", 2.1)])]
    rows += [{"run_id": kind, "tags.proxysweep.kind": kind} for kind in ("sweep", "fit", "trunk")]
    runs = from_mlflow_frame(pd.DataFrame(rows), source="test")
    assert sorted(runs.table["run"]) == ["r0", "r1", "r2"]


def test_a_whole_number_key_read_with_a_gap_keeps_its_spelling(tmp_path):
    """pandas reads a whole-number column with an empty cell as float: its values still
    label slices and groups as the config spells them (model.width=128, not 128.0)."""
    from fitter.data import read_csv

    frame = mup_and_sp()
    frame["model.width"] = [128 if i % 2 else 256 for i in range(len(frame))]
    frame.loc[0, "model.width"] = None
    frame["optim.beta2"] = 0.95
    frame.loc[1, "optim.beta2"] = 0.99
    frame.to_csv(tmp_path / "runs.csv", index=False)
    table = read_csv(tmp_path / "runs.csv").table
    assert sorted(table["model.width"].unique()) == ["128", "256", "nan"]
    assert sorted(table["optim.beta2"].unique()) == ["0.95", "0.99"]
    # a float key keeps its spelling (0.0 stays 0.0), gap or not
    frame["optim.beta1"] = [0.0, 0.9] * (len(frame) // 2) + [0.0] * (len(frame) % 2)
    frame.loc[2, "optim.beta1"] = None
    frame.to_csv(tmp_path / "runs.csv", index=False)
    table = read_csv(tmp_path / "runs.csv").table
    assert sorted(table["optim.beta1"].unique()) == ["0.0", "0.9", "nan"]
    # a whole-number key a CSV wrote as floats, with no gap: its groups read
    # model.base_width=32.0
    frame["model.base_width"] = [32.0 if i % 2 else 64.0 for i in range(len(frame))]
    frame.to_csv(tmp_path / "runs.csv", index=False)
    table = read_csv(tmp_path / "runs.csv").table
    assert sorted(table["model.base_width"].unique()) == ["32", "64"]


def test_a_numeric_group_value_names_its_runs_however_it_is_written():
    # The summary prints optim.timescale=3; `--group optim.timescale=3` answered "no run has
    # it; choose one of optim.timescale=3.0".
    from fitter.groups import select

    frame = mup_and_sp().assign(**{"optim.timescale": 3.0})
    frame.loc[frame.index[:5], "optim.timescale"] = 1.0
    runs = from_short_frame(frame, source="s")
    assert len(select(runs, {"optim.timescale": "3"}).table) == len(frame) - 5
    with pytest.raises(FitError, match="no run in s has it; choose one of optim.timescale=1.0, "
                                       "optim.timescale=3.0"):
        select(runs, {"optim.timescale": "9"})


def test_recommend_group_by_a_key_that_does_not_split_the_laws_fits_those_runs(tmp_path,
                                                                                capsys):
    """`sweep fit --group optim.timescale=3` fits the laws of those runs; `sweep recommend`
    refused the same --group: "one set of laws for all its runs; drop --group"."""
    kw = {"n_values": NS, "d_values": [1e9], "b_values": [1e5], "noise": 0.001, "seed": 4}
    frame = pd.concat([synthetic_runs(MUP, **kw).assign(**{"optim.timescale": 3.0}),
                       synthetic_runs(SP, **kw).assign(**{"optim.timescale": 1.0})],
                      ignore_index=True)
    frame.assign(run=[f"r{i}" for i in range(len(frame))]).to_csv(tmp_path / "runs.csv",
                                                                   index=False)
    args = ["recommend", "--from-csv", str(tmp_path / "runs.csv"), "--params", "1e9",
            "--tokens", "1e9", "--batch", "1e5", "--n-boot", "50", "--json"]
    lr = {}
    for tau in ("3", "1"):
        assert main([*args, "--group", f"optim.timescale={tau}"]) == 0
        rec = json.loads(capsys.readouterr().out)
        assert rec["group"] == {"optim.timescale": tau}
        lr[tau] = rec["lr"]["value"]
    assert lr["3"] == pytest.approx(MUP.lr_opt(1e9, 1e9, 1e5), rel=0.15)
    assert lr["1"] == pytest.approx(SP.lr_opt(1e9, 1e9, 1e5), rel=0.15)
    assert main([*args[:-1], "--group", "optim.timescale=3"]) == 0
    assert "group         optim.timescale=3: the laws of these runs only" in (
        capsys.readouterr().out)
    assert main([*args, "--group", "model.depth=4"]) == 2
    err = capsys.readouterr().err
    assert "--group model.depth=4: model.depth does not vary in " in err
    assert err.rstrip().endswith("the keys that do: N, optim.timescale.")
    assert main([*args, "--group", "optim.timescal=3"]) == 2  # (a misspelt key: said so)
    assert capsys.readouterr().err.rstrip().endswith(
        "runs.csv (did you mean optim.timescale?); the keys that do: N, optim.timescale.")


def test_recommend_by_a_filter_key_with_groups_left_asks_for_the_group_beside_it(tmp_path,
                                                                                  capsys):
    # It asked for `--group model.param=mup` alone, which dropped the optim.timescale filter.
    frame = pd.concat([mup_and_sp().assign(**{"optim.timescale": tau}) for tau in (1.0, 3.0)],
                      ignore_index=True)
    frame.assign(run=[f"r{i}" for i in range(len(frame))]).to_csv(tmp_path / "runs.csv",
                                                                   index=False)
    args = ["recommend", "--from-csv", str(tmp_path / "runs.csv"), "--params", "1e9",
            "--tokens", "1e9", "--batch", "1e5", "--n-boot", "20",
            "--group", "optim.timescale=3"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "choose one with --group, e.g. --group model.param=mup, beside --group " \
           "optim.timescale=3." in err
    assert main([*args, "--group", "model.param=sp", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["group"] == {"optim.timescale": "3", "model.param": "sp"}


def test_recommend_held_to_one_width_says_the_group_holds_what_the_laws_lack(tmp_path,
                                                                              capsys):
    # `--group model.width=48` fitted one width's runs, and the error then asked to "add values
    # along model.width", which the sweep had.
    frame = synthetic_runs(MUP, n_values=NS, d_values=[1e9], b_values=[1e5], seed=1)
    frame["model.width"] = frame["N"].map(dict(zip(NS, (32, 64, 128, 256), strict=False)))
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["recommend", "--from-csv", str(tmp_path / "runs.csv"), "--params", "1e9",
                 "--tokens", "1e10", "--batch", "1e5", "--n-boot", "20",
                 "--group", "model.width=64"]) == 2
    err = capsys.readouterr().err.strip()
    assert "add values along model.width or train.tokens or train.batch_size" in err
    assert err.endswith("(--group model.width=64 keeps one value of model.width: drop it for "
                        "laws along it).")
