"""Token-budget sharing benchmark: a real CPU sweep run shared and independent, then extended.

    python benchmarks/sharing.py [--base-tokens 65536] [--json] [--family-only | --fused-trunks]

The sweep: 2 LRs × budgets {1, 2, 4, 8} × base tokens, WSD with decay_fraction 0.1, a tiny
model (2 × 32) on the synthetic corpus, through `orchestrator.commands.launch` on a local Ray
(all CPUs), once with `share_prefix: false` and once shared. Then the shared sweep is extended
with the 16× budget (`extend`), which continues each trunk. Measured:
- compute_ratio: tokens the shared sweep trained (trunks + each branch's own tokens) ÷ tokens of
  the independent sweep (target ≤ 0.60; the issue's formula gives 8.7/15 = 0.58);
- wall_ratio: summed trial seconds of the shared sweep (each trunk's training seconds + each
  branch's own) ÷ the independent sweep's summed trial seconds (target ≤ 0.65). Trial seconds
  are the trainer's `final/wall_s` (optimizer steps; not process start, evals, checkpoints);
  the whole launches' wall clock is given beside it (`launch_s`), which counts everything;
- max_rel_diff: largest |Δ| / |independent| of `final/eval_loss` over the trials (same trial
  ids in both sweeps; target ≤ 1e-6 on CPU);
- extend: tokens the 16× extension trained ÷ tokens of the 16× trials trained standalone
  (target ≤ 0.56; 8.8/16 = 0.55), and its seconds ÷ the standalone seconds estimated from the
  independent sweep's seconds per token;
- family_wall_ratio: one family alone (one LR, the four budgets, shared) against its longest
  trial alone (the 8× budget, independent): training seconds on the family's critical path
  (its trunk's, then the 8× branch's own) ÷ the 8× trial's (the issue: within a few percent);
  `family_launch_ratio` is the same for the whole launches' wall clock (process starts, the
  branches' restores and the trunk's checkpoints included); each pair run A B B A;
- load: the 1-minute load average before and after (the machine may be shared).
Both sweeps run twice, in the order independent, shared, shared, independent (a load that
drifts weighs on both alike), on a Ray whose workers were started before the clock, and the
ratios are of the sums; `wall_ratio_per_pair` shows how far the load moves each one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _results import save

from orchestrator.commands import launch
from orchestrator.extend import extended
from orchestrator.spec_file import spec_from_dict
from trainer.schema import sweep_runs

OVERRIDES = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
             "data=synthetic", "data.num_tokens=2_000_000", "train.seq_len=64",
             "train.batch_size=8", "train.eval_tokens=8192", "schedule=wsd",
             "schedule.warmup_tokens=2048", "schedule.decay_fraction=0.1"]
LRS = "choice(3e-3, 1e-2)"


def _spec(name: str, root: Path, base: int, *, share: bool):
    budgets = ", ".join(str(base * k) for k in (1, 2, 4, 8))
    return spec_from_dict({"name": name, "overrides": OVERRIDES,
                           "grid": {"optim.lr": LRS, "train.tokens": f"choice({budgets})"},
                           "storage_root": str(root / name), "share_prefix": share,
                           "fuse": False})  # sharing alone: fused groups are fused.py's


def _runs(uri: str, name: str, kind: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return sweep_runs(client, exp.experiment_id, kind)


def _seconds(uri: str, name: str) -> tuple[float, float]:
    """(summed trial seconds: trunks + each trial's own, tokens of the trials)."""
    trials, trunks = _runs(uri, name, "trial"), _runs(uri, name, "trunk")
    own = sum(r.data.metrics["final/wall_s"] - r.data.metrics.get("final/wall_s_shared", 0.0)
              for r in trials)
    return own + sum(r.data.metrics["final/wall_s"] for r in trunks), \
        sum(r.data.metrics["final/tokens"] for r in trials)


def _critical_s(uri: str, name: str) -> float:
    """Training seconds on the sweep's critical path: its trunk's (if any) and then the
    largest budget's own."""
    trial = max(_runs(uri, name, "trial"), key=lambda r: r.data.metrics["final/tokens"])
    own = trial.data.metrics["final/wall_s"] - trial.data.metrics.get("final/wall_s_shared", 0)
    return own + sum(r.data.metrics["final/wall_s"] for r in _runs(uri, name, "trunk"))


def _family_walls(root: Path, uri: str, base: int) -> dict:
    """One family shared against its longest trial alone (see the module docstring)."""
    def family(name: str):
        spec = _spec(name, root, base, share=True).to_dict()
        spec["grid"]["optim.lr"] = "choice(1e-2)"
        return spec_from_dict(spec)

    def longest(name: str):
        spec = _spec(name, root, base, share=False).to_dict()
        spec["grid"] = {"optim.lr": "choice(1e-2)", "train.tokens": f"choice({8 * base})"}
        return spec_from_dict(spec)

    walls = {name: _timed_launch(make(name), uri)[1] for name, make in (
        ("longest", longest), ("family", family), ("family_b", family),
        ("longest_b", longest))}
    spans = {name: _critical_s(uri, name) for name in walls}
    return {"family_wall_ratio": (spans["family"] + spans["family_b"])
            / (spans["longest"] + spans["longest_b"]),
            "family_launch_ratio": (walls["family"] + walls["family_b"])
            / (walls["longest"] + walls["longest_b"]),
            "family_critical_s": spans, "family_launch_s": walls}


def _fused_trunks(root: Path, uri: str, base: int) -> dict:
    """8 LRs × the four budgets, shared, with the trunks fused (`fuse: auto`: on 2 CPUs two
    groups of 4, whose branches of one budget then fuse too) against each trunk and branch
    alone (`fuse: false`), A B B A: the launches' wall clock
    (a fused trunk's `final/wall_s` is its group's, so trunk seconds do not add up across a
    group), and the largest |Δ| / |unfused| of a trial's final eval loss."""
    lrs = "choice(1e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2, 1.5e-2, 2e-2)"

    def sweep(name: str, fuse):
        spec = _spec(name, root, base, share=True).to_dict()
        spec["grid"]["optim.lr"], spec["fuse"] = lrs, fuse
        return spec_from_dict(spec)

    names = {"alone": False, "fused": "auto", "fused_b": "auto", "alone_b": False}
    walls = {name: _timed_launch(sweep(name, fuse), uri)[1] for name, fuse in names.items()}
    max_rel_diff = 0.0
    for mine, theirs in (("fused", "alone"), ("fused_b", "alone_b")):
        a = {r.data.tags["trial.id"]: r.data.metrics["final/eval_loss"]
             for r in _runs(uri, theirs, "trial")}
        b = {r.data.tags["trial.id"]: r.data.metrics["final/eval_loss"]
             for r in _runs(uri, mine, "trial")}
        max_rel_diff = max(max_rel_diff, *(abs(b[k] - v) / abs(v) for k, v in a.items()))
    return {"fused_launch_ratio": (walls["fused"] + walls["fused_b"])
            / (walls["alone"] + walls["alone_b"]),
            "launch_s": walls, "max_rel_diff": max_rel_diff}


def _timed_launch(spec, uri: str):
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # what the launch says; --json prints JSON
        outcome = launch(spec, tracking_uri=uri, progress=False)
    assert all(s == "finished" for s in outcome.ran.values()), outcome.ran
    return outcome, time.perf_counter() - started


def _warm_ray() -> None:
    """Start the local Ray and one worker per CPU with torch and the trainer imported, before
    any clock starts: the first launch would otherwise pay for it."""
    import ray

    from orchestrator.driver import init_ray

    init_ray(None)

    @ray.remote(num_cpus=1)
    def warm() -> None:
        import trainer.loop  # noqa: F401  (torch, the model, the data)

    ray.get([warm.remote() for _ in range(int(ray.cluster_resources()["CPU"]))])


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 65,536: the largest trial is 8 × 65,536 tokens, ~10 s of a 2 × 32 proxy on one core. At
    # 16,384 the trunks train for under a second each and the seconds every process pays
    # (start, restore, MLflow at a launch's start) outweigh what sharing saves (wall_ratio
    # 0.71 against 0.61-0.63 here, quiet machine, 2026-12-04; benchmarks/README.md).
    parser.add_argument("--base-tokens", type=int, default=65536)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--family-only", action="store_true",
                        help="only the family phase (e.g. at a larger --base-tokens, where "
                             "the trunk's fixed costs weigh less)")
    parser.add_argument("--fused-trunks", action="store_true",
                        help="only: 8 LRs' trunks fused against each alone")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="sharing-bench-"))
    uri = f"sqlite:///{root}/mlflow.db"
    _warm_ray()
    phases = {"fused_trunks": (args.fused_trunks, _fused_trunks,
                               ("fused_launch_ratio", "max_rel_diff")),
              "family": (args.family_only, _family_walls,
                         ("family_wall_ratio", "family_launch_ratio"))}
    for name, (chosen, measure, keys) in phases.items():  # one phase alone
        if not chosen:
            continue
        result = {"base_tokens": args.base_tokens, **measure(root, uri, args.base_tokens),
                  "load": {"before_1m": load_before, "after_1m": os.getloadavg()[0],
                           "cpus": os.cpu_count()}}
        path = save(f"sharing_{name}", result)
        print(json.dumps(result, indent=1) if args.json else
              "  ".join(f"{k} {result[k]:.3g}" for k in keys) + f"; {path}")
        return result
    # ABBA: a load that drifts during the run weighs on both arms alike.
    runs = {name: _timed_launch(_spec(name, root, args.base_tokens,
                                      share=name.startswith("shared")), uri)
            for name in ("independent", "shared", "shared_b", "independent_b")}
    seconds = {name: _seconds(uri, name) for name in runs}
    shared = runs["shared"][0]
    pairs = (("shared", "independent"), ("shared_b", "independent_b"))
    max_rel_diff = 0.0
    for mine, theirs in pairs:
        a = {r.data.tags["trial.id"]: r.data.metrics["final/eval_loss"]
             for r in _runs(uri, theirs, "trial")}
        b = {r.data.tags["trial.id"]: r.data.metrics["final/eval_loss"]
             for r in _runs(uri, mine, "trial")}
        assert a.keys() == b.keys()
        max_rel_diff = max(max_rel_diff, *(abs(b[k] - v) / abs(v) for k, v in a.items()))
    shared_sec = seconds["shared"][0] + seconds["shared_b"][0]
    alone_sec = seconds["independent"][0] + seconds["independent_b"][0]
    alone_tokens = seconds["independent"][1] + seconds["independent_b"][1]

    before = shared.tokens["sweep/tokens_trained"]
    more, extend_s = _timed_launch(extended(_spec("shared", root, args.base_tokens, share=True),
                                            [f"train.tokens=choice({16 * args.base_tokens})"]),
                                   uri)
    increment = more.tokens["sweep/tokens_trained"] - before
    standalone = 2 * 16 * args.base_tokens
    extend_sec = _seconds(uri, "shared")[0] - seconds["shared"][0]
    launch_s = {name: wall for name, (_, wall) in runs.items()}
    family = _family_walls(root, uri, args.base_tokens)
    result = {
        "base_tokens": args.base_tokens, "trials": shared.trials,
        "compute_ratio": shared.tokens["sweep/tokens_ratio"],
        "tokens_trained": shared.tokens["sweep/tokens_trained"],
        "tokens_if_independent": shared.tokens["sweep/tokens_if_independent"],
        "wall_ratio": shared_sec / alone_sec,
        "wall_ratio_per_pair": [seconds[m][0] / seconds[t][0] for m, t in pairs],
        "trial_seconds": {name: sec for name, (sec, _) in seconds.items()},
        "launch_s": {**launch_s, "extend": extend_s},
        "launch_ratio": (launch_s["shared"] + launch_s["shared_b"])
        / (launch_s["independent"] + launch_s["independent_b"]),
        "max_rel_diff": max_rel_diff,
        "extend": {"increment_tokens": increment, "standalone_tokens": standalone,
                   "compute_ratio": increment / standalone,
                   "trial_seconds": extend_sec,
                   "wall_ratio": extend_sec / (alone_sec / alone_tokens * standalone)},
        **family,
        "load": {"before_1m": load_before, "after_1m": os.getloadavg()[0],
                 "cpus": os.cpu_count()},
    }
    path = save("sharing", result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"compute_ratio {result['compute_ratio']:.3f}  wall_ratio "
              f"{result['wall_ratio']:.3f}  max_rel_diff {max_rel_diff:.2e}  extend "
              f"{result['extend']['compute_ratio']:.3f}  family_wall_ratio "
              f"{result['family_wall_ratio']:.3f}  (load {load_before:.1f} -> "
              f"{result['load']['after_1m']:.1f}); {path}")
    return result


if __name__ == "__main__":
    main()
