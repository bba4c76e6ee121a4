"""`python -m service bench service`: the closed-loop load generator and its statistics."""

import asyncio

import pytest

from service.bench import service as bench


def sample(started, finished, ok=True, kind="200", batch=1):
    timing = {"queue_ms": 2.0, "compute_ms": 8.0, "total_ms": 11.0, "batch_sizes": [batch]}
    return {
        "started": started,
        "finished": finished,
        "ok": ok,
        "kind": kind,
        "batch_sizes": [batch] if ok else [],
        **({"timing": timing} if ok else {}),
    }


def test_summarize_counts_the_window_only():
    samples = [
        sample(0.0, 0.5),  # finished in the warm-up: not counted
        sample(0.5, 1.5, batch=4),  # started in the warm-up: counted, latency not sampled
        sample(1.2, 1.4, batch=2),
        sample(1.4, 1.6, ok=False, kind="503"),
        sample(2.5, 3.2, batch=6),  # finished after the window: latency sampled, not counted
    ]
    bench.mark_window(samples, (1.0, 3.0))
    assert [s["counted"] for s in samples] == [False, True, True, True, False]
    assert [s["sampled"] for s in samples] == [False, False, True, False, True]
    assert [s["started_inside"] for s in samples] == [False, False, True, True, True]
    result = bench.summarize(
        samples, seconds=2.0, users=2, mode="batched", max_batch_size=32, texts_per_request=1
    )
    assert (result.requests, result.errors, result.error_kinds) == (2, 1, {"503": 1})
    assert result.requests_per_s == 1.0 and result.sentences_per_s == 1.0
    assert result.p50_ms == pytest.approx(450.0)  # of 200 ms and 700 ms
    assert result.p99_ms == pytest.approx(695.0)
    assert result.mean_batch_size == 3.0  # of the two counted: 4 and 2
    assert result.overhead_p50_ms == pytest.approx(442.0)  # 200 - 8 and 700 - 8 ms
    assert (result.server_queue_ms, result.server_compute_ms, result.server_total_ms) == (
        2.0,
        8.0,
        11.0,
    )
    empty = bench.summarize(
        [], seconds=2.0, users=1, mode="unbatched", max_batch_size=1, texts_per_request=3
    )
    assert empty.requests == 0 and empty.p50_ms is None and empty.mean_batch_size is None


def test_rounds_add_up():
    first = [sample(1.0, 1.5), sample(1.5, 2.0)]
    second = [sample(10.0, 10.5)]
    bench.mark_window(first, (1.0, 2.0))
    bench.mark_window(second, (10.0, 11.0))
    result = bench.summarize(
        first + second, seconds=2.0, users=1, mode="batched", max_batch_size=32, texts_per_request=2
    )
    assert (result.requests, result.requests_per_s, result.sentences_per_s) == (3, 1.5, 3.0)
    assert result.p50_ms == pytest.approx(500.0)


def test_drive_keeps_n_requests_in_flight_against_a_local_server(fake_service):
    sentences = [f"frase {i}" for i in range(50)]
    samples, window = asyncio.run(
        bench.drive(
            f"{fake_service}/v1/translate",
            sentences,
            users=4,
            duration_s=1.0,
            warmup_s=0.2,
            payload={"beam_size": 1},
            texts_per_request=2,
        )
    )
    assert window[1] - window[0] == pytest.approx(1.0)
    assert len(samples) >= 4 and all(s["ok"] for s in samples)
    assert {s["batch_sizes"][0] for s in samples} == {2}  # two texts per request
    # Each sample names its first text; a worker's requests walk the list two by two.
    assert all(0 <= s["index"] < len(sentences) and s["index"] % 2 == 0 for s in samples)
    result = bench.summarize(
        samples,
        seconds=window[1] - window[0],
        users=4,
        mode="batched",
        max_batch_size=32,
        texts_per_request=2,
    )
    assert result.errors == 0 and result.sentences_per_s == pytest.approx(2 * result.requests_per_s)


def test_drive_counts_transport_errors():
    samples, _ = asyncio.run(
        bench.drive(
            f"http://127.0.0.1:{bench.free_port()}/v1/translate",  # nothing listens there
            ["hola"],
            users=2,
            duration_s=1.0,
            warmup_s=0,
            payload={},
        )
    )
    assert samples and not any(s["ok"] for s in samples)
    assert {s["kind"] for s in samples} == {"ConnectError"}


def test_the_modes_differ_only_in_max_batch_size():
    batched = bench._deployment_options(32, "es-en-transformer")
    unbatched = bench._deployment_options(1, "es-en-transformer")
    assert batched["es-en-transformer"]["user_config"]["max_batch_size"] == 32
    assert unbatched["es-en-transformer"]["user_config"]["max_batch_size"] == 1
    unbatched["es-en-transformer"]["user_config"]["max_batch_size"] = 32
    assert batched == unbatched
    assert bench.MODES == {"batched": 32, "unbatched": 1}


@pytest.mark.slow
@pytest.mark.ray
def test_benchmark_service_end_to_end_on_tiny_random_models(tiny_model_store):
    result = bench.benchmark_service(
        [1, 4],
        duration_s=1.5,
        warmup_s=0.5,
        rounds=2,
        max_length=4,
        store=tiny_model_store,
    )
    assert result.model == f"es-en/transformer v1 (from {tiny_model_store})"
    assert result.random_weights is False  # untrained, but served from a store as it is
    assert [level.users for level in result.levels] == [1, 4]
    for level in result.levels:
        for load in (level.batched, level.unbatched):
            assert load.requests > 0 and load.errors == 0, load
        assert level.unbatched.mean_batch_size == 1.0
        assert level.speedup is not None
    assert result.target["users"] == 32 and result.target["measured"] is None
    assert result.to_dict()["levels"][0]["batched"]["mode"] == "batched"
    markdown = bench.service_markdown(result)
    assert "| 4 |" in markdown and "measured None" in markdown


def test_a_timeout_after_the_window_still_counts_as_an_error():
    samples = [sample(1.5, 1.8), sample(2.5, 9.0, ok=False, kind="ReadTimeout")]
    bench.mark_window(samples, (1.0, 3.0))
    result = bench.summarize(
        samples, seconds=2.0, users=2, mode="unbatched", max_batch_size=1, texts_per_request=1
    )
    assert (result.requests, result.errors, result.error_kinds) == (1, 1, {"ReadTimeout": 1})


def test_markdown_section_reports_both_modes_and_the_target():
    def load(mode, rps, batch):
        samples = [sample(1.0, 1.2, batch=batch)]
        bench.mark_window(samples, (1.0, 2.0))
        result = bench.summarize(
            samples, seconds=1.0, users=32, mode=mode, max_batch_size=32, texts_per_request=1
        )
        return bench.LoadResult(
            **{**result.__dict__, "requests_per_s": rps, "sentences_per_s": rps}
        )

    level = bench.LevelComparison(
        users=32,
        batched=load("batched", 50.0, 20),
        unbatched=load("unbatched", 10.0, 1),
        speedup=5.0,
    )
    result = bench.ServiceBenchmark(
        model="es-en/transformer v1 (shipped)",
        random_weights=False,
        beam_size=1,
        max_length=128,
        texts_per_request=1,
        batch_wait_timeout_s=0.01,
        duration_s=20.0,
        warmup_s=3.0,
        rounds=2,
        levels=[level],
        target={"users": 32, "speedup": 4.0, "measured": 5.0, "met": True},
        versions={"torch": "2.13.0"},
        machine="a CPU",
        load_average={"before": [1.0, 1.0, 1.0], "after": [2.0, 2.0, 2.0]},
        command="python -m service bench service",
    )
    markdown = bench.service_markdown(result)
    assert "| 32 | 50.00 | 10.00 | 5.00x | 200 / 200 / 200 | 200 / 200 / 200 | 20.0 | 0 / 0 |" in (
        markdown
    )
    assert "measured 5.0x (met)" in markdown and "`batch_wait_timeout_s` 0.01" in markdown
    assert "carried 20 texts on average" in markdown
    # 50 texts/s in calls of 20 texts taking 8 ms each; unbatched 10 calls/s of 8 ms
    assert "decoder was busy 2% of the time with batching and 8% without" in markdown


@pytest.mark.slow
@pytest.mark.ray
def test_benchmark_mix_end_to_end_on_tiny_random_models(tiny_model_store):
    from service.bench import mix

    result = mix.benchmark_mix(
        [2],
        duration_s=1.5,
        warmup_s=0.5,
        rounds=2,
        max_length=4,
        max_batch_size=8,
        store=tiny_model_store,
    )
    [level] = result.levels
    for got in (level.static, level.continuous):
        assert got.all.errors == 0 and got.all.requests == got.short.requests + got.long.requests
        assert got.short.requests > 0 and got.long.requests > 0, got
    assert level.short_p99_ratio is not None and level.throughput_ratio is not None
    assert result.short_p99_ratio == level.short_p99_ratio
    assert result.long_units == {"1": result.long_units["1"]}  # one sentence per long request
    assert "| 2 |" in mix.mix_markdown(result)
