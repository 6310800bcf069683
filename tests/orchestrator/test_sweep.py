"""A real local Ray and a real MLflow store, tiny CPU trials, the orchestrator in-process."""

import dataclasses
import json
import os

import mlflow
import pytest
import yaml

from orchestrator.commands import launch
from orchestrator.extend import extended
from orchestrator.spec_file import spec_from_dict
from orchestrator.status import status
from orchestrator.sweep_record import stored_spec
from trainer.errors import ConfigError
from trainer.schema import sweep_runs

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def _runs(uri, name):
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return client, sweep_runs(client, exp.experiment_id, "sweep"), \
        sweep_runs(client, exp.experiment_id, "trial")


def test_grid_runs_end_to_end_then_relaunch_runs_nothing_and_extend_runs_only_new(
        spec_dict, uri):
    spec = spec_from_dict(spec_dict)
    first = launch(spec, tracking_uri=uri, progress=False)
    assert first.trials == 4 and first.already_done == 0
    assert sorted(first.ran.values()) == ["finished"] * 4

    client, parents, children = _runs(uri, "unit")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert "sweep.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["trial.status"] == "finished" and tags["trial.attempt"] == "1"
        assert tags["code.version"] and len(tags["trial.id"]) == 64
        for key in ("optim.lr", "train.batch_size", "train.tokens", "model.width",
                    "derived.n_params", "derived.n_params_total", "derived.flops_per_token",
                    "derived.batch_tokens", "derived.total_steps"):
            assert key in params, key
        for key in ("train/loss", "train/lr", "train/grad_norm", "train/tokens", "eval/loss",
                    "perf/tokens_per_s", "final/eval_loss", "final/train_loss",
                    "final/tokens", "final/steps", "final/flops", "final/wall_s"):
            assert key in metrics, key
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)) and steps[-1] == metrics["final/steps"]

    again = launch(spec, tracking_uri=uri, progress=False)
    assert again.ran == {} and again.already_done == 4

    stored = stored_spec(uri, "unit")
    assert stored.grid == spec.grid
    bigger = extended(stored, ["optim.lr=choice(3e-2)"])
    third = launch(bigger, tracking_uri=uri, progress=False)
    assert third.already_done == 4 and len(third.ran) == 2
    _, parents, children = _runs(uri, "unit")
    assert len(parents) == 1 and len(children) == 6
    assert len({c.data.tags["trial.id"] for c in children}) == 6
    report = status(uri, "unit")
    assert report["counts"] == {"finished": 6} and report["best"]["final/eval_loss"] > 0


def test_diverging_trials_are_recorded_and_the_sweep_goes_on(spec_dict, uri, monkeypatch,
                                                             capsys):
    from orchestrator import progress_log

    spec_dict["overrides"] += ["schedule=constant", "schedule.warmup_tokens=0",
                               "optim.grad_clip=0"]
    spec_dict["grid"] = {"optim.lr": "choice(3e-3, 30.0)"}
    monkeypatch.setattr(progress_log, "EVERY_S", 0.0)  # (a line each time a trial ends)
    outcome = launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    assert sorted(outcome.ran.values()) == ["diverged", "finished"]
    said = [line for line in capsys.readouterr().out.splitlines() if "trials ended" in line]
    assert said[-1].startswith("[0:00:")
    assert said[-1].endswith("] sweep unit: 2/2 trials ended (1 diverged, 1 finished), "
                             "0 running")
    _, _, children = _runs(uri, "unit")
    by_status = {c.data.tags["trial.status"]: c for c in children}
    assert set(by_status) == {"diverged", "finished"}
    assert "final/eval_loss" not in by_status["diverged"].data.metrics


def test_resources_no_node_has_launch_nothing(spec_dict, uri):
    spec_dict["resources"] = {"cpus": 1, "gpus": 1}
    with pytest.raises(ConfigError) as err:
        launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    assert "fit no node of the cluster (largest: 2 CPUs, 0 GPUs)" in str(err.value)
    assert mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("unit") is None


def test_config_and_resource_problems_are_reported_together(spec_dict, uri):
    spec_dict["resources"] = {"cpus": 1, "gpus": 4096}
    spec_dict["overrides"] += ["train.tokens=60000", "schedule.warmup_tokens=65536"]
    with pytest.raises(ConfigError) as err:
        launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    assert err.value.problems == [
        "schedule.warmup_tokens=65536 exceeds train.tokens=60000: lower "
        "schedule.warmup_tokens, or leave it unset (null) for the default, which fits any "
        "budget (4 trials)",
        "resources (cpus=1, gpus=4096 for 1 process(es)) fit no node of the cluster (largest: "
        "2 CPUs, 0 GPUs): lower resources in the spec or add nodes"]
    assert mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("unit") is None


def test_multi_process_trials_run_as_one_task_holding_every_rank(spec_dict, uri, tmp_path):
    spec_dict.update(name="fsdp", grid={"optim.lr": "choice(1e-2)"},
                     resources={"cpus": 1, "gpus": 0, "world_size": 2})
    outcome = launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    assert list(outcome.ran.values()) == ["finished"]
    _, _, children = _runs(uri, "fsdp")
    (child,) = children
    assert child.data.params["train.world_size"] == "2"
    run_dir = tmp_path / "runs" / child.data.tags["trial.id"]
    assert (run_dir / "rank-1.log").exists()  # rank 1 ran as rank 0's child process
    assert child.data.metrics["final/tokens"] == 32768


def test_a_trial_the_trainer_fails_keeps_its_history_to_the_failure(spec_dict, uri, tmp_path,
                                                                   capsys):
    """The trainer raises mid-run (its checkpoint directory is a file): the steps the worker
    had not yet sent reach MLflow with the failure, so the record ends where the trial did."""
    from orchestrator.driver import prepare

    spec_dict["overrides"] += ["train.log_every_steps=1", "train.checkpoint_every_tokens=4096"]
    spec_dict["grid"] = {"optim.lr": "choice(3e-3)"}
    spec_dict["retries"] = 0
    spec = spec_from_dict(spec_dict)
    (trial,) = prepare(spec)[1]  # (a sweep refuses a checkpoint_dir: the trial's own, blocked)
    blocker = tmp_path / "runs" / trial.trial_id / "checkpoints"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    outcome = launch(spec, tracking_uri=uri, progress=False)
    assert list(outcome.ran.values()) == ["failed"]
    assert "failed after 1 attempt: NotADirectoryError: " in capsys.readouterr().out
    client, _, children = _runs(uri, "unit")
    (child,) = children
    assert child.info.status == "FAILED" and child.data.tags["trial.status"] == "failed"
    assert child.data.tags["trial.error"].startswith("NotADirectoryError: ")  # for status
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
    run_dir = tmp_path / "runs" / child.data.tags["trial.id"]
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
    assert steps == logged and len(steps) >= 4


def test_a_config_the_trainer_refuses_is_not_retried(spec_dict, uri, tmp_path, capsys):
    """Data whose content is wrong deep inside (a broken line) is found when a trial reads
    it, and it fails the same way every time: each trial was retried `retries` times. (What
    the first row tells, a text field the rows lack, is refused before the launch.)"""
    from trainer.errors import ConfigError

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"body": f"document {i} " * 50}) + "\n"
                            for i in range(40)))
    spec_dict["overrides"] = [o for o in spec_dict["overrides"] if not o.startswith("data")]
    spec_dict["overrides"] += ["data=files", f"data.paths=[{rows}]",
                               f"data.cache_dir={tmp_path / 'cache'}"]
    spec_dict["grid"] = {"optim.lr": "choice(3e-3)"}
    spec_dict["retries"] = 2
    with pytest.raises(ConfigError, match=r"data.text_field=text: the rows of data.paths="):
        launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    rows.write_text("".join(json.dumps({"text": f"document {i} " * 50}) + "\n"
                            for i in range(40)) + "not json\n")
    outcome = launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    assert list(outcome.ran.values()) == ["failed"]
    out = capsys.readouterr().out
    assert "failed (a config error: not retried): ConfigError: data.paths=" in out
    assert f"line 41 of {rows} is not a JSON object (Expecting value at column 1)" in out
    _, _, (child,) = _runs(uri, "unit")
    assert child.data.tags.get("trial.attempt", "1") == "1"


def test_a_cancel_typed_while_ray_starts_stops_the_launch_before_any_trial(
        spec_dict, uri, monkeypatch):
    """`sweep resume` (or extend) then `sweep cancel` a few seconds on: the trials of a small
    sweep had all run before the driver's loop first read the request."""
    from orchestrator import commands
    from orchestrator.cancel import cancel
    from orchestrator.tracking import Tracker

    spec = spec_from_dict(spec_dict)
    import yaml

    first = Tracker(uri, "unit", code_version="test", spec_yaml=yaml.safe_dump(spec.to_dict()),
                    driver="elsewhere 1")
    first.close_sweep("interrupted")  # a sweep stopped before any trial: resumable
    starting = commands._cluster_problems

    def cancel_while_ray_starts(*args):
        problems = starting(*args)
        cancel(uri, "unit", wait_s=0)  # the user, from another shell
        return problems

    monkeypatch.setattr(commands, "_cluster_problems", cancel_while_ray_starts)
    wider = extended(spec, ["optim.lr=choice(3e-2)"])  # an extend, cancelled
    outcome = launch(wider, tracking_uri=uri, progress=False, based_on=spec)
    assert outcome.interrupted and outcome.ran == {}
    assert _runs(uri, "unit")[2] == []  # no trial began
    report = status(uri, "unit")
    assert report["status"] == "interrupted"
    assert report["counts"] == {"pending": 6}  # the extension kept: `resume` runs it
    assert stored_spec(uri, "unit").grid == wider.grid


def test_an_extend_refused_as_stale_leaves_the_sweep_as_it_was(spec_dict, uri):
    """An extend whose spec another extend changed meanwhile is refused; it had marked the
    sweep running under its own (then dead) process: `status` read the sweep `interrupted`
    and `cancel` stopped the other driver's trials."""
    import yaml

    from orchestrator import commands
    from orchestrator.tracking import Tracker

    spec = spec_from_dict(spec_dict)
    first = Tracker(uri, "unit", code_version="test", spec_yaml=yaml.safe_dump(spec.to_dict()),
                    driver="elsewhere 1")
    first.close_sweep("finished")
    client = mlflow.MlflowClient(tracking_uri=uri)
    before = client.get_run(first.parent_id).data.tags
    read_before = extended(spec, ["optim.lr=choice(3e-2)"])  # read, then another extend won
    with pytest.raises(ConfigError, match="changed by another `sweep extend` or launch"):
        launch(extended(read_before, ["optim.lr=choice(1e-1)"]), tracking_uri=uri,
               progress=False, based_on=read_before)
    assert client.get_run(first.parent_id).data.tags == before
    assert not commands._fresh_local_ray(None)  # (a Ray in this process: its own resources)
    assert not commands._fresh_local_ray("10.0.0.1:6379")


def test_a_trial_whose_worker_dies_every_time_runs_retries_plus_one_times(spec_dict, uri,
                                                                          tmp_path, capsys):
    # Ray re-runs a task whose worker died (max_retries = retries); the driver resubmitted it
    # after that, each time with Ray's retries again: (retries + 1)² runs, said as 3 attempts.
    from orchestrator.driver import prepare, run_sweep

    count = tmp_path / "attempts"

    def dies(cfg, tracker, label, threads):
        import os

        with open(count, "a") as f:
            f.write("x\n")
        os._exit(1)  # the worker process dies, as an out-of-memory kill would

    spec_dict.update(grid={"optim.lr": "choice(1e-2)"}, retries=2)
    spec, trials = prepare(spec_from_dict(spec_dict))
    outcome = run_sweep(spec, trials, tracking_uri=uri, progress=False, task_fn=dies)
    assert outcome.ran == {trials[0].trial_id: "failed"}
    assert len(count.read_text().split()) == 3
    assert "failed after 3 attempts (its worker was lost each time): " in capsys.readouterr().out
    _, _, children = _runs(uri, "unit")
    assert [c.data.tags["trial.status"] for c in children] == ["failed"]


def test_a_fused_group_whose_worker_dies_every_time_runs_its_members_alone(
        spec_dict, uri, tmp_path, capsys, monkeypatch):
    # A group lost on each of Ray's re-runs failed all its members for good, though only one
    # of them killed its worker (out of memory, say): now each goes again alone, and only the
    # one that kills its worker alone fails.
    from orchestrator import worker
    from orchestrator.driver import prepare, run_sweep

    log = tmp_path / "tasks"

    def group_dies(cfgs, *args, **kwargs):
        import os

        with open(log, "a") as f:
            f.write("group\n")
        os._exit(1)

    def one_member_dies(cfg, tracker, label, threads):
        import os

        from orchestrator.worker import run_trial

        with open(log, "a") as f:
            f.write("alone\n" if cfg.optim.lr == 3e-3 else "other\n")
        if cfg.optim.lr == 3e-3:
            os._exit(1)
        if log.read_text().count("other") == 1:  # the other raises once: the driver's retry
            raise RuntimeError("a flaky node")  # (its budget its own, not the group's)
        return run_trial(cfg, tracker, label, threads)

    monkeypatch.setattr(worker, "run_group_trials", group_dies)
    spec_dict.update(grid={"optim.lr": "choice(3e-3, 1e-2)"}, retries=1, fuse=2)
    spec, trials = prepare(spec_from_dict(spec_dict))
    outcome = run_sweep(spec, trials, tracking_uri=uri, progress=False,
                        task_fn=one_member_dies)
    by_lr = {t.cfg.optim.lr: t.trial_id for t in trials}
    assert outcome.ran == {by_lr[3e-3]: "failed", by_lr[1e-2]: "finished"}
    assert sorted(log.read_text().split()) == ["alone"] * 2 + ["group"] * 2 + ["other"] * 2
    out = capsys.readouterr().out
    assert "group of 2: " in out and "its members run alone from their checkpoints" in out
    assert "failed after 4 attempts (its worker was lost each time): " in out
    _, _, children = _runs(uri, "unit")
    assert sorted(c.data.tags["trial.status"] for c in children) == ["failed", "finished"]


def test_a_store_the_tracker_cannot_write_stops_the_launch_before_any_trial(spec_dict, uri,
                                                                           tmp_path):
    # The sweep's artifact location cannot be written (S3 credentials missing on the driver,
    # say): the tracker died opening the sweep while trials were submitted, and the launch
    # ended in a 76-line traceback with a parent run left "running" with no spec.
    blocked = tmp_path / "blocked"
    blocked.write_text("")  # a file where the artifact folder should be made
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment("unit", artifact_location=str(blocked / "artifacts"))
    with pytest.raises(ConfigError) as err:
        launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    (problem,) = err.value.problems
    assert problem.startswith("sweep unit could not be recorded (")
    assert problem.endswith(f"check that this machine can write the MLflow store {uri} and "
                            f"the sweep's artifact location {blocked / 'artifacts'} "
                            "(credentials such as AWS_* or MLFLOW_TRACKING_* in the "
                            "environment), then run the command again.")
    _, parents, children = _runs(uri, "unit")
    assert parents == [] and children == []  # (the parent it made, with no spec, is gone)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_trial_whose_worker_is_lost_after_its_end_is_reported_as_it_ended(spec_dict, uri,
                                                                            capsys):
    # The worker trained the trial to its end and died before answering (its node lost):
    # re-sync recorded it finished, and the launch still reported it failed.
    from orchestrator.driver import prepare, run_sweep
    from orchestrator.worker import run_trial

    def ends_then_dies(cfg, tracker, label, threads):
        import os

        run_trial(cfg, tracker, label, threads)
        os._exit(1)

    spec_dict.update(grid={"optim.lr": "choice(1e-2)"}, retries=0)
    spec, trials = prepare(spec_from_dict(spec_dict))
    outcome = run_sweep(spec, trials, tracking_uri=uri, progress=False, task_fn=ends_then_dies)
    assert outcome.ran == {trials[0].trial_id: "finished"}
    _, parents, children = _runs(uri, "unit")
    assert [c.data.tags["trial.status"] for c in children] == ["finished"]
    assert parents[0].data.tags["sweep.status"] == "finished"


def test_the_end_of_a_launch_says_when_it_waits_on_the_tracking_store(monkeypatch, capsys):
    """With the server down the tracking actor retries each write for up to 15 minutes: the
    driver, its trials done, sat silent meanwhile (and a Ctrl-C seemed to do nothing)."""
    import time

    import ray

    from orchestrator import driver

    @ray.remote
    class Store:
        def write(self, seconds):
            time.sleep(seconds)
            return True

    store = Store.remote()
    ray.get(store.write.remote(0))  # (the actor's process started: seconds on a loaded machine)
    monkeypatch.setattr(driver, "WAIT_SAID_S", 1.5)
    assert ray.get(driver.patient_wait([store.write.remote(0)], "x", "s")) == [True]
    assert capsys.readouterr().out == ""  # (answered at once: nothing said)
    done = driver.patient_wait([store.write.remote(4)], "the records of 2 trials", "my sweep")
    assert ray.get(done) == [True]
    assert capsys.readouterr().out == (
        "waiting for the tracking store to take the records of 2 trials (it does not answer; "
        "each write is retried for up to 15 min). The trials' results are in their folders: "
        "Ctrl-C leaves them for `sweep resume 'my sweep'` to record\n")


def test_a_ctrl_c_after_the_last_trial_ended_is_not_an_interruption(spec_dict, uri,
                                                                    monkeypatch):
    """It said "stopped before its end ... sweep resume goes on" and exited 130 for a sweep
    that `status` read finished."""
    from orchestrator import driver
    from orchestrator.driver import prepare, run_sweep

    take = driver._Runner.await_records
    pressed = []

    def ctrl_c_once_all_ran(self, *, timeout):
        if timeout == 0 and len(self.outcome.ran) == self.total and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt
        return take(self, timeout=timeout)

    monkeypatch.setattr(driver._Runner, "await_records", ctrl_c_once_all_ran)
    spec_dict.update(grid={"optim.lr": "choice(3e-3, 1e-2)"}, fuse=False)
    spec, trials = prepare(spec_from_dict(spec_dict))
    outcome = run_sweep(spec, trials, tracking_uri=uri, progress=False)
    assert pressed and not outcome.interrupted
    assert sorted(outcome.ran.values()) == ["finished"] * 2
    assert status(uri, "unit")["status"] == "finished"


def test_a_stop_as_the_last_trials_end_finishes_the_sweep_and_exits_0(spec_dict, uri, tmp_path,
                                                                       monkeypatch, capsys):
    """A SIGTERM (or `sweep cancel`) whose trials had all ended, their results not yet taken
    in: the launch said "stopped before its end ... `sweep resume` goes on" and exited 143,
    while `status` read the sweep finished, with nothing to resume."""
    import ray

    from orchestrator import cli, driver
    from trainer.errors import Terminated

    take = driver._Runner.collect
    stopped = []

    def sigterm_once_every_trial_ended(self, *, timeout):
        refs = list(self.running)
        if refs and not self.queue and not stopped and len(ray.wait(
                refs, num_returns=len(refs), timeout=60)[0]) == len(refs):
            stopped.append(len(self.outcome.ran))
            raise Terminated
        return take(self, timeout=timeout)

    monkeypatch.setattr(driver._Runner, "collect", sigterm_once_every_trial_ended)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump({**spec_dict, "grid": {"optim.lr": "choice(3e-3, 1e-2)"},
                                    "fuse": False}))
    assert cli.main(["launch", str(path), "--tracking-uri", uri]) == 0
    assert stopped and stopped[0] < 2  # (stopped with results not yet taken in)
    out = capsys.readouterr().out
    assert "sweep unit: 2 trials, 0 already done, ran 2 (2 finished)\n" in out
    assert ("sweep unit: the stop (SIGTERM) came as its last trials ended; every trial has "
            "ended, nothing to resume\n") in out
    assert "stopped before its end" not in out
    assert status(uri, "unit")["status"] == "finished"


def test_a_ctrl_c_as_a_finished_launch_prints_its_end_keeps_its_exit_code(
        spec_dict, uri, tmp_path, monkeypatch, capsys):
    """A Ctrl-C after the launch had its outcome, as it printed its last lines (the "monitor:"
    line read, the command not yet returned), said "interrupted; ... `sweep resume unit` goes
    on", exit 130, of a sweep whose every trial had finished (CI, on a loaded machine)."""
    from orchestrator import cli, cli_launch

    def stopped_as_it_says_where_to_look(*args, **kwargs):
        if str(args[0] if args else "").startswith("monitor: "):
            raise KeyboardInterrupt
        print(*args, **kwargs)

    monkeypatch.setattr(cli_launch, "print", stopped_as_it_says_where_to_look, raising=False)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump({**spec_dict, "grid": {"optim.lr": "choice(3e-3)"}}))
    assert cli.main(["launch", str(path), "--tracking-uri", uri]) == 0
    out, err = capsys.readouterr()
    assert "sweep unit: 1 trial, 0 already done, ran 1 (1 finished)\n" in out
    assert "interrupted" not in err and "resume" not in err
    assert status(uri, "unit")["status"] == "finished"
    assert cli_launch.ENDED == {"code": 0}


def test_a_corpus_spelt_or_kept_elsewhere_is_not_trained_again(spec_dict, uri, tmp_path,
                                                                 monkeypatch, capsys):
    """The same files under another spelling (`./data/a.txt`, its absolute path) or copied to
    another folder are the same trials; a sweep recorded when the paths entered the id as
    written (an earlier version) is taken over by its trials' ids now, training nothing."""
    from trainer.identity import written_id

    monkeypatch.chdir(tmp_path)
    text = "".join(f"line {i} of a corpus to train on\n" for i in range(3000))
    for folder in ("data", "moved"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.txt").write_text(text)

    def spec(path):
        overrides = [o for o in spec_dict["overrides"] if not o.startswith("data")]
        return spec_from_dict({**spec_dict, "grid": {"optim.lr": "choice(3e-3, 1e-2)"},
                               "overrides": overrides + ["data=files", f"data.paths=[{path}]"]})

    first = launch(spec("data/a.txt"), tracking_uri=uri, progress=False)
    assert sorted(first.ran.values()) == ["finished"] * 2
    # As an earlier version stored them: ids of the paths as written, folders named so.
    client, _, children = _runs(uri, "unit")
    from orchestrator.driver import prepare
    for trial in prepare(spec("data/a.txt"))[1]:
        written = dataclasses.replace(trial.cfg, data=dataclasses.replace(
            trial.cfg.data, paths=["data/a.txt"]))  # as an earlier version composed it
        old = written_id(written)
        run = next(c for c in children if c.data.tags["trial.id"] == trial.trial_id)
        client.set_tag(run.info.run_id, "trial.id", old)
        (tmp_path / "runs" / trial.trial_id).rename(tmp_path / "runs" / old)
    capsys.readouterr()

    again = launch(spec("data/a.txt"), tracking_uri=uri, progress=False)
    assert again.ran == {} and again.already_done == 2
    assert "2 trials recorded under the id an earlier version gave them" in \
        capsys.readouterr().out
    for path in ("./data/a.txt", tmp_path / "data" / "a.txt", "moved/a.txt"):
        outcome = launch(spec(path), tracking_uri=uri, progress=False)
        assert outcome.ran == {} and outcome.already_done == 2, path
    _, _, children = _runs(uri, "unit")
    assert len(children) == 2
    assert {c.data.tags["trial.id"] for c in children} == \
        {t.trial_id for t in prepare(spec("data/a.txt"))[1]}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if len(p.name) == 64) == \
        sorted(c.data.tags["trial.id"] for c in children)


def test_a_launch_says_when_its_trials_repeated_their_data(spec_dict, uri):
    """A sweep over a 65k-token file said only "ran 3 (3 finished)": the trainer's notes that
    each trial passed over its data many times, on an eval of one sequence, stayed in the
    workers' logs."""
    from orchestrator.cli_launch import data_notes

    spec_dict.update(grid={"optim.lr": "choice(1e-2)"})
    spec_dict["overrides"] = [*spec_dict["overrides"], "data.num_tokens=8_000"]
    outcome = launch(spec_from_dict(spec_dict), tracking_uri=uri, progress=False)
    assert list(outcome.ran.values()) == ["finished"]
    (passes,) = outcome.repeats.values()
    assert passes > 4
    notes = data_notes(outcome)
    assert notes[0] == (f"1 trial repeated its data (up to {passes:.3g} passes over the "
                        "training split; `derived.data_passes` in MLflow): a proxy for a run "
                        "that never repeats its data should not; give more data, or smaller "
                        "train.tokens")
    assert len(notes) == 2 and notes[1].startswith(
        "1 trial had an eval split smaller than train.eval_tokens (each eval read as few as ")


def test_a_tracking_actor_that_dies_stops_the_launch_in_one_sentence_and_resume_goes_on(
        spec_dict, uri):
    """The tracking actor killed mid-sweep (by the out-of-memory killer, say) ended the
    launch in an ActorDiedError traceback from its cancel poll."""
    from orchestrator.driver import TrackerLost, prepare, run_sweep

    def kills_the_tracker(cfg, tracker, label, threads):
        import time

        import ray

        ray.kill(tracker)  # its process ends, as an out-of-memory kill would end it
        time.sleep(120)  # (still training when the driver finds the tracker gone)

    spec_dict.update(grid={"optim.lr": "choice(1e-2)"}, fuse=False)
    spec, trials = prepare(spec_from_dict(spec_dict))
    with pytest.raises(TrackerLost) as lost:
        run_sweep(spec, trials, tracking_uri=uri, progress=False, task_fn=kills_the_tracker)
    assert str(lost.value) == (
        "the sweep's tracking actor (its one writer to MLflow) died, its process ended (out of "
        "memory, or killed): its trials are stopped, their folders keep what they trained; "
        "`sweep resume unit` goes on from there and records them")
    again = launch(spec, tracking_uri=uri, progress=False)  # what `sweep resume` runs
    assert again.ran == {trials[0].trial_id: "finished"}
    _, _, children = _runs(uri, "unit")
    assert [c.data.tags["trial.status"] for c in children] == ["finished"]


def test_a_launch_stopped_by_an_error_reads_so_in_status_not_killed(spec_dict, uri, tmp_path):
    """A launch that ended on an error (its tracking actor died) left the sweep marked running
    under a process that no longer runs, and `sweep status` said that driver "was killed"."""
    import subprocess
    import sys

    import yaml

    from orchestrator.status import format_status

    spec_dict.update(grid={"optim.lr": "choice(1e-2)"}, fuse=False)
    (tmp_path / "unit.yaml").write_text(yaml.safe_dump(spec_dict))
    script = f"""
import time, ray, orchestrator.worker
from orchestrator.commands import launch
from orchestrator.spec_file import load_spec

def kills_the_tracker(cfg, tracker, label, threads):
    ray.kill(tracker)  # its process ends, as an out-of-memory kill would end it
    time.sleep(120)

orchestrator.worker.run_trial = kills_the_tracker
launch(load_spec({str(tmp_path / "unit.yaml")!r}), tracking_uri={uri!r}, progress=False)
"""
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "RAY_ADDRESS": "local"}, timeout=300)
    assert ended.returncode == 1 and "TrackerLost" in ended.stderr
    report = status(uri, "unit")
    assert format_status(report).splitlines()[:2] == [
        f"sweep unit: interrupted (its driver, pid {report['driver_gone']}, stopped on an error "
        "before it could close the sweep: `sweep resume unit` goes on), 1 trial",
        "  its error: the sweep's tracking actor (its one writer to MLflow) died, its process "
        "ended (out of memory, or killed): its trials are stopped, their folders keep what "
        "they trained; `sweep resume unit` goes on from there and records them"]
    assert report["counts"] == {"pending": 1}  # (its task killed the tracker before a step)


def test_a_fused_group_whose_members_another_driver_holds_says_so_in_one_line(
        spec_dict, uri, capsys):
    """A group whose worker found both its members leased by another driver printed
    '1 trial is running under another driver ...' twice, once per member."""
    import threading

    from orchestrator.driver import SweepObserver, _run_dir, prepare, run_sweep
    from trainer.lease import Lease

    leases = []

    class TakesTheLeasesFirst(SweepObserver):
        """Another driver's workers take the group's leases before its own worker starts,
        and give them back, unfinished, three seconds later."""

        def submitted(self, trial):
            if len(leases) == 2:  # (the group's members, submitted again once given back)
                return
            if not leases:
                threading.Timer(3.0, lambda: [lease.release() for lease in leases]).start()
            leases.append(Lease.acquire(_run_dir(trial), sweep="unit", driver_pid=1))

    spec_dict.update(grid={"optim.lr": "choice(3e-3, 1e-2)"}, fuse=2)
    spec, trials = prepare(spec_from_dict(spec_dict))
    outcome = run_sweep(spec, trials, tracking_uri=uri, progress=False,
                        observer=TakesTheLeasesFirst())
    out = capsys.readouterr().out
    assert "2 trials are running under another driver (host " in out
    assert "1 trial is running under another driver" not in out
    assert sorted(outcome.ran.values()) == ["finished"] * 2  # taken over once given back


def test_a_tracker_lost_with_its_node_says_the_cluster_went_away():
    """`ray stop --force` mid-sweep was said as "died, its process ended (out of memory, or
    killed)", the cluster's loss unnamed."""
    from orchestrator.driver import TrackerLost, cluster_gone

    assert cluster_gone(RuntimeError("The actor died unexpectedly before finishing this task."
                                     "\n\tThe actor is dead because its node has died."))
    assert str(TrackerLost("unit", cluster_gone=True)) == (
        "the sweep's tracking actor (its one writer to MLflow) was lost with the Ray cluster "
        "(the cluster, or the node it ran on, went away): its trials are stopped, their "
        "folders keep what they trained; `sweep resume unit` goes on from there and records "
        "them")
