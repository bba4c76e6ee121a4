"""Every translation route decodes sentences, not texts, and puts the text back together."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ServedModel
from service.decoding.translator import Alignment, Candidate, Translation

MODEL = ServedModel(
    "es-en-transformer",
    "es-en/transformer",
    1,
    "transformer",
    "es",
    "en",
    1000,
    max_source_tokens=8,  # 7 words and EOS
    default=True,
)
OTHER = ServedModel("es-en-rnnsearch", "es-en/rnnsearch", 1, "rnnsearch", "es", "en", 10)


class WordCounter:
    def source_tokens(self, model, text):
        return len(text.split())


class UpperBackend:
    """Upper-cases each item; its score is minus its word count; records every job."""

    def __init__(self):
        self.catalog = Catalog([MODEL, OTHER])
        self.jobs = []

    async def translate(self, model, job):
        self.jobs.append(job)
        items = []
        for text in job.texts:
            words = text.split()
            candidates = [
                Candidate(
                    text.upper() + ("" if rank == 0 else f" #{rank}"),
                    -float(len(words)),
                    len(words),
                    True,
                    Alignment(words, words, [[1.0] * len(words)] * len(words)),
                )
                for rank in range(job.options.n_best)
            ]
            items.append(
                ItemOutcome(Translation(candidates, len(words) + 1), 0.0, 0.001, len(job.texts))
            )
        return JobResult(items, model.id, model.version, 0.002)

    async def status(self):
        return {}


@pytest.fixture
def backend():
    return UpperBackend()


def make_client(backend, **settings):
    app = create_app(
        ApiSettings(**settings), Backends(backend.catalog, backend, tokens=WordCounter())
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(backend):
    with make_client(backend) as client:
        yield client


def test_line_breaks_and_spacing_survive(client, backend):
    text = "Primera línea.\nSegunda línea.\n\nTercer párrafo.  ¿Bien?  "
    response = client.post("/v1/translate", json={"text": text})
    assert response.status_code == 200, response.text
    [translation] = response.json()["translations"]
    assert translation["text"] == "PRIMERA LÍNEA.\nSEGUNDA LÍNEA.\n\nTERCER PÁRRAFO.  ¿BIEN?  "
    assert translation["sentences"] == 4
    [job] = backend.jobs
    assert job.texts == ["Primera línea.", "Segunda línea.", "Tercer párrafo.", "¿Bien?"]


def test_a_page_fills_one_job_in_order_across_texts(client, backend):
    texts = ["Uno. Dos.", "Tres.\nCuatro. Cinco."]
    response = client.post("/v1/translate", json={"text": texts})
    body = response.json()
    assert [t["text"] for t in body["translations"]] == ["UNO. DOS.", "TRES.\nCUATRO. CINCO."]
    assert [t["sentences"] for t in body["translations"]] == [2, 3]
    assert backend.jobs[0].texts == ["Uno.", "Dos.", "Tres.", "Cuatro.", "Cinco."]
    assert body["usage"]["input_tokens"] == 5 * 2


def test_a_long_sentence_is_split_at_clauses_never_truncated(client, backend):
    text = "Uno dos tres cuatro cinco, seis siete ocho nueve diez y once doce trece catorce."
    response = client.post(
        "/v1/translate", json={"text": text, "return_scores": True, "return_alignment": True}
    )
    assert response.status_code == 200, response.text
    [translation] = response.json()["translations"]
    assert translation["text"] == text.upper()  # every word, in order, with its spacing
    assert translation["sentences"] == 1
    pieces = backend.jobs[0].texts
    assert pieces == [
        "Uno dos tres cuatro cinco,",
        "seis siete ocho nueve diez",
        "y once doce trece catorce.",
    ]
    assert all(len(piece.split()) + 1 <= MODEL.max_source_tokens for piece in pieces)
    segments = translation["segments"]
    assert [s["source"] for s in segments] == pieces
    assert [s["score"] for s in segments] == [-5.0, -5.0, -5.0]
    assert translation["score"] == pytest.approx(-5.0)  # token-weighted mean
    assert translation["alignment"] is None  # one matrix per piece, in segments
    assert all(s["alignment"]["source_tokens"] for s in segments)


def test_the_score_is_the_output_token_weighted_mean(client):
    response = client.post(
        "/v1/translate", json={"text": "Uno dos tres. Cuatro.", "return_scores": True}
    )
    [translation] = response.json()["translations"]
    assert translation["score"] == pytest.approx((-3.0 * 3 + -1.0 * 1) / 4)
    assert translation["alignment"] is None and len(translation["segments"]) == 2


def test_one_sentence_keeps_its_alignment(client):
    response = client.post("/v1/translate", json={"text": "Hola mundo.", "return_alignment": True})
    [translation] = response.json()["translations"]
    assert translation["alignment"]["source_tokens"] == ["Hola", "mundo."]


def test_alternatives_join_each_sentences_kth_hypothesis(client):
    response = client.post("/v1/translate", json={"text": "Uno. Dos.", "beam_size": 2, "n_best": 2})
    [translation] = response.json()["translations"]
    assert [a["text"] for a in translation["alternatives"]] == ["UNO. #1 DOS. #1"]


class CharCounter:
    def source_tokens(self, model, text):
        return len(text)


def test_only_a_word_over_the_limit_is_a_422_naming_text_and_limit(backend):
    app = create_app(ApiSettings(), Backends(backend.catalog, backend, tokens=CharCounter()))
    with TestClient(app) as client:
        words = client.post("/v1/translate", json={"text": "uno dos tres cuatro cinco seis"})
        assert words.json()["translations"][0]["text"] == "UNO DOS TRES CUATRO CINCO SEIS"
        pieces = backend.jobs[-1].texts
        assert " ".join(pieces) == "uno dos tres cuatro cinco seis" and len(pieces) > 1
        assert all(len(piece) + 1 <= MODEL.max_source_tokens for piece in pieces)
        response = client.post(
            "/v1/translate", json={"text": ["Bien.", "es supercalifragilistico"]}
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["field"] == "text[1]"
        assert "source limit of 8 tokens" in error["message"]
        assert "supercalifragilistico" in error["message"]
        lt = client.post(
            "/translate", json={"q": "supercalifragilistico", "source": "es", "target": "en"}
        )
        assert lt.status_code == 400 and "source limit of 8 tokens" in lt.json()["error"]
    assert len(backend.jobs) == 1


def test_request_limits_on_characters_and_sentences(backend):
    with make_client(backend, max_request_chars=30, max_sentences=3) as client:
        too_long = client.post("/v1/translate", json={"text": ["a" * 20 + ".", "b" * 20 + "."]})
        assert too_long.status_code == 422
        assert "at most 30 per request" in too_long.json()["error"]["message"]
        many = client.post("/v1/translate", json={"text": "Uno. Dos. Tres. Cuatro."})
        assert many.status_code == 422
        assert "4 sentences" in many.json()["error"]["message"]


def test_the_default_text_limit_takes_a_page(client):
    page = ("Esta es una frase corta. " * 800).strip()  # 19,999 characters
    assert len(page) <= 20000
    response = client.post("/v1/translate", json={"text": page})
    assert response.status_code == 200, response.text
    assert response.json()["translations"][0]["sentences"] == 800


def test_libretranslate_and_compare_segment_too(client, backend):
    response = client.post(
        "/translate", json={"q": "Hola.\n\nAdiós.", "source": "es", "target": "en"}
    )
    assert response.json() == {"translatedText": "HOLA.\n\nADIÓS."}
    assert backend.jobs[-1].texts == ["Hola.", "Adiós."]
    compared = client.post(
        "/v1/compare", json={"text": "Uno. Dos.", "models": ["transformer", "rnnsearch"]}
    )
    assert compared.status_code == 200, compared.text
    results = compared.json()["results"]
    assert [r["translations"][0]["text"] for r in results] == ["UNO. DOS.", "UNO. DOS."]
    assert [r["translations"][0]["sentences"] for r in results] == [2, 2]


def test_without_a_token_counter_utf8_bytes_bound_the_tokens(backend):
    app = create_app(ApiSettings(), Backends(backend.catalog, backend))
    with TestClient(app) as client:
        client.post("/v1/translate", json={"text": "abc, def, ghi, jkl"})
    assert backend.jobs[0].texts == ["abc,", "def,", "ghi,", "jkl"]  # 7 bytes + EOS max


def test_placeholders_and_tags_come_back_in_place(client, backend):
    text = "Hola {name}, tienes %d mensajes nuevos en <b>tu bandeja</b>."
    response = client.post("/v1/translate", json={"text": text})
    [translation] = response.json()["translations"]
    assert translation["text"] == "HOLA {name}, TIENES %d MENSAJES NUEVOS EN <b>TU BANDEJA</b>."
    assert translation["sentences"] == 1
    assert backend.jobs[-1].texts == ["Hola", ", tienes", "mensajes nuevos en", "tu bandeja"]
    numbers = client.post("/translate", json={"q": "1234 5678", "source": "es", "target": "en"})
    assert numbers.json() == {"translatedText": "1234 5678"}
    assert len(backend.jobs) == 1  # nothing to decode: no job


def test_dotted_identifiers_never_reach_the_model(client, backend):
    text = "Abra config.yaml y ejecute os.path.join() desde org.gnome.Settings."
    response = client.post("/translate", data={"q": text, "source": "es", "target": "en"})
    assert response.json() == {
        "translatedText": "ABRA config.yaml Y EJECUTE os.path.join() DESDE org.gnome.Settings."
    }
    assert backend.jobs[-1].texts == ["Abra", "y ejecute", "desde"]
