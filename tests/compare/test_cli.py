import json

from typer.testing import CliRunner

from service.__main__ import app
from service.text.corpus import write_split


def test_compare_command_writes_a_report(tmp_path, store, pairs):
    data = tmp_path / "data"
    data.mkdir()
    write_split(data / "test.tsv.gz", pairs)
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
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rnnsearch vs transformer" in result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["sentences"] == 8 and report["decode"]["beam_size"] == 1
    assert report["split"] == "test"
    assert (out / "alignment_rnnsearch_2.png").is_file()


def test_compare_command_reports_an_unknown_model(tmp_path, store, pairs):
    data = tmp_path / "data"
    data.mkdir()
    write_split(data / "test.tsv.gz", pairs)
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
