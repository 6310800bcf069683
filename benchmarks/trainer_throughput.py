"""Trainer throughput: tokens/s and MFU of `trainer.run` next to a bare PyTorch step.

The bare step is the same model and optimizer groups on one batch already in memory, with no
schedule, logging, data stream, clipping or divergence check. Targets (issue 2): the trainer at
≥ 0.95× the bare step, and MFU ≥ 80% of the measured GEMM rate on CPU.

    python benchmarks/trainer_throughput.py [--json] [--steps 60] [--rounds 2] [--compile] [--gpu]

Bare and trainer measurements alternate for `--rounds` rounds and the best round of each is
kept, so that a burst of other load on a small machine does not decide the ratio.

Prints a table (or only JSON with --json) and writes benchmarks/results/trainer_throughput.json.
--gpu runs the GPU shape (width 768, depth 12, seq 1024, bf16, compiled) instead; its bare step
is GPT-124M (GPT-2's padded vocabulary, 50,304), the trainer's run a 256-token corpus.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time

import torch
from _results import save

from trainer.compose import compose
from trainer.distributed import resolve_device
from trainer.flops import flops_per_token, measure_cpu_gemm_rate, peak_flops
from trainer.loop import compiles, next_token_loss, run
from trainer.model import GPT, GPTShape
from trainer.mup import build_optimizer, set_lr

CPU_SHAPE = ["model.width=256", "model.depth=4", "model.head_dim=64", "model.base_width=256",
             "train.seq_len=256", "train.batch_size=16"]
GPU_SHAPE = ["model=gpt124m", "train.seq_len=1024", "train.batch_size=32",
             "train.micro_batch_size=32", "train.compile=true", "data=synthetic",
             "data.vocab_size=256", "data.num_tokens=2_000_000"]
GPT2_VOCAB = 50_304
"""GPT-2's 50,257 tokens padded to a multiple of 64: with it the GPU shape is GPT-124M. The
trainer's run reads a synthetic corpus of 256 tokens; the bare step on GPU takes
this vocabulary, so that its MFU is GPT-124M's."""


def bare_step_tokens_per_s(cfg, *, steps: int, warmup: int, vocab: int = 256,
                           loss_compiled: bool = True) -> float:
    """Median tokens/s of forward + backward + AdamW step on one in-memory batch.

    When the model is compiled, `loss_compiled` compiles the cross-entropy with it, as the
    trainer does (one graph from ids to loss, so that the fp32 logits are never written out);
    False compiles the model alone, the trainer's way until 2026-12-04."""
    device = resolve_device(cfg.train.device)
    torch.manual_seed(0)
    model = GPT(GPTShape(cfg.model, vocab)).to(device)

    loss_of = functools.partial(next_token_loss, model)
    if compiles(cfg, device):
        loss_of = torch.compile(loss_of) if loss_compiled else functools.partial(
            next_token_loss, torch.compile(model))

    opt = build_optimizer(model, cfg.optim, weight_decay=0.0, fused=device.type == "cuda")
    set_lr(opt, cfg.optim.lr)
    micro = cfg.train.micro_batch_size or cfg.train.batch_size
    batch = torch.randint(0, vocab, (cfg.train.batch_size, cfg.train.seq_len + 1),
                          device=device)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        for chunk in batch.split(micro):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_of(chunk)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return cfg.train.batch_size * cfg.train.seq_len / statistics.median(times)


def gpu_gemm_rate(n: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of an n×n×n bf16 matmul on random data: the device's practical ceiling."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3)


def trainer_tokens_per_s(overrides: list[str], *, steps: int, log_every: int) -> float:
    """Median of the trainer's own perf/tokens_per_s windows, first window dropped."""
    with tempfile.TemporaryDirectory() as root:
        cfg = compose(overrides + [f"storage_root={root}", f"train.log_every_steps={log_every}"])
        tokens = cfg.train.batch_size * cfg.train.seq_len * steps
        cfg = compose(overrides + [f"storage_root={root}", f"train.log_every_steps={log_every}",
                                   f"train.tokens={tokens}", "train.eval_every_tokens=0",
                                   "train.checkpoint_every_tokens=0",
                                   "schedule.warmup_tokens=0", "train.eval_tokens=4096"])
        result = run(cfg)
        rows = [json.loads(line) for line in
                (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r["perf/tokens_per_s"] for r in rows if "perf/tokens_per_s" in r]
    return statistics.median(windows[1:-1] or windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--gpu", action="store_true", help="GPU shape, bf16, compiled")
    parser.add_argument("--variants", action="store_true",
                        help="with --gpu: the bare step with the model compiled, against the "
                             "same step with the loss compiled in (nothing else)")
    args = parser.parse_args()
    if args.variants and not args.gpu:
        parser.error("--variants compares compiled GPU steps: add --gpu")
    overrides = ["model=small", "optim.lr=1e-3", "schedule=constant"] + (
        GPU_SHAPE if args.gpu else CPU_SHAPE) + (["train.compile=true"] if args.compile else [])
    cfg = compose(overrides)
    device = resolve_device(cfg.train.device)
    peak = peak_flops(device, cfg.data.cache_dir)
    fpt = flops_per_token(cfg.model, vocab_size=256, seq_len=cfg.train.seq_len)
    bare_vocab = GPT2_VOCAB if args.gpu else 256
    bare_fpt = flops_per_token(cfg.model, vocab_size=bare_vocab, seq_len=cfg.train.seq_len)
    bare, trainer = 0.0, 0.0
    if args.variants:
        variants = {name: bare_step_tokens_per_s(cfg, steps=args.steps // 2, warmup=3,
                                                 vocab=bare_vocab, loss_compiled=compiled)
                    for name, compiled in (("model_compiled", False), ("loss_compiled", True))}
        result = {name: {"tokens_per_s": rate, "mfu": rate * bare_fpt / peak if peak else None}
                  for name, rate in variants.items()}
        save("trainer_gpu_variants" if args.gpu else "trainer_variants", result)
        print(json.dumps(result))
        return
    if device.type == "cpu":  # measured afresh, best of the rounds, like the two throughputs
        peak = 0.0
    for _ in range(args.rounds):
        if device.type == "cpu":
            peak = max(peak, measure_cpu_gemm_rate(seconds=1.0))
        bare = max(bare, bare_step_tokens_per_s(cfg, steps=args.steps // 2, warmup=3,
                                                     vocab=bare_vocab))
        trainer = max(trainer, trainer_tokens_per_s(overrides, steps=args.steps, log_every=10))
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "shape": overrides, "rounds": args.rounds,
        "flops_per_token": fpt, "peak_flops_per_s": peak,
        "peak_source": "vendor bf16 dense" if device.type == "cuda" else "measured fp32 GEMM",
        "bare_tokens_per_s": bare, "trainer_tokens_per_s": trainer,
        "trainer_over_bare": trainer / bare if bare_vocab == 256 else None,
        "bare_vocab": bare_vocab, "bare_flops_per_token": bare_fpt,
        "bare_mfu": bare * bare_fpt / peak if peak else None,
        "trainer_mfu": trainer * fpt / peak if peak else None,
    }
    if device.type == "cuda":
        measured = gpu_gemm_rate()
        result["measured_bf16_gemm_flops_per_s"] = measured
        result["bare_mfu_of_measured_gemm"] = bare * bare_fpt / measured
    save("trainer_gpu_throughput" if args.gpu else "trainer_throughput", result)
    if args.json:
        print(json.dumps(result))
        return
    print(f"device {result['device']}, {result['threads']} threads, peak "
          f"{peak / 1e9:.1f} GFLOP/s ({result['peak_source']})")
    print(f"{'':<10}{'tokens/s':>12}{'MFU':>8}")
    for name in ("bare", "trainer"):
        mfu = result[f"{name}_mfu"]
        print(f"{name:<10}{result[f'{name}_tokens_per_s']:>12,.0f}"
              f"{(f'{mfu:.1%}' if mfu else 'n/a'):>8}")
    if "bare_mfu_of_measured_gemm" not in result:
        print(f"trainer / bare = {result['trainer_over_bare']}  (target ≥ 0.95)")
    else:
        print(f"bare step is GPT-124M (vocab {bare_vocab}): MFU {result['bare_mfu']:.1%} of the "
              f"vendor bf16 peak (target ≥ 45%), {result['bare_mfu_of_measured_gemm']:.1%} of "
              f"the measured {result['measured_bf16_gemm_flops_per_s'] / 1e12:.0f} TFLOP/s GEMM")


if __name__ == "__main__":
    main()
