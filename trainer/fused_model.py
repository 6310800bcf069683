"""K copies of the GPT of `trainer.model` as one network, each parameter stacked along a leading
member dimension: one forward pass of a shared batch gives every member's logits.

The members share the architecture and its multipliers (muP's α_in, α_out/m, the attention
scale), so everything but the weights is taken from one `GPTShape`. Parameters have GPT's names
and shapes with a leading K (`blocks.0.attn.qkv.weight` is (K, 3C, C)), so a member's weights
move to and from an ordinary `GPT` by name (`load_member`, `store_member`); this module does no
init of its own, a group starts from its members' GPTs.

The K members' matmuls are one `bmm` each rather than K `mm`s: fewer, larger kernels (the point
on a GPU, where a width-64 proxy is all launch overhead). Measured against
`torch.func.stack_module_state` + `vmap(functional_call)` over `GPT` itself, the approach that
needs no second model file, this one was faster in nine of eleven timings, and vmap has no
batching rule for CPU flash attention (it loops over members): figures in `benchmarks/README.md`
(`fused.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import Positions
from trainer.model import GPT, GPTShape, add_residual, attention_scale, qkv_heads, rms_norm


class StackedLinear(nn.Module):
    """K bias-free linear maps: weight (K, out, in); (K, ..., in) → (K, ..., out)."""

    def __init__(self, num_members: int, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, fan_out, fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.bmm(x.flatten(1, -2), self.weight.mT)  # (K, N, out)
        return y.view(*x.shape[:-1], -1)


class StackedEmbedding(nn.Module):
    """K lookup tables: weight (K, num, width); shared ids (B, T) → (K, B, T, width)."""

    def __init__(self, num_members: int, num: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, num, width))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        num_members, num, _ = self.weight.shape
        # One lookup in the K tables laid end to end: member k's row i is row k·num + i.
        offsets = torch.arange(num_members, device=idx.device).view(-1, *[1] * idx.ndim) * num
        return F.embedding(idx + offsets, self.weight.flatten(0, 1))


class StackedRMSNorm(nn.Module):
    """K RMS norms, each with its own gain: weight (K, width)."""

    def __init__(self, num_members: int, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_members, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (K, B, T, C)
        gain = self.weight.view(x.shape[0], *[1] * (x.ndim - 2), x.shape[-1])
        return rms_norm(x, gain, self.eps)


class StackedAttention(nn.Module):
    def __init__(self, shape: GPTShape, num_members: int):
        super().__init__()
        cfg = shape.cfg
        self.num_heads, self.head_dim = shape.num_heads, cfg.head_dim
        self.qkv = StackedLinear(num_members, cfg.width, 3 * cfg.width)
        self.proj = StackedLinear(num_members, cfg.width, cfg.width)
        self.score_scale = attention_scale(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        K, B, T, C = x.shape
        # Members and sequences are one batch dimension for attention: (K·B, nh, T, hd).
        q, k, v = qkv_heads(self.qkv, x, (K * B, T, 3, self.num_heads, self.head_dim),
                           rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.score_scale)
        y = y.transpose(1, 2).reshape(K, B, T, C)  # (K, B, T, C)
        return self.proj(y)


class StackedMLP(nn.Module):
    def __init__(self, shape: GPTShape, num_members: int):
        super().__init__()
        width, hidden = shape.cfg.width, shape.cfg.mlp_ratio * shape.cfg.width
        self.up = StackedLinear(num_members, width, hidden)
        self.down = StackedLinear(num_members, hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class StackedBlock(nn.Module):
    def __init__(self, shape: GPTShape, num_members: int):
        super().__init__()
        self.norm1 = StackedRMSNorm(num_members, shape.cfg.width)
        self.attn = StackedAttention(shape, num_members)
        self.norm2 = StackedRMSNorm(num_members, shape.cfg.width)
        self.mlp = StackedMLP(shape, num_members)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        x = add_residual(x, self.attn(self.norm1(x), rope))
        return add_residual(x, self.mlp(self.norm2(x)))


class StackedGPT(nn.Module):
    """Shared token ids (B, T) → every member's logits (K, B, T, vocab)."""

    def __init__(self, shape: GPTShape, num_members: int):
        super().__init__()
        cfg = shape.cfg
        self.shape, self.num_members = shape, num_members
        self.embed = StackedEmbedding(num_members, shape.vocab_size, cfg.width)
        self.pos_embed = (StackedEmbedding(num_members, cfg.context_len, cfg.width)
                          if cfg.positions is Positions.learned else None)
        self.blocks = nn.ModuleList(StackedBlock(shape, num_members) for _ in range(cfg.depth))
        self.norm = StackedRMSNorm(num_members, cfg.width)
        self.readout = StackedLinear(num_members, cfg.width, shape.vocab_size)
        self.input_mult = cfg.input_mult
        self.output_mult = cfg.output_mult / shape.width_mult  # α_out / m

    @classmethod
    def from_members(cls, models: list[GPT]) -> StackedGPT:
        """The stack of `models` (one shape), member k holding a copy of `models[k]`."""
        stacked = cls(models[0].shape, len(models)).to(next(models[0].parameters()).device)
        for k, model in enumerate(models):
            stacked.load_member(k, model)
        return stacked

    @torch.no_grad()
    def load_member(self, k: int, model: GPT) -> None:
        """Copy `model`'s weights into member k."""
        source = dict(model.named_parameters())
        for name, p in self.named_parameters():
            p[k].copy_(source[name])

    @torch.no_grad()
    def keep_members(self, rows: list[int]) -> None:
        """Keep only the members at `rows`, in that order (a diverged member leaves the stack
        so that it costs nothing more)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.embed.weight.device)
        for p in self.parameters():
            p.data = p.data.index_select(0, index)
        self.num_members = len(rows)

    @torch.no_grad()
    def store_member(self, k: int, model: GPT) -> None:
        """Copy member k's weights into `model` (an ordinary GPT of the same shape)."""
        target = dict(model.named_parameters())
        for name, p in self.named_parameters():
            target[name].copy_(p[k])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.embed(idx)  # (K, B, T, C)
        rope = None
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(T, device=idx.device)).unsqueeze(1)
        else:
            rope = self._rope(T, idx.device)
        if self.input_mult != 1.0:
            x = x.mul_(self.input_mult)  # in place: the lookup's backward needs only ids
        for block in self.blocks:
            x = block(x, rope)
        h = self.norm(x)
        if self.output_mult != 1.0:  # ×α_out/m on the hidden state: the same logits, a pass
            h = h.mul_(self.output_mult)  # over width numbers per token, not vocab ones
        return self.readout(h)  # (K, B, T, vocab)

    _rope = GPT._rope  # the members' tables, cached per (seq_len, device) alike
