"""Successive halving over token budgets (`pruner: halving`): the rule, the spec, and a real
searched sweep climbing three budgets through real Optuna storage, Ray and MLflow."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from orchestrator import commands
from orchestrator.extend import extended
from orchestrator.halving import DIVERGED_ATTR, Rungs, missing, quotas, survivors
from orchestrator.spec_file import spec_from_dict
from orchestrator.status import status
from orchestrator.studies import open_storage
from trainer.errors import ConfigError

RUNGS = Rungs(budgets=(1, 2, 4), values=("1", "2", "4"))
LR = FloatDistribution(1e-4, 1e-1, log=True)


def _told(lr, value, state=TrialState.COMPLETE, **attrs):
    return create_trial(params={"optim.lr": lr}, distributions={"optim.lr": LR},
                        value=value if state == TrialState.COMPLETE else None, state=state,
                        user_attrs=attrs)


def test_the_best_half_of_a_finished_rung_climbs_and_never_a_diverged_one():
    rung = [_told(1e-3, 3.0), _told(3e-3, 2.5), _told(1e-2, 2.0, **{DIVERGED_ATTR: True}),
            _told(3e-2, 2.7), _told(6e-2, None, TrialState.FAIL)]
    # 5 used: ceil(5 / 2) = 3 climb, the diverged and the failed ones never.
    assert survivors(RUNGS, rung, quota=5) == [{"optim.lr": 3e-3}, {"optim.lr": 3e-2},
                                               {"optim.lr": 1e-3}]
    assert survivors(RUNGS, rung, quota=6) is None  # a trial still to ask
    running = [*rung[:4], _told(6e-2, None, TrialState.RUNNING)]
    assert survivors(RUNGS, running, quota=5) is None  # one still training
    above = [_told(3e-3, 2.4)]
    assert missing(survivors(RUNGS, rung, quota=5), above) == [{"optim.lr": 3e-2},
                                                               {"optim.lr": 1e-3}]


def test_quotas_follow_the_rungs_below():
    rung0 = [_told(10.0 ** -k, 3.0 - k / 10) for k in range(1, 5)]  # 4 done
    assert quotas(RUNGS, 4, [rung0, [], []]) == [4, 2, 1]  # rung 1 to fill, 2 nominal
    assert quotas(RUNGS, 4, [rung0[:3], [], []]) == [4, 2, 1]  # all nominal
    # Extended to 6 at rung 0 after rung 1 had its 2: ceil(6/2) = 3 there now.
    rung0 += [_told(0.05, 1.0), _told(0.07, 0.9)]
    rung1 = [_told(1e-4, 2.0), _told(1e-3, 2.1)]
    assert quotas(RUNGS, 6, [rung0, rung1, []]) == [6, 4, 2]
    assert Rungs((1, 2, 4, 8), ("1", "2", "4", "8")).nominal(8, 3) == 1


def test_a_void_trial_of_an_upper_rung_holds_no_place_there():
    """A climbing point whose trial was asked but never got its values (voided on resume)
    is enqueued again, and the rung's quota does not count the void one."""
    from orchestrator.studies import VOID_ATTR

    rung0 = [_told(10.0 ** -k, 3.0 - k / 10) for k in range(1, 5)]  # 4 done: 2 climb
    climbing = survivors(RUNGS, rung0, quota=4)
    void = create_trial(state=TrialState.FAIL, params={}, distributions={},
                        user_attrs={VOID_ATTR: True},
                        system_attrs={"fixed_params": climbing[1]})  # popped, then void
    rung1 = [_told(climbing[0]["optim.lr"], 2.0), void]
    assert missing(climbing, rung1) == [climbing[1]]
    assert quotas(RUNGS, 4, [rung0, rung1, []]) == [4, 2, 1]


def _runs(uri, kind):
    import mlflow

    from trainer.schema import sweep_runs

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("unit")
    return client, sweep_runs(client, exp.experiment_id, kind)


def _searched(spec_dict, **optuna_opts):
    spec_dict["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))",
                         "train.tokens": "choice(4096, 8192, 16384)"}
    spec_dict["search"] = {"optuna": {"n_trials": 4, "sampler": "random", "seed": 3,
                                      "pruner": "halving", **optuna_opts}}
    return spec_dict


@pytest.mark.parametrize("change, problem", [
    ({"per_slice": ["train.tokens"]}, "remove train.tokens from search.optuna.per_slice"),
    ({"pruner": {"halving": {"reduction_factor": 1}}}, "reduction_factor=1: give a whole"),
    ({"pruner": {"halving": {"eta": 2}}}, "unknown option 'eta'"),
])
def test_a_halving_spec_that_cannot_climb_is_refused_with_its_fix(spec_dict, change, problem):
    raw = _searched(spec_dict, **change)
    raw["search"]["optuna"]["per_slice"] = change.get("per_slice", [])
    with pytest.raises(ConfigError, match=problem):
        spec_from_dict(raw)


@pytest.mark.parametrize("tokens, problem", [
    (None, "needs budgets to climb: add a grid axis"),
    ("choice(8192)", "must be a choice of two budgets or more"),
    ("interval(4096, 8192)", "must be a choice of two budgets or more"),
])
def test_halving_needs_a_choice_of_budgets(spec_dict, tokens, problem):
    raw = _searched(spec_dict)
    if tokens is None:
        del raw["grid"]["train.tokens"]
    else:
        raw["grid"]["train.tokens"] = tokens
    with pytest.raises(ConfigError, match=problem):
        spec_from_dict(raw)


@pytest.mark.ray
@pytest.mark.slow
def test_each_budget_runs_the_best_half_of_the_one_below_and_extend_climbs_more(
        spec_dict, uri, local_ray, tmp_path):
    from orchestrator.search import prepare_search

    raw = _searched(spec_dict)
    outcome = commands.launch(spec_from_dict(raw), tracking_uri=uri, progress=False)
    assert sorted(outcome.ran.values()) == ["finished"] * 7  # 4 + 2 + 1, each trained once
    _, plan, storage = prepare_search(spec_from_dict(raw), uri)
    rungs = [optuna.load_study(study_name=plan.study_name(s), storage=open_storage(storage))
             for s in plan.slices]
    assert [s.label for s in plan.slices] == [f"train.tokens={t} seed=0"
                                              for t in (4096, 8192, 16384)]
    assert [len(r.trials) for r in rungs] == [4, 2, 1]
    for below, above in zip(rungs, rungs[1:], strict=False):
        best = sorted(below.trials, key=lambda t: t.value)
        assert [t.params for t in above.trials] == [t.params for t in best[:len(above.trials)]]
    # Every study's trial is the MLflow trial of its LR at its budget.
    report = status(uri, "unit")
    assert [(s["used"], s["n_trials"]) for s in report["slices"]] == [(4, 4), (2, 2), (1, 1)]
    assert report["counts"] == {"finished": 7}
    # Climbing costs only the increment: each LR's trunk (WSD, f = 0.2 by default) goes on
    # from its branch point at the budget below; 4 trunks, one per LR.
    _, trunks = _runs(uri, "trunk")
    assert len(trunks) == 4
    checkpoint = [t * 8 // 10 // 1024 * 1024 for t in (4096, 8192, 16384)]  # 3072, 6144, 12288
    assert sorted(t.data.metrics["final/tokens"] for t in trunks) == [
        checkpoint[0], checkpoint[0], checkpoint[1], checkpoint[2]]
    alone = 4 * 4096 + 2 * 8192 + 16384
    shared = sum(checkpoint[:1] * 2 + checkpoint[1:2] + checkpoint[2:]) + sum(
        n * (t - c) for n, t, c in zip((4, 2, 1), (4096, 8192, 16384), checkpoint, strict=True))
    assert (report["tokens_trained"], report["tokens_if_independent"]) == (shared, alone)
    _, trials = _runs(uri, "trial")
    big = next(t for t in trials if t.data.params["train.tokens"] == "16384")
    assert big.data.metrics["final/tokens_shared"] == checkpoint[2]

    # The fitter reads each budget's LRs as one slice; it never tells a study to list LRs.
    import json

    from orchestrator.cli import main
    assert main(["fit", "unit", "--tracking-uri", uri, "--out", str(tmp_path / "fit"),
                 "--n-boot", "20"]) == 0
    doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert doc["n_runs"] == 7 and len(doc["slices"]) == 3
    # (twice 4 trials leaves two LRs at the top budget, 8/4/2; 9/5/3 leaves three)
    assert all(g == "search.optuna.n_trials=9" for g in doc["next_grid"])

    again = commands.launch(spec_from_dict(raw), tracking_uri=uri, progress=False)
    assert again.ran == {} and again.already_done == 7
    # Two more LRs at the first budget: ceil(6 / 2) = 3 climb, so one more LR at 8,192
    # (if a new one is among the best 3) and the last rung follows.
    more = extended(spec_from_dict(raw), ["search.optuna.n_trials=6"])
    grown = commands.launch(more, tracking_uri=uri, progress=False)
    # its summary counts the 7 ended before it as already done, not as nothing
    assert grown.already_done == 7 and grown.trials == 7 + len(grown.ran)
    rungs = [optuna.load_study(study_name=plan.study_name(s), storage=open_storage(storage))
             for s in plan.slices]
    assert len(rungs[0].trials) == 6
    best3 = [t.params for t in sorted(rungs[0].trials, key=lambda t: t.value)[:3]]
    assert all(p in [t.params for t in rungs[1].trials] for p in best3)
    best = [t.params for t in sorted(rungs[1].trials, key=lambda t: t.value)]
    assert all(p in [t.params for t in rungs[2].trials]
               for p in best[:-(-len(best) // 2)])
    assert all(t.state.name == "COMPLETE" for r in rungs for t in r.trials)


@pytest.mark.ray
@pytest.mark.slow
def test_with_fuse_true_the_trunks_a_rung_asks_at_once_train_as_one_group(
        spec_dict, uri, local_ray, capsys):
    """Halving with `fuse: true`: the first rung's points, asked two at a time, start their
    trunks together, and those train as one fused task (not spread one per CPU, alone);
    every rung still runs the best half of the one below, each trial trained once."""
    raw = {**_searched(spec_dict), "fuse": True}
    outcome = commands.launch(spec_from_dict(raw), tracking_uri=uri, progress=False)
    assert sorted(outcome.ran.values()) == ["finished"] * 7
    assert ("fused: 2 trunks train in 1 group, 0 alone; of the first points asked (the trunks "
            "of later ones fuse as they come)") in capsys.readouterr().out
    _, trunks = _runs(uri, "trunk")
    assert len(trunks) == 4
