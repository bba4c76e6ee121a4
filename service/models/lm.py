"""A decoder-only Transformer language model built from the translator's decoder blocks.

Generation batches requests that arrived at different times, so rows of one batch sit at
different positions. The cache therefore keeps a length per row (`RaggedKVCache`): a new
request is prefilled on its own and its keys/values are copied into the running batch
(`LanguageModel.merge`), a finished one is dropped (`reorder_state`), and every step writes
each row's token at that row's own position. This is continuous batching without paging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.models.packed import PackedWeight, linear
from service.models.transformer import (
    ACTIVATIONS,
    DecoderLayer,
    init_weights,
    sinusoidal_positions,
)


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "gelu"
    max_positions: int = 512
    pad_id: int = 0
    eos_id: int = 2  # also the document separator a prompt starts from, as in GPT-2

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides) -> LMConfig:
        presets = {
            "tiny": dict(d_model=32, n_heads=4, n_layers=2, ffn_dim=64),
            "small": {},
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return replace(cls(vocab_size=vocab_size, **presets[name]), **overrides)


@dataclass
class RaggedKVCache:
    """One layer's keys/values for rows of different lengths, in (B, H, T_max, D) buffers.

    It speaks `KVCache.append`, so the decoder blocks use it unchanged; `lengths` (B,) says
    where each row's next entry goes and is set by `LanguageModel.step` before every step.
    """

    keys: Tensor
    values: Tensor
    lengths: Tensor | None = None

    @classmethod
    def empty(cls, batch: int, heads: int, max_len: int, head_dim: int, like: Tensor):
        shape = (batch, heads, max_len, head_dim)
        return cls(like.new_zeros(shape), like.new_zeros(shape))

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store one new (B, H, 1, D) entry per row; return the buffers up to the longest row."""
        rows = torch.arange(keys.shape[0], device=keys.device)
        self.keys[rows, :, self.lengths] = keys[:, :, 0]
        self.values[rows, :, self.lengths] = values[:, :, 0]
        width = int(self.lengths.max()) + 1
        return self.keys[:, :, :width], self.values[:, :, :width]

    def reorder(self, index: Tensor) -> RaggedKVCache:
        return RaggedKVCache(self.keys.index_select(0, index), self.values.index_select(0, index))


@dataclass
class LMState:
    caches: list[RaggedKVCache]
    lengths: Tensor  # (B,) tokens held per row

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])


class LanguageModel(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.d_model, padding_idx=config.pad_id
        )
        self.layers = nn.ModuleList(
            DecoderLayer(config, cross_attention=False) for _ in range(config.n_layers)
        )
        self.register_buffer(
            "positions",
            sinusoidal_positions(config.max_positions, config.d_model),
            persistent=False,
        )
        self.embed_scale = math.sqrt(config.d_model)
        self.output_packed = PackedWeight()
        init_weights(self, config.d_model, config.pad_id)

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.config.max_positions:
            raise ValueError(f"sequence exceeds max_positions={self.config.max_positions}")
        x = self.embed_tokens(tokens) * self.embed_scale + self.positions[positions]
        return F.dropout(x, self.config.dropout, self.training)

    def logits(self, hidden: Tensor) -> Tensor:
        return linear(hidden, self.embed_tokens.weight, None, self.output_packed)

    def forward(self, tokens: Tensor) -> Tensor:
        """Training and prefill: right-padded (B, T) -> logits (B, T, V)."""
        return self.logits(self._hidden(tokens)[0])

    def _hidden(self, tokens: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Causal pass over whole sequences; also returns every layer's keys/values (B, H, T, D)."""
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        x = self.embed(tokens, positions)
        kv = []
        for layer in self.layers:
            kv.append(layer.self_attn.project_kv(x))
            x, _ = layer(x, self_mask=causal)
        return x, [(s.keys, s.values) for s in kv]

    # Incremental decoding with per-row lengths.

    def prefill(self, prompts: list[list[int]], max_len: int) -> tuple[Tensor, LMState]:
        """Run prompts (each at least one token) through the model at once.

        Returns the next-token logits of each prompt (B, V) and a state with room for
        `max_len` tokens per row. Right padding is harmless: causal attention never lets a
        real token see the padding after it, and each row's length masks it later.
        """
        if not prompts or any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        longest = max(len(p) for p in prompts)
        if max_len < longest:
            raise ValueError(f"max_len={max_len} is shorter than a prompt of {longest} tokens")
        device = self.embed_tokens.weight.device
        tokens = torch.full((len(prompts), longest), self.config.pad_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, : len(prompt)] = torch.tensor(prompt)
        tokens = tokens.to(device)
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        hidden, kv = self._hidden(tokens)
        heads, head_dim = self.config.n_heads, self.config.d_model // self.config.n_heads
        caches = []
        for keys, values in kv:
            cache = RaggedKVCache.empty(len(prompts), heads, max_len, head_dim, hidden)
            cache.keys[:, :, :longest] = keys
            cache.values[:, :, :longest] = values
            caches.append(cache)
        last = hidden[torch.arange(len(prompts), device=device), lengths - 1]
        return self.logits(last), LMState(caches, lengths)

    def step(self, tokens: Tensor, state: LMState) -> Tensor:
        """Append one token per row (B,) at each row's own position; next logits (B, V)."""
        lengths = state.lengths
        width = int(lengths.max()) + 1
        if width > state.caches[0].keys.shape[2]:
            raise ValueError("the cache is full: raise max_len")
        x = self.embed(tokens[:, None], lengths[:, None])  # (B, 1, C)
        visible = torch.arange(width, device=tokens.device)[None, :] <= lengths[:, None]
        mask = visible[:, None, None, :]  # (B, 1, 1, W): each row sees its own prefix only
        for layer, cache in zip(self.layers, state.caches, strict=True):
            cache.lengths = lengths
            x, _ = layer(x, self_mask=mask, cache=cache)
        state.lengths = lengths + 1
        return self.logits(x[:, 0])

    def reorder_state(self, state: LMState, index: Tensor) -> LMState:
        return LMState([c.reorder(index) for c in state.caches], state.lengths[index])

    @staticmethod
    def merge(first: LMState, second: LMState) -> LMState:
        """Rows of `first` then rows of `second`, in buffers as long as the longer of the two."""
        if first.batch_size == 0:
            return second
        width = max(first.caches[0].keys.shape[2], second.caches[0].keys.shape[2])

        def widen(t: Tensor) -> Tensor:
            return F.pad(t, (0, 0, 0, width - t.shape[2]))

        caches = [
            RaggedKVCache(
                torch.cat([widen(a.keys), widen(b.keys)]),
                torch.cat([widen(a.values), widen(b.values)]),
            )
            for a, b in zip(first.caches, second.caches, strict=True)
        ]
        return LMState(caches, torch.cat([first.lengths, second.lengths]))
