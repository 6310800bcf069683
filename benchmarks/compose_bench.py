"""Time to prepare trials: `Composer` on a 1,000-trial grid (5 LRs × 5 batches × 4 WDs × 10
seeds), wall seconds per call of the whole grid. Prints a table and writes JSON.

    python benchmarks/compose_bench.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

from trainer.compose import Composer

GROUPS = ["model=tiny", "data=pystdlib", "schedule=power"]


def grid() -> list[list[str]]:
    """1,000 override lists that share their group choices, as a sweep's grid does."""
    lrs = ["1e-3", "2e-3", "3e-3", "6e-3", "1e-2"]
    batches = ["8", "16", "32", "64", "128"]
    wds = ["0.0", "0.01", "0.1", "0.3"]
    return [[*GROUPS, f"optim.lr={lr}", f"train.batch_size={b}", f"optim.weight_decay={wd}",
             f"seed={s}", "storage_root=runs", "train.world_size=1"]
            for lr, b, wd, s in itertools.product(lrs, batches, wds, range(10))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    trials = grid()
    times = []
    for _ in range(args.repeat):
        composer = Composer()  # a fresh one, as `sweep launch` has: includes the Hydra bases
        start = time.perf_counter()
        for overrides in trials:
            composer(overrides)
        times.append(time.perf_counter() - start)
    result = {"trials": len(trials), "best_s": min(times), "runs_s": times,
              "load_avg_1m": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'trials':>8} {'best s':>8} {'load 1m':>8}")
        print(f"{len(trials):>8} {min(times):>8.3f} {result['load_avg_1m']:>8.2f}")


if __name__ == "__main__":
    main()
