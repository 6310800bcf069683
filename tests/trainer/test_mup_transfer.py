"""muP's promise at CI scale: the best LR found at one width holds at 4× the width.

Three widths × four LRs of a 2-layer model on the embedded corpus, 65,536 tokens each (about
30 s on one core). The optimum of each width is the vertex of the fitter's local parabola in
log LR, as `sweep fit` reads it. The full-size claim (6+ LRs, widths 64-256+, muP against SP)
is benchmarks/science/mup_transfer.py.
"""

import itertools

import numpy as np
import pytest

from fitter.slices import axis_optimum
from trainer.compose import compose
from trainer.loop import run

WIDTHS = (32, 64, 128)
LRS = (1e-3, 2e-3, 4e-3, 8e-3)


@pytest.mark.slow
def test_mup_optimum_drifts_less_than_2x_over_4x_width(tmp_path):
    loss = {}
    for width, lr in itertools.product(WIDTHS, LRS):
        cfg = compose(["model=tiny", "model.init_std=0.08", "model.output_mult=2.0",
                       "schedule=wsd", "model.base_width=64", f"model.width={width}",
                       f"optim.lr={lr}", "train.tokens=65536", "train.batch_size=8",
                       "train.seq_len=64", "schedule.warmup_tokens=4096",
                       "train.eval_every_tokens=0", "train.checkpoint_every_tokens=0",
                       "train.eval_tokens=32768", f"storage_root={tmp_path}"])
        result = run(cfg)
        assert result.status == "finished"
        loss[width, lr] = result.final_eval_loss
    optima = {}
    for width in WIDTHS:
        opt = axis_optimum(np.log10(LRS), np.array([loss[width, lr] for lr in LRS]))
        assert opt.edge is None, (width, opt)  # bracketed by the grid
        optima[width] = 10 ** opt.x
    assert max(optima.values()) / min(optima.values()) < 2.0, optima
    # wider is better at its own optimum, as muP promises
    best = [min(loss[width, lr] for lr in LRS) for width in WIDTHS]
    assert best == sorted(best, reverse=True), best
