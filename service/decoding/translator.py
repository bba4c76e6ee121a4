"""The model runner: text in, text out, for one loaded model.

It tokenizes, packs inputs into length-sorted batches under a token budget, runs the search,
and detokenizes. Serving and evaluation both go through it, so what is measured offline is
what is served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from service.decoding.batching import pad_batch, plan_batches
from service.decoding.search import DecodeOptions, Hypothesis, generate
from service.text.protocol import TextTokenizer


@dataclass(frozen=True)
class Alignment:
    source_tokens: list[str]  # source pieces, "</s>" last
    target_tokens: list[str]  # target pieces, "</s>" last when the hypothesis finished
    weights: list[list[float]]  # (target, source) attention rows, each summing to 1


@dataclass(frozen=True)
class Candidate:
    text: str
    score: float
    tokens: int
    finished: bool
    alignment: Alignment | None = None


@dataclass(frozen=True)
class Translation:
    """The n-best list for one input, best first, plus token counts for usage accounting."""

    candidates: list[Candidate]
    input_tokens: int

    @property
    def best(self) -> Candidate:
        return self.candidates[0]


@dataclass
class BatchStats:
    """What a `translate` call cost: filled in for metrics and for the benchmark."""

    batches: int = 0
    rows: int = 0
    padded_source_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class Translator:
    def __init__(
        self,
        model: nn.Module,
        tokenizer: TextTokenizer,
        *,
        max_batch_tokens: int = 8192,
        max_source_tokens: int = 256,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.max_source_tokens = max_source_tokens
        self._silent_ids: tuple[int, ...] | None = None

    @property
    def silent_ids(self) -> tuple[int, ...]:
        """Target ids that write no text on their own (SentencePiece's bare "▁", BOS): the
        search does not end a translation made of these alone, so a non-empty input never
        comes back as ""."""
        if self._silent_ids is None:
            self._silent_ids = silent_token_ids(self.tokenizer, self.model.config.vocab_size)
        return self._silent_ids

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        """Source ids with EOS, truncated to the model's limit (EOS kept).

        The one place a source gets its EOS: tokenizers never add it (`TextTokenizer`).
        """
        ids = self.tokenizer.encode(text)[: self.max_source_tokens - 1]
        return ids + [self.tokenizer.eos_id]

    def translate(
        self, texts: list[str], options: DecodeOptions, stats: BatchStats | None = None
    ) -> list[Translation]:
        started = time.perf_counter()
        sources = [self.encode(text) for text in texts]
        rows_per_input = max(options.beam_size, options.n_best if options.sampling else 1)
        results: list[Translation | None] = [None] * len(texts)
        for indices in plan_batches(
            [len(s) * rows_per_input for s in sources], self.max_batch_tokens
        ):
            batch = pad_batch([sources[i] for i in indices], self.tokenizer.pad_id, self.device)
            hypotheses = generate(self.model, batch, options, self.silent_ids)
            for index, nbest in zip(indices, hypotheses, strict=True):
                results[index] = self.translation(sources[index], nbest, options)
            if stats is not None:
                stats.batches += 1
                stats.rows += len(indices)
                stats.batch_sizes.append(len(indices))
                stats.padded_source_tokens += batch.numel()
                stats.generated_tokens += sum(len(n[0].tokens) + 1 for n in hypotheses)
        if stats is not None:
            stats.seconds += time.perf_counter() - started
        return results  # type: ignore[return-value]

    def translation(
        self, source: list[int], nbest: list[Hypothesis], options: DecodeOptions
    ) -> Translation:
        """The n-best hypotheses of `source` (ids from `encode`) as text, best first."""
        return Translation(
            [self._candidate(source, h, options) for h in nbest], input_tokens=len(source)
        )

    def _candidate(self, source: list[int], hyp: Hypothesis, options: DecodeOptions) -> Candidate:
        alignment = None
        if options.return_alignment and hyp.alignment is not None:
            target_ids = hyp.tokens + ([self.tokenizer.eos_id] if hyp.finished else [])
            alignment = Alignment(
                source_tokens=self._pieces(source),
                target_tokens=self._pieces(target_ids),
                weights=hyp.alignment[: len(target_ids)].tolist(),
            )
        return Candidate(
            text=self.tokenizer.decode(hyp.tokens),
            score=hyp.score,
            tokens=len(hyp.tokens),
            finished=hyp.finished,
            alignment=alignment,
        )

    def _pieces(self, ids: list[int]) -> list[str]:
        eos = self.tokenizer.eos_id
        body = [i for i in ids if i != eos]
        return self.tokenizer.pieces(body) + ["</s>"] * (len(ids) - len(body))


def silent_token_ids(tokenizer: TextTokenizer, vocab_size: int) -> tuple[int, ...]:
    """The ids below `vocab_size` that decode to whitespace or nothing, padding and EOS aside
    (padding is never generated, EOS ends the text); ids the tokenizer lacks are not counted."""
    silent = []
    for token in range(vocab_size):
        if token in (tokenizer.pad_id, tokenizer.eos_id):
            continue
        try:
            text = tokenizer.decode([token])
        except (IndexError, KeyError, ValueError):
            continue
        if not text.strip():
            silent.append(token)
    return tuple(silent)
