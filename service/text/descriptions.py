"""English-Spanish pairs from Debian's package description translations (DDTP).

Each ``Translation-<lang>`` index holds, per package, the description in that language keyed
by the MD5 of the English original, so the two indexes pair exactly. A description is a
one-line summary and paragraphs of prose (separated by a line holding " ."), which is the kind
of explanatory text that UI catalogs are short of. Summaries pair with summaries and paragraphs
with paragraphs when both sides have the same number; bulleted lists are skipped, since their
line breaks rarely survive translation one to one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_SPACE = re.compile(r"\s+")
_BULLET = re.compile(r"^\s*[-*+o•]\s")


@dataclass(frozen=True)
class Description:
    package: str
    md5: str
    summary: str
    paragraphs: tuple[str, ...]


def parse_index(text: str, lang: str) -> Iterator[Description]:
    """The records of one decompressed ``Translation-<lang>`` index."""
    field = f"Description-{lang}:"
    for record in text.split("\n\n"):
        package = md5 = None
        body: list[str] = []
        in_description = False
        for line in record.split("\n"):
            if line.startswith("Package:"):
                package = line.split(":", 1)[1].strip()
            elif line.startswith("Description-md5:"):
                md5 = line.split(":", 1)[1].strip()
            elif line.startswith(field):
                in_description = True
                body.append(line[len(field) :].strip())
            elif in_description and line.startswith(" "):
                body.append(line[1:])
            else:
                in_description = False
        if package and md5 and body:
            yield Description(package, md5, body[0], tuple(_paragraphs(body[1:])))


def _paragraphs(lines: list[str]) -> Iterator[str]:
    block: list[str] = []
    for line in [*lines, "."]:
        if line.strip() == ".":
            if block and not any(_BULLET.match(item) or item.startswith(" ") for item in block):
                yield _SPACE.sub(" ", " ".join(block)).strip()
            elif block:
                yield ""  # a list: keeps the paragraph count, never paired
            block = []
        else:
            block.append(line)


def read_descriptions(paths: Iterable[Path], lang: str) -> dict[tuple[str, str], Description]:
    found: dict[tuple[str, str], Description] = {}
    for path in paths:
        for description in parse_index(Path(path).read_text(encoding="utf-8"), lang):
            found.setdefault((description.package, description.md5), description)
    return found


def description_pairs(
    english: dict[tuple[str, str], Description], spanish: dict[tuple[str, str], Description]
) -> Iterator[tuple[str, str, str]]:
    """(package, en, es) for the summary and each paired paragraph, in index order."""
    for key, es in spanish.items():
        en = english.get(key)
        if en is None:
            continue
        yield key[0], en.summary, es.summary
        if len(en.paragraphs) == len(es.paragraphs):
            for en_text, es_text in zip(en.paragraphs, es.paragraphs, strict=True):
                if en_text and es_text:
                    yield key[0], en_text, es_text
