"""Continuous against static batching through the whole service, on a mix of short and long
requests (`python -m service bench service --mix`).

What continuous batching should buy: in the static `DecodeQueue` a short sentence that arrives
while a batch with a long one decodes waits for the whole batch, then decodes as long as the
longest sentence of its own batch; in the engine it joins the running batch at the next step and
is answered when its own last token is out. So the short requests' tail latency is the figure
(`short_p99_ratio`, continuous over static, lower is better), with throughput
(`throughput_ratio`, continuous over static requests per second) not to be paid for it.

The same model is deployed twice side by side, `/static` and `/continuous`, with the same
`max_batch_size` and otherwise the shipped settings, and both are loaded in alternating slices
exactly as `bench service` loads batched against unbatched (`service.bench.service.drive`). Every
request is one test-split text: short ones of at most `short_max_words` words, long ones of at
least `long_min_words`, each of which the service's segmenter keeps as one sentence (so a long
request is one long decode, not several short ones decoded side by side). Each client's next
request is short with probability `short_fraction`, in a seeded order both modes share.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.bench.live import load_average, machine_description, versions
from service.bench.service import (
    TEST_SPLIT_DIR,
    LoadResult,
    _batch_wait_timeout,
    alternate_slices,
    check_levels,
    start_applications,
    stop_service,
    subject_store,
    summarize,
    wait_ready,
    warm_up,
)

MIX_MODES = ("static", "continuous")
SECTION_TITLE = "Service: continuous vs static batching"
SHORT_MAX_WORDS, LONG_MIN_WORDS = 10, 40
MIN_LONG = 32  # below this many long test sentences, long texts are joined from FALLBACK_SPLITS
FALLBACK_SPLITS = ("general", "bible")
TARGET_SHORT_P99_RATIO, TARGET_THROUGHPUT_RATIO = 0.5, 1.0


@dataclass(frozen=True)
class MixItem:
    text: str
    kind: str  # "short" or "long"
    words: int
    units: int  # what the service decodes it as: sentences (or clauses) after segmentation


def words(text: str) -> int:
    return len(text.split())


def _units(text: str) -> int:
    from service.text.segment import segment_text

    return len(segment_text(text, "es").units)


def split_mix(
    sources: Sequence[str],
    *,
    short_max_words: int = SHORT_MAX_WORDS,
    long_min_words: int = LONG_MIN_WORDS,
    units: Any = _units,
) -> tuple[list[MixItem], list[MixItem]]:
    """The short and the long texts of `sources`, in their order; only texts the service keeps
    as one unit (`units(text) == 1`), so each request is one sentence of the stated length."""
    shorts, longs = [], []
    for text in sources:
        count = words(text)
        if count <= short_max_words and units(text) == 1:
            shorts.append(MixItem(text, "short", count, 1))
        elif count >= long_min_words and units(text) == 1:
            longs.append(MixItem(text, "long", count, 1))
    return shorts, longs


def join_long(
    sources: Sequence[str],
    *,
    long_min_words: int = LONG_MIN_WORDS,
    units: Any = _units,
) -> list[MixItem]:
    """Consecutive `sources` joined with spaces until each text has `long_min_words` words.

    The service segments such a text back into its sentences, so one of these requests is
    several sentences decoded together (`units` says how many), not one long decode: this is
    the fallback for a split without enough long sentences, and the result says when it ran."""
    joined, pending = [], []
    for text in sources:
        pending.append(text.strip())
        if words(" ".join(pending)) >= long_min_words:
            text = " ".join(pending)
            joined.append(MixItem(text, "long", words(text), units(text)))
            pending = []
    return joined


def mix_schedule(
    shorts: Sequence[MixItem],
    longs: Sequence[MixItem],
    *,
    short_fraction: float,
    length: int,
    seed: int = 0,
) -> list[MixItem]:
    """`length` items, each short with probability `short_fraction` (seeded), taking each kind's
    texts in turn: the order the clients walk, the same for both modes."""
    if not 0.0 <= short_fraction <= 1.0:
        raise ValueError("short_fraction must be within [0, 1]")
    if (short_fraction > 0 and not shorts) or (short_fraction < 1 and not longs):
        raise ValueError("the mix needs short and long texts")
    rng = random.Random(seed)
    taken = Counter()
    schedule = []
    for _ in range(length):
        kind = "short" if rng.random() < short_fraction else "long"
        pool = shorts if kind == "short" else longs
        schedule.append(pool[taken[kind] % len(pool)])
        taken[kind] += 1
    return schedule


def mix_texts(
    data_dir: Path = TEST_SPLIT_DIR,
    *,
    short_max_words: int = SHORT_MAX_WORDS,
    long_min_words: int = LONG_MIN_WORDS,
    min_long: int = MIN_LONG,
    seed: int = 0,
) -> tuple[list[MixItem], list[MixItem], str]:
    """The short and long texts of the test split (shuffled, seeded), and where the long ones
    came from; joined from `general` or `bible` test sentences when the split has too few."""
    from service.text.corpus import load_split

    sources = [pair.source for pair in load_split("test", data_dir)]
    random.Random(seed).shuffle(sources)
    shorts, longs = split_mix(
        sources, short_max_words=short_max_words, long_min_words=long_min_words
    )
    origin = f"test split sentences of at least {long_min_words} words, each one sentence"
    if len(longs) < min_long:
        for split in FALLBACK_SPLITS:
            with_split = [pair.source for pair in load_split(split, data_dir)]
            longs = join_long(with_split, long_min_words=long_min_words)
            if len(longs) >= min_long:
                origin = f"consecutive `{split}` test sentences joined to {long_min_words}+ words"
                break
    return shorts, longs, origin


@dataclass(frozen=True)
class MixMode:
    """One mode at one concurrency: all requests, and the short and long ones apart."""

    mode: str
    all: LoadResult
    short: LoadResult
    long: LoadResult


@dataclass(frozen=True)
class MixLevel:
    users: int
    static: MixMode
    continuous: MixMode
    short_p99_ratio: float | None  # continuous / static p99 of the short requests
    throughput_ratio: float | None  # continuous / static requests per second


@dataclass(frozen=True)
class MixBenchmark:
    model: str
    beam_size: int
    max_length: int
    max_batch_size: int
    dtype: str  # the replicas' runtime.dtype ("auto": the shipped default)
    batch_wait_timeout_s: float
    short_fraction: float
    short_words: dict[str, float]  # min, mean, max
    long_words: dict[str, float]
    long_units: dict[str, int]  # units per long request -> texts (1 unless joined)
    long_origin: str
    duration_s: float
    warmup_s: float
    rounds: int
    levels: list[MixLevel]
    # The worst level's: the highest short p99 ratio, the lowest throughput ratio.
    short_p99_ratio: float | None
    throughput_ratio: float | None
    target: dict[str, Any]
    versions: dict[str, str]
    machine: str
    load_average: dict[str, list[float]]
    command: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarize_mix(
    samples: list[dict[str, Any]],
    schedule: Sequence[MixItem],
    *,
    seconds: float,
    users: int,
    mode: str,
    max_batch_size: int,
) -> MixMode:
    """`samples` as `drive` gives them (flagged by `mark_window`, `index` into `schedule`)."""

    def of(kind: str | None) -> LoadResult:
        chosen = [s for s in samples if kind is None or schedule[s["index"]].kind == kind]
        return summarize(
            chosen,
            seconds=seconds,
            users=users,
            mode=mode if kind is None else f"{mode} {kind}",
            max_batch_size=max_batch_size,
            texts_per_request=1,
        )

    return MixMode(mode, of(None), of("short"), of("long"))


def compare_level(users: int, static: MixMode, continuous: MixMode) -> MixLevel:
    return MixLevel(
        users=users,
        static=static,
        continuous=continuous,
        short_p99_ratio=_ratio(continuous.short.p99_ms, static.short.p99_ms),
        throughput_ratio=_ratio(continuous.all.requests_per_s, static.all.requests_per_s),
    )


def verdict(levels: Sequence[MixLevel]) -> tuple[float | None, float | None, dict[str, Any]]:
    """The worst ratios over the levels, and whether they meet the targets."""
    p99 = [level.short_p99_ratio for level in levels if level.short_p99_ratio is not None]
    rps = [level.throughput_ratio for level in levels if level.throughput_ratio is not None]
    worst_p99 = max(p99) if p99 else None
    worst_rps = min(rps) if rps else None
    return (
        worst_p99,
        worst_rps,
        {
            "short_p99_ratio": TARGET_SHORT_P99_RATIO,
            "throughput_ratio": TARGET_THROUGHPUT_RATIO,
            "short_p99_met": worst_p99 is not None and worst_p99 <= TARGET_SHORT_P99_RATIO,
            "throughput_met": worst_rps is not None and worst_rps >= TARGET_THROUGHPUT_RATIO,
        },
    )


def _stats(values: Sequence[int]) -> dict[str, float]:
    return {"min": min(values), "mean": round(sum(values) / len(values), 1), "max": max(values)}


def benchmark_mix(
    users: Sequence[int] = (8, 32),
    *,
    duration_s: float = 20.0,
    warmup_s: float = 3.0,
    rounds: int = 2,
    short_fraction: float = 0.75,
    beam_size: int = 1,
    max_length: int = 128,
    max_batch_size: int = 32,
    model: str = "transformer",
    store: Path | None = None,
    random_preset: str = "small",
    batch_wait_timeout_s: float | None = None,
    num_cpus: float | None = None,
    seed: int = 0,
    dtype: str | None = None,
    command: str = "",
    progress: Any = None,
) -> MixBenchmark:
    """Start both applications once, then load them in alternating slices at each level."""
    users = check_levels(users, rounds)
    say = progress or (lambda message: None)
    shorts, longs, origin = mix_texts(seed=seed)
    schedule = mix_schedule(shorts, longs, short_fraction=short_fraction, length=4096, seed=seed)
    texts = [item.text for item in schedule]
    payload = {"beam_size": beam_size, "max_length": max_length}
    load_before = load_average()
    levels: list[MixLevel] = []
    apps = {mode: (max_batch_size, mode) for mode in MIX_MODES}
    with subject_store(store, model, random_preset) as subject:
        say(f"starting Ray Serve with {subject.description}, static and continuous")
        try:
            base = start_applications(subject, apps, num_cpus, batch_wait_timeout_s, dtype)
            wait_ready(base, modes=MIX_MODES)
            warm_up(base, MIX_MODES, texts, warmup_s, payload, say)
            for count in users:
                samples = alternate_slices(
                    base,
                    MIX_MODES,
                    texts,
                    count,
                    rounds,
                    say,
                    duration_s=duration_s / rounds,
                    warmup_s=warmup_s,
                    payload=payload,
                )
                static, continuous = (
                    summarize_mix(
                        samples[mode],
                        schedule,
                        seconds=duration_s,
                        users=count,
                        mode=mode,
                        max_batch_size=max_batch_size,
                    )
                    for mode in MIX_MODES
                )
                level = compare_level(count, static, continuous)
                for got in (static, continuous):
                    say(
                        f"  {got.mode}: {got.all.requests_per_s} req/s, short p50/p99 "
                        f"{got.short.p50_ms}/{got.short.p99_ms} ms, long p50/p99 "
                        f"{got.long.p50_ms}/{got.long.p99_ms} ms, errors {got.all.errors}"
                    )
                say(
                    f"  short p99 ratio {level.short_p99_ratio}, "
                    f"throughput ratio {level.throughput_ratio}"
                )
                levels.append(level)
        finally:
            stop_service()
    worst_p99, worst_rps, target = verdict(levels)
    notes = []
    if subject.random_weights:
        notes.append(
            "random weights: outputs never stop early, so every text decodes max_length tokens"
        )
    return MixBenchmark(
        model=subject.description,
        beam_size=beam_size,
        max_length=max_length,
        max_batch_size=max_batch_size,
        dtype=dtype or "auto",
        batch_wait_timeout_s=_batch_wait_timeout(batch_wait_timeout_s),
        short_fraction=short_fraction,
        short_words=_stats([item.words for item in shorts]),
        long_words=_stats([item.words for item in longs]),
        long_units={str(k): v for k, v in sorted(Counter(i.units for i in longs).items())},
        long_origin=origin,
        duration_s=duration_s,
        warmup_s=warmup_s,
        rounds=rounds,
        levels=levels,
        short_p99_ratio=worst_p99,
        throughput_ratio=worst_rps,
        target=target,
        versions=versions(),
        machine=machine_description(),
        load_average={"before": load_before, "after": load_average()},
        command=command,
        notes=notes,
    )


def _ms(load: LoadResult) -> str:
    return " / ".join("-" if v is None else f"{v:.0f}" for v in (load.p50_ms, load.p99_ms))


def mix_markdown(result: MixBenchmark) -> str:
    """The body of the `## Service: continuous vs static batching` section."""
    target = result.target
    met = {True: "met", False: "not met"}
    lines = [
        "The whole service with the same model deployed twice side by side, `batching: static` "
        f"(the `DecodeQueue`) and `batching: continuous` (the engine), both `max_batch_size` "
        f"{result.max_batch_size}, `batch_wait_timeout_s` {result.batch_wait_timeout_s:g}, one "
        f"replica each with the shipped resources, `runtime.dtype` {result.dtype}. N "
        "closed-loop clients each send one text per "
        f"request (`beam_size` {result.beam_size}, `max_length` {result.max_length}), short "
        f"with probability {result.short_fraction:g}, else long, in one seeded order both modes "
        f"share. Short: test-split sentences of {result.short_words['min']:g}-"
        f"{result.short_words['max']:g} words (mean {result.short_words['mean']:g}); long: "
        f"{result.long_origin}, {result.long_words['min']:g}-{result.long_words['max']:g} words "
        f"(mean {result.long_words['mean']:g}). Only texts the service's segmenter keeps as one "
        "unit are used, so a long request is one long decode, not several sentences decoded "
        f"side by side (units per long request: {result.long_units}). Per level and mode "
        f"{result.duration_s:g} s are counted, in {result.rounds} slices that alternate the "
        f"modes, each after {result.warmup_s:g} s of warm-up; latency is the client's.",
        "",
        f"Model: {result.model}. Machine: {result.machine}; "
        + ", ".join(f"{k} {v}" for k, v in result.versions.items())
        + f". Load average {result.load_average['before']} before, "
        f"{result.load_average['after']} after (1, 5, 15 min).",
        "",
        f"Command: `{result.command or 'python -m service bench service --mix'}`.",
        "",
        "| users | static req/s | continuous req/s | throughput ratio | static short p50 / p99 "
        "ms | continuous short p50 / p99 ms | short p99 ratio | static long p50 / p99 ms | "
        "continuous long p50 / p99 ms | errors (static / continuous) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in result.levels:
        s, c = level.static, level.continuous
        lines.append(
            f"| {level.users} | {s.all.requests_per_s:.2f} | {c.all.requests_per_s:.2f} | "
            f"{level.throughput_ratio} | {_ms(s.short)} | {_ms(c.short)} | "
            f"{level.short_p99_ratio} | {_ms(s.long)} | {_ms(c.long)} | "
            f"{s.all.errors} / {c.all.errors} |"
        )
    lines += [
        "",
        f"Targets (the worst level's ratio): `short_p99_ratio` ≤ "
        f"{target['short_p99_ratio']:g}, measured {result.short_p99_ratio} "
        f"({met[target['short_p99_met']]}); `throughput_ratio` ≥ "
        f"{target['throughput_ratio']:g}, measured {result.throughput_ratio} "
        f"({met[target['throughput_met']]}).",
    ]
    lines += [f"Note: {note}." for note in result.notes]
    return "\n".join(lines)


def mix_table(result: MixBenchmark):
    """A rich Table: one row per concurrency level."""
    from rich.table import Table

    table = Table(
        "users",
        "static req/s",
        "continuous req/s",
        "throughput ratio",
        "short p50/p99 ms (s / c)",
        "short p99 ratio",
        "long p50/p99 ms (s / c)",
        title=f"service: continuous vs static batching - {result.model}",
    )
    for level in result.levels:
        s, c = level.static, level.continuous
        table.add_row(
            str(level.users),
            f"{s.all.requests_per_s:.2f}",
            f"{c.all.requests_per_s:.2f}",
            str(level.throughput_ratio),
            f"{_ms(s.short)}  |  {_ms(c.short)}",
            str(level.short_p99_ratio),
            f"{_ms(s.long)}  |  {_ms(c.long)}",
        )
    return table
