"""The FastAPI app against a fake backend: every route and every error shape, no Ray."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.settings import ApiSettings
from service.contracts import (
    DecodeFailed,
    ItemOutcome,
    JobResult,
    ModelStatus,
    ModelUnavailable,
    Overloaded,
    ServedModel,
    Timeout,
    TranslationJob,
)
from service.decoding.translator import Alignment, Candidate, Translation

MODELS = [
    ServedModel(
        "es-en-transformer",
        "es-en/transformer",
        2,
        "transformer",
        "es",
        "en",
        1000,
        {"test": {"bleu": 30.0}},
        max_output_tokens=64,
        default=True,
    ),
    ServedModel("es-en-transformer-v1", "es-en/transformer", 1, "transformer", "es", "en", 1000),
    ServedModel("es-en-rnnsearch", "es-en/rnnsearch", 1, "rnnsearch", "es", "en", 500),
]


class FakeBackend:
    """Translates by upper-casing; records jobs; raises `fail_with` when set."""

    def __init__(self):
        self.catalog = Catalog(MODELS)
        self.jobs: list[tuple[ServedModel, TranslationJob]] = []
        self.fail_with: Exception | None = None
        self.ready = True

    async def translate(self, model, job):
        self.jobs.append((model, job))
        if self.fail_with is not None:
            raise self.fail_with
        items = []
        for text in job.texts:
            words = text.split()
            candidates = [
                Candidate(
                    text=text.upper() + ("" if rank == 0 else f" #{rank}"),
                    score=-0.5 * (rank + 1),
                    tokens=len(words),
                    finished=True,
                    alignment=Alignment(
                        words + ["</s>"],
                        words + ["</s>"],
                        [[1.0 / (len(words) + 1)] * (len(words) + 1)] * (len(words) + 1),
                    ),
                )
                for rank in range(job.options.n_best)
            ]
            items.append(
                ItemOutcome(
                    Translation(candidates, len(words) + 1),
                    0.001,
                    0.002,
                    len(job.texts),
                    batch_id=1,
                )
            )
        return JobResult(items, model.id, model.version, wall_s=0.004)

    async def status(self):
        return {m.key: ModelStatus(ready=self.ready, serving={"device": "cpu"}) for m in MODELS}


SETTINGS = ApiSettings(
    max_text_chars=50, max_items=4, max_body_bytes=4096, default_beam_size=2, default_max_length=32
)


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def client(backend):
    app = create_app(SETTINGS, Backends(backend.catalog, backend))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def assert_error(response, status, kind, field=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "field"}
    assert body["error"]["type"] == kind
    assert body["error"]["field"] == field
    assert body["error"]["message"]
    assert response.headers.get("x-request-id")
    return body["error"]


def test_translate_string(client, backend):
    response = client.post("/v1/translate", json={"text": "hola mundo"})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "es-en/transformer" and body["version"] == 2
    assert (body["source"], body["target"]) == ("es", "en")
    [translation] = body["translations"]
    assert translation["text"] == "HOLA MUNDO"
    assert translation["score"] is None and translation["alternatives"] is None
    assert translation["alignment"] is None
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    assert body["timing"]["batch_sizes"] == [1]
    assert body["timing"]["compute_ms"] == pytest.approx(2.0)
    assert body["timing"]["queue_ms"] == pytest.approx(2.0)  # replica wall time minus compute
    assert body["timing"]["total_ms"] > 0
    assert response.headers["x-request-id"] == body["id"]
    _, job = backend.jobs[0]
    assert (job.options.beam_size, job.options.max_length, job.options.n_best) == (2, 32, 1)


def test_translate_list_with_options(client, backend):
    response = client.post(
        "/v1/translate",
        json={
            "text": ["uno dos", "tres"],
            "model": "rnnsearch",
            "beam_size": 3,
            "n_best": 3,
            "max_length": 10,
            "return_scores": True,
            "return_alignment": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "es-en/rnnsearch"
    first = body["translations"][0]
    assert first["score"] == -0.5
    assert [a["text"] for a in first["alternatives"]] == ["UNO DOS #1", "UNO DOS #2"]
    assert [a["score"] for a in first["alternatives"]] == [-1.0, -1.5]
    alignment = first["alignment"]
    assert len(alignment["weights"]) == len(alignment["target_tokens"])
    assert all(len(row) == len(alignment["source_tokens"]) for row in alignment["weights"])
    _, job = backend.jobs[0]
    assert job.options.beam_size == 3 and job.options.return_alignment


def test_n_best_raises_default_beam(client, backend):
    assert client.post("/v1/translate", json={"text": "a", "n_best": 4}).status_code == 200
    assert backend.jobs[0][1].options.beam_size == 4


def test_version_and_full_id(client):
    body = client.post(
        "/v1/translate", json={"text": "a", "model": "es-en/transformer", "version": 1}
    ).json()
    assert (body["model"], body["version"]) == ("es-en/transformer", 1)


def test_client_request_id_is_echoed_and_bad_one_replaced(client):
    response = client.post("/v1/translate", json={"text": "a"}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123" and response.json()["id"] == "abc-123"
    response = client.post("/v1/translate", json={"text": "a"}, headers={"X-Request-ID": "bad id!"})
    assert response.headers["x-request-id"] != "bad id!"
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"text": ""}, "text"),
        ({"text": "  "}, "text"),
        ({"text": ["ok", ""]}, "text[1]"),
        ({"text": "x" * 51}, "text"),
        ({"text": ["ok", "x" * 51]}, "text[1]"),
        ({"text": ["a"] * 5}, "text"),
        ({"text": 3}, "text"),
        ({"text": "a", "beam_size": 9}, "beam_size"),
        ({"text": "a", "beam_size": "2"}, "beam_size"),
        ({"text": "a", "n_best": 0}, "n_best"),
        ({"text": "a", "max_length": 65}, "max_length"),  # the model's own limit is 64
        ({"text": "a", "max_length": -1}, "max_length"),
        ({"text": "a", "return_alignment": 1}, "return_alignment"),
        ({"text": "a", "model": "A/../b"}, "model"),
        ({"text": "a", "unknown": 1}, "unknown"),
        ([], "body"),
    ],
)
def test_validation_errors(client, backend, payload, field):
    assert_error(client.post("/v1/translate", json=payload), 422, "validation_error", field)
    assert not backend.jobs


def test_malformed_json_and_missing_body(client):
    response = client.post(
        "/v1/translate", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_error(response, 422, "validation_error", "body")["message"]
    assert_error(client.post("/v1/translate"), 422, "validation_error", "body")


@pytest.mark.parametrize(
    "payload, kind, field",
    [
        ({"text": "a", "model": "gpt"}, "model_not_found", "model"),
        ({"text": "a", "model": "transformer", "version": 7}, "version_not_found", "version"),
        ({"text": "a", "source": "fr"}, "language_pair_not_supported", "source"),
        ({"text": "a", "target": "de"}, "language_pair_not_supported", "target"),
        ({"text": "a", "source": "en", "target": "es"}, "language_pair_not_supported", "source"),
    ],
)
def test_not_found(client, payload, kind, field):
    assert_error(client.post("/v1/translate", json=payload), 404, kind, field)


def test_oversized_body_is_413(client, backend):
    big = json.dumps({"text": ["x" * 50] * 4, "pad": "y" * 5000})
    assert_error(
        client.post("/v1/translate", content=big, headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
        "body",
    )

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    assert_error(
        client.post(
            "/v1/translate", content=chunks(), headers={"content-type": "application/json"}
        ),
        413,
        "payload_too_large",
        "body",
    )
    assert not backend.jobs


def test_overload_timeout_and_unexpected_errors(client, backend):
    backend.fail_with = Overloaded("busy", retry_after_s=2)
    response = client.post("/v1/translate", json={"text": "a"})
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "2"

    backend.fail_with = ModelUnavailable("restarting", retry_after_s=1)
    response = client.post("/v1/translate", json={"text": "a"})
    assert_error(response, 503, "model_unavailable")
    assert response.headers["retry-after"] == "1"

    backend.fail_with = Timeout("too slow")
    assert_error(client.post("/v1/translate", json={"text": "a"}), 504, "timeout")

    backend.fail_with = DecodeFailed("text[0] could not be translated", field="text[0]")
    assert_error(client.post("/v1/translate", json={"text": "a"}), 500, "internal_error", "text[0]")

    backend.fail_with = RuntimeError("boom")
    error = assert_error(client.post("/v1/translate", json={"text": "a"}), 500, "internal_error")
    assert "boom" not in error["message"]


def test_unknown_route_and_method(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/translate"), 405, "method_not_allowed")


def test_models_health_ready(client, backend):
    models = client.get("/v1/models").json()["models"]
    assert [(m["id"], m["version"]) for m in models] == [
        ("es-en/rnnsearch", 1),
        ("es-en/transformer", 2),
        ("es-en/transformer", 1),
    ]
    transformer = models[1]
    assert transformer["default"] and transformer["parameters"] == 1000
    assert transformer["metrics"] == {"test": {"bleu": 30.0}} and transformer["status"] == "ready"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    backend.ready = False
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["ready"] is False


def test_libretranslate_json_and_form(client, backend):
    response = client.post("/translate", json={"q": "hola", "source": "es", "target": "en"})
    assert response.status_code == 200
    assert response.json() == {"translatedText": "HOLA"}
    response = client.post(
        "/translate",
        json={
            "q": ["uno dos", "tres"],
            "source": "es",
            "target": "en",
            "alternatives": 2,
            "format": "text",
            "api_key": "",
        },
    )
    assert response.json() == {
        "translatedText": ["UNO DOS", "TRES"],
        "alternatives": [["UNO DOS #1", "UNO DOS #2"], ["TRES #1", "TRES #2"]],
    }
    response = client.post("/translate", data={"q": "hola", "source": "es", "target": "en"})
    assert response.json() == {"translatedText": "HOLA"}


def assert_lt_error(response, status, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert all(word in body["error"] for word in words), body["error"]


def test_libretranslate_errors(client):
    assert_lt_error(
        client.post("/translate", json={"q": "", "source": "es", "target": "en"}), 400, "q"
    )
    assert_lt_error(
        client.post(
            "/translate", json={"q": "a", "source": "es", "target": "en", "format": "markdown"}
        ),
        400,
        "format",
    )
    assert_lt_error(
        client.post("/translate", json={"q": "a", "source": "es", "target": "fr"}), 400, "target"
    )
    assert_lt_error(
        client.post("/translate", content=b"{", headers={"content-type": "application/json"}),
        400,
        "not valid JSON",
    )
    assert_lt_error(
        client.post("/translate", content=b"q=a", headers={"content-type": "text/plain"}),
        400,
        "text/plain",
    )


def test_languages(client):
    assert client.get("/languages").json() == [
        {"code": "en", "name": "English", "targets": []},
        {"code": "es", "name": "Spanish", "targets": ["en"]},
    ]


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/translate",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/translate",
        "/languages",
    } <= set(spec["paths"])
    responses = spec["paths"]["/v1/translate"]["post"]["responses"]
    assert {"200", "404", "413", "422", "503", "504"} <= set(responses)
