"""Text generation over HTTP: `POST /v1/generate` and the OpenAI-compatible `POST /v1/completions`.

The routes validate a request, turn it into a `GenerationJob` and read `GenerationChunk`s from
a `GenerationBackend` (`service.api.backends`; the Ray Serve ingress's client in production, a
fake in the unit tests). Without streaming the chunks are joined into one JSON answer; with
streaming each chunk becomes one Server-Sent Event as soon as it arrives, so a client sees text
while the model still works.

The backend's first chunk is an acknowledgement sent once the model replica has accepted the
request; the routes wait for it before answering, so a prompt that is too long in tokens, an
overloaded model or an unavailable replica (domain errors, mapped by `errors.py`) still gets a
proper status code rather than an error event inside a 200 stream. When the client goes away
mid-stream, the server cancels the response and `EventStreamResponse` closes the chunk
iterator, which cancels the generation.

Errors use the API's one shape, `{"error": {"type", "message", "field"}}`, also on the OpenAI
route: OpenAI's client libraries read any JSON error body and raise by status code.
"""

# No `from __future__ import annotations`: FastAPI must see the request model classes that are
# built inside generation_router, not their names as strings.

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.api.backends import Backends, GenerationBackend
from service.api.errors import ApiError, api_error, request_id_of
from service.api.schemas import (
    BODY_ERRORS,
    MAX_JSON_INT,
    MODEL_NAME,
    as_list,
    errors,
    json_int,
    stop_type,
    text_input_type,
    text_type,
)
from service.api.settings import GenerationSettings
from service.api.sse import SSE_DONE, EventStreamResponse, sse_error, sse_event, sse_response_doc
from service.contracts import (
    DecodeFailed,
    GenerationChunk,
    GenerationJob,
    ServedModel,
    ServiceError,
    Timeout,
)
from service.decoding.generation import SamplingParams

MAX_SEED = MAX_JSON_INT


class GenerateRequest(BaseModel):
    """`POST /v1/generate`. Use `generate_request_model(settings)` for the configured limits."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prompt": "In the beginning", "max_new_tokens": 32, "temperature": 0.8},
                {
                    "prompt": "And God said",
                    "max_new_tokens": 64,
                    "temperature": 0.7,
                    "top_p": 0.9,
                    "seed": 7,
                    "stop": ["."],
                    "stream": True,
                },
            ]
        },
    )

    prompt: str = Field(description="The text to continue.")
    model: Annotated[str, StringConstraints(pattern=MODEL_NAME)] | None = Field(
        None, description="`lm` or a full id such as `es-en/lm`; omitted means the served LM."
    )
    max_new_tokens: json_int(ge=1) = Field(64, description="Most tokens to generate.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy decoding.")
    top_k: json_int(0, MAX_JSON_INT) = Field(
        0, description="Sample from the k likeliest tokens; 0: all."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: smallest set of mass p.")
    seed: json_int(0, MAX_SEED) | None = Field(
        None, description="Makes sampling repeatable; omitted means random."
    )
    stop: Any = Field(None, description="A string or a list of strings that end the text.")
    stream: bool = Field(False, description="Send Server-Sent Events as tokens are generated.")

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(as_list(self.stop)),
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: bool = Field(False, description="Send a last chunk with `usage`.")


def only(*allowed: dict[str, Any]) -> WithJsonSchema:
    """The schema of an OpenAI field this service takes only some values of (or null): the
    JSON Schema says exactly those, and the validator refuses the rest with a message."""
    return WithJsonSchema({"anyOf": [*allowed, {"type": "null"}]})


def _unsupported(value: Any, allowed: Any, name: str) -> Any:
    if value is not None and value != allowed:
        raise PydanticCustomError(
            "unsupported_value",
            "only {name}={allowed} is supported",
            {"name": name, "allowed": json.dumps(allowed)},
        )
    return value


class CompletionRequest(BaseModel):
    """`POST /v1/completions`, OpenAI's legacy completions request.

    Everything OpenAI documents is accepted; what this service cannot do (n > 1, echo,
    logprobs, penalties, logit_bias, suffix, best_of > 1) is refused with a 422 naming the
    field rather than silently ignored. `top_k` is an extension, as in vLLM.
    """

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model": "lm", "prompt": "In the beginning", "max_tokens": 32, "seed": 1},
            ]
        },
    )

    model: str = Field(max_length=128, description="`lm` or the full id `es-en/lm`.")
    prompt: Any = Field(description="A string, or a list holding exactly one string.")
    max_tokens: json_int(ge=1) | None = Field(
        16, description="Most tokens to generate; default 16."
    )
    temperature: float | None = Field(None, ge=0, le=2, description="Default 1; 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Default 1.")
    top_k: json_int(0, MAX_JSON_INT) | None = Field(
        None, description="Extension: 0 or omitted means all."
    )
    n: Annotated[json_int() | None, only({"const": 1})] = Field(None, description="Only 1.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: Any = Field(None, description="A string or a list of up to 4 strings.")
    seed: json_int(0, MAX_SEED) | None = None
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")
    echo: Annotated[bool | None, only({"const": False})] = Field(None, description="Only false.")
    logprobs: Annotated[json_int() | None, only()] = Field(
        None, description="Not supported; omit or null."
    )
    best_of: Annotated[json_int() | None, only({"const": 1})] = Field(None, description="Only 1.")
    presence_penalty: Annotated[float | None, only({"const": 0})] = Field(
        None, description="Only 0."
    )
    frequency_penalty: Annotated[float | None, only({"const": 0})] = Field(
        None, description="Only 0."
    )
    logit_bias: Annotated[dict[str, float] | None, only({"type": "object", "maxProperties": 0})] = (
        Field(None, description="Only empty.")
    )
    suffix: Annotated[str | None, only()] = Field(None, description="Not supported; omit or null.")

    @field_validator("n", "best_of")
    @classmethod
    def _only_one(cls, value, info):
        return _unsupported(value, 1, info.field_name)

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value):
        return _unsupported(value, False, "echo")

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value, info):
        return _unsupported(value, 0, info.field_name)

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value):
        return _unsupported(value, None, "logprobs")

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value):
        return _unsupported(value, None, "suffix")

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value):
        return _unsupported(value or None, None, "logit_bias")

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def sampling(self, default_max_tokens: int = 16) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_tokens if self.max_tokens is not None else default_max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_k=self.top_k or 0,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=tuple(as_list(self.stop)),
        )


def new_tokens_limit(settings: GenerationSettings, model: ServedModel | None) -> int:
    """The most new tokens a request may ask for: the setting, and what the model's context
    holds besides the start token and at least one prompt token."""
    if model is None or model.max_output_tokens is None:
        return settings.max_new_tokens_limit
    return max(1, min(settings.max_new_tokens_limit, model.max_output_tokens - 2))


def _stop_field(settings: GenerationSettings) -> tuple[Any, Any]:
    """`stop`, as both generation requests bound it."""
    return (
        stop_type(settings.max_stop_sequences, settings.max_stop_chars) | None,
        Field(
            None,
            description=f"A string or up to {settings.max_stop_sequences} strings (each 1 to "
            f"{settings.max_stop_chars} characters); the text ends before the first one.",
        ),
    )


@lru_cache(maxsize=16)
def generate_request_model(
    settings: GenerationSettings, most_new_tokens: int | None = None
) -> type[GenerateRequest]:
    """`GenerateRequest` with the configured limits; `most_new_tokens`: `new_tokens_limit`."""
    most = most_new_tokens or settings.max_new_tokens_limit
    return create_model(
        "GenerateRequest",
        __base__=GenerateRequest,
        prompt=(
            text_type(settings.max_prompt_chars),
            Field(
                description=f"The text to continue: up to {settings.max_prompt_chars} "
                "characters, not blank (and within the model's context in tokens)."
            ),
        ),
        max_new_tokens=(
            json_int(1, most),
            Field(
                settings.default_max_new_tokens,
                description=f"Most tokens to generate, 1 to {most}; "
                f"default {settings.default_max_new_tokens}.",
            ),
        ),
        stop=_stop_field(settings),
    )


@lru_cache(maxsize=16)
def completion_request_model(
    settings: GenerationSettings, most_new_tokens: int | None = None
) -> type[CompletionRequest]:
    most = most_new_tokens or settings.max_new_tokens_limit
    return create_model(
        "CompletionRequest",
        __base__=CompletionRequest,
        prompt=(
            text_input_type(settings.max_prompt_chars, 1),
            Field(
                description=f"A string, or a list of one string; up to "
                f"{settings.max_prompt_chars} characters, not blank."
            ),
        ),
        max_tokens=(
            json_int(1, most) | None,
            Field(16, description=f"Most tokens to generate, 1 to {most}; default 16."),
        ),
        stop=_stop_field(settings),
    )


class GenerationUsage(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens, the start-of-text token included.")
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    id: str = Field(description="The request id, also sent as the X-Request-ID header.")
    model: str = Field(description="Full id of the model that answered.")
    version: int
    text: str = Field(description="The continuation, without the prompt.")
    finish_reason: Literal["stop", "length"] = Field(
        description="`stop`: end of text or a stop string; `length`: max_new_tokens reached."
    )
    usage: GenerationUsage


class GenerateEvent(BaseModel):
    """One Server-Sent Event of a streamed `/v1/generate`: `data: <this as JSON>`.

    Every event but the last carries new `text`; the last has `finish_reason` and `usage` (and
    empty text). Then comes `data: [DONE]`. Concatenating the texts gives the whole answer.
    """

    id: str
    model: str
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    usage: GenerationUsage | None = None


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    """OpenAI's `text_completion` object; a streamed chunk has the same shape."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: GenerationUsage | None = None
    system_fingerprint: str | None = None


async def open_stream(
    backend: GenerationBackend, job: GenerationJob, timeout_s: float
) -> tuple[AsyncIterator[GenerationChunk], GenerationChunk]:
    """Start a generation and wait for its acknowledgement; 504 if it does not come in time."""
    stream = aiter(backend.stream(job))
    try:
        async with asyncio.timeout(timeout_s):
            first = await anext(stream)
    except TimeoutError:
        await stream.aclose()
        raise Timeout(f"the model did not accept the request within {timeout_s:g} s") from None
    except StopAsyncIteration:
        raise DecodeFailed("the generation ended before it began") from None
    except BaseException:
        await stream.aclose()
        raise
    return stream, first


async def collect(
    stream: AsyncIterator[GenerationChunk], first: GenerationChunk, timeout_s: float
) -> tuple[str, GenerationChunk]:
    """The whole text and the last chunk; 504 (and the generation cancelled) after timeout_s."""
    pieces, last = [first.text], first
    try:
        async with asyncio.timeout(timeout_s):
            while not last.finished:
                last = await anext(stream)
                pieces.append(last.text)
    except TimeoutError:
        raise Timeout(
            f"the generation did not finish within {timeout_s:g} s; ask for fewer tokens or "
            "stream the answer"
        ) from None
    except StopAsyncIteration:
        raise DecodeFailed("the generation ended without finishing") from None
    finally:
        await stream.aclose()
    return "".join(pieces), last


def _usage(chunk: GenerationChunk) -> GenerationUsage:
    return GenerationUsage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
    )


async def _events(
    stream: AsyncIterator[GenerationChunk],
    first: GenerationChunk,
    text_event: Callable[[str], BaseModel],
    final_events: Callable[[GenerationChunk], Iterable[BaseModel]],
) -> AsyncIterator[bytes]:
    """Chunks as SSE bytes: `text_event(text)` per chunk with text, `final_events(chunk)` at
    the end, then [DONE]. An error after the response has started becomes an error event."""
    chunk = first
    try:
        while True:
            if chunk.text:
                yield sse_event(text_event(chunk.text))
            if chunk.finished:
                for event in final_events(chunk):
                    yield sse_event(event)
                yield SSE_DONE
                return
            chunk = await anext(stream)
    except ServiceError as error:
        yield sse_error(api_error(error))
    except StopAsyncIteration:
        yield sse_error(api_error(DecodeFailed("the generation ended without finishing")))
    finally:
        await stream.aclose()


GENERATION_ERRORS = errors(
    *BODY_ERRORS,
    404,
    500,
    503,
    504,
    also={
        404: "No such text generation model, or none is served (`model_not_found`).",
        422: "Invalid request (`validation_error`); `field` names the culprit. Also a prompt "
        "that, in tokens, does not fit the model's context with the tokens asked for.",
    },
)


def _check_model(backend: GenerationBackend | None, name: str | None) -> ServedModel:
    if backend is None:
        raise ApiError(
            404,
            "model_not_found",
            "this service serves no text generation model (none is configured, or the model "
            "store lacks it)",
            field="model",
        )
    served = backend.model
    if name is not None and name not in (served.id, served.name):
        raise ApiError(
            404,
            "model_not_found",
            f"no text generation model {name!r}; available: {sorted([served.name, served.id])}",
            field="model",
        )
    return served


def generation_router(backends: Backends) -> APIRouter:
    """`/v1/generate` and `/v1/completions`; with no generation backend they answer 404."""
    backend = backends.generation
    settings = backend.settings if backend is not None else GenerationSettings()
    most = new_tokens_limit(settings, backend.model if backend is not None else None)
    GenerateRequestModel = generate_request_model(settings, most)
    CompletionRequestModel = completion_request_model(settings, most)
    timeout_s = settings.request_timeout_s
    router = APIRouter(tags=["generation"])

    @router.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses={
            **GENERATION_ERRORS,
            200: sse_response_doc(
                GenerateEvent,
                "JSON; with `stream: true`, Server-Sent Events: one `data: <GenerateEvent>` "
                "per batch of new tokens, then `data: [DONE]`.",
            ),
        },
        summary="Continue a prompt with the language model (optionally streamed)",
    )
    async def generate(body: GenerateRequestModel, request: Request):
        served = _check_model(backend, body.model)
        request_id = request_id_of(request)
        job = GenerationJob(request_id, body.prompt, body.sampling())
        stream, first = await open_stream(backend, job, timeout_s)
        if body.stream:
            return EventStreamResponse(
                _events(
                    stream,
                    first,
                    lambda text: GenerateEvent(id=request_id, model=served.id, text=text),
                    lambda last: [
                        GenerateEvent(
                            id=request_id,
                            model=served.id,
                            text="",
                            finish_reason=last.finish_reason,
                            usage=_usage(last),
                        )
                    ],
                )
            )
        text, last = await collect(stream, first, timeout_s)
        return GenerateResponse(
            id=request_id,
            model=served.id,
            version=served.version,
            text=text,
            finish_reason=last.finish_reason,
            usage=_usage(last),
        )

    @router.post(
        "/v1/completions",
        response_model=Completion,
        responses={
            **GENERATION_ERRORS,
            200: sse_response_doc(
                Completion,
                "JSON; with `stream: true`, Server-Sent Events: one `data: <Completion>` per "
                "batch of new tokens, then `data: [DONE]`.",
            ),
        },
        summary="OpenAI-compatible text completion (optionally streamed)",
    )
    async def completions(body: CompletionRequestModel, request: Request):
        served = _check_model(backend, body.model)
        params = body.sampling()
        request_id = request_id_of(request)
        completion_id = f"cmpl-{request_id}"
        created = int(time.time())
        stream, first = await open_stream(
            backend, GenerationJob(request_id, body.prompt_text, params), timeout_s
        )

        def chunk(text: str, finish_reason: str | None = None) -> Completion:
            return Completion(
                id=completion_id,
                created=created,
                model=served.id,
                choices=[CompletionChoice(text=text, finish_reason=finish_reason)],
            )

        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage

            def final(last: GenerationChunk) -> list[Completion]:
                events = [chunk("", last.finish_reason)]
                if include_usage:
                    events.append(
                        Completion(
                            id=completion_id,
                            created=created,
                            model=served.id,
                            choices=[],
                            usage=_usage(last),
                        )
                    )
                return events

            return EventStreamResponse(_events(stream, first, chunk, final))
        text, last = await collect(stream, first, timeout_s)
        completion = chunk(text, last.finish_reason)
        completion.usage = _usage(last)
        return completion

    return router
