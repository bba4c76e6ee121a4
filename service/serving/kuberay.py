"""The Serve config of a KubeRay cluster, derived from deploy/serve_config.yaml.

deploy/serve_config.yaml stays the one source of truth. A Ray cluster on Kubernetes with a GPU
worker group differs from a developer machine in three places, and only these:

- `http_options.host` is 0.0.0.0: the proxies must be reachable from the Kubernetes Service;
- `proxy_location` is `EveryNode`: a proxy on every node that runs replicas, so KubeRay's serve
  Service sends traffic to each pod that serves the application;
- every model deployment asks for a share of a GPU (`ray_actor_options.num_gpus: GPU_SHARE`),
  which puts it on the GPU worker group (and `runtime.device: auto` then picks CUDA); the
  Ingress asks for none. A model whose runtime says `dtype: int8` without `device: cpu`
  is refused here: int8 runs on CPU only, and such a replica would fail on its GPU.

`deploy/kuberay/rayservice.yaml` embeds that config as `spec.serveConfigV2`; the rest of the
file (cluster shape, images, resources) is written by hand. The GPU image serves the same
config (deploy/Dockerfile.gpu writes it at build time).

    python -m service.serving.kuberay            # rewrite serveConfigV2 in rayservice.yaml
    python -m service.serving.kuberay --check    # exit 1 if rayservice.yaml is out of date
    python -m service.serving.kuberay --print    # print the cluster's Serve config
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from service.serving.config import REPO_ROOT, AppArgs

SERVE_CONFIG = REPO_ROOT / "deploy" / "serve_config.yaml"
RAYSERVICE = REPO_ROOT / "deploy" / "kuberay" / "rayservice.yaml"

# The model deployments (three translators and the language model) share one GPU per worker,
# with room for a rollout's surge replica; a deployment scaled to more replicas than fit
# spreads them over more GPU workers.
GPU_SHARE = 0.2
CPU_ONLY_DEPLOYMENTS = frozenset({"Ingress"})

_BLOCK_KEY = re.compile(r"^(?P<indent> *)serveConfigV2: *\|[-+]? *$")


def cluster_serve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` (a parsed serve_config.yaml) as a GPU cluster on Kubernetes runs it."""
    for app in config["applications"]:
        _check_no_int8_on_gpus(app.get("args") or {})
    cluster = copy.deepcopy(dict(config))
    cluster["proxy_location"] = "EveryNode"
    cluster["http_options"] = {**(cluster.get("http_options") or {}), "host": "0.0.0.0"}
    for app in cluster["applications"]:
        for deployment in app.get("deployments") or []:
            options = deployment.setdefault("ray_actor_options", {})
            options["num_gpus"] = 0 if deployment["name"] in CPU_ONLY_DEPLOYMENTS else GPU_SHARE
    return cluster


def _check_no_int8_on_gpus(args: Mapping[str, Any]) -> None:
    """Fail where a model's runtime (its own keys over the app's) would put int8 on a GPU."""
    app = AppArgs.model_validate(args)
    for spec in [*app.models, *([app.generation] if app.generation else [])]:
        runtime = app.runtime_for(spec)
        if runtime.dtype == "int8" and runtime.device != "cpu":
            raise ValueError(
                f"runtime of {spec.id}: dtype int8 runs on CPU only, and the cluster's model "
                f"replicas get a GPU (device {runtime.device}): set its runtime.dtype to auto, "
                "bfloat16 or float16, or its runtime.device to cpu"
            )


def serve_config_text(config: Mapping[str, Any]) -> str:
    header = (
        "# Generated from deploy/serve_config.yaml by `python -m service.serving.kuberay`:\n"
        "# edit that file, then regenerate. Differs only in http_options.host,\n"
        "# proxy_location and the model deployments' num_gpus.\n"
    )
    body = yaml.safe_dump(cluster_serve_config(config), sort_keys=False, width=100)
    return header + body


def render(rayservice: str, config: Mapping[str, Any]) -> str:
    """`rayservice` (the manifest's text) with its `serveConfigV2: |` block regenerated."""
    lines = rayservice.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _BLOCK_KEY.match(line)]
    if len(starts) != 1:
        raise ValueError(f"expected one `serveConfigV2: |` block, found {len(starts)}")
    start = starts[0]
    indent = len(_BLOCK_KEY.match(lines[start])["indent"])
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip(" ")) > indent
    ):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines after the block stay
        end -= 1
    pad = " " * (indent + 2)
    block = "".join(
        pad + line if line.strip() else "\n"
        for line in serve_config_text(config).splitlines(keepends=True)
    )
    return "".join(lines[: start + 1]) + block + "".join(lines[end:])


def load_serve_config(path: Path | str = SERVE_CONFIG) -> dict[str, Any]:
    from service.serving.launch import load_config  # validates as `serve run` would

    return load_config(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.serving.kuberay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--serve-config", type=Path, default=SERVE_CONFIG)
    parser.add_argument("--rayservice", type=Path, default=RAYSERVICE)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if out of date")
    mode.add_argument("--print", action="store_true", help="print the cluster's Serve config")
    options = parser.parse_args(argv)

    config = load_serve_config(options.serve_config)
    if options.print:
        sys.stdout.write(serve_config_text(config))
        return 0
    current = options.rayservice.read_text(encoding="utf-8")
    wanted = render(current, config)
    if options.check:
        if current != wanted:
            print(
                f"{options.rayservice} is out of date with {options.serve_config}; "
                "run `python -m service.serving.kuberay`",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != wanted:
        options.rayservice.write_text(wanted, encoding="utf-8")
        print(f"updated serveConfigV2 in {options.rayservice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
