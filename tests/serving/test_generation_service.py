"""Text generation on a real (local) Ray Serve, through HTTP, with a tiny untrained LM.

Ray and the application start once for this module. The application serves one translator
and the language model; its context is long (1,024 positions) so that a generation can be left
running long enough to disconnect from it.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import httpx
import openai
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LONG = 1000  # new tokens: seconds of work for the tiny model, enough to walk away from


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tiny_lm_store):
    import ray
    from ray import serve

    from service.serving.launch import start

    config = {
        "http_options": {"host": "127.0.0.1", "port": free_port()},
        "applications": [
            {
                "name": "generation",
                "route_prefix": "/",
                "args": {
                    "store": str(tiny_lm_store),
                    "models": [{"id": "es-en/rnnsearch"}],
                    "default_model": "rnnsearch",
                    "api": {"default_beam_size": 1, "default_max_length": 8},
                    "generation": {"id": "es-en/lm", "max_new_tokens_limit": LONG},
                    # float32: a generation in a crowd must equal it alone (int8's depends
                    # on its batch-mates).
                    "runtime": {"dtype": "float32"},
                },
                "deployments": [
                    {"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}},
                    {"name": "es-en-rnnsearch", "ray_actor_options": {"num_cpus": 0.2}},
                    {
                        "name": "es-en-lm",
                        "ray_actor_options": {"num_cpus": 0.2},
                        "user_config": {"max_batch_size": 8},
                    },
                ],
            }
        ],
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        yield start(config, host="127.0.0.1")
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as client:
        yield client


def lm_serving(client) -> dict:
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    return models["es-en/lm"]["serving"]


def generate(client, **payload):
    response = client.post("/v1/generate", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def sse_payloads(lines) -> list:
    out = []
    for line in lines:
        if line:
            assert line.startswith("data: "), line
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_error(response, status, kind, field=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["field"]) == (kind, field), error
    assert error["message"]


def test_the_language_model_is_listed_and_ready(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    lm = {m["id"]: m for m in body["data"]}["es-en/lm"]
    assert (lm["task"], lm["status"], lm["version"], lm["object"]) == (
        "generation",
        "ready",
        1,
        "model",
    )
    assert lm["created"] > 0 and lm["metrics"]["valid_perplexity"] == 1.0
    assert lm["serving"]["max_batch_size"] == 8 and lm["serving"]["context_tokens"] == 1024
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"] == {"es-en/rnnsearch@1": True, "es-en/lm@1": True}
    translated = client.post("/v1/translate", json={"text": "la casa"})  # still a translator
    assert translated.status_code == 200, translated.text


def test_a_seed_fixes_the_text(client):
    payload = {"prompt": "In the beginning", "max_new_tokens": 24, "temperature": 0.9, "seed": 5}
    first = generate(client, **payload)
    assert first["model"] == "es-en/lm" and first["finish_reason"] in ("length", "stop")
    usage = first["usage"]
    assert usage["prompt_tokens"] > 1 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert generate(client, **payload)["text"] == first["text"]
    assert generate(client, **{**payload, "seed": 6})["text"] != first["text"]
    greedy = {"prompt": "In the beginning", "max_new_tokens": 10, "temperature": 0}
    assert generate(client, **greedy)["text"] == generate(client, **greedy)["text"]


def test_streaming_sends_chunks_that_add_up_to_the_plain_answer(client):
    payload = {"prompt": "And God said", "max_new_tokens": 60, "temperature": 0.8, "seed": 11}
    plain = generate(client, **payload)
    with client.stream("POST", "/v1/generate", json={**payload, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_payloads(response.iter_lines())
    assert events[-1] == "[DONE]"
    *chunks, final = events[:-1]
    assert len([c for c in chunks if c["text"]]) >= 3, chunks  # text arrived before the end
    assert all(c["finish_reason"] is None and c["usage"] is None for c in chunks)
    assert final["finish_reason"] == plain["finish_reason"] and final["usage"] == plain["usage"]
    assert "".join(c["text"] for c in chunks) == plain["text"]


def test_concurrent_requests_share_decode_steps(client):
    seeded = {"prompt": "Let there be light", "max_new_tokens": 30, "temperature": 1.0, "seed": 3}
    alone = generate(client, **seeded)["text"]
    others = [
        {"prompt": f"verse {i}", "max_new_tokens": 40, "temperature": 0.7, "seed": i}
        for i in range(7)
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: generate(client, **p), [seeded, *others]))
    assert results[0]["text"] == alone  # the same text in a crowd
    assert lm_serving(client)["largest_batch"] > 1


def test_the_openai_client(base_url):
    api = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    ids = [m.id for m in api.models.list().data]
    assert "es-en/lm" in ids and "es-en/rnnsearch" in ids
    completion = api.completions.create(
        model="lm", prompt="In the beginning", max_tokens=12, seed=2, temperature=0.8
    )
    assert completion.object == "text_completion" and completion.model == "es-en/lm"
    [choice] = completion.choices
    assert choice.finish_reason in ("length", "stop") and choice.text
    assert completion.usage.completion_tokens <= 12
    stream = api.completions.create(
        model="es-en/lm",
        prompt="In the beginning",
        max_tokens=12,
        seed=2,
        temperature=0.8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == choice.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == choice.finish_reason and set(finishes[:-1]) == {None}
    with pytest.raises(openai.UnprocessableEntityError):
        api.completions.create(model="lm", prompt="a", n=2)
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="gpt-3.5-turbo-instruct", prompt="a")


def wait_until_idle(client, cancelled_before: int, deadline_s: float = 20) -> dict:
    """The replica's stats once the cancellation has landed and nothing runs."""
    deadline = time.monotonic() + deadline_s
    while True:
        serving = lm_serving(client)
        cancelled = serving["finished"].get("cancelled", 0)
        if (cancelled > cancelled_before and serving["running"] == 0) or (
            time.monotonic() > deadline
        ):
            return serving
        time.sleep(0.2)


def assert_no_more_steps(client, serving: dict) -> None:
    time.sleep(1.0)
    later = lm_serving(client)
    assert later["steps"] == serving["steps"], (serving, later)
    assert later["running"] == later["waiting"] == later["streams"] == 0, later


def test_a_client_that_disconnects_mid_stream_stops_its_generation(base_url, client):
    before = lm_serving(client)
    cancelled_before = before["finished"].get("cancelled", 0)
    payload = {
        "prompt": "In the beginning",
        "max_new_tokens": LONG,
        "temperature": 0,
        "stream": True,
    }
    with httpx.Client(base_url=base_url, timeout=60) as walker:
        with walker.stream("POST", "/v1/generate", json=payload) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            received = [next(lines) for _ in range(4)]  # two events and their blank lines
            assert any(line.startswith("data: ") for line in received)
        # Leaving the block closes the connection with the body unread.
    serving = wait_until_idle(client, cancelled_before)
    assert serving["finished"].get("cancelled", 0) == cancelled_before + 1, serving
    assert serving["running"] == 0, serving
    assert serving["tokens_generated"] - before["tokens_generated"] < LONG
    assert_no_more_steps(client, serving)


def test_a_client_that_gives_up_on_a_plain_request_stops_its_generation(base_url, client):
    before = lm_serving(client)
    cancelled_before = before["finished"].get("cancelled", 0)
    payload = {"prompt": "In the beginning", "max_new_tokens": LONG, "temperature": 0}
    with httpx.Client(base_url=base_url, timeout=0.5) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/v1/generate", json=payload)
    serving = wait_until_idle(client, cancelled_before)
    assert serving["finished"].get("cancelled", 0) == cancelled_before + 1, serving
    assert_no_more_steps(client, serving)


@pytest.mark.parametrize(
    "path, payload, field",
    [
        ("/v1/generate", {}, "prompt"),
        ("/v1/generate", {"prompt": ""}, "prompt"),
        ("/v1/generate", {"prompt": "  "}, "prompt"),
        ("/v1/generate", {"prompt": "x" * 2001}, "prompt"),
        ("/v1/generate", {"prompt": 1}, "prompt"),
        ("/v1/generate", {"prompt": "a", "max_new_tokens": 0}, "max_new_tokens"),
        ("/v1/generate", {"prompt": "a", "max_new_tokens": LONG + 1}, "max_new_tokens"),
        ("/v1/generate", {"prompt": "a", "max_new_tokens": "3"}, "max_new_tokens"),
        ("/v1/generate", {"prompt": "a", "temperature": -1}, "temperature"),
        ("/v1/generate", {"prompt": "a", "temperature": 2.5}, "temperature"),
        ("/v1/generate", {"prompt": "a", "top_p": 0}, "top_p"),
        ("/v1/generate", {"prompt": "a", "top_p": 1.01}, "top_p"),
        ("/v1/generate", {"prompt": "a", "top_k": -1}, "top_k"),
        ("/v1/generate", {"prompt": "a", "seed": -5}, "seed"),
        ("/v1/generate", {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("/v1/generate", {"prompt": "a", "stop": ["ok", "x" * 65]}, "stop[1]"),
        ("/v1/generate", {"prompt": "a", "stop": ""}, "stop"),
        ("/v1/generate", {"prompt": "a", "stream": "true"}, "stream"),
        ("/v1/generate", {"prompt": "a", "beam_size": 2}, "beam_size"),
        ("/v1/completions", {"prompt": "a"}, "model"),
        ("/v1/completions", {"model": "lm", "prompt": ["a", "b"]}, "prompt"),
        ("/v1/completions", {"model": "lm", "prompt": "a", "n": 3}, "n"),
        ("/v1/completions", {"model": "lm", "prompt": "a", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"model": "lm", "prompt": "a", "temperature": 2.1}, "temperature"),
        ("/v1/completions", {"model": "lm", "prompt": "a", "echo": True}, "echo"),
        ("/v1/completions", {"model": "lm", "prompt": "a", "logprobs": 1}, "logprobs"),
    ],
)
def test_validation_errors(client, path, payload, field):
    assert_error(client.post(path, json=payload), 422, "validation_error", field)


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_too_long_in_tokens(client, stream):
    payload = {"prompt": "palabra " * 250, "max_new_tokens": 900, "stream": stream}
    assert_error(client.post("/v1/generate", json=payload), 422, "validation_error", "prompt")
    completion = {"model": "lm", "prompt": "palabra " * 250, "max_tokens": 900, "stream": stream}
    assert_error(client.post("/v1/completions", json=completion), 422, "validation_error", "prompt")


def test_unknown_generation_model(client):
    response = client.post("/v1/generate", json={"prompt": "a", "model": "rnnsearch"})
    assert_error(response, 404, "model_not_found", "model")
