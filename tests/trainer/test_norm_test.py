"""`train.batch_schedule=norm_test`: the statistic, the growth rule, and runs whose batch grows."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainer.compose import compose
from trainer.errors import ConfigError
from trainer.identity import config_id
from trainer.loop import TrainingRun, run
from trainer.norm_test import grown_batch
from trainer.reporting import NullReporter
from trainer.validation import check

TINY = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
        "model.depth=2", "data=synthetic", "data.num_tokens=200_000", "train.seq_len=32",
        "schedule=constant", "schedule.warmup_tokens=0", "optim.lr=0.01",
        "train.eval_tokens=4096", "train.tokens=60000", "train.device=cpu",
        "train.batch_schedule=norm_test"]


def _loop(tmp_path: Path, *overrides: str) -> TrainingRun:
    cfg = compose(TINY + [f"storage_root={tmp_path}", *overrides])
    check(cfg)
    return TrainingRun(cfg, reporter=NullReporter())


def _grad(model: torch.nn.Module, sequences: torch.Tensor) -> torch.Tensor:
    """The gradient of the mean token loss over `sequences`, flattened."""
    model.zero_grad(set_to_none=True)
    logits = model(sequences[:, :-1])
    F.cross_entropy(logits.flatten(0, 1).float(), sequences[:, 1:].flatten()).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).double()


def _direct_statistic(units: list[torch.Tensor]) -> float:
    """T = S / (K‖ḡ‖²), S the unbiased sample variance of the K unit gradients."""
    stacked = torch.stack(units)
    mean = stacked.mean(0)
    k = len(units)
    variance = ((stacked - mean) ** 2).sum() / (k - 1)
    return (variance / (k * mean.pow(2).sum())).item()


def test_statistic_equals_the_per_sample_computation(tmp_path):
    """One process, one sequence per micro-batch: S is the per-sample gradient variance."""
    loop = _loop(tmp_path, "train.batch_size=6", "train.micro_batch_size=1",
                 "train.norm_test_every=1")
    model = copy.deepcopy(loop.model)  # the weights the step's gradients are taken at
    batch = loop.local_batch()
    per_sample = [_grad(model, batch[i:i + 1]) for i in range(len(batch))]
    expected = _direct_statistic(per_sample)
    result = loop.step()
    # Float32 gradients, each micro-batch's recovered as a difference of accumulations.
    assert result.norm_test == pytest.approx(expected, rel=1e-4)
    assert 0 < expected < 10
    assert result.batch_size == 6


def test_statistic_over_micro_batches_of_several_sequences(tmp_path):
    loop = _loop(tmp_path, "train.batch_size=12", "train.micro_batch_size=3",
                 "train.norm_test_every=1")
    model = copy.deepcopy(loop.model)
    batch = loop.local_batch()
    units = [_grad(model, batch[i:i + 3]) for i in range(0, 12, 3)]
    assert loop.step().norm_test == pytest.approx(_direct_statistic(units), rel=1e-4)


def test_only_test_steps_carry_the_statistic(tmp_path):
    loop = _loop(tmp_path, "train.batch_size=8", "train.micro_batch_size=2",
                 "train.norm_test_every=3")
    tested = [loop.step().norm_test is not None for _ in range(6)]
    assert tested == [False, False, True, False, False, True]


def test_two_processes_estimate_from_micro_batches_across_ranks(tmp_path):
    """Under FSDP a unit is micro-batch k of every rank: its gradient is their mean."""
    args = ["train.batch_size=16", "train.micro_batch_size=2", "train.norm_test_every=1",
            "train.tokens=512", "train.log_every_steps=1", "train.norm_test_eta=10"]
    two = run(compose(TINY + args + ["train.world_size=2", f"storage_root={tmp_path}/two"]))
    assert two.status == "finished"
    rows = [json.loads(line) for line in (two.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = next(r["train/norm_test"] for r in rows if r.get("step") == 1)

    loop = _loop(tmp_path / "one", *args)
    batch = loop.local_batch()  # the global batch; rank r reads sequences 8r .. 8r+7
    units = [_grad(loop.model, torch.cat([batch[2 * k:2 * k + 2], batch[8 + 2 * k:10 + 2 * k]]))
             for k in range(4)]
    assert logged == pytest.approx(_direct_statistic(units), rel=1e-4)


def test_growth_rule():
    # T ≤ η²: unchanged; above: ⌈T·B/η²⌉ in whole units, capped, never smaller.
    assert grown_batch(0.01, 32, eta=0.1, unit=4, cap=0) == 32
    assert grown_batch(0.02, 32, eta=0.1, unit=4, cap=0) == 64
    assert grown_batch(0.0201, 32, eta=0.1, unit=4, cap=0) == 68  # 64.32 → 65 → 68
    assert grown_batch(0.5, 32, eta=0.1, unit=4, cap=256) == 256
    assert grown_batch(0.5, 256, eta=0.1, unit=4, cap=256) == 256
    assert grown_batch(math.nan, 32, eta=0.1, unit=4, cap=0) == 32


def test_batch_grows_as_the_loss_falls(tmp_path):
    """Early on the gradient's signal dominates its noise; as the loss nears the chain's
    entropy the mean gradient shrinks, the noise does not, and the test asks for more."""
    overrides = ["data.concentration=0.05", "data.order=1", "train.batch_size=32",
                 "train.micro_batch_size=4", "train.norm_test_every=2",
                 "train.norm_test_eta=0.45", "train.max_batch_size=256",
                 "train.log_every_steps=1", f"storage_root={tmp_path}"]
    result = run(compose(TINY + overrides))
    assert result.status == "finished"
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text()
            .splitlines()]
    tests = [r for r in rows if "train/norm_test" in r]
    batches = [r["train/batch_tokens"] // 32 for r in rows if "train/batch_tokens" in r]
    assert batches == sorted(batches)  # never shrinks
    assert all(b % 4 == 0 and 32 <= b <= 256 for b in batches)
    assert batches[0] == 32 and batches[-1] > 32
    # The first tests pass (the loss is still high) and the statistic rises as it falls.
    early, late = tests[:4], tests[-4:]
    assert all(r["train/norm_test"] < 0.45**2 for r in early)
    assert early[0]["train/loss"] > 2 * late[-1]["train/loss"]
    assert sum(r["train/norm_test"] for r in late) > 3 * sum(r["train/norm_test"] for r in early)
    assert result.summary["final/batch_tokens"] == batches[-1] * 32
    assert result.summary["final/tokens"] <= 60000
    # Schedules stay in tokens: with a constant schedule the LR never moved.
    assert {r["train/lr"] for r in rows if "train/lr" in r} == {0.01}


def test_grown_batch_survives_a_checkpoint(tmp_path):
    overrides = ("train.batch_size=8", "train.micro_batch_size=2", "train.norm_test_every=1",
                 "train.norm_test_eta=0.05", "train.max_batch_size=64")
    loop = _loop(tmp_path, *overrides)
    loop.step()
    assert loop.state.batch_size > 8
    loop.save()
    resumed = _loop(tmp_path, *overrides)
    assert resumed.restore() == 1
    assert resumed.state.batch_size == loop.state.batch_size
    assert resumed.state.position == 8


def test_norm_test_keys_are_in_the_id_only_off_their_introduced_defaults():
    """trainer/identity.py's INTRODUCED rule: constant-batch runs keep the ids they had before
    these keys existed; a key set away from its default is in the id, whatever reads it."""
    constant = compose(["train.batch_size=8"])
    assert config_id(constant) == config_id(compose(["train.batch_size=8",
                                                     "train.norm_test_eta=0.1"]))
    adaptive = ["train.batch_size=8", "train.batch_schedule=norm_test"]
    assert config_id(compose(adaptive)) != config_id(compose(adaptive +
                                                             ["train.norm_test_eta=0.3"]))
    assert config_id(compose(adaptive)) != config_id(constant)


@pytest.mark.parametrize("overrides, words", [
    (["train.batch_size=8"], "train.micro_batch_size=0 leaves fewer than 2 per rank"),
    (["train.batch_size=8", "train.micro_batch_size=8"], "fewer than 2 per rank"),
    (["train.batch_size=8", "train.micro_batch_size=4", "train.world_size=2"],
     "fewer than 2 per rank"),
    (["train.batch_size=8", "train.micro_batch_size=4", "train.max_batch_size=30"],
     "train.max_batch_size=30 must be 0 (no cap) or a multiple of"),
    (["train.batch_size=8", "train.micro_batch_size=2", "train.max_batch_size=4"],
     "at least train.batch_size=8"),
    (["train.batch_size=8", "train.micro_batch_size=2", "train.norm_test_eta=0"],
     "train.norm_test_eta=0.0 must be > 0"),
    (["train.batch_size=8", "train.micro_batch_size=2", "train.norm_test_every=0"],
     "train.norm_test_every=0 must be >= 1"),
])
def test_bad_norm_test_settings_are_refused(overrides, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check(compose(["train.batch_schedule=norm_test", *overrides]))


def test_a_batch_grown_past_the_budget_is_trimmed_to_it(tmp_path):
    """The norm test grew the batch past the tokens left and the run ended short (38,400 of
    65,536 tokens, its WSD decay never run), yet read `finished`."""
    cfg = compose(["model=tiny", "data=synthetic", "train.tokens=65536", "schedule=wsd",
                   "train.batch_schedule=norm_test", "train.batch_size=8",
                   "train.micro_batch_size=2", "train.norm_test_eta=0.3",
                   "train.norm_test_every=2", "seed=33", f"storage_root={tmp_path}"])
    result = run(cfg)
    assert result.status == "finished"
    assert result.summary["final/tokens"] == 65536
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text()
            .splitlines()]
    batches = [r["train/batch_tokens"] for r in rows if "train/batch_tokens" in r]
    assert max(batches) > 8 * 128  # it grew
    # The trimmed last step leaves the grown batch as it was: final/batch_tokens is the
    # batch the test grew to (it read the trimmed one, below even the starting batch), and
    # a test on that step grows from the grown batch, never from the trimmed one.
    final = result.summary["final/batch_tokens"]
    assert final >= max(batches) and final % (2 * 128) == 0


def test_a_trimmed_last_step_does_not_shrink_the_batch_the_run_reports(tmp_path):
    """A budget of 20.25 batches: the last step trains a quarter batch, and final/batch_tokens
    read that quarter, below the batch the run started with (the norm test never grew it)."""
    cfg = compose(["model=tiny", "data=synthetic", "train.seq_len=64", "train.tokens=10368",
                   "train.batch_schedule=norm_test", "train.batch_size=8",
                   "train.micro_batch_size=2", "train.norm_test_eta=10",
                   "train.log_every_steps=1", f"storage_root={tmp_path}"])
    result = run(cfg)
    assert result.summary["final/tokens"] == 10368
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text()
            .splitlines()]
    steps = [r["train/batch_tokens"] for r in rows if "train/batch_tokens" in r]
    assert steps[-1] == 128 and set(steps[:-1]) == {512}  # the last step, trimmed
    assert result.summary["final/batch_tokens"] == 512


def test_a_grown_batch_raises_the_power_schedules_lr_with_its_beta(tmp_path):
    """Power's stable phase is η = min(η_max, β·a·n^b) with β the batch in sequences: once the
    norm test grows the batch, each step's LR is the formula's at the batch trained then (it
    stayed at the initial batch's, a quarter of it here once the batch quadrupled)."""
    from trainer.schedules import power_lr

    overrides = ["schedule=power", "schedule.a=0.005", "schedule.b=-0.3",
                 "schedule.decay_fraction=0", "optim.lr=1.0", "train.batch_size=8",
                 "train.micro_batch_size=2", "train.norm_test_every=1",
                 "train.norm_test_eta=0.05", "train.max_batch_size=64",
                 "train.log_every_steps=1", "train.tokens=20000", f"storage_root={tmp_path}"]
    result = run(compose(TINY + overrides))
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text()
            .splitlines() if "train/lr" in line]
    grown = [r for r in rows if r["train/batch_tokens"] > 8 * 32]
    assert grown and rows[0]["train/batch_tokens"] == 8 * 32
    beta = 8
    for r in rows:
        batch = r["train/batch_tokens"] // 32
        beta = max(beta, batch)  # (a last step trimmed to the budget keeps the grown β)
        middle = r["train/tokens"] - batch * 32 / 2  # (the LR is taken mid-batch)
        assert r["train/lr"] == pytest.approx(
            power_lr(middle, max_lr=1.0, batch_size=beta, a=0.005, b=-0.3), rel=1e-6)
    assert rows[-1]["train/batch_tokens"] < beta * 32  # (that trimmed step is in this run)
    assert grown[-1]["train/lr"] > 4 * power_lr(
        grown[-1]["train/tokens"], max_lr=1.0, batch_size=8, a=0.005, b=-0.3)
