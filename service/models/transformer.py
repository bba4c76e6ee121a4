"""Transformer encoder-decoder ("Attention Is All You Need", 2017) in the MarianMT layout.

Post-layer-norm blocks, sinusoidal positions, scaled embeddings, one embedding matrix shared by
source, target and output, and a final logits bias. Parameter names equal Hugging Face's
`MarianMTModel` state dict without its `model.` prefix, so any OPUS-MT checkpoint loads as is
and `transformers` / CTranslate2 can serve as independent references on identical weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.models.attention import (
    KVCache,
    MultiHeadAttention,
    RaggedKVCache,
    StaticKV,
    gather_cat,
    head_runs,
    shared_rows,
)
from service.models.packed import Linear, PackedWeight, linear
from service.models.presets import Presets

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu, "silu": F.silu}


@dataclass(frozen=True)
class TransformerConfig(Presets):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=64),
        "small": {},
    }

    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    encoder_layers: int = 4
    # A shallower decoder costs little quality and makes every decode step cheaper
    # (Kasai et al. 2021, "Deep Encoder, Shallow Decoder").
    decoder_layers: int = 3
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "swish"  # Marian's default
    max_positions: int = 512
    pad_id: int = 0
    eos_id: int = 2
    decoder_start_id: int = 0  # Marian starts decoding from the pad token
    scale_embedding: bool = True

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")


def sinusoidal_positions(n_positions: int, dim: int) -> Tensor:
    """Marian's table: sines in the first half of the channels, cosines in the second."""
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, -2 * torch.arange(dim // 2 + dim % 2, dtype=torch.float64) / dim)
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    sentinel = dim // 2 + dim % 2
    table[:, :sentinel] = torch.sin(position * rate)
    table[:, sentinel:] = torch.cos(position * rate[: dim // 2])
    return table.float()  # (P, C)


@torch.no_grad()
def init_weights(model: nn.Module, d_model: int, pad_id: int):
    """Xavier for projections; N(0, d^-1/2) embeddings, which the sqrt(d) scale brings to unit
    size; the padding row zero (Marian's padding_idx)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=d_model**-0.5)
            module.weight[pad_id].zero_()


class FeedForwardMixin:
    """fc1/fc2 sit directly on each layer, as in Marian's state dict."""

    def init_feed_forward(self, config: TransformerConfig):
        self.fc1 = Linear(config.d_model, config.ffn_dim)
        self.fc2 = Linear(config.ffn_dim, config.d_model)
        self.activation = ACTIVATIONS[config.activation]
        self.activation_dropout = config.activation_dropout

    def feed_forward(self, x: Tensor) -> Tensor:
        hidden = self.activation(self.fc1(x))
        return self.fc2(F.dropout(hidden, self.activation_dropout, self.training))


class EncoderLayer(FeedForwardMixin, nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(
            config.d_model, config.n_heads, config.attention_dropout
        )
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.init_feed_forward(config)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.dropout = config.dropout

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        attended, _ = self.self_attn(x, mask=mask)
        x = self.self_attn_layer_norm(x + F.dropout(attended, self.dropout, self.training))
        return self.final_layer_norm(
            x + F.dropout(self.feed_forward(x), self.dropout, self.training)
        )


class DecoderLayer(FeedForwardMixin, nn.Module):
    """Causal self-attention, optional cross-attention, feed-forward; each post-normed.

    Without cross-attention it is the block of the decoder-only language model.
    """

    def __init__(self, config: TransformerConfig, cross_attention: bool = True):
        super().__init__()
        d, heads, p = config.d_model, config.n_heads, config.attention_dropout
        self.self_attn = MultiHeadAttention(d, heads, p)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        if cross_attention:
            self.encoder_attn = MultiHeadAttention(d, heads, p)
            self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.init_feed_forward(config)
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout = config.dropout

    def forward(
        self,
        x: Tensor,
        *,
        self_mask: Tensor | None,
        cache: KVCache | None = None,
        memory: Tensor | None = None,
        static_kv: StaticKV | None = None,
        memory_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        drop = lambda t: F.dropout(t, self.dropout, self.training)  # noqa: E731
        attended, _ = self.self_attn(x, cache=cache, mask=self_mask)
        x = self.self_attn_layer_norm(x + drop(attended))
        weights = None
        if hasattr(self, "encoder_attn"):
            attended, weights = self.encoder_attn(
                x, memory=memory, static_kv=static_kv, mask=memory_mask, need_weights=need_weights
            )
            x = self.encoder_attn_layer_norm(x + drop(attended))
        return self.final_layer_norm(x + drop(self.feed_forward(x))), weights

    def step(self, x: Tensor, cache: KVCache, static_kv: StaticKV, memory_bias: Tensor) -> Tensor:
        """`forward` for one position per row of the static cached search, in inference: the
        same arithmetic in fewer calls (`MultiHeadAttention.step_self`). (B, 1, C) -> (B, 1, C)."""
        x = _layer_norm(self.self_attn_layer_norm, x + self.self_attn.step_self(x, cache))
        attended = self.encoder_attn.step_cross(x, static_kv, memory_bias)
        x = _layer_norm(self.encoder_attn_layer_norm, x + attended)
        hidden = self.fc2.forward(self.activation(self.fc1.forward(x)))
        return _layer_norm(self.final_layer_norm, x + hidden)


def _layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


@dataclass
class EncoderOutput:
    """Encoder states of N sources, standing for N * group decoder rows.

    Beam search asks for each source K times; `reorder` notices when a selection repeats each
    memory row over consecutive rows and records that as `group` instead of copying the
    memory K times (see `StaticKV`).
    """

    memory: Tensor  # (N, S, C)
    mask: Tensor  # (N, S) True on real tokens
    group: int = 1  # decoder rows per memory row

    @property
    def rows(self) -> int:
        return self.memory.shape[0] * self.group

    def reorder(self, index: Tensor) -> EncoderOutput:
        entries, group = shared_rows(index, self.group, self.memory.shape[0])
        return self.select(entries, group)

    def select(self, entries: Tensor | None, group: int) -> EncoderOutput:
        if entries is None:
            return EncoderOutput(self.memory, self.mask, group)
        return EncoderOutput(
            self.memory.index_select(0, entries), self.mask.index_select(0, entries), group
        )

    def expanded(self) -> EncoderOutput:
        """One memory row per decoder row (for the teacher-forced and uncached paths)."""
        if self.group == 1:
            return self
        return EncoderOutput(
            self.memory.repeat_interleave(self.group, 0),
            self.mask.repeat_interleave(self.group, 0),
        )


@dataclass
class TransformerState:
    """Everything one decoding call carries between steps.

    With the cache on, `self_attn` holds every layer's keys/values and `cross_attn` the encoder
    keys/values projected once. With it off (benchmarks), `prefix` holds the tokens so far and
    each step recomputes the decoder over all of them.

    A ragged state (`init_ragged_state`, for continuous batching) has `sources` set: its rows
    sit at positions of their own (`RaggedKVCache`), and `sources` names the memory row (one
    per source) each row attends, so a reorder (a beam step, a sentence leaving) changes
    `sources` and copies no cross-attention keys and values; memory rows that no row attends
    any more are dropped once they are most of them.
    """

    encoder: EncoderOutput
    cross_attn: list[StaticKV] | None
    self_attn: list[KVCache] | list[RaggedKVCache] | None
    prefix: Tensor | None  # (B, t) when the cache is off
    position: int = 0
    need_alignment: bool = False
    sources: Tensor | None = None  # (B,) ragged states only: each row's memory row
    # (N, 1, 1, S): 0 on the memory rows' real tokens, -inf on padding; made by the first
    # step that needs it and kept while the memory rows stay the same.
    memory_bias: Tensor | None = None

    def attention_bias(self) -> Tensor:
        if self.memory_bias is None:
            mask = self.encoder.mask[:, None, None, :]
            zeros = torch.zeros(mask.shape, dtype=self.encoder.memory.dtype, device=mask.device)
            self.memory_bias = zeros.masked_fill_(~mask, float("-inf"))
        return self.memory_bias


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            EncoderLayer(config) for _ in range(config.encoder_layers)
        )
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(
            DecoderLayer(config) for _ in range(config.decoder_layers)
        )
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.register_buffer(
            "positions",
            sinusoidal_positions(config.max_positions, config.d_model),
            persistent=False,
        )
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.output_packed = PackedWeight()
        # Set by `precision.prepare_for_inference` where the tied projection is quantized.
        self.output_layer: nn.Module | None = None
        init_weights(self, config.d_model, config.pad_id)

    def embed(self, tokens: Tensor, start: int = 0) -> Tensor:
        length = tokens.shape[1]
        if start + length > self.config.max_positions:
            raise ValueError(
                f"sequence of {start + length} tokens exceeds max_positions="
                f"{self.config.max_positions}"
            )
        x = self.shared(tokens) * self.embed_scale + self.positions[start : start + length]
        return F.dropout(x, self.config.dropout, self.training)

    def encode(self, src: Tensor) -> EncoderOutput:
        """src: (B, S) token ids, right-padded with pad_id."""
        mask = src != self.config.pad_id
        x = self.embed(src)
        attn_mask = mask[:, None, None, :]  # (B, 1, 1, S)
        for layer in self.encoder.layers:
            x = layer(x, attn_mask)
        return EncoderOutput(x, mask)

    def logits(self, hidden: Tensor) -> Tensor:
        """Output layer: the shared embedding as a projection, plus the final bias."""
        if self.output_layer is not None:
            return self.output_layer(hidden)
        return linear(hidden, self.shared.weight, self.final_logits_bias[0], self.output_packed)

    def decode(
        self, tgt_in: Tensor, encoder: EncoderOutput, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced decoder over a whole prefix: (B, T) -> hidden states (B, T, C).

        Also returns the last layer's head-averaged cross-attention (B, T, S) when asked.
        """
        length = tgt_in.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=tgt_in.device).tril()
        encoder = encoder.expanded()
        memory_mask = encoder.mask[:, None, None, :]
        x = self.embed(tgt_in)
        weights = None
        for i, layer in enumerate(self.decoder.layers):
            last = i == len(self.decoder.layers) - 1
            x, weights = layer(
                x,
                self_mask=causal,
                memory=encoder.memory,
                memory_mask=memory_mask,
                need_weights=need_weights and last,
            )
        return x, weights

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Training entry point: (B, S), (B, T) -> logits (B, T, V)."""
        return self.logits(self.decode(tgt_in, self.encode(src))[0])

    # Incremental decoding protocol (see service.decoding.protocol).

    def init_state(
        self,
        encoder: EncoderOutput,
        max_len: int,
        use_cache: bool = True,
        need_alignment: bool = False,
    ) -> TransformerState:
        if not use_cache:
            empty = encoder.mask.new_zeros((encoder.rows, 0), dtype=torch.long)
            return TransformerState(encoder, None, None, empty, 0, need_alignment)
        batch = encoder.rows
        heads = self.config.n_heads
        head_dim = self.config.d_model // heads
        cross = [
            layer.encoder_attn.project_kv(encoder.memory, encoder.group)
            for layer in self.decoder.layers
        ]
        caches = [
            KVCache.empty(batch, heads, head_dim, encoder.memory, max_len)
            for _ in self.decoder.layers
        ]
        return TransformerState(encoder, cross, caches, None, 0, need_alignment)

    def step(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, Tensor | None]:
        """Feed one token per row (B,); return next-token logits (B, V) and alignment (B, S).

        Mutates `state` (appends to its caches); the caller owns it.
        """
        if state.self_attn is None:
            state.prefix = torch.cat([state.prefix, tokens[:, None]], dim=1)
            hidden, weights = self.decode(state.prefix, state.encoder, state.need_alignment)
            state.position += 1
            return self.logits(hidden[:, -1]), None if weights is None else weights[:, -1]

        if state.sources is None and not (state.need_alignment or self.training):
            return self._step_static(tokens, state), None
        if state.sources is None:
            x = self.embed(tokens[:, None], start=state.position)  # (B, 1, C)
            self_mask = None  # one query sees every cached position: causal by construction
        else:
            x, self_mask = self._embed_ragged(tokens, state.self_attn[0].lengths)
        memory_mask = state.encoder.mask[:, None, None, :]  # (N, 1, 1, S): one per memory row
        weights = None
        for i, layer in enumerate(self.decoder.layers):
            last = i == len(self.decoder.layers) - 1
            x, weights = layer(
                x,
                self_mask=self_mask,
                cache=state.self_attn[i],
                static_kv=state.cross_attn[i],
                memory_mask=memory_mask,
                need_weights=state.need_alignment and last,
            )
        state.position += 1
        return self.logits(x[:, 0]), None if weights is None else weights[:, 0]

    def _step_static(self, tokens: Tensor, state: TransformerState) -> Tensor:
        """`step` of the static cached search in inference: (B,) -> logits (B, V)."""
        position = state.position
        if position >= self.config.max_positions:
            raise ValueError(
                f"sequence of {position + 1} tokens exceeds max_positions="
                f"{self.config.max_positions}"
            )
        x = F.embedding(tokens[:, None], self.shared.weight) * self.embed_scale
        x = x + self.positions[position]  # (B, 1, C)
        bias = state.attention_bias()
        for layer, cache, static_kv in zip(
            self.decoder.layers, state.self_attn, state.cross_attn, strict=True
        ):
            x = layer.step(x, cache, static_kv, bias)
        state.position += 1
        return self.logits(x[:, 0])

    def reorder_state(self, state: TransformerState, index: Tensor) -> TransformerState:
        if state.sources is not None:
            return self._reorder_ragged(state, index)
        encoder = state.encoder
        entries, group = shared_rows(index, encoder.group, encoder.memory.shape[0])
        caches = None
        if state.self_attn is not None:
            runs = head_runs(index, self.config.n_heads)  # one for every layer's copy
            caches = [cache.reorder(index, runs) for cache in state.self_attn]
        bias = state.memory_bias
        if bias is not None and entries is not None:
            bias = bias.index_select(0, entries)
        return TransformerState(
            encoder=encoder.select(entries, group),
            cross_attn=None
            if state.cross_attn is None
            else [kv.select(entries, group) for kv in state.cross_attn],
            self_attn=caches,
            prefix=None if state.prefix is None else state.prefix.index_select(0, index),
            position=state.position,
            need_alignment=state.need_alignment,
            memory_bias=bias,
        )

    # Continuous batching (service.decoding.continuous): rows at positions of their own.

    def init_ragged_state(
        self, encoder: EncoderOutput, need_alignment: bool = False
    ) -> TransformerState:
        """A cached state that `merge_states` can join to a running batch of other sources.

        One memory row per source, which any number of decoder rows may attend (`StaticKV`
        owners): beams of sentences with different beam sizes cannot share memory rows by
        fixed groups, and a copy per row would be copied again at every beam step.
        """
        encoder = encoder.expanded()
        heads = self.config.n_heads
        head_dim = self.config.d_model // heads
        sources = torch.arange(encoder.rows, device=encoder.memory.device)
        cross = _owned(
            [layer.encoder_attn.project_kv(encoder.memory) for layer in self.decoder.layers],
            sources,
        )
        caches = [
            RaggedKVCache.empty(encoder.rows, heads, head_dim, encoder.memory)
            for _ in self.decoder.layers
        ]
        return TransformerState(encoder, cross, caches, None, 0, need_alignment, sources)

    def _embed_ragged(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) tokens at positions `lengths` (B,) -> inputs (B, 1, C), self-attention mask
        (B, 1, 1, W): each row sees its own prefix only."""
        width = int(lengths.max()) + 1
        if width > self.config.max_positions:
            raise ValueError(
                f"sequence of {width} tokens exceeds max_positions={self.config.max_positions}"
            )
        x = self.shared(tokens[:, None]) * self.embed_scale + self.positions[lengths][:, None]
        visible = torch.arange(width, device=tokens.device)[None, :] <= lengths[:, None]
        return F.dropout(x, self.config.dropout, self.training), visible[:, None, None, :]

    def _reorder_ragged(self, state: TransformerState, index: Tensor) -> TransformerState:
        owners = state.sources.index_select(0, index)
        encoder, cross = state.encoder, state.cross_attn
        entries = encoder.memory.shape[0]
        kept = owners.unique()  # sorted
        if entries > 16 and 2 * kept.shape[0] < entries:  # mostly memory of finished rows
            renumber = torch.full((entries,), -1, dtype=torch.long, device=owners.device)
            renumber[kept] = torch.arange(kept.shape[0], device=owners.device)
            owners = renumber[owners]
            encoder = encoder.select(kept, 1)
            cross = [kv.select(kept, 1) for kv in cross]
        return TransformerState(
            encoder=encoder,
            cross_attn=_owned(cross, owners),
            self_attn=[cache.reorder(index) for cache in state.self_attn],
            prefix=None,
            need_alignment=state.need_alignment,
            sources=owners,
        )

    @staticmethod
    def checkpoint_state(state: TransformerState) -> TransformerState:
        """The same tensors; a step replaces `lengths` (and grown buffers) rather than
        changing them, and writes only at each row's next position (`RaggedKVCache`)."""
        caches = [RaggedKVCache(c.keys, c.values, c.lengths, c.growable) for c in state.self_attn]
        return replace(state, self_attn=caches)

    @staticmethod
    def merge_states(
        first: TransformerState, second: TransformerState, index: Tensor | None = None
    ) -> TransformerState:
        """Rows `index` (None: all) of `first` then rows of `second` (ragged states), sources
        padded to the longer: one copy of each cache, so rows leaving and rows joining cost
        one copy together. Memory rows that no kept row attends are dropped once they are
        most of them, in the same copy."""
        owners = first.sources if index is None else first.sources.index_select(0, index)
        if owners.numel() == 0:
            return second
        entries = first.encoder.memory.shape[0]
        kept = None
        if index is not None and entries > 16:
            unique = owners.unique()  # sorted
            if 2 * unique.shape[0] < entries:  # mostly memory of finished rows
                renumber = torch.full((entries,), -1, dtype=torch.long, device=owners.device)
                renumber[unique] = torch.arange(unique.shape[0], device=owners.device)
                owners, kept, entries = renumber[owners], unique, unique.shape[0]

        def kv(a: StaticKV, b: StaticKV) -> StaticKV:
            return StaticKV(
                gather_cat(a.keys, kept, b.keys, 2), gather_cat(a.values, kept, b.values, 2)
            )

        memory = gather_cat(first.encoder.memory, kept, second.encoder.memory, 1)
        mask = gather_cat(first.encoder.mask, kept, second.encoder.mask, 1)
        owners = torch.cat([owners, second.sources + entries])
        cross = [kv(a, b) for a, b in zip(first.cross_attn, second.cross_attn, strict=True)]
        return TransformerState(
            encoder=EncoderOutput(memory, mask),
            cross_attn=_owned(cross, owners),
            self_attn=[
                RaggedKVCache.cat(a, b, index)
                for a, b in zip(first.self_attn, second.self_attn, strict=True)
            ],
            prefix=None,
            need_alignment=first.need_alignment or second.need_alignment,
            sources=owners,
        )


def _owned(cross: list[StaticKV], owners: Tensor) -> list[StaticKV]:
    """Every layer's memory rows, attended by the decoder rows `owners` (B,) names."""
    first = cross[0].owned(owners)
    return [StaticKV(kv.keys, kv.values, 1, first.owners, first.slots, first.width) for kv in cross]
