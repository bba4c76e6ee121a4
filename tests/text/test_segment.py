"""Sentence segmentation keeps every character, and long sentences split at clause boundaries."""

from __future__ import annotations

import pytest

from service.text.segment import (
    continue_case,
    fit_units,
    protect_units,
    segment_text,
    split_clauses,
)

TEXTS = [
    "Primera línea.\nSegunda línea.\n\nTercer párrafo.",
    "  Hola. ¿Qué tal?  Bien.  \n",
    "Title without a stop\n\n   indented line. Another one!\r\n",
    "The Lord is my shepherd. I shall not want.",
    "one\n\n\n",
    "\n\nx",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("language", ["es", "en", "fr"])
def test_layout_rebuilds_the_text_exactly(text, language):
    layout = segment_text(text, language)
    assert layout.join(layout.units) == text
    assert all(unit and unit == unit.strip() for unit in layout.units)
    assert layout.sentences == len(layout.units)


def test_lines_and_sentences_become_units_with_their_white_space():
    layout = segment_text("Primera línea.\nSegunda línea.\n\nTercer párrafo.", "es")
    assert layout.units == ["Primera línea.", "Segunda línea.", "Tercer párrafo."]
    assert layout.gaps == ["\n", "\n\n", ""]
    layout = segment_text("  Hola. ¿Qué tal?  Bien.", "es")
    assert (layout.prefix, layout.units, layout.gaps) == (
        "  ",
        ["Hola.", "¿Qué tal?", "Bien."],
        [" ", "  ", ""],
    )
    assert layout.join(["A", "B", "C"]) == "  A B  C"


def test_english_abbreviations_do_not_split():
    assert segment_text("Mr. Smith arrived at 3 p.m. today. He left.", "en").units == [
        "Mr. Smith arrived at 3 p.m. today.",
        "He left.",
    ]


def test_split_clauses_prefers_punctuation_then_conjunctions():
    def short(text):
        return len(text) <= 20

    pieces = split_clauses("Uno dos tres, cuatro cinco seis y siete ocho nueve.", short)
    assert pieces == [
        ("Uno dos tres,", " "),
        ("cuatro cinco seis", " "),
        ("y siete ocho nueve.", ""),
    ]
    assert split_clauses("short", short) == [("short", "")]
    assert split_clauses("averyveryverylongwordwithoutanyboundary", short) is None


def test_fit_units_splits_in_place_and_keeps_the_layout():
    text = "Corta.\nUno dos tres, cuatro cinco seis y siete ocho nueve.\n"
    layout = segment_text(text, "es")
    assert fit_units(layout, lambda unit: len(unit) <= 20) is None
    assert layout.sentences == 2 and len(layout.units) == 4
    assert layout.join(layout.units) == text
    stuck = segment_text("Bien.\nPalabrademasiadolargaparacaber.", "es")
    assert fit_units(stuck, lambda unit: len(unit) <= 20) == 1


@pytest.mark.parametrize(
    ("text", "units"),
    [
        (
            "Hola {name}, tienes %d mensajes nuevos en <b>tu bandeja</b>.",
            ["Hola", ", tienes", "mensajes nuevos en", "tu bandeja"],
        ),
        (
            "Visita https://example.com/a?b=1. Escribe a ana@x.es o usa $HOME y %1$s.",
            ["Visita", "Escribe a", "o usa", "y"],
        ),
        ("{{count}} archivos en ${DIR}", ["archivos en"]),
        ("1234 5678", []),
        ("El 50% de 3,5 kg.", ["El", "% de", "kg."]),
    ],
)
def test_placeholders_urls_tags_and_numbers_stay_verbatim(text, units):
    layout = segment_text(text, "es")
    protect_units(layout)
    assert layout.units == units
    assert layout.join(layout.units) == text
    translated = layout.join([unit.upper() for unit in layout.units])
    for kept in ("{name}", "%d", "<b>", "</b>", "https://example.com/a?b=1", "ana@x.es", "$HOME"):
        assert (kept in text) == (kept in translated)


@pytest.mark.parametrize(
    ("text", "language", "kept", "units"),
    [
        ("Abra config.yaml y guarde.", "es", "config.yaml", ["Abra", "y guarde."]),
        (
            "Use os.path.join() para unir rutas.",
            "es",
            "os.path.join()",
            ["Use", "para unir rutas."],
        ),
        ("Ejecute org.gnome.Settings desde el menú.", "es", "org.gnome.Settings", None),
        ("Open config.yaml. Then call os.path.join on it.", "en", "os.path.join", None),
        ("Vea el archivo README.md.", "es", "README.md", ["Vea el archivo"]),
        ("Es la versión v1.2.3 del programa.", "es", "v1.2.3", ["Es la versión", "del programa."]),
    ],
)
def test_dotted_identifiers_and_file_names_stay_verbatim(text, language, kept, units):
    layout = segment_text(text, language)
    protect_units(layout)
    assert all(kept not in unit for unit in layout.units)
    if units is not None:
        assert layout.units == units
    assert kept in layout.join([unit.upper() for unit in layout.units])
    assert layout.join(layout.units) == text


@pytest.mark.parametrize(
    "text", ["Por ejemplo, e.g. esto.", "Mr. Smith lives in the U.S.A. today.", "p.ej. esto"]
)
def test_abbreviations_are_still_prose(text):
    layout = segment_text(text, "en")
    protect_units(layout)
    assert "".join(layout.units).replace(" ", "") == text.replace(" ", "")


@pytest.mark.parametrize(
    ("source", "translation", "expected"),
    [
        ("tu bandeja", "Your inbox", "your inbox"),  # after a tag: the sentence goes on
        ("archivos copiados.", "Files copied.", "files copied."),  # after a number
        ("Tu bandeja", "Your inbox", "Your inbox"),  # starts a sentence
        ("y luego", "I then", "I then"),  # "I" is not a capitalised word
        ("y luego", "URL then", "URL then"),  # nor is an acronym
        ("desde org.gnome.Settings", "From Settings", "from Settings"),
        ("ver Madrid", "Madrid see", "Madrid see"),  # a name the source has as it is
        ("¿qué tal?", "¿How are you?", "¿how are you?"),
        ("1234", "1234", "1234"),
    ],
)
def test_a_unit_that_continues_a_sentence_keeps_its_lower_case(source, translation, expected):
    assert continue_case(source, translation) == expected


def test_placeholders_and_tags_inside_a_sentence_read_as_one_sentence():
    layout = segment_text("Hola {name}, tienes %d mensajes nuevos en <b>tu bandeja</b>.", "es")
    protect_units(layout)
    english = {
        "Hola": "Hello",
        ", tienes": ", You have",
        "mensajes nuevos en": "New messages in",
        "tu bandeja": "Your inbox",
    }
    assert (
        layout.join([english[unit] for unit in layout.units])
        == "Hello {name}, you have %d new messages in <b>your inbox</b>."
    )
