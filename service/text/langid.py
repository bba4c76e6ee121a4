"""Which served language a text is in, and whether it is in none of them: `source: auto`.

lingua (rule-free n-gram models, good on short text) decides among the served languages only,
which is what routing needs; measured on the held-out test splits with Spanish and English:
general 99.85% (es) / 100% (en), ui 98.45% / 97.05% (2,000 lines each; ui strings are often a
word or two). A second detector that also knows a few common languages the service does not
translate tells a French or German text from a served one, so it is refused naming what it is
instead of being translated as if it were Spanish. It refuses only when it is sure
(`REFUSE_AT`): at 0.7 it refused 0-5 of the same 2,000-line splits (0.25% at most), at 0.5 up
to 47.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

# Languages the service does not translate but should recognise, to name them when refused.
OTHERS = ("fr", "de", "it", "pt", "ca", "nl", "ru", "zh", "ja", "ar")
REFUSE_AT = 0.7


def lingua_language(code: str) -> Language | None:
    try:
        return Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
    except (ValueError, KeyError):
        return None


def code_of(language: Language) -> str:
    return language.iso_code_639_1.name.lower()


@dataclass(frozen=True)
class Detection:
    # The served language it is in; None when it is in another (`detected`) or in none at all
    # (no letters, `detected` None too).
    language: str | None
    confidence: float  # 0-1, of `language` (or of `detected` when language is None)
    detected: str | None = None  # what it is instead, when it is in no served language
    candidates: tuple[tuple[str, float], ...] = ()  # served languages, most likely first

    @property
    def detected_name(self) -> str:
        language = lingua_language(self.detected or "")
        return language.name.title() if language is not None else "an unknown language"


class Detector:
    """Detection among `served` language codes (the ones lingua knows); built on first use."""

    def __init__(self, served: Iterable[str]):
        languages = {code: lingua_language(code) for code in served}
        self.served = {code: lang for code, lang in languages.items() if lang is not None}
        self.unknown = sorted(code for code, lang in languages.items() if lang is None)

    @cached_property
    def _served(self) -> LanguageDetector | None:
        if len(self.served) < 2:
            return None
        return LanguageDetectorBuilder.from_languages(*self.served.values()).build()

    @cached_property
    def _wide(self) -> LanguageDetector:
        others = [lingua_language(code) for code in OTHERS if code not in self.served]
        languages = {*self.served.values(), *(lang for lang in others if lang is not None)}
        return LanguageDetectorBuilder.from_languages(*languages).build()

    def warm(self) -> None:
        """Build the detectors and load lingua's models now: the first detection otherwise
        takes seconds (4 s on a busy 2-core machine, about 150 MB), in a user's request."""
        self.detect("The first detection loads every model.")

    def detect(self, text: str) -> Detection:
        wide = self._wide.compute_language_confidence_values(text)
        top = wide[0] if wide else None
        if top is not None and code_of(top.language) not in self.served:
            if top.value >= REFUSE_AT or not self.served:
                return Detection(None, top.value, code_of(top.language))
        if self._served is None:  # one served language: it is that one or it is refused
            [code] = self.served
            return Detection(code, 1.0, candidates=((code, 1.0),))
        values = self._served.compute_language_confidence_values(text)
        candidates = tuple((code_of(v.language), v.value) for v in values)
        language, confidence = candidates[0]
        if confidence <= 0:  # no letters to go by ("1234", "?"): not in any language
            return Detection(None, 0.0, candidates=candidates)
        return Detection(language, confidence, candidates=candidates)
