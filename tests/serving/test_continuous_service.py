"""`batching: continuous` through a real (local) Ray Serve and HTTP, with tiny untrained models."""

from __future__ import annotations

import concurrent.futures
import copy

import httpx
import pytest

from tests.serving.test_service import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(tiny_model_store):
    import ray
    from ray import serve

    from service.serving.launch import DEFAULT_CONFIG, load_config, start

    config = copy.deepcopy(load_config(DEFAULT_CONFIG))
    app = config["applications"][0]
    app["args"]["store"] = str(tiny_model_store)
    app["args"]["api"].update(default_beam_size=1, default_max_length=8, cache_size=0)
    # float32: a sentence in a crowd must equal it alone (int8's depend on batch-mates).
    app["args"]["runtime"]["dtype"] = "float32"
    for model in app["args"]["models"]:
        model["batching"] = "continuous"
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.2
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        base = start(config, host="127.0.0.1", port=free_port())
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client
    finally:
        serve.shutdown()
        ray.shutdown()


def translate(client, payload):
    response = client.post("/v1/translate", json={"max_length": 8, **payload})
    assert response.status_code == 200, response.text
    return response.json()


def test_concurrent_requests_share_steps_and_equal_a_request_alone(client):
    texts = [f"la casa {'del rey ' * (i % 5)}número {i}" for i in range(12)]
    payloads = [
        {"text": text, "beam_size": 1 + i % 3, "return_scores": True, "model": model}
        for i, text in enumerate(texts)
        for model in ("transformer", "rnnsearch")
    ]
    with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
        together = list(pool.map(lambda p: translate(client, p), payloads))
    for payload, answer in zip(payloads[:4], together[:4], strict=True):
        alone = translate(client, payload)["translations"][0]
        assert answer["translations"][0]["text"] == alone["text"]
        assert answer["translations"][0]["score"] == pytest.approx(alone["score"], abs=1e-4)
    serving = {m["id"]: m["serving"] for m in client.get("/v1/models").json()["models"]}
    for model in ("es-en/transformer", "es-en/rnnsearch"):
        assert serving[model]["batching"] == "continuous"
        assert serving[model]["running"] == 0
    assert max(s["largest_batch"] for s in serving.values()) > 1
