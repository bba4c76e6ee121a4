"""`python -m service compare`: registered by `service/__main__.py`.

torch, sacrebleu and matplotlib load when the command runs, not on `--help`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def compare_command(
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated model ids or names, each optionally '@<version>' "
            "(e.g. 'transformer@1'); the first is the baseline of the significance tests."
        ),
    ] = "transformer,rnnsearch",
    version: Annotated[
        int | None, typer.Option(help="Version for models given without '@'; default newest.")
    ] = None,
    split: Annotated[str, typer.Option(help="train, valid or test.")] = "test",
    beam_size: Annotated[int, typer.Option(help="Beam size; 1 is greedy.")] = 4,
    max_length: Annotated[int, typer.Option(help="Most generated tokens per sentence.")] = 256,
    limit: Annotated[int, typer.Option(help="First N pairs only; 0: all.")] = 0,
    samples: Annotated[int, typer.Option(help="Sample sentences with alignment plots.")] = 3,
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 1000,
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("docs/comparison"),
    root: Annotated[Path, typer.Option("--root", help="Model store directory.")] = Path(
        "model_store"
    ),
    data_dir: Annotated[Path | None, typer.Option(help="Corpus directory.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    threads: Annotated[int, typer.Option(help="Torch threads; 0: torch default.")] = 0,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bars; default: on a terminal."),
    ] = None,
) -> None:
    """Compare stored models on a split: BLEU/chrF with bootstrap CIs and p-values, BLEU by
    length, speed and attention alignments, written as report.md, report.json and PNGs."""
    import torch

    from service.compare.report import compare_models, parse_model_spec
    from service.decoding.search import DecodeOptions
    from service.store import ModelStore, ModelStoreError
    from service.text.corpus import SPLITS, load_split
    from service.training.trainer import resolve_device

    specs = [parse_model_spec(m, version) for m in models.split(",") if m.strip()]
    if not specs:
        raise typer.BadParameter("give at least one model", param_hint="--models")
    if split not in SPLITS:
        raise typer.BadParameter(f"expected one of {', '.join(SPLITS)}", param_hint="--split")
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        pairs = load_split(split, data_dir) if data_dir else load_split(split)
    except FileNotFoundError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if limit:
        pairs = pairs[:limit]

    def log(message: str) -> None:
        typer.echo(message, err=True)

    try:
        report = compare_models(
            ModelStore(root),
            specs,
            pairs,
            DecodeOptions(beam_size=beam_size, max_length=max_length),
            out,
            samples,
            split=split,
            device=resolve_device(device),
            n_bootstrap=bootstrap,
            progress=sys.stderr.isatty() if progress is None else progress,
            log=log,
        )
    except ModelStoreError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for m in report.models:
        typer.echo(
            f"{m.label:>12} v{m.version}: BLEU {m.bleu.score:6.2f} [{m.bleu.low:.2f}, "
            f"{m.bleu.high:.2f}]  chrF {m.chrf.score:6.2f} [{m.chrf.low:.2f}, {m.chrf.high:.2f}]"
            f"  {m.speed.sentences_per_s:.2f} sent/s"
        )
    for c in report.comparisons:
        typer.echo(
            f"{c.system} vs {c.baseline}: delta {c.metric} {c.delta:+.2f}, p = {c.p_value:.4f}"
            f"{' (significant)' if c.significant else ''}"
        )
    typer.echo(f"report: {out / 'report.md'}")
