"""Gettext catalogs -> clean English-Spanish pairs; package descriptions -> pairs."""

from __future__ import annotations

import polib
import pytest

from service.text.catalogs import (
    Message,
    catalog_pairs,
    clean_message,
    drop_reason,
    is_prose,
    looks_like_code,
    read_catalog,
    split_lines,
)
from service.text.descriptions import description_pairs, parse_index, read_descriptions


def write_mo(path, entries):
    catalog = polib.POFile()
    catalog.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Plural-Forms": "nplurals=2;"}
    for entry in entries:
        catalog.append(polib.POEntry(**entry))
    catalog.save_as_mofile(str(path))
    return path


@pytest.fixture
def catalog(tmp_path):
    return write_mo(
        tmp_path / "editor.mo",
        [
            {"msgid": "_Save", "msgstr": "_Guardar"},
            {"msgid": "Open", "msgctxt": "verb", "msgstr": "Abrir"},
            {
                "msgid": "%d file",
                "msgid_plural": "%d files",
                "msgstr_plural": {0: "%d archivo", 1: "%d archivos"},
            },
            {"msgid": "Untranslated", "msgstr": ""},
        ],
    )


def test_read_catalog_keeps_contexts_and_both_plural_forms_and_skips_untranslated(catalog):
    messages = set(read_catalog(catalog))  # a .mo file keeps its messages sorted by msgid

    assert messages == {
        Message("editor", None, "_Save", "_Guardar"),
        Message("editor", "verb", "Open", "Abrir"),
        Message("editor", None, "%d file", "%d archivo"),
        Message("editor", None, "%d files", "%d archivos"),
    }


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("_Save As…", "Save As…"),  # GNOME accelerator
        ("Save _As…", "Save As…"),
        ("&Open File", "Open File"),  # KDE accelerator
        ("Fish && Chips", "Fish & Chips"),  # KDE's literal ampersand
        ("~Format", "Format"),  # LibreOffice accelerator
        ("Archivo (_F)", "Archivo"),
        ("<b>Bold</b> text &amp; more", "Bold text & more"),
        ("<p>One.</p><p>Two.</p>", "One. Two."),
        ("  spaced \t out  ", "spaced out"),
        ("snake_case_name", "snake_case_name"),  # two underscores: not an accelerator
        ("e\u0301", "\u00e9"),  # NFC
    ],
)
def test_clean_message(raw, clean):
    assert clean_message(raw) == clean


@pytest.mark.parametrize(
    ("en", "es", "reason"),
    [
        ("Save the file", "Guardar el archivo", None),
        ("Hello %s, you have %d messages", "Hola %s, tiene %d mensajes", None),
        ("Copy %1$s to %2$s", "Copiar a %2$s desde %1$s", None),  # reordered: fine
        ("Hello {name}", "Hola {name}", None),
        ("%s", "%s", "no words"),
        ("Linux", "Linux", "untranslated"),
        ("Your names", "Ana López", "credits"),
        ("gtk_widget_show", "gtk_widget_show()", "code"),
        ("--verbose", "--detallado", "code"),
        ("Save %s", "Guardar", "placeholders differ"),
        ("set", "establecido en la configuración", "length ratio"),
        (" ".join(["word"] * 81), " ".join(["palabra"] * 81), "too long"),
        ("", "algo", "empty"),
    ],
)
def test_drop_reason(en, es, reason):
    assert drop_reason(en, es) == reason


def test_looks_like_code_spares_prose_with_punctuation():
    assert not looks_like_code("File saved.")
    assert looks_like_code("https://example.org/page")
    assert looks_like_code("readme.txt")
    assert looks_like_code("/usr/share/doc")


def test_split_lines_pairs_line_by_line_only_when_both_sides_break_alike():
    alike = Message("d", None, "First line.\nSecond line.", "Primera línea.\nSegunda línea.")
    unlike = Message("d", None, "One\ntwo", "Uno dos")

    assert [m.en for m in split_lines(alike)] == ["First line.", "Second line."]
    assert [m.es for m in split_lines(alike)] == ["Primera línea.", "Segunda línea."]
    assert [(m.en, m.es) for m in split_lines(unlike)] == [("One two", "Uno dos")]


def test_catalog_pairs_clean_before_judging(catalog):
    pairs = {(m.en, m.es, reason) for m, reason in catalog_pairs(read_catalog(catalog))}

    assert ("Save", "Guardar", None) in pairs


def test_is_prose_tells_sentences_from_labels():
    assert is_prose("You find a broken glass bottle on the floor.")
    assert not is_prose("Open File")
    assert not is_prose("you find a broken glass bottle on the floor.")
    assert not is_prose("You have %d new messages in your inbox.")


DESCRIPTIONS_EN = """Package: tool
Description-md5: 1111
Description-en: a small tool
 The tool does one thing well.
 .
 It is fast.
 .
 Features:
  * speed
  * size

Package: other
Description-md5: 2222
Description-en: another program
 Only in English.
"""

DESCRIPTIONS_ES = """Package: tool
Description-md5: 1111
Description-es: una pequeña herramienta
 La herramienta hace una cosa bien.
 .
 Es rápida.
 .
 Características:
  * velocidad
  * tamaño
"""


def test_descriptions_pair_summaries_and_paragraphs_and_skip_lists(tmp_path):
    (tmp_path / "en").write_text(DESCRIPTIONS_EN, encoding="utf-8")
    (tmp_path / "es").write_text(DESCRIPTIONS_ES, encoding="utf-8")
    english = read_descriptions([tmp_path / "en"], "en")
    spanish = read_descriptions([tmp_path / "es"], "es")

    assert list(description_pairs(english, spanish)) == [
        ("tool", "a small tool", "una pequeña herramienta"),
        ("tool", "The tool does one thing well.", "La herramienta hace una cosa bien."),
        ("tool", "It is fast.", "Es rápida."),
    ]


def test_parse_index_reads_every_record():
    records = list(parse_index(DESCRIPTIONS_EN, "en"))

    assert [(r.package, r.md5, r.summary) for r in records] == [
        ("tool", "1111", "a small tool"),
        ("other", "2222", "another program"),
    ]
