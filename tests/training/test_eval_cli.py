"""`python -m service eval`: our scores, empty outputs and Apertium's on the same lines."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from service.models import build_model, make_config
from service.training import apertium
from service.training.cli import eval_command

from .helpers import SimplePair, train_spm

pytest.importorskip("sentencepiece")

PAIRS = [
    SimplePair("a", "Hola, mundo.", "Hello, world."),
    SimplePair("b", "Guarde el archivo antes de salir.", "Save the file before exiting."),
    SimplePair("c", "La reunión se ha aplazado.", "The meeting has been postponed."),
    SimplePair("d", "En el principio creó Dios los cielos.", "In the beginning God created."),
    SimplePair("e", "la luz", "the light"),
    SimplePair("f", "El perro come pan.", "The dog eats bread."),
]
installed = pytest.mark.skipif(
    not apertium.available("es", "en") or not apertium.available("en", "es"),
    reason="Apertium is not installed (`make test` installs apertium apertium-eng-spa)",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A corpus directory (test split) and a store with tiny random es-en and en-es models
    that would say nothing at all if the search let them."""
    from service.store import ModelStore
    from service.text.corpus import Pair, write_split

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    data.mkdir()
    for name in ("bible", "test"):  # the Bible test split's file name, new and old
        write_split(data / f"{name}.tsv.gz", [Pair(p.key, p.source, p.target) for p in PAIRS])
    spm = train_spm(data, PAIRS * 3, vocab_size=40)
    store = ModelStore(root / "store")
    for number, model_id in enumerate(("es-en/transformer", "en-es/transformer")):
        torch.manual_seed(number)
        model = build_model("transformer", make_config("transformer", "tiny", 40)).eval()
        with torch.no_grad():  # EOS first: quick to decode, and the test of empty outputs
            model.final_logits_bias[0, model.config.eos_id] = 20.0
        store.save(model, spm, model_id=model_id, version=1)
    return data, store.root


def run_eval(setup, *arguments: str):
    data, store = setup
    app = typer.Typer()
    app.command()(eval_command)
    return CliRunner().invoke(
        app,
        [
            "--root",
            str(store),
            "--data-dir",
            str(data),
            "--beam-size",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            *(() if "--model" in arguments else ("--model", "es-en/transformer")),
            *arguments,
        ],
    )


@installed
@pytest.mark.parametrize(
    "model, direction, peer, sources, references",
    [
        ("es-en/transformer", "es-en", "spa-eng", "source", "target"),
        ("en-es/transformer", "en-es", "eng-spa", "target", "source"),
    ],
)
def test_eval_json_has_our_scores_and_apertiums_on_the_same_lines(
    setup, model, direction, peer, sources, references
):
    result = run_eval(setup, "--model", model, "--split", "test", "--limit", "5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"bleu", "chrf", "empty", "sentences", "apertium"} <= set(report)
    assert {"bleu_signature", "chrf_signature", "buckets", "speed"} <= set(report)
    assert report["sentences"] == 5 and report["direction"] == direction
    assert report["empty"] == 0  # models that want EOS first, but never an empty translation
    lines = [(getattr(p, sources), getattr(p, references)) for p in PAIRS[:5]]
    target, source = direction.split("-")[::-1]
    expected = apertium.evaluate_apertium(
        [SimplePair(str(i), s, r) for i, (s, r) in enumerate(lines)], source, target
    )
    peer_report = report["apertium"]
    assert peer_report["direction"] == peer and peer_report["sentences"] == 5
    assert (peer_report["bleu"], peer_report["chrf"], peer_report["empty"]) == (
        expected["bleu"],
        expected["chrf"],
        expected["empty"],
    )
    assert peer_report["chrf_signature"] == report["chrf_signature"]


@installed
def test_eval_text_names_apertium_and_no_apertium_leaves_it_out(setup):
    text = run_eval(setup, "--limit", "3")
    assert text.exit_code == 0, text.output
    assert "empty 0" in text.stdout and "apertium spa-eng on the same lines: BLEU" in text.stdout
    without = run_eval(setup, "--limit", "3", "--json", "--no-apertium")
    assert without.exit_code == 0, without.output
    assert json.loads(without.stdout)["apertium"] is None


def test_the_bible_split_is_the_test_split(setup):
    from service.text import corpus

    if "bible" not in corpus.SPLITS:
        pytest.skip("this corpus module predates the bible / general / ui splits")
    bible = run_eval(setup, "--split", "bible", "--limit", "2", "--json", "--no-apertium")
    test = run_eval(setup, "--split", "test", "--limit", "2", "--json", "--no-apertium")
    assert bible.exit_code == test.exit_code == 0, bible.output + test.output
    assert json.loads(bible.stdout)["bleu"] == json.loads(test.stdout)["bleu"]
    assert json.loads(bible.stdout)["split"] == "bible"


def test_an_unknown_split_or_model_is_a_clear_error(setup):
    result = run_eval(setup, "--split", "nosuch")
    assert result.exit_code == 2
    assert "nosuch" in result.output
    ambiguous = run_eval(setup, "--model", "transformer")  # es-en and en-es both have one
    assert ambiguous.exit_code == 2
    assert "en-es/transformer" in ambiguous.output


def test_without_apertium_eval_still_scores_ours_and_asking_for_it_fails(setup, monkeypatch):
    monkeypatch.setattr(apertium.shutil, "which", lambda name: None)  # as if not installed
    quiet = run_eval(setup, "--limit", "2", "--json")
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["apertium"] is None
    assert "Apertium not scored" in quiet.stderr
    asked = run_eval(setup, "--limit", "2", "--apertium")
    assert asked.exit_code == 2
    assert "apt-get install apertium" in asked.output
