"""Simulated tail of the scheduler benchmark: what the submission order does to the tracker.

    python benchmarks/tail_sim.py [--cost-ms 24 50] [--json]

The scheduler benchmark's grid (1000 trials, 64 GPUs, the same durations and GPU shares) is
list-scheduled with the driver's own `placement.select`, once in `submission_order` (one wave
of the smallest, then longest first) and once longest first only. The tracking actor is a
single server: a third of a trial's cost at its start (its run), two thirds at its end (its
end write, its terminal state). Printed per order and cost: when the last trial ends, how
many trials end in the last 13 s, the tracker's backlog after the last trial, and the
makespan ratio that gives. No Ray, no MLflow: the cost per trial is an input (measure it with
an in-process `Tracker`: begin, one log_steps, end).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math

from _results import save
from scheduler import TOKENS, WIDTHS, gpus_for

from orchestrator.placement import ClusterModel, Request, select, submission_order

LRS, SEEDS, GPUS, TAIL_S = 10, 5, 64, 13.0


def grid() -> list[tuple[float, float]]:
    """(seconds, GPUs) of each trial, as in the scheduler benchmark at time scale 1."""
    return [(tokens / 1e6 * math.sqrt(width / 64), gpus_for(width))
            for _ in range(SEEDS * LRS) for tokens in TOKENS for width in WIDTHS]


def _request(trial) -> Request:
    return Request(gpus=trial[1], cpus=0)


def simulate(order: list, cost_s: float) -> dict:
    """List-schedule `order` on GPUS GPUs; the tail and the tracker's backlog."""
    model, queue, now = ClusterModel([(0, GPUS)]), list(order), 0.0
    running, starts, ends = [], [], []
    while queue or running:
        chosen = select(queue, model, _request, max_new=len(queue))
        taken = {id(trial) for trial, _ in chosen}
        queue = [trial for trial in queue if id(trial) not in taken]
        for trial, placement in chosen:
            heapq.heappush(running, (now + trial[0], id(trial), placement))
            starts.append(now)
        now, _, placement = heapq.heappop(running)
        model.release(placement)
        ends.append(now)
    free = 0.0
    writes = [(s, cost_s / 3) for s in starts] + [(e, 2 * cost_s / 3) for e in ends]
    for at, cost in sorted(writes):
        free = max(free, at) + cost
    bound = max(max(d for d, _ in order), sum(d * g for d, g in order) / GPUS)
    last = max(ends)
    return {"last_trial_end_s": last, "ends_in_tail": sum(e > last - TAIL_S for e in ends),
            "backlog_s": free - last, "makespan_ratio": max(free, last) / bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost-ms", type=float, nargs="+", default=[24.0, 50.0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    trials = grid()
    size = lambda t: t[0] * t[1]  # noqa: E731  (GPU-seconds stand in for FLOPs)
    orders = {"smallest_first": submission_order(trials, ClusterModel([(0, GPUS)]), _request,
                                                 size, max_new=len(trials)),
              "longest_first": sorted(trials, key=size, reverse=True)}
    result = {f"{name}@{cost:g}ms": simulate(order, cost / 1000)
              for cost in args.cost_ms for name, order in orders.items()}
    save("tail_sim", result)
    if args.json:
        print(json.dumps(result))
        return
    for name, row in result.items():
        print(f"{name:<24}" + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in row.items()))


if __name__ == "__main__":
    main()
