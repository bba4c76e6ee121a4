"""`source: auto`, /detect and /v1/detect, and the LibreTranslate drop-in, against fakes.

Both directions are served (es-en and en-es), so routing by the detected language is seen.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ServedModel
from service.decoding.translator import Candidate, Translation
from service.text.langid import Detector

ES_EN = ServedModel("es-en-transformer", "es-en/transformer", 1, "transformer", "es", "en", 10)
EN_ES = ServedModel("en-es-transformer", "en-es/transformer", 1, "transformer", "en", "es", 10)
ES_EN_DEFAULT = ServedModel(**{**ES_EN.__dict__, "default": True})


class TaggingBackend:
    """Answers `<model id>: TEXT`; records (model id, texts) per job."""

    def __init__(self, models):
        self.catalog = Catalog(models)
        self.jobs = []

    async def translate(self, model, job):
        self.jobs.append((model.id, list(job.texts)))
        items = [
            ItemOutcome(
                Translation(
                    [
                        Candidate(
                            f"[{model.source}>{model.target}] {t.upper()}" + suffix, -1.0, 2, True
                        )
                        for suffix in ["", " #1", " #2"][: job.options.n_best]
                    ],
                    3,
                ),
                0.0,
                0.001,
                1,
            )
            for t in job.texts
        ]
        return JobResult(items, model.id, model.version, 0.001)

    async def status(self):
        return {}


@pytest.fixture
def backend():
    return TaggingBackend([ES_EN_DEFAULT, EN_ES])


@pytest.fixture
def client(backend):
    app = create_app(ApiSettings(), Backends(backend.catalog, backend))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_detector_knows_served_languages_and_names_others():
    detector = Detector(["es", "en"])
    assert detector.detect("The Lord is my shepherd").language == "en"
    assert detector.detect("En el principio creó Dios los cielos y la tierra.").language == "es"
    french = detector.detect("Bonjour tout le monde, comment allez-vous aujourd'hui ?")
    assert (french.language, french.detected, french.detected_name) == (None, "fr", "French")
    blank = detector.detect("1234 !!")
    assert (blank.language, blank.detected) == (None, None)


def test_warm_builds_both_detectors_before_any_request():
    detector = Detector(["es", "en"])
    assert "_wide" not in vars(detector) and "_served" not in vars(detector)
    detector.warm()
    assert vars(detector)["_wide"] is not None and vars(detector)["_served"] is not None


def test_auto_routes_english_to_en_es_and_spanish_to_es_en(client, backend):
    body = client.post(
        "/translate", json={"q": "The Lord is my shepherd", "source": "auto", "target": "es"}
    ).json()
    assert body["translatedText"] == "[en>es] THE LORD IS MY SHEPHERD"
    assert body["detectedLanguage"]["language"] == "en"
    assert 50 < body["detectedLanguage"]["confidence"] <= 100
    body = client.post("/translate", json={"q": "Buenos días, amigo mío.", "target": "en"}).json()
    assert body["translatedText"] == "[es>en] BUENOS DÍAS, AMIGO MÍO."
    assert backend.jobs[-1][0] == "es-en/transformer"


def test_a_text_already_in_the_target_comes_back_unchanged(client, backend):
    text = "The Lord is my shepherd.\nI shall not want."
    body = client.post("/translate", json={"q": [text], "source": "auto", "target": "en"}).json()
    assert body["translatedText"] == [text]
    assert body["detectedLanguage"][0]["language"] == "en"
    assert backend.jobs == []  # no model was asked
    v1 = client.post("/v1/translate", json={"text": text, "source": "auto", "target": "en"}).json()
    [result] = v1["translations"]
    assert result["text"] == text and result["sentences"] == 2
    assert result["detected_language"]["language"] == "en"
    assert client.post("/translate", json={"q": "hola", "source": "en", "target": "en"}).json() == {
        "translatedText": "hola"
    }


def test_v1_names_the_detected_language_and_no_model_when_none_ran(client, backend):
    texts = ["The Lord is my shepherd.", "I shall not want."]
    body = client.post(
        "/v1/translate", json={"text": texts, "source": "auto", "target": "en"}
    ).json()
    assert (body["model"], body["version"], body["source"], body["target"]) == (
        None,
        None,
        "en",
        "en",
    )
    assert [t["text"] for t in body["translations"]] == texts
    assert body["usage"]["total_tokens"] == 0 and backend.jobs == []
    mixed = client.post(
        "/v1/translate", json={"text": ["Hola amigo, ¿qué tal?", *texts], "source": "auto"}
    ).json()
    assert (mixed["model"], mixed["source"]) == ("es-en/transformer", "es")


def test_v1_auto_with_and_without_a_target(client, backend):
    body = client.post(
        "/v1/translate", json={"text": "¿Dónde está la biblioteca?", "source": "auto"}
    ).json()
    assert body["model"] == "es-en/transformer"
    assert body["translations"][0]["detected_language"]["language"] == "es"
    body = client.post(
        "/v1/translate",
        json={"text": "Where is the library?", "source": "auto", "target": "es"},
    ).json()
    assert (body["model"], body["translations"][0]["text"]) == (
        "en-es/transformer",
        "[en>es] WHERE IS THE LIBRARY?",
    )


def test_a_text_in_no_served_language_is_an_error_naming_it(client, backend):
    french = "Bonjour tout le monde, comment allez-vous aujourd'hui ?"
    lt = client.post("/translate", json={"q": french, "source": "auto", "target": "en"})
    assert lt.status_code == 404
    assert "French" in lt.json()["error"] and "es, en" not in lt.json()["error"]
    v1 = client.post("/v1/translate", json={"text": ["Hola.", french], "source": "auto"})
    assert v1.status_code == 404
    error = v1.json()["error"]
    assert (error["type"], error["field"]) == ("language_not_supported", "text[1]")
    assert "French" in error["message"] and "served languages: en, es" in error["message"]
    assert backend.jobs == []


def test_libretranslate_sends_each_language_to_its_model(client, backend):
    texts = ["Buenos días, amigo mío.", "Good morning, my friend.", "Hola."]
    body = client.post("/translate", json={"q": texts, "target": "es"}).json()
    assert body["translatedText"] == [
        "Buenos días, amigo mío.",
        "[en>es] GOOD MORNING, MY FRIEND.",
        "Hola.",
    ]
    body = client.post("/translate", json={"q": [texts[1], "42", texts[0]], "target": "fr"})
    assert body.status_code == 400  # not a served target: invalid, as its schema says
    assert [
        d["language"]
        for d in client.post("/translate", json={"q": texts, "target": "en"}).json()[
            "detectedLanguage"
        ]
    ] == ["es", "en", "es"]
    assert sorted(job[0] for job in backend.jobs) == ["en-es/transformer", "es-en/transformer"]


def test_v1_refuses_mixed_languages(client):
    response = client.post(
        "/v1/translate",
        json={
            "text": ["Buenos días, amigo mío.", "Good morning, my friend."],
            "source": "auto",
            "target": "fr",
        },
    )
    assert (
        response.status_code == 422 and "several languages" in response.json()["error"]["message"]
    )


def test_detect_routes(client):
    lt = client.post("/detect", data={"q": "The Lord is my shepherd"}).json()
    assert [d["language"] for d in lt] == ["en", "es"]
    assert lt[0]["confidence"] > lt[1]["confidence"]
    many = client.post("/detect", json={"q": ["Hola, ¿qué tal?", "Hello there"]}).json()
    assert [d[0]["language"] for d in many] == ["es", "en"]
    assert client.post("/detect", json={}).status_code == 400
    v1 = client.post(
        "/v1/detect",
        json={
            "text": ["Hola, ¿qué tal?", "Bonjour tout le monde, comment allez-vous aujourd'hui ?"]
        },
    )
    first, second = v1.json()["detections"]
    assert first["language"] == "es" and [c["language"] for c in first["candidates"]] == [
        "es",
        "en",
    ]
    assert (second["language"], second["detected"]) == (None, "fr")


def test_libretranslate_reads_the_query_string_form_lists_and_api_key(client):
    response = client.post("/translate?q=Hola&source=es&target=en")
    assert response.status_code == 200, response.text
    assert response.json() == {"translatedText": "[es>en] HOLA"}
    form = client.post(
        "/translate",
        content=b"q=Uno&q=Dos&source=es&target=en&alternatives=1&api_key=xyz",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ).json()
    assert form == {
        "translatedText": ["[es>en] UNO", "[es>en] DOS"],
        "alternatives": [["[es>en] UNO #1"], ["[es>en] DOS #1"]],
    }
    # the body wins over the query string
    both = client.post("/translate?target=fr", json={"q": "Hola", "source": "es", "target": "en"})
    assert both.json() == {"translatedText": "[es>en] HOLA"}


def test_languages_frontend_settings_and_spec(client):
    assert client.get("/languages").json() == [
        {"code": "en", "name": "English", "targets": ["es"]},
        {"code": "es", "name": "Spanish", "targets": ["en"]},
    ]
    settings = client.get("/frontend/settings").json()
    assert settings["charLimit"] == 20000 and settings["keyRequired"] is False
    assert settings["language"]["source"] == {"code": "auto", "name": "Auto Detect"}
    assert settings["language"]["target"]["code"] == "en"
    spec = client.get("/spec").json()
    assert "/translate" in spec["paths"] and "/detect" in spec["paths"]
    schema = spec["paths"]["/translate"]["post"]["requestBody"]["content"]["application/json"]
    properties = schema["schema"]["properties"]
    assert properties["source"]["enum"] == ["auto", "en", "es"]
    assert properties["target"]["enum"] == ["en", "es"]
