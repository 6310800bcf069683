"""The sweep driver: validated trials → Ray tasks → results in MLflow.

Ray Core, not Tune (see DESIGN.md): each trial is a Ray task holding its CPUs/GPUs (fractional
GPUs pack tiny proxies), submitted one wave of the smallest first, then longest first (by
FLOPs; see `orchestrator.placement.submission_order`) under a concurrency cap, collected with
`ray.wait`. Ray re-executes a task whose worker or node died (`max_retries`); the trainer
then resumes from the trial's newest checkpoint. A trial that raised is resubmitted by the
driver up to `retries` times. Which trials to run comes from MLflow: a trial whose child run
says finished or diverged is done and never runs again, so launch, resume and extend are one
operation on a content-addressed set.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.placement import (
    ClusterModel,
    Placement,
    Request,
    never_fits,
    select,
    submission_order,
)
from orchestrator.resync import resync
from orchestrator.spec import Resources, SweepSpec, Trial, expand
from orchestrator.tracking import Tracker, tracking_credentials
from orchestrator.worker import TrialFailed
from trainer.errors import ConfigError
from trainer.schema import DONE, FAILED, FINAL_WALL_S, FINISHED, INTERRUPTED, recorded_trials

CANCEL_POLL_S = 3.0


@dataclass
class SweepOutcome:
    """What one launch did."""

    trials: int
    already_done: int
    ran: dict[str, str] = field(default_factory=dict)
    """trial id → status this launch ended it with."""
    interrupted: bool = False
    overhead_s: list[float] = field(default_factory=list)
    """Per trial: submission to result, minus the trial's own `final/wall_s`."""
    summaries: dict[str, dict] = field(default_factory=dict)
    """trial id → the summary its task returned."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent after the last trial: draining the tracker, re-sync, closing the sweep."""
    tracker: dict = field(default_factory=dict)
    """The tracking actor's `stats()` at the end."""
    first_submit_at: float | None = None
    """Wall-clock time (time.time()) at which the first trial was handed to Ray."""
    nodes: dict[str, str] = field(default_factory=dict)
    """trial id → the Ray node that ran it (last attempt)."""
    resynced: list[str] = field(default_factory=list)
    """Trial ids whose MLflow record was completed from their run directories."""


def code_version() -> str:
    """The git commit of the checkout the driver runs from, else the package version."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    from importlib.metadata import version
    return version("proxysweep")


def absolute_tracking_uri(uri: str) -> str:
    """Make a relative sqlite:/// path absolute, so Ray workers in other directories agree."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def prepare(spec: SweepSpec) -> tuple[SweepSpec, list[Trial]]:
    """Absolute storage root, every trial expanded and validated (nothing runs on error)."""
    import dataclasses

    spec = dataclasses.replace(spec, storage_root=str(Path(spec.storage_root).resolve()))
    return spec, expand(spec)


def init_ray(address: str | None) -> None:
    """Connect to a cluster (`--address`/RAY_ADDRESS) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
    except ConnectionError as err:
        raise ConfigError(f"cannot reach the Ray cluster at --address={address} ({err}): "
                          "start it with `ray start --head` or fix the address") from None


def resource_problems(spec: SweepSpec, cluster: ClusterModel | None = None) -> list[str]:
    """Some alive node must hold one trial's CPUs and GPUs, or no trial could ever start.

    `cluster` defaults to the connected Ray cluster's alive nodes."""
    if cluster is None:
        import ray

        cluster = ClusterModel.from_ray(ray.nodes())
    need = spec.resources.per_trial()
    why = never_fits(Request(gpus=need.gpus, cpus=need.cpus), cluster)
    if why is None:
        return []
    return [f"resources (cpus={need.cpus:g}, gpus={need.gpus:g} for {need.world_size} "
            f"process(es)) {why}: lower resources in the spec or add nodes"]


def local_cluster() -> ClusterModel:
    """This machine as the one node a local `ray.init()` would start: every CPU, and the GPUs
    CUDA sees (what Ray itself detects, CUDA_VISIBLE_DEVICES included)."""
    import torch

    return ClusterModel([(float(os.cpu_count() or 1), torch.cuda.device_count())])


def run_sweep(spec: SweepSpec, trials: list[Trial], *, tracking_uri: str,
              progress: bool = True, task_fn: Callable | None = None,
              resources_for: Callable[[Trial], Resources] | None = None) -> SweepOutcome:
    """Run every trial not yet done; record everything through one tracking actor.

    Args:
        spec: the sweep.
        trials: its expanded trials.
        tracking_uri: the MLflow store.
        progress: show a live progress bar.
        task_fn: what a worker runs per trial (default `orchestrator.worker.run_trial`;
            the scheduler benchmark passes one that sleeps).
        resources_for: per-trial resources (default: the spec's, for every trial).
    """
    import ray

    # Not waited for: its process starts (imports MLflow, opens the sweep's runs) while this
    # one reads the store, and trials start while it finishes; their calls queue until it
    # is up. It lives on the driver's node, which outlives any worker node that goes away.
    tracker = ray.remote(Tracker).options(num_cpus=0, scheduling_strategy=_driver_node()).remote(
        tracking_uri, spec.name, code_version=code_version(),
        spec_yaml=yaml.safe_dump(spec.to_dict(), sort_keys=False),
        credentials=tracking_credentials())
    states = recorded_trials(tracking_uri, spec.name)
    todo = [t for t in trials if states.get(t.trial_id, {}).get("status") not in DONE]
    outcome = SweepOutcome(trials=len(trials), already_done=len(trials) - len(todo))
    runner = _Runner(spec, tracker, todo, outcome, task_fn=task_fn,
                     resources_for=resources_for or (lambda _trial: spec.resources.per_trial()))
    try:
        runner.loop(progress=progress)
    except KeyboardInterrupt:
        runner.stop(INTERRUPTED)
        outcome.interrupted = True
    status = INTERRUPTED if outcome.interrupted else (
        FINISHED if all(s in DONE for s in outcome.ran.values()) else FAILED)
    mark = time.monotonic()
    ray.get(tracker.flush.remote())  # what the tracker still had queued, written
    outcome.phases["drain_s"], mark = time.monotonic() - mark, time.monotonic()
    outcome.resynced = resync(trials, tracker, tracking_uri=tracking_uri, sweep=spec.name,
                              states=states, ran=set(outcome.ran))
    outcome.phases["resync_s"], mark = time.monotonic() - mark, time.monotonic()
    ray.get(tracker.close_sweep.remote(status))
    outcome.phases["close_s"] = time.monotonic() - mark
    outcome.tracker = ray.get(tracker.stats.remote())
    return outcome


def _driver_node():
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # Hard affinity: with soft=True Ray 2.60 placed the actor on another node even with the
    # driver's node idle. The driver's node is alive as long as the driver is.
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


class _Runner:
    """List scheduling of trial tasks in `submission_order`, each submitted when it fits.

    Which trials fit where is `orchestrator.placement`'s model of the cluster; the driver
    submits only those, so Ray never holds a queue in which short trials overtake long ones.
    """

    def __init__(self, spec: SweepSpec, tracker, todo: list[Trial], outcome: SweepOutcome, *,
                 task_fn: Callable | None, resources_for: Callable[[Trial], Resources]):
        import ray

        from orchestrator.worker import run_trial, trial_task

        self.spec, self.tracker, self.outcome = spec, tracker, outcome
        self.task = ray.remote(trial_task(task_fn or run_trial))
        self.resources_for = resources_for
        self.running: dict = {}  # ObjectRef → (trial, attempt, placement, submitted at)
        self.cap = spec.max_concurrent or len(todo) or 1
        self.total = len(todo)
        self.retry_attempt: dict[str, int] = {}
        self.cluster = ClusterModel.from_ray(ray.nodes())
        self.queue = submission_order(todo, self.cluster, self._request, lambda t: t.flops,
                                      max_new=self.cap)
        self.cancel_poll = None  # ObjectRef of the tracker's answer, while one is awaited

    def _request(self, trial: Trial) -> Request:
        res = self.resources_for(trial)
        return Request(gpus=res.gpus, cpus=res.cpus)

    def submit(self, trial: Trial, placement: Placement | None) -> None:
        """Record the trial's start with the tracker, then hand it to Ray."""
        from trainer.identity import flatten

        res = self.resources_for(trial)
        attempt = self.retry_attempt.get(trial.trial_id, 1)
        # From the driver, not the worker: this call and the trial's end (also sent from
        # here) reach the actor in order, so no worker waits on the tracker to start.
        self.tracker.start_trial.remote(trial.trial_id, flatten(trial.cfg), trial.label)
        threads = max(1, int(res.cpus))
        ref = self.task.options(num_cpus=res.cpus, num_gpus=res.gpus,
                                max_retries=self.spec.retries, retry_exceptions=False).remote(
            trial.cfg, self.tracker, trial.label, threads)
        self.running[ref] = (trial, attempt, placement, time.monotonic())
        if self.outcome.first_submit_at is None:
            self.outcome.first_submit_at = time.time()

    def fill(self) -> None:
        """Submit, in queue order, every queued trial that fits the free resources."""
        room = self.cap - len(self.running)
        chosen = select(self.queue, self.cluster, self._request, max_new=max(room, 0))
        started = {id(trial) for trial, _ in chosen}
        self.queue = [t for t in self.queue if id(t) not in started]
        for trial, placement in chosen:
            self.submit(trial, placement)
        if self.queue and not self.running:  # nothing fits an idle cluster: let Ray place it
            self.submit(self.queue.pop(0), None)

    def loop(self, *, progress: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), disable=not progress, transient=False) as bar:
            task = bar.add_task(self.spec.name, total=self.total)
            last_poll = time.monotonic()
            while self.queue or self.running:
                self.fill()
                self.collect(timeout=1.0)
                bar.update(task, completed=len(self.outcome.ran))
                if time.monotonic() - last_poll > CANCEL_POLL_S:
                    last_poll = time.monotonic()
                    if self._cancel_requested():
                        self.stop(INTERRUPTED)
                        self.outcome.interrupted = True
                        return

    def _cancel_requested(self) -> bool:
        """Has `sweep cancel` asked to stop? Never waits: the question goes to the tracker and
        its answer is read on a later poll (a tracker still starting once held the whole
        loop, and with it every submission, for a minute)."""
        import ray

        if self.cancel_poll is None:
            self.cancel_poll = self.tracker.cancel_requested.remote()
            return False
        ready, _ = ray.wait([self.cancel_poll], timeout=0)
        if not ready:
            return False
        self.cancel_poll = None
        return ray.get(ready[0])

    def collect(self, *, timeout: float) -> None:
        import ray

        refs = list(self.running)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # and everything else that has finished meanwhile
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            trial, attempt, placement, submitted = self.running.pop(ref)
            if placement is not None:
                self.cluster.release(placement)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                self._failed(trial, attempt, err)
                continue
            self.outcome.summaries[trial.trial_id] = result["summary"]
            self.outcome.nodes[trial.trial_id] = result.get("node", "")
            wall = result["summary"].get(FINAL_WALL_S) or 0.0
            self.outcome.overhead_s.append(time.monotonic() - submitted - wall)
            # Not waited for: the actor applies calls in order, and close_sweep is waited on.
            self.tracker.finish_trial.remote(trial.trial_id, result["status"],
                                             result["summary"], result["params"], trial.label,
                                             node=result.get("node"),
                                             rows=result.get("unsent", ()),
                                             sends=result.get("sends"),
                                             sender=result.get("sender"),
                                             from_scratch=result.get("from_scratch"))
            self.outcome.ran[trial.trial_id] = result["status"]

    def _failed(self, trial: Trial, attempt: int, err: Exception) -> None:
        # The steps the worker had not sent, if the trainer raised (`TrialFailed`); a worker
        # that died took them along (its metrics.jsonl has them).
        cause = getattr(err, "cause", None)
        report = cause.report if isinstance(cause, TrialFailed) else {}
        if report.get("unsent"):
            self.tracker.add_steps.remote(trial.trial_id, report["unsent"])
        if attempt <= self.spec.retries:
            self.queue.insert(0, trial)  # resubmitted by the next fill, when it fits
            self.retry_attempt[trial.trial_id] = attempt + 1
            return
        # Not waited for, as every call from here: the actor applies them in order.
        self.tracker.mark_trial.remote(trial.trial_id, FAILED)
        self.outcome.ran[trial.trial_id] = FAILED
        reason = str(cause) if isinstance(cause, TrialFailed) else \
            str(err).strip().splitlines()[-1]
        print(f"trial {trial.label} failed after {attempt} attempts: {reason}")

    def stop(self, status: str) -> None:
        """Cancel running tasks and record their trials as `status`."""
        import ray

        for ref, (trial, *_) in list(self.running.items()):
            ray.cancel(ref, force=True)
            self.tracker.mark_trial.remote(trial.trial_id, status)
            self.outcome.ran[trial.trial_id] = status
        self.running.clear()
        self.queue.clear()
