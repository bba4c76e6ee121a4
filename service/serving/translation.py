"""Ray Serve deployments: one per served model, and the HTTP ingress in front of them.

Both stay thin. `TranslatorDeployment` loads a verified model from the store in `__init__` and
hands batches to the library's `Translator`; `Ingress` carries the FastAPI app from
`service.api.routes` and turns Ray's transport errors into API errors (503, 504).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from service.api.backend import ItemOutcome, JobResult, ModelStatus, TranslationJob
from service.api.catalog import Catalog, ServedModel
from service.api.errors import ApiError, overloaded
from service.api.experiments import DEFAULT_FEEDBACK_CAPACITY, ExperimentConfig
from service.api.routes import create_app
from service.api.schemas import ApiSettings
from service.decoding.translator import Translator
from service.metrics import IngressMetrics, ModelMetrics
from service.serving.batcher import BatchItem, BatchReport, DecodeQueue, decode_batch
from service.serving.config import BatchingConfig, RuntimeArgs
from service.serving.generation import GenerationClient, ServedGenerator

logger = logging.getLogger("ray.serve")

STATUS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LoadSpec:
    """Exactly which model a `TranslatorDeployment` replica loads, and how."""

    store: str
    model_id: str
    version: int
    runtime: RuntimeArgs
    max_batch_tokens: int = 8192
    max_source_tokens: int = 256


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but this replica sees no GPU; set num_gpus")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5, "num_gpus": 0},
    max_ongoing_requests=64,  # twice the default max_batch_size: one batch waits, one decodes
    max_queued_requests=128,
    user_config=BatchingConfig().model_dump(),
)
class TranslatorDeployment:
    def __init__(self, spec: LoadSpec):
        from service.store import ModelStore

        torch.set_num_threads(spec.runtime.torch_threads)
        self.device = pick_device(spec.runtime.device)
        self.dtype = pick_dtype(spec.runtime.dtype, self.device)
        loaded = ModelStore(spec.store).load(
            spec.model_id, spec.version, device=self.device, dtype=self.dtype
        )
        self.manifest = loaded.manifest
        self.translator = Translator(
            loaded.model,
            loaded.tokenizer,
            max_batch_tokens=spec.max_batch_tokens,
            max_source_tokens=spec.max_source_tokens,
        )
        self.batching = BatchingConfig()
        self.queue = DecodeQueue(
            self._decode, self.batching.max_batch_size, self.batching.batch_wait_timeout_s
        )
        self.decode_calls = 0
        self.texts_decoded = 0
        self.largest_call = 0
        self.metrics = ModelMetrics(self.manifest.id, self.manifest.version)
        self.metrics.set_info(
            arch=self.manifest.arch,
            parameters=self.manifest.parameters,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
        )
        logger.info(
            "loaded %s v%d on %s (%s)",
            self.manifest.id,
            self.manifest.version,
            self.device,
            self.dtype,
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batching settings from `user_config`; invalid values fail the update loudly."""
        self.batching = BatchingConfig.model_validate(user_config or {})
        self.queue.configure(self.batching.max_batch_size, self.batching.batch_wait_timeout_s)

    async def translate(self, job: TranslationJob) -> JobResult:
        """Fan the job's texts into the batch queue; they may share batches with other jobs."""
        received = time.perf_counter()
        items = [BatchItem(text, job.options) for text in job.texts]
        try:
            outcomes = await asyncio.gather(*(self.queue.submit(item) for item in items))
        except asyncio.CancelledError:
            for item in items:
                item.cancelled = True
            raise
        return JobResult(
            items=list(outcomes),
            model_id=self.manifest.id,
            version=self.manifest.version,
            wall_s=time.perf_counter() - received,
        )

    async def _decode(self, items: list[BatchItem]) -> list[ItemOutcome]:
        # In a worker thread, so the event loop keeps accepting (and batching) new requests
        # while this batch computes.
        report = BatchReport()
        outcomes = await asyncio.to_thread(decode_batch, self.translator, items, report)
        self.decode_calls += len(report.call_sizes)
        self.texts_decoded += sum(report.call_sizes)
        self.largest_call = max([self.largest_call, *report.call_sizes])
        self._record(report)
        return outcomes

    def _record(self, report: BatchReport) -> None:
        calls = zip(
            report.call_sizes,
            report.call_seconds,
            report.call_input_tokens,
            report.call_output_tokens,
            strict=True,
        )
        for size, seconds, input_tokens, output_tokens in calls:
            self.metrics.record_call(size, seconds, input_tokens, output_tokens)
        for seconds in report.queue_seconds:
            self.metrics.record_queue(seconds)
        self.metrics.record_failures(report.failed)

    def info(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_batch_size": self.batching.max_batch_size,
            "batch_wait_timeout_s": self.batching.batch_wait_timeout_s,
            "max_batch_tokens": self.translator.max_batch_tokens,
            "decode_calls": self.decode_calls,
            "texts_decoded": self.texts_decoded,
            "largest_batch": self.largest_call,
        }


async def _resolved(response) -> Any:
    return await response


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
    ):
        self.settings = settings
        self.catalog = Catalog(models)
        self.handles = handles
        # create_app serves /v1/generate and /v1/completions through this, or answers 404.
        self.generation = (
            GenerationClient(generation, handles[generation.model.key], settings.retry_after_s)
            if generation is not None
            else None
        )
        self.experiments = list(experiments)
        self.feedback_capacity = feedback_capacity
        self.metrics = IngressMetrics()

    def __serve_build_asgi_app__(self):
        return create_app(
            self.settings,
            self,
            behind_serve_proxy=True,
            experiments=self.experiments,
            recorder=self.metrics,
            feedback_capacity=self.feedback_capacity,
        )

    async def translate(self, model: ServedModel, job: TranslationJob) -> JobResult:
        response = None
        try:
            response = self.handles[model.key].translate.remote(job)
            return await asyncio.wait_for(_resolved(response), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            if response is not None:
                response.cancel()
            raise ApiError(
                504,
                "timeout",
                f"translation did not finish within {self.settings.request_timeout_s:g} s; "
                "send fewer or shorter texts, or a smaller beam_size or max_length",
            ) from None
        except BackPressureError:
            raise overloaded(
                f"model {model.id} is at capacity; retry shortly", self.settings.retry_after_s
            ) from None
        except (DeploymentUnavailableError, RayActorError):
            logger.warning("model %s unavailable", model.label, exc_info=True)
            raise ApiError(
                503,
                "model_unavailable",
                f"model {model.id} is not available right now; retry shortly",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            ) from None

    async def status(self) -> dict[str, ModelStatus]:
        async def one(model: ServedModel) -> tuple[str, ModelStatus]:
            try:
                info = await asyncio.wait_for(
                    _resolved(self.handles[model.key].info.remote()), STATUS_TIMEOUT_S
                )
                return model.key, ModelStatus(ready=True, serving=info)
            except BackPressureError:  # loaded, merely full
                return model.key, ModelStatus(ready=True, serving={"busy": True})
            except Exception:
                return model.key, ModelStatus(ready=False)

        return dict(await asyncio.gather(*(one(m) for m in self.catalog.models)))
