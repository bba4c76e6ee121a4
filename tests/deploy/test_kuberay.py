"""deploy/kuberay/rayservice.yaml stays in sync with deploy/serve_config.yaml.

What is compared: the RayService's `serveConfigV2`, parsed, against serve_config.yaml, parsed.
Every application (name, route prefix, import path, all `args`, every deployment's settings)
must be equal, with exactly these differences, each checked on its own:

- `http_options.host` is 0.0.0.0 in the cluster (pods are reached through a Service); the port
  and timeout are the same;
- `proxy_location` is EveryNode in the cluster;
- `ray_actor_options.num_gpus`: the model deployments ask for a GPU share there, the Ingress
  for none.

The committed file must also be byte-for-byte what `python -m service.serving.kuberay`
generates, so the way to change it is to edit serve_config.yaml and regenerate.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from service.serving import kuberay

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def source() -> dict:
    return kuberay.load_serve_config(kuberay.SERVE_CONFIG)


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return yaml.safe_load(kuberay.RAYSERVICE.read_text())


def without_gpus(config: dict) -> dict:
    config = copy.deepcopy(config)
    for app in config["applications"]:
        for deployment in app.get("deployments") or []:
            deployment.get("ray_actor_options", {}).pop("num_gpus", None)
    return config


def test_committed_file_is_generated(source):
    committed = kuberay.RAYSERVICE.read_text()
    assert kuberay.render(committed, source) == committed, (
        "deploy/kuberay/rayservice.yaml is out of date: run `python -m service.serving.kuberay`"
    )
    assert kuberay.main(["--check"]) == 0


def test_serve_config_v2_matches_serve_config(source, rayservice):
    from ray.serve.schema import ServeDeploySchema

    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    cluster = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(cluster)

    assert without_gpus(cluster)["applications"] == without_gpus(source)["applications"]

    assert cluster["proxy_location"] == "EveryNode"
    assert cluster["http_options"] == {**source["http_options"], "host": "0.0.0.0"}
    for app in cluster["applications"]:
        for deployment in app["deployments"]:
            gpus = deployment["ray_actor_options"]["num_gpus"]
            if deployment["name"] == "Ingress":
                assert gpus == 0
            else:
                assert 0 < gpus <= 1, deployment["name"]


def test_cluster_shape(rayservice, source):
    import ray

    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__

    head = cluster["headGroupSpec"]
    params = head["rayStartParams"]
    assert all(isinstance(value, str) for value in params.values()), "KubeRay wants strings"
    assert params["dashboard-host"] == "0.0.0.0"
    assert params["metrics-export-port"] == "8080"
    [container] = head["template"]["spec"]["containers"]
    ports = {port["containerPort"] for port in container["ports"]}
    serve_port = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["http_options"]["port"]
    assert {6379, 8265, 8080, serve_port} <= ports

    [gpu_group] = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert all(isinstance(value, str) for value in gpu_group["rayStartParams"].values())
    [worker] = gpu_group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"] == container["image"]
    assert 1 <= gpu_group["minReplicas"] <= gpu_group["replicas"] <= gpu_group["maxReplicas"]

    # One replica of every deployment fits on one GPU worker, with room for a rollout's
    # surge replica of the largest (max_surge_percent starts it before the old one stops).
    apps = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    shares = [d["ray_actor_options"]["num_gpus"] for app in apps for d in app["deployments"]]
    assert sum(shares) + max(shares) <= worker["resources"]["limits"]["nvidia.com/gpu"]


def test_render_replaces_only_the_block(source):
    manifest = (
        "spec:\n"
        "  serveConfigV2: |\n"
        "    stale: true\n"
        "\n"
        "    more: stale\n"
        "\n"
        "  rayClusterConfig:\n"
        "    rayVersion: x\n"
    )
    rendered = kuberay.render(manifest, source)
    parsed = yaml.safe_load(rendered)
    assert parsed["spec"]["rayClusterConfig"] == {"rayVersion": "x"}
    assert yaml.safe_load(parsed["spec"]["serveConfigV2"]) == kuberay.cluster_serve_config(source)
    assert kuberay.render(rendered, source) == rendered
    with pytest.raises(ValueError):
        kuberay.render("spec: {}\n", source)


def test_podmonitor_scrapes_the_metrics_port(rayservice):
    monitor = yaml.safe_load((REPO / "deploy" / "kuberay" / "podmonitor.yaml").read_text())
    labels = monitor["spec"]["selector"]["matchLabels"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    for template in templates:
        assert labels.items() <= template["metadata"]["labels"].items()
        [container] = template["spec"]["containers"]
        named = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert named[endpoint["port"]] == 8080
