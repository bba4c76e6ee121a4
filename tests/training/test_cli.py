"""`python -m service train | eval | translate` on a tiny synthetic corpus and a temporary store."""

import json

import pytest
from typer.testing import CliRunner

from .helpers import reversal_pairs, train_spm

pytest.importorskip("service.text.tokenizer")


@pytest.fixture
def corpus(tmp_path):
    from service.text.corpus import write_split

    data = tmp_path / "data"
    data.mkdir()
    for split, count, seed in (("train", 200, 0), ("valid", 30, 1), ("bible", 20, 2)):
        write_split(data / f"{split}.tsv.gz", reversal_pairs(count, seed=seed))
    train_spm(data, reversal_pairs(200))
    return data


def test_train_then_eval_then_translate(tmp_path, corpus, monkeypatch):
    from service.__main__ import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    store = tmp_path / "store"
    trained = runner.invoke(
        app,
        [
            "train",
            "--arch",
            "transformer",
            "--preset",
            "tiny",
            "--max-steps",
            "30",
            "--max-tokens",
            "300",
            "--eval-every",
            "10",
            "--warmup-steps",
            "5",
            "--lr",
            "3e-3",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--root",
            str(store),
            "--data-dir",
            str(corpus),
            "--version",
            "1",
            "--test-beam-size",
            "2",
        ],
    )
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output[trained.output.index("{\n") :])
    assert summary["saved"] == {"id": "es-en/transformer", "version": 1}
    assert summary["steps"] == 30 and summary["bleu"] is not None

    manifest = json.loads((store / "es-en" / "transformer" / "1" / "manifest.json").read_text())
    assert manifest["training"]["command"].startswith("python -m service")
    assert manifest["metrics"]["split"] == "test"

    evaluated = runner.invoke(
        app,
        [
            "eval",
            "--model",
            "transformer",
            "--root",
            str(store),
            "--data-dir",
            str(corpus),
            "--split",
            "test",
            "--beam-size",
            "2",
            "--limit",
            "10",
            "--json",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.output)
    assert result["sentences"] == 10 and {
        "bleu",
        "chrf",
        "bleu_signature",
        "buckets",
        "speed",
    } <= set(result)

    translated = runner.invoke(
        app,
        [
            "translate",
            "--model",
            "es-en/transformer",
            "--version",
            "1",
            "--root",
            str(store),
            "--beam-size",
            "2",
            "w1 w2 w3",
            "w4 w5",
        ],
    )
    assert translated.exit_code == 0, translated.output
    assert len(translated.output.strip().splitlines()) == 2
