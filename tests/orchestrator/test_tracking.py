"""The Tracker on its own (in this process, a real SQLite MLflow store): what it writes when,
and which trials it vouches for, so the end-of-launch re-sync can skip them."""

from mlflow import MlflowClient

from orchestrator.tracking import Tracker

PARAMS = {"optim.lr": 0.01, "train.batch_size": 8}
SUMMARY = {"final/eval_loss": 2.5, "final/steps": 3, "final/tokens": 96}


def _tracker(uri: str) -> Tracker:
    return Tracker(uri, "tracking", code_version="test", spec_yaml="name: tracking\n",
                   flush_every_s=1e9)


def _trial(tracker: Tracker, trial_id: str, *, begins=((None,),), steps=3) -> None:
    tracker.start_trial(trial_id, PARAMS, trial_id[:8])
    for (resumed_step,) in begins:
        tracker.begin_attempt(trial_id, {**PARAMS, "derived.n_params": 100}, resumed_step)
    tracker.log_steps(trial_id, [(s, {"train/loss": 3.0 - s / 10}) for s in range(1, steps + 1)])
    tracker.finish_trial(trial_id, "finished", SUMMARY, PARAMS, trial_id[:8], sends=1)


def test_a_trial_is_written_in_three_calls_and_whole(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    before = tracker.writes
    _trial(tracker, "a" * 64)
    assert tracker.writes - before == 1  # one log_batch: params, history, finals, status
    client = MlflowClient(uri)
    run = client.get_run(tracker.children["a" * 64])
    assert run.info.status == "FINISHED" and run.data.tags["trial.status"] == "finished"
    assert run.data.params["derived.n_params"] == "100" and run.data.params["optim.lr"] == "0.01"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
    assert run.data.metrics["final/eval_loss"] == 2.5


def test_only_whole_first_attempts_are_confirmed(tmp_path):
    tracker = _tracker(f"sqlite:///{tmp_path}/mlflow.db")
    _trial(tracker, "a" * 64)  # from scratch, one attempt
    _trial(tracker, "b" * 64, begins=((None,), (None,)))  # Ray re-ran it after a lost worker
    _trial(tracker, "c" * 64, begins=((40,),))  # resumed from a checkpoint
    _trial(tracker, "d" * 64, begins=())  # had ended before: its worker reported nothing
    assert tracker.confirmed_trials() == {"a" * 64}
    assert tracker.attempts["b" * 64] == 2

    again = _tracker(f"sqlite:///{tmp_path}/mlflow.db")  # the next launch: runs exist
    _trial(again, "a" * 64)
    assert again.confirmed_trials() == set()


def test_steps_already_written_are_dropped(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    trial = "e" * 64
    tracker.start_trial(trial, PARAMS, "e")
    tracker.log_steps(trial, [(1, {"train/loss": 3.0}), (2, {"train/loss": 2.9})])
    tracker.flush()
    resumed = _tracker(uri)  # a new launch reopens the run and resumes from step 1
    resumed.start_trial(trial, PARAMS, "e")
    resumed.log_steps(trial, [(2, {"train/loss": 2.9}), (3, {"train/loss": 2.8})])
    resumed.finish_trial(trial, "finished", SUMMARY, PARAMS, "e")
    client = MlflowClient(uri)
    history = client.get_metric_history(resumed.children[trial], "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_run(resumed.children[trial]).data.tags["trial.attempt"] == "2"


def test_the_end_carries_the_unsent_steps_and_vouches_only_when_every_send_arrived(tmp_path):
    """A worker's last steps come with its end (same caller as the end, so in order); a send
    still on its way when the end is written leaves the trial to the re-sync."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = _tracker(uri)
    whole, late = "w" * 64, "l" * 64
    for trial in (whole, late):
        tracker.start_trial(trial, PARAMS, trial[:8])
        tracker.begin_attempt(trial, PARAMS, None)
        tracker.log_steps(trial, [(1, {"train/loss": 3.0})])
    tracker.finish_trial(whole, "finished", SUMMARY, PARAMS, "w", sends=1,
                         rows=[(2, {"train/loss": 2.9}), (3, {"train/loss": 2.8})])
    tracker.finish_trial(late, "finished", SUMMARY, PARAMS, "l", sends=2,
                         rows=[(3, {"train/loss": 2.8})])  # its send of step 2 is on its way
    assert tracker.confirmed_trials() == {whole}
    history = MlflowClient(uri).get_metric_history(tracker.children[whole], "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (2, 2.9), (3, 2.8)]


def test_an_end_that_overtakes_its_begin_is_still_vouched_for(tmp_path):
    """The worker's begin (sent from the worker while the actor was starting) may arrive after
    the end the driver sent: the end says the attempt began at step 0, and the late begin
    changes nothing."""
    tracker = _tracker(f"sqlite:///{tmp_path}/mlflow.db")
    trial = "o" * 64
    tracker.start_trial(trial, PARAMS, "o")
    tracker.log_steps(trial, [(1, {"train/loss": 3.0})], "attempt-b")
    tracker.finish_trial(trial, "finished", SUMMARY, PARAMS, "o", sends=1, sender="attempt-b",
                         from_scratch=True, rows=[(2, {"train/loss": 2.9})])
    tracker.begin_attempt(trial, {**PARAMS, "derived.n_params": 100}, None)
    assert tracker.confirmed_trials() == {trial} and tracker.attempts[trial] == 1


def test_sends_are_counted_per_attempt(tmp_path):
    """An earlier attempt's sends do not make up for the last attempt's send still on its way."""
    tracker = _tracker(f"sqlite:///{tmp_path}/mlflow.db")
    trial = "p" * 64
    tracker.start_trial(trial, PARAMS, "p")
    tracker.begin_attempt(trial, PARAMS, None)
    tracker.log_steps(trial, [(1, {"train/loss": 3.0})], "attempt-a")
    tracker.log_steps(trial, [(2, {"train/loss": 2.9})], "attempt-a")
    tracker.finish_trial(trial, "finished", SUMMARY, PARAMS, "p", sends=2, sender="attempt-b",
                         from_scratch=True)  # attempt b made 2 sends; neither has arrived
    assert tracker.confirmed_trials() == set()
