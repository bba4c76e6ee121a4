"""Placeholders and inline tags masked for the model, and put back exactly after it.

A sentence such as "Hola {name}, tienes %d mensajes nuevos en <b>tu bandeja</b>." reaches the
model whole, so the words between its spans are translated in context; each span that
`PROTECTED` matches is replaced by a sentinel first (`mask`) and the sentinels are swapped back
for the exact original spans after decoding (`restore`). The sentinels are forms the training
corpus's UI strings keep verbatim on both sides (`%s` some 80,000 times, `%d` 17,000, `%1$s`
and `{0}` about 1,200 each; `{0}`, `{1}`, ... are single SentencePiece pieces), so printf
placeholders and numbers go to the model as they are (`keep`) and every other span (`{name}`,
`$VAR`, a tag, a URL, an address, a dotted identifier: forms the model would rewrite) as a
numbered `{k}` (or `%k$s`: `form`). A sentence is first cut at its numbers (`MaskedLayout.of`),
which the models copy worst.

Measured in docs/benchmarks.md (placeholders): on the `ui` test lines with placeholders the
shipped models return every sentinel exactly in 79-88% of the sentences, but the chrF of what
comes back is 0.4-0.8 below that of translating the words between the spans as separate
pieces, so the routes use this only with `placeholders: sentinels` (service/api/settings.py).

A sentinel the model dropped is inserted where the cross-attention puts it: at the target
token that attends most to the sentinel's source pieces (`repair`); extra copies of one are
removed. When the alignment cannot be read against the text (a piece the tokenizer rewrote),
`repair` gives up and the caller translates the sentence piecewise instead.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from service.text.segment import PROTECTED, Layout, protect_units, split_clauses

# Printf placeholders and numbers: the corpus has them verbatim, so they are their own sentinel.
_KEPT = re.compile(r"%(?:\d+\$)?[-+0#]*\d*(?:\.\d+)?[sdifuxXoeEgGcp]|%%|\d+(?:[.,:]\d+)*")
_NUMBERED = re.compile(r"\{\d+\}|%\d+\$s")
# The numbered sentinel forms: "{0}", "{1}", ... or "%1$s", "%2$s", ... (see `mask`).
SENTINEL_FORMS = {"braces": ("{{{}}}", 0), "printf": ("%{}$s", 1)}
_LETTER = re.compile(r"[^\W\d_]")
NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_END_PUNCTUATION = re.compile(r"[\s.!?:;…]*$")


@dataclass(frozen=True)
class MaskedSpan:
    sentinel: str  # what the model reads (the span itself when it is kept)
    original: str  # what the translation gets back
    start: int  # the sentinel's characters in the masked text
    end: int


@dataclass(frozen=True)
class Masked:
    text: str  # the sentence with each protected span replaced by its sentinel
    spans: tuple[MaskedSpan, ...]

    @property
    def has_words(self) -> bool:
        """Whether a letter stands outside the spans (a text without one is not decoded)."""
        return _LETTER.search(self.outside) is not None

    @property
    def outside(self) -> str:
        """The text without its sentinels."""
        out: list[str] = []
        position = 0
        for span in self.spans:
            out.append(self.text[position : span.start])
            position = span.end
        return "".join(out) + self.text[position:]

    @property
    def original(self) -> str:
        """The text as it was before masking."""
        out: list[str] = []
        position = 0
        for span in self.spans:
            out.append(self.text[position : span.start] + span.original)
            position = span.end
        return "".join(out) + self.text[position:]

    def within(self, start: int, end: int) -> Masked:
        """The part `text[start:end]` (a clause of a long sentence) with its own spans."""
        spans = tuple(
            MaskedSpan(s.sentinel, s.original, s.start - start, s.end - start)
            for s in self.spans
            if start <= s.start and s.end <= end
        )
        return Masked(self.text[start:end], spans)


@dataclass(frozen=True)
class Restored:
    text: str
    inserted: tuple[str, ...] = ()  # original spans put back by the alignment
    removed: tuple[str, ...] = ()  # original spans whose extra copies were removed
    missing: tuple[MaskedSpan, ...] = ()  # lost and not put back (no usable alignment)


@dataclass
class MaskedLayout(Layout):
    """A `Layout` whose units are masked sentences: `units[i] == masks[i].text`."""

    masks: list[Masked] = field(default_factory=list)

    @classmethod
    def of(
        cls, layout: Layout, *, cut_numbers: bool = True, keep: bool = True, form: str = "braces"
    ) -> MaskedLayout:
        """`layout` masked, in place of it; `cut_numbers`: a sentence is first cut at its
        numbers (`protect_units`), which the models copy worst (see the module docstring)."""
        if cut_numbers:
            protect_units(layout, lambda span: NUMBER.fullmatch(span) is not None)
        masks = [mask(unit, keep=keep, form=form) for unit in layout.units]
        return cls(
            layout.prefix, [m.text for m in masks], list(layout.gaps), layout.sentences, masks
        )

    @property
    def originals(self) -> list[str]:
        return [m.original for m in self.masks]

    def fit(self, fits: Callable[[str], bool]) -> int | None:
        """`fit_units` for masked units (each clause keeps the spans inside it; a sentinel
        holds no white space, so no clause boundary cuts one): the index of the first unit
        that cannot be split small enough, or None when all fit."""
        units: list[str] = []
        gaps: list[str] = []
        masks: list[Masked] = []
        for index, (masked, gap) in enumerate(zip(self.masks, self.gaps, strict=True)):
            pieces = split_clauses(masked.text, fits)
            if pieces is None:
                return index
            position = 0
            for number, (piece, space) in enumerate(pieces):
                units.append(piece)
                gaps.append(space if number < len(pieces) - 1 else gap)
                masks.append(masked.within(position, position + len(piece)))
                position += len(piece) + len(space)
        self.units, self.gaps, self.masks = units, gaps, masks
        return None


def mask(sentence: str, *, keep: bool = True, form: str = "braces") -> Masked:
    """`sentence` with every protected span replaced by a sentinel. `keep`: printf
    placeholders and numbers are their own sentinel; otherwise every span is kept as it is
    (the `keep=False` form is measured, not served: see the module docstring)."""
    pattern, counter = SENTINEL_FORMS[form]
    taken = set(_NUMBERED.findall(sentence))
    pieces: list[str] = []
    spans: list[MaskedSpan] = []
    position = 0
    length = 0
    for match in PROTECTED.finditer(sentence):
        original = match.group()
        if keep and _KEPT.fullmatch(original) is None and _NUMBERED.fullmatch(original) is None:
            while pattern.format(counter) in taken:
                counter += 1
            sentinel = pattern.format(counter)
            counter += 1
        else:
            sentinel = original
        between = sentence[position : match.start()]
        pieces.append(between)
        length += len(between)
        spans.append(MaskedSpan(sentinel, original, length, length + len(sentinel)))
        pieces.append(sentinel)
        length += len(sentinel)
        position = match.end()
    pieces.append(sentence[position:])
    return Masked("".join(pieces), tuple(spans))


def found_sentinels(masked: Masked, translation: str) -> list[tuple[int, int, str]]:
    """(start, end, sentinel) of each of `masked`'s sentinels in `translation`, in order."""
    wanted = {s.sentinel for s in masked.spans}
    return [
        (m.start(), m.end(), m.group())
        for m in PROTECTED.finditer(translation)
        if m.group() in wanted
    ]


def kept_exactly(masked: Masked, translation: str) -> bool:
    """Whether the model returned exactly the multiset of sentinels it was given."""
    found = Counter(sentinel for _, _, sentinel in found_sentinels(masked, translation))
    return found == Counter(s.sentinel for s in masked.spans)


def restore(masked: Masked, translation: str) -> Restored:
    """`translation` with each sentinel turned back into its original span (the first copies
    in order of appearance), extra copies removed, and the spans that did not come back listed
    in `missing` (see `repair`)."""
    pending: dict[str, list[MaskedSpan]] = {}
    for span in masked.spans:
        pending.setdefault(span.sentinel, []).append(span)
    out: list[str] = []
    removed: list[str] = []
    position = 0
    for start, end, sentinel in found_sentinels(masked, translation):
        out.append(translation[position:start])
        queue = pending[sentinel]
        if queue:
            out.append(queue.pop(0).original)
        else:
            removed.append(next(s.original for s in masked.spans if s.sentinel == sentinel))
            if out[-1].endswith(" "):  # the copy goes with the space before it
                out[-1] = out[-1].rstrip(" ")
            elif translation[end : end + 1] == " ":  # or with the one after it
                end += 1
        position = end
    out.append(translation[position:])
    missing = tuple(span for queue in pending.values() for span in queue)
    return Restored("".join(out), removed=tuple(removed), missing=missing)


def piece_offsets(pieces: Sequence[str], text: str) -> list[tuple[int, int]] | None:
    """The characters of `text` each SentencePiece piece covers (`▁` is a space; "</s>" covers
    nothing at the end); None when the pieces do not spell `text` (normalisation, unknowns)."""
    offsets: list[tuple[int, int]] = []
    position = 0
    for piece in pieces:
        if piece == "</s>":
            offsets.append((len(text), len(text)))
            continue
        body = piece.replace("▁", "")
        while position < len(text) and text[position].isspace() and body[:1] != text[position]:
            position += 1
        start = position
        if text[position : position + len(body)] != body:
            return None
        position += len(body)
        offsets.append((start, position))
    return offsets if text[position:].strip() == "" else None


def repair(
    masked: Masked,
    restored: Restored,
    raw: str,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    weights: Sequence[Sequence[float]],
) -> Restored | None:
    """`restored` (from `restore(masked, raw)`) with each missing span inserted before the
    word of the target token that attends most to the span's source pieces; None when the
    alignment cannot be read against the texts. Shapes: `weights` (target, source), one row
    per target piece over the source pieces (EOS included on both sides)."""
    if not restored.missing:
        return restored
    source = piece_offsets(source_tokens, masked.text)
    target = piece_offsets(target_tokens, raw)
    if source is None or target is None or len(weights) != len(target_tokens):
        return None
    insertions: list[tuple[int, str]] = []  # (character of `raw`, original span)
    for span in restored.missing:
        columns = [i for i, (s, e) in enumerate(source) if s < span.end and span.start < e]
        if not columns:
            return None
        mass = [sum(row[c] for c in columns) for row in weights]
        best = max(range(len(mass)), key=mass.__getitem__)
        if target_tokens[best] == "</s>":  # after the last word, before the full stop
            at = len(raw) - len(_END_PUNCTUATION.search(raw).group())
        else:
            at = target[best][0]
            while 0 < at < len(raw) and not raw[at - 1].isspace():
                at -= 1  # to the start of the word
        insertions.append((at, span.original))
    text = _insert(raw, masked, insertions)
    return Restored(
        text,
        inserted=tuple(original for _, original in insertions),
        removed=restored.removed,
    )


def _insert(raw: str, masked: Masked, insertions: list[tuple[int, str]]) -> str:
    """`raw` with the spans inserted at their characters (a space kept on either side where
    the word needs one), then restored: insertion happens on the model's text, whose offsets
    the alignment speaks of, and the sentinels in it are swapped back after."""
    marks = {}
    out = raw
    for index, (at, original) in enumerate(sorted(insertions, key=lambda x: -x[0])):
        mark = f"\ue000{index}\ue001"
        marks[mark] = original
        before = " " if at > 0 and not out[at - 1].isspace() else ""
        after = " " if at < len(out) and out[at].isalnum() else ""
        out = out[:at] + before + mark + after + out[at:]
    text = restore(masked, out).text
    for mark, original in marks.items():
        text = text.replace(mark, original)
    return text
