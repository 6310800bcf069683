"""Adaptive search end to end: real Optuna storage (SQLite), real Ray, real ~2-second trials."""

import math

import mlflow
import optuna
import pytest

from orchestrator import commands, search
from orchestrator.driver import SweepObserver
from orchestrator.extend import extended
from orchestrator.search import prepare_search, run_search
from orchestrator.spec_file import spec_from_dict
from orchestrator.status import format_status, status
from orchestrator.studies import open_storage
from orchestrator.sweep_record import stored_spec
from trainer.schema import recorded_trials, sweep_runs

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def searched(spec_dict):
    spec_dict["overrides"] += ["train.eval_every_tokens=8192"]
    spec_dict["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))",
                         "train.batch_size": "choice(8, 16)"}
    spec_dict["search"] = {"optuna": {"n_trials": 3, "per_slice": ["train.batch_size"]}}
    return spec_dict


class InFlight(SweepObserver):
    """Counts trials handed to Ray and not yet returned."""

    def __init__(self):
        self.now = self.most = 0
        self.submitted_ids = []

    def submitted(self, trial):
        self.submitted_ids.append(trial.trial_id)
        self.now += 1
        self.most = max(self.most, self.now)

    def returned(self, trial, result):
        self.now -= 1


def _run(raw, uri, observer=None):
    spec, plan, storage = prepare_search(spec_from_dict(raw), uri)
    outcome = run_search(spec, plan, tracking_uri=uri, storage=storage, progress=False,
                         observer=observer)
    return plan, storage, outcome


def _study(plan, storage, slice_index):
    return optuna.load_study(study_name=plan.study_name(plan.slices[slice_index]),
                             storage=open_storage(storage))


def _children(uri, name="unit"):
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return client, sweep_runs(client, exp.experiment_id, "trial")


def test_ask_tell_keeps_max_concurrent_in_flight_and_tells_each_result(searched, uri,
                                                                       local_ray):
    searched["max_concurrent"] = 2
    seen = InFlight()
    plan, storage, outcome = _run(searched, uri, seen)
    assert seen.most == 2  # the cap was used and kept
    client, children = _children(uri)
    assert len(children) == len(set(seen.submitted_ids)) == len(seen.submitted_ids) == 6
    loss = {c.data.tags["trial.id"]: c.data.metrics["final/eval_loss"] for c in children}
    parent = client.get_run(children[0].data.tags["mlflow.parentRunId"])
    for i, slice_ in enumerate(plan.slices):
        trials = _study(plan, storage, i).trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3
        for t in trials:  # each told value is its own trial's result
            trial = plan.trial(slice_, t.params)
            assert t.value == loss[trial.trial_id]
            assert trial.cfg.train.batch_size == (8, 16)[i]
        key = f"best/train.batch_size_{(8, 16)[i]}/seed_0"
        assert parent.data.metrics[f"{key}/final/eval_loss"] == min(t.value for t in trials)
    # The fitter takes each slice's optimum from the searched (irregular) LRs.
    from fitter.mlflow_io import load_runs
    from fitter.slices import lr_optima

    runs = load_runs(uri, "unit", histories=False)
    optima = lr_optima(runs.usable, runs.slice_keys, n_boot=20)
    assert sorted(optima["B"]) == [8 * 64, 16 * 64] and list(optima["n_runs"]) == [3, 3]
    for _, row in optima.iterrows():
        tried = [float(c.data.params["optim.lr"]) for c in children
                 if int(c.data.params["train.batch_size"]) * 64 == row["B"]]
        assert min(tried) <= row["lr_opt"] <= max(tried)
    report = status(uri, "unit")
    assert [(s["used"], s["n_trials"]) for s in report["slices"]] == [(3, 3), (3, 3)]
    assert "slice train.batch_size=16 seed=0: 3/3 trials, best" in \
        format_status(report)


def test_a_study_of_a_finite_space_asks_no_point_twice_and_extend_adds_slices(
        searched, uri, local_ray):
    """A study over 2 LRs with n_trials 4 asked each of them twice (the repeats told from
    their records, each counted): it tries each once and stops, and an extend's new slice
    trains its own points, nothing twice."""
    from orchestrator.studies import counts

    searched["grid"] = {"optim.lr": "choice(3e-3, 1e-2)", "train.batch_size": "choice(8)"}
    searched["search"]["optuna"].update({"n_trials": 2, "sampler": "random"})
    plan, storage, _ = _run(searched, uri)
    first = [t for t in _study(plan, storage, 0).trials if counts(t)]
    trained_first = {plan.trial(plan.slices[0], t.params).trial_id for t in first}
    assert len(first) == len(trained_first) == 2

    more = extended(spec_from_dict(searched), ["search.optuna.n_trials=4",
                                               "train.batch_size=choice(8, 16)"])
    seen = InFlight()
    plan, storage, _ = _run(more.to_dict(), uri, seen)
    by_slice = [[t for t in _study(plan, storage, i).trials if counts(t)] for i in (0, 1)]
    assert [len(t) for t in by_slice] == [2, 2]  # every point of each space, once
    assert all(t.state.name == "COMPLETE" for trials in by_slice for t in trials)
    ids = [[plan.trial(plan.slices[i], t.params).trial_id for t in by_slice[i]] for i in (0, 1)]
    assert ids[0] == [plan.trial(plan.slices[0], t.params).trial_id for t in first]
    assert len(set(ids[1])) == 2
    # The new slice's points were trained, each once; the first slice asked for nothing
    assert sorted(seen.submitted_ids) == sorted(ids[1])
    _, children = _children(uri)
    assert len(children) == 4
    loss = {c.data.tags["trial.id"]: c.data.metrics["final/eval_loss"] for c in children}
    assert [t.value for t in by_slice[0]] == [loss[i] for i in ids[0]]
    # Status counted n_trials against the trials in the store, and said "pending" of a sweep
    # that had nothing left.
    assert status(uri, "unit")["counts"] == {"finished": 4}


def test_a_pruned_trial_stops_at_an_eval_point_and_keeps_its_history(searched, uri,
                                                                      local_ray):
    from fitter.mlflow_io import load_runs

    searched["grid"] = {"optim.lr": "choice(1e-2, 1e-6)"}
    searched["max_concurrent"] = 1
    # Seed 4 draws 1e-2 first, then 1e-6 (checked below): the second is far worse at the
    # first eval point than the one complete trial, so the median pruner stops it there.
    searched["search"] = {"optuna": {"n_trials": 2, "sampler": "random", "seed": 4,
                                     "pruner": {"median": {"n_startup_trials": 1}}}}
    plan, storage, outcome = _run(searched, uri)
    trials = _study(plan, storage, 0).trials
    assert [t.params["optim.lr"] for t in trials] == ["0.01", "1e-06"]
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    pruned = plan.trial(plan.slices[0], trials[1].params)
    pruned_id = pruned.trial_id
    first_eval_step = 8192 // (pruned.cfg.train.batch_size * pruned.cfg.train.seq_len)
    assert outcome.ran[pruned_id] == "pruned"
    client, children = _children(uri)
    (child,) = [c for c in children if c.data.tags["trial.id"] == pruned_id]
    assert child.data.tags["trial.status"] == "pruned"
    assert child.info.status == "KILLED"
    evals = client.get_metric_history(child.info.run_id, "eval/loss")
    assert [(m.step, m.value) for m in evals] == [(first_eval_step,
                                                   trials[1].intermediate_values[1])]
    assert child.data.metrics["final/steps"] == first_eval_step  # stopped there, of 4 evals
    assert child.data.metrics["final/tokens"] == 8192 < pruned.cfg.train.tokens
    assert "final/eval_loss" not in child.data.metrics
    assert recorded_trials(uri, "unit")[pruned_id]["status"] == "pruned"
    runs = load_runs(uri, "unit", histories=False)
    assert sorted(runs.usable.lr) == [1e-2]  # the fitter reads no optimum off a pruned trial
    assert not math.isnan(trials[0].value)


def test_a_diverged_trial_is_told_a_finite_worst_value(searched, uri, local_ray):
    searched["grid"] = {"optim.lr": "choice(1e-2, 50.0)"}
    searched["max_concurrent"] = 1
    # Seed 4 draws the first choice, then the second (as in the pruning test).
    searched["search"] = {"optuna": {"n_trials": 2, "sampler": "random", "seed": 4}}
    plan, storage, outcome = _run(searched, uri)
    trials = _study(plan, storage, 0).trials
    assert [t.params["optim.lr"] for t in trials] == ["0.01", "50.0"]
    diverged = plan.trial(plan.slices[0], trials[1].params)
    assert outcome.ran[diverged.trial_id] == "diverged"
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    vocab = diverged.cfg.data.vocab_size  # 16 symbols of the synthetic source
    assert trials[1].value == pytest.approx(max(math.log(vocab), trials[0].value))


def test_a_config_another_sweep_finished_is_told_from_its_summary_without_training(
        searched, uri, local_ray):
    searched["grid"] = {"optim.lr": "choice(3e-3)", "train.batch_size": "choice(8)"}
    searched["search"]["optuna"]["n_trials"] = 1
    _run(searched, uri)
    _, (first,) = _children(uri)
    # Another sweep over the same storage root asks for the same config.
    plan, storage, outcome = _run({**searched, "name": "other"}, uri)
    assert outcome.ran == {}  # nothing trained here ...
    assert list(outcome.found_ended.values()) == ["finished"]  # ... it was found ended
    (trial,) = _study(plan, storage, 0).trials
    assert trial.state.name == "COMPLETE"
    assert trial.value == first.data.metrics["final/eval_loss"]
    _, (recorded,) = _children(uri, "other")  # and recorded in this sweep (re-sync)
    assert recorded.data.tags["trial.id"] == first.data.tags["trial.id"]
    assert recorded.data.metrics["final/eval_loss"] == trial.value


def test_a_searched_sweep_with_fuse_asks_points_in_groups_and_tells_each(searched, uri,
                                                                         local_ray):
    import json
    from pathlib import Path

    searched["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))"}
    searched["search"] = {"optuna": {"n_trials": 4, "sampler": "random", "seed": 1}}
    searched["fuse"] = 2
    seen = InFlight()
    plan, storage, outcome = _run(searched, uri, seen)
    trials = _study(plan, storage, 0).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted(outcome.ran.values()) == ["finished"] * 4
    _, children = _children(uri)
    loss = {c.data.tags["trial.id"]: c.data.metrics["final/eval_loss"] for c in children}
    for t in trials:  # each told value is its own trial's result
        assert t.value == loss[plan.trial(plan.slices[0], t.params).trial_id]
    # Asked two at a time and trained as groups of two (4 in flight on 2 CPUs): the members
    # of a group log the group's tokens/s at every step, so the four show two curves.
    assert len(seen.submitted_ids) == 4 and seen.most == 4
    curves = set()
    for t in trials:
        trial = plan.trial(plan.slices[0], t.params)
        rows = (Path(trial.cfg.storage_root) / trial.trial_id / "metrics.jsonl").read_text()
        curves.add(json.dumps([r["perf/tokens_per_s"] for r in map(json.loads, rows.splitlines())
                               if "perf/tokens_per_s" in r]))
    assert len(curves) == 2


def test_fuse_true_trains_what_each_study_asks_at_once_as_one_group(searched, uri, local_ray):
    """`fuse: true` on 2 CPUs, two studies of 4 points: each study asks 2 at a time (half its
    points at most, so it asks twice and sees results between) and those 2 train as one
    group, not spread one per CPU and so alone: 4 groups of 2, no trial alone, and neither
    study asks all its points before the other starts."""
    import json
    from pathlib import Path

    searched["search"] = {"optuna": {"n_trials": 4, "per_slice": ["train.batch_size"],
                                     "sampler": "random", "seed": 1}}
    searched["fuse"] = True
    plan, storage, outcome = _run(searched, uri)
    assert sorted(outcome.ran.values()) == ["finished"] * 8
    for i, slice_ in enumerate(plan.slices):
        trials = _study(plan, storage, i).trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4
        curves: dict[str, int] = {}
        for t in trials:  # a group's members log the group's tokens/s at every step
            trial = plan.trial(slice_, t.params)
            rows = (Path(trial.cfg.storage_root) / trial.trial_id / "metrics.jsonl").read_text()
            curve = json.dumps([r["perf/tokens_per_s"] for r in map(json.loads, rows.splitlines())
                                if "perf/tokens_per_s" in r])
            curves[curve] = curves.get(curve, 0) + 1
        assert sorted(curves.values()) == [2, 2]


def test_told_trials_whose_ends_never_reached_the_store_are_recorded_by_the_next_launch(
        searched, uri, local_ray, capsys):
    # A driver killed after telling a study a trial's end and before that trial's end write
    # reached MLflow leaves a told Optuna trial with a record still `running`.
    from pathlib import Path

    searched["grid"] = {"optim.lr": "choice(1e-2, 1e-6)"}
    searched["max_concurrent"] = 1
    # (as in the test above: the second trial is pruned at its first eval point)
    searched["search"] = {"optuna": {"n_trials": 2, "sampler": "random", "seed": 4,
                                     "pruner": {"median": {"n_startup_trials": 1}}}}
    spec = spec_from_dict(searched)
    commands.launch(spec, tracking_uri=uri, progress=False)
    client, children = _children(uri)
    ended = {c.data.tags["trial.id"]: (c.data.tags["trial.status"], c.info.status)
             for c in children}
    assert sorted(ended.values()) == [("finished", "FINISHED"), ("pruned", "KILLED")]
    for child in children:
        client.set_tag(child.info.run_id, "trial.status", "running")
        client.update_run(child.info.run_id, status="RUNNING")
    runs = Path(searched["storage_root"])
    mtimes = {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}

    again = commands.launch(spec, tracking_uri=uri, progress=False)
    assert again.ran == {}  # nothing trained again, nothing asked
    assert again.found_ended == {tid: status for tid, (status, _) in ended.items()}
    assert sorted(again.resynced) == sorted(ended)
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")} == mtimes
    _, children = _children(uri)
    assert {c.data.tags["trial.id"]: (c.data.tags["trial.status"], c.info.status)
            for c in children} == ended
    _, plan, storage = prepare_search(spec, uri)
    assert [t.state.name for t in _study(plan, storage, 0).trials] == ["COMPLETE", "PRUNED"]
    assert not search.has_work(plan, storage, uri)  # a third launch has nothing to do
    # The tracking store's records and the run directories removed (`make clean` once kept
    # optuna.db): the launch has nothing to run and says why.
    import shutil

    for child in children:
        client.delete_run(child.info.run_id)
    shutil.rmtree(runs)
    capsys.readouterr()
    again = commands.launch(spec, tracking_uri=uri, progress=False)
    assert again.ran == {} and again.already_done == 2
    err = capsys.readouterr().err
    assert "studies (sqlite:///" in err
    assert "hold 2 trials that are neither in the tracking store nor in their run " in err


def test_a_relaunch_with_fewer_trials_than_the_studies_hold_says_nothing_is_left(
        searched, uri, capsys):
    """The stored spec asks 2 trials per study and they are done; the spec file, relaunched,
    asks 1. The launch said the stored spec `holds trials not done` and kept it, though its
    studies had every trial (and `resume` had nothing to run)."""
    searched["search"]["optuna"].update(n_trials=2, per_slice=[])
    searched["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))"}
    spec = spec_from_dict(searched)
    assert commands.launch(spec, tracking_uri=uri, progress=False).ran
    capsys.readouterr()
    fewer = spec_from_dict({**searched, "search": {"optuna": {
        **searched["search"]["optuna"], "n_trials": 1}}})
    again = commands.launch(fewer, tracking_uri=uri, progress=False)
    assert again.ran == {} and again.already_done == 2
    assert "holds trials not done" not in capsys.readouterr().err
    # (the stored spec, asking more of the same studies, stays the sweep's: `status` read
    # "2/1 trials" once the file's was stored)
    assert stored_spec(uri, "unit").optuna.n_trials == 2
    # an extend that adds nothing says so; one that moves the range says there is no trial
    # left to ask there (it said so of an extend by a value the sweep had)
    stored = stored_spec(uri, "unit")
    same = extended(stored, ["search.optuna.n_trials=2"])
    assert commands.launch(same, tracking_uri=uri, progress=False, based_on=stored).ran == {}
    assert ("note: this extend adds no trial to sweep unit: its studies hold their "
            "search.optuna.n_trials=2 already, at the values given") in capsys.readouterr().err
    wider = extended(stored, ["optim.lr=tag(log, interval(1e-3, 1e-1))"])
    assert commands.launch(wider, tracking_uri=uri, progress=False, based_on=stored).ran == {}
    assert ("note: every study of sweep unit has its n_trials already: a changed range "
            "changes where the next trials are asked, and there are none; add some with "
            "`sweep extend unit search.optuna.n_trials=N` (N above 2)") in \
        capsys.readouterr().err


def test_an_interrupted_search_counts_the_points_its_studies_have_still_to_ask(
        searched, uri, local_ray, monkeypatch):
    """Its summary said "2 trials, 0 already done, ran 2 (2 interrupted)" of a study of 4,
    which `sweep status` counted 4 (2 interrupted, 2 pending)."""
    from orchestrator import driver

    take = driver._Runner.await_records

    def ctrl_c_after_the_first(self, *, timeout):
        if timeout == 0 and self.outcome.ran and not self.outcome.interrupted:
            raise KeyboardInterrupt
        return take(self, timeout=timeout)

    monkeypatch.setattr(driver._Runner, "await_records", ctrl_c_after_the_first)
    searched["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))"}
    searched["search"] = {"optuna": {"n_trials": 4}}
    searched["max_concurrent"] = 1
    _, _, outcome = _run(searched, uri)
    assert outcome.interrupted and outcome.already_done == 0
    assert outcome.trials == 4 and len(outcome.ran) < 4
    counts = status(uri, "unit")["counts"]
    assert sum(counts.values()) == 4 and counts.get("pending") == 4 - len(outcome.ran)


def test_an_asked_point_that_cannot_run_is_said_once_and_told_failed(searched, uri, local_ray,
                                                                     capsys):
    """A range too long to check value by value (193 batch sizes; its ends run): a point
    that did not validate was told failed with no word of why."""
    searched["overrides"] += ["train.micro_batch_size=8"]
    searched["grid"] = {"optim.lr": "choice(3e-3)", "train.batch_size": "range(8, 201)"}
    searched["search"] = {"optuna": {"n_trials": 1, "sampler": "random", "seed": 0}}
    plan, storage, outcome = _run(searched, uri)
    (trial,) = _study(plan, storage, 0).trials
    batch = int(trial.params["train.batch_size"])
    assert batch % 8 and trial.state.name == "FAIL" and outcome.ran == {}
    assert (f"study {plan.study_name(plan.slices[0])} asked a point that cannot run (told "
            f"failed; it counts toward n_trials): train.batch_size={batch} is not divisible by "
            f"train.micro_batch_size=8: pick a divisor of the batch") in capsys.readouterr().out
    assert status(uri, "unit")["counts"] == {"failed": 1}  # (not pending: it never runs)
