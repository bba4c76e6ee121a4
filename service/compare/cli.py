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
            "(e.g. 'es-en/transformer@1'); the first is the baseline of the significance "
            "tests. All must translate one way: compare en-es models in a run of their own."
        ),
    ] = "es-en/transformer,es-en/rnnsearch",
    version: Annotated[
        int | None, typer.Option(help="Version for models given without '@'; default newest.")
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="Comma-separated splits, one report over all: bible, general, ui (test: the "
            "same as bible), train, valid."
        ),
    ] = "bible",
    beam_size: Annotated[int, typer.Option(help="Beam size; 1 is greedy.")] = 4,
    max_length: Annotated[int, typer.Option(help="Most generated tokens per sentence.")] = 256,
    limit: Annotated[int, typer.Option(help="First N pairs of each split only; 0: all.")] = 0,
    samples: Annotated[int, typer.Option(help="Sample sentences with alignment plots.")] = 3,
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 1000,
    apertium: Annotated[
        bool | None,
        typer.Option(
            "--apertium/--no-apertium",
            help="Score Apertium on the same lines as one more system; default: when installed.",
        ),
    ] = None,
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
    """Compare stored models, and Apertium, on one or more splits: BLEU/chrF with bootstrap CIs
    and p-values, BLEU by length, speed and attention alignments, written as report.md and
    report.json over all splits, with each split's plots and translations in <out>/<split>/."""
    import torch

    from service.compare.report import compare_splits, parse_model_spec
    from service.decoding.search import DecodeOptions
    from service.models.device import resolve_device
    from service.store import ModelStore, ModelStoreError
    from service.text.corpus import load_split
    from service.training import apertium as peer

    specs = [parse_model_spec(m, version) for m in models.split(",") if m.strip()]
    if not specs:
        raise typer.BadParameter("give at least one model", param_hint="--models")
    names = [name.strip() for name in split.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise typer.BadParameter("give one or more different splits", param_hint="--split")
    if threads > 0:
        torch.set_num_threads(threads)
    splits = {}
    for name in names:
        try:
            pairs = load_split(name, data_dir) if data_dir else load_split(name)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--split") from None
        except FileNotFoundError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        splits[name] = pairs[:limit] if limit else pairs

    def log(message: str) -> None:
        typer.echo(message, err=True)

    store = ModelStore(root)
    try:
        manifest = store.resolve(*specs[0])
        with_apertium = apertium
        if with_apertium is None:
            with_apertium = peer.available(manifest.source_lang, manifest.target_lang)
            if not with_apertium:
                log(f"note: Apertium not compared; {peer.INSTALL_HINT}")
        result = compare_splits(
            store,
            specs,
            splits,
            DecodeOptions(beam_size=beam_size, max_length=max_length),
            out,
            samples,
            device=resolve_device(device),
            n_bootstrap=bootstrap,
            progress=sys.stderr.isatty() if progress is None else progress,
            log=log,
            apertium=with_apertium,
        )
    except (ModelStoreError, peer.ApertiumError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for report in result.reports:
        typer.echo(f"{report.split} ({report.sentences} sentences, {report.direction}):")
        for m in report.models:
            version = "" if m.version is None else f" v{m.version}"
            typer.echo(
                f"  {m.label + version:>16}: BLEU {m.bleu.score:6.2f} [{m.bleu.low:.2f}, "
                f"{m.bleu.high:.2f}]  chrF {m.chrf.score:6.2f} [{m.chrf.low:.2f}, "
                f"{m.chrf.high:.2f}]  empty {m.empty}  {m.speed.sentences_per_s:.2f} sent/s"
            )
        for c in report.comparisons:
            typer.echo(
                f"  {c.system} vs {c.baseline}: delta {c.metric} {c.delta:+.2f}, "
                f"p = {c.p_value:.4f}{' (significant)' if c.significant else ''}"
            )
    typer.echo(f"report: {out / 'report.md'}")
