"""Coordinate check (Tensor Programs V): activation scales across width, muP vs SP."""

from dataclasses import replace

import pytest

from trainer.compose import compose
from trainer.config import HiddenWeightDecay, ModelConfig, Param
from trainer.coord_check import coord_check
from trainer.model import GPT, GPTShape, attention_scale
from trainer.mup import param_groups, resolved_weight_decay, weight_decay_from_timescale

WIDTHS = [64, 128, 256, 512]
BASE = ModelConfig(width=64, depth=2, head_dim=16, base_width=64)


@pytest.fixture(scope="module")
def checks():
    return {param: coord_check(BASE.__class__(**{**BASE.__dict__, "param": param}), WIDTHS,
                               lr=3e-3, num_steps=3)
            for param in (Param.mup, Param.sp)}


@pytest.mark.slow
def test_mup_keeps_hidden_activations_in_a_narrow_band(checks):
    cc = checks[Param.mup]
    for layer in ("embed", "block0", "block1"):
        for step in range(4):
            assert 0.75 < cc.growth(layer, step) < 1.3, (layer, step, cc.growth(layer, step))
    # Logits start at order 1/sqrt(m) (readout × α_out/m) and must not grow with width.
    assert all(cc.growth("logits", step) < 1.0 for step in range(4))


@pytest.mark.slow
def test_sp_activations_grow_with_width(checks):
    cc = checks[Param.sp]
    # Hidden layers blow up with width after a few Adam steps at a fixed LR; so do the logits.
    assert cc.growth("block1", 3) > 5
    assert cc.growth("logits", 3) > 3


def test_param_groups_scale_hidden_lr_and_wd_by_width():
    model = GPT(GPTShape(ModelConfig(width=256, depth=2, head_dim=32, base_width=64), 256))
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.1,
                                                  hidden_wd=HiddenWeightDecay.width_invariant)}
    assert groups["hidden"]["lr_mult"] == pytest.approx(1 / 4)
    assert groups["hidden"]["weight_decay"] == pytest.approx(0.4)  # η·λ unchanged by width
    assert groups["vector_like"]["lr_mult"] == 1.0 and groups["gains"]["weight_decay"] == 0.0
    constant = {g["name"]: g for g in param_groups(model, weight_decay=0.1,
                                                    hidden_wd=HiddenWeightDecay.constant)}
    assert constant["hidden"]["weight_decay"] == pytest.approx(0.1)
    n_hidden = sum(p.numel() for p in groups["hidden"]["params"])
    assert n_hidden == 2 * 12 * 256 * 256


def test_sp_rescales_nothing():
    model = GPT(GPTShape(ModelConfig(width=256, head_dim=32, base_width=64, param=Param.sp), 256))
    assert model.shape.width_mult == 1.0
    assert all(g["lr_mult"] == 1.0 for g in param_groups(model, weight_decay=0.0,
                                                         hidden_wd=HiddenWeightDecay.width_invariant))


def test_mup_and_sp_are_one_network_at_base_width():
    """With the head width fixed, muP differs from SP only in how it scales with width: at base
    width the two give the same logits, whatever the multipliers."""
    import torch

    cfg = ModelConfig(width=64, depth=2, head_dim=16, base_width=64, attn_mult=2.5,
                      output_mult=1.5, input_mult=0.7, init_std=0.05)
    tokens = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    logits = {}
    for param in (Param.mup, Param.sp):
        torch.manual_seed(0)
        logits[param] = GPT(GPTShape(replace(cfg, param=param), 256))(tokens)
    assert torch.equal(logits[Param.mup], logits[Param.sp])


def test_readout_logits_carry_alpha_out_over_m():
    """muP's readout: logits × α_out/m (here 1.5 / 4), the multiplier applied to the hidden
    state before the readout matmul (the same logits, a pass over width rather than vocab)."""
    import torch

    cfg = ModelConfig(width=256, depth=1, head_dim=32, base_width=64, output_mult=1.5)
    model = GPT(GPTShape(cfg, 512))
    tokens = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    hidden = {}
    model.norm.register_forward_hook(lambda mod, args, out: hidden.update(h=out.clone()))
    logits = model(tokens)
    unscaled = hidden["h"] @ model.readout.weight.T
    torch.testing.assert_close(logits, unscaled * (1.5 / 4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("param, head_dim, base_head_dim, attn_mult, scale", [
    (Param.sp, 16, None, 1.0, 1 / 4),
    (Param.sp, 64, None, 2.0, 2 / 8),
    (Param.mup, 16, None, 1.0, 1 / 4),  # head width held fixed: SP's 1/sqrt(d)
    (Param.mup, 64, 16, 1.0, 4 / 64),  # head width grew 4x from 16: 1/d from there
    (Param.mup, 64, 64, 3.0, 3 / 8),
])
def test_attention_scale(param, head_dim, base_head_dim, attn_mult, scale):
    cfg = ModelConfig(width=256, head_dim=head_dim, base_head_dim=base_head_dim,
                      attn_mult=attn_mult, param=param)
    assert attention_scale(cfg) == pytest.approx(scale)


# λ = B/(η·τ·D), B and D in tokens (Power Lines, Bergsma et al. 2025).
@pytest.mark.parametrize("lr, timescale, batch_tokens, tokens, weight_decay", [
    (0.01, 0.1, 512, 1_000_000, 0.512),
    (1e-3, 1.0, 1024, 1_024_000, 1.0),          # τ = 1: one EMA timescale per run
    (2e-3, 0.25, 4096, 16_384_000, 0.5),
    (3e-3, 0.2, 262_144, 10_000_000_000, 0.04369066666666667),
])
def test_weight_decay_from_timescale(lr, timescale, batch_tokens, tokens, weight_decay):
    got = weight_decay_from_timescale(lr=lr, timescale=timescale, batch_tokens=batch_tokens,
                                      tokens=tokens)
    assert got == pytest.approx(weight_decay, rel=1e-12)
    # and back: τ = B/(η·λ·D)
    assert batch_tokens / (lr * got * tokens) == pytest.approx(timescale, rel=1e-12)


@pytest.mark.parametrize("overrides", [
    ["optim.timescale=0.1", "optim.lr=0.01", "train.batch_size=8", "train.seq_len=64",
     "train.tokens=1000000"],
    ["optim.timescale=0.37", "optim.lr=3e-3", "train.batch_size=12", "train.seq_len=128",
     "train.tokens=777777"],
])
def test_resolved_weight_decay_is_the_loops_former_arithmetic_bit_for_bit(overrides):
    """The formula moved from `trainer.loop` to `trainer.mup`: same float, same trial."""
    cfg = compose(overrides)
    batch_tokens = cfg.train.batch_size * cfg.train.seq_len
    former = batch_tokens / (cfg.optim.lr * cfg.optim.timescale * cfg.train.tokens)
    assert resolved_weight_decay(cfg) == former


def test_resolved_weight_decay_without_timescale_is_the_configured_one():
    assert resolved_weight_decay(compose(["optim.weight_decay=0.05"])) == 0.05
