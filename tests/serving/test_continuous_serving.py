"""The translation replica with `batching: continuous`, and the static queue's idle path.

In-process, no Ray cluster: the deployment class is constructed as a replica would be.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from pydantic import ValidationError

from service.contracts import TranslationJob
from service.decoding.search import DecodeOptions
from service.serving.batcher import BatchItem, DecodeQueue
from service.serving.config import ModelArgs
from service.serving.runtime import LoadSpec, RuntimeArgs
from service.serving.translation import TranslatorDeployment

GREEDY = DecodeOptions(max_length=8)
BEAM = DecodeOptions(beam_size=3, n_best=2, max_length=8)
SAMPLE = DecodeOptions(sampling=True, seed=4, n_best=2, max_length=8)
# The engine's outputs must equal the static path's: float32 (int8's depend on batch-mates).
FLOAT32 = RuntimeArgs(device="cpu", dtype="float32")
TEXTS = ["la casa", "el rey dijo que la luz era buena", "pan", "y dijo Dios: sea la luz"]


@pytest.fixture(scope="module")
def replica(tiny_model_store):
    spec = LoadSpec(str(tiny_model_store), "es-en/transformer", 1, FLOAT32)
    return TranslatorDeployment.func_or_class(spec, batching="continuous")


def test_jobs_that_arrive_apart_get_the_static_translations(replica):
    jobs = [
        TranslationJob(TEXTS, GREEDY, "a"),
        TranslationJob(TEXTS[1:3], BEAM, "b"),
        TranslationJob(TEXTS[:2], SAMPLE, "c"),
    ]

    async def scenario():
        tasks = []
        for job in jobs:
            tasks.append(asyncio.create_task(replica.translate(job)))
            await asyncio.sleep(0.005)  # later jobs join a running batch
        return await asyncio.gather(*tasks)

    decode_calls = replica.decode_calls
    results = asyncio.run(scenario())
    for job, result in zip(jobs, results, strict=True):
        static = replica.translator.translate(job.texts, job.options)
        assert [[c.text for c in o.translation.candidates] for o in result.items] == [
            [c.text for c in t.candidates] for t in static
        ]
        for outcome, expected in zip(result.items, static, strict=True):
            assert outcome.error is None
            assert outcome.translation.best.score == pytest.approx(expected.best.score, abs=1e-4)
        assert len({o.batch_id for o in result.items}) == 1  # one span per job
        assert 0 < result.compute_s <= result.wall_s
    info = replica.info()
    assert info["batching"] == "continuous" and info["running"] == info["waiting"] == 0
    assert replica.decode_calls > decode_calls and info["largest_batch"] > 1


def test_a_cancelled_request_leaves_the_engine(replica):
    endless = DecodeOptions(beam_size=4, max_length=200, min_length=200)

    async def scenario():
        doomed = asyncio.create_task(replica.translate(TranslationJob(TEXTS, endless, "x")))
        await asyncio.sleep(0.3)
        assert replica.queue.engine.rows > 0  # decoding
        doomed.cancel()
        short = await replica.translate(TranslationJob(["pan"], GREEDY, "y"))
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return short

    short = asyncio.run(scenario())
    assert short.items[0].translation is not None
    assert replica.queue.engine.rows == 0 and not replica.queue.engine.has_work()


def test_batching_is_validated_in_the_app_config(tiny_model_store):
    assert ModelArgs(id="es-en/transformer").batching == "static"
    assert ModelArgs(id="es-en/transformer", batching="continuous").batching == "continuous"
    with pytest.raises(ValidationError):
        ModelArgs(id="es-en/transformer", batching="dynamic")
    spec = LoadSpec(str(tiny_model_store), "es-en/rnnsearch", 1, FLOAT32)
    with pytest.raises(ValueError, match="batching"):
        TranslatorDeployment.func_or_class(spec, batching="dynamic")


def test_an_idle_replica_decodes_a_lone_request_without_the_batching_window():
    calls: list[list[str | None]] = []

    async def decode(items):
        calls.append([item.request for item in items])
        await asyncio.sleep(0.02)
        return [item.text for item in items]

    async def scenario():
        queue = DecodeQueue(decode, max_batch_size=8, batch_wait_timeout_s=0.5)
        started = time.perf_counter()
        await asyncio.gather(*(queue.submit(BatchItem(t, GREEDY, request="a")) for t in "xy"))
        lone = time.perf_counter() - started
        # Two requests at once: company is about, so the window is waited for.
        started = time.perf_counter()
        await asyncio.gather(
            queue.submit(BatchItem("p", GREEDY, request="b")),
            queue.submit(BatchItem("q", GREEDY, request="c")),
        )
        busy = time.perf_counter() - started
        return lone, busy

    lone, busy = asyncio.run(scenario())
    assert lone < 0.25  # not the 0.5 s window
    assert busy >= 0.5
    assert calls == [["a", "a"], ["b", "c"]]


def test_a_text_the_engine_fails_fails_alone(replica):
    bad = "y dijo Dios: sea la luz"
    bad_ids = torch.tensor(replica.translator.encode(bad))
    model = replica.queue.engine.model

    class FailsOnOneSource:  # the model, except that encoding the bad text's ids fails
        def __getattr__(self, name):
            return getattr(model, name)

        def encode(self, src):
            rows = src[:, : bad_ids.shape[0]]
            if rows.shape[1] == bad_ids.shape[0] and bool((rows == bad_ids).all(1).any()):
                raise ValueError("cannot encode this source")
            return model.encode(src)

    texts = [TEXTS[0], bad, TEXTS[1]]

    async def scenario():
        replica.queue.engine.model = FailsOnOneSource()
        try:
            return await asyncio.gather(
                replica.translate(TranslationJob(texts, GREEDY, "p")),
                replica.translate(TranslationJob(TEXTS[1:3], BEAM, "q")),
            )
        finally:
            replica.queue.engine.model = model

    mixed, other = asyncio.run(scenario())
    assert "cannot encode" in mixed.items[1].error and mixed.items[1].translation is None
    good = replica.translator.translate([texts[0], texts[2]], GREEDY)
    assert [mixed.items[i].translation.best.text for i in (0, 2)] == [t.best.text for t in good]
    static = replica.translator.translate(TEXTS[1:3], BEAM)
    assert [[c.text for c in o.translation.candidates] for o in other.items] == [
        [c.text for c in t.candidates] for t in static
    ]
