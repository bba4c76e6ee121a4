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
# Where Ray's metrics agent serves every replica's metrics (ours and Ray Serve's) for
# Prometheus; deploy/prometheus/prometheus.yml scrapes it. Ray binds it on the node's address:
# loopback only when the node address is loopback, else all interfaces.
METRICS_EXPORT_PORT = 8080


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
    metrics_export_port: int | None = METRICS_EXPORT_PORT,
) -> str:
    """Start Ray (if needed) and Serve, deploy the first application; return its base URL.

    `metrics_export_port` applies only when this call starts Ray (None: a port Ray picks)."""
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
            # No dashboard, but Ray still runs its per-node agent, which exports the metrics.
            include_dashboard=False,
            namespace="serve",
            _metrics_export_port=metrics_export_port,
        )
    serve.start(http_options=http_options)
    route_prefix = app_config.get("route_prefix", "/")
    serve.run(
        app, name=app_config.get("name", "default"), route_prefix=route_prefix, blocking=False
    )
    return f"http://{http_options['host']}:{http_options['port']}{route_prefix.rstrip('/')}"


def metrics_url() -> str | None:
    """Where this node's Ray metrics agent serves Prometheus metrics, once Ray runs."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None
