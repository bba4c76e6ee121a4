"""English-Spanish pairs from the gettext catalogs of Debian packages.

Every translated program ships a Spanish message catalog (``.mo``) that pairs each English
message (msgid) with its Spanish translation (msgstr), written by people for people. Across a
few thousand packages that is hundreds of thousands of everyday sentences and phrases: menus,
dialogs, error messages, help paragraphs and the narrative of games. It is the general-domain
text the Bible corpus lacks, and it is full of placeholders (``%s``, ``{name}``) that a
translator of UI strings must learn to copy.

Reading a catalog (`read_catalog`) keeps both plural forms and the message context, splits
multi-line messages line by line when both sides have the same lines, and drops the header.
Cleaning (`clean_message`, `keep_pair`) strips keyboard accelerators and markup, and drops what
would teach the model nothing or something wrong: untranslated or copied messages, strings that
are only placeholders, code, translator credits, very long messages and length outliers.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_WORDS = 80
MAX_LENGTH_RATIO = 3.0  # characters, either way round

# printf (%s, %1$s, %'d, %.2f, %-10s, %lu), Python ({name}, {0}, %(name)s), Qt (%1), templating
# ({{x}}) and shell ($VAR, ${VAR}) placeholders. They are copied through, never translated.
PLACEHOLDER = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.\d+)?(?:hh|h|ll|l|L|z|j|t|I64|I32)?[diouxXeEfFgGaAcspn%]"
    r"|%\([A-Za-z_][A-Za-z0-9_]*\)[-+ #0]*\d*(?:\.\d+)?[sdrfxXieg]"
    r"|%\d+"
    r"|\{\{[^{}]*\}\}"
    r"|\{[A-Za-z0-9_.:!\-]*\}"
    r"|\$\{?[A-Z][A-Z0-9_]*\}?"
)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>")
_BLOCK_TAG = re.compile(
    r"</?(?:p|br|div|li|ul|ol|h\d|qt|html|body|head|table|tr|td|title)\b[^>]*>", re.I
)
# GNOME writes accelerators as "_File", KDE as "&File" (and "&&" for a literal ampersand),
# LibreOffice as "~File". The letter after the mark stays.
_GNOME_ACCEL = re.compile(r"(?<![\w_])_(?=\w)|(?<=\w)_(?=\w)(?!\w*_)")
_KDE_ACCEL = re.compile(r"&(?=[^\W\d_])(?![A-Za-z]+;|#\d+;)")
_TILDE_ACCEL = re.compile(r"~(?=\w)")
# An accelerator in parentheses after a translation, as CJK-style catalogs and some Spanish
# ones write it: "Archivo (_F)".
_PAREN_ACCEL = re.compile(r"\s*\([_&~]\w\)")
_URL_OR_PATH = re.compile(r"^(?:[a-z]+://\S+|/[\w./-]+|[\w.-]+@[\w.-]+|[\w-]+\.[a-z]{2,4})$")
_CODE_HINT = re.compile(r"[_=;{}<>\\]|\(\)|->|::|\w\.\w+\(|^[a-z]+[A-Z]\w*$|^[A-Z0-9_]+$")
_LETTER = re.compile(r"[^\W\d_]")
_SPACE = re.compile(r"\s+")
# KDE and GNOME put translator credits in the catalog itself.
_CREDITS = frozenset(
    {
        "your names",
        "your emails",
        "translator-credits",
        "translator_credits",
        "name of translators",
        "email of translators",
        "translator credits",
    }
)


@dataclass(frozen=True)
class Message:
    """One msgid/msgstr pair of a catalog, before cleaning."""

    domain: str  # the catalog's name, e.g. "gedit"
    context: str | None
    en: str
    es: str


def read_catalog(path: Path, domain: str | None = None) -> Iterator[Message]:
    """Every translated message of one ``.mo`` file, plural forms as two messages.

    Spanish catalogs order plurals singular first, then plural; catalogs that declare three
    forms (some GNOME ones add a form for millions) keep the plural in the second slot.
    """
    import polib

    domain = domain or Path(path).stem
    for entry in polib.mofile(str(path)):
        if not entry.msgid:
            continue  # the header
        if entry.msgid_plural:
            forms = entry.msgstr_plural
            if forms.get(0):
                yield Message(domain, entry.msgctxt, entry.msgid, forms[0])
            if forms.get(1):
                yield Message(domain, entry.msgctxt, entry.msgid_plural, forms[1])
        elif entry.msgstr:
            yield Message(domain, entry.msgctxt, entry.msgid, entry.msgstr)


def split_lines(message: Message) -> list[Message]:
    """A multi-line message as one message per line when both sides break alike, else joined.

    Help texts and game dialogue are often several paragraphs in one message; lines paired one
    to one are shorter, better aligned units than the whole block.
    """
    en_lines = [line for line in message.en.split("\n") if line.strip()]
    es_lines = [line for line in message.es.split("\n") if line.strip()]
    if len(en_lines) > 1 and len(en_lines) == len(es_lines):
        return [
            Message(message.domain, message.context, en, es)
            for en, es in zip(en_lines, es_lines, strict=True)
        ]
    return [Message(message.domain, message.context, " ".join(en_lines), " ".join(es_lines))]


def clean_message(text: str) -> str:
    """Accelerators and markup out, entities unescaped, NFC, whitespace collapsed."""
    text = _BLOCK_TAG.sub(" ", text)
    text = _TAG.sub("", text)
    text = _PAREN_ACCEL.sub("", text)
    text = text.replace("&&", "\0")
    text = _KDE_ACCEL.sub("", text)
    text = text.replace("\0", "&")
    text = _TILDE_ACCEL.sub("", text)
    if text.count("_") == 1:
        text = _GNOME_ACCEL.sub("", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    return _SPACE.sub(" ", text).strip()


def _words(text: str) -> int:
    return len(text.split())


def looks_like_code(text: str) -> bool:
    """Identifiers, paths, URLs, command lines, format strings with no prose around them."""
    if _URL_OR_PATH.match(text):
        return True
    if " " not in text:
        return bool(_CODE_HINT.search(PLACEHOLDER.sub("", text))) or text.startswith("-")
    return text.startswith(("--", "$ ", "#!")) or text.count("=") > 1


def drop_reason(en: str, es: str) -> str | None:
    """Why a cleaned pair is not kept, or None to keep it."""
    if not en or not es:
        return "empty"
    if en.strip().lower() in _CREDITS:
        return "credits"
    if not _LETTER.search(PLACEHOLDER.sub("", en)):
        return "no words"
    if en == es:
        return "untranslated"
    if looks_like_code(en) or looks_like_code(es):
        return "code"
    if max(_words(en), _words(es)) > MAX_WORDS:
        return "too long"
    if max(len(en), len(es)) / max(1, min(len(en), len(es))) > MAX_LENGTH_RATIO:
        return "length ratio"
    if sorted(PLACEHOLDER.findall(en)) != sorted(PLACEHOLDER.findall(es)):
        # The translation lost, added or changed a placeholder: a pair that would teach the
        # model to drop one. (Reordering is fine: %1$s and %2$s may swap.)
        return "placeholders differ"
    if "\t" in en or "\t" in es:
        return "tab"
    return None


def catalog_pairs(messages: Iterable[Message]) -> Iterator[tuple[Message, str | None]]:
    """Each cleaned, line-split message with its drop reason (None: keep)."""
    for message in messages:
        for line in split_lines(message):
            en, es = clean_message(line.en), clean_message(line.es)
            yield Message(line.domain, line.context, en, es), drop_reason(en, es)


def is_prose(text: str) -> bool:
    """A sentence rather than a label: several words, starts like a sentence, ends like one.

    Used to draw the `general` test split (prose) apart from the `ui` one (labels, menu items,
    short messages) out of the held-out catalogs.
    """
    return (
        _words(text) >= 6
        and text[:1].isupper()
        and text.rstrip("\"'”»)").endswith((".", "!", "?", "…"))
        and not PLACEHOLDER.search(text)
    )
