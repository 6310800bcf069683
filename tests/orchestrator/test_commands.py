"""`sweep cancel`, `sweep launch --dry-run` and `sweep status` on a real SQLite store; no Ray."""

import json
import math
import os
import socket
import sys
import tempfile
import time

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import cli, cli_fit, cli_launch, commands
from orchestrator.cancel import cancel
from orchestrator.driver import prepare
from orchestrator.extend import extended
from orchestrator.spec_file import spec_from_dict
from orchestrator.status import format_status, status
from orchestrator.store import create_sqlite_store_once
from orchestrator.sweep_record import stored_spec
from orchestrator.tracking import Tracker
from trainer import schema
from trainer.errors import ConfigError

TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "data=synthetic", "train.seq_len=64", "train.tokens=32768"]


def _spec(tmp_path) -> dict:
    return {"name": "unit", "overrides": TRIAL,
            "grid": {"optim.lr": "choice(3e-3, 1e-2)", "train.batch_size": "choice(8, 16)"},
            "storage_root": str(tmp_path / "runs")}


def _open_sweep(uri: str, spec: dict) -> Tracker:
    """The parent run as a launching driver leaves it: RUNNING, spec stored."""
    return Tracker(uri, spec["name"], code_version="test",
                   spec_yaml=yaml.safe_dump(spec_from_dict(spec).to_dict()))


def _child(uri: str, tracker: Tracker, trial_id: str, status: str, **metrics: float) -> str:
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(tracker.experiment_id, run_name=f"trial-{trial_id[:6]}", tags={
        schema.PARENT_RUN_TAG: tracker.parent_id, schema.KIND_TAG: schema.KIND_TRIAL,
        schema.TRIAL_ID_TAG: trial_id, schema.TRIAL_STATUS_TAG: status})
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key.replace("__", "/"), value)
    if status != schema.RUNNING:
        client.set_terminated(run.info.run_id, status=schema.run_status(status))
    return run.info.run_id


def _dead_driver() -> str:
    """The label of a driver on this host that has ended."""
    import socket
    import subprocess
    import sys

    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return f"{socket.gethostname()} {pid}"


def test_cancel_without_a_live_driver_marks_running_trials_interrupted(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "unit", code_version="test", driver=_dead_driver(),
                      spec_yaml=yaml.safe_dump(spec_from_dict(_spec(tmp_path)).to_dict()))
    running = _child(uri, tracker, "a" * 64, schema.RUNNING)
    done = _child(uri, tracker, "b" * 64, schema.FINISHED)
    # Nobody ends the parent run, so after the wait the orphans are marked.
    assert cancel(uri, "unit", wait_s=0) == 1
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(running).data.tags[schema.TRIAL_STATUS_TAG] == schema.INTERRUPTED
    assert client.get_run(running).info.status == "KILLED"
    assert client.get_run(done).data.tags[schema.TRIAL_STATUS_TAG] == schema.FINISHED
    parent = client.get_run(tracker.parent_id)
    assert parent.data.tags[schema.SWEEP_CANCEL_TAG] == "requested"
    assert parent.data.tags[schema.SWEEP_STATUS_TAG] == schema.INTERRUPTED
    assert parent.info.status == "KILLED"


def test_cancel_of_a_sweep_whose_live_driver_is_slow_to_stop_marks_nothing(tmp_path, capsys):
    # After its wait, cancel marked every `running` trial interrupted while the driver, alive
    # and closing, still wrote their ends: a trial it had just recorded finished read
    # interrupted.
    from trainer.lease import driver_label

    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "unit", code_version="test", driver=driver_label(),
                      spec_yaml=yaml.safe_dump(spec_from_dict(_spec(tmp_path)).to_dict()))
    running = _child(uri, tracker, "a" * 64, schema.RUNNING)
    assert cli.main(["cancel", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out == ("cancel requested for sweep unit: its driver is stopping "
                                       "its trials (`sweep status unit` says when it has)\n")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(running).data.tags[schema.TRIAL_STATUS_TAG] == schema.RUNNING
    assert client.get_run(tracker.parent_id).data.tags[schema.SWEEP_STATUS_TAG] == "running"
    assert tracker.cancel_requested()


def test_cancel_of_a_sweep_whose_driver_stops_marks_nothing(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    running = _child(uri, tracker, "a" * 64, schema.RUNNING)
    MlflowClient(tracking_uri=uri).set_terminated(tracker.parent_id)  # the driver has ended
    assert cli.main(["cancel", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out == "cancel requested for sweep unit\n"
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(running).data.tags[schema.TRIAL_STATUS_TAG] == schema.RUNNING
    assert client.get_run(tracker.parent_id).data.tags[schema.SWEEP_CANCEL_TAG] == "requested"


def test_dry_run_lists_each_trial_with_what_a_launch_would_do(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4] == "4 trials: 0 done, 4 would run"
    # One budget per config: nothing to share, said once for the sweep, not per trial
    assert lines[5] == ("no shared trunk: all 4 trials train their tokens alone: no two "
                        "differ only in train.tokens")
    assert lines[6].endswith("(ratio 1.00)")
    rows = [line.split(maxsplit=2) for line in lines[:4]]
    assert [r[0] for r in rows] == ["run"] * 4
    assert all(len(r[1]) == 12 for r in rows)  # the trial id's first 12 hex digits
    assert {r[2] for r in rows} == {f"optim.lr={lr} train.batch_size={b} seed=0"
                                   for lr in ("0.003", "0.01") for b in (8, 16)}
    # Record one trial finished and one failed: the first is skipped, the second re-run.
    finished, failed = (t.trial_id for t in prepare(spec_from_dict(spec))[1][:2])
    tracker = _open_sweep(uri, spec)
    _child(uri, tracker, finished, schema.FINISHED)
    _child(uri, tracker, failed, schema.FAILED)
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"done (finished)    {finished[:12]}  " in out
    assert f"run (failed)       {failed[:12]}  " in out
    assert out.count("\nrun                ") + out.startswith("run ") == 2
    assert "\n4 trials: 1 done, 3 would run\n" in out


def test_dry_run_says_which_trials_share_a_trunk_and_which_do_not(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = {**_spec(tmp_path), "grid": {"optim.lr": "choice(3e-3, 1e-2)",
                                        "train.tokens": "choice(65536, 131072)",
                                        "schedule": "choice(wsd, cosine)"}}
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    trunks = [line for line in out.splitlines() if line.startswith("trunk ")]
    assert len(trunks) == 2 and all("shared by 2 budgets (65.54k, 131.1k)" in t
                                    and "schedule=wsd" in t for t in trunks)
    alone = [line for line in out.splitlines() if line.startswith("alone ")]
    assert len(alone) == 4 and all("schedule=cosine: its LR depends on train.tokens" in a
                                   for a in alone)
    assert cli.main(["launch", str(path), "--dry-run", "--no-share", "--tracking-uri",
                     uri]) == 0
    out = capsys.readouterr().out
    assert "trunk " not in out and out.count("sharing is off") == 1
    assert ("no shared trunk: all 8 trials train their tokens alone: sharing is off "
            "(share_prefix: false or --no-share)" in out.splitlines())
    assert sum(line.endswith("(ratio 1.00)") for line in out.splitlines()) == 1
    # fusion on (auto: CPU trials): each budget's 4 LR × schedule trials make one group
    assert out.splitlines()[-1] == "2 fused groups, 0 trials alone"
    # a config that cannot fuse at all: said why (it said "each alone", nothing more)
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri,
                     "train.batch_schedule=norm_test", "train.micro_batch_size=4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3:-1] == ["0 fused groups, 4 trials alone", "2 trunks to train: each alone"]
    assert out[-1] == ("nothing fuses: train.batch_schedule=norm_test grows each member's "
                       "batch on its own: use train.batch_schedule=constant or do not fuse")
    # 2 trials that may fuse, 2 run at once: each alone, said (it read as a fault)
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri,
                     "--max-concurrent", "2", "train.tokens=65536", "schedule=wsd"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["0 fused groups, 2 trials alone",
                        "nothing fuses: this machine runs 2 trials at once, as many as there "
                        "are to fuse (2), so each runs alone beside the others (`fuse: K` "
                        "fuses them anyway)"]
    # norm-test trials beside constant-batch ones: said of those, not as why nothing fuses
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri,
                     "--max-concurrent", "2",
                     "train.micro_batch_size=4", "train.tokens=65536", "schedule=wsd",
                     "train.batch_schedule=choice(constant, norm_test)"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == ["0 fused groups, 4 trials alone",
                        "2 of the trials cannot fuse: train.batch_schedule=norm_test grows each "
                        "member's batch on its own: use train.batch_schedule=constant or do not "
                        "fuse",
                        "nothing fuses: this machine runs 2 trials at once, as many as there "
                        "are to fuse (2), so each runs alone beside the others (`fuse: K` "
                        "fuses them anyway)"]


def test_status_format():
    report = {"sweep": "demo", "status": "running", "trials": 6,
              "counts": {"finished": 3, "running": 2, "pending": 1},
              "running": [{"trial": "t-lr0.01", "progress": 0.456, "train/loss": 2.34567},
                          {"trial": "t-lr0.03", "progress": None, "train/loss": None}],
              "best": {"trial": "t-lr0.003", "trial.id": "c" * 64,
                       "final/eval_loss": 2.123456},
              "eta_s": 330.0}
    assert format_status(report) == "\n".join([
        "sweep demo: running, 6 trials",
        "  3 finished, 1 pending, 2 running",
        "  running t-lr0.01: 46%, loss 2.346",
        "  running t-lr0.03: no metrics written yet",
        "  best: t-lr0.003 (eval loss 2.1235)",
        "  ETA: 5.5 min",
    ])
    # a running sweep's interrupted trials go on (a resume's status read as if it stopped them)
    report["counts"] = {"finished": 3, "interrupted": 2, "running": 1}
    assert format_status(report).splitlines()[1] == (
        "  3 finished, 2 interrupted (to go on), 1 running")
    report["status"] = "interrupted"
    assert format_status(report).splitlines()[1] == "  3 finished, 2 interrupted, 1 running"


def test_status_of_a_sweep_not_started_has_no_best_and_no_eta():
    report = {"sweep": "demo", "status": "finished", "trials": 2,
              "counts": {"pending": 2}, "running": [], "best": None, "eta_s": None}
    assert format_status(report) == "sweep demo: finished, 2 trials\n  2 pending"


def test_cancel_of_an_ended_sweep_changes_nothing_and_a_done_sweep_reads_finished(
        tmp_path, capsys):
    """`cancel` of a finished sweep once marked it interrupted; a launch with every trial
    done now also puts right a sweep whose last launch ended otherwise."""
    from orchestrator.commands import launch

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    tracker = _open_sweep(uri, spec)
    for trial in prepare(spec_from_dict(spec))[1]:
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
    tracker.close_sweep(schema.INTERRUPTED)  # e.g. Ctrl-C after its last trial ended
    assert cli.main(["cancel", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out == "sweep unit is not running (interrupted): nothing to cancel\n"
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(tracker.parent_id)
    assert parent.data.tags[schema.SWEEP_CANCEL_TAG] == "no"
    outcome = launch(spec_from_dict(spec), tracking_uri=uri, progress=False)
    assert outcome.already_done == 4 and not outcome.ran
    parent = client.get_run(tracker.parent_id)
    assert parent.data.tags[schema.SWEEP_STATUS_TAG] == schema.FINISHED
    assert parent.info.status == "FINISHED"
    assert cli.main(["cancel", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out == "sweep unit is not running (finished): nothing to cancel\n"
    assert client.get_run(tracker.parent_id).data.tags[schema.SWEEP_STATUS_TAG] == "finished"


def test_sweep_status_reads_the_store(tmp_path, capsys):
    from orchestrator.eta import launch_note

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    tracker = _open_sweep(uri, spec)
    ids = [t.trial_id for t in prepare(spec_from_dict(spec))[1]]
    tracker.note_launch(launch_note(0.0, now=time.time() - 58.0))  # (status takes a second)
    _child(uri, tracker, ids[0], schema.FINISHED, final__eval_loss=2.5, final__wall_s=60.0)
    _child(uri, tracker, ids[1], schema.FINISHED, final__eval_loss=2.25, final__wall_s=120.0)
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sweep unit: running, 4 trials"
    assert out[1] == "  2 finished, 2 pending"
    assert out[2] == f"  best: trial-{ids[1][:6]} (eval loss 2.2500)"
    assert out[3] == "  ETA: 1.0 min"  # half its FLOPs in ~60 s, as many left


def test_status_of_a_stopped_sweep_says_which_unfinished_trials_ended_on_disk(tmp_path,
                                                                            capsys):
    """A driver that lost the store left two finished trials `running` in it; `status` then
    read them interrupted, as work lost, though `resume` records them without training."""
    import json

    from trainer.paths import RunPaths

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    tracker = _open_sweep(uri, spec)
    trials = prepare(spec_from_dict(spec))[1]
    _child(uri, tracker, trials[0].trial_id, schema.FINISHED, final__eval_loss=2.5)
    for trial in trials[1:3]:
        _child(uri, tracker, trial.trial_id, schema.INTERRUPTED)
    run_dir = RunPaths.for_config(trials[1].cfg, trials[1].trial_id).run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))
    tracker.close_sweep(schema.INTERRUPTED)
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["  1 finished, 2 interrupted, 1 pending",
                        "  1 of them ended in their folders (the store lost their end): "
                        "`sweep resume unit` records it, training nothing"]
    assert status(uri, "unit")["ended_unrecorded"] == 1
    # a trial the store never heard of (its tracker killed before its start was recorded)
    # that ended in its folder: "pending", and not among those said, while the dry run said
    # it done
    run_dir = RunPaths.for_config(trials[3].cfg, trials[3].trial_id).run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith(
        "  2 of them ended in their folders (the store lost their end)")


def test_status_eta_weighs_the_trials_left_by_their_flops(tmp_path):
    """After an extend to a wider model, the ETA was the narrow trials' mean wall time × the
    trials left: ~2 min for ~10 in a researcher's sweep. A trial's cost is its FLOPs."""
    from orchestrator.eta import launch_note

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = {**_spec(tmp_path), "grid": {"optim.lr": "choice(3e-3, 1e-2)",
                                        "model.width": "choice(32, 128)"}}
    tracker = _open_sweep(uri, spec)
    trials = prepare(spec_from_dict(spec))[1]
    narrow = [t for t in trials if t.cfg.model.width == 32]
    wide = [t for t in trials if t.cfg.model.width == 128]
    for trial in narrow:  # (before this launch)
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5,
               final__wall_s=60.0)
    start = time.time()
    tracker.note_launch(launch_note(2 * narrow[0].flops, now=start - 1200.0))
    run_id = _child(uri, tracker, wide[0].trial_id, schema.RUNNING, train__tokens=8192.0)
    MlflowClient(tracking_uri=uri).log_param(run_id, schema.PARAM_TOKENS, 32768)  # 1/4 done
    assert wide[0].flops > 5 * narrow[0].flops
    report = status(uri, "unit")
    took = time.time() - start
    # a quarter of a wide trial in 1200 s and the seconds since, 1.75 wide left
    assert 1200.0 * 1.75 / 0.25 <= report["eta_s"] <= (1200.0 + took) * 1.75 / 0.25


def test_status_eta_takes_its_pace_from_when_the_first_trial_began(tmp_path):
    """The pace ran from the launch's note, set before the workers had started (10-20 s of
    imports and data): right after a launch a 40 s sweep read ETA 10.3 min."""
    from orchestrator.eta import launch_note

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    tracker = _open_sweep(uri, spec)
    trials = prepare(spec_from_dict(spec))[1]
    now = time.time()
    tracker.note_launch(launch_note(0.0, now=now - 100.0))
    # the first worker began 80 s ago (20 s after the note), the second 10 s later
    tracker.begin(trials[0].trial_id, trials[0].label, {}, None,
                  started_ms=int((now - 80.0) * 1000))
    tracker.begin(trials[1].trial_id, trials[1].label, {}, None,
                  started_ms=int((now - 70.0) * 1000))
    tracker.log_steps(trials[0].trial_id, [(1, {"train/tokens": 16384.0})])  # half of it
    tracker.flush()
    report = status(uri, "unit")
    took = time.time() - now
    # half a trial in 80 s and the seconds status took (2 s on a loaded CI machine: a fixed 2%
    # tolerance failed there), 3.5 trials left
    assert 80.0 * 3.5 / 0.5 <= report["eta_s"] <= (80.0 + took) * 3.5 / 0.5
    launched = json.loads(MlflowClient(tracking_uri=uri).get_run(tracker.parent_id)
                          .data.tags[schema.SWEEP_LAUNCH_TAG])
    assert launched["begun"] == pytest.approx(now - 80.0, abs=0.01)


def test_status_eta_of_shared_budgets_is_this_launchs_pace_not_its_branches_wall_time(
        tmp_path):
    """A branch's final/wall_s counts its trunk's seconds, a fused member's its group's, and
    while trunks train no trial runs: a researcher's WSD sweep read 126.7 min for a 10-min
    extend. The ETA is the FLOPs left at the pace of this launch, a trunk's tokens counting
    for the branches it has passed."""
    from orchestrator.eta import launch_note
    from orchestrator.families import plan_sharing
    from trainer.branching import trunk_dir, write_json_atomic

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = {**_spec(tmp_path), "overrides": [*TRIAL[:-1], "schedule=wsd",
                                             "schedule.warmup_tokens=1024"],
            "grid": {"optim.lr": "choice(3e-3, 1e-2)", "train.tokens": "choice(16384, 32768)"}}
    tracker = _open_sweep(uri, spec)
    trials = prepare(spec_from_dict(spec))[1]
    flops_per_token = trials[0].flops / trials[0].cfg.train.tokens
    done = [t for t in trials if t.cfg.optim.lr == 3e-3]
    for trial in done:  # branches of one trunk, fused: each says the trunk's and group's time
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5,
               final__wall_s=500.0)
    start = time.time()
    tracker.note_launch(launch_note(flops_per_token * 49152, now=start - 600.0))
    # the other trunk has trained 12,288 tokens this launch: the 16,384 budget's stable phase
    # (0.8 × 16,384 down to a whole batch of 1,024), and as much of the 32,768 one's
    family = plan_sharing(trials).family_of(next(t for t in trials if t not in done).trial_id)
    folder = trunk_dir(tmp_path / "runs", family.trunk_id)
    folder.mkdir(parents=True)
    write_json_atomic(folder / "trunk.json", {"tokens": 12288})
    report = status(uri, "unit")
    took = time.time() - start
    # 24,576 tokens' FLOPs in 600 s and the seconds since; 4,096 + 20,480 left (the wall
    # times would say 1000 s per 49,152)
    assert 600.0 <= report["eta_s"] <= 600.0 + took


def test_a_fits_next_grid_says_how_many_trials_the_extend_adds(tmp_path):
    """The hint to extend LRs past an edge did not say its cost: every new LR runs at every
    point of the other axes and seed (180 trials in a researcher's timescale sweep)."""
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = {**_spec(tmp_path), "seeds": [0, 1],
            "grid": {"optim.lr": "tag(log, choice(3e-3, 1e-2))",
                     "train.batch_size": "choice(8, 16)", "model.width": "range(32, 128, 32)"}}
    _open_sweep(uri, spec)
    # 2 new LRs (1e-2 is there already) × 2 batch sizes × 3 widths × 2 seeds
    assert cli_fit._extension_size(uri, "unit", ["optim.lr=choice(1e-3, 0.01, 3e-2)"]) == 24
    # a new axis keeps the trials' value: 0.1 beside their 0.0 at every point
    assert cli_fit._extension_size(uri, "unit", ["optim.weight_decay=choice(0.1)"]) == 24
    assert cli_fit._extension_size(uri, "unit", ["optim.lr=choice(oops)"]) is None
    # an LR the spec fixes in its overrides: the extend makes it an axis with the new values
    fixed = {**spec, "name": "fixed", "overrides": [*TRIAL, "optim.lr=1e-2"],
             "grid": {"train.batch_size": "choice(8, 16)"}}
    _open_sweep(uri, fixed)
    assert cli_fit._extension_size(uri, "fixed", ["optim.lr=choice(1e-3, 0.01)"]) == 4
    assert cli_fit._extension_size(uri, "nosuch", ["optim.lr=choice(1e-3)"]) is None


def test_status_of_a_sweep_whose_driver_was_killed_says_so_and_how_to_go_on(tmp_path, capsys):
    """A SIGKILLed driver leaves its parent run and trials `running`; `sweep status` reads the
    parent's `sweep.driver` ("HOST PID") and, finding no such process on this host, reports
    the sweep and those trials interrupted, with the command that goes on."""
    import socket
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = int(ended.stdout)  # a process that has ended: its pid is free
    tracker = Tracker(uri, "unit", code_version="test", driver=f"{socket.gethostname()} {dead}",
                      spec_yaml=yaml.safe_dump(spec_from_dict(spec).to_dict()))
    ids = [t.trial_id for t in prepare(spec_from_dict(spec))[1]]
    _child(uri, tracker, ids[0], schema.FINISHED, final__eval_loss=2.5, final__wall_s=60.0)
    _child(uri, tracker, ids[1], schema.RUNNING)
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"sweep unit: interrupted (its driver, pid {dead}, was killed before it "
                      "could close the sweep: `sweep resume unit` goes on), 4 trials")
    assert out[1] == "  1 finished, 1 interrupted, 2 pending"
    assert not any(line.startswith(("  running ", "  ETA")) for line in out)  # it has stopped
    # The same record with its driver alive (this process): running, as recorded
    MlflowClient(tracking_uri=uri).set_tag(tracker.parent_id, schema.SWEEP_DRIVER_TAG,
                                           f"{socket.gethostname()} {os.getpid()}")
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["sweep unit: running, 4 trials", "  1 finished, 2 pending, 1 running"]
    # and from another host nothing can be told: as recorded
    MlflowClient(tracking_uri=uri).set_tag(tracker.parent_id, schema.SWEEP_DRIVER_TAG,
                                           f"elsewhere {dead}")
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.startswith("sweep unit: running, 4 trials\n")
    # ... but its heartbeat: the tracking actor beat at its start, and beats no more
    client = MlflowClient(tracking_uri=uri)
    beat = client.get_run(tracker.parent_id).data.tags[schema.SWEEP_HEARTBEAT_TAG]
    assert abs(int(beat) - time.time()) < 60
    tracker.heart_stop.set()
    tracker.heart.join()
    client.set_tag(tracker.parent_id, schema.SWEEP_HEARTBEAT_TAG, str(int(time.time()) - 610))
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["sweep unit: running, 4 trials",
                       f"  its driver (elsewhere {dead}) has not been heard from for 10 min: "
                       "killed, lost or cut off from the store? If it is gone, `sweep resume "
                       "unit` goes on"]
    assert cli.main(["list", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; driver silent for 10 min")
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    assert 600 < json.loads(capsys.readouterr().out)["driver_silent_s"] < 700
    start = time.monotonic()
    assert cli.main(["cancel", "unit", "--tracking-uri", uri]) == 0  # no driver to wait for
    assert time.monotonic() - start < 5


def test_sweep_status_reports_tokens_trained_against_independent(tmp_path, capsys):
    import json

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    tracker = _open_sweep(uri, spec)
    ids = [t.trial_id for t in prepare(spec_from_dict(spec))[1]]
    # Two branches of one trunk (900 tokens trained by it), one trial alone, one still running.
    _child(uri, tracker, ids[0], schema.FINISHED, final__tokens=1000.0,
           final__tokens_trained=100.0, final__eval_loss=2.5)
    _child(uri, tracker, ids[1], schema.FINISHED, final__tokens=2000.0,
           final__tokens_trained=1100.0, final__eval_loss=2.4)
    _child(uri, tracker, ids[2], schema.DIVERGED, final__tokens=500.0)
    running = _child(uri, tracker, ids[3], schema.RUNNING)
    tracker.trunk("t" * 64, "lr=0.01", {"optim.lr": 0.01}, schema.RUNNING)
    tracker.trunk("t" * 64, "lr=0.01", {"optim.lr": 0.01}, "finished",
                  {"final/tokens": 900, "final/steps": 9})
    trunks = schema.sweep_runs(MlflowClient(tracking_uri=uri), tracker.experiment_id, "trunk")
    assert len(trunks) == 1 and trunks[0].data.tags["trunk.status"] == "finished"
    assert trunks[0].data.params == {"optim.lr": "0.01"}
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens_trained"] == 100 + 1100 + 500 + 900
    assert report["tokens_if_independent"] == 1000 + 2000 + 500
    # no ratio while a trial runs: the trunk may be training for branches not done
    assert report["tokens_ratio"] is None
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  tokens: 2,600 trained by the trials that have ended and the trunks that have ended "
        "or stopped (a stopped trunk up to its stop; a stopped or running trial counts at its "
        "end, and the ratio to training each trial alone shows once every trial has ended)")
    client = MlflowClient(tracking_uri=uri)
    client.log_metric(running, "final/tokens", 4000.0)
    client.set_tag(running, schema.TRIAL_STATUS_TAG, schema.FINISHED)
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["tokens_ratio"] == 6600 / 7500
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  tokens: 6,600 trained, 7,500 if independent (ratio 0.88)")
    # A launch's end logs the same totals on the parent run: its tracker's own record (the
    # runs it found at its start, and those it wrote since; these were written beside it).
    assert tracker.log_token_totals()["sweep/tokens_trained"] == 900  # only its trunk
    tracker = _open_sweep(uri, spec)  # the next launch's
    totals = tracker.log_token_totals()
    parent = MlflowClient(tracking_uri=uri).get_run(tracker.parent_id)
    assert parent.data.metrics == totals and totals["sweep/tokens_ratio"] == 6600 / 7500
    # an interrupted launch: no ratio stands beside its totals, the last one's neither
    tracker.log_token_totals(ended=False)
    parent = MlflowClient(tracking_uri=uri).get_run(tracker.parent_id)
    assert math.isnan(parent.data.metrics["sweep/tokens_ratio"])


def test_dry_run_counts_a_trial_ended_on_disk_as_done(tmp_path, capsys, monkeypatch):
    """A trial this sweep never recorded but another sweep over the same storage_root trained
    to its end: a launch would record it from its run directory, not train it again."""
    from trainer.loop import run

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(spec))
    trained = prepare(spec_from_dict(spec))[1][0]
    assert run(trained.cfg).status == schema.FINISHED  # as the other sweep's worker would
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"done (finished, on disk) {trained.trial_id[:12]}  {trained.label}" in out
    assert "\n4 trials: 1 done, 3 would run\n" in out
    # and the launch's first line says the same (it said "4 of its 4 trials to run")
    from orchestrator import commands

    said = []

    def start(*args, work):
        said.append(work)
        raise KeyboardInterrupt  # (the line said: no Ray)

    monkeypatch.setattr(commands, "_start", start)
    with pytest.raises(KeyboardInterrupt):
        commands.launch(spec_from_dict(spec), tracking_uri=uri)
    assert said == ["3 of its 4 trials to run, and 1 ended in its folder to record"]
    for trial in prepare(spec_from_dict(spec))[1][1:]:
        assert run(trial.cfg).status == schema.FINISHED
    with pytest.raises(KeyboardInterrupt):
        commands.launch(spec_from_dict(spec), tracking_uri=uri)
    assert said[1] == "nothing to train: 4 ended in their folders to record"


def test_trials_recorded_on_other_data_are_said_when_the_data_changed(tmp_path, capsys):
    """The files under data.paths edited (or another Python's stdlib for data=pystdlib): every
    trial id moved with the data's fingerprint, and the whole sweep trained again without a
    word of why."""
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    data = ["data=files", f"data.paths=[{tmp_path / 'a.txt'}]",
            f"data.cache_dir={tmp_path / 'cache'}"]
    raw = {**_spec(tmp_path), "overrides": [*TRIAL[:4], *data, *TRIAL[5:]]}
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, raw)
    before = prepare(spec_from_dict(raw))[1]
    client = MlflowClient(tracking_uri=uri)
    for trial in before[:3]:
        run_id = _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
        client.log_param(run_id, "data.fingerprint", trial.cfg.data.fingerprint)
    # one interrupted: its checkpoints were for the old files, and a resume dropped it silently
    run_id = _child(uri, tracker, before[3].trial_id, schema.INTERRUPTED)
    client.log_param(run_id, "data.fingerprint", before[3].cfg.data.fingerprint)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    assert "read other data" not in capsys.readouterr().err  # the same data: all done
    (tmp_path / "a.txt").write_text("a lazy dog sleeps under the quick brown fox. " * 400)
    after = prepare(spec_from_dict(raw))[1]
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    out = capsys.readouterr()
    old, new = before[0].cfg.data.fingerprint, after[0].cfg.data.fingerprint
    differ = ("the files under data.paths, data.val_paths or data.tokenizer (for data=pystdlib, "
              "this Python's standard library) differ from theirs")
    assert (f"note: 3 of sweep unit's ended trials read other data (data.fingerprint "
            f"{old[:12]}; now {new[:12]}): {differ}, so these trials are new ones and "
            "train from the start; `sweep fit` reads both") in out.err
    assert (f"note: 1 of sweep unit's trials not ended (interrupted or failed) read other data "
            f"(data.fingerprint {old[:12]}; now {new[:12]}): {differ}, so their checkpoints "
            "are not resumed and their trials train again from the start under new ids; put "
            "the old data back to resume them instead") in out.err
    assert "4 trials: 0 done, 4 would run" in out.out
    # status said "4 pending" and "4 more trials of earlier specs ... re-pointed it" (and the
    # errors of trials that had failed on the old data); resume and extend trained every
    # trial again on the new data with only the note above
    run_id = _child(uri, tracker, "f" * 64, schema.FAILED)
    client.log_param(run_id, "data.fingerprint", old)
    tracker.note_failure("f" * 64, "ValueError: Trailing data")
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert ("  5 recorded trials of this sweep read other data than its data files hold here "
            "(changed since, or other files on this machine)") in out and "re-pointed" not in out
    assert "Trailing data" not in out
    for argv in (["resume", "unit"], ["extend", "unit", "seeds=[0,1]"]):
        assert cli.main([*argv, "--tracking-uri", uri]) == 2
        assert ("error: the data files of sweep unit (data.paths, data.val_paths, "
                "data.tokenizer) hold other data than its 3 ended trials read (data."
                f"fingerprint {old[:12]}; now "
                f"{new[:12]}): `sweep {argv[0]}` would train every trial again on it; put the "
                "data they read back, or launch the spec file again") in capsys.readouterr().err
    # the data not on this machine: status gave only "data.paths: ... does not exist"
    (tmp_path / "a.txt").unlink()
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  1 failed, 3 finished, 1 interrupted (to go on)" in out and any(line.startswith(
        "  its trials cannot be composed here (data.paths: ") for line in out), out


def test_resume_refused_after_a_shard_was_added_names_the_folder_and_the_file(tmp_path,
                                                                              capsys):
    """A shard added to a sweep's data folder (or pattern) refused `sweep resume` as "other
    data" with two fingerprints, and nothing that said which key or which file."""
    from trainer.identity import flatten

    shards = tmp_path / "shards"
    shards.mkdir()
    for name in ("train-0.txt", "train-1.txt"):
        (shards / name).write_text(f"{name}: the quick brown fox jumps over the lazy dog. " * 300)
    data = ["data=files", f"data.paths=[{shards}/]", f"data.cache_dir={tmp_path / 'cache'}"]
    raw = {**_spec(tmp_path), "overrides": [*TRIAL[:4], *data, *TRIAL[5:]]}
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, raw)
    client = MlflowClient(tracking_uri=uri)
    for trial in prepare(spec_from_dict(raw))[1]:  # each trained, its folder as a run leaves it
        run_id = _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
        client.log_param(run_id, "data.fingerprint", trial.cfg.data.fingerprint)
        (tmp_path / "runs" / trial.trial_id).mkdir(parents=True)
        (tmp_path / "runs" / trial.trial_id / "config.json").write_text(
            json.dumps(flatten(trial.cfg), default=str))
    (shards / "train-2.txt").write_text("a lazy dog sleeps under the quick brown fox. " * 300)
    assert cli.main(["resume", "unit", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert (f"; data.paths=[{shards}] now holds 1 file more ({shards}/train-2.txt) than when "
            "they trained): `sweep resume` would train every trial again") in err, err
    path = tmp_path / "unit.yaml"  # launched again: noted, in the same words
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    assert (f"now {prepare(spec_from_dict(raw))[1][0].cfg.data.fingerprint[:12]}): "
            f"data.paths=[{shards}] now holds 1 file more ({shards}/train-2.txt) than when "
            "they trained, so these trials are new ones") in capsys.readouterr().err
    # the same files, one of them edited: said as such
    (shards / "train-2.txt").unlink()
    (shards / "train-0.txt").write_text("edited. " * 2000)
    assert cli.main(["resume", "unit", "--tracking-uri", uri]) == 2
    assert ("; the same files: one of them (or data.tokenizer's) was edited since they "
            "trained): `sweep resume` would") in capsys.readouterr().err


def test_resume_on_another_pythons_stdlib_names_it(tmp_path):
    """data=pystdlib hashes this Python's standard library: a colleague's resume on another
    Python was refused in the words of changed data files."""
    from orchestrator.commands import refuse_other_data

    raw = {**_spec(tmp_path), "overrides": [o for o in TRIAL if not o.startswith("data")]
           + ["data=pystdlib"]}
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, raw)
    client = MlflowClient(tracking_uri=uri)
    for n in range(2):
        run_id = _child(uri, tracker, f"{n}" * 64, schema.FINISHED, final__eval_loss=2.5)
        client.log_param(run_id, "data.fingerprint", "a" * 64)
    with pytest.raises(ConfigError, match=r"^this Python's standard library \(data=pystdlib\) "
                                          r"differs from the one its 2 ended trials read "
                                          r"\(data.fingerprint aaaaaaaaaaaa; now "):
        refuse_other_data(spec_from_dict(raw), uri, command="resume")


def test_a_searched_sweep_whose_data_changed_has_no_phantom_pending_trials(tmp_path):
    """Status counted the studies' asked points by rebuilding their trial ids from today's
    config: once the data's fingerprint moved, none matched the store, and a finished sweep
    showed its every trial again as pending, which nothing would ever run."""
    import optuna

    from orchestrator.search import prepare_search
    from orchestrator.studies import open_storage

    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    data = ["data=files", f"data.paths=[{tmp_path / 'a.txt'}]",
            f"data.cache_dir={tmp_path / 'cache'}"]
    raw = {"name": "unit", "overrides": [*TRIAL[:4], *data, *TRIAL[5:]],
           "grid": {"optim.lr": "tag(log, interval(1e-3, 3e-2))",
                    "train.batch_size": "choice(8, 16)"},
           "search": {"optuna": {"n_trials": 4, "per_slice": ["train.batch_size"]}},
           "storage_root": str(tmp_path / "runs")}
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, raw)
    _, plan, url = prepare_search(spec_from_dict(raw), uri)
    dist = optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)
    for s in plan.slices:
        study = optuna.create_study(study_name=plan.study_name(s), storage=open_storage(url))
        for lr in (2e-3, 5e-3, 5e-3, 1e-2):  # (5e-3 asked twice: one trial)
            study.add_trial(optuna.trial.create_trial(
                params={"optim.lr": lr}, distributions={"optim.lr": dist}, value=2.5))
        for lr in (2e-3, 5e-3, 1e-2):
            _child(uri, tracker, plan.trial(s, {"optim.lr": lr}).trial_id, schema.FINISHED,
                   final__eval_loss=2.5)
    tracker.close_sweep(schema.FINISHED)
    assert status(uri, "unit")["counts"] == {"finished": 6}
    (tmp_path / "a.txt").write_text("a lazy dog sleeps under the quick brown fox. " * 400)
    assert status(uri, "unit")["counts"] == {"finished": 6}


def test_a_searched_dry_run_on_a_tracking_server_before_the_first_launch(tmp_path, spec_dict):
    """The studies' default storage is in the storage root, which the launch creates: the dry
    run was refused ("its folder does not exist; create it")."""
    from orchestrator.commands import search_dry_run

    spec_dict["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))"}
    spec_dict["search"] = {"optuna": {"n_trials": 3}}
    spec_dict["storage_root"] = str(tmp_path / "not" / "yet")
    rows = search_dry_run(spec_from_dict(spec_dict), tracking_uri="http://127.0.0.1:9")
    assert [row[1:] for row in rows] == [(0, 3, 0, 0)]
    assert not (tmp_path / "not").exists()


def test_a_searched_dry_run_creates_no_study_storage(tmp_path, spec_dict):
    """A dry run runs nothing, and leaves no file: the Optuna storage beside a new SQLite
    store is not created to read that no study has trials yet (launch creates it)."""
    from orchestrator.commands import search_dry_run

    spec_dict["grid"] = {"optim.lr": "tag(log, interval(1e-3, 3e-2))",
                         "train.batch_size": "choice(8, 16)"}
    spec_dict["search"] = {"optuna": {"n_trials": 3, "per_slice": ["train.batch_size"]}}
    rows = search_dry_run(spec_from_dict(spec_dict), tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert [row[1:] for row in rows] == [(0, 3, 0, 0), (0, 3, 0, 0)]
    assert not (tmp_path / "optuna.db").exists()
    # Trials asked and never told (their driver interrupted) run again at the next launch:
    # the dry run said "3 trials used, would ask 0 more", and the resume then ran them; then
    # it said all of them "never ended (interrupted)" where `status` read the one that had
    # begun interrupted and the others pending.
    import optuna
    from optuna.distributions import FloatDistribution

    from orchestrator.search_space import plan_search
    from orchestrator.studies import open_storage
    from trainer.paths import RunPaths

    study = optuna.create_study(study_name="unit: train.batch_size=8 seed=0",
                                storage=open_storage(f"sqlite:///{tmp_path}/optuna.db"))
    lr = {"optim.lr": FloatDistribution(1e-3, 3e-2, log=True)}
    asked = [study.ask(lr) for _ in range(3)]
    study.ask()  # (asked without its point: void at the next launch, neither)
    plan = plan_search(spec_from_dict(spec_dict))
    begun = plan.trial(plan.slices[0], asked[0].params)
    RunPaths.for_config(begun.cfg, begun.trial_id).run_dir.mkdir(parents=True)
    rows = search_dry_run(spec_from_dict(spec_dict), tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert [row[1:] for row in rows] == [(4, 0, 1, 2), (0, 3, 0, 0)]


def test_fit_of_a_sweep_with_trials_not_done_says_so_first(tmp_path, capsys):
    """`sweep fit` while trials run or after an interruption: a note on stderr, before the fit,
    that it has only the ended trials and what finishes the rest."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    trials = prepare(spec_from_dict(_spec(tmp_path)))[1]
    _child(uri, tracker, trials[0].trial_id, schema.RUNNING)
    _child(uri, tracker, trials[1].trial_id, schema.INTERRUPTED)
    _child(uri, tracker, trials[2].trial_id, schema.FINISHED, final__eval_loss=2.5)
    _child(uri, tracker, "c" * 64, schema.FAILED)  # of an earlier spec: the fit reads it too
    # trials[3] not begun: pending (it was left out of the count, as `status` counts it)
    cli.main(["fit", "unit", "--tracking-uri", uri, "--out", str(tmp_path / "fit")])
    err = capsys.readouterr().err
    note = ("note: 4 of sweep unit's trials are not done (1 failed, 1 interrupted, 1 pending, "
            "1 running): this fit has only the ended ones; its driver is running them: wait "
            "for it (`sweep status unit`), then fit again (1 of an earlier spec it does not "
            "run)")
    assert note in err and err.index(note) < err.index("error:")  # said before the fit
    tracker.close_sweep(schema.INTERRUPTED)  # (its driver stopped: then resume finishes them)
    # the 3 of its spec, not the earlier spec's: resume ends them, and a fit waits for them
    assert cli_fit._warn_unfinished(uri, "unit") == 3
    assert ("note: 4 of sweep unit's trials are not done (1 failed, 1 interrupted, 1 pending, "
            "1 running): this fit has only the ended ones; `sweep resume unit` finishes them"
            ) in capsys.readouterr().err


def test_a_fits_hint_to_add_a_seed_adds_one_to_the_sweeps_own_seeds(tmp_path):
    # A sweep of seed 3 was told "add a seed (sweep extend NAME 'seeds=[0,1]')", which adds
    # two seeds, 0 and 1, and trains twice the trials the hint meant.
    from fitter.data import from_short_frame
    from fitter.fit import fit_json, fit_runs, format_fit
    from fitter.synthetic import Truth, synthetic_runs

    uri = f"sqlite:///{tmp_path}/m.db"
    _open_sweep(uri, {**_spec(tmp_path), "seeds": [3]})
    assert cli_fit._stored_seeds(uri, "unit") == (3,)
    assert cli_fit._stored_seeds(uri, "none") == (0,)  # (no spec: runs logged by hand)
    frame = synthetic_runs(Truth(), n_values=[1e6], d_values=[1e9], b_values=[1e5], seed=1)
    doc = fit_json(fit_runs(from_short_frame(frame, source="sweep unit"), n_boot=20),
                   sweep="unit")
    assert doc["slices"][0]["interval_noise"] == "fit"
    text = format_fit(doc, seeds=cli_fit._stored_seeds(uri, "unit"))
    assert "add a seed (sweep extend unit 'seeds=[3,4]')" in text and "[0,1]" not in text


def test_fit_of_a_sweep_whose_trials_failed_on_a_config_error_does_not_say_resume(tmp_path,
                                                                                   capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    trials = prepare(spec_from_dict(_spec(tmp_path)))[1]
    run_id = _child(uri, tracker, trials[0].trial_id, schema.FAILED)
    MlflowClient(tracking_uri=uri).set_tag(run_id, schema.TRIAL_ERROR_TAG,
                                           "ConfigError: data.text_field=body: no such field")
    for trial in trials[1:]:
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
    assert cli_fit._warn_unfinished(uri, "unit") == 0  # nothing a resume would end
    err = capsys.readouterr().err
    assert ("note: 1 of sweep unit's trials failed on a config error (`sweep status unit` "
            "shows it): this fit has only the ended ones; `sweep resume` would fail them the "
            "same way") in err
    assert "finishes them" not in err


def test_fit_of_a_sweep_whose_open_trials_are_of_an_earlier_spec_says_resume_leaves_them(
        tmp_path, capsys):
    # An interrupted trial of an earlier spec: "`sweep resume` finishes them", which runs the
    # stored spec only, and every later fit said to wait for it before extending.
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    for trial in prepare(spec_from_dict(_spec(tmp_path)))[1]:
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
    _child(uri, tracker, "e" * 64, schema.INTERRUPTED)
    tracker.close_sweep(schema.FINISHED)
    assert cli_fit._warn_unfinished(uri, "unit") == 0
    assert capsys.readouterr().err == (
        "note: 1 of sweep unit's trials are not done (1 interrupted): this fit has only the "
        "ended ones; they are trials of an earlier spec of the sweep, which `sweep resume` "
        "does not run (launch that spec again to finish them)\n")


def test_a_launch_with_other_base_overrides_under_a_recorded_name_says_so(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    _open_sweep(uri, spec)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    assert "note:" not in capsys.readouterr().err  # the same spec: nothing to say
    path.write_text(yaml.safe_dump({**spec, "overrides": [*TRIAL[:-1], "train.tokens=65536"]}))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    assert ("note: sweep unit was launched before with another spec (without "
            "train.tokens=32768; now train.tokens=65536): its trials so far stay in its "
            "experiment") in capsys.readouterr().err
    path.write_text(yaml.safe_dump({**spec, "grid": {**spec["grid"], "train.batch_size":
                                                     "choice(32)"}}))  # (said nothing)
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    err = capsys.readouterr().err
    assert ("another spec (grid.train.batch_size without 8, 16 and with 32): its trials so "
            "far stay") in err
    assert "extended since this file" not in err  # (other trials, not fewer of the same)
    # the first spec file launched again after an extend: the sweep stays as it is
    path.write_text(yaml.safe_dump({**spec, "grid": {**spec["grid"], "train.batch_size":
                                                     "choice(8)"}}))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().err == (
        "note: sweep unit's stored spec (extended since this file) holds this spec's 2 trials "
        "and 2 more: it stays the sweep's spec, so `sweep status`, `resume` and `extend` keep "
        "all of it; give this spec another name for a sweep of its own\n")
    # a search block that differs says how (after `extend n_trials=5`, a relaunch of the file
    # lowered it to 3 behind "another search block")
    from orchestrator.cli_launch import _search_changes

    assert _search_changes({"optuna": {"n_trials": 5, "storage": "postgresql://u:pw@h/db"}},
                           {"optuna": {"n_trials": 3, "storage": "postgresql://u:pw@h/db"}}
                           ) == ["search.optuna.n_trials: 5 → 3"]
    assert _search_changes("grid", {"optuna": {"n_trials": 3}}) == []
    # an option not given is its default ("sampler: (none) → tpe" hid gp); the default
    # written out is no change
    assert _search_changes({"optuna": {"n_trials": 3}},
                           {"optuna": {"n_trials": 3, "sampler": "tpe"}}
                           ) == ["search.optuna.sampler: gp → tpe"]
    assert _search_changes({"optuna": {"n_trials": 3}},
                           {"optuna": {"n_trials": 3, "sampler": "gp", "pruner": "none"}}) == []


def test_a_launch_with_nothing_to_run_stores_its_spec_as_one_that_runs(tmp_path):
    # A relaunch of the plain spec after one with overrides left the sweep on the overrides'
    # spec: `status` and `extend` then followed a spec nobody had launched last.
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    every = {**_spec(tmp_path), "grid": {"optim.lr": "choice(3e-3, 1e-2, 3e-2)",
                                         "train.batch_size": "choice(8, 16)"}}
    for trial in prepare(spec_from_dict(every))[1]:
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
    other = spec_from_dict({**_spec(tmp_path), "grid": {"optim.lr": "choice(1e-2, 3e-2)",
                                                        "train.batch_size": "choice(8, 16)"}})
    outcome = commands.launch(other, tracking_uri=uri, progress=False)
    assert (outcome.trials, outcome.already_done) == (4, 4)
    assert stored_spec(uri, "unit").grid["optim.lr"] == "choice(1e-2, 3e-2)"
    # status counts the spec's 4 and says the other spec's others are still recorded (it
    # said "2 trials" with the token totals of all of them, and nothing of the rest)
    report = status(uri, "unit")
    assert report["trials"] == 4 and report["outside_spec"] == 2
    assert ("  2 more trials of earlier specs of this sweep are recorded but not in its spec "
            "now (a launch of another spec re-pointed it)") in format_status(report)
    stale = spec_from_dict(_spec(tmp_path))  # an extend that read the spec before that launch
    with pytest.raises(ConfigError, match="spec was changed by another `sweep extend` or launch"):
        commands.launch(other, tracking_uri=uri, progress=False, based_on=stale)
    # a spec whose trials the stored one holds, with more, leaves it as it is
    part = spec_from_dict({**_spec(tmp_path), "grid": {"optim.lr": "choice(3e-2)",
                                                       "train.batch_size": "choice(8, 16)"}})
    assert commands.launch(part, tracking_uri=uri, progress=False).already_done == 2
    assert stored_spec(uri, "unit").grid["optim.lr"] == "choice(1e-2, 3e-2)"


def test_sweep_list_names_every_sweep_with_its_status_and_trials(tmp_path, capsys):
    import json

    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    ids = [t.trial_id for t in prepare(spec_from_dict(_spec(tmp_path)))[1]]
    _child(uri, tracker, ids[0], schema.FINISHED)
    _child(uri, tracker, ids[1], schema.DIVERGED)
    other = _open_sweep(uri, {**_spec(tmp_path), "name": "other"})
    _child(uri, other, ids[2], schema.RUNNING)
    MlflowClient(tracking_uri=uri).create_experiment("not_a_sweep")  # a user's own: not listed
    assert cli.main(["list", "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("unit   running      started ")
    # counted as `sweep status` counts them: the grid's trials not begun are pending
    assert lines[0].endswith("  4 trials (1 diverged, 1 finished, 2 pending)")
    assert lines[1].startswith("other  running")
    assert lines[1].endswith("  4 trials (3 pending, 1 running)")
    assert cli.main(["list", "--tracking-uri", uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["sweep"], r["counts"]) for r in rows] == [
        ("unit", {"finished": 1, "diverged": 1, "pending": 2}),
        ("other", {"pending": 3, "running": 1})]
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == rows[0]["counts"]
    # fit and recommend say an unknown name as every command does, with the known sweeps
    for argv in (["fit", "nosuch"], ["recommend", "nosuch", "--params", "1e9", "--tokens",
                                     "1e9"]):
        assert cli.main([*argv, "--tracking-uri", uri]) == 2
        assert "no sweep named 'nosuch' in the tracking store (known sweeps: " \
               "other, unit)" in capsys.readouterr().err  # (not_a_sweep: no sweep)
    # a name in another case, or a character off: said which was meant
    for typed in ("UNIT", "uni", "othr"):
        assert cli.main(["fit", typed, "--tracking-uri", uri]) == 2
        meant = "unit" if typed.lower().startswith("u") else "other"
        assert f"no sweep named '{typed}' in the tracking store (did you mean {meant}? known " \
               "sweeps: other, unit)" in capsys.readouterr().err


def test_status_names_a_best_per_tokenizer_not_one_across_them(tmp_path, capsys):
    """A sweep over `data.tokenizer` (bytes and a BPE): status named the bytes trial the best,
    a loss per byte against losses per token."""
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    tracker = _open_sweep(uri, spec)
    ids = [t.trial_id for t in prepare(spec_from_dict(spec))[1]]
    client = MlflowClient(tracking_uri=uri)
    for trial_id, tokenizer, loss in ((ids[0], "None", 2.76), (ids[1], "/d/bpe.json", 5.86),
                                      (ids[2], "/d/bpe.json", 5.91)):
        run_id = _child(uri, tracker, trial_id, schema.FINISHED, final__eval_loss=loss)
        client.log_param(run_id, "data.tokenizer", tokenizer)
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("  best: ") for line in out)
    assert [line for line in out if line.startswith("  best with")] == [
        f"  best with data.tokenizer=/d/bpe.json: trial-{ids[1][:6]} (eval loss 5.8600; losses "
        "of other tokenizers are in other units)",
        f"  best with data.tokenizer=bytes: trial-{ids[0][:6]} (eval loss 2.7600; losses of "
        "other tokenizers are in other units)"]
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["best"] is None and len(report["best_per_tokenizer"]) == 2


def test_status_says_why_a_trial_failed(tmp_path, capsys):
    """The driver, giving up on a trial, has the tracker tag its last error (`trial.error`,
    first line); `sweep status` lists failed trials with it."""
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    tracker = _open_sweep(uri, spec)
    ids = [t.trial_id for t in prepare(spec_from_dict(spec))[1]]
    _child(uri, tracker, ids[0], schema.FAILED)
    _child(uri, tracker, ids[1], schema.FINISHED, final__eval_loss=2.5)
    again = _open_sweep(uri, spec)  # as a driver's tracker finds the sweep's runs
    again.note_failure(ids[0], "ValueError: expected non-negative integer\nTraceback ...")
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"  failed trial-{ids[0][:6]}: ValueError: expected non-negative integer" in out


def test_a_failure_noted_before_the_trials_begin_reaches_its_run_at_its_end(tmp_path):
    """The driver's note and the worker's begin/end come from two callers, in no set order
    (both queue while the tracking actor starts): a note that finds no run yet waits."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    trial_id = "d" * 64
    tracker.note_failure(trial_id, "NotADirectoryError: [Errno 20] Not a directory\n  ...")
    tracker.begin(trial_id, "trial-dddddd", {"optim.lr": 0.01})
    tracker.end(trial_id, schema.FAILED, {})
    run = MlflowClient(tracking_uri=uri).get_run(tracker.children[trial_id])
    assert run.data.tags["trial.error"] == "NotADirectoryError: [Errno 20] Not a directory"
    assert tracker.failures == {}


def test_status_says_which_trunks_train(tmp_path, capsys):
    """While trunks train, their budgets wait as pending: status says why nothing runs."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    tracker.trunk("t" * 64, "optim.lr=0.01", {"optim.lr": 0.01}, schema.RUNNING)
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["sweep unit: running, 4 trials", "  4 pending",
                       "  1 trunk training (the shared start of token budgets, which follow "
                       "as their trunk passes them)"]
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["trunks_running"] == ["trunk optim.lr=0.01"]
    # its position, from its folder's metrics (most of a shared sweep's time is its trunks')
    folder = tmp_path / "runs" / "trunks" / ("t" * 64)
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 12, "train/tokens": 12288}\n')
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.splitlines()[2] == (
        "  1 trunk training (the shared start of token budgets, which follow as their trunk "
        "passes them): at 12,288 tokens")
    # and where it is going: the last branch point its task trains to (its `trunk.json`)
    (folder / "trunk.json").write_text(json.dumps({"branch_points": [16384, 49152]}))
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.splitlines()[2].endswith(
        "passes them): at 12,288 of 49,152 tokens (25%)")
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["trunk_tokens"], report["trunk_targets"]) == ([12288], [49152])


def test_status_of_a_stopped_sweep_says_which_trunks_stopped_partway(tmp_path, capsys):
    """A sweep of token budgets killed while its trunks trained read `6 pending`, nothing
    of the stable phase its trunks had trained (kept, and gone on from by a resume)."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    tracker.trunk("t" * 64, "optim.lr=0.01", {"optim.lr": 0.01}, schema.RUNNING)
    folder = tmp_path / "runs" / "trunks" / ("t" * 64)
    folder.mkdir(parents=True)
    (folder / "trunk.json").write_text(json.dumps({"tokens": 175_104, "checkpoints": {},
                                                   "branch_points": [350_000]}))
    tracker.close_sweep(schema.INTERRUPTED)
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert ("  1 trunk (the shared start of token budgets) stopped partway, at 175,104 of "
            "350,000 tokens (50%): `sweep resume unit` goes on from its checkpoints") in \
        capsys.readouterr().out.splitlines()
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trunks_stopped"] == [
        {"trunk": "trunk optim.lr=0.01", "tokens": 175_104, "target": 350_000}]
    # a trunk stopped before its first step is not "stopped partway, at 0 tokens"
    never = {**report, "trunks_stopped": [*report["trunks_stopped"],
                                          {"trunk": "trunk optim.lr=0.1", "tokens": 0,
                                           "target": 350_000}]}
    lines = format_status(never).splitlines()
    assert "  1 trunk (the shared start of token budgets) stopped before its first step: " \
           "`sweep resume unit` trains it" in lines
    assert any(line.startswith("  1 trunk (the shared start of token budgets) stopped partway, "
                               "at 175,104 of") for line in lines)
    # its tokens count in what the sweep trained, up to its stop (its record had none)
    assert report["tokens_trained"] == 175_104
    # and a record of an earlier end (a halving trunk that ended at one branch point, was
    # extended past it and stopped) counts at the stop, not that end: 315,392 for 347,648
    client = MlflowClient(tracking_uri=uri)
    trunk_run = schema.sweep_runs(client, client.get_experiment_by_name("unit").experiment_id,
                                  schema.KIND_TRUNK)[0]
    client.log_metric(trunk_run.info.run_id, "final/tokens", 78_336.0)
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["tokens_trained"] == 175_104


def test_a_stopped_trunk_s_end_is_said_in_whole_batches(tmp_path, capsys):
    """A trunk stops at the last batch boundary at or below its branch point: `at 65,536 of
    104,857 tokens` named an end it never reaches (104,448, 102 batches of 1,024)."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    tracker.trunk("t" * 64, "optim.lr=0.01", {"optim.lr": 0.01, "train.batch_size": 8,
                                               "train.seq_len": 128}, schema.RUNNING)
    folder = tmp_path / "runs" / "trunks" / ("t" * 64)
    folder.mkdir(parents=True)
    (folder / "trunk.json").write_text(json.dumps({"tokens": 65_536, "checkpoints": {},
                                                   "branch_points": [52_428, 104_857]}))
    tracker.close_sweep(schema.INTERRUPTED)
    assert cli.main(["status", "unit", "--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["trunks_stopped"] == [
        {"trunk": "trunk optim.lr=0.01", "tokens": 65_536, "target": 104_448}]
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 0
    assert "at 65,536 of 104,448 tokens (63%)" in capsys.readouterr().out


def test_status_of_a_sweep_whose_spec_is_not_stored_yet_says_it_is_starting(tmp_path):
    """In the second between its record and its spec, status said 'Failed to download
    artifacts from path sweep.yaml ... check --tracking-uri'."""
    from orchestrator.sweep_record import stored_spec
    from trainer.schema import KIND_SWEEP, KIND_TAG, find_or_create_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("starting")
    find_or_create_run(client, exp, tags={KIND_TAG: KIND_SWEEP}, name="starting")
    with pytest.raises(ConfigError, match=r"^sweep 'starting' is starting: its spec is stored a "
                                          r"moment after its record; ask again in a few "
                                          r"seconds$"):
        stored_spec(uri, "starting")


def test_a_ray_address_that_cannot_be_a_cluster_is_one_sentence_at_once(monkeypatch):
    # `--address notahost` was a ValueError traceback, and a closed port an endless retry.
    import socket

    from orchestrator.driver import init_ray

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    for address, why in [("notahost", "'notahost' is not HOST:PORT"),
                         (f"127.0.0.1:{port}", f"nothing answers at 127.0.0.1:{port}")]:
        with pytest.raises(ConfigError) as err:
            init_ray(address)
        assert str(err.value).startswith(f"cannot reach the Ray cluster at --address={address}"
                                         f" ({why}")
    monkeypatch.setenv("RAY_ADDRESS", "ray://nohost")
    with pytest.raises(ConfigError, match=r"at RAY_ADDRESS=ray://nohost \('ray://nohost' is "
                                          r"not HOST:PORT\)"):
        init_ray(None)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("search, grid_tokens, expected", [
    ({"n_trials": 6}, None, 12),  # twice the trials
    # 8 LRs halving over four budgets: 16 left two LRs at the top rung (16/8/4/2), 17 leaves
    # three (17/9/5/3: a rung keeps the ceiling of half its trials)
    ({"n_trials": 8, "pruner": "halving"}, "choice(8192, 16384, 32768, 65536)", 17),
    ({"n_trials": 8, "pruner": {"halving": {"reduction_factor": 3}}},
     "choice(8192, 32768)", 16),
])
def test_a_fit_of_a_searched_sweep_suggests_enough_trials_to_bracket(tmp_path, search,
                                                                    grid_tokens, expected):
    uri = f"sqlite:///{tmp_path}/m.db"
    grid = {"optim.lr": "tag(log, interval(1e-3, 1e-1))"}
    if grid_tokens:
        grid["train.tokens"] = grid_tokens
    spec = {**_spec(tmp_path), "overrides": TRIAL[:-1] if grid_tokens else TRIAL, "grid": grid,
            "search": {"optuna": search}}
    _open_sweep(uri, spec)
    assert cli_fit._next_n_trials(uri, "unit") == expected
    assert cli_fit._next_n_trials(uri, None) is None


def test_a_dry_run_refuses_a_storage_root_the_launch_would_refuse_and_creates_nothing(
        tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(ConfigError, match=r"storage_root=/proc/nope/runs: cannot write there"):
        commands.dry_run(spec_from_dict({**_spec(tmp_path), "storage_root": "/proc/nope/runs"}),
                         tracking_uri=uri)
    # what `sweep status` and `list` read, from a machine that cannot write there: no probe
    assert prepare(spec_from_dict({**_spec(tmp_path), "storage_root": "/proc/nope/runs"}))
    fine = tmp_path / "new" / "runs"
    assert commands.dry_run(spec_from_dict({**_spec(tmp_path), "storage_root": str(fine)}),
                            tracking_uri=uri)
    assert not (tmp_path / "new").exists()


def test_names_and_spec_files_mixed_up_are_said_with_the_way(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path}/m.db"
    _open_sweep(uri, _spec(tmp_path))
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    MlflowClient(tracking_uri=uri).create_experiment("not_a_sweep")  # a user's own
    capsys.readouterr()
    assert cli.main(["status", str(path), "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err == (
        f"error: no sweep named '{path}' (known sweeps: unit): give the sweep's name, not its "
        "spec file (its name is unit)\n")
    assert cli.main(["resume", "unit", "optim.lr=0.1", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err.startswith(
        "error: sweep resume runs sweep unit as it was launched, without optim.lr=0.1: to add "
        "values use `sweep extend unit 'optim.lr=choice(0.1)'`")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", "unit", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err == (
        "error: sweep spec unit does not exist: give the path of a sweeps/*.yaml (to run a "
        "recorded sweep again: sweep resume unit)\n")


def test_status_prints_the_best_trial_s_searched_values_short():
    from orchestrator.status import _short_label

    assert _short_label("optim.lr=0.0043066092130092095 train.batch_size=16 seed=0") == \
        "optim.lr=0.004307 train.batch_size=16 seed=0"
    assert _short_label("optim.lr=0.003 train.tokens=1000000 data=files") == \
        "optim.lr=0.003 train.tokens=1000000 data=files"


def test_a_launch_with_nothing_to_run_keeps_a_stored_extension_that_is_not_done(tmp_path,
                                                                                capsys):
    # `sweep extend` interrupted, then the spec before it launched: storing that spec dropped
    # the extension, and `resume` no longer finished its trials.
    uri = f"sqlite:///{tmp_path}/m.db"
    extended_spec = {**_spec(tmp_path), "grid": {"optim.lr": "choice(3e-3, 1e-2, 3e-2)",
                                                 "train.batch_size": "choice(8, 16)"}}
    tracker = _open_sweep(uri, extended_spec)
    for trial in prepare(spec_from_dict(_spec(tmp_path)))[1]:  # the base's trials done
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
    capsys.readouterr()
    outcome = commands.launch(spec_from_dict(_spec(tmp_path)), tracking_uri=uri,
                              progress=False)
    assert (outcome.trials, outcome.already_done) == (4, 4)
    assert stored_spec(uri, "unit").grid["optim.lr"] == "choice(3e-3, 1e-2, 3e-2)"
    assert "stored spec holds trials not done that this spec does not: it is kept" in \
        capsys.readouterr().err


def test_the_spec_file_relaunched_after_an_extend_keeps_the_extended_sweep(tmp_path, capsys):
    """A stranger relaunched the spec file after three extends "to make sure everything is
    done": the sweep was re-pointed to the file's 6 trials of 72 (`status` and `resume` lost
    the rest, back only by typing every extend again), in a 900-character note."""
    uri = f"sqlite:///{tmp_path}/m.db"
    wide = {**_spec(tmp_path), "grid": {"optim.lr": "choice(3e-3, 1e-2, 3e-2)",
                                        "train.batch_size": "choice(8, 16)"}}
    tracker = _open_sweep(uri, wide)
    for trial in prepare(spec_from_dict(wide))[1]:
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    capsys.readouterr()
    assert cli.main(["launch", str(path), "--tracking-uri", uri]) == 0
    out, err = capsys.readouterr()
    assert err == ("note: sweep unit's stored spec (extended since this file) holds this "
                   "spec's 4 trials and 2 more: it stays the sweep's spec, so `sweep status`, "
                   "`resume` and `extend` keep all of it; give this spec another name for a "
                   "sweep of its own\n")
    assert "sweep unit: 4 trials, 4 already done, nothing to run" in out
    assert stored_spec(uri, "unit").grid["optim.lr"] == "choice(3e-3, 1e-2, 3e-2)"
    assert status(uri, "unit")["trials"] == 6
    # a spec that is not all in it (another base) still re-points the sweep, said as before
    other = {**_spec(tmp_path), "overrides": [*TRIAL, "optim.weight_decay=0.1"]}
    path.write_text(yaml.safe_dump(other))
    assert cli.main(["launch", str(path), "--tracking-uri", uri, "--dry-run"]) == 0
    assert "was launched before with another spec" in capsys.readouterr().err


def test_an_extend_by_values_the_sweep_has_says_it_adds_nothing(tmp_path, capsys):
    """`extend 'optim.lr=choice(1e-2)'` on an axis holding 0.01, or `seeds=[0]`, printed
    "4 trials: 4 done, 0 would run" as if that were what the extension came to."""
    uri = f"sqlite:///{tmp_path}/m.db"
    _open_sweep(uri, _spec(tmp_path))
    for given in (["optim.lr=choice(1e-2)"], ["seeds=[0]"],
                  ["optim.lr=choice(0.003)", "train.batch_size=choice(16)"]):
        assert cli.main(["extend", "unit", *given, "--dry-run", "--tracking-uri", uri]) == 0
        assert (f"note: sweep unit has every value given already ({' '.join(given)}): this "
                "extend adds no trial") in capsys.readouterr().err
    assert cli.main(["extend", "unit", "optim.lr=choice(1e-2, 3e-2)", "--dry-run",
                     "--tracking-uri", uri]) == 0
    assert "adds no trial" not in capsys.readouterr().err


def test_a_sweeps_artifacts_live_beside_its_sqlite_store_not_where_the_command_ran(
        tmp_path, monkeypatch, capsys):
    """A store's experiments kept their spec in `./mlruns/<id>` of whichever folder the command
    ran from: stores in one folder shared `mlruns/1`, and a sweep whose folder was gone then
    read `is starting` forever."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/stores/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    artifacts = tmp_path / "stores" / "m-artifacts" / "unit"
    assert (artifacts / "").is_dir() and not (tmp_path / "mlruns").exists()
    run = MlflowClient(tracking_uri=uri).get_run(tracker.parent_id)
    assert run.info.artifact_uri.startswith(artifacts.as_uri())
    assert stored_spec(uri, "unit").name == "unit"
    assert schema.artifact_location(uri, "a/b c") == (
        tmp_path / "stores" / "m-artifacts" / "a_b_c-9f597a63").as_uri()
    assert schema.artifact_location("http://server:5000", "unit") is None

    import shutil
    shutil.rmtree(tmp_path / "stores" / "m-artifacts")  # moved away, or deleted
    MlflowClient(tracking_uri=uri).set_terminated(tracker.parent_id)
    assert cli.main(["status", "unit", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err == (
        f"error: sweep 'unit' has lost its stored spec (sweep.yaml is not in "
        f"{run.info.artifact_uri}: that folder was moved or deleted); launch its spec file "
        "again (`sweep launch SPEC`: it trains only what is not done) to store it anew\n")


def test_a_dry_run_creates_no_tracking_store(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/nodir/x.db"
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    assert "4 trials: 0 done, 4 would run" in capsys.readouterr().out
    assert not (tmp_path / "nodir").exists()


def test_a_store_that_is_not_sqlite_is_one_sentence(tmp_path, capsys):
    (tmp_path / "t").write_text("hi\n")
    uri = f"sqlite:///{tmp_path}/t"
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    for argv in (["list"], ["launch", str(path), "--dry-run"], ["status", "unit"]):
        assert cli.main([*argv, "--tracking-uri", uri]) == 2
        assert capsys.readouterr().err == (
            f"error: the tracking store {tmp_path}/t is not an SQLite database (a file of "
            "something else): point --tracking-uri (or MLFLOW_TRACKING_URI) at the sweep's "
            "store, or at a new file, e.g. sqlite:///mlflow.db\n")
    (tmp_path / "empty.db").touch()  # an empty file: a new store to launch into, none to read
    empty = f"sqlite:///{tmp_path}/empty.db"
    assert cli.main(["list", "--tracking-uri", empty]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: the tracking store {tmp_path}/empty.db is an empty file: launch a sweep first")
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", empty]) == 0


def test_a_note_on_a_changed_spec_is_said_only_once_the_spec_is_good(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = _spec(tmp_path)
    _open_sweep(uri, spec)
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump({**spec, "overrides": [*TRIAL, "optim.lrr=0.01"]}))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "note:" not in err and err.startswith("error: ")


def test_ctrl_c_before_the_sweep_runs_is_one_line(monkeypatch, tmp_path, capsys):
    """Ctrl-C while Ray started (or a second one while the driver wound down) printed
    Python's stack and exited 1."""
    import signal

    def interrupted(args, uri):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "resume": interrupted,
                                          "fit": interrupted})
    handler = signal.getsignal(signal.SIGINT)
    try:
        uri = f"sqlite:///{tmp_path}/m.db"
        create_sqlite_store_once(uri)  # (`resume` reads a store that exists)
        assert cli.main(["resume", "unit", "--tracking-uri", uri]) == 130
        assert capsys.readouterr().err == (
            "interrupted; nothing that finished is lost: `sweep resume unit` goes on from there "
            "(`sweep status unit` shows where it stands)\n")
        assert signal.getsignal(signal.SIGINT) not in (handler, signal.SIG_IGN)  # (exits)
        assert cli.main(["fit", "unit", "--tracking-uri", uri]) == 130
        assert capsys.readouterr().err == "interrupted\n"
    finally:
        signal.signal(signal.SIGINT, handler)


def test_sigterm_before_the_sweep_runs_is_one_line_and_exits_143(monkeypatch, tmp_path,
                                                                 capsys):
    """A scheduler's stop (SIGTERM) while Ray started killed the command without a word; it
    is taken as Ctrl-C is, said as what it was."""
    import signal

    from trainer.errors import Terminated

    def terminated(args, uri):
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        raise Terminated

    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "resume": terminated})
    handler = signal.getsignal(signal.SIGINT)
    try:
        uri = f"sqlite:///{tmp_path}/m.db"
        create_sqlite_store_once(uri)
        assert cli.main(["resume", "unit", "--tracking-uri", uri]) == 128 + signal.SIGTERM
        assert capsys.readouterr().err == (
            "terminated (SIGTERM); nothing that finished is lost: `sweep resume unit` goes on "
            "from there (`sweep status unit` shows where it stands)\n")
    finally:
        signal.signal(signal.SIGINT, handler)


def test_ctrl_c_of_a_launch_before_its_trials_names_the_sweep_and_closes_it(
        monkeypatch, tmp_path, capsys):
    """It said `sweep resume NAME`, left the sweep marked running under its (then gone)
    process, which `status` read "killed", and told to resume a sweep the store did not
    have."""
    import signal

    from trainer.lease import driver_label

    def interrupted(args, uri):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "launch": interrupted})
    handler = signal.getsignal(signal.SIGINT)
    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    try:
        assert cli.main(["launch", str(path), "--tracking-uri", uri, "--fuse", "off",
                         "seeds=[0,1]"]) == 130
        assert capsys.readouterr().err == (  # (the command as given: the same sweep)
            f"interrupted; nothing of the sweep was recorded yet: `sweep launch {path} "
            f"--tracking-uri {uri} --fuse off 'seeds=[0,1]'` starts it again\n")
        tracker = Tracker(uri, "unit", code_version="test", driver=driver_label(),
                          spec_yaml=yaml.safe_dump(spec_from_dict(_spec(tmp_path)).to_dict()))
        assert cli.main(["launch", str(path), "--tracking-uri", uri]) == 130
        assert capsys.readouterr().err == (
            "interrupted; nothing that finished is lost: `sweep resume unit` goes on from there "
            "(`sweep status unit` shows where it stands)\n")
    finally:
        signal.signal(signal.SIGINT, handler)
    parent = MlflowClient(tracking_uri=uri).get_run(tracker.parent_id)
    assert parent.data.tags[schema.SWEEP_STATUS_TAG] == schema.INTERRUPTED
    assert status(uri, "unit")["status"] == "interrupted"
    assert status(uri, "unit")["driver_gone"] is None  # (not "killed")
    # An extend (or a launch of another spec) stopped while Ray started had not stored its
    # spec: it said `sweep resume unit` goes on, which then ran the old spec, the new trials
    # dropped without a word
    extend = ["extend", "unit", "optim.lr=choice(3e-2)", "--tracking-uri", uri]
    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "extend": interrupted})
    try:
        assert cli.main(extend) == 130
        assert capsys.readouterr().err == (
            "interrupted; the sweep's extension was not stored yet: `sweep extend unit "
            f"'optim.lr=choice(3e-2)' --tracking-uri {uri}` goes on (nothing that finished is "
            "lost or trained again)\n")
        wider = extended(spec_from_dict(_spec(tmp_path)), ["optim.lr=choice(3e-2)"])
        Tracker(uri, "unit", code_version="test", driver=driver_label(),
                spec_yaml=yaml.safe_dump(wider.to_dict()))  # (stored: a resume goes on)
        assert cli.main(extend) == 130
        assert "`sweep resume unit` goes on" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGINT, handler)
    # With the server gone (the end of a launch waited on it, and said Ctrl-C leaves it), the
    # hint waited out MLflow's retries for 4 minutes before it printed
    import socket
    import time
    from argparse import Namespace

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        start = time.monotonic()
        hint, _ = cli_launch._interrupted_hint(Namespace(command="resume", name="unit"),
                                               f"http://127.0.0.1:{sock.getsockname()[1]}")
        assert time.monotonic() - start < 10 and "`sweep resume unit` goes on" in hint


def test_a_launch_names_each_recorded_trial_after_its_label_in_the_spec(tmp_path):
    """After `extend` added an axis, the trials before it kept names without it: two trials
    read alike in `status` (`best: ...`) and the MLflow UI."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    wider = spec_from_dict({**_spec(tmp_path), "grid": {
        **_spec(tmp_path)["grid"], "optim.weight_decay": "choice(0.0)"}})
    trials = prepare(wider)[1]
    for trial in trials:  # recorded under the names the spec before the axis gave them
        _child(uri, tracker, trial.trial_id, schema.FINISHED, final__eval_loss=2.5)
    assert commands.launch(wider, tracking_uri=uri, progress=False).already_done == 4
    names = {s["run"].info.run_name for s in schema.recorded_trials(uri, "unit").values()}
    assert names == {t.label for t in trials}
    assert all("optim.weight_decay=0.0" in name for name in names)


def test_the_dry_run_calls_a_trial_no_worker_holds_interrupted_as_status_does(tmp_path):
    """A driver killed with kill -9 leaves its trials recorded `running`: `sweep status` said
    interrupted, the dry run `run (running)`, as if something trained them."""
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = spec_from_dict(_spec(tmp_path))
    _, trials = prepare(spec)
    tracker = Tracker(uri, spec.name, code_version="t",
                      spec_yaml=yaml.safe_dump(spec.to_dict()))
    MlflowClient(tracking_uri=uri).create_run(tracker.experiment_id, tags={
        schema.PARENT_RUN_TAG: tracker.parent_id, schema.KIND_TAG: schema.KIND_TRIAL,
        schema.TRIAL_ID_TAG: trials[0].trial_id, schema.TRIAL_STATUS_TAG: schema.RUNNING})
    plan = {t.trial_id: action for t, action in commands.dry_run(spec, tracking_uri=uri)}
    assert plan[trials[0].trial_id] == "run (interrupted)"
    assert {plan[t.trial_id] for t in trials[1:]} == {"run"}


def test_a_relaunch_that_changes_only_how_trials_run_says_so(tmp_path):
    """The note of a relaunch with another spec listed the overrides and grid it changed, and
    not max_concurrent (which `status`, `resume` and `extend` then follow too)."""
    uri = f"sqlite:///{tmp_path}/m.db"
    raw = {**_spec(tmp_path), "max_concurrent": 2}
    _open_sweep(uri, raw)
    same = cli_launch._another_base(spec_from_dict(raw), uri)
    assert same == []
    one = cli_launch._another_base(spec_from_dict({**raw, "max_concurrent": 1, "retries": 0}), uri)
    assert one == ["sweep unit now runs with max_concurrent: 2 → 1; retries: 2 → 0 (its trials "
                   "stay as they are; `sweep status`, `resume` and `extend` follow this spec)"]
    both = cli_launch._another_base(spec_from_dict({**raw, "max_concurrent": 1, "grid": {
        **raw["grid"], "optim.lr": "choice(3e-3, 3e-2)"}}), uri)
    assert len(both) == 1 and \
        "grid.optim.lr without 0.01 and with 0.03; max_concurrent: 2 → 1)" in both[0]
    # the same values spelt otherwise (a spec file against the stored spec after an extend,
    # which writes its numbers out) are no change: every value was listed as one
    spelt = {**raw, "grid": {**raw["grid"], "optim.lr": "choice(0.003, 0.01)"}}
    assert cli_launch._another_base(spec_from_dict(spelt), uri) == []


def test_status_reads_a_running_trials_progress_from_its_folder_before_the_store_has_it(
        tmp_path):
    """A running trial's metrics reach the store every few seconds: a trial tens of seconds
    in, its metrics.jsonl long written, was "no metrics written yet"."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    first, second = [t.trial_id for t in prepare(spec_from_dict(_spec(tmp_path)))[1]][:2]
    for trial_id in (first, second):  # (no params either: they go with the first metrics)
        _child(uri, tracker, trial_id, schema.RUNNING)
    folder = tmp_path / "runs" / first
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train.tokens": 32768}))
    rows = [{"step": s, "train/tokens": 1024 * s, "train/loss": 3.5 - s / 100}
            for s in range(1, 9)]
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "train/to')  # (mid-write)
    running = {r[schema.TRIAL_ID_TAG]: r for r in status(uri, "unit")["running"]}
    assert running[first]["progress"] == pytest.approx(8192 / 32768)
    assert running[first]["train/loss"] == pytest.approx(3.42)
    assert running[second]["progress"] is None and running[second]["train/loss"] is None


def test_status_takes_a_running_trials_progress_from_its_folder_when_the_store_lags(tmp_path):
    """The store holds what the tracker last wrote (every 10 s or more): a short trial at 98%
    in its metrics.jsonl read 45%."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = _open_sweep(uri, _spec(tmp_path))
    first, second = [t.trial_id for t in prepare(spec_from_dict(_spec(tmp_path)))[1]][:2]
    for trial_id in (first, second):
        run_id = _child(uri, tracker, trial_id, schema.RUNNING, train__tokens=4096,
                        train__loss=3.46)
        MlflowClient(tracking_uri=uri).log_param(run_id, "train.tokens", "32768")
        folder = tmp_path / "runs" / trial_id
        folder.mkdir(parents=True)
        rows = [{"step": s, "train/tokens": 1024 * s, "train/loss": 3.5 - s / 100}
                for s in range(1, 9 if trial_id == first else 3)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    running = {r[schema.TRIAL_ID_TAG]: r for r in status(uri, "unit")["running"]}
    assert running[first]["progress"] == pytest.approx(8192 / 32768)
    assert running[first]["train/loss"] == pytest.approx(3.42)
    # (a folder behind the store, as one that another host writes: the store's)
    assert running[second]["progress"] == pytest.approx(4096 / 32768)
    assert running[second]["train/loss"] == pytest.approx(3.46)


def test_a_resume_that_cannot_see_the_storage_root_says_its_begun_trials_start_over(
        tmp_path, capsys):
    """A second user's `sweep resume` on a machine without the sweep's storage_root (the
    first user's disk) started the interrupted trials over in a new folder, saying nothing:
    their checkpoints were on the other machine."""
    uri = f"sqlite:///{tmp_path}/m.db"
    gone = tmp_path / "alice" / "runs"
    spec = {**_spec(tmp_path), "storage_root": str(gone)}
    _, trials = prepare(spec_from_dict(spec))
    tracker = _open_sweep(uri, spec)
    _child(uri, tracker, trials[0].trial_id, schema.INTERRUPTED, train__loss=3.1)
    _child(uri, tracker, trials[1].trial_id, schema.FINISHED, train__loss=2.5)
    _child(uri, tracker, trials[2].trial_id, schema.INTERRUPTED)  # (no step trained yet)
    assert cli.main(["--tracking-uri", uri, "resume", "unit", "--dry-run"]) == 0
    assert (f"note: storage_root {gone} is not on this machine: the checkpoints of the 1 "
            "unfinished trial that trained are where the sweep ran, and here it would start "
            f"over; resume where {gone} is mounted to go on from them"
            in capsys.readouterr().err.splitlines())
    (tmp_path / "unit.yaml").write_text(yaml.safe_dump(spec))  # the spec launched again
    assert cli.main(["--tracking-uri", uri, "launch", str(tmp_path / "unit.yaml"),
                     "--dry-run"]) == 0
    assert "1 unfinished trial that trained" in capsys.readouterr().err
    gone.mkdir(parents=True)  # (there, the resume goes on from them: nothing to say)
    assert cli.main(["--tracking-uri", uri, "resume", "unit", "--dry-run"]) == 0
    assert "is not on this machine" not in capsys.readouterr().err


def test_what_resume_and_a_spec_key_override_suggest_is_taken(tmp_path, capsys):
    """`sweep resume s optim.lr=0.1` suggested `sweep extend s optim.lr=0.1`, which extend
    refuses (a plain value); `max_concurrent=0` suggested `--max-concurrent 0`, which the flag
    refuses."""
    uri = f"sqlite:///{tmp_path}/m.db"
    create_sqlite_store_once(uri)
    assert cli.main(["resume", "my sweep", "optim.lr=0.1", "seeds=[0,1]", "--tracking-uri",
                     uri]) == 2
    assert capsys.readouterr().err == (
        "error: sweep resume runs sweep my sweep as it was launched, without optim.lr=0.1 "
        "seeds=[0,1]: to add values use `sweep extend 'my sweep' 'optim.lr=choice(0.1)' "
        "'seeds=[0,1]'`; for another base, launch a spec under another name\n")
    assert cli.main(["launch", "sweeps/demo.yaml", "max_concurrent=0", "--tracking-uri",
                     uri]) == 2
    assert capsys.readouterr().err == (
        "error: max_concurrent=0 sets the sweep spec's `max_concurrent`, not the trainer's "
        "config: write it in the spec file and launch that (nothing done trains again) (a "
        "whole number >= 1, or null)\n")


def test_a_dry_run_refuses_a_hub_dataset_it_cannot_reach_as_the_launch_does(tmp_path,
                                                                              monkeypatch,
                                                                              capsys):
    """The dry run listed 2 trials to run; the launch then refused them: the hub unreachable."""
    # (a closed loopback port stands for "no network" whether or not this machine has one)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("PROXYSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    spec = {**_spec(tmp_path), "overrides": ["model=tiny", "data=hf",
                                             "data.name=someorg/somedata"]}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/m.db"
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err.startswith(
        "error: data.name=someorg/somedata needs the Hugging Face hub, which is unreachable")


def test_a_cancel_while_a_new_sweep_starts_stops_it_before_any_trial(tmp_path, monkeypatch,
                                                                     capsys):
    """`sweep cancel NAME` typed while a new sweep's launch started Ray said "no sweep named"
    and the launch then ran every trial: the launch's marker on this host lets the cancel
    reach it, and it stops at its first look, recording nothing."""
    import threading

    from orchestrator import starting

    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    said, threads = [], []

    def cancel_while_ray_starts(spec, address):  # (in place of Ray's start: a cancel comes)
        thread = threading.Thread(target=lambda: said.append(cli.main(
            ["cancel", "unit", "--tracking-uri", uri])))
        thread.start()
        threads.append(thread)
        request = starting._request(starting._marker(uri, "unit"))
        deadline = time.monotonic() + 30
        while not request.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return []

    monkeypatch.setattr(commands, "_cluster_problems", cancel_while_ray_starts)
    assert cli.main(["launch", str(path), "--tracking-uri", uri]) == 130
    threads[0].join(timeout=30)
    assert said == [0]
    out = capsys.readouterr().out
    assert "sweep unit: 4 trials, 0 already done, stopped before any trial ran\n" in out
    assert ("sweep unit stopped before it began (`sweep cancel`): nothing of it was recorded; "
            "launch the spec again to run it\n") in out
    assert f"sweep unit was starting ({socket.gethostname()} {os.getpid()}, not recorded " \
           "yet): it stops before any trial runs, and records nothing\n" in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("unit") is None
    assert not starting._marker(uri, "unit").exists()  # (gone with the launch)
    # with no launch starting, the unknown name is said as before
    assert cli.main(["cancel", "unit", "--tracking-uri", uri]) == 2
    assert "no sweep named 'unit'" in capsys.readouterr().err


def test_a_pid_reused_after_a_killed_launch_is_not_its_driver(tmp_path, monkeypatch):
    """A launch killed (SIGKILL) while starting leaves its marker; a process that later got
    its pid made `sweep cancel` wait a minute for a launch that was gone. A process under the
    pid that started after the marker was written (or after a sweep's last heartbeat) is
    another one."""
    import subprocess

    from orchestrator import starting
    from trainer.lease import gone_driver

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    other = subprocess.Popen(["sleep", "60"])
    try:
        label = f"{socket.gethostname()} {other.pid}"
        marker = starting._marker("sqlite:///x.db", "unit")
        marker.parent.mkdir(parents=True)
        marker.write_text(json.dumps({"driver": label, "sweep": "unit"}))
        assert starting.starting_driver("sqlite:///x.db", "unit") == label
        killed_at = time.time() - 600
        os.utime(marker, (killed_at, killed_at))  # (written by a launch before this process)
        assert starting.starting_driver("sqlite:///x.db", "unit") is None
        assert gone_driver(label, killed_at) == other.pid
        assert gone_driver(label, time.time()) is None
        assert gone_driver(label) is None  # (no moment known: a live pid is the driver)
    finally:
        other.kill()
        other.wait()
    assert gone_driver(label) == other.pid


def test_a_searched_sweep_refuses_keys_no_trial_reads_as_a_grid_does(tmp_path, capsys):
    """A grid refused `model.base_width` under `model.param=sp` (it only changes the trial
    ids); a searched sweep took it, and a searched `schedule.a` under WSD spent the study's
    trials on a dimension no trial reads."""
    uri = f"sqlite:///{tmp_path}/m.db"
    spec = {"name": "s", "overrides": [*TRIAL, "schedule=wsd"],
            "grid": {"optim.lr": "tag(log, interval(1e-3, 1e-1))"},
            "search": {"optuna": {"n_trials": 4}}, "storage_root": str(tmp_path / "runs")}
    for name, extra, said in (
            ("sp", {"overrides": [*spec["overrides"], "model.param=sp"]},
             "error: overrides: model.base_width=32: model.param=sp does not read it (only mup "
             "does); it would only change the trial ids"),
            ("a", {"grid": {**spec["grid"], "schedule.a": "interval(3.0, 4.0)"}},
             "error: grid.schedule.a: interval(3.0, 4.0): schedule=wsd does not read it (only "
             "power does); it would only change the trial ids")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**spec, **extra}))
        for dry in (["--dry-run"], []):
            assert cli.main(["launch", str(path), *dry, "--tracking-uri", uri]) == 2
            assert capsys.readouterr().err.startswith(said)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("grid, extra, said", [
    ({"model.width": "choice(32, 48)"}, [],
     "no fused groups: the points a study asks differ in model.width, and only optim.lr, "
     "optim.weight_decay, optim.timescale and schedule.* may differ within a fused group"),
    ({}, ["train.batch_schedule=norm_test", "train.micro_batch_size=4"],
     "no fused groups: train.batch_schedule=norm_test grows each member's batch on its own"),
    ({}, [], "fused: each study asks up to 2 points at once"),
])
def test_a_searched_dry_run_fuses_only_what_can_fuse(tmp_path, capsys, grid, extra, said):
    """`fuse: true` on a search over the width (or under the norm test) said each study
    would ask 2 points at once and train them as one group: they could not fuse, and the
    study asked them together (less adaptive) for nothing."""
    from orchestrator.fusion import searched_fusion_off
    from orchestrator.search_space import plan_search

    spec = {"name": "s", "overrides": [*[o for o in TRIAL if not o.startswith(
                "model.width")], *extra] + (["model.width=32"] if not grid else []),
            "grid": {"optim.lr": "tag(log, interval(1e-4, 1e-1))", **grid},
            "search": {"optuna": {"n_trials": 4}}, "fuse": True,
            "storage_root": str(tmp_path / "runs")}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri",
                     f"sqlite:///{tmp_path}/m.db"]) == 0
    assert said in capsys.readouterr().out
    why = searched_fusion_off(plan_search(spec_from_dict(spec)))
    assert (why is None) == said.startswith("fused:")



def test_a_searched_dry_run_of_a_finite_space_asks_no_more_than_its_points(tmp_path, capsys):
    """n_trials 5 over 3 choices: the note said it stops at 3, the study line "would ask 5";
    and `per_slice: [seed]` was told to add seed to the grid, which is refused."""
    spec = {"name": "s", "overrides": TRIAL,
            "grid": {"optim.lr": "tag(log, choice(1e-3, 1e-2, 1e-1))"},
            "search": {"optuna": {"n_trials": 5}}, "storage_root": str(tmp_path / "runs")}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/m.db"
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 0
    assert "study seed=0: 0 trials used, would ask 3 more" in capsys.readouterr().out
    path.write_text(yaml.safe_dump({**spec, "search": {"optuna": {"n_trials": 5,
                                                                  "per_slice": ["seed"]}}}))
    assert cli.main(["launch", str(path), "--dry-run", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: search.optuna.per_slice: 'seed': a sweep has one study per seed "
        "already (its `seeds`); remove seed from per_slice\n")


def test_ray_prints_no_colour_codes_into_a_log_file(monkeypatch):
    """A launch written to a file (`nohup sweep launch ... > log`) got Ray's colour codes with
    a lost worker's lines (`[33m(raylet)`)."""
    import io

    import ray

    from orchestrator import driver

    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # (not a terminal)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    try:
        driver.init_ray(None)
        assert os.environ["RAY_COLOR_PREFIX"] == "0"
    finally:
        os.environ.pop("RAY_COLOR_PREFIX", None)


_STOP_DURING_RAY_START = """
import os, signal, sys, threading
from orchestrator import driver
import ray
threading.Timer(0.3, os.kill, (os.getpid(), getattr(signal, sys.argv[1]))).start()
try:
    driver.init_ray(None)
except KeyboardInterrupt as stop:
    print("stopped", type(stop).__name__, ray.is_initialized(), driver.sigterm_received())
    ray.shutdown()
    sys.exit(0)
print("went on")
ray.shutdown()
"""


@pytest.mark.parametrize("name, said", [("SIGTERM", "stopped Terminated True True"),
                                        ("SIGINT", "stopped KeyboardInterrupt True False")])
def test_a_stop_while_ray_starts_is_taken_once_it_has_started(tmp_path, name, said):
    """A real `ray.init` signalled 0.3 s in: Ray's own SIGTERM handler ended the launch with
    exit 15 and no word, and a Ctrl-C that landed in a fork handler of its subprocesses was
    printed as "Exception ignored" and the sweep ran to its end. Both are held and taken as
    the launch's stop once Ray is up."""
    import signal
    import subprocess

    # (SIGINT as a terminal's foreground command has it: pytest run as a background job hands
    # its children SIGINT ignored, which a launch keeps)
    done = subprocess.run([sys.executable, "-c", _STOP_DURING_RAY_START, name],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "RAY_ADDRESS": "local",
                               "PYTHONPATH": os.getcwd()},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == said


def test_a_stop_as_the_launch_closed_its_finished_sweep_says_so_and_exits_0(
        monkeypatch, tmp_path, capsys):
    """A Ctrl-C 0.1 s after the last trial ended, past the driver's loop: "nothing that
    finished is lost: `sweep resume` goes on", exit 130, and no summary, of a sweep the store
    held finished, whose resume then found nothing to run."""
    import signal

    uri = f"sqlite:///{tmp_path}/m.db"
    create_sqlite_store_once(uri)
    tracker = _open_sweep(uri, _spec(tmp_path))
    tracker.close_sweep(schema.FINISHED)
    capsys.readouterr()

    def interrupted(args, uri):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "resume": interrupted})
    handler, term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        # a stop before its loop (while Ray started) finds the sweep its last launch closed
        # finished, and this spec's trials to run: not "nothing to resume"
        from orchestrator import driver

        monkeypatch.setattr(driver, "_loop_ended", False)
        assert cli.main(["resume", "unit", "--tracking-uri", uri]) == 130
        assert "`sweep resume unit` goes on" in capsys.readouterr().err
        monkeypatch.setattr(driver, "_loop_ended", True)
        assert cli.main(["resume", "unit", "--tracking-uri", uri]) == 0
        assert capsys.readouterr().err == (
            "interrupted; the sweep had ended as it came: every trial has ended and is "
            "recorded, nothing to resume (`sweep status unit`)\n")
        tracker = _open_sweep(uri, _spec(tmp_path))  # (running again: the stop leaves work)
        assert cli.main(["resume", "unit", "--tracking-uri", uri]) == 130
        assert "`sweep resume unit` goes on" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, term)


def test_a_stop_held_while_ray_fails_to_start_is_the_stop_said():
    """A job's SIGTERM reaches Ray's own processes too, and `ray.init` then fails: the held
    stop was dropped and the launch said "cannot reach the Ray cluster", exit 2."""
    import signal

    from orchestrator import driver
    from trainer.errors import Terminated

    before = signal.getsignal(signal.SIGTERM)
    driver.stop_on_sigterm()
    try:
        with pytest.raises(Terminated), driver._signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            raise RuntimeError("GCS exited")
        assert driver.sigterm_received()
    finally:
        signal.signal(signal.SIGTERM, before)
        driver._sigterm_received = False


def test_a_sigint_the_launch_inherited_ignored_stays_ignored_while_ray_starts():
    """A script's background job (`sweep launch ... &`) inherits SIGINT ignored: a `kill -INT`
    stopped it while Ray started and did nothing a second later (tests by a stranger)."""
    import signal

    from orchestrator import driver

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with driver._signals_held():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # (held)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(KeyboardInterrupt), driver._signals_held():  # (taken when not)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, before)


def test_budgets_that_share_no_trunk_though_sharing_is_on_are_said_at_launch(tmp_path):
    """A cosine grid over train.tokens with share_prefix: true trained every budget from
    scratch, and only `--dry-run` said so (tests by a stranger)."""
    from orchestrator.commands import _unshared_budgets

    raw = {**_spec(tmp_path), "grid": {"optim.lr": "choice(3e-3, 1e-2)",
                                       "train.tokens": "choice(16384, 32768)"}}
    cosine = {**raw, "overrides": [*TRIAL[:-1], "schedule=cosine"]}
    assert _unshared_budgets(*prepare(spec_from_dict(cosine))) == [
        "the sweep's 2 train.tokens budgets share no trunk: each trains from scratch "
        "(schedule=cosine: its LR depends on train.tokens from the first step; only wsd and "
        "power have a stable phase to share)"]
    wsd = {**raw, "overrides": [*TRIAL[:-1], "schedule=wsd", "schedule.warmup_tokens=1024"]}
    assert _unshared_budgets(*prepare(spec_from_dict(wsd))) == []  # (they share)
    assert _unshared_budgets(*prepare(spec_from_dict({**cosine, "share_prefix": False}))) == []
