"""`format: html` on the translation routes: a request's texts as the pieces that are segmented.

A plain text is one piece, itself. An HTML text (`service.text.html`) is as many pieces as it
has runs of translatable text (one per block, inline tags inside as protected markers), so a
page's runs go into the same job as every other sentence of the request, and
`Pieces.assemble` turns the pieces' outcomes back into one outcome per text: an HTML text's
translation is its page rendered with its runs translated. Its `sentences` and `segments` are
those of all its runs; its score weighs all their units alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.api.errors import ApiError
from service.api.segmented import SegmentedResult, TextOutcome
from service.text.html import HtmlError, HtmlPage
from service.text.segment import Layout


@dataclass(frozen=True)
class HtmlOutcome(TextOutcome):
    """An HTML text: the outcomes of its runs, rendered into its page."""

    page: HtmlPage | None = None
    runs: tuple[TextOutcome, ...] = ()

    def text(self, rank: int = 0) -> str:
        return self.page.render([run.text(rank) for run in self.runs]).html


@dataclass(frozen=True)
class Pieces:
    texts: list[str]  # what is segmented: plain texts as they are, each HTML text's runs
    owner: list[int]  # piece -> index of the request's text it comes from
    pages: dict[int, HtmlPage]  # text index -> its page, for HTML texts
    count: int  # texts in the request

    @classmethod
    def of(cls, texts: Sequence[str], html: bool, field: str = "text") -> Pieces:
        """The pieces of `texts`; with `html`, a 422 for a text that is not readable HTML."""
        if not html:
            return cls(list(texts), list(range(len(texts))), {}, len(texts))
        pieces: list[str] = []
        owner: list[int] = []
        pages: dict[int, HtmlPage] = {}
        for index, text in enumerate(texts):
            try:
                page = HtmlPage(text)
            except HtmlError as error:
                name = f"{field}[{index}]" if len(texts) > 1 else field
                raise ApiError(422, "validation_error", f"{name}: {error}", field=name) from None
            pages[index] = page
            pieces.extend(page.texts)
            owner.extend([index] * len(page.texts))
        return cls(pieces, owner, pages, len(texts))

    def readable(self, texts: Sequence[str]) -> list[str]:
        """Per text, what language detection reads: an HTML text's words without markup."""
        return [
            self.pages[i].plain_text if i in self.pages else text for i, text in enumerate(texts)
        ]

    def of_texts(self, indices: frozenset[int] | set[int]) -> frozenset[int]:
        """The pieces of these texts."""
        return frozenset(p for p, owner in enumerate(self.owner) if owner in indices)

    def assemble(self, outcomes: Sequence[TextOutcome]) -> list[TextOutcome]:
        """One outcome per text from one per piece."""
        if not self.pages:
            return list(outcomes)
        per_text: list[list[TextOutcome]] = [[] for _ in range(self.count)]
        for owner, outcome in zip(self.owner, outcomes, strict=True):
            per_text[owner].append(outcome)
        assembled: list[TextOutcome] = []
        for index, runs in enumerate(per_text):
            page = self.pages.get(index)
            if page is None:
                assembled.append(runs[0])
                continue
            units = [unit for run in runs for unit in run.sources]
            layout = Layout(
                units=units,
                gaps=[""] * len(units),
                sentences=sum(run.layout.sentences for run in runs),
            )
            items = [item for run in runs for item in run.items]
            placeholders = tuple(
                p for run in runs for p in run.placeholders or [None] * len(run.items)
            )
            assembled.append(HtmlOutcome(layout, items, placeholders, page=page, runs=tuple(runs)))
        return assembled

    def assemble_result(self, segmented: SegmentedResult) -> SegmentedResult:
        return SegmentedResult(segmented.result, self.assemble(segmented.texts))
