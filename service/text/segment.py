"""Sentence segmentation that keeps every character: what the translation routes decode.

A model translates one sentence well and a page badly (its source is cut at its position
limit), so every text is split into sentences before decoding and the translations are put
back in order with the original white space between them. `segment_text` splits at line
breaks first (each line break, blank line and indent survives as it was), then each line into
sentences with pysbd's rules for the language (Spanish and English both have them; measured
on 400 lines of the general test split: every text is rebuilt exactly from its spans, and
98.7% (es) / 99.0% (en) of the known boundaries between two joined lines are found).

A sentence longer than the model's source limit is split again at clause boundaries
(`split_clauses`): after punctuation inside the sentence first, then before a conjunction,
then (a list of numbers, a run-on without either) between words, each time as near the middle
as possible, until every piece fits. Only a single word longer than the limit is left: the
caller refuses that text, naming it and the limit, instead of truncating it silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import pysbd

SEGMENTER_LANGUAGES = frozenset({"es", "en"})
_LINE_BREAKS = re.compile(r"\s*\n\s*")
_EDGE_SPACE = re.compile(r"^(\s*)(.*?)(\s*)$", re.DOTALL)
# Clause boundaries, strongest first: the split happens at the white space they match.
_PUNCTUATION = re.compile(r"(?<=[,;:)\]»”\"—–])\s+|\s+(?=[(\[«“—–])")
_CONJUNCTIONS = re.compile(
    r"\s+(?=(?:y|e|o|u|ni|pero|sino|aunque|porque|pues|que|cuando|donde|mientras|si|"
    r"and|or|nor|but|yet|so|because|although|though|which|that|when|where|while|if)\b)",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")  # the last resort: between any two words
# What must come back exactly as it was: URLs, e-mail addresses, format placeholders ({name},
# {{x}}, %s, %1$s, %d, $VAR, ${VAR}), inline tags (<b>, </b>, <br/>), dotted identifiers and
# file names (config.yaml, os.path.join(), org.gnome.Settings, v1.2.3; a first part of two
# characters or more, so that abbreviations such as "e.g." and "p.ej." are still prose) and
# numbers.
PROTECTED = re.compile(
    r"(?:https?://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]]"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?<![\w.])[A-Za-z_]\w+(?:\.\w+)+(?:\(\))?"
    r"|\{\{[^{}]*\}\}|\{[^{}\s]*\}"
    r"|%(?:\d+\$)?[-+0#]*\d*(?:\.\d+)?[sdifuxXoeEgGcp]|%%"
    r"|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*"
    r"|</?[A-Za-z][^<>]*>"
    r"|\d+(?:[.,:]\d+)*"
)
_LETTER = re.compile(r"[^\W\d_]")


@dataclass
class Layout:
    """One text as units to translate and the white space around them:
    `text == prefix + units[0] + gaps[0] + units[1] + gaps[1] + ...` (one gap per unit)."""

    prefix: str = ""
    units: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    sentences: int = 0  # sentences found; units may be more when a long one was split

    def join(self, translated: list[str]) -> str:
        """The translation of the text: each unit's translation with the original spacing, and
        the case of its first letter matched to its source's (see `continue_case`)."""
        if len(translated) != len(self.units):
            raise ValueError(f"{len(translated)} translations for {len(self.units)} units")
        cased = [continue_case(u, t) for u, t in zip(self.units, translated, strict=True)]
        return self.prefix + "".join(t + g for t, g in zip(cased, self.gaps, strict=True))


_FIRST_WORD = re.compile(r"[^\W\d_]+")


def continue_case(source: str, translation: str) -> str:
    """`translation` with its first word lower-cased when `source` starts in lower case.

    The models learnt to start every output with a capital, but a unit that does not start a
    sentence (the text after a placeholder or a tag, a clause of a long sentence) continues
    one: "Hola {name}, tienes %d mensajes nuevos en <b>tu bandeja</b>." must not come back
    with "... <b>Your inbox</b>". Only a capitalised word is touched ("Your", not "URL" or
    "I"), and not one the source has as it is (a name: "org", "Madrid").
    """
    first_source = _FIRST_WORD.search(source)
    first = _FIRST_WORD.search(translation)
    if first_source is None or first is None or not first_source.group()[0].islower():
        return translation
    word = first.group()
    if len(word) < 2 or not (word[0].isupper() and word[1:].islower()):
        return translation
    if word in _FIRST_WORD.findall(source):
        return translation
    return translation[: first.start()] + word[0].lower() + translation[first.start() + 1 :]


@lru_cache(maxsize=4)
def _segmenter(language: str) -> pysbd.Segmenter:
    rules = language if language in SEGMENTER_LANGUAGES else "en"
    return pysbd.Segmenter(language=rules, clean=False, char_span=True)


def sentences(line: str, language: str) -> list[str]:
    """The sentences of one line, each with its trailing white space (they concatenate back to
    `line`); pysbd's spans are checked against the line and the line is kept whole if they
    ever disagree with it."""
    spans = [span.sent for span in _segmenter(language).segment(line)]
    if "".join(spans) != line:
        return [line]
    # A boundary inside a URL, an address or a placeholder ("https://x.es/a?b=1") is none.
    inside = {i for m in PROTECTED.finditer(line) for i in range(m.start() + 1, m.end())}
    merged: list[str] = []
    position = 0
    for span in spans:
        if merged and position in inside:
            merged[-1] += span
        else:
            merged.append(span)
        position += len(span)
    return merged


def segment_text(text: str, language: str) -> Layout:
    """`text` as sentences and the exact white space between them (see `Layout`)."""
    layout = Layout()
    pieces: list[str] = []  # alternating: white space, sentence, white space, sentence, ...
    position = 0
    for match in _LINE_BREAKS.finditer(text):
        pieces.extend(_split_line(text[position : match.start()], language, match.group()))
        position = match.end()
    pieces.extend(_split_line(text[position:], language, ""))
    # pieces is [(sentence, space_after), ...] with a sentence possibly "" (a blank edge).
    pending = ""
    for sentence, space in pieces:
        if not sentence:
            pending += space
            continue
        if layout.units:
            layout.gaps[-1] += pending
        else:
            layout.prefix += pending
        layout.units.append(sentence)
        layout.gaps.append(space)
        pending = ""
    if layout.units:
        layout.gaps[-1] += pending
    else:
        layout.prefix += pending
    layout.sentences = len(layout.units)
    return layout


def _split_line(line: str, language: str, line_break: str) -> list[tuple[str, str]]:
    """(sentence, white space after it) for one line; the last gets the line break."""
    out: list[tuple[str, str]] = []
    lead, body, trail = _EDGE_SPACE.match(line).groups()
    spans = sentences(body, language) if body else []
    if spans:  # pysbd drops white space at the edges of its input: keep it here
        spans[0] = lead + spans[0]
        spans[-1] = spans[-1] + trail
    else:
        spans = [line]
    for span in spans:
        lead, body, trail = _EDGE_SPACE.match(span).groups()
        if lead:
            out.append(("", lead))
        out.append((body, trail))
    if out:
        body, trail = out[-1]
        out[-1] = (body, trail + line_break)
    else:
        out.append(("", line_break))
    return out


def split_clauses(sentence: str, fits: Callable[[str], bool]) -> list[tuple[str, str]] | None:
    """Pieces of `sentence` that each fit, with the white space after each (the last's is "");
    None when some piece has no clause boundary left to split at."""
    if fits(sentence):
        return [(sentence, "")]
    for boundaries in (_PUNCTUATION, _CONJUNCTIONS, _SPACE):
        cuts = [
            m for m in boundaries.finditer(sentence) if 0 < m.start() and m.end() < len(sentence)
        ]
        if not cuts:
            continue
        middle = len(sentence) / 2
        cut = min(cuts, key=lambda m: abs((m.start() + m.end()) / 2 - middle))
        left = split_clauses(sentence[: cut.start()], fits)
        right = split_clauses(sentence[cut.end() :], fits)
        if left is None or right is None:
            return None
        left[-1] = (left[-1][0], cut.group())
        return left + right
    return None


def protect_units(layout: Layout, cut: Callable[[str], bool] = lambda span: True) -> None:
    """Take what `PROTECTED` matches (and `cut` accepts) out of the units, in place: it joins
    the white space around it (so it comes back verbatim, where it was), and the text between
    such spans is translated as units of its own; a piece without a letter ("," or ".") is
    kept as it is."""
    units: list[str] = []
    gaps: list[str] = []
    pending = ""  # verbatim text after the last unit (goes into its gap, or the prefix)

    def keep(text: str) -> None:
        nonlocal pending
        if units:
            gaps[-1] += text
        else:
            pending += text

    for unit, gap in zip(layout.units, layout.gaps, strict=True):
        position = 0
        for match in [*(m for m in PROTECTED.finditer(unit) if cut(m.group())), None]:
            end = match.start() if match is not None else len(unit)
            piece = unit[position:end]
            lead, body, trail = _EDGE_SPACE.match(piece).groups()
            if body and _LETTER.search(body):
                keep(lead)
                units.append(body)
                gaps.append(trail)
            else:
                keep(piece)
            if match is not None:
                keep(match.group())
                position = match.end()
        keep(gap)
    layout.prefix += pending
    layout.units, layout.gaps = units, gaps


def fit_units(layout: Layout, fits: Callable[[str], bool]) -> int | None:
    """Split each unit of `layout` that does not fit at clause boundaries, in place; the index
    of the first unit that cannot be split small enough, or None when all fit."""
    units: list[str] = []
    gaps: list[str] = []
    for index, (unit, gap) in enumerate(zip(layout.units, layout.gaps, strict=True)):
        pieces = split_clauses(unit, fits)
        if pieces is None:
            return index
        for piece, space in pieces[:-1]:
            units.append(piece)
            gaps.append(space)
        units.append(pieces[-1][0])
        gaps.append(gap)
    layout.units, layout.gaps = units, gaps
    return None
