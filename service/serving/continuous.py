"""The translation replica's continuous-batching loop: `TranslationEngine` behind `submit`.

`EngineQueue` speaks `DecodeQueue`'s interface (`submit(item) -> ItemOutcome`, `configure`),
so the deployment drives either. One asyncio task owns the engine: while it has work, it runs
`engine.step()` in a worker thread, step after step, and resolves each finished sentence's
future as soon as the step that finished it returns. The thread itself hands the sentences that
arrived (and the cancellations) to the engine between steps, so a newcomer costs no return to
the event loop and no new thread hop. Only that thread touches the engine; `submit` and
cancellations only append, under a lock, to lists it drains between steps.

A sentence the engine fails (its encoding, or a step on its rows: the engine isolates it) is
answered with its error and the others go on; only a failure the engine cannot pin on a
sentence fails everything it held (`_fail_all`) and starts a fresh engine.

A caller that gives up (a request timeout, a client gone: its task is cancelled) has its
sentence removed from the engine before the next step, so it stops costing decoder rows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.contracts import ItemOutcome
from service.decoding.continuous import TranslationEngine, TranslationOutput
from service.decoding.translator import Translation, Translator
from service.serving.batcher import BatchItem

logger = logging.getLogger("service.serving")
MAX_STEPS_S = 0.5  # the longest the worker thread steps before the event loop looks in


@dataclass
class StepReport:
    """What one engine step did, for metrics."""

    batch_size: int  # sentences advanced
    seconds: float
    queue_seconds: list[float]  # added -> encoded, of each sentence that finished
    finished: list[Translation]
    failed: int = 0


@dataclass
class _Pending:
    item: BatchItem
    future: asyncio.Future
    source: list[int]


class EngineQueue:
    def __init__(
        self,
        translator: Translator,
        max_batch_size: int = 32,
        batch_wait_timeout_s: float = 0.0,
        on_step: Callable[[StepReport], None] | None = None,
    ):
        self.translator = translator
        self.engine = self._new_engine(max_batch_size)
        self.on_step = on_step
        self.configure(max_batch_size, batch_wait_timeout_s)
        self._ids = itertools.count()
        self._incoming: list[tuple[int, _Pending]] = []
        self._to_cancel: set[int] = set()
        self._lock = threading.Lock()  # over `_incoming` and `_to_cancel`
        self._pending: dict[int, _Pending] = {}
        self._work = asyncio.Event()
        self.loop_task: asyncio.Task | None = None
        self.steps = 0

    def _new_engine(self, max_batch_size: int) -> TranslationEngine:
        return TranslationEngine(
            self.translator.model,
            self.translator.silent_ids,
            max_batch_size=max_batch_size,
            max_batch_tokens=self.translator.max_batch_tokens,
        )

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """A smaller batch takes effect as running sentences finish. The engine never waits
        for company (`batch_wait_timeout_s` is the static queue's): a newcomer joins the next
        step, which is as soon as it could start anyway."""
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.engine.max_batch_size = max_batch_size

    @property
    def running(self) -> int:
        return len(self.engine.running)

    @property
    def waiting(self) -> int:
        return len(self.engine.waiting) + len(self._incoming)

    async def submit(self, item: BatchItem) -> ItemOutcome:
        future = asyncio.get_running_loop().create_future()
        key = next(self._ids)
        try:
            source = self.translator.encode(item.text)
        except Exception as error:  # noqa: BLE001 - this text's own failure
            logger.exception("encoding failed for one text (%d chars)", len(item.text))
            return ItemOutcome(None, 0.0, 0.0, 0, error=f"{type(error).__name__}: {error}")
        with self._lock:
            self._incoming.append((key, _Pending(item, future, source)))
        self._ensure_loop()
        self._work.set()
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:
                self._to_cancel.add(key)
            self._work.set()
            raise

    def _ensure_loop(self) -> None:
        """Start the engine task on this event loop if none runs (an Event belongs to one)."""
        loop = asyncio.get_running_loop()
        task = self.loop_task
        if task is None or task.done() or task.get_loop() is not loop:
            self._work = asyncio.Event()
            self.loop_task = loop.create_task(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            self._work.clear()
            while True:
                try:
                    await asyncio.to_thread(self._steps, loop)
                except Exception as error:  # noqa: BLE001 - handed to every sentence it held
                    logger.exception("decode step failed; failing the sentences it held")
                    self._fail_all(f"{type(error).__name__}: {error}")
                    continue
                with self._lock:
                    arrived = bool(self._incoming or self._to_cancel)
                if not arrived and not self.engine.has_work():
                    break
                await asyncio.sleep(0)  # the event loop's turn (`MAX_STEPS_S`)

    def _steps(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the worker thread: hand arrivals and cancellations to the engine, step, and
        again, until the engine runs dry or `MAX_STEPS_S` have passed.

        One thread hop per step cost about 5 ms a step in a replica on a busy 2-core machine
        (a lone sentence took 1.8x as long as with the static queue), and so did one per
        newcomer (at 32 closed-loop users one arrives at most steps), so the thread stays,
        takes the newcomers itself and answers each step's finished sentences from here,
        through the event loop.
        """
        deadline = time.perf_counter() + MAX_STEPS_S
        while True:
            self._apply(loop)
            if not self.engine.has_work():
                return
            started = time.perf_counter()
            finished = self._step()
            batch = self.engine.batch_sizes[-1] if self.engine.batch_sizes else 0
            self.engine.batch_sizes.clear()  # read here; unbounded otherwise
            seconds = time.perf_counter() - started
            loop.call_soon_threadsafe(self._route, finished, batch, seconds)
            if time.perf_counter() > deadline:
                return

    def _apply(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the worker thread, between steps: hand arrivals and cancellations to the
        engine; futures are only ever resolved on the event loop."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
            cancelled, self._to_cancel = self._to_cancel, set()
        for key in cancelled:
            if self._pending.pop(key, None) is not None:
                self.engine.cancel(key)
        for key, pending in incoming:
            if key in cancelled or pending.item.cancelled or pending.future.done():
                continue
            try:
                self.engine.add(key, pending.source, pending.item.options)
            except ValueError as error:
                outcome = ItemOutcome(None, 0.0, 0.0, 0, error=str(error))
                loop.call_soon_threadsafe(_resolve, pending.future, outcome)
                continue
            self._pending[key] = pending

    def _step(self) -> list[tuple[TranslationOutput, Translation | None]]:
        """In the worker thread: one engine step, and the finished sentences' text (None for
        a sentence that failed)."""
        outputs = self.engine.step()
        return [
            (
                output,
                None
                if output.error is not None
                else self.translator.translation(
                    self._pending[output.request_id].source,
                    output.hypotheses,
                    self._pending[output.request_id].item.options,
                ),
            )
            for output in outputs
            if output.request_id in self._pending
        ]

    def _route(
        self,
        finished: list[tuple[TranslationOutput, Translation | None]],
        batch: int,
        seconds: float,
    ) -> None:
        """On the event loop: answer the sentences one step finished, record the step."""
        self.steps += 1
        report = StepReport(batch, seconds, [], [])
        for output, translation in finished:
            pending = self._pending.pop(output.request_id, None)
            if pending is None:  # failed meanwhile (`_fail_all`)
                continue
            if translation is None:
                logger.warning("one sentence failed in the engine: %s", output.error)
                report.failed += 1
                if not pending.future.done():
                    pending.future.set_result(
                        ItemOutcome(None, output.queue_s, 0.0, 0, error=output.error)
                    )
                continue
            report.queue_seconds.append(output.queue_s)
            report.finished.append(translation)
            if not pending.future.done():
                pending.future.set_result(
                    ItemOutcome(
                        translation=translation,
                        queue_s=output.queue_s,
                        compute_s=output.decode_s,
                        batch_size=max(1, round(output.mean_batch)),
                        batch_id=-1 - int(output.request_id),  # one per sentence
                    )
                )
        self._report(report)

    def _fail_all(self, message: str) -> None:
        """After a failed step the engine's state is unknown: fail what it held, start over."""
        held = list(self._pending.values())
        self._pending.clear()
        for pending in held:
            if not pending.future.done():
                pending.future.set_result(ItemOutcome(None, 0.0, 0.0, 0, error=message))
        self.engine = self._new_engine(self.max_batch_size)
        self._report(StepReport(0, 0.0, [], [], failed=len(held)))

    def _report(self, report: StepReport) -> None:
        if self.on_step is None:
            return
        try:
            self.on_step(report)
        except Exception:  # never fail a request over a metric
            logger.warning("recording metrics failed", exc_info=True)


def _resolve(future: asyncio.Future, outcome: ItemOutcome) -> None:
    if not future.done():
        future.set_result(outcome)
