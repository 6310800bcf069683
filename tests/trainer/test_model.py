"""The model's own pieces against PyTorch's: the CPU RMSNorm backward and the RoPE rotation."""

import pytest
import torch
import torch.nn.functional as F

from trainer.model import RMSNorm, _CpuRMSNorm, apply_rope, rope_tables


def test_cpu_rmsnorm_gradients_are_autograds_exactly_in_float64():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    w = (1 + 0.3 * torch.randn(8, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: _CpuRMSNorm.apply(x, w, 1e-6), (x, w))
    g = torch.randn(3, 5, 8, dtype=torch.float64)
    ours = torch.autograd.grad(_CpuRMSNorm.apply(x, w, 1e-6), (x, w), g)
    theirs = torch.autograd.grad(F.rms_norm(x, (8,), w, 1e-6), (x, w), g)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_rmsnorm_module_equals_f_rms_norm_in_float32():
    torch.manual_seed(0)
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.mul_(torch.rand(64) + 0.5)
    x = torch.randn(4, 16, 64, requires_grad=True)
    g = torch.randn(4, 16, 64)
    y = norm(x)
    torch.testing.assert_close(y, F.rms_norm(x, (64,), norm.weight, 1e-6), rtol=0, atol=1e-6)
    ours = torch.autograd.grad(y, (x, norm.weight), g)
    theirs = torch.autograd.grad(F.rms_norm(x, (64,), norm.weight, 1e-6), (x, norm.weight), g)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cpu_rmsnorm_with_a_broadcast_gain_sums_its_gradient_per_gain():
    """A fused stack's gains (K, 1, 1, C): each member's gain gradient is its own rows' sum."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    w = (1 + 0.3 * torch.randn(3, 1, 1, 8, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: _CpuRMSNorm.apply(x, w, 1e-6), (x, w))


@pytest.mark.parametrize("complex_form", [True, False])
def test_rope_rotates_each_channel_pair_by_its_angle(complex_form):
    """Both forms against the rotation written out pair by pair: position t turns pair i by
    t·θᵢ. (The complex one is CPU's default, the real one CUDA's.)"""
    torch.manual_seed(0)
    seq_len, heads, head_dim = 6, 2, 8
    x = torch.randn(3, seq_len, 2, heads, head_dim)
    tables = rope_tables(seq_len, head_dim, torch.device("cpu"), complex_form=complex_form)
    assert len(tables) == (1 if complex_form else 2)
    out = apply_rope(x, *tables)
    for t in range(seq_len):
        for i in range(head_dim // 2):
            angle = t * 10000 ** (-2 * i / head_dim)
            a, b = x[:, t, ..., 2 * i], x[:, t, ..., 2 * i + 1]
            c, s = torch.tensor(angle).cos(), torch.tensor(angle).sin()
            torch.testing.assert_close(out[:, t, ..., 2 * i], a * c - b * s)
            torch.testing.assert_close(out[:, t, ..., 2 * i + 1], b * c + a * s)
