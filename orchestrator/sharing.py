"""Trunks as Ray tasks, and branches released to the driver's queue as the trunks pass them.

`orchestrator.families` says which trials share a trunk. Here the sweep driver runs that plan:

- `Sharing` holds back each trial not yet done that is a member of a family (a branch) and
  runs the family's trunk as a task of its own, with a trial's resources, placed by the
  driver's cluster model ahead of any trial (a trunk gates several trials). A family whose
  pending branches the trunk has already passed (a relaunch, or `extend` with a smaller
  budget) needs no trunk task.
- Every poll of the driver's loop reads each running trunk's `trunk.json`
  (`trainer.branching`); a branch whose point the trunk has passed (its checkpoint exists, or
  the trunk is past it, or diverged) is marked (`branch.json` in its trial directory) and put
  at the front of the driver's queue: from there it is an ordinary trial, with its own id,
  worker, retries and record.
- A trunk task that fails after its retries, or ends, releases every branch it still holds:
  they start from the trunk's newest checkpoint at or below their branch point, or from
  step 0 when there is none; each is exact either way.

The trunk's worker records it in MLflow as a run of kind `trunk` (tokens trained, and at its end
the loss history of its `metrics.jsonl`), through the sweep's tracker like every trial. Killed,
a trunk task is re-executed by Ray and continues from its newest checkpoint; a killed driver
leaves the files, and the next launch plans again from them and from MLflow (and records a trunk
whose worker ended it after its driver was gone). A trunk is trained by one worker at a time
across drivers (the lease of its directory, `orchestrator.lease`): a driver that finds another
driver's worker training it releases its own branches as that trunk passes them, and continues
the trunk itself only when the other lets go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from orchestrator.families import Family, branch_tokens, family_id, plan_sharing, why_not_shared
from orchestrator.lease import HELD, current_holder, describe_holders
from orchestrator.spec import SweepSpec, Trial
from trainer import branching
from trainer.paths import RunPaths
from trainer.schema import DIVERGED, FAILED, FINISHED, INTERRUPTED, RUNNING


@dataclass
class _Trunk:
    """A family's trunk, as the driver sees it."""

    family: Family
    held: dict[str, Trial]
    """Branches not yet released, by trial id."""
    attempt: int = 1
    ref: object = None  # ObjectRef of the running trunk task
    elsewhere: bool = False  # another driver's worker trains it (holds its lease)
    recorded: bool = False  # a task of this launch trained it and recorded its end
    placement: object = None
    asked: tuple[int, ...] = ()  # the branch points its last task was to reach
    done: bool = False  # no task will train it further in this launch


def run_trunk(cfg, tracker, trunk_id: str, directory: str, branch_points: list[int],
              label: str, threads: int) -> dict:
    """Ray task: train a family's trunk (`trainer.trunk`) so that each of `branch_points`
    has its checkpoint, recording it in MLflow as a trunk run; {status, index, error}."""
    import ray
    import torch

    from trainer.identity import flatten
    from trainer.trunk import train_trunk

    torch.set_num_threads(max(1, threads))
    params = {k: v for k, v in flatten(cfg).items() if k != "train.tokens"}
    tracker.trunk.remote(trunk_id, label, params, RUNNING)
    try:
        index = train_trunk(cfg, trunk_id=trunk_id, directory=directory,
                            branch_points=branch_points)
    except Exception as err:
        index = branching.read_index(directory)
        history = branching.trunk_history(directory, index.get("steps", 0))
        ray.get(tracker.trunk.remote(trunk_id, label, params, FAILED,
                                     branching.trunk_summary(index), history=history))
        return {"status": FAILED, "index": index, "error": f"{type(err).__name__}: {err}"}
    status = "diverged" if index.get("diverged") else "finished"
    # Waited for: the launch's token totals, asked for later by the driver, must include it.
    history = branching.trunk_history(directory, index.get("steps", 0))
    ray.get(tracker.trunk.remote(trunk_id, label, params, status,
                                 branching.trunk_summary(index), history=history))
    return {"status": status, "index": index}


class Sharing:
    """The driver's side of trunk sharing (see the module docstring).

    Args:
        spec: the sweep (its `share_prefix`, resources, retries, storage root).
        trials: every trial of the sweep, done or not (a done budget still shapes its family).
        todo: the trials this launch runs.
        tracker: the sweep's tracking actor, handed to trunk tasks.
    """

    def __init__(self, spec: SweepSpec, trials: list[Trial], todo: list[Trial], tracker):
        self.spec, self.tracker = spec, tracker
        self.plan = plan_sharing(trials, share=spec.share_prefix)
        pending = {t.trial_id for t in todo}
        self.trunks: list[_Trunk] = []
        for family in self.plan.families:
            held = {t.trial_id: t for t in family.members if t.trial_id in pending}
            if held:
                self.trunks.append(_Trunk(family, held))
        self._task = None

    def add(self, trial: Trial) -> bool:
        """Hold `trial` as a branch of its family's trunk, found among this launch's or new,
        if it may share one (sharing on, a schedule with a decay to branch, no key that ties
        the prefix to the budget); whether it is held. For sweeps whose trials arrive one by
        one (halving's rungs): a trunk that has passed the new branch point releases it at
        the next poll, one that has not trains on to it."""
        if not self.spec.share_prefix or why_not_shared(trial.cfg) is not None:
            return False
        fid = family_id(trial.cfg)
        trunk = next((t for t in self.trunks if t.family.trunk_id == fid), None)
        if trunk is None:
            trunk = _Trunk(Family(fid, (trial,)), {})
            self.trunks.append(trunk)
        elif trial.trial_id not in {t.trial_id for t in trunk.family.members}:
            members = sorted((*trunk.family.members, trial),
                             key=lambda t: (t.cfg.train.tokens, t.trial_id))
            trunk.family = Family(fid, tuple(members))
        trunk.held[trial.trial_id] = trial
        trunk.done, trunk.attempt = False, 1
        return True

    @property
    def waiting(self) -> int:
        """Branches held back until their trunk passes them."""
        return sum(len(trunk.held) for trunk in self.trunks)

    @property
    def unstarted(self) -> bool:
        """Is a trunk that has to train waiting for room on the cluster?"""
        return any(t.held and t.ref is None and not t.done and not t.elsewhere
                   for t in self.trunks)

    def unheld(self, todo: list[Trial]) -> list[Trial]:
        """The trials the driver may queue now: those that wait for no trunk."""
        held = {tid for trunk in self.trunks for tid in trunk.held}
        return [t for t in todo if t.trial_id not in held]

    @property
    def busy(self) -> bool:
        """Is any branch still held, or any trunk running?"""
        return any(trunk.held or trunk.ref is not None for trunk in self.trunks)

    def directory(self, family: Family):
        return branching.trunk_dir(self.spec.storage_root, family.trunk_id)

    # -- the driver's poll -------------------------------------------------------------------

    def poll(self, runner, *, timeout: float) -> None:
        """Take ended trunk tasks, release the branches their trunks have passed into the
        runner's queue, and start the trunks that still have to run (waits up to `timeout`
        for a trunk to end when the runner has nothing else to wait on)."""
        import ray

        refs = [t.ref for t in self.trunks if t.ref is not None]
        if refs:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if ready:  # and every other that has ended meanwhile
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for trunk in [t for t in self.trunks if t.ref in ready]:
                self._ended(runner, trunk)
        for trunk in self.trunks:
            if trunk.held:
                self._release(runner, trunk, everything=trunk.done)
        for trunk in self.trunks:
            if trunk.held and trunk.ref is None and not trunk.done \
                    and not self._trained_elsewhere(trunk):
                self._start(runner, trunk)

    def _trained_elsewhere(self, trunk: _Trunk) -> bool:
        """Does another driver's worker hold the trunk's lease? Its checkpoints release this
        sweep's branches all the same; when it lets go, this driver continues the trunk from
        its newest checkpoint (to the budgets only this sweep has, if any)."""
        holder = current_holder(self.directory(trunk.family))
        if holder is not None and not trunk.elsewhere:
            for line in describe_holders([holder]):
                print(f"trunk {trunk.family.label}: {line.replace('1 trial is ', 'it is ')}; "
                      "its branches follow its checkpoints")
        trunk.elsewhere = holder is not None
        return trunk.elsewhere

    def record_unrecorded(self) -> None:
        """Record the end of each trunk that no task of this launch trained and that no worker
        holds now, from its directory: the worker that trained it may have outlived its
        driver (killed while the trunk trained on) and ended it with nobody to record it,
        whether this launch followed it or found it already past every branch point."""
        import ray

        from trainer.identity import flatten

        calls = []
        for trunk in self.trunks:
            directory = self.directory(trunk.family)
            if trunk.recorded or trunk.ref is not None or current_holder(directory) is not None:
                continue
            index = branching.read_index(directory)
            if not index.get("tokens"):
                continue
            # Its worker stopped it at its last point, saw it diverge, or was lost mid-way.
            status = {"stopped": FINISHED, "diverged": DIVERGED}.get(
                index.get("status"), FAILED if trunk.done else INTERRUPTED)
            cfg = trunk.family.members[-1].cfg
            params = {k: v for k, v in flatten(cfg).items() if k != "train.tokens"}
            calls.append(self.tracker.trunk.remote(trunk.family.trunk_id, trunk.family.label,
                                                   params, status, branching.trunk_summary(index),
                                                   history=branching.trunk_history(
                                                       directory, index.get("steps", 0)),
                                                   unless_recorded=True))
        ray.get(calls)

    def _ended(self, runner, trunk: _Trunk) -> None:
        import ray

        if trunk.placement is not None:
            runner.cluster.release(trunk.placement)
        ref, trunk.ref, trunk.placement = trunk.ref, None, None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as err:  # its worker was lost, past Ray's retries
            result = {"status": FAILED, "error": str(err).strip().splitlines()[-1]}
        if result["status"] == HELD:  # another driver's worker took it first: follow it
            return
        trunk.recorded = "index" in result  # its worker sent its end (not lost with its node)
        if result["status"] == FAILED and trunk.attempt <= self.spec.retries:
            trunk.attempt += 1  # started again by this poll; it resumes from its checkpoint
            return
        if result["status"] == FAILED:
            print(f"trunk {trunk.family.label} failed after {trunk.attempt} attempts "
                  f"({result['error']}); its budgets train from its last checkpoint before "
                  "their branch point, or from scratch")
            trunk.done = True
            return
        # It reached what it was asked: branches added since (`add`) need another task.
        index = result["index"]
        trunk.done = not all(branching.passed(index, p) for p in trunk.asked)

    def _release(self, runner, trunk: _Trunk, *, everything: bool) -> None:
        directory = self.directory(trunk.family)
        index = branching.read_index(directory)
        bt = trunk.family.batch_tokens
        for trial_id, trial in list(trunk.held.items()):
            point = branch_tokens(trial.cfg)
            if everything or point < bt or branching.passed(index, point):
                run_dir = RunPaths.for_config(trial.cfg, trial.trial_id).run_dir
                branching.write_branch(run_dir, trunk_dir=directory, branch_tokens=point)
                runner.queue.insert(0, trial)
                del trunk.held[trial_id]

    def _start(self, runner, trunk: _Trunk) -> None:
        """Submit the trunk task if the cluster model has room for it (it goes before any
        queued trial); it trains to the largest branch point still held."""
        import ray

        from orchestrator.placement import Request, select
        from orchestrator.worker import trunk_task

        res = self.spec.resources.per_trial()
        chosen = select([trunk], runner.cluster, lambda _t: Request(gpus=res.gpus,
                                                                   cpus=res.cpus), max_new=1)
        if not chosen and (runner.running or any(t.ref for t in self.trunks)):
            return  # no room now; an idle cluster takes it regardless, as the runner does
        if self._task is None:
            self._task = ray.remote(trunk_task(run_trunk, sweep=self.spec.name,
                                               driver_pid=os.getpid()))
        family = trunk.family
        points = sorted({branch_tokens(t.cfg) for t in trunk.held.values()})
        trunk.asked = tuple(points)
        trunk.placement = chosen[0][1] if chosen else None
        trunk.ref = self._task.options(num_cpus=res.cpus, num_gpus=res.gpus,
                                       max_retries=self.spec.retries,
                                       retry_exceptions=False).remote(
            family.members[-1].cfg, self.tracker, family.trunk_id,
            str(self.directory(family)), points, family.label, max(1, int(res.cpus)))

    def stop(self) -> None:
        """Cancel the running trunk tasks (Ctrl-C, `sweep cancel`)."""
        import ray

        for trunk in self.trunks:
            if trunk.ref is not None:
                ray.cancel(trunk.ref, force=True)
                trunk.ref = None
            trunk.held.clear()
