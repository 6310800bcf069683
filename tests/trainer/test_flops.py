"""FLOPs per token against a hand count, and the device peak measured once per machine."""

import json

import pytest
import torch

from trainer import flops
from trainer.config import ModelConfig
from trainer.flops import flops_per_token, peak_flops
from trainer.model import GPT, GPTShape


def test_flops_per_token_of_a_small_config_by_hand():
    # width 32, depth 2, MLP ratio 4, 256 bytes, 64-token context.
    # One block's matmul weights: QKV 3·32·32 = 3072, attention out 32·32 = 1024,
    # MLP in and out 2·(32·128) = 8192; together 12 288, so 24 576 for two blocks.
    # Readout 32·256 = 8192 (the embedding lookup is no matmul): 32 768 matmul weights.
    # 6 × 32 768 = 196 608; attention's QKᵀ and AV: 12 · 2 · 32 · 64 = 49 152.
    cfg = ModelConfig(width=32, depth=2, head_dim=16, mlp_ratio=4, base_width=32)
    assert flops_per_token(cfg, vocab_size=256, seq_len=64) == 196_608 + 49_152


def test_flops_count_the_models_own_matmul_weights():
    """6·N_matmul uses the weights the model multiplies by: every ≥2-D weight but the
    embedding table(s)."""
    cfg = ModelConfig(width=64, depth=3, head_dim=16, mlp_ratio=4, base_width=32)
    model = GPT(GPTShape(cfg, vocab_size=256))
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    matmul = sum(p.numel() for p in model.parameters() if p.ndim >= 2 and id(p) not in embeddings)
    attention = 12 * cfg.depth * cfg.width * 128
    assert flops_per_token(cfg, vocab_size=256, seq_len=128) == 6 * matmul + attention


def test_cpu_peak_is_measured_once_per_machine(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(flops, "measure_cpu_gemm_rate", lambda: calls.append(1) or 1e11)
    flops._cached_cpu_rate.cache_clear()
    cpu = torch.device("cpu")
    assert peak_flops(cpu, str(tmp_path)) == 1e11
    assert peak_flops(cpu, str(tmp_path)) == 1e11  # same process: not even the file is read
    assert len(calls) == 1
    (stored,) = json.loads((tmp_path / flops.CPU_RATE_FILE).read_text()).values()
    assert stored == 1e11
    flops._cached_cpu_rate.cache_clear()  # as a new process on the same machine
    assert peak_flops(cpu, str(tmp_path)) == 1e11
    assert len(calls) == 1
    flops._cached_cpu_rate.cache_clear()


def test_a_peak_measured_under_load_is_measured_again_when_a_run_beats_it(tmp_path,
                                                                           monkeypatch):
    """A peak measured while other work held the cores (30 GFLOP/s stored on a 2-core machine
    that measures 158 when quiet) was kept for good: every later run logged MFUs of 1.2-1.5."""
    rates = iter([3e10, 1.58e11])
    monkeypatch.setattr(flops, "measure_cpu_gemm_rate", lambda: next(rates))
    flops._cached_cpu_rate.cache_clear()
    cpu = torch.device("cpu")
    assert peak_flops(cpu, str(tmp_path)) == 3e10
    assert flops.cpu_peak_at_least(str(tmp_path), 2e10) == 3e10  # (not beaten: not measured)
    assert flops.cpu_peak_at_least(str(tmp_path), 4e10) == 1.58e11
    flops._cached_cpu_rate.cache_clear()  # a new process reads the higher one
    assert peak_flops(cpu, str(tmp_path)) == 1.58e11
    monkeypatch.setattr(flops, "measure_cpu_gemm_rate", lambda: 1e10)  # (loaded again)
    assert flops.cpu_peak_at_least(str(tmp_path), 2e11) == 2e11  # never below what a run did
    flops._cached_cpu_rate.cache_clear()


def test_a_run_never_logs_an_mfu_above_one(tmp_path, monkeypatch):
    from trainer.compose import compose
    from trainer.loop import run

    flops._cached_cpu_rate.cache_clear()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / flops.CPU_RATE_FILE).write_text(json.dumps({flops._cpu_key(): 1e3}))
    cfg = compose(["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
                   "data=synthetic", "data.num_tokens=100_000", "train.seq_len=32",
                   "train.batch_size=4", "train.tokens=2048", "train.eval_tokens=512",
                   "train.log_every_steps=1", "train.device=cpu", f"data.cache_dir={cache}",
                   f"storage_root={tmp_path / 'runs'}"])
    result = run(cfg)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    mfus = [row["perf/mfu"] for row in rows if "perf/mfu" in row]
    assert len(mfus) == 16 and max(mfus) <= 1.0, mfus
    flops._cached_cpu_rate.cache_clear()


def test_building_a_run_does_not_measure_the_peak(tmp_path, monkeypatch):
    from trainer.compose import compose
    from trainer.loop import TrainingRun
    from trainer.reporting import NullReporter

    def refuse(*args, **kwargs):
        raise AssertionError("peak measured while building the run")

    monkeypatch.setattr("trainer.loop.peak_flops", refuse)
    cfg = compose(["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
                   "data=synthetic", "data.num_tokens=100_000", "train.seq_len=32",
                   "train.batch_size=4", "train.eval_tokens=512", "train.device=cpu",
                   f"storage_root={tmp_path}"])
    training = TrainingRun(cfg, reporter=NullReporter())
    training.step()
    with pytest.raises(AssertionError, match="peak measured"):
        training.peak_flops_per_s  # noqa: B018 (asked for when MFU is first logged)
