"""The sweep's one writer to MLflow, and the one path a trial's record takes to it.

Nothing else in a sweep writes to the tracking store: a single `Tracker`, run as a Ray actor,
buffers what it is sent and writes with `log_batch` (≤ 1000 metrics per call). One writer keeps
an embedded SQLite store free of `database is locked` and the load on a real server low.

One sender per trial, in order. The worker that runs an attempt of a trial sends all of it:
`begin` (open or reopen the child run, one attempt more), `log_steps` (every couple of seconds) and
`end` (the last steps, `final/*`, the status, the run terminated). Ray delivers one caller's
calls to an actor in the order they were made, so an end never overtakes its begin or steps,
and the end's write is the trial's whole record. The worker hands the end call's ObjectRef back
to the driver with the task's result; the driver waits for every one of them before it closes
the sweep. The driver itself writes only for a trial that reported no end: failed before its
worker began, lost with its worker or node after its retries, interrupted
(`record_unreported`).

`end` answers whether the record is whole: this tracker created the run at the attempt's begin,
the attempt trained from step 0, and no other attempt began. Anything else (a resumed trial, a
second attempt after a lost worker, a trial that had ended before and reported nothing, an end
the store refused) may have gaps, which the driver fills from the trial's own `metrics.jsonl`
and `summary.json` (`orchestrator.resync`, through `resync_trial` here).

Records follow `trainer.schema`: experiment = sweep name, one parent run (tag
proxysweep.kind=sweep, the spec as artifact `sweep.yaml`), one child run per trial id, found
again by its `trial.id` tag, so a retried or resumed trial continues its own run. A resumed
attempt re-reports the steps after its last checkpoint; they are dropped here (per metric, steps
at or below the last one written), so each metric's history stays one continuous curve.

The connection to the store (credentials, retries through a server outage, cheap SQLite
commits) is `orchestrator.store`'s. What an outage longer than it waits still left out is
re-synced like any other gap.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time

from orchestrator.store import (
    OUTAGE_S,
    StoreCalls,
    is_transient,
    open_client,
    spec_changed_since_read,
)
from trainer.reporting import redact
from trainer.schema import (
    CODE_VERSION_TAG,
    DRIVER_SILENT_S,
    FINAL_PREFIX,
    FINAL_STEPS,
    HEARTBEAT_EVERY_S,
    HISTORY_KEYS,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    KIND_TRUNK,
    PARENT_RUN_TAG,
    RUNNING,
    SPEC_ARTIFACT,
    SWEEP_CANCEL_TAG,
    SWEEP_DRIVER_TAG,
    SWEEP_DRIVERS_PREFIX,
    SWEEP_EXPERIMENT_TAG,
    SWEEP_HEARTBEAT_TAG,
    SWEEP_LAUNCH_TAG,
    SWEEP_STATUS_TAG,
    TOKENS_RATIO,
    TRIAL_ATTEMPT_TAG,
    TRIAL_ERROR_TAG,
    TRIAL_ID_TAG,
    TRIAL_NODE_TAG,
    TRIAL_STATUS_TAG,
    TRUNK_ID_TAG,
    TRUNK_STATUS_TAG,
    batches,
    create_experiment,
    find_or_create_run,
    run_status,
    sweep_runs,
    totals_of,
    trial_filter,
)

# MLflow is imported where it is used, not here: every trial task receives the Tracker's
# handle, and unpickling it imports this module in the worker; importing MLflow there cost
# each of a hundred workers starting at once ~40 s on a loaded 2-core machine.
MAX_BATCH = 1000
"""Buffered metrics of one trial that trigger its write (MLflow's limit per log_batch)."""
INTERIM_SHARE = 0.2
"""At most this share of the tracker's time goes to writing running trials' metrics: with many
trials running, each one's metrics wait longer than `flush_every_s` (ends are never held)."""


HEARTBEAT_JOIN_S = 10.0
"""How long closing a sweep waits for a heartbeat write in flight (one slow store call)."""
OTHERS_READ_S = 5.0
"""How often a tracker reads which other drivers run its sweep (`Tracker._others`)."""
PARENT_WAIT_S = 30.0
"""How long a launch that found a sweep's experiment just created by another waits for that
one's parent run rather than creating a second (`Tracker.open_sweep`)."""
YOUNG_EXPERIMENT_S = 60.0
"""An experiment created this recently, with no parent run yet, is another launch's about to
create one."""
PARENT_SETTLE_S = 1.0
"""How long a launch that created a parent beside a possible other creator waits before it
reads the parents again and keeps the oldest: a create stamped earlier may commit later."""


class Tracker:
    """Buffered MLflow writes for one sweep. Run it as a Ray actor (`ray.remote(Tracker)`)."""

    def __init__(self, uri: str, sweep: str, *, code_version: str, spec_yaml: str,
                 flush_every_s: float = 10.0, credentials: dict[str, str] | None = None,
                 outage_s: float = OUTAGE_S, driver: str | None = None,
                 based_on: dict | None = None):
        self.client, self.uri = open_client(uri, credentials), uri
        self.call = StoreCalls(outage_s)
        self.sweep, self.code_version, self.flush_every_s = sweep, code_version, flush_every_s
        self.driver = driver
        self.others_read = -math.inf  # when `_others` last read the parent (monotonic)
        self.others: list[str] = []  # other drivers of this sweep alive then
        self.shared = False  # another driver ran this sweep while this one did
        self.made_experiment: float | None = None  # when this tracker created the experiment
        self.experiment_id = self._experiment(sweep)
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}  # trial id → run id, of this launch or earlier ones
        self.trunks: dict[str, str] = {}  # trunk id → run id
        self.attempts: dict[str, int] = {}  # trial id → attempt, of trials begun here
        self.whole: set[str] = set()  # begun here once, from step 0, in a run created here
        self.params_logged: dict[str, set[str]] = {}
        self.params_held: dict[str, dict] = {}  # trial id → params for its next write
        self.last_step: dict[tuple[str, str], int] = {}  # (trial id, metric) → last step
        self.buffer: dict[str, list] = {}  # trial id → Metrics not yet written
        self.buffered_since: dict[str, float] = {}  # trial id → its oldest unwritten metric
        self.writes, self.next_check = 0, time.monotonic()
        self.write_s = 0.02  # running mean of one log_batch's seconds
        # Each trial's status and final/* values as written, and each trunk's final/*: the
        # sweep's token totals at the end of a launch, without reading 1000 runs back.
        self.ends: dict[str, tuple[str | None, dict]] = {}
        self.trunk_finals: dict[str, dict] = {}
        self.failures: dict[str, str] = {}  # trial id → its error, until its run has the tag
        self.launch: dict | None = None  # this launch's `sweep.launch`, once noted
        for run in self.call(sweep_runs, self.client, self.experiment_id, KIND_TRIAL):
            trial_id = run.data.tags[TRIAL_ID_TAG]
            self.children[trial_id] = run.info.run_id
            self.ends[trial_id] = (run.data.tags.get(TRIAL_STATUS_TAG), run.data.metrics)
        for run in self.call(sweep_runs, self.client, self.experiment_id, KIND_TRUNK):
            self.trunk_finals[run.data.tags[TRUNK_ID_TAG]] = run.data.metrics
        # In the constructor, so the parent exists before any trial calls in (an actor runs
        # no method before its constructor has returned).
        self.conflict: str | None = None
        """Why this launch must not go on (see `open_sweep`), for the driver to raise."""
        self.heart_stop = self.heart = None
        self.opened: tuple[str | None, str] | None = None  # (run created, status before)
        try:
            self.open_sweep(spec_yaml, driver=driver, based_on=based_on)
        except Exception as err:  # noqa: BLE001 (said by the driver, before any trial)
            self.conflict = self._cannot_open(err)
            return
        self.heart_stop, self.heart = self._heartbeat(uri, credentials)

    # -- the sweep -----------------------------------------------------------------------

    def _experiment(self, sweep: str) -> str:
        """The sweep's experiment, created if there is none. Two drivers starting one sweep
        at once both find none; the second create fails, and that driver takes the first's."""
        from mlflow.exceptions import MlflowException

        exp = self.call(self.client.get_experiment_by_name, sweep)
        if exp is not None:
            return exp.experiment_id
        try:
            made = self.call(create_experiment, self.client, self.uri, sweep,
                             tags={SWEEP_EXPERIMENT_TAG: "yes"})
            self.made_experiment = time.monotonic()
            return made
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.call(self.client.get_experiment_by_name, sweep).experiment_id

    def spec_conflict(self) -> str | None:
        """Why this launch must not go on, or None (the driver asks once, before its trials)."""
        return self.conflict

    def open_sweep(self, spec_yaml: str, *, driver: str | None = None,
                   based_on: dict | None = None) -> str:
        """Find or create the parent run, store the spec with it, mark it running, and say
        which driver ("HOST PID") runs it, so that `sweep status` can tell a sweep whose
        driver was killed from one that runs.

        Two drivers starting one new sweep at once must agree on one parent. Creating the
        experiment is atomic, so only the driver that created it creates the parent, and the
        others wait for it (`PARENT_WAIT_S`). Where the experiment was there before with no
        parent (a failed launch removed its own), two may both create one: each reads the
        parents again after `PARENT_SETTLE_S` (a create stamped earlier can commit later) and
        takes the oldest (by start time, then id), and one that created another deletes it."""
        parents = self.call(sweep_runs, self.client, self.experiment_id, KIND_SWEEP)
        if not parents and self.made_experiment is None and self._launch_creates_parent():
            parents = self._wait_for_parent()
        created = None
        if not parents:
            created = self.call(find_or_create_run, self.client, self.experiment_id,
                                tags={KIND_TAG: KIND_SWEEP}, name=self.sweep).info.run_id
            # (the experiment's creator too when its create came late: a waiter may have
            # given up on it and created one)
            if self.made_experiment is None or \
                    time.monotonic() - self.made_experiment > PARENT_WAIT_S / 2:
                time.sleep(PARENT_SETTLE_S)
            parents = self.call(sweep_runs, self.client, self.experiment_id, KIND_SWEEP)
        first = min(parents, key=lambda run: (run.info.start_time, run.info.run_id))
        self.parent_id = first.info.run_id
        self.opened = (created if created == self.parent_id else None, first.info.status)
        if created is not None and created != self.parent_id:
            self.call(self.client.delete_run, created)
        if based_on is not None and self._stored_spec() not in (None, based_on):
            # `sweep extend` read the spec `based_on` and extended it: another extend (or a
            # launch) stored another since, and writing this one would drop that one's change.
            self.conflict = spec_changed_since_read(self.sweep)
            return self.parent_id
        self.call(self.client.update_run, self.parent_id, status="RUNNING")
        self.call(self.client.log_text, self.parent_id, redact(spec_yaml), SPEC_ARTIFACT)
        # A launch marks the sweep running before it starts Ray (`sweep_record.mark_starting`):
        # a cancel since then is for this driver, which stops at its first look.
        if driver is None or first.data.tags.get(SWEEP_DRIVER_TAG) != driver:
            self._set_parent_tag(SWEEP_CANCEL_TAG, "no")
        # a resumed or extended sweep is running again, whatever its last launch ended as
        self._set_parent_tag(SWEEP_STATUS_TAG, RUNNING)
        if driver is not None:
            self._set_parent_tag(SWEEP_DRIVER_TAG, driver)
            self._set_parent_tag(SWEEP_DRIVERS_PREFIX + driver, str(int(time.time())))
            self._others(prune=True)
        return self.parent_id

    def _launch_creates_parent(self) -> bool:
        """Whether another launch created the sweep's experiment within `YOUNG_EXPERIMENT_S`
        (and is about to create its parent run); not for an experiment a user made."""
        exp = self.call(self.client.get_experiment, self.experiment_id)
        created = getattr(exp, "creation_time", None)
        return (exp.tags.get(SWEEP_EXPERIMENT_TAG) == "yes" and created is not None
                and time.time() - created / 1000 < YOUNG_EXPERIMENT_S)

    def _wait_for_parent(self) -> list:
        """The parent run(s) of the sweep once the launch that created its experiment has
        created one; empty after `PARENT_WAIT_S` (that launch failed: this one creates it)."""
        deadline = time.monotonic() + PARENT_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.2)
            parents = self.call(sweep_runs, self.client, self.experiment_id, KIND_SWEEP)
            if parents:
                return parents
            tags = self.call(self.client.get_experiment, self.experiment_id).tags
            if tags.get(SWEEP_EXPERIMENT_TAG) != "yes":  # that launch failed (`_cannot_open`)
                return []
        return []

    def _others(self, *, prune: bool = False) -> list[str]:
        """The other drivers running this sweep now (`SWEEP_DRIVERS_PREFIX`), read at most
        every OTHERS_READ_S; `prune` removes the marks of those that are not (killed)."""
        if time.monotonic() - self.others_read < OTHERS_READ_S and not prune:
            return self.others
        tags = self.call(self.client.get_run, self.parent_id).data.tags
        self.others_read = time.monotonic()
        self.others = []
        for key, beat in tags.items():
            label = key[len(SWEEP_DRIVERS_PREFIX):]
            if not key.startswith(SWEEP_DRIVERS_PREFIX) or label == self.driver:
                continue
            if driver_alive(label, beat):
                self.others.append(label)
                self.shared = True
            elif prune:
                with contextlib.suppress(Exception):  # (another driver may prune it too)
                    self.client.delete_tag(self.parent_id, key)
        return self.others

    def _cannot_open(self, err: Exception) -> str:
        """Undo what a failed `open_sweep` wrote (a parent run it created, with no spec; the
        status of one it found) and say why the sweep cannot run: a store or artifact location
        this machine cannot write (S3 credentials missing on the driver, say)."""
        location = "?"
        with contextlib.suppress(Exception):
            location = self.client.get_experiment(self.experiment_id).artifact_location
        with contextlib.suppress(Exception):
            if self.opened is not None:
                created, before = self.opened
                if created is not None:
                    self.client.delete_run(created)
                else:
                    self.client.update_run(self.parent_id, status=before)
        with contextlib.suppress(Exception):  # no other launch waits for this one's parent
            if self.made_experiment is not None:
                self.client.set_experiment_tag(self.experiment_id, SWEEP_EXPERIMENT_TAG, "no")
        cause = (str(err).strip().splitlines() or [""])[-1]
        return (f"sweep {self.sweep} could not be recorded ({type(err).__name__}: {cause}); "
                f"check that this machine can write the MLflow store {self.uri} and the "
                f"sweep's artifact location {location} (credentials such as AWS_* or "
                "MLFLOW_TRACKING_* in the environment), then run the command again.")

    def _stored_spec(self) -> dict | None:
        """The spec stored with the parent run, as `SweepSpec.to_dict` gives it (None if
        there is none or it cannot be read)."""
        import tempfile

        import yaml

        from orchestrator.spec_file import spec_from_dict

        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.call(self.client.download_artifacts, self.parent_id, SPEC_ARTIFACT,
                                 tmp)
                with open(path) as f:
                    return spec_from_dict(yaml.safe_load(f), stored=True).to_dict()
        except Exception:  # noqa: BLE001 (no spec to compare with: nothing to lose)
            return None

    def _set_parent_tag(self, key: str, value: str) -> None:
        """Set a tag of the parent run. Two drivers opening one sweep at once may both insert
        it, and the store refuses the second insert (SQLite: its unique key); the tag exists
        then, so the same write once more updates it (a real error is raised again)."""
        from mlflow.exceptions import MlflowException

        try:
            self.call(self.client.set_tag, self.parent_id, key, value)
        except MlflowException:
            self.call(self.client.set_tag, self.parent_id, key, value)

    def _heartbeat(self, uri: str, credentials: dict[str, str] | None):
        """Set the parent's `sweep.heartbeat` now and every `HEARTBEAT_EVERY_S` from a thread
        of its own (with its own client), whatever the actor is busy with, until the sweep
        closes or this process ends with its driver. A beat the store misses is skipped."""
        import threading

        from mlflow.entities import RunTag

        stop = threading.Event()
        client, parent = open_client(uri, credentials), self.parent_id
        keys = [SWEEP_HEARTBEAT_TAG] + ([SWEEP_DRIVERS_PREFIX + self.driver]
                                        if self.driver is not None else [])

        def beat() -> None:
            while True:
                now = str(int(time.time()))
                try:
                    if not stop.is_set():  # (a beat after the close would mark it alive)
                        client.log_batch(parent, tags=[RunTag(k, now) for k in keys])
                except Exception:  # the server is away: the next beat tries again
                    pass
                if stop.wait(HEARTBEAT_EVERY_S):
                    return

        thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
        thread.start()
        return stop, thread

    def cancel_requested(self) -> bool:
        """Has `sweep cancel` asked this sweep to stop? (No, while the server is away.)"""
        try:
            run = self.client.get_run(self.parent_id)
        except Exception as err:
            if is_transient(err):
                return False
            raise
        return run.data.tags.get(SWEEP_CANCEL_TAG) == "requested"

    def note_launch(self, note: str) -> None:
        """Set the sweep's `sweep.launch` (`orchestrator.eta.launch_note`) as a launch starts."""
        self.launch = json.loads(note)
        self._set_parent_tag(SWEEP_LAUNCH_TAG, note)

    def _note_begun(self, at_s: float) -> None:
        """Add to this launch's `sweep.launch` when its first trial (or trunk) began training
        (`orchestrator.eta.eta_s` takes its pace from then, not counting the workers'
        start-up)."""
        if self.launch is not None and "begun" not in self.launch:
            self.launch["begun"] = max(at_s, float(self.launch["at"]))
            self._set_parent_tag(SWEEP_LAUNCH_TAG, json.dumps(self.launch))

    def log_sweep_metrics(self, metrics: dict[str, float], *, step: int = 0) -> None:
        """Metrics of the sweep itself on its parent run (an adaptive search's best values)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.call(self.client.log_batch, self.parent_id,
                  metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close_sweep(self, status: str) -> None:
        """Flush everything and end the parent run (FINISHED, KILLED or FAILED)."""
        self.flush()
        for trial_id in list(self.failures):
            self._tag_failure(trial_id)
        if self.heart is not None:  # (none: the sweep could not be opened)
            self.heart_stop.set()
            # (a beat in flight, the first one of a tracker closed at once included, lands
            # before the close, not after it: a heartbeat after the end read as a live
            # driver's)
            self.heart.join(timeout=HEARTBEAT_JOIN_S)
        if self.driver is not None:
            # Own mark first, others read after: of two drivers closing at once, at least
            # one sees no other and ends the sweep.
            with contextlib.suppress(Exception):
                self.call(self.client.delete_tag, self.parent_id,
                          SWEEP_DRIVERS_PREFIX + self.driver)
            others = self._others(prune=True)
            if others:  # another driver runs it still (an extend typed meanwhile): its own
                # close ends it; `sweep status` and `cancel` follow that driver meanwhile
                if self.call(self.client.get_run, self.parent_id).data.tags.get(
                        SWEEP_DRIVER_TAG) in (self.driver, None):
                    self._set_parent_tag(SWEEP_DRIVER_TAG, others[0])
                return
        self._set_parent_tag(SWEEP_STATUS_TAG, status)
        self.call(self.client.set_terminated, self.parent_id, status=run_status(status))

    # -- a trial, from its worker ----------------------------------------------------------
    # Each write to the store costs ~10-25 ms whatever its size (a transaction), and a sweep
    # may end a trial every few tens of milliseconds, so a trial from scratch gets three: its
    # run (at its begin), its end (params, metrics, status) and its terminal state, plus one
    # per `flush_every_s` while it runs.

    def begin(self, trial_id: str, label: str, params: dict,
              resumed_step: int | None = None, *, started_ms: int | None = None) -> None:
        """A worker begins an attempt of the trial, from a checkpoint at `resumed_step` or
        from scratch, at `started_ms` (its clock; this actor may take the call later, e.g.
        while it is still starting): open its run (or reopen it, one attempt more). Its params
        (with `derived.*`, known only there) are written with its next write."""
        self._note_begun(time.time() if started_ms is None else started_ms / 1000)
        if trial_id in self.attempts:  # begun before in this launch: Ray or the driver retried
            self.whole.discard(trial_id)
            self._next_attempt(trial_id)
        elif trial_id in self.children or self._made_by_another(
                trial_id, trained_before=resumed_step is not None):
            self._adopt(trial_id)  # a run of an earlier launch, or of another driver's
            self._next_attempt(trial_id)
        elif self._open(trial_id, label, started_ms=started_ms) and resumed_step is None:
            self.whole.add(trial_id)
        self.params_held.setdefault(trial_id, {}).update(params)

    def log_steps(self, trial_id: str, rows: list[tuple[int, dict]]) -> None:
        """Buffer the metrics of several steps, (step, {key: value}) in step order; steps
        already written for a metric are dropped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for step, metrics in rows:
            for key, value in metrics.items():
                if value is None or not math.isfinite(float(value)):
                    continue
                if step <= self.last_step.get((trial_id, key), -1):
                    continue
                self.last_step[(trial_id, key)] = step
                self.buffer.setdefault(trial_id, []).append(Metric(key, float(value), now, step))
                self.buffered_since.setdefault(trial_id, time.monotonic())
        if len(self.buffer.get(trial_id, ())) >= MAX_BATCH:
            self._flush_trials([trial_id])
        self._flush_the_oldest()

    def end(self, trial_id: str, status: str, summary: dict, rows=(), *,
            node: str | None = None, ended_ms: int | None = None) -> bool:
        """The attempt ended with `status`: its last steps (`rows`), the summary's `final/*`,
        the status and the Ray node that ran it (tag `trial.node`) in one write, then the run
        terminated. Whether the record is whole (see the module docstring)."""
        self.log_steps(trial_id, rows)
        self._buffer_finals(trial_id, summary)
        self._terminate(trial_id, status, tags={TRIAL_NODE_TAG: node} if node else {},
                        ended_ms=ended_ms)
        return trial_id in self.whole

    # -- a trial, from the driver ----------------------------------------------------------

    def record_unreported(self, trial_id: str, status: str, label: str, params: dict) -> None:
        """Record the end of a trial whose worker reported none (it failed before it began,
        was lost, or was interrupted): its run, found or created, gets `status`. The driver
        calls this only once the worker is gone; a begin that worker sent just before it was
        killed may still land after this (then the trial reads `running`, which the next
        launch runs again like an interrupted one)."""
        self._known(trial_id, label, params)
        self._terminate(trial_id, status)

    def note_failure(self, trial_id: str, reason: str) -> None:
        """Why a trial failed for good (its last attempt's error, first line): tag
        `trial.error`, which `sweep status` shows. The driver's call may reach this actor
        before the worker's begin or end (calls of two callers are not ordered, and both
        queue while this actor starts): the error waits for the trial's run then."""
        self.failures[trial_id] = (reason.strip().splitlines() or [""])[0][:500]
        self._tag_failure(trial_id)

    def _tag_failure(self, trial_id: str) -> None:
        if trial_id in self.failures and trial_id in self.children:
            self.call(self.client.set_tag, self.children[trial_id], TRIAL_ERROR_TAG,
                      self.failures.pop(trial_id))

    def resync_trial(self, trial_id: str, status: str, summary: dict, params: dict, label: str,
                     history: list[dict]) -> None:
        """Complete a trial's record from its run directory: the history steps the store
        lacks (rows of `metrics.jsonl`), its `final/*`, params and status."""
        self.look_up(trial_id)
        self._known(trial_id, label, params)
        self.buffer.setdefault(trial_id, []).extend(self._missing_steps(trial_id, history))
        # (a resumed attempt's end wrote them already: written again, each was twice)
        self._buffer_finals(trial_id, summary,
                            self.call(self.client.get_run, self.children[trial_id]).data.metrics)
        self._terminate(trial_id, status)

    def fill_history(self, trial_id: str, history: list[dict]) -> int:
        """Write the history steps the trial's record lacks (rows of its `metrics.jsonl`), its
        status left as it is; how many metrics it wrote. A trial stopped (Ctrl-C, `sweep
        cancel`) before its worker sent its last steps lacked them, and the attempt that
        resumes it starts at its checkpoint, past them: its finished record kept the gap."""
        self.look_up(trial_id)
        if trial_id not in self.children:
            return 0  # (no record: it never began, and its next attempt begins one)
        missing = self._missing_steps(trial_id, history)
        if missing:
            self._write(trial_id, metrics=missing)
        for metric in missing:  # (an end its worker sends late does not write them twice)
            key = (trial_id, metric.key)
            self.last_step[key] = max(self.last_step.get(key, -1), metric.step)
        return len(missing)

    def _missing_steps(self, trial_id: str, history: list[dict]) -> list:
        """The Metrics of `history`'s rows that the trial's run lacks, per key and step."""
        from mlflow.entities import Metric

        run_id, now, missing = self.children[trial_id], int(time.time() * 1000), []
        for key in HISTORY_KEYS:
            written = {m.step for m in self.call(self.client.get_metric_history, run_id, key)}
            missing += [Metric(key, float(row[key]), now, row["step"]) for row in history
                        if row.get(key) is not None and math.isfinite(row[key])
                        and row["step"] not in written]
        return missing

    def look_up(self, trial_id: str) -> None:
        """Learn the trial's run if another driver created it after this tracker started (the
        runs it knows were listed then): before taking over a trial that driver held."""
        if trial_id not in self.children:
            found = self.call(self.client.search_runs, [self.experiment_id],
                              trial_filter(trial_id), max_results=1)
            if found:
                self.children[trial_id] = found[0].info.run_id

    # -- a trunk, from its worker; the sweep's totals, from the driver ------------------------

    def trunk(self, trunk_id: str, label: str, params: dict, status: str,
              summary: dict | None = None, *, history: list[dict] = (),
              unless_recorded: bool = False) -> None:
        """The run of a token family's trunk (`orchestrator.sharing`): found or created by its
        `trunk.id` under the sweep, params once, the rows of its `metrics.jsonl` the run
        lacks (`history`), `final/*` (tokens trained so far) and `trunk.status`; ended unless
        `status` is running. `unless_recorded`: write nothing when the run already holds
        this status and these `final/*` values."""
        from mlflow.entities import Metric, Param, RunTag

        if status == RUNNING:  # (submitted: a trunk says no more as it starts)
            self._note_begun(time.time())
        self.trunk_finals[trunk_id] = {**self.trunk_finals.get(trunk_id, {}), **{
            k: float(v) for k, v in (summary or {}).items() if k.startswith(FINAL_PREFIX)}}
        run_id = self.trunks.get(trunk_id)
        write_params = False
        if run_id is None or unless_recorded:
            run = self.call(find_or_create_run, self.client, self.experiment_id, tags={
                PARENT_RUN_TAG: self.parent_id, KIND_TAG: KIND_TRUNK, TRUNK_ID_TAG: trunk_id,
                CODE_VERSION_TAG: self.code_version}, name=f"trunk {label}")
            run_id = self.trunks[trunk_id] = run.info.run_id
            write_params = not run.data.params
            if unless_recorded and run.data.tags.get(TRUNK_STATUS_TAG) == status and all(
                    run.data.metrics.get(k) == float(v) for k, v in (summary or {}).items()):
                return
        now = int(time.time() * 1000)
        step = int((summary or {}).get(FINAL_STEPS, 0))
        metrics = [Metric(k, float(v), now, step) for k, v in (summary or {}).items()
                   if k.startswith(FINAL_PREFIX)]

        for key in HISTORY_KEYS if history else ():
            written = {m.step for m in self.call(self.client.get_metric_history, run_id, key)}
            metrics += [Metric(key, float(row[key]), now, row["step"]) for row in history
                        if row.get(key) is not None and math.isfinite(row[key])
                        and row["step"] not in written]
        new = [Param(k, _param_value(v)) for k, v in params.items()] if write_params else []
        for chunk_metrics, chunk_params, chunk_tags in batches(
                metrics=metrics, params=new, tags=[RunTag(TRUNK_STATUS_TAG, status)]):
            self.call(self.client.log_batch, run_id, metrics=chunk_metrics,
                      params=chunk_params, tags=chunk_tags)
        if status == RUNNING:
            self.call(self.client.update_run, run_id, status="RUNNING")
        else:
            self.call(self.client.set_terminated, run_id, status=run_status(status))

    def learn_ends(self, ends: dict[str, tuple[str, dict]]) -> None:
        """Trials another driver ended and recorded, (status, metrics) by trial id: for the
        token totals (their runs may be younger than this tracker)."""
        self.ends.update(ends)

    def log_token_totals(self, *, ended: bool = True) -> dict[str, float]:
        """Write what is buffered, then log the sweep's tokens trained, tokens if every trial
        had trained alone, and their ratio on the parent run (`trainer.schema.totals_of`),
        from the runs as this tracker found them at its start and as it wrote them since
        (`learn_ends` adds what other drivers ended). `sweep status` reads the same totals
        from the store. The ratio only when every trial has `ended`: before, trunks count
        their tokens for branches not done yet."""
        from mlflow.entities import Metric

        self.flush()
        totals = totals_of(self.ends.values(), self.trunk_finals.values())
        now = int(time.time() * 1000)
        # (NaN, not left out: the last launch's ratio would stand beside these totals)
        self.call(self.client.log_batch, self.parent_id,
                  metrics=[Metric(k, float(v) if ended or k != TOKENS_RATIO else math.nan,
                                  now, 0) for k, v in totals.items()])
        return totals

    def flush(self) -> int:
        """Write the buffered metrics of every trial; log_batch calls so far."""
        self._flush_trials(list(self.buffer))
        return self.writes

    # -- runs ----------------------------------------------------------------------------

    def _known(self, trial_id: str, label: str, params: dict) -> None:
        """Make the trial's run known here (found or created), with `params` to write."""
        if trial_id not in self.attempts:
            if trial_id in self.children or self._made_by_another(trial_id):
                self._adopt(trial_id)
            else:
                self._open(trial_id, label)
        self.params_held.setdefault(trial_id, {}).update(params)

    def _open(self, trial_id: str, label: str, *, started_ms: int | None = None) -> bool:
        """Create the trial's run (attempt 1); whether it is new (not found after an
        outage). Every child run of the sweep was loaded at start, so one not among them is
        created straight away: a search first would cost a query per trial. Only when that
        create failed for want of the server may it have happened anyway: then look. (Runs
        another driver made since the list: `_made_by_another`.)"""
        tags = {PARENT_RUN_TAG: self.parent_id, KIND_TAG: KIND_TRIAL, TRIAL_ID_TAG: trial_id,
                TRIAL_ATTEMPT_TAG: "1", TRIAL_STATUS_TAG: RUNNING,
                CODE_VERSION_TAG: self.code_version}
        try:
            run = self.client.create_run(self.experiment_id, run_name=label[:250], tags=tags,
                                         start_time=started_ms)
        except Exception as err:
            if not is_transient(err):
                raise
            run = self.call(find_or_create_run, self.client, self.experiment_id, tags=tags,
                             name=label)
        self.children[trial_id] = run.info.run_id
        self.attempts[trial_id] = int(run.data.tags.get(TRIAL_ATTEMPT_TAG, 1))
        self.params_logged[trial_id] = set(run.data.params)
        if run.data.metrics:
            self._load_last_steps(trial_id)
            return False
        return True

    def _made_by_another(self, trial_id: str, *, trained_before: bool = False) -> bool:
        """Whether another driver running this sweep (an extend typed while a launch runs)
        made the trial's run since this tracker listed the runs: for an attempt it gave up,
        whose lease this driver's worker then took. Looked up once another driver has been
        seen (it may have closed since: its give-up is what frees the lease), or when the trial
        resumes a checkpoint no run known here made (another driver's, seen or not); not
        otherwise (a query per trial). The run, if any, is known here from then on."""
        if not trained_before and (self.driver is None or not (self._others() or self.shared)):
            return False
        found = self.call(self.client.search_runs, [self.experiment_id],
                          trial_filter(trial_id), max_results=1)
        if found:
            self.children[trial_id] = found[0].info.run_id
        return bool(found)

    def _adopt(self, trial_id: str) -> None:
        """Take up the run an earlier launch left: its attempt, params and last steps."""
        run = self.call(self.client.get_run, self.children[trial_id])
        self.attempts[trial_id] = int(run.data.tags.get(TRIAL_ATTEMPT_TAG, 0))
        # MLflow refuses a param logged again with another value (a key left out of the trial
        # id, such as the world size, may differ): the first one stays.
        self.params_logged[trial_id] = set(run.data.params)
        self._load_last_steps(trial_id)

    def _load_last_steps(self, trial_id: str) -> None:
        for key in HISTORY_KEYS:
            history = self.call(self.client.get_metric_history, self.children[trial_id], key)
            if history:
                self.last_step[(trial_id, key)] = max(m.step for m in history)

    def _next_attempt(self, trial_id: str) -> None:
        self.attempts[trial_id] += 1
        self._write(trial_id, tags={TRIAL_ATTEMPT_TAG: str(self.attempts[trial_id]),
                                    TRIAL_STATUS_TAG: RUNNING})
        self.call(self.client.update_run, self.children[trial_id], status="RUNNING")

    # -- writes --------------------------------------------------------------------------

    def _buffer_finals(self, trial_id: str, summary: dict, written: dict | None = None) -> None:
        """Buffer the summary's `final/*` values, but those `written` (the run's metrics as
        the store holds them) already has."""
        from mlflow.entities import Metric

        step = int(summary.get(FINAL_STEPS, 0) or 0)
        now = int(time.time() * 1000)
        finals = {k: float(v) for k, v in summary.items() if k.startswith(FINAL_PREFIX)
                  and isinstance(v, (int, float)) and math.isfinite(v)}
        self.buffer.setdefault(trial_id, []).extend(
            Metric(k, v, now, step) for k, v in finals.items()
            if (written or {}).get(k) != v)
        status, known = self.ends.get(trial_id, (None, {}))
        self.ends[trial_id] = (status, {**known, **finals})

    def _terminate(self, trial_id: str, status: str, *, tags: dict | None = None,
                   ended_ms: int | None = None) -> None:
        """One write of the trial's buffered metrics, params not yet written and `status`;
        then its run ends in MLflow too."""
        self._write(trial_id, metrics=self.buffer.get(trial_id, ()),
                    tags={**(tags or {}), TRIAL_STATUS_TAG: status})
        self._tag_failure(trial_id)
        self.ends[trial_id] = (status, self.ends.get(trial_id, (None, {}))[1])
        self.buffer.pop(trial_id, None)
        self.buffered_since.pop(trial_id, None)
        self.call(self.client.set_terminated, self.children[trial_id],
                   status=run_status(status), end_time=ended_ms)

    def _write(self, trial_id: str, *, metrics=(), tags: dict | None = None) -> None:
        """One log_batch (more only past MLflow's limits) with the trial's params not yet
        written, metrics and tags. Params count as written only once their call succeeded,
        so a write that gives up on an unreachable server loses nothing: the next write
        carries them again."""
        from mlflow.entities import Param, RunTag

        logged = self.params_logged.setdefault(trial_id, set())
        held = self.params_held.setdefault(trial_id, {})
        new = [Param(k, _param_value(v)) for k, v in held.items() if k not in logged]
        tag_items = [RunTag(k, v) for k, v in (tags or {}).items()]
        for chunk_metrics, chunk_params, chunk_tags in batches(metrics=metrics, params=new,
                                                               tags=tag_items):
            began = time.monotonic()
            self.call(self.client.log_batch, self.children[trial_id], metrics=chunk_metrics,
                       params=chunk_params, tags=chunk_tags)
            self.write_s = 0.9 * self.write_s + 0.1 * (time.monotonic() - began)
            logged.update(p.key for p in chunk_params)
            self.writes += 1
        held.clear()

    def _flush_the_oldest(self) -> None:
        # One call per trial (MLflow batches per run), ~10 ms each: with a hundred trials
        # running, writing everyone's metrics every few seconds kept the tracker busy and
        # trial ends queued behind it. So a trial's metrics wait until the oldest is
        # `flush_every_s` old (longer when many trials run), and a trial shorter than that
        # writes them once, with its end.
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + 1.0
        every = max(self.flush_every_s, len(self.buffered_since) * self.write_s / INTERIM_SHARE)
        old = time.monotonic() - every
        self._flush_trials([t for t, since in self.buffered_since.items() if since <= old])

    def _flush_trials(self, trial_ids: list[str]) -> None:
        # A trial's metrics leave the buffer only once written (see `_write`).
        for trial_id in trial_ids:
            if trial_id not in self.children:  # its begin failed: the re-sync has them
                continue
            self._write(trial_id, metrics=self.buffer.get(trial_id, ()))
            self.buffer.pop(trial_id, None)
            self.buffered_since.pop(trial_id, None)


def _param_value(value: object) -> str:
    text = redact(str(value))
    return text if len(text) <= 6000 else text[:5997] + "..."


def driver_alive(label: str, beat: str) -> bool:
    """Whether the driver `label` ("HOST PID") whose last heartbeat was `beat` (epoch seconds)
    runs: on this host, its process exists; elsewhere, it beat within `DRIVER_SILENT_S`."""
    from trainer.lease import pid_alive

    host, _, pid = label.rpartition(" ")
    if host == socket.gethostname() and pid.isdigit():
        return pid_alive(int(pid))
    return beat.isdigit() and time.time() - int(beat) < DRIVER_SILENT_S
