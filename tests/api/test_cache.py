"""The ingress's translation cache: hits skip the model, never across versions or options."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.cache import TranslationCache
from service.api.catalog import Catalog
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ServedModel
from service.decoding.search import DecodeOptions
from service.decoding.translator import Candidate, Translation

V2 = ServedModel("v2", "es-en/transformer", 2, "transformer", "es", "en", 10, default=True)
V1 = ServedModel("v1", "es-en/transformer", 1, "transformer", "es", "en", 10)


class CountingBackend:
    def __init__(self):
        self.catalog = Catalog([V2, V1])
        self.jobs = []

    async def translate(self, model, job):
        self.jobs.append((model.version, list(job.texts)))
        items = [
            ItemOutcome(
                Translation([Candidate(f"{t.upper()} v{model.version}", -1.0, 2, True)], 2),
                0.01,
                0.02,
                len(job.texts),
                batch_id=7,
            )
            for t in job.texts
        ]
        return JobResult(items, model.id, model.version, 0.05)

    async def status(self):
        return {}


def client_with(backend, cache):
    app = create_app(ApiSettings(), Backends(backend.catalog, backend, cache=cache))
    return TestClient(app, raise_server_exceptions=False)


def test_cached_sentences_are_not_decoded_again():
    backend, recorded = CountingBackend(), []
    cache = TranslationCache(100, lambda *args: recorded.append(args))
    with client_with(backend, cache) as client:
        first = client.post("/v1/translate", json={"text": "Uno. Dos.", "return_scores": True})
        second = client.post(
            "/v1/translate", json={"text": "Dos. Tres.", "return_scores": True}
        ).json()
        third = client.post("/translate", json={"q": "Uno. Dos.", "source": "es", "target": "en"})
    assert first.json()["timing"]["cached_sentences"] == [0]
    assert backend.jobs == [(2, ["Uno.", "Dos."]), (2, ["Tres."])]  # the third: all cached
    assert second["translations"][0]["text"] == "DOS. v2 TRES. v2"
    assert [s["cached"] for s in second["translations"][0]["segments"]] == [True, False]
    assert second["timing"]["cached_sentences"] == [1]
    assert third.json() == {"translatedText": "UNO. v2 DOS. v2"}
    assert recorded == [
        ("es-en/transformer@2", 0, 2),
        ("es-en/transformer@2", 1, 1),
        ("es-en/transformer@2", 2, 0),
    ]


def test_never_across_versions_or_decoding_options():
    backend = CountingBackend()
    with client_with(backend, TranslationCache(100)) as client:
        client.post("/v1/translate", json={"text": "Uno."})
        old = client.post("/v1/translate", json={"text": "Uno.", "version": 1}).json()
        wider = client.post("/v1/translate", json={"text": "Uno.", "beam_size": 1}).json()
    assert old["translations"][0]["text"] == "UNO. v1"
    assert len(backend.jobs) == 3 and wider["timing"]["cached_sentences"] == [0]


def test_lru_eviction_and_size_zero_turns_it_off():
    options = DecodeOptions()
    cache = TranslationCache(2)
    item = ItemOutcome(Translation([Candidate("x", 0.0, 1, True)], 1), 0.0, 0.0, 1)
    cache.store(V2, options, ["a", "b"], [item, item])
    assert cache.lookup(V2, options, ["a"]) == [item]  # a is now the most recent
    cache.store(V2, options, ["c"], [item])
    assert cache.lookup(V2, options, ["a", "b", "c"]) == [item, None, item]
    failed = ItemOutcome(None, 0.0, 0.0, 1, error="boom")
    cache.store(V2, options, ["d"], [failed])
    assert cache.lookup(V2, options, ["d"]) == [None]
    off = TranslationCache(0)
    off.store(V2, options, ["a"], [item])
    assert off.lookup(V2, options, ["a"]) == [None] and len(off) == 0
