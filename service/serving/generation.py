"""The text generation deployment: the language model and its continuous-batching engine.

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

A request the model cannot take, or one whose step failed, gets a domain error of
`service.contracts` (`PromptTooLong`, `DecodeFailed`) in its stream; the ingress turns it into
an HTTP answer. This module imports neither the API layer nor anything of HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from service.contracts import DecodeFailed, GenerationChunk, GenerationJob, PromptTooLong
from service.decoding.generation import GenerationEngine, GenerationOutput
from service.serving.runtime import LoadSpec, load_replica_model

logger = logging.getLogger("ray.serve")


class GeneratorConfig(BaseModel):
    """The live part of the language model deployment (`user_config`), applied by `reconfigure`."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        16, ge=1, le=1024, description="Most sequences advanced together by one decode step."
    )


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
    def __init__(self, spec: LoadSpec):
        self.loaded = load_replica_model(spec, arch="lm")
        self.manifest = self.loaded.manifest
        self.model = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
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

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live settings; a smaller batch takes effect as running sequences finish."""
        self.config = GeneratorConfig.model_validate(user_config or {})
        self.engine.max_batch_size = self.config.max_batch_size

    async def generate_stream(
        self, job: GenerationJob
    ) -> AsyncIterator[GenerationChunk | PromptTooLong | DecodeFailed]:
        """An acknowledgement once the engine has the request, then its text as it comes.

        A request the model cannot take (a prompt too long for its context) gets one
        `PromptTooLong`, and one whose step failed a `DecodeFailed`, yielded rather than raised
        so that the replica does not log a client's mistake as a failure, and the stream ends.
        Outputs that piled up while the caller was reading are sent as one chunk, so a slow
        reader gets fewer, larger chunks rather than falling behind.
        """
        self._ensure_loop()
        request_id = f"{job.request_id}:{uuid.uuid4().hex[:8]}"  # client ids need not be unique
        request = _Request(asyncio.Queue(), 0.0)
        finished = False
        async with self._engine_lock:
            try:
                prompt_tokens = self.engine.add(request_id, job.prompt, job.params)
            except ValueError as error:
                rejection = PromptTooLong(
                    f"too long for the model's context ({error}); shorten the prompt or ask "
                    "for fewer new tokens",
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
                        yield DecodeFailed(output.message)
                        return
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
            **self.loaded.serving_info(),
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
