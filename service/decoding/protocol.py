"""The incremental decoding protocol that the Transformer and RNNSearch both speak.

fairseq's idea, with typed state: the search algorithms own the state object and pass it in and
out; a model never stores per-request state on itself, so one model object can serve many
concurrent decodes.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from torch import Tensor

State = TypeVar("State")


class Seq2SeqDecoder(Protocol[State]):
    config: Any  # has pad_id, eos_id, decoder_start_id, max_positions

    def encode(self, src: Tensor) -> Any:
        """(B, S) right-padded source ids -> an encoder output with `.reorder(index)`."""

    def init_state(
        self, encoder: Any, max_len: int, use_cache: bool = True, need_alignment: bool = False
    ) -> State:
        """Fresh decoder state for `max_len` steps; `use_cache=False` recomputes every prefix."""

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, Tensor | None]:
        """(B,) previous tokens -> next-token logits (B, V), cross-attention (B, S) or None."""

    def reorder_state(self, state: State, index: Tensor) -> State:
        """Keep rows `index` (B',) of the state: beam reordering and dropping finished rows."""


class ContinuousDecoder(Seq2SeqDecoder[State], Protocol):
    """A decoder whose batch can take new sources while it runs (iteration-level batching).

    A ragged state keeps a position per row, so sources encoded at different times decode in
    one batch; `merge_states` appends the rows of a fresh state to a running one.
    """

    def init_ragged_state(self, encoder: Any, need_alignment: bool = False) -> State:
        """A cached state for (B, S) sources whose rows `merge_states` can join to others."""

    @staticmethod
    def merge_states(first: State, second: State, index: Tensor | None = None) -> State:
        """Rows `index` (None: all) of `first` then rows of `second`, padded to the longer
        source, in one copy (rows leaving and joining in one step)."""

    def checkpoint_state(self, state: State) -> State:
        """A view of `state` that later `step`s of it leave as it is, copying no tensors.

        The engine keeps one across each step, so a step that fails (one sentence's input,
        half applied) can be undone and its sentences retried apart. A step may write a row's
        entry at its next position in place: the checkpoint holds it as unwritten, and the
        next step writes it again before reading it.
        """
