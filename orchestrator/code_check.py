"""The driver and every node of its Ray cluster run the same proxysweep code.

A trial's id, its data fingerprint and its MLflow record are computed partly by the driver and
partly by the worker that trains it. A cluster whose nodes run another version of the code (a
head updated with `git pull` while the workers' image is last week's, a `ray start` from
another checkout) computes other ids and fingerprints: its trials failed as "changed data",
or were recorded under ids the driver did not know, and ran again at the next launch. So
before a launch submits anything, one zero-CPU task on each node returns a digest of the
`trainer` and `orchestrator` sources it imports, and a node whose digest is not the driver's
stops the launch with one sentence. The task also starts a worker process on each node, which
the trials reuse.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import socket
from pathlib import Path

PACKAGES = ("trainer", "orchestrator")
"""What a worker runs of proxysweep (the fitter runs only where `sweep fit` is typed)."""

ANSWER_S = 120.0
"""How long the launch waits for every node's digest before it goes on without (a node whose
workers cannot start in that time is said by the trials)."""


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 (12 hex digits) of the `.py` files of `PACKAGES` this process imports: their
    paths within the packages and their bytes."""
    h = hashlib.sha256()
    for package in PACKAGES:
        root = Path(importlib.util.find_spec(package).origin).parent
        for path in sorted(root.rglob("*.py")):
            h.update(f"{path.relative_to(root.parent).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def source_folder() -> str:
    """Where this process imports proxysweep from (the folder holding `trainer/`)."""
    return str(Path(importlib.util.find_spec("trainer").origin).parent.parent)


def node_digest() -> tuple[str, str, str]:
    """(host, `source_digest`, `source_folder`) of the process it runs in: a Ray task on each
    node. (Ray puts the launch's folder first on its workers' path: a `trainer/` folder there
    is what they import.)"""
    return socket.gethostname(), source_digest(), source_folder()


def cluster_code_problems() -> list[str]:
    """One sentence per node of the connected Ray cluster whose workers run other proxysweep
    code than this driver, or cannot import it at all."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(node_digest)
    asked = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(): node["NodeManagerAddress"]
        for node in ray.nodes() if node["Alive"]}
    ray.wait(list(asked), num_returns=len(asked), timeout=ANSWER_S)
    here, found = source_digest(), []
    for ref, address in asked.items():
        try:
            host, digest, folder = ray.get(ref, timeout=0)
        except ray.exceptions.GetTimeoutError:
            continue  # (not answered: its workers cannot start; the trials say why)
        except ray.exceptions.RayError as err:
            found.append(f"the Ray cluster's node {address} cannot run this driver's code "
                         f"({str(err).strip().splitlines()[-1][:200]}): install this "
                         "checkout of proxysweep on every node (`pip install -e .` at its "
                         "commit), or launch from where the cluster's own is installed")
            continue
        if digest != here and Path(folder).resolve() == Path.cwd().resolve():
            # (a `trainer/` where the launch runs: "install this checkout on every node, or
            # launch from where the cluster's own is installed" named this very folder)
            found.append(f"the Ray cluster's node {host} ({address}) imports proxysweep from "
                         f"{folder}, the folder this launch runs in, which holds other code "
                         f"under {' or '.join(p + '/' for p in PACKAGES)} (Ray puts the "
                         "launch's folder first on its workers' path): launch from another "
                         "folder, or move that code out of this one")
        elif digest != here:
            found.append(f"the Ray cluster's node {host} ({address}) runs other proxysweep code "
                         f"than this driver (source digest {digest} there, imported from "
                         f"{folder}; {here} here, from {source_folder()}), so it would compute "
                         "other trial ids and data fingerprints: install this checkout on "
                         "every node (`pip install -e .` at its commit), or launch from where "
                         "the cluster's own is installed")
    return found
