"""The driver's cluster model, with tables: no Ray."""

import pytest

from orchestrator.placement import (
    ClusterModel,
    Placement,
    Request,
    never_fits,
    select,
    submission_order,
)


def _model(nodes, used=()):
    """A model with `used` placements already taken."""
    model = ClusterModel(nodes)
    for p in used:
        model.take(p)
    return model


@pytest.mark.parametrize("nodes, used, req, expected", [
    # A half goes to the half-used GPU, not to the free GPU with the lower index (Ray packs
    # best fit too: a model that used first fit disagreed with Ray about which GPUs are free).
    ([(8, 2)], [Placement(0, ((1, 0.5),), 0)], Request(0.5, 0),
     Placement(0, ((1, 0.5),), 0)),
    # Of two partly used GPUs, the one with least room that still fits.
    ([(8, 3)], [Placement(0, ((0, 0.25),), 0), Placement(0, ((1, 0.75),), 0)],
     Request(0.25, 0), Placement(0, ((1, 0.25),), 0)),
    # Too little room on every partly used GPU: a free one.
    ([(8, 2)], [Placement(0, ((0, 0.75),), 0)], Request(0.5, 0),
     Placement(0, ((1, 0.5),), 0)),
    # Whole GPUs skip partly used ones.
    ([(8, 3)], [Placement(0, ((0, 0.5),), 0)], Request(2, 0),
     Placement(0, ((1, 1.0), (2, 1.0)), 0)),
    # Whole GPUs from the node with the fewest free GPUs that suffice.
    ([(8, 4), (8, 2)], [], Request(2, 1), Placement(1, ((0, 1.0), (1, 1.0)), 1)),
    # CPUs must fit on the same node as the GPUs.
    ([(1, 4), (4, 4)], [], Request(1, 2), Placement(1, ((0, 1.0),), 2)),
    # CPU-only: best fit on CPUs.
    ([(4, 0), (2, 0)], [], Request(0, 2), Placement(1, (), 2)),
])
def test_place(nodes, used, req, expected):
    assert _model(nodes, used).place(req) == expected


@pytest.mark.parametrize("nodes, used, req", [
    ([(8, 2)], [Placement(0, ((0, 0.5),), 0), Placement(0, ((1, 0.75),), 0)], Request(0.75, 0)),
    ([(8, 2)], [Placement(0, ((0, 0.5),), 0)], Request(2, 0)),
    ([(8, 2), (8, 2)], [Placement(0, ((0, 1.0),), 0), Placement(1, ((1, 1.0),), 0)],
     Request(2, 0)),  # two free GPUs, but on different nodes
    ([(1, 2)], [], Request(1, 2)),
])
def test_does_not_fit(nodes, used, req):
    assert _model(nodes, used).place(req) is None


def test_release_gives_back_what_take_took():
    model = _model([(4, 2)])
    p = model.place(Request(0.5, 1))
    model.take(p)
    assert model.cpus == [3.0] and model.gpus == [[0.5, 1.0]]
    model.release(p)
    assert model.cpus == [4.0] and model.gpus == [[1.0, 1.0]]


@pytest.mark.parametrize("queue, max_new, started", [
    # In order; a whole-GPU trial that does not fit is skipped and halves fill the gap.
    ([2, 2, 0.5, 0.5, 0.5], 10, [2, 0.5, 0.5]),
    # Halves pair up, so the whole GPU after them still fits.
    ([0.5, 0.5, 1], 10, [0.5, 0.5, 1]),
    # The concurrency cap.
    ([0.5, 0.5, 0.5], 2, [0.5, 0.5]),
])
def test_select_longest_first_with_backfill(queue, max_new, started):
    model = _model([(8, 3)])
    chosen = select(queue, model, lambda g: Request(g, 0), max_new=max_new)
    assert [g for g, _ in chosen] == started
    assert sum(sum(gpus) for gpus in model.gpus) == pytest.approx(3 - sum(started))


def test_one_wave_of_the_smallest_goes_first_then_longest_first():
    """Trials are (flops, gpus): the smallest that one 3-GPU node holds at once, then the
    rest by size, largest first; the model itself is left free."""
    model = _model([(8, 3)])
    trials = [(8, 1), (1, 0.5), (6, 2), (2, 0.5), (3, 0.5), (5, 1), (4, 0.5), (7, 0.5),
              (0.5, 1)]
    order = submission_order(trials, model, lambda t: Request(t[1], 0), lambda t: t[0],
                             max_new=10)
    # The wave: 0.5 (1 GPU), 1 and 2 (halves of one GPU), 3 and 4 (halves of the last one).
    assert order == [(0.5, 1), (1, 0.5), (2, 0.5), (3, 0.5), (4, 0.5),
                     (8, 1), (7, 0.5), (6, 2), (5, 1)]
    assert model.gpus == [[1.0, 1.0, 1.0]]


def test_the_first_wave_keeps_to_the_concurrency_cap():
    trials = [(flops, 0.5) for flops in range(1, 7)]
    order = submission_order(trials, _model([(8, 4)]), lambda t: Request(t[1], 0),
                             lambda t: t[0], max_new=2)
    assert [f for f, _ in order] == [1, 2, 6, 5, 4, 3]


@pytest.mark.parametrize("nodes, req, why", [
    ([(8, 2)], Request(1, 1), None),
    ([(8, 2)], Request(0.5, 8), None),
    ([(2, 0), (8, 2)], Request(2, 4), None),                      # the second node holds it
    ([(8, 2)], Request(4096, 1), "fit no node of the cluster (largest: 8 CPUs, 2 GPUs)"),
    ([(2, 0)], Request(0, 4), "fit no node of the cluster (largest: 2 CPUs, 0 GPUs)"),
    ([(2, 0), (1, 4)], Request(1, 2), "fit no node of the cluster (largest: 2 CPUs, 4 GPUs)"),
    ([], Request(0, 1), "fit no node of the cluster (largest: 0 CPUs, 0 GPUs)"),
])
def test_a_request_no_idle_node_holds_never_fits(nodes, req, why):
    assert never_fits(req, ClusterModel(nodes)) == why
