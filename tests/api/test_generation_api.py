"""The generation routes against a fake backend: schemas, SSE framing, OpenAI compatibility,
every validation error, and that a client going away closes the generation. No Ray, no model."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.errors import ApiError
from service.api.generation import (
    MAX_SEED,
    CompletionRequest,
    GenerateEvent,
    completion_request_model,
    generate_request_model,
)
from service.api.settings import ApiSettings, GenerationSettings
from service.api.sse import SSE_DONE, sse_error, sse_event
from service.contracts import (
    DecodeFailed,
    GenerationChunk,
    ModelStatus,
    PromptTooLong,
    ServedModel,
)

TRANSLATOR = ServedModel(
    "es-en-transformer", "es-en/transformer", 1, "transformer", "es", "en", 1000, default=True
)
LM = ServedModel(
    "es-en-lm",
    "es-en/lm",
    3,
    "lm",
    "es",
    "en",
    500,
    {"valid_perplexity": 42.0},
    max_output_tokens=40,  # context: 38 new tokens at most
    created=1_700_000_000,
)
SETTINGS = GenerationSettings(
    max_prompt_chars=50,
    max_new_tokens_limit=100,
    default_max_new_tokens=8,
    max_stop_sequences=2,
    max_stop_chars=5,
    request_timeout_s=2,
)
WORDS = "and the light was good in beginning god said".split()


class FakeGeneration:
    """Seeded random words, one per chunk; 'too long' prompts are refused like the replica
    refuses prompts longer than the model's context."""

    def __init__(self, settings: GenerationSettings = SETTINGS):
        self.model = LM
        self.settings = settings
        self.jobs = []
        self.closed_early: list[str] = []
        self.ready = True
        self.delay_s = 0.0
        self.fail_at: int | None = None

    async def stream(self, job):
        self.jobs.append(job)
        if "too long" in job.prompt:
            raise PromptTooLong("too many tokens", field="prompt")
        prompt_tokens = len(job.prompt.split()) + 1
        yield GenerationChunk("", 0, False, None, prompt_tokens, 0)
        rng = random.Random(job.params.seed)
        total = job.params.max_new_tokens
        done = False
        try:
            for count in range(1, total + 1):
                await asyncio.sleep(self.delay_s)
                if count == self.fail_at:
                    raise DecodeFailed("the generation failed")
                last = count == total
                word = " " + rng.choice(WORDS)
                yield GenerationChunk(
                    word, 1, last, "length" if last else None, prompt_tokens, count
                )
            done = True
        finally:
            if not done:
                self.closed_early.append(job.request_id)

    async def status(self):
        return ModelStatus(ready=self.ready, serving={"running": 0})


class FakeTranslation:
    async def translate(self, model, job):
        raise AssertionError("not used here")

    async def status(self):
        return {TRANSLATOR.key: ModelStatus(ready=True)}


def backends(generation) -> Backends:
    return Backends(Catalog([TRANSLATOR]), FakeTranslation(), generation)


@pytest.fixture
def generation():
    return FakeGeneration()


@pytest.fixture
def client(generation):
    app = create_app(ApiSettings(), backends(generation))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def events(response) -> list:
    """The `data:` payloads of an SSE body, JSON-decoded except the final [DONE]."""
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert raw.endswith("\n\n")
    out = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: ") and "\n" not in block
        payload = block[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def assert_error(response, status, kind, field=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert (error["type"], error["field"]) == (kind, field), error
    assert error["message"]
    return error


# /v1/generate


def test_generate(client, generation):
    response = client.post(
        "/v1/generate",
        json={"prompt": "In the beginning", "max_new_tokens": 5, "seed": 3, "stop": ["."]},
        headers={"X-Request-ID": "gen-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "gen-1" == response.headers["x-request-id"]
    assert (body["model"], body["version"], body["finish_reason"]) == ("es-en/lm", 3, "length")
    assert len(body["text"].split()) == 5
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    [job] = generation.jobs
    assert job.request_id == "gen-1" and job.prompt == "In the beginning"
    params = job.params
    assert (params.max_new_tokens, params.temperature, params.top_k, params.top_p) == (5, 1, 0, 1)
    assert (params.seed, params.stop) == (3, (".",))


def test_generate_defaults_and_single_stop_string(client, generation):
    assert client.post("/v1/generate", json={"prompt": "x", "stop": "\n"}).status_code == 200
    params = generation.jobs[0].params
    assert params.max_new_tokens == SETTINGS.default_max_new_tokens
    assert params.stop == ("\n",) and params.seed is None


def test_generate_stream_matches_the_plain_answer(client):
    payload = {"prompt": "And God said", "max_new_tokens": 6, "seed": 9, "temperature": 0.7}
    plain = client.post("/v1/generate", json=payload).json()
    response = client.post("/v1/generate", json={**payload, "stream": True})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    received = events(response)
    assert received[-1] == "[DONE]"
    *chunks, final = received[:-1]
    assert len(chunks) == 6 and all(c["text"] and c["finish_reason"] is None for c in chunks)
    assert all(c["usage"] is None and c["model"] == "es-en/lm" for c in chunks)
    assert final["text"] == "" and final["finish_reason"] == "length"
    assert final["usage"] == plain["usage"]
    assert "".join(c["text"] for c in chunks) == plain["text"]


def test_the_seed_fixes_the_text(client):
    def text(seed):
        payload = {"prompt": "a", "max_new_tokens": 12, "seed": seed}
        return client.post("/v1/generate", json=payload).json()["text"]

    assert text(1) == text(1) != text(2)


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": " \n\t"}, "prompt"),
        ({"prompt": "x" * 51}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": ["a"]}, "prompt"),
        ({"prompt": "a", "max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt": "a", "max_new_tokens": 101}, "max_new_tokens"),
        ({"prompt": "a", "max_new_tokens": 39}, "max_new_tokens"),  # beyond the model's context
        ({"prompt": "a", "max_new_tokens": "5"}, "max_new_tokens"),
        ({"prompt": "a", "max_new_tokens": 2.5}, "max_new_tokens"),
        ({"prompt": "a", "temperature": -0.1}, "temperature"),
        ({"prompt": "a", "temperature": 2.01}, "temperature"),
        ({"prompt": "a", "temperature": "hot"}, "temperature"),
        ({"prompt": "a", "top_p": 0}, "top_p"),
        ({"prompt": "a", "top_p": 1.5}, "top_p"),
        ({"prompt": "a", "top_k": -1}, "top_k"),
        ({"prompt": "a", "seed": -1}, "seed"),
        ({"prompt": "a", "seed": 2**63}, "seed"),
        ({"prompt": "a", "seed": MAX_SEED + 1}, "seed"),
        ({"prompt": "a", "stop": ""}, "stop"),
        ({"prompt": "a", "stop": "toolong"}, "stop"),
        ({"prompt": "a", "stop": [".", "!", "?"]}, "stop"),
        ({"prompt": "a", "stop": [".", ""]}, "stop[1]"),
        ({"prompt": "a", "stop": [".", 3]}, "stop[1]"),
        ({"prompt": "a", "stop": 3}, "stop"),
        ({"prompt": "a", "stream": "yes"}, "stream"),
        ({"prompt": "a", "model": "../../etc/passwd"}, "model"),
        ({"prompt": "a", "max_tokens": 5}, "max_tokens"),  # an unknown field
    ],
)
def test_generate_validation_errors(client, generation, payload, field):
    assert_error(client.post("/v1/generate", json=payload), 422, "validation_error", field)
    assert not generation.jobs


def test_prompt_too_long_in_tokens(client):
    for stream in (False, True):
        response = client.post("/v1/generate", json={"prompt": "far too long", "stream": stream})
        error = assert_error(response, 422, "validation_error", "prompt")
        assert error["message"] == "prompt: too many tokens"


def test_the_largest_seed_is_accepted(client, generation):
    response = client.post("/v1/generate", json={"prompt": "a", "seed": MAX_SEED})
    assert response.status_code == 200, response.text
    assert generation.jobs[0].params.seed == MAX_SEED


def test_malformed_bodies(client):
    response = client.post(
        "/v1/generate", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "validation_error", "body")
    assert_error(client.post("/v1/generate", json=["a"]), 422, "validation_error", "body")


def test_unknown_model(client):
    assert_error(
        client.post("/v1/generate", json={"prompt": "a", "model": "transformer"}),
        404,
        "model_not_found",
        "model",
    )
    assert client.post("/v1/generate", json={"prompt": "a", "model": "lm"}).status_code == 200
    assert client.post("/v1/generate", json={"prompt": "a", "model": "es-en/lm"}).status_code == 200


def test_no_language_model_served():
    with TestClient(create_app(ApiSettings(), backends(None))) as client:
        assert_error(
            client.post("/v1/generate", json={"prompt": "a"}), 404, "model_not_found", "model"
        )
        assert_error(
            client.post("/v1/completions", json={"model": "lm", "prompt": "a"}),
            404,
            "model_not_found",
            "model",
        )
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["es-en/transformer"]
        assert client.get("/readyz").json()["models"] == {"es-en/transformer@1": True}


def test_a_slow_generation_times_out():
    generation = FakeGeneration(SETTINGS.model_copy(update={"request_timeout_s": 0.3}))
    generation.delay_s = 0.1
    with TestClient(create_app(ApiSettings(), backends(generation))) as client:
        response = client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 10})
    assert_error(response, 504, "timeout")
    assert len(generation.closed_early) == 1  # and the generation was cancelled


def test_an_error_mid_stream_becomes_an_error_event(client, generation):
    generation.fail_at = 3
    response = client.post(
        "/v1/generate", json={"prompt": "a", "max_new_tokens": 10, "stream": True}
    )
    received = events(response)
    assert [bool(e.get("text")) for e in received[:2]] == [True, True]
    assert received[-1] == {
        "error": {"type": "internal_error", "message": "the generation failed", "field": None}
    }


def test_a_client_that_goes_away_closes_the_generation(generation):
    """Drive the ASGI app by hand: the client disconnects after the first event."""
    app = create_app(ApiSettings(), backends(generation))
    generation.delay_s = 0.01
    body = json.dumps({"prompt": "a", "max_new_tokens": 30, "stream": True}).encode()
    sent: list[dict] = []
    requested = False
    first_event = asyncio.Event()

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await first_event.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_event.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/generate",
        "raw_path": b"/v1/generate",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }

    async def run():
        await asyncio.wait_for(app(scope, receive, send), 5)

    asyncio.run(run())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert len(generation.closed_early) == 1
    assert sum(1 for m in sent if m.get("body")) < 30


# /v1/completions (OpenAI)


def test_completion(client, generation):
    response = client.post(
        "/v1/completions",
        json={"model": "lm", "prompt": ["In the beginning"], "max_tokens": 4, "seed": 5, "n": 1},
        headers={"X-Request-ID": "c1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "cmpl-c1" and body["object"] == "text_completion"
    assert body["model"] == "es-en/lm" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "length" and len(choice["text"].split()) == 4
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    params = generation.jobs[0].params
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (1.0, 1.0, 0, 5)


def test_completion_defaults_follow_openai(client, generation):
    assert (
        client.post("/v1/completions", json={"model": "es-en/lm", "prompt": "a"}).status_code == 200
    )
    params = generation.jobs[0].params
    assert params.max_new_tokens == 16 and params.temperature == 1.0 and params.stop == ()


def test_completion_stream(client):
    payload = {"model": "lm", "prompt": "a", "max_tokens": 5, "seed": 2}
    plain = client.post("/v1/completions", json=payload).json()
    received = events(
        client.post(
            "/v1/completions",
            json={**payload, "stream": True, "stream_options": {"include_usage": True}},
        )
    )
    assert received[-1] == "[DONE]"
    *chunks, finish, usage = received[:-1]
    assert all(c["object"] == "text_completion" for c in received[:-1])
    assert len({c["id"] for c in received[:-1]}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5
    assert finish["choices"] == [
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}
    ]
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]
    without_usage = events(client.post("/v1/completions", json={**payload, "stream": True}))
    assert without_usage[-2]["choices"][0]["finish_reason"] == "length"
    assert all(e["usage"] is None for e in without_usage[:-1])


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"prompt": "a"}, "model"),
        ({"model": "lm"}, "prompt"),
        ({"model": "lm", "prompt": ""}, "prompt"),
        ({"model": "lm", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "lm", "prompt": [" "]}, "prompt[0]"),
        ({"model": "lm", "prompt": [[1, 2, 3]]}, "prompt[0]"),
        ({"model": "lm", "prompt": "x" * 51}, "prompt"),
        ({"model": "lm", "prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"model": "lm", "prompt": "a", "max_tokens": 101}, "max_tokens"),
        ({"model": "lm", "prompt": "a", "max_tokens": 39}, "max_tokens"),
        ({"model": "lm", "prompt": "a", "temperature": 3}, "temperature"),
        ({"model": "lm", "prompt": "a", "top_p": 0}, "top_p"),
        ({"model": "lm", "prompt": "a", "top_k": -2}, "top_k"),
        ({"model": "lm", "prompt": "a", "n": 2}, "n"),
        ({"model": "lm", "prompt": "a", "best_of": 3}, "best_of"),
        ({"model": "lm", "prompt": "a", "echo": True}, "echo"),
        ({"model": "lm", "prompt": "a", "logprobs": 2}, "logprobs"),
        ({"model": "lm", "prompt": "a", "presence_penalty": 0.5}, "presence_penalty"),
        ({"model": "lm", "prompt": "a", "logit_bias": {"50256": -100}}, "logit_bias"),
        ({"model": "lm", "prompt": "a", "suffix": "x"}, "suffix"),
        ({"model": "lm", "prompt": "a", "stop": ["a", "b", "c"]}, "stop"),
        ({"model": "lm", "prompt": "a", "stream": 1}, "stream"),
        ({"model": "lm", "prompt": "a", "stream_options": {"x": True}}, "stream_options.x"),
        ({"model": "lm", "prompt": "a", "user": "u" * 257}, "user"),
        ({"model": "lm", "prompt": "a", "frobnicate": True}, "frobnicate"),
    ],
)
def test_completion_validation_errors(client, generation, payload, field):
    assert_error(client.post("/v1/completions", json=payload), 422, "validation_error", field)
    assert not generation.jobs


def test_completion_unknown_model_is_404(client):
    response = client.post(
        "/v1/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "a"}
    )
    assert_error(response, 404, "model_not_found", "model")


def test_the_openai_client_works(client):
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=client)
    completion = api.completions.create(model="lm", prompt="In the beginning", max_tokens=5, seed=4)
    assert completion.object == "text_completion" and completion.model == "es-en/lm"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    pieces = [
        chunk.choices[0].text
        for chunk in api.completions.create(
            model="lm", prompt="In the beginning", max_tokens=5, seed=4, stream=True
        )
        if chunk.choices
    ]
    assert len([p for p in pieces if p]) == 5
    assert "".join(pieces) == completion.choices[0].text
    models = api.models.list()
    assert [m.id for m in models.data] == ["es-en/transformer", "es-en/lm"]
    assert models.data[1].created == 1_700_000_000 and models.data[1].object == "model"
    with pytest.raises(openai.UnprocessableEntityError):
        api.completions.create(model="lm", prompt="a", n=2)
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="davinci", prompt="a")


# /v1/models and /readyz


def test_models_lists_the_language_model(client, generation):
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and body["data"] == body["models"]
    lm = body["models"][-1]
    assert (lm["id"], lm["task"], lm["version"], lm["status"]) == (
        "es-en/lm",
        "generation",
        3,
        "ready",
    )
    assert lm["metrics"] == {"valid_perplexity": 42.0} and lm["serving"] == {"running": 0}
    assert body["models"][0]["task"] == "translation"
    assert client.get("/readyz").json()["models"] == {
        "es-en/transformer@1": True,
        "es-en/lm@3": True,
    }
    generation.ready = False
    assert client.get("/readyz").status_code == 503
    assert client.get("/v1/models").json()["models"][-1]["status"] == "unavailable"


def test_docs_list_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/generate", "/v1/completions"} <= set(paths)


# Schemas and SSE framing.


def test_request_models_use_the_settings():
    generate = generate_request_model(SETTINGS)
    assert generate.model_json_schema()["properties"]["max_new_tokens"]["maximum"] == 100
    completion = completion_request_model(SETTINGS)
    request = completion.model_validate({"model": "lm", "prompt": ["hi"], "stop": "x"})
    assert request.prompt_text == "hi" and request.sampling().stop == ("x",)
    assert isinstance(request, CompletionRequest)
    with pytest.raises(ValueError):
        GenerationSettings(default_max_new_tokens=300, max_new_tokens_limit=256)


def test_sse_framing():
    event = sse_event(GenerateEvent(id="r", model="m", text='line\n"two"'))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert event.count(b"\n") == 2  # a newline in the text is escaped inside the JSON
    assert json.loads(event[6:]) == {
        "id": "r",
        "model": "m",
        "text": 'line\n"two"',
        "finish_reason": None,
        "usage": None,
    }
    assert sse_event({"a": 1}) == b'data: {"a": 1}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"
    error = json.loads(sse_error(ApiError(503, "overloaded", "busy"))[6:])
    assert error == {"error": {"type": "overloaded", "message": "busy", "field": None}}


def test_httpx_streams_events_before_the_end(generation):
    """Through a real ASGI transport: events arrive one by one, not at the end."""
    generation.delay_s = 0.02
    app = create_app(ApiSettings(), backends(generation))

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            async with http.stream(
                "POST", "/v1/generate", json={"prompt": "a", "max_new_tokens": 5, "stream": True}
            ) as response:
                lines = [line async for line in response.aiter_lines() if line]
        return lines

    lines = asyncio.run(run())
    assert lines[-1] == "data: [DONE]" and len(lines) == 7
