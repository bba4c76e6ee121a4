"""Text generation over HTTP: `POST /v1/generate` and the OpenAI-compatible `POST /v1/completions`.

The routes validate a request, turn it into a `GenerationJob` and read `GenerationChunk`s from
a `GenerationBackend` (the Ray Serve ingress in production, a fake in the unit tests). Without
streaming the chunks are joined into one JSON answer; with streaming each chunk becomes one
Server-Sent Event as soon as it arrives, so a client sees text while the model still works.

The backend's first chunk is an acknowledgement sent once the model replica has accepted the
request; the routes wait for it before answering, so a prompt that is too long in tokens, an
overloaded model or an unavailable replica still gets a proper status code rather than an
error event inside a 200 stream. When the client goes away mid-stream, the server cancels the
response and `EventStreamResponse` closes the chunk iterator, which cancels the generation.

Errors use the API's one shape, `{"error": {"type", "message", "field"}}`, also on the OpenAI
route: OpenAI's client libraries read any JSON error body and raise by status code.
"""

# No `from __future__ import annotations`: FastAPI must see the request model classes that are
# built inside install_generation_routes, not their names as strings.

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError
from starlette.types import Receive, Scope, Send

from service.api.backend import ModelStatus
from service.api.catalog import ServedModel
from service.api.errors import ApiError, error_body, request_id_of
from service.api.schemas import MODEL_NAME, ErrorResponse, ModelCard, text_input_type
from service.decoding.generation import SamplingParams

MAX_SEED = 2**63 - 1
FINISH_REASONS = ("stop", "length")


class GenerationSettings(BaseModel):
    """What the HTTP layer enforces for text generation, and its defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_prompt_chars: int = Field(2000, ge=1, description="Longest prompt, in characters.")
    max_new_tokens_limit: int = Field(
        256, ge=1, description="Upper bound for max_new_tokens (further capped by the model)."
    )
    default_max_new_tokens: int = Field(64, ge=1)
    max_stop_sequences: int = Field(4, ge=0, le=64, description="Most `stop` strings.")
    max_stop_chars: int = Field(64, ge=1, description="Longest `stop` string, in characters.")
    request_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A non-streamed generation not done by then is answered with 504; a stream "
        "that has not started by then likewise.",
    )

    def model_post_init(self, _: Any) -> None:
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("default_max_new_tokens must not exceed max_new_tokens_limit")


# Hand-off between the routes and the backend.


@dataclass(frozen=True)
class GenerationJob:
    request_id: str
    prompt: str
    params: SamplingParams


@dataclass(frozen=True)
class GenerationChunk:
    """New text for one request since its previous chunk (one or more decode steps' worth).

    The first chunk of every stream is an acknowledgement (`tokens == 0`, empty text, not
    finished) sent as soon as the model has accepted the request; the last one has
    `finished` set and a `finish_reason`: "stop" (end of text or a stop string) or "length".
    """

    text: str
    tokens: int  # tokens generated in this chunk
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int  # so far


class GenerationBackend(Protocol):
    model: ServedModel
    settings: GenerationSettings

    def stream(self, job: GenerationJob) -> AsyncIterator[GenerationChunk]:
        """Chunks as they come; raises `ApiError` (422 prompt too long, 503, ...) before the
        acknowledgement. Closing the iterator early cancels the generation."""
        ...

    async def status(self) -> ModelStatus:
        """Must answer quickly even when the model does not."""
        ...


# Request models.


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "Text must not be empty or whitespace-only")
    return text


def _kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return None


def stop_type(max_sequences: int, max_chars: int) -> Any:
    """`str | list[str]` of non-empty stop strings, as a tagged union for precise error fields
    (`stop[2]`); the tags are dropped from error locations like the translate `text` field's."""
    item = Annotated[str, StringConstraints(min_length=1, max_length=max_chars)]
    return Annotated[
        Annotated[item, Tag("string")]
        | Annotated[list[item], Field(max_length=max_sequences), Tag("list")],
        Discriminator(
            _kind,
            custom_error_type="stop_type",
            custom_error_message="Input should be a string or a list of strings",
        ),
    ]


def _stop_tuple(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


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
    max_new_tokens: int = Field(64, ge=1, description="Most tokens to generate.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy decoding.")
    top_k: int = Field(0, ge=0, description="Sample from the k likeliest tokens; 0: all.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: smallest set of mass p.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Makes sampling repeatable; omitted means random."
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
            stop=_stop_tuple(self.stop),
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: bool = Field(False, description="Send a last chunk with `usage`.")


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
    max_tokens: int | None = Field(16, ge=1, description="Most tokens to generate; default 16.")
    temperature: float | None = Field(None, ge=0, le=2, description="Default 1; 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Default 1.")
    top_k: int | None = Field(None, ge=0, description="Extension: 0 or omitted means all.")
    n: int | None = Field(None, description="Only 1.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: Any = Field(None, description="A string or a list of up to 4 strings.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")
    echo: bool | None = Field(None, description="Only false.")
    logprobs: int | None = Field(None, description="Not supported; omit or null.")
    best_of: int | None = Field(None, description="Only 1.")
    presence_penalty: float | None = Field(None, description="Only 0.")
    frequency_penalty: float | None = Field(None, description="Only 0.")
    logit_bias: dict[str, float] | None = Field(None, description="Only empty.")
    suffix: str | None = Field(None, description="Not supported; omit or null.")

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
            stop=_stop_tuple(self.stop),
        )


def _prompt_type(settings: GenerationSettings) -> Any:
    return Annotated[
        str, StringConstraints(max_length=settings.max_prompt_chars), AfterValidator(_not_blank)
    ]


@lru_cache(maxsize=16)
def generate_request_model(settings: GenerationSettings) -> type[GenerateRequest]:
    return create_model(
        "GenerateRequest",
        __base__=GenerateRequest,
        prompt=(
            _prompt_type(settings),
            Field(
                description=f"The text to continue: up to {settings.max_prompt_chars} "
                "characters, not blank (and within the model's context in tokens)."
            ),
        ),
        max_new_tokens=(
            int,
            Field(
                settings.default_max_new_tokens,
                ge=1,
                le=settings.max_new_tokens_limit,
                description=f"Most tokens to generate, 1 to {settings.max_new_tokens_limit}; "
                f"default {settings.default_max_new_tokens}.",
            ),
        ),
        stop=(
            stop_type(settings.max_stop_sequences, settings.max_stop_chars) | None,
            Field(
                None,
                description=f"A string or up to {settings.max_stop_sequences} strings (each 1 to "
                f"{settings.max_stop_chars} characters); the text ends before the first one.",
            ),
        ),
    )


@lru_cache(maxsize=16)
def completion_request_model(settings: GenerationSettings) -> type[CompletionRequest]:
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
            int | None,
            Field(
                16,
                ge=1,
                le=settings.max_new_tokens_limit,
                description=f"Most tokens to generate, 1 to {settings.max_new_tokens_limit}; "
                "default 16.",
            ),
        ),
        stop=(
            stop_type(settings.max_stop_sequences, settings.max_stop_chars) | None,
            Field(
                None,
                description=f"A string or up to {settings.max_stop_sequences} strings "
                f"(each 1 to {settings.max_stop_chars} characters).",
            ),
        ),
    )


# Response models.


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


# Server-Sent Events.

SSE_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(data: BaseModel | dict[str, Any]) -> bytes:
    """One `data:` event. JSON never contains a raw newline, so one line always suffices."""
    payload = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    return f"data: {payload}\n\n".encode()


def sse_error(error: ApiError) -> bytes:
    return sse_event(error_body(error.type, error.message, error.field))


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that always closes its iterator.

    Starlette leaves the body iterator suspended when the response is cancelled between two
    chunks (the client went away during a send); closing it here runs the iterator's cleanup,
    which cancels the generation at once instead of whenever the garbage collector gets to it.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]):
        super().__init__(content, headers=SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


# Routes.


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


def _check_max_new_tokens(served: ServedModel, max_new_tokens: int, field: str) -> None:
    """The model's context holds the start token, the prompt and the new tokens."""
    if served.max_output_tokens is not None and max_new_tokens > served.max_output_tokens - 2:
        raise ApiError(
            422,
            "validation_error",
            f"{field}: must be at most {served.max_output_tokens - 2} for model {served.id}",
            field=field,
        )


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
        raise ApiError(
            504, "timeout", f"the model did not accept the request within {timeout_s:g} s"
        ) from None
    except StopAsyncIteration:
        raise ApiError(500, "internal_error", "the generation ended before it began") from None
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
        raise ApiError(
            504,
            "timeout",
            f"the generation did not finish within {timeout_s:g} s; ask for fewer tokens or "
            "stream the answer",
        ) from None
    except StopAsyncIteration:
        raise ApiError(500, "internal_error", "the generation ended without finishing") from None
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
    text_event,
    final_events,
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
    except ApiError as error:
        yield sse_error(error)
    except StopAsyncIteration:
        yield sse_error(ApiError(500, "internal_error", "the generation ended without finishing"))
    finally:
        await stream.aclose()


GENERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such generation model."},
    413: {"model": ErrorResponse, "description": "Request body too large."},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the culprit."},
    503: {"model": ErrorResponse, "description": "Overloaded; retry after `Retry-After` seconds."},
    504: {"model": ErrorResponse, "description": "The generation took too long."},
}

SSE_RESPONSE = {
    "description": "With `stream: true`: Server-Sent Events, `data: <JSON>` each, ending with "
    "`data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def install_generation_routes(app: FastAPI, backend: GenerationBackend | None) -> None:
    """Add the generation routes to `app`; with no backend they answer 404 `model_not_found`."""
    settings = backend.settings if backend is not None else GenerationSettings()
    GenerateRequestModel = generate_request_model(settings)
    CompletionRequestModel = completion_request_model(settings)
    timeout_s = settings.request_timeout_s

    @app.post(
        "/v1/generate",
        tags=["generation"],
        response_model=GenerateResponse,
        responses={**GENERATION_ERRORS, 200: SSE_RESPONSE},
        summary="Continue a prompt with the language model (optionally streamed)",
    )
    async def generate(body: GenerateRequestModel, request: Request):
        served = _check_model(backend, body.model)
        _check_max_new_tokens(served, body.max_new_tokens, "max_new_tokens")
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

    @app.post(
        "/v1/completions",
        tags=["generation"],
        response_model=Completion,
        responses={**GENERATION_ERRORS, 200: SSE_RESPONSE},
        summary="OpenAI-compatible text completion (optionally streamed)",
    )
    async def completions(body: CompletionRequestModel, request: Request):
        served = _check_model(backend, body.model)
        params = body.sampling()
        _check_max_new_tokens(served, params.max_new_tokens, "max_tokens")
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


async def generation_model_card(backend: GenerationBackend) -> ModelCard:
    """The language model's entry in `GET /v1/models`."""
    served = backend.model
    status = await backend.status()
    return ModelCard(
        id=served.id,
        name=served.name,
        version=served.version,
        arch=served.arch,
        source=served.source,
        target=served.target,
        parameters=served.parameters,
        metrics=served.metrics,
        default=False,
        status="ready" if status.ready else "unavailable",
        serving=status.serving,
        task="generation",
        created=served.created,
    )
