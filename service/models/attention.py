"""Multi-head attention with an explicit key/value cache.

The cache is a plain object owned by one decoding call. Modules never keep per-request state,
so concurrent requests on the same model cannot see each other's keys and values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.models.packed import Linear


@dataclass
class KVCache:
    """Keys and values of one attention layer in (B, H, capacity, D) buffers.

    A beam step reorders the rows, which copies the cache anyway: `reorder` leaves room for
    exactly one more position, so the next append writes in place. Where no reorder comes
    (greedy, while no sentence finishes) `append` grows the buffers by `_GROWTH` positions at a
    time and the steps attend a slice of them. (Earlier, on an AMD EPYC, a batched matmul over
    such a slice measured 1.3x to 4x slower than over a contiguous block, so every append
    copied the whole cache to keep it contiguous; on the Xeon we serve on, the same `bmm` over
    a slice gives the same results bit for bit at 1.1x the time of a contiguous one, and the
    copy it saves costs twice that: 32 rows, 40 positions, 47 vs 44 us against 104 us.)
    """

    keys: Tensor  # (B, H, capacity, D); positions past `length` are unwritten
    values: Tensor  # (B, H, capacity, D)
    length: int = 0
    max_len: int | None = None  # most positions it may hold; None: unbounded

    @classmethod
    def empty(
        cls, batch: int, heads: int, head_dim: int, like: Tensor, max_len: int | None = None
    ) -> KVCache:
        shape = (batch, heads, 0, head_dim)
        return cls(like.new_empty(shape), like.new_empty(shape), 0, max_len)

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, H, t, D) new entries; return every entry so far as (B, H, T, D)."""
        end = self.length + keys.shape[2]
        if self.max_len is not None and end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        if end > self.keys.shape[2]:
            capacity = end + _GROWTH
            if self.max_len is not None:
                capacity = min(capacity, self.max_len)
            self.keys = self._copy(self.keys, capacity)
            self.values = self._copy(self.values, capacity)
        # narrow + copy_: the same write as slice assignment in two tensor calls instead of five
        # (a decode step's cost is mostly per-call overhead).
        self.keys.narrow(2, self.length, end - self.length).copy_(keys)
        self.values.narrow(2, self.length, end - self.length).copy_(values)
        self.length = end
        if end == self.keys.shape[2]:
            return self.keys, self.values
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reorder(self, index: Tensor, runs: Tensor | None = None) -> KVCache:
        """Select batch rows (beam reordering, dropping finished rows) into fresh buffers.

        `runs` is `head_runs(index, H)`, when the caller computed it once for several layers.
        """
        capacity = self.length + 1
        if self.max_len is not None:
            capacity = min(capacity, self.max_len)
        if runs is None and self.length > 0:
            runs = head_runs(index, self.keys.shape[1])
        return KVCache(
            self._copy(self.keys, capacity, index, runs),
            self._copy(self.values, capacity, index, runs),
            self.length,
            self.max_len,
        )

    def _copy(
        self,
        buffer: Tensor,
        capacity: int,
        index: Tensor | None = None,
        runs: Tensor | None = None,
    ) -> Tensor:
        rows = buffer.shape[0] if index is None else index.shape[0]
        copied = buffer.new_empty((rows, buffer.shape[1], capacity, buffer.shape[3]))
        filled = buffer if self.length == buffer.shape[2] else buffer[:, :, : self.length]
        fast = index is not None and self.length > 0 and filled.is_contiguous()
        if fast and not filled.requires_grad:
            # One row per (batch row, head): each is one contiguous run of length * D values
            # in both buffers, so index_select copies whole runs (memcpy) instead of walking
            # the strided (B, H, length, D) slice element by element: 1.3x faster at B=128.
            heads, block = buffer.shape[1], self.length * buffer.shape[3]
            if runs is None:
                runs = head_runs(index, heads)
            target = copied.view(rows * heads, -1)
            if block < target.shape[1]:
                target = target[:, :block]
            torch.index_select(filled.view(-1, block), 0, runs, out=target)
        elif index is not None and not filled.requires_grad:  # out= has no autograd
            torch.index_select(filled, 0, index, out=copied[:, :, : self.length])
        else:
            copied[:, :, : self.length] = filled if index is None else filled.index_select(0, index)
        return copied


_GROWTH = 16  # positions a growing `KVCache` adds at a time


def head_runs(index: Tensor, heads: int) -> Tensor:
    """(B',) selected batch rows -> (B' * H,) rows of the (B * H, T * D) view of a cache."""
    return (index[:, None] * heads + torch.arange(heads, device=index.device)).flatten()


@dataclass(frozen=True)
class StaticKV:
    """Projected keys and values of a fixed memory (the encoder output): computed once per source.

    `group` consecutive query rows share each memory row: beam search keeps one copy per
    sentence for its K beams instead of K copies, so the projections are computed once, a beam
    reorder copies nothing, and the K beams' queries attend to that copy together.
    """

    keys: Tensor  # (N, H, S, D)
    values: Tensor  # (N, H, S, D)
    group: int = 1  # query rows per memory row: the query batch is N * group
    # Groups of different sizes (continuous batching: beams of different beam sizes, greedy
    # rows, one memory row per source): query row r attends memory row owners[r] as the
    # slots[r]-th of at most `width` queries of that row. A reorder then changes these small
    # index tensors and never copies the keys and values.
    owners: Tensor | None = None  # (B,) long
    slots: Tensor | None = None  # (B,) long
    width: int = 1

    def select(self, entries: Tensor | None, group: int) -> StaticKV:
        """Keep memory rows `entries` (None: all, in order), each shared by `group` query rows."""
        if entries is None:
            return StaticKV(self.keys, self.values, group)
        return StaticKV(_select_rows(self.keys, entries), _select_rows(self.values, entries), group)

    def owned(self, owners: Tensor) -> StaticKV:
        """The same memory rows, attended by query rows that `owners` (B,) assigns to them."""
        order = owners.argsort(stable=True)
        ranked = owners[order]
        first = torch.searchsorted(ranked, ranked)  # where each row's owner's run starts
        slots = torch.empty_like(owners)
        slots[order] = torch.arange(owners.shape[0], device=owners.device) - first
        width = int(slots.max()) + 1 if owners.numel() else 1
        return StaticKV(self.keys, self.values, 1, owners, slots, width)


def shared_rows(index: Tensor, group: int, entries: int) -> tuple[Tensor | None, int]:
    """How a selection of query rows can keep sharing memory rows.

    The current batch has `entries` memory rows, each shared by `group` consecutive query rows;
    `index` (B',) picks the new query rows. Returns the memory rows to keep (None when all are
    kept in order, so nothing is copied) and how many consecutive new rows share each. When
    `index` mixes memory rows within a run it falls back to one memory row per query row.
    """
    owners = index // group  # (B',) memory row of each new query row
    if owners.numel() == 0:
        return owners, 1
    changes = (owners[1:] != owners[:-1]).nonzero()
    run = int(changes[0]) + 1 if changes.numel() else owners.shape[0]
    if owners.shape[0] % run == 0:
        runs = owners.reshape(-1, run)
        if bool((runs == runs[:, :1]).all()):
            kept = runs[:, 0]
            if kept.shape[0] == entries and torch.equal(
                kept, torch.arange(entries, device=kept.device)
            ):
                return None, run
            return kept, run
    return owners, 1


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with q/k/v/out projections (Marian / BART parameter names)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q_proj = Linear(d_model, d_model)
        self.k_proj = Linear(d_model, d_model)
        self.v_proj = Linear(d_model, d_model)
        self.out_proj = Linear(d_model, d_model)
        # q, k and v projected by one layer (C -> 3C) in self-attention: set on prepared
        # bfloat16 / int8 models by `precision.prepare_for_inference`.
        self.qkv_proj: nn.Module | None = None

    def split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def project_kv(self, memory: Tensor, group: int = 1) -> StaticKV:
        """Keys and values of a fixed memory, contiguous per head: every decoding step's matmul
        then reads them in place instead of first copying a strided view."""
        return StaticKV(
            self.split_heads(self.k_proj(memory)).contiguous(),
            self.split_heads(self.v_proj(memory)).contiguous(),
            group,
        )

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

        - `static_kv`: precomputed cross-attention keys/values (decoding); with
          `static_kv.group = g`, the B = N * g query rows are attended in N groups of g and
          `mask` is per group, broadcastable to (N, H, g * T, S);
        - `cache`: self-attention during incremental decoding; new keys are appended;
        - otherwise `memory` (or `query` itself for self-attention) is projected now.

        `mask` is boolean and broadcastable to (B, H, T, S), True where attention is allowed.
        Returns the output (B, T, C) and, if asked, the head-averaged weights (B, T, S).
        """
        batch, length, channels = query.shape
        group = 1 if static_kv is None else static_kv.group
        owned = static_kv is not None and static_kv.owners is not None
        if group > 1:  # rows sharing a memory row become one row of g * T queries
            query = query.reshape(batch // group, group * length, channels)
        elif owned:  # (B, 1, C) -> (N, width, C): each memory row's queries, zeros for none
            placed = query.new_zeros((static_kv.keys.shape[0], static_kv.width, channels))
            placed[static_kv.owners, static_kv.slots] = query[:, 0]
            query = placed
        if static_kv is None and memory is None and self.qkv_proj is not None:
            q, k, v = (self.split_heads(x) for x in self.qkv_proj(query).chunk(3, -1))
            if cache is not None:
                k, v = cache.append(k, v)
        elif static_kv is not None:
            q = self.split_heads(self.q_proj(query))  # (B / g, H, g * T, D)
            k, v = static_kv.keys, static_kv.values
        else:
            q = self.split_heads(self.q_proj(query))
            source = query if memory is None else memory
            k, v = self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))
            if cache is not None:
                k, v = cache.append(k, v)

        if need_weights or cache is not None or static_kv is not None:
            # A decoding step has a handful of queries per row: two batched matmuls beat the
            # fused kernel there on CPU (B=128, T=60: 0.47 vs 1.6 ms) and give the weights.
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, H, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
            out = weights @ v
            if owned:  # back to one row per query: (N, H, width, .) -> (B, H, 1, .)
                rows = (static_kv.owners, slice(None), static_kv.slots)
                out, weights = out[rows][:, :, None], weights[rows][:, :, None]
            averaged = weights.mean(1).reshape(batch, length, -1) if need_weights else None
        else:
            dropout = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            averaged = None
        out = out.transpose(1, 2).reshape(batch, length, channels)  # (B, T, C)
        return self.out_proj(out), averaged

    # One decoding step of the static search (one query per row, a `KVCache`, grouped
    # `StaticKV`): `forward`'s arithmetic, the same kernels on the same operands, so the same
    # results bit for bit, in fewer tensor calls. At 32 rows a float32 step took ~18 ms of CPU
    # of which ~5 ms was per-call overhead (a 1-row step: 6.5 ms), so calls are what to save:
    # `bmm` on the folded views instead of `matmul` (which folds them itself, a few calls
    # each), views for the head splits, an additive mask, no module call machinery.

    def step_self(self, x: Tensor, cache: KVCache) -> Tensor:
        """Cached self-attention of one new position per row: (B, 1, C) -> (B, 1, C)."""
        batch, _, channels = x.shape
        heads, dim = self.n_heads, self.head_dim
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj.forward(x).view(batch, 3, heads, 1, dim).unbind(1)
        else:  # with one position, (B, 1, C) is (B, H, 1, D) in memory: a view splits heads
            q = self.q_proj.forward(x).view(batch, heads, 1, dim)
            k = self.k_proj.forward(x).view(batch, heads, 1, dim)
            v = self.v_proj.forward(x).view(batch, heads, 1, dim)
        keys, values = cache.append(k, v)  # (B, H, T, D)
        rows, length = batch * heads, keys.shape[2]
        scores = torch.bmm(
            (q * dim**-0.5).reshape(rows, 1, dim), _fold(keys, rows, length, dim).transpose(1, 2)
        )
        out = torch.bmm(scores.softmax(-1), _fold(values, rows, length, dim))  # (B * H, 1, D)
        return self.out_proj.forward(out.view(batch, 1, channels))

    def step_cross(self, x: Tensor, static_kv: StaticKV, bias: Tensor) -> Tensor:
        """Cross-attention of one query per row to grouped memory rows: (B, 1, C) -> (B, 1, C).

        bias (N, 1, 1, S): 0 where attention is allowed, -inf elsewhere; adding it leaves each
        allowed score as it is, as `masked_fill` does.
        """
        batch, _, channels = x.shape
        heads, dim, group = self.n_heads, self.head_dim, static_kv.group
        entries, length = static_kv.keys.shape[0], static_kv.keys.shape[2]
        rows = entries * heads
        q = (self.q_proj.forward(x).view(entries, group, heads, dim).transpose(1, 2)) * dim**-0.5
        keys = _fold(static_kv.keys, rows, length, dim)
        scores = torch.bmm(q.reshape(rows, group, dim), keys.transpose(1, 2))
        scores = (scores.view(entries, heads, group, length) + bias).view(rows, group, length)
        out = torch.bmm(scores.softmax(-1), _fold(static_kv.values, rows, length, dim))
        if group > 1:  # (N, H, g, D) -> (N, g, H, D): one row per query again
            out = out.view(entries, heads, group, dim).transpose(1, 2)
        return self.out_proj.forward(out.reshape(batch, 1, channels))


def _fold(cache: Tensor, rows: int, length: int, dim: int) -> Tensor:
    """(B, H, T, D) -> (B * H, T, D), as `matmul` folds it: a view where the rows' (T, D)
    blocks sit at a fixed stride (a contiguous cache, or a slice of a longer one)."""
    if cache.is_contiguous():
        return cache.view(rows, length, dim)
    return cache.reshape(rows, length, dim)


@dataclass
class RaggedKVCache:
    """One layer's keys/values for rows of different lengths, in (B, H, T_max, D) buffers.

    Continuous batching puts rows that started at different times in one batch, so each row
    sits at its own position. It speaks `KVCache.append`, so the decoder blocks use it
    unchanged. Each cache keeps its rows' lengths and advances them itself when it appends:
    nothing has to be set on it before a layer runs, so no call order can write a row at a
    stale position. Entries past a row's length are zeros, never garbage: a masked position's
    weight is 0, and 0 * NaN would still be NaN.
    """

    keys: Tensor
    values: Tensor
    lengths: Tensor  # (B,) entries held per row: row b's next entry goes at lengths[b]
    # False: the buffers were sized for the longest row (the language model's prefill) and a
    # longer one is an error; True: they double when a row outgrows them (the translation
    # engine, which cannot know how long a translation gets).
    growable: bool = False

    @classmethod
    def empty(
        cls, batch: int, heads: int, head_dim: int, like: Tensor, capacity: int = 16
    ) -> RaggedKVCache:
        shape = (batch, heads, capacity, head_dim)
        lengths = torch.zeros(batch, dtype=torch.long, device=like.device)
        return cls(like.new_zeros(shape), like.new_zeros(shape), lengths, growable=True)

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store one new (B, H, 1, D) entry per row; return the buffers up to the longest row."""
        if keys.shape[2] != 1:
            raise ValueError("a ragged cache takes one entry per row per step")
        width = int(self.lengths.max()) + 1
        if width > self.keys.shape[2]:
            if not self.growable:
                raise ValueError("the cache is full: raise max_len")
            self.keys, self.values = (
                _widen(t, max(width, 2 * t.shape[2])) for t in (self.keys, self.values)
            )
        rows = torch.arange(keys.shape[0], device=keys.device)
        self.keys[rows, :, self.lengths] = keys[:, :, 0]
        self.values[rows, :, self.lengths] = values[:, :, 0]
        self.lengths = self.lengths + 1
        return self.keys[:, :, :width], self.values[:, :, :width]

    def reorder(self, index: Tensor) -> RaggedKVCache:
        """Select rows into fresh buffers; a growable cache keeps room up to the next multiple
        of `_ROOM` entries only, so a beam step copies about what is held, not the slack of
        doubling, and steps that reorder nothing still append in place for a while."""
        keys, values = self.keys, self.values
        lengths = self.lengths.index_select(0, index)
        if self.growable and lengths.numel():
            capacity = -(-(int(lengths.max()) + 1) // _ROOM) * _ROOM
            keys, values = keys[:, :, :capacity], values[:, :, :capacity]
        return RaggedKVCache(
            _select_rows(keys, index), _select_rows(values, index), lengths, self.growable
        )

    @staticmethod
    def cat(
        first: RaggedKVCache, second: RaggedKVCache, index: Tensor | None = None
    ) -> RaggedKVCache:
        """Rows `index` (None: all) of `first` then rows of `second`, in one copy, in buffers
        as long as the longer of the two."""
        lengths = first.lengths if index is None else first.lengths.index_select(0, index)
        return RaggedKVCache(
            gather_cat(first.keys, index, second.keys, 2),
            gather_cat(first.values, index, second.values, 2),
            torch.cat([lengths, second.lengths]),
            first.growable or second.growable,
        )


def gather_cat(first: Tensor, index: Tensor | None, second: Tensor, dim: int) -> Tensor:
    """Rows `index` (None: all) of `first`, then `second`, both zero-padded along `dim` to
    the longer: written once into one new buffer (a sentence leaving and one joining the
    continuous batch in the same step cost one copy of the state, not two).

    The new buffer has room for half as many rows again (at least 32) after its own: when all of
    `first` is kept (`index` None), it came from here and `second` fits, `second` is written
    into that room and `first`'s rows are not copied at all (a sentence joining the batch
    costs a copy of its own rows only). Only the latest view of a buffer may grow it, so a
    state that was joined once cannot be joined again over the rows of its successor."""
    if index is None:
        grown = _append_rows(first, second, dim)
        if grown is not None:
            return grown
    width = max(first.shape[dim], second.shape[dim])
    rows = first.shape[0] if index is None else index.shape[0]
    shape = list(first.shape)
    shape[0], shape[dim] = rows + second.shape[0], width
    capacity = shape[0] + max(_ROW_ROOM, shape[0] // 2)
    out = first.new_empty((capacity, *shape[1:]))[: shape[0]]
    out._row_capacity = capacity
    head, tail = out[:rows], out[rows:]
    if first.shape[dim] == width and index is not None:
        torch.index_select(first, 0, index, out=head)  # head is contiguous: one pass
    else:
        if first.shape[dim] < width:
            head.narrow(dim, first.shape[dim], width - first.shape[dim]).zero_()
        picked = first if index is None else first.index_select(0, index)
        head.narrow(dim, 0, first.shape[dim]).copy_(picked)
    if second.shape[dim] < width:
        tail.narrow(dim, second.shape[dim], width - second.shape[dim]).zero_()
    tail.narrow(dim, 0, second.shape[dim]).copy_(second)
    return out


_ROOM = 16  # a reordered ragged cache's capacity is a multiple of this
_ROW_ROOM = 32  # the fewest spare rows `gather_cat` leaves after its own


def _append_rows(first: Tensor, second: Tensor, dim: int) -> Tensor | None:
    """`first` then `second` (zero-padded along `dim`) in `first`'s own buffer, when it is the
    latest view of a `gather_cat` buffer with room for `second`; else None."""
    capacity = getattr(first, "_row_capacity", None)
    rows, extra = first.shape[0], second.shape[0]
    if (
        capacity is None
        or rows + extra > capacity
        or second.shape[dim] > first.shape[dim]
        or not first.is_contiguous()
    ):
        return None
    grown = first.as_strided((rows + extra, *first.shape[1:]), first.stride())
    tail = grown[rows:]
    tail.narrow(dim, 0, second.shape[dim]).copy_(second)
    if second.shape[dim] < first.shape[dim]:
        tail.narrow(dim, second.shape[dim], first.shape[dim] - second.shape[dim]).zero_()
    first._row_capacity = None  # the room is `grown`'s now
    grown._row_capacity = capacity
    return grown


def _select_rows(buffer: Tensor, index: Tensor) -> Tensor:
    """`buffer.index_select(0, index)` into a buffer with `gather_cat`'s room for more rows,
    so the rows a beam step reorders can still be joined by others without a copy."""
    rows = index.shape[0]
    capacity = rows + max(_ROW_ROOM, rows // 2)
    out = buffer.new_empty((capacity, *buffer.shape[1:]))[:rows]
    torch.index_select(buffer, 0, index, out=out)
    out._row_capacity = capacity
    return out


def _widen(buffer: Tensor, capacity: int) -> Tensor:
    """(B, H, T, D) -> (B, H, capacity, D), the new positions zero; no copy when it fits."""
    if capacity == buffer.shape[2]:
        return buffer
    return F.pad(buffer, (0, 0, 0, capacity - buffer.shape[2]))
