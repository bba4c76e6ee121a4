"""RNNSearch (Bahdanau, Cho, Bengio 2014): "Neural Machine Translation by Jointly Learning to
Align and Translate".

A bidirectional GRU reads the source into annotations h_j; at every target step an additive
attention e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j) picks a context c_i, a GRU decoder fed the
previous word and c_i updates its state, and a maxout "deep output" layer predicts the word.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from service.models.attention import gather_cat
from service.models.packed import Linear
from service.models.presets import Presets


@dataclass(frozen=True)
class RNNSearchConfig(Presets):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(embed_dim=16, hidden_dim=32, attention_dim=32, output_dim=16),
        "small": {},
    }

    vocab_size: int
    embed_dim: int = 256  # the paper's m = 620; smaller to train on two CPU cores
    hidden_dim: int = 256  # n = 1000 in the paper
    attention_dim: int = 256  # n' = 1000
    output_dim: int = 256  # l = 500: maxout units of the deep output layer
    dropout: float = 0.2
    max_positions: int = 512
    pad_id: int = 0
    eos_id: int = 2
    decoder_start_id: int = 0


@dataclass
class Annotations:
    """The encoder's output: what every decoding step attends over."""

    states: Tensor  # (B, S, 2n) forward and backward GRU states, concatenated
    mask: Tensor  # (B, S) True on real tokens
    initial: Tensor  # (B, n) s_0 = tanh(W_s h_1 backward)

    def reorder(self, index: Tensor) -> Annotations:
        return Annotations(
            *(t.index_select(0, index) for t in (self.states, self.mask, self.initial))
        )


@dataclass
class RNNSearchState:
    """The decoder hidden state and the attention keys U_a h_j, computed once per source.

    With the cache off (benchmarks), `prefix` holds the tokens so far and every step reruns
    the decoder, and recomputes U_a h_j, from s_0.
    """

    encoder: Annotations
    keys: Tensor | None  # (B, S, A) U_a h_j
    hidden: Tensor | None  # (B, n) s_{i-1}
    prefix: Tensor | None  # (B, t) when the cache is off
    need_alignment: bool = False


class RNNSearch(nn.Module):
    def __init__(self, config: RNNSearchConfig):
        super().__init__()
        self.config = config
        c = config
        self.src_embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.encoder = nn.GRU(c.embed_dim, c.hidden_dim, batch_first=True, bidirectional=True)
        self.init_proj = Linear(c.hidden_dim, c.hidden_dim)  # W_s
        self.query_proj = Linear(c.hidden_dim, c.attention_dim, bias=False)  # W_a
        self.key_proj = Linear(2 * c.hidden_dim, c.attention_dim)  # U_a
        self.energy = Linear(c.attention_dim, 1, bias=False)  # v_a
        self.decoder = nn.GRUCell(c.embed_dim + 2 * c.hidden_dim, c.hidden_dim)
        # Deep output t~_i = U_o s_i + V_o E y_{i-1} + C_o c_i, then maxout over pairs.
        self.out_state = Linear(c.hidden_dim, 2 * c.output_dim)  # U_o
        self.out_embed = Linear(c.embed_dim, 2 * c.output_dim, bias=False)  # V_o
        self.out_context = Linear(2 * c.hidden_dim, 2 * c.output_dim, bias=False)  # C_o
        self.out_vocab = Linear(c.output_dim, c.vocab_size)  # W_o

    def encode(self, src: Tensor) -> Annotations:
        """src: (B, S) right-padded ids. Packing keeps padding out of both directions."""
        mask = src != self.config.pad_id
        lengths = mask.sum(1).clamp(min=1).cpu()
        embedded = F.dropout(self.src_embed(src), self.config.dropout, self.training)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, final = self.encoder(packed)
        states, _ = pad_packed_sequence(output, batch_first=True, total_length=src.shape[1])
        backward_first = final[1]  # (B, n): the backward GRU's state after reading x_1
        initial = torch.tanh(self.init_proj(backward_first))
        return Annotations(states, mask, initial)

    def attend(self, hidden: Tensor, keys: Tensor, encoder: Annotations) -> tuple[Tensor, Tensor]:
        """Additive attention: s_{i-1} (B, n) -> context (B, 2n), weights (B, S)."""
        energy = self.energy(torch.tanh(self.query_proj(hidden)[:, None] + keys)).squeeze(-1)
        weights = energy.masked_fill(~encoder.mask, float("-inf")).softmax(-1)
        context = (weights[:, None] @ encoder.states).squeeze(1)
        return context, weights

    def recur(
        self, token: Tensor, hidden: Tensor, keys: Tensor, encoder: Annotations
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder step: y_{i-1} (B,), s_{i-1} -> logits (B, V), s_i, weights (B, S)."""
        embedded = F.dropout(self.tgt_embed(token), self.config.dropout, self.training)
        context, weights = self.attend(hidden, keys, encoder)
        hidden = self.decoder(torch.cat([embedded, context], -1), hidden)
        pre = self.out_state(hidden) + self.out_embed(embedded) + self.out_context(context)
        maxout = pre.view(*pre.shape[:-1], -1, 2).amax(-1)  # (B, l)
        logits = self.out_vocab(F.dropout(maxout, self.config.dropout, self.training))
        return logits, hidden, weights

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Training entry point: (B, S), (B, T) -> logits (B, T, V)."""
        encoder = self.encode(src)
        keys = self.key_proj(encoder.states)
        hidden = encoder.initial
        outputs = []
        for token in tgt_in.unbind(1):
            logits, hidden, _ = self.recur(token, hidden, keys, encoder)
            outputs.append(logits)
        return torch.stack(outputs, 1)

    # Incremental decoding protocol (see service.decoding.protocol).

    def init_state(
        self,
        encoder: Annotations,
        max_len: int,
        use_cache: bool = True,
        need_alignment: bool = False,
    ) -> RNNSearchState:
        del max_len  # the recurrent state has a fixed size
        if not use_cache:
            empty = encoder.mask.new_zeros((encoder.mask.shape[0], 0), dtype=torch.long)
            return RNNSearchState(encoder, None, None, empty, need_alignment)
        keys = self.key_proj(encoder.states)
        return RNNSearchState(encoder, keys, encoder.initial, None, need_alignment)

    def step(self, tokens: Tensor, state: RNNSearchState) -> tuple[Tensor, Tensor | None]:
        """Feed one token per row (B,); return next-token logits (B, V) and alignment (B, S)."""
        if state.hidden is None:
            state.prefix = torch.cat([state.prefix, tokens[:, None]], dim=1)
            keys = self.key_proj(state.encoder.states)
            hidden = state.encoder.initial
            for token in state.prefix.unbind(1):
                logits, hidden, weights = self.recur(token, hidden, keys, state.encoder)
        else:
            logits, state.hidden, weights = self.recur(
                tokens, state.hidden, state.keys, state.encoder
            )
        return logits, weights if state.need_alignment else None

    def reorder_state(self, state: RNNSearchState, index: Tensor) -> RNNSearchState:
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return RNNSearchState(
            state.encoder.reorder(index),
            pick(state.keys),
            pick(state.hidden),
            pick(state.prefix),
            state.need_alignment,
        )

    # Continuous batching (service.decoding.continuous): the state is per row already.

    def init_ragged_state(
        self, encoder: Annotations, need_alignment: bool = False
    ) -> RNNSearchState:
        return self.init_state(encoder, 0, True, need_alignment)

    @staticmethod
    def checkpoint_state(state: RNNSearchState) -> RNNSearchState:
        """The same tensors: a step replaces `hidden`, it never writes into it."""
        return replace(state)

    @staticmethod
    def merge_states(
        first: RNNSearchState, second: RNNSearchState, index: Tensor | None = None
    ) -> RNNSearchState:
        """Rows `index` (None: all) of `first` then rows of `second` (cached states), sources
        padded to the longer (hidden states: same width), each tensor written once."""
        if (first.hidden.shape[0] if index is None else index.shape[0]) == 0:
            return second
        join = lambda a, b: gather_cat(a, index, b, 1)  # noqa: E731  # rows x sources
        encoder = Annotations(
            join(first.encoder.states, second.encoder.states),
            join(first.encoder.mask, second.encoder.mask),
            join(first.encoder.initial, second.encoder.initial),
        )
        return RNNSearchState(
            encoder,
            join(first.keys, second.keys),
            join(first.hidden, second.hidden),
            None,
            first.need_alignment or second.need_alignment,
        )
