"""Multi-head attention with an explicit, preallocated key/value cache.

The cache is a plain object owned by one decoding call. Modules never keep per-request state,
so concurrent requests on the same model cannot see each other's keys and values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class KVCache:
    """Keys and values of one attention layer, written step by step into preallocated buffers.

    Preallocating (gpt-fast style) turns each step's append into an in-place slice copy instead
    of a `torch.cat` that reallocates the whole history.
    """

    keys: Tensor  # (B, H, T_max, D)
    values: Tensor  # (B, H, T_max, D)
    length: int = 0

    @classmethod
    def empty(
        cls, batch: int, heads: int, max_len: int, head_dim: int, like: Tensor
    ) -> KVCache:
        shape = (batch, heads, max_len, head_dim)
        return cls(like.new_zeros(shape), like.new_zeros(shape), 0)

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, H, t, D) new entries; return every entry so far."""
        end = self.length + keys.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KV cache holds {self.keys.shape[2]} positions, asked for {end}")
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reorder(self, index: Tensor) -> KVCache:
        """Select batch rows (beam reordering, dropping finished rows)."""
        return KVCache(
            self.keys.index_select(0, index), self.values.index_select(0, index), self.length
        )


@dataclass(frozen=True)
class StaticKV:
    """Projected keys and values of a fixed memory (the encoder output): computed once per source."""

    keys: Tensor  # (B, H, S, D)
    values: Tensor  # (B, H, S, D)

    def reorder(self, index: Tensor) -> StaticKV:
        return StaticKV(self.keys.index_select(0, index), self.values.index_select(0, index))


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with q/k/v/out projections (Marian / BART parameter names)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def project_kv(self, memory: Tensor) -> StaticKV:
        return StaticKV(self.split_heads(self.k_proj(memory)), self.split_heads(self.v_proj(memory)))

    def forward(
        self,
        query: Tensor,
        *,
        memory: Tensor | None = None,
        static_kv: StaticKV | None = None,
        cache: KVCache | None = None,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from `query` (B, T, C) to keys and values from one of three sources.

        - `static_kv`: precomputed cross-attention keys/values (decoding);
        - `cache`: self-attention during incremental decoding; new keys are appended;
        - otherwise `memory` (or `query` itself for self-attention) is projected now.

        `mask` is boolean and broadcastable to (B, H, T, S), True where attention is allowed.
        Returns the output (B, T, C) and, if asked, the head-averaged weights (B, T, S).
        """
        q = self.split_heads(self.q_proj(query))  # (B, H, T, D)
        if static_kv is not None:
            k, v = static_kv.keys, static_kv.values
        else:
            source = query if memory is None else memory
            k, v = self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))
            if cache is not None:
                k, v = cache.append(k, v)

        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(scores.softmax(-1), dropout, self.training)
            out = weights @ v
            averaged = weights.mean(1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            averaged = None
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, T, C)
        return self.out_proj(out), averaged
