"""Token budgets sharing a trunk through a real sweep: real Ray, real MLflow, tiny CPU trials."""

import json
from collections import Counter

import mlflow
import pytest
import yaml

from orchestrator.commands import launch
from orchestrator.extend import extended
from orchestrator.spec_file import spec_from_dict
from orchestrator.status import status
from trainer.schema import sweep_runs

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]
TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "data=synthetic", "data.num_tokens=200_000", "train.seq_len=64",
         "train.eval_tokens=4096", "schedule=wsd", "schedule.warmup_tokens=1024"]
BUDGETS = (8192, 16384, 32768)  # branch checkpoints at 7,168, 14,336 and 29,184 tokens


def _spec(tmp_path, name, budgets=BUDGETS, **extra):
    return spec_from_dict({
        "name": name, "overrides": TRIAL + ["train.batch_size=8", "schedule.decay_fraction=0.1",
                                            "train.log_every_steps=4",
                                            "train.eval_every_tokens=4096"],
        "grid": {"optim.lr": "choice(1e-2)",
                 "train.tokens": "choice(" + ", ".join(map(str, budgets)) + ")"},
        "storage_root": str(tmp_path / name), "retries": 1, **extra})


def _children(uri, name, kind="trial"):
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return client, {r.data.tags.get("trial.id", r.data.tags.get("trunk.id")): r
                    for r in sweep_runs(client, exp.experiment_id, kind)}


def _history(client, run, key="train/loss"):
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def test_shared_sweep_equals_the_independent_one_and_trains_less(tmp_path, uri, capsys):
    alone = launch(_spec(tmp_path, "alone", share_prefix=False), tracking_uri=uri,
                   progress=False)
    shared = launch(_spec(tmp_path, "shared"), tracking_uri=uri, progress=False)
    assert sorted(shared.ran.values()) == sorted(alone.ran.values()) == ["finished"] * 3
    client, a = _children(uri, "alone")
    _, b = _children(uri, "shared")
    assert a.keys() == b.keys()  # the same trial ids
    for trial_id, run in b.items():
        ref = a[trial_id]
        m, r = run.data.metrics, ref.data.metrics
        assert m["final/eval_loss"] == pytest.approx(r["final/eval_loss"], rel=1e-6, abs=0)
        assert m["final/tokens"] == r["final/tokens"] and m["final/steps"] == r["final/steps"]
        assert m["final/tokens_shared"] > 0 and r["final/tokens_shared"] == 0
        assert m["final/tokens_trained"] == m["final/tokens"] - m["final/tokens_shared"]
        # One history from its first step, the trunk's steps then its own, as the alone run's.
        for key, first in (("train/loss", 4), ("eval/loss", 8)):
            mine, theirs = _history(client, run, key), _history(client, ref, key)
            assert [s for s, _ in mine] == [s for s, _ in theirs] and mine[0][0] == first
            assert [v for _, v in mine] == pytest.approx([v for _, v in theirs], rel=1e-6,
                                                         abs=0)
        assert {k for k in run.data.params if not k.startswith("derived.")} == \
            {k for k in ref.data.params if not k.startswith("derived.")}
    _, trunks = _children(uri, "shared", "trunk")
    (trunk,) = trunks.values()
    assert trunk.data.tags["trunk.status"] == "finished"
    assert trunk.data.metrics["final/tokens"] == 29184
    assert "train.tokens" not in trunk.data.params
    # The trunk's own curve (logged every 4 of its 57 steps): the largest budget's, up to it.
    big = next(r for r in b.values() if r.data.params["train.tokens"] == "32768")
    shared_steps = _history(client, trunk)
    assert [s for s, _ in shared_steps] == list(range(4, 57, 4))
    assert shared_steps == [row for row in _history(client, big) if row[0] <= 57]
    # 29,184 by the trunk + the three decays, against 8,192 + 16,384 + 32,768.
    trained = 29184 + (8192 - 7168) + (16384 - 14336) + (32768 - 29184)
    report = status(uri, "shared")
    assert report["tokens_trained"] == trained and report["tokens_if_independent"] == 57344
    assert status(uri, "alone")["tokens_ratio"] == 1.0
    assert shared.tokens["sweep/tokens_ratio"] == pytest.approx(trained / 57344)
    # Another sweep over the same storage finds every trial ended on disk: it records them
    # and the trunk they branched from, so its totals count the prefix they share too.
    # (through the command line: its summary says what sharing saved)
    from orchestrator.cli import main

    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, "again",
                                         storage_root=str(tmp_path / "shared")).to_dict()))
    capsys.readouterr()
    assert main(["launch", str(path), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert ("sweep again: 3 trials, 0 already done, nothing to run, 3 found ended in their "
            "folders\n") in out
    assert (f"tokens: {trained:,} trained across the sweep, 57,344 if each trial trained "
            f"alone (ratio {trained / 57344:.2f})\n") in out
    report = status(uri, "again")
    assert report["tokens_trained"] == trained and report["tokens_if_independent"] == 57344
    _, again_trunks = _children(uri, "again", "trunk")
    assert again_trunks.keys() == trunks.keys()

    # extend with a 2x budget: the trunk continues from its last checkpoint, the new budget
    # trains the increment and its decay, nothing else runs.
    more = launch(extended(_spec(tmp_path, "shared"), ["train.tokens=choice(65536)"]),
                  tracking_uri=uri, progress=False)
    assert more.already_done == 3 and list(more.ran.values()) == ["finished"]
    _, trunks = _children(uri, "shared", "trunk")
    assert trunks[trunk.data.tags["trunk.id"]].data.metrics["final/tokens"] == 58880
    index = json.loads((tmp_path / "shared" / "trunks" / trunk.data.tags["trunk.id"]
                        / "trunk.json").read_text())
    assert index["tokens"] == 58880 and "58982" in index["points"]
    report = status(uri, "shared")
    assert report["tokens_trained"] == 58880 + trained - 29184 + (65536 - 58880)
    # The parent run's totals (kept by the tracker as it writes) are the store's.
    assert more.tokens["sweep/tokens_trained"] == report["tokens_trained"]
    assert more.tokens["sweep/tokens_if_independent"] == report["tokens_if_independent"]
    # A sweep of the two smaller budgets over the same storage: the trunk it records counts
    # up to its own last branch point, not the 58,880 tokens trained for the others' budgets
    # (its ratio read 1.01 for a sweep that shared a prefix).
    fewer = launch(_spec(tmp_path, "fewer", budgets=BUDGETS[:2],
                         storage_root=str(tmp_path / "shared")), tracking_uri=uri, progress=False)
    assert not fewer.ran and len(fewer.found_ended) == 2
    report = status(uri, "fewer")
    assert report["tokens_trained"] == 14336 + (8192 - 7168) + (16384 - 14336)
    assert report["tokens_if_independent"] == 8192 + 16384 and report["tokens_ratio"] < 1
    client, fewer_trunks = _children(uri, "fewer", "trunk")
    (recorded,) = fewer_trunks.values()
    assert recorded.data.metrics["final/tokens"] == 14336
    assert recorded.data.metrics["final/steps"] == 14336 // 512
    assert max(s for s, _ in _history(client, recorded)) <= 14336 // 512


def test_a_trunk_that_diverges_records_the_budgets_beyond_it_diverged(tmp_path, uri):
    # The trunk diverges at step 4 (2,048 tokens): inside the stable phase of the large
    # budget, after the small one's branch point (1,382 tokens).
    spec = _spec(tmp_path, "hot", budgets=(1536, 262144)).to_dict()
    spec["overrides"] = [o for o in spec["overrides"] if not o.startswith("schedule.warmup")]
    spec["overrides"] += ["optim.grad_clip=0", "train.divergence_factor=1.3",
                          "schedule.warmup_tokens=1024"]
    spec["grid"]["optim.lr"] = "choice(0.3)"
    outcome = launch(spec_from_dict(spec), tracking_uri=uri, progress=False)
    assert sorted(outcome.ran.values()) == ["diverged", "finished"]
    client, children = _children(uri, "hot")
    by_budget = {int(c.data.params["train.tokens"]): c for c in children.values()}
    big = by_budget[262144]
    assert big.data.tags["trial.status"] == "diverged"
    assert big.data.metrics["final/diverged_at_tokens"] == 2048
    assert big.data.metrics["final/tokens_trained"] == 0  # it trained nothing itself
    assert [s for s, _ in _history(client, big)] == [4]  # the trunk's diverging step
    assert by_budget[1536].data.tags["trial.status"] == "finished"
    _, trunks = _children(uri, "hot", "trunk")
    assert [t.data.tags["trunk.status"] for t in trunks.values()] == ["diverged"]


@pytest.mark.slow  # (~30 s: a launch from the command line; make test kept under 15 min)
def test_a_trunk_its_worker_ended_with_nobody_to_record_it_is_recorded_by_the_next_launch(
        tmp_path, uri):
    # What a worker that outlived its killed driver leaves: a trunk trained past every branch
    # point on disk, and no record of its end. The next launch trains no trunk and records it.
    from orchestrator.families import plan_sharing
    from orchestrator.trials import expand
    from trainer import branching
    from trainer.trunk import train_trunk

    spec = _spec(tmp_path, "orphan")
    (family,) = plan_sharing(expand(spec)).families
    directory = branching.trunk_dir(spec.storage_root, family.trunk_id)
    train_trunk(family.members[-1].cfg, trunk_id=family.trunk_id, directory=directory,
                branch_points=sorted(family.branch_points.values()))
    # The launch from the command line, in a process of its own: recording the trunk must not
    # cost the driver torch's import (seconds at the end of every launch, with or without
    # trunks: the scheduler benchmark's tail).
    path = tmp_path / "orphan.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    proc = _sweep("launch", str(path), uri=uri, script=NO_TORCH)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "ran 3 (3 finished)" in out
    _, trunks = _children(uri, "orphan", "trunk")
    (trunk,) = trunks.values()
    assert trunk.data.tags["trunk.status"] == "finished" and trunk.info.status == "FINISHED"
    assert trunk.data.metrics["final/tokens"] == 29184
    assert status(uri, "orphan")["tokens_trained"] == 29184 + 1024 + 2048 + 3584


@pytest.mark.slow  # (~30 s: a launch from the command line; make test kept under 15 min)
def test_a_trunk_cut_short_then_a_no_share_launch_records_the_trunk_as_it_stands(tmp_path, uri):
    # A driver killed mid-trunk, then `sweep launch --no-share`: the trials trained alone and
    # the trunk's record stayed `running`, without its tokens, through every later launch.
    from orchestrator.families import plan_sharing
    from orchestrator.sweep_record import stored_spec
    from orchestrator.trials import expand
    from trainer import branching
    from trainer.trunk import train_trunk

    spec = _spec(tmp_path, "cut", budgets=BUDGETS[:2])
    (family,) = plan_sharing(expand(spec)).families
    directory = branching.trunk_dir(spec.storage_root, family.trunk_id)
    train_trunk(family.members[-1].cfg, trunk_id=family.trunk_id, directory=directory,
                branch_points=[min(family.branch_points.values())])
    index = branching.read_index(directory)  # as a kill after its last save leaves it
    branching.write_json_atomic(directory / branching.TRUNK_FILE, {**index, "status": "running"})
    # the smaller budget marked a branch of it, as the first launch does before it runs one:
    # it started from the trunk's checkpoint under `--no-share` (tokens_shared 7168)
    from trainer.paths import RunPaths

    small = family.members[0]
    run_dir = RunPaths.for_config(small.cfg, small.trial_id).run_dir
    run_dir.mkdir(parents=True)
    branching.write_branch(run_dir, trunk_dir=directory,
                           branch_tokens=family.branch_points[small.trial_id])
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    proc = _sweep("launch", str(path), "--no-share", uri=uri, script=NO_TORCH)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "ran 2 (2 finished)" in out
    _, children = _children(uri, "cut")
    assert all(c.data.metrics["final/tokens_shared"] == 0 for c in children.values())
    _, trunks = _children(uri, "cut", "trunk")
    (trunk,) = trunks.values()
    assert trunk.data.tags["trunk.status"] == "interrupted" and trunk.info.status == "KILLED"
    assert trunk.data.metrics["final/tokens"] == 7168
    assert status(uri, "cut")["tokens_trained"] == 7168 + 8192 + 16384
    assert stored_spec(uri, "cut").share_prefix  # the flag was that launch's only


class _StopAt:
    """A reporter that stops its run (as Ctrl-C does) once it has trained `tokens`."""

    def __init__(self, tokens):
        self.tokens = tokens

    def start(self, *, run_id, params, resumed_step):
        pass

    def log_metrics(self, metrics, *, step):
        if metrics.get("train/tokens", 0) >= self.tokens:
            raise KeyboardInterrupt

    def finish(self, *, status, summary):
        pass


def test_a_budget_with_checkpoints_of_its_own_trains_no_trunk_for_it(tmp_path, uri):
    # `sweep launch --no-share`, Ctrl-C, then `sweep resume` without the flag: the largest
    # budget, 98% trained alone, was held for a trunk trained from 0 to its branch point,
    # which it never took (a trial goes on from its own checkpoint): ratio 1.64, not 1.
    from orchestrator.trials import expand
    from trainer import run

    spec = _spec(tmp_path, "own", budgets=BUDGETS[::2],
                 overrides=[*_spec(tmp_path, "own").overrides,
                            "train.checkpoint_every_tokens=4096"])
    small, large = sorted(expand(spec), key=lambda t: t.cfg.train.tokens)
    with pytest.raises(KeyboardInterrupt):
        run(large.cfg, _StopAt(16384))  # checkpoints at 4,096 ... 16,384 tokens
    outcome = launch(spec, tracking_uri=uri, progress=False)
    assert sorted(outcome.ran.values()) == ["finished"] * 2
    client, children = _children(uri, "own")
    assert children[large.trial_id].data.metrics["final/tokens_shared"] == 0
    assert children[small.trial_id].data.metrics["final/tokens_shared"] == 7168
    _, trunks = _children(uri, "own", "trunk")
    (trunk,) = trunks.values()  # trained for the small budget only
    assert trunk.data.metrics["final/tokens"] == 7168
    report = status(uri, "own")
    assert report["tokens_trained"] == 7168 + (8192 - 7168) + 32768
    assert report["tokens_if_independent"] == 8192 + 32768


# -- kills: the `sweep` command in its own process -------------------------------------------

NO_TORCH = """
import sys
from orchestrator.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules, "the driver imported torch"
sys.exit(code)
"""


def _sweep(*args, uri, script=None):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    command = ["-c", script] if script else ["-m", "orchestrator.cli"]
    return subprocess.Popen([sys.executable, *command, "--tracking-uri", uri,
                             *args], cwd=Path(__file__).parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _workers(proc, name):
    """Ray workers of this test's driver whose task is `name`."""
    import psutil

    found = []
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in children:
        try:
            if " ".join(p.cmdline()).startswith(f"ray::{name}"):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def _wait(predicate, proc, timeout=300):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _long_spec(tmp_path):
    # A trunk of 230 steps with cadence checkpoints every 28; branches checkpoint their decay.
    spec = _spec(tmp_path, "unit", budgets=(65536, 131072)).to_dict()
    spec["overrides"] += ["train.checkpoint_every_tokens=2048"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, tmp_path / "unit" / "trunks"


def _trunk_checkpoints(trunks):
    return {p: p.stat().st_mtime_ns for p in trunks.glob("*/checkpoints/step-*")}


def _assert_every_trial_finished_once(uri, trunk_tokens):
    client, children = _children(uri, "unit")
    assert sorted(c.data.tags["trial.status"] for c in children.values()) == ["finished"] * 2
    for child in children.values():
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        last = int(child.data.metrics["final/steps"])
        assert len(steps) == len(set(steps))  # nothing twice ...
        assert set(steps) == set(range(4, last + 1, 4)) | {last}  # ... and nothing missing
    _, trunks = _children(uri, "unit", "trunk")
    (trunk,) = trunks.values()
    assert trunk.data.metrics["final/tokens"] == trunk_tokens


@pytest.mark.slow
def test_killed_trunk_and_branch_workers_lose_nothing(tmp_path, uri):
    path, trunks = _long_spec(tmp_path)
    proc = _sweep("launch", str(path), uri=uri)
    _wait(lambda: _trunk_checkpoints(trunks) and _workers(proc, "run_trunk"), proc)
    before = _trunk_checkpoints(trunks)
    (trunk_worker,) = _workers(proc, "run_trunk")
    trunk_worker.kill()
    # The first branch, once it has a checkpoint of its own in its decay.
    _wait(lambda: list((tmp_path / "unit").glob("[0-9a-f]*/checkpoints/step-*"))
          and _workers(proc, "run_trial"), proc)
    _workers(proc, "run_trial")[0].kill()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    _assert_every_trial_finished_once(uri, trunk_tokens=117760)
    after = _trunk_checkpoints(trunks)
    assert {p: after[p] for p in before} == before  # resumed, not trained again
    rows = [json.loads(line) for line in next(trunks.glob("*/metrics.jsonl")).read_text()
            .splitlines()]
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})


@pytest.mark.slow
def test_killed_driver_then_resume_continues_the_trunk(tmp_path, uri):
    import os
    import signal

    path, trunks = _long_spec(tmp_path)
    proc = _sweep("launch", str(path), uri=uri)
    _wait(lambda: len(_trunk_checkpoints(trunks)) >= 2, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _trunk_checkpoints(trunks)
    resumed = _sweep("resume", "unit", uri=uri)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out + err
    _assert_every_trial_finished_once(uri, trunk_tokens=117760)
    after = _trunk_checkpoints(trunks)
    assert {p: after[p] for p in before} == before


def _trunk_rows(trunks, key="perf/tokens_per_s"):
    """{trunk directory name: {step: the value of `key` logged there}}."""
    out = {}
    for path in trunks.glob("*/metrics.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        out[path.parent.name] = {r["step"]: r[key] for r in rows if key in r}
    return out


def test_an_lr_sweeps_trunks_train_as_one_fused_group(tmp_path, uri, capsys):
    # Three LRs × two budgets: three families, whose trunks train as one fused group (one
    # task, one loop: every trunk logs the group's tokens/s at every step), each recorded,
    # checkpointed and branched from as alone; the trials end as in the unfused sweep.
    lrs = {"optim.lr": "choice(3e-3, 1e-2, 2e-2)"}
    budgets = (8192, 16384)
    plain = launch(_spec(tmp_path, "plain", budgets, fuse=False, grid={
        **lrs, "train.tokens": "choice(8192, 16384)"}), tracking_uri=uri, progress=False)
    capsys.readouterr()
    fused = launch(_spec(tmp_path, "fused", budgets, fuse=3, grid={
        **lrs, "train.tokens": "choice(8192, 16384)"}), tracking_uri=uri, progress=False)
    assert "fused: 3 trunks train in 1 group, 0 alone" in capsys.readouterr().out
    assert sorted(fused.ran.values()) == sorted(plain.ran.values()) == ["finished"] * 6
    speeds = _trunk_rows(tmp_path / "fused" / "trunks")
    assert len(speeds) == 3 and len({json.dumps(s) for s in speeds.values()}) == 1
    assert len({json.dumps(s) for s in _trunk_rows(tmp_path / "plain" / "trunks").values()}) == 3
    _, a = _children(uri, "plain")
    _, b = _children(uri, "fused")
    assert a.keys() == b.keys()
    for trial_id, run in b.items():
        m, r = run.data.metrics, a[trial_id].data.metrics
        assert m["final/tokens_shared"] == r["final/tokens_shared"] > 0
        assert m["final/eval_loss"] == pytest.approx(r["final/eval_loss"], rel=1e-3)
    _, plain_trunks = _children(uri, "plain", "trunk")
    _, fused_trunks = _children(uri, "fused", "trunk")
    assert plain_trunks.keys() == fused_trunks.keys() and len(fused_trunks) == 3
    for trunk_id, run in fused_trunks.items():
        assert run.data.tags["trunk.status"] == "finished"
        assert run.data.metrics["final/tokens"] == \
            plain_trunks[trunk_id].data.metrics["final/tokens"] == 14336
    # The budgets of one size branch at one trunk step and train their decays as one group
    # too: the group's tokens/s at their own (last) step, the same for the three LRs.
    for tokens, branch_step in ((8192, 14), (16384, 28)):
        own = {}
        for trial_id, run in b.items():
            if int(run.data.params["train.tokens"]) == tokens:
                rows = (tmp_path / "fused" / trial_id / "metrics.jsonl").read_text().splitlines()
                own[trial_id] = [(r["step"], r["perf/tokens_per_s"]) for r in map(json.loads, rows)
                                 if r["step"] > branch_step and "perf/tokens_per_s" in r]
        assert len(own) == 3 and len({json.dumps(v) for v in own.values()}) == 1, own


@pytest.mark.slow
def test_under_fuse_true_branches_released_while_their_trunks_train_fuse(tmp_path, uri):
    """4 LRs × 2 budgets on 2 slots: the trunks train as 2 groups of 2, holding both slots, and
    each group releases its 2 smaller branches at one step. Sized for the 2 slots (not for the
    0 free), the pair was cut into two trials alone, one left waiting (a stranger's sweep, whose
    dry run had said the budgets fuse as they are released)."""
    grid = {"optim.lr": "choice(2e-3, 3e-3, 1e-2, 2e-2)", "train.tokens": "choice(8192, 16384)"}
    outcome = launch(_spec(tmp_path, "auto", (8192, 16384), fuse=True, grid=grid),
                     tracking_uri=uri, progress=False)
    assert sorted(outcome.ran.values()) == ["finished"] * 8
    _, runs = _children(uri, "auto")
    small = {}
    for trial_id, run in runs.items():
        if int(run.data.params["train.tokens"]) == 8192:
            rows = (tmp_path / "auto" / trial_id / "metrics.jsonl").read_text().splitlines()
            small[trial_id] = json.dumps([(r["step"], r["perf/tokens_per_s"])
                                          for r in map(json.loads, rows)
                                          if r["step"] > 14 and "perf/tokens_per_s" in r])
    assert len(small) == 4
    assert max(Counter(small.values()).values()) >= 2, small  # (fused: the group's tokens/s)


def test_branches_released_together_are_grouped_for_the_slots_free_now(tmp_path):
    """The sizing itself: 2 slots, one held by a trunk task, 2 branches released at once: one
    group of 2 (sized for both slots it was 2 trials alone, one left waiting); with both slots
    free, 2 alone (each takes a slot)."""
    from types import SimpleNamespace

    from orchestrator.driver import _Runner, prepare
    from orchestrator.fusion import Group

    trials = prepare(_spec(tmp_path, "unit", (8192,), fuse=True, grid={
        "optim.lr": "choice(3e-3, 1e-2)", "train.tokens": "choice(8192)"}))[1]
    for trunks, expected in (([SimpleNamespace(ref="trunk task")], [2]), ([], [1, 1])):
        runner = SimpleNamespace(release_fuse=True, slots=2, running={}, queue=[],
                                 sharing=SimpleNamespace(trunks=trunks))
        _Runner.take_released(runner, trials)
        assert [len(u.members) if isinstance(u, Group) else 1 for u in runner.queue] == \
            expected


@pytest.mark.slow
def test_a_killed_fused_trunk_group_resumes_and_loses_nothing(tmp_path, uri):
    spec = _spec(tmp_path, "unit", budgets=(65536, 131072), fuse=2).to_dict()
    spec["grid"]["optim.lr"] = "choice(3e-3, 1e-2)"
    spec["overrides"] += ["train.checkpoint_every_tokens=2048"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    trunks = tmp_path / "unit" / "trunks"
    proc = _sweep("launch", str(path), uri=uri)
    _wait(lambda: len(_trunk_checkpoints(trunks)) >= 4 and _workers(proc, "run_trunk_group"),
          proc)
    before = _trunk_checkpoints(trunks)
    (group_worker,) = _workers(proc, "run_trunk_group")
    group_worker.kill()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "fused: 2 trunks train in 1 group" in out
    client, children = _children(uri, "unit")
    assert sorted(c.data.tags["trial.status"] for c in children.values()) == ["finished"] * 4
    for child in children.values():
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps))  # nothing twice
    _, recorded = _children(uri, "unit", "trunk")
    assert [t.data.metrics["final/tokens"] for t in recorded.values()] == [117760] * 2
    after = _trunk_checkpoints(trunks)
    assert {p: after[p] for p in before} == before  # resumed, not trained again
    for path in trunks.glob("*/metrics.jsonl"):
        steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
        assert steps == sorted(set(steps))
