"""KV cache on vs off: the same model, batch and options, decoded both ways and timed."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from service.decoding.search import DecodeOptions, generate
from service.models import build_model, count_parameters, make_config


@dataclass(frozen=True)
class DecodeBenchmark:
    arch: str
    preset: str
    batch_size: int
    beam_size: int
    new_tokens: int
    source_tokens: int
    threads: int
    parameters: int
    cached_tokens_per_s: float
    uncached_tokens_per_s: float
    speedup: float
    identical: bool
    machine: str
    load_average: float = 0.0  # 1-minute load when the benchmark ended (shared machines)

    def to_dict(self) -> dict:
        return asdict(self)


def _timed(model, src, options: DecodeOptions, repeats: int, label: str):
    generate(model, src[:2], options)  # warm-up: allocator, kernels
    best, result = float("inf"), None
    for _ in tqdm(range(repeats), desc=label, leave=False):
        started = time.perf_counter()
        result = generate(model, src, options)
        best = min(best, time.perf_counter() - started)
    return best, result


def benchmark_decode(
    arch: str = "transformer",
    preset: str = "small",
    batch_size: int = 32,
    beam_size: int = 1,
    new_tokens: int = 64,
    source_tokens: int = 32,
    vocab_size: int = 8000,
    repeats: int = 3,
    threads: int | None = None,
    seed: int = 0,
) -> DecodeBenchmark:
    """Decode `batch_size` random sources for exactly `new_tokens` steps, cache on and off.

    Lengths are pinned (min_length = max_length) so both runs do the same number of steps
    whatever the weights; random weights therefore measure the same arithmetic as trained ones.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(arch, make_config(arch, preset, vocab_size=vocab_size)).eval()
    src = torch.randint(3, vocab_size, (batch_size, source_tokens))
    src[:, -1] = model.config.eos_id
    options = DecodeOptions(
        beam_size=beam_size, max_length=new_tokens, min_length=new_tokens, length_penalty=1.0
    )
    uncached_options = DecodeOptions(**{**asdict(options), "use_cache": False})
    cached_s, cached = _timed(model, src, options, repeats, "cache on")
    uncached_s, uncached = _timed(model, src, uncached_options, repeats, "cache off")
    generated = batch_size * new_tokens
    identical = [[h.tokens for h in n] for n in cached] == [[h.tokens for h in n] for n in uncached]
    return DecodeBenchmark(
        arch=arch,
        preset=preset,
        batch_size=batch_size,
        beam_size=beam_size,
        new_tokens=new_tokens,
        source_tokens=source_tokens,
        threads=torch.get_num_threads(),
        parameters=count_parameters(model),
        cached_tokens_per_s=round(generated / cached_s, 1),
        uncached_tokens_per_s=round(generated / uncached_s, 1),
        speedup=round(uncached_s / cached_s, 2),
        identical=identical,
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        load_average=round(os.getloadavg()[0], 2),
    )


def decode_markdown(results: list[DecodeBenchmark]) -> str:
    """A markdown table of `bench decode` results, one row per search setting."""
    lines = [
        "| arch | preset | batch | beam | new tokens | threads | cache on tok/s "
        "| cache off tok/s | speedup | identical |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.arch} | {r.preset} | {r.batch_size} | {r.beam_size} | {r.new_tokens} "
            f"| {r.threads} | {r.cached_tokens_per_s:,.0f} | {r.uncached_tokens_per_s:,.0f} "
            f"| {r.speedup:.2f}x | {'yes' if r.identical else 'NO'} |"
        )
    return "\n".join(lines)
