"""A sweep on a two-node Ray cluster with token authentication, one node lost mid-sweep.

Both nodes run on this machine (`ray start --head`, then `ray start --address`), each with
one CPU, so the sweep's trials must spread over both. The driver is the `sweep` command,
connecting through `--address` with the cluster's token; a client with another token is
refused. Once a trial has finished on each node, the worker node is killed (SIGKILL to each of
its processes: raylet, trial processes, all) while it runs a trial; Ray retries that
trial on the head, which resumes it from its checkpoint, and no trial is lost.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml

from tests.deploy.services import ROOT, free_port, wait_until
from trainer.schema import sweep_runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]
RAY = str(Path(sys.executable).parent / "ray")
TRIAL = ["model=tiny", "model.width=32", "model.head_dim=16", "model.base_width=32",
         "data=synthetic", "data.num_tokens=200_000", "train.seq_len=64",
         "train.eval_tokens=4096", "schedule=wsd", "schedule.warmup_tokens=1024",
         "train.batch_size=8", "train.tokens=163840", "train.checkpoint_every_tokens=16384"]
NODES_UP = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < 2:
    assert time.monotonic() < deadline, "the worker node did not join"
    time.sleep(0.2)
"""


def _ray_start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([RAY, "start", *args, "--num-cpus=1", "--num-gpus=0",
                                 "--disable-usage-stats", "--block"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the node's `ray start --block` (it stops what it started), then SIGKILL
    whatever of it is left."""
    try:
        left = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        left = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for child in left:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node with token auth; (address, env, worker process). The
    sweep test, last in this file, kills the worker."""
    home = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths
    token = home / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               # A killed node is declared dead within seconds rather than half a minute.
               RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
               RAY_health_check_failure_threshold="3")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _ray_start(["--head", f"--port={port}", f"--temp-dir={home / 't'}",
                       "--include-dashboard=false"], env, home / "head.log")
    worker = None
    try:
        wait_until(lambda: _port_open(port), timeout_s=60, what="the Ray head", proc=head)
        worker = _ray_start([f"--address={address}"], env, home / "worker.log")
        subprocess.run([sys.executable, "-c", NODES_UP, address], env=env, check=True,
                       timeout=150)
        yield {"address": address, "env": env, "worker": worker}
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def _kill_node(node_proc: subprocess.Popen) -> None:
    """SIGKILL a node and every process it started (Ray's workers have process groups of
    their own, so killing the node's group alone would leave its trials running)."""
    node = psutil.Process(node_proc.pid)
    for proc in [*node.children(recursive=True), node]:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    node_proc.wait()


class _WorkerNodeWatch:
    """Which trials the worker node has trained, told by the pid in each trial's
    `lease.json` (a process of that node). Polled: true once a trial the worker node ran has
    ended and another it runs now has written some history (a checkpoint behind it).

    Watching the node rather than waiting for "two ended, two training" keeps the window the
    whole of the worker's second trial: which trial a node takes next, and when, is Ray's."""

    def __init__(self, storage: Path, node_proc: subprocess.Popen):
        self.storage, self.node, self.seen = storage, psutil.Process(node_proc.pid), set()

    def _holder_on_node(self, lease: Path) -> bool:
        try:
            pid = json.loads(lease.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return False  # no lease, or one being written
        return pid in {p.pid for p in self.node.children(recursive=True)}

    def __call__(self) -> bool:
        training = False
        for run in (p.parent for p in self.storage.glob("*/lease.json")):
            if self._holder_on_node(run / "lease.json"):
                self.seen.add(run)
                history = run / "metrics.jsonl"
                training |= (not (run / "summary.json").exists() and history.exists()
                             and len(history.read_text().splitlines()) >= 5)
        ended_here = [run for run in self.seen if (run / "summary.json").exists()]
        return bool(ended_here) and training


def test_a_client_with_another_token_is_refused(cluster):
    env = {**cluster["env"], "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    snippet = f"import ray; ray.init(address={cluster['address']!r}); print('CONNECTED')"
    try:
        done = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True,
                              text=True, timeout=6)
        out = done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:  # Ray keeps retrying; its log says why
        out = (err.stdout or b"").decode() + (err.stderr or b"").decode()
    assert "CONNECTED" not in out
    assert "Authentication token is missing or incorrect" in out


@pytest.mark.parametrize("auth, said", [
    ({}, "it requires token authentication and this driver sends no token; set "
         "RAY_AUTH_MODE=token, with the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN "
         "or RAY_AUTH_TOKEN_PATH"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
     "it refused this driver's token; give the cluster's token in ~/.ray/auth_token, "
     "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"),
])
def test_a_driver_the_cluster_does_not_let_in_is_told_why_before_anything_runs(
        cluster, tmp_path, auth, said):
    """A driver without the cluster's token (RAY_AUTH_MODE unset, a `ray start` cluster with
    token auth) was told, after seconds of Ray's GCS warnings, 'cannot reach the Ray cluster
    ... start it with `ray start --head`': the cluster was there."""
    spec = {"name": "noauth", "overrides": TRIAL, "grid": {"optim.lr": "choice(3e-3)"},
            "storage_root": str(tmp_path / "runs")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in cluster["env"].items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--tracking-uri",
                           f"sqlite:///{tmp_path}/mlflow.db", "launch",
                           str(tmp_path / "spec.yaml"), "--address", cluster["address"]],
                          cwd=ROOT, env={**env, **auth}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr == (f"error: the Ray cluster at --address={cluster['address']} does "
                           f"not let this driver in: {said}\n")
    assert not any((tmp_path / "runs").glob("*/metrics.jsonl"))  # nothing trained


def test_sweep_spreads_over_both_nodes_and_a_lost_node_loses_no_trial(cluster, tmp_path):
    storage, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    spec = {"name": "cluster", "overrides": TRIAL,
            # (six trials: with four, a worker node slow to start its first (a loaded
            # machine) left the head all three others, and no second trial to lose)
            "grid": {"optim.lr": "choice(3e-3, 1e-2)"}, "seeds": [0, 1, 2],
            "resources": {"cpus": 1, "gpus": 0}, "retries": 2, "storage_root": str(storage),
            # a task per trial, in rounds of two (a lost fused group: tests/orchestrator/
            # test_fusion.py)
            "fuse": False}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "--tracking-uri", uri,
                             "launch", str(tmp_path / "spec.yaml"), "--address",
                             cluster["address"]], cwd=ROOT, env=cluster["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # A trial has ended on the worker node (one CPU each) and its next one is training.
        wait_until(_WorkerNodeWatch(storage, cluster["worker"]), timeout_s=240, proc=proc,
                   what="the worker node's second trial")
        _kill_node(cluster["worker"])
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    children = sweep_runs(client, client.get_experiment_by_name("cluster").experiment_id,
                          "trial")
    assert len(children) == 6 and len({c.data.tags["trial.id"] for c in children}) == 6
    assert [c.data.tags["trial.status"] for c in children] == ["finished"] * 6
    assert len({c.data.tags["trial.node"] for c in children}) == 2  # both nodes ran trials
    # The trial the lost node trained is tried again from its checkpoint (attempt 2); when
    # the node went down as that trial had just ended (its worker keeps the lease until the
    # tracker wrote the end, which a loaded CI machine made seconds), the retry finds it
    # ended and its record is completed from its files: attempt 1. Never more than one.
    retried = [c for c in children if int(c.data.tags["trial.attempt"]) > 1]
    assert len(retried) <= 1
    # Nothing twice, up to the last step, in every trial. (Steps the lost worker had not sent
    # yet come back from metrics.jsonl at the end of the launch: the store's order is not by
    # step.)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps)) and max(steps) == child.data.metrics["final/steps"]
