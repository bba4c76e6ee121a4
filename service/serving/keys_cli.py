"""`python -m service keys add|list|remove`: the API keys of deploy/serve_config.yaml's service.

Without `--db` the database is the one the config's `args.api.keys.db` names (default
`keys.sqlite` beside the model store), resolved as the service resolves it, so a key added
here is the one the replicas see (within `keys.ttl_s`, a few seconds; no restart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.serving.launch import DEFAULT_CONFIG

keys_app = typer.Typer(no_args_is_help=True, help="API keys (args.api.keys in the config).")

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Key database; default: the one the serve config names."),
]
ConfigOption = Annotated[
    Path, typer.Option("--config", help="Serve config whose args.api.keys.db to use.")
]


def _store(db: Path | None, config: Path):
    from service.api.keys import KeyStore
    from service.serving.config import AppArgs
    from service.serving.launch import load_config

    if db is not None:
        return KeyStore(db)
    try:
        args = (load_config(config)["applications"][0].get("args")) or {}
    except (OSError, ValueError) as error:
        typer.echo(f"cannot use config {config}: {error}; pass --db", err=True)
        raise typer.Exit(code=2) from None
    return KeyStore(AppArgs.model_validate(args).keys_db())


@keys_app.command("add")
def add_command(
    db: DbOption = None,
    req_limit: Annotated[
        int | None, typer.Option("--req-limit", min=0, help="Requests per minute.")
    ] = None,
    char_limit: Annotated[
        int | None, typer.Option("--char-limit", min=0, help="Characters per minute.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A name for usage and metrics; default key-<hash>.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Make a key; it is printed once, alone on the last line, and only its hash is kept."""
    import re

    from service.api.keys import NAME_PATTERN

    if name is not None and not re.match(NAME_PATTERN, name):
        typer.echo(f"--name must match {NAME_PATTERN}", err=True)
        raise typer.Exit(code=2)
    store = _store(db, config)
    try:
        record, key = store.add(name, req_limit, char_limit)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    shown = ["-" if limit is None else str(limit) for limit in (req_limit, char_limit)]
    limits = f"{shown[0]} requests/min, {shown[1]} characters/min"
    typer.echo(f"added key {record.name!r} ({limits}) to {store.path}")
    typer.echo(key)


@keys_app.command("list")
def list_command(db: DbOption = None, config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Names, limits, creation time and usage of every key (never the keys)."""
    from service.api.keys import format_records

    store = _store(db, config)
    for line in format_records(store.records()):
        typer.echo(line)


@keys_app.command("remove")
def remove_command(
    key_or_name: Annotated[str, typer.Argument(help="The key's name, or the key itself.")],
    db: DbOption = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Remove a key; replicas refuse it within a few seconds."""
    store = _store(db, config)
    name = store.remove(key_or_name)
    if name is None:
        typer.echo("no such key", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"removed key {name!r}")
