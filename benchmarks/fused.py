"""Fused trial groups against independent runs, on CPU (issue 17).

    python benchmarks/fused.py [--json] [--members 8] [--threads 2] [--tokens 131072]

The demo sweep's proxy (model=tiny: width 64, depth 2; batch 8 × 128; WSD; eval every 65,536
tokens) on synthetic data, `--members` LR trials of `--tokens` each, trained three ways at the
same total thread count `--threads`:
- `independent`: one `python -m trainer` process per trial, `--threads` at a time, one thread
  each (what a sweep without fusion runs);
- `fused`: one process training all members as one group (`trainer.fused.run_group`) on
  `--threads` threads;
- `fused_per_thread`: `--threads` processes, one thread each, each a group of an equal share of
  the members.
Each reports its wall seconds (process start, data and evals included), the members' median
`perf/tokens_per_s` (each member's own tokens per second of training step), and the sweep's
tokens per wall second. Speedups are against `independent`.

`--approaches` also times one forward + backward of K members of that model (batch 8 × 128, one
thread) three ways: K separate `GPT`s, `torch.func.stack_module_state` +
`vmap(functional_call)` over `GPT`, and the batched matmuls of `StackedGPT`.

Prints a table (or only JSON with --json) and writes benchmarks/results/fused.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import save

from trainer.compose import compose

ROOT = Path(__file__).resolve().parent.parent
SHAPE = ["model=tiny", "data=synthetic", "schedule=wsd", "train.seq_len=128",
         "train.batch_size=8", "schedule.warmup_tokens=8_192", "train.eval_every_tokens=65_536",
         "train.eval_tokens=32_768", "train.log_every_steps=10"]


def learning_rates(num: int) -> list[float]:
    """`num` LRs a factor √2 apart from 2e-3 (the demo sweep's range, more finely)."""
    return [2e-3 * 2 ** (i / 2) for i in range(num)]


def _median_tokens_per_s(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r["perf/tokens_per_s"] for r in rows if "perf/tokens_per_s" in r]
    return statistics.median(windows[1:] or windows)  # the first window holds warm-up


def _run_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if (p / "summary.json").exists()]


def _launch(commands: list[list[str]], *, threads_each: int, at_once: int) -> float:
    """Run `commands` with at most `at_once` alive, each on `threads_each` threads; the wall
    seconds until the last one ends."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_each), "PYTHONPATH": str(ROOT)}
    pending, alive = list(commands), []
    start = time.perf_counter()
    while pending or alive:
        while pending and len(alive) < at_once:
            alive.append(subprocess.Popen(pending.pop(0), cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(0.02)
        for proc in [p for p in alive if p.poll() is not None]:
            alive.remove(proc)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.read().decode())
    return time.perf_counter() - start


def measure(name: str, commands: list[list[str]], root: Path, *, threads_each: int,
            at_once: int, tokens: int) -> dict:
    """Wall seconds and throughputs of one way of training the trials."""
    wall = _launch(commands, threads_each=threads_each, at_once=at_once)
    per_member = [_median_tokens_per_s(d) for d in _run_dirs(root)]
    return {"way": name, "processes": len(commands), "threads_each": threads_each,
            "at_once": at_once, "wall_s": wall,
            "member_tokens_per_s": statistics.median(per_member),
            "sweep_tokens_per_s": tokens * len(per_member) / wall}


def group_command(root: Path, lrs: list[float], tokens: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--group", str(root), str(tokens),
            *map(str, lrs)]


def run_group_here(root: str, tokens: str, lrs: list[str]) -> None:
    """The `--group` worker: train the LRs `lrs` as one fused group under `root`."""
    from trainer.fused import run_group

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run_group([compose(SHAPE + [f"train.tokens={tokens}", f"optim.lr={lr}",
                                f"storage_root={root}"]) for lr in lrs])


def compare(members: int, threads: int, tokens: int) -> list[dict]:
    """The three ways of training `members` LR trials on `threads` threads."""
    lrs = learning_rates(members)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "independent"
        commands = [[sys.executable, "-m", "trainer", *SHAPE, f"train.tokens={tokens}",
                     f"optim.lr={lr}", f"storage_root={root}"] for lr in lrs]
        results.append(measure("independent", commands, root, threads_each=1,
                               at_once=threads, tokens=tokens))
        root = base / "fused"
        results.append(measure("fused", [group_command(root, lrs, tokens)], root,
                               threads_each=threads, at_once=1, tokens=tokens))
        root = base / "fused_per_thread"
        shares = [lrs[i::threads] for i in range(threads)]
        results.append(measure("fused_per_thread",
                               [group_command(root, share, tokens) for share in shares], root,
                               threads_each=1, at_once=threads, tokens=tokens))
    reference = results[0]
    for r in results:
        r["speedup_wall"] = reference["wall_s"] / r["wall_s"]
        r["speedup_steady"] = (r["member_tokens_per_s"] * members / r["processes"]
                               * r["at_once"]) / (reference["member_tokens_per_s"]
                                                  * reference["at_once"])
    return results


def approaches(members: int, *, repeats: int = 10) -> dict[str, float]:
    """Median ms of one forward + backward of `members` stacked proxies, three ways."""
    from torch.func import functional_call, stack_module_state, vmap

    from trainer.fused_model import StackedGPT
    from trainer.model import GPT, GPTShape

    torch.set_num_threads(1)
    cfg = compose(SHAPE)
    shape = GPTShape(cfg.model, 16)
    torch.manual_seed(0)
    models = [GPT(shape) for _ in range(members)]
    batch = torch.randint(0, 16, (8, 129))
    x, y = batch[:, :-1], batch[:, 1:]
    stacked = StackedGPT.from_members(models)
    params, _ = stack_module_state(models)
    template = GPT(shape)
    vmapped = vmap(lambda p, idx: functional_call(template, p, (idx,)), in_dims=(0, None))

    def losses(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 2), y.flatten().repeat(members))

    ways = {
        "separate_gpts": lambda: sum(F.cross_entropy(m(x).flatten(0, 1), y.flatten())
                                     for m in models).backward(),
        "vmap_functional_call": lambda: losses(vmapped(params, x)).backward(),
        "stacked_bmm": lambda: losses(stacked(x)).backward(),
    }
    out = {}
    for name, way in ways.items():
        times = []
        for i in range(repeats + 2):
            start = time.perf_counter()
            way()
            if i >= 2:
                times.append(time.perf_counter() - start)
        out[name] = statistics.median(times) * 1e3
    return out


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=131_072, help="budget of each trial")
    parser.add_argument("--approaches", action="store_true",
                        help="also time vmap against batched matmuls")
    parser.add_argument("--group", nargs="+", help=argparse.SUPPRESS)  # the worker mode
    args = parser.parse_args()
    if args.group:
        run_group_here(args.group[0], args.group[1], args.group[2:])
        return
    result = {"members": args.members, "threads": args.threads, "tokens": args.tokens,
              "shape": SHAPE, "load_1m_before": _load()}
    if args.approaches:
        result["approach_ms"] = approaches(args.members)
    result["ways"] = compare(args.members, args.threads, args.tokens)
    result["load_1m_after"] = _load()
    save("fused", result)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.members} LR trials of {args.tokens:,} tokens, {args.threads} threads in all; "
          f"load {result['load_1m_before']:.2f} before, {result['load_1m_after']:.2f} after")
    print(f"{'way':<18}{'wall s':>8}{'member tok/s':>14}{'sweep tok/s':>13}"
          f"{'speedup wall':>14}{'steady':>8}")
    for r in result["ways"]:
        print(f"{r['way']:<18}{r['wall_s']:>8.1f}{r['member_tokens_per_s']:>14,.0f}"
              f"{r['sweep_tokens_per_s']:>13,.0f}{r['speedup_wall']:>13.2f}x"
              f"{r['speedup_steady']:>7.2f}x")
    for name, ms in result.get("approach_ms", {}).items():
        print(f"forward+backward of {args.members} members, {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
