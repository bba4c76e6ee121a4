"""The whole service on a real (local) Ray Serve, through HTTP, with tiny untrained models.

Ray and the applications start once for this module (that is the slow part). Two applications
share the cluster: `translation` at / is deploy/serve_config.yaml with test-sized settings;
`strict` at /strict serves one model with a one-request capacity and a 0.5 s timeout, so that
overload (503) and timeout (504) can be provoked without disturbing the other tests.
"""

from __future__ import annotations

import concurrent.futures
import copy
import socket
import time

import httpx
import pytest
import torch

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST = {"max_length": 8, "beam_size": 1}  # untrained models never stop early: keep decodes short
# Slow on purpose (seconds of beam search), so the strict app's 0.5 s timeout always passes first.
SLOW = {
    "text": ["la casa del rey " * 20] * 8,
    "beam_size": 8,
    "max_length": 512,
    "return_alignment": True,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def urls(tiny_model_store):
    import ray
    from ray import serve

    from service.serving.app import build_app_with_options
    from service.serving.launch import DEFAULT_CONFIG, load_config, start

    config = copy.deepcopy(load_config(DEFAULT_CONFIG))
    app = config["applications"][0]
    app["args"]["store"] = str(tiny_model_store)
    # No translation cache: the batching tests need every text decoded (test_text_service
    # covers the cache).
    app["args"]["api"].update(default_beam_size=1, default_max_length=8, cache_size=0)
    # float32: batched texts must equal the same texts alone (int8's depend on batch-mates).
    app["args"]["runtime"]["dtype"] = "float32"
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.2
        if deployment["name"] == "es-en-transformer":
            # A wide window so that concurrent requests surely meet in one batch.
            deployment["user_config"] = {"max_batch_size": 32, "batch_wait_timeout_s": 0.3}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        base = start(config, host="127.0.0.1", port=free_port())
        strict_args = {
            "store": str(tiny_model_store),
            # Its own runtime: /strict/v1/models must report the dtype served.
            "models": [{"id": "es-en/rnnsearch", "runtime": {"device": "cpu", "dtype": "int8"}}],
            "default_model": "rnnsearch",
            "api": {
                "request_timeout_s": 0.5,
                "retry_after_s": 2,
                "default_beam_size": 1,
                "default_max_length": 8,
            },
        }
        strict_options = {
            "Ingress": {"ray_actor_options": {"num_cpus": 0.1}},
            "es-en-rnnsearch": {
                "ray_actor_options": {"num_cpus": 0.2},
                "max_ongoing_requests": 1,
                "max_queued_requests": 1,
                "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.0},
            },
        }
        serve.run(
            build_app_with_options(strict_args, strict_options),
            name="strict",
            route_prefix="/strict",
            blocking=False,
        )
        yield {"base": base, "strict": base + "/strict", "config": config}
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(urls):
    with httpx.Client(base_url=urls["base"], timeout=60) as client:
        yield client


def translate(client, payload, **kwargs):
    return client.post("/v1/translate", json={**FAST, **payload}, **kwargs)


def assert_error(response, status, kind, field=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["field"]) == (kind, field), error
    assert error["message"]
    return error


# Happy paths.


def test_health_ready_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "ready": True,
        "models": {"es-en/rnnsearch@1": True, "es-en/transformer@1": True},
    }
    assert "swagger" in client.get("/docs").text.lower()
    assert "/v1/translate" in client.get("/openapi.json").json()["paths"]


def test_models(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"es-en/transformer", "es-en/rnnsearch"}
    transformer = models["es-en/transformer"]
    assert transformer["default"] and not models["es-en/rnnsearch"]["default"]
    assert (transformer["source"], transformer["target"], transformer["version"]) == ("es", "en", 1)
    assert transformer["parameters"] > 0 and transformer["metrics"]["test"]["bleu"] == 0.0
    assert transformer["status"] == "ready"
    if not torch.cuda.is_available():
        assert transformer["serving"]["device"] == "cpu"
        assert transformer["serving"]["dtype"] == "float32"
    assert transformer["serving"]["max_batch_size"] == 32  # the live user_config
    assert transformer["serving"]["batch_wait_timeout_s"] == 0.3


def test_models_report_a_models_own_runtime(client, urls):
    [strict] = client.get(urls["strict"] + "/v1/models").json()["models"]
    assert strict["id"] == "es-en/rnnsearch"
    assert (strict["serving"]["device"], strict["serving"]["dtype"]) == ("cpu", "int8")


def test_translate_string(client):
    response = translate(client, {"text": "la casa del rey"}, headers={"X-Request-ID": "req-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-request-id"] == "req-1" == body["id"]
    assert (body["model"], body["version"], body["source"], body["target"]) == (
        "es-en/transformer",
        1,
        "es",
        "en",
    )
    [result] = body["translations"]
    assert isinstance(result["text"], str) and result["score"] is None
    assert result["output_tokens"] <= 8
    assert body["usage"]["input_tokens"] == result["input_tokens"] > 1
    timing = body["timing"]
    assert timing["total_ms"] >= timing["compute_ms"] > 0 and timing["queue_ms"] >= 0
    assert timing["batch_sizes"] == [1]
    generated = translate(client, {"text": "la casa"})
    assert generated.headers["x-request-id"] == generated.json()["id"]


def test_translate_list_nbest_scores_alignment(client):
    texts = ["el perro", "la mujer y el hijo dijo"]
    response = translate(
        client,
        {
            "text": texts,
            "model": "rnnsearch",
            "version": 1,
            "source": "es",
            "target": "en",
            "beam_size": 3,
            "n_best": 3,
            "return_scores": True,
            "return_alignment": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "es-en/rnnsearch"
    assert len(body["translations"]) == 2
    for result in body["translations"]:
        assert isinstance(result["score"], float)
        assert len(result["alternatives"]) == 2
        assert all(isinstance(a["score"], float) for a in result["alternatives"])
        alignment = result["alignment"]
        assert alignment["source_tokens"][-1] == "</s>"
        assert len(alignment["source_tokens"]) == result["input_tokens"]
        assert len(alignment["weights"]) == len(alignment["target_tokens"])
        for row in alignment["weights"]:
            assert len(row) == len(alignment["source_tokens"])
            assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_libretranslate(client):
    response = client.post(
        "/translate", json={"q": "la casa", "source": "es", "target": "en", "format": "text"}
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"translatedText"}
    assert isinstance(response.json()["translatedText"], str)
    form = client.post(
        "/translate", data={"q": "la casa", "source": "auto", "target": "en", "api_key": ""}
    )
    assert form.json()["translatedText"] == response.json()["translatedText"]
    assert form.json()["detectedLanguage"]["language"] == "es"
    many = client.post(
        "/translate", json={"q": ["la", "casa"], "source": "es", "target": "en", "alternatives": 1}
    )
    assert len(many.json()["translatedText"]) == 2 and len(many.json()["alternatives"]) == 2
    assert client.get("/languages").json() == [
        {"code": "en", "name": "English", "targets": []},
        {"code": "es", "name": "Spanish", "targets": ["en"]},
    ]


def test_compare_side_by_side(client):
    response = client.post(
        "/v1/compare", json={"text": ["la casa", "el perro"], "return_scores": True, **FAST}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["model"] for r in results] == ["es-en/rnnsearch", "es-en/transformer"]
    for result in results:
        assert result["error"] is None and result["latency_ms"] > 0
        assert len(result["translations"]) == 2
        assert all(isinstance(t["score"], float) for t in result["translations"])
    alone = translate(client, {"text": ["la casa", "el perro"], "model": "rnnsearch"}).json()
    assert [t["text"] for t in results[0]["translations"]] == [
        t["text"] for t in alone["translations"]
    ]
    unknown = client.post("/v1/compare", json={"text": "a", "models": ["transformer", "marian"]})
    assert_error(unknown, 404, "model_not_found", "models[1]")


def test_feedback(client):
    served = translate(client, {"text": "la casa", "model": "rnnsearch"}).json()
    rated = client.post("/v1/feedback", json={"request_id": served["id"], "rating": 4})
    assert rated.status_code == 200, rated.text
    assert (rated.json()["model"], rated.json()["variant"]) == ("es-en/rnnsearch", None)
    again = client.post("/v1/feedback", json={"request_id": served["id"], "rating": 4})
    assert_error(again, 409, "feedback_already_recorded", "request_id")
    unknown = client.post("/v1/feedback", json={"request_id": "unknown-id", "rating": 4})
    assert_error(unknown, 404, "request_not_found", "request_id")
    bad = client.post("/v1/feedback", json={"request_id": served["id"], "rating": 9})
    assert_error(bad, 422, "validation_error", "rating")


# Every error the API promises.


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"text": ""}, "text"),
        ({"text": " \n "}, "text"),
        ({"text": ["ok", "\t"]}, "text[1]"),
        ({"text": "x" * 20001}, "text"),
        ({"text": ["ok", "ok", "y" * 20001]}, "text[2]"),
        ({"text": ["a"] * 65}, "text"),
        ({"text": []}, "text"),
        ({"text": 42}, "text"),
        ({"text": ["a", None]}, "text[1]"),
        ({"text": "a", "beam_size": 0}, "beam_size"),
        ({"text": "a", "beam_size": 9}, "beam_size"),
        ({"text": "a", "beam_size": "big"}, "beam_size"),
        ({"text": "a", "max_length": 0}, "max_length"),
        ({"text": "a", "max_length": 100000}, "max_length"),
        ({"text": "a", "beam_size": 2, "n_best": 3}, "n_best"),
        ({"text": "a", "return_scores": "yes"}, "return_scores"),
        ({"text": "a", "version": 0}, "version"),
        ({"text": "a", "model": "../../etc/passwd"}, "model"),
        ({"text": "a", "source": 7}, "source"),
    ],
)
def test_validation_errors(client, payload, field):
    assert_error(translate(client, payload), 422, "validation_error", field)


def test_malformed_bodies(client):
    response = client.post(
        "/v1/translate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "validation_error", "body")
    assert_error(client.post("/v1/translate", json=["a"]), 422, "validation_error", "body")


@pytest.mark.parametrize(
    "payload, kind, field",
    [
        ({"text": "a", "model": "gpt4"}, "model_not_found", "model"),
        ({"text": "a", "model": "es-en/marian"}, "model_not_found", "model"),
        ({"text": "a", "version": 99}, "version_not_found", "version"),
        ({"text": "a", "model": "rnnsearch", "version": 2}, "version_not_found", "version"),
        ({"text": "a", "source": "fr"}, "language_pair_not_supported", "source"),
        ({"text": "a", "target": "de"}, "language_pair_not_supported", "target"),
    ],
)
def test_not_found(client, payload, kind, field):
    assert_error(translate(client, payload), 404, kind, field)


def test_oversized_body(client):
    body = b'{"text": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    response = client.post(
        "/v1/translate", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large", "body")


def test_unknown_route(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")


def test_odd_inputs_never_fail(client):
    odd = [
        "🙂🙂🙂",
        "\u0000\u0001",
        "x " * 1000,
        "...",
        "مرحبا",
        "a\u0301\u0301\u0301",
        "¿¡ " * 300,
        "\u200b\u200bhola",
        "<b>html</b>",
        "1234567890 " * 100,
    ]
    for model in ("transformer", "rnnsearch"):
        response = translate(
            client,
            {
                "text": odd,
                "model": model,
                "beam_size": 2,
                "n_best": 2,
                "return_alignment": True,
                "return_scores": True,
            },
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["translations"]) == len(odd)
    # One word longer than max_source_tokens (256) cannot be split: a 422, never truncated.
    word = translate(client, {"text": ["ok", "x" * 2000]})
    assert_error(word, 422, "validation_error", "text[1]")
    assert "source limit of 256 tokens" in word.json()["error"]["message"]
    assert client.get("/readyz").status_code == 200


# Batching.


def test_concurrent_requests_share_batches(client):
    texts = [f"la casa {'del rey ' * (i % 5)}número {i}" for i in range(12)]
    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
        responses = list(pool.map(lambda t: translate(client, {"text": t}), texts))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    sizes = [r.json()["timing"]["batch_sizes"][0] for r in responses]
    assert max(sizes) > 1, sizes
    serving = {m["id"]: m["serving"] for m in client.get("/v1/models").json()["models"]}
    assert serving["es-en/transformer"]["largest_batch"] > 1


def test_batched_equals_unbatched(client):
    target = "el hombre fue a la ciudad"
    others = ["la", "dios dijo que la luz era buena y fue así", "el mar", "pan y vino en la mesa"]
    options = {"beam_size": 1, "max_length": 8, "return_scores": True}

    def best(response, index=0):
        assert response.status_code == 200, response.text
        result = response.json()["translations"][index]
        return result["text"], result["score"], response.json()["timing"]["batch_sizes"][index]

    alone_text, alone_score, alone_size = best(translate(client, {"text": target, **options}))
    assert alone_size == 1

    in_list = translate(client, {"text": [others[0], target, *others[1:]], **options})
    text, score, size = best(in_list, 1)
    assert size == len(others) + 1
    assert text == alone_text and score == pytest.approx(alone_score, abs=1e-4)

    payloads = [{"text": t, **options} for t in [target, *others]]
    with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
        responses = list(pool.map(lambda p: translate(client, p), payloads))
    text, score, size = best(responses[0])
    assert text == alone_text and score == pytest.approx(alone_score, abs=1e-4)
    assert max(best(r)[2] for r in responses) > 1


def test_decode_options_do_not_mix(client):
    """Greedy and beam requests in one window are decoded separately, each correctly."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        greedy = pool.submit(translate, client, {"text": "la casa", "return_scores": True})
        beam = pool.submit(translate, client, {"text": "la casa", "beam_size": 2, "n_best": 2})
        assert greedy.result().status_code == beam.result().status_code == 200
    assert len(beam.result().json()["translations"][0]["alternatives"]) == 1
    assert greedy.result().json()["translations"][0]["alternatives"] is None


def test_batching_settings_are_live(urls, client):
    """A new user_config reaches the replica through reconfigure.

    (Redeploying with `serve.run` restarts replicas; a config-file update through
    `serve deploy` that changes only user_config reconfigures them in place.)"""
    from ray import serve

    from service.serving.app import build_app_with_options
    from service.serving.launch import deployment_overrides

    def serving():
        models = client.get("/v1/models").json()["models"]
        return {m["id"]: m["serving"] for m in models}["es-en/transformer"]

    assert serving()["max_batch_size"] == 32
    app = copy.deepcopy(urls["config"]["applications"][0])
    overrides = deployment_overrides(app)
    overrides["es-en-transformer"]["user_config"] = {
        "max_batch_size": 7,
        "batch_wait_timeout_s": 0.05,
    }
    serve.run(
        build_app_with_options(app["args"], overrides),
        name=app["name"],
        route_prefix="/",
        blocking=False,
    )
    deadline = time.monotonic() + 60
    while (now := serving())["max_batch_size"] != 7 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (now["max_batch_size"], now["batch_wait_timeout_s"]) == (7, 0.05)
    assert translate(client, {"text": "la casa"}).status_code == 200


# Overload and timeouts (the strict application).


def test_timeout_is_504(urls):
    with httpx.Client(base_url=urls["strict"], timeout=60) as strict:
        started = time.monotonic()
        response = strict.post("/v1/translate", json=SLOW)
        elapsed = time.monotonic() - started
    assert_error(response, 504, "timeout")
    assert elapsed < 10


def test_overload_answers_503_fast(urls):
    def call(_):
        with httpx.Client(base_url=urls["strict"], timeout=60) as strict:
            started = time.monotonic()
            response = strict.post("/v1/translate", json=SLOW)
            return response, time.monotonic() - started

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    total = time.monotonic() - started
    statuses = [r.status_code for r, _ in results]
    assert set(statuses) <= {200, 503, 504}, statuses
    rejected = [(r, s) for r, s in results if r.status_code == 503]
    assert len(rejected) >= 8, statuses
    for response, seconds in rejected:
        assert_error(response, 503, "overloaded")
        assert response.headers["retry-after"] == "2"  # the strict app's api.retry_after_s
        assert seconds < 5
    assert total < 30  # nothing hangs


def test_replica_survives(urls):
    """After the timeouts and rejections the strict model serves again, same replica."""
    with httpx.Client(base_url=urls["strict"], timeout=60) as strict:
        deadline = time.monotonic() + 90
        while True:
            response = strict.post("/v1/translate", json={"text": "la casa"})
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "es-en/rnnsearch"
        assert strict.get("/readyz").status_code == 200
