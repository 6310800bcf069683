"""Which store failures are retried: decided by exception types and HTTP statuses, not text."""

import socket
import sqlite3

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    REQUEST_LIMIT_EXCEEDED,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

from orchestrator.store import is_transient


def _refused() -> MlflowException:
    """What MLflow raises for a server that is down: a real call to a closed port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        http_request(MlflowHostCreds(f"http://127.0.0.1:{port}"), "/api/2.0/mlflow/runs/get",
                     "GET", max_retries=0, backoff_factor=0, timeout=5)
    except MlflowException as err:
        return err
    raise AssertionError("a closed port answered")


def _locked() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("locked"))


def test_a_server_that_is_down_is_retried():
    assert is_transient(_refused())


@pytest.mark.parametrize("err, transient", [
    (MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE), True),
    (MlflowException("slow down", error_code=REQUEST_LIMIT_EXCEEDED), True),
    (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}), True),
    (_locked(), True),
    (MlflowException("bad", error_code=INVALID_PARAMETER_VALUE), False),
    (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"}), False),
    (MlflowException("no run", error_code=RESOURCE_DOES_NOT_EXIST), False),
    # The text MLflow writes for a refused connection, without the error beneath it.
    (MlflowException("API request to /x failed with exception boom"), False),
    (ValueError("x"), False),
])
def test_transient_by_type_and_status(err, transient):
    assert is_transient(err) is transient


def test_a_wrapped_lock_is_retried_and_a_suppressed_context_is_not():
    try:
        try:
            raise _locked()
        except sqlalchemy.exc.OperationalError as locked:
            raise MlflowException("wrapped") from locked
    except MlflowException as err:
        assert is_transient(err)
    try:
        try:
            raise ConnectionError("gone")
        except ConnectionError:
            raise ValueError("a bug while handling it") from None
    except ValueError as err:
        assert not is_transient(err)


def test_two_commands_opening_a_fresh_sqlite_store_at_once_both_succeed(tmp_path):
    """Regression: two launches into a new store collided on MLflow's CREATE TABLE."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    code = ("import sys; from orchestrator.store import create_sqlite_store_once; "
            "create_sqlite_store_once(sys.argv[1]); from mlflow import MlflowClient; "
            "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["mlflow.db"]  # no lock


def test_a_store_another_command_is_creating_is_read_once_its_tables_are_done(tmp_path):
    """Regression (a CI failure): a launch found the file of a store another command was
    creating that moment and opened it, so MLflow created its tables a second time beside the
    first ("table already exists"). It now waits for the creator's lock, then reads."""
    import fcntl
    import threading
    import time

    from orchestrator.cli_launch import _another_base
    from orchestrator.spec_file import spec_from_dict

    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    with sqlite3.connect(path) as db:  # the other command's first table: no schema stamped yet
        db.execute("CREATE TABLE being_created (x INTEGER)")
    lock = open(path.with_name("mlflow.db.init-lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    spec = spec_from_dict({"name": "unit", "grid": {"optim.lr": "1e-3"}})
    notes = []
    reader = threading.Thread(target=lambda: notes.append(_another_base(spec, uri)))
    reader.start()

    def tables():
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and reader.is_alive() and "experiments" not in tables():
        time.sleep(0.1)
    assert reader.is_alive() and tables() == {"being_created"}  # waiting, nothing written
    lock.close()  # the creator is done (here: gave up; the reader creates the tables)
    reader.join(timeout=120)
    assert notes == [[]]  # a store without this sweep: a new one
    assert "experiments" in tables() and "alembic_version" in tables()
