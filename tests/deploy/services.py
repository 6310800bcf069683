"""Real services for the deployment tests: PostgreSQL, `mlflow server`.

Each test starts what it needs on 127.0.0.1 at ports picked free at run time and stops it
afterwards. PostgreSQL runs from Debian's packages in a cluster made with `initdb` in a
temporary directory; it refuses to run as root, so as root the cluster belongs to the
`postgres` user the package creates. Where a service's packages are missing a test skips,
saying what to install; under `.ci/run` (PROXYSWEEP_CI=1) it fails instead, because there
they are installed.
"""

from __future__ import annotations

import base64
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml

ROOT = Path(__file__).parents[2]


def missing(what: str) -> None:
    """Skip (a developer's machine) or fail (CI) for want of `what`."""
    if os.environ.get("PROXYSWEEP_CI") == "1":
        pytest.fail(f"{what} (.ci/run installs it)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, *, timeout_s: float, what: str, proc=None, interval_s=0.2):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


@dataclass
class Postgres:
    """A PostgreSQL cluster of this test session, reachable on 127.0.0.1:port."""

    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres():
    """Start a throwaway cluster; yields a `Postgres`, stops and removes it after."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        missing("PostgreSQL server binaries not found: apt-get install postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            missing("running as root needs the `postgres` user of Debian's postgresql package")
        as_user = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="proxysweep-pg-"))
    data, pwfile = home / "data", home / "pw"
    password = secrets.token_hex(12)
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(home, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "sweeper", f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = (f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(home / "log"), "-o", options,
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield Postgres(port, "sweeper", password)
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on a Postgres backend store with basic auth, as a team runs it:
    artifacts served through the server, credentials only in the environment."""

    def __init__(self, backend_uri: str, workdir: Path, *, username: str, password: str):
        self.backend_uri, self.workdir = backend_uri, workdir
        self.username, self.password = username, password
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        (workdir / "auth.ini").write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{workdir}/auth.db\nadmin_username = {username}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")

    def start(self, *, timeout_s: float = 180) -> None:
        # The store's password in the environment, not on a command line `ps` shows; no
        # GenAI job runners (half a dozen processes a sweep never uses).
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": self.backend_uri,
               "MLFLOW_AUTH_CONFIG_PATH": str(self.workdir / "auth.ini"),
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": "proxysweep-test-csrf-key",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts",
               "--artifacts-destination",
               (self.workdir / "artifacts").as_uri(), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1", "--app-name", "basic-auth"]
        log = open(self.workdir / "server.log", "a")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=log, stderr=log,
                                     start_new_session=True)
        try:
            wait_until(self.healthy, timeout_s=timeout_s, what=f"mlflow server on {self.url}",
                       proc=self.proc, interval_s=0.5)
        except AssertionError:
            self.kill()
            raise AssertionError(f"mlflow server did not start:\n{self.log()}") from None

    def healthy(self) -> bool:
        request = urllib.request.Request(
            self.url + "/api/2.0/mlflow/experiments/search?max_results=1",
            headers={"Authorization": self.auth_header})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def auth_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def kill(self) -> None:
        """SIGKILL the whole server (uvicorn and its workers): a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return (self.workdir / "server.log").read_text()[-4000:]


SWEEP_TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
               "data=synthetic", "data.num_tokens=200_000", "train.seq_len=64",
               "train.eval_tokens=4096", "schedule=wsd", "schedule.warmup_tokens=1024",
               "train.log_every_steps=2", "train.tokens=163840"]


def sweep_through_restart(postgres: Postgres, tmp: Path, secret: str):
    """Run a 2 × 2 sweep (the `sweep` command in its own process, on a local Ray) against a
    basic-auth `mlflow server` on Postgres, killing the server while a trial trains and
    starting it again on the same port. The password is only in the environment (a
    `tracking.uri` in the spec's overrides, which once carried it too, is refused since: a
    sweep records to its own store). Yields what the tests check; the server is up meanwhile
    and killed afterwards."""
    workdir = tmp / "server"
    workdir.mkdir()
    server = MlflowServer(postgres.create_database("sweeps"), workdir, username="sweeper",
                          password=secret)
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "sweeper",
           "MLFLOW_TRACKING_PASSWORD": secret, "AWS_SECRET_ACCESS_KEY": secret}
    storage = tmp / "runs"
    spec = {"name": "served", "overrides": SWEEP_TRIAL,
            "grid": {"optim.lr": "tag(log, choice(3e-3, 1e-2))",
                     "train.batch_size": "choice(8, 16)"},
            "seeds": [0], "resources": {"cpus": 1, "gpus": 0}, "max_concurrent": 2,
            "retries": 1, "storage_root": str(storage)}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.MonkeyPatch.context() as env_of_tests:
        # This process's MLflow client (the tests' checks) uses the same credentials.
        env_of_tests.setenv("MLFLOW_TRACKING_USERNAME", "sweeper")
        env_of_tests.setenv("MLFLOW_TRACKING_PASSWORD", secret)
        proc = None
        try:
            server.start()
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli",
                                     "--tracking-uri", server.url, "launch",
                                     str(tmp / "spec.yaml")], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Kill the server while a trial is training (its history grows, it has no
            # summary yet), so that the outage falls inside trials, not between them.
            wait_until(lambda: _training(storage), timeout_s=240, proc=proc,
                       what="a trial in mid-training")
            server.kill()
            lines_at_kill = _history_lines(storage)
            time.sleep(3)
            server.start()
            outage = {"driver_running_after": proc.poll() is None,
                      "lines_logged_during": _history_lines(storage) - lines_at_kill}
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:] + server.log()
            client = mlflow.MlflowClient(tracking_uri=server.url)
            yield {"server": server, "client": client, "storage": storage, "outage": outage,
                   "experiment": client.get_experiment_by_name("served"), "stdout": out + err,
                   "secret": secret}
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
            server.kill()


def _training(storage: Path) -> bool:
    return any(len(p.read_text().splitlines()) >= 10 and not (p.parent / "summary.json").exists()
               for p in storage.glob("*/metrics.jsonl"))


def _history_lines(storage: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in storage.glob("*/metrics.jsonl"))
