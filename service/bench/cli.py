"""`python -m service bench ...`: benchmarks print JSON or a table; none of them is a test."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from service.bench.decode import benchmark_decode

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (not tests).")


@bench_app.command("decode")
def decode_command(
    arch: str = typer.Option("transformer", help="transformer or rnnsearch"),
    preset: str = typer.Option("small"),
    batch_size: int = typer.Option(32),
    beam_size: int = typer.Option(1),
    new_tokens: int = typer.Option(64, help="tokens generated per sentence (fixed length)"),
    repeats: int = typer.Option(3),
    threads: int = typer.Option(0, help="torch threads; 0 keeps torch's default"),
    as_json: bool = typer.Option(False, "--json"),
):
    """KV cache on vs off on the same batch: tokens/s, speedup, identical outputs."""
    result = benchmark_decode(
        arch=arch,
        preset=preset,
        batch_size=batch_size,
        beam_size=beam_size,
        new_tokens=new_tokens,
        repeats=repeats,
        threads=threads or None,
    ).to_dict()
    if as_json:
        print(json.dumps(result))
        return
    table = Table("metric", "value", title="decode: KV cache on vs off")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)
