"""`python -m service data prepare | tokenizer`: regenerate the shipped corpus and vocabulary.

Registered by `service/__main__.py`; sentencepiece loads only when `data tokenizer` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_DATA_DIR = Path("model_store/data/es-en")

data_app = typer.Typer(
    no_args_is_help=True, help="Regenerate the parallel corpus and the tokenizer."
)
console = Console()


def _spinner() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    )


@data_app.command("prepare")
def prepare_command(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the splits and their README.")
    ] = DEFAULT_DATA_DIR,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where fetched Debian packages are kept; default ~/.cache/service-debian."
        ),
    ] = None,
    bible_only: Annotated[
        bool, typer.Option("--bible-only", help="Only the Bible part (no downloads).")
    ] = False,
) -> None:
    """Rebuild the splits from Debian packages: the SWORD Bibles, message catalogs and package
    descriptions (byte-identical output for the same package versions)."""
    from service.text.corpus import prepare_corpus

    with _spinner() as progress:
        task = progress.add_task("starting", total=None)
        try:
            stats = prepare_corpus(
                out,
                on_step=lambda step: progress.update(task, description=step),
                cache=cache,
                general=not bible_only,
            )
        except (RuntimeError, ValueError) as error:
            progress.stop()
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
    table = Table(title=f"es-en pairs in {out}")
    table.add_column("split")
    table.add_column("pairs", justify="right")
    for split, count in stats["counts"].items():
        table.add_row(split, str(count))
    console.print(table)
    console.print_json(json.dumps(stats, ensure_ascii=False))


@data_app.command("tokenizer")
def tokenizer_command(
    vocab_size: Annotated[int, typer.Option(help="Number of pieces.")] = 16000,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Directory holding train.tsv.gz.")
    ] = DEFAULT_DATA_DIR,
    out: Annotated[
        Path | None, typer.Option("--out", help="Model file; default: DATA_DIR/spm.model.")
    ] = None,
) -> None:
    """Train the joint Spanish+English SentencePiece model on both sides of the train split."""
    from service.text.corpus import load_split
    from service.text.tokenizer import Tokenizer, train_tokenizer

    pairs = load_split("train", data_dir)
    texts = [text for pair in pairs for text in (pair.source, pair.target)]
    with _spinner() as progress:
        progress.add_task(f"training {vocab_size} pieces on {len(texts)} sentences", total=None)
        path = train_tokenizer(texts, out or data_dir / "spm.model", vocab_size=vocab_size)
    tokenizer = Tokenizer.load(path)
    example = pairs[0].source
    console.print(f"wrote [bold]{path}[/bold]: {tokenizer.vocab_size} pieces")
    console.print(f"sha256 {tokenizer.sha256}")
    console.print(f"{example!r} -> {tokenizer.pieces(tokenizer.encode(example))}")
