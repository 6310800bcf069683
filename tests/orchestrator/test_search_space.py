"""A searched spec: the grid grammar mapped onto Optuna, and its errors. Real Optuna storage
(SQLite), no Ray."""

import math

import optuna
import pytest
import yaml
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from orchestrator.extend import extended
from orchestrator.search_space import distribution, plan_search
from orchestrator.spec_file import spec_from_dict
from orchestrator.studies import diverged_value, open_storage, storage_url
from orchestrator.trials import expand
from trainer.errors import ConfigError

BASE = {"name": "t", "overrides": ["model=tiny", "data=synthetic", "train.tokens=65536",
                                    "schedule.warmup_tokens=0"],
        "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                 "optim.weight_decay": "choice(0.0, 0.1)",
                 "train.batch_size": "choice(8, 16)"},
        "search": {"optuna": {"n_trials": 4, "per_slice": ["train.batch_size"]}}}


@pytest.mark.parametrize("expr, expected", [
    ("interval(0.5, 2)", FloatDistribution(0.5, 2.0)),
    ("tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
    ("choice(0.0, 0.1)", CategoricalDistribution(["0.0", "0.1"])),
    ("choice(adam, sgd)", CategoricalDistribution(["adam", "sgd"])),
    ("range(1, 5)", IntDistribution(1, 4)),
    ("range(2, 11, 3)", IntDistribution(2, 8, step=3)),
    ("tag(log, range(1, 9))", IntDistribution(1, 8, log=True)),
    ("0.1", None),  # a fixed value is not searched
])
def test_grammar_maps_onto_optuna_distributions(expr, expected):
    dist, problems = distribution("k", expr)
    assert problems == []
    assert dist == expected


def test_every_problem_of_a_searched_spec_is_listed_at_once():
    raw = {**BASE, "grid": {"optim.lr": "tag(log, interval(0, 1e-1))",
                            "optim.weight_decay": "range(0, 1, 0.5)",
                            "model.depth": "tag(fast, choice(1, 2))",
                            "train.batch_size": "interval(8, 16)"}}
    with pytest.raises(ConfigError) as err:
        plan_search(spec_from_dict(raw))
    assert sorted(err.value.problems) == sorted([
        "grid.train.batch_size: interval() has no grid points; use choice() or range(), or "
        "remove the axis from per_slice",
        "grid.optim.lr: 'tag(log, interval(0, 1e-1))' needs low < high and low > 0 on a log "
        "scale; give a low end above 0, e.g. 1e-5, or drop tag(log, ...)",
        "grid.optim.weight_decay: range() with float bounds or step has no Optuna "
        "distribution; use interval() for floats or choice()",
        "grid.model.depth: tag 'fast' has no meaning in a search; only tag(log, ...) does"])


def test_a_whole_number_key_searched_as_an_interval_is_told_its_range():
    # Each point would be a float the config refuses: said twice, as "write it as a whole
    # number", with no word of the range to search instead.
    raw = {**BASE, "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                            "model.width": "tag(log, interval(32, 256))",
                            "train.batch_size": "choice(8, 16)"}}
    with pytest.raises(ConfigError) as err:
        plan_search(spec_from_dict(raw))
    assert err.value.problems == [
        "grid.model.width: 'tag(log, interval(32, 256))' draws real numbers, but model.width "
        "is a whole number: search it with tag(log, range(32, 257))"]


def test_every_problem_of_the_search_mapping_is_listed_at_once():
    raw = {**BASE, "search": {"optuna": {"n_trials": 0, "sampler": "annealing",
                                         "pruner": "halving", "per_slice": ["model.width"],
                                         "objective": "final/evalloss", "budget": 3}}}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert err.value.problems == [
        "spec: search.optuna: unknown key 'budget'; known keys are n_trials, objective, "
        "per_slice, pruner, sampler, seed, storage",
        "spec: search.optuna.n_trials=0: give the trials per study, a whole number >= 1",
        "spec: search.optuna.per_slice: 'model.width' is not a grid axis; add it to grid or "
        "remove it from per_slice",
        "spec: search.optuna.sampler='annealing' is not known; use one of gp, tpe, cmaes, "
        "random, qmc",
        "spec: search.optuna.pruner=halving needs budgets to climb: add a grid axis such as "
        "train.tokens: choice(1_000_000, 2_000_000, 4_000_000)",
        "spec: search.optuna.objective='final/evalloss': give a value every trial's summary "
        "holds, one of final/eval_loss, final/train_loss, final/wall_s, final/flops, "
        "final/tokens, final/steps (the default: final/eval_loss)"]
    # a misspelt key is said once, with the key it is close to (n_trial was also said as
    # "n_trials=None")
    raw = {**BASE, "search": {"optuna": {"n_trial": 3, "sampler": "tpe"}}}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert err.value.problems == [
        "spec: search.optuna: unknown key 'n_trial' (did you mean n_trials?); known keys are "
        "n_trials, objective, per_slice, pruner, sampler, seed, storage"]


@pytest.mark.parametrize(("per_slice", "storage", "said"), [
    (3, None, ["spec: search.optuna.per_slice=3: give the grid axes that stay a grid, one key "
               "or a list of keys, e.g. per_slice: [model.width]"]),
    ([["train.batch_size"]], None, [
        "spec: search.optuna.per_slice=[['train.batch_size']]: give the grid axes that stay a "
        "grid, one key or a list of keys, e.g. per_slice: [model.width]"]),
    (["train.batch_size", "train.batch_size"], None, [
        "spec: search.optuna.per_slice names 'train.batch_size' twice: keep one"]),
    ("train.batch_size", 3, [
        "spec: search.optuna.storage=3: give an RDB URL, e.g. sqlite:////abs/path/optuna.db or "
        "postgresql://host/db, or leave it out (a SQLite file beside the tracking store)"]),
])
def test_a_per_slice_or_storage_of_the_wrong_shape_is_one_sentence(per_slice, storage, said):
    # per_slice: 3 and a storage that was no text raised TypeError/AttributeError in the dry run
    raw = {**BASE, "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                            "train.batch_size": "choice(8, 16)"},
           "search": {"optuna": {"n_trials": 2, "per_slice": per_slice, "storage": storage}}}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert err.value.problems == said


def test_a_searched_integer_range_with_values_that_cannot_run_is_refused_at_once():
    """range(4, 17) for the batch under a micro-batch of 4 was checked at 4 and 16 only: the
    study asked 5, 7, 11, each failed with no word of why, and `status` read them pending."""
    from orchestrator.search_space import check_range_values

    raw = {**BASE, "overrides": [*BASE["overrides"], "train.micro_batch_size=4"],
           "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                    "train.batch_size": "range(4, 17)"},
           "search": {"optuna": {"n_trials": 4}}}
    with pytest.raises(ConfigError) as err:
        check_range_values(plan_search(spec_from_dict(raw)))
    assert err.value.problems == [
        "train.batch_size=5 is not divisible by train.micro_batch_size=4: pick a divisor of the "
        "batch (trial optim.lr=0.0001 train.batch_size=5 seed=0); 8 more values of "
        "grid.train.batch_size=range(4, 17) fail too (6, 7, 9, 10, 11, 13, 14, 15): search a "
        "range each of whose values runs"]
    check_range_values(plan_search(spec_from_dict({**raw, "grid": {
        **raw["grid"], "train.batch_size": "range(4, 17, 4)"}})))
    # an end that fails too: its values between were said only once the end was fixed
    with pytest.raises(ConfigError) as err:
        plan_search(spec_from_dict({**raw, "grid": {**raw["grid"],
                                                    "train.batch_size": "range(4, 20)"}}))
    assert err.value.problems == [
        "train.batch_size=19 is not divisible by train.micro_batch_size=4: pick a divisor of "
        "the batch (trial optim.lr=0.1 train.batch_size=19 seed=0)",
        "train.batch_size=5 is not divisible by train.micro_batch_size=4: pick a divisor of the "
        "batch (trial optim.lr=0.0001 train.batch_size=5 seed=0); 10 more values of "
        "grid.train.batch_size=range(4, 20) fail too (6, 7, 9, 10, 11, 13, 14, 15, 17, 18): "
        "search a range each of whose values runs"]


def test_hyperband_resources_that_optuna_takes_and_fails_on_later_are_refused():
    # HyperbandPruner(min_resource="x") is built without a word and fails at the first report
    raw = {**BASE, "search": {"optuna": {"n_trials": 2, "pruner": {
        "hyperband": {"min_resource": "x", "max_resource": 0}}}}}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert err.value.problems == [
        "spec: search.optuna.pruner.hyperband.min_resource='x': give a whole number of "
        "evaluations >= 1 (Optuna's default is 1)",
        "spec: search.optuna.pruner.hyperband.max_resource=0: give a whole number of "
        "evaluations >= 1 or auto (Optuna's default is auto)"]
    raw["search"]["optuna"]["pruner"] = {"hyperband": {"min_resource": 9, "max_resource": 3}}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert err.value.problems == [
        "spec: search.optuna.pruner.hyperband: max_resource=3 is below min_resource=9: give "
        "max_resource >= min_resource, or auto"]


def test_bad_sampler_options_are_a_user_error():
    raw = {**BASE, "search": {"optuna": {"n_trials": 2, "sampler": {"gp": {"warmup": 3}}}}}
    with pytest.raises(ConfigError, match=r"search.optuna.sampler=gp: warmup is not an option "
                                          r"of Optuna's GPSampler; its options: "):
        spec_from_dict(raw)


@pytest.mark.parametrize("search, problem", [
    ({"sampler": ["tpe"]}, "search.optuna.sampler=['tpe']: give one name, e.g. sampler: gp, "
                           "or {name: {option: value}}"),
    ({"sampler": {"tpe": {}, "gp": {}}}, "search.optuna.sampler={'tpe': {}, 'gp': {}}: give "
                                         "one name, e.g. sampler: gp, or {name: {option: "
                                         "value}}"),
    ({"pruner": {"hyperband": {"reduction_factor": 1}}},
     "search.optuna.pruner.hyperband.reduction_factor=1: give a whole number >= 2 (Optuna's "
     "default is 3)"),
    ({"pruner": "median", "objective": "final/wall_s"},
     "search.optuna.pruner=median stops trials on their eval loss, but the study minimises "
     "final/wall_s: use pruner: none (or halving), or a loss objective"),
])
def test_a_sampler_or_pruner_that_cannot_work_is_one_sentence(search, problem):
    # A list or a two-key mapping was a TypeError traceback; hyperband at factor 1 passed and
    # failed every trial at its first report (ZeroDivisionError inside Optuna).
    raw = {**BASE, "search": {"optuna": {"n_trials": 4, **search}}}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert err.value.problems == [f"spec: {problem}"]


def test_a_searched_range_the_trainer_refuses_is_reported_before_anything_runs():
    raw = {**BASE, "grid": {**BASE["grid"], "optim.weight_decay": "choice(0.0, -1.0, 0.1)"}}
    with pytest.raises(ConfigError) as err:
        plan_search(spec_from_dict(raw))
    assert any("optim.weight_decay" in p and "(2 trials)" in p for p in err.value.problems)


def test_an_asked_point_is_the_grid_trial_with_those_values(tmp_path):
    plan = plan_search(spec_from_dict(BASE))
    assert [s.label for s in plan.slices] == ["train.batch_size=8 seed=0",
                                              "train.batch_size=16 seed=0"]
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(storage=storage, study_name=plan.study_name(plan.slices[1]))
    asked = study.ask(fixed_distributions=plan.dists).params
    assert 1e-4 <= asked["optim.lr"] <= 1e-1
    assert asked["optim.weight_decay"] in ("0.0", "0.1")
    trial = plan.trial(plan.slices[1], asked)
    grid = {**BASE, "search": "grid",
            "grid": {"optim.lr": f"choice({asked['optim.lr']!r})",
                     "optim.weight_decay": f"choice({asked['optim.weight_decay']})",
                     "train.batch_size": "choice(16)"}}
    (same,) = expand(spec_from_dict(grid))
    assert trial.trial_id == same.trial_id


def test_command_line_sets_search_options_and_extend_may_only_raise_n_trials():
    spec = spec_from_dict(BASE)
    more = extended(spec, ["search.optuna.n_trials=12", "train.batch_size=choice(32)"])
    assert more.optuna.n_trials == 12
    assert more.grid["train.batch_size"] == "choice(8, 16, 32)"
    assert more.grid["optim.lr"] == BASE["grid"]["optim.lr"]
    with pytest.raises(ConfigError, match="n_trials is a total per study"):
        extended(spec, ["search.optuna.n_trials=2"])
    with pytest.raises(ConfigError) as err:
        extended(spec, ["optim.lr=1e-3", "optim.beta2=interval(0.9, 0.99)"])
    assert err.value.problems == [
        "optim.lr=1e-3: sweep t searches optim.lr over tag(log, interval(1e-4, 1e-1)); extend "
        "may move or widen that range, in the same form",
        "optim.beta2=interval(0.9, 0.99): a new searched axis would change what the studies of "
        "sweep t search, with their trials done without it; search it in a new sweep (another "
        "name)"]
    # What the studies were asked and told under stays: a new objective was told to the
    # same study as the old one's values, a new per_slice split the studies.
    with pytest.raises(ConfigError) as err:
        extended(spec, ["search.optuna.objective=final/wall_s", "search.optuna.per_slice=[]",
                        "search.optuna.sampler=tpe", "search.optuna.n_trials=6"])
    assert err.value.problems == [
        f"search.optuna.{option}: the studies of sweep t were asked and told under its "
        f"{option.partition('=')[0]}; extend may raise search.optuna.n_trials and add values, "
        f"not change {option.partition('=')[0]}: search with it in a new sweep (another name)"
        for option in ("objective=final/wall_s", "per_slice=[]", "sampler=tpe")]
    assert extended(spec, ["search.optuna.sampler=gp", "search.optuna.n_trials=6"]
                    ).optuna.n_trials == 6  # the sampler it has: no change
    with pytest.raises(ConfigError) as err:  # (the stored n_trials kept it from the hint)
        extended(spec, ["search.optuna.n_trail=8"])
    assert "unknown key 'n_trail' (did you mean n_trials?)" in str(err.value)
    wider = extended(spec, ["optim.lr=tag(log, interval(1e-5, 1.0))"])  # moved or widened
    assert wider.grid["optim.lr"] == "tag(log, interval(1e-5, 1.0))"
    grid = spec_from_dict({**BASE, "search": "grid", "grid": {"optim.lr": "choice(1e-3)"}})
    with pytest.raises(ConfigError, match="this sweep is a grid"):
        grid.with_overrides(["search.optuna.n_trials=3"])


def test_a_launch_under_a_searched_sweeps_name_keeps_what_its_studies_were_told_under():
    """A relaunch with `objective: final/wall_s` went on with the studies that held eval
    losses (extend refused the same change): `status` named a best by wall time beside
    another trial's loss. Refused as extend refuses it; n_trials and ranges may move."""
    from orchestrator.search import check_relaunch

    spec = spec_from_dict(BASE)
    optuna = BASE["search"]["optuna"]
    for change, said in (({"objective": "final/wall_s"}, "objective: final/eval_loss → "
                                                          "final/wall_s"),
                         ({"sampler": "tpe"}, "sampler: gp → tpe"),
                         ({"per_slice": []}, "per_slice: ['train.batch_size'] → []"),
                         ({"seed": 7}, "seed: 0 → 7")):
        other = spec_from_dict({**BASE, "search": {"optuna": {**optuna, **change}}})
        with pytest.raises(ConfigError) as err:
            check_relaunch(spec, other)
        assert err.value.problems == [
            f"search.optuna.{said}: the studies of sweep t were asked and told under its "
            f"{next(iter(change))}, and a launch under its name goes on with them; search with "
            f"the new {next(iter(change))} in a new sweep (give the spec another name)"]
    more = spec_from_dict({**BASE, "search": {"optuna": {**optuna, "n_trials": 12}},
                           "grid": {**BASE["grid"],
                                    "optim.lr": "tag(log, interval(1e-5, 1e-1))"}})
    check_relaunch(spec, more)  # (more trials, a wider range: as extend allows)
    check_relaunch(spec, spec_from_dict({**BASE, "search": {"optuna": {
        **optuna, "sampler": {"gp": {}}}}}))  # (the sampler it has, written otherwise)


def test_a_time_objective_under_fusion_is_said_to_tie_a_groups_members():
    """A fused member's final/wall_s is its group's: a searched sweep minimising it with
    `fuse: true` told every member of a group the same time, without a word."""
    from orchestrator.search_space import plan_search, space_notes

    optuna = {**BASE["search"]["optuna"], "objective": "final/wall_s"}
    timed = spec_from_dict({**BASE, "fuse": True, "search": {"optuna": optuna}})
    assert space_notes(plan_search(timed)) == [
        "search.optuna.objective=final/wall_s under fuse: true: a fused member's time is its "
        "whole group's (they train as one), so the members of a group tie; give --fuse off "
        "(or fuse: false) to time each trial alone"]
    assert space_notes(plan_search(timed.with_flag("fuse", False))) == []
    assert space_notes(plan_search(spec_from_dict({**BASE, "fuse": True}))) == []  # (a loss)


def test_storage_defaults_beside_the_mlflow_store_and_masked_urls_need_the_env(
        tmp_path, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    root = tmp_path / "runs"
    assert storage_url(None, f"sqlite:///{tmp_path}/mlflow.db", storage_root=root) == \
        f"sqlite:///{tmp_path}/optuna.db"
    assert storage_url("postgresql://u:pw@db/optuna", "x", storage_root=root) == \
        "postgresql://u:pw@db/optuna"
    with pytest.raises(ConfigError, match="password masked: set OPTUNA_STORAGE"):
        storage_url("postgresql://u:***@db/optuna", "x", storage_root=root)
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u:pw@db/optuna")
    assert storage_url(None, "http://mlflow:5000", storage_root=root) == \
        "postgresql://u:pw@db/optuna"
    assert storage_url("postgresql://u:***@db/optuna", "x", storage_root=root) == \
        "postgresql://u:pw@db/optuna"


def test_with_mlflow_on_a_server_the_studies_live_in_the_storage_root_from_any_folder(
        tmp_path, monkeypatch):
    """They lived in the working directory: `status` from another folder found none (and
    left an empty optuna.db there), `extend` began a new study and trained n_trials again."""
    import optuna

    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    root, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    url = storage_url(None, "http://mlflow:5000", storage_root=root, studies=["s: seed=0"])
    assert url == f"sqlite:///{root}/optuna.db"
    # a sweep launched before, whose studies are in the folder it was launched from, keeps them
    before = f"sqlite:///{elsewhere}/optuna.db"
    optuna.create_study(study_name="other: seed=0", storage=open_storage(before))
    assert storage_url(None, "http://x", storage_root=root, studies=["s: seed=0"]) == url
    optuna.create_study(study_name="s: seed=0", storage=open_storage(before))
    assert storage_url(None, "http://x", storage_root=root, studies=["s: seed=0"]) == before
    assert not root.exists()  # (asked, nothing created)


def test_an_unreachable_storage_is_one_line_without_the_password():
    with pytest.raises(ConfigError) as err:
        open_storage("postgresql+psycopg2://u:secret@127.0.0.1:1/optuna")
    (line,) = err.value.problems
    assert "secret" not in line and "u:***@127.0.0.1:1" in line
    with pytest.raises(ConfigError, match=r"^Optuna storage sqlite://rel.db: an SQLite store is "
                                          r"sqlite:///PATH.db \(three slashes"):
        open_storage("sqlite://rel.db")  # (sqlalchemy's ArgumentError, with no word of how)
    with pytest.raises(ConfigError) as err:  # (it said "(ArgumentError): fix ...")
        open_storage("/tmp/studies.db")
    assert err.value.problems == ["Optuna storage /tmp/studies.db is a path, not a database "
                                  "URL: give sqlite:////tmp/studies.db in "
                                  "search.optuna.storage or OPTUNA_STORAGE"]


@pytest.mark.parametrize("vocab, told, expected", [
    (256, [], math.log(256)),  # a uniform guess over bytes
    (256, [2.5, 3.0], math.log(256)),
    (256, [2.5, 7.0, math.inf], 7.0),  # never better than the worst seen
])
def test_a_diverged_trial_is_told_a_bounded_worst_value(vocab, told, expected):
    assert diverged_value(vocab, told) == pytest.approx(expected)


def test_a_resumed_study_does_not_draw_its_first_points_again(tmp_path):
    # A new driver's sampler, seeded as the first driver's, asked the first driver's points
    # again: half of each study's trials went to configs already done.
    from orchestrator.studies import Studies

    raw = {**BASE, "search": {"optuna": {**BASE["search"]["optuna"], "sampler": "random"}}}
    plan = plan_search(spec_from_dict(raw))
    url, name = f"sqlite:///{tmp_path}/optuna.db", plan.study_name(plan.slices[0])
    first = Studies(url, plan.search, [name])
    asked = [first.ask(name, plan.dists)[1] for _ in range(2)]
    for number in (0, 1):
        first.tell(name, number, "complete", 3.0 + number)
    again = Studies(url, plan.search, [name])
    number, params = again.ask(name, plan.dists)
    assert number == 2
    assert params["optim.lr"] not in [a["optim.lr"] for a in asked]


def test_two_drivers_racing_for_a_study_s_last_trial_ask_it_once(tmp_path):
    # A resume while the first driver runs: both read room for one more trial, both ask.
    from orchestrator.studies import Studies, counts

    raw = {**BASE, "search": {"optuna": {**BASE["search"]["optuna"], "sampler": "random"}}}
    plan = plan_search(spec_from_dict(raw))
    url, name = f"sqlite:///{tmp_path}/optuna.db", plan.study_name(plan.slices[0])
    first, second = Studies(url, plan.search, [name]), Studies(url, plan.search, [name])
    for _ in range(3):
        first.tell(name, first.ask(name, plan.dists)[0], "complete", 3.0)
    assert first.room(name) == second.room(name) == 1
    kept = first.ask(name, plan.dists)
    assert kept is not None and kept[0] == 3
    assert second.ask(name, plan.dists) is None  # asked after: voided, counts for nothing
    assert first.used(name) == second.used(name) == 4 and second.room(name) == 0
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [counts(t) for t in trials] == [True] * 4 + [False]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["RUNNING", "FAIL"]
    assert first.open_trials(name) == [(3, kept[1])]  # the kept one resumes as any other
    # the voided ask trained nothing: no later launch counts it among trials whose results
    # are gone (the three told ones have neither record nor run directory here)
    from orchestrator.search import told_unrecorded

    lost: list = []
    assert told_unrecorded(plan, url, {}, lost) == []
    assert len(lost) == 3


def test_hyperband_prunes_through_the_studies_owner(tmp_path):
    # The report/should_prune path a worker takes, on a real storage, with objective values
    # made up (the median pruner is exercised with real trials in test_search.py).
    from orchestrator.studies import Studies

    raw = {**BASE, "search": {"optuna": {"n_trials": 12, "per_slice": ["train.batch_size"],
                                         "sampler": "random", "pruner": {"hyperband": {
                                             "min_resource": 1, "max_resource": 8}}}}}
    plan = plan_search(spec_from_dict(raw))
    name = plan.study_name(plan.slices[0])
    studies = Studies(f"sqlite:///{tmp_path}/optuna.db", plan.search, [name])
    pruned = []
    for i in range(12):
        number, params = studies.ask(name, plan.dists)
        studies.watch(f"trial-{i}", name, number)
        loss = 2.5 + abs(math.log10(params["optim.lr"] / 3e-3))
        stop = next((step for step in range(1, 9)
                     if studies.report(f"trial-{i}", step, loss + 1 / step)), None)
        studies.tell(name, number, "complete" if stop is None else "pruned",
                     None if stop else loss)
        if stop is not None:
            pruned.append(number)
    trials = optuna.load_study(study_name=name,
                               storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert pruned and [t.number for t in trials if t.state.name == "PRUNED"] == pruned
    assert all(len(trials[n].intermediate_values) < 8 for n in pruned)
    assert studies.report("trial-0", 1, 9.9) is False  # a told trial takes no more reports


@pytest.mark.parametrize("dist", [FloatDistribution(1e-4, 1e-1, log=True),
                                  FloatDistribution(0.0, 1.0), IntDistribution(1, 12)])
def test_startup_points_put_one_point_in_each_stratum(dist):
    from orchestrator.search_space import startup_points

    points = [p["k"] for p in startup_points({"k": dist}, 3, seed=7)]
    scale = (lambda v: math.log(v)) if dist.log else (lambda v: v)
    lo, hi = scale(dist.low), scale(dist.high)
    strata = sorted(min(int(3 * (scale(v) - lo) / (hi - lo)), 2) for v in points)
    assert all(dist.low <= v <= dist.high for v in points)
    if isinstance(dist, IntDistribution):  # rounding may cross a stratum's edge
        assert len(set(points)) == 3 and all(isinstance(v, int) for v in points)
    else:
        assert strata == [0, 1, 2]


def test_a_model_based_study_starts_from_its_latin_hypercube(tmp_path):
    from orchestrator.search_space import STARTUP_TRIALS
    from orchestrator.studies import Studies

    plan = plan_search(spec_from_dict(BASE))  # the default sampler, tpe
    name = plan.study_name(plan.slices[0])
    studies = Studies(f"sqlite:///{tmp_path}/optuna.db", plan.search, [name], plan.dists)
    assert studies.used(name) == 0  # the design waits; it does not count toward n_trials
    lrs = [studies.ask(name, plan.dists)[1]["optim.lr"] for _ in range(STARTUP_TRIALS)]
    decades = sorted(int(math.log10(lr / 1e-4)) for lr in lrs)
    assert decades == [0, 1, 2] and studies.used(name) == STARTUP_TRIALS


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp"])
def test_a_study_over_a_finite_space_tries_each_point_once_then_stops(tmp_path, sampler):
    """6 TPE trials over 3 choices asked 2 of them (the 4 repeats told from their records,
    each counted toward n_trials): the best LR, the middle one, was never tried."""
    from orchestrator.studies import Studies

    spec = {**BASE, "grid": {"optim.lr": "choice(1e-3, 1e-2, 3e-2)",
                             "optim.weight_decay": "choice(0.0, 0.1)",
                             "train.batch_size": "choice(8)"},
            "search": {"optuna": {"n_trials": 8, "sampler": sampler, "seed": 0}}}
    plan = plan_search(spec_from_dict(spec))
    name = plan.study_name(plan.slices[0])
    studies = Studies(f"sqlite:///{tmp_path}/optuna.db", plan.search, [name], plan.dists)
    points = []
    while (asked := studies.ask(name, plan.dists)) is not None:
        points.append(tuple(sorted(asked[1].items())))
        # the loss of each point: lowest at LR 1e-2, as a sampler would be told
        studies.tell(name, asked[0], "complete", abs(math.log10(float(asked[1]["optim.lr"])) + 2)
                     + float(asked[1]["optim.weight_decay"]))
        assert len(points) <= 6
    assert len(set(points)) == len(points) == 6  # every point, once
    assert studies.used(name) == 6 and studies.exhausted(name)
    assert studies.room(name) == 2  # (the two it could not use)


def test_a_study_whose_space_is_tried_has_no_work_and_no_pending_trials(tmp_path):
    """A searched sweep whose studies had tried every point still counted n_trials: `status`
    read 3 pending and a resume started Ray to ask for nothing."""
    from orchestrator.search import has_work, search_status
    from orchestrator.studies import Studies

    spec = {**BASE, "grid": {"optim.lr": "choice(1e-3, 1e-2, 3e-2)", "train.batch_size":
                             "choice(8)"}, "search": {"optuna": {"n_trials": 6}}}
    plan = plan_search(spec_from_dict(spec))
    name = plan.study_name(plan.slices[0])
    url = f"sqlite:///{tmp_path}/optuna.db"
    studies = Studies(url, plan.search, [name], plan.dists)
    for lr in (1e-3, 1e-2):
        studies.tell(name, studies.ask(name, plan.dists)[0], "complete", lr)
    assert has_work(plan, url, f"sqlite:///{tmp_path}/m.db")
    assert search_status(plan, url)[0]["tried_all"] is False
    studies.tell(name, studies.ask(name, plan.dists)[0], "complete", 1.0)
    assert studies.ask(name, plan.dists) is None
    row = search_status(plan, url)[0]
    assert row["tried_all"] and (row["used"], row["n_trials"]) == (3, 6)
    assert not has_work(plan, url, f"sqlite:///{tmp_path}/m.db")


def test_a_study_with_trials_in_flight_starts_from_a_design_that_covers_them(tmp_path):
    # With two trials in flight, the fourth point was asked before the third result and came
    # from the sampler's random fallback (a near-duplicate of a start point).
    from optuna.trial import TrialState

    from orchestrator.search_space import STARTUP_TRIALS
    from orchestrator.studies import Studies

    plan = plan_search(spec_from_dict(BASE))
    name = plan.study_name(plan.slices[0])
    url = f"sqlite:///{tmp_path}/optuna.db"
    Studies(url, plan.search, [name], plan.dists, in_flight=2)
    waiting = optuna.load_study(study_name=name, storage=url).get_trials(
        states=(TrialState.WAITING,))
    assert len(waiting) == STARTUP_TRIALS + 1
    lrs = sorted(t.system_attrs["fixed_params"]["optim.lr"] for t in waiting)  # a stratum each
    assert [int(4 * math.log(lr / 1e-4) / math.log(1e3)) for lr in lrs] == [0, 1, 2, 3]


def test_a_bad_searched_spec_is_one_line_per_problem_from_the_cli(tmp_path, capsys):
    import yaml

    from orchestrator.cli import main

    raw = {**BASE, "grid": {**BASE["grid"], "optim.lr": "tag(log, range(0.1, 1, 0.1))"},
           "search": {"optuna": {"n_trials": 4, "per_slice": ["train.batch_size"],
                                 "sampler": "annealing"}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {path}: search.optuna.sampler='annealing' is not "
                                "known; use one of gp, tpe, cmaes, random, qmc",
                                "error: grid.optim.lr: range() with float bounds or step has no "
                                "Optuna distribution; use interval() for floats or choice()"]
    raw["search"]["optuna"]["sampler"] = "gp"
    path.write_text(yaml.safe_dump(raw))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: grid.optim.lr: range() with float bounds or step has no Optuna distribution; "
        "use interval() for floats or choice()"]


def test_dry_run_of_a_searched_sweep_lists_its_studies(tmp_path, capsys):
    import yaml

    from orchestrator.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(path),
                 "--dry-run", "search.optuna.n_trials=5"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "study train.batch_size=8 seed=0: 0 trials used, would ask 5 more",
        "study train.batch_size=16 seed=0: 0 trials used, would ask 5 more"]
    # with fusion, the points a study asks at once fit max_concurrent (each member counts)
    for cap, said in ((1, "no fused groups: max_concurrent 1 leaves room for one point at a "
                          "time (each member counts)"),
                      (3, "fused: each study asks up to 3 points at once (max_concurrent 3) "
                          "and trains them as one group; max_concurrent 3 counts each member")):
        assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(path),
                     "--dry-run", "search.optuna.n_trials=40", "--fuse", "8",
                     "--max-concurrent", str(cap)]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == said
    # under halving, what climbs depends on results to come: said (an extend's dry run said
    # "would ask 1 more" at the top budget, and the extend ran 2 there)
    halving = {**BASE, "overrides": [o for o in BASE["overrides"] if "tokens" not in o],
               "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                        "train.tokens": "choice(16384, 32768)"},
               "search": {"optuna": {"n_trials": 4, "pruner": "halving"}}}
    path.write_text(yaml.safe_dump(halving))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(path),
                 "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        # (it said "as its trials end", where a rung waits for the whole rung below)
        "halving: a budget above the first takes the best of the one below once that whole "
        "rung has ended, so its counts are for the rung below as it stands (new trials "
        "below, from an extend, can send more up)")


@pytest.mark.parametrize("lr, edge", [(1.1e-4, {"optim.lr": "low"}), (3e-3, {}),
                                      (0.09, {"optim.lr": "high"})])
def test_a_best_lr_at_the_ends_of_its_log_range_is_flagged(lr, edge):
    from orchestrator.search import at_edge

    plan = plan_search(spec_from_dict(BASE))
    assert at_edge(plan.dists, {"optim.lr": lr, "optim.weight_decay": "0.1"}) == edge


@pytest.mark.parametrize("lr, edge", [("1e-3", {"optim.lr": "lowest choice"}), ("1e-2", {}),
                                      ("3e-2", {"optim.lr": "highest choice"})])
def test_a_best_at_the_end_of_three_numeric_choices_is_flagged(lr, edge):
    """A study over choice(1e-3, 1e-2, 3e-2) whose best was 3e-2 said nothing of the
    optimum lying beyond; of two choices (weight decay on or off) one is always an end."""
    from orchestrator.search import at_edge

    plan = plan_search(spec_from_dict({**BASE, "grid": {
        **BASE["grid"], "optim.lr": "choice(1e-3, 1e-2, 3e-2)"}}))
    assert at_edge(plan.dists, {"optim.lr": lr, "optim.weight_decay": "0.1"}) == edge


def test_a_search_whose_n_trials_reach_its_points_says_so(tmp_path, capsys):
    """A study whose n_trials reach the points of its space tries each once and stops short
    of n_trials: said at the launch and the dry run, with a grid as the simpler form."""
    from orchestrator.cli import main
    from orchestrator.search_space import finite_points, space_notes

    grid = {"optim.lr": "choice(1e-3, 1e-2, 3e-2)", "optim.weight_decay": "choice(0.0, 0.1)",
            "train.batch_size": "choice(8, 16)"}
    spec = {**BASE, "grid": grid, "storage_root": str(tmp_path / "runs"),
            "search": {"optuna": {"n_trials": 6, "per_slice": ["train.batch_size"]}}}
    assert finite_points(plan_search(spec_from_dict(spec)).dists) == 6
    assert space_notes(plan_search(spec_from_dict(spec))) == [
        "search.optuna.n_trials=6 reaches the 6 points the searched space holds (optim.lr: 3 "
        "choices, optim.weight_decay: 2 choices): each study tries every point once and "
        "stops at 6 trials; a grid (the spec without `search:`) trains the same, or search an "
        "interval"]
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(path),
                 "--dry-run"]) == 0
    assert capsys.readouterr().err.startswith("note: search.optuna.n_trials=6 reaches the 6 ")
    # fewer trials than points, an integer range counted, an interval: no note
    spec["search"]["optuna"]["n_trials"] = 5
    assert space_notes(plan_search(spec_from_dict(spec))) == []
    spec["grid"]["model.depth"] = "range(1, 4)"
    assert finite_points(plan_search(spec_from_dict(spec)).dists) == 18
    spec["grid"]["optim.lr"] = "tag(log, interval(1e-4, 1e-1))"
    assert finite_points(plan_search(spec_from_dict(spec)).dists) is None


def test_an_asked_trial_that_never_got_its_values_is_void_not_in_flight(tmp_path):
    """A driver that died between a study's ask and its values (or an ask that failed) left a
    RUNNING trial without params: resuming it raised KeyError for ever. It ends failed, and
    counts neither toward n_trials nor in `sweep status`."""
    from orchestrator.studies import Studies, summaries

    raw = {**BASE, "search": {"optuna": {**BASE["search"]["optuna"], "sampler": "random"}}}
    plan = plan_search(spec_from_dict(raw))
    url, name = f"sqlite:///{tmp_path}/optuna.db", plan.study_name(plan.slices[0])
    studies = Studies(url, plan.search, [name], plan.dists)
    number, params = studies.ask(name, plan.dists)
    optuna.load_study(study_name=name, storage=url).ask()  # asked, no values: the crash
    with pytest.raises(ValueError, match="different log configuration"):
        studies.ask(name, {**plan.dists, "optim.lr": FloatDistribution(1e-4, 1e-1)})
    again = Studies(url, plan.search, [name], plan.dists)
    assert again.open_trials(name) == [(number, params)]
    assert again.used(name) == 1
    assert summaries(url, [name])[name]["used"] == 1
    states = [t.state.name for t in optuna.load_study(study_name=name, storage=url).trials]
    assert states == ["RUNNING", "FAIL", "FAIL"]


def test_a_searched_range_of_another_kind_than_its_studies_searched_is_refused(tmp_path):
    """A range may move or widen, not change its kind: a study refuses that at its next ask,
    with trials in flight (an extend that dropped tag(log) crashed mid-launch and left the
    sweep unresumable). Checked against what the studies hold, so that the spec put back in
    its old form runs again."""
    from orchestrator.search import check_studies_space
    from orchestrator.studies import Studies

    url = f"sqlite:///{tmp_path}/optuna.db"
    plan = plan_search(spec_from_dict(BASE))
    name = plan.study_name(plan.slices[0])
    Studies(url, plan.search, [name], plan.dists).ask(name, plan.dists)
    check_studies_space(plan, url)  # as it was
    check_studies_space(plan_search(extended(spec_from_dict(BASE), [
        "optim.lr=tag(log, interval(1e-5, 1.0))"])), url)  # widened
    with pytest.raises(ConfigError) as err:
        check_studies_space(plan_search(extended(spec_from_dict(BASE), [
            "optim.lr=interval(1e-3, 1e-1)", "optim.weight_decay=choice(0.0, 0.1, 0.3)"])), url)
    # (in the grammar's words, and for a choice no advice to widen it, which is refused too)
    assert err.value.problems == [
        "grid.optim.lr=interval(1e-3, 1e-1): the sweep's studies searched optim.lr as "
        "tag(log, interval(0.0001, 0.1)); give a range of that kind (tag(log, interval(...)): "
        "it may move or widen), or search this one in a new sweep (another name)",
        "grid.optim.weight_decay=choice(0.0, 0.1, 0.3): the sweep's studies searched "
        "optim.weight_decay as choice(0.0, 0.1); a study's choices cannot change: keep them, "
        "or search the new ones in a new sweep (another name)"]


def test_a_range_of_another_kind_is_said_against_the_range_searched_last(tmp_path):
    """After an extend that widened optim.lr to 1.0, a choice() for it was said against the
    sweep's first range, 0.1, which its studies no longer search."""
    from orchestrator.search import check_studies_space
    from orchestrator.studies import Studies

    url = f"sqlite:///{tmp_path}/optuna.db"
    plan = plan_search(spec_from_dict(BASE))
    name = plan.study_name(plan.slices[0])
    Studies(url, plan.search, [name], plan.dists).ask(name, plan.dists)
    wide = plan_search(extended(spec_from_dict(BASE), ["optim.lr=tag(log, interval(1e-4, 1))"]))
    Studies(url, wide.search, [name], wide.dists).ask(name, wide.dists)
    with pytest.raises(ConfigError) as err:
        check_studies_space(plan_search(extended(spec_from_dict(BASE), [
            "optim.lr=choice(1e-3)"])), url)
    assert err.value.problems == [
        "grid.optim.lr=choice(1e-3): the sweep's studies searched optim.lr as "
        "tag(log, interval(0.0001, 1)); give a range of that kind (tag(log, interval(...)): it "
        "may move or widen), or search this one in a new sweep (another name)"]


def test_extend_adds_a_budget_to_a_halving_sweep():
    """The new budget joins the rungs (it was checked alone, as one budget, and refused)."""
    raw = {**BASE, "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                            "train.tokens": "choice(16384, 32768)"},
           "search": {"optuna": {"n_trials": 4, "pruner": "halving", "sampler": "random"}}}
    more = extended(spec_from_dict(raw), ["train.tokens=choice(65536)",
                                          "search.optuna.pruner={halving: {reduction_factor: "
                                          "2}}"])  # (the default written out: no change)
    assert more.grid["train.tokens"] == "choice(16384, 32768, 65536)"
    assert more.optuna.pruner == "halving"
    assert plan_search(more).rungs.budgets == (16384, 32768, 65536)
    # A budget under a rung already climbed would be a first rung its climbers never came
    # from: "the best half" would no longer be what the rungs hold.
    with pytest.raises(ConfigError) as err:
        extended(spec_from_dict(raw), ["train.tokens=choice(8192, 24576)"])
    assert err.value.problems == [
        "train.tokens: under halving each budget is a rung that the best of the one below "
        "climb to, so a new budget goes above the sweep's largest (32,768); 8,192, 24,576 would "
        "sit under rungs already climbed: search it in a new sweep (another name)"]


def test_a_second_driver_sees_the_first_ones_asks_before_it_asks(tmp_path):
    """A resume while the first driver still ran asked from its own start count: 7 trials in
    a study of n_trials 6. Each ask now checks the room the storage has left."""
    from orchestrator.studies import Studies

    raw = {**BASE, "search": {"optuna": {**BASE["search"]["optuna"], "n_trials": 3,
                                         "sampler": "random"}}}
    plan = plan_search(spec_from_dict(raw))
    url, name = f"sqlite:///{tmp_path}/optuna.db", plan.study_name(plan.slices[0])
    first = Studies(url, plan.search, [name])
    first.ask(name, plan.dists)
    second = Studies(url, plan.search, [name])
    assert second.room(name) == 2
    first.ask(name, plan.dists)
    first.ask(name, plan.dists)
    assert second.room(name) == 0 and first.room(name) == 0


def test_a_study_whose_trials_all_diverged_has_no_best_and_says_so(tmp_path):
    """Its best was ln(vocab), the stand-in a diverged trial is told, shown as a loss with
    'at the high end of optim.lr's range: widen it' (the opposite of the advice)."""
    from orchestrator.search import search_status
    from orchestrator.status import format_status
    from orchestrator.studies import Studies

    plan = plan_search(spec_from_dict(BASE))
    url, name = f"sqlite:///{tmp_path}/optuna.db", plan.study_name(plan.slices[0])
    studies = Studies(url, plan.search, [name], plan.dists)
    for _ in range(2):
        studies.tell(name, studies.ask(name, plan.dists)[0], "diverged", vocab_size=256)
    row = next(r for r in search_status(plan, url) if r["slice"] == plan.slices[0].label)
    assert row["best"] is None and row["all_diverged"] and row["edge"] == {}
    text = format_status({"sweep": "t", "status": "finished", "trials": 2, "counts": {},
                          "running": [],
                          "best": None, "eta_s": None, "slices": [row]})
    assert (f"slice {row['slice']}: 2/4 trials, best none: every trial diverged (move "
            "optim.lr lower with sweep extend)") in text
    studies.tell(name, studies.ask(name, plan.dists)[0], "complete", 3.2)
    assert next(r for r in search_status(plan, url)
                if r["slice"] == plan.slices[0].label)["best"] == 3.2
    # one asked and never told (interrupted, or never begun): "4/4 trials" read as done
    studies.ask(name, plan.dists)
    row = next(r for r in search_status(plan, url) if r["slice"] == plan.slices[0].label)
    report = {"sweep": "t", "status": "interrupted", "trials": 4, "counts": {},
              "running": [], "best": None, "eta_s": None, "slices": [row]}
    assert (f"slice {row['slice']}: 4/4 trials, 1 asked and not ended (`sweep resume` runs "
            "them), best 3.2000") in format_status(report)
    assert f"slice {row['slice']}: 4/4 trials, 1 in flight, best" in format_status(
        {**report, "status": "running"})
    # the spec from before `extend` raised n_trials, launched again, asks fewer than it holds
    fewer = {**report, "slices": [{**row, "n_trials": 3}]}
    assert (f"slice {row['slice']}: 4 trials (its spec now asks 3; an earlier one of this "
            "sweep asked more), 1 asked and not ended") in format_status(fewer)


def test_a_searched_spec_lists_its_search_range_and_key_problems_at_once():
    """They came one kind per launch: the search block, then the ranges, then one unknown
    key (of two)."""
    raw = {**BASE, "grid": {"optim.lr": "tag(log, interval(0, 1e-1))",
                            "optim.weight_decay": "interval(0.5, 0.1)",
                            "optim.lrr": "choice(1, 2)", "model.widht": "choice(32)",
                            "train.batch_size": "choice(8, 16)"},
           "search": {"optuna": {"n_trials": 0, "per_slice": ["train.batch_size"]}}}
    with pytest.raises(ConfigError) as err:
        plan_search(spec_from_dict(raw))
    problems = err.value.problems
    assert problems[0] == ("spec: search.optuna.n_trials=0: give the trials per study, a "
                           "whole number >= 1")
    assert "grid.optim.lr: 'tag(log, interval(0, 1e-1))' needs low < high and low > 0 on a " \
           "log scale; give a low end above 0, e.g. 1e-5, or drop tag(log, ...)" in problems
    assert ("grid.optim.weight_decay: 'interval(0.5, 0.1)' needs low < high; give "
            "interval(0.1, 0.5)") in problems
    assert [p.split("'")[1] for p in problems if p.startswith("unknown config key")] == [
        "optim.lrr", "model.widht"]


@pytest.mark.parametrize("search, problem", [
    ({"optuna": {"n_trials": 2}, "grid_fallback": True},
     "search: unknown key 'grid_fallback'; the one key is optuna (search: {optuna: {n_trials: "
     "8, per_slice: [model.width]}})"),
    ({"optuan": {"n_trials": 2}},
     "search: unknown key 'optuan'; the one key is optuna (search: {optuna: {n_trials: 8, "
     "per_slice: [model.width]}})"),
    ({"optuna": 3}, "search.optuna=3: use search: grid, or search: {optuna: {n_trials: 8, "
                    "per_slice: [model.width]}}"),
])
def test_a_search_block_of_the_wrong_shape_names_what_is_wrong(search, problem):
    # (the whole mapping's repr was printed; `optuna: 3` was a traceback)
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, "search": search})
    assert err.value.problems[0] == f"spec: {problem}"


def test_a_dry_run_refuses_an_sqlite_storage_whose_folder_does_not_exist(tmp_path, capsys):
    """The launch refused it; the dry run said 'would ask 4 more'."""
    import yaml

    from orchestrator.cli import main

    raw = {**BASE, "search": {"optuna": {**BASE["search"]["optuna"],
                                         "storage": f"sqlite:///{tmp_path}/no/such/x.db"}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(path),
                 "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: cannot open the Optuna storage sqlite:///{tmp_path}/no/such/x.db: its folder "
        f"{tmp_path}/no/such does not exist; create it, or fix search.optuna.storage or "
        "OPTUNA_STORAGE")


def test_searched_train_tokens_as_an_interval_is_told_its_range():
    # (said as two errors about overrides `train.tokens=8192.0` nobody wrote)
    raw = {**BASE, "overrides": [o for o in BASE["overrides"] if "train.tokens" not in o],
           "grid": {**BASE["grid"], "train.tokens": "interval(8192, 16384)"}}
    with pytest.raises(ConfigError) as err:
        plan_search(spec_from_dict(raw))
    assert err.value.problems == [
        "grid.train.tokens: 'interval(8192, 16384)' draws real numbers, but train.tokens is a "
        "whole number: search it with range(8192, 16385)"]


def test_a_value_given_twice_on_a_per_slice_or_budget_axis_is_one_study():
    """`choice(8, 8)` made two studies of one name, each counted: a finished sweep then read
    `3 pending`; `choice(8192, 8192, ...)` under halving, two rungs of one budget."""
    plan = plan_search(spec_from_dict({**BASE, "grid": {**BASE["grid"],
                                                        "train.batch_size": "choice(8, 8, 16)"}}))
    assert [s.label for s in plan.slices] == ["train.batch_size=8 seed=0",
                                              "train.batch_size=16 seed=0"]
    halving = {**BASE, "overrides": [o for o in BASE["overrides"] if "train.tokens" not in o],
               "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                        "train.tokens": "choice(8192, 8_192, 16384, 32768)"},
               "search": {"optuna": {"n_trials": 4, "pruner": "halving"}}}
    plan = plan_search(spec_from_dict(halving))
    assert plan.rungs.budgets == (8192, 16384, 32768)
    assert len(plan.slices) == 3


def test_an_option_optuna_does_not_take_is_said_with_the_ones_it_does():
    """It was Python's words: "MedianPruner.__init__() got an unexpected keyword argument
    'n_warmup'", with neither the right name nor the options."""
    base = {"name": "s", "overrides": ["model=tiny", "data=synthetic"],
            "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))"}}
    with pytest.raises(ConfigError) as err:
        plan_search(spec_from_dict({**base, "search": {"optuna": {
            "n_trials": 3, "pruner": {"median": {"n_warmup": 2}}}}}))
    (said,) = err.value.problems
    assert said.startswith("spec: search.optuna.pruner=median: n_warmup is not an option of "
                           "Optuna's MedianPruner (did you mean n_warmup_steps?); its options: ")
    # (as the installed Optuna names them)
    assert said.rpartition(": ")[2].split(", ")[:2] == ["n_startup_trials", "n_warmup_steps"]


def test_a_studys_best_point_reports_its_choices_as_numbers():
    """`sweep status --json` gave a searched choice's best as text ("model.width": "48") beside
    a float LR; text that is no finite number stays text (JSON has no NaN)."""
    from orchestrator.search import _typed

    assert _typed({"model.width": "48", "optim.lr": 0.01, "model.param": "sp",
                   "optim.weight_decay": "1e-3", "x": "nan"}) == {
        "model.width": 48, "optim.lr": 0.01, "model.param": "sp", "optim.weight_decay": 0.001,
        "x": "nan"}
    assert _typed(None) is None


def test_halving_too_few_trials_for_a_fit_at_any_budget_is_noted():
    """n_trials: 2 over 4 budgets climbs 2, 1, 1, 1 LRs: no budget had the 3 LRs a fit needs
    for an optimum, and nothing said so."""
    from orchestrator.search_space import space_notes

    grid = {"optim.lr": "tag(log, interval(1e-3, 1e-1))",
            "train.tokens": "choice(32768, 65536, 131072, 262144)"}
    spec = {**BASE, "overrides": [*BASE["overrides"], "schedule=wsd"], "grid": grid,
            "search": {"optuna": {"n_trials": 2, "pruner": "halving"}}}
    assert space_notes(plan_search(spec_from_dict(spec))) == [
        "under halving (reduction_factor 2) each slice's budgets hold 2, 1, 1, 1 LRs of "
        "search.optuna.n_trials=2: sweep fit needs 3 or more at a budget for an LR optimum "
        "there, which no budget reaches; search.optuna.n_trials=9 gives 3 at the last budget "
        "but one"]
    spec["search"]["optuna"]["n_trials"] = 6  # 6, 3, 2, 1
    assert "which only the first 2 budgets reach" in space_notes(
        plan_search(spec_from_dict(spec)))[0]
    spec["search"]["optuna"]["n_trials"] = 9  # 9, 5, 3, 2
    assert space_notes(plan_search(spec_from_dict(spec))) == []


def test_n_trials_in_exponent_notation_is_told_to_be_written_out():
    """YAML reads `n_trials: 1e9` as the text '1e9': it was refused without saying why."""
    raw = {**BASE, "search": {"optuna": {"n_trials": "1e3"}}}
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw)
    assert "spec: search.optuna.n_trials='1e3': give the trials per study, a whole number " \
           ">= 1, written out (YAML reads 1e3 as text)" in err.value.problems

