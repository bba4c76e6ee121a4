"""A real Prometheus scrapes the running service and counts what the test sent.

Ray is started the way `python -m service serve` starts it (`launch.start`, which sets the
metrics export port), with two replicas of the model deployment behind one ingress and an
A/A experiment (two variants, one model), so that every kind of series is exercised: ingress
requests, A/B assignments, feedback, and per-replica model metrics. Prometheus (the Debian
package) listens on loopback only and scrapes Ray's export port every two seconds; the test then
asks it, in PromQL, for the totals.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service.metrics import exported_names

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
N_REQUESTS = 24
APP = "prom"
MODEL_DEPLOYMENT = "es-en-transformer"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/translation.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service(tiny_model_store):
    import ray
    from ray import serve

    from service.serving.config import AppArgs
    from service.serving.launch import start

    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    assert not ray.is_initialized(), "another test module left Ray running"
    args = {
        "store": str(tiny_model_store),
        "models": [{"id": "es-en/transformer"}],
        "default_model": "transformer",
        "api": {"default_beam_size": 1, "default_max_length": 8},
        "experiments": [
            {
                "name": "aa",
                "variants": [
                    {"name": "control", "model": "transformer", "weight": 0.5},
                    {"name": "treatment", "model": "transformer", "weight": 0.5},
                ],
            }
        ],
    }
    if "generation" in AppArgs.model_fields:
        args["generation"] = None
    config = {
        "applications": [
            {
                "name": APP,
                "route_prefix": "/",
                "args": args,
                "deployments": [
                    {"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}},
                    {
                        "name": MODEL_DEPLOYMENT,
                        "num_replicas": 2,
                        "ray_actor_options": {"num_cpus": 0.2},
                        "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
                    },
                ],
            }
        ]
    }
    metrics_port = free_port()
    # Workers push their metrics to the agent every second instead of every ten.
    saved = os.environ.get("RAY_metrics_report_interval_ms")
    os.environ["RAY_metrics_report_interval_ms"] = "1000"
    try:
        base = start(config, port=free_port(), num_cpus=2, metrics_export_port=metrics_port)
        yield {"base": base, "metrics_port": metrics_port}
    finally:
        if saved is None:
            os.environ.pop("RAY_metrics_report_interval_ms", None)
        else:
            os.environ["RAY_metrics_report_interval_ms"] = saved
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory):
    work = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    (work / "prometheus.yml").write_text(
        "global:\n"
        "  scrape_interval: 2s\n"
        "  scrape_timeout: 2s\n"
        "  evaluation_interval: 2s\n"
        "scrape_configs:\n"
        "  - job_name: translation-service\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{service['metrics_port']}']\n"
    )
    log = open(work / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"prometheus did not start:\n{(work / 'prometheus.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(prometheus: str, promql: str) -> list[dict]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def exported() -> str:
    """Our series as Ray's agent serves them right now, without Ray's bookkeeping labels."""
    from service.serving.launch import metrics_url

    text = httpx.get(metrics_url(), timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith("ray_translation_")]
    noise = re.compile(r'(Component|NodeAddress|SessionName|Version|WorkerId|otel_\w+)="[^"]*",?')
    return "\n".join(noise.sub("", line) for line in lines if "_bucket" not in line)


def metric_names(prometheus: str, pattern: str) -> set[str]:
    """Names of the series Prometheus has stored (stale or not) matching a regex."""
    response = httpx.get(
        f"{prometheus}/api/v1/label/__name__/values",
        params={"match[]": f'{{__name__=~"{pattern}"}}'},
        timeout=5,
    )
    response.raise_for_status()
    return set(response.json()["data"])


def wait_for(prometheus: str, expected: dict[str, float], timeout_s: float = 90) -> None:
    """Poll until every query equals its expected value; fail with what was last seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {promql: scalar(prometheus, promql) for promql in expected}
        if seen == expected:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus saw {seen}, expected {expected}; Ray exported:\n{exported()}")
        time.sleep(1)


def test_prometheus_counts_every_request_across_replicas(service, prometheus):
    from service.serving.launch import metrics_url

    assert metrics_url().endswith(f":{service['metrics_port']}/metrics")

    def send(index: int) -> httpx.Response:
        with httpx.Client(base_url=service["base"], timeout=60) as client:
            return client.post(
                "/v1/translate",
                json={"text": f"la casa número {index}", "max_length": 8, "beam_size": 1},
                headers={"X-User-ID": f"user-{index}"},
            )

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(N_REQUESTS)))
    assert [r.status_code for r in responses] == [200] * N_REQUESTS, [r.text for r in responses]
    variants = [r.json()["variant"] for r in responses]
    assert set(variants) <= {"control", "treatment"}
    with httpx.Client(base_url=service["base"], timeout=60) as client:
        rated = client.post(
            "/v1/feedback", json={"request_id": responses[0].json()["id"], "rating": 4}
        )
        assert rated.status_code == 200, rated.text
        assert (
            client.post("/v1/feedback", json={"request_id": "nope", "rating": 4}).status_code == 404
        )

    def latest(selector: str) -> str:
        # The newest sample of each series in the last 2 minutes: a scrape that times out on a
        # loaded machine marks every series stale for a moment, and range selectors skip that.
        return f"last_over_time({selector}[2m])"

    app = f'application="{APP}"'
    wait_for(
        prometheus,
        {
            # Everything the test sent, counted once, summed over replicas.
            "sum({})".format(
                latest(
                    f'ray_translation_requests_total{{{app},route="/v1/translate",status="200"}}'
                )
            ): N_REQUESTS,
            # Every text is the sentence "la casa número" (the number never reaches the model),
            # so the ingress's cache answers most: each one is a hit or a miss, and the model
            # replicas decoded exactly the misses.
            "sum({}) + sum({})".format(
                latest(f"ray_translation_cache_hits_total{{{app}}}"),
                latest(f"ray_translation_cache_misses_total{{{app}}}"),
            ): N_REQUESTS,
            "sum({}) - sum({})".format(
                latest(f'ray_translation_texts_total{{{app},deployment="{MODEL_DEPLOYMENT}"}}'),
                latest(f"ray_translation_cache_misses_total{{{app}}}"),
            ): 0,
            "sum({})".format(
                latest(
                    f'ray_translation_request_latency_seconds_count{{{app},route="/v1/translate"}}'
                )
            ): N_REQUESTS,
            "sum({})".format(
                latest(f'ray_translation_ab_assignments_total{{{app},experiment="aa"}}')
            ): N_REQUESTS,
            "sum({})".format(
                latest(f'ray_translation_feedback_total{{{app},experiment="aa",rating="4"}}')
            ): 1,
            "sum({})".format(
                latest(f'ray_translation_requests_total{{{app},route="/v1/feedback"}}')
            ): 2,
            # Both model replicas served, and each says what it serves.
            "count(count by (replica) ({}))".format(
                latest(f"ray_translation_texts_total{{{app}}}")
            ): 2,
            "count({})".format(
                latest(f'ray_translation_model_info{{{app},model="es-en/transformer",version="1"}}')
            ): 2,
        },
    )
    per_variant = {
        r["metric"]["variant"]: float(r["value"][1])
        for r in query(
            prometheus,
            "sum by (variant) ({})".format(
                latest(f'ray_translation_requests_total{{{app},route="/v1/translate"}}')
            ),
        )
    }
    assert per_variant == {v: variants.count(v) for v in set(variants)}

    # Our series carry exactly the names service/metrics.py defines; Ray Serve's own stay.
    names = metric_names(prometheus, "ray_translation_.+")
    assert names <= exported_names(), names - exported_names()
    assert {
        "ray_translation_queue_wait_seconds_bucket",
        "ray_translation_batch_size_bucket",
        "ray_translation_input_tokens_total",
        "ray_translation_output_tokens_total",
        "ray_translation_decode_throughput_tokens_per_second_bucket",
        "ray_translation_feedback_rating_sum",
    } <= names
    # Every series the dashboard plots exists (failures need a failure; generation is off here;
    # per-key usage needs keys or a rate limit on: tests/api/test_access.py counts those).
    dashboard = json.loads(DASHBOARD.read_text())
    plotted = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\bray_[a-z0-9_]+\b", target["expr"])
    }
    expected_live = {
        name
        for name in plotted
        if not name.startswith(("ray_generation_", "ray_api_key_"))
        and name != "ray_translation_failures_total"
    }
    live = metric_names(prometheus, "ray_(translation|serve)_.+")
    assert expected_live <= live, expected_live - live
    assert time.monotonic() - started < 120
