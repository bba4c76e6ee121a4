"""Placeholders on the translation routes: each sentence whole with its spans as sentinels,
restored after; a sentinel the model drops is put back by the alignment (a second decode asks
for it when the request did not), and without a usable alignment the sentence is translated
piecewise. The response says which sentences needed either."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.cache import TranslationCache
from service.api.catalog import Catalog
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ServedModel
from service.decoding.translator import Alignment, Candidate, Translation

MODEL = ServedModel(
    "es-en-transformer", "es-en/transformer", 1, "transformer", "es", "en", 100, default=True
)
SENTINEL = re.compile(r"\{\d+\}")


class DroppingBackend:
    """Upper-cases each word and drops every word that is a sentinel; its alignment (when
    asked for, and `aligns`) has each word attend to its own source word, and the word after
    a dropped sentinel mostly to the sentinel. Records every job."""

    def __init__(self, aligns: bool = True):
        self.catalog = Catalog([MODEL])
        self.aligns = aligns
        self.jobs = []

    def _candidate(self, text: str, want_alignment: bool) -> Candidate:
        words = text.split()
        kept = [i for i, w in enumerate(words) if not SENTINEL.fullmatch(w)]
        output = " ".join(words[i].upper() for i in kept)
        alignment = None
        if want_alignment and self.aligns:
            rows = []
            for i in kept + [len(words)]:
                row = [0.0] * (len(words) + 1)
                if i > 0 and SENTINEL.fullmatch(words[i - 1]) and i < len(words):
                    row[i - 1], row[i] = 0.6, 0.4
                else:
                    row[i] = 1.0
                rows.append(row)
            alignment = Alignment(
                ["▁" + w for w in words] + ["</s>"],
                ["▁" + words[i].upper() for i in kept] + ["</s>"],
                rows,
            )
        return Candidate(output, -1.0, len(kept), True, alignment)

    async def translate(self, model, job):
        self.jobs.append(job)
        items = [
            ItemOutcome(
                Translation([self._candidate(t, job.options.return_alignment)], 3), 0.0, 0.001, 1
            )
            for t in job.texts
        ]
        return JobResult(items, model.id, model.version, 0.001)

    async def status(self):
        return {}


def client_for(backend, cache=None, **settings):
    settings = {"placeholders": "sentinels", **settings}
    app = create_app(ApiSettings(**settings), Backends(backend.catalog, backend, cache=cache))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def backend():
    return DroppingBackend()


def test_a_dropped_sentinel_is_put_back_by_the_alignment_and_reported(backend):
    with client_for(backend) as client:
        response = client.post(
            "/v1/translate", json={"text": "Hola {name} amigo. Adiós.", "return_scores": True}
        )
    assert response.status_code == 200, response.text
    [result] = response.json()["translations"]
    assert result["text"] == "HOLA {name} AMIGO. ADIÓS."
    assert result["placeholder_repairs"] == [
        {
            "segment": 0,
            "source": "Hola {name} amigo.",
            "status": "repaired",
            "inserted": ["{name}"],
            "removed": [],
        }
    ]
    assert [s["placeholders"] for s in result["segments"]] == ["repaired", None]
    assert [s["alignment"] for s in result["segments"]] == [None, None]  # not asked for
    first, again = backend.jobs
    assert first.texts == ["Hola {0} amigo.", "Adiós."] and not first.options.return_alignment
    assert again.texts == ["Hola {0} amigo."] and again.options.return_alignment


def test_with_an_alignment_asked_for_no_second_decode_is_needed(backend):
    with client_for(backend) as client:
        body = client.post(
            "/v1/translate", json={"text": "Hola {name} amigo.", "return_alignment": True}
        ).json()
    assert body["translations"][0]["text"] == "HOLA {name} AMIGO."
    assert body["translations"][0]["segments"][0]["alignment"] is not None
    assert len(backend.jobs) == 1


def test_without_a_usable_alignment_the_sentence_is_translated_piecewise():
    backend = DroppingBackend(aligns=False)
    with client_for(backend) as client:
        body = client.post("/v1/translate", json={"text": "Hola {name} amigo."}).json()
    [result] = body["translations"]
    assert result["text"] == "HOLA {name} AMIGO."
    assert result["placeholder_repairs"][0]["status"] == "fallback"
    assert [job.texts for job in backend.jobs] == [
        ["Hola {0} amigo."],
        ["Hola {0} amigo."],
        ["Hola", "amigo."],
    ]


def test_the_cache_holds_model_output_and_each_request_gets_its_own_spans_back(backend):
    with client_for(backend, cache=TranslationCache(100)) as client:
        first = client.post("/v1/translate", json={"text": "Hola {name} amigo."}).json()
        second = client.post("/v1/translate", json={"text": "Hola <b> amigo."}).json()
    assert first["translations"][0]["text"] == "HOLA {name} AMIGO."
    assert second["translations"][0]["text"] == "HOLA <b> AMIGO."
    assert second["timing"]["cached_sentences"] == [1]
    assert len(backend.jobs) == 2  # the second request decoded nothing


def test_pieces_setting_keeps_the_words_between_spans_apart(backend):
    with client_for(backend, placeholders="pieces") as client:
        body = client.post("/v1/translate", json={"text": "Hola {name} amigo."}).json()
    assert body["translations"][0]["text"] == "HOLA {name} AMIGO."
    assert [job.texts for job in backend.jobs] == [["Hola", "amigo."]]


def test_compare_takes_format_html(backend):
    html = "<p>Hola <b>amigo</b>.</p>"
    with client_for(backend) as client:
        body = client.post("/v1/compare", json={"text": html, "format": "html"}).json()
        plain = client.post("/v1/compare", json={"text": html}).json()
        refused = client.post("/v1/compare", json={"text": html, "format": "pdf"})
    [compared] = body["results"]
    assert compared["translations"][0]["text"] == "<p>HOLA <b>AMIGO</b>.</p>"
    assert backend.jobs[0].texts == ["Hola {0}amigo{1}."]
    # As text, <p> is a span like <b>: masked too (and back verbatim).
    assert plain["results"][0]["translations"][0]["text"] == "<p>HOLA <b>AMIGO</b>.</p>"
    assert backend.jobs[1].texts == ["{0}Hola {1}amigo{2}."]  # "</p>" alone: not decoded
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "format"
