"""What the HTTP ingress and the model replicas hand each other, and how a request can fail.

The ingress turns a validated request into a job (`TranslationJob`, `GenerationJob`) and a
replica answers with outcomes (`JobResult` of `ItemOutcome`s, a stream of `GenerationChunk`s);
`ServedModel` is what the ingress knows of a deployed model version, `ModelStatus` how a replica
says it is doing. These objects cross Ray's object store, so they are plain frozen dataclasses.

Failures are domain errors (`ServiceError` and its kinds: overloaded, model unavailable, prompt
too long, timeout, decode failed), raised or yielded by the replicas and by the ingress's
clients; `service/api/errors.py` alone turns them into HTTP statuses and bodies. This module
imports neither FastAPI nor Ray, so both sides of the seam (and a fake backend in a unit test)
can use it without pulling in the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.decoding.generation import SamplingParams
from service.decoding.search import DecodeOptions
from service.decoding.translator import Translation


@dataclass(frozen=True)
class ServedModel:
    """One deployed model version, as the ingress sees it (manifest facts, no weights)."""

    key: str  # the deployment that serves it
    id: str  # "es-en/transformer": a language pair and a name
    version: int
    arch: str
    source: str
    target: str
    parameters: int
    metrics: dict[str, Any] = field(default_factory=dict)
    max_output_tokens: int | None = None  # the model's own limit (positions), if it has one
    max_source_tokens: int | None = None  # longest source its replica takes, EOS included
    default: bool = False
    created: int = 0  # Unix time the version was saved (OpenAI's `created`)

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[1]

    @property
    def label(self) -> str:
        return f"{self.id}@{self.version}"


@dataclass(frozen=True)
class ModelStatus:
    ready: bool
    serving: dict[str, Any] = field(default_factory=dict)  # device, dtype, live batching


@dataclass(frozen=True)
class TranslationJob:
    """All texts of one request, decoded with the same options."""

    texts: list[str]
    options: DecodeOptions
    request_id: str


@dataclass(frozen=True)
class ItemOutcome:
    """One text's translation and what it waited for and cost."""

    translation: Translation | None
    queue_s: float  # enqueued -> its decode call started
    compute_s: float  # duration of the decode call that carried it
    batch_size: int  # texts decoded in that call, from all requests
    batch_id: int = 0  # which decode call, per replica; equal ids shared one call
    error: str | None = None  # set when this text alone could not be decoded
    cached: bool = False  # answered from the ingress's translation cache, not decoded


@dataclass(frozen=True)
class JobResult:
    items: list[ItemOutcome]
    model_id: str
    version: int
    wall_s: float  # in the model replica, from receipt to the last item done

    @property
    def compute_s(self) -> float:
        """Time in decode calls, each counted once even when it carried several items."""
        seen: dict[int, float] = {}
        for item in self.items:
            seen.setdefault(item.batch_id, item.compute_s)
        return sum(seen.values())

    @property
    def queue_s(self) -> float:
        return max(0.0, self.wall_s - self.compute_s)


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


class ServiceError(Exception):
    """A request the service could not serve, said in domain terms (no HTTP status here).

    `field` names the request field at fault, if one is; `retry_after_s` says when trying
    again may succeed, if it may. Picklable, so a replica can hand one to the ingress.
    """

    def __init__(
        self, message: str, *, field: str | None = None, retry_after_s: float | None = None
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.field, self.retry_after_s))


def _rebuild(
    kind: type[ServiceError], message: str, field: str | None, retry_after_s: float | None
) -> ServiceError:
    return kind(message, field=field, retry_after_s=retry_after_s)


class Overloaded(ServiceError):
    """The model's queue is full; retry after `retry_after_s`."""


class ModelUnavailable(ServiceError):
    """The model's replica is down or restarting; retry after `retry_after_s`."""


class Timeout(ServiceError):
    """The work did not finish within the request's time limit."""


class PromptTooLong(ServiceError):
    """The prompt and the tokens asked for do not fit the model's context."""


class DecodeFailed(ServiceError):
    """The model failed on this request: a bug, reported with the request id."""
