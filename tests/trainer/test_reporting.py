"""A standalone run's MLflow record across a kill and a resume (real SQLite store)."""

import mlflow

from trainer.reporting import JsonlReporter, MlflowReporter, MultiReporter


def _reporters(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    history = tmp_path / "metrics.jsonl"
    mlflow_reporter = MlflowReporter(uri, "exp", flush_every_s=1e9, history=history)
    return uri, MultiReporter(JsonlReporter(history, echo=False), mlflow_reporter), \
        mlflow_reporter


def _steps(uri):
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    return [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]


def test_a_resumed_record_gets_the_steps_a_kill_lost_and_none_twice(tmp_path):
    """Metrics are sent in batches: a kill lost the unsent steps before the checkpoint (40 and
    50 of a user's run), and a resume from an older checkpoint sent the steps after it again
    (two points for every step from 105 to 160)."""
    uri, first, sender = _reporters(tmp_path)
    first.start(run_id="a" * 64, params={"optim.lr": 0.01}, resumed_step=None)
    for step in (10, 20, 30):
        first.log_metrics({"train/loss": 3.0 - step / 100}, step=step)
    sender.flush()  # 10-30 reached the store
    for step in (40, 50):
        first.log_metrics({"train/loss": 3.0 - step / 100}, step=step)
    # killed here: 40 and 50 were in metrics.jsonl, not in the store
    uri, second, sender = _reporters(tmp_path)
    second.start(run_id="a" * 64, params={"optim.lr": 0.01}, resumed_step=40)
    assert _steps(uri) == [10, 20, 30, 40]  # 40 from the run's own file; 50 is trained again
    for step in (50, 60):
        second.log_metrics({"train/loss": 3.0 - step / 100}, step=step)
    sender.flush()
    # killed again, and resumed from the checkpoint at 40: 50 and 60 are trained again
    uri, third, sender = _reporters(tmp_path)
    third.start(run_id="a" * 64, params={"optim.lr": 0.01}, resumed_step=40)
    for step in (50, 60, 70):
        third.log_metrics({"train/loss": 3.0 - step / 100}, step=step)
    third.finish(status="finished", summary={"final/eval_loss": 2.2, "final/steps": 70})
    assert _steps(uri) == [10, 20, 30, 40, 50, 60, 70]


def test_a_line_a_kill_cut_short_does_not_stop_the_resume(tmp_path):
    """A SIGKILL in the middle of a metrics.jsonl write left a partial last line, and the
    resume failed on it (JSONDecodeError); a record new to the store (another tracking URI)
    gets the whole history up to the checkpoint."""
    history = tmp_path / "metrics.jsonl"
    history.write_text('{"step": 10, "train/loss": 2.9}\n{"step": 20, "train/loss": 2.8}\n'
                       '{"step": 30, "train/lo')
    uri, reporter, _ = _reporters(tmp_path)
    reporter.start(run_id="b" * 64, params={"optim.lr": 0.01}, resumed_step=20)
    assert history.read_text().splitlines() == ['{"step": 10, "train/loss": 2.9}',
                                                '{"step": 20, "train/loss": 2.8}']
    assert _steps(uri) == [10, 20]
