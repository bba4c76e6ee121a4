"""HTML in, HTML out: the text of a page translated, its markup kept.

Parsed with lxml's HTML parser (libxml2: fast, forgiving of the broken markup real pages have,
and it keeps comments, doctypes and the raw text of scripts and styles as they were). A page's
translatable text is cut into runs: the text of one block (`<p>`, `<li>`, `<td>`, `<title>`,
...) up to the next block inside it, with its inline elements (`<b>`, `<a>`, `<span>`, ...)
and atomic ones (`<code>`, `<br>`, `<img>`, comments, ...) written into it as markers such as
`<x\ue0000>...</x\ue0000>` and `<x\ue0001/>`. A marker is an inline tag to
`service.text.segment`, so each run is segmented into sentences like any text and its markers
are protected spans there (`protect_units`): they never reach the model, they stay verbatim
in the sentence, and the words between them are translated, so a tag comes back around the
translation of the words it held. (With `placeholders: sentinels` the sentence goes whole,
each marker a sentinel, `service.text.placeholders`, and the marker comes back where the model
put its sentinel.) `HtmlPage.render` puts the tree back together from the
translated runs: each marker becomes a copy of its element (attributes as they were; an atomic
element whole), in the order the translation has them. Line breaks inside a run are read as
the spaces HTML takes them for (a sentence wrapped over source lines is one sentence), so a
translated run comes back on one line; a run left unchanged keeps its lines.

What is never translated or changed: attributes, `<script>`, `<style>`, `<code>`, `<pre>`,
`<kbd>`, `<samp>`, `<var>`, `<textarea>`, `<svg>`, `<math>`, comments, the doctype, and every
character reference outside translated text (`&nbsp;`, `&eacute;`, `&lt;`: each is swapped for
a private-use character before parsing and back after serializing, so libxml2 never decodes
it; so are control characters, which libxml2 refuses). Inside translated text the model reads
the characters they stand for, and the translation is written as characters (`&`, `<` and `>`
escaped), except that a character the source only ever wrote as a reference is written as
that reference again (a `&nbsp;` stays `&nbsp;`). A run without a letter (white
space, numbers, a lone `&nbsp;`) is left as it was, and a page whose runs all come back
unchanged is returned byte for byte.

A marker the translation lost must not lose the user's text: an atomic element whose marker is
missing is put back at the end of its run (its block's text), an inline element whose opening
marker is missing is put back there empty (its words are in the translation, untagged), and
`Rendered.restored` counts both. Markers that come back unbalanced are closed at the end of
the run; duplicates and unknown markers are dropped. (The translation routes restore every
marker: a lost sentinel is put back by the alignment, or the sentence translated piecewise.)

A fragment in gives a fragment out (no `<html><body>` added); a document (a doctype, or an
`<html>`, `<head>` or `<body>` tag first) gives a document out; white space around the input
and an XML declaration are kept.
"""

from __future__ import annotations

import copy
import html as html_escapes
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import lxml.html
from lxml import etree

# Inline elements: a sentence runs through them.
INLINE = frozenset(
    "a abbr acronym b bdi bdo big cite data del dfn em font i ins label mark nobr q s small "
    "span strike strong sub sup time u".split()
)
# Kept whole, never translated: inside a sentence each is one atomic marker.
VERBATIM = frozenset(
    "script style code pre kbd samp var tt textarea template svg math iframe object".split()
)
VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
ATOMIC = VERBATIM | VOID

_CHAR_REF = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# What libxml2 cannot hold (control characters, lone surrogates): masked like references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MASKED = re.compile(f"{_CHAR_REF.pattern}|{_NOT_XML.pattern}")
_XML_DECLARATION = re.compile(r"<\?xml[^>]*\?>\s*")
_DOCUMENT = re.compile(
    r"(?:<!--.*?-->\s*)*<(?:!doctype|html|head|body)[\s>/]", re.IGNORECASE | re.DOTALL
)
_LETTER = re.compile(r"[^\W\d_]")
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n]\s*")
_PRIVATE_USE = (range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))


class HtmlError(ValueError):
    """The input cannot be read as HTML at all."""


@dataclass
class _Run:
    """One block's text up to the next block inside it: where its leading text lives
    (`slot`: the block's `.text`, or a preceding block child's `.tail`), the inline and atomic
    elements it holds at top level (`top`, consecutive children of `parent`), every element
    it holds by marker number (`members`), and the text with markers (`text`)."""

    parent: etree._Element
    slot: tuple[etree._Element, str]
    top: list[etree._Element] = field(default_factory=list)
    members: list[etree._Element] = field(default_factory=list)
    text: str = ""


@dataclass(frozen=True)
class Rendered:
    html: str
    restored: int  # elements whose markers the translation lost, put back at a run's end


def _free_characters(source: str, count: int) -> list[str]:
    """`count` private-use characters that `source` does not contain."""
    used = set(source)
    free: list[str] = []
    for block in _PRIVATE_USE:
        for point in block:
            if chr(point) not in used:
                free.append(chr(point))
                if len(free) == count:
                    return free
    raise HtmlError("too many distinct character references")


def _absent_token(source: str) -> str:
    """An ASCII word that `source` does not contain."""
    while True:
        token = "t" + secrets.token_hex(8)
        if token not in source:
            return token


def _is_atomic(element: etree._Element) -> bool:
    return not isinstance(element.tag, str) or element.tag.lower() in ATOMIC


def _flows(element: etree._Element) -> bool:
    """Whether `element` can sit inside a sentence: atomic, or inline with only such content."""
    if _is_atomic(element):
        return True
    return element.tag.lower() in INLINE and all(_flows(child) for child in element)


class _Parsed:
    """One parse of the masked source and its runs (rendering mutates the tree, so each
    render parses anew)."""

    def __init__(self, page: HtmlPage):
        self.page = page
        parser = lxml.html.HTMLParser(default_doctype=False, remove_comments=False)
        try:
            if page.document:
                self.root = lxml.html.document_fromstring(page.masked, parser=parser)
            else:
                self.root = lxml.html.fragment_fromstring(
                    page.masked, create_parent="div", parser=parser
                )
        except (etree.ParserError, ValueError) as error:
            raise HtmlError(f"not readable as HTML: {error}") from None
        self.runs: list[_Run] = []
        self._collect(self.root)
        for run in self.runs:  # outside <pre> a line break is a space: keep sentences whole
            run.text = _LINE_BREAKS.sub(" ", run.text)

    def _collect(self, block: etree._Element) -> None:
        run = _Run(block, (block, "text"), text=self.page.decode(block.text))
        for child in block:
            if _flows(child):
                run.top.append(child)
                run.text += self._flatten(child, run) + self.page.decode(child.tail)
                continue
            self.runs.append(run)
            self._collect(child)
            run = _Run(block, (child, "tail"), text=self.page.decode(child.tail))
        self.runs.append(run)

    def _flatten(self, element: etree._Element, run: _Run) -> str:
        number = len(run.members)
        run.members.append(element)
        mark = self.page.mark
        if _is_atomic(element):
            return f"<x{mark}{number}/>"
        inner = self.page.decode(element.text)
        for child in element:
            inner += self._flatten(child, run) + self.page.decode(child.tail)
        return f"<x{mark}{number}>{inner}</x{mark}{number}>"

    def serialize(self) -> str:
        """The tree as HTML, every attribute value exactly as in the source: libxml2 would
        percent-escape the values of `href`, `src` and `action`, so each value is written as
        a token and put back in after."""
        values: dict[str, str] = {}
        for element in self.root.iter():
            for name, value in element.attrib.items():
                if not value:
                    continue
                token = f"{self.page.token}{len(values)}z"
                values[token] = value
                element.attrib[name] = token
        if self.page.document:
            out = etree.tostring(self.root.getroottree(), method="html", encoding="unicode")
        else:
            out = lxml.html.tostring(self.root, encoding="unicode")
            out = out[len("<div>") : -len("</div>")]
        if values:
            pattern = re.compile(rf"{self.page.token}\d+z")
            out = pattern.sub(lambda m: values[m.group()].replace('"', "&quot;"), out)
        return out


def _append_text(element: etree._Element, text: str, page: HtmlPage) -> None:
    """Append translated text, masked as `HtmlPage.remask` says."""
    text = page.remask(text)
    if not text:
        return
    if len(element):
        last = element[-1]
        last.tail = (last.tail or "") + text
    else:
        element.text = (element.text or "") + text


class HtmlPage:
    """An HTML text as runs to translate (`texts`) and the way back (`render`)."""

    def __init__(self, source: str):
        self.source = source
        body = source.strip()
        start = len(source) - len(source.lstrip())
        self.lead, self.trail = source[:start], source[start + len(body) :]
        declaration = _XML_DECLARATION.match(body)
        self.declaration = declaration.group() if declaration else ""
        body = body[len(self.declaration) :]
        self.document = bool(_DOCUMENT.match(body))
        references = sorted(set(_MASKED.findall(body)))
        *masks, self.mark = _free_characters(source, len(references) + 1)
        self.references = dict(zip(masks, references, strict=True))
        self._decoded = str.maketrans(
            {mask: html_escapes.unescape(ref) for mask, ref in self.references.items()}
        )
        masking = dict(zip(references, masks, strict=True))
        self.masked = _MASKED.sub(lambda m: masking[m.group()], body)
        # A character the source only ever wrote as a reference (`&nbsp;`, `&copy;`) is
        # written as that reference in translated text too; so is one libxml2 cannot hold.
        self._remask = {ref: mask for ref, mask in masking.items() if len(ref) == 1}
        for ref, mask in masking.items():
            value = html_escapes.unescape(ref)
            if len(value) == 1 and value not in self.masked:
                self._remask.setdefault(value, mask)
        self._remasked = re.compile(
            "|".join([_NOT_XML.pattern, *(re.escape(c) for c in self._remask)])
        )
        self.token = _absent_token(source)
        self._marker = re.compile(rf"<(/?)x{re.escape(self.mark)}(\d+)(/?)>")
        if not self.masked.strip():
            raise HtmlError("no HTML to translate")
        parsed = _Parsed(self)
        self._translatable = [i for i, run in enumerate(parsed.runs) if self._has_letters(run)]
        self.texts = [parsed.runs[i].text for i in self._translatable]

    def remask(self, text: str) -> str:
        """Translated text as it goes into the tree: see `_remask`; a character libxml2 cannot
        hold that is not in the source was made up by the translation and is dropped."""
        return self._remasked.sub(lambda m: self._remask.get(m.group(), ""), text)

    def decode(self, text: str | None) -> str:
        return (text or "").translate(self._decoded)

    def _has_letters(self, run: _Run) -> bool:
        return bool(_LETTER.search(self._marker.sub("", run.text)))

    @property
    def plain_text(self) -> str:
        """The translatable text without markup (what language detection reads)."""
        return " ".join(self._marker.sub(" ", text) for text in self.texts)

    def render(self, translations: Sequence[str]) -> Rendered:
        """The page with `translations[i]` in place of `texts[i]`."""
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(translations)} translations for {len(self.texts)} runs")
        if list(translations) == self.texts:
            return Rendered(self.source, 0)
        parsed = _Parsed(self)
        restored = 0
        for index, translation in zip(self._translatable, translations, strict=True):
            run = parsed.runs[index]
            if translation != run.text:
                restored += self._apply(run, translation)
        out = parsed.serialize()
        for mask, reference in self.references.items():
            out = out.replace(mask, reference)
        return Rendered(self.lead + self.declaration + out + self.trail, restored)

    def _apply(self, run: _Run, translation: str) -> int:
        """Replace `run`'s content in the tree by `translation`; how many elements had to be
        restored at its end."""
        holder = run.parent.makeelement("div", {})
        stack: list[tuple[etree._Element, int]] = [(holder, -1)]
        placed: set[int] = set()
        position = 0
        for match in self._marker.finditer(translation):
            _append_text(stack[-1][0], translation[position : match.start()], self)
            position = match.end()
            closing, number = match.group(1) == "/", int(match.group(2))
            if number >= len(run.members):
                continue
            element = run.members[number]
            if closing:
                if any(n == number for _, n in stack):
                    while stack[-1][1] != number:
                        stack.pop()
                    stack.pop()
                continue
            if number in placed:
                continue
            placed.add(number)
            if _is_atomic(element):
                whole = copy.deepcopy(element)
                whole.tail = None
                stack[-1][0].append(whole)
            else:
                shell = element.makeelement(element.tag, element.attrib)
                stack[-1][0].append(shell)
                stack.append((shell, number))
        _append_text(stack[-1][0], translation[position:], self)
        restored = 0
        for number, element in enumerate(run.members):
            if number in placed:
                continue
            restored += 1
            if _is_atomic(element):
                lost = copy.deepcopy(element)
                lost.tail = None
            else:
                lost = element.makeelement(element.tag, element.attrib)
            holder.append(lost)

        owner, attribute = run.slot
        setattr(owner, attribute, holder.text)
        parent = run.parent
        if run.top:
            index = parent.index(run.top[0])
            for element in run.top:
                parent.remove(element)
        else:
            index = 0 if attribute == "text" else parent.index(owner) + 1
        for offset, element in enumerate(list(holder)):
            parent.insert(index + offset, element)
        return restored


def translate_html(source: str, translate) -> Rendered:
    """`source` with each run replaced by `translate(list_of_runs) -> list_of_translations`
    (the whole list at once, so a caller can batch it)."""
    page = HtmlPage(source)
    return page.render(translate(page.texts) if page.texts else [])
