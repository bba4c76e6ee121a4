"""`bench peers --dtype`: ours and Hugging Face at the dtype, CTranslate2 at its compute_type."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service.bench.cli import bench_app
from service.bench.peers import ctranslate2_compute_type

pytest.importorskip("ctranslate2")
runner = CliRunner()


def test_peers_runs_each_dtype_against_the_matching_compute_type(tmp_path):
    result = runner.invoke(
        bench_app,
        f"peers --random --preset tiny --limit 4 --batch-size 2 --beam-size 2 "
        f"--output-length 3 --threads 1 --store {tmp_path} --dtype int8 --dtype bfloat16 "
        "--json".split(),
    )
    assert result.exit_code == 0, result.output
    int8, bfloat16 = json.loads(result.stdout)
    assert int8["dtype"] == "int8" and int8["ctranslate2_compute_type"] == "int8"
    assert bfloat16["dtype"] == "bfloat16"
    # CTranslate2 4.8 has no bfloat16 on CPU: it runs float32 there, and the report says so
    assert bfloat16["ctranslate2_compute_type"] == ctranslate2_compute_type("bfloat16")
    if bfloat16["ctranslate2_compute_type"] != "bfloat16":
        assert any("no bfloat16" in note for note in bfloat16["notes"])
    for report in (int8, bfloat16):
        assert report["ours_vs_ctranslate2"] > 0 and report["ours_vs_huggingface"] > 0
        assert set(report["engines"]) == {"ours", "huggingface", "ctranslate2"}


def test_an_unknown_dtype_is_refused(tmp_path):
    result = runner.invoke(
        bench_app, f"peers --random --preset tiny --limit 2 --store {tmp_path} --dtype fp8".split()
    )
    assert result.exit_code != 0
    assert "float32, bfloat16, int8" in result.output
