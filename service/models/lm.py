"""A decoder-only Transformer language model built from the translator's decoder blocks.

Generation batches requests that arrived at different times, so rows of one batch sit at
different positions. The cache therefore keeps a length per row (`RaggedKVCache`): a new
request is prefilled on its own and its keys/values are copied into the running batch
(`LanguageModel.merge`), a finished one is dropped (`reorder_state`), and every step writes
each row's token at that row's own position. This is continuous batching without paging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.models.attention import KVCache, RaggedKVCache
from service.models.packed import PackedWeight, linear
from service.models.presets import Presets
from service.models.transformer import (
    ACTIVATIONS,
    DecoderLayer,
    init_weights,
    sinusoidal_positions,
)


@dataclass(frozen=True)
class LMConfig(Presets):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(d_model=32, n_heads=4, n_layers=2, ffn_dim=64),
        "small": {},
    }

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


@dataclass
class LMState:
    caches: list[RaggedKVCache]  # one per layer, each advancing its own lengths

    @property
    def lengths(self) -> Tensor:
        """(B,) tokens held per row: every layer's cache holds the same number."""
        return self.caches[0].lengths

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
        # Set by `precision.prepare_for_inference` where the tied projection is quantized.
        self.output_layer: nn.Module | None = None
        init_weights(self, config.d_model, config.pad_id)

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.config.max_positions:
            raise ValueError(f"sequence exceeds max_positions={self.config.max_positions}")
        x = self.embed_tokens(tokens) * self.embed_scale + self.positions[positions]
        return F.dropout(x, self.config.dropout, self.training)

    def logits(self, hidden: Tensor) -> Tensor:
        if self.output_layer is not None:
            return self.output_layer(hidden)
        return linear(hidden, self.embed_tokens.weight, None, self.output_packed)

    def forward(self, tokens: Tensor) -> Tensor:
        """Training and prefill: right-padded (B, T) -> logits (B, T, V)."""
        return self.logits(self._hidden(tokens))

    def _hidden(self, tokens: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """Causal pass over whole sequences (B, T) -> hidden states (B, T, C).

        With `caches` (prefill), each layer's self-attention appends the keys and values it
        projects to its cache: they are computed once, by the attention that uses them.
        """
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        x = self.embed(tokens, positions)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, self_mask=causal, cache=None if caches is None else caches[i])
        return x

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
        weight = self.embed_tokens.weight
        tokens = torch.full((len(prompts), longest), self.config.pad_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, : len(prompt)] = torch.tensor(prompt)
        tokens = tokens.to(weight.device)
        lengths = torch.tensor([len(p) for p in prompts], device=weight.device)
        # Zeroed, not empty: a masked position's weight is 0, and 0 * NaN would still be NaN.
        shape = (
            len(prompts),
            self.config.n_heads,
            max_len,
            self.config.d_model // self.config.n_heads,
        )
        caches = [
            KVCache(weight.new_zeros(shape), weight.new_zeros(shape), 0, max_len)
            for _ in self.layers
        ]
        hidden = self._hidden(tokens, caches)  # the caches' buffers fill in place
        last = hidden[torch.arange(len(prompts), device=weight.device), lengths - 1]
        ragged = [RaggedKVCache(cache.keys, cache.values, lengths) for cache in caches]
        return self.logits(last), LMState(ragged)

    def step(self, tokens: Tensor, state: LMState) -> Tensor:
        """Append one token per row (B,) at each row's own position; next logits (B, V)."""
        lengths = state.lengths  # (B,) the new tokens' positions; each cache advances its own
        width = int(lengths.max()) + 1
        x = self.embed(tokens[:, None], lengths[:, None])  # (B, 1, C)
        visible = torch.arange(width, device=tokens.device)[None, :] <= lengths[:, None]
        mask = visible[:, None, None, :]  # (B, 1, 1, W): each row sees its own prefix only
        for layer, cache in zip(self.layers, state.caches, strict=True):
            x, _ = layer(x, self_mask=mask, cache=cache)
        return self.logits(x[:, 0])

    def reorder_state(self, state: LMState, index: Tensor) -> LMState:
        return LMState([c.reorder(index) for c in state.caches])

    @staticmethod
    def merge(first: LMState, second: LMState) -> LMState:
        """Rows of `first` then rows of `second`, in buffers as long as the longer of the two."""
        if first.batch_size == 0:
            return second
        caches = [RaggedKVCache.cat(a, b) for a, b in zip(first.caches, second.caches, strict=True)]
        return LMState(caches)
