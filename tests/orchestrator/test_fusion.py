"""Fused groups in a sweep: which trials fuse, and a real fused sweep through Ray and MLflow
whose members equal the same trials run alone."""

import pytest

from orchestrator import commands
from orchestrator.cli import parse_args
from orchestrator.fusion import at_once, fusion_setting, group_size, plan_fusion
from orchestrator.spec_file import spec_from_dict
from orchestrator.trials import expand
from trainer.errors import ConfigError
from trainer.schema import sweep_runs

TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "data=synthetic", "data.num_tokens=200_000", "train.seq_len=64",
         "train.eval_tokens=4096", "schedule=wsd", "schedule.warmup_tokens=1024",
         "train.tokens=16384", "train.batch_size=8", "train.eval_every_tokens=8192"]


def _spec(tmp_path, name="fused", grid=None, **extra):
    return spec_from_dict({
        "name": name, "overrides": extra.pop("overrides", TRIAL),
        "grid": grid or {"optim.lr": "choice(1e-3, 3e-3, 1e-2, 3e-2)",
                         "optim.weight_decay": "choice(0.0, 0.1)"},
        "storage_root": str(tmp_path / name), "retries": 1, **extra})


def test_lrs_and_weight_decays_fuse_widths_and_seeds_do_not(tmp_path):
    trials = expand(_spec(tmp_path, grid={"optim.lr": "choice(1e-3, 3e-3, 1e-2)",
                                          "model.width": "choice(32, 64)"}, seeds=[0, 1]))
    groups, alone = plan_fusion(trials, fuse=True, slots=2)
    assert not alone and len(groups) == 4  # one per (width, seed), 3 LRs each (12 / 2 ≥ 3)
    for g in groups:
        assert len({(t.cfg.model.width, t.cfg.seed) for t in g.members}) == 1
        assert sorted(t.cfg.optim.lr for t in g.members) == [1e-3, 3e-3, 1e-2]
    # 8 fusable trials on 2 slots: two groups of 4 (one per slot), or fewer when asked.
    eight = expand(_spec(tmp_path))
    assert [len(g.members) for g in plan_fusion(eight, fuse=True, slots=2)[0]] == [4, 4]
    groups, alone = plan_fusion(eight, fuse=3, slots=2)
    assert [len(g.members) for g in groups] == [3, 3, 2] and not alone
    assert sorted(t.trial_id for g in groups for t in g.members) == sorted(
        t.trial_id for t in eight)
    groups, alone = plan_fusion(eight[:5], fuse=4, slots=2)  # 5 = 3 + 2
    assert [len(g.members) for g in groups] == [3, 2]
    assert plan_fusion(eight, fuse=False, slots=2) == ([], eight)


def test_only_trials_resuming_from_the_same_step_fuse(tmp_path):
    """A group steps from the newest step all its members saved: a trial an earlier launch
    trained alone to step 640 would train its 640 steps again in a group of fresh trials."""
    from trainer.paths import RunPaths

    def saved(trial, *steps):
        for step in steps:
            (RunPaths.for_config(trial.cfg, trial.trial_id).checkpoints
             / f"step-{step:09d}").mkdir(parents=True)

    eight = expand(_spec(tmp_path))
    saved(eight[0], 576, 640)  # interrupted alone
    saved(eight[1], 320)  # interrupted alone, earlier
    saved(eight[2], 576, 640)  # as far as the first: they may fuse
    (RunPaths.for_config(eight[3].cfg, eight[3].trial_id).checkpoints
     / ".step-000000064.tmp").mkdir(parents=True)  # a save that never completed: a fresh trial
    groups, alone = plan_fusion(eight, fuse=8, slots=2)
    assert sorted(sorted(t.trial_id for t in g.members) for g in groups) == sorted(
        [sorted([eight[0].trial_id, eight[2].trial_id]),
         sorted(t.trial_id for t in eight[3:])])
    assert alone == [eight[1]]


def test_a_trial_that_cannot_fuse_runs_alone(tmp_path):
    spec = _spec(tmp_path, grid={"optim.lr": "choice(1e-3, 3e-3)",
                                 "train.batch_schedule": "choice(constant, norm_test)"},
                 overrides=TRIAL + ["train.micro_batch_size=4"])
    groups, alone = plan_fusion(expand(spec), fuse=True, slots=1)
    assert [len(g.members) for g in groups] == [2]
    assert sorted(t.cfg.train.batch_schedule.value for t in alone) == ["norm_test"] * 2


@pytest.mark.parametrize("fuse, size", [(False, 1), (1, 1), (True, 4), (2, 2), (16, 16)])
def test_group_size_rule(fuse, size):
    assert group_size(fuse, num_trials=8, slots=2) == size


def test_groups_spread_over_what_runs_at_once_under_max_concurrent_too(tmp_path):
    """Two trials at --max-concurrent 1 on 2 CPUs ran alone, one after the other."""
    grid = {"optim.lr": "choice(1e-3, 3e-3)"}
    one_at_a_time = _spec(tmp_path, grid=grid, max_concurrent=1)
    assert at_once(one_at_a_time, 2) == 1 and at_once(_spec(tmp_path, grid=grid), 2) == 2
    groups, alone = plan_fusion(expand(one_at_a_time), fuse=True,
                                slots=at_once(one_at_a_time, 2))
    assert [len(g.members) for g in groups] == [2] and alone == []
    assert plan_fusion(expand(one_at_a_time), fuse=True, slots=2) == ([], expand(one_at_a_time))


def test_auto_fuses_cpu_trials_and_leaves_gpu_trials_alone(tmp_path):
    """The default: trials without a GPU fuse by the `true` rule; GPU trials (fractional ones
    included) run alone unless the spec says true or K."""
    cpu = _spec(tmp_path)
    assert cpu.fuse == "auto" and fusion_setting(cpu) is True
    gpu = {"resources": {"gpus": 0.125, "cpus": 1}}
    assert fusion_setting(_spec(tmp_path, **gpu)) is False
    assert fusion_setting(_spec(tmp_path, fuse=True, **gpu)) is True
    assert fusion_setting(_spec(tmp_path, fuse=3, **gpu)) == 3
    assert fusion_setting(_spec(tmp_path, fuse=False)) is False
    assert _spec(tmp_path, fuse="auto").fuse == "auto"


@pytest.mark.parametrize("fuse", ["auto", True, 4, False])
def test_a_searched_sweep_fuses_only_when_its_spec_says_so(tmp_path, fuse):
    """A study that asks a group's worth of points at once has seen fewer of them end: a
    searched sweep fuses when asked to (`true` or `K`), not under `auto`."""
    searched = _spec(tmp_path, fuse=fuse, grid={"optim.lr": "tag(log, interval(1e-3, 3e-2))"},
                     search={"optuna": {"n_trials": 4}})
    assert searched.optuna is not None
    assert fusion_setting(searched) == (False if fuse == "auto" else fuse)
    assert fusion_setting(_spec(tmp_path, fuse=fuse)) == (True if fuse == "auto" else fuse)


@pytest.mark.parametrize("fuse", [0, -2, "maybe", "0", 2.5, [2], {"size": 2}])
def test_a_bad_fuse_value_is_one_sentence_with_its_fix(tmp_path, fuse):
    with pytest.raises(ConfigError, match="fuse=.*: give auto .*, true or on .*, false or off, "
                                          "or the most trials"):
        _spec(tmp_path, fuse=fuse)


@pytest.mark.parametrize("written, fuse", [
    (None, "auto"), ("auto", "auto"), ("AUTO", "auto"), (True, True), ("true", True),
    ("on", True), ("On", True), ("yes", True), (False, False), ("false", False),
    ("off", False), ("no", False), (3, 3), ("3", 3)])
def test_the_spec_takes_the_words_the_command_line_takes(tmp_path, written, fuse):
    """`fuse: "on"` (quoted, or YAML 1.2's strings) means what `--fuse on` means, and
    `fuse: null` the default."""
    assert _spec(tmp_path, fuse=written).fuse == fuse
    if written is not None:
        assert parse_args(["launch", "s.yaml", "--fuse", str(written)]).fuse == fuse


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_a_fused_sweep_records_every_member_as_its_trial_alone(tmp_path, uri, capsys):
    import mlflow

    grid = {"optim.lr": "choice(3e-3, 1e-2, 3e-2)"}
    alone = commands.launch(_spec(tmp_path, "alone", grid=grid, fuse=False), tracking_uri=uri,
                            progress=False)
    fused = commands.launch(_spec(tmp_path, "fused", grid=grid, fuse=3),
                            tracking_uri=uri, progress=False)
    assert "fused: 3 trials train in 1 group, 0 alone" in capsys.readouterr().out
    assert sorted(fused.ran.values()) == sorted(alone.ran.values()) == ["finished"] * 3
    client = mlflow.MlflowClient(tracking_uri=uri)

    def children(name):
        exp = client.get_experiment_by_name(name)
        return {r.data.tags["trial.id"]: r for r in sweep_runs(client, exp.experiment_id, "trial")}

    a, b = children("alone"), children("fused")
    assert a.keys() == b.keys()  # the same trial ids
    for trial_id, run in b.items():
        ref = a[trial_id]
        assert run.data.tags["trial.status"] == "finished"
        assert run.data.metrics["final/eval_loss"] == pytest.approx(
            ref.data.metrics["final/eval_loss"], rel=1e-3)
        mine = client.get_metric_history(run.info.run_id, "train/loss")
        theirs = client.get_metric_history(ref.info.run_id, "train/loss")
        assert [m.step for m in sorted(mine, key=lambda m: m.step)] == \
            [m.step for m in sorted(theirs, key=lambda m: m.step)]
        first = min(mine, key=lambda m: m.step).value
        assert first == pytest.approx(min(theirs, key=lambda m: m.step).value, rel=1e-5)
    again = commands.launch(_spec(tmp_path, "fused", grid=grid, fuse=True), tracking_uri=uri,
                            progress=False)
    assert again.ran == {} and again.already_done == 3


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_group_worker_resumes_and_every_member_ends_once(tmp_path, uri):
    import yaml

    from tests.orchestrator.test_sharing import _sweep, _wait, _workers

    spec = _spec(tmp_path, "killed", grid={"optim.lr": "choice(3e-3, 1e-2, 3e-2)"},
                 fuse=3).to_dict()
    spec["overrides"] = [o for o in spec["overrides"] if not o.startswith("train.tokens")] + [
        "train.tokens=65536", "train.checkpoint_every_tokens=8192", "train.log_every_steps=4"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = _sweep("launch", str(path), uri=uri)
    runs = tmp_path / "killed"
    _wait(lambda: len(list(runs.glob("*/checkpoints/step-*"))) >= 3
          and _workers(proc, "run_group_trials"), proc)
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoints/step-*")}
    _workers(proc, "run_group_trials")[0].kill()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "fused: 3 trials train in 1 group, 0 alone" in out

    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("killed")
    children = sweep_runs(client, exp.experiment_id, "trial")
    assert sorted(c.data.tags["trial.status"] for c in children) == ["finished"] * 3
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        last = int(child.data.metrics["final/steps"])
        assert sorted(steps) == sorted(set(range(4, last + 1, 4)) | {last})  # once each
        assert child.data.tags["trial.attempt"] == "2"  # resumed, not begun again
    # Resumed from the checkpoints it had, which were not written again.
    after = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoints/step-*")}
    assert all(after.get(p, t) == t for p, t in before.items())


def test_trunks_fuse_when_bound_for_the_same_points_from_the_same_step(tmp_path):
    """An LR × budget sweep has a family per LR; their trunks fuse when they train to the same
    branch points from the same checkpoint step (else one would train past its own points,
    or train steps twice), cut by the `fuse` rule like trials."""
    from orchestrator.families import plan_sharing
    from orchestrator.sharing import plan_trunk_groups
    from trainer import branching

    spec = _spec(tmp_path, grid={"optim.lr": "choice(1e-3, 3e-3, 1e-2, 3e-2, 5e-2)",
                                 "train.tokens": "choice(16384, 32768)"})
    families = plan_sharing(expand(spec)).families
    assert len(families) == 5
    both = (14745, 29491)
    pending = [(f, both) for f in families]

    def plan(pending, fuse=True, slots=2):
        units = plan_trunk_groups(pending, storage_root=spec.storage_root, fuse=fuse,
                                  slots=slots)
        assert sorted(f.trunk_id for u in units for f in u) == sorted(
            f.trunk_id for f, _ in pending)  # every trunk once
        return sorted(sorted(families.index(f) for f in u) for u in units)

    assert plan(pending) == [[0, 2, 4], [1, 3]]  # 5 trunks on 2 slots: groups of 3 and 2
    assert plan(pending, fuse=2) == [[0, 3], [1, 4], [2]]
    assert plan(pending, fuse=False) == [[0], [1], [2], [3], [4]]
    # Bound for other points (its larger budget is done), or a step ahead: apart.
    pending[1] = (families[1], both[:1])
    step = branching.trunk_dir(spec.storage_root, families[2].trunk_id) / "checkpoints"
    (step / "step-000000012").mkdir(parents=True)
    assert plan(pending, fuse=8) == [[0, 3, 4], [1], [2]]
    # The same step for all: together again.
    for f in families:
        (branching.trunk_dir(spec.storage_root, f.trunk_id) / "checkpoints"
         / "step-000000012").mkdir(parents=True, exist_ok=True)
    pending[1] = (families[1], both)
    assert plan(pending, fuse=8) == [[0, 1, 2, 3, 4]]
