"""Texts in, sentences to the replicas, texts out: what every translation route decodes.

The ingress splits each text into sentences (`service.text.segment`), splits a sentence longer
than the model's source limit at clause boundaries, and sends all of them as the items of one
`TranslationJob`: a page fills decode batches with sentence-sized rows instead of one row the
model would truncate. `SegmentedResult` puts each text's translations back together with the
original white space (line breaks, blank lines, indents). URLs, e-mail addresses, format
placeholders, inline tags and numbers never reach the model (`protect_units`): they stay in
place, verbatim, and the text around them is translated.

Scores and alignments, per text: a text's `score` is the mean of its units' scores weighted
by their output tokens (each unit's score is a length-normalised log-probability, so this is
the per-token log-probability of the whole translation); its alignment is per unit (one
matrix per sentence or clause, in `segments`), since attention never spans two decode items.
The k-th alternative of a text joins each unit's k-th hypothesis (its last when it has fewer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from service.api.backends import Backends
from service.api.errors import ApiError
from service.api.settings import ApiSettings
from service.contracts import (
    DecodeFailed,
    ItemOutcome,
    JobResult,
    ServedModel,
    TranslationJob,
)
from service.decoding.search import DecodeOptions
from service.decoding.translator import Candidate, Translation
from service.text.segment import Layout, fit_units, protect_units, segment_text


@dataclass(frozen=True)
class TextOutcome:
    """One input text: its layout and the outcome of each of its units, in order."""

    layout: Layout
    items: list[ItemOutcome]

    def candidate(self, rank: int) -> list[Candidate]:
        """The rank-th hypothesis of each unit (a unit's last if it has fewer)."""
        return [
            item.translation.candidates[min(rank, len(item.translation.candidates) - 1)]
            for item in self.items
        ]

    def text(self, rank: int = 0) -> str:
        return self.layout.join([c.text for c in self.candidate(rank)])

    def score(self, rank: int = 0) -> float:
        """Output-token-weighted mean of the units' scores (see the module docstring)."""
        candidates = self.candidate(rank)
        weights = [max(1, c.tokens) for c in candidates]
        if not weights:  # nothing was decoded (only numbers, placeholders, tags): kept as is
            return 0.0
        return sum(c.score * w for c, w in zip(candidates, weights, strict=True)) / sum(weights)

    @property
    def n_best(self) -> int:
        return max((len(item.translation.candidates) for item in self.items), default=1)

    @property
    def input_tokens(self) -> int:
        return sum(item.translation.input_tokens for item in self.items)

    @property
    def output_tokens(self) -> int:
        return sum(c.tokens for c in self.candidate(0))


@dataclass(frozen=True)
class SegmentedResult:
    result: JobResult  # one item per unit, all texts' units in order
    texts: list[TextOutcome]


def source_fits(backends: Backends, model: ServedModel):
    """Whether a piece of text fits `model`'s source limit (EOS included)."""
    limit = model.max_source_tokens
    if limit is None:
        return lambda text: True
    if backends.tokens is None:
        return lambda text: len(text.encode("utf-8")) + 1 <= limit
    return lambda text: backends.tokens.source_tokens(model, text) + 1 <= limit


def layouts_for(
    settings: ApiSettings,
    backends: Backends,
    model: ServedModel,
    texts: list[str],
    *,
    field: str = "text",
    single: bool = False,
    unchanged: frozenset[int] = frozenset(),
    owner: Sequence[int] | None = None,
) -> list[Layout]:
    """Each text as units that fit `model`, or a 422 naming the text that cannot be split
    small enough, or a request with more units than `settings.max_sentences`. `owner[i]`:
    the index errors name for text i (the request's text an HTML run comes from)."""
    total = sum(len(text) for text in texts)
    if total > settings.max_request_chars:
        raise ApiError(
            422,
            "validation_error",
            f"{field}: {total} characters in all; at most {settings.max_request_chars} per request",
            field=field,
        )
    fits = source_fits(backends, model)
    layouts = []
    for index, text in enumerate(texts):
        name = field if single else f"{field}[{owner[index] if owner else index}]"
        layout = segment_text(text, model.source)
        if index not in unchanged:
            protect_units(layout)
        stuck = None if index in unchanged else fit_units(layout, fits)
        if stuck is not None:
            unit = layout.units[stuck]
            shown = unit if len(unit) <= 80 else unit[:77] + "..."
            raise ApiError(
                422,
                "validation_error",
                f"{name}: the sentence {shown!r} is longer than model {model.id}'s source limit "
                f"of {model.max_source_tokens} tokens and holds a word that alone does not fit; "
                "split it, or send shorter words",
                field=name,
            )
        layouts.append(layout)
    units = sum(len(layout.units) for i, layout in enumerate(layouts) if i not in unchanged)
    if units > settings.max_sentences:
        raise ApiError(
            422,
            "validation_error",
            f"{field}: {units} sentences in all; at most {settings.max_sentences} per request",
            field=field,
        )
    return layouts


def unchanged_outcome(layout: Layout) -> TextOutcome:
    """A text already in the target language: each unit comes back as it was, decoded by no
    model (no tokens, score 0: probability 1, no alignment)."""
    items = [
        ItemOutcome(Translation([Candidate(unit, 0.0, 0, True)], 0), 0.0, 0.0, 0)
        for unit in layout.units
    ]
    return TextOutcome(layout, items)


async def translate_segmented(
    backends: Backends,
    model: ServedModel,
    layouts: list[Layout],
    options: DecodeOptions,
    request_id: str,
    *,
    field: str = "text",
    single: bool = False,
    unchanged: frozenset[int] = frozenset(),
    owner: Sequence[int] | None = None,
) -> SegmentedResult:
    """One job of every text's units (but those of the `unchanged` texts, which come back as
    they are); each unit that failed fails the request, naming its text."""
    sent = [i for i in range(len(layouts)) if i not in unchanged]
    units = [unit for i in sent for unit in layouts[i].units]
    cache = backends.cache
    cached = cache.lookup(model, options, units) if cache is not None else [None] * len(units)
    missing = [unit for unit, hit in zip(units, cached, strict=True) if hit is None]
    if missing:
        decoded = await backends.translation.translate(
            model, TranslationJob(missing, options, request_id)
        )
        if len(decoded.items) != len(missing):
            raise DecodeFailed(f"{len(decoded.items)} results for {len(missing)} sentences")
        if cache is not None:
            cache.store(model, options, missing, decoded.items)
    else:  # nothing to decode (all cached, or nothing to translate): no job at all
        decoded = JobResult([], model.id, model.version, 0.0)
    fresh = iter(decoded.items)
    merged = [
        next(fresh)
        if hit is None
        else replace(hit, queue_s=0.0, compute_s=0.0, batch_size=0, batch_id=0, cached=True)
        for hit in cached
    ]
    result = replace(decoded, items=merged)
    texts = []
    offset = 0
    for index, layout in enumerate(layouts):
        if index in unchanged:
            texts.append(unchanged_outcome(layout))
            continue
        items = result.items[offset : offset + len(layout.units)]
        offset += len(layout.units)
        for item in items:
            if item.error is not None or item.translation is None:
                name = field if single else f"{field}[{owner[index] if owner else index}]"
                raise DecodeFailed(
                    f"{name} could not be translated: {item.error or 'no result'}", field=name
                )
        texts.append(TextOutcome(layout, list(items)))
    return SegmentedResult(result, texts)
