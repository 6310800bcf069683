"""The trainer's eager step against a plain GPT-2 block at equal FLOPs per token (issue 17).

    python benchmarks/eager_step.py [--json] [--steps 20] [--rounds 3] [--threads 2]
    python benchmarks/eager_step.py --ops [--steps 6] [--rounds 2]   # where the time differs

The reference is the architecture of nanoGPT's upstream model (Karpathy's GPT-2 in PyTorch),
written here from its description: learned positions, LayerNorm, a fused qkv projection,
`scaled_dot_product_attention`, a GELU MLP of 4× width, no dropout, no biases, plain AdamW. Ours
is `trainer.model.GPT` (RoPE, RMSNorm, muP multipliers) with `trainer.mup`'s AdamW groups. Both
have the same matmuls (width 256, depth 4, head 64, seq 256, vocab 256, batch 16), so the same
FLOPs per token; the difference is everything around the matmuls.

Three rates, each from the fastest of `--rounds` × `--steps` steps of forward + backward + AdamW
step on one in-memory batch, the ways taking turns each round (so that a burst of other load
does not decide a ratio; the median step is reported too):
- `reference`: the GPT-2 block above;
- `model`: our GPT and optimizer, the same bare step;
- `trainer`: `trainer.loop.TrainingRun.step` (data stream, schedule, gradient clipping, the
  loss read back): what a run trains at.
Target: model / reference >= 1.0 in eager mode.

Prints a table (or only JSON with --json) and writes benchmarks/results/eager_step.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from _results import save
from torch import nn

from trainer.compose import compose
from trainer.loop import TrainingRun
from trainer.model import GPT, GPTShape
from trainer.mup import build_optimizer, set_lr
from trainer.reporting import NullReporter

SHAPE = ["model=small", "model.width=256", "model.depth=4", "model.head_dim=64",
         "model.base_width=256", "train.seq_len=256", "train.batch_size=16",
         "schedule=constant", "optim.lr=1e-3", "train.device=cpu", "train.compile=false"]
VOCAB = 256


class ReferenceBlock(nn.Module):
    """Pre-norm GPT-2 block: LayerNorm, causal self-attention, LayerNorm, GELU MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width, bias=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.ln2 = nn.LayerNorm(width, bias=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab: int, width: int, depth: int, heads: int, context: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(ReferenceBlock(width, heads) for _ in range(depth))
        self.ln = nn.LayerNorm(width, bias=False)
        self.readout = nn.Linear(width, vocab, bias=False)
        for p in self.parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln(x))


def _step_seconds(step, steps: int, warmup: int = 1) -> list[float]:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _bare_step(model: nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor):
    def step():
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _ways(root: str) -> tuple[int, dict, dict]:
    """(tokens a step, {way: one step}, parameter counts) with run files under `root`."""
    cfg = compose(SHAPE + [f"storage_root={root}", "train.tokens=100_000_000"])
    m = cfg.model
    torch.manual_seed(0)
    batch = torch.randint(0, VOCAB, (cfg.train.batch_size, cfg.train.seq_len + 1))
    reference = ReferenceGPT(VOCAB, m.width, m.depth, m.width // m.head_dim, cfg.train.seq_len)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model = GPT(GPTShape(m, VOCAB))
    opt = build_optimizer(model, cfg.optim, weight_decay=0.0, fused=True)
    set_lr(opt, cfg.optim.lr)
    training = TrainingRun(cfg, reporter=NullReporter())
    ways = {"reference": _bare_step(reference, ref_opt, batch),
            "model": _bare_step(model, opt, batch),
            "trainer": training.step}
    params = {"reference": sum(p.numel() for p in reference.parameters()),
              "model": sum(p.numel() for p in model.parameters())}
    return cfg.train.batch_size * cfg.train.seq_len, ways, params


def op_table(steps: int, rounds: int) -> list[tuple[str, float, float]]:
    """(op, reference ms a step, model ms a step) by PyTorch's profiler, each op's self time
    at its fastest of `rounds` profiles of `steps` steps; largest difference first."""
    from torch.profiler import ProfilerActivity, profile

    per_step: dict[str, dict[str, float]] = {"reference": {}, "model": {}}
    with tempfile.TemporaryDirectory() as root:
        _, ways, _ = _ways(root)
        for _ in range(rounds):
            for name, ms in per_step.items():
                for _ in range(2):
                    ways[name]()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(steps):
                        ways[name]()
                for event in prof.key_averages():
                    if event.key.startswith("aten::"):
                        spent = event.self_cpu_time_total / steps / 1000
                        ms[event.key] = min(ms.get(event.key, math.inf), spent)
    ref, ours = per_step["reference"], per_step["model"]
    rows = [(op, ref.get(op, 0.0), ours.get(op, 0.0)) for op in {*ref, *ours}]
    return sorted(rows, key=lambda r: -abs(r[2] - r[1]))


def measure(steps: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        tokens, ways, params = _ways(root)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):  # the ways take turns, so that load hits each alike
            for name, step in ways.items():
                times[name] += _step_seconds(step, steps)
        # The fastest step of each: the work is the same every step, and on a shared machine
        # noise only ever adds time (the median is reported too).
        best = {name: tokens / min(t) for name, t in times.items()}
        median = {name: tokens / statistics.median(t) for name, t in times.items()}
    return {"tokens_per_s": best, "median_tokens_per_s": median, "params": params,
            "median_model_over_reference": median["model"] / median["reference"],
            "model_over_reference": best["model"] / best["reference"],
            "trainer_over_reference": best["trainer"] / best["reference"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per way per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ops", action="store_true",
                        help="instead: the ops whose time differs most between the two "
                             "models, by the profiler (where ours is slower, and why)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ops:
        rows = op_table(args.steps, args.rounds)
        print(f"{'op (self time, ms a step)':<58}{'reference':>10}{'model':>10}")
        for op, ref, ours in rows[:25]:
            print(f"{op[:56]:<58}{ref:>10.2f}{ours:>10.2f}")
        print(f"{'all aten ops':<58}{sum(r[1] for r in rows):>10.1f}"
              f"{sum(r[2] for r in rows):>10.1f}")
        return
    result = {"threads": args.threads, "shape": SHAPE, "vocab": VOCAB,
              "torch": torch.__version__, **measure(args.steps, args.rounds)}
    save("eager_step", result)
    if args.json:
        print(json.dumps(result))
        return
    print(f"width 256, depth 4, seq 256, batch 16, vocab {VOCAB}, {args.threads} threads, eager")
    for name, rate in result["tokens_per_s"].items():
        print(f"{name:<10}{rate:>10,.0f} tok/s")
    print(f"model / reference = {result['model_over_reference']:.3f}  (target >= 1.0); "
          f"trainer / reference = {result['trainer_over_reference']:.3f}")


if __name__ == "__main__":
    main()
