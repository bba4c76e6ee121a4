"""A/B assignment, feedback, /v1/compare and per-request metrics, against a fake backend."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.experiments import (
    ExperimentConfig,
    ExperimentRouter,
    ServedLedger,
    ServedRecord,
    assign_variant,
    check_experiments,
    user_point,
)
from service.api.observability import MemoryRecorder
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ModelStatus, Overloaded, ServedModel
from service.decoding.translator import Candidate, Translation

MODELS = [
    ServedModel(
        "es-en-transformer", "es-en/transformer", 2, "transformer", "es", "en", 1000, default=True
    ),
    ServedModel("es-en-transformer-v1", "es-en/transformer", 1, "transformer", "es", "en", 1000),
    ServedModel("es-en-rnnsearch", "es-en/rnnsearch", 1, "rnnsearch", "es", "en", 500),
]
SETTINGS = ApiSettings(max_text_chars=50, max_items=4, max_body_bytes=4096, default_beam_size=1)
SPLIT = {
    "name": "tf-vs-rnn",
    "variants": [
        {"model": "transformer", "weight": 0.8},
        {"model": "rnnsearch", "weight": 0.2},
    ],
}


class FakeBackend:
    """Answers `<model name>: <TEXT>`; `failing` names models that answer 503."""

    def __init__(self):
        self.catalog = Catalog(MODELS)
        self.failing: set[str] = set()
        self.calls: list[str] = []

    async def translate(self, model, job):
        self.calls.append(model.label)
        if model.name in self.failing:
            raise Overloaded(f"model {model.id} is at capacity; retry shortly", retry_after_s=1)
        items = [
            ItemOutcome(
                Translation(
                    [Candidate(f"{model.name}: {text.upper()}", -1.0, len(text.split()), True)],
                    len(text.split()) + 1,
                ),
                0.001,
                0.002,
                len(job.texts),
                batch_id=1,
            )
            for text in job.texts
        ]
        return JobResult(items, model.id, model.version, wall_s=0.004)

    async def status(self):
        return {m.key: ModelStatus(ready=True) for m in MODELS}


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def recorder():
    return MemoryRecorder()


def make_client(backend, recorder, experiments=(), **kwargs):
    app = create_app(
        SETTINGS,
        Backends(backend.catalog, backend),
        experiments=[ExperimentConfig.model_validate(e) for e in experiments],
        recorder=recorder,
        **kwargs,
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(backend, recorder):
    with make_client(backend, recorder, [SPLIT]) as client:
        yield client


def translate(client, user=None, **payload):
    headers = {"X-User-ID": user} if user is not None else {}
    return client.post("/v1/translate", json={"text": "hola", **payload}, headers=headers)


def assert_error(response, status, kind, field=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["field"]) == (kind, field), error
    assert error["message"]
    return error


# Assignment.


def test_user_point_is_stable_and_salted():
    assert user_point("exp", "alice") == user_point("exp", "alice")
    assert 0 <= user_point("exp", "alice") < 1
    assert user_point("exp", "alice") != user_point("other", "alice")


def test_assignment_is_a_pure_function_of_experiment_and_user():
    router = ExperimentRouter([ExperimentConfig.model_validate(SPLIT)], Catalog(MODELS))
    experiment = router.by_route["/v1/translate"]
    again = ExperimentRouter([ExperimentConfig.model_validate(SPLIT)], Catalog(MODELS))
    for user in ("alice", "bob", "carol"):
        variant = assign_variant(experiment, user)
        assert variant == assign_variant(again.by_route["/v1/translate"], user)
        assert experiment.assign(user).variant == variant.name
        assert variant == experiment.pick(user_point("tf-vs-rnn", user))


def test_same_user_always_gets_the_same_variant(client, recorder):
    for user in ("alice", "bob", "carol", "dave"):
        variants = {translate(client, user).json()["variant"] for _ in range(20)}
        assert len(variants) == 1, (user, variants)
    assert {a["assignment"] for a in recorder.assignments} == {"sticky"}
    assert len(recorder.assignments) == 80


def test_weights_are_respected_over_many_users():
    router = ExperimentRouter([ExperimentConfig.model_validate(SPLIT)], Catalog(MODELS))
    experiment = router.by_route["/v1/translate"]
    shares = Counter(experiment.assign(f"user-{i}").variant for i in range(1000))
    assert set(shares) == {"transformer", "rnnsearch"}
    # Binomial standard deviation at n=1000, p=0.2 is 0.0126: 0.04 is over three of them.
    assert shares["rnnsearch"] / 1000 == pytest.approx(0.2, abs=0.04)
    three_way = ExperimentConfig.model_validate(
        {
            "name": "three",
            "variants": [
                {"model": "transformer", "weight": 1},
                {"model": "transformer", "version": 1, "weight": 1},
                {"model": "rnnsearch", "weight": 2},
            ],
        }
    )
    experiment = ExperimentRouter([three_way], Catalog(MODELS)).by_route["/v1/translate"]
    shares = Counter(experiment.assign(f"user-{i}").variant for i in range(2000))
    assert shares["rnnsearch"] / 2000 == pytest.approx(0.5, abs=0.04)
    assert shares["transformer@1"] / 2000 == pytest.approx(0.25, abs=0.04)
    assert experiment.assign("x").model in MODELS


def test_response_names_the_variant(client, backend):
    response = translate(client, "alice")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["experiment"] == "tf-vs-rnn" and body["variant"] in ("transformer", "rnnsearch")
    assert body["model"] == f"es-en/{body['variant']}"
    assert body["translations"][0]["text"].startswith(body["variant"])
    assert response.headers["x-experiment"] == "tf-vs-rnn"
    assert response.headers["x-variant"] == body["variant"]


def test_without_user_header_assignment_is_random_but_reported(backend, recorder):
    with make_client(backend, recorder, [SPLIT]) as client:
        variants = Counter(translate(client).json()["variant"] for _ in range(200))
    assert set(variants) == {"transformer", "rnnsearch"}
    assert variants["rnnsearch"] < variants["transformer"]
    assert {a["assignment"] for a in recorder.assignments} == {"random"}


def test_explicit_model_or_version_bypasses_the_experiment(client, recorder):
    for payload, model, version in [
        ({"model": "rnnsearch"}, "es-en/rnnsearch", 1),
        ({"model": "es-en/transformer"}, "es-en/transformer", 2),
        ({"version": 1}, "es-en/transformer", 1),
    ]:
        response = translate(client, "alice", **payload)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model"], body["version"]) == (model, version)
        assert body["experiment"] is None and body["variant"] is None
        assert "x-variant" not in response.headers
    assert recorder.assignments == []


def test_disabled_experiment_and_unsplit_routes(backend, recorder):
    with make_client(backend, recorder, [{**SPLIT, "enabled": False}]) as client:
        body = translate(client, "alice").json()
        assert (body["model"], body["experiment"]) == ("es-en/transformer", None)
    with make_client(backend, recorder, [SPLIT]) as client:
        response = client.post("/translate", json={"q": "hola", "target": "en"})
        assert response.status_code == 200 and "x-variant" not in response.headers


def test_experiment_on_the_libretranslate_route(backend, recorder):
    experiment = {**SPLIT, "routes": ["/translate"], "user_header": "X-Client"}
    with make_client(backend, recorder, [experiment]) as client:
        response = client.post(
            "/translate", json={"q": "hola", "target": "en"}, headers={"X-Client": "bob"}
        )
        assert response.status_code == 200, response.text
        variant = response.headers["x-variant"]
        assert response.json()["translatedText"].startswith(variant)
        assert translate(client, "bob").json()["experiment"] is None  # /v1/translate not split


def test_bad_experiment_configs_are_refused():
    def build(*experiments):
        check_experiments([ExperimentConfig.model_validate(e) for e in experiments], MODELS)

    build(SPLIT)
    with pytest.raises(ValueError, match="no served model 'marian'"):
        build({"name": "x", "variants": [{"model": "marian", "weight": 1}]})
    with pytest.raises(ValueError, match="not served at version 7"):
        build({"name": "x", "variants": [{"model": "rnnsearch", "version": 7, "weight": 1}]})
    with pytest.raises(ValueError, match="both split /v1/translate"):
        build(SPLIT, {**SPLIT, "name": "again"})
    with pytest.raises(ValueError, match="names must be unique"):
        build(SPLIT, SPLIT)
    build(SPLIT, {**SPLIT, "name": "off", "enabled": False})
    for bad in [
        {**SPLIT, "variants": [{"model": "transformer", "weight": 0}]},
        {**SPLIT, "variants": [{"model": "transformer", "weight": 1}] * 2},
        {**SPLIT, "variants": []},
        {**SPLIT, "name": "has space"},
        {**SPLIT, "routes": ["/v1/compare"]},
        {**SPLIT, "user_header": "X User"},
        {**SPLIT, "variants": [{"model": "../etc", "weight": 1}]},
    ]:
        with pytest.raises(ValueError):
            ExperimentConfig.model_validate(bad)


# Feedback.


def test_feedback_is_recorded_per_variant(client, recorder):
    response = translate(client, "alice", text="la casa")
    body = response.json()
    rated = client.post("/v1/feedback", json={"request_id": body["id"], "rating": 5})
    assert rated.status_code == 200, rated.text
    assert rated.json() == {
        "request_id": body["id"],
        "rating": 5,
        "model": body["model"],
        "version": body["version"],
        "experiment": "tf-vs-rnn",
        "variant": body["variant"],
    }
    [(labels, rating)] = recorder.feedbacks
    assert rating == 5
    assert labels == {
        "model": body["model"],
        "version": str(body["version"]),
        "experiment": "tf-vs-rnn",
        "variant": body["variant"],
    }
    again = client.post("/v1/feedback", json={"request_id": body["id"], "rating": 1})
    assert_error(again, 409, "feedback_already_recorded", "request_id")
    assert len(recorder.feedbacks) == 1


def test_feedback_outside_experiments_and_on_libretranslate(client, recorder):
    plain = translate(client, model="rnnsearch").json()
    rated = client.post("/v1/feedback", json={"request_id": plain["id"], "rating": 2})
    assert rated.json()["variant"] is None and rated.json()["model"] == "es-en/rnnsearch"
    lt = client.post("/translate", json={"q": "hola", "target": "en"})
    rated = client.post(
        "/v1/feedback",
        json={"request_id": lt.headers["x-request-id"], "rating": 3, "comment": "ok"},
    )
    assert rated.status_code == 200, rated.text
    assert [labels["experiment"] for labels, _ in recorder.feedbacks] == ["none", "none"]


def test_feedback_errors(client):
    assert_error(
        client.post("/v1/feedback", json={"request_id": "never-seen", "rating": 3}),
        404,
        "request_not_found",
        "request_id",
    )
    known = translate(client, "alice").json()["id"]
    for payload, field in [
        ({"request_id": known, "rating": 0}, "rating"),
        ({"request_id": known, "rating": 6}, "rating"),
        ({"request_id": known, "rating": "5"}, "rating"),
        ({"request_id": known, "rating": 4.5}, "rating"),
        ({"request_id": known, "rating": True}, "rating"),
        ({"request_id": known}, "rating"),
        ({"rating": 3}, "request_id"),
        ({"request_id": "bad id!", "rating": 3}, "request_id"),
        ({"request_id": known, "rating": 3, "comment": "x" * 2001}, "comment"),
        ({"request_id": known, "rating": 3, "stars": 3}, "stars"),
    ]:
        assert_error(client.post("/v1/feedback", json=payload), 422, "validation_error", field)
    # None of those used up the one rating the request may get.
    assert client.post("/v1/feedback", json={"request_id": known, "rating": 3}).status_code == 200


def test_ledger_is_bounded_lru():
    ledger = ServedLedger(capacity=2)
    for request_id in ("a", "b"):
        ledger.remember(request_id, ServedRecord(MODELS[0], None, None))
    ledger.remember("a", ServedRecord(MODELS[2], None, None))  # refreshes a
    ledger.remember("c", ServedRecord(MODELS[0], None, None))  # evicts b
    assert ledger.get("b") is None and len(ledger) == 2
    assert ledger.get("a").model == MODELS[2] and ledger.get("c") is not None
    off = ServedLedger(capacity=0)
    off.remember("a", ServedRecord(MODELS[0], None, None))
    assert off.get("a") is None


def test_feedback_forgets_beyond_capacity(backend, recorder):
    with make_client(backend, recorder, feedback_capacity=1) as client:
        first = translate(client).json()["id"]
        translate(client)
        error = assert_error(
            client.post("/v1/feedback", json={"request_id": first, "rating": 3}),
            404,
            "request_not_found",
            "request_id",
        )
        assert "last 1 translations" in error["message"]


# Compare.


def test_compare_defaults_to_every_served_model(client, backend):
    response = client.post("/v1/compare", json={"text": "la casa", "return_scores": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == response.headers["x-request-id"]
    results = body["results"]
    # Newest version of each model id, in catalog order.
    assert [(r["model"], r["version"]) for r in results] == [
        ("es-en/rnnsearch", 1),
        ("es-en/transformer", 2),
    ]
    for result in results:
        [translation] = result["translations"]
        assert translation["text"] == f"{result['model'].split('/')[1]}: LA CASA"
        assert translation["score"] == -1.0
        assert result["latency_ms"] > 0 and result["error"] is None
        assert result["usage"]["input_tokens"] == 3 and result["timing"]["batch_sizes"] == [1]
        assert (result["source"], result["target"], result["arch"]) == ("es", "en", result["arch"])
    assert sorted(backend.calls) == ["es-en/rnnsearch@1", "es-en/transformer@2"]


def test_compare_named_models_and_versions(client):
    response = client.post(
        "/v1/compare",
        json={
            "text": ["uno", "dos"],
            "models": ["transformer@1", "transformer", "es-en/rnnsearch"],
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["model"], r["version"]) for r in results] == [
        ("es-en/transformer", 1),
        ("es-en/transformer", 2),
        ("es-en/rnnsearch", 1),
    ]
    assert all(len(r["translations"]) == 2 for r in results)
    assert results[0]["translations"][0]["score"] is None


def test_compare_reports_a_failing_model_beside_the_others(client, backend):
    backend.failing.add("rnnsearch")
    response = client.post("/v1/compare", json={"text": "hola"})
    assert response.status_code == 200, response.text
    failed, ok = response.json()["results"]
    assert failed["model"] == "es-en/rnnsearch" and failed["translations"] is None
    assert failed["error"]["type"] == "overloaded" and failed["latency_ms"] >= 0
    assert ok["translations"][0]["text"] == "transformer: HOLA" and ok["error"] is None


@pytest.mark.parametrize(
    "payload, status, kind, field",
    [
        ({"text": "a", "models": ["transformer", "gpt4"]}, 404, "model_not_found", "models[1]"),
        ({"text": "a", "models": ["transformer@9"]}, 404, "version_not_found", "models[0]"),
        (
            {"text": "a", "models": ["rnnsearch", "rnnsearch@1"]},
            422,
            "validation_error",
            "models[1]",
        ),
        ({"text": "a", "target": "de"}, 404, "language_pair_not_supported", "target"),
        ({"text": "a", "models": []}, 422, "validation_error", "models"),
        ({"text": "a", "models": ["transformer"] * 9}, 422, "validation_error", "models"),
        ({"text": "a", "models": ["../x"]}, 422, "validation_error", "models[0]"),
        ({"text": "a", "models": ["transformer@0"]}, 422, "validation_error", "models[0]"),
        ({"text": "a", "models": "transformer"}, 422, "validation_error", "models"),
        ({"text": ""}, 422, "validation_error", "text"),
        ({"text": ["a"] * 5}, 422, "validation_error", "text"),
        ({"text": "a", "beam_size": 9}, 422, "validation_error", "beam_size"),
        ({"text": "a", "n_best": 2}, 422, "validation_error", "n_best"),
        ({}, 422, "validation_error", "text"),
    ],
)
def test_compare_errors(client, payload, status, kind, field):
    assert_error(client.post("/v1/compare", json=payload), status, kind, field)


# Per-request metrics.


def test_every_request_is_counted_with_route_status_and_variant(client, recorder):
    translate(client, "alice")
    translate(client, model="rnnsearch")
    translate(client, text="")
    client.post("/v1/compare", json={"text": "hola"})
    client.get("/v1/models")
    client.get("/nowhere")
    client.post(
        "/v1/translate",
        content=b'{"text": "' + b"a" * 5000 + b'"}',
        headers={"content-type": "application/json"},
    )
    seen = [(labels["route"], labels["status"], labels["model"]) for labels, _ in recorder.requests]
    variant_of_alice = recorder.requests[0][0]["variant"]
    assert seen == [
        ("/v1/translate", "200", f"es-en/{variant_of_alice}"),
        ("/v1/translate", "200", "es-en/rnnsearch"),
        ("/v1/translate", "422", "none"),
        ("/v1/compare", "200", "none"),
        ("/v1/models", "200", "none"),
        ("unmatched", "404", "none"),
        ("/v1/translate", "413", "none"),
    ]
    first = recorder.requests[0][0]
    assert first["experiment"] == "tf-vs-rnn"
    assert first["version"] == {"es-en/transformer": "2", "es-en/rnnsearch": "1"}[first["model"]]
    assert recorder.requests[1][0]["experiment"] == "none"
    assert all(seconds >= 0 for _, seconds in recorder.requests)
    assert set(recorder.requests[0][0]) == {
        "model",
        "version",
        "route",
        "status",
        "experiment",
        "variant",
    }


def test_overloaded_model_is_counted_as_503(client, backend, recorder):
    backend.failing.add("rnnsearch")
    assert translate(client, model="rnnsearch").status_code == 503
    [(labels, _)] = recorder.requests
    assert (labels["status"], labels["model"]) == ("503", "es-en/rnnsearch")


def test_random_assignment_is_seedable():
    config = ExperimentConfig.model_validate(SPLIT)

    def draws(seed):
        router = ExperimentRouter([config], Catalog(MODELS), random.Random(seed))
        return [router.by_route["/v1/translate"].assign(None).variant for _ in range(50)]

    assert draws(7) == draws(7)
