"""`python -m service models ...` and `python -m service import-marian`.

Kept beside the store rather than in `service/__main__.py` so that the shared CLI file only
registers these commands; torch and the store load when a command runs, not on `--help`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_ROOT = Path("model_store")

models_app = typer.Typer(no_args_is_help=True, help="Inspect the versioned model store.")

RootOption = Annotated[Path, typer.Option("--root", help="Model store directory.")]


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print manifests as JSON.")] = False,
    root: RootOption = DEFAULT_ROOT,
) -> None:
    """List every version of every stored model; damaged versions are shown, not hidden."""
    from service.store import ModelStore

    entries = ModelStore(root).entries()
    broken = [entry for entry in entries if entry.error is not None]
    if as_json:
        payload = [
            entry.manifest.to_dict()
            if entry.error is None
            else {"id": entry.model_id, "version": entry.version, "error": str(entry.error)}
            for entry in entries
        ]
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        _print_table(root, entries)
    if broken:
        raise typer.Exit(code=1)


def _print_table(root: Path, entries) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {root}")
    table.add_column("id", no_wrap=True)
    for column in ("version", "arch", "parameters", "metrics", "created", "weights sha256"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        if entry.error is not None:
            table.add_row(
                entry.model_id, str(entry.version), "[red]damaged[/red]", str(entry.error)
            )
            continue
        m = entry.manifest
        metrics = ", ".join(
            f"{name}={value:.2f}" if isinstance(value, float) else f"{name}={value}"
            for name, value in _scalar_metrics(m.metrics).items()
        )
        table.add_row(
            m.id,
            str(m.version),
            m.arch,
            f"{m.parameters:,}",
            metrics,
            m.created,
            m.sha256["weights"][:12],
        )
    Console().print(table if entries else f"no models in {root}")


def _scalar_metrics(metrics: dict, prefix: str = "") -> dict:
    """Flatten {"test": {"bleu": 21.3}} to {"test.bleu": 21.3}, keeping numbers only."""
    flat = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_scalar_metrics(value, f"{prefix}{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{name}"] = value
    return flat


def import_marian_command(
    directory: Annotated[
        Path,
        typer.Argument(help="Hugging Face MarianMT directory (config.json, model.safetensors)."),
    ],
    model_id: Annotated[
        str | None,
        typer.Option("--id", help="Store id like es-en/opus; default from tokenizer_config.json."),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Joint SentencePiece model to use instead of the directory's."),
    ] = None,
    root: RootOption = DEFAULT_ROOT,
) -> None:
    """Import a MarianMT checkpoint (safetensors only) as a new version in the store."""
    from service.store import ModelStore, ModelStoreError
    from service.store.marian import import_marian

    try:
        manifest = import_marian(directory, ModelStore(root), model_id, tokenizer_path=tokenizer)
    except ModelStoreError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"imported {manifest.id} version {manifest.version} ({manifest.parameters:,} parameters, "
        f"tokenizer {manifest.tokenizer}) into {root}"
    )
