"""The Prometheus and Grafana files in deploy/: valid, and about metrics the service exports.

Every metric a dashboard query names must be one service/metrics.py defines (as Prometheus sees
it: `ray_` prefix, `_bucket`/`_sum`/`_count` for histograms) or one of Ray Serve's own. With
`promtool` (Debian package `prometheus`) the scrape config and every query's PromQL are checked
too. tests/serving/test_prometheus.py checks the names against a live scrape.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.metrics import ALL_METRICS, EXPORT_PREFIX, HISTOGRAM_SUFFIXES, exported_names

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "translation.json"
# Ray Serve's built-in metrics the dashboard uses (present whenever Serve runs).
SERVE_BUILTINS = {"ray_serve_num_http_requests_total"}
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$__interval": "15s",
    "$model": ".*",
    "$application": ".*",
}
METRIC = re.compile(r"\bray_[a-z0-9_]+\b")


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every target."""
    result = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            result.append((panel["title"], expr))
    return result


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_exported_names_follow_rays_rules():
    names = exported_names()
    assert "ray_translation_requests_total" in names
    assert {
        "ray_translation_request_latency_seconds_bucket",
        "ray_translation_request_latency_seconds_sum",
        "ray_translation_request_latency_seconds_count",
    } <= names
    assert len({spec.name for spec in ALL_METRICS}) == len(ALL_METRICS)
    for spec in ALL_METRICS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.kind in ("counter", "histogram", "gauge")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert not set(spec.tag_keys) & {"deployment", "replica", "application"}  # Serve's own
        if spec.kind == "histogram":
            assert list(spec.boundaries) == sorted(set(spec.boundaries)) and spec.boundaries[0] > 0
            assert all(EXPORT_PREFIX + spec.name + s in names for s in HISTOGRAM_SUFFIXES)


def test_dashboard_is_a_grafana_dashboard(dashboard):
    assert dashboard["uid"] == "translation-service" and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    titles = set()
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            assert target["expr"].strip()
    # The panels the issue asks for.
    for wanted in [
        "Requests/s by model and status",
        "End-to-end latency (p50, p95, p99)",
        "Queue wait per text (p50, p95, p99)",
        "Batch size distribution",
        "Tokens/s",
        "Traffic share by variant",
        "p95 latency by variant",
        "Mean rating by variant",
    ]:
        assert wanted in titles
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_every_query_names_metrics_the_service_exports(dashboard):
    known = exported_names() | SERVE_BUILTINS
    used = set()
    for title, expr in queries(dashboard):
        names = set(METRIC.findall(expr))
        assert names, (title, expr)
        assert names <= known, (title, names - known)
        used |= names
        for name in names:
            if name.endswith("_bucket"):
                assert "histogram_quantile" in expr or "le" in expr, (title, expr)
            if name.endswith("_total"):
                assert re.search(rf"(rate|increase)\({name}\b", expr), (title, expr)
    # Each metric the service defines is on the dashboard somewhere.
    shown = {name.removesuffix(suffix) for name in used for suffix in HISTOGRAM_SUFFIXES}
    shown |= used
    for spec in ALL_METRICS:
        assert EXPORT_PREFIX + spec.name in shown, spec.name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_promtool_accepts_config_and_queries(dashboard, tmp_path):
    config = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(DEPLOY / "prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    config_yaml = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert [job["job_name"] for job in config_yaml["scrape_configs"]] == ["translation-service"]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expr}
                    for index, (_, expr) in enumerate(queries(dashboard))
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
