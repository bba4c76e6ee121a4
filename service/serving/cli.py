"""`python -m service serve`: the HTTP API on a local Ray instance, until Ctrl-C."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from service.serving.launch import DEFAULT_CONFIG, METRICS_EXPORT_PORT


def serve_command(
    config: Annotated[
        Path, typer.Option("--config", help="Ray Serve config file (args + deployments).")
    ] = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="Bind address; default from the config.")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default from the config.")] = None,
    num_cpus: Annotated[
        float | None, typer.Option(help="CPUs Ray may schedule; default all cores.")
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            envvar="SERVICE_METRICS_PORT",
            help="Port of Ray's Prometheus metrics export (every replica's metrics); 0: any.",
        ),
    ] = METRICS_EXPORT_PORT,
) -> None:
    """Serve the translation API (models from the store) on 127.0.0.1:8000 by default."""
    import ray
    from ray import serve

    from service.serving.launch import load_config, metrics_url, start
    from service.store import ModelStoreError

    try:
        parsed = load_config(config)
    except (OSError, ValueError) as error:
        typer.echo(f"cannot use config {config}: {error}", err=True)
        raise typer.Exit(code=2) from None

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started in the background, where it is ignored
    try:
        url = start(
            parsed,
            host=host,
            port=port,
            num_cpus=num_cpus,
            metrics_export_port=metrics_port or None,
        )
        typer.echo(f"serving on {url} (docs at {url}/docs); Ctrl-C to stop")
        typer.echo(f"Prometheus metrics at {metrics_url()}")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("shutting down")
    except ModelStoreError as error:
        typer.echo(f"cannot serve: {error}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
