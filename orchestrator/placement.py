"""The driver's model of the cluster: where a trial fits now, and which queued trials to start.

Ray queues each resource shape apart and packs fractional GPUs as it likes, so a driver that
handed Ray every trial at once would let short trials overtake long ones and would strand
whole-GPU trials behind half-used GPUs. Instead the driver keeps this model, node by node and
GPU by GPU, and submits only trials that fit it; Ray then never queues anything.

Packing rules (pure functions of the model, tested with tables in tests/orchestrator):
- a fractional request goes to the GPU with the *least* room that still fits it (best fit), so
  halves pair up on one GPU and whole GPUs stay free for whole-GPU trials;
- a whole-GPU request takes free GPUs on the node with the fewest free GPUs that suffice, so
  large free blocks stay for large requests;
- the queue is taken in order, and every trial that fits starts (backfilling);
- the order (`submission_order`): one wave of the smallest trials, then longest first.

Ray itself packs fractional requests best fit (a 0.5 lands on a half-used GPU before a free
one), so this model agrees with where Ray really puts each task; with first fit by index it
did not, and whole-GPU trials it thought had room waited in Ray's queue instead.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

EPS = 1e-9
T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """What one trial holds while it runs."""

    gpus: float = 0.0
    """Below 1: a share of one GPU; from 1 up: that many whole GPUs."""
    cpus: float = 1.0


@dataclass(frozen=True)
class Placement:
    """Where a trial runs in the model: a node, (GPU index, share) pairs and CPUs."""

    node: int
    shares: tuple[tuple[int, float], ...]
    cpus: float


class ClusterModel:
    """Free CPUs and the free share of every GPU, per node."""

    def __init__(self, nodes: Sequence[tuple[float, int]]):
        """Args:
            nodes: (CPUs, GPUs) of each alive node.
        """
        self.cpus = [float(c) for c, _ in nodes]
        self.gpus = [[1.0] * int(g) for _, g in nodes]

    @classmethod
    def from_ray(cls, ray_nodes: Sequence[dict]) -> ClusterModel:
        """The model of `ray.nodes()` (alive nodes only)."""
        return cls([(n["Resources"].get("CPU", 0.0), int(n["Resources"].get("GPU", 0)))
                    for n in ray_nodes if n.get("Alive")])

    def place(self, req: Request) -> Placement | None:
        """Where `req` fits now, by the packing rules above, or None."""
        nodes = [n for n in range(len(self.cpus)) if self.cpus[n] + EPS >= req.cpus]
        if req.gpus >= 1:
            return self._place_whole(nodes, req)
        if req.gpus > 0:
            return self._place_share(nodes, req)
        if not nodes:
            return None
        node = min(nodes, key=lambda n: (self.cpus[n], n))  # best fit on CPUs
        return Placement(node, (), req.cpus)

    def _place_share(self, nodes: list[int], req: Request) -> Placement | None:
        fits = [(free, n, i) for n in nodes for i, free in enumerate(self.gpus[n])
                if free + EPS >= req.gpus]
        if not fits:
            return None
        _, node, gpu = min(fits)
        return Placement(node, ((gpu, req.gpus),), req.cpus)

    def _place_whole(self, nodes: list[int], req: Request) -> Placement | None:
        need = int(req.gpus)
        free = {n: [i for i, g in enumerate(self.gpus[n]) if g >= 1 - EPS] for n in nodes}
        fits = [n for n in nodes if len(free[n]) >= need]
        if not fits:
            return None
        node = min(fits, key=lambda n: (len(free[n]), n))
        return Placement(node, tuple((i, 1.0) for i in free[node][:need]), req.cpus)

    def capacity(self, req: Request, *, most: int = 100_000) -> int:
        """How many of `req` fit at once in what is free now (this model is left as it is)."""
        model, count = copy.deepcopy(self), 0
        while count < most and (p := model.place(req)) is not None:
            model.take(p)
            count += 1
        return count

    def take(self, p: Placement) -> None:
        """Mark a placement's resources used."""
        self._add(p, -1.0)

    def release(self, p: Placement) -> None:
        """Give a placement's resources back."""
        self._add(p, +1.0)

    def _add(self, p: Placement, sign: float) -> None:
        self.cpus[p.node] += sign * p.cpus
        for i, share in p.shares:
            self.gpus[p.node][i] = min(1.0, self.gpus[p.node][i] + sign * share)


def never_fits(req: Request, model: ClusterModel) -> str | None:
    """Why `req` fits no node of the idle cluster `model` (so it could never start), or None."""
    if model.place(req) is not None:
        return None
    cpus = max(model.cpus, default=0.0)
    gpus = max((len(g) for g in model.gpus), default=0)
    return f"fit no node of the cluster (largest: {cpus:g} CPUs, {gpus:g} GPUs)"


def select(queue: Sequence[T], model: ClusterModel, request_of: Callable[[T], Request], *,
           max_new: int) -> list[tuple[T, Placement]]:
    """Which queued items to start now, each with its placement (already taken in `model`).

    The queue is in priority order (longest first); each item that fits is placed, one that
    does not is skipped and later, smaller items may fill the gap (backfilling). On the
    scheduler benchmark's mix a reservation for skipped whole-GPU items gained nothing in
    simulation, so there is none.

    Args:
        queue: items in priority order.
        model: the cluster model; placements chosen here are taken in it.
        request_of: the resources of an item.
        max_new: at most this many items start (a concurrency cap).
    """
    chosen: list[tuple[T, Placement]] = []
    no_room: set[Request] = set()  # placing only takes room: a shape that failed stays failed
    for item in queue:
        if len(chosen) >= max_new:
            break
        req = request_of(item)
        if req in no_room:
            continue
        placement = model.place(req)
        if placement is None:
            no_room.add(req)
            continue
        model.take(placement)
        chosen.append((item, placement))
    return chosen


def submission_order(items: Sequence[T], model: ClusterModel,
                     request_of: Callable[[T], Request], size_of: Callable[[T], float], *,
                     max_new: int) -> list[T]:
    """The order the driver submits trials in: one wave of the smallest, then longest first.

    The wave is what the cluster (`model`, left as it is) holds at once of the smallest
    trials (`size_of`, the FLOPs), packed by the rules above, within the concurrency cap.
    Longest first (LPT) alone ends a sweep of many small proxies with a wave of the smallest
    ones, hundreds of trials ending within seconds, faster than the tracking actor writes a
    trial's record (its run, its end, its terminal state: three MLflow transactions); the sweep
    is over only once they are written, so it waits on that backlog. Run first, the smallest
    trials end while the tracker has little else to do; the sweep still ends on small trials
    (the next-smallest), so LPT's balance at the end holds.

    The cost: the largest trials start one small trial later, and every worker of the first
    wave pays its first task's one-time costs at once. In return the MLflow UI has complete
    results within the smallest trial's time, and with them whatever goes wrong only at a
    trial's end (the final eval, the summary, the record). Figures: benchmarks/README.md.
    """
    wave = select(sorted(items, key=size_of), copy.deepcopy(model), request_of,
                  max_new=max_new)
    first = {id(item) for item, _ in wave}
    return [item for item, _ in wave] + sorted(
        (item for item in items if id(item) not in first), key=size_of, reverse=True)
