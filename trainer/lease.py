"""At most one live attempt per trial, across drivers: a lease in the trial's directory.

Two drivers can reach the same trial: the same spec launched twice, `sweep resume` typed while
the sweep still runs, two teammates sharing a store. The trial's directory under
`storage_root` is where its attempt writes (checkpoints, `metrics.jsonl`, `summary.json`), and
on a cluster it is on the filesystem every node shares (resuming on another node needs it),
so the lease lives there, whatever the tracking store is (SQLite or a server):

- `lease.lock` is held with `flock` by the worker process that trains the trial, for as long
  as it trains. The kernel (or, on NFS, the server's lock manager) releases it when that
  process dies, however it dies: a SIGKILLed worker, a driver whose Ray took its workers
  down, a node that went away. So a stale lease needs no timeout to be taken over: the next
  worker's `flock` simply succeeds. The lock file itself is never deleted (deleting a lock
  file lets two processes lock two different files).
- `lease.json` says who holds it: sweep, host, the worker's and the driver's pid, since when,
  and a heartbeat the holder rewrites every `HEARTBEAT_S`. Drivers read it to say what they
  found ("running under another driver ...") without touching the lock, and to notice a
  holder that is gone: on this host its pid is checked, elsewhere its heartbeat must be
  younger than `STALE_S`. A holder that ends removes it.

A filesystem whose locks are not shared between nodes would let two nodes lock at once; a
fresh `lease.json` written from another host then still counts as held. A filesystem without
locks at all (Lustre mounted `noflock`) falls back to the heartbeat alone, which leaves a
window of one write between two takers.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HELD = "held"
"""What a trial task returns, instead of a result, when another live attempt holds the trial."""
ENDED = "ended"
"""What it returns when, once it holds the lease, it finds the trial ended (`summary.json`):
by another driver, or by an attempt whose record did not reach the store."""
LOCK_FILE = "lease.lock"
LEASE_FILE = "lease.json"
HEARTBEAT_S = 10.0
"""How often a holder rewrites its heartbeat."""
STALE_S = 60.0
"""A holder on another host whose heartbeat is older than this is gone (six missed beats)."""
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass(frozen=True)
class Holder:
    """Who holds a trial's lease."""

    sweep: str
    host: str
    pid: int
    """The process that trains the trial."""
    driver_pid: int
    """The `sweep` command it trains for."""
    since: float
    heartbeat: float

    def alive(self, *, now: float | None = None) -> bool:
        """Is the holder still there? On this host, its process; elsewhere, its heartbeat."""
        if self.host == socket.gethostname():
            return pid_alive(self.pid)
        return (now or time.time()) - self.heartbeat < STALE_S



def current_holder(run_dir: str | Path) -> Holder | None:
    """The live holder of the trial's lease, or None: nobody, or one that is gone."""
    holder = _read(Path(run_dir) / LEASE_FILE)
    return holder if holder is not None and holder.alive() else None


def describe_holders(holders: list[Holder]) -> list[str]:
    """One line per driver: `3 trials are running under another driver (host h, pid 120,
    since 14:02:31)`."""
    by_driver: dict[tuple[str, int], list[Holder]] = {}
    for h in holders:
        by_driver.setdefault((h.host, h.driver_pid), []).append(h)
    lines = []
    for (host, driver_pid), held in sorted(by_driver.items()):
        since = time.strftime("%H:%M:%S", time.localtime(min(h.since for h in held)))
        n = len(held)
        who = (f"host {host}, pid {driver_pid}, since {since}" if host != "?" else
               "one that is just starting")
        lines.append(f"{n} trial{'s are' if n > 1 else ' is'} running under another driver "
                     f"({who})")
    return lines


class Lease:
    """A held lease: `acquire` it, train, `release` it (or use it as a context manager)."""

    def __init__(self, run_dir: Path, fd: int | None, holder: Holder):
        self.run_dir, self.fd, self.holder = run_dir, fd, holder
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="lease-heartbeat",
                                      daemon=True)
        self._beat.start()

    @classmethod
    def acquire(cls, run_dir: str | Path, *, sweep: str, driver_pid: int) -> Lease | Holder:
        """The lease of the trial in `run_dir`, or the live `Holder` that has it."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return _read(run_dir / LEASE_FILE) or _unknown_holder(sweep)
        except OSError as err:
            os.close(fd)
            if err.errno not in NO_LOCKS:
                raise
            fd = None  # this filesystem has no locks: the heartbeat alone decides
        other = current_holder(run_dir)
        if other is not None and other.pid != os.getpid() and (
                fd is None or other.host != socket.gethostname()):
            # Locked here but fresh from another host: the filesystem does not share locks.
            if fd is not None:
                os.close(fd)
            return other
        now = time.time()
        holder = Holder(sweep=sweep, host=socket.gethostname(), pid=os.getpid(),
                        driver_pid=driver_pid, since=now, heartbeat=now)
        _write(run_dir / LEASE_FILE, holder)
        return cls(run_dir, fd, holder)

    def release(self) -> None:
        """Give the lease up: stop the heartbeat, remove `lease.json`, unlock."""
        self._stop.set()
        self._beat.join()
        try:
            (self.run_dir / LEASE_FILE).unlink()
        except FileNotFoundError:
            pass
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
            try:
                _write(self.run_dir / LEASE_FILE, self.holder)
            except OSError:  # a full or unreachable filesystem: the lock still holds
                pass

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # none, half-written, or from another version
        return None


def _write(path: Path, holder: Holder) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(holder)))
    os.replace(tmp, path)


def _unknown_holder(sweep: str) -> Holder:
    """The lock is held but its holder has not written `lease.json` yet (a moment's race)."""
    now = time.time()
    return Holder(sweep=sweep, host="?", pid=0, driver_pid=0, since=now, heartbeat=now)


def driver_label() -> str:
    """This process as a sweep's driver, "HOST PID": the parent run's `sweep.driver`."""
    return f"{socket.gethostname()} {os.getpid()}"


def gone_driver(label: str | None, alive_at: float | None = None) -> int | None:
    """The pid of the driver that `label` names when it ran on this host and has ended
    (killed, or stopped by an error: a driver that ends any other way closes its sweep, see
    `sweep.driver_error`); None when it is alive, ran
    on another host (where its pid says nothing here), or is not named. `alive_at` (seconds
    since the epoch): a moment the driver is known to have lived (its last heartbeat); a
    process under its pid that started later is another one, the pid reused after the driver
    was killed (a cancel then waited a minute for a driver that was gone)."""
    host, _, pid = (label or "").rpartition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if not pid_alive(int(pid)):
        return int(pid)
    started = pid_started(int(pid)) if alive_at is not None else None
    # (/proc's boot time is in whole seconds)
    return int(pid) if started is not None and started > alive_at + 2 else None


def pid_started(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (from /proc; None without it)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        boot = next(int(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
