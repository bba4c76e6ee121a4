"""The ingress's translation cache, measured through the whole service: the same paragraph,
the same model and decoding options, first uncached (every sentence decoded) and then fully
cached (every sentence answered by the ingress's LRU, no job sent to the model replica).

One Ray Serve application runs with the shipped config's settings (the cache at its shipped
size). One client sends requests one after another, so the numbers are latencies, not
throughput: for each paragraph of `sentences_per_text` held-out sentences (none repeated, so
each first request is a full miss) one uncached request, then `repeats` identical ones. Every
response's `segments[].cached` is checked: a first answer with any cached sentence, or a
repeat with any decoded one, is an error, not a sample.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.bench.live import load_average, machine_description, start_serve, stop_serve, versions
from service.bench.service import TEST_SPLIT_DIR, percentile, subject_store

SECTION_TITLE = "Service: translation cache"
DEFAULT_SPLIT = "general"  # held-out prose: sentences a user would paste as a paragraph


@dataclass(frozen=True)
class Latencies:
    """One kind of request (uncached or cached) as the client and the API saw it."""

    requests: int
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    min_ms: float | None
    server_total_ms: float | None  # mean of the responses' timing.total_ms (inside the API)
    server_compute_ms: float | None  # mean decode call; 0 when nothing was decoded


@dataclass(frozen=True)
class CacheBenchmark:
    model: str
    beam_size: int
    max_length: int
    split: str
    paragraphs: int
    sentences_per_text: int  # sentences joined into one paragraph
    units_per_text: float  # decode units the ingress made of each paragraph, on average
    characters_per_text: float
    repeats: int  # cached requests per paragraph
    cache_size: int
    uncached: Latencies
    cached: Latencies
    speedup_p50: float | None  # uncached p50 over cached p50
    errors: list[str]
    versions: dict[str, str]
    machine: str
    load_average: dict[str, list[float]]
    command: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def benchmark_paragraphs(
    count: int,
    sentences_per_text: int,
    split: str = DEFAULT_SPLIT,
    data_dir: Path = TEST_SPLIT_DIR,
    seed: int = 0,
) -> list[str]:
    """`count` paragraphs of `sentences_per_text` distinct Spanish sentences of the split (each
    ending like a sentence), joined by a space, no sentence in two paragraphs."""
    from service.text.corpus import load_split

    seen: set[str] = set()
    sentences = []
    for pair in load_split(split, data_dir):
        text = " ".join(pair.source.split())
        if text not in seen and 20 <= len(text) <= 200 and text[-1] in ".!?":
            seen.add(text)
            sentences.append(text)
    random.Random(seed).shuffle(sentences)
    needed = count * sentences_per_text
    if len(sentences) < needed:
        raise ValueError(f"the {split} split has {len(sentences)} usable sentences, not {needed}")
    return [
        " ".join(sentences[i * sentences_per_text : (i + 1) * sentences_per_text])
        for i in range(count)
    ]


def _summarize(samples: Sequence[dict[str, Any]]) -> Latencies:
    latencies = [s["ms"] for s in samples]

    def mean(values: Sequence[float]) -> float | None:
        return round(float(np.mean(values)), 2) if len(values) else None

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return Latencies(
        requests=len(samples),
        p50_ms=rounded(percentile(latencies, 50)),
        p95_ms=rounded(percentile(latencies, 95)),
        mean_ms=mean(latencies),
        min_ms=rounded(min(latencies)) if latencies else None,
        server_total_ms=mean([s["timing"]["total_ms"] for s in samples]),
        server_compute_ms=mean([s["timing"]["compute_ms"] for s in samples]),
    )


def measure(
    client: Any, paragraphs: Sequence[str], payload: dict[str, Any], repeats: int
) -> dict[str, Any]:
    """Each paragraph once uncached, then `repeats` times cached, through `client` (an
    `httpx.Client` on the service, or FastAPI's TestClient); returns the samples of both kinds,
    the decode units per paragraph and the errors (a request that was not what it should be)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    samples: dict[str, list[dict[str, Any]]] = {"uncached": [], "cached": []}
    units: list[int] = []
    errors: list[str] = []
    for number, text in enumerate(paragraphs):
        for attempt in range(repeats + 1):
            kind = "uncached" if attempt == 0 else "cached"
            started = time.perf_counter()
            response = client.post(
                "/v1/translate", json={**payload, "text": text, "return_scores": True}
            )
            elapsed_ms = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                errors.append(f"paragraph {number} ({kind}): {response.status_code}")
                break
            body = response.json()
            flags = [s["cached"] for s in body["translations"][0]["segments"]]
            if not (all(flags) and bool(flags) if kind == "cached" else not any(flags)):
                errors.append(f"paragraph {number} ({kind}): cached flags {flags}")
                continue
            if attempt == 0:
                units.append(len(flags))
            samples[kind].append({"ms": elapsed_ms, "timing": body["timing"]})
    return {"samples": samples, "units": units, "errors": errors}


def _start(subject: Any, num_cpus: float | None) -> str:
    """Ray, Serve on a free loopback port and the application with the shipped settings."""
    from ray import serve

    from service.serving.app import build_app_with_options, deployment_name
    from service.serving.launch import DEFAULT_CONFIG, deployment_overrides, load_config

    shipped = deployment_overrides(load_config(DEFAULT_CONFIG)["applications"][0])
    key = deployment_name(subject.model_id)
    options = {name: dict(shipped.get(name) or {}) for name in ("Ingress", key)}
    port = start_serve("bench-cache", num_cpus)
    args = {
        "store": str(subject.store),
        "models": [{"id": subject.model_id}],
        "default_model": subject.model_id,
        "generation": None,
    }
    serve.run(build_app_with_options(args, options), name="bench-cache", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def benchmark_cache(
    *,
    paragraphs: int = 8,
    sentences_per_text: int = 6,
    repeats: int = 3,
    beam_size: int = 4,
    max_length: int = 128,
    split: str = DEFAULT_SPLIT,
    model: str = "transformer",
    store: Path | None = None,
    num_cpus: float | None = None,
    command: str = "",
    notes: Sequence[str] = (),
    progress: Any = None,
) -> CacheBenchmark:
    """Start the service, send every paragraph uncached then cached, stop the service."""
    import httpx

    from service.api.settings import ApiSettings

    say = progress or (lambda message: None)
    texts = benchmark_paragraphs(paragraphs + 1, sentences_per_text, split)
    warmup, texts = texts[0], texts[1:]
    payload = {"beam_size": beam_size, "max_length": max_length}
    load_before = load_average()
    with subject_store(store, model, "small") as subject:
        if subject.random_weights:
            raise FileNotFoundError(f"the store has no trained {model}: nothing to measure")
        say(f"starting Ray Serve with {subject.description}")
        try:
            base = _start(subject, num_cpus)
            with httpx.Client(base_url=base, timeout=300) as client:
                say("warming up")  # first requests pay for allocations and thread start-up
                measure(client, [warmup], payload, 1)
                say(f"{len(texts)} paragraphs, each uncached once and cached {repeats} times")
                got = measure(client, texts, payload, repeats)
        finally:
            stop_serve()
    uncached = _summarize(got["samples"]["uncached"])
    cached = _summarize(got["samples"]["cached"])
    return CacheBenchmark(
        model=subject.description,
        beam_size=beam_size,
        max_length=max_length,
        split=split,
        paragraphs=len(texts),
        sentences_per_text=sentences_per_text,
        units_per_text=round(float(np.mean(got["units"])), 2) if got["units"] else 0.0,
        characters_per_text=round(float(np.mean([len(t) for t in texts])), 1),
        repeats=repeats,
        cache_size=ApiSettings().cache_size,
        uncached=uncached,
        cached=cached,
        speedup_p50=round(uncached.p50_ms / cached.p50_ms, 1)
        if uncached.p50_ms and cached.p50_ms
        else None,
        errors=got["errors"],
        versions=versions(),
        machine=machine_description(),
        load_average={"before": load_before, "after": load_average()},
        command=command,
        notes=list(notes),
    )


def cache_markdown(result: CacheBenchmark) -> str:
    """The body of the `## Service: translation cache` section of docs/benchmarks.md."""

    def row(name: str, got: Latencies) -> str:
        cells = (got.p50_ms, got.p95_ms, got.mean_ms, got.min_ms)
        ms = " / ".join("-" if v is None else f"{v:.1f}" for v in cells)
        return (
            f"| {name} | {got.requests} | {ms} | {got.server_total_ms} | {got.server_compute_ms} |"
        )

    versions = ", ".join(f"{name} {version}" for name, version in result.versions.items())
    lines = [
        "The same paragraph through the whole service (HTTP proxy, FastAPI ingress, Serve "
        "queue, batcher, decoder), first uncached and then answered from the ingress's "
        f"translation cache (`api.cache_size` {result.cache_size:,}, the shipped setting). "
        f"{result.paragraphs} paragraphs, each of {result.sentences_per_text} distinct Spanish "
        f"sentences of the held-out `{result.split}` split ({result.characters_per_text:g} "
        f"characters and {result.units_per_text:g} decode units on average: placeholders and "
        "numbers split a sentence into pieces), each sent once uncached and then "
        f"{result.repeats} times again; one client, one request at a time (`beam_size` "
        f"{result.beam_size}, `max_length` {result.max_length}, `return_scores` so that every "
        "response's `segments[].cached` is checked). The shipped config's deployment settings: "
        "one replica each, fractional `num_cpus`, one torch thread.",
        "",
        f"Model: {result.model}. Machine: {result.machine}; {versions}. Load average "
        f"{result.load_average['before']} before, {result.load_average['after']} after (1, 5, "
        "15 min).",
        "",
        f"Command: `{result.command or 'python -m service bench cache'}` (add "
        "`--write docs/benchmarks.md` to rewrite this section).",
        "",
        "| request | requests | client p50 / p95 / mean / min ms | API `total_ms` (mean) "
        "| decode `compute_ms` (mean) |",
        "| --- | ---: | ---: | ---: | ---: |",
        row("uncached (first)", result.uncached),
        row("fully cached (repeat)", result.cached),
        "",
        f"A fully cached request was {result.speedup_p50}x faster at the median: no job goes "
        "to the model replica; what is left is the proxy, the ingress's validation, "
        "segmentation, the cache lookup and the response.",
    ]
    if result.errors:
        lines += ["", f"Errors: {'; '.join(result.errors)}."]
    if result.notes:
        lines += ["", *(f"Note: {note.rstrip('.')}." for note in result.notes)]
    return "\n".join(lines)


def command_line(
    *,
    paragraphs: int,
    sentences_per_text: int,
    repeats: int,
    beam_size: int,
    max_length: int,
    split: str,
    model: str,
    store: Path | None = None,
    num_cpus: float | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The command that repeats a run, with `nice` when this process runs niced."""
    niceness = os.nice(0)
    words = ["nice", "-n", str(niceness)] if niceness > 0 else []
    words += ["python", "-m", "service", "bench", "cache", "--paragraphs", str(paragraphs)]
    words += ["--sentences", str(sentences_per_text), "--repeats", str(repeats)]
    words += ["--beam-size", str(beam_size), "--max-length", str(max_length), "--split", split]
    if model != "transformer":
        words += ["--model", model]
    if store is not None:
        words += ["--store", str(store)]
    if num_cpus:
        words += ["--num-cpus", f"{num_cpus:g}"]
    return " ".join(words)


def run_command(write: str, as_json: bool, **options: Any) -> None:
    """`python -m service bench cache`: run, print, and optionally write the doc section."""
    import json

    from rich.console import Console

    from service.bench.cli import update_sections

    console = Console(stderr=True)
    # Ray prints its own messages (e.g. at shutdown) to stdout; keep stdout for the result.
    with contextlib.redirect_stdout(sys.stderr):
        result = benchmark_cache(
            command=command_line(**options),
            progress=lambda message: console.print(f"[dim]{message}[/dim]"),
            **options,
        )
    if write:
        update_sections(Path(write), {SECTION_TITLE: cache_markdown(result)})
        console.print(f"wrote {SECTION_TITLE} into {write}")
    print(json.dumps(result.to_dict()) if as_json else cache_markdown(result))
