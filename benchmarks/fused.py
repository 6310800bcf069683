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
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import save

from trainer.compose import compose
from trainer.loop import COMPILE_MODE_ENV

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


def _launch(commands: list[list[str]], *, threads_each: int, at_once: int,
            env: dict[str, str] | None = None) -> float:
    """Run `commands` with at most `at_once` alive, each on `threads_each` threads (and with
    the variables `env` added); the wall seconds until the last one ends."""
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads_each),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
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
            at_once: int, tokens: int, env: dict[str, str] | None = None) -> dict:
    """Wall seconds and throughputs of one way of training the trials."""
    wall = _launch(commands, threads_each=threads_each, at_once=at_once, env=env)
    per_member = [_median_tokens_per_s(d) for d in _run_dirs(root)]
    return {"way": name, "processes": len(commands), "threads_each": threads_each,
            "at_once": at_once, "wall_s": wall,
            "member_tokens_per_s": statistics.median(per_member),
            "sweep_tokens_per_s": tokens * len(per_member) / wall}


def group_command(root: Path, lrs: list[float], tokens: int,
                  overrides: Sequence[str] = ()) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--group", str(root), str(tokens),
            *map(str, lrs), *overrides]


def run_group_here(root: str, tokens: str, args: list[str]) -> None:
    """The `--group` worker: train the LRs in `args` as one fused group under `root`, with
    the overrides (KEY=VALUE) in `args`."""
    from trainer.fused import run_group

    lrs = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run_group([compose(SHAPE + overrides + [f"train.tokens={tokens}", f"optim.lr={lr}",
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


GPU_SHAPE = ["model.width=128", "train.device=cuda"]
"""8 width-128 trials on one GPU (issue 17): the CPU shape at twice the width."""


def compare_gpu(members: int, tokens: int, threads: int) -> list[dict]:
    """`members` LR trials on one GPU: as that many processes sharing it (what Ray runs with
    `gpus: 1/members`), as one fused group, as one compiled fused group, and compiled with
    CUDA graphs. The processes run eagerly, as does the first group; `fused_compiled` adds
    torch.compile (its compile time is in its wall seconds, not in its steady tokens/s), and
    `fused_cudagraphs` compiles in the `reduce-overhead` mode (`PROXYSWEEP_COMPILE_MODE`):
    the forward and backward replayed as CUDA graphs, the launches a group's step is bound by
    taken off the CPU."""
    lrs = learning_rates(members)
    eager = GPU_SHAPE + ["train.compile=false"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "processes"
        commands = [[sys.executable, "-m", "trainer", *SHAPE, *eager, f"train.tokens={tokens}",
                     f"optim.lr={lr}", f"storage_root={root}"] for lr in lrs]
        results.append(measure("processes_sharing_gpu", commands, root,
                               threads_each=max(1, threads // members), at_once=members,
                               tokens=tokens))
        for name, overrides, env in (
                ("fused", eager, None), ("fused_compiled", GPU_SHAPE, None),
                ("fused_cudagraphs", GPU_SHAPE, {COMPILE_MODE_ENV: "reduce-overhead"})):
            root = base / name
            try:
                results.append(measure(name, [group_command(root, lrs, tokens, overrides)],
                                       root, threads_each=threads, at_once=1, tokens=tokens,
                                       env=env))
            except RuntimeError as error:  # one way failing does not lose the others' figures
                results.append({"way": name, "error": str(error)[-2000:]})
    reference = results[0]
    for r in results:
        if "error" in r:
            continue
        r["speedup_wall"] = reference["wall_s"] / r["wall_s"]
        # Tokens/s of the sweep once warm: each process's members' median step rate, summed
        # over the processes that run at once.
        r["speedup_steady"] = (r["member_tokens_per_s"] * members / r["processes"]
                               * r["at_once"]) / (reference["member_tokens_per_s"]
                                                  * reference["at_once"])
    return results


def profile_steps(members: int, *, steps: int = 10) -> dict:
    """Milliseconds per optimizer step of one fused group of `members` against one lone run,
    in this process, after warm-up (device synchronised around the timed steps), and the
    profiler's table of the group's steps (CPU and, on CUDA, kernel time), written to
    results/fused_profile.txt: where a group's step goes."""
    from trainer.fused import FusedRun
    from trainer.loop import TrainingRun
    from trainer.reporting import NullReporter

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as root:
        overrides = (GPU_SHAPE + ["train.compile=false"]) if cuda else []
        cfgs = [compose(SHAPE + overrides + [f"optim.lr={lr}", f"storage_root={root}"])
                for lr in learning_rates(members)]
        group = FusedRun.for_trials(cfgs, reporters=[NullReporter()] * members)
        lone = TrainingRun(cfgs[0], reporter=NullReporter())

        def ms_per_step(step) -> float:
            for _ in range(5):
                step()
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / steps * 1e3

        result = {"group_ms_per_step": ms_per_step(group.step),
                  "lone_ms_per_step": ms_per_step(lone.step)}
        if cuda:  # host-device synchronisations in one step of each
            result["group_syncs_per_step"] = _syncs(group.step)
            result["lone_syncs_per_step"] = _syncs(lone.step)
        activities = [torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(steps):
                group.step()
        if cuda:
            torch.cuda.synchronize()
        averages = prof.key_averages()
        tables = [averages.table(sort_by="self_cpu_time_total", row_limit=30)]
        if cuda:
            tables.insert(0, averages.table(sort_by="self_cuda_time_total", row_limit=30))
        (Path(__file__).parent / "results").mkdir(exist_ok=True)
        (Path(__file__).parent / "results" / "fused_profile.txt").write_text(
            json.dumps(result) + "\n" + "\n".join(tables))
    return result


def _syncs(step) -> int:
    """How many times one call of `step` makes the host wait for the CUDA device."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


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
    parser.add_argument("--gpu", action="store_true",
                        help="width 128 on one CUDA device: processes sharing it, fused")
    parser.add_argument("--profile", action="store_true",
                        help="also time and profile one group's step against a lone run's")
    parser.add_argument("--profile-only", action="store_true",
                        help="only the profile (with --gpu: on the CUDA device)")
    parser.add_argument("--group", nargs="+", help=argparse.SUPPRESS)  # the worker mode
    args = parser.parse_args()
    if args.group:
        run_group_here(args.group[0], args.group[1], args.group[2:])
        return
    result = {"members": args.members, "threads": args.threads, "tokens": args.tokens,
              "shape": SHAPE + (GPU_SHAPE if args.gpu else []), "load_1m_before": _load()}
    if args.profile or args.profile_only:
        result["profile"] = profile_steps(args.members)
    if args.profile_only:
        print(json.dumps(result["profile"]))
        return
    if args.gpu:
        result["device"] = torch.cuda.get_device_name()
        result["ways"] = compare_gpu(args.members, args.tokens, args.threads)
    else:
        if args.approaches:
            result["approach_ms"] = approaches(args.members)
        result["ways"] = compare(args.members, args.threads, args.tokens)
    result["load_1m_after"] = _load()
    save("fused_gpu" if args.gpu else "fused", result)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.members} LR trials of {args.tokens:,} tokens, {args.threads} threads in all; "
          f"load {result['load_1m_before']:.2f} before, {result['load_1m_after']:.2f} after")
    print(f"{'way':<24}{'wall s':>8}{'member tok/s':>14}{'sweep tok/s':>13}"
          f"{'speedup wall':>14}{'steady':>8}")
    for r in result["ways"]:
        if "error" in r:
            print(f"{r['way']:<24} failed: {r['error'].strip().splitlines()[-1]}")
            continue
        print(f"{r['way']:<24}{r['wall_s']:>8.1f}{r['member_tokens_per_s']:>14,.0f}"
              f"{r['sweep_tokens_per_s']:>13,.0f}{r['speedup_wall']:>13.2f}x"
              f"{r['speedup_steady']:>7.2f}x")
    for name, ms in result.get("approach_ms", {}).items():
        print(f"forward+backward of {args.members} members, {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
