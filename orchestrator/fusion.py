"""Fused groups in a sweep: which trials train together as one model, and as one task.

Trials whose resolved configs are equal except for per-member scalars (`optim.lr`,
`optim.weight_decay`, `optim.timescale`, `schedule.*`: `trainer.fused`) train as one stacked
model in one process (`trainer.run_group`): one data stream, one batch per step, K models'
matmuls batched together. Each member stays an ordinary trial: its own id, run directory,
checkpoints, `summary.json` and MLflow child run; the group is an execution detail, like Ray
placement.

A group holds one trial's `resources`: packing tiny proxies onto one device is the point (give
the spec bigger `resources` for bigger groups). Its size, `fuse` in the spec:
- `auto` (the default): `true` for trials that hold no GPU (`resources.gpus: 0`), `false` for
  GPU trials. On CPUs fusion pays: a stacked step of K tiny models costs about K single steps,
  and a group saves the K processes' start, data and per-step Python (8 LRs of the demo's
  model on 2 CPUs, benchmarks/fused.py: 1.5-1.7× the tokens per second of independent
  processes). On GPUs it does not yet: measured on an H200, a group of 8 tiny members steps
  slower in steady state than 8 processes sharing the GPU (0.84×: both are bound by kernel
  launches, and the processes launch side by side on their own cores), so fusion pays there
  only once a group's step is launch-free (CUDA graphs); `true` or `K` still fuses GPU trials;
- `false`: every trial alone;
- `true`: as many members as spread the sweep's fusable trials evenly over the trials the
  cluster runs at once (fewer under `max_concurrent`), at most `MAX_AUTO` (8); each set of
  trials that may fuse is then cut into groups of nearly equal size, none larger. On 2 CPUs,
  8 LRs make 2 groups of 4, one per core (one group of 8 would leave a core to the second
  thread of a small matmul: measured slower in benchmarks/README.md, fused.py);
- `K` (an integer ≥ 2): groups of up to K members, filled (cut as under `true`: 4 trials
  under `fuse: 9` make one group of 4, which `true` would spread over 2 CPUs as 2 of 2); for
  GPU trials that share a device (`gpus: 0.125`), `true` would spread them over the device's
  8 slots unfused, and `K` is how to fuse them.

Shared trunks (`orchestrator.sharing`): the trunks of families that may fuse train as
groups by the same `fuse` (`orchestrator.sharing.plan_trunk_groups`), and the branches a
group of trunks releases together (the budgets of one size, at one trunk step) fuse as they
reach the queue (`plan_fusion` on them). Who does not fuse, and runs alone as before: a trial
whose config cannot fuse (several processes, the norm-test batch schedule), and a trial with
no partner. Trials fuse only with trials that resume from the same checkpoint step
(`resume_step`: none, for trials not yet started), so that resuming a sweep with fusion on
trains no step twice. Searched sweeps fuse when their spec says `fuse: true` or `K` (not
under `auto`): see `fusion_setting`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from orchestrator.spec import SweepSpec
from orchestrator.trials import Trial

T = TypeVar("T")
MAX_AUTO = 8
"""Most members of a group when the spec says `fuse: true`."""


@dataclass(frozen=True)
class Group:
    """Trials that train as one fused group; to the driver's queue and placement it is one
    unit with one trial's resources."""

    members: tuple[Trial, ...]

    @property
    def trial_id(self) -> str:
        return "group:" + "+".join(t.trial_id[:8] for t in self.members)

    @property
    def cfg(self):
        """The first member's config (resources and placement read it)."""
        return self.members[0].cfg

    @property
    def flops(self) -> float:
        return sum(t.flops for t in self.members)

    @property
    def label(self) -> str:
        return f"group of {len(self.members)}: " + "; ".join(t.label for t in self.members)


def fusion_setting(spec: SweepSpec) -> bool | int:
    """The `fuse` a launch of `spec` plans with: the spec's, with `auto` decided (on for
    trials that hold no GPU, off for GPU trials: see the module docstring). A searched sweep
    fuses only when its spec says so (`true` or `K`): a study then asks a group's worth of
    points at once, before it has seen how they end, which trades the sampler's adaptivity
    for throughput; its members report to their study's pruner one by one
    (`orchestrator.search`)."""
    if spec.resources.world_size > 1:
        return False  # (a fused group runs in one process: `trainer.fusable`)
    if spec.optuna is not None and spec.fuse == "auto":
        return False
    if spec.fuse == "auto":
        return spec.resources.gpus == 0
    return spec.fuse


def fusion_off_reason(spec: SweepSpec) -> str:
    """Why a launch of `spec` fuses no trials (`fusion_setting` is off), as the dry run says."""
    if spec.resources.world_size > 1:
        return (f"a trial of resources.world_size {spec.resources.world_size} trains in "
                f"{spec.resources.world_size} processes, and a fused group in one: "
                "resources.world_size: 1 fuses")
    if spec.fuse == "auto":
        why = "a searched sweep" if spec.optuna is not None else "trials that hold a GPU"
        return f"fuse: auto leaves {why} unfused; fuse: true (or --fuse on) fuses them"
    return "fuse: false (or --fuse off) keeps every trial alone"


def searched_fusion_off(plan) -> str | None:
    """Why the points a study asks (`orchestrator.search_space.SearchPlan`) cannot train as
    one group though the spec fuses (they differ in a searched key that is not a member's
    scalar, or grow their batches apart), else None: the study then asks them one at a time,
    keeping its adaptivity, rather than together for nothing (it asked widths 32 and 48 at
    once, which trained alone)."""
    from orchestrator.search import example_trials
    from trainer.fusable import fusion_problems, is_member_key

    keys = [k for k in plan.dists if not is_member_key(k.lstrip("+~"))]
    if keys:
        return (f"the points a study asks differ in {', '.join(keys)}, and only optim.lr, "
                "optim.weight_decay, optim.timescale and schedule.* may differ within a fused "
                "group")
    trials = example_trials(plan)
    problems = fusion_problems([trials[0].cfg]) if trials else []
    return problems[0] if problems else None


def searched_group_size(fuse: bool | int, *, points_left: int, slots: int) -> int:
    """Points a study asks at once to train as one group: `K`; under `true` its `points_left`
    shared out over two rounds of the `slots` trials the cluster runs at once (so that it sees
    results between asks), 2 to `MAX_AUTO`."""
    if fuse is not True:
        return 1 if _off(fuse) else int(fuse)
    return max(2, group_size(fuse, num_trials=points_left, slots=2 * slots))


def group_size(fuse: bool | int, *, num_trials: int, slots: int) -> int:
    """Most members per group for a sweep's `num_trials` fusable trials on a cluster that
    runs `slots` trials at once (see the module docstring)."""
    if _off(fuse):
        return 1
    if fuse is True:
        return max(1, min(MAX_AUTO, math.ceil(num_trials / max(slots, 1))))
    return int(fuse)


def at_once(spec: SweepSpec, capacity: int) -> int:
    """Trials a grid sweep runs at once, for its group sizes: what the cluster holds
    (`capacity`), or fewer under `max_concurrent` (2 trials at `--max-concurrent 1` ran one
    after the other, unfused)."""
    return max(1, min(capacity, spec.max_concurrent) if spec.max_concurrent else capacity)


def plan_fusion(trials: Sequence[Trial], *, fuse: bool | int, slots: int
                ) -> tuple[list[Group], list[Trial]]:
    """(groups, trials that run alone) for `trials` (those a sweep runs, minus branches of
    shared trunks). Groups keep the trials' order; a key's trials are cut into groups of
    nearly equal size."""
    if _off(fuse):
        return [], list(trials)
    from trainer.fusable import fusion_problems, group_key

    by_key: dict[tuple[str, int | None], list[Trial]] = {}
    alone: list[Trial] = []
    for trial in trials:
        if fusion_problems([trial.cfg]):
            alone.append(trial)
        else:
            by_key.setdefault((group_key(trial.cfg), resume_step(trial)), []).append(trial)
    groups: list[Group] = []
    size = group_size(fuse, num_trials=sum(map(len, by_key.values())), slots=slots)
    for members in by_key.values():
        for chunk in cut(members, size):
            if len(chunk) == 1:
                alone.append(chunk[0])
            else:
                groups.append(Group(tuple(chunk)))
    return groups, alone


def cut(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` (that may fuse) cut into groups of at most `size`, of nearly equal sizes,
    round robin (9 by 4: 3, 3, 3), each keeping the items' order."""
    num_groups = math.ceil(len(items) / max(size, 1))
    return [list(items[i::num_groups]) for i in range(num_groups)]


def resume_step(trial: Trial) -> tuple | None:
    """Where `trial` would start (`trainer.branching.start_position`): its newest checkpoint,
    its trunk's checkpoint (a branch without one of its own), None from step 0.

    A group steps its members together, from the newest step they all have saved
    (`trainer.fused`), so only trials that start at the same position fuse: a trial an
    earlier launch trained alone (then interrupted), or a member a killed group left a save
    ahead of the others, fusing with trials at another step would train its steps since
    again. Branches released together by trunks that trained as one group start at one step,
    and fuse."""
    from trainer import branching
    from trainer.paths import RunPaths

    paths = RunPaths.for_config(trial.cfg, trial.trial_id)
    return branching.start_position(paths.run_dir, paths.checkpoints)


def _off(fuse: bool | int) -> bool:
    # `True == 1` in Python: test the bool first.
    return fuse is False or (fuse is not True and fuse <= 1)


def describe(groups: Sequence[Group]) -> list[str]:
    """What `--dry-run` says about fusion: one line per group."""
    return [f"fused {len(g.members)} trials in one task: "
            + ", ".join(t.trial_id[:12] for t in g.members) for g in groups]
