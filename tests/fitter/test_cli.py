"""`sweep fit` and `sweep recommend` end to end on an MLflow store, and every bad-input message."""

import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from fitter.synthetic import Truth, synthetic_runs
from orchestrator.cli import main
from trainer.schema import create_experiment

SEQ_LEN = 128


def log_sweep(uri: str, name: str, frame: pd.DataFrame) -> None:
    """Write runs the way the orchestrator does (docs/design.md, trainer.schema)."""
    client = MlflowClient(tracking_uri=uri)
    exp = create_experiment(client, uri, name)  # (artifacts beside the store, not ./mlruns)
    parent = client.create_run(exp, tags={"proxysweep.kind": "sweep"}).info.run_id
    for i, row in frame.iterrows():
        run = client.create_run(exp, tags={MLFLOW_PARENT_RUN_ID: parent,
                                           "proxysweep.kind": "trial", "trial.id": f"t{i}",
                                           "trial.status": row["status"], "trial.attempt": "1"})
        params = {"optim.lr": row["lr"], "optim.weight_decay": row["wd"],
                  "train.batch_size": int(row["B"] // SEQ_LEN), "train.seq_len": SEQ_LEN,
                  "train.tokens": int(row["D"]), "derived.n_params": int(row["N"]),
                  "derived.batch_tokens": int(row["B"]), "seed": 0,
                  "model.param": row.get("model.param", "mup"), "run_dir": f"runs/t{i}"}
        metrics = [Metric("final/eval_loss", row["loss"], 0, 1)] if np.isfinite(row["loss"]) else []
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run.info.run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{path}/mlflow.db"
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), loss=(2.0, 300.0, 1500.0, 0.3, 0.35))
    frame = synthetic_runs(truth, n_values=[1e6, 2e6, 4e6, 8e6], d_values=[1e8, 3e8, 1e9],
                           b_values=[SEQ_LEN * 64], wd_values=[0.1], diverge_above=3, noise=0.001,
                           seed=5)
    log_sweep(uri, "demo", frame)
    log_sweep(uri, "doomed", frame.assign(status="diverged", loss=np.nan).head(6))
    return uri, path


def test_fit_round_trip_writes_fit_json_and_logs_a_fit_run(store, capsys):
    uri, path = store
    out = path / "fit-demo"
    assert main(["--tracking-uri", uri, "fit", "demo", "--out", str(out), "--json",
                 "--n-boot", "100"]) == 0
    doc = json.loads((out / "fit.json").read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed["laws"]["lr"]["coef"] == doc["laws"]["lr"]["coef"]
    lr = doc["laws"]["lr"]
    assert set(lr["coef"]) == {"c", "a_N", "a_D"}
    assert lr["coef"]["a_N"] == pytest.approx(-0.3, abs=0.05)
    assert lr["n_points"] == 12 and len(lr["residuals_log10"]) == 12
    assert lr["ci"]["a_N"][0] < lr["coef"]["a_N"] < lr["ci"]["a_N"][1]
    assert set(doc["laws"]["loss"]["coef"]) == {"E", "A", "B", "alpha", "beta"}
    assert "batch" in doc["skipped"] and "train.batch_size" in doc["skipped"]["batch"]
    assert doc["n_diverged"] > 0 and len(doc["slices"]) == 12
    # one TP5 figure per token budget D, one curve per N in each
    # (named by what each holds: they were loss_vs_lr_1.png .. _3.png)
    assert sorted(p.name for p in (out / "plots").glob("loss_vs_lr*.png")) == [
        "loss_vs_lr_1_D-1e08.png", "loss_vs_lr_2_D-3e08.png", "loss_vs_lr_3_D-1e09.png"]
    assert (out / "plots" / "loss_vs_lr_1_D-1e08.png").stat().st_size > 1000
    assert (out / "plots" / "lr_opt_vs_width.png").is_file()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("demo")
    fits = client.search_runs([exp.experiment_id], "tags.`proxysweep.kind` = 'fit'")
    run_id = printed["fit_run_id"]
    assert len(fits) == 1 and fits[0].info.run_id == run_id
    assert doc["fit_run_id"] == run_id  # the file on disk names its MLflow run too
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"fit.json", "plots"} <= names
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert "plots/law_lr.png" in plots
    assert fits[0].data.metrics["lr.a_N"] == pytest.approx(lr["coef"]["a_N"])


def test_recommend_names_laws_and_extrapolation(store, capsys):
    uri, _ = store
    args = ["--tracking-uri", uri, "recommend", "demo", "--params", "8e7", "--tokens", "1e9",
            "--batch", str(SEQ_LEN * 64), "--json", "--n-boot", "100"]
    assert main(args) == 0
    rec = json.loads(capsys.readouterr().out)
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0)).lr_opt(8e7, 1e9, 1)
    assert rec["lr"]["value"] == pytest.approx(truth, rel=0.3)
    lo, hi = rec["lr"]["interval"]
    assert lo < rec["lr"]["value"] < hi
    assert rec["lr"]["extrapolation"]["N"] == pytest.approx(10.0)
    assert rec["lr"]["extrapolation"]["D"] == 1.0
    assert rec["batch_size"]["value"] == 64
    # One weight decay swept: no τ was optimised, so no weight decay is recommended (it had
    # one from a "timescale law" that only restated the λ chosen)
    assert "weight_decay" not in rec
    assert rec["unavailable"]["weight_decay"].startswith(
        "the timescale law needs the best τ at each setting, from 3 or more values of "
        "optim.weight_decay there, but all 12 of its settings tried only one above 0")
    assert rec["loss"]["extrapolation"]["N"] == pytest.approx(10.0)


def test_recommend_far_outside_the_data_says_it_is_a_guess(store, capsys):
    """--params 1e300 gave an LR of 2.6e-43 with only a ratio beside it."""
    uri, _ = store
    base = ["--tracking-uri", uri, "recommend", "demo", "--tokens", "1e9", "--n-boot", "20"]
    assert main([*base, "--params", "8e7"]) == 0
    assert "take this as a guess" not in capsys.readouterr().out  # 10× out: no more than said
    assert main([*base, "--params", "1e12"]) == 0
    out = capsys.readouterr().out
    assert ("N lies more than 10,000× outside what the sweep trained: a power law is rarely "
            "checked that far out; take this as a guess, or sweep nearer sizes") in out


def error_of(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_unknown_sweep(store, capsys):
    err = error_of(capsys, ["--tracking-uri", store[0], "fit", "nope"])
    assert "no sweep named 'nope'" in err and "--tracking-uri" in err


def test_unknown_law(store, capsys):
    err = error_of(capsys, ["--tracking-uri", store[0], "fit", "demo", "--law", "gravity"])
    assert "unknown law 'gravity'" in err and "loss, lr, timescale, batch, cbs" in err


def test_every_run_diverged(store, capsys):
    err = error_of(capsys, ["--tracking-uri", store[0], "fit", "doomed"])
    assert "every one of the 6 runs" in err and "optim.lr" in err


def test_too_few_points_says_how_many_more_and_along_which_key(tmp_path, capsys):
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6], d_values=[1e9], b_values=[1e5])
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv"), "--law", "lr"])
    assert "needs at least 3 points but has 2; add 1 more" in err and "model.width" in err


def test_csv_missing_columns(tmp_path, capsys):
    pd.DataFrame({"N": [1, 2], "D": [3, 4]}).to_csv(tmp_path / "bad.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "bad.csv")])
    assert "lacks a loss column" in err


def test_an_empty_csv_is_one_sentence(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "empty.csv")])
    assert "cannot be read as a table (No columns to parse from file)" in err


def test_runs_lacking_a_required_param(tmp_path, capsys):
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5])
    frame.loc[3, "N"] = np.nan
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv"), "--law", "loss"])
    assert "1 of 27 runs" in err and "derived.n_params" in err


def test_fit_from_short_name_csv_for_a_single_law(tmp_path, capsys):
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5],
                           noise=0.001)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--law", "lr", "--json",
                 "--out", str(tmp_path / "out"), "--n-boot", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["laws"]) == ["lr"]
    assert doc["laws"]["lr"]["coef"]["a_N"] == pytest.approx(-0.3, abs=0.05)


def test_a_csv_whose_columns_are_the_keys_the_messages_name_fits_as_the_short_names(
        tmp_path, capsys):
    """A CSV with `optim.lr` (what "the lr law needs `optim.lr` (lr)" names) was told that no
    run had it: the keys the short names stand for are read as those names."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5],
                           noise=0.001)
    frame.to_csv(tmp_path / "short.csv", index=False)
    frame.rename(columns={"N": "derived.n_params", "D": "train.tokens", "lr": "optim.lr",
                          "B": "derived.batch_tokens", "loss": "final/eval_loss"}
                 ).to_csv(tmp_path / "keys.csv", index=False)
    docs = []
    for name in ("short", "keys"):
        assert main(["fit", "--from-csv", str(tmp_path / f"{name}.csv"), "--law", "lr", "--json",
                     "--out", str(tmp_path / name), "--n-boot", "50"]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert docs[1]["laws"]["lr"]["coef"] == docs[0]["laws"]["lr"]["coef"]
    assert docs[1]["laws"]["lr"]["coef"]["a_N"] == pytest.approx(-0.3, abs=0.05)
    bad = frame.rename(columns={"lr": "optim.lr"})
    bad.loc[2, "optim.lr"] = -1
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert error_of(capsys, ["fit", "--from-csv", str(tmp_path / "bad.csv")]) == (
        f"error: CSV {tmp_path / 'bad.csv'}, line 4: optim.lr=-1 is not a number > 0; fix or "
        "drop the row.")


def test_recommend_says_when_the_sweep_never_varied_an_axis_it_is_asked_about(tmp_path, capsys):
    """One token budget: the lr law has no D term, so --tokens cannot move the LR; the
    recommendation says so rather than answer 1e12 tokens like 1e8."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    frame = synthetic_runs(Truth(lr=(0.5, -0.3, 0.0, 0.0)), n_values=[1e6, 2e6, 4e6, 8e6],
                           d_values=[1e8], b_values=[SEQ_LEN * 64], noise=0.001, seed=5)
    log_sweep(uri, "one_budget", frame)
    base = ["--tracking-uri", uri, "recommend", "one_budget", "--params", "8e7", "--n-boot", "50"]
    assert main([*base, "--tokens", "1e12", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["lr"]["held_fixed"] == {"D": 1e8, "B": SEQ_LEN * 64}
    assert main([*base, "--tokens", "1e12"]) == 0
    out = capsys.readouterr().out
    assert ("the sweep held D at 100,000,000 tokens, so the law has no D term and --tokens "
            "does not enter this value: sweep train.tokens") in out
    # no --batch and no batch law: the LR is for the one batch the sweep trained at
    assert ("the sweep held B at 8,192 tokens a step: this LR is for that batch; sweep "
            "train.batch_size to learn how it moves with B") in out


@pytest.mark.parametrize(("column", "row", "value", "message"), [
    ("loss", 3, -3.4, "line 5: loss=-3.4 is not a number > 0; fix or drop the row."),
    ("N", 0, 0.0, "line 2: N=0 is not a number > 0; fix or drop the row."),
    ("lr", 7, np.inf, "line 9: lr=inf is not a number > 0; fix or drop the row."),
    ("D", 2, "400M", "line 4: D='400M' is not a number > 0; write it as a plain number (4e8, "
                     "not 400M)."),
    ("wd", 4, -0.1, "line 6: wd=-0.1 is not a number >= 0; fix or drop the row."),
])
def test_a_bad_number_in_a_csv_is_refused_by_line(tmp_path, capsys, column, row, value,
                                                  message):
    """One negative loss or a "400M" would otherwise be a diverged run, a slice of its own or
    a fit of the logarithm of a negative number."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5])
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert err == f"error: CSV {tmp_path / 'runs.csv'}, {message}"


def test_a_group_key_empty_for_some_runs_of_a_csv_is_refused_by_line(tmp_path, capsys):
    """An empty `model.param` cell (or a short row) made a group `model.param=nan`."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5])
    frame["model.param"] = "mup"
    frame["model.param"] = frame["model.param"].astype(object)
    frame.loc[[4, 6], "model.param"] = None
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert err == (f"error: CSV {tmp_path / 'runs.csv'}, line 6 (and 1 more rows): model.param "
                   "is empty where other runs give it; give every run its model.param, or drop "
                   "the column.")


def test_an_infinite_loss_in_a_csv_is_a_diverged_run(tmp_path, capsys):
    from fitter.data import read_csv

    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5])
    frame = frame.drop(columns=["status"])
    frame.loc[3, "loss"] = np.inf
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert read_csv(tmp_path / "runs.csv").table.loc[3, "status"] == "diverged"


def test_a_csv_whose_finished_run_has_no_loss_or_whose_run_is_shorter_than_a_batch(
        tmp_path, capsys):
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5])
    frame.loc[5, ["loss", "status"]] = [np.nan, "finished"]
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert err.endswith("line 7: the run is `finished` but has no loss; give its final loss, "
                        "or mark it `diverged` or `failed`.")
    frame.loc[5, "loss"] = np.inf  # (was counted finished, then dropped without a word)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert err.endswith("line 7: the run is `finished` but its loss is inf; give its final "
                        "loss, or mark it `diverged` or `failed`.")
    millions = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9],
                              b_values=[1e5]).assign(D=1000.0)  # D in millions of tokens
    millions.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert "run r0 has D=1000 training tokens, less than one batch of B=100000 tokens" in err


def test_a_varying_column_no_law_reads_is_said(tmp_path, capsys):
    """`param` for `model.param`: muP and SP would silently share one law."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5],
                           noise=0.001)
    frame["param"] = ["mup", "sp"] * (len(frame) // 2) + ["mup"] * (len(frame) % 2)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--law", "lr",
                 "--out", str(tmp_path / "out"), "--n-boot", "20"]) == 0
    err = capsys.readouterr().err
    assert (f"note: CSV {tmp_path / 'runs.csv'}: column param varies but no law reads it; name "
            "a column by its dotted config key (e.g. model.param)") in err
    # a seed column is replicates of each point, not a column to drop
    frame = frame.drop(columns=["param"]).assign(seed=[0, 1] * (len(frame) // 2)
                                                 + [0] * (len(frame) % 2))
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--law", "lr",
                 "--out", str(tmp_path / "out"), "--n-boot", "20"]) == 0
    assert "varies but no law reads it" not in capsys.readouterr().err


def test_no_bootstrap_fits_without_intervals(tmp_path, capsys):
    """--n-boot 0: the laws and their plots, no intervals (and no crash on an empty bootstrap)."""
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0), loss=(2.0, 300.0, 1500.0, 0.3, 0.35))
    frame = synthetic_runs(truth, n_values=[1e6, 2e6, 4e6, 8e6], d_values=[1e8, 3e8, 1e9],
                           b_values=[1e5], noise=0.001, seed=5)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--out",
                 str(tmp_path / "out"), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("points, no intervals: --n-boot 0)") == 2  # the loss law and the lr law
    doc = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert doc["laws"]["lr"]["ci"] is None and doc["laws"]["loss"]["ci"] is None
    assert doc["laws"]["lr"]["coef"]["a_N"] == pytest.approx(-0.3, abs=0.05)


def test_fit_and_recommend_arguments_that_cannot_work_are_one_sentence(store, tmp_path, capsys):
    uri, _ = store
    (tmp_path / "a_file").write_text("x")
    base = ["--tracking-uri", uri, "fit", "demo", "--law", "lr", "--n-boot", "20"]
    err = error_of(capsys, [*base, "--out", str(tmp_path / "a_file" / "fit")])
    assert err == (f"error: --out {tmp_path / 'a_file' / 'fit'}: {tmp_path / 'a_file'} is a "
                   "file, not a folder; give a folder you can write fit.json and the plots to.")
    err = error_of(capsys, [*base, "--out", "/proc/no/such/place"])
    assert err.startswith("error: --out /proc/no/such/place: cannot write there")
    refused = tmp_path / "refused" / "fit"  # (a fit refused makes no folder: it left it empty)
    err = error_of(capsys, [*base, "--group", "foo=bar", "--out", str(refused)])
    assert err.startswith("error: --group foo=bar: foo does not vary in sweep demo")
    assert not (tmp_path / "refused").exists()
    err = error_of(capsys, [*base, "--pool", "--group", "model.param=sp"])
    assert err == ("error: --pool fits one law across every group and --group fits one "
                   "group: give one of them.")
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path)])
    assert err == f"error: --from-csv {tmp_path} is a folder; give the CSV file in it."
    err = error_of(capsys, ["--tracking-uri", uri, "recommend", "demo", "--params", "1e9",
                            "--tokens", "1e10", "--group", "model.param=mup"])
    # (as `sweep fit --group` says it: --group chooses among the runs, like fit's)
    assert err == ("error: --group model.param=mup: model.param does not vary in sweep demo "
                   "(every run has model.param=mup); the keys that do: N, train.tokens.")
    err = error_of(capsys, ["--tracking-uri", uri, "recommend", "demo", "--params", "1e9",
                            "--tokens", "1e10", "--pool"])  # (as `sweep fit` takes it)
    assert err == ("error: sweep recommend has no --pool: a law pooled over groups (muP with "
                   "SP) mixes LRs that mean different things, so it recommends none; give the "
                   "group whose laws to use, e.g. --group model.param=mup.")


def test_recommend_says_below_the_data_and_refuses_a_batch_in_the_wrong_unit(store, capsys):
    uri, _ = store
    base = ["--tracking-uri", uri, "recommend", "demo", "--params", "8e7"]
    assert main([*base, "--tokens", "1e7", "--batch", str(SEQ_LEN * 64)]) == 0
    out = capsys.readouterr().out
    assert "D 10× below the data" in out  # the sweep's D runs from 1e8
    assert main([*base, "--tokens", "1e7", "--batch", str(SEQ_LEN * 64), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lr"]["extrapolation"]["D"] == -10.0
    err = error_of(capsys, [*base, "--tokens", "1e9", "--batch", "100"])
    assert err == ("error: --batch 100 is less than one sequence of 128 tokens: --batch is "
                   "tokens per optimizer step, e.g. --batch 32768 for 256 sequences.")
    err = error_of(capsys, [*base, "--tokens", "1e6", "--batch", "2e6"])
    assert err == ("error: --batch 2e+06 tokens per step is more than the run's --tokens "
                   "1e+06: give both in tokens.")


def test_a_csv_that_varies_width_without_n_says_n_is_missing(tmp_path, capsys):
    """It said 'add values along model.width', which the CSV had."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5])
    frame["model.width"] = frame["N"].map({1e6: 64, 4e6: 128, 1.6e7: 256})
    frame.drop(columns=["N"]).to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv"), "--law", "lr"])
    assert err == ("error: the lr law reads N, which the runs do not give, while their "
                   "model.width varies; add the column N: parameters N (readout in, input "
                   "embedding out).")


def test_fit_of_a_sweep_whose_trials_have_not_begun_says_wait_not_launch(tmp_path, capsys):
    # A sweep just launched (its parent run, no trial yet) was told to `sweep launch`.
    uri = f"sqlite:///{tmp_path}/m.db"
    log_sweep(uri, "early", pd.DataFrame(columns=["lr", "wd", "B", "D", "N", "loss", "status"]))
    capsys.readouterr()  # (MLflow's lines as it creates the store)
    assert error_of(capsys, ["--tracking-uri", uri, "fit", "early"]) == (
        "error: sweep 'early' has no trial runs yet: wait for its first trials to end (`sweep "
        "status early`), or run them (`sweep resume early`).")


def test_pool_on_runs_that_form_one_group_says_it_changes_nothing(store, capsys):
    # --group on such runs is refused; --pool was silently ignored.
    uri, path = store
    assert main(["--tracking-uri", uri, "fit", "demo", "--pool", "--law", "lr", "--n-boot", "0",
                 "--out", str(path / "fit-pool")]) == 0
    assert "note: --pool changes nothing here: no key (model.param, the data, ...) splits " \
        "these runs into groups" in capsys.readouterr().err


def test_a_csv_in_another_encoding_is_read_or_refused_in_one_sentence(tmp_path, capsys):
    # A Latin-1 export raised UnicodeDecodeError with its stack; a UTF-16 one (a spreadsheet's
    # "Unicode" export, with its byte-order mark) is read as it is.
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5])
    text = frame.assign(note="café").to_csv(index=False)
    (tmp_path / "latin1.csv").write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xe9")
    assert error_of(capsys, ["fit", "--from-csv", str(tmp_path / "latin1.csv")]) == (
        f"error: CSV {tmp_path / 'latin1.csv'} is not UTF-8 text (byte 0xe9 at offset {offset}); "
        "save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet) and pass it again.")
    (tmp_path / "utf16.csv").write_bytes(text.encode("utf-16"))
    assert main(["fit", "--from-csv", str(tmp_path / "utf16.csv"), "--law", "lr", "--n-boot",
                 "0", "--out", str(tmp_path / "fit")]) == 0
    doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert doc["n_runs"] == len(frame)


def test_text_in_a_loss_column_is_refused_not_read_as_a_divergence(tmp_path, capsys):
    """'oops' between two stable LRs became a diverged run, and moved the optimum."""
    frame = synthetic_runs(Truth(), n_values=[1e6], d_values=[1e9], b_values=[1e5])
    frame["loss"] = frame["loss"].astype(object)
    frame.loc[3, "loss"] = "oops"
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert err == (f"error: CSV {tmp_path / 'runs.csv'}, line 5: loss='oops' is not a number > "
                   "0; write it as a plain number, or leave it empty for a run that diverged.")


@pytest.mark.parametrize(("status", "shown"), [("ok", "'ok'"), ("", "empty")])
def test_an_unknown_status_in_a_csv_is_refused_by_line(tmp_path, capsys, status, shown):
    """`ok` (or an empty cell) dropped the run from the fit without a word."""
    frame = synthetic_runs(Truth(), n_values=[1e6], d_values=[1e9], b_values=[1e5])
    frame["status"] = frame["status"].astype(object)
    frame.loc[2, "status"] = status
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert err == (f"error: CSV {tmp_path / 'runs.csv'}, line 4: status is {shown}; write one "
                   "of finished, diverged, failed, interrupted, pruned, running (a run the fit "
                   "should use is finished or diverged), or drop the status column.")


def test_mlflow_run_statuses_in_any_case_are_read(tmp_path):
    from fitter.data import read_csv

    frame = synthetic_runs(Truth(), n_values=[1e6], d_values=[1e9], b_values=[1e5])
    frame["status"] = frame["status"].str.upper()
    frame.loc[0, "status"] = "KILLED"
    frame.to_csv(tmp_path / "runs.csv", index=False)
    statuses = read_csv(tmp_path / "runs.csv").table["status"]
    assert statuses[0] == "interrupted"
    assert set(statuses[1:]) <= {"finished", "diverged"} and (statuses == "finished").sum() > 3


def test_repeated_rows_count_once_and_are_said(tmp_path, capsys):
    """A file concatenated with itself made every slice's interval a point."""
    from fitter.data import read_csv

    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6], d_values=[1e9], b_values=[1e5],
                           noise=0.002, seed=3)
    pd.concat([frame, frame]).to_csv(tmp_path / "runs.csv", index=False)
    runs = read_csv(tmp_path / "runs.csv")
    assert len(runs.table) == len(frame)
    assert capsys.readouterr().err == (
        f"note: CSV {tmp_path / 'runs.csv'}: {len(frame)} rows repeat an earlier row exactly "
        f"(the first at line {len(frame) + 2}); each run is counted once\n")


def test_an_optimum_at_the_stability_limit_is_said_with_the_lr_that_narrows_it(tmp_path,
                                                                               capsys):
    """fit.json said edge=diverged, the summary printed it as a bracketed optimum."""
    rows = [(1e-3, 3.4), (2e-3, 3.2), (4e-3, 3.1), (8e-3, 3.05), (1.6e-2, None), (3.2e-2, None)]
    pd.DataFrame({"N": 1e6, "D": 1e9, "B": 65536, "lr": [r[0] for r in rows],
                  "loss": [r[1] for r in rows]}).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--out",
                 str(tmp_path / "fit")]) == 0
    out = capsys.readouterr().out
    assert ("  the loss still falls at optim.lr=0.008, and the next LR up diverged: the optimum "
            "is at the stability limit, between the two (optim.lr=choice(0.0113) would narrow "
            "it)") in out
    # a divergence between finished LRs that beat the LR below it: a conflict, said as one
    pd.DataFrame({"N": 1e6, "D": 1e9, "B": 65536, "lr": [5e-3, 1e-2, 2e-2, 4e-2, 8e-2],
                  "loss": [3.2, 3.1, None, 3.05, 3.3]}).to_csv(tmp_path / "c.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "c.csv"), "--out",
                 str(tmp_path / "fit-c")]) == 0
    out = capsys.readouterr().out
    assert ("1 slice left out: a run diverged at an LR that finished runs at or above it "
            "contradict (check or rerun the runs that diverged)") in out
    assert ("a run diverged at optim.lr=0.02 but runs at 0.04, 0.08 finished with a lower loss "
            "than the optimum below it (optim.lr=0.01, loss 3.1000): the slice is left out of "
            "the laws; check or rerun the runs that diverged") in out


def test_a_flaky_run_at_the_lowest_lr_is_a_conflict_not_every_lr_diverged(tmp_path, capsys):
    """One seed of two diverged at the lowest LR of a slice whose other runs made a clean
    parabola: the summary said "every LR diverged" of it (a stranger's CSV)."""
    rows = []
    for n, vertex in ((1e6, -2.0), (4e6, -2.3), (1.6e7, -2.6)):
        for seed in (0, 1):
            for lr in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
                flaky = n == 4e6 and seed == 1 and lr == 1e-3
                rows.append({"N": n, "D": 1e9, "B": 65536, "lr": lr, "seed": seed,
                             "loss": None if flaky else 3.0 + (np.log10(lr) - vertex) ** 2
                             + 0.001 * seed, "status": "diverged" if flaky else "finished"})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--out",
                 str(tmp_path / "fit"), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "every LR diverged" not in out
    assert ("    N=4e+06: no optimum: a run diverged at the lowest LR, optim.lr=0.001, where "
            "runs finished (left out of the laws; check it)") in out
    assert ("  N=4e+06: a run diverged at optim.lr=0.001 but runs at it and at 0.003, 0.01, "
            "0.03, 0.1 finished: the slice is left out of the laws") in out


def test_a_csv_with_no_usable_rows_does_not_say_wait_for_the_sweep(tmp_path, capsys):
    (tmp_path / "runs.csv").write_text("N,D,B,lr,loss,status\n1e6,1e9,65536,0.01,3,running\n")
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert err == (f"error: {tmp_path / 'runs.csv'} has no finished or diverged runs to fit "
                   "(its 1 row is running); the fit reads rows whose status is finished (with "
                   "a loss) or diverged.")


def test_the_loss_law_averages_seeds_before_taking_the_best_setting():
    """The minimum over every run at an (N, D) was the luckiest seed's loss."""
    from fitter.data import from_short_frame
    from fitter.fit import fit_runs

    truth = Truth(loss=(2.0, 300.0, 1500.0, 0.3, 0.35))
    frame = synthetic_runs(truth, n_values=[1e6, 2e6, 4e6, 8e6, 1.6e7],
                           d_values=[1e8, 3e8, 1e9, 3e9], b_values=[1e5], noise=0.0, seed=1)
    seeds = pd.concat([frame.assign(seed=s, loss=frame["loss"] + d)
                       for s, d in enumerate((-0.05, 0.0, 0.05))], ignore_index=True)
    law = fit_runs(from_short_frame(seeds, source="seeds"), laws=("loss",), n_boot=0).laws["loss"]
    alone = fit_runs(from_short_frame(frame, source="one"), laws=("loss",), n_boot=0).laws["loss"]
    assert law.coef["E"] == pytest.approx(alone.coef["E"], rel=1e-6)  # not 0.05 lower


def test_a_best_slice_at_the_grid_edge_is_not_called_fitted(tmp_path, capsys):
    lrs = [1e-3, 2e-3, 4e-3]
    rows = [{"N": 1e6, "D": d, "B": 65536, "lr": lr, "loss": 3.0 + 0.1 * i + 1e-9 * d}
            for d in (1e8, 1e9) for i, lr in enumerate(lrs)]  # best at the lowest LR
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--out",
                 str(tmp_path / "fit")]) == 0
    out = capsys.readouterr().out
    assert ("best slice: D=1e+08 optim.lr=0.001 (measured loss 3.1000; not bracketed: its best "
            "LR is the edge of those tried)") in out


def test_recommend_reads_a_csv_as_fit_does(tmp_path, capsys):
    truth = Truth(lr=(0.5, -0.3, 0.0, 0.0))
    frame = synthetic_runs(truth, n_values=[1e6, 2e6, 4e6], d_values=[1e8, 3e8, 1e9],
                           b_values=[SEQ_LEN * 64], noise=0.0005, seed=2)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["recommend", "--from-csv", str(tmp_path / "runs.csv"), "--params", "4e6",
                 "--tokens", "1e9", "--json", "--n-boot", "50"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["lr"]["value"] == pytest.approx(truth.lr_opt(4e6, 1e9, 1), rel=0.05)
    err = error_of(capsys, ["recommend", "--params", "4e6", "--tokens", "1e9"])
    assert err.startswith("error: sweep recommend needs either a sweep NAME or --from-csv FILE")


def test_an_mlflow_export_with_a_diverged_trial_is_read(tmp_path):
    """MLflow's own `status` is FINISHED for a diverged trial (it ended), which has no loss:
    read as the trial's status, it refused every export of a sweep with a divergence."""
    from fitter.data import read_csv

    frame = synthetic_runs(Truth(), n_values=[1e6], d_values=[1e9], b_values=[SEQ_LEN * 64],
                           diverge_above=2)
    assert (frame["status"] == "diverged").any()
    export = pd.DataFrame({
        "run_id": frame["run"], "status": "FINISHED", "tags.trial.status": frame["status"],
        "tags.proxysweep.kind": "trial", "params.optim.lr": frame["lr"],
        "params.derived.n_params": frame["N"], "params.train.tokens": frame["D"],
        "params.derived.batch_tokens": frame["B"],
        "metrics.final/eval_loss": frame["loss"].where(frame["status"] == "finished")})
    export.to_csv(tmp_path / "export.csv", index=False)
    table = read_csv(tmp_path / "export.csv").table
    assert list(table["status"]) == list(frame["status"])


def test_equal_rows_without_a_run_column_are_replicates_and_lines_keep_their_numbers(
        tmp_path, capsys):
    from fitter.data import read_csv

    rows = "N,D,B,lr,loss\n" + "1e6,1e9,65536,0.01,3.1\n" * 2 + "1e6,1e9,65536,0.02,3.0\n"
    (tmp_path / "seeds.csv").write_text(rows)
    assert len(read_csv(tmp_path / "seeds.csv").table) == 3  # two seeds that agree, kept
    assert "1 row repeats an earlier row exactly (the first at line 3); with no run or seed " \
           "column they count as replicates" in capsys.readouterr().err
    (tmp_path / "runs.csv").write_text("run,N,D,B,lr,loss\nr1,1e6,1e9,65536,0.01,3.1\n"
                                       "r1,1e6,1e9,65536,0.01,3.1\nr2,1e6,1e9,65536,0.02,3.0\n"
                                       "r3,1e6,1e3,65536,0.04,3.2\n")
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")])
    assert "run r3 has D=1000 training tokens" in err
    (tmp_path / "lines.csv").write_text("N,D,B,lr,loss,seed\n1e6,1e9,65536,0.01,3.1,0\n"
                                        "1e6,1e9,65536,0.01,3.1,0\n1e6,1e9,65536,0.02,3.0,0\n"
                                        "1e6,1e3,65536,0.04,3.2,0\n")
    err = error_of(capsys, ["fit", "--from-csv", str(tmp_path / "lines.csv")])
    assert "line 5 has D=1000 training tokens" in err  # (the file's own line)


def test_the_loss_law_leaves_out_settings_where_a_seed_diverged():
    """Two of three seeds diverged: the survivor's loss, a lucky one, was the setting's mean."""
    from fitter.data import from_short_frame
    from fitter.fit import fit_runs

    truth = Truth(loss=(2.0, 300.0, 1500.0, 0.3, 0.35))
    frame = synthetic_runs(truth, n_values=[1e6, 2e6, 4e6, 8e6, 1.6e7],
                           d_values=[1e8, 3e8, 1e9, 3e9], b_values=[1e5], noise=0.0, seed=1)
    seeds = pd.concat([frame.assign(seed=s) for s in range(3)], ignore_index=True)
    best = seeds[seeds["seed"] == 0].groupby(["N", "D"])["loss"].idxmin()
    lucky = seeds.loc[best].iloc[0]
    survivor = seeds.index[(seeds["N"] == lucky["N"]) & (seeds["D"] == lucky["D"])
                           & (seeds["lr"] == lucky["lr"])]
    seeds.loc[survivor[0], "loss"] -= 0.5  # the survivor is lucky
    seeds.loc[survivor[1:], ["loss", "status"]] = [np.nan, "diverged"]
    law = fit_runs(from_short_frame(seeds, source="s"), laws=("loss",), n_boot=0).laws["loss"]
    point = law.points[(law.points["N"] == lucky["N"]) & (law.points["D"] == lucky["D"])]
    assert float(point["loss"].iloc[0]) > lucky["loss"] - 0.1  # not the lucky survivor's


def test_a_recommended_lr_above_one_is_said_to_be_out_of_the_law_s_reach():
    """A fitted a_D of +0.94 recommended lr 765.8 at 2e10 tokens with no word beyond the
    extrapolation ratio; the words were the terminal's only (--json had none of them)."""
    from fitter.data import from_short_frame
    from fitter.fit import fit_runs
    from fitter.recommend import format_recommendation, recommend

    frame = synthetic_runs(Truth(lr=(6.3e-10, 0.0, 0.9, 0.0)), n_values=[1e7],
                           d_values=[1e8, 3e8, 1e9], b_values=[1e5], noise=0.001)
    result = fit_runs(from_short_frame(frame, source="s"), laws=("lr",), n_boot=0)
    rec = recommend(result, params=1e7, tokens=2e10)
    said = ("an AdamW learning rate above 1 trains no model: the law does not hold out here "
            "(check its exponents and the slices behind it in `sweep fit`)")
    assert rec["lr"]["value"] > 1 and rec["lr"]["warnings"] == [
        "D lies 20× beyond the sweep's, whose D spans 10×: farther out than the data reaches "
        "across, so the interval holds only if the law keeps its slope out there; sweep a "
        "wider range to test it", said]
    assert said in format_recommendation(rec)
    rec = recommend(result, params=1e7, tokens=2e8)
    assert rec["lr"]["value"] < 1 and "warnings" not in rec["lr"]
    assert "warnings" not in recommend(result, params=1e7, tokens=1e10)["lr"]  # (10×: as far
    # out as the data spans)
    assert "trains no model" not in format_recommendation(rec)
    far = recommend(result, params=1e7, tokens=1e-5 * 1e8)  # (below the data, as far)
    assert far["lr"]["warnings"] == [
        "D lies more than 10,000× outside what the sweep trained: a power law is rarely "
        "checked that far out; take this as a guess, or sweep nearer sizes"]
    assert far["lr"]["warnings"][0] in format_recommendation(far)


def test_a_csv_separated_by_semicolons_or_tabs_reads_as_the_comma_one(tmp_path, capsys):
    """A spreadsheet's export in many locales (`;`, decimal commas) or a tab-separated file
    read as one column, refused as 'lacks a loss column' while listing it; a header with a
    stray space likewise."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5],
                           noise=0.001)
    frame.to_csv(tmp_path / "comma.csv", index=False)
    frame.to_csv(tmp_path / "semicolon.csv", sep=";", index=False)
    frame.to_csv(tmp_path / "decimal_comma.csv", sep=";", decimal=",", index=False)
    frame.to_csv(tmp_path / "tab.csv", sep="\t", index=False)
    frame.rename(columns={"lr": " lr ", "loss": "loss "}).to_csv(tmp_path / "spaced.csv",
                                                                 index=False)
    assert "0,00" in (tmp_path / "decimal_comma.csv").read_text()
    coefs = {}
    for name in ("comma", "semicolon", "decimal_comma", "tab", "spaced"):
        assert main(["fit", "--from-csv", str(tmp_path / f"{name}.csv"), "--law", "lr",
                     "--json", "--out", str(tmp_path / name), "--n-boot", "0"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["n_runs"] == len(frame)
        coefs[name] = doc["laws"]["lr"]["coef"]
    assert coefs["comma"]["a_N"] == pytest.approx(-0.3, abs=0.05)
    for name in ("semicolon", "decimal_comma", "tab", "spaced"):
        assert coefs[name] == pytest.approx(coefs["comma"], rel=1e-9)


def test_a_column_named_in_another_case_is_refused_with_the_name_to_write(tmp_path, capsys):
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6], d_values=[1e9], b_values=[1e5])
    frame.rename(columns={"loss": "Loss"}).to_csv(tmp_path / "runs.csv", index=False)
    assert error_of(capsys, ["fit", "--from-csv", str(tmp_path / "runs.csv")]) == (
        f"error: CSV {tmp_path / 'runs.csv'}: column `Loss` is read as no column (names are "
        "case-sensitive); rename it `loss`.")


def test_one_run_without_n_refuses_the_lr_law_rather_than_dropping_n(tmp_path, capsys):
    """One empty N cell took N out of the lr law (fitted along D alone, from the widest model's
    optima), and `recommend` gave twice the LR, while the other laws refused the file."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e8, 1e9, 1e10],
                           b_values=[1e5], noise=0.001)
    frame.loc[5, "N"] = np.nan
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--law", "lr", "--from-csv", str(tmp_path / "runs.csv")])
    assert err == (f"error: 1 of {len(frame)} runs in {tmp_path / 'runs.csv'} lack "
                   "`derived.n_params` (N), which the lr law needs; re-sync those runs or drop "
                   "them.")
    # (recommend: every law's reason is this one, said once for them all)
    assert main(["recommend", "--from-csv", str(tmp_path / "runs.csv"), "--params", "1e9",
                 "--tokens", "2e10"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'runs.csv'} has no law to recommend from:\n"
        f"  1 of {len(frame)} runs in {tmp_path / 'runs.csv'} lack `derived.n_params` (N), "
        "which the loss, lr, timescale, batch and cbs laws need; re-sync those runs or drop "
        "them.\n")


def test_recommend_from_a_loss_law_alone_gives_the_loss(tmp_path, capsys):
    """Runs with N, D and a loss (the Chinchilla table) fit a loss law and no hyperparameter
    law: recommend refused ('no law gives a learning rate or batch size') rather than give the
    loss."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7, 6.4e7],
                           d_values=[1e8, 4e8, 1.6e9], b_values=[1e5], noise=0.001)
    best = frame[frame["status"] == "finished"].groupby(["N", "D"], as_index=False)["loss"].min()
    best.to_csv(tmp_path / "losses.csv", index=False)
    assert main(["recommend", "--from-csv", str(tmp_path / "losses.csv"), "--params", "1e9",
                 "--tokens", "2e10", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["loss"]["law"] == "loss" and 1.0 < doc["loss"]["value"] < best["loss"].min()
    assert "lr" not in doc and "optim.lr" in doc["unavailable"]["lr"]


def test_fit_given_a_sweep_and_a_csv_says_so_before_looking_for_the_store(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (["fit", "demo"], ["recommend", "demo", "--params", "1e9", "--tokens", "1e10"]):
        err = error_of(capsys, ["--tracking-uri", f"sqlite:///{tmp_path}/none.db", *command,
                                "--from-csv", "runs.csv"])
        assert f"sweep {command[0]} needs either a sweep NAME or --from-csv FILE (not both)" in err
    assert list(tmp_path.iterdir()) == []


def test_recommend_says_why_it_gives_no_loss(tmp_path, capsys):
    """Without a loss law (2 widths) the loss row was missing without a word, while every
    other quantity it could not give was listed as not available."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6], d_values=[1e8, 4e8, 1.6e9],
                           b_values=[1e5], noise=0.001)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    args = ["recommend", "--from-csv", str(tmp_path / "runs.csv"), "--params", "1e9",
            "--tokens", "2e10"]
    assert main([*args, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert "loss" not in rec and rec["unavailable"]["loss"].startswith(
        "the loss law needs losses at 3 or more values of N and of D")
    assert main(args) == 0
    assert "loss          not available: the loss law needs" in capsys.readouterr().out


def test_a_trial_recorded_twice_in_a_store_counts_once_by_its_latest_record(tmp_path, capsys):
    """Two child runs with one trial.id were two replicates: a stale copy 0.3 nats higher
    moved its slice's optimum and widened every interval; an exact copy narrowed them."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5],
                           noise=0.002, seed=1)
    best = int(frame.loc[frame["N"] == 4e6, "loss"].idxmin())
    stale = frame.loc[[best]].assign(loss=frame.loc[best, "loss"] + 0.3)
    log_sweep(uri, "clean", frame)
    log_sweep(uri, "twice", pd.concat([stale, frame]))  # (the stale record first)
    docs = {}
    for name in ("clean", "twice"):
        out = tmp_path / name
        assert main(["--tracking-uri", uri, "fit", name, "--out", str(out), "--law", "lr",
                     "--n-boot", "100"]) == 0
        docs[name] = json.loads((out / "fit.json").read_text())
        err = capsys.readouterr().err
    assert err == (f"note: sweep twice: 1 trial has more than one run in the store (tag "
                   f"trial.id, e.g. t{best}); each is counted once, by its latest ended run\n")
    assert docs["twice"]["n_runs"] == docs["clean"]["n_runs"] == len(frame)
    for key in ("lr_opt", "lr_lo", "lr_hi"):
        assert [s[key] for s in docs["twice"]["slices"]] == [s[key] for s in
                                                            docs["clean"]["slices"]]


def test_finished_runs_of_a_store_without_a_loss_are_named_not_dropped_silently(
        tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5],
                           noise=0.002, seed=1)
    frame.loc[[4, 5], "loss"] = np.nan  # (finished: the record lacks its final loss)
    log_sweep(uri, "cut", frame)
    assert main(["--tracking-uri", uri, "fit", "cut", "--out", str(tmp_path / "fit"),
                 "--law", "lr", "--n-boot", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    runs = {r.data.tags["trial.id"]: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name("cut").experiment_id], "tags.trial.status = 'finished'")}
    assert sorted(doc["no_loss"]) == sorted([runs["t4"], runs["t5"]])
    assert lines[0] == f"cut: {len(frame)} runs ({len(frame)} finished, 0 diverged), 3 LR slices"
    assert lines[1] == (f"  2 finished runs have no finite final loss and are left out "
                        f"({', '.join(doc['no_loss'])}): check their records")


@pytest.mark.parametrize("statuses, said", [
    (["interrupted", "interrupted"], "are interrupted; `sweep resume` runs them again."),
    (["failed", "interrupted"], "are failed, interrupted; `sweep status` shows their errors, "
                                "`sweep resume` runs them again.")])
def test_a_sweep_with_no_ended_run_says_what_finishes_them(statuses, said):
    """Interrupted runs were said to have errors `sweep status` shows (they have none)."""
    from fitter.data import from_short_frame, require
    from fitter.errors import FitError

    frame = pd.DataFrame({"run": ["a", "b"], "N": 1e6, "D": 1e9, "B": 65536, "lr": 1e-3,
                          "loss": np.nan, "status": statuses})
    with pytest.raises(FitError) as err:
        require(from_short_frame(frame, source="sweep s"), ("N",), law="lr")
    assert str(err.value) == f"sweep s has no finished or diverged runs to fit: its 2 runs {said}"


def test_a_csv_without_n_says_so_for_the_lr_law_too(tmp_path, capsys):
    """Without an N column, models of four sizes read as one slice and the lr law said "the
    sweep has one [value]; add values along train.tokens or train.batch_size" while the other
    laws said N was missing."""
    frame = synthetic_runs(Truth(), n_values=[1e6, 4e6, 1.6e7], d_values=[1e9], b_values=[1e5],
                           noise=0.001).drop(columns=["N"])
    frame.to_csv(tmp_path / "runs.csv", index=False)
    err = error_of(capsys, ["fit", "--law", "lr", "--from-csv", str(tmp_path / "runs.csv")])
    assert err == ("error: the lr law needs LR optima at 2 or more values of N, D or B, and the "
                   "runs give no N (`derived.n_params`): runs that differ in N read as one "
                   "slice; add the column N (parameters N (readout in, input embedding out)).")


def test_a_row_marked_diverged_with_a_loss_is_said(tmp_path, capsys):
    """A diverged row whose loss beat every finished run was read as diverged without a word
    (an export's mistake, most often)."""
    rows = [{"N": 1e6, "D": 1e9, "B": 65536, "lr": lr, "loss": loss, "status": status}
            for lr, loss, status in ((1e-3, 3.2, "finished"), (2e-3, 3.1, "finished"),
                                     (4e-3, 1.0, "diverged"), (8e-3, 3.3, "finished"))]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "--from-csv", str(tmp_path / "runs.csv"), "--out",
                 str(tmp_path / "fit"), "--n-boot", "0"]) == 0
    assert (f"note: CSV {tmp_path / 'runs.csv'}: 1 row marked diverged has a loss (the first at "
            "line 4): read as diverged, its loss left out; check the export") in \
        capsys.readouterr().err


def test_a_sweep_whose_every_run_diverged_is_told_the_extend_to_type():
    from fitter.data import from_short_frame, require
    from fitter.errors import FitError

    frame = pd.DataFrame({"run": ["a", "b"], "N": 1e6, "D": 1e9, "B": 65536,
                          "lr": [3e-2, 1e-1], "loss": np.nan, "status": "diverged"})
    with pytest.raises(FitError) as err:
        require(from_short_frame(frame, source="sweep demo"), ("N",), law="lr")
    assert str(err.value) == ("every one of the 2 runs in sweep demo diverged; lower `optim.lr` "
                              "(e.g. by 10×) and extend the sweep: sweep extend demo "
                              "'optim.lr=choice(0.001, 0.003, 0.01)'.")
