"""The batcher and the model deployment's own logic, in-process: no Ray cluster."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from service.contracts import JobResult
from service.decoding.search import DecodeOptions
from service.decoding.translator import Translator
from service.serving.batcher import BatchItem, BatchReport, DecodeQueue, decode_batch
from service.serving.runtime import LoadSpec, RuntimeArgs
from service.serving.translation import TranslatorDeployment

GREEDY = DecodeOptions(beam_size=1, max_length=6)
BEAM = DecodeOptions(beam_size=2, n_best=2, max_length=6)


@pytest.fixture(scope="module")
def deployment(tiny_model_store):
    """The deployment class itself, constructed directly (as a replica would)."""
    # float32: the batched results must equal the alone ones (int8's depend on batch-mates).
    runtime = RuntimeArgs(device="cpu", dtype="float32")
    spec = LoadSpec(str(tiny_model_store), "es-en/transformer", 1, runtime)
    return TranslatorDeployment.func_or_class(spec)


@pytest.fixture(scope="module")
def translator(deployment) -> Translator:
    return deployment.translator


def test_groups_by_options_and_matches_direct_calls(translator):
    texts = ["la casa", "el rey dijo que la luz era buena", "pan", "la casa"]
    options = [GREEDY, BEAM, GREEDY, BEAM]
    report = BatchReport()
    outcomes = decode_batch(
        translator, [BatchItem(t, o) for t, o in zip(texts, options, strict=True)], report
    )
    assert sorted(report.call_sizes) == [2, 2]
    assert [o.batch_size for o in outcomes] == [2, 2, 2, 2]
    assert outcomes[0].batch_id == outcomes[2].batch_id != outcomes[1].batch_id
    for text, option, outcome in zip(texts, options, outcomes, strict=True):
        alone = translator.translate([text], option)[0]
        assert [c.text for c in outcome.translation.candidates] == [
            c.text for c in alone.candidates
        ]
        assert outcome.translation.best.score == pytest.approx(alone.best.score, abs=1e-4)
        assert outcome.queue_s >= 0 and outcome.compute_s > 0 and outcome.error is None


class Picky:
    """Fails any call that includes the poisoned text, like a tokenizer bug would."""

    def __init__(self, translator):
        self.translator = translator

    def translate(self, texts, options, stats=None):
        if "poison" in texts:
            raise RuntimeError("cannot decode")
        return self.translator.translate(texts, options, stats)


def poisoned_batch() -> list[BatchItem]:
    return [BatchItem("la casa", GREEDY), BatchItem("poison", GREEDY), BatchItem("pan", GREEDY)]


def test_a_failing_text_does_not_fail_its_batch(translator):
    report = BatchReport()
    outcomes = decode_batch(Picky(translator), poisoned_batch(), report)
    assert outcomes[1].translation is None and "cannot decode" in outcomes[1].error
    assert outcomes[0].translation is not None and outcomes[2].translation is not None
    assert report.failed == 1


def test_the_one_by_one_fallback_is_recorded_as_one_call_per_text(translator):
    """After a shared call fails, each retried text is its own decode call: its own size (1),
    duration, tokens and batch id, so metrics and `timing` do not claim a batch of three."""
    report = BatchReport()
    outcomes = decode_batch(Picky(translator), poisoned_batch(), report)
    assert report.call_sizes == [1, 1, 1]
    assert len(report.call_seconds) == len(report.call_output_tokens) == 3
    assert report.call_output_tokens[1] == 0  # the failed text produced nothing
    assert report.call_output_tokens[0] == outcomes[0].translation.best.tokens
    assert len({o.batch_id for o in outcomes}) == 3
    assert [o.batch_size for o in outcomes] == [1, 1, 1]
    assert [o.compute_s for o in outcomes] == pytest.approx(report.call_seconds)


def test_cancelled_items_are_skipped(translator):
    items = [BatchItem("la casa", GREEDY), BatchItem("pan", GREEDY)]
    items[0].cancelled = True
    report = BatchReport()
    outcomes = decode_batch(translator, items, report)
    assert outcomes[0].error == "cancelled" and outcomes[1].translation is not None
    assert report.call_sizes == [1]


def test_job_result_counts_each_call_once(translator):
    items = [BatchItem(t, GREEDY) for t in ("a", "b", "c")]
    outcomes = decode_batch(translator, items)
    result = JobResult(outcomes, "es-en/transformer", 1, wall_s=outcomes[0].compute_s + 0.5)
    assert result.compute_s == pytest.approx(outcomes[0].compute_s)
    assert result.queue_s == pytest.approx(0.5)


def test_reconfigure_sets_live_batching(deployment):
    deployment.reconfigure({"max_batch_size": 5, "batch_wait_timeout_s": 0.25})
    info = deployment.info()
    assert (info["max_batch_size"], info["batch_wait_timeout_s"]) == (5, 0.25)
    assert deployment.queue.max_batch_size == 5
    assert deployment.queue.batch_wait_timeout_s == 0.25
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    with pytest.raises(ValidationError):
        deployment.reconfigure({"max_batch_size": 0})
    with pytest.raises(ValidationError):
        deployment.reconfigure({"max_batch_size": 4, "typo": 1})


def test_the_decode_queue_batches_everything_that_arrives_during_a_decode():
    calls: list[int] = []

    async def slow_decode(items):
        calls.append(len(items))
        await asyncio.sleep(0.05)
        return [f"done {item.text}" for item in items]

    async def scenario():
        queue = DecodeQueue(slow_decode, max_batch_size=8, batch_wait_timeout_s=0.0)
        first = asyncio.create_task(queue.submit(BatchItem("0", GREEDY)))
        await asyncio.sleep(0.01)  # the first batch is decoding now
        rest = [asyncio.create_task(queue.submit(BatchItem(str(i), GREEDY))) for i in range(1, 11)]
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert first == "done 0" and rest == [f"done {i}" for i in range(1, 11)]
    assert calls == [1, 8, 2]  # arrivals during a decode share the next batch, up to the cap


def test_a_failed_decode_fails_its_batch_and_the_queue_keeps_serving():
    async def flaky(items):
        if any(item.text == "bad" for item in items):
            raise RuntimeError("boom")
        return [item.text for item in items]

    async def scenario():
        queue = DecodeQueue(flaky, max_batch_size=1, batch_wait_timeout_s=0.0)
        with pytest.raises(RuntimeError, match="boom"):
            await queue.submit(BatchItem("bad", GREEDY))
        return await queue.submit(BatchItem("good", GREEDY))

    assert asyncio.run(scenario()) == "good"
