"""`python -m service bench service --mix` without Ray: picking, ordering and summing the mix."""

import pytest

from service.bench import mix
from service.bench import service as bench


def sample(started, finished, index, ok=True):
    timing = {"queue_ms": 1.0, "compute_ms": 5.0, "total_ms": 7.0, "batch_sizes": [1]}
    return {
        "started": started,
        "finished": finished,
        "ok": ok,
        "kind": "200" if ok else "503",
        "batch_sizes": [1] if ok else [],
        "index": index,
        **({"timing": timing} if ok else {}),
    }


def sentence(n, end="."):
    return " ".join(f"palabra{i}" for i in range(n)) + end


def test_split_mix_keeps_one_unit_texts_of_the_stated_lengths():
    texts = [sentence(3), sentence(10), sentence(11), sentence(39), sentence(40), sentence(60)]
    shorts, longs = mix.split_mix(texts, units=lambda text: 1)
    assert [item.words for item in shorts] == [3, 10]
    assert [item.words for item in longs] == [40, 60]
    assert {item.kind for item in shorts} == {"short"} and {i.kind for i in longs} == {"long"}
    # A text the service would cut in two is neither: its request would be two decodes.
    shorts, longs = mix.split_mix(texts, units=lambda text: 2 if "palabra50" in text else 1)
    assert [item.words for item in longs] == [40]


def test_split_mix_asks_the_service_segmenter():
    shorts, longs = mix.split_mix(["Hola, amigo.", "Hola. Adiós.", sentence(45)])
    assert [item.text for item in shorts] == ["Hola, amigo."]  # "Hola. Adiós." is two sentences
    assert [item.words for item in longs] == [45]


def test_join_long_joins_consecutive_sentences_and_counts_the_units():
    texts = [sentence(15) for _ in range(7)]
    joined = mix.join_long(texts, units=lambda text: text.count("."))
    assert len(joined) == 2  # 3 + 3 sentences; the 7th alone is too short and is left out
    assert all(item.words == 45 and item.units == 3 for item in joined)
    assert joined[0].text == " ".join(texts[:3])


def test_mix_schedule_is_seeded_and_takes_each_kind_in_turn():
    shorts = [mix.MixItem(f"s{i}", "short", 2, 1) for i in range(3)]
    longs = [mix.MixItem(f"l{i}", "long", 50, 1) for i in range(2)]
    schedule = mix.mix_schedule(shorts, longs, short_fraction=0.75, length=2000, seed=1)
    assert schedule == mix.mix_schedule(shorts, longs, short_fraction=0.75, length=2000, seed=1)
    assert schedule != mix.mix_schedule(shorts, longs, short_fraction=0.75, length=2000, seed=2)
    share = sum(item.kind == "short" for item in schedule) / len(schedule)
    assert share == pytest.approx(0.75, abs=0.04)
    assert [i.text for i in schedule if i.kind == "short"][:4] == ["s0", "s1", "s2", "s0"]
    assert [i.text for i in schedule if i.kind == "long"][:3] == ["l0", "l1", "l0"]
    assert {i.kind for i in mix.mix_schedule(shorts, [], short_fraction=1.0, length=9)} == {"short"}
    with pytest.raises(ValueError):
        mix.mix_schedule(shorts, [], short_fraction=0.5, length=9)
    with pytest.raises(ValueError):
        mix.mix_schedule(shorts, longs, short_fraction=1.5, length=9)


def _mode(mode, short_ms, long_ms, count):
    """`count` short and `count` long answers in a 2 s window, latencies as given."""
    schedule = [mix.MixItem("s", "short", 3, 1), mix.MixItem("l", "long", 50, 1)]
    samples = []
    for k in range(count):
        samples.append(sample(1.0 + k * 0.01, 1.0 + k * 0.01 + short_ms[k % len(short_ms)], 0))
        samples.append(sample(1.0 + k * 0.01, 1.0 + k * 0.01 + long_ms, 1))
    bench.mark_window(samples, (1.0, 3.0))
    return mix.summarize_mix(samples, schedule, seconds=2.0, users=8, mode=mode, max_batch_size=32)


def test_summarize_mix_splits_short_from_long_and_the_ratios_follow():
    static = _mode("static", [0.2, 0.2, 0.2, 0.8], 0.9, 40)
    continuous = _mode("continuous", [0.1, 0.1, 0.1, 0.2], 0.9, 60)
    assert static.short.requests == 40 and static.long.requests == 40
    assert static.all.requests == 80 and static.all.requests_per_s == 40.0
    assert static.short.p50_ms == pytest.approx(200.0) and static.short.p99_ms == pytest.approx(
        800.0
    )
    assert static.long.p50_ms == pytest.approx(900.0)
    assert static.short.mode == "static short"
    level = mix.compare_level(8, static, continuous)
    assert level.short_p99_ratio == pytest.approx(0.25)  # 200 / 800 ms
    assert level.throughput_ratio == pytest.approx(1.5)  # 60 / 40 req/s
    worse = mix.compare_level(32, continuous, static)  # the other way round: 4.0 and 0.667
    worst_p99, worst_rps, target = mix.verdict([level, worse])
    assert (worst_p99, worst_rps) == (pytest.approx(4.0), pytest.approx(0.667))
    assert not target["short_p99_met"] and not target["throughput_met"]
    _, _, target = mix.verdict([level])
    assert target["short_p99_met"] and target["throughput_met"]
    assert mix.verdict([])[2]["short_p99_met"] is False


def _result():
    static = _mode("static", [0.2, 0.2, 0.2, 0.8], 0.9, 40)
    continuous = _mode("continuous", [0.1, 0.1, 0.1, 0.2], 0.9, 60)
    level = mix.compare_level(8, static, continuous)
    worst_p99, worst_rps, target = mix.verdict([level])
    return mix.MixBenchmark(
        model="es-en/transformer v2 (shipped)",
        beam_size=1,
        max_length=128,
        max_batch_size=32,
        dtype="auto",
        batch_wait_timeout_s=0.01,
        short_fraction=0.75,
        short_words={"min": 2, "mean": 7.5, "max": 10},
        long_words={"min": 40, "mean": 48.0, "max": 80},
        long_units={"1": 62},
        long_origin="test split sentences of at least 40 words, each one sentence",
        duration_s=15.0,
        warmup_s=3.0,
        rounds=2,
        levels=[level],
        short_p99_ratio=worst_p99,
        throughput_ratio=worst_rps,
        target=target,
        versions={"torch": "2.13.0"},
        machine="a CPU",
        load_average={"before": [5.0, 5.0, 5.0], "after": [6.0, 6.0, 6.0]},
        command="python -m service bench service --mix",
    )


def test_markdown_names_the_ratios_the_targets_and_what_a_long_request_is():
    result = _result()
    markdown = mix.mix_markdown(result)
    assert "| 8 | 40.00 | 60.00 | 1.5 | 200 / 800 | 100 / 200 | 0.25 | 900 / 900 |" in markdown
    assert "measured 0.25 (met)" in markdown and "measured 1.5 (met)" in markdown
    assert "units per long request: {'1': 62}" in markdown
    assert "`python -m service bench service --mix`" in markdown
    assert "[5.0, 5.0, 5.0] before" in markdown
    assert result.to_dict()["levels"][0]["static"]["short"]["p99_ms"] == pytest.approx(800.0)


def test_the_cli_passes_the_mix_options_and_prints_the_ratios(monkeypatch, tmp_path):
    import json

    from typer.testing import CliRunner

    from service.bench.cli import bench_app

    seen = {}

    def fake_benchmark_mix(users, **options):
        seen.update(options, users=users)
        return _result()

    monkeypatch.setattr(mix, "benchmark_mix", fake_benchmark_mix)
    doc = tmp_path / "benchmarks.md"
    got = CliRunner().invoke(
        bench_app,
        f"service --mix --users 8,32 --duration 4 --rounds 3 --short-fraction 0.5 "
        f"--beam-size 4 --max-batch-size 16 --dtype float32 --json --write {doc}".split(),
    )
    assert got.exit_code == 0, got.output
    assert seen["users"] == [8, 32] and seen["short_fraction"] == 0.5
    assert (seen["duration_s"], seen["rounds"], seen["beam_size"]) == (4.0, 3, 4)
    assert seen["max_batch_size"] == 16 and seen["dtype"] == "float32"
    printed = json.loads(got.stdout.strip().splitlines()[-1])
    assert (printed["short_p99_ratio"], printed["throughput_ratio"]) == (0.25, 1.5)
    assert "## Service: continuous vs static batching" in doc.read_text()
