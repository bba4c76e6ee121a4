"""Dynamic batching on vs off, measured through the whole service: HTTP, ingress, Serve's
queue, the batcher and the decoder.

Ray and Serve start once. The same model is deployed twice, side by side, as two applications
that differ only in the live batching setting (`user_config.max_batch_size`): `/batched` (32, the
shipped setting) and `/unbatched` (1: every text decodes alone). Two applications rather than
one reconfigured between runs, because `serve.run` gives each deployment a fresh random code
version, so a changed `user_config` restarts the replica (a model reload) instead of calling
`reconfigure` in place; and because then both modes can be interleaved level by level, which
spreads any drift in the machine's background load over both.

The load is closed-loop: N asyncio workers on one httpx client, each sending the next
test-split sentence as soon as its previous answer arrived. After a warm-up, completions are
counted for a fixed window; then no new requests start and those in flight are awaited (so the
next run starts on an empty queue). Latency percentiles cover every request started inside a
counted window. Each level runs in `rounds` slices that alternate the modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.bench.live import (
    free_port,  # noqa: F401 (re-exported: callers take it from here)
    load_average,
    machine_description,
    start_serve,
    stop_serve,
    versions,
)

MODES = {"batched": 32, "unbatched": 1}  # mode -> max_batch_size
DEFAULT_USERS = (1, 8, 32, 64)
TARGET_USERS, TARGET_SPEEDUP = 32, 4.0  # the bar: 4x the throughput at 32 users
TARGET_OVERHEAD_MS = 15.0  # serving overhead at one user, p50
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STORE = REPO_ROOT / "model_store"
TEST_SPLIT_DIR = DEFAULT_STORE / "data" / "es-en"


@dataclass(frozen=True)
class LoadResult:
    """One mode at one concurrency: what the clients saw."""

    users: int
    mode: str
    max_batch_size: int
    seconds: float  # the counted window
    requests: int  # answered 200 inside the window
    errors: int  # failed (any status but 200, or a transport error), ended or began inside
    error_kinds: dict[str, int]
    requests_per_s: float
    sentences_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    mean_batch_size: float | None  # texts decoded together, as the responses report it
    # Means of what the responses' `timing` reports: waiting for a batch in the model replica,
    # decoding, and the whole request at the API (client latency minus this is the proxy,
    # the transport and the client).
    server_queue_ms: float | None
    server_compute_ms: float | None
    server_total_ms: float | None
    # p50 of each request's client latency minus its own decode time (`timing.compute_ms`):
    # what serving adds (HTTP, proxy, ingress, Serve's queue, waiting for a batch), per request.
    overhead_p50_ms: float | None = None


@dataclass(frozen=True)
class LevelComparison:
    users: int
    batched: LoadResult
    unbatched: LoadResult
    speedup: float | None  # batched requests/s over unbatched requests/s


@dataclass(frozen=True)
class ServiceBenchmark:
    model: str  # "es-en/transformer v1 (shipped)" or "... with random small weights ..."
    random_weights: bool
    beam_size: int
    max_length: int
    texts_per_request: int
    batch_wait_timeout_s: float  # both modes; it only matters when batching
    duration_s: float  # counted, per level and mode, over all rounds
    warmup_s: float  # before each round
    rounds: int
    levels: list[LevelComparison]
    target: dict[str, Any]
    versions: dict[str, str]
    machine: str
    load_average: dict[str, list[float]]
    command: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Load generation.


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def mark_window(samples: list[dict[str, Any]], window: tuple[float, float]) -> None:
    """Flag each sample: `counted` (finished inside the window: throughput, errors) and
    `sampled` (answered and started inside it: latency and server timings)."""
    start, end = window
    for sample in samples:
        sample["counted"] = start <= sample["finished"] <= end
        sample["started_inside"] = start <= sample["started"] <= end
        sample["sampled"] = sample["ok"] and sample["started_inside"]


def summarize(
    samples: list[dict[str, Any]],
    *,
    seconds: float,
    users: int,
    mode: str,
    max_batch_size: int,
    texts_per_request: int,
) -> LoadResult:
    """Samples as `drive` returns them (flagged by `mark_window`), from one or more runs whose
    counted windows add up to `seconds`. `timing` is the response's own (queue_ms, compute_ms,
    total_ms, batch_sizes), present on answered samples."""
    ok = [s for s in samples if s["counted"] and s["ok"]]
    # A failure counts if it ended inside a window, or began in one (a timeout that fires
    # while the queue drains is still an answer the window's load did not get).
    errors = [s for s in samples if not s["ok"] and (s["counted"] or s["started_inside"])]
    sampled = [s for s in samples if s["sampled"]]
    latencies = [(s["finished"] - s["started"]) * 1000 for s in sampled]
    batch_sizes = [b for s in ok for b in s["batch_sizes"]]
    overheads = [(s["finished"] - s["started"]) * 1000 - s["timing"]["compute_ms"] for s in sampled]

    def mean_of(key: str) -> float | None:
        values = [s["timing"][key] for s in sampled]
        return _round(float(np.mean(values))) if values else None

    return LoadResult(
        users=users,
        mode=mode,
        max_batch_size=max_batch_size,
        seconds=round(seconds, 2),
        requests=len(ok),
        errors=len(errors),
        error_kinds=dict(Counter(s["kind"] for s in errors)),
        requests_per_s=round(len(ok) / seconds, 2),
        sentences_per_s=round(len(ok) * texts_per_request / seconds, 2),
        p50_ms=_round(percentile(latencies, 50)),
        p95_ms=_round(percentile(latencies, 95)),
        p99_ms=_round(percentile(latencies, 99)),
        mean_ms=_round(float(np.mean(latencies)) if latencies else None),
        mean_batch_size=_round(float(np.mean(batch_sizes)) if batch_sizes else None, 2),
        server_queue_ms=mean_of("queue_ms"),
        server_compute_ms=mean_of("compute_ms"),
        server_total_ms=mean_of("total_ms"),
        overhead_p50_ms=_round(percentile(overheads, 50)),
    )


async def drive(
    url: str,
    sentences: Sequence[str],
    *,
    users: int,
    duration_s: float,
    warmup_s: float,
    payload: dict[str, Any],
    texts_per_request: int = 1,
    timeout_s: float = 120.0,
) -> tuple[list[dict[str, Any]], tuple[float, float]]:
    """Closed-loop load on `url` (POST /v1/translate); returns samples and the counted window."""
    import httpx

    samples: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        window = (started + warmup_s, started + warmup_s + duration_s)

        async def worker(index: int) -> None:
            # Workers walk the same shuffled sentence order from evenly spaced offsets.
            position = index * max(1, len(sentences) // users)
            while time.perf_counter() < window[1]:
                texts = [
                    sentences[(position + k) % len(sentences)] for k in range(texts_per_request)
                ]
                position += texts_per_request
                body = {**payload, "text": texts[0] if texts_per_request == 1 else texts}
                sent = time.perf_counter()
                sample: dict[str, Any] = {
                    "started": sent,
                    "ok": False,
                    "batch_sizes": [],
                    "index": (position - texts_per_request) % len(sentences),  # first text's
                }
                try:
                    response = await client.post(url, json=body)
                    sample["ok"] = response.status_code == 200
                    sample["kind"] = str(response.status_code)
                    if sample["ok"]:
                        sample["timing"] = response.json()["timing"]
                        sample["batch_sizes"] = sample["timing"]["batch_sizes"]
                except httpx.HTTPError as error:
                    sample["kind"] = type(error).__name__
                sample["finished"] = time.perf_counter()
                samples.append(sample)

        await asyncio.gather(*(worker(i) for i in range(users)))
    mark_window(samples, window)
    return samples, window


# The service under test.


def benchmark_sentences(data_dir: Path = TEST_SPLIT_DIR, seed: int = 0) -> list[str]:
    """The Spanish side of the test split in a fixed shuffled order (both modes get the same)."""
    from service.text.corpus import load_split

    sentences = [pair.source for pair in load_split("test", data_dir)]
    random.Random(seed).shuffle(sentences)
    return sentences


@dataclass(frozen=True)
class Subject:
    store: Path
    model_id: str
    description: str
    random_weights: bool


@contextlib.contextmanager
def subject_store(store: Path | None, model: str, random_preset: str) -> Iterator[Subject]:
    """The shipped model when the store has it, else random `random_preset` weights of the
    same architecture with the shipped tokenizer, in a temporary store."""
    from service.store import ModelStore, ModelStoreError

    model_id = model if "/" in model else f"es-en/{model}"
    root = Path(store) if store is not None else DEFAULT_STORE
    try:
        manifest = ModelStore(root).resolve(model_id)
    except ModelStoreError:
        manifest = None
    if manifest is not None:
        where = "shipped" if root.resolve() == DEFAULT_STORE.resolve() else f"from {root}"
        yield Subject(root, manifest.id, f"{manifest.id} v{manifest.version} ({where})", False)
        return
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        yield random_subject(Path(tmp), model_id, random_preset)


def random_subject(work: Path, model_id: str, preset: str) -> Subject:
    import torch

    from service.models import build_model, make_config
    from service.store import ModelStore
    from service.text.tokenizer import Tokenizer

    spm = TEST_SPLIT_DIR / "spm.model"
    if not spm.is_file():
        raise FileNotFoundError(f"{spm} is missing; run `python -m service data prepare`")
    arch = model_id.split("/", 1)[1]
    torch.manual_seed(0)
    config = make_config(arch, preset, Tokenizer.load(spm).vocab_size)
    model = build_model(arch, config).eval()
    store = ModelStore(work / "model_store")
    manifest = store.save(
        model,
        spm,
        model_id=model_id,
        metrics={"test": {"note": "random weights, for benchmarks only"}},
    )
    description = (
        f"{manifest.id} with random {preset} weights (no trained model in the store; every "
        "output runs to max_length)"
    )
    return Subject(store.root, manifest.id, description, True)


def _deployment_options(
    max_batch_size: int, model_key: str, batch_wait_timeout_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """The shipped config's settings for the ingress and this model, batching overridden."""
    from service.serving.launch import DEFAULT_CONFIG, deployment_overrides, load_config

    shipped = deployment_overrides(load_config(DEFAULT_CONFIG)["applications"][0])
    ingress = dict(shipped.get("Ingress", {}))
    model = dict(shipped.get(model_key) or shipped.get("es-en-transformer") or {})
    user_config = dict(model.get("user_config") or {})
    user_config["max_batch_size"] = max_batch_size
    if batch_wait_timeout_s is not None:
        user_config["batch_wait_timeout_s"] = batch_wait_timeout_s
    model["user_config"] = user_config
    return {"Ingress": ingress, model_key: model}


def _batch_wait_timeout(override: float | None) -> float:
    """What both modes run with: the override, else the shipped config's, else the default."""
    if override is not None:
        return override
    from service.serving.translation import BatchingConfig

    shipped = _deployment_options(32, "es-en-transformer")["es-en-transformer"]["user_config"]
    return float(shipped.get("batch_wait_timeout_s", BatchingConfig().batch_wait_timeout_s))


def start_service(
    subject: Subject,
    num_cpus: float | None = None,
    batch_wait_timeout_s: float | None = None,
    batching: str = "static",
) -> str:
    """Ray, Serve on a free loopback port, and one application per mode; returns the base URL.

    Replicas keep the shipped config's resources (fractional CPUs, one torch thread)."""
    apps = {mode: (max_batch_size, batching) for mode, max_batch_size in MODES.items()}
    return start_applications(subject, apps, num_cpus, batch_wait_timeout_s)


def start_applications(
    subject: Subject,
    apps: dict[str, tuple[int, str]],
    num_cpus: float | None = None,
    batch_wait_timeout_s: float | None = None,
    dtype: str | None = None,
) -> str:
    """One application of the subject per entry of `apps` (name -> (max_batch_size, batching)),
    each at `/<name>`, otherwise identical; returns the base URL. `dtype` sets every replica's
    `runtime.dtype` (None: the shipped `auto`)."""
    from ray import serve

    from service.serving.app import build_app_with_options, deployment_name
    from service.serving.config import AppArgs

    port = start_serve("bench-service", num_cpus)
    key = deployment_name(subject.model_id)
    for name, (max_batch_size, batching) in apps.items():
        args: dict[str, Any] = {
            "store": str(subject.store),
            "models": [{"id": subject.model_id, "batching": batching}],
            "default_model": subject.model_id,
            # Batching is what is measured: sentences answered from the ingress's cache would
            # never reach the decoder (the clients resend the same test sentences).
            "api": {"cache_size": 0},
        }
        if "generation" in AppArgs.model_fields:  # translation only: no language model replica
            args["generation"] = None
        if dtype is not None:
            args["runtime"] = {"dtype": dtype}
        serve.run(
            build_app_with_options(
                args, _deployment_options(max_batch_size, key, batch_wait_timeout_s)
            ),
            name=f"bench-{name}",
            route_prefix=f"/{name}",
            blocking=False,
        )
    return f"http://127.0.0.1:{port}"


def wait_ready(base: str, timeout_s: float = 600.0, modes: Sequence[str] = tuple(MODES)) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    for mode in modes:
        while True:
            try:
                if httpx.get(f"{base}/{mode}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base}/{mode} was not ready within {timeout_s:g} s")
            time.sleep(1)


stop_service = stop_serve


# The benchmark.


def check_levels(users: Sequence[int], rounds: int) -> list[int]:
    """The concurrency levels, sorted and without repeats; raises on impossible settings."""
    levels = sorted({int(u) for u in users})
    if not levels or levels[0] < 1:
        raise ValueError("users must be positive integers")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    return levels


def warm_up(
    base: str,
    modes: Sequence[str],
    sentences: Sequence[str],
    warmup_s: float,
    payload: dict[str, Any],
    say: Any,
) -> None:
    """A few seconds of 8 clients on each application: first requests pay for allocations and
    thread start-up, which no counted window should."""
    for mode in modes:
        say(f"warming up {mode}")
        asyncio.run(
            drive(
                f"{base}/{mode}/v1/translate",
                sentences,
                users=8,
                duration_s=warmup_s,
                warmup_s=0,
                payload=payload,
            )
        )


def alternate_slices(
    base: str,
    modes: Sequence[str],
    sentences: Sequence[str],
    users: int,
    rounds: int,
    say: Any,
    *,
    duration_s: float,
    warmup_s: float,
    payload: dict[str, Any],
    texts_per_request: int = 1,
) -> dict[str, list[dict[str, Any]]]:
    """`rounds` slices per mode of `duration_s` each, in the order a b, b a, a b, ...: a drift
    in the machine's background load falls on every mode alike. Returns each mode's samples."""
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for round_index in range(rounds):
        order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
        for mode in order:
            say(f"{users} users, {mode}, round {round_index + 1} of {rounds}")
            got, _ = asyncio.run(
                drive(
                    f"{base}/{mode}/v1/translate",
                    sentences,
                    users=users,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    payload=payload,
                    texts_per_request=texts_per_request,
                )
            )
            samples[mode] += got
    return samples


def _measure_level(
    base: str,
    sentences: Sequence[str],
    users: int,
    rounds: int,
    say: Any,
    *,
    duration_s: float,
    warmup_s: float,
    payload: dict[str, Any],
    texts_per_request: int,
) -> LevelComparison:
    samples = alternate_slices(
        base,
        list(MODES),
        sentences,
        users,
        rounds,
        say,
        duration_s=duration_s,
        warmup_s=warmup_s,
        payload=payload,
        texts_per_request=texts_per_request,
    )
    results = {
        mode: summarize(
            samples[mode],
            seconds=duration_s * rounds,
            users=users,
            mode=mode,
            max_batch_size=max_batch_size,
            texts_per_request=texts_per_request,
        )
        for mode, max_batch_size in MODES.items()
    }
    for got in results.values():
        say(
            f"  {got.mode}: {got.requests_per_s} req/s, p50 {got.p50_ms} ms, mean batch "
            f"{got.mean_batch_size}, server queue/compute/total ms "
            f"{got.server_queue_ms}/{got.server_compute_ms}/{got.server_total_ms}, "
            f"overhead p50 {got.overhead_p50_ms} ms, errors {got.errors}"
        )
    off = results["unbatched"].requests_per_s
    return LevelComparison(
        users=users,
        batched=results["batched"],
        unbatched=results["unbatched"],
        speedup=round(results["batched"].requests_per_s / off, 2) if off else None,
    )


def benchmark_service(
    users: Sequence[int] = DEFAULT_USERS,
    *,
    duration_s: float = 20.0,
    warmup_s: float = 3.0,
    rounds: int = 2,
    beam_size: int = 1,
    max_length: int = 128,
    texts_per_request: int = 1,
    model: str = "transformer",
    store: Path | None = None,
    random_preset: str = "small",
    batch_wait_timeout_s: float | None = None,
    batching: str = "static",
    num_cpus: float | None = None,
    command: str = "",
    progress: Any = None,
) -> ServiceBenchmark:
    """Start the service once, then load both modes at every concurrency in `users`.

    Each level's `duration_s` is split into `rounds` alternating slices (batched, unbatched,
    unbatched, batched, ...), each after its own `warmup_s`, so that a change in the machine's
    background load falls on both modes alike. `progress(message)`, when given, hears about
    each step; the whole run takes about `2 * len(users) * (rounds * warmup_s + duration_s)`
    plus start-up and queue draining.
    """
    users = check_levels(users, rounds)
    say = progress or (lambda message: None)
    sentences = benchmark_sentences()
    payload = {"beam_size": beam_size, "max_length": max_length}
    load = {
        "duration_s": duration_s / rounds,
        "warmup_s": warmup_s,
        "payload": payload,
        "texts_per_request": texts_per_request,
    }
    load_before = load_average()
    levels: list[LevelComparison] = []
    with subject_store(store, model, random_preset) as subject:
        say(f"starting Ray Serve with {subject.description}")
        try:
            base = start_service(subject, num_cpus, batch_wait_timeout_s, batching)
            wait_ready(base)
            warm_up(base, list(MODES), sentences, warmup_s, payload, say)
            for count in users:
                levels.append(_measure_level(base, sentences, count, rounds, say, **load))
        finally:
            stop_service()
    at_target = next((level for level in levels if level.users == TARGET_USERS), None)
    notes = []
    if subject.random_weights:
        notes.append(
            "random weights: outputs never stop early, so every text decodes max_length tokens"
        )
    return ServiceBenchmark(
        model=subject.description,
        random_weights=subject.random_weights,
        beam_size=beam_size,
        max_length=max_length,
        texts_per_request=texts_per_request,
        batch_wait_timeout_s=_batch_wait_timeout(batch_wait_timeout_s),
        duration_s=duration_s,
        warmup_s=warmup_s,
        rounds=rounds,
        levels=levels,
        target={
            "users": TARGET_USERS,
            "speedup": TARGET_SPEEDUP,
            "measured": at_target.speedup if at_target else None,
            "met": bool(at_target and (at_target.speedup or 0) >= TARGET_SPEEDUP),
        },
        versions=versions(),
        machine=machine_description(),
        load_average={"before": load_before, "after": load_average()},
        command=command,
        notes=notes,
    )


def service_table(result: ServiceBenchmark):
    """A rich Table: one row per concurrency level, both modes and the speedup."""
    from rich.table import Table

    def ms(load: LoadResult) -> str:
        return "/".join(
            "-" if v is None else f"{v:.0f}" for v in (load.p50_ms, load.p95_ms, load.p99_ms)
        )

    table = Table(
        "users",
        "batched req/s",
        "unbatched req/s",
        "speedup",
        "batched p50/p95/p99 ms",
        "unbatched p50/p95/p99 ms",
        "mean batch",
        "errors (on/off)",
        title=f"service: dynamic batching on (max_batch_size 32) vs off (1) - {result.model}",
    )
    for level in result.levels:
        table.add_row(
            str(level.users),
            f"{level.batched.requests_per_s:.2f}",
            f"{level.unbatched.requests_per_s:.2f}",
            "-" if level.speedup is None else f"{level.speedup:.2f}x",
            ms(level.batched),
            ms(level.unbatched),
            "-" if level.batched.mean_batch_size is None else f"{level.batched.mean_batch_size}",
            f"{level.batched.errors}/{level.unbatched.errors}",
        )
    return table


SECTION_TITLE = "Service: dynamic batching"


def _decoder_busy(level: LevelComparison) -> str:
    """How much of the time the decoder worked, and where the rest went."""

    def busy(load: LoadResult) -> float:
        calls_per_s = load.sentences_per_s / (load.mean_batch_size or 1.0)
        return calls_per_s * (load.server_compute_ms or 0.0) / 1000

    return (
        f"At {level.users} users the decoder was busy {busy(level.batched):.0%} of the time with "
        f"batching and {busy(level.unbatched):.0%} without (decode calls per second x mean call "
        "time). Batches form in `DecodeQueue` (service/serving/batcher.py) when the decoder is "
        "free: everything queued, up to `max_batch_size`; replicas admit twice that many "
        "requests, so at 64 users the next full batch already waits in the replica. The idle "
        "rest is the round trip of a finished batch's clients (the responses out through the "
        "ingress and the proxy, the next requests back in): closed-loop clients that all sat in "
        "one batch have nothing queued meanwhile. On two cores that round trip is CPU work too "
        "(the clients, the proxy and the ingress share the cores with the decoder), so "
        "overlapping it with decoding is not free: answering each text the moment its own "
        "search ended, instead of with its batch, measured slower here (see 'Tried and not "
        "kept')."
    )


def service_markdown(result: ServiceBenchmark) -> str:
    """The body of the `## Service: dynamic batching` section of docs/benchmarks.md."""

    def ms(load: LoadResult) -> str:
        return " / ".join(
            "-" if v is None else f"{v:.0f}" for v in (load.p50_ms, load.p95_ms, load.p99_ms)
        )

    versions = ", ".join(f"{name} {version}" for name, version in result.versions.items())
    lines = [
        "The whole service (HTTP proxy, FastAPI ingress, Serve queue, batcher, decoder) with "
        "dynamic batching on (`max_batch_size` 32, the shipped setting) and off (1), deployed "
        "side by side in one Ray instance with otherwise identical settings (one replica each, "
        f"`num_cpus` 0.5, one torch thread, `batch_wait_timeout_s` {result.batch_wait_timeout_s:g}"
        "). N closed-loop clients each send one test-split sentence per request "
        f"(`beam_size` {result.beam_size}, `max_length` {result.max_length}) and the next as "
        f"soon as the answer arrives. Per level and mode {result.duration_s:g} s are counted, in "
        f"{result.rounds} slices that alternate the modes, each after {result.warmup_s:g} s of "
        "warm-up. Latency is as the client sees it; mean batch is the responses' "
        "`timing.batch_sizes` (texts decoded together).",
        "",
        f"Model: {result.model}. Machine: {result.machine}; {versions}. Load average "
        f"{result.load_average['before']} before, {result.load_average['after']} after (1, 5, "
        "15 min; the cores were shared with other jobs, so absolute numbers are noisy).",
        "",
        f"Command: `{result.command or 'python -m service bench service'}` (add "
        "`--write docs/benchmarks.md` to rewrite this section).",
        "",
        "| users | batched req/s | unbatched req/s | speedup | batched p50 / p95 / p99 ms "
        "| unbatched p50 / p95 / p99 ms | mean batch | errors (on / off) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in result.levels:
        on, off = level.batched, level.unbatched
        lines.append(
            f"| {level.users} | {on.requests_per_s:.2f} | {off.requests_per_s:.2f} | "
            f"{'-' if level.speedup is None else f'{level.speedup:.2f}x'} | {ms(on)} | {ms(off)} "
            f"| {'-' if on.mean_batch_size is None else on.mean_batch_size} "
            f"| {on.errors} / {off.errors} |"
        )
    target = result.target
    verdict = "met" if target["met"] else "not met"
    lines += [
        "",
        f"Target: at least {target['speedup']:g}x the throughput with batching at "
        f"{target['users']} users; measured {target['measured']}x ({verdict}).",
    ]
    at_target = next((level for level in result.levels if level.users == target["users"]), None)
    if at_target is not None and at_target.batched.mean_batch_size is not None:
        lines.append(
            f"With {at_target.users} requests in flight, a batched decode call carried "
            f"{at_target.batched.mean_batch_size:g} texts on average (at most 32); the mean "
            f"server-side wait for a batch was {at_target.batched.server_queue_ms} ms batched "
            f"and {at_target.unbatched.server_queue_ms} ms unbatched, the mean decode call "
            f"{at_target.batched.server_compute_ms} ms and {at_target.unbatched.server_compute_ms}"
            " ms."
        )
        lines += ["", _decoder_busy(at_target)]
    single = next((level for level in result.levels if level.users == 1), None)
    if single is not None and single.batched.p50_ms and single.unbatched.p50_ms:
        overhead = single.batched.overhead_p50_ms
        overhead_met = overhead is not None and overhead <= TARGET_OVERHEAD_MS
        lines += [
            "",
            f"With one client: p50 {single.batched.p50_ms:.0f} ms batched, "
            f"{single.unbatched.p50_ms:.0f} ms unbatched; the serving overhead (each "
            "request's client latency minus its decode time `timing.compute_ms`, p50) "
            f"{single.batched.overhead_p50_ms} ms batched and "
            f"{single.unbatched.overhead_p50_ms} ms unbatched (target: at most "
            f"{TARGET_OVERHEAD_MS:g} ms batched, "
            f"{'met' if overhead_met else 'not met'}"
            "; the static queue waits `batch_wait_timeout_s` only while other requests are "
            "about).",
        ]
    lines += [f"Note: {note}." for note in result.notes]
    return "\n".join(lines)
