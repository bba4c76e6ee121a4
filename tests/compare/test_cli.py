import json

import pytest
from typer.testing import CliRunner

from service.__main__ import app
from service.text.corpus import write_split
from service.training import apertium


def corpus(tmp_path, pairs):
    """A data directory whose Bible test split holds `pairs`, under its new name and its old,
    and a ui split holding the first few of them."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("bible", "test"):
        write_split(data / f"{name}.tsv.gz", pairs)
    write_split(data / "ui.tsv.gz", pairs[:6])
    return data


def test_compare_command_writes_a_report(tmp_path, store, pairs):
    data = corpus(tmp_path, pairs)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--models",
            "transformer,rnnsearch",
            "--split",
            "test",
            "--beam-size",
            "1",
            "--max-length",
            "6",
            "--limit",
            "8",
            "--samples",
            "2",
            "--bootstrap",
            "100",
            "--out",
            str(out),
            "--root",
            str(store.root),
            "--data-dir",
            str(data),
            "--device",
            "cpu",
            "--no-progress",
            "--no-apertium",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rnnsearch vs transformer" in result.output
    combined = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert combined["splits"] == ["test"] and combined["systems"] == ["transformer", "rnnsearch"]
    report = combined["reports"]["test"]
    assert report["sentences"] == 8 and report["decode"]["beam_size"] == 1
    assert report["split"] == "test"
    assert (out / "test" / "alignment_rnnsearch_2.png").is_file()
    assert (out / "test" / "report.md").is_file() and (out / "report.md").is_file()


def test_compare_command_reports_an_unknown_model(tmp_path, store, pairs):
    data = corpus(tmp_path, pairs)
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--models",
            "transformer,nosuch",
            "--root",
            str(store.root),
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    assert "nosuch" in result.output


@pytest.mark.skipif(
    not apertium.available("es", "en"), reason="Apertium is not installed (`make test` does it)"
)
def test_compare_command_puts_apertium_beside_ours_on_several_splits(tmp_path, store, pairs):
    from service.text import corpus as text_corpus

    if "bible" not in text_corpus.SPLITS:
        pytest.skip("this corpus module predates the bible / general / ui splits")
    data = corpus(tmp_path, pairs)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--models",
            "transformer@1",
            "--split",
            "bible,ui",
            "--beam-size",
            "1",
            "--max-length",
            "4",
            "--samples",
            "1",
            "--bootstrap",
            "50",
            "--out",
            str(out),
            "--root",
            str(store.root),
            "--data-dir",
            str(data),
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "apertium vs transformer" in result.output
    combined = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert combined["splits"] == ["bible", "ui"]
    assert combined["systems"] == ["transformer", "apertium"]
    assert combined["reports"]["ui"]["sentences"] == 6
    assert set(combined["summary"]["apertium"]) == {"bible", "ui"}


def test_compare_command_refuses_an_unknown_split(tmp_path, store, pairs):
    data = corpus(tmp_path, pairs)
    result = CliRunner().invoke(
        app,
        ["compare", "--split", "nosuch", "--root", str(store.root), "--data-dir", str(data)],
    )
    assert result.exit_code == 2
    assert "nosuch" in result.output
