"""The HTTP ingress: the FastAPI app on Ray Serve, and its clients of the model deployments.

`Ingress` carries `service.api.app.create_app` and hands it `Backends` made of two clients:
`TranslationClient` calls a translation deployment by `ServedModel.key`, `GenerationClient`
streams from the language model's. The clients are where Ray's transport errors become the
domain errors of `service.contracts` (`Overloaded`, `ModelUnavailable`, `Timeout`), in one
function, `domain_error`; the API layer maps those to HTTP and never sees Ray.

This module and `ratelimit` (the limiter actor every ingress replica shares) are the only ones
that import both Ray and the API layer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from service.api.access import KeySettings, RateLimitSettings
from service.api.app import create_app
from service.api.backends import Backends
from service.api.cache import TranslationCache
from service.api.catalog import Catalog
from service.api.detect import detector_for
from service.api.experiments import DEFAULT_FEEDBACK_CAPACITY, ExperimentConfig
from service.api.settings import ApiSettings, GenerationSettings
from service.contracts import (
    GenerationChunk,
    GenerationJob,
    JobResult,
    ModelStatus,
    ModelUnavailable,
    Overloaded,
    ServedModel,
    ServiceError,
    Timeout,
    TranslationJob,
)
from service.metrics import IngressMetrics
from service.serving.ratelimit import serving_access

logger = logging.getLogger("ray.serve")

STATUS_TIMEOUT_S = 2.0
T = TypeVar("T")


@dataclass(frozen=True)
class ServedGenerator:
    """What the ingress knows of the language model: its catalog entry (whose `key` names the
    deployment handle) and the API limits."""

    model: ServedModel
    settings: GenerationSettings


def domain_error(error: BaseException, model: ServedModel, retry_after_s: float) -> BaseException:
    """What a failed call to a model deployment means for the request, in domain terms.

    A full queue is `Overloaded`; a replica that is down, restarting or gone is
    `ModelUnavailable`; a domain error raised in the replica arrives wrapped by Ray (a
    `RayTaskError` that subclasses it) and is unwrapped. Anything else is returned as is: a bug.
    """
    if isinstance(error, BackPressureError):
        return Overloaded(
            f"model {model.id} is at capacity; retry shortly", retry_after_s=retry_after_s
        )
    if isinstance(error, (DeploymentUnavailableError, RayActorError)):
        logger.warning("model %s unavailable", model.label, exc_info=error)
        return ModelUnavailable(
            f"model {model.id} is not available right now; retry shortly",
            retry_after_s=retry_after_s,
        )
    if isinstance(error, RayTaskError) and isinstance(error.cause, ServiceError):
        return error.cause
    return error


async def _status(call: Callable[[], Awaitable[dict[str, Any]]]) -> ModelStatus:
    """A deployment's `info()`, quickly: a full one is still ready, a silent one is not."""
    try:
        info = await asyncio.wait_for(call(), STATUS_TIMEOUT_S)
        return ModelStatus(ready=True, serving=info)
    except BackPressureError:  # loaded, merely full
        return ModelStatus(ready=True, serving={"busy": True})
    except Exception:
        return ModelStatus(ready=False)


async def _resolved(response: Awaitable[T]) -> T:
    return await response


class TranslationClient:
    """`service.api.backends.TranslationBackend` over the translation deployments' handles."""

    def __init__(self, catalog: Catalog, handles: dict[str, Any], settings: ApiSettings):
        self.catalog = catalog
        self.handles = handles  # DeploymentHandle per ServedModel.key
        self.timeout_s = settings.request_timeout_s
        self.retry_after_s = settings.retry_after_s

    async def translate(self, model: ServedModel, job: TranslationJob) -> JobResult:
        response = None
        try:
            response = self.handles[model.key].translate.remote(job)
            return await asyncio.wait_for(_resolved(response), self.timeout_s)
        except asyncio.TimeoutError:
            if response is not None:
                response.cancel()
            raise Timeout(
                f"translation did not finish within {self.timeout_s:g} s; send fewer or shorter "
                "texts, or a smaller beam_size or max_length"
            ) from None
        except Exception as error:
            mapped = domain_error(error, model, self.retry_after_s)
            if mapped is error:
                raise
            raise mapped from None

    async def status(self) -> dict[str, ModelStatus]:
        async def one(model: ServedModel) -> tuple[str, ModelStatus]:
            return model.key, await _status(
                lambda: _resolved(self.handles[model.key].info.remote())
            )

        return dict(await asyncio.gather(*(one(m) for m in self.catalog.models)))


class StoreTokenCounter:
    """`service.api.backends.TokenCounter` with each served model's own tokenizer, read from
    the store the replicas load from (tokenizer files only, loaded on first use), so the
    ingress splits sentences exactly where the replica's source limit would cut them."""

    def __init__(self, store: str, models: Sequence[ServedModel]):
        self.store = store
        self.models = {m.key: m for m in models}
        self._tokenizers: dict[str, Any] = {}

    def tokenizer(self, model: ServedModel) -> Any:
        if model.key not in self._tokenizers:
            from service.store import ModelStore
            from service.store.registry import TOKENIZER_FILE, LoadedModel

            store = ModelStore(self.store)
            manifest = store.resolve(model.id, model.version)
            directory = store.directory(manifest)
            files = LoadedModel(
                manifest=manifest,
                model=None,
                directory=directory,
                tokenizer_path=directory / TOKENIZER_FILE,
                extra_paths={name: directory / name for name in manifest.extra_files},
            )
            self._tokenizers[model.key] = files.tokenizer
        return self._tokenizers[model.key]

    def source_tokens(self, model: ServedModel, text: str) -> int:
        return len(self.tokenizer(model).encode(text))


class GenerationClient:
    """`service.api.backends.GenerationBackend` over the language model deployment's handle."""

    def __init__(self, served: ServedGenerator, handle: Any, retry_after_s: float = 1):
        self.model = served.model
        self.settings = served.settings
        self.retry_after_s = retry_after_s
        self._handle = handle
        self._streaming = handle.options(stream=True)

    async def stream(self, job: GenerationJob) -> AsyncIterator[GenerationChunk]:
        response = self._streaming.generate_stream.remote(job)
        finished = False
        try:
            async for chunk in response:
                if isinstance(chunk, ServiceError):  # the replica refused or failed the request
                    finished = True
                    raise chunk
                finished = chunk.finished
                yield chunk
        except Exception as error:
            mapped = domain_error(error, self.model, self.retry_after_s)
            if mapped is error:
                raise
            raise mapped from None
        finally:
            if not finished:  # closed early: the client went away, or a timeout
                response.cancel()

    async def status(self) -> ModelStatus:
        return await _status(lambda: _resolved(self._handle.info.remote()))


# When the ingress itself is full, Serve's proxy answers 503 (plain text) with this Retry-After.
@serve.deployment(
    ray_actor_options={"num_cpus": 0.25, "num_gpus": 0},
    max_ongoing_requests=256,
    max_queued_requests=512,
    backpressure_config={"retry_after_s": 1},
)
@serve.ingress()
class Ingress:
    """The HTTP front: routes requests to model deployments by `ServedModel.key`."""

    def __init__(
        self,
        settings: ApiSettings,
        models: list[ServedModel],
        handles: dict[str, Any],  # DeploymentHandle per ServedModel.key
        *,
        experiments: Sequence[ExperimentConfig] = (),
        feedback_capacity: int = DEFAULT_FEEDBACK_CAPACITY,
        generation: ServedGenerator | None = None,  # the language model, if one is served
        store: str | None = None,  # the model store: source tokenizers for sentence splitting
        keys: KeySettings | None = None,  # API keys, the db path absolute
        rate_limit: RateLimitSettings | None = None,
    ):
        self.settings = settings
        self.metrics = IngressMetrics()
        catalog = Catalog(models)
        self.backends = Backends(
            catalog=catalog,
            translation=TranslationClient(catalog, handles, settings),
            generation=GenerationClient(
                generation, handles[generation.model.key], settings.retry_after_s
            )
            if generation is not None
            else None,
            tokens=StoreTokenCounter(store, models) if store is not None else None,
            cache=TranslationCache(settings.cache_size, self.metrics.cache),
        )
        # Off the start-up path: the first `source: auto` request need not load lingua itself.
        threading.Thread(target=detector_for(catalog).warm, name="langid-warm", daemon=True).start()
        self.experiments = list(experiments)
        self.feedback_capacity = feedback_capacity
        self.access = serving_access(
            keys or KeySettings(), rate_limit or RateLimitSettings(), self.metrics
        )

    def __serve_build_asgi_app__(self):
        return create_app(
            self.settings,
            self.backends,
            behind_serve_proxy=True,
            experiments=self.experiments,
            recorder=self.metrics,
            feedback_capacity=self.feedback_capacity,
            access=self.access,
        )
