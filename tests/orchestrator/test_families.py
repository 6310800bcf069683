"""Token families: which trials share a trunk, which do not and why. Pure: no Ray, no MLflow."""

import pytest

from orchestrator import families
from orchestrator.families import branch_tokens, plan_sharing
from orchestrator.spec_file import spec_from_dict
from orchestrator.trials import expand

BASE = ["model=tiny", "data=synthetic", "schedule=wsd", "schedule.warmup_tokens=1024",
        "train.seq_len=64", "train.batch_size=8"]
BUDGETS = "choice(65536, 131072, 262144, 524288)"


def _trials(overrides=(), grid=None, seeds=(0,)):
    grid = grid or {"optim.lr": "choice(1e-3, 1e-2)", "train.tokens": BUDGETS}
    spec = spec_from_dict({"name": "t", "overrides": BASE + list(overrides), "grid": grid,
                           "seeds": list(seeds)})
    return expand(spec)


def test_budgets_of_one_config_form_one_family_per_lr():
    trials = _trials()
    plan = plan_sharing(trials)
    assert plan.alone == {}
    assert len(plan.families) == 2
    for fam in plan.families:
        assert [t.cfg.train.tokens for t in fam.members] == [65536, 131072, 262144, 524288]
        assert len({t.cfg.optim.lr for t in fam.members}) == 1
    # The trunk's id does not depend on which budgets the sweep has (extend finds it again).
    fewer = plan_sharing(_trials(grid={"optim.lr": "choice(1e-3, 1e-2)",
                                       "train.tokens": "choice(65536, 131072)"}))
    assert {f.trunk_id for f in fewer.families} == {f.trunk_id for f in plan.families}


def test_seeds_and_widths_split_families():
    plan = plan_sharing(_trials(grid={"model.width": "choice(64, 128)",
                                      "train.tokens": BUDGETS}, seeds=(0, 1)))
    assert len(plan.families) == 4 and plan.alone == {}


@pytest.mark.parametrize("overrides, reason", [
    (["schedule=cosine"], "schedule=cosine: its LR depends on train.tokens"),
    (["schedule=linear"], "schedule=linear: its LR depends on train.tokens"),
    # (its LR does not depend on the budget: what it lacks is a decay to branch into)
    (["schedule=constant"], "schedule=constant: it has no decay for a budget to branch into"),
    (["schedule.decay_fraction=0"], "schedule.decay_fraction=0: a branch is its decay"),
    # (a dry run listed trunks of 0 tokens that the launch never made)
    (["schedule.decay_fraction=1.0"], "schedule.decay_fraction=1: the whole budget is its "
                                      "decay, so budgets share nothing"),
    (["optim.timescale=0.5"], "optim.timescale sets the weight decay"),
])
def test_settings_that_make_the_prefix_depend_on_the_budget_run_alone(overrides, reason):
    trials = _trials(overrides)
    plan = plan_sharing(trials)
    assert plan.families == ()
    assert len(plan.alone) == len(trials)
    assert all(r.startswith(reason) for r in plan.alone.values()), plan.alone


def test_power_schedule_and_norm_test_share():
    plan = plan_sharing(_trials(["schedule=power", "train.batch_schedule=norm_test",
                                 "train.micro_batch_size=4"]))
    assert len(plan.families) == 2 and plan.alone == {}


def test_a_trial_without_another_budget_runs_alone():
    plan = plan_sharing(_trials(grid={"optim.lr": "choice(1e-3, 1e-2)"}))
    assert plan.families == () and set(plan.alone.values()) == {families.ALONE}


def test_a_default_warmup_that_follows_the_budget_says_how_to_share():
    base = [o for o in BASE if not o.startswith("schedule.warmup_tokens")]
    spec = spec_from_dict({"name": "t", "overrides": base,
                           "grid": {"train.tokens": "choice(20480, 40960)"}})
    plan = plan_sharing(expand(spec))
    assert plan.families == ()
    assert set(plan.alone.values()) == {families.WARMUP}
    # A small budget beside budgets that share (theirs hold the fixed 65,536-token warmup):
    # it was said to have no other budget
    spec = spec_from_dict({"name": "t", "overrides": base,
                           "grid": {"train.tokens": "choice(32768, 131072, 262144)"}})
    plan = plan_sharing(expand(spec))
    assert [len(f.members) for f in plan.families] == [2]
    assert list(plan.alone.values()) == [families.WARMUP]


def test_sharing_off_says_so():
    trials = _trials()
    plan = plan_sharing(trials, share=False)
    assert plan.families == () and set(plan.alone.values()) == {families.OFF}


@pytest.mark.parametrize("tokens, fraction, point, checkpoint", [
    (65536, 0.1, 58982, 58880),     # (1 − f)·D floored, then down to a whole 512-token batch
    (131072, 0.1, 117964, 117760),
    (65536, 0.2, 52428, 52224),
    (65536, 0.5, 32768, 32768),     # already a whole batch
])
def test_branch_point_is_the_decay_start_rounded_down_to_a_batch(tokens, fraction, point,
                                                                checkpoint):
    trials = _trials([f"schedule.decay_fraction={fraction}"],
                     grid={"train.tokens": f"choice({tokens}, {2 * tokens})"})
    (fam,) = plan_sharing(trials).families
    small = fam.members[0]
    assert branch_tokens(small.cfg) == point
    assert fam.branch_checkpoint_tokens(small) == checkpoint


@pytest.mark.parametrize("fraction, ratio", [(0.1, 8.7 / 15), (0.2, 9.4 / 15)])
def test_compute_of_budgets_one_two_four_eight_is_the_issue_formula(fraction, ratio):
    # D_k = 2^k·D₀: shared D₀·[8 + f·7] against independent 15·D₀ (to whole batches).
    d0 = 512 * 1000
    trials = _trials([f"schedule.decay_fraction={fraction}"],
                     grid={"train.tokens": f"choice({d0}, {2 * d0}, {4 * d0}, {8 * d0})"})
    trained, independent = plan_sharing(trials).tokens(trials)
    assert independent == 15 * d0
    assert trained / independent == pytest.approx(ratio, abs=2e-4)


def test_an_extends_dry_run_gives_the_tokens_its_new_trials_take_from_here():
    """An extend's dry run gave the whole sweep's tokens from nothing (22.24M) only, not the
    increment it would train (~11.3M)."""
    trials = _trials()
    plan = plan_sharing(trials)
    new = {t.trial_id for t in trials if t.cfg.train.tokens == 524288}  # the budget added
    fam = plan.families[0]
    point = {t.cfg.train.tokens: fam.branch_checkpoint_tokens(t) for t in fam.members}
    # the trunks stand at the 262,144 budget's branch point: each trains on to the new one's,
    # and the new budget's decay
    at = {f.trunk_id: point[262144] for f in plan.families}
    assert plan.tokens_to_run(trials, new, at) == 2 * (point[524288] - point[262144]
                                                      + 524288 - point[524288])
    # from nothing (no trunk trained yet): the trunk to the new branch point, and its decay
    assert plan.tokens_to_run(trials, new, {}) == 2 * 524288
    lines = families.describe(plan, trials, to_run=new, trunk_at=at)
    assert lines[-1] == (f"the 2 trials to run train "
                         f"{families._short(plan.tokens_to_run(trials, new, at))} tokens from "
                         "here (trunks go on from where they stand)")
    # each trunk line says what of it this launch trains (it gave the whole trunk's length,
    # where the budgets to run need a part of it, or more of it)
    short = families._short
    trunks = [line for line in lines if line.startswith("trunk ")]
    assert len(trunks) == 2 and all(line.endswith(
        f"; trained to {short(point[262144])}, it trains to {short(point[524288])} for the "
        "budgets to run") for line in trunks)
    small = {t.trial_id for t in trials if t.cfg.train.tokens == min(point)}
    lines = families.describe(plan, trials, to_run=small)
    assert all(f"{short(min(point))}, " in line and " done" in line and line.endswith(
        f"; it trains {short(point[min(point)])} for the budgets to run")
               for line in lines if line.startswith("trunk "))


def test_a_dry_run_without_trunks_names_none_and_counts_part_trained_trials_from_here():
    """An extend's dry run of a sweep without shared trunks said "(trunks go on from where
    they stand)" beside "no shared trunk"; a resume's dry run after a stop, every trial part
    trained, gave the tokens from nothing only."""
    trials = _trials(grid={"optim.lr": "choice(1e-3, 1e-2, 3e-2)"})
    plan = plan_sharing(trials)
    assert not plan.families
    one = {trials[0].trial_id}
    lines = families.describe(plan, trials, to_run=one)
    assert lines[-1] == "the 1 trial to run train 999.9k tokens from here"
    everyone = {t.trial_id for t in trials}
    own = {t.trial_id: 499_968 for t in trials}  # (each stopped at half its budget)
    lines = families.describe(plan, trials, to_run=everyone, own=own)
    assert lines[-1] == ("the 3 trials to run train 1.5M tokens from here (part-trained "
                         "trials from their checkpoints)")
    assert families.describe(plan, trials, to_run=everyone)[-1].startswith("the sweep from")


def test_a_trial_going_on_from_its_own_checkpoint_takes_no_trunk_tokens():
    """A resume without --no-share of a sweep launched with it: the dry run counted trunks
    from 0 to each interrupted budget's branch point, which the trials (going on from their
    own checkpoints) never take."""
    trials = _trials()
    plan = plan_sharing(trials)
    largest = {t.trial_id for t in trials if t.cfg.train.tokens == 524288}
    # the trunks stand at 0; the largest budgets have checkpoints of their own (at 0 tokens,
    # then at 131,072: only the rest of their budgets is left, the dry run counted it all)
    assert plan.tokens_to_run(trials, largest, {}, own=dict.fromkeys(largest, 0)) == 2 * 524288
    assert plan.tokens_to_run(trials, largest, {}, own=dict.fromkeys(largest, 131072)) == \
        2 * (524288 - 131072)
    both = largest | {t.trial_id for t in trials if t.cfg.train.tokens == 262144}
    fam = plan.families[0]
    point = {t.cfg.train.tokens: fam.branch_checkpoint_tokens(t) for t in fam.members}
    # the 262,144 budgets still branch: their trunks train to their point only
    assert plan.tokens_to_run(trials, both, {}, own=dict.fromkeys(largest, 0)) == \
        2 * (524288 + 262144)
    assert plan.tokens_to_run(trials, both, {}) == 2 * (point[524288] + 524288
                                                        - point[524288] + 262144
                                                        - point[262144])


def test_a_trials_own_checkpoint_says_the_tokens_it_has_trained(tmp_path):
    from orchestrator.sharing import checkpoint_tokens
    from trainer.paths import RunPaths

    spec = spec_from_dict({"name": "t", "overrides": BASE, "storage_root": str(tmp_path),
                           "grid": {"train.tokens": BUDGETS}})
    trial = expand(spec)[0]
    assert checkpoint_tokens(trial) == 0
    saved = RunPaths.for_config(trial.cfg, trial.trial_id).checkpoints
    for step in (4, 12):
        (saved / f"step-{step:09d}").mkdir(parents=True)
    (saved / ".step-000000016.tmp").mkdir()  # (being written: not one yet)
    batch = trial.cfg.train.batch_size * trial.cfg.train.seq_len
    assert checkpoint_tokens(trial) == 12 * batch
