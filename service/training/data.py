"""Training text -> padded tensors, packed into token-budget batches.

Two kinds of example share the batching: parallel pairs for the translators (`Example`,
`collate`) and token sequences for the language model (`LMExample`, `collate_lm`).

Batches are built from length-sorted examples so that padding stays low, and each batch is
capped by *padded* tokens (`rows * longest side`), which is what a step really costs in time
and memory. The batch order is reshuffled every epoch from a generator seeded with
`seed + epoch`, so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

MAX_SOURCE_TOKENS = 256  # EOS included; matches the Translator's limit at serving time
MAX_TARGET_TOKENS = 256  # labels, EOS included


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


class TextPair(Protocol):
    source: str
    target: str


@dataclass(frozen=True)
class Example:
    source: list[int]  # ids + [eos], at most MAX_SOURCE_TOKENS
    target: list[int]  # ids without eos, at most MAX_TARGET_TOKENS - 1

    @property
    def width(self) -> int:
        """Padded columns this example needs: the longer of its source and its labels."""
        return max(len(self.source), len(self.target) + 1)

    @property
    def length_key(self) -> tuple[int, ...]:
        return (self.width, len(self.source))

    @property
    def target_tokens(self) -> int:
        return len(self.target) + 1


@dataclass(frozen=True)
class LMExample:
    """One language-model row: [eos] text [eos] ...; the model reads tokens[:-1] and is trained
    to predict tokens[1:]."""

    tokens: list[int]

    @property
    def width(self) -> int:
        return len(self.tokens) - 1

    @property
    def length_key(self) -> tuple[int, ...]:
        return (self.width,)

    @property
    def target_tokens(self) -> int:
        return len(self.tokens) - 1


@dataclass
class Batch:
    src: Tensor  # (B, S) source ids + eos, right-padded
    tgt_in: Tensor  # (B, T) [decoder_start] + target ids, right-padded
    labels: Tensor  # (B, T) target ids + [eos], right-padded; pad positions are ignored
    pad_id: int

    @property
    def rows(self) -> int:
        return self.src.shape[0]

    @property
    def target_tokens(self) -> int:
        return int((self.labels != self.pad_id).sum())

    @property
    def source_tokens(self) -> int:
        return int((self.src != self.pad_id).sum())

    @property
    def padded_tokens(self) -> int:
        return self.rows * max(self.src.shape[1], self.labels.shape[1])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.src.to(device), self.tgt_in.to(device), self.labels.to(device), self.pad_id
        )


def encode_pairs(
    pairs: Iterable[TextPair],
    tokenizer: Encoder,
    eos_id: int,
    max_source_tokens: int = MAX_SOURCE_TOKENS,
    max_target_tokens: int = MAX_TARGET_TOKENS,
) -> list[Example]:
    """Tokenize once up front; over-long sides are truncated (EOS kept), empty ones dropped."""
    examples = []
    for pair in pairs:
        source = tokenizer.encode(pair.source)[: max_source_tokens - 1]
        target = tokenizer.encode(pair.target)[: max_target_tokens - 1]
        if source and target:
            examples.append(Example(source + [eos_id], target))
    return examples


def collate(examples: Sequence[Example], pad_id: int, eos_id: int, decoder_start_id: int) -> Batch:
    """Teacher forcing: the decoder reads [start] + y and is trained to emit y + [eos]."""
    rows = len(examples)
    source_width = max(len(e.source) for e in examples)
    target_width = max(len(e.target) for e in examples) + 1
    src = torch.full((rows, source_width), pad_id, dtype=torch.long)
    tgt_in = torch.full((rows, target_width), pad_id, dtype=torch.long)
    labels = torch.full((rows, target_width), pad_id, dtype=torch.long)
    for i, example in enumerate(examples):
        target = torch.tensor(example.target, dtype=torch.long)
        src[i, : len(example.source)] = torch.tensor(example.source, dtype=torch.long)
        tgt_in[i, 0] = decoder_start_id
        tgt_in[i, 1 : len(target) + 1] = target
        labels[i, : len(target)] = target
        labels[i, len(target)] = eos_id
    return Batch(src, tgt_in, labels, pad_id)


@dataclass
class LMBatch:
    inputs: Tensor  # (B, T) tokens[:-1], right-padded
    labels: Tensor  # (B, T) tokens[1:], right-padded; pad positions are ignored
    pad_id: int

    @property
    def rows(self) -> int:
        return self.inputs.shape[0]

    @property
    def target_tokens(self) -> int:
        return int((self.labels != self.pad_id).sum())

    @property
    def padded_tokens(self) -> int:
        return self.inputs.numel()

    def to(self, device: torch.device | str) -> LMBatch:
        return LMBatch(self.inputs.to(device), self.labels.to(device), self.pad_id)


def lm_sequences(
    documents: Iterable[Sequence[int]], eos_id: int, max_tokens: int, pack: bool = True
) -> list[list[int]]:
    """Token ids of documents (no eos) -> rows of [eos] doc [eos] (doc [eos] ...).

    EOS both ends and separates documents, so a model trained on these rows starts a text from
    EOS (as generation prompts do) and learns where one ends. A row holds at most `max_tokens`
    + 1 tokens, i.e. the model reads at most `max_tokens`. With `pack`, consecutive documents
    share a row while they fit (less padding, and context across verse boundaries); without it
    each document has a row of its own. A document too long for one row is cut into rows that
    overlap by one token, so every token is still predicted exactly once. Empty documents are
    dropped.
    """
    if max_tokens < 2:
        raise ValueError("max_tokens must be at least 2")
    limit = max_tokens + 1
    rows: list[list[int]] = []
    current: list[int] = []
    for document in documents:
        if not document:
            continue
        piece = [*document, eos_id]
        if pack and current and len(current) + len(piece) <= limit:
            current.extend(piece)
            continue
        if current:
            rows.append(current)
        current = [eos_id, *piece]
        if len(current) > limit:
            stride = limit - 1
            rows.extend(
                current[start : start + limit] for start in range(0, len(current) - 1, stride)
            )
            current = []
    if current:
        rows.append(current)
    return rows


def encode_texts(
    texts: Iterable[str], tokenizer: Encoder, eos_id: int, max_tokens: int, pack: bool = True
) -> list[LMExample]:
    """Tokenize monolingual text (in order: packing joins neighbours) into LM examples."""
    documents = (tokenizer.encode(text) for text in texts)
    return [LMExample(row) for row in lm_sequences(documents, eos_id, max_tokens, pack)]


def collate_lm(examples: Sequence[LMExample], pad_id: int) -> LMBatch:
    """Shift by one: inputs are tokens[:-1], labels tokens[1:], both right-padded."""
    width = max(e.width for e in examples)
    inputs = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), pad_id, dtype=torch.long)
    for i, example in enumerate(examples):
        tokens = torch.tensor(example.tokens, dtype=torch.long)
        inputs[i, : example.width] = tokens[:-1]
        labels[i, : example.width] = tokens[1:]
    return LMBatch(inputs, labels, pad_id)


def example_width(example: Example | LMExample) -> int:
    """Padded columns this example needs."""
    return example.width


def plan_token_batches(
    examples: Sequence[Example | LMExample],
    max_tokens: int,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Indices grouped by length, each group's `rows * widest` within `max_tokens`.

    With a generator, equal-length examples are ordered at random and the batches are shuffled,
    so every epoch brings different neighbours and a different order; without one the plan is
    deterministic (validation). An example wider than the budget gets a batch of its own.
    """
    count = len(examples)
    if generator is not None:
        tie_break = torch.randperm(count, generator=generator).tolist()
    else:
        tie_break = list(range(count))
    order = sorted(range(count), key=lambda i: (*examples[i].length_key, tie_break[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for index in order:
        width = examples[index].width
        if current and (len(current) + 1) * max(widest, width) > max_tokens:
            batches.append(current)
            current, widest = [], 0
        current.append(index)
        widest = max(widest, width)
    if current:
        batches.append(current)
    if generator is not None:
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in permutation]
    return batches


class BatchSampler:
    """Epoch-wise token-budget batches over a fixed list of examples.

    Translation examples are collated from the three special ids; any other kind of example
    brings its own `collate_fn` (examples -> batch).
    """

    def __init__(
        self,
        examples: Sequence[Example] | Sequence[LMExample],
        max_tokens: int,
        *,
        pad_id: int | None = None,
        eos_id: int | None = None,
        decoder_start_id: int | None = None,
        seed: int | None = None,
        collate_fn: Callable[[Sequence], Batch | LMBatch] | None = None,
    ):
        if not examples:
            raise ValueError("no examples to batch")
        if collate_fn is None and None in (pad_id, eos_id, decoder_start_id):
            raise ValueError("give pad_id, eos_id and decoder_start_id, or a collate_fn")
        self.examples = examples
        self.max_tokens = max_tokens
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.decoder_start_id = decoder_start_id
        self.seed = seed
        self.collate_fn = collate_fn

    def plan(self, epoch: int = 0) -> list[list[int]]:
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return plan_token_batches(self.examples, self.max_tokens, generator)

    def batches(self, epoch: int = 0, skip: int = 0) -> Iterator[Batch | LMBatch]:
        """The epoch's batches, after skipping the first `skip` (a resumed epoch)."""
        for indices in self.plan(epoch)[skip:]:
            yield self.collate(indices)

    def collate(self, indices: Sequence[int]) -> Batch | LMBatch:
        examples = [self.examples[i] for i in indices]
        if self.collate_fn is not None:
            return self.collate_fn(examples)
        return collate(examples, self.pad_id, self.eos_id, self.decoder_start_id)

    def __len__(self) -> int:
        return len(self.plan(0))

    @property
    def target_tokens(self) -> int:
        return sum(e.target_tokens for e in self.examples)
