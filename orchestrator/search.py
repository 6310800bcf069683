"""Adaptive search: per-slice Optuna studies, asked and told around the driver's trial loop.

A searched sweep (`search: {optuna: ...}`, see `orchestrator.search_space`) runs through the
same machinery as a grid: `_SearchRunner` is the driver's `_Runner` (placement, retries, Ray
tasks, the one tracking actor, the re-sync at the end) with a queue that is filled by asking
the studies instead of from a list. It keeps up to `max_concurrent` trials in flight (all
that fit the cluster when unset): whenever nothing waits to be placed, it asks the study with
the fewest trials in flight (then the most left) for one more point. The asked point is an
ordinary content-addressed trial, so:

- a point whose trial is already done (in this sweep's MLflow record, or earlier in this
  launch) is told its stored result at once, without training;
- a point whose trial is already in flight (two studies, or a study asking twice) waits on
  that trial, which trains once and is told to every study that asked for it;
- a point done by another sweep that shares the storage root (or held by another driver) is
  submitted like any trial: its task finds it ended (or waits for its holder) under the
  trial's lease, as the driver's do; it is told from the trial's summary and recorded in this
  sweep by the re-sync.

When a trial ends for good (finished, diverged, pruned, failed after its retries), every study
waiting on it is told (what each outcome tells: `orchestrator.studies`), and the sweep's parent
run gets the study's best value and params as they improve (`best/<slice>/...`).

Resume: every study counts toward `n_trials` each trial it ever asked. Trials asked and not
told (in flight when a driver was killed or interrupted) are reopened by the next launch under
the same Optuna trial and the same trial id: not asked again, resumed from their checkpoints.
A trial told to its study whose end never reached MLflow (the driver killed in between) is
recorded by the next launch from its run directory (`told_unrecorded`), trained no more.
Extending `n_trials` or the per-slice axes only changes how many trials each study may still
ask, and which studies there are.

Pruning: each trial's worker reports `eval/loss` at its eval points to the `Studies` actor and
stops at the first one the study's pruner rejects (`trainer.loop.Pruner`).

Fusion (`fuse: true` or `K` in the spec; `auto` leaves a search unfused): a study that is
asked a point also asks partners for it, up to the group size (`orchestrator.fusion`) and
within `max_concurrent`, and the points that may fuse (one slice: one shape) train as one
group (`searched_group`), each member reporting to its study's pruner and told its own end.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from orchestrator.driver import (
    SweepObserver,
    SweepOutcome,
    _driver_node,
    _Runner,
    await_tracker,
    code_version,
    drive,
)
from orchestrator.fusion import (
    MAX_AUTO,
    Group,
    fusion_setting,
    plan_fusion,
    searched_fusion_off,
    searched_group_size,
)
from orchestrator.search_space import HALVING, TOKENS_KEY, SearchPlan, Slice, plan_search
from orchestrator.sharing import Sharing
from orchestrator.spec import SweepSpec, root_path
from orchestrator.store import create_sqlite_store_once, tracking_credentials
from orchestrator.studies import Studies, counts, storage_url, stored_trials, summaries
from orchestrator.tracking import Tracker
from orchestrator.trials import Trial
from orchestrator.worker import group_task
from trainer.errors import ConfigError
from trainer.lease import driver_label
from trainer.schema import (
    DIVERGED,
    DONE,
    FAILED,
    FINISHED,
    PRUNED,
    recorded_trials,
)

ENDED = (*DONE, PRUNED)
"""Statuses that end a searched trial for its study (a failed one is told FAIL)."""


def prepare_search(spec: SweepSpec, tracking_uri: str, *, create: bool = True
                   ) -> tuple[SweepSpec, SearchPlan, str]:
    """Absolute storage root, every slice checked, the storage URL found and opened (a
    server's reached, an SQLite file created; with `create` false, as a dry run asks, an
    SQLite file that does not exist yet is left uncreated)."""
    from orchestrator.studies import STORAGE_FILE, not_created, open_storage

    spec = dataclasses.replace(spec, storage_root=str(root_path(spec.storage_root)))
    plan = plan_search(spec)
    url = storage_url(plan.search.storage, tracking_uri, storage_root=spec.storage_root,
                      studies=[plan.study_name(s) for s in plan.slices])
    default = url == f"sqlite:///{Path(spec.storage_root) / STORAGE_FILE}"
    if create and default:
        Path(spec.storage_root).mkdir(parents=True, exist_ok=True)  # (the default's folder)
    if create or not not_created(url):
        open_storage(url)
    # (the default's folder is made by the launch, with the trials': no study yet)
    elif not default and not (folder := Path(url[len("sqlite:///"):]).parent).is_dir():
        raise ConfigError(f"cannot open the Optuna storage {url}: its folder {folder} does not "
                          "exist; create it, or fix search.optuna.storage or OPTUNA_STORAGE")
    return spec, plan, url


def check_studies_space(plan: SearchPlan, url: str) -> None:
    """The spec's searched space against what its studies searched so far: a range may move
    or widen, but not change its kind (log or not, float or int, a choice's values), which a
    study refuses at its next ask, with trials in flight. Checked before anything runs."""
    import optuna.distributions as od

    from orchestrator.studies import stored_trials

    problems = {}
    for trials in stored_trials(url, [plan.study_name(s) for s in plan.slices]).values():
        for key, now in plan.dists.items():
            # (the newest: an extend may have moved or widened it since the first)
            was = next((t.distributions[key] for t in reversed(trials)
                        if key in t.distributions), None)
            if was is None or key in problems:
                continue
            try:
                if type(was) is not type(now):
                    raise ValueError
                od.check_distribution_compatibility(was, now)
            except ValueError:
                # (in the grammar's words: Optuna's "CategoricalDistribution does not support
                # dynamic value space" was said, with advice to widen the choices it refuses)
                said = f"grid.{key}={plan.spec.grid[key]}: the sweep's studies searched {key} as " \
                       f"{_as_grammar(was)}; "
                problems[key] = said + (
                    "a study's choices cannot change: keep them, or search the new ones in a new "
                    "sweep (another name)" if isinstance(was, od.CategoricalDistribution) else
                    f"give a range of that kind ({_kind(was)}: it may move or widen), or search "
                    "this one in a new sweep (another name)")
    if problems:
        raise ConfigError(list(problems.values()))


def _kind(dist) -> str:
    """The grammar's kind of a searched range: `tag(log, interval(...))`, `range(...)`."""
    import optuna.distributions as od

    inner = "range(...)" if isinstance(dist, od.IntDistribution) else "interval(...)"
    return f"tag(log, {inner})" if dist.log else inner


def _as_grammar(dist) -> str:
    """An Optuna distribution in the grid grammar that maps onto it."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return "choice(" + ", ".join(map(str, dist.choices)) + ")"
    if isinstance(dist, od.IntDistribution):
        inner = f"range({dist.low}, {dist.high + dist.step}" + (
            f", {dist.step})" if dist.step != 1 else ")")
    else:
        inner = f"interval({dist.low:g}, {dist.high:g})"
    return f"tag(log, {inner})" if dist.log else inner


def example_trials(plan: SearchPlan) -> list[Trial]:
    """One trial per slice (the searched space's low corner), for checks such as the data."""
    from orchestrator.search_space import corners

    return [plan.trial(s, corners(plan.dists)[0]) for s in plan.slices]


def study_quotas(plan: SearchPlan, url: str) -> dict[str, int]:
    """Trials each study holds once the sweep is done: n_trials, or under halving, for a rung
    above the first, the trials that climb to it (`orchestrator.halving.quotas`)."""
    from orchestrator.halving import quotas

    names = [plan.study_name(s) for s in plan.slices]
    if plan.rungs is None:
        return dict.fromkeys(names, plan.search.n_trials)
    trials = stored_trials(url, names)
    out = {}
    for ladder in plan.ladders():
        per_rung = [trials[plan.study_name(s)] for s in ladder]
        counts = quotas(plan.rungs, plan.search.n_trials, per_rung)
        out.update({plan.study_name(s): n for s, n in zip(ladder, counts, strict=True)})
    return out


def has_work(plan: SearchPlan, url: str, tracking_uri: str,
             lost: list[Trial] | None = None) -> bool:
    """Is any study short of its trials, has one trials in flight, or was one told the end
    of a trial whose record is not complete (`told_unrecorded`, which fills `lost`)?"""
    found = summaries(url, [plan.study_name(s) for s in plan.slices])
    quota = study_quotas(plan, url)
    tried_all = {name for name, info in found.items() if exhausted(plan, name, info)}
    return any((info["used"] < quota[name] and name not in tried_all)
               or info["states"].get("running") for name, info in found.items()) or bool(
        told_unrecorded(plan, url, recorded_trials(tracking_uri, plan.spec.name), lost))


def exhausted(plan: SearchPlan, name: str, info: dict) -> bool:
    """Has study `name` (its `summaries` entry `info`) tried every point of a finite space?
    (Not a halving rung above the first, whose points are the ones that climb.)"""
    from orchestrator.search_space import finite_points

    points = finite_points(plan.dists)
    above = plan.rungs is not None and any(
        plan.study_name(s) == name and plan.rung(s) > 0 for s in plan.slices)
    return points is not None and not above and info.get("distinct", 0) >= points


def asked_points(plan: SearchPlan, url: str) -> int:
    """How many distinct points the studies have asked for, begun or not: a point asked
    twice by a study is one trial (and two studies' points differ in their slice's values).
    Counted by params, not by trial id, which moves with the data's fingerprint."""
    stored = stored_trials(url, [plan.study_name(s) for s in plan.slices])
    return sum(len({tuple(sorted(frozen.params.items())) for frozen in stored[name]
                    if counts(frozen) and all(k in frozen.params for k in plan.dists)})
               for name in (plan.study_name(s) for s in plan.slices))


def unrunnable_points(plan: SearchPlan, url: str) -> int:
    """How many distinct points the studies asked whose config does not run: told failed at
    once (`_SearchRunner._asked`), they are in no store, and count as failed, not pending."""
    stored = stored_trials(url, [plan.study_name(s) for s in plan.slices])
    found = 0
    for slice_ in plan.slices:
        seen = set()
        for frozen in stored[plan.study_name(slice_)]:
            point = tuple(sorted(frozen.params.items()))
            if frozen.state.name != "FAIL" or not counts(frozen) or point in seen \
                    or not all(k in frozen.params for k in plan.dists):
                continue
            seen.add(point)
            found += plan.trial(slice_, frozen.params, problems=[]) is None
    return found


def told_unrecorded(plan: SearchPlan, url: str, states: dict,
                    lost: list[Trial] | None = None) -> list[tuple[Trial, str]]:
    """(trial, status in its summary) of each trial a study was told ended whose MLflow
    record does not say so: its driver was killed between telling the study and the end
    write reaching the store. Its run directory holds the end; a launch records it there.
    Those whose run directory holds no end either are added to `lost`."""
    from trainer.paths import RunPaths, read_summary

    out, seen = [], set()
    stored = stored_trials(url, [plan.study_name(s) for s in plan.slices])
    for slice_ in plan.slices:
        for frozen in stored[plan.study_name(slice_)]:
            if not frozen.state.is_finished() or not counts(frozen) \
                    or not all(k in frozen.params for k in plan.dists):
                continue  # (a voided ask trained nothing: it is no trial of the sweep)
            trial = plan.trial(slice_, frozen.params, problems=[])
            if trial is None or trial.trial_id in seen \
                    or states.get(trial.trial_id, {}).get("status") in (*ENDED, FAILED):
                continue
            seen.add(trial.trial_id)
            summary = read_summary(RunPaths.for_config(trial.cfg, trial.trial_id)) or {}
            if summary.get("status") in ENDED:
                out.append((trial, summary["status"]))
            elif lost is not None:
                lost.append(trial)
    return out


def run_search(spec: SweepSpec, plan: SearchPlan, *, tracking_uri: str, storage: str,
               progress: bool = True, observer: SweepObserver | None = None,
               based_on: SweepSpec | None = None,
               stored_as: SweepSpec | None = None) -> SweepOutcome:
    """Run the studies of a searched sweep to their `n_trials` (see the module docstring);
    `stored_as`: the spec its record keeps, as `driver.run_sweep` takes it."""
    import ray

    create_sqlite_store_once(tracking_uri)  # before the actor and this process both open it
    here = _driver_node()
    tracker = ray.remote(Tracker).options(num_cpus=0, scheduling_strategy=here).remote(
        tracking_uri, spec.name, code_version=code_version(),
        spec_yaml=yaml.safe_dump((stored_as or spec).to_dict(), sort_keys=False),
        credentials=tracking_credentials(), driver=driver_label(),
        based_on=None if based_on is None else based_on.to_dict())
    await_tracker(tracker, tracking_uri)
    names = [plan.study_name(s) for s in plan.slices]
    studies = ray.remote(Studies).options(num_cpus=0, scheduling_strategy=here).remote(
        storage, plan.search, names, plan.dists, fed=fed_studies(plan), rungs=plan.rungs,
        in_flight=_in_flight_per_study(spec, len(names) - len(fed_studies(plan))))
    states = recorded_trials(tracking_uri, spec.name)
    outcome = SweepOutcome(trials=0, already_done=0)
    runner = _SearchRunner(spec, tracker, plan, studies, states, outcome,
                           observer=observer or SweepObserver(),
                           unrecorded=told_unrecorded(plan, storage, states))
    runner.recorded_before = set(states)  # (its trials are asked as it goes: `_drive`)
    drive(runner, tracking_uri=tracking_uri, progress=progress, ended=ENDED)
    # The sweep's trials: those ended before this launch (recorded) and those it asked. One
    # a study asked and was never told, recorded ended (a driver killed in between), is told
    # now and is done already: it was in neither count ("7 trials, 4 already done, ran 1").
    before = {tid for tid, state in states.items() if state.get("status") in ENDED}
    outcome.already_done = len(before)
    # (and the points its studies have still to ask, after an interruption: `status` counts
    # them pending, and the summary said "2 trials" of a study of 4)
    outcome.trials = len(before | set(runner.asked)) + (
        sum(max(n, 0) for n in runner.left.values()) if outcome.interrupted else 0)
    return outcome


def _in_flight_per_study(spec: SweepSpec, studies: int) -> int:
    """Trials one study may have in flight: `max_concurrent` (else what the cluster runs at
    once) shared among the studies, as the runner asks them in turn; a fused group's points
    at least, which a study asks at once."""
    import ray

    from orchestrator.placement import ClusterModel, Request

    res = spec.resources.per_trial()
    at_once = spec.max_concurrent or ClusterModel.from_ray(ray.nodes()).capacity(
        Request(gpus=res.gpus, cpus=res.cpus))
    fuse = fusion_setting(spec)  # a study asks a fused group's points at once
    group = 1 if not fuse else MAX_AUTO if fuse is True else fuse
    return max(1, -(-at_once // max(studies, 1)), min(group, at_once))


def fed_studies(plan: SearchPlan) -> list[str]:
    """Studies whose trials are enqueued, not sampled: the rungs above the first."""
    return [plan.study_name(s) for s in plan.slices if plan.rung(s) > 0]


def _study_pruner(studies, cfg):
    """A trial's pruner in its worker: each eval point reported to the studies, which say
    whether it stops there."""
    import ray

    import trainer

    trial_id = trainer.config_id(cfg)

    def pruner(step: int, eval_loss: float) -> bool:
        return ray.get(studies.report.remote(trial_id, step, eval_loss))
    return pruner


def searched_trial(studies):
    """The worker's task for a searched trial: `run_trial` with its study's pruner."""
    def run_trial(cfg, tracker, label: str, threads: int) -> dict:
        from orchestrator.worker import run_trial as run

        return run(cfg, tracker, label, threads, pruner=_study_pruner(studies, cfg))
    return run_trial


def searched_group(studies):
    """The worker's task for a fused group of searched trials (`fuse` on): `run_group_trials`
    with each member's study pruner, as `searched_trial` gives a lone trial."""
    def run_group_trials(cfgs, tracker, labels: dict, threads: int) -> dict:
        from orchestrator.worker import run_group_trials as run

        return run(cfgs, tracker, labels, threads,
                   pruners=[_study_pruner(studies, cfg) for cfg in cfgs])
    return run_group_trials


class _Seen(SweepObserver):
    """Keeps each trial's last result for the runner, and passes everything on."""

    def __init__(self, results: dict, inner: SweepObserver):
        self.results, self.inner = results, inner

    def submitted(self, trial: Trial) -> None:
        self.inner.submitted(trial)

    def returned(self, trial: Trial, result: dict) -> None:
        self.results[trial.trial_id] = result
        self.inner.returned(trial, result)


class _SearchRunner(_Runner):
    """The driver's runner with a queue the studies fill (see the module docstring)."""

    def __init__(self, spec: SweepSpec, tracker, plan: SearchPlan, studies, states: dict,
                 outcome: SweepOutcome, *, observer: SweepObserver,
                 unrecorded: Sequence[tuple[Trial, str]] = ()):
        import ray

        self.plan, self.studies, self.states = plan, studies, states
        self.objective = plan.search.objective
        self.results: dict[str, dict] = {}  # trial id → its worker's result, this launch
        self.asked: dict[str, Trial] = {}  # every trial this launch asked or reopened
        self.waiting: dict[str, list[tuple[str, int]]] = {}  # trial id → (study, number)
        self.slice_of: dict[str, Slice] = {plan.study_name(s): s for s in plan.slices}
        self.best: dict[str, float] = {}
        self.settled: set[str] = set()  # trial ids whose end the studies were told
        self.tracker, self.outcome = tracker, outcome  # (set again by the base class)
        reopened = self._reopen()
        fed = set(fed_studies(plan))
        # A rung above the first may ask what was enqueued in it (`_promote`), no more.
        self.left = {name: (ray.get(studies.size.remote(name)) if name in fed
                            else plan.search.n_trials) - ray.get(studies.used.remote(name))
                     for name in self.slice_of}
        # Under halving a trial that climbs is the same config at the next budget: a branch
        # of the trunk its rung below left (trials join trunks as they are asked, `_queue`).
        # Otherwise no study asks one config at two budgets, and trials train alone.
        sharing = Sharing(spec if plan.rungs else dataclasses.replace(spec, share_prefix=False),
                          [], [], tracker)
        for trial in reopened:
            sharing.add(trial)  # the runner queues the others
        super().__init__(spec, tracker, reopened, outcome, task_fn=searched_trial(studies),
                         resources_for=lambda _trial: spec.resources.per_trial(),
                         observer=_Seen(self.results, observer), sharing=sharing)
        self.trials = self.asked  # (what the base class re-syncs from)
        self.cap = spec.max_concurrent or math.inf
        self.said: set[str] = set()  # problems of asked points, said once (`_asked`)
        self.fuse = fusion_setting(spec)
        if self.fuse and (why := searched_fusion_off(plan)):
            print(f"note: fuse: {spec.fuse} fuses nothing here: {why}; each study asks one "
                  "point at a time", file=sys.stderr)
            self.fuse = False
        # The points a study asks at once (`_partners`) train as one group, their trunks (under
        # halving) too, and the branches those release: not spread over the cluster's slots
        # as a grid's trials are (that would leave each alone), at most `together` a group.
        together = False if not self.fuse else MAX_AUTO if self.fuse is True else self.fuse
        self.release_fuse = self.sharing.fuse = together
        self.group_task = ray.remote(group_task(searched_group(studies), sweep=spec.name,
                                                driver_pid=os.getpid()))
        self.total = len(reopened) + sum(max(n, 0) for n in self.left.values())
        for trial, status in unrecorded:
            if trial.trial_id not in self.asked:  # (one reopened is resumed, then recorded)
                self.asked[trial.trial_id] = trial
                self.found_on_disk(trial, status)  # recorded from its files at the end
        self._promote()
        if not self.queue:
            self._ask_into_queue()

    def has_work(self) -> bool:
        """The trials in flight, and the points its studies have still to ask."""
        return super().has_work() or any(n > 0 for n in self.left.values())

    # -- asking ----------------------------------------------------------------------------

    def _reopen(self) -> list[Trial]:
        """The trials the studies asked for and were never told: to run again (resumed from
        their checkpoints), or to tell now if they ended meanwhile."""
        import ray

        todo = []
        for name, slice_ in self.slice_of.items():
            for number, params in ray.get(self.studies.open_trials.remote(name)):
                trial = self.plan.trial(slice_, params)
                if self._take(name, number, trial):
                    todo.append(trial)
        return todo

    def _take(self, name: str, number: int, trial: Trial | None) -> bool:
        """Study `name`'s trial `number` is `trial`: tell it at once if it is done, else wait
        on it; whether it must be submitted."""
        import ray

        if trial is None:  # its config does not validate (the corners did)
            ray.get(self.studies.tell.remote(name, number, "fail"))
            return False
        self.asked[trial.trial_id] = trial
        stored = self._stored(trial.trial_id)
        if stored is not None:
            self._tell(name, number, *stored)
            return False
        ray.get(self.studies.watch.remote(trial.trial_id, name, number))
        first = trial.trial_id not in self.waiting
        self.waiting.setdefault(trial.trial_id, []).append((name, number))
        return first

    def _stored(self, trial_id: str) -> tuple[str, float | None, float | None] | None:
        """(outcome, value, vocab size) of a trial that has ended, from this launch's results
        or the sweep's record; None if it has not."""
        if trial_id in self.outcome.ran or trial_id in self.outcome.found_ended:
            if trial_id in self.outcome.ran:
                status = self.outcome.ran[trial_id]
                summary = self.results.get(trial_id, {}).get("summary", {})
            else:  # ended by another launch: its summary is in its run directory
                status = self.outcome.found_ended[trial_id]
                summary = _summary(self.asked[trial_id])
            value, vocab = summary.get(self.objective), summary.get("derived.vocab_size")
        elif self.states.get(trial_id, {}).get("status") in ENDED:
            run = self.states[trial_id]["run"]
            status = self.states[trial_id]["status"]
            value = run.data.metrics.get(self.objective)
            vocab = float(run.data.params.get("derived.vocab_size") or 0) or None
        else:
            return None
        return _outcome(status, value), value, vocab

    def _promote(self) -> None:
        """Under halving, enqueue in each rung the best of the rung below once that one is
        over (`orchestrator.halving`); they become askable there."""
        import ray

        if self.plan.rungs is None:
            return
        for ladder in self.plan.ladders():
            quota = self.plan.search.n_trials
            for below, above in itertools.pairwise(ladder):
                below, above = self.plan.study_name(below), self.plan.study_name(above)
                added = ray.get(self.studies.promote.remote(below, above, quota))
                if added is None:
                    break
                self.left[above] += added
                self.total += added
                quota = ray.get(self.studies.size.remote(above))

    def _next_study(self) -> str | None:
        """The study to ask next: the fewest trials in flight, then the most left."""
        flying = {name: 0 for name in self.slice_of}
        for waiting in self.waiting.values():
            for name, _ in waiting:
                flying[name] += 1
        open_ = [n for n in self.slice_of if self.left[n] > 0]
        return min(open_, key=lambda n: (flying[n], -self.left[n]), default=None)

    def _asked(self, name: str, params: dict) -> Trial | None:
        """The trial of a point study `name` asked; None for one whose config does not run
        (told failed by `_take`), said once per problem: it failed with no word of why."""
        problems: list[str] = []
        trial = self.plan.trial(self.slice_of[name], params, problems)
        for problem in problems:
            if problem not in self.said:
                self.said.add(problem)
                print(f"study {name} asked a point that cannot run (told failed; it counts "
                      f"toward n_trials): {problem}")
        return trial

    def _ask_into_queue(self) -> bool:
        """Ask until a point needs training (queued) or no study may ask; whether one was."""
        import ray

        while (name := self._next_study()) is not None:
            # What the storage says now: a second driver asking the same studies (a resume
            # while this one runs) must not take them past n_trials.
            self.left[name] = min(self.left[name], ray.get(self.studies.room.remote(name)))
            if self.left[name] <= 0:
                continue
            asked = ray.get(self.studies.ask.remote(name, self.plan.dists))
            if asked is None:  # another driver took the study's last trial, or it has
                self._stop_asking(name)  # tried every point
                continue
            self.left[name] -= 1
            trial = self._asked(name, asked[1])
            if self._take(name, asked[0], trial):
                self._queue([trial, *self._partners(name)])
                return True
        return False

    def _stop_asking(self, name: str) -> None:
        """Study `name` asks no more: another driver took its last trial, or it has tried
        every point of its finite space (said, with the trials it used)."""
        import ray

        if self.left[name] > 0 and ray.get(self.studies.exhausted.remote(name)):
            used = self.plan.search.n_trials - self.left[name]
            print(f"study {name} has tried every point of its space ({used} trials of "
                  f"n_trials {self.plan.search.n_trials}): it asks no more")
        self.total -= max(self.left[name], 0)
        self.left[name] = 0

    def _partners(self, name: str) -> list[Trial]:
        """With fusion on, more points of study `name` to train as one group with the one
        just asked (same slice, so same shape): asked now, up to the group size and within
        `max_concurrent`."""
        if not self.fuse:
            return []
        size = searched_group_size(self.fuse, points_left=self.left[name] + 1,
                                   slots=self.slots)
        import ray

        partners: list[Trial] = []
        while len(partners) + 1 < size and self.left[name] > 0 \
                and self._in_flight() + len(partners) + 1 < self.cap:
            self.left[name] = min(self.left[name], ray.get(self.studies.room.remote(name)))
            if self.left[name] <= 0:
                break
            asked = ray.get(self.studies.ask.remote(name, self.plan.dists))
            if asked is None:
                self._stop_asking(name)
                break
            self.left[name] -= 1
            trial = self._asked(name, asked[1])
            if self._take(name, asked[0], trial):
                partners.append(trial)
        return partners

    def _queue(self, trials: list[Trial]) -> None:
        """Queue trials to train (as fused groups where they fuse), or hand each to its trunk
        (`Sharing.add`)."""
        alone = [t for t in trials if not self.sharing.add(t)]
        if self.fuse and len(alone) > 1:
            groups, alone = plan_fusion(alone, fuse=self.release_fuse, slots=self.slots)
            self.queue.extend(groups)
        self.queue.extend(alone)

    def _in_flight(self) -> int:
        """Trials in flight: running (a fused group's members each) or held by a trunk."""
        return sum(len(unit.members) if isinstance(unit, Group) else 1
                   for unit, _, _ in self.running.values()) + self.sharing.waiting

    # -- the runner's loop -----------------------------------------------------------------

    def fill(self) -> None:
        """Place what waits; while nothing does and there is room, ask for more."""
        while True:
            super().fill()
            if self.sharing.unstarted:  # a trunk asked for just now: start it if it fits
                self.sharing.poll(self, timeout=0)
            if self.queue or self.sharing.unstarted or self._in_flight() >= self.cap \
                    or not self._ask_into_queue():
                return

    def collect(self, *, timeout: float) -> None:
        """Take finished tasks as the driver does, then `_settle`."""
        super().collect(timeout=timeout)
        self._settle()

    def poll_held(self) -> None:
        """Look at trials other drivers hold as the driver does, then `_settle`."""
        super().poll_held()
        self._settle()

    def _settle(self) -> None:
        """Tell the studies of each trial that ended since (here or, found ended, elsewhere);
        keep the loop going while a study may still ask."""
        ended = {**self.outcome.found_ended, **self.outcome.ran}
        newly = [t for t in ended if t not in self.settled]
        for trial_id in newly:
            self.settled.add(trial_id)
            self._ended(trial_id, ended[trial_id])
        if newly:
            self._promote()
        if not self.queue and self._in_flight() < self.cap:
            self._ask_into_queue()

    def _ended(self, trial_id: str, status: str) -> None:
        if status not in (*ENDED, FAILED):
            return  # interrupted (or any status that is not an end): left open in its
            # studies, and the next launch resumes it under the same Optuna trial
        stored = self._stored(trial_id)
        for name, number in self.waiting.pop(trial_id, []):
            self._tell(name, number, *stored)

    def _tell(self, name: str, number: int, outcome: str, value: float | None,
              vocab: float | None) -> None:
        import ray

        best = ray.get(self.studies.tell.remote(name, number, outcome, value, vocab))
        if best is not None and best < self.best.get(name, math.inf):
            self.best[name] = best
            self._log_best(name)

    def _log_best(self, name: str) -> None:
        """The study's best value and params on the sweep's parent run (fire and forget)."""
        import ray

        found = ray.get(self.studies.best_params.remote(name))
        slug = best_key(self.slice_of[name])
        metrics = {f"{slug}/{self.objective}": self.best[name]}
        metrics.update({f"{slug}/{k}": float(v) for k, v in found.items()
                        if _is_number(v)})
        # Its step: the trials the study has used (asked from `studies`, not from `self.left`,
        # which does not exist yet while the trials a resumed study left open are told).
        self.tracker.log_sweep_metrics.remote(metrics,
                                              step=ray.get(self.studies.used.remote(name)))


def _summary(trial: Trial) -> dict:
    from trainer.paths import RunPaths, read_summary

    return read_summary(RunPaths.for_config(trial.cfg, trial.trial_id)) or {}


def _outcome(status: str, value: float | None) -> str:
    if status == FINISHED:
        return "complete" if value is not None and math.isfinite(value) else "fail"
    return {DIVERGED: "diverged", PRUNED: "pruned"}.get(status, "fail")


def best_key(slice_: Slice) -> str:
    """The parent-run metric prefix of a slice: `best/model.width_64/seed_0` (MLflow keys
    take no `=`)."""
    return "best/" + "/".join(re.sub(r"[^\w.\-/]", "_", p.replace("=", "_"))
                              for p in slice_.point)


def _is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


EDGE_SHARE = 0.05
"""A best value within this share of a searched axis's range (in log on a log axis) from one
of its ends is "at the edge": the optimum may lie outside the range."""


def at_edge(dists: dict, params: dict | None) -> dict[str, str]:
    """Searched numeric axes whose best value sits at the low or high end of their range
    ("low", "high"), or is the lowest or highest of three or more numeric choices ("lowest
    choice", "highest choice": of two, one is always at an end)."""
    edges = {}
    for key, dist in dists.items():
        if not params or key not in params:
            continue
        if hasattr(dist, "choices"):
            numbers = _numbers(dist.choices)
            best = _numbers([params[key]])
            if numbers and best and len(set(numbers)) >= 3:
                if best[0] == min(numbers):
                    edges[key] = "lowest choice"
                elif best[0] == max(numbers):
                    edges[key] = "highest choice"
            continue
        scale = math.log if dist.log else float
        where = (scale(params[key]) - scale(dist.low)) / (scale(dist.high) - scale(dist.low))
        if where <= EDGE_SHARE:
            edges[key] = "low"
        elif where >= 1 - EDGE_SHARE:
            edges[key] = "high"
    return edges


def _numbers(values) -> list[float]:
    """`values` as numbers, or [] when one is not a number."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return []


def search_status(plan: SearchPlan, url: str) -> list[dict]:
    """Per slice: trials used of n_trials, by state, the best so far with its params, and the
    searched axes where that best sits at the range's edge (the slice's optimum is then not
    bracketed: widen the range with `sweep extend`)."""
    found = summaries(url, [plan.study_name(s) for s in plan.slices])
    quota = study_quotas(plan, url)
    rows = []
    for s in plan.slices:
        info = found[plan.study_name(s)]
        rows.append({"slice": s.label, "used": info["used"],
                     "n_trials": quota[plan.study_name(s)],
                     "states": info["states"], "open_params": info["open_params"],
                     "best": info["best"],
                     "best_params": _typed(info["best_params"]),
                     "all_diverged": info.get("all_diverged", False),
                     "tried_all": exhausted(plan, plan.study_name(s), info),
                     "searched": list(plan.dists),
                     "edge": at_edge(plan.dists, info["best_params"])})
    return rows


def _typed(params: dict | None) -> dict | None:
    """A study's best point with its choices' values as numbers where they are (a choice is
    asked as the override's text: `--json` gave "model.width": "48" beside a float LR)."""
    if params is None:
        return None
    out = {}
    for key, value in params.items():
        if isinstance(value, str):
            try:
                number = int(value) if re.fullmatch(r"[-+]?\d+", value) else float(value)
            except ValueError:
                number = None
            if number is not None and math.isfinite(number):  # ("nan": text, not NaN)
                value = number
        out[key] = value
    return out


STUDY_OPTIONS = ("objective", "sampler", "pruner", "per_slice", "seed")
"""The search options a sweep's studies were asked and told under: neither `extend` nor a
launch under the sweep's name may change them."""


def _study_option(optuna, option: str):
    """A search option as its studies depend on it (a sampler or pruner with its arguments,
    halving's default reduction factor written or not alike)."""
    value = getattr(optuna, option, None)
    if option not in ("sampler", "pruner"):
        return value
    args = getattr(optuna, f"{option}_args")
    if option == "pruner" and value == HALVING:
        from orchestrator.halving import DEFAULT_REDUCTION_FACTOR

        args = {"reduction_factor": DEFAULT_REDUCTION_FACTOR, **args}
    return value, args


def _said(value) -> str:
    """A `_study_option` value as a spec writes it: `tpe`, `gp {'n_startup_trials': 4}`,
    `['model.width']`."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        return f"{value[0]} {value[1]}" if value[1] else str(value[0])
    return str(list(value)) if isinstance(value, tuple) else str(value)


def check_relaunch(old: SweepSpec, new: SweepSpec) -> None:
    """A launch under a searched sweep's name with another spec goes on with its studies (as
    `extend` does): one that changes an option they were asked and told under is refused, as
    `check_extension` refuses it. (A relaunch with another objective mixed eval losses and
    wall times in one study, and `status` named a best by one and its loss by the other.)"""
    if new.optuna is None or old.optuna is None:
        return
    problems = []
    for option in STUDY_OPTIONS:
        before, after = (_study_option(o.optuna, option) for o in (old, new))
        if before != after:
            problems.append(f"search.optuna.{option}: {_said(before)} → {_said(after)}: the "
                            f"studies of sweep {old.name} were asked and told under its "
                            f"{option}, and a launch under its name goes on with them; search "
                            f"with the new {option} in a new sweep (give the spec another "
                            "name)")
    if problems:
        raise ConfigError(problems)


def check_extension(old: SweepSpec, new: SweepSpec, args: Sequence[str] = ()) -> None:
    """`sweep extend` of a searched sweep may raise n_trials and add per-slice values; every
    other search option its studies were asked and told under stays (a new objective would
    mix two objectives in one study, a new per_slice would split or merge the studies)."""
    if new.optuna is None or old.optuna is None:
        return
    problems = []
    for arg in args:
        key = arg.partition("=")[0].lstrip("+")
        option = key.removeprefix("search.optuna.")
        if not key.startswith("search.optuna.") or option == "n_trials":
            continue
        if _study_option(old.optuna, option) != _study_option(new.optuna, option):
            problems.append(f"{arg}: the studies of sweep {old.name} were asked and told "
                            f"under its {option}; extend may raise search.optuna.n_trials and "
                            f"add values, not change {option}: search with it in a new sweep "
                            "(another name)")
    if old.optuna.pruner == HALVING and TOKENS_KEY in old.grid and TOKENS_KEY in new.grid:
        from orchestrator.trials import grid_axes

        def budgets(spec: SweepSpec) -> list[float]:
            axes, _ = grid_axes(dataclasses.replace(spec,
                                                    grid={TOKENS_KEY: spec.grid[TOKENS_KEY]}))
            return [float(v.replace("_", "")) for v in axes.get(TOKENS_KEY, [])]

        top = max(budgets(old), default=math.inf)
        below = sorted(b for b in budgets(new) if b < top and b not in budgets(old))
        if below:
            problems.append(f"{TOKENS_KEY}: under halving each budget is a rung that the best "
                            "of the one below climb to, so a new budget goes above the "
                            f"sweep's largest ({top:,.0f}); "
                            f"{', '.join(f'{b:,.0f}' for b in below)} would sit under rungs "
                            "already climbed: search it in a new sweep (another name)")
    if problems:
        raise ConfigError(problems)
    if new.optuna.n_trials < old.optuna.n_trials:
        raise ConfigError(f"search.optuna.n_trials={new.optuna.n_trials} is below the sweep's "
                          f"{old.optuna.n_trials}: n_trials is a total per study; give a "
                          "larger number")
