"""The sweep driver: validated trials → Ray tasks → results in MLflow.

Ray Core, not Tune (see docs/design.md): each trial is a Ray task holding its CPUs/GPUs (fractional
GPUs pack tiny proxies), submitted one wave of the smallest first, then longest first (by
FLOPs; see `orchestrator.placement.submission_order`) under a concurrency cap, collected with
`ray.wait`. Ray re-executes a task whose worker or node died (`max_retries`); the trainer
then resumes from the trial's newest checkpoint. A trial that raised is resubmitted by the
driver up to `retries` times; one whose worker was lost on Ray's every re-run fails then
(resubmitting it would run it (retries + 1)² times), and a fused group so lost runs its members
alone, each with Ray's re-runs of its own. Which trials to run comes from MLflow:
a trial whose child run says finished or diverged is done and never runs again, so launch,
resume and extend are one operation on a content-addressed set.

A trial is trained by at most one live attempt, across drivers (`trainer.lease`): a trial
whose lease another driver's worker holds is not submitted, and one whose task finds it held
comes back `held`; the driver waits for such trials, polling their leases, and runs them only
if their holder went away without ending them.

Workers record their own trials through the sweep's tracking actor (`orchestrator.tracking`).
The driver waits for each worker's end write (its ObjectRef comes back with the task's result),
records only trials no worker ended (lost after their retries, interrupted), re-syncs those
whose record may have gaps from their run directories, and then closes the sweep.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.eta import launch_note, progress_flops
from orchestrator.fusion import Group, at_once, fusion_setting, plan_fusion
from orchestrator.placement import (
    ClusterModel,
    Placement,
    Request,
    never_fits,
    select,
    submission_order,
)
from orchestrator.progress_log import LogProgress
from orchestrator.ray_auth import auth_refusal
from orchestrator.resync import resync
from orchestrator.sharing import Sharing
from orchestrator.spec import Resources, SweepSpec, root_path
from orchestrator.store import create_sqlite_store_once, tracking_credentials
from orchestrator.tracking import Tracker
from orchestrator.trials import Trial, expand
from trainer.errors import ConfigError, Terminated
from trainer.lease import ENDED, HELD, Holder, current_holder, describe_holders, driver_label
from trainer.schema import DONE, FAILED, FINISHED, INTERRUPTED, recorded_trials

CANCEL_POLL_S = 1.0
"""How often the loop asks the tracker whether `sweep cancel` asked to stop."""
HELD_POLL_S = 5.0
"""How often the leases of trials another driver holds are read again."""


@dataclass
class SweepOutcome:
    """What one launch did."""

    trials: int
    already_done: int
    ran: dict[str, str] = field(default_factory=dict)
    """trial id → status this launch ended it with."""
    interrupted: bool = False
    terminated: bool = False
    """Interrupted by SIGTERM (not Ctrl-C or `sweep cancel`)."""
    unrecorded: bool = False
    """Stopped (a `sweep cancel` while it started, `orchestrator.starting`) before its sweep
    was first recorded: nothing of it is in the store, so there is nothing to resume."""
    stopped_at_end: bool = False
    """A stop came as the last trials ended (their ends not yet taken in): every trial has
    ended, so the sweep is finished and nothing is to resume (`interrupted` is False)."""
    resynced: list[str] = field(default_factory=list)
    """Trial ids whose MLflow record was completed from their run directories."""
    found_ended: dict[str, str] = field(default_factory=dict)
    """trial id → status it was found ended with, not by this launch: by another driver
    (while this one waited for it), or by an earlier attempt whose record did not reach the
    store (completed by the re-sync)."""
    tokens: dict[str, float] = field(default_factory=dict)
    """The sweep's tokens trained, tokens if independent and their ratio (`sweep/*`)."""
    repeats: dict[str, float] = field(default_factory=dict)
    """trial id → passes over its training split, of the trials this launch ran that repeat
    their data (`derived.data_passes` above 1: the trainer notes it, in a worker's log)."""
    short_eval: dict[str, int] = field(default_factory=dict)
    """trial id → tokens each of its evals read, where its eval split held fewer than
    `train.eval_tokens` (`derived.eval_tokens`)."""


class SweepObserver:
    """Sees each trial handed to Ray and each result that comes back; this one does nothing.
    The one hook for instrumentation (the scheduler benchmark times trials through it)."""

    def submitted(self, trial: Trial) -> None:
        """`trial` was handed to Ray."""

    def returned(self, trial: Trial, result: dict) -> None:
        """`trial`'s task returned `result` (status, summary, ...)."""


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

    spec = dataclasses.replace(spec, storage_root=str(root_path(spec.storage_root)))
    storage_problem(spec.storage_root, create=False)
    return spec, expand(spec)


def storage_problem(root: str, *, create: bool, probe: bool = False) -> None:
    """A `storage_root` the trials cannot write under, said before anything runs: a file in
    its path (said always), or (`create`: a launch; `probe`: a dry run, making nothing) a
    folder that cannot be made or written."""
    from trainer.paths import folder_problem

    if reason := folder_problem(root, create=create, probe=probe):
        raise ConfigError(f"storage_root={root}: {reason}; give a folder every worker can "
                          "write the trials' run directories to")


def cluster_address(address: str | None) -> str | None:
    """The cluster a command connects to: `--address`, else RAY_ADDRESS; None for a Ray of its
    own on this machine (neither given, or Ray's `local`, which starts one whatever runs)."""
    named = address or os.environ.get("RAY_ADDRESS")
    return None if named == "local" else named


def init_ray(address: str | None) -> None:
    """Connect to a cluster (`--address`/RAY_ADDRESS) or start a local one."""
    import ray

    global _loop_ended
    _loop_ended = False  # (this launch's loop has not run: `loop_ended`)
    if ray.is_initialized():
        return
    named = cluster_address(address)
    where = (f"--address={address}" if address else f"RAY_ADDRESS={named}")
    if named:
        problem = unreachable(named)
        if problem:
            raise ConfigError(f"cannot reach the Ray cluster at {where} ({problem}): start it "
                              "with `ray start --head`, or give its HOST:PORT (the head's GCS "
                              "port, 6379 by default)")
        if not named.startswith("ray://") and named != "auto" and (
                refused := auth_refusal(named)):
            raise ConfigError(f"the Ray cluster at {where} does not let this driver in: "
                              f"{refused}")
    if not sys.stderr.isatty():  # (a log file got Ray's colour codes: `[33m(raylet)`)
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    try:
        with _signals_held():
            ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise ConfigError(f"cannot reach the Ray cluster at {where} ({err}): start it with "
                          "`ray start --head` or fix the address") from None
    stop_on_sigterm()  # (again: ray.init put its own in place)


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM while Ray starts, taken once `ray.init` returns. A KeyboardInterrupt
    raised inside it could land in a fork handler of its subprocesses, where Python prints it
    as "Exception ignored" and the launch ran to its end; Ray's own SIGTERM handler (set inside
    `ray.init`) ended the launch with exit 15 and no word, before anything was recorded. Held,
    either stops the launch as it does once Ray runs (exit 130 / 143, the stop said)."""
    import signal

    held: list[int] = []
    # (a signal the process inherited ignored stays so: a script's background job, `sweep
    # launch ... &`, gets SIGINT ignored, and took a `kill -INT` while Ray started but not a
    # second later; SIGTERM and `sweep cancel` stop it)
    kinds = [kind for kind in (signal.SIGINT, signal.SIGTERM)
             if signal.getsignal(kind) is not signal.SIG_IGN]

    def hold(signum, frame) -> None:
        if held:  # (a second one: Ray may hang on a cluster that answers nothing)
            if signum == signal.SIGTERM:
                _terminated(signum, frame)  # (raises Terminated)
            raise KeyboardInterrupt
        held.append(signum)
        again = "another SIGTERM" if signum == signal.SIGTERM else "Ctrl-C again"
        print(f"stopping once Ray has started ({again} to stop at once)", file=sys.stderr,
              flush=True)

    try:
        before = {kind: signal.signal(kind, hold) for kind in kinds}
    except ValueError:  # (off the main thread no handler can be set: as before)
        yield
        return
    # Ray sets its handler through this module function, looked up at each call: left as it
    # is, ours is replaced at the start of `ray.init`. (Private: where it moved, Ray's handler
    # acts, and its SystemExit(SIGTERM) is taken below.)
    try:
        import ray._private.utils as ray_utils
    except ImportError:
        ray_utils = None
    ray_set = getattr(ray_utils, "set_sigterm_handler", None)
    if ray_set is not None:
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    except BaseException as err:
        if isinstance(err, SystemExit) and err.code == signal.SIGTERM:
            held.append(signal.SIGTERM)  # (Ray's SIGTERM handler: sys.exit(SIGTERM))
        elif not held:
            raise
        # (else the stop held is what ends the start: a job's SIGTERM reaches Ray's own
        # processes too, and `ray.init` then failed, said as an unreachable cluster)
    finally:
        if ray_set is not None:
            ray_utils.set_sigterm_handler = ray_set
        for kind, handler in before.items():
            signal.signal(kind, handler)
    if signal.SIGTERM in held:
        _terminated(signal.SIGTERM, None)
    if held:
        raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Take SIGTERM (a scheduler's stop: SLURM, Kubernetes, systemd, `kill`) as Ctrl-C: its
    handler raises `trainer.errors.Terminated`, a KeyboardInterrupt, so a launch stops and
    records the sweep as on Ctrl-C. Set after `ray.init`, it replaces Ray's (sys.exit, after
    its core worker's crash report, "*** SIGTERM received ...", three times) for the driver
    process. Off the main thread, where no handler can be set, it does nothing."""
    import signal

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _terminated)


_sigterm_received = False


def sigterm_received() -> bool:
    """Has this process had a SIGTERM since `stop_on_sigterm`? Asked where a
    KeyboardInterrupt is caught: one raised inside Ray's waits comes back a plain
    KeyboardInterrupt (its core worker's interrupted status), not the Terminated raised."""
    return _sigterm_received


def _terminated(signum, frame) -> None:
    global _sigterm_received
    _sigterm_received = True
    raise Terminated


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why a Ray address cannot be a cluster's, found in at most `timeout_s` (Ray itself
    retries an unreachable GCS for minutes); None when it may be (`auto`, `local`, or a
    HOST:PORT that takes a connection)."""
    import socket

    if address in ("auto", "local"):
        return None
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        return f"{address!r} is not HOST:PORT"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        return f"nothing answers at {hostport}: {err.strerror or err}"


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
    Ray itself detects (CUDA_VISIBLE_DEVICES included). Ray's detection, not torch's: it
    reads the driver (NVML on NVIDIA), where importing torch costs a checked spec or a dry
    run seconds."""
    try:  # Ray's own detection of its "GPU" resource (NVIDIA, AMD, ...): a private module,
        # so torch's count if it moved or fails
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        gpus = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        if visible is not None:
            gpus = min(gpus, len(visible))
    except Exception:  # any failure of a private API: ask torch instead
        import torch

        gpus = torch.cuda.device_count()
    return ClusterModel([(float(os.cpu_count() or 1), gpus)])


def run_sweep(spec: SweepSpec, trials: list[Trial], *, tracking_uri: str,
              progress: bool = True, task_fn: Callable | None = None,
              resources_for: Callable[[Trial], Resources] | None = None,
              observer: SweepObserver | None = None,
              based_on: SweepSpec | None = None,
              stored_as: SweepSpec | None = None) -> SweepOutcome:
    """Run every trial not yet done; their workers record them through one tracking actor.

    Args:
        spec: the sweep.
        trials: its expanded trials.
        tracking_uri: the MLflow store.
        progress: show a live progress bar.
        task_fn: what a worker runs per trial (default `orchestrator.worker.run_trial`;
            the scheduler benchmark passes one that sleeps).
        resources_for: per-trial resources (default: the spec's, for every trial).
        observer: sees trials submitted and results returned (default: nothing does).
        based_on: the stored spec that `sweep extend` extended into `spec`; the launch stops
            (ConfigError) if another extend or launch has stored another since.
        stored_as: the spec the sweep's record keeps (default `spec`): its stored spec, which
            holds every trial of `spec` and more (`commands._holds_more`).
    """
    import ray

    # The tracking actor and `recorded_trials` below open the store at once: a new SQLite
    # store's tables are created first, by one process (a `sweep` command has done it already;
    # a caller of this function need not have).
    create_sqlite_store_once(tracking_uri)
    # Not waited for: its process starts (imports MLflow, opens the sweep's runs) while this
    # one reads the store, and trials start while it finishes; their calls queue until it
    # is up. It lives on the driver's node, which outlives any worker node that goes away.
    tracker = ray.remote(Tracker).options(num_cpus=0, scheduling_strategy=_driver_node()).remote(
        tracking_uri, spec.name, code_version=code_version(),
        spec_yaml=yaml.safe_dump((stored_as or spec).to_dict(), sort_keys=False),
        credentials=tracking_credentials(), driver=driver_label(),
        based_on=None if based_on is None else based_on.to_dict())
    if based_on is not None:
        await_tracker(tracker, tracking_uri)
    states = recorded_trials(tracking_uri, spec.name)
    todo = [t for t in trials if states.get(t.trial_id, {}).get("status") not in DONE]
    outcome = SweepOutcome(trials=len(trials), already_done=len(trials) - len(todo))
    # Ended in their run directories, unrecorded here (another sweep over the same storage
    # trained them, or this one's record was lost): recorded from their files at the end,
    # without a task each.
    on_disk = {t.trial_id: status for t in todo if (status := ended_on_disk(t))}
    todo = [t for t in todo if t.trial_id not in on_disk]
    await_tracker(tracker, tracking_uri)  # (up by now, as a rule: it started with the reads)
    runner = _Runner(spec, tracker, todo, outcome, task_fn=task_fn,
                     resources_for=resources_for or (lambda _trial: spec.resources.per_trial()),
                     observer=observer or SweepObserver(),
                     sharing=Sharing(spec, trials, todo, tracker))
    for trial in trials:
        if trial.trial_id in on_disk:
            runner.found_on_disk(trial, on_disk[trial.trial_id])
    runner.sharing.found(set(on_disk))
    runner.recorded_before = {t.trial_id for t in todo if t.trial_id in states}
    # (the start of the pace `sweep status` reads its ETA from: not waited for)
    tracker.note_launch.remote(launch_note(progress_flops(trials, states,
                                                          share=spec.share_prefix)[0]))
    drive(runner, tracking_uri=tracking_uri, progress=progress, ended=DONE)
    return outcome


def records_of_others(trials: list[Trial], tracking_uri: str, sweep: str,
                      ended: tuple[str, ...]) -> dict:
    """The store's record (`recorded_trials`) of the sweep, read for `trials`, which other
    drivers (or earlier launches) ended. A trial the store does not yet hold as ended whose
    lease a live worker still holds is being recorded now: that worker keeps the lease until
    its tracker has written the end (`orchestrator.worker.RECORD_WAIT_S`), so the store is
    read again once those leases are free; whatever it still lacks then is re-synced."""
    if not trials:
        return {}
    from orchestrator.worker import RECORD_WAIT_S

    stored = recorded_trials(tracking_uri, sweep)
    pending = [t for t in trials if stored.get(t.trial_id, {}).get("status") not in ended]
    deadline = time.monotonic() + RECORD_WAIT_S + 5.0
    waited = False
    while time.monotonic() < deadline and any(
            current_holder(_run_dir(t)) is not None for t in pending):
        waited = True
        time.sleep(0.5)
    return recorded_trials(tracking_uri, sweep) if waited else stored


def await_tracker(tracker, tracking_uri: str) -> None:
    """Wait for the tracking actor to have opened the sweep, before any trial starts: raise the
    ConfigError of an extend whose spec another extend changed meanwhile
    (`Tracker.open_sweep`), or of a store this machine cannot write (a trial would train
    with no record, and the launch end in a traceback)."""
    import ray

    try:
        conflict = ray.get(tracker.spec_conflict.remote())
    except ray.exceptions.RayActorError as err:  # its constructor raised before it could say
        cause = (str(err.__cause__ or err).strip().splitlines() or [""])[-1]
        raise ConfigError(f"the sweep's tracker could not start ({cause}); check that this "
                          f"machine can reach and write the MLflow store {tracking_uri}, then "
                          "run the command again.") from None
    if conflict:
        raise ConfigError(conflict)


def ended_on_disk(trial: Trial) -> str | None:
    """The status of the trial's `summary.json` when it says the trial ended (finished or
    diverged), else None."""
    from trainer.paths import RunPaths, read_summary

    status = (read_summary(RunPaths.for_config(trial.cfg, trial.trial_id)) or {}).get("status")
    return status if status in DONE else None


class TrackerLost(Exception):
    """The sweep's tracking actor died (its process killed: the out-of-memory killer, a
    `kill`): nothing more of the launch can be recorded, so its trials are stopped; their
    folders keep what they trained, which `sweep resume` goes on from and records."""

    def __init__(self, name: str, *, cluster_gone: bool = False):
        how = ("was lost with the Ray cluster (the cluster, or the node it ran on, went away)"
               if cluster_gone else "died, its process ended (out of memory, or killed)")
        super().__init__(
            f"the sweep's tracking actor (its one writer to MLflow) {how}: its trials are "
            "stopped, their folders keep what they trained; `sweep resume "
            f"{shlex.quote(name)}` goes on from there and records them")


def cluster_gone(err: BaseException, timeout_s: float = 5.0) -> bool:
    """Did the actor behind `err` die with its node or the whole cluster (`ray stop`, a lost
    machine), rather than alone? Said as an out-of-memory kill, the cluster gone unnamed."""
    import threading

    import ray

    text = str(err).lower()
    if "node has died" in text or "node died" in text:
        return True
    found: dict = {}
    probe = threading.Thread(target=lambda: found.setdefault("nodes", ray.nodes()),
                             daemon=True)  # (a cluster that went away may hang the call)
    probe.start()
    probe.join(timeout_s)
    return "nodes" not in found or not any(n.get("Alive") for n in found["nodes"])


def drive(runner: _Runner, *, tracking_uri: str, progress: bool,
          ended: tuple[str, ...]) -> None:
    """Run a launch's loop to its end (Ctrl-C or SIGTERM interrupts it), then complete its
    record: every end the workers sent written, the gaps re-synced from the trials'
    directories, the trunks nobody recorded, the token totals and the sweep's status
    (finished when every trial reached one of `ended`).

    Raises:
        TrackerLost: the tracking actor died; the trials still running are stopped first.
    """
    import ray

    try:
        _drive(runner, tracking_uri=tracking_uri, progress=progress, ended=ended)
    except ray.exceptions.RayActorError as err:
        if getattr(err, "actor_id", None) != runner.tracker._actor_id.hex():
            raise
        gone = cluster_gone(err)
        with contextlib.suppress(Exception):  # (its calls to the dead tracker fail: no matter)
            runner.stop(INTERRUPTED)
        raise TrackerLost(runner.spec.name, cluster_gone=gone) from None


def _drive(runner: _Runner, *, tracking_uri: str, progress: bool,
           ended: tuple[str, ...]) -> None:
    import ray

    global _loop_ended
    outcome, tracker, spec = runner.outcome, runner.tracker, runner.spec
    try:
        runner.loop(progress=progress)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (`stop_on_sigterm`)
        if runner.has_work():  # (a Ctrl-C after its last trial ended stops nothing)
            runner.stop(INTERRUPTED)
            outcome.interrupted = True
            outcome.terminated = isinstance(stop, Terminated) or sigterm_received()
    _loop_ended = True
    runner.await_records(timeout=None)  # every end the workers sent, written
    # A trial another driver ended is its to record; one whose record is still not done
    # here (that driver died after the trial's end) is completed from its run directory.
    stored = records_of_others(runner.found_ended_trials, tracking_uri, spec.name, ended)
    runner.unsure.update(t.trial_id for t in runner.found_ended_trials
                         if stored.get(t.trial_id, {}).get("status") not in ended)
    tracker.learn_ends.remote({t.trial_id: (stored[t.trial_id]["status"],
                                            stored[t.trial_id]["run"].data.metrics)
                               for t in runner.found_ended_trials if t.trial_id in stored})
    outcome.resynced = resync([runner.trials[t] for t in runner.unsure], tracker, ended,
                              gaps=[trial for t, trial in runner.trials.items()
                                    if t in runner.recorded_before and t not in runner.unsure])
    from trainer.paths import RunPaths, read_summary

    for trial_id in outcome.resynced:  # ended before the stop reached it (a group's member
        # that diverged), or before its worker was lost: the launch's summary says so, as
        # `sweep status` does
        now = outcome.ran.get(trial_id)
        if now in (INTERRUPTED, FAILED):
            trial = runner.trials[trial_id]
            said = (read_summary(RunPaths.for_config(trial.cfg, trial_id)) or {}).get("status")
            if said in ended or (said and now == INTERRUPTED):
                outcome.ran[trial_id] = said
    runner.sharing.record_unrecorded()
    results = list(outcome.ran.values()) + list(outcome.found_ended.values())
    status = INTERRUPTED if outcome.interrupted else (
        FINISHED if all(s in ended for s in results) else FAILED)
    if outcome.interrupted and spec.optuna is None:  # (a search may have more to ask)
        # A driver stopped while it only waited on another's trials, which that one ended:
        # nothing of this launch is undone, and the sweep is not "interrupted" (the last
        # driver to close sets its status).
        states = recorded_trials(tracking_uri, spec.name)
        if all(states.get(t, {}).get("status") in ended for t in runner.trials):
            status = FINISHED
            # (said as such, exit 0: "stopped before its end ... resume goes on" with exit 143
            # for a sweep whose every trial had ended told a scheduler it failed)
            outcome.interrupted, outcome.stopped_at_end = False, True
    totals = tracker.log_token_totals.remote(ended=not outcome.interrupted)
    patient_wait([totals], "the sweep's token totals", spec.name)
    outcome.tokens = ray.get(totals)
    ray.get(patient_wait([tracker.close_sweep.remote(status)], "the sweep's end", spec.name))


_loop_ended = False


def loop_ended() -> bool:
    """Has a launch's loop in this process run to its end (its trials ended or stopped)? A
    stop after that, as the launch writes its last records, may find its sweep finished; one
    before it (while Ray started) finds the sweep as its last launch left it."""
    return _loop_ended


WAIT_SAID_S = 15.0
"""How long the end of a launch waits on the tracking store before it says so."""


def patient_wait(refs: list, what: str, name: str) -> list:
    """Wait for `refs` (the tracking actor's writes at a launch's end), saying once, after
    WAIT_SAID_S, that the store has not taken `what` and that Ctrl-C may leave it: with the
    server down the actor retries each write for up to 15 minutes, and the driver sat silent
    (its trials done) the whole time."""
    import ray

    start, said = time.monotonic(), False
    while True:
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=1.0)
        if not pending:
            return done
        if not said and time.monotonic() - start > WAIT_SAID_S:
            said = True
            print(f"waiting for the tracking store to take {what} (it does not answer; "
                  "each write is retried for up to 15 min). The trials' results are in their "
                  f"folders: Ctrl-C leaves them for `sweep resume {shlex.quote(name)}` to record",
                  flush=True)


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
    A task's result carries the ObjectRef of its worker's end write (`recorded`); the driver
    keeps those until they resolve, and notes each trial whose record may have gaps (`unsure`)
    for the re-sync.
    """

    def __init__(self, spec: SweepSpec, tracker, todo: list[Trial], outcome: SweepOutcome, *,
                 task_fn: Callable | None, resources_for: Callable[[Trial], Resources],
                 observer: SweepObserver, sharing: Sharing):
        import ray

        from orchestrator.worker import group_task, run_group_trials, run_trial, trial_task

        self.spec, self.tracker, self.outcome, self.observer = spec, tracker, outcome, observer
        self.task = ray.remote(trial_task(task_fn or run_trial, sweep=spec.name,
                                          driver_pid=os.getpid()))
        self.resources_for = resources_for
        self.trials = {t.trial_id: t for t in todo}  # every trial this launch may run
        self.running: dict = {}  # ObjectRef of the task → (trial, attempt, placement)
        self.recording: dict = {}  # ObjectRef of an end write → its trial
        self.unsure: set[str] = set()  # trials whose record may lack something
        # Trials the store held a record of before this launch, not done: a stop there may
        # have left steps their workers never sent, past which they resume (`resync`'s gaps)
        self.recorded_before: set[str] = set()
        self.cap = spec.max_concurrent or len(todo) or 1
        self.total = len(todo)
        self.retry_attempt: dict[str, int] = {}
        self.tried_in_group: dict[str, int] = {}  # attempts of a lost group, per member
        self.cluster = ClusterModel.from_ray(ray.nodes())
        self.held: dict[str, Trial] = {}  # trials another driver's worker trains
        self.found_ended_trials: list[Trial] = []
        holders = {t.trial_id: h for t in todo if (h := current_holder(_run_dir(t)))}
        self._hold([t for t in todo if t.trial_id in holders], holders.values())
        free = [t for t in todo if t.trial_id not in holders]
        self.sharing = sharing  # trunks, and the branches they hold back from the queue
        units = sharing.unheld(free)
        fuse = self.release_fuse = fusion_setting(spec)  # (a searched sweep's: its own)
        # trials the cluster runs at once (nothing placed yet), for the size of fused groups
        res = spec.resources.per_trial()
        self.slots = at_once(spec, self.cluster.capacity(self._request(todo[0]) if todo else
                                                         Request(gpus=res.gpus, cpus=res.cpus))
                             ) if fuse else 1
        if fuse and units:
            groups, alone = plan_fusion(units, fuse=fuse, slots=self.slots)
            if groups:
                print(f"fused: {sum(len(g.members) for g in groups)} trials train in "
                      f"{len(groups)} group{'s' * (len(groups) > 1)}, {len(alone)} alone")
            units = [*groups, *alone]
        self.queue = submission_order(units, self.cluster, self._request,
                                      lambda t: t.flops, max_new=self.cap)
        self.group_task = ray.remote(group_task(run_group_trials, sweep=spec.name,
                                                driver_pid=os.getpid()))
        self.cancel_poll = None  # ObjectRef of the tracker's answer, while one is awaited

    def take_released(self, trials: list[Trial]) -> None:
        """Branches whose trunks have passed them (`orchestrator.sharing`), to the front of
        the queue: fused where they may (`plan_fusion`: the budgets of one size of families
        whose trunks trained as one group start at one trunk step)."""
        units: list = list(trials)
        fuse = self.release_fuse
        if fuse and len(trials) > 1:
            # (sized for the slots free now: with the trunks' group still training in one of
            # 2 slots, two branches released together were cut into two, one left waiting)
            busy = len(self.running) + len({t.ref for t in self.sharing.trunks
                                            if t.ref is not None})
            groups, alone = plan_fusion(trials, fuse=fuse, slots=max(1, self.slots - busy))
            units = [*groups, *alone]
        self.queue[:0] = units

    def _request(self, trial: Trial) -> Request:
        res = self.resources_for(trial)
        return Request(gpus=res.gpus, cpus=res.cpus)

    def submit(self, trial: Trial, placement: Placement | None) -> None:
        """Hand the trial to Ray; its worker opens its record."""
        res = self.resources_for(trial)
        attempt = self.retry_attempt.get(trial.trial_id, 1)
        threads = max(1, int(res.cpus))
        task = self.group_task if isinstance(trial, Group) else self.task
        task = task.options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=self.spec.retries,
                            retry_exceptions=False)
        if isinstance(trial, Group):  # a fused group: one task, one trial's resources
            ref = task.remote([m.cfg for m in trial.members], self.tracker,
                              {m.trial_id: m.label for m in trial.members}, threads)
        else:
            ref = task.remote(trial.cfg, self.tracker, trial.label, threads)
        self.running[ref] = (trial, attempt, placement)
        for member in _members(trial):
            self.observer.submitted(member)

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
            lines = None if progress else LogProgress(self.spec.name)
            last_poll = last_held_poll = time.monotonic()
            while self.queue or self.running or self.held or self.sharing.busy:
                self.sharing.poll(self, timeout=0 if self.running else 1.0)
                self.fill()
                self.collect(timeout=1.0)
                self.await_records(timeout=0)
                if time.monotonic() - last_held_poll > HELD_POLL_S:
                    last_held_poll = time.monotonic()
                    self.poll_held()
                bar.update(task, completed=len(self.outcome.ran) + len(self.outcome.found_ended))
                if lines is not None:
                    lines.update(ended=self.outcome.ran, found=len(self.outcome.found_ended),
                                 total=self.total, running=sum(
                                     len(_members(u)) for u, _, _ in self.running.values()),
                                 trunks=self.sharing.training)
                # (asked every CANCEL_POLL_S, its answer read as soon as it is in: read only
                # at the next ask, a cancel took 6 s and more to act, and trials started
                # meanwhile were stopped a second after)
                if self.cancel_poll is None and time.monotonic() - last_poll > CANCEL_POLL_S:
                    last_poll = time.monotonic()
                    self.cancel_poll = self.tracker.cancel_requested.remote()
                if self._cancel_requested():
                    if not self.has_work():
                        return  # (its last trials ended meanwhile: nothing to stop)
                    self.stop(INTERRUPTED)
                    self.outcome.interrupted = True
                    return

    def has_work(self) -> bool:
        """Is anything queued, running or waited for still (what a stop would stop)?"""
        return bool(self.queue or self.running or self.held or self.sharing.busy)

    def _cancel_requested(self) -> bool:
        """Has `sweep cancel` asked to stop, by the answer to the question `loop` sent the
        tracker (`cancel_poll`)? Never waits: the answer is read once it is in (a tracker
        still starting once held the whole loop, and with it every submission, a minute)."""
        import ray

        if self.cancel_poll is None:
            return False
        ready, _ = ray.wait([self.cancel_poll], timeout=0)
        if not ready:
            return False
        self.cancel_poll = None
        return ray.get(ready[0])

    def collect(self, *, timeout: float) -> None:
        """Take the results of finished tasks: record, retry or give up on each trial."""
        import ray

        from orchestrator.worker import lost_errors

        refs = list(self.running)
        if not refs:  # only trunks run (`sharing.poll` waited on them), or other drivers'
            if self.held:  # trials: their leases are read every HELD_POLL_S, no need to spin
                time.sleep(timeout)
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # and everything else that has finished meanwhile
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            unit, attempt, placement = self.running.pop(ref)
            if placement is not None:
                self.cluster.release(placement)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                self.unsure.update(t.trial_id for t in _members(unit))
                reason = str(err).strip().splitlines()[-1]
                if isinstance(err, lost_errors()) and isinstance(unit, Group):
                    self._split(unit, attempt + self.spec.retries, reason)
                elif isinstance(err, lost_errors()):  # its worker or node died on every re-run
                    self._fail(unit, attempt + self.spec.retries, reason, unreported=True,
                               why="its worker was lost each time")
                else:  # the task raised, its result was lost, ...: the driver's to retry
                    self._retry_or_fail(unit, attempt, reason, unreported=True)
                continue
            if not isinstance(unit, Group):
                if self._took(unit, result):
                    self._retry_or_fail(unit, attempt, result["error"], unreported=False)
                continue
            # (its members another driver's workers hold: said in one line, not one each)
            held = [m for m in unit.members if result[m.trial_id]["status"] == HELD]
            self._hold(held, [Holder(**result[m.trial_id]["holder"]) for m in held])
            failed = [m for m in unit.members
                      if m not in held and self._took(m, result[m.trial_id])]
            if failed:  # the group's trainer raised: its unfinished members go again
                again = Group(tuple(failed)) if len(failed) > 1 else failed[0]
                self._retry_or_fail(again, attempt, result[failed[0].trial_id]["error"],
                                    unreported=False)

    def _took(self, trial: Trial, result: dict) -> bool:
        """Take one trial's answer from its worker; whether the trainer raised (to retry)."""
        if result["status"] == HELD:  # another driver's worker took it first
            self._hold([trial], [Holder(**result["holder"])])
            return False
        if result["status"] == ENDED:  # by another driver, or an attempt before
            self._found_ended(trial, result["summary"]["status"])
            return False
        self.observer.returned(trial, result)
        self.recording[result["recorded"]] = trial
        if result["status"] == FAILED:
            return True
        self.outcome.ran[trial.trial_id] = result["status"]
        summary = result.get("summary") or {}
        if (passes := summary.get("derived.data_passes")) is not None and passes > 1:
            self.outcome.repeats[trial.trial_id] = float(passes)
        evaluated = summary.get("derived.eval_tokens")
        train = trial.cfg.train
        if evaluated is not None and evaluated < train.eval_tokens - train.seq_len + 1:
            self.outcome.short_eval[trial.trial_id] = int(evaluated)
        return False

    def _hold(self, trials: list[Trial], holders) -> None:
        """Wait for `trials`, which another driver's workers train, saying so once."""
        if not trials:
            return
        for line in describe_holders(list(holders)):
            print(line + ("; waiting for it to end" if line.startswith("1 trial ")
                          else "; waiting for them to end"))
        self.held.update({t.trial_id: t for t in trials})

    def poll_held(self) -> None:
        """Take each waited-for trial whose lease is free: ended by its holder (done), or
        left unfinished (its driver interrupted, killed or lost), then run here."""
        import ray

        from trainer.paths import RunPaths, read_summary

        for trial_id, trial in list(self.held.items()):
            if current_holder(_run_dir(trial)) is not None:
                continue
            del self.held[trial_id]
            summary = read_summary(RunPaths.for_config(trial.cfg, trial.trial_id)) or {}
            if summary.get("status") in DONE:
                self._found_ended(trial, summary["status"])
            else:
                print(f"trial {trial.label}: its other driver stopped before it ended; "
                      "running it here")
                # Its run may have been created after this sweep's tracker listed the runs:
                # the tracker learns it before this driver's worker begins (waited for, as
                # the two calls come from different callers and are not ordered).
                ray.get(self.tracker.look_up.remote(trial_id))
                self.queue.insert(0, trial)

    def found_on_disk(self, trial: Trial, status: str) -> None:
        """A trial left out of this launch's queue because its run directory holds its end:
        counted with the launch's trials, its record completed from its files at the end."""
        self.trials[trial.trial_id] = trial
        self.total += 1
        self._found_ended(trial, status)

    def _found_ended(self, trial: Trial, status: str) -> None:
        """The trial was found ended, not by this launch; its record is checked at the end."""
        self.outcome.found_ended[trial.trial_id] = status
        self.found_ended_trials.append(trial)

    def await_records(self, *, timeout: float | None) -> None:
        """Take the tracker's answers to the end writes that have come (all of them, with
        `timeout=None`): a trial whose record is not whole, or whose end the tracker could
        not write, is re-synced at the end of the launch."""
        import ray

        refs = list(self.recording)
        if not refs:
            return
        if timeout is None:
            done = patient_wait(refs, f"the records of {len(refs)} trial"
                                      f"{'s' * (len(refs) != 1)}", self.spec.name)
        else:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in done:
            trial = self.recording.pop(ref)
            try:
                whole = ray.get(ref)
            except ray.exceptions.RayError:
                whole = False
            if not whole:
                self.unsure.add(trial.trial_id)

    def _retry_or_fail(self, unit: Trial | Group, attempt: int, reason: str, *,
                       unreported: bool) -> None:
        # A config the trainer refused (its data files' content, found only when it reads
        # them) fails the same way on every attempt: not retried.
        refused = reason.startswith(f"{ConfigError.__name__}:")
        if attempt <= self.spec.retries and not refused:
            self.queue.insert(0, unit)  # resubmitted by the next fill, when it fits
            self.retry_attempt[unit.trial_id] = attempt + 1
            return
        self._fail(unit, attempt, reason, unreported=unreported,
                   why="a config error: not retried" if refused else "")

    def _split(self, group: Group, attempts: int, reason: str) -> None:
        """A fused group whose worker was lost on every attempt: its members go again alone,
        each from its own checkpoints with Ray's retries of its own, so that a member that
        kills its worker (out of memory, say) fails alone and the others end."""
        print(f"{group.label}: its worker was lost on each of {attempts} attempt"
              f"{'s' * (attempts != 1)} ({reason}); its members run alone from their "
              "checkpoints")
        self.queue[:0] = list(group.members)
        for member in group.members:  # (a retry budget of its own; its count said in full)
            self.tried_in_group[member.trial_id] = attempts

    def _fail(self, unit: Trial | Group, attempts: int, reason: str, *, unreported: bool,
              why: str) -> None:
        """Record the unit's trials failed for good, after `attempts` tries."""
        for trial in _members(unit):
            if unreported:  # no worker recorded this end
                self._record_unreported(trial, FAILED)
            self.outcome.ran[trial.trial_id] = FAILED
            self.tracker.note_failure.remote(trial.trial_id, reason)
            tried = attempts + self.tried_in_group.get(trial.trial_id, 0)
            tries = ("(a config error: not retried)" if why.startswith("a config error")
                     else f"after {tried} attempt{'s' * (tried != 1)}"
                     + (f" ({why})" if why else ""))
            print(f"trial {trial.label} failed {tries}: {reason}")

    def _record_unreported(self, trial: Trial, status: str) -> None:
        from orchestrator.worker import trial_params

        # Not waited for: close_sweep, called after it, is.
        self.tracker.record_unreported.remote(trial.trial_id, status, trial.label,
                                              trial_params(trial.cfg, {}))

    def stop(self, status: str) -> None:
        """Cancel running tasks and record their trials as `status`; tasks that have ended
        are taken as any end is (a trial that failed keeps its `failed` and its error)."""
        import ray

        if self.running:
            try:
                self.collect(timeout=0)
            except Exception:  # noqa: BLE001 (the stop goes on: re-sync reads their files)
                pass
        refs = list(self.running)
        ended, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        # Tasks end after their step, saved (`trainer.stopping`; a trial of several
        # processes at its next settled step, its ranks agreed).
        cancel_gently([ref for ref in refs if ref not in ended] + self.sharing.running_refs())
        ended, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        for ref, (unit, *_) in list(self.running.items()):
            # (not a task that has ended: Ray 2.60's core worker aborted the driver now and
            # then, "Tried to complete task that was not pending", on a cancel that crossed
            # the task's end; its trials are recorded from their files either way)
            if ref not in ended:
                ray.cancel(ref, force=True)
            for trial in _members(unit):
                self._record_unreported(trial, status)
                self.unsure.add(trial.trial_id)  # it may have ended meanwhile: see its summary
                self.outcome.ran[trial.trial_id] = status
        self.running.clear()
        self.queue.clear()
        self.held.clear()  # their drivers record them
        self.sharing.stop()


STOP_GRACE_S = 30.0
"""How long a stopping launch waits for its running tasks to save their step and end before it
kills them."""


def cancel_gently(refs: list, grace_s: float = STOP_GRACE_S) -> None:
    """Ask the running tasks `refs` to stop after their step, with a checkpoint of it (Ray's
    cancel without force: a SIGINT in the task, `trainer.stopping`), and wait up to `grace_s`
    for them to end; a second Ctrl-C ends the wait. The caller kills what has not ended."""
    import ray

    if not refs:
        return
    for ref in refs:
        ray.cancel(ref, force=False)
    n = len(refs)
    print(f"stopping: {n} running task{'s' * (n != 1)} save{'s' * (n == 1)} the step in "
          f"progress first (up to {grace_s:.0f} s; Ctrl-C again to stop at once)",
          file=sys.stderr, flush=True)
    try:
        ray.wait(refs, num_returns=len(refs), timeout=grace_s)
    except KeyboardInterrupt:  # (Terminated too): the caller kills them now
        pass


def _members(unit: Trial | Group) -> tuple[Trial, ...]:
    """The trials of a queue item: a fused group's members, or the trial itself."""
    return unit.members if isinstance(unit, Group) else (unit,)


def _run_dir(trial: Trial) -> Path:
    from trainer.paths import RunPaths

    return RunPaths.for_config(trial.cfg, trial.trial_id).run_dir
