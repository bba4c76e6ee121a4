"""`python -m service bench ...` plumbing and the docs/benchmarks.md section writer."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service.bench.cli import DOC_SECTIONS, bench_app, update_sections

runner = CliRunner()


def test_decode_runs_each_beam_size():
    result = runner.invoke(
        bench_app,
        "decode --preset tiny --batch-size 2 --beam-size 1 --beam-size 2 --new-tokens 3 "
        "--repeats 1 --threads 1 --json".split(),
    )
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert [r["beam_size"] for r in reports] == [1, 2]
    assert all(r["identical"] and r["cached_tokens_per_s"] > 0 for r in reports)


def test_decode_keeps_one_object_for_one_beam_size():
    result = runner.invoke(
        bench_app, "decode --preset tiny --batch-size 2 --new-tokens 3 --repeats 1 --json".split()
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["beam_size"] == 1


def test_peers_on_a_random_model(tmp_path):
    pytest.importorskip("ctranslate2")
    result = runner.invoke(
        bench_app,
        f"peers --random --preset tiny --limit 4 --batch-size 2 --beam-size 2 "
        f"--output-length 3 --threads 1 --store {tmp_path} --json".split(),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"].startswith("random tiny") and report["sentences"] == 4
    assert set(report["engines"]) == {"ours", "huggingface", "ctranslate2"}


def test_all_runs_every_benchmark_and_writes_its_sections(tmp_path):
    pytest.importorskip("ctranslate2")
    doc = tmp_path / "benchmarks.md"
    result = runner.invoke(
        bench_app,
        f"all --random --limit 4 --batch-size 2 --beam-size 1 --beam-size 2 --new-tokens 2 "
        f"--repeats 1 --threads 1 --no-service --store {tmp_path} --write {doc}".split(),
    )
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert "cache on tok/s" in text and "--no-early-stopping" in text
    # greedy, then beam 2 with CTranslate2's stopping rule, then with the decoders' default
    assert text.index("\ngreedy,") < text.index("beam 2, early_stopping=True")
    assert text.index("beam 2, early_stopping=True") < text.index("beam 2, early_stopping=False")
    assert "a different search" in text.split("early_stopping=False")[1]
    assert f"## {DOC_SECTIONS[2]}\n\n_Not measured yet._" in text  # --no-service


def test_sections_are_created_then_replaced_in_place(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    update_sections(path, {DOC_SECTIONS[0]: "first numbers"})
    text = path.read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        f"## {title}" for title in DOC_SECTIONS
    ]
    assert "first numbers" in text

    service = text.replace(
        f"## {DOC_SECTIONS[2]}\n\n_Not measured yet._", f"## {DOC_SECTIONS[2]}\n\nlocust: 42 rps"
    )
    path.write_text(service)
    update_sections(path, {DOC_SECTIONS[0]: "second numbers", DOC_SECTIONS[1]: "peers table"})
    text = path.read_text()
    assert "first numbers" not in text and "second numbers" in text and "peers table" in text
    assert "locust: 42 rps" in text  # another tool's section survives
    assert text.index("second numbers") < text.index("peers table") < text.index("locust")
