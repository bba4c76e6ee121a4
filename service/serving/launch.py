"""Run the application from a Serve config file on an embedded, local Ray instance.

`serve run deploy/serve_config.yaml` starts Ray with every default (dashboard included, all
cores); this launcher reads the same file but starts Ray lean (no dashboard, an explicit CPU
count) so it fits a small machine. It honours what the file says about the first
application: `args`, `deployments` (Serve's per-deployment overrides), `name`, `route_prefix`,
and the top-level `http_options`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from service.serving.config import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "deploy" / "serve_config.yaml"


def load_config(path: Path | str) -> dict[str, Any]:
    """Parse and validate a Serve config file exactly as `serve run` would."""
    from ray.serve.schema import ServeDeploySchema

    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    ServeDeploySchema.model_validate(config)
    if not config.get("applications"):
        raise ValueError(f"{path}: no applications")
    return config


def deployment_overrides(app_config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        entry["name"]: {k: v for k, v in entry.items() if k != "name"}
        for entry in app_config.get("deployments") or []
    }


def start(
    config: Mapping[str, Any],
    *,
    host: str | None = None,
    port: int | None = None,
    num_cpus: float | None = None,
) -> str:
    """Start Ray (if needed) and Serve, deploy the first application; return its base URL."""
    import ray
    from ray import serve

    from service.serving.app import build_app_with_options

    app_config = config["applications"][0]
    http_options = dict(config.get("http_options") or {})
    http_options["host"] = host or http_options.get("host", "127.0.0.1")
    http_options["port"] = port or http_options.get("port", 8000)

    # Built first: a config naming a model the store lacks fails before Ray starts.
    app = build_app_with_options(app_config.get("args") or {}, deployment_overrides(app_config))
    if not ray.is_initialized():
        ray.init(
            num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
            include_dashboard=False,
            namespace="serve",
        )
    serve.start(http_options=http_options)
    route_prefix = app_config.get("route_prefix", "/")
    serve.run(
        app, name=app_config.get("name", "default"), route_prefix=route_prefix, blocking=False
    )
    return f"http://{http_options['host']}:{http_options['port']}{route_prefix.rstrip('/')}"
