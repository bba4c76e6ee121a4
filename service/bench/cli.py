"""`python -m service bench ...`: benchmarks print JSON or a table; none of them is a test."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from service.bench.decode import benchmark_decode, decode_markdown

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (not tests).")

DOC_SECTIONS = ("Decoding: KV cache", "Peers on identical weights", "Service: dynamic batching")
DOC_TITLE = "# Benchmarks"


def _print_table(title: str, rows: dict) -> None:
    table = Table("metric", "value", title=title)
    for key, value in rows.items():
        table.add_row(key, str(value))
    Console().print(table)


@bench_app.command("decode")
def decode_command(
    arch: Annotated[str, typer.Option(help="transformer or rnnsearch")] = "transformer",
    preset: Annotated[str, typer.Option()] = "small",
    batch_size: Annotated[int, typer.Option()] = 32,
    beam_size: Annotated[
        list[int] | None,
        typer.Option(
            help="beam size, default 1; repeat to run several: --beam-size 1 --beam-size 4"
        ),
    ] = None,
    new_tokens: Annotated[
        int, typer.Option(help="tokens generated per sentence (fixed length)")
    ] = 64,
    repeats: Annotated[int, typer.Option()] = 3,
    threads: Annotated[int, typer.Option(help="torch threads; 0 keeps torch's default")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """KV cache on vs off on the same batch: tokens/s, speedup, identical outputs."""
    beam_size = beam_size or [1]
    results = [
        benchmark_decode(
            arch=arch,
            preset=preset,
            batch_size=batch_size,
            beam_size=beam,
            new_tokens=new_tokens,
            repeats=repeats,
            threads=threads or None,
        ).to_dict()
        for beam in beam_size
    ]
    if as_json:
        print(json.dumps(results[0] if len(results) == 1 else results))
        return
    for result in results:
        _print_table(f"decode: KV cache on vs off, beam {result['beam_size']}", result)


@bench_app.command("peers")
def peers_command(
    model: Annotated[str, typer.Option(help="model id in the store")] = "es-en/transformer",
    version: Annotated[int | None, typer.Option(help="model version; default the latest")] = None,
    split: Annotated[str, typer.Option(help="corpus split to translate")] = "test",
    limit: Annotated[int, typer.Option(help="sentences (the first N of the split)")] = 256,
    batch_size: Annotated[int, typer.Option()] = 32,
    beam_size: Annotated[
        list[int] | None, typer.Option(help="beam size, default 4; repeat to run several")
    ] = None,
    max_length: Annotated[int, typer.Option(help="generated tokens at most, EOS included")] = 256,
    length_penalty: Annotated[float, typer.Option()] = 1.0,
    early_stopping: Annotated[
        bool,
        typer.Option(
            help="stop a sentence at beam_size finished hypotheses: CTranslate2's only rule, so "
            "all three engines run the same search; --no-early-stopping is ours and Hugging "
            "Face's default (CTranslate2 keeps its rule)"
        ),
    ] = True,
    threads: Annotated[
        int, typer.Option(help="threads for every engine; 0 keeps torch's default")
    ] = 0,
    repeats: Annotated[int, typer.Option(help="passes per engine; the best is reported")] = 1,
    random: Annotated[bool, typer.Option("--random", help="a random model on random ids")] = False,
    preset: Annotated[str, typer.Option(help="preset of the random model")] = "small",
    output_length: Annotated[
        int, typer.Option(help="random model: target tokens per sentence")
    ] = 40,
    store: Annotated[
        Path | None, typer.Option(help="model store root; default ./model_store")
    ] = None,
    dtype: Annotated[
        list[str] | None,
        typer.Option(
            help="float32 (default), bfloat16 or int8 for ours and Hugging Face, CTranslate2's "
            "compute_type to match; repeat to run several"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Ours vs Hugging Face generate vs CTranslate2 on identical weights and batches."""
    from service.models.precision import DTYPES

    for name in dtype or []:
        if name not in DTYPES:
            raise typer.BadParameter(f"choose from {', '.join(DTYPES)}", param_hint="--dtype")
    subject = _subject(model, version, split, limit, random, preset, output_length, store)
    results = _peers(
        subject,
        [
            (beam, early_stopping, precision)
            for precision in dtype or ["float32"]
            for beam in beam_size or [4]
        ],
        batch_size=batch_size,
        max_length=max_length,
        length_penalty=length_penalty,
        threads=threads or None,
        repeats=repeats,
    )
    if as_json:
        dicts = [r.to_dict() for r in results]
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts))
        return
    for r in results:
        table = Table(
            "engine",
            "wall s",
            "CPU s",
            "sentences/s",
            "target tokens/s",
            "identical to ours",
            title=f"peers: {r.model}, beam {r.beam_size} (early_stopping={r.early_stopping}), "
            f"{r.dtype} (CTranslate2 {r.ctranslate2_compute_type}), {r.sentences} sentences, "
            f"{r.threads} thread(s), load {r.load_average[0]}->{r.load_average[1]}",
        )
        for name, e in r.engines.items():
            table.add_row(
                name,
                f"{e.seconds:.2f}",
                f"{e.cpu_seconds:.2f}",
                f"{e.sentences_per_s:.1f}",
                f"{e.target_tokens_per_s:.0f}",
                f"{e.agreement:.1%}",
            )
        Console().print(table)
        Console().print(
            f"ours vs Hugging Face: {r.ours_vs_huggingface}x faster in wall time, "
            f"{r.ours_vs_huggingface_cpu}x in CPU time; ours vs CTranslate2: "
            f"{r.ours_vs_ctranslate2}x wall, {r.ours_vs_ctranslate2_cpu}x CPU"
        )


def _subject(model, version, split, limit, random, preset, output_length, store):
    from service.bench.peers import DEFAULT_STORE, resolve_subject

    return resolve_subject(
        model,
        version,
        split=split,
        limit=limit,
        random=random,
        preset=preset,
        output_length=output_length,
        store_root=store or DEFAULT_STORE,
    )


def _peers(subject, searches: list[tuple], **options):
    """One peers benchmark per (beam size, early_stopping[, dtype]); dtype default float32."""
    from service.bench.peers import benchmark_peers

    return [
        benchmark_peers(
            subject,
            beam_size=beam,
            early_stopping=early_stopping,
            dtype=dtype[0] if dtype else "float32",
            **options,
        )
        for beam, early_stopping, *dtype in searches
    ]


@bench_app.command("all")
def all_command(
    model: Annotated[str, typer.Option(help="model id in the store (peers)")] = "es-en/transformer",
    version: Annotated[int | None, typer.Option()] = None,
    split: Annotated[str, typer.Option()] = "test",
    limit: Annotated[int, typer.Option(help="peers: sentences")] = 256,
    batch_size: Annotated[int, typer.Option()] = 32,
    beam_size: Annotated[
        list[int] | None, typer.Option(help="beam sizes for both benchmarks, default 1 and 4")
    ] = None,
    new_tokens: Annotated[int, typer.Option(help="decode: tokens per sentence")] = 64,
    threads: Annotated[
        int, typer.Option(help="threads for every engine; 0 keeps torch's default")
    ] = 0,
    repeats: Annotated[int, typer.Option(help="passes per measurement; the best is reported")] = 2,
    random: Annotated[bool, typer.Option("--random", help="peers on a random model")] = False,
    store: Annotated[
        Path | None, typer.Option(help="model store root; default ./model_store")
    ] = None,
    service: Annotated[
        bool, typer.Option(help="also run `bench service` with its defaults (~6 minutes)")
    ] = True,
    write: Annotated[
        Path | None,
        typer.Option(help="also write the sections into this markdown file (docs/benchmarks.md)"),
    ] = None,
):
    """`bench decode`, `bench peers` for each beam size and `bench service`; prints markdown.

    Beam searches run twice in `peers`: with `early_stopping=True`, the stopping rule
    CTranslate2's beam search follows (all three engines then run the same search), and with
    our and Hugging Face's default `False`.
    """
    from service.bench.peers import library_versions, machine_description, peers_markdown

    beam_size = beam_size or [1, 4]

    decodes = [
        benchmark_decode(
            batch_size=batch_size,
            beam_size=beam,
            new_tokens=new_tokens,
            repeats=repeats,
            threads=threads or None,
        )
        for beam in beam_size
    ]
    subject = _subject(model, version, split, limit, random, "small", 40, store)
    searches = [(beam, True) for beam in beam_size]
    searches += [(beam, False) for beam in beam_size if beam > 1]
    peer_results = _peers(
        subject, searches, batch_size=batch_size, threads=threads or None, repeats=repeats
    )
    environment = _environment(machine_description(peer_results[0].threads), library_versions())
    beams = " ".join(f"--beam-size {b}" for b in beam_size)
    beam_searches = " ".join(f"--beam-size {b}" for b in beam_size if b > 1)
    sections = {
        DOC_SECTIONS[0]: "\n\n".join(
            [
                "Cached (KV cache, cross-attention keys/values computed once per source) against "
                "uncached (the whole prefix recomputed at every step) decoding of the same random "
                "`small` Transformer, batch of random sources, output length pinned so both do the "
                "same number of steps.",
                environment,
                f"Command: `python -m service bench decode --batch-size {batch_size} {beams} "
                f"--new-tokens {new_tokens} --repeats {repeats}"
                + (f" --threads {threads}" if threads else "")
                + "`"
                + f" (load average at the end: {', '.join(str(r.load_average) for r in decodes)})",
                decode_markdown(decodes),
                "Target: cached at least 3x faster than uncached: "
                + ("met" if all(r.speedup >= 3 and r.identical for r in decodes) else "NOT met")
                + " ("
                + ", ".join(f"beam {r.beam_size}: {r.speedup:.2f}x" for r in decodes)
                + ").",
            ]
        ),
        DOC_SECTIONS[1]: "\n\n".join(
            [
                "The same weights exported to a Hugging Face MarianMT directory and converted to "
                "CTranslate2; every engine translates the same length-sorted batches of the same "
                "token ids with the same search settings and thread count (tokenization is not "
                'timed), taking turns batch by batch. "Ours faster by" is their time over ours, '
                "in wall seconds and in CPU seconds (the work done, which other jobs on a shared "
                'machine disturb less); "identical to ours" is the share of sentences whose best '
                "hypothesis equals ours token for token. CTranslate2 has one beam stopping rule, "
                "that of `early_stopping=True` (a sentence ends once it has beam-size finished "
                "hypotheses), so that is the setting where the three engines run the same search "
                "and the targets are judged; our default, as Hugging Face's, is `False` (a "
                "sentence ends when no running beam can still win), which searches a little "
                "longer, and is measured too (CTranslate2 keeps its own rule there).",
                environment,
                f"Command: `python -m service bench peers --model {model} --split {split} "
                f"--limit {limit} --batch-size {batch_size} {beams} --repeats {repeats}"
                + (f" --threads {threads}" if threads else "")
                + (" --random" if random else "")
                + "`"
                + (f", then with `{beam_searches} --no-early-stopping`" if beam_searches else ""),
                peers_markdown(peer_results),
            ]
        ),
    }
    if service:
        from service.bench.service import SECTION_TITLE, benchmark_service, service_markdown

        console = Console(stderr=True)
        result = benchmark_service(
            command="python -m service bench service",
            progress=lambda message: console.print(f"[dim]{message}[/dim]"),
        )
        sections[SECTION_TITLE] = service_markdown(result)
    markdown = "\n\n".join(f"## {title}\n\n{body}" for title, body in sections.items())
    print(markdown)
    if write is not None:
        update_sections(write, sections)
        Console(stderr=True).print(f"wrote {', '.join(sections)} into {write}")


def _environment(machine: str, versions: dict[str, str]) -> str:
    libraries = ", ".join(f"{name} {version}" for name, version in versions.items())
    return (
        f"Measured {date.today().isoformat()} on {machine} ({platform.system()}, "
        f"{os.cpu_count()} cores shared with other jobs: timings are best-of-N and noisy); "
        f"{libraries}."
    )


def update_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace the bodies of `## <title>` sections in a markdown file, creating what is missing.

    Other sections (the service benchmarks another tool writes) are left as they are; a new
    file gets every heading of DOC_SECTIONS in order.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if not text.strip():
        text = (
            DOC_TITLE
            + "\n\n"
            + "\n\n".join(f"## {title}\n\n_Not measured yet._\n" for title in DOC_SECTIONS)
        )
    for title, body in sections.items():
        heading = re.compile(rf"^## {re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)
        replacement = f"## {title}\n\n{body.strip()}\n\n"
        if heading.search(text):
            text = heading.sub(lambda _, new=replacement: new, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + replacement
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def _mix_command(*, write: str, as_json: bool, **options) -> None:
    """`bench service --mix`: run, write the doc section if asked, print JSON or a table."""
    import contextlib
    import sys

    from service.bench.mix import SECTION_TITLE, benchmark_mix, mix_markdown, mix_table

    with contextlib.redirect_stdout(sys.stderr):
        result = benchmark_mix(**options)
    if write:
        update_sections(Path(write), {SECTION_TITLE: mix_markdown(result)})
        Console(stderr=True).print(f"wrote {SECTION_TITLE} into {write}")
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    Console().print(mix_table(result))
    target = result.target
    Console().print(
        f"short_p99_ratio {result.short_p99_ratio} (target <= {target['short_p99_ratio']}: "
        f"{'met' if target['short_p99_met'] else 'NOT met'}), throughput_ratio "
        f"{result.throughput_ratio} (target >= {target['throughput_ratio']}: "
        f"{'met' if target['throughput_met'] else 'NOT met'}); load average "
        f"{result.load_average['before']} -> {result.load_average['after']}"
    )


@bench_app.command("service")
def service_command(
    users: str = typer.Option("1,8,32,64", help="concurrency levels, comma separated"),
    duration: float = typer.Option(20.0, help="counted seconds per level and mode"),
    warmup: float = typer.Option(3.0, help="uncounted seconds before each measurement"),
    rounds: int = typer.Option(2, help="slices per level, alternating the modes"),
    beam_size: int = typer.Option(1, help="1 is greedy"),
    max_length: int = typer.Option(128, help="max_length per request"),
    texts_per_request: int = typer.Option(1),
    model: str = typer.Option("transformer", help="transformer or rnnsearch"),
    store: str = typer.Option("", help="model store root; default ./model_store"),
    random_preset: str = typer.Option("small", help="weights used when the store lacks the model"),
    batch_wait_timeout: float = typer.Option(
        -1.0, help="batch_wait_timeout_s for both modes; negative keeps the shipped config's"
    ),
    batching: str = typer.Option("static", help="static or continuous, for both modes"),
    mix: bool = typer.Option(
        False,
        "--mix",
        help="continuous against static batching on short and long texts (not batched/unbatched)",
    ),
    short_fraction: float = typer.Option(0.75, help="--mix: the share of short requests"),
    max_batch_size: int = typer.Option(32, help="--mix: both modes' max_batch_size"),
    mix_dtype: str = typer.Option(
        "", "--dtype", help="--mix: every replica's runtime.dtype (default: the shipped auto)"
    ),
    as_json: bool = typer.Option(False, "--json"),
    write: str = typer.Option(
        "", help="also write its section into this markdown file (docs/benchmarks.md)"
    ),
):
    """Dynamic batching on (max_batch_size 32) vs off (1) through HTTP: req/s and latency."""
    import contextlib
    import sys

    from service.bench.service import (
        SECTION_TITLE,
        benchmark_service,
        service_markdown,
        service_table,
    )

    console = Console(stderr=True)
    if mix:
        _mix_command(
            users=[int(u) for u in users.split(",") if u.strip()],
            duration_s=duration,
            warmup_s=warmup,
            rounds=rounds,
            short_fraction=short_fraction,
            beam_size=beam_size,
            max_length=max_length,
            max_batch_size=max_batch_size,
            model=model,
            store=Path(store) if store else None,
            random_preset=random_preset,
            batch_wait_timeout_s=batch_wait_timeout if batch_wait_timeout >= 0 else None,
            dtype=mix_dtype or None,
            command="python -m service bench service " + " ".join(sys.argv[3:]),
            progress=lambda message: console.print(f"[dim]{message}[/dim]"),
            write=write,
            as_json=as_json,
        )
        return
    # Ray prints its own messages (e.g. at shutdown) to stdout; keep stdout for the result.
    with contextlib.redirect_stdout(sys.stderr):
        result = benchmark_service(
            [int(u) for u in users.split(",") if u.strip()],
            duration_s=duration,
            warmup_s=warmup,
            rounds=rounds,
            beam_size=beam_size,
            max_length=max_length,
            texts_per_request=texts_per_request,
            model=model,
            store=Path(store) if store else None,
            random_preset=random_preset,
            batch_wait_timeout_s=batch_wait_timeout if batch_wait_timeout >= 0 else None,
            batching=batching,
            command="python -m service bench service " + " ".join(sys.argv[3:]),
            progress=lambda message: console.print(f"[dim]{message}[/dim]"),
        )
    if write:
        update_sections(Path(write), {SECTION_TITLE: service_markdown(result)})
        console.print(f"wrote {SECTION_TITLE} into {write}")
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    Console().print(service_table(result))
    target = result.target
    Console().print(
        f"{target['users']} users: {target['measured']}x with batching "
        f"(target {target['speedup']}x: {'met' if target['met'] else 'NOT met'}); "
        f"load average {result.load_average['before']} -> {result.load_average['after']}"
    )
    for note in result.notes:
        Console().print(f"note: {note}")


@bench_app.command("cache")
def cache_command(
    paragraphs: int = typer.Option(8, help="paragraphs, each sent uncached once"),
    sentences: int = typer.Option(6, help="held-out sentences per paragraph"),
    repeats: int = typer.Option(3, help="cached requests per paragraph"),
    beam_size: int = typer.Option(4, help="the service's default"),
    max_length: int = typer.Option(128),
    split: str = typer.Option("general", help="held-out split the sentences come from"),
    model: str = typer.Option("transformer", help="transformer or rnnsearch"),
    store: str = typer.Option("", help="model store root; default ./model_store"),
    num_cpus: float = typer.Option(0.0, help="CPUs Ray may schedule; 0: all cores"),
    note: Annotated[
        list[str] | None,
        typer.Option(help="a note for the doc (what else ran on the machine); repeatable"),
    ] = None,
    as_json: bool = typer.Option(False, "--json"),
    write: str = typer.Option(
        "", help="also write its section into this markdown file (docs/benchmarks.md)"
    ),
):
    """The translation cache: one paragraph uncached, then fully cached, through HTTP."""
    from service.bench.cache import run_command

    run_command(
        write,
        as_json,
        paragraphs=paragraphs,
        sentences_per_text=sentences,
        repeats=repeats,
        beam_size=beam_size,
        max_length=max_length,
        split=split,
        model=model,
        store=Path(store) if store else None,
        num_cpus=num_cpus or None,
        notes=note or (),
    )
