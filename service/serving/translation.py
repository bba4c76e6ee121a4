"""The translation deployment: one replica per served translation model version.

`TranslatorDeployment` loads its model once (`runtime.load_replica_model`) and feeds every
text of every request into one queue, chosen by `batching`: `static`, a `DecodeQueue`
(`batcher.py`) whose batches the library's `Translator` decodes in a worker thread, or
`continuous`, an `EngineQueue` (`continuous.py`) whose engine advances every sentence one step
at a time, taking newcomers at every step and answering each sentence when it finishes. It
records the replica's metrics. It imports neither the API layer nor anything of HTTP: jobs and
outcomes are `service.contracts` types.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from service.contracts import ItemOutcome, JobResult, TranslationJob
from service.decoding.translator import Translator
from service.metrics import ModelMetrics
from service.serving.batcher import BatchItem, BatchReport, DecodeQueue, decode_batch
from service.serving.continuous import EngineQueue, StepReport
from service.serving.runtime import LoadSpec, load_replica_model

Batching = Literal["static", "continuous"]


class BatchingConfig(BaseModel):
    """The live part of a translation deployment (`user_config`), applied by `reconfigure`."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        32, ge=1, le=4096, description="Most texts per decode batch (continuous: running)."
    )
    batch_wait_timeout_s: float = Field(
        0.01,
        ge=0,
        le=10,
        description="How long a static batch waits to fill up while other requests are about "
        "(a lone request on an idle replica does not wait); continuous batching never waits.",
    )


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5, "num_gpus": 0},
    max_ongoing_requests=64,  # twice the default max_batch_size: one batch waits, one decodes
    max_queued_requests=128,
    user_config=BatchingConfig().model_dump(),
)
class TranslatorDeployment:
    def __init__(
        self,
        spec: LoadSpec,
        max_batch_tokens: int = 8192,
        max_source_tokens: int = 256,
        batching: Batching = "static",
    ):
        self.loaded = load_replica_model(spec)
        self.manifest = self.loaded.manifest
        self.translator = Translator(
            self.loaded.model,
            self.loaded.tokenizer,
            max_batch_tokens=max_batch_tokens,
            max_source_tokens=max_source_tokens,
        )
        self.batching = BatchingConfig()
        self.mode: Batching = batching
        if batching == "continuous":
            self.queue: DecodeQueue | EngineQueue = EngineQueue(
                self.translator,
                self.batching.max_batch_size,
                self.batching.batch_wait_timeout_s,
                on_step=self._record_step,
            )
        elif batching == "static":
            self.queue = DecodeQueue(
                self._decode, self.batching.max_batch_size, self.batching.batch_wait_timeout_s
            )
        else:
            raise ValueError(f"batching must be static or continuous, not {batching!r}")
        self._jobs = itertools.count(1)
        self.decode_calls = 0
        self.texts_decoded = 0
        self.largest_call = 0
        self.metrics = ModelMetrics(self.manifest.id, self.manifest.version)
        self.metrics.set_info(
            arch=self.manifest.arch,
            parameters=self.manifest.parameters,
            **self.loaded.serving_info(),
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batching settings from `user_config`; invalid values fail the update loudly."""
        self.batching = BatchingConfig.model_validate(user_config or {})
        self.queue.configure(self.batching.max_batch_size, self.batching.batch_wait_timeout_s)

    async def translate(self, job: TranslationJob) -> JobResult:
        """Fan the job's texts into the batch queue; they may share batches with other jobs."""
        received = time.perf_counter()
        items = [BatchItem(text, job.options, request=job.request_id) for text in job.texts]
        try:
            outcomes = list(await asyncio.gather(*(self.queue.submit(item) for item in items)))
        except asyncio.CancelledError:
            for item in items:
                item.cancelled = True
            raise
        if self.mode == "continuous":
            outcomes = self._as_one_span(outcomes)
        return JobResult(
            items=outcomes,
            model_id=self.manifest.id,
            version=self.manifest.version,
            wall_s=time.perf_counter() - received,
        )

    def _as_one_span(self, outcomes: list[ItemOutcome]) -> list[ItemOutcome]:
        """A job's sentences decode side by side, each from its admission to its end: the
        job's compute is the span from the first admission to the last end (all were queued
        at once), so `JobResult.compute_s` counts overlapping steps once."""
        decoded = [o for o in outcomes if o.error is None and o.translation is not None]
        carried = {id(o) for o in decoded}
        if not decoded:
            return outcomes
        start = min(o.queue_s for o in decoded)
        span = max(o.queue_s + o.compute_s for o in decoded) - start
        batch_id = -next(self._jobs)
        return [
            dataclasses.replace(o, compute_s=span, batch_id=batch_id) if id(o) in carried else o
            for o in outcomes
        ]

    def _record_step(self, report: StepReport) -> None:
        if report.batch_size:
            self.decode_calls += 1
            self.largest_call = max(self.largest_call, report.batch_size)
            self.metrics.record_step(report.batch_size, report.seconds)
        if report.finished:
            self.texts_decoded += len(report.finished)
            self.metrics.record_texts(
                len(report.finished),
                sum(t.input_tokens for t in report.finished),
                sum(t.best.tokens for t in report.finished),
            )
        for seconds in report.queue_seconds:
            self.metrics.record_queue(seconds)
        self.metrics.record_failures(report.failed)

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
        continuous = (
            {"running": self.queue.running, "waiting": self.queue.waiting}
            if isinstance(self.queue, EngineQueue)
            else {}
        )
        return {
            **self.loaded.serving_info(),
            "batching": self.mode,
            **continuous,
            "max_batch_size": self.batching.max_batch_size,
            "batch_wait_timeout_s": self.batching.batch_wait_timeout_s,
            "max_batch_tokens": self.translator.max_batch_tokens,
            "decode_calls": self.decode_calls,
            "texts_decoded": self.texts_decoded,
            "largest_batch": self.largest_call,
        }
