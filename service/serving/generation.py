"""Text generation on Ray Serve: the language model deployment and the ingress's client for it.

`GeneratorDeployment` owns one `GenerationEngine` (continuous batching) and one engine loop, an
asyncio task that runs `engine.step()` in a worker thread while there is work and routes each
step's outputs into per-request queues (the vLLM AsyncLLMEngine pattern). Every request is a
streaming call: `generate_stream` adds the request to the engine and yields `GenerationChunk`s
from its queue, so requests that arrive at different times share decode steps.

The engine is single-threaded, so the loop holds `_engine_lock` while a step runs, and a new
request takes the same lock to join; cancellations are handed to the loop, which applies them
before the next step. Cancellation travels: HTTP client gone -> Serve's proxy cancels the
ingress request -> the ingress's stream is closed and cancels its `DeploymentResponseGenerator`
-> Serve throws `CancelledError` into `generate_stream` -> the request is dropped from the
engine before the next step, so no step runs for it any more.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import torch
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from service.api.backend import ModelStatus
from service.api.catalog import ServedModel
from service.api.errors import ApiError, overloaded
from service.api.generation import GenerationChunk, GenerationJob, GenerationSettings
from service.decoding.generation import GenerationEngine, GenerationOutput
from service.serving.config import GeneratorConfig, RuntimeArgs

logger = logging.getLogger("ray.serve")

STATUS_TIMEOUT_S = 2.0


def created_timestamp(iso: str) -> int:
    """A manifest's `created` (ISO 8601) as Unix time; 0 when it cannot be read."""
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class GeneratorSpec:
    """Exactly which language model a `GeneratorDeployment` replica loads, and how."""

    store: str
    model_id: str
    version: int
    runtime: RuntimeArgs


@dataclass(frozen=True)
class ServedGenerator:
    """What the ingress knows of the language model: its catalog entry (whose `key` names the
    deployment handle) and the API limits."""

    model: ServedModel
    settings: GenerationSettings


@dataclass
class _Request:
    queue: asyncio.Queue
    accepted: float  # perf_counter when the engine took it
    last_token: float | None = None


class _Failure:
    """Put into a request's queue when a step failed; the request ends with an error."""

    def __init__(self, message: str):
        self.message = message


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5, "num_gpus": 0},
    # Every open stream is one ongoing request; the engine admits max_batch_size of them into
    # the running batch and the rest wait in its queue, in arrival order.
    max_ongoing_requests=64,
    max_queued_requests=128,
    user_config=GeneratorConfig().model_dump(),
)
class GeneratorDeployment:
    def __init__(self, spec: GeneratorSpec):
        from service.serving.deployments import pick_device, pick_dtype
        from service.store import ModelStore

        torch.set_num_threads(spec.runtime.torch_threads)
        self.device = pick_device(spec.runtime.device)
        self.dtype = pick_dtype(spec.runtime.dtype, self.device)
        loaded = ModelStore(spec.store).load(
            spec.model_id, spec.version, device=self.device, dtype=self.dtype
        )
        if loaded.manifest.arch != "lm":
            raise ValueError(f"{loaded.manifest.id} is a {loaded.manifest.arch}, not an lm")
        self.manifest = loaded.manifest
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = GeneratorConfig()
        self.engine = GenerationEngine(self.model, self.tokenizer, self.config.max_batch_size)
        self._requests: dict[str, _Request] = {}
        self._to_cancel: set[str] = set()
        self._engine_lock = asyncio.Lock()
        self._work = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self.steps = 0
        self.tokens_generated = 0
        self.largest_batch = 0
        self.finished: Counter[str] = Counter()
        self.metrics = None
        try:
            from service.metrics import GenerationMetrics

            self.metrics = GenerationMetrics(self.manifest.id, self.manifest.version)
        except Exception:  # metrics are an aid; a replica must not fail for want of them
            logger.warning("metrics unavailable for %s", self.manifest.id, exc_info=True)
        logger.info(
            "loaded %s v%d on %s (%s)",
            self.manifest.id,
            self.manifest.version,
            self.device,
            self.dtype,
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live settings; a smaller batch takes effect as running sequences finish."""
        self.config = GeneratorConfig.model_validate(user_config or {})
        self.engine.max_batch_size = self.config.max_batch_size

    async def generate_stream(
        self, job: GenerationJob
    ) -> AsyncIterator[GenerationChunk | ApiError]:
        """An acknowledgement once the engine has the request, then its text as it comes.

        A request the model cannot take (a prompt too long for its context) gets one ApiError,
        yielded rather than raised so that the replica does not log a client's mistake as a
        failure. Outputs that piled up while the caller was reading are sent as one chunk, so
        a slow reader gets fewer, larger chunks rather than falling behind.
        """
        self._ensure_loop()
        request_id = f"{job.request_id}:{uuid.uuid4().hex[:8]}"  # client ids need not be unique
        request = _Request(asyncio.Queue(), 0.0)
        finished = False
        async with self._engine_lock:
            try:
                prompt_tokens = self.engine.add(request_id, job.prompt, job.params)
            except ValueError as error:
                rejection = ApiError(
                    422,
                    "validation_error",
                    f"prompt: too long for the model's context ({error}); shorten the prompt "
                    "or ask for fewer new tokens",
                    field="prompt",
                )
            else:
                rejection = None
                request.accepted = time.perf_counter()
                self._requests[request_id] = request
        if rejection is not None:
            yield rejection
            return
        self._work.set()
        self._record("accepted", prompt_tokens)
        try:
            yield GenerationChunk("", 0, False, None, prompt_tokens, 0)
            while not finished:
                outputs = [await request.queue.get()]
                while not request.queue.empty():
                    outputs.append(request.queue.get_nowait())
                for output in outputs:
                    if isinstance(output, _Failure):
                        finished = True
                        raise ApiError(500, "internal_error", output.message)
                last = outputs[-1]
                finished = last.finished
                yield GenerationChunk(
                    text="".join(o.text for o in outputs),
                    tokens=len(outputs),
                    finished=last.finished,
                    finish_reason=last.finish_reason,
                    prompt_tokens=last.prompt_tokens,
                    completion_tokens=last.completion_tokens,
                )
        finally:
            self._requests.pop(request_id, None)
            if not finished:  # the caller went away (or the call was cancelled)
                self._to_cancel.add(request_id)
                self._work.set()

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._engine_loop())

    async def _engine_loop(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while True:
                async with self._engine_lock:
                    self._apply_cancellations()
                    if not self.engine.has_work():
                        break
                    try:
                        outputs = await asyncio.to_thread(self.engine.step)
                    except Exception:
                        logger.exception("generation step failed; failing its requests")
                        self._fail_all("the generation failed; please report it")
                        continue
                    batch = self.engine.batch_sizes[-1] if self.engine.batch_sizes else 0
                    self.engine.batch_sizes.clear()  # read here; unbounded otherwise
                self._route(outputs, batch)
                # Let requests that arrived during the step join the lock queue before the
                # next step takes it again.
                await asyncio.sleep(0)

    def _apply_cancellations(self) -> None:
        while self._to_cancel:
            request_id = self._to_cancel.pop()
            if self.engine.cancel(request_id):
                self.finished["cancelled"] += 1
                self._record("finished", "cancelled")

    def _route(self, outputs: list[GenerationOutput], batch: int) -> None:
        now = time.perf_counter()
        self.steps += 1
        self.tokens_generated += len(outputs)
        self.largest_batch = max(self.largest_batch, batch)
        self._record("step", batch)
        for output in outputs:
            if output.finished:
                self.finished[output.finish_reason] += 1
                self._record("finished", output.finish_reason)
            request = self._requests.get(output.request_id)
            if request is None:  # cancelled while the step ran; dropped before the next
                continue
            if request.last_token is None:
                self._record("first_token", now - request.accepted)
            else:
                self._record("inter_token", now - request.last_token)
            request.last_token = now
            request.queue.put_nowait(output)

    def _fail_all(self, message: str) -> None:
        """After a failed step the engine's state is unknown: fail every request, start over."""
        for request in self._requests.values():
            request.queue.put_nowait(_Failure(message))
        failed = len(self.engine.waiting) + len(self.engine.running)
        self.finished["error"] += failed
        for _ in range(failed):
            self._record("finished", "error")
        self.engine = GenerationEngine(self.model, self.tokenizer, self.config.max_batch_size)

    def _record(self, event: str, value: Any) -> None:
        if self.metrics is None:
            return
        try:
            if event == "step":
                self.metrics.record_step(value)
            elif event == "first_token":
                self.metrics.record_first_token(value)
            elif event == "inter_token":
                self.metrics.record_inter_token(value)
            elif event == "accepted":
                self.metrics.record_accepted(value)
            elif event == "finished":
                self.metrics.record_finished(value)
        except Exception:  # never fail a request over a metric
            logger.warning("recording metrics failed", exc_info=True)

    def info(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_batch_size": self.engine.max_batch_size,
            "context_tokens": self.model.config.max_positions,
            "running": len(self.engine.running),
            "waiting": len(self.engine.waiting),
            "streams": len(self._requests),
            "steps": self.steps,
            "tokens_generated": self.tokens_generated,
            "largest_batch": self.largest_batch,
            "finished": dict(self.finished),
        }


async def _resolved(response) -> Any:
    return await response


class GenerationClient:
    """The ingress's side (`service.api.generation.GenerationBackend`): streams chunks from
    the deployment and turns Ray's transport errors into API errors."""

    def __init__(self, served: ServedGenerator, handle: Any, retry_after_s: int = 1):
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
                if isinstance(chunk, ApiError):  # the replica refused the request
                    finished = True
                    raise chunk
                finished = chunk.finished
                yield chunk
        except ApiError as error:  # raised in the replica (Ray subclasses it); re-raise plainly
            raise ApiError(
                error.status, error.type, error.message, error.field, error.headers
            ) from None
        except BackPressureError:
            raise overloaded(
                f"model {self.model.id} is at capacity; retry shortly", self.retry_after_s
            ) from None
        except (DeploymentUnavailableError, RayActorError):
            logger.warning("model %s unavailable", self.model.label, exc_info=True)
            raise ApiError(
                503,
                "model_unavailable",
                f"model {self.model.id} is not available right now; retry shortly",
                headers={"Retry-After": str(self.retry_after_s)},
            ) from None
        except RayTaskError as error:
            if isinstance(error.cause, ApiError):
                cause = error.cause
                raise ApiError(cause.status, cause.type, cause.message, cause.field) from None
            raise
        finally:
            if not finished:  # closed early: the client went away, or a timeout
                response.cancel()

    async def status(self) -> ModelStatus:
        try:
            info = await asyncio.wait_for(_resolved(self._handle.info.remote()), STATUS_TIMEOUT_S)
            return ModelStatus(ready=True, serving=info)
        except BackPressureError:  # loaded, merely full
            return ModelStatus(ready=True, serving={"busy": True})
        except Exception:
            return ModelStatus(ready=False)


def bind_generator(
    args: Any, store: Any, options: dict[str, dict[str, Any]]
) -> tuple[ServedGenerator, Any] | None:
    """The language model deployment of `args.generation` (an `AppArgs`), bound, or None.

    A store without the model turns text generation off with a warning, unless the config
    says `required: true`; then the deploy fails with the store's message. Pops the
    deployment's entry from `options` (the config file's `deployments:` overrides) either way.
    """
    from service.store import ModelNotFound, VersionNotFound

    spec = args.generation
    if spec is None:
        return None
    try:
        manifest = store.resolve(spec.id, spec.version)
    except (ModelNotFound, VersionNotFound) as error:
        if spec.required:
            raise
        names = {spec.deployment or spec.id.replace("/", "-")}
        if spec.deployment is None and "/" not in spec.id:
            names |= {name for name in options if name.endswith(f"-{spec.id}")}
        for name in names:
            options.pop(name, None)
        logger.warning("text generation is off: %s", error)
        return None
    if manifest.arch != "lm":
        raise ValueError(
            f"generation.id {spec.id!r} is a {manifest.arch} model, not a language model (lm)"
        )
    key = spec.deployment or manifest.id.replace("/", "-")
    served = ServedModel(
        key=key,
        id=manifest.id,
        version=manifest.version,
        arch=manifest.arch,
        source=manifest.source_lang,
        target=manifest.target_lang,
        parameters=manifest.parameters,
        metrics=dict(manifest.metrics),
        max_output_tokens=manifest.config.get("max_positions"),
        created=created_timestamp(manifest.created),
    )
    load = GeneratorSpec(
        store=str(store.root),
        model_id=manifest.id,
        version=manifest.version,
        runtime=args.runtime,
    )
    app = GeneratorDeployment.options(name=key, **options.pop(key, {})).bind(load)
    return ServedGenerator(served, spec.api_settings()), app
