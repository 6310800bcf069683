import math

import pytest

from trainer.config import DecayShape, ScheduleConfig, ScheduleName
from trainer.schedules import (
    ScheduleInputs,
    decay_factor,
    learning_rate,
    power_lr,
    warmup_factor,
)


def test_power_scheduler_paper_check():
    # Shen et al. 2024: β = 1024, a = 4.6, b = −0.51, T = 1e13 tokens ⇒ η ≈ 0.0011.
    lr = power_lr(1e13, max_lr=0.02, batch_size=1024, a=4.6, b=-0.51)
    assert lr == pytest.approx(1024 * 4.6 * 1e13**-0.51)
    assert lr == pytest.approx(0.0011, abs=0.00005)


@pytest.mark.parametrize("tokens, expected", [
    (1e3, 0.02),            # β·a·n^b = 16·4·1e3^−0.51 ≈ 1.9 → capped at η_max
    (1e7, 16 * 4 * 1e7**-0.51),
    (1e9, 16 * 4 * 1e9**-0.51),
])
def test_power_cap_and_decay(tokens, expected):
    assert power_lr(tokens, max_lr=0.02, batch_size=16, a=4.0, b=-0.51) == pytest.approx(expected)


def test_power_lr_falls_with_tokens_and_grows_with_batch():
    small = power_lr(1e8, max_lr=1.0, batch_size=16, a=4.0, b=-0.51)
    assert power_lr(1e9, max_lr=1.0, batch_size=16, a=4.0, b=-0.51) < small
    assert power_lr(1e8, max_lr=1.0, batch_size=32, a=4.0, b=-0.51) == pytest.approx(2 * small)


@pytest.mark.parametrize("tokens, warmup, expected", [
    (0, 1000, 0.0), (250, 1000, 0.25), (1000, 1000, 1.0), (5000, 1000, 1.0), (10, 0, 1.0),
])
def test_warmup(tokens, warmup, expected):
    assert warmup_factor(tokens, warmup) == pytest.approx(expected)


@pytest.mark.parametrize("shape, start, mid, end", [
    (DecayShape.linear, 1.0, 0.5, 0.0),
    (DecayShape.cosine, 1.0, 0.5, 0.0),
    (DecayShape.one_minus_sqrt, 1.0, 1 - math.sqrt(0.5), 0.0),
    (DecayShape.exp, 1.0, 0.1, 0.01),  # 0.01 ** p
])
def test_decay_shapes_at_endpoints(shape, start, mid, end):
    assert decay_factor(0.0, shape) == pytest.approx(start)
    assert decay_factor(0.5, shape) == pytest.approx(mid)
    assert decay_factor(1.0, shape) == pytest.approx(end, abs=1e-12)


def test_min_lr_ratio_sets_the_endpoint():
    assert decay_factor(1.0, DecayShape.linear, min_ratio=0.1) == pytest.approx(0.1)
    assert decay_factor(0.0, DecayShape.cosine, min_ratio=0.1) == pytest.approx(1.0)


def _lr(name, tokens, **kwargs):
    cfg = ScheduleConfig(name=ScheduleName(name), **{"warmup_tokens": 0, **kwargs})
    return learning_rate(cfg, ScheduleInputs(peak_lr=0.01, total_tokens=10_000, batch_size=8),
                         tokens)


def test_wsd_is_flat_then_decays_over_last_fraction():
    kw = dict(warmup_tokens=1000, decay_fraction=0.2, decay_shape="linear")
    assert _lr("wsd", 500, **kw) == pytest.approx(0.005)     # half-way through warmup
    assert _lr("wsd", 2000, **kw) == pytest.approx(0.01)
    assert _lr("wsd", 8000, **kw) == pytest.approx(0.01)     # decay starts at 80%
    assert _lr("wsd", 9000, **kw) == pytest.approx(0.005)
    assert _lr("wsd", 10_000, **kw) == pytest.approx(0.0)


def test_cosine_linear_constant():
    assert _lr("cosine", 5000) == pytest.approx(0.005)
    assert _lr("linear", 2500) == pytest.approx(0.0075)
    assert _lr("constant", 9999) == pytest.approx(0.01)
    assert _lr("cosine", 10_000, min_lr_ratio=0.1) == pytest.approx(0.001)


def test_power_schedule_final_exp_decay():
    kw = dict(a=4.0, b=-0.51, decay_fraction=0.1, decay_shape="exp")
    stable = power_lr(9000, max_lr=0.01, batch_size=8, a=4.0, b=-0.51)
    assert _lr("power", 9000, **kw) == pytest.approx(stable)
    end = power_lr(10_000, max_lr=0.01, batch_size=8, a=4.0, b=-0.51)
    assert _lr("power", 10_000, **kw) == pytest.approx(end * 0.01)


def test_power_schedule_warms_up_to_and_decays_from_the_paper_s_anchors():
    """Shen et al.'s schedule where β·a·n^b is below the cap: the warmup ramps linearly to
    η_power(N_warmup), the decay scales η_power(N − N_decay). Before, both multiplied
    η_power(n): 2x the paper's LR a quarter into the warmup, 5% below it at the decay's end."""
    cfg = ScheduleConfig(name=ScheduleName.power, warmup_tokens=1_000_000, decay_fraction=0.1,
                         decay_shape="linear", a=4.0, b=-0.51)
    inputs = ScheduleInputs(peak_lr=1.0, total_tokens=100_000_000, batch_size=16)

    def power(n):
        return 16 * 4.0 * n ** -0.51

    assert power(1_000_000) < 1.0  # (the cap does not bind)
    for n in (250_000, 500_000, 999_999):
        assert learning_rate(cfg, inputs, n) == pytest.approx(n / 1e6 * power(1_000_000))
    for n in (2e6, 5e7, 9e7):
        assert learning_rate(cfg, inputs, n) == pytest.approx(power(n))
    for n, left in ((9.5e7, 0.5), (9.9e7, 0.1)):  # linear decay from the value at 9e7
        assert learning_rate(cfg, inputs, n) == pytest.approx(left * power(9e7))
    # a warmup that reaches into a budget's decay keeps its own anchor: the LR before the decay
    # does not depend on the budget (budgets share that prefix)
    short = ScheduleInputs(peak_lr=1.0, total_tokens=1_050_000, batch_size=16)
    assert learning_rate(cfg, short, 900_000) == learning_rate(cfg, inputs, 900_000)


def test_power_with_b_zero_keeps_its_constant_law_at_every_anchor():
    """b = 0 makes η_power the constant min(η_max, β·a): with no warmup and the whole budget a
    decay, the anchor is 0 tokens, where n^b was read as unbounded (the cap): 6x the LR."""
    cfg = ScheduleConfig(name=ScheduleName.power, warmup_tokens=0, decay_fraction=1.0,
                         decay_shape="linear", a=1e-5, b=0.0)
    inputs = ScheduleInputs(peak_lr=1e-3, total_tokens=20_480, batch_size=16)
    for n in (1024.0, 10_240.0):
        assert learning_rate(cfg, inputs, n) == pytest.approx(16 * 1e-5 * (1 - n / 20_480))
