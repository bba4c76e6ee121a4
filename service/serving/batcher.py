"""The batcher: one decode batch made of texts from many requests.

Each text of each request is one `BatchItem`; `DecodeQueue` collects the items that arrive
while the decoder is busy (or within the batching window when it is idle), and `decode_batch`
turns them into as few `Translator.translate` calls as their decode options allow (items with
identical options share one call; the translator then sorts by length and splits by its token
budget). Queue time (enqueue -> call start), compute time and the batch size are recorded per
item.

A text that makes a shared call fail is isolated by retrying the group one text at a time, so
one bad input cannot fail the requests it happened to be batched with; each retry is reported
as the call of one text it is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service.contracts import ItemOutcome
from service.decoding.search import DecodeOptions
from service.decoding.translator import Translation, Translator

logger = logging.getLogger("service.serving")


@dataclass
class BatchItem:
    text: str
    options: DecodeOptions
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # its request gave up (timeout, disconnect): skip if not started
    request: str | None = None  # the request it belongs to: tells a lone request from company


@dataclass
class BatchReport:
    """What one `decode_batch` did, for metrics: one entry per translate call."""

    call_sizes: list[int] = field(default_factory=list)
    call_seconds: list[float] = field(default_factory=list)
    call_input_tokens: list[int] = field(default_factory=list)
    call_output_tokens: list[int] = field(default_factory=list)  # of the best hypotheses
    queue_seconds: list[float] = field(default_factory=list)
    failed: int = 0

    def record_call(self, translations: list[Translation | None], seconds: float) -> None:
        done = [t for t in translations if t is not None]
        self.call_sizes.append(len(translations))
        self.call_seconds.append(seconds)
        self.call_input_tokens.append(sum(t.input_tokens for t in done))
        self.call_output_tokens.append(sum(t.best.tokens for t in done))


_call_ids = itertools.count(1)


@dataclass(frozen=True)
class _Call:
    """One `Translator.translate` call: what it returned per text, and what it cost."""

    results: list[tuple[Translation | None, str | None]]  # (translation, error) per text
    seconds: float
    started: float
    call_id: int = field(default_factory=lambda: next(_call_ids))


def _timed_call(translator: Translator, texts: list[str], options: DecodeOptions) -> _Call:
    started = time.perf_counter()
    translations = translator.translate(texts, options)
    return _Call([(t, None) for t in translations], time.perf_counter() - started, started)


def _one_by_one(translator: Translator, texts: list[str], options: DecodeOptions) -> list[_Call]:
    """Each text alone, so the one that fails fails only its own request."""
    calls = []
    for text in texts:
        started = time.perf_counter()
        try:
            calls.append(_timed_call(translator, [text], options))
        except Exception as error:
            logger.exception("decoding failed for one text (%d chars)", len(text))
            message = f"{type(error).__name__}: {error}"
            calls.append(_Call([(None, message)], time.perf_counter() - started, started))
    return calls


def decode_batch(
    translator: Translator, items: list[BatchItem], report: BatchReport | None = None
) -> list[ItemOutcome]:
    """Translate a batch of items; the outcome list matches `items` one to one."""
    report = report if report is not None else BatchReport()
    groups: dict[DecodeOptions, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.options, []).append(index)

    outcomes: list[ItemOutcome | None] = [None] * len(items)
    for options, indices in groups.items():
        live = [i for i in indices if not items[i].cancelled]
        for i in indices:
            if items[i].cancelled:
                outcomes[i] = ItemOutcome(None, 0.0, 0.0, 0, error="cancelled")
        if not live:
            continue
        texts = [items[i].text for i in live]
        try:
            calls = [_timed_call(translator, texts, options)]
        except Exception:
            logger.exception("decode call for %d texts failed; retrying one by one", len(live))
            calls = _one_by_one(translator, texts, options)
        offset = 0
        for call in calls:
            report.record_call([translation for translation, _ in call.results], call.seconds)
            carried = live[offset : offset + len(call.results)]
            offset += len(call.results)
            for i, (translation, error) in zip(carried, call.results, strict=True):
                queued = call.started - items[i].enqueued
                report.queue_seconds.append(queued)
                report.failed += error is not None
                outcomes[i] = ItemOutcome(
                    translation=translation,
                    queue_s=queued,
                    compute_s=call.seconds,
                    batch_size=len(call.results),
                    batch_id=call.call_id,
                    error=error,
                )
    return outcomes  # type: ignore[return-value]


class DecodeQueue:
    """Forms the next batch when the decoder is free: everything queued, up to max_batch_size.

    Why not `@serve.batch`: in Ray Serve 2.60 it cuts a batch `batch_wait_timeout_s` after the
    batch's first item even while the previous batch is still decoding, so under load the texts
    that arrive during one decode are split into many small batches queued behind it (measured:
    2.9 texts per batch at 32 concurrent users). Here one loop owns the decoder; while it
    decodes, arrivals accumulate and all of them go into the next batch.

    The batching window (`batch_wait_timeout_s`) is only waited while other requests are
    about: when the previous batch or the queue holds items of more than one request. A lone
    request on an idle replica decodes at once instead of paying the window for company that
    is not coming (issue 16: serving overhead at one user).
    """

    def __init__(
        self,
        run: Callable[[list[BatchItem]], Awaitable[list[ItemOutcome]]],
        max_batch_size: int = 32,
        batch_wait_timeout_s: float = 0.01,
    ):
        self.run = run
        self.configure(max_batch_size, batch_wait_timeout_s)
        self.pending: list[tuple[BatchItem, asyncio.Future]] = []
        self.arrived = asyncio.Event()
        self.loop_task: asyncio.Task | None = None
        self.busy = False  # the last batch carried more than one request

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s

    async def submit(self, item: BatchItem) -> ItemOutcome:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        self.arrived.set()
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = asyncio.create_task(self._loop())
        return await future

    def _company_likely(self) -> bool:
        return self.busy or _requests(item for item, _ in self.pending) > 1

    async def _loop(self) -> None:
        while True:
            await self.arrived.wait()
            if len(self.pending) < self.max_batch_size and self._company_likely():
                await asyncio.sleep(self.batch_wait_timeout_s)  # this batch may get company
            batch = [(i, f) for i, f in self.pending[: self.max_batch_size] if not f.done()]
            del self.pending[: self.max_batch_size]
            if not self.pending:
                self.arrived.clear()
            if not batch:
                continue
            self.busy = _requests(item for item, _ in batch) > 1
            try:
                outcomes = await self.run([item for item, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to every waiting request
                logger.exception("decode batch failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)


def _requests(items) -> int:
    """How many requests `items` come from (items that name none count as one)."""
    return len({item.request for item in items})
