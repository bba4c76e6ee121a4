"""`python -m service bench cache` without Ray: the measurement against the FastAPI app."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.cache import TranslationCache
from service.api.catalog import Catalog
from service.api.settings import ApiSettings
from service.bench.cache import (
    TEST_SPLIT_DIR,
    CacheBenchmark,
    _summarize,
    benchmark_paragraphs,
    cache_markdown,
    measure,
)
from service.contracts import ItemOutcome, JobResult, ServedModel
from service.decoding.translator import Candidate, Translation

MODEL = ServedModel("m", "es-en/transformer", 3, "transformer", "es", "en", 10, default=True)


class SlowBackend:
    """Upper-cases after 20 ms per job: what a cache hit saves."""

    def __init__(self):
        self.catalog = Catalog([MODEL])
        self.jobs: list[list[str]] = []

    async def translate(self, model, job):
        self.jobs.append(list(job.texts))
        await asyncio.sleep(0.02)
        items = [
            ItemOutcome(Translation([Candidate(t.upper(), -1.0, 2, True)], 2), 0.0, 0.02, 1)
            for t in job.texts
        ]
        return JobResult(items, model.id, model.version, 0.02)

    async def status(self):
        return {}


def client_with(backend, cache_size=100):
    cache = TranslationCache(cache_size) if cache_size else None
    app = create_app(ApiSettings(), Backends(backend.catalog, backend, cache=cache))
    return TestClient(app)


def test_uncached_then_cached_requests_are_told_apart():
    backend = SlowBackend()
    texts = ["Uno. Dos. Tres.", "Cuatro. Cinco."]
    with client_with(backend) as client:
        got = measure(client, texts, {"beam_size": 1}, repeats=2)
    assert got["errors"] == [] and got["units"] == [3, 2]
    assert backend.jobs == [["Uno.", "Dos.", "Tres."], ["Cuatro.", "Cinco."]]  # repeats: none
    uncached = _summarize(got["samples"]["uncached"])
    cached = _summarize(got["samples"]["cached"])
    assert (uncached.requests, cached.requests) == (2, 4)
    assert cached.server_compute_ms == 0 and uncached.server_compute_ms > 0
    assert cached.p50_ms < uncached.p50_ms


def test_without_a_cache_every_repeat_is_an_error_not_a_sample():
    with client_with(SlowBackend(), cache_size=0) as client:
        got = measure(client, ["Uno. Dos."], {}, repeats=2)
    assert got["samples"]["cached"] == [] and len(got["errors"]) == 2
    assert "cached flags [False, False]" in got["errors"][0]


@pytest.mark.skipif(not (TEST_SPLIT_DIR / "general.tsv.gz").exists(), reason="no corpus")
def test_paragraphs_share_no_sentence():
    sentences = benchmark_paragraphs(20, 1)
    assert len(set(sentences)) == 20
    paragraphs = benchmark_paragraphs(4, 5)
    assert paragraphs == [" ".join(sentences[i : i + 5]) for i in range(0, 20, 5)]
    assert benchmark_paragraphs(4, 5) == paragraphs  # the same on every run


def test_markdown_names_the_numbers_the_command_and_the_load():
    with client_with(SlowBackend()) as client:
        got = measure(client, ["Uno. Dos."], {}, repeats=1)
    uncached, cached = _summarize(got["samples"]["uncached"]), _summarize(got["samples"]["cached"])
    result = CacheBenchmark(
        model="es-en/transformer v3 (shipped)",
        beam_size=4,
        max_length=128,
        split="general",
        paragraphs=1,
        sentences_per_text=2,
        units_per_text=2.0,
        characters_per_text=9.0,
        repeats=1,
        cache_size=10000,
        uncached=uncached,
        cached=cached,
        speedup_p50=round(uncached.p50_ms / cached.p50_ms, 1),
        errors=[],
        versions={"python": "3.11"},
        machine="a test machine",
        load_average={"before": [1.0, 2.0, 3.0], "after": [4.0, 5.0, 6.0]},
        command="python -m service bench cache --paragraphs 1",
        notes=["training ran beside it."],
    )
    text = cache_markdown(result)
    assert "`python -m service bench cache --paragraphs 1`" in text
    assert "[1.0, 2.0, 3.0] before" in text and "a test machine" in text
    assert f"| uncached (first) | 1 | {uncached.p50_ms:.1f} /" in text
    assert f"{result.speedup_p50}x faster" in text
    assert text.endswith("Note: training ran beside it.")


def test_the_command_line_repeats_the_run():
    from service.bench.cache import command_line

    line = command_line(
        paragraphs=8,
        sentences_per_text=6,
        repeats=3,
        beam_size=4,
        max_length=128,
        split="general",
        model="rnnsearch",
        notes=["not part of it"],
    )
    assert line.endswith(
        "python -m service bench cache --paragraphs 8 --sentences 6 --repeats 3 --beam-size 4 "
        "--max-length 128 --split general --model rnnsearch"
    )
