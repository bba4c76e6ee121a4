"""The dependency rule of service/serving and service/api, checked on what actually gets
imported: a model replica's module never imports the API layer, the API layer never imports
Ray, and the contracts between them import neither."""

from __future__ import annotations

import json
import subprocess
import sys


def imported_after(*modules: str) -> list[set[str]]:
    """For each module in turn, every module a fresh interpreter has loaded once it is in."""
    code = "import importlib, json, sys\n" + "".join(
        f"importlib.import_module({m!r}); print(json.dumps(sorted(sys.modules)))\n" for m in modules
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return [set(json.loads(line)) for line in result.stdout.splitlines()[-len(modules) :]]


def within(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


def test_model_replicas_import_no_api_layer():
    [replicas] = imported_after("service.serving.generation", "service.serving.translation")[1:]
    # Ray Serve itself imports FastAPI and Starlette; what matters is our API layer.
    assert within(replicas, "service.api") == set()


def test_the_api_layer_imports_no_ray_and_the_contracts_neither():
    contracts, api = imported_after("service.contracts", "service.api.app")
    assert (
        within(contracts, "ray", "fastapi", "starlette", "service.api", "service.serving") == set()
    )
    assert within(api, "ray", "service.serving") == set()
