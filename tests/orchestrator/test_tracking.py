"""The Tracker on its own (in this process, a real SQLite MLflow store): what it writes when,
and which records it answers for as whole, so the end-of-launch re-sync can skip them."""

from mlflow import MlflowClient

from orchestrator.tracking import Tracker

PARAMS = {"optim.lr": 0.01, "train.batch_size": 8}
SUMMARY = {"final/eval_loss": 2.5, "final/steps": 3, "final/tokens": 96}


def _tracker(uri: str) -> Tracker:
    return Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                   flush_every_s=1e9)


def _attempt(tracker: Tracker, trial_id: str, *, resumed_step=None, steps=3) -> bool:
    """What one worker sends for an attempt: begin, steps, end; the end's answer."""
    tracker.begin(trial_id, trial_id[:8], {**PARAMS, "derived.n_params": 100}, resumed_step)
    tracker.log_steps(trial_id, [(s, {"train/loss": 3.0 - s / 10}) for s in range(1, steps)])
    return tracker.end(trial_id, "finished", SUMMARY, [(steps, {"train/loss": 3.0 - steps / 10})],
                       node="node-1")


def test_a_trial_is_written_in_three_calls_and_whole(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    before = tracker.writes
    assert _attempt(tracker, "a" * 64)
    assert tracker.writes - before == 1  # one log_batch: params, history, finals, status
    client = MlflowClient(uri)
    run = client.get_run(tracker.children["a" * 64])
    assert run.info.status == "FINISHED" and run.data.tags["trial.status"] == "finished"
    assert run.data.tags["trial.attempt"] == "1" and run.data.tags["trial.node"] == "node-1"
    assert run.data.params["derived.n_params"] == "100" and run.data.params["optim.lr"] == "0.01"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.9), (2, 2.8), (3, 2.7)]
    assert run.data.metrics["final/eval_loss"] == 2.5


def test_only_one_attempt_from_scratch_in_a_new_run_is_whole(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    assert not _attempt(tracker, "c" * 64, resumed_step=40)  # resumed from a checkpoint
    tracker.begin("b" * 64, "b", PARAMS)  # its worker was lost; Ray ran the task again
    assert not _attempt(tracker, "b" * 64)
    assert tracker.attempts["b" * 64] == 2

    again = _tracker(uri)  # the next launch: the run exists, with its history
    assert not _attempt(again, "c" * 64)
    assert MlflowClient(uri).get_run(again.children["c" * 64]).data.tags["trial.attempt"] == "2"


def test_steps_already_written_are_dropped(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    trial = "e" * 64
    tracker.begin(trial, "e", PARAMS)
    tracker.log_steps(trial, [(1, {"train/loss": 3.0}), (2, {"train/loss": 2.9})])
    tracker.flush()
    resumed = _tracker(uri)  # a new launch reopens the run and resumes from step 1
    resumed.begin(trial, "e", PARAMS, 1)
    resumed.log_steps(trial, [(2, {"train/loss": 2.9}), (3, {"train/loss": 2.8})])
    resumed.end(trial, "finished", SUMMARY)
    client = MlflowClient(uri)
    history = client.get_metric_history(resumed.children[trial], "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_run(resumed.children[trial]).data.tags["trial.attempt"] == "2"


def test_the_driver_records_trials_no_worker_reported(tmp_path):
    """A trial lost before its worker began gets a run with its params; one interrupted
    keeps its history and attempt."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    tracker.record_unreported("f" * 64, "failed", "f", PARAMS)
    tracker.begin("i" * 64, "i", PARAMS)
    tracker.log_steps("i" * 64, [(1, {"train/loss": 3.0})])
    tracker.record_unreported("i" * 64, "interrupted", "i", PARAMS)
    client = MlflowClient(uri)
    failed = client.get_run(tracker.children["f" * 64])
    assert failed.info.status == "FAILED" and failed.data.tags["trial.status"] == "failed"
    assert failed.data.params["optim.lr"] == "0.01"
    interrupted = client.get_run(tracker.children["i" * 64])
    assert interrupted.info.status == "KILLED"
    assert (interrupted.data.tags["trial.status"], interrupted.data.tags["trial.attempt"]) == \
        ("interrupted", "1")
    assert [m.step for m in client.get_metric_history(interrupted.info.run_id, "train/loss")] \
        == [1]


def test_resync_adds_only_the_steps_the_store_lacks(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    trial = "r" * 64
    tracker.begin(trial, "r", PARAMS)
    tracker.log_steps(trial, [(1, {"train/loss": 3.0}), (3, {"train/loss": 2.8})])
    tracker.flush()  # step 2 went down with a lost worker
    rows = [{"step": s, "train/loss": 3.1 - s / 10} for s in (1, 2, 3)]
    tracker.resync_trial(trial, "finished", SUMMARY, PARAMS, "r", rows)
    client = MlflowClient(uri)
    history = client.get_metric_history(tracker.children[trial], "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_run(tracker.children[trial]).data.tags["trial.status"] == "finished"


def test_a_stopped_trials_history_is_filled_and_its_status_kept(tmp_path):
    """A trial stopped before its worker sent its last steps: the steps its metrics.jsonl has
    and the store lacks are written, its status stays `interrupted`; a trial with no run
    (it never began) gets none."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    trial = "s" * 64
    tracker.begin(trial, "s", PARAMS)
    tracker.log_steps(trial, [(1, {"train/loss": 3.0})])
    tracker.record_unreported(trial, "interrupted", "s", PARAMS)  # steps 2, 3 never sent
    rows = [{"step": s, "train/loss": loss, "eval/loss": None}
            for s, loss in ((1, 3.0), (2, 2.9), (3, 2.8))]
    assert tracker.fill_history(trial, rows) == 2
    tracker.log_steps(trial, [(3, {"train/loss": 2.8})])  # its worker's end, come late
    tracker.flush()
    again = _tracker(uri)  # the next launch's tracker: nothing left to fill
    assert again.fill_history(trial, rows) == 0
    client = MlflowClient(uri)
    run = client.get_run(tracker.children[trial])
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(
        run.info.run_id, "train/loss"), key=lambda m: m.step)] == [(1, 3.0), (2, 2.9), (3, 2.8)]
    assert run.data.tags["trial.status"] == "interrupted" and run.info.status == "KILLED"
    assert again.fill_history("n" * 64, rows) == 0 and "n" * 64 not in again.children


def test_resync_of_a_resumed_trial_writes_its_final_values_once(tmp_path):
    """A resumed attempt is not whole, so the end of the launch re-syncs it: its `final/*`
    values, which its end had written, were written a second time (same step and value)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    trial = "f" * 64
    assert not _attempt(tracker, trial, resumed_step=2)
    rows = [{"step": s, "train/loss": 3.0 - s / 10} for s in (1, 2, 3)]
    tracker.resync_trial(trial, "finished", {**SUMMARY, "final/eval_loss": 2.5}, PARAMS, "f",
                         rows)
    client = MlflowClient(uri)
    run_id = tracker.children[trial]
    for key, value in SUMMARY.items():
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == \
            [(3, value)]
    # a value the store lacks, or holds another of, is written
    tracker.resync_trial(trial, "finished", {**SUMMARY, "final/eval_loss": 2.4}, PARAMS, "f",
                         rows)
    assert [m.value for m in client.get_metric_history(run_id, "final/eval_loss")] == [2.5, 2.4]


def test_a_sweep_launched_again_reads_running_until_it_closes(tmp_path):
    """Regression: `sweep status` said `finished` (or `interrupted`) while an extend or a resume
    of that sweep was running, because only the close wrote the sweep's status."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = _tracker(uri)
    first.close_sweep("interrupted")
    again = _tracker(uri)
    client = MlflowClient(uri)
    assert client.get_run(again.parent_id).data.tags["sweep.status"] == "running"
    again.close_sweep("finished")
    assert client.get_run(again.parent_id).data.tags["sweep.status"] == "finished"


def test_trackers_of_one_sweep_started_at_once_agree_on_one_experiment_and_parent(tmp_path):
    """Regression: two launches of one new sweep raced on creating its experiment (the second
    create failed) and could each create a parent run."""
    import subprocess
    import sys

    from orchestrator.store import create_sqlite_store_once
    from trainer.schema import KIND_SWEEP, sweep_runs

    uri = f"sqlite:///{tmp_path}/m.db"
    create_sqlite_store_once(uri)
    code = ("import sys; from orchestrator.tracking import Tracker; "
            "t = Tracker(sys.argv[1], 'race', code_version='t', spec_yaml='name: race'); "
            "print(t.experiment_id, t.parent_id)")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    answers = set()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        answers.add(out.strip())
    assert len(answers) == 1
    experiment_id, parent_id = answers.pop().split()
    client = MlflowClient(tracking_uri=uri)
    assert [r.info.run_id for r in sweep_runs(client, experiment_id, KIND_SWEEP)] == [parent_id]


def test_a_launch_that_finds_the_experiment_another_launch_just_made_takes_its_parent(tmp_path):
    """Regression (CI): of four launches started at once, one created the experiment and its
    parent while another, which found no parent yet, created a second (stamped earlier,
    committed later) and kept it. Only the launch that made the experiment creates the parent;
    the others wait for it."""
    import threading
    import time

    from orchestrator.store import create_sqlite_store_once
    from trainer.schema import KIND_SWEEP, KIND_TAG, SWEEP_EXPERIMENT_TAG, sweep_runs

    uri = f"sqlite:///{tmp_path}/m.db"
    create_sqlite_store_once(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("tracking", tags={SWEEP_EXPERIMENT_TAG: "yes"})
    made = []

    def other_launch():  # the launch that made the experiment, slow to create its parent
        time.sleep(2.0)
        made.append(client.create_run(exp, run_name="tracking", tags={KIND_TAG: KIND_SWEEP}))

    thread = threading.Thread(target=other_launch)
    thread.start()
    tracker = _tracker(uri)
    thread.join()
    assert tracker.parent_id == made[0].info.run_id
    assert [r.info.run_id for r in sweep_runs(client, exp, KIND_SWEEP)] == [tracker.parent_id]


def test_a_launch_that_failed_after_making_the_experiment_keeps_no_other_waiting(tmp_path):
    """The launch that made the experiment could not record the sweep (its artifact location
    unwritable: S3 credentials missing, say): a launch typed again at once, the fix made, waited
    30 s for a parent the failed one would never create."""
    import time

    from trainer.schema import SWEEP_EXPERIMENT_TAG

    uri = f"sqlite:///{tmp_path}/m.db"
    (tmp_path / "m-artifacts").write_text("")  # a file where the artifact folder goes
    first = _tracker(uri)
    assert first.conflict and first.conflict.startswith("sweep tracking could not be recorded")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tracking")
    assert exp.tags[SWEEP_EXPERIMENT_TAG] == "no"
    (tmp_path / "m-artifacts").unlink()
    started = time.monotonic()
    again = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                    flush_every_s=1e9)
    assert time.monotonic() - started < 15
    assert again.conflict is None
    assert client.get_run(again.parent_id).info.experiment_id == exp.experiment_id


def test_a_launch_on_a_users_experiment_creates_the_parent_without_waiting(tmp_path):
    """An experiment a user made for the sweep (its own artifact location, say) has no parent
    and no launch's mark: the launch creates the parent at once (no `PARENT_WAIT_S`)."""
    import time

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("tracking")
    started = time.monotonic()
    tracker = _tracker(uri)
    assert time.monotonic() - started < 20
    assert client.get_run(tracker.parent_id).info.experiment_id == exp


def test_a_parent_stamped_earlier_that_commits_later_is_the_one_every_launch_takes(
        tmp_path, monkeypatch):
    """Two launches on an experiment without a parent both create one; the other's, stamped
    earlier, is committed only after this one's create: this one reads the parents again after
    `PARENT_SETTLE_S`, takes the older and deletes its own."""
    import threading

    import orchestrator.tracking as tracking
    from trainer.schema import KIND_SWEEP, KIND_TAG, find_or_create_run, sweep_runs

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("tracking")
    other = []

    def create_then_the_other_commits(*args, **kwargs):
        mine = find_or_create_run(*args, **kwargs)
        late = threading.Timer(0.3, lambda: other.append(client.create_run(
            exp, run_name="tracking", tags={KIND_TAG: KIND_SWEEP},
            start_time=mine.info.start_time - 50)))
        late.start()
        return mine

    monkeypatch.setattr(tracking, "find_or_create_run", create_then_the_other_commits)
    tracker = _tracker(uri)
    assert other, "the other launch's parent was committed after this one had chosen"
    assert tracker.parent_id == other[0].info.run_id
    assert [r.info.run_id for r in sweep_runs(client, exp, KIND_SWEEP)] == [tracker.parent_id]


def test_a_second_parent_left_by_a_race_is_not_taken(tmp_path):
    from trainer.schema import KIND_SWEEP, KIND_TAG

    uri = f"sqlite:///{tmp_path}/m.db"
    first = _tracker(uri).parent_id
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tracking")
    client.create_run(exp.experiment_id, run_name="tracking", tags={KIND_TAG: KIND_SWEEP})
    assert _tracker(uri).parent_id == first  # the oldest, whatever the search order


def test_a_run_spans_its_workers_clock_not_when_the_tracker_took_the_calls(tmp_path):
    # A tracker still starting takes a short trial's begin late: the run's start is the
    # worker's, so the MLflow UI shows how long the trial trained.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    tracker.begin("t" * 64, "t", PARAMS, started_ms=1_700_000_000_000)
    tracker.end("t" * 64, "finished", SUMMARY, ended_ms=1_700_000_042_500)
    run = MlflowClient(uri).get_run(tracker.children["t" * 64])
    assert (run.info.start_time, run.info.end_time) == (1_700_000_000_000, 1_700_000_042_500)


def test_an_extend_whose_spec_another_extend_changed_meanwhile_stops(tmp_path):
    """Two extends close together: each read the stored spec, and the second one's write
    dropped the first one's change (a seed, a learning rate) from the sweep."""
    import yaml

    from orchestrator.extend import extended
    from orchestrator.spec_file import spec_from_dict
    from orchestrator.sweep_record import stored_spec

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = spec_from_dict({"name": "ext", "overrides": ["model=tiny"],
                            "grid": {"optim.lr": "choice(0.001, 0.01)"}})

    def open_with(spec, based_on=None):
        tracker = Tracker(uri, "ext", code_version="test",
                          spec_yaml=yaml.safe_dump(spec.to_dict(), sort_keys=False),
                          based_on=None if based_on is None else based_on.to_dict())
        tracker.close_sweep("finished")
        return tracker

    open_with(first)
    read_by_both = stored_spec(uri, "ext")
    seeds = extended(read_by_both, ["seeds=[0,1]"])
    lrs = extended(read_by_both, ["optim.lr=choice(0.1)"])
    assert open_with(seeds, based_on=read_by_both).spec_conflict() is None
    stale = open_with(lrs, based_on=read_by_both)
    assert stale.spec_conflict() == (
        "sweep ext's spec was changed by another `sweep extend` or launch after this one read "
        "it: run this `sweep extend` again (it then adds to the new spec)")
    assert stored_spec(uri, "ext").seeds == (0, 1)  # the first extend's change is kept
    again = extended(stored_spec(uri, "ext"), ["optim.lr=choice(0.1)"])
    assert open_with(again, based_on=stored_spec(uri, "ext")).spec_conflict() is None
    kept = stored_spec(uri, "ext")
    assert kept.seeds == (0, 1) and kept.grid["optim.lr"] == "choice(0.001, 0.01, 0.1)"


def test_a_cancel_typed_while_a_resume_starts_ray_stops_that_resume(tmp_path):
    """`sweep resume` then `sweep cancel` a few seconds later: the cancel answered `not running
    (interrupted)` (the parent said so until the tracker opened it, 10-20 s on), and the
    tracker's open cleared any request: the sweep ran to its end."""
    from orchestrator.cancel import cancel
    from orchestrator.sweep_record import mark_starting, unmark_starting
    from trainer.lease import driver_label

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                    driver="elsewhere 1")
    first.close_sweep("interrupted")
    client = MlflowClient(uri)
    parent = client.get_run(first.parent_id)
    before = {k: v for k, v in parent.data.tags.items() if k.startswith("sweep.")}

    marked = mark_starting(uri, "tracking")  # the resume, before it starts Ray
    unmark_starting(uri, "tracking", marked)  # (a resume that stopped there: as it was)
    assert {k: v for k, v in client.get_run(first.parent_id).data.tags.items()
            if k.startswith("sweep.")} == before

    marked = mark_starting(uri, "tracking")
    cancel(uri, "tracking", wait_s=0)  # typed while Ray starts: taken, not `not running`
    unmark_starting(uri, "tracking", marked)  # (that launch stopped: the cancel stays)
    assert client.get_run(first.parent_id).data.tags["sweep.cancel"] == "requested"
    mark_starting(uri, "tracking")
    cancel(uri, "tracking", wait_s=0)
    resumed = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                      driver=driver_label())
    assert resumed.cancel_requested()  # the resume stops at its first look
    other = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                    driver="elsewhere 2")
    assert not other.cancel_requested()  # a later launch starts afresh


def test_of_two_drivers_of_a_sweep_the_last_to_close_ends_it(tmp_path):
    """An extend typed while the launch runs is a second driver: the launch, done with its
    trials, marked the sweep finished while the extend still trained, and `sweep cancel` then
    refused to stop it ("not running")."""
    from orchestrator.cancel import cancel

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                driver="host-a 1")
    b = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                driver="host-b 2")
    b.begin("t" * 64, "lr=1", PARAMS)
    a.close_sweep("finished")
    client = MlflowClient(uri)
    tags = client.get_run(a.parent_id).data.tags
    assert tags["sweep.status"] == "running" and tags["sweep.driver"] == "host-b 2"
    assert client.get_run(a.parent_id).info.status == "RUNNING"
    cancel(uri, "tracking", wait_s=0)  # (raised NotRunning: "finished, nothing to cancel")
    assert b.cancel_requested()
    b.close_sweep("interrupted")
    tags = client.get_run(a.parent_id).data.tags
    assert tags["sweep.status"] == "interrupted"
    assert not [k for k in tags if k.startswith("sweep.drivers.")]


def test_a_trial_another_driver_began_keeps_its_one_run(tmp_path):
    """Driver B listed the sweep's runs at its start; driver A then began trial X (its run
    made) and gave it up (Ctrl-C); B's worker took X's lease and B made a second run for X,
    whose `interrupted` then hid X's end from `sweep status`."""
    from trainer.schema import KIND_TRIAL, sweep_runs

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                driver="host-a 1")
    b = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                driver="host-b 2")
    x = "x" * 64
    a.begin(x, "lr=1", PARAMS)
    a.record_unreported(x, "interrupted", "lr=1", PARAMS)
    a.close_sweep("interrupted")  # (gone before B's worker takes the lease it freed)
    _attempt(b, x)
    runs = sweep_runs(MlflowClient(uri), a.experiment_id, KIND_TRIAL)
    assert [r.info.run_id for r in runs] == [a.children[x]]
    assert runs[0].data.tags["trial.status"] == "finished"
    assert runs[0].data.tags["trial.attempt"] == "2"


def test_a_killed_drivers_mark_does_not_keep_the_sweep_running(tmp_path):
    import socket
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    client = MlflowClient(uri)
    client.set_tag(tracker.parent_id, f"sweep.drivers.{socket.gethostname()} {dead}", "1")
    tracker.driver = f"{socket.gethostname()} {1}"  # (any label of its own)
    tracker.close_sweep("finished")
    tags = client.get_run(tracker.parent_id).data.tags
    assert tags["sweep.status"] == "finished"
    assert not [k for k in tags if k.startswith("sweep.drivers.")]


def test_a_trial_resumed_from_another_drivers_checkpoint_keeps_its_one_run(tmp_path):
    # Driver B came and went between driver A's looks at the sweep's drivers (A never saw it):
    # A's worker resumed B's checkpoint of X and A made X a second run.
    from trainer.schema import KIND_TRIAL, sweep_runs

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                driver="host-a 1")
    a.others_read = float("inf")  # (its next look at the drivers is far off)
    b = Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                driver="host-b 2")
    x = "x" * 64
    b.begin(x, "lr=1", PARAMS)
    b.record_unreported(x, "interrupted", "lr=1", PARAMS)
    b.close_sweep("interrupted")
    assert not a.shared
    _attempt(a, x, resumed_step=2)
    runs = sweep_runs(MlflowClient(uri), a.experiment_id, KIND_TRIAL)
    assert [r.info.run_id for r in runs] == [b.children[x]]
    assert runs[0].data.tags["trial.status"] == "finished"
