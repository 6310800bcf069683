"""The handlers of the commands that watch a recorded sweep, `sweep list`, `status` and `ui`,
and of `sweep cancel`, which stops one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


def _list(args, uri: str) -> int:
    import json

    from orchestrator.status import format_sweeps, sweeps

    rows = sweeps(uri)
    print(json.dumps(rows, indent=2) if args.json else format_sweeps(rows))
    return 0


def _status(args, uri: str) -> int:
    from orchestrator.status import as_json, format_status, status

    report = status(uri, args.name)
    print(as_json(report) if args.json else format_status(report))
    return 0


def _cancel(args, uri: str) -> int:
    from mlflow import MlflowClient

    from orchestrator.cancel import NotRunning, cancel
    from orchestrator.starting import cancel_starting
    from orchestrator.sweep_record import _sweep_parent
    from trainer.errors import ConfigError

    try:
        try:
            marked = cancel(uri, args.name)
        except ConfigError:  # no such sweep: unless a launch of it starts here
            said = cancel_starting(uri, args.name, recorded=lambda: _sweep_parent(
                MlflowClient(tracking_uri=uri), args.name) is not None)
            if said is None:
                raise
            if said != "recorded":
                print(said)
                return 0
            marked = cancel(uri, args.name)
    except NotRunning as ended:
        print(f"sweep {args.name} is not running ({ended.status}): nothing to cancel")
        return 0
    if marked is None:
        # (not "sweep NAME: ...", the form of a launch's summary line, which scripts read)
        print(f"cancel requested for sweep {args.name}: its driver is stopping its trials "
              f"(`sweep status {args.name}` says when it has)")
        return 0
    print(f"cancel requested for sweep {args.name}" + (f"; {marked} orphaned trials marked "
                                                      "interrupted" if marked else ""))
    return 0


def _ui(args, uri: str) -> int:
    from orchestrator.tracking import redact

    served = uri.startswith(("http://", "https://"))  # a tracking server is its own UI
    url = redact(uri).rstrip("/") if served else f"http://127.0.0.1:{args.port}"
    if args.name:
        from mlflow import MlflowClient

        _known_sweep(uri, args.name)
        exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(args.name)
        url += f"/#/experiments/{exp.experiment_id}"
    if served:
        print(f"MLflow UI of the tracking server: {url}")
        return 0
    import socket

    from trainer.errors import ConfigError

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError:
            raise ConfigError(f"--port {args.port} is in use on 127.0.0.1; give another, e.g. "
                              f"--port {args.port + 1}") from None
    print(f"starting the MLflow UI for {uri} ...", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(args.port)]
    # Its own process group, ended with this command whatever ends it (Ctrl-C, a SIGTERM
    # from a supervisor or `timeout`): uvicorn's workers would otherwise outlive it.
    # (MLflow's server imports a Starlette module Starlette deprecates: four screens of
    # warnings, one per worker, that no user of the UI can act on)
    env = {"PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated", **os.environ}
    server = subprocess.Popen(cmd, start_new_session=True, env=env)

    def stop(*_):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        # The server takes seconds to answer; the URL is printed once it does, so that a
        # user (or a script) who opens it at once finds the UI, not a refused connection.
        if _answers(server, args.port):
            print(f"MLflow UI for {uri}: {url}  (Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        stop()
        server.wait()
        return 0


def _answers(server: subprocess.Popen, port: int, limit_s: float = 120.0) -> bool:
    """True once 127.0.0.1:`port` accepts a connection; False when `server` exits first."""
    import socket
    import time

    deadline = time.monotonic() + limit_s
    while server.poll() is None and time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.25)
    return server.poll() is None


def _known_sweep(uri: str, name: str) -> None:
    """An unknown name: the sentence every command says, with the sweeps the store has."""
    from mlflow import MlflowClient

    from orchestrator.sweep_record import parent_run

    parent_run(MlflowClient(tracking_uri=uri), name)
