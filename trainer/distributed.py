"""The processes of one run: a single process, ranks spawned by `run` itself, or `torchrun`.

`process_group(cfg, log_dir)` yields the `Dist` of the calling process. With
`train.world_size > 1` and no `torchrun` environment, the caller becomes rank 0 and starts
ranks 1..W-1 as child processes (`python -m trainer.rank`) with the same environment variables
torchrun sets, so both launch paths meet in one `env://` initialisation. Rank 0 stays in the
caller's process on purpose: the reporter it was given (an MLflow client, a Ray actor handle)
keeps working, and a Ray task that holds W GPUs holds the whole trial on one node.

Failure: a child that exits early closes its gloo/NCCL connections, so rank 0's next collective
raises; rank 0 then reports which rank failed and why (the child writes its exception to a file
before exiting; its full output is in `rank-N.log`). If rank 0 fails, it kills the children,
and children die with their parent (PR_SET_PDEATHSIG), so nothing is left hanging.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.config import Config
from trainer.errors import ConfigError, DataUnavailable, stopped_by

ERROR_FILE_ENV = "PROXYSWEEP_RANK_ERROR_FILE"
_TIMEOUT = timedelta(minutes=10)


class RankFailed(RuntimeError):
    """Another rank of this run died; the message names the rank and its error."""


@dataclass(frozen=True)
class Dist:
    """Where the calling process sits in its run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1


NO_GPU_ENV = "PROXYSWEEP_NO_GPU"
"""Set by a sweep's worker whose Ray task holds no GPU (`resources.gpus: 0`): `auto` is then
the CPU. Ray (2.60) no longer hides a node's GPUs from such a task, so without it a CPU trial
on a GPU node would train on a GPU that Ray may have given to another trial."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present and the process may use it (see `NO_GPU_ENV`); a rank
    uses the GPU of its local rank."""
    if name == "auto":
        may_use_gpu = not os.environ.get(NO_GPU_ENV)
        name = "cuda" if may_use_gpu and torch.cuda.is_available() else "cpu"
    if name == "cuda":  # with its index: the process group's device_id needs one
        return torch.device("cuda", local_rank)
    return torch.device(name)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


RANKS_DIR = ".ranks"
"""The folder, in a run's folder, where `run()` and the ranks it starts share files."""


@contextlib.contextmanager
def process_group(cfg: Config, log_dir: Path):
    """The calling process's `Dist`, with its process group up for the duration."""
    world = cfg.train.world_size
    if launched_by_torchrun():
        env_world = int(os.environ["WORLD_SIZE"])
        if env_world != world:
            raise RankFailed(f"train.world_size={world} but this process was launched with "
                             f"WORLD_SIZE={env_world}: make them equal")
        with _joined(cfg) as d:
            yield d
        return
    if world == 1:
        shutil.rmtree(log_dir / RANKS_DIR, ignore_errors=True)  # a killed W-rank start's
        yield Dist(device=resolve_device(cfg.train.device))
        return
    with _spawned(cfg, log_dir) as d:
        yield d


@contextlib.contextmanager
def _joined(cfg: Config, before_teardown=None):
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(cfg.train.device, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if error_file := os.environ.get(ERROR_FILE_ENV):  # a rank `run` started: say it is here
        Path(error_file).with_suffix(".ready").touch()
    dist.init_process_group(backend, timeout=_TIMEOUT, device_id=device
                            if device.type == "cuda" else None)
    try:
        yield Dist(rank, cfg.train.world_size, device)
        if before_teardown is not None:
            before_teardown()
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _spawned(cfg: Config, log_dir: Path):
    log_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    # The process's threads are shared among its ranks (rank 0 is this process), rather than
    # each rank taking them all: a run of 2 ranks on 2 cores trains at 1 thread per rank, as
    # torchrun launches it (OMP_NUM_THREADS=1), and rounds alike.
    threads = max(1, torch.get_num_threads() // cfg.train.world_size)
    base_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                "WORLD_SIZE": str(cfg.train.world_size), "OMP_NUM_THREADS": str(threads)}
    with _ranks_dir(log_dir) as tmp:
        config_file = tmp / "config.pkl"
        config_file.write_bytes(pickle.dumps(cfg))
        children = {r: _start_rank(r, base_env, config_file, tmp, log_dir)
                    for r in range(1, cfg.train.world_size)}
        saved = {k: os.environ.get(k) for k in (*base_env, "RANK", "LOCAL_RANK")}
        os.environ.update(base_env, RANK="0", LOCAL_RANK="0")
        own_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _await_ranks(children, tmp)
            # Rank 0 hosts the group's TCP store: it waits for the other ranks to exit before
            # tearing its group down. (Torn down first, a rank still in its own teardown
            # lost the store and aborted: "terminate called without an active exception".)
            with _joined(cfg, before_teardown=lambda: _wait_children(children, tmp,
                                                                     log_dir)) as d:
                yield d
        except ConfigError:
            raise  # rank 0's own: the cause, whatever the other ranks hit after it left
        except BaseException as error:
            failure = _first_failure(children, tmp, log_dir, wait_s=5.0)
            if failure and stopped_by(error) is None:  # (a stop is not the ranks' failure)
                if own := _config_error_of(children, tmp):
                    raise own from error  # one sentence, and a sweep does not retry it
                raise RankFailed(failure) from error
            raise
        finally:
            _kill(children)
            _restore_env(saved)
            torch.set_num_threads(own_threads)


def _await_ranks(children: dict, tmp: Path) -> None:
    """Wait, in Python, until every rank `run` started is about to join the group: a rank
    that died before it (killed while importing torch, out of memory) left rank 0 blocked in
    the group's set-up for the whole `_TIMEOUT`, deaf to Ctrl-C and SIGTERM, and holding the
    run's lease. Raises when one ends first (the caller says which, and why)."""
    deadline = time.monotonic() + _TIMEOUT.total_seconds()
    while not all((tmp / f"rank-{r}.ready").exists() for r in children):
        if any(child.poll() is not None for child in children.values()):
            raise RuntimeError("a rank ended before the process group was up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ranks did not start within {_TIMEOUT}")
        time.sleep(0.05)


@contextlib.contextmanager
def _ranks_dir(log_dir: Path):
    """The ranks' shared folder (the pickled config, each rank's error file): inside the run's
    folder, so that a run killed with SIGKILL leaves it there, where its next start clears it,
    rather than a folder in /tmp per killed run."""
    tmp = log_dir / RANKS_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _free_port() -> int:
    # The port is released before the ranks bind it; the window is the same one torchrun's
    # standalone mode accepts.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _start_rank(rank: int, base_env: dict, config_file: Path, tmp: Path,
                log_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, **base_env, RANK=str(rank), LOCAL_RANK=str(rank),
               **{ERROR_FILE_ENV: str(tmp / f"rank-{rank}.error")})
    log = open(log_dir / f"rank-{rank}.log", "w")  # noqa: SIM115 (owned by the child)
    return subprocess.Popen([sys.executable, "-m", "trainer.rank", str(config_file)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)


def _describe(rank: int, code: int, tmp: Path, log_dir: Path) -> str:
    error_file = tmp / f"rank-{rank}.error"
    if error_file.exists():
        why = error_file.read_text().strip().splitlines()[0]
    elif code < 0:
        why = f"killed by {signal.Signals(-code).name}"
    else:
        why = f"exited with code {code}"
    return f"rank {rank} failed: {why} (its output: {log_dir / f'rank-{rank}.log'})"


def _config_error_of(children: dict, tmp: Path) -> ConfigError | None:
    """The ConfigError (or DataUnavailable) a rank raised, rebuilt here; None when none did."""
    for rank in children:
        error_file = tmp / f"rank-{rank}.error"
        if not error_file.exists():
            continue
        kind, _, message = error_file.read_text().strip().partition(": ")
        if kind in ("ConfigError", "DataUnavailable") and message:
            cls = DataUnavailable if kind == "DataUnavailable" else ConfigError
            return cls(message.splitlines())
    return None


def _first_failure(children: dict, tmp: Path, log_dir: Path, *, wait_s: float) -> str | None:
    deadline = time.monotonic() + wait_s
    while True:
        for rank, child in children.items():
            code = child.poll()
            if code not in (None, 0):
                return _describe(rank, code, tmp, log_dir)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _wait_children(children: dict, tmp: Path, log_dir: Path) -> None:
    for rank, child in children.items():
        code = child.wait(timeout=_TIMEOUT.total_seconds())
        if code != 0:
            raise RankFailed(_describe(rank, code, tmp, log_dir))


def _kill(children: dict) -> None:
    for child in children.values():
        if child.poll() is None:
            child.kill()
            child.wait()


def all_sum(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum of a tensor over ranks (itself on one process)."""
    if d.sharded:
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier(d: Dist) -> None:
    if d.sharded:
        dist.barrier()
