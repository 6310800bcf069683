"""Trunk and branches: a branched budget trains exactly the run it would have trained alone."""

import json
import math
from pathlib import Path

import pytest

from trainer import branching
from trainer.compose import compose
from trainer.identity import config_id
from trainer.loop import run
from trainer.paths import RunPaths
from trainer.trunk import train_trunk

SMALL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "model.depth=2", "data=synthetic", "data.num_tokens=300_000",
         "train.batch_size=8", "train.seq_len=64", "schedule=wsd",
         "schedule.warmup_tokens=2048", "schedule.decay_fraction=0.1", "optim.lr=0.01",
         "train.eval_tokens=4096", "train.log_every_steps=5", "train.eval_every_tokens=4096"]
BATCH_TOKENS = 8 * 64


def _cfg(root: Path, tokens: int, extra=()):
    return compose(SMALL + list(extra) + [f"train.tokens={tokens}", f"storage_root={root}"])


def _point(cfg) -> int:
    return math.floor(cfg.train.tokens * (1 - cfg.schedule.decay_fraction))


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _branch(root: Path, trunk: Path, tokens: int, extra=()):
    cfg = _cfg(root, tokens, extra)
    branching.write_branch(RunPaths.for_config(cfg, config_id(cfg)).run_dir, trunk_dir=trunk,
                           branch_tokens=_point(cfg))
    return run(cfg)


def _assert_same_run(shared, alone):
    """Same id, the same summary, the same history (every logged value but timings), within
    1e-6 relative."""
    assert shared.run_id == alone.run_id and shared.status == alone.status
    for key, value in alone.summary.items():
        if "wall_s" in key or key in ("final/tokens_trained", "final/tokens_shared"):
            continue
        if isinstance(value, float):
            assert shared.summary[key] == pytest.approx(value, rel=1e-6, abs=0), key
        else:
            assert shared.summary[key] == value, key
    a, b = _rows(alone.run_dir), _rows(shared.run_dir)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train/loss", "train/lr", "train/grad_norm", "eval/loss", "train/tokens"):
            assert (key in ra) == (key in rb), (ra["step"], key)
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=0), (ra["step"], key)


def test_branches_equal_independent_runs_and_train_only_their_decay(tmp_path):
    budgets = [8192, 16384, 32768]
    alone = {d: run(_cfg(tmp_path / "alone", d)) for d in budgets}
    root = tmp_path / "shared"
    trunk = root / "trunks" / "t"
    cfgs = {d: _cfg(root, d) for d in budgets}
    index = train_trunk(cfgs[32768], trunk_id="t", directory=trunk,
                        branch_points=[_point(c) for c in cfgs.values()])
    assert index["status"] == "stopped"
    # Stopped at the largest branch point rounded down to a batch: 29,491 -> 29,184.
    assert index["tokens"] == 29184 and index["steps"] == 57
    assert set(index["points"]) == {str(_point(c)) for c in cfgs.values()}
    for d in budgets:
        shared = _branch(root, trunk, d)
        checkpoint = _point(cfgs[d]) // BATCH_TOKENS * BATCH_TOKENS
        assert shared.summary["final/tokens_shared"] == checkpoint
        assert shared.summary["final/tokens_trained"] == d - checkpoint
        assert alone[d].summary["final/tokens_shared"] == 0
        assert alone[d].summary["final/tokens_trained"] == d
        # Its history starts at the first logged step (5), not at its branch checkpoint.
        assert _rows(shared.run_dir)[0]["step"] == 5 < checkpoint // BATCH_TOKENS
        _assert_same_run(shared, alone[d])


def test_a_branch_point_in_the_first_batch_leaves_the_trunk_as_alone(tmp_path):
    """A budget whose decay is shorter than a batch branches at step 0: saving that checkpoint
    gave the trunk's AdamW a step count of 1 before its first update, and every budget of the
    family trained another run than alone."""
    extra = ["schedule.warmup_tokens=256"]
    root = tmp_path / "shared"
    trunk = root / "trunks" / "t"
    cfgs = {d: _cfg(root, d, extra) for d in (512, 8192)}
    assert _point(cfgs[512]) < BATCH_TOKENS
    train_trunk(cfgs[8192], trunk_id="t", directory=trunk,
                branch_points=[_point(c) for c in cfgs.values()])
    assert (trunk / "checkpoints" / "step-000000000").is_dir()
    for d in cfgs:
        _assert_same_run(_branch(root, trunk, d, extra), run(_cfg(tmp_path / "alone", d, extra)))


@pytest.mark.slow
def test_extend_trains_only_the_increment_and_a_smaller_budget_trains_its_gap(tmp_path):
    root = tmp_path / "shared"
    trunk = root / "trunks" / "t"
    first = train_trunk(_cfg(root, 16384), trunk_id="t", directory=trunk,
                        branch_points=[_point(_cfg(root, 16384))])
    assert first["tokens"] == 14336 and first["cadence_tokens"] == 1536
    mtime = {p.name: p.stat().st_mtime_ns for p in (trunk / "checkpoints").iterdir()}
    # extend: a larger budget continues the trunk from its last checkpoint
    bigger = train_trunk(_cfg(root, 32768), trunk_id="t", directory=trunk,
                         branch_points=[_point(_cfg(root, 16384)), _point(_cfg(root, 32768))])
    assert bigger["tokens"] == 29184 and bigger["cadence_tokens"] == 1536
    steps = [r["step"] for r in _rows(trunk)]
    assert steps == sorted(set(steps)) and steps[-1] == 56  # the eval at 28,672 tokens
    # Nothing before the first trunk's end was trained (or saved) again.
    assert {p.name: p.stat().st_mtime_ns for p in (trunk / "checkpoints").iterdir()
            if p.name in mtime} == mtime
    # A budget below the trunk's position, added later: its branch point 11,980 has no
    # checkpoint of its own; it starts from the cadence checkpoint at 10,752 and trains the
    # gap to 11,776 before its decay.
    shared = _branch(root, trunk, 13312)
    assert shared.summary["final/tokens_shared"] == 10752
    _assert_same_run(shared, run(_cfg(tmp_path / "alone", 13312)))
    _assert_same_run(_branch(root, trunk, 32768), run(_cfg(tmp_path / "alone", 32768)))


def test_a_trunk_says_where_it_trains_to_before_its_first_checkpoint(tmp_path):
    """`sweep status` gives a training trunk's position against the last branch point of its
    task, which its `trunk.json` held only from its first checkpoint on (most of a long
    trunk's first stretch showed tokens with no end)."""
    from trainer.reporting import Reporter

    trunk = tmp_path / "trunks" / "t"
    seen = []

    class FirstLog(Reporter):
        def log_metrics(self, metrics, *, step):
            if not seen:
                seen.append((branching.read_index(trunk), sorted(
                    p.name for p in (trunk / "checkpoints").glob("step-*"))))

    cfg = _cfg(tmp_path, 16384, ["train.log_every_steps=1"])  # (its first save: step 3)
    train_trunk(cfg, trunk_id="t", directory=trunk, branch_points=[_point(cfg)],
                reporter=FirstLog())
    index, saved = seen[0]
    assert saved == [] and index["status"] == "running"
    assert index["branch_points"] == [_point(cfg)] and index["tokens"] == 0


@pytest.mark.slow
def test_a_trunk_that_diverges_diverges_the_branches_beyond_it(tmp_path):
    # Diverges at step 4 (2,048 tokens): after the small budget's stable phase (3 steps to
    # 1,536), inside the large one's.
    hot = ["optim.lr=0.3", "optim.grad_clip=0", "train.divergence_factor=1.3",
           "schedule.warmup_tokens=1024"]
    root = tmp_path / "shared"
    trunk = root / "trunks" / "t"
    budgets = [1536, 262144]
    index = train_trunk(_cfg(root, 262144, hot), trunk_id="t", directory=trunk,
                        branch_points=[_point(_cfg(root, d, hot)) for d in budgets])
    assert index["status"] == "diverged"
    at = index["diverged"]["tokens"]
    assert _point(_cfg(root, 1536, hot)) < at < _point(_cfg(root, 262144, hot))
    small, big = (_branch(root, trunk, d, hot) for d in budgets)
    assert small.status == "finished"  # branched before the divergence: its own result
    assert big.status == "diverged" and big.summary["final/diverged_at_tokens"] == at
    _assert_same_run(big, run(_cfg(tmp_path / "alone", 262144, hot)))
    _assert_same_run(small, run(_cfg(tmp_path / "alone", 1536, hot)))


@pytest.mark.slow
def test_norm_test_batches_grow_in_the_trunk_and_branches_stay_exact(tmp_path):
    # The batch grows at the norm tests (every 2 steps), so branch points fall between
    # boundaries that only the trunk's own trajectory knows; each branch still equals its
    # independent run.
    grow = ["data.concentration=0.05", "data.order=1", "train.batch_schedule=norm_test",
            "train.micro_batch_size=2", "train.norm_test_every=2", "train.norm_test_eta=0.3",
            "train.max_batch_size=64", "train.log_every_steps=1"]
    root = tmp_path / "shared"
    trunk = root / "trunks" / "t"
    budgets = [16384, 40960]
    index = train_trunk(_cfg(root, 40960, grow), trunk_id="t", directory=trunk,
                        branch_points=[_point(_cfg(root, d, grow)) for d in budgets])
    batches = {r["train/batch_tokens"] for r in _rows(trunk) if "train/batch_tokens" in r}
    assert len(batches) > 1  # it grew
    for d in budgets:
        shared = _branch(root, trunk, d, grow)
        assert shared.summary["final/tokens_shared"] == index["checkpoints"][
            index["points"][str(_point(_cfg(root, d, grow)))]]
        _assert_same_run(shared, run(_cfg(tmp_path / "alone", d, grow)))
