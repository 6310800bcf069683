"""The model's own pieces against PyTorch's: the CPU RMSNorm backward, the RoPE rotation and the
CPU projection-and-rotation's own backward."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import ModelConfig
from trainer.fused_model import StackedLinear
from trainer.model import (
    Block,
    GPTShape,
    RMSNorm,
    _CpuRMSNorm,
    _RotatedQKV,
    apply_rope,
    qkv_heads,
    rope_tables,
)


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


def test_a_stacked_members_norm_gradients_are_its_lone_gradients_bit_for_bit():
    """In float32, as trained: a fused member's rows go through the same kernels as a lone
    model's, so its gradients round alike (the stack's members train as they would alone)."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 16, 64, requires_grad=True)
    w = (1 + 0.3 * torch.randn(3, 1, 1, 64)).requires_grad_()
    g = torch.randn(3, 4, 16, 64)
    stacked = torch.autograd.grad(_CpuRMSNorm.apply(x, w, 1e-6), (x, w), g)
    for k in range(3):
        xk, wk = x[k].detach().requires_grad_(), w[k].detach().flatten().requires_grad_()
        lone = torch.autograd.grad(_CpuRMSNorm.apply(xk, wk, 1e-6), (xk, wk), g[k])
        assert torch.equal(stacked[0][k], lone[0]) and torch.equal(stacked[1][k].flatten(), lone[1])


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


@pytest.mark.parametrize("members", [None, 2])
def test_cpu_rotated_qkv_is_the_autograd_projection_and_rotation_bit_for_bit(members):
    """The CPU path (`_RotatedQKV`, the complex table, float32) projects, rotates in place and
    writes its backward into the projection's gradient itself; it must equal autograd through
    the projection, split, rotation and unbind: for `nn.Linear` and a fused stack's
    `StackedLinear`, at the benchmark's shape (where matmuls block as in training)."""
    torch.manual_seed(0)
    batch, seq_len, heads, head_dim = 4, 64, 4, 64
    width = heads * head_dim
    tables = rope_tables(seq_len, head_dim, torch.device("cpu"))
    if members is None:
        projection = nn.Linear(width, 3 * width, bias=False)
        x = torch.randn(batch, seq_len, width, requires_grad=True)
        heads_shape = (batch, seq_len, 3, heads, head_dim)
    else:
        projection = StackedLinear(members, width, 3 * width)
        nn.init.normal_(projection.weight, std=width ** -0.5)
        x = torch.randn(members, batch, seq_len, width, requires_grad=True)
        heads_shape = (members * batch, seq_len, 3, heads, head_dim)
    inputs = (x, projection.weight)
    ours = qkv_heads(projection, x, heads_shape, tables)
    qk, v = projection(x).view(heads_shape).split((2, 1), dim=2)
    q, k = apply_rope(qk, *tables).unbind(2)
    theirs = (q.transpose(1, 2), k.transpose(1, 2), v.squeeze(2).transpose(1, 2))
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == (heads_shape[0], heads, seq_len, head_dim) and torch.equal(a, b)
    grads = [torch.randn_like(t) for t in theirs]
    for a, b in zip(torch.autograd.grad(ours, inputs, grads, retain_graph=True),
                    torch.autograd.grad(theirs, inputs, grads, retain_graph=True), strict=True):
        assert torch.equal(a, b)
    # gradients of any layout: a broadcast one (from a sum), one narrowed at an odd channel
    rows = heads_shape[0]
    for loss in (lambda t: t[0].sum() + t[1].sum(),
                 lambda t: (torch.cat((torch.zeros(rows, heads, seq_len, 1), t[0]), -1)
                            [..., :head_dim] * grads[0]).sum() + t[1].sum()):
        for a, b in zip(torch.autograd.grad(loss(ours), inputs, retain_graph=True),
                        torch.autograd.grad(loss(theirs), inputs, retain_graph=True),
                        strict=True):
            assert torch.equal(a, b)


def test_cpu_rotated_qkv_leaves_unused_outputs_zero_and_passes_gradcheck():
    torch.manual_seed(0)
    batch, seq_len, heads, head_dim = 3, 6, 2, 8
    width = heads * head_dim
    heads_shape = (batch, seq_len, 3, heads, head_dim)
    tables = rope_tables(seq_len, head_dim, torch.device("cpu"))
    projection = nn.Linear(width, 3 * width, bias=False)
    x = torch.randn(batch, seq_len, width, requires_grad=True)
    # k unused: nothing of k's rows reaches the weight's gradient; v's all ones
    q, _, v = qkv_heads(projection, x, heads_shape, tables)
    (grad,) = torch.autograd.grad((q * torch.randn_like(q)).sum() + v.sum(), projection.weight)
    rows = grad.view(3, heads, head_dim, width)
    assert torch.equal(rows[1], torch.zeros_like(rows[1]))
    torch.testing.assert_close(rows[2], x.detach().sum((0, 1)).expand_as(rows[2]))
    double = (x.detach().double().requires_grad_(),
              projection.weight.detach().double().requires_grad_())
    assert torch.autograd.gradcheck(
        lambda x, w: _RotatedQKV.apply(x, w, tables[0].to(torch.complex128), heads_shape),
        double)


def test_the_residual_stream_stays_float32_under_autocast():
    """The residual is added in place into a branch's output only where that is the same sum:
    under bf16 autocast (the CUDA path; CPU autocast behaves alike) the branch is bf16, and
    the stream must stay the float32 sum PyTorch's promotion gives, not round to bf16."""
    torch.manual_seed(0)
    block = Block(GPTShape(ModelConfig(width=64, depth=1, head_dim=16, base_width=64), 32))
    x = torch.randn(2, 8, 64)
    tables = rope_tables(8, 16, torch.device("cpu"))  # the complex form: CPU's
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x, tables)
        h = x + block.attn(block.norm1(x), tables)
        expected = h + block.mlp(block.norm2(h))
    assert out.dtype == torch.float32 and expected.dtype == torch.float32
    assert torch.equal(out, expected)
    # and q, k rotated (the CPU function's in-place rotation would be lost on autocast's copy)
    heads_shape = (2, 8, 3, 4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = qkv_heads(block.attn.qkv, x, heads_shape, tables)
        qkv = block.attn.qkv(x).view(heads_shape)
    assert q.dtype == torch.bfloat16
    rotated = apply_rope(qkv[:, :, :2], *tables)
    assert torch.equal(q, rotated[:, :, 0].transpose(1, 2))
    assert torch.equal(k, rotated[:, :, 1].transpose(1, 2))
    with torch.no_grad():  # float32 throughout: in place, and the same sum bit for bit
        h = x + block.attn(block.norm1(x), tables)
        assert torch.equal(block(x, tables), h + block.mlp(block.norm2(h)))
