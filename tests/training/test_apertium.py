"""The Apertium peer: it translates what it is given, line for line, and is scored exactly."""

from __future__ import annotations

import subprocess

import pytest
from sacrebleu.metrics import BLEU, CHRF

from service.training import apertium
from service.training.evaluate import orient

from .helpers import SimplePair

installed = pytest.mark.skipif(
    not apertium.available("es", "en") or not apertium.available("en", "es"),
    reason="Apertium is not installed (`make test` installs apertium apertium-eng-spa)",
)

PAIRS = [
    SimplePair("a", "Hola, mundo.", "Hello, world."),
    SimplePair("b", "Guarde el archivo antes de salir.", "Save the file before exiting."),
    SimplePair(
        "c",
        "La reunión se ha aplazado hasta el próximo lunes.",
        "The meeting has been postponed until next Monday.",
    ),
    SimplePair(
        "d",
        "En el principio creó Dios los cielos y la tierra.",
        "In the beginning, God created the heavens and the earth.",
    ),
    SimplePair("e", "la luz", "the light"),
]


def apertium_by_hand(lines: list[str], direction: str) -> list[str]:
    """Apertium run here without the peer module, for the expected values."""
    done = subprocess.run(
        ["apertium", "-u", direction],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.rstrip("\n").split("\n")


@installed
def test_known_translations_both_ways():
    assert apertium.translate_lines(["Hola, mundo."]).translations == ["Hello, world."]
    back = apertium.translate_lines(["Hello, world.", "The light"], "en", "es")
    assert back.translations == ["Hola, mundo.", "La luz"]
    assert back.direction == "eng-spa" and back.version.startswith("Apertium")


@installed
def test_the_peer_scores_what_apertium_says():
    expected = apertium_by_hand([p.source for p in PAIRS], "spa-eng")
    assert expected[0] == "Hello, world."  # final period kept: `-f line` would drop it
    references = [p.target for p in PAIRS]
    result = apertium.evaluate_apertium(PAIRS)
    assert result["hypotheses"] == expected
    assert result["bleu"] == round(BLEU().corpus_score(expected, [references]).score, 2)
    assert result["chrf"] == round(CHRF().corpus_score(expected, [references]).score, 2)
    assert result["bleu"] > 0 and result["chrf"] > 0
    assert result["empty"] == 0 and result["sentences"] == len(PAIRS)
    assert result["direction"] == "spa-eng" and result["bleu_signature"].startswith("nrefs:1|")


@installed
def test_an_en_es_model_is_scored_against_the_spanish_side():
    flipped = orient(PAIRS, "en", "es")
    assert [(p.key, p.source, p.target) for p in flipped[:1]] == [
        ("a", "Hello, world.", "Hola, mundo.")
    ]
    expected = apertium_by_hand([p.target for p in PAIRS], "eng-spa")
    result = apertium.evaluate_apertium(flipped, "en", "es")
    assert result["hypotheses"] == expected and result["direction"] == "eng-spa"
    spanish = [p.source for p in PAIRS]
    assert result["chrf"] == round(CHRF().corpus_score(expected, [spanish]).score, 2)


@installed
def test_lines_stay_aligned_whatever_they_hold():
    lines = [
        "Hola, mundo.",
        "",
        "El [gato] es ^negro$ / <b>sí</b> @casa *no {x} \\ fin.",
        "una línea\ncon un salto",  # would become two lines on the way through
        "   la luz   ",
        "Hola, mundo.",
    ]
    result = apertium.translate_lines(lines)
    assert len(result.translations) == len(lines)
    assert result.translations[0] == result.translations[5] == "Hello, world."
    assert result.translations[1] == ""
    assert "[cat]" in result.translations[2] and "black" in result.translations[2]
    # Case may follow the line before (Apertium reads one text): compare words, not case.
    assert result.translations[4].strip().lower() == "the light"
    assert apertium.translate_lines([]).translations == []


def fake_apertium(tmp_path, body: str) -> str:
    """An `apertium` stand-in: lists both directions, then runs `body` on stdin."""
    script = tmp_path / "apertium"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in -l) printf "eng-spa\\nspa-eng\\n"; exit 0;; '
        "-V) echo 'Apertium 0.0'; exit 0;; esac\n" + body + "\n"
    )
    script.chmod(0o755)
    return str(script)


def test_a_lost_line_is_an_error_not_a_shift(tmp_path):
    drops_the_second = fake_apertium(tmp_path, "sed 2d")
    with pytest.raises(apertium.ApertiumError, match="returned 2 lines for 3"):
        apertium.translate_lines(["a", "b", "c"], executable=drops_the_second)


def test_the_fake_peer_lines_up_when_nothing_is_lost(tmp_path):
    echo = fake_apertium(tmp_path, "cat")
    result = apertium.translate_lines(["a", "", "b\nc"], executable=echo)
    assert result.translations == ["a", "", "b c"] and result.version == "Apertium 0.0"


def test_a_failing_apertium_says_why(tmp_path):
    failing = fake_apertium(tmp_path, "echo 'no such mode' >&2; exit 3")
    with pytest.raises(apertium.ApertiumError, match="exited 3: no such mode"):
        apertium.translate_lines(["a"], executable=failing)


def test_missing_apertium_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-apertium")
    assert not apertium.available("es", "en", executable=missing)
    with pytest.raises(apertium.ApertiumNotInstalled, match="apt-get install apertium"):
        apertium.translate_lines(["Hola"], executable=missing)
    only_one_way = tmp_path / "apertium-spa-eng"
    only_one_way.write_text('#!/bin/sh\ncase "$1" in -l) echo spa-eng; exit 0;; esac\ncat\n')
    only_one_way.chmod(0o755)
    only_one_way = str(only_one_way)
    assert apertium.available("es", "en", executable=only_one_way)
    with pytest.raises(apertium.ApertiumNotInstalled, match="no eng-spa direction"):
        apertium.translate_lines(["Hello"], "en", "es", executable=only_one_way)


def test_directions_outside_the_pair_are_refused():
    assert apertium.direction_for("es", "en") == "spa-eng"
    with pytest.raises(ValueError, match="fr->en"):
        apertium.direction_for("fr", "en")
    with pytest.raises(ValueError, match="es<->en"):
        orient(PAIRS, "fr", "en")
