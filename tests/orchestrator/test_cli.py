"""`sweep`'s command line: global options before or after the subcommand; no Ray here."""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.cli import parse_args


@pytest.mark.parametrize("argv, uri, address", [
    (["launch", "s.yaml", "--tracking-uri", "B"], "B", None),
    (["--tracking-uri", "A", "launch", "s.yaml"], "A", None),
    (["--tracking-uri", "A", "launch", "s.yaml", "--tracking-uri", "B"], "B", None),  # after wins
    (["--address", "R", "launch", "s.yaml", "--tracking-uri", "B"], "B", "R"),
    (["--tracking-uri", "A", "launch", "s.yaml", "--address", "R"], "A", "R"),
    (["--address", "R", "launch", "s.yaml", "--address", "S"], None, "S"),
    (["launch", "s.yaml"], None, None),
])
def test_global_options_go_before_or_after_the_subcommand(argv, uri, address):
    args = parse_args(argv)
    assert (args.tracking_uri, args.address, args.spec) == (uri, address, "s.yaml")


@pytest.mark.parametrize("command", [["resume", "n"], ["extend", "n", "optim.lr=choice(1)"]])
def test_every_subcommand_that_reaches_ray_takes_address_on_either_side(command):
    assert parse_args([*command, "--dry-run"]).dry_run  # (resume refused --dry-run)
    assert parse_args(["--address", "R", *command]).address == "R"
    assert parse_args([*command, "--address", "R"]).address == "R"
    assert parse_args([*command, "--tracking-uri", "B"]).tracking_uri == "B"


@pytest.mark.parametrize("command", [["status", "n"], ["cancel", "n"], ["ui"], ["fit", "n"],
                                     ["recommend", "n", "--params", "1", "--tokens", "1"]])
def test_every_subcommand_takes_the_tracking_uri_on_either_side(command):
    assert parse_args(["--tracking-uri", "A", *command]).tracking_uri == "A"
    assert parse_args([*command, "--tracking-uri", "B"]).tracking_uri == "B"
    assert parse_args(["--tracking-uri", "A", *command, "--tracking-uri", "B"]).tracking_uri \
        == "B"


def test_overrides_may_surround_options():
    args = parse_args(["launch", "s.yaml", "a=1", "--tracking-uri", "B", "b=2", "--dry-run",
                       "a=3"])
    assert args.overrides == ["a=1", "b=2", "a=3"] and args.dry_run
    assert args.tracking_uri == "B"


@pytest.mark.parametrize("value, fuse", [("auto", "auto"), ("on", True), ("off", False),
                                         ("1", 1), ("4", 4)])
def test_fuse_on_the_command_line(value, fuse):
    assert parse_args(["launch", "s.yaml", "--fuse", value]).fuse == fuse
    assert parse_args(["launch", "s.yaml"]).fuse is None  # the spec's (default auto)


def test_max_concurrent_on_the_command_line_is_this_launch_s_only(tmp_path, monkeypatch):
    """Lowering the concurrency of a stored sweep for one resume had no way: `resume NAME
    max_concurrent=1` pointed at `extend`, which said to write it in the spec."""
    import yaml

    from orchestrator import commands
    from orchestrator.cli import main

    assert parse_args(["resume", "n", "--max-concurrent", "2"]).max_concurrent == 2
    assert parse_args(["extend", "n", "a=1", "--max-concurrent", "3"]).max_concurrent == 3
    from orchestrator.driver import SweepOutcome

    seen = []
    monkeypatch.setattr(commands, "launch", lambda spec, **kw: seen.append(spec) or SweepOutcome(
        trials=0, already_done=0))
    spec = {"name": "m", "overrides": ["model=tiny", "data=synthetic"], "max_concurrent": 4,
            "grid": {"optim.lr": "choice(1e-3)"}, "storage_root": str(tmp_path / "runs")}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(tmp_path / "m.yaml"),
          "--max-concurrent", "1"])
    assert seen[0].max_concurrent == 1  # what this launch runs with
    assert seen[0].to_dict()["max_concurrent"] == 4  # what the sweep keeps


def test_a_spec_key_given_to_resume_says_where_it_goes(tmp_path, capsys):
    from orchestrator.cli import main
    from orchestrator.store import create_sqlite_store_once

    uri = f"sqlite:///{tmp_path}/m.db"
    create_sqlite_store_once(uri)
    assert main(["--tracking-uri", uri, "resume", "n", "max_concurrent=1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: max_concurrent=1 sets the sweep spec's `max_concurrent`, not the trainer's "
        "config: write it in the spec file and launch that (nothing done trains again), or "
        "give --max-concurrent 1")


@pytest.mark.parametrize("argv, fragment", [
    (["launch", "s.yaml", "--fuse", "0"], "--fuse 0: give auto (the default: on for CPU"),
    (["recommend", "n", "--params", "1e9", "--tokens", "0"],
     "argument --tokens: '0': give a finite number > 0"),
    (["recommend", "n", "--params", "inf", "--tokens", "1e9"],
     "argument --params: 'inf': give a finite number > 0"),
    (["recommend", "n", "--params", "1e9", "--tokens", "1e9", "--batch", "nan"],
     "argument --batch: 'nan': give a finite number > 0"),
    (["fit", "n", "--n-boot", "-5"], "argument --n-boot: '-5': give 0 (no intervals) or a "
     "whole number of resamples >= 20"),
    (["recommend", "n", "--params", "1e9", "--tokens", "1e9", "--n-boot", "1"],
     "argument --n-boot: '1': give 0 (no intervals) or a whole number of resamples >= 20"),
    (["ui", "n", "--port", "99999"], "argument --port: '99999': give a port number from 1"),
    (["--address", "R", "status", "n"], "--address applies to launch, resume, extend"),
    (["status", "n", "--address", "R"], "--address applies to launch, resume, extend"),
    (["fit", "n", "--address=R"], "--address applies to launch, resume, extend"),
    (["status", "n", "--bogus"], "unrecognized arguments: --bogus"),
    # ("the following arguments are required: spec, overrides": overrides are not)
    (["launch"], "usage: sweep launch [options] spec [overrides ...]\nsweep launch: error: "
                 "give the spec file to launch, e.g. sweep launch sweeps/demo.yaml (overrides "
                 "after it are optional)"),
    (["launch", "--dry-run"], "sweep launch: error: give the spec file to launch"),
])
def test_options_where_they_mean_nothing_are_refused(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and fragment in capsys.readouterr().err


def test_help_says_where_global_options_go(capsys):
    for argv, ray in ((["--help"], True), (["launch", "--help"], True),
                      (["resume", "--help"], True), (["status", "--help"], False)):
        with pytest.raises(SystemExit):
            parse_args(argv)
        text = capsys.readouterr().out
        assert "global options (before or after the subcommand)" in text
        assert "--tracking-uri URI" in text and ("--address ADDR" in text) == ray


def test_the_uri_after_the_subcommand_is_the_store_used(monkeypatch, tmp_path):
    seen = {}

    def status(args, uri):
        seen["uri"] = uri
        return 0

    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "status": status})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    monkeypatch.chdir(tmp_path)
    from orchestrator.store import create_sqlite_store_once

    create_sqlite_store_once(f"sqlite:///{tmp_path}/m.db")  # (`status` reads one that exists)
    assert cli.main(["status", "x", "--tracking-uri", "sqlite:///m.db"]) == 0
    assert seen["uri"] == f"sqlite:///{tmp_path}/m.db"


def test_a_sweep_is_found_in_the_store_named_after_the_subcommand(tmp_path, capsys):
    from mlflow import MlflowClient

    from trainer.schema import KIND_SWEEP, KIND_TAG

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_run(client.create_experiment("held"), tags={KIND_TAG: KIND_SWEEP})
    client.create_experiment("mine")  # a user's own experiment: not a sweep, not listed
    assert cli.main(["status", "nosuch", "--tracking-uri", uri]) == 2
    assert "(known sweeps: held)" in capsys.readouterr().err


NO_TORCH = """
import sys
from orchestrator.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules, "torch was imported"
sys.exit(code)
"""


def test_status_and_fit_do_not_import_torch(tmp_path):
    """`sweep status` and `sweep fit` read the store only: no torch import (seconds)."""
    import subprocess
    import sys

    import numpy as np
    import yaml
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from fitter.synthetic import Truth, synthetic_runs
    from orchestrator.spec_file import spec_from_dict
    from orchestrator.tracking import Tracker
    from trainer import schema

    uri = f"sqlite:///{tmp_path}/m.db"
    spec = {"name": "demo", "overrides": ["model=tiny", "data=synthetic"],
            "grid": {"optim.lr": "choice(1e-3, 1e-2)"}}
    tracker = Tracker(uri, "demo", code_version="test",
                      spec_yaml=yaml.safe_dump(spec_from_dict(spec).to_dict()))
    client = MlflowClient(tracking_uri=uri)
    frame = synthetic_runs(Truth(lr=(0.5, -0.3, 0.0, 0.0), loss=(2.0, 300.0, 1500.0, 0.3, 0.35)),
                           n_values=[1e6, 2e6, 4e6], d_values=[1e8, 1e9], b_values=[8192],
                           noise=0.001, seed=5)
    for i, row in frame.iterrows():
        run = client.create_run(tracker.experiment_id, tags={
            schema.PARENT_RUN_TAG: tracker.parent_id, schema.KIND_TAG: schema.KIND_TRIAL,
            schema.TRIAL_ID_TAG: f"t{i}", schema.TRIAL_STATUS_TAG: row["status"]})
        params = {schema.PARAM_LR: row["lr"], schema.PARAM_TOKENS: int(row["D"]),
                  schema.PARAM_N_PARAMS: int(row["N"]), schema.PARAM_BATCH_TOKENS: 8192,
                  schema.PARAM_SEQ_LEN: 128, schema.PARAM_WEIGHT_DECAY: 0.0}
        metrics = [Metric(schema.FINAL_EVAL_LOSS, row["loss"], 0, 1)] \
            if np.isfinite(row["loss"]) else []
        schema.log_batch(client, run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)) for k, v in params.items()])
    repo = str(Path(__file__).resolve().parents[2])  # this checkout, not an installed one
    env = {**os.environ, "PYTHONPATH": repo}
    for argv in (["status", "demo"], ["fit", "demo", "--n-boot", "20", "--law", "lr",
                                      "--out", str(tmp_path / "fit")]):
        proc = subprocess.run([sys.executable, "-c", NO_TORCH, *argv, "--tracking-uri", uri],
                              capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fit" / "fit.json").exists()


def _dry_run_without_torch(tmp_path, spec: dict):
    """`launch --dry-run` of `spec` in a process where importing torch fails; its result."""
    import subprocess
    import sys

    import yaml

    (tmp_path / "dry.yaml").write_text(yaml.safe_dump(spec))
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "launch", "dry.yaml", "--dry-run",
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": repo}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_dry_run_that_lists_fused_groups_does_not_import_torch(tmp_path):
    """`--dry-run` plans the groups (fusion is on for CPU trials by default) and counts the
    machine's GPUs without torch."""
    spec = {"name": "dry", "overrides": ["model=tiny", "data=synthetic"],
            "grid": {"optim.lr": "choice(1e-3, 3e-3, 1e-2, 3e-2)"},
            "storage_root": str(tmp_path / "runs")}
    proc = _dry_run_without_torch(tmp_path, spec)
    # how many groups depends on the machine's CPUs (a group per trial slot)
    assert re.fullmatch(r"\d+ fused groups?, \d+ trials? alone", proc.stdout.splitlines()[-1])


@pytest.mark.parametrize(("fuse", "resources", "said"), [
    (False, {"gpus": 0}, "no fused groups: fuse: false (or --fuse off) keeps every trial alone"),
    ("auto", {"gpus": 1}, "no fused groups: fuse: auto leaves trials that hold a GPU unfused; "
                          "fuse: true (or --fuse on) fuses them"),
    # (fuse: true and 2 processes a trial: nothing said, and a search asked points in pairs;
    # then said twice, in the note and at the end)
    (True, {"gpus": 0, "world_size": 2}, "no fused groups: resources.world_size 2 (the note "
     "above)")])
def test_a_dry_run_says_why_nothing_fuses(tmp_path, fuse, resources, said):
    # With fusion off the dry run said nothing of it: a user could not tell "off" from "no
    # trials alike".
    # (train.device=cpu: of several ranks, `auto` counts the GPUs, which takes torch)
    device = ["train.device=cpu"] if resources.get("world_size", 1) > 1 else []
    spec = {"name": "dry", "overrides": ["model=tiny", "data=synthetic", *device],
            "grid": {"optim.lr": "choice(1e-3, 3e-3)"}, "fuse": fuse,
            "resources": resources, "storage_root": str(tmp_path / "runs")}
    proc = _dry_run_without_torch(tmp_path, spec)
    assert proc.stdout.splitlines()[-1] == said
    assert ("note: fuse: true fuses nothing here: a trial of resources.world_size 2 trains in "
            "2 processes, and a fused group in one: resources.world_size: 1 fuses"
            in proc.stderr) == (fuse is True)


def test_a_dry_run_lists_the_trunks_that_train_fused_without_torch(tmp_path):
    spec = {"name": "dry", "overrides": ["model=tiny", "data=synthetic", "schedule=wsd",
                                         "schedule.warmup_tokens=1024"],
            "grid": {"optim.lr": "choice(1e-3, 3e-3, 1e-2, 3e-2)",
                     "train.tokens": "choice(65536, 131072)"},
            "fuse": 2, "storage_root": str(tmp_path / "runs")}
    proc = _dry_run_without_torch(tmp_path, spec)
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("trunk ") for line in lines) == 4  # a family per LR
    assert sum(line.startswith("fused 2 trunks in one task: ") for line in lines) == 2
    assert lines[-1] == ("4 trunks to train: 4 in 2 fused groups, 0 alone; a group's budgets "
                         "of one size fuse as it releases them")


def test_a_store_that_is_not_there_is_one_sentence_and_is_not_created(tmp_path, capsys):
    """A misspelt SQLite path: said, not created empty; a URI MLflow refuses: one sentence."""
    from orchestrator.cli import main

    missing = tmp_path / "nope.db"
    for argv in (["status", "s"], ["fit", "s"], ["recommend", "s", "--params", "1e9",
                                                 "--tokens", "1e9"], ["cancel", "s"]):
        assert main([*argv, "--tracking-uri", f"sqlite:///{missing}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: no tracking store at {missing}: launch a sweep first")
    assert not missing.exists()
    missing.touch()  # an empty file: MLflow wrote its tables into it and found no sweep
    for argv in (["status", "s"], ["fit", "s"], ["list"]):
        assert main([*argv, "--tracking-uri", f"sqlite:///{missing}"]) == 2
        assert capsys.readouterr().err.startswith(
            f"error: the tracking store {missing} is an empty file: launch a sweep first")
    assert missing.stat().st_size == 0
    assert main(["status", "s", "--tracking-uri", "garbage://x"]) == 2
    assert capsys.readouterr().err == (
        "error: tracking URI garbage://x: MLflow has no store for 'garbage://' URIs; give "
        "sqlite:///PATH.db, http(s)://HOST:PORT or postgresql://... to --tracking-uri (or "
        "MLFLOW_TRACKING_URI)\n")
    from orchestrator.cli import _server_answers

    _server_answers("databricks")  # MLflow's own bare form of a store: not a path
    for uri, store in [(str(tmp_path / "m.db"), tmp_path / "m.db"),
                       (f"file://{tmp_path}/runs", tmp_path / "runs" / "mlflow.db")]:
        assert main(["list", "--tracking-uri", uri]) == 2
        assert capsys.readouterr().err == (
            f"error: tracking URI {uri} is a path (MLflow's file store, which proxysweep does "
            f"not use): give an SQLite store, e.g. sqlite:///{store}, or a server, to "
            "--tracking-uri (or MLFLOW_TRACKING_URI)\n")
    assert main(["status", "s", "--tracking-uri", "sqlite://x"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: tracking URI sqlite://x: an SQLite store is sqlite:///PATH.db (three slashes")
    # file:/p (one slash) was read as a relative path named "file:"
    assert main(["list", "--tracking-uri", "file:/tmp/runs"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: tracking URI file:/tmp/runs is a path (MLflow's file store, which proxysweep "
        "does not use): give an SQLite store, e.g. sqlite:////tmp/runs/mlflow.db,")
    # one slash: it was taken for a file path (sqlite:////cwd/sqlite:/tmp/x.db was suggested)
    assert main(["list", "--tracking-uri", "sqlite:/tmp/x.db"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: tracking URI sqlite:/tmp/x.db: an SQLite store is sqlite:///PATH.db (three")
    # a query: `?mode=ro` was read as part of the file's name (no store there), and MLflow
    # itself made a file named `x.db?mode=ro` of `?mode=ro&uri=true`
    for query in ("mode=ro", "mode=ro&uri=true"):
        assert main(["fit", "s", "--tracking-uri", f"sqlite:///{missing}?{query}"]) == 2
        assert capsys.readouterr().err == (
            f"error: tracking URI sqlite:///{missing}?{query}: an SQLite store's URI takes no "
            f"query ('?{query}'); give the file alone, sqlite:///{missing}, to --tracking-uri "
            "(or MLFLOW_TRACKING_URI)\n")
    assert sorted(p.name for p in missing.parent.iterdir() if "?" in p.name) == []
    # a server without its scheme: it suggested sqlite:////cwd/127.0.0.1:5731/mlflow.db
    for uri in ("127.0.0.1:5731", "localhost:5731", "mlflow.internal:5000/"):
        assert main(["list", "--tracking-uri", uri]) == 2
        assert capsys.readouterr().err == (
            f"error: tracking URI {uri} has no scheme: a server is http://{uri} (https:// "
            "behind TLS); fix --tracking-uri (or MLFLOW_TRACKING_URI)\n")
    # a folder: MLflow retried its engine for ~100 s, then a traceback (and a lock file beside)
    for argv in (["list"], ["status", "s"], ["launch", "sweeps/demo.yaml", "--dry-run"]):
        assert main([*argv, "--tracking-uri", f"sqlite:///{tmp_path}"]) == 2
        assert capsys.readouterr().err == (
            f"error: tracking URI sqlite:///{tmp_path} is a folder: an SQLite store is a file; "
            f"give one in it, e.g. sqlite:///{tmp_path / 'mlflow.db'}, to --tracking-uri (or "
            "MLFLOW_TRACKING_URI)\n")
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}*lock"))



def test_a_tracking_server_that_is_down_is_said_at_once(capsys):
    """MLflow's client retries a refused connection for minutes: the CLI tries one connect
    first and says which server, why and the fix (the password masked)."""
    import socket
    import time

    from orchestrator.cli import main

    with socket.socket() as sock:  # a port nothing listens on: bound, never listened
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        start = time.monotonic()
        assert main(["status", "s", "--tracking-uri", f"http://me:pw@127.0.0.1:{port}"]) == 2
        assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip()
    assert err == (f"error: tracking server http://me:***@127.0.0.1:{port} cannot be reached: "
                   f"nothing listens on 127.0.0.1:{port} (connection refused); start it, or "
                   "point --tracking-uri (or MLFLOW_TRACKING_URI) at one that runs")
    assert main(["list", "--tracking-uri", "postgresql://u@no-such-host.invalid/db"]) == 2
    assert "cannot be reached: no host named no-such-host.invalid; " in capsys.readouterr().err
    # a fit of a CSV reads no store: a stale MLFLOW_TRACKING_URI does not stop it
    assert main(["fit", "--from-csv", "no.csv", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
    assert capsys.readouterr().err.startswith("error: CSV file no.csv does not exist")


def _http_server(status: int):
    """A local HTTP server answering every GET with `status` (in a thread), and its port."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's name)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_a_server_that_answers_passes_the_check():
    import socket

    from trainer.reporting import unreachable_server

    for status in (200, 401):  # (401: a server with auth; the client holds the credentials)
        server, port = _http_server(status)
        with server:
            assert unreachable_server(f"http://127.0.0.1:{port}") is None
            server.shutdown()
    with socket.create_server(("127.0.0.1", 0)) as server:  # (a database: a connect is all)
        port = server.getsockname()[1]
        assert unreachable_server(f"postgresql+psycopg://u:p@127.0.0.1:{port}/db") is None
    assert unreachable_server("sqlite:///x.db") is None
    assert unreachable_server("postgresql:///db?host=/var/run/postgresql") is None


def test_a_server_that_takes_connections_but_never_answers_or_is_no_mlflow_is_said(
        monkeypatch, capsys):
    """A server that accepted the connection and never answered held `sweep status` for 20
    minutes of MLflow's read timeouts; a URI with a web page's path got MLflow's 404 with an
    HTML body."""
    import socket

    from orchestrator.cli import main
    from trainer import reporting

    monkeypatch.setattr(reporting, "ANSWER_TIMEOUT_S", 1.0)
    with socket.create_server(("127.0.0.1", 0)) as server:  # (takes, never answers)
        port = server.getsockname()[1]
        start = time.monotonic()
        assert main(["status", "s", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
        assert time.monotonic() - start < 10
    assert capsys.readouterr().err.strip() == (
        f"error: tracking server http://127.0.0.1:{port} cannot be reached: 127.0.0.1:{port} "
        "takes connections but did not answer a request within 1 s (a server that hangs, or no "
        "HTTP server there); check the server (restart it), or point --tracking-uri (or "
        "MLFLOW_TRACKING_URI) at one that answers")
    server, port = _http_server(404)
    with server:
        assert main(["list", "--tracking-uri", f"http://127.0.0.1:{port}/mlflow"]) == 2
        server.shutdown()
    assert capsys.readouterr().err.strip() == (
        f"error: tracking URI http://127.0.0.1:{port}/mlflow: it answers, but not as an MLflow "
        "tracking server at /mlflow (404 for its REST API): give the server's own address, "
        "without /mlflow, to --tracking-uri (or MLFLOW_TRACKING_URI)")


def test_https_to_a_plain_http_server_is_said_at_once(capsys):
    """MLflow's client retried the failed TLS handshake for over 4 minutes, then printed an
    SSLError."""
    import http.server
    import threading
    import time

    from orchestrator.cli import main

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # (the handshake it cannot read, on stderr)
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        start = time.monotonic()
        assert main(["list", "--tracking-uri", f"https://127.0.0.1:{port}"]) == 2
        assert time.monotonic() - start < 10
        assert capsys.readouterr().err == (
            f"error: tracking server https://127.0.0.1:{port} cannot be reached: it answers "
            "plain http, not https: give http:// instead; fix --tracking-uri (or "
            "MLFLOW_TRACKING_URI)\n")
    finally:
        server.shutdown()


def test_a_server_that_refuses_the_credentials_names_them_not_the_uri(monkeypatch):
    """A 401 said "check --tracking-uri", which was right."""
    from mlflow.exceptions import MlflowException

    from orchestrator.cli import _store_refusal

    err = MlflowException("API request to endpoint /api/2.0/mlflow/experiments/search failed "
                          "with error code 401 != 200. Response body: 'You are not "
                          "authenticated. Please see ...'")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert _store_refusal(err, "x") == (
        "the server refused the credentials (401: not authenticated); set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of the server")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    assert _store_refusal(err, "x").endswith("(the password of admin is not the one it has)")
    forbidden = MlflowException("... failed with error code 403 != 200. Response body: "
                                "'Permission denied'")
    assert _store_refusal(forbidden, "x").startswith(
        "the server's account admin has no permission for this (403)")
    assert _store_refusal(MlflowException("boom"), "boom") == (
        "boom; check --tracking-uri (or MLFLOW_TRACKING_URI)")


def test_ui_on_a_port_in_use_is_one_sentence(tmp_path, capsys):
    import socket

    from orchestrator.cli import main

    uri = f"sqlite:///{tmp_path}/m.db"
    assert main(["list", "--tracking-uri", uri]) == 2  # (no store yet: made by a launch)
    from orchestrator.store import create_sqlite_store_once
    create_sqlite_store_once(uri)
    capsys.readouterr()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["ui", "--port", str(port), "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err == (f"error: --port {port} is in use on 127.0.0.1; give "
                                       f"another, e.g. --port {port + 1}\n")


@pytest.mark.slow
def test_ui_prints_its_url_once_the_server_answers_it(tmp_path):
    """The URL came ~20 s before the server answered: a user who opened it at once got a
    refused connection."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    from orchestrator.store import create_sqlite_store_once

    uri = f"sqlite:///{tmp_path}/m.db"
    create_sqlite_store_once(uri)
    with socket.create_server(("127.0.0.1", 0)) as free:
        port = free.getsockname()[1]
    ui = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port),
                           "--tracking-uri", uri], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        assert ui.stdout.readline().startswith("starting the MLflow UI")
        # (the server's own log lines share the output; not four screens of a Starlette
        # deprecation warning, one per worker, which no user of the UI can act on)
        before = []
        for line in ui.stdout:
            if line.startswith("MLflow UI for"):
                break
            before.append(line)
        assert line.startswith(f"MLflow UI for {uri}: http://127.0.0.1:{port}"), line
        assert not [said for said in before if "Warning" in said]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=5) as page:
            assert page.status == 200
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)


def test_a_dry_run_notes_resources_this_machine_cannot_hold(tmp_path, capsys, monkeypatch):
    """`gpus: 1` on a machine without one: the dry run listed the trial as 'would run' and
    the launch refused it after starting Ray."""
    import yaml

    from orchestrator.cli import main
    from orchestrator.driver import local_cluster

    gpus = max(len(g) for g in local_cluster().gpus) + 1
    spec = {"name": "g", "overrides": ["model=tiny", "data=synthetic", "train.tokens=65536"],
            "storage_root": str(tmp_path / "runs"), "resources": {"gpus": gpus},
            "grid": {"optim.lr": "choice(1e-3)"}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    # (RAY_ADDRESS=local is Ray's word for a Ray of its own here: it was taken for a cluster)
    for address in (None, "local"):
        if address is None:
            monkeypatch.delenv("RAY_ADDRESS", raising=False)
        else:
            monkeypatch.setenv("RAY_ADDRESS", address)
        assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch",
                     str(tmp_path / "g.yaml"), "--dry-run"]) == 0
        err = capsys.readouterr().err
        assert err.startswith("note: on this machine the launch would refuse it: resources "
                              f"(cpus=1, gpus={gpus} for 1 process(es)) fit no node of the "
                              "cluster")


def test_ray_address_local_is_a_ray_of_this_launch_s_own(monkeypatch):
    from orchestrator.commands import _fresh_local_ray
    from orchestrator.driver import cluster_address

    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address(None) is None and _fresh_local_ray(None)
    assert cluster_address("local") is None and _fresh_local_ray("local")
    assert cluster_address("10.0.0.1:6379") == "10.0.0.1:6379"
    assert not _fresh_local_ray("10.0.0.1:6379")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert cluster_address(None) == "head:6379" and not _fresh_local_ray(None)


def test_a_base_override_a_grid_axis_replaces_is_said(tmp_path, capsys):
    """`overrides: [optim.lr=1e-3]` beside `grid: {optim.lr: ...}`: every trial took the grid's
    value without a word, and the user believed the base value was in use somewhere."""
    import yaml

    from orchestrator.cli import main

    spec = {"name": "o", "overrides": ["model=tiny", "data=synthetic", "train.tokens=65536",
                                       "optim.lr=1e-3", "train.batch_size=8",
                                       "schedule.warmup_tokens=0"],
            "storage_root": str(tmp_path / "runs"),
            "grid": {"optim.lr": "choice(2e-3, 4e-3)"}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(spec))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch",
                 str(tmp_path / "o.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.err.splitlines() == [
        "note: overrides: optim.lr=1e-3 is swept by grid.optim.lr too, and every trial takes "
        "the grid's value: remove it from overrides"]
    assert "2 trials: 0 done, 2 would run" in out.out
    # the other way round: a plain value on the command line replaces the axis (said)
    spec["overrides"].remove("optim.lr=1e-3")
    spec["grid"]["train.seq_len"] = "choice(64, 128)"
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(spec))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch",
                 str(tmp_path / "o.yaml"), "--dry-run", "optim.lr=5e-3"]) == 0
    out = capsys.readouterr()
    assert out.err.splitlines() == [
        "note: optim.lr=5e-3 on the command line replaces the spec's grid.optim.lr: "
        "choice(2e-3, 4e-3): every trial takes 5e-3 (give 'optim.lr=choice(...)' to sweep "
        "other values)"]
    assert "2 trials: 0 done, 2 would run" in out.out


def _dry_run_args(tmp_path, grid: dict) -> list[str]:
    """The command line of a dry run of a tiny spec over `grid`, written to tmp_path."""
    import yaml

    spec = {"name": "s", "overrides": ["model=tiny", "data=synthetic", "train.tokens=65536",
                                       "schedule.warmup_tokens=0"],
            "grid": grid, "storage_root": str(tmp_path / "runs")}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return ["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch", str(tmp_path / "s.yaml"),
            "--dry-run"]


def test_mup_trials_of_several_head_widths_without_a_base_head_width_are_noted(tmp_path,
                                                                              capsys):
    # Each took its own head_dim as the base: attention scaled 1/√d across the sweep (SP's),
    # which no single trial's config shows.
    from orchestrator.cli import main

    args = _dry_run_args(tmp_path, {"optim.lr": "choice(1e-3)",
                                    "model.head_dim": "choice(16, 32)"})
    assert main(args) == 0
    assert capsys.readouterr().err.splitlines() == [
        "note: muP trials of 2 head widths (model.head_dim 16 to 32) leave model.base_head_dim "
        "unset, so each takes its own head width as the base and scales attention by "
        "1/√d_head as SP does, not muP's 1/d_head across them: set model.base_head_dim (e.g. "
        "16) for muP's attention"]
    assert main([*args, "model.base_head_dim=16"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main([*args, "model.param=sp"]) == 0  # SP's 1/√d is meant
    assert "base_head_dim" not in capsys.readouterr().err


def test_trials_that_differ_only_in_keys_they_do_not_read_are_noted(tmp_path, capsys):
    """A muP-vs-SP grid over model.base_width trained each SP model once per base width,
    under other ids, without a word (muP reads the key, so the grid was not refused)."""
    from orchestrator.cli import main

    args = _dry_run_args(tmp_path, {"optim.lr": "choice(1e-3, 1e-2)",
                                    "model.base_width": "choice(32, 64)",
                                    "model.param": "choice(mup, sp)"})
    assert main(args) == 0
    assert capsys.readouterr().err.splitlines() == [
        "note: 2 trials train the same model as another under another id, differing only in "
        "keys they do not read (model.base_width: model.param=sp does not read it (only mup "
        "does)); e.g. model.base_width=32 model.param=sp optim.lr=0.001 seed=0 and "
        "model.base_width=64 model.param=sp optim.lr=0.001 seed=0: give the trials that do not "
        "read them a spec without those axes"]
    assert main([*args, "model.param=mup"]) == 0  # (every trial reads it)
    assert "same model" not in capsys.readouterr().err


def test_a_value_listed_twice_on_an_axis_is_noted(tmp_path, capsys):
    """choice(1e-3, 0.001, 2e-3) made 2 trials, not 3, without a word."""
    from orchestrator.cli import main

    args = _dry_run_args(tmp_path, {"optim.lr": "choice(1e-3, 0.001, 2e-3)",
                                    "optim.weight_decay": "choice(0.0, 0.1)"})
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.err.splitlines() == [
        "note: grid.optim.lr: 'choice(1e-3, 0.001, 2e-3)' lists 0.001 more than once; each "
        "value's trials run once"]
    assert "4 trials: 0 done, 4 would run" in out.out
    assert main([*args, "optim.lr=choice(1e-3, 2e-3)"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_validating_trials_on_files_and_a_tokenizer_does_not_import_torch(tmp_path):
    """Reading a little of the data before a launch (a text field, a tokenizer file) went
    through trainer.data, which imports torch: 2.5 s per driver instead of 0.3."""
    import json
    import subprocess
    import sys

    from tokenizers import Tokenizer, models

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"row {i} " * 40}) + "\n"
                                              for i in range(30)))
    Tokenizer(models.WordLevel({"[UNK]": 0, "row": 1}, unk_token="[UNK]")).save(
        str(tmp_path / "tok.json"))
    code = f"""
import sys
from orchestrator.spec_file import spec_from_dict
from orchestrator.trials import expand
trials = expand(spec_from_dict({{"name": "t", "storage_root": {str(tmp_path / 'runs')!r},
    "overrides": ["model=tiny", "data=files", "data.paths=[{tmp_path / 'a.jsonl'}]",
                  "data.tokenizer={tmp_path / 'tok.json'}"],
    "grid": {{"optim.lr": "choice(0.01, 0.02)"}}}}, source="t"))
assert len(trials) == 2
assert "torch" not in sys.modules, "torch was imported"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_console_script_exits_quietly_on_a_ctrl_c_during_its_exit(tmp_path, monkeypatch,
                                                                      capsys):
    """Ray shuts down at exit: a Ctrl-C then printed "Exception ignored in atexit callback"
    and that shutdown's stack. The console script (argv None) leaves a quiet handler."""
    import signal

    from orchestrator.cli import main

    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr("sys.argv", ["sweep", "list", "--tracking-uri",
                                     f"sqlite:///{tmp_path}/none.db"])
    try:
        assert main() == 2
        assert signal.getsignal(signal.SIGINT) not in (handler, signal.default_int_handler)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert main(["list", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert signal.getsignal(signal.SIGINT) is handler  # (called with argv: left alone)
    capsys.readouterr()


def test_a_cluster_from_ray_address_is_named_ray_address_in_its_error(tmp_path, monkeypatch,
                                                                      capsys):
    """With RAY_ADDRESS set (no --address), an unreachable cluster was said as
    `--address=HOST:PORT`, a flag the user never gave."""
    import socket

    import yaml

    from orchestrator.cli import main

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    spec = {"name": "m", "overrides": ["model=tiny", "data=synthetic", "train.tokens=40960"],
            "grid": {"optim.lr": "choice(1e-3)"}, "storage_root": str(tmp_path / "runs")}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "launch",
                 str(tmp_path / "m.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:{port}"
                          f" (nothing answers at 127.0.0.1:{port}")
    assert "--address" not in err


def test_a_dry_run_stopped_says_no_resume(tmp_path, monkeypatch, capsys):
    """A dry run stopped by SIGTERM (a store that hung) said "nothing that finished is lost:
    `sweep resume NAME` goes on from there" of a sweep it had not run, or recorded."""
    from orchestrator import commands

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "dry_run", stopped)
    args = _dry_run_args(tmp_path, {"optim.lr": "choice(1e-3, 1e-2)"})
    # (a stop makes main() end the process on a second signal: pytest's handlers put back,
    # or a later test's own Ctrl-C ended the whole run, exit 130)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert cli.main(args) == 130
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_store_this_user_cannot_write_is_one_sentence_before_any_work(
        tmp_path, monkeypatch, capsys):
    """A read-only store file hung a launch for 15 minutes (its tracker retried "attempt to
    write a readonly database" as an outage); a store in a folder that cannot be written
    raised a traceback, for `list` too. (Root writes anywhere: access is denied here.)"""
    import sqlite3

    from orchestrator import store

    path = tmp_path / "s" / "m.db"
    uri = f"sqlite:///{path}"
    store.create_sqlite_store_once(uri)
    denied = set()
    real = os.access
    monkeypatch.setattr(store.os, "access", lambda p, mode: Path(p) not in denied and real(
        p, mode))
    denied.add(path)
    args = _dry_run_args(tmp_path, {"optim.lr": "choice(1e-3, 1e-2)"})
    assert cli.main(["--tracking-uri", uri, *args[2:]]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: tracking store {uri}: the store {path} is read-only for this user; `sweep "
        "launch` records into it: give this user write access, or copy the store to a folder "
        "it can write and point --tracking-uri (or MLFLOW_TRACKING_URI) at the copy")
    assert cli.main(["list", "--tracking-uri", uri]) == 0  # (reading it is fine)
    capsys.readouterr()
    # A folder that cannot be written: a WAL store cannot even be read there
    wal, plain = tmp_path / "ro" / "wal.db", tmp_path / "ro" / "plain.db"
    wal.parent.mkdir()
    for file, mode in ((wal, "WAL"), (plain, "DELETE")):
        with sqlite3.connect(file) as db:
            db.execute(f"PRAGMA journal_mode={mode}")
            db.execute("CREATE TABLE t (x)")
    denied.add(wal.parent)
    assert store.sqlite_access_problem(f"sqlite:///{plain}", writes=False) is None
    assert store.sqlite_access_problem(f"sqlite:///{wal}", writes=False) == (
        f"its folder {wal.parent} cannot be written by this user, and SQLite keeps the store's "
        "journal there (even to read a store in WAL mode, as this one is)")
    assert cli.main(["list", "--tracking-uri", f"sqlite:///{wal}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: tracking store sqlite:///{wal}: its folder {wal.parent} cannot be written by "
        "this user, and SQLite keeps the store's journal there (even to read a store in WAL "
        "mode, as this one is); `sweep list` reads it: give this user write access, or copy "
        "the store to a folder it can write and point --tracking-uri (or MLFLOW_TRACKING_URI) "
        "at the copy")
    assert store.sqlite_access_problem(f"sqlite:///{plain}", writes=True).startswith(
        f"its folder {wal.parent} cannot be written by this user")


def test_a_launch_whose_override_comes_before_the_spec_says_the_order(tmp_path, capsys,
                                                                      monkeypatch):
    """`sweep launch optim.lr=0.1 spec.yaml` said "sweep spec optim.lr=0.1 does not exist"."""
    (tmp_path / "spec.yaml").write_text("name: x\ngrid: {optim.lr: choice(1e-3)}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", "optim.lr=0.1", "spec.yaml", "train.tokens=4096",
                     "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        "error: spec.yaml is the spec and optim.lr=0.1 an override: give the spec first "
        "(sweep launch spec.yaml optim.lr=0.1 train.tokens=4096)\n")
    # a folder given as the spec is told one of its own files (or that it has none)
    (tmp_path / "specs").mkdir()
    assert cli.main(["launch", "specs", "--dry-run"]) == 2
    assert capsys.readouterr().err == ("error: sweep spec specs is a folder, with no YAML "
                                       "file in it: give the path of a spec, e.g. "
                                       "sweeps/demo.yaml\n")
    (tmp_path / "specs" / "mine.yaml").write_text("name: x\n")
    assert cli.main(["launch", "specs", "--dry-run"]) == 2
    assert capsys.readouterr().err == ("error: sweep spec specs is a folder: give one of its "
                                       "YAML files, e.g. specs/mine.yaml\n")



def test_recommends_params_help_counts_n_as_the_trainer_does(capsys):
    """`recommend --params` asks for N as the sweep counts it; a stranger worked the count out
    by hand. The help's formula and example are the trainer's count."""
    import re
    from dataclasses import replace

    import torch

    from trainer.config import ModelConfig
    from trainer.model import GPT, GPTShape, count_params

    with pytest.raises(SystemExit):
        cli.main(["recommend", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "depth*(4 + 2*mlp_ratio)*width^2 + width*vocab + (2*depth + 1)*width" in said
    example = float(re.search(r"e\.g\. ([0-9.e]+) for width 768, depth 12, mlp_ratio 4, vocab "
                              r"50,257", said).group(1))
    with torch.device("meta"):
        model = GPT(GPTShape(replace(ModelConfig(), width=768, depth=12, head_dim=64,
                                     mlp_ratio=4), 50257))
    n = count_params(model)[0]
    assert n == 12 * (4 + 2 * 4) * 768 ** 2 + 768 * 50257 + (2 * 12 + 1) * 768
    assert example == pytest.approx(n, rel=0.005)
