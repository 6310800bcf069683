"""Scheduler benchmark: the real orchestrator, tracking actor and MLflow store; trials that sleep.

    python benchmarks/scheduler.py --trials 1000 --gpus 64 [--time-scale 1.0] [--json]
        [--timeline PATH] [--without smallest-first]

A local Ray gets `--gpus` fake GPUs. The grid is tokens × width × LR × seeds, cut to `--trials`;
a trial sleeps `time_scale · tokens/1e6 · sqrt(width/64)` seconds while reporting metrics like a
real one, and asks for 0.5 GPU (width ≤ 128), 1 GPU (256–512) or 2 GPUs (1024). Measured:
- makespan_ratio = makespan ÷ max(longest trial, total GPU-seconds ÷ GPUs)  (target ≤ 1.05);
  the makespan runs from the first trial's submission (after validation, the MLflow query and
  the request for the tracking actor) until `run_sweep` returns with every result recorded.
  Also given:
  sweep_wall (from the call of `run_sweep`) and trial_span (first trial start → last end)
- load: the 1-minute load average before and after (the machine may be shared)
- dispatch overhead per trial: wall time from submission to result minus the sleep
- tracking: metrics written per second; metrics_lost (reported by the trials, not in the
  store: must be 0); resynced (trials whose record the re-sync completed: 0 unless one was
  lost or resumed)
- dispatch timings come through `run_sweep`'s observer hook (`Timings`)
`--without smallest-first` switches the driver's first wave of the smallest trials off (longest
first only), to measure what it pays.
- relaunch_s: `launch` of the finished sweep again (target < 10 s, zero trials run)
Ray workers are started before the clock starts (one per concurrent trial, each importing what
a trial task unpickles): on a 2-core machine, starting a hundred Python workers at once would
otherwise be what is measured. The MLflow store is created before the clock too (a store in
use exists). `idle_at_start` is the CPUs' idle share just before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
from _results import save

from orchestrator.commands import launch
from orchestrator.driver import SweepObserver, prepare, run_sweep
from orchestrator.spec import Resources
from orchestrator.spec_file import spec_from_dict
from trainer.schema import recorded_trials

WIDTHS = (64, 128, 256, 512, 1024)
TOKENS = (1_000_000, 2_000_000, 4_000_000, 8_000_000)
LRS = tuple(round(1e-3 * 1.5**i, 6) for i in range(10))
METRICS_EVERY_S = 0.5


def duration_s(cfg, time_scale: float) -> float:
    return time_scale * cfg.train.tokens / 1e6 * math.sqrt(cfg.model.width / 64)


def gpus_for(width: int) -> float:
    return 0.5 if width <= 128 else (1.0 if width <= 512 else 2.0)


def sleep_trial(cfg, tracker, label, threads, time_scale=1.0):
    """Stands in for `run_trial`: the same reporter, metrics every 0.5 s, then sleeps."""
    import time as _time

    from orchestrator.worker import TrackerReporter
    from trainer.identity import config_id, flatten

    trial_id = config_id(cfg)
    params = flatten(cfg)
    reporter = TrackerReporter(tracker, trial_id, label, params)
    reporter.start(run_id=trial_id, params=params, resumed_step=None)
    total = duration_s(cfg, time_scale)
    start, step = _time.monotonic(), 0
    while (elapsed := _time.monotonic() - start) < total:
        step += 1
        reporter.log_metrics({
            "train/loss": 3.0 / (1 + elapsed), "train/lr": cfg.optim.lr, "train/grad_norm": 1.0,
            "train/tokens": step * 8192, "perf/tokens_per_s": 1e5}, step=step)
        _time.sleep(min(METRICS_EVERY_S, max(total - elapsed, 0)))
    summary = {"final/eval_loss": 3.0 / (1 + total), "final/steps": step,
               "final/tokens": cfg.train.tokens, "final/wall_s": _time.monotonic() - start,
               "status": "finished"}
    reporter.finish(status="finished", summary=summary)
    summary["bench/metrics"] = 5 * step + sum(k.startswith("final/") for k in summary)
    summary["bench/started_at"], summary["bench/ended_at"] = _time.time() - (
        _time.monotonic() - start), _time.time()
    return {"status": "finished", "summary": summary, "recorded": reporter.recorded}


class Timings(SweepObserver):
    """When each trial was handed to Ray and when its result came back."""

    def __init__(self):
        self.first_submit_at: float | None = None  # time.time()
        self.submitted_at: dict[str, float] = {}  # trial id → time.monotonic()
        self.overhead_s: list[float] = []  # submission to result, minus the trial's wall time
        self.summaries: dict[str, dict] = {}

    def submitted(self, trial) -> None:
        if self.first_submit_at is None:
            self.first_submit_at = time.time()
        self.submitted_at[trial.trial_id] = time.monotonic()

    def returned(self, trial, result: dict) -> None:
        summary = self.summaries[trial.trial_id] = result["summary"]
        self.overhead_s.append(time.monotonic() - self.submitted_at[trial.trial_id]
                               - summary["final/wall_s"])


def without(choice: str) -> None:
    """Switch one of the driver's choices off in this process (for measurement only)."""
    import orchestrator.driver

    if choice == "smallest-first":
        orchestrator.driver.submission_order = \
            lambda items, _model, _request_of, size_of, *, max_new: sorted(
                items, key=size_of, reverse=True)


def spec_dict(num_trials: int, root: str) -> dict:
    """The grid: 200 trials per seed, as many seeds as `num_trials` needs."""
    seeds = math.ceil(num_trials / (len(WIDTHS) * len(TOKENS) * len(LRS)))
    return {"name": "scheduler_bench",
            "overrides": ["model=tiny", "model.head_dim=16", "train.seq_len=128",
                          "schedule.warmup_tokens=0"],
            "grid": {"train.tokens": f"choice({', '.join(map(str, TOKENS))})",
                     "model.width": f"choice({', '.join(map(str, WIDTHS))})",
                     "optim.lr": f"choice({', '.join(map(str, LRS))})"},
            "seeds": list(range(seeds)), "resources": {"cpus": 0, "gpus": 1},
            "storage_root": root,
            # The trials here are fake (they sleep); a token family's trunk would be a real
            # training run (128 of them ran the 2-core machine out of memory).
            "share_prefix": False}


def warm_workers(num_gpus: int) -> None:
    """Start as many workers as can run at once, each with what a trial task's arguments
    need to unpickle imported (the trainer's config, the tracker's handle, the worker
    module): a hundred workers doing that in the first wave, on 2 cores, delayed the first
    trial's start by 0.6-4.7 s (0.3 s warm).

    Every warm task holds its worker until all of them run (a barrier), so the pool really
    has one worker per concurrent trial; tasks that merely slept a while let early workers
    take several of them, and the pool stayed half the size.
    """
    num = int(num_gpus / 0.5)

    @ray.remote(num_cpus=0)
    class Barrier:
        def __init__(self):
            self.arrived = 0

        def arrive(self) -> int:
            self.arrived += 1
            return self.arrived

        def count(self) -> int:
            return self.arrived

    @ray.remote(num_cpus=0)
    def warm(barrier):
        # What unpickling a trial task's arguments needs: the config, the tracker's handle.
        import orchestrator.tracking  # noqa: F401
        import orchestrator.worker  # noqa: F401
        import trainer.identity  # noqa: F401
        ray.get(barrier.arrive.remote())
        while ray.get(barrier.count.remote()) < num:
            time.sleep(0.5)

    barrier = Barrier.remote()
    ray.get([warm.options(num_gpus=0.5).remote(barrier) for _ in range(num)])
    ray.kill(barrier)


def idle_share() -> float:
    """The CPUs' idle share over a second: what the warm pool leaves to the sweep (a hundred
    idle Ray workers keep ~half of 2 cores busy)."""
    import psutil

    return psutil.cpu_times_percent(interval=1.0).idle / 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timeline", metavar="PATH",
                        help="also write Ray's task timeline (chrome://tracing JSON) there")
    parser.add_argument("--without", choices=("smallest-first",),
                        help="switch one of the driver's choices off, to measure what it pays")
    args = parser.parse_args()
    if args.without:
        without(args.without)

    work = Path(tempfile.mkdtemp(prefix="scheduler-bench-"))
    uri = f"sqlite:///{work}/mlflow.db"
    spec, trials = prepare(spec_from_dict(spec_dict(args.trials, str(work / "runs"))))
    durations = {t.trial_id: duration_s(t.cfg, args.time_scale) for t in trials}
    gpus = {t.trial_id: gpus_for(t.cfg.model.width) for t in trials}
    bound = max(max(durations.values()),
                sum(durations[i] * gpus[i] for i in durations) / args.gpus)

    # Ray keeps idle workers up to its soft limit (the CPU count, 2 here) and kills the rest
    # within a second; with 0-CPU trials on fake GPUs that would throw the warm pool away.
    ray.init(num_cpus=2, num_gpus=args.gpus, include_dashboard=False, logging_level="ERROR",
             _system_config={"num_workers_soft_limit": 2 * args.gpus + 8})
    warm_workers(args.gpus)
    recorded_trials(uri, spec.name)  # creates the store's tables: an existing store, as in use

    def task(cfg, tracker, label, threads):
        return sleep_trial(cfg, tracker, label, threads, time_scale=args.time_scale)

    idle = idle_share()
    load_before = os.getloadavg()[0]
    began = time.time()
    timings = Timings()
    outcome = run_sweep(spec, trials, tracking_uri=uri, progress=not args.json, task_fn=task,
                        resources_for=lambda t: Resources(gpus=gpus[t.trial_id], cpus=0),
                        observer=timings)
    ended = time.time()
    load_after = os.getloadavg()[0]
    makespan = ended - timings.first_submit_at
    starts = [x["bench/started_at"] for x in timings.summaries.values()]
    ends = [x["bench/ended_at"] for x in timings.summaries.values()]
    writes = _tracking_counts(uri)

    start = time.monotonic()
    again = launch(spec, tracking_uri=uri, progress=False)
    relaunch_s = time.monotonic() - start
    if args.timeline:
        ray.timeline(filename=args.timeline)
    ray.shutdown()

    result = {
        "trials": len(trials), "gpus": args.gpus, "finished": sum(
            s == "finished" for s in outcome.ran.values()),
        "makespan_from": "first submission", "makespan_s": makespan, "lower_bound_s": bound,
        "makespan_ratio": makespan / bound,
        "sweep_wall_s": ended - began, "sweep_wall_ratio": (ended - began) / bound,
        "trial_span_s": max(ends) - min(starts),
        "trial_span_ratio": (max(ends) - min(starts)) / bound,
        "dispatch_overhead_s_per_trial": statistics.median(timings.overhead_s),
        "dispatch_overhead_s_p90": sorted(timings.overhead_s)[int(0.9 * len(trials))],
        "first_submit_after_s": timings.first_submit_at - began,
        "first_trial_started_after_s": min(starts) - timings.first_submit_at,
        "after_last_trial_s": ended - max(ends),
        "resynced": len(outcome.resynced),
        "metrics_written": writes,
        "metrics_lost": sum(x["bench/metrics"] for x in timings.summaries.values()) - writes,
        "tracking_metrics_per_s": writes / makespan,
        "relaunch_s": relaunch_s, "relaunch_trials_run": len(again.ran),
        "idle_at_start": idle,
        "load_1m_before": load_before, "load_1m_after": load_after,
        "load_1m_after_relaunch": os.getloadavg()[0], "cpus": os.cpu_count(),
        "without": args.without,
    }
    save("scheduler", result)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        if isinstance(value, dict):
            value = json.dumps(value)
        print(f"{key:<32}{value:>14.3f}" if isinstance(value, float) else f"{key:<32}{value:>14}")


def _tracking_counts(uri: str) -> int:
    import sqlite3

    path = uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        # The trials' metrics: not the parent run's token totals (`sweep/*`).
        return db.execute("select count(*) from metrics where key not like 'sweep/%'"
                          ).fetchone()[0]


if __name__ == "__main__":
    main()
