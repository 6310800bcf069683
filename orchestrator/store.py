"""The tracking actor's connection to the MLflow store: credentials, outages, cheap commits.

A team's store is an `mlflow server`, and a server restarts. Every write of the tracking actor
goes through `StoreCalls`, which retries a call that failed for want of the server (connection
refused, timeout, 503) with backoff for up to `outage_s`; meanwhile the actor's calls queue in
Ray and workers keep training (their calls do not wait). Writes are safe to repeat: MLflow
ignores a metric logged twice, a child run is looked up by `trial.id` before one is created.

Credentials reach the actor from the driver's environment (the `MLFLOW_TRACKING_*`/`AWS_*`
variables, as constructor arguments, not as Ray runtime-env variables, which Ray's state API
lists). An embedded SQLite store gets a write-ahead log (`_cheap_sqlite_commits`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from trainer.reporting import redact

CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                   "MLFLOW_TRACKING_CLIENT_CERT_PATH", "AWS_ACCESS_KEY_ID",
                   "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                   "MLFLOW_S3_ENDPOINT_URL")
OUTAGE_S = 900.0
"""How long a write waits for an unreachable server before giving up (then: re-sync)."""
MAX_BACKOFF_S = 8.0


def tracking_credentials() -> dict[str, str]:
    """The tracking and artifact-store credentials set in this process's environment."""
    return {k: os.environ[k] for k in CREDENTIAL_VARS if k in os.environ}


def open_client(uri: str, credentials: dict[str, str] | None = None):
    """An MlflowClient for `uri` in this (the tracking actor's) process, with `credentials`
    in its environment and MLflow's own HTTP retries cut short: its 7 retries, up to 2 min
    apart, would hide an outage inside one call; `StoreCalls` says what is going on."""
    from mlflow import MlflowClient

    os.environ.update(credentials or {})
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # (its "🏃 View run ... at: URL" line for every run it ends, in the driver's output)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if uri.startswith("sqlite:"):
        _cheap_sqlite_commits()
    return MlflowClient(tracking_uri=uri)


def missing_sqlite(uri: str) -> str | None:
    """The path of an SQLite store that does not exist (yet), else None. An empty file is
    none yet either: reading it as a store (`sweep fit`, `status`) wrote MLflow's tables into
    it and then found no sweep."""
    path = uri.removeprefix("sqlite:///")
    if not uri.startswith("sqlite:///"):
        return None
    try:
        return path if os.path.getsize(path) == 0 else None
    except OSError:
        return path if not os.path.exists(path) else None


def not_sqlite(uri: str) -> str | None:
    """The path of an SQLite store's file that holds something else, else None (an empty file
    is a new store, as SQLite reads it)."""
    path = uri.removeprefix("sqlite:///")
    if not uri.startswith("sqlite:///") or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None  # (unreadable: MLflow's own error says why)
    return path if head and head != b"SQLite format 3\x00" else None


def sqlite_access_problem(uri: str, *, writes: bool) -> str | None:
    """Why this user cannot use an SQLite store for a command that writes to it (`writes`) or
    reads it, else None. A read-only file hung a launch for 15 minutes (its tracker took
    "attempt to write a readonly database" for an outage and retried); a folder that cannot
    be written raised a traceback even for `list`. SQLite keeps a store's journal beside it,
    so its folder must be writable to write, and to read a store in WAL mode (ours are)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = Path(uri[len(prefix):])
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if path.is_file() and writes and not os.access(path, os.W_OK):
        return f"the store {path} is read-only for this user"
    if folder is None or os.access(folder, os.W_OK | os.X_OK):
        return None
    if writes or (path.is_file() and _wal(path)):
        return (f"its folder {folder} cannot be written by this user, and SQLite keeps the "
                "store's journal there" + ("" if writes else " (even to read a store in WAL "
                                                            "mode, as this one is)"))
    return None


def _wal(path: Path) -> bool:
    """Is the SQLite file at `path` in WAL mode (its header's read and write versions 2)?"""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[18] == 2


def create_sqlite_store_once(uri: str) -> None:
    """Create an embedded SQLite store's tables, one process at a time.

    MLflow creates a new store's tables when it first opens the file, and two processes doing
    that at once (the same spec launched twice into a fresh store) collide on `CREATE TABLE`.
    The first `sweep` command creates them under a lock beside the file (removed once they
    exist); later ones find them.
    """
    import fcntl

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    from mlflow import MlflowClient

    path = Path(uri[len(prefix):])
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "Creating initial tables..."
    lock_path = path.with_name(path.name + ".init-lock")
    try:
        lock = open(lock_path, "w")
    except OSError:
        if _has_schema(path):
            return  # (a store in a folder this user cannot write: read, not created, here)
        raise
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        # Checked under the lock only: MLflow stamps the schema version during its migrations,
        # so a store another command is still creating can look done from outside.
        if not _has_schema(path):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        # The tables exist from here on, so whoever locks a file of this name later (a new
        # one, or this one unlinked) finds them and creates nothing: it can go.
        lock_path.unlink(missing_ok=True)


def existing_sqlite_ready(uri: str) -> bool:
    """Is `uri` a store that can be read now (not an SQLite file still to be created)?

    An SQLite file that exists may be one another command is creating this moment (a launch
    into a fresh store while `status` polls it): it is read once its tables are done, as
    `create_sqlite_store_once` makes sure, never opened beside their creation (MLflow would
    create them a second time and fail on "table already exists")."""
    if missing_sqlite(uri):
        return False
    create_sqlite_store_once(uri)
    return True


def _has_schema(path) -> bool:
    """Has an MLflow store at `path` been stamped with its schema version (tables done)?"""
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:
        return False


TRANSIENT_HTTP_STATUS = frozenset({429, 503, 504})
"""Statuses that say "try again later" (MLflow's REQUEST_LIMIT_EXCEEDED/RESOURCE_EXHAUSTED,
TEMPORARILY_UNAVAILABLE, DEADLINE_EXCEEDED). MLflow's SQL store reports a SQLAlchemy
`OperationalError` (a locked SQLite file, a dropped database connection) as 503."""


def is_transient(err: BaseException) -> bool:
    """Did a call fail because the store could not be reached (worth retrying)?

    Decided by types, never by message text: MLflow raises an `MlflowException` whose HTTP
    status (`get_http_status_code`) says "unavailable", or wraps what `requests` raised (refused,
    reset, timed out, its own retries used up) with that error as cause or context.
    """
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    transport = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                 requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError,
                 sqlalchemy.exc.OperationalError)
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, transport):
            return True
        if isinstance(err, MlflowException) and \
                err.get_http_status_code() in TRANSIENT_HTTP_STATUS:
            return True
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return False


class StoreCalls:
    """Calls to the store, each retried with backoff while the server is unreachable."""

    def __init__(self, outage_s: float = OUTAGE_S):
        self.outage_s = outage_s
        """How long one call waits for the server before it raises."""
        self.down_since: float | None = None

    def __call__(self, fn: Callable, *args, **kwargs):
        """`fn(*args, **kwargs)`, retried for up to `outage_s` while `is_transient`."""
        deadline, delay = time.monotonic() + self.outage_s, 0.5
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err) or time.monotonic() + delay > deadline:
                    raise
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    _say(f"tracking server unreachable ({redact(str(err))[:200]}); retrying "
                         f"for up to {self.outage_s:.0f} s, trials keep running")
                time.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            if self.down_since is not None:
                _say(f"tracking server back after {time.monotonic() - self.down_since:.1f} s")
                self.down_since = None
            return result


def _cheap_sqlite_commits() -> None:
    """Every SQLite connection this process opens from now on uses a write-ahead log with
    synchronous=NORMAL: a commit then costs no fsync (the default spends ~9 ms on one, and
    MLflow commits several times per log_batch). The file stays safe from corruption; a
    power cut may lose the last commits, which a re-launch re-runs (the trials' own
    summaries re-sync them). Readers in other processes (the driver, `sweep status`,
    `mlflow ui`) are not blocked by the writer."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if event.contains(Engine, "connect", _wal_pragmas):
        return
    event.listen(Engine, "connect", _wal_pragmas)


def _wal_pragmas(dbapi_conn, _record) -> None:
    if not isinstance(dbapi_conn, sqlite3.Connection):
        return
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # another connection holds a lock: keep the journal
        pass
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _say(message: str) -> None:
    # The actor's stderr: Ray's worker log on the driver's node.
    print(f"[proxysweep tracker] {message}", file=sys.stderr, flush=True)


def spec_changed_since_read(sweep: str) -> str:
    """What an extend is told when another extend or launch stored a new spec after it read
    the one it extends (said by the command's checks and by the tracker's open)."""
    return (f"sweep {sweep}'s spec was changed by another `sweep extend` or launch after this "
            "one read it: run this `sweep extend` again (it then adds to the new spec)")
