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
- Trunks whose configs may fuse (an LR sweep's families: `trainer.fusable`), bound for the
  same branch points from the same checkpoint step, train as one fused group in one task
  when the sweep fuses (`fuse`, as for trials: `orchestrator.fusion`; `plan_trunk_groups`):
  each trunk keeps its directory, checkpoints, index and MLflow run, and its branches are
  released as it passes them, as for a trunk alone.
- A trunk task that fails after its retries, or ends, releases every branch it still holds:
  they start from the trunk's newest checkpoint at or below their branch point, or from
  step 0 when there is none; each is exact either way.

The trunk's worker records it in MLflow as a run of kind `trunk` (tokens trained, and at its end
the loss history of its `metrics.jsonl`), through the sweep's tracker like every trial. Killed,
a trunk task is re-executed by Ray and continues from its newest checkpoint; a killed driver
leaves the files, and the next launch plans again from them and from MLflow (and records a trunk
whose worker ended it after its driver was gone). A trunk is trained by one worker at a time
across drivers (the lease of its directory, `trainer.lease`): a driver that finds another
driver's worker training it releases its own branches as that trunk passes them, and continues
the trunk itself only when the other lets go.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.families import Family, branch_tokens, family_id, plan_sharing, why_not_shared
from orchestrator.spec import SweepSpec
from orchestrator.trials import Trial
from trainer import branching
from trainer.lease import HELD, current_holder, describe_holders
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
    grouped: bool = False  # its task trains it fused with other trunks (answers per trunk)


def run_trunk(cfg, tracker, trunk_id: str, directory: str, branch_points: list[int],
              label: str, threads: int) -> dict:
    """Ray task: train a family's trunk (`trainer.trunk`) so that each of `branch_points`
    has its checkpoint, recording it in MLflow as a trunk run; {status, index, error}."""
    answers = run_trunk_group([cfg], tracker, [trunk_id], [directory], branch_points,
                              {trunk_id: label}, threads)
    return answers[trunk_id]


def run_trunk_group(cfgs, tracker, trunk_ids: list[str], directories: list[str],
                    branch_points: list[int], labels: dict[str, str], threads: int) -> dict:
    """Ray task: train the trunks `trunk_ids` of several families to the same
    `branch_points`, one trunk alone or several as one fused group
    (`trainer.trunk.train_trunk_group`), each recorded in MLflow as its own trunk run;
    {trunk id: {status, index, error}}. The trainer raising fails every trunk (the driver
    tries them again)."""
    import ray
    import torch

    from trainer.identity import flatten
    from trainer.trunk import train_trunk, train_trunk_group

    torch.set_num_threads(max(1, threads))
    params = {tid: {k: v for k, v in flatten(cfg).items() if k != "train.tokens"}
              for tid, cfg in zip(trunk_ids, cfgs, strict=True)}
    for tid in trunk_ids:
        tracker.trunk.remote(tid, labels[tid], params[tid], RUNNING)
    error = None
    try:
        if len(cfgs) == 1:
            indexes = [train_trunk(cfgs[0], trunk_id=trunk_ids[0], directory=directories[0],
                                   branch_points=branch_points)]
        else:
            indexes = train_trunk_group(cfgs, trunk_ids=trunk_ids, directories=directories,
                                        branch_points=branch_points)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        indexes = [branching.read_index(d) for d in directories]
    answers, calls = {}, []
    for tid, directory, index in zip(trunk_ids, directories, indexes, strict=True):
        status = "diverged" if index.get("diverged") else "finished"
        if error and status == "finished" and not (
                index.get("status") == "stopped"
                and all(branching.passed(index, p) for p in branch_points)):
            status = FAILED  # (a trunk of the group that had ended before the error has not)
        # Waited for: the launch's token totals, asked for later by the driver, include it.
        history = branching.trunk_history(directory, index.get("steps", 0))
        calls.append(tracker.trunk.remote(tid, labels[tid], params[tid], status,
                                          branching.trunk_summary(index), history=history))
        answers[tid] = {"status": status, "index": index,
                        **({"error": error} if status == FAILED else {})}
    ray.get(calls)
    return answers


def plan_trunk_groups(pending: Sequence[tuple[Family, tuple[int, ...]]], *, storage_root: str,
                      fuse: bool | int, slots: int) -> list[list[Family]]:
    """Which of the trunks about to train (each family with the branch points its task is to
    reach) train as one task: trunks whose configs may fuse (`trainer.fusable`: an LR sweep's
    families) that train to the same branch points, from the same checkpoint step, at the
    same checkpoint cadence, cut into groups by `fuse` (`orchestrator.fusion.group_size`,
    over the `slots` trials the cluster runs at once); a list of one trains alone."""
    from orchestrator.fusion import cut, group_size
    from trainer.fusable import fusion_problems, group_key
    from trainer.paths import saved_steps

    if not fuse or len(pending) < 2:
        return [[family] for family, _ in pending]
    by_key: dict[tuple, list[Family]] = {}
    units: list[list[Family]] = []
    for family, points in pending:
        cfg = family.members[-1].cfg
        if fusion_problems([cfg]):
            units.append([family])
            continue
        directory = branching.trunk_dir(storage_root, family.trunk_id)
        index = branching.read_index(directory)
        step = (saved_steps(directory / "checkpoints") or [None])[-1]
        key = (group_key(cfg), points, branching.cadence_tokens(index, cfg, list(points)), step)
        by_key.setdefault(key, []).append(family)
    size = group_size(fuse, num_trials=sum(map(len, by_key.values())), slots=slots)
    for families in by_key.values():
        units += cut(families, size)
    return units


def resumes_itself(trial: Trial) -> bool:
    """Has `trial` a checkpoint of its own (trained alone under `--no-share`, or a branch
    stopped after its first save)? It goes on from that, never from a trunk
    (`trainer.branching.start_position`), so no trunk has to train for it."""
    from trainer.paths import saved_steps

    return bool(saved_steps(RunPaths.for_config(trial.cfg, trial.trial_id).checkpoints))


def checkpoint_tokens(trial: Trial) -> int:
    """Tokens `trial` has trained by its latest checkpoint of its own (0 without one, or
    under the norm-test schedule, whose steps do not say their tokens)."""
    from trainer.config import BatchSchedule
    from trainer.paths import saved_steps

    steps = saved_steps(RunPaths.for_config(trial.cfg, trial.trial_id).checkpoints)
    train = trial.cfg.train
    if not steps or train.batch_schedule is not BatchSchedule.constant:
        return 0
    return steps[-1] * train.batch_size * train.seq_len


def _up_to(summary: dict, family: Family) -> dict:
    """A trunk's `final/*` as far as `family` (this sweep's budgets) needs it: another sweep
    over the same storage root may have trained it further for its larger budgets, tokens
    this sweep did not spend (its token ratio once read above 1)."""
    tokens, needed = summary["final/tokens"], family.trunk_tokens
    if tokens <= needed:
        return summary
    return {**summary, "final/tokens": needed, "final/steps": needed // family.batch_tokens,
            "final/wall_s": summary["final/wall_s"] * needed / tokens}


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
        # (a trial with a checkpoint of its own goes on from it, not from the trunk: held, it
        # had a trunk trained that no budget took)
        pending = {t.trial_id for t in todo if not resumes_itself(t)}
        if not spec.share_prefix:
            # A budget an earlier launch marked a branch, and that has trained nothing of its
            # own, would start from that trunk's checkpoint (an exact start, but `--no-share`
            # was said, and the dry run counted it, as training alone).
            for trial in todo:
                if trial.trial_id in pending:
                    run_dir = RunPaths.for_config(trial.cfg, trial.trial_id).run_dir
                    (run_dir / branching.BRANCH_FILE).unlink(missing_ok=True)
        self.trunks: list[_Trunk] = []
        for family in self.plan.families:
            held = {t.trial_id: t for t in family.members if t.trial_id in pending}
            if held:
                self.trunks.append(_Trunk(family, held))
        # A trunk an earlier launch started and none of this one trains (sharing off now,
        # `--no-share`, or its branches done): its record is completed from its directory at
        # the end (`record_unrecorded`), not left `running` without its tokens.
        # (one whose last index says `running`: a trunk that stopped or diverged was recorded
        # by its worker, and re-reading every done family's history would cost each launch)
        training = {t.family.trunk_id for t in self.trunks}
        families = self.plan.families if spec.share_prefix else plan_sharing(trials).families
        self.trunks += [_Trunk(family, {}) for family in families
                        if family.trunk_id not in training
                        and (index := branching.read_index(self.directory(family))).get("tokens")
                        and index.get("status") == "running"]
        self._task = self._group_task = None
        self._slots: int | None = None  # trials the cluster runs at once (for group sizes)
        # how trunks starting together fuse (a searched sweep's runner sets its own: the
        # trunks of the points one study asked at once, as one group)
        from orchestrator.fusion import fusion_setting
        self.fuse = fusion_setting(spec)
        self._told = False  # has the launch said that trunks fuse?

    def add(self, trial: Trial) -> bool:
        """Hold `trial` as a branch of its family's trunk, found among this launch's or new,
        if it may share one (sharing on, a schedule with a decay to branch, no key that ties
        the prefix to the budget); whether it is held. For sweeps whose trials arrive one by
        one (halving's rungs): a trunk that has passed the new branch point releases it at
        the next poll, one that has not trains on to it."""
        if not self.spec.share_prefix or why_not_shared(trial.cfg) is not None \
                or resumes_itself(trial):
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

    def found(self, trial_ids: set[str]) -> None:
        """Trials this launch found ended in their run directories (another sweep over the
        same storage trained them): the trunk their prefix came from is recorded under this
        sweep too at the end, unless it is already, so that the sweep's token totals count
        the prefix its trials share (of a trunk that sweep trained further, the part up to
        this sweep's last branch point: `_up_to`)."""
        known = {t.family.trunk_id for t in self.trunks}
        for family in self.plan.families:
            if family.trunk_id not in known and any(
                    t.trial_id in trial_ids for t in family.members):
                self.trunks.append(_Trunk(family, {}))

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
    def training(self) -> int:
        """Trunks training now (a fused group of them counts each)."""
        return sum(trunk.ref is not None for trunk in self.trunks)

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

        refs = list(dict.fromkeys(t.ref for t in self.trunks if t.ref is not None))
        if refs:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if ready:  # and every other that has ended meanwhile
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for trunk in [t for t in self.trunks if t.ref in ready]:
                self._ended(runner, trunk)
        # One read of each index per poll: trunks of one group decide on the same snapshot.
        indexes = {t.family.trunk_id: branching.read_index(self.directory(t.family))
                   for t in self.trunks if t.held or t.ref is not None}
        released = [trial for trunk in self.trunks if trunk.held
                    for trial in self._release(trunk, indexes, everything=trunk.done)]
        if released:
            runner.take_released(released)
        startable = [t for t in self.trunks if t.held and t.ref is None and not t.done
                     and not self._trained_elsewhere(t)]
        if startable:
            for unit in self._units(runner, startable):
                self._start(runner, unit)

    def _units(self, runner, trunks: list[_Trunk]) -> list[list[_Trunk]]:
        """The trunks to start, as tasks: alone, or fused with others (`plan_trunk_groups`)."""
        from orchestrator.fusion import at_once
        from orchestrator.placement import Request

        if self._slots is None:  # the cluster's, as the driver's groups of trials count it
            res = self.spec.resources.per_trial()
            self._slots = at_once(self.spec,
                                  runner.cluster.capacity(Request(gpus=res.gpus, cpus=res.cpus)))
        by_id = {t.family.trunk_id: t for t in trunks}
        # A trunk whose task failed tries again alone: one that keeps failing (a damaged
        # checkpoint) must not use up the retries of the trunks it trained with.
        retried = [[t] for t in trunks if t.attempt > 1]
        pending = [(t.family, self._points(t)) for t in trunks if t.attempt == 1]
        units = retried + [[by_id[f.trunk_id] for f in unit] for unit in plan_trunk_groups(
            pending, storage_root=self.spec.storage_root, fuse=self.fuse, slots=self._slots)]
        fused = [u for u in units if len(u) > 1]
        if fused and not self._told:
            self._told = True
            # (a search's trunks come as its studies ask: the line counted the first asks'
            # as if they were all, 2 trunks of the 8 a search trained)
            print(f"fused: {sum(map(len, fused))} trunks train in {len(fused)} "
                  f"group{'s' * (len(fused) > 1)}, {len(units) - len(fused)} alone"
                  + ("; of the first points asked (the trunks of later ones fuse as they come)"
                     if self.spec.optuna is not None else ""))
        return units

    @staticmethod
    def _points(trunk: _Trunk) -> tuple[int, ...]:
        """The branch points a task of `trunk` trains to: those of the branches it holds."""
        return tuple(sorted({branch_tokens(t.cfg) for t in trunk.held.values()}))

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
            summary = _up_to(branching.trunk_summary(index), trunk.family)
            if summary["final/tokens"] < index.get("tokens", 0) and status == DIVERGED:
                status = FINISHED  # (it diverged past this sweep's part of it)
            calls.append(self.tracker.trunk.remote(trunk.family.trunk_id, trunk.family.label,
                                                   params, status, summary,
                                                   history=branching.trunk_history(
                                                       directory, summary["final/steps"]),
                                                   unless_recorded=True))
        ray.get(calls)

    def _ended(self, runner, trunk: _Trunk) -> None:
        import ray

        from orchestrator.worker import lost_errors

        if trunk.placement is not None:  # (a fused group's first trunk holds the group's)
            runner.cluster.release(trunk.placement)
        ref, trunk.ref, trunk.placement = trunk.ref, None, None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as err:
            # lost: its worker (or node) died on Ray's every re-run, no attempt to add
            result = {"status": FAILED, "error": str(err).strip().splitlines()[-1],
                      "lost": isinstance(err, lost_errors())}
        if trunk.grouped and "status" not in result:  # a fused group's answer, per trunk
            result = result[trunk.family.trunk_id]
        if result["status"] == HELD:  # another driver's worker took it first: follow it
            return
        trunk.recorded = "index" in result  # its worker sent its end (not lost with its node)
        # (a fused group's worker lost on Ray's every re-run: each trunk goes again alone,
        # as after a failure, so that one bad trunk does not use up the others' retries)
        lost = result.get("lost", False) and not trunk.grouped
        if result["status"] == FAILED and trunk.attempt <= self.spec.retries and not lost:
            trunk.attempt += 1  # started again by this poll; it resumes from its checkpoint
            return
        if result["status"] == FAILED:
            tries = trunk.attempt + self.spec.retries * lost
            print(f"trunk {trunk.family.label} failed after {tries} "
                  f"attempt{'s' * (tries != 1)}{' (its worker was lost each time)' * lost} "
                  f"({result['error']}); its budgets train from its last checkpoint before "
                  "their branch point, or from scratch")
            trunk.done = True
            return
        # It reached what it was asked: branches added since (`add`) need another task.
        index = result["index"]
        trunk.done = not all(branching.passed(index, p) for p in trunk.asked)

    def _release(self, trunk: _Trunk, indexes: dict[str, dict], *,
                 everything: bool) -> list[Trial]:
        """Mark the branches `trunk` has passed (all of them: `everything`) and hand them
        back, no longer held."""
        directory = self.directory(trunk.family)
        index = indexes[trunk.family.trunk_id]
        # A trunk training in a fused group releases a point once every trunk of the group
        # has passed it (they save one after the other): the group's branches of one budget
        # then reach the queue together, at one trunk step, and fuse in turn.
        peers = [indexes[t.family.trunk_id] for t in self.trunks
                 if trunk.grouped and t is not trunk and t.ref is not None and t.ref == trunk.ref]
        bt = trunk.family.batch_tokens
        released = []
        for trial_id, trial in list(trunk.held.items()):
            point = branch_tokens(trial.cfg)
            if everything or point < bt or all(branching.passed(i, point)
                                               for i in (index, *peers)):
                run_dir = RunPaths.for_config(trial.cfg, trial.trial_id).run_dir
                branching.write_branch(run_dir, trunk_dir=directory, branch_tokens=point)
                released.append(trial)
                del trunk.held[trial_id]
        return released

    def _start(self, runner, unit: list[_Trunk]) -> None:
        """Submit the task of `unit` (one trunk, or a fused group of them) if the cluster model
        has room for one trial (it goes before any queued trial); each trunk trains to the
        largest branch point it still holds."""
        import ray

        from orchestrator.placement import Request, select
        from orchestrator.worker import trunk_group_task, trunk_task

        res = self.spec.resources.per_trial()
        chosen = select([unit], runner.cluster, lambda _u: Request(gpus=res.gpus,
                                                                  cpus=res.cpus), max_new=1)
        if not chosen and (runner.running or any(t.ref for t in self.trunks)):
            return  # no room now; an idle cluster takes it regardless, as the runner does
        points = list(self._points(unit[0]))  # equal for every trunk of a group
        for trunk in unit:
            trunk.asked, trunk.grouped, trunk.placement = tuple(points), len(unit) > 1, None
        unit[0].placement = chosen[0][1] if chosen else None
        options = dict(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=self.spec.retries,
                       retry_exceptions=False)
        threads = max(1, int(res.cpus))
        if len(unit) == 1:
            if self._task is None:
                self._task = ray.remote(trunk_task(run_trunk, sweep=self.spec.name,
                                                   driver_pid=os.getpid()))
            family = unit[0].family
            ref = self._task.options(**options).remote(
                family.members[-1].cfg, self.tracker, family.trunk_id,
                str(self.directory(family)), points, family.label, threads)
        else:
            if self._group_task is None:
                self._group_task = ray.remote(trunk_group_task(
                    run_trunk_group, sweep=self.spec.name, driver_pid=os.getpid()))
            families = [t.family for t in unit]
            ref = self._group_task.options(**options).remote(
                [f.members[-1].cfg for f in families], self.tracker,
                [f.trunk_id for f in families], [str(self.directory(f)) for f in families],
                points, {f.trunk_id: f.label for f in families}, threads)
        for trunk in unit:
            trunk.ref = ref

    def running_refs(self) -> list:
        """The trunk tasks running now (for `driver.cancel_gently`)."""
        import ray

        refs = list(dict.fromkeys(t.ref for t in self.trunks if t.ref is not None))
        ended, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        return [ref for ref in refs if ref not in ended]

    def stop(self) -> None:
        """Cancel the running trunk tasks (Ctrl-C, `sweep cancel`): those that did not end
        when asked to (`driver.cancel_gently`) are killed."""
        import ray

        refs = list(dict.fromkeys(t.ref for t in self.trunks if t.ref is not None))
        ended, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        for ref in refs:
            if ref not in ended:  # (see `driver._Runner.stop`)
                ray.cancel(ref, force=True)
        for trunk in self.trunks:
            trunk.ref = None
            trunk.held.clear()
