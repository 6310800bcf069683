"""Decoder-only GPT: pre-norm, no biases, RoPE or learned positions, muP or SP.

Architecture only. The parametrization enters through three forward multipliers (embedding
output × α_in, attention scores × attn_mult·√d₀/d_head, readout logits × α_out/m) and the
init of hidden matrices (variance σ²/m); the matching per-group Adam LRs live in `trainer.mup`.
m = width / base_width and d₀ is the head width at base width, so at base width muP and SP are
the same network, multipliers included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from trainer.config import ModelConfig, Param, Positions


@dataclass(frozen=True)
class GPTShape:
    """Everything the model needs: the config plus the vocabulary size the data fixes."""

    cfg: ModelConfig
    vocab_size: int

    @property
    def width_mult(self) -> float:
        """m = width / base_width (1 under SP: nothing is rescaled)."""
        if self.cfg.param is Param.sp:
            return 1.0
        return self.cfg.width / self.cfg.base_width

    @property
    def num_heads(self) -> int:
        return self.cfg.width // self.cfg.head_dim


def rope_tables(seq_len: int, head_dim: int, device: torch.device, *,
                complex_form: bool | None = None) -> tuple[torch.Tensor, ...]:
    """Rotary-embedding tables that broadcast against (batch, seq_len, q/k, heads, head_dim):
    channel pair (2i, 2i+1) at position t turns by t·θᵢ, θᵢ = 10000^(−2i/head_dim).

    Complex form (the default on CPU): one table e^{i·t·θᵢ}, (seq_len, 1, 1, head_dim/2); the
    rotation is one complex multiply, forward and backward 3.6× faster there than the real
    form. Real form (elsewhere: torch.compile handles complex tensors poorly on CUDA): `cos`
    holds cos t·θᵢ at both channels of a pair, `sin` holds (−sin t·θᵢ, +sin t·θᵢ), each
    (seq_len, 1, 1, head_dim). The two forms round differently, in the last bit."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv_freq)
    if complex_form if complex_form is not None else device.type == "cpu":
        rotation = torch.polar(torch.ones_like(angles), angles)
        return (rotation.view(seq_len, 1, 1, head_dim // 2),)
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = torch.stack((-angles.sin(), angles.sin()), dim=-1).flatten(-2)
    return cos.view(seq_len, 1, 1, head_dim), sin.view(seq_len, 1, 1, head_dim)


def apply_rope(x: torch.Tensor, *tables: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs of x by the tables of `rope_tables`: (x₀, x₁) → (x₀·cos −
    x₁·sin, x₁·cos + x₀·sin). The real form computes x·cos + swap(x)·sin with swap(x) =
    (x₁, x₀, x₃, x₂, …): two multiplies, one add and one copy for q and k at once."""
    if len(tables) == 1:
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * tables[0]).flatten(-2).type_as(x)
    cos, sin = tables
    pairs = x.unflatten(-1, (-1, 2))
    swapped = torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # faster than flip
    return (x * cos + swapped * sin).type_as(x)


def qkv_heads(projection: nn.Module, x: torch.Tensor, heads_shape: tuple[int, ...],
              rope: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...]:
    """q, k, v as (batch, heads, T, head_dim) from the qkv projection of x viewed as
    `heads_shape` (batch, T, 3, heads, head_dim), with q and k rotated together when `rope`
    is given. `projection` is an `nn.Linear` or a fused stack's (K, 3C, C) `StackedLinear`."""
    # (not under autocast: the projection is bf16 there, and a bf16 tensor's complex view a copy)
    if (rope is not None and len(rope) == 1 and x.dtype == torch.float32
            and not torch.is_autocast_enabled(x.device.type)):
        q, k, v = _RotatedQKV.apply(x, projection.weight, rope[0], heads_shape)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    qkv = projection(x).view(heads_shape)
    # split, not slices: its backward is one concatenation, a slice's a zero fill and a copy
    qk, v = qkv.split((2, 1), dim=2)
    q, k = (qk if rope is None else apply_rope(qk, *rope)).unbind(2)
    return q.transpose(1, 2), k.transpose(1, 2), v.squeeze(2).transpose(1, 2)


def _pairs_as_complex(x: torch.Tensor) -> torch.Tensor:
    """x's channel pairs as complex numbers, a view where the layout allows one (channels
    contiguous, every other stride and the offset even: what attention's gradients have), a
    copy otherwise (a broadcast gradient, one narrowed at an odd channel)."""
    if x.stride(-1) != 1 or x.storage_offset() % 2 or any(s % 2 for s in x.stride()[:-1]):
        x = x.contiguous()
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x·Wᵀ as `nn.Linear` (W (out, in)) or `StackedLinear` (W (K, out, in)) compute it."""
    if weight.ndim == 2:
        return F.linear(x, weight)
    return torch.bmm(x.flatten(1, -2), weight.mT).view(*x.shape[:-1], -1)


class _RotatedQKV(torch.autograd.Function):
    """The qkv projection of x, and q and k in it rotated by the complex table, for CPU
    float32: the same products as `apply_rope` after the projection, in fewer passes.
    Forward: the rotation is written over q and k in the projection's own output (this
    function made it, nothing else holds it), not into a new buffer: on CPU a fresh buffer of
    that size is a page-faulting allocation every step. Backward: the rotated-back q and k
    gradients and v's are written straight into the projection's output gradient, where
    autograd would stack the q and k gradients, rotate them back and concatenate the result
    with v's; then the projection's two matmuls, as `nn.Linear`'s backward does them.
    benchmarks/eager_step.py: ~2 ms of a step per block from the backward, ~1% from the
    forward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, rotation: torch.Tensor,
                heads_shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        ctx.save_for_backward(x, weight, rotation)
        qkv = _project(x, weight).view(heads_shape)
        torch.view_as_complex(qkv[:, :, :2].unflatten(-1, (-1, 2))).mul_(rotation)
        return qkv.unbind(2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_q: torch.Tensor, grad_k: torch.Tensor,
                 grad_v: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # (autograd hands an unused output's gradient in as zeros, never None)
        x, weight, rotation = ctx.saved_tensors
        grad = grad_q.new_empty(*grad_q.shape[:2], 3, *grad_q.shape[2:])
        # (T, 1, head_dim/2) against one of q and k; the conjugate written out, not a view
        unrotate = rotation.squeeze(1).conj().resolve_conj()
        for i, g in enumerate((grad_q, grad_k)):
            torch.mul(_pairs_as_complex(g), unrotate,
                      out=torch.view_as_complex(grad[:, :, i].unflatten(-1, (-1, 2))))
        grad[:, :, 2].copy_(grad_v)
        grad = grad.view(*x.shape[:-1], -1)  # x's shape with 3C channels
        if weight.ndim == 2:
            grad_weight = grad.flatten(0, -2).mT @ x.flatten(0, -2)
            return grad @ weight, grad_weight, None, None
        grad_x = torch.bmm(grad.flatten(1, -2), weight).view(x.shape)
        return grad_x, torch.bmm(grad.flatten(1, -2).mT, x.flatten(1, -2)), None, None


def attention_scale(cfg: ModelConfig) -> float:
    """Multiplier of q·k: attn_mult/√d₀ at the base head width d₀, times d₀/d under muP.

    Under muP q and k become correlated during training, so q·k grows as d rather than √d and
    the scores take 1/d (Tensor Programs V). Written as attn_mult·√d₀/d, that rule equals SP's
    attn_mult/√d wherever d = d₀: with the head width held fixed as the model widens (more
    heads, the usual proxy setup), muP and SP use one attention scale, and at base width they
    are the same network. The 1/d rule only acts when the head width itself grows.
    """
    if cfg.param is Param.sp:
        return cfg.attn_mult / math.sqrt(cfg.head_dim)
    base_head_dim = cfg.base_head_dim or cfg.head_dim
    return cfg.attn_mult * math.sqrt(base_head_dim) / cfg.head_dim


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / √(mean(x²) + ε) · weight over the last dimension; `weight` is (width,) or broadcasts
    against x (a fused stack's (K, 1, …, width) gains). The one norm of `GPT` and
    `trainer.fused_model.StackedGPT`, so that a member rounds as it does alone."""
    if x.device.type == "cpu" and torch.is_grad_enabled():
        return _CpuRMSNorm.apply(x, weight, eps)
    if weight.ndim == 1:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return F.rms_norm(x, (x.shape[-1],), eps=eps) * weight


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (a vector: never width-scaled)."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class _CpuRMSNorm(torch.autograd.Function):
    """RMSNorm with fused CPU kernels. PyTorch's CPU `F.rms_norm` is composite both ways (a
    dozen elementwise passes backward): with RoPE, the reason the eager step trailed a
    LayerNorm GPT of equal FLOPs (benchmarks/eager_step.py). CUDA keeps PyTorch's (and compile
    fuses it there).

    Forward: r = (mean(x²) + ε)^(−1/2) per row from the norm kernel (one reduction), kept for
    the backward, and y = x·r·w. Backward, with ĝ = g·w and x̂ = x·r: ∂x = r·(ĝ − x̂·mean(ĝ·x̂))
    and ∂w = Σ g·x̂ over the dimensions w is broadcast along. LayerNorm's fused backward,
    given the gain, the mean taken as 0 and the same r, computes r·(ĝ − mean(ĝ) −
    x̂·mean(ĝ·x̂)) and Σ g·x̂ in one pass over g and x: adding r·mean(ĝ) back (a matrix-vector
    product, g·w/C) gives ∂x. The kernel takes a (C,) gain only: a fused stack's (K, 1, …, C)
    gains go through it member by member, on the member's rows, so that a member rounds as it
    does alone. (Its cross-row sum for ∂w, like LayerNorm's, rounds differently at another
    thread count: a run rounds alike at a given one.) Gradients equal autograd's exactly in
    float64 (tests/trainer/test_model.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()
        rstd = rstd.div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        return torch.mul(x, rstd).mul_(weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, rstd = ctx.saved_tensors
        if weight.ndim == 1:
            return (*_rms_norm_backward(grad, x, weight, rstd), None)
        # A fused stack's (K, 1, …, C) gains: each member's rows as a lone model's
        members = [_rms_norm_backward(grad[k], x[k], weight[k].flatten(), rstd[k])
                   for k in range(weight.shape[0])]
        grad_x, grad_weight = (torch.stack(parts) for parts in zip(*members, strict=True))
        return grad_x, grad_weight.view(weight.shape), None


def _rms_norm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∂x and ∂w of y = x·r·w for a (C,) gain `weight` (see `_CpuRMSNorm`)."""
    width = x.shape[-1]
    grad_x, grad_weight, _ = torch.ops.aten.native_layer_norm_backward(
        grad, x, (width,), torch.zeros_like(rstd), rstd, weight, None, [True, True, False])
    mean_scaled = torch.mv(grad.reshape(-1, width), weight).view(rstd.shape)  # mean(ĝ)·C
    grad_x.add_(mean_scaled.div_(width).mul_(rstd))
    return grad_x, grad_weight


class Attention(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        cfg = shape.cfg
        self.num_heads, self.head_dim = shape.num_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.score_scale = attention_scale(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = qkv_heads(self.qkv, x, (B, T, 3, self.num_heads, self.head_dim), rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.score_scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        width = shape.cfg.width
        self.up = nn.Linear(width, shape.cfg.mlp_ratio * width, bias=False)
        self.down = nn.Linear(shape.cfg.mlp_ratio * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


def add_residual(x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """x + branch, written into the branch's output (a fresh tensor that nothing saved for its
    backward) when that is the same sum: no new buffer, which on CPU is a page-faulting
    allocation each time (the same sums bit for bit; benchmarks/eager_step.py: +1.6% a step).
    Under autocast the branch is bf16 and the float32 residual stream must stay float32: there
    the sum is a new tensor, as PyTorch's type promotion makes it."""
    if branch.dtype == x.dtype:
        return branch.add_(x)
    return x + branch


class Block(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.norm1 = RMSNorm(shape.cfg.width)
        self.attn = Attention(shape)
        self.norm2 = RMSNorm(shape.cfg.width)
        self.mlp = MLP(shape)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        x = add_residual(x, self.attn(self.norm1(x), rope))
        return add_residual(x, self.mlp(self.norm2(x)))


class GPT(nn.Module):
    """token ids (B, T) → logits (B, T, vocab)."""

    def __init__(self, shape: GPTShape):
        super().__init__()
        cfg = shape.cfg
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, cfg.width)
        self.pos_embed = (nn.Embedding(cfg.context_len, cfg.width)
                          if cfg.positions is Positions.learned else None)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.width)
        self.readout = nn.Linear(cfg.width, shape.vocab_size, bias=False)
        self.input_mult = cfg.input_mult
        self.output_mult = cfg.output_mult / shape.width_mult  # α_out / m
        self.reset_parameters()

    def hidden_matrices(self) -> list[nn.Parameter]:
        """Matrices whose both dimensions grow with width (muP scales their init and LR)."""
        return [p for block in self.blocks for name, p in block.named_parameters()
                if p.ndim == 2]

    def reset_parameters(self) -> None:
        """σ for embeddings and readout; σ/√m for hidden matrices, /√(2·depth) on the
        projections into the residual stream; norm gains at 1."""
        cfg, m = self.shape.cfg, self.shape.width_mult
        hidden_std = cfg.init_std / math.sqrt(m)
        for block in self.blocks:
            for name, p in block.named_parameters():
                if p.ndim == 2:
                    residual = name.endswith(("proj.weight", "down.weight"))
                    std = hidden_std / math.sqrt(2 * cfg.depth) if residual else hidden_std
                    nn.init.normal_(p, std=std)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed.weight, std=cfg.init_std)
        nn.init.normal_(self.readout.weight, std=cfg.init_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.embed(idx)  # (B, T, C)
        rope = None
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(T, device=idx.device))
        else:
            rope = self._rope(T, idx.device)
        if self.input_mult != 1.0:  # skip a full pass over the activations when it is a no-op
            x = x.mul_(self.input_mult)  # in place: the lookup's backward needs only ids
        for block in self.blocks:
            x = block(x, rope)
        h = self.norm(x)
        if self.output_mult != 1.0:  # ×α_out/m on the hidden state: the same logits, a pass
            h = h.mul_(self.output_mult)  # over width numbers per token, not vocab ones
        return self.readout(h)  # (B, T, vocab)

    def _rope(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        # The tables depend only on (seq_len, device): computed once, not every forward.
        key = (seq_len, device)
        if getattr(self, "_rope_key", None) != key:
            self._rope_key, self._rope_cache = key, rope_tables(seq_len,
                                                                self.shape.cfg.head_dim, device)
        return self._rope_cache


def count_params(model: GPT) -> tuple[int, int]:
    """(non-embedding parameters N, all parameters). N counts blocks, final norm and readout,
    as in Kaplan et al.: the input embedding and position table are left out."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.embed.weight.numel()
    if model.pos_embed is not None:
        embedding += model.pos_embed.weight.numel()
    return total - embedding, total
