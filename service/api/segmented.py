"""Texts in, sentences to the replicas, texts out: what every translation route decodes.

The ingress splits each text into sentences (`service.text.segment`), splits a sentence longer
than the model's source limit at clause boundaries, and sends all of them as the items of one
`TranslationJob`: a page fills decode batches with sentence-sized rows instead of one row the
model would truncate. `SegmentedResult` puts each text's translations back together with the
original white space (line breaks, blank lines, indents). URLs, e-mail addresses, format
placeholders, inline tags and numbers come back exactly as they were, one of two ways
(`ApiSettings.placeholders`). `pieces`, the default: they never reach the model
(`protect_units`), they stay in place, verbatim, and the text between them is translated as
separate pieces. `sentinels`: each sentence goes whole (cut at its numbers), its spans masked
as sentinels (`service.text.placeholders`) and restored after; a sentinel the model lost is
put back where the attention puts it, and when that cannot be done the sentence falls back to
`pieces`. Each unit's `PlaceholderOutcome` says which happened. With the shipped models
`pieces` measured the better chrF (docs/benchmarks.md, placeholders), hence the default.

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
from service.text.placeholders import Masked, MaskedLayout, Restored, repair, restore
from service.text.segment import Layout, fit_units, protect_units, segment_text


@dataclass(frozen=True)
class PlaceholderOutcome:
    """How a unit's protected spans came back: `kept` (the model returned every sentinel
    once), `repaired` (one it dropped was put back by the alignment, `inserted`, or extra
    copies were removed, `removed`), or `fallback` (translated piecewise)."""

    status: str
    inserted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextOutcome:
    """One input text: its layout and the outcome of each of its units, in order; per unit,
    how its protected spans came back (None: it had none)."""

    layout: Layout
    items: list[ItemOutcome]
    placeholders: tuple[PlaceholderOutcome | None, ...] = ()

    @property
    def sources(self) -> list[str]:
        """The units as the user wrote them (a masked unit with its spans back)."""
        if isinstance(self.layout, MaskedLayout):
            return self.layout.originals
        return list(self.layout.units)

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
        stuck = None
        if index in unchanged:
            pass
        elif settings.placeholders == "sentinels":
            layout = MaskedLayout.of(layout)
            stuck = layout.fit(fits)
        else:
            protect_units(layout)
            stuck = fit_units(layout, fits)
        if stuck is not None:
            unit = (
                layout.masks[stuck].original
                if isinstance(layout, MaskedLayout)
                else layout.units[stuck]
            )
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


def verbatim_outcome(text: str) -> ItemOutcome:
    """A unit that comes back as it was, decoded by no model (no tokens, score 0:
    probability 1, no alignment)."""
    return ItemOutcome(Translation([Candidate(text, 0.0, 0, True)], 0), 0.0, 0.0, 0)


def unchanged_outcome(layout: Layout) -> TextOutcome:
    """A text already in the target language: each unit comes back as it was."""
    return TextOutcome(layout, [verbatim_outcome(unit) for unit in layout.units])


async def _decode(
    backends: Backends,
    model: ServedModel,
    options: DecodeOptions,
    units: list[str],
    request_id: str,
) -> tuple[list[ItemOutcome], JobResult | None]:
    """Each unit's outcome, from the cache where it has one, the rest in one job (None when
    nothing had to be decoded)."""
    cache = backends.cache
    cached = cache.lookup(model, options, units) if cache is not None else [None] * len(units)
    missing = [unit for unit, hit in zip(units, cached, strict=True) if hit is None]
    decoded = None
    if missing:
        decoded = await backends.translation.translate(
            model, TranslationJob(missing, options, request_id)
        )
        if len(decoded.items) != len(missing):
            raise DecodeFailed(f"{len(decoded.items)} results for {len(missing)} sentences")
        if cache is not None:
            cache.store(model, options, missing, decoded.items)
    fresh = iter(decoded.items if decoded is not None else [])
    merged = [
        next(fresh)
        if hit is None
        else replace(hit, queue_s=0.0, compute_s=0.0, batch_size=0, batch_id=0, cached=True)
        for hit in cached
    ]
    return merged, decoded


def _restored_candidate(masked: Masked, candidate: Candidate) -> tuple[Candidate, Restored] | None:
    """`candidate` with its sentinels swapped back (and repaired by its alignment when it
    lost one); None when a lost one cannot be put back (no alignment, or an unreadable one)."""
    restored = restore(masked, candidate.text)
    if restored.missing:
        alignment = candidate.alignment
        if alignment is None:
            return None
        restored = repair(
            masked,
            restored,
            candidate.text,
            alignment.source_tokens,
            alignment.target_tokens,
            alignment.weights,
        )
        if restored is None:
            return None
    return replace(candidate, text=restored.text), restored


def _restored_item(
    masked: Masked, item: ItemOutcome, keep_alignment: bool
) -> tuple[ItemOutcome, PlaceholderOutcome] | None:
    """The item with every candidate restored (see `_restored_candidate`), or None."""
    candidates = []
    best: Restored | None = None
    for candidate in item.translation.candidates:
        done = _restored_candidate(masked, candidate)
        if done is None:
            return None
        fixed, restored = done
        candidates.append(fixed if keep_alignment else replace(fixed, alignment=None))
        best = best or restored
    status = "repaired" if best.inserted or best.removed else "kept"
    outcome = PlaceholderOutcome(status, best.inserted, best.removed)
    translation = replace(item.translation, candidates=candidates)
    return replace(item, translation=translation), outcome


def _joined(layout: Layout, items: list[ItemOutcome], original: str, like: ItemOutcome):
    """One outcome for a sentence decoded piecewise: per rank, its pieces' hypotheses joined
    in the layout (no alignment: attention never spanned the pieces)."""
    if not items:  # nothing with a letter between the spans: the sentence as it was
        return verbatim_outcome(original)
    outcome = TextOutcome(layout, items)
    candidates = [
        Candidate(
            outcome.text(rank),
            outcome.score(rank),
            sum(c.tokens for c in outcome.candidate(rank)),
            all(c.finished for c in outcome.candidate(rank)),
        )
        for rank in range(outcome.n_best)
    ]
    return replace(
        like,
        translation=Translation(candidates, outcome.input_tokens),
        cached=all(item.cached for item in items),
    )


async def _placeholders_back(
    backends: Backends,
    model: ServedModel,
    options: DecodeOptions,
    request_id: str,
    masks: list[Masked],
    items: list[ItemOutcome],
) -> tuple[list[ItemOutcome], list[PlaceholderOutcome | None], list[JobResult]]:
    """Each masked unit's outcome with its spans restored. A unit that lost a sentinel is
    repaired by its alignment (decoded again with `return_alignment` when the request did not
    ask for one: beam search gives the same hypotheses), and one that still cannot be
    repaired is translated piecewise (`protect_units`), the scheme that cannot lose a span."""
    out: list[ItemOutcome] = list(items)
    status: list[PlaceholderOutcome | None] = [None] * len(items)
    jobs: list[JobResult] = []
    again: list[int] = []
    for index, (masked, item) in enumerate(zip(masks, items, strict=True)):
        if not masked.spans or item.translation is None:
            continue
        done = _restored_item(masked, item, options.return_alignment)
        if done is None:
            again.append(index)
        else:
            out[index], status[index] = done
    fallback: list[int] = []
    if again and not options.return_alignment:
        aligned = replace(options, return_alignment=True)
        redone, job = await _decode(
            backends, model, aligned, [masks[i].text for i in again], request_id
        )
        jobs += [job] if job is not None else []
        for index, item in zip(again, redone, strict=True):
            done = None if item.translation is None else _restored_item(masks[index], item, False)
            if done is None:
                fallback.append(index)
            else:
                out[index], status[index] = done
    else:
        fallback = again
    if fallback:
        layouts = []
        for index in fallback:
            original = masks[index].original
            layout = Layout(units=[original], gaps=[""], sentences=1)
            protect_units(layout)
            layouts.append(layout)
        pieces = [unit for layout in layouts for unit in layout.units]
        decoded, job = await _decode(backends, model, options, pieces, request_id)
        jobs += [job] if job is not None else []
        offset = 0
        for index, layout in zip(fallback, layouts, strict=True):
            own = decoded[offset : offset + len(layout.units)]
            offset += len(layout.units)
            if any(item.error is not None or item.translation is None for item in own):
                bad = next(
                    item for item in own if item.error is not None or item.translation is None
                )
                out[index] = bad
                continue
            out[index] = _joined(layout, list(own), masks[index].original, items[index])
            status[index] = PlaceholderOutcome("fallback")
    return out, status, jobs


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
    they are), placeholders put back (`_placeholders_back`); each unit that failed fails the
    request, naming its text."""
    sent = [i for i in range(len(layouts)) if i not in unchanged]
    units = [unit for i in sent for unit in layouts[i].units]
    masks = [
        mask
        for i in sent
        for mask in (
            layouts[i].masks
            if isinstance(layouts[i], MaskedLayout)
            else [Masked(u, ()) for u in layouts[i].units]
        )
    ]
    words = [i for i, masked in enumerate(masks) if masked.has_words]
    decoded_items, decoded = await _decode(
        backends, model, options, [units[i] for i in words], request_id
    )
    restored, restored_status, extra = await _placeholders_back(
        backends, model, options, request_id, [masks[i] for i in words], decoded_items
    )
    merged = [verbatim_outcome(masked.original) for masked in masks]
    status: list[PlaceholderOutcome | None] = [None] * len(masks)
    for index, item, state in zip(words, restored, restored_status, strict=True):
        merged[index], status[index] = item, state
    if decoded is None:  # nothing to decode (all cached, or nothing to translate): no job at all
        decoded = extra[0] if extra else JobResult([], model.id, model.version, 0.0)
    result = replace(
        decoded,
        items=merged,
        wall_s=decoded.wall_s + sum(job.wall_s for job in extra if job is not decoded),
    )
    texts = []
    offset = 0
    for index, layout in enumerate(layouts):
        if index in unchanged:
            texts.append(unchanged_outcome(layout))
            continue
        items = result.items[offset : offset + len(layout.units)]
        placeholders = tuple(status[offset : offset + len(layout.units)])
        offset += len(layout.units)
        for item in items:
            if item.error is not None or item.translation is None:
                name = field if single else f"{field}[{owner[index] if owner else index}]"
                raise DecodeFailed(
                    f"{name} could not be translated: {item.error or 'no result'}", field=name
                )
        texts.append(TextOutcome(layout, list(items), placeholders))
    return SegmentedResult(result, texts)
