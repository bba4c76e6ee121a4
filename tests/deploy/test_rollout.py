"""Zero-downtime rollout and rollback of a model version, under Locust load, the documented way.

A Ray head (with its dashboard, which `serve deploy` talks to) runs the application from a
config derived from deploy/serve_config.yaml (test-sized: the tiny transformer only). Locust
sends translations the whole time. Then, exactly as README.md's "Deployment" section says:

1. `serve deploy` the config with `version: 2` of the transformer, watch `serve status`;
2. `serve deploy` the config with `version: 1` again: the rollback.

Asserted: Locust saw no failed request (by its own count and by the per-answer log); answers
come from version 1, then from version 2 once the rollout is done, then from version 1 once
the rollback is done. Reported: how long each rollout took, the slowest request during each,
how long both versions answered side by side, and the order in which Serve replaced the
replicas. The config's `max_surge_percent: 100` is what makes this work with one replica per
deployment: each new replica starts before the old one stops. Without it (Serve's default, 0)
Serve stops the old replica first; requests then wait for the new one, and when that takes
longer than the old Ingress's 20 s graceful shutdown (it does on a busy 2-core machine) the
requests it still holds fail with 500 (README.md, "Deployment", has the numbers).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
LOCUST = Path(sys.executable).with_name("locust")
SERVE = Path(sys.executable).with_name("serve")
APP = "translation"
MODEL = "es-en-transformer"
DEPLOY_DEADLINE_S = 240


def two_version_store(tiny_model_store: Path, root: Path) -> Path:
    """A copy of the tiny store with a version 2 of `es-en/transformer` (other weights)."""
    import torch

    from service.models import build_model, make_config
    from service.store import ModelStore
    from service.text.tokenizer import Tokenizer

    shutil.copytree(tiny_model_store, root)
    store = ModelStore(root)
    v1 = store.resolve("es-en/transformer", 1)
    spm = store.directory(v1) / "spm.model"
    torch.manual_seed(2)
    config = make_config("transformer", "tiny", Tokenizer.load(spm).vocab_size)
    model = build_model("transformer", config).eval()
    metrics = {"test": {"bleu": 0.0, "chrf": 0.0, "note": "untrained test model, v2"}}
    store.save(model, spm, model_id="es-en/transformer", metrics=metrics)
    assert ModelStore(root).resolve("es-en/transformer").version == 2
    return root


def write_config(path: Path, store: Path, port: int, version: int) -> Path:
    """deploy/serve_config.yaml, test-sized, serving `version` of the transformer alone."""
    from service.serving.launch import DEFAULT_CONFIG, load_config

    config = copy.deepcopy(load_config(DEFAULT_CONFIG))
    config["http_options"].update(host="127.0.0.1", port=port)
    [app] = config["applications"]
    app["args"].update(
        store=str(store),
        models=[{"id": "es-en/transformer", "version": version}],
        default_model="transformer",
        generation=None,
        experiments=[],
    )
    app["args"]["api"].update(default_beam_size=1, default_max_length=8)
    app["deployments"] = [d for d in app["deployments"] if d["name"] in {"Ingress", MODEL}]
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.2
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def serve_cli(cluster, *args: str) -> str:
    result = subprocess.run(
        [str(SERVE), *args, "--address", cluster.dashboard_url],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"serve {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def app_details(cluster) -> dict | None:
    response = httpx.get(f"{cluster.dashboard_url}/api/serve/applications/", timeout=10)
    response.raise_for_status()
    return response.json()["applications"].get(APP)


class ReplicaWatch:
    """Serve's view of the replicas, polled: when each was first seen in which state."""

    def __init__(self, cluster):
        self.cluster = cluster
        # (deployment, replica id) -> state -> first seen (GONE: no longer listed)
        self.seen: dict[tuple[str, str], dict[str, float]] = {}

    def poll(self) -> dict | None:
        app = app_details(self.cluster)
        now = time.time()
        present = set()
        for name, deployment in (app or {}).get("deployments", {}).items():
            for replica in deployment["replicas"]:
                key = (name, replica["replica_id"])
                present.add(key)
                self.seen.setdefault(key, {}).setdefault(replica["state"], now)
        for key, states in self.seen.items():
            if key not in present:
                states.setdefault("GONE", now)
        return app

    def running(self, deployment: str) -> set[str]:
        return {
            replica
            for (name, replica), states in self.seen.items()
            if name == deployment and "RUNNING" in states and "GONE" not in states
        }


def read_log(path: Path) -> list[tuple[float, float, int, str]]:
    rows = []
    for line in path.read_text().splitlines():
        done, taken, status, version = line.split()
        rows.append((float(done), float(taken), int(status), version))
    return rows


CONTROLLER_EVENT = re.compile(
    r"^\w+ (?P<time>\S+ \S+) controller \d+ -- (?:(?P<action>Starting|Stopping) )?"
    r"Replica\(id='(?P<replica>\w+)', deployment='(?P<deployment>[^']+)', app='(?P<app>[^']+)'\)"
    r"(?P<started> started successfully)?"
)


def controller_events(cluster) -> dict[tuple[str, str], dict[str, float]]:
    """(deployment, replica id) -> {"start", "ready", "stop"} -> time, from the Serve
    controller's own log: the authoritative order of what it did."""
    events: dict[tuple[str, str], dict[str, float]] = {}
    for log in (cluster.temp_dir / "session_latest" / "logs" / "serve").glob("controller_*.log"):
        for line in log.read_text(errors="replace").splitlines():
            match = CONTROLLER_EVENT.match(line)
            if not match or match["app"] != APP:
                continue
            when = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            kind = (
                "ready"
                if match["started"]
                else {"Starting": "start", "Stopping": "stop"}.get(match["action"] or "")
            )
            if kind:
                events.setdefault((match["deployment"], match["replica"]), {}).setdefault(
                    kind, when
                )
    return events


def handover_s(cluster, deployment: str, old: set[str], new: set[str]) -> float:
    """When the controller began stopping the old replica minus when the new one was ready:
    >= 0, the new replica served before the old one stopped; < 0, a gap without a replica."""
    events = controller_events(cluster)
    stopped = min(events[(deployment, replica)]["stop"] for replica in old)
    ready = min(events[(deployment, replica)]["ready"] for replica in new)
    return round(stopped - ready, 2)


def roll(cluster, watch: ReplicaWatch, config: Path, log: Path, version: int) -> dict:
    """`serve deploy` `config` and wait until it is done and answering with `version`."""
    deployments = ("Ingress", MODEL)
    old = {name: watch.running(name) for name in deployments}
    started = time.time()
    serve_cli(cluster, "deploy", str(config))
    deadline = time.monotonic() + DEPLOY_DEADLINE_S
    done = None
    while time.monotonic() < deadline:
        app = watch.poll()
        replaced = all(
            watch.running(name) and not (watch.running(name) & old[name]) for name in deployments
        )
        if done is None and app and app["status"] == "RUNNING" and replaced:
            done = time.time()
        if done is not None:
            recent = [v for t, _, _, v in read_log(log) if t > done + 1.0]
            if len(recent) >= 20 and set(recent) == {str(version)}:
                break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the rollout to version {version} did not finish")
    status = yaml.safe_load(serve_cli(cluster, "status"))
    assert status["applications"][APP]["status"] == "RUNNING", status

    rows = [r for r in read_log(log) if r[0] >= started]
    fresh = [t for t, _, _, v in rows if v == str(version)]
    stale = [t for t, _, _, v in rows if v != str(version)]
    return {
        "version": version,
        "deploy_to_done_s": round(done - started, 1),
        "requests": len(rows),
        "slowest_request_s": max((taken for _, taken, _, _ in rows), default=None),
        # How long answers from both versions interleaved (0: a clean switch).
        "both_versions_answering_s": round(max(0.0, max(stale) - min(fresh)), 1)
        if stale and fresh
        else 0.0,
        # Old replica told to stop minus new replica ready, per deployment (>= 0: overlap).
        "handover_s": {
            name: handover_s(cluster, name, old[name], watch.running(name)) for name in deployments
        },
        "started_at": started,
        "done_at": done,
    }


def test_rollout_and_rollback_under_locust_lose_no_request(
    ray_cluster, tiny_model_store, tmp_path: Path
):
    store = two_version_store(tiny_model_store, tmp_path / "model_store")
    ray_cluster.start_head(num_cpus=2, dashboard=True)
    port = ray_cluster.free_port()
    v1 = write_config(tmp_path / "serve_v1.yaml", store, port, version=1)
    v2 = write_config(tmp_path / "serve_v2.yaml", store, port, version=2)
    url = f"http://127.0.0.1:{port}"

    watch = ReplicaWatch(ray_cluster)
    serve_cli(ray_cluster, "deploy", str(v1))
    deadline = time.monotonic() + DEPLOY_DEADLINE_S
    while not ((app := watch.poll()) and app["status"] == "RUNNING"):
        assert time.monotonic() < deadline, "version 1 did not deploy"
        time.sleep(1)
    first = httpx.post(f"{url}/v1/translate", json={"text": "la casa"}, timeout=60)
    assert first.status_code == 200 and first.json()["version"] == 1, first.text

    log = tmp_path / "answers.log"
    log.touch()
    stats = tmp_path / "locust.json"
    locust = subprocess.Popen(
        [
            str(LOCUST),
            "-f",
            str(HERE / "rollout_locustfile.py"),
            "--headless",
            "--users=3",
            "--spawn-rate=3",
            "--run-time=9m",
            f"--host={url}",
            f"--json-file={stats.with_suffix('')}",  # Locust adds the .json
            "--only-summary",
            "--loglevel=WARNING",
        ],
        env={**ray_cluster.env(), "ROLLOUT_LOG": str(log)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(read_log(log)) < 30:
            assert locust.poll() is None, locust.stdout.read()
            assert time.monotonic() < deadline, "Locust did not get going"
            time.sleep(0.5)

        rollout = roll(ray_cluster, watch, v2, log, version=2)
        time.sleep(3)
        rollback = roll(ray_cluster, watch, v1, log, version=1)
        time.sleep(3)
    finally:
        if locust.poll() is None:
            locust.send_signal(signal.SIGTERM)
        output, _ = locust.communicate(timeout=60)

    rows = read_log(log)
    locust_stats = json.loads(stats.read_text())
    requests = sum(entry["num_requests"] for entry in locust_stats)
    failures = sum(entry["num_failures"] for entry in locust_stats)
    statuses = {status for _, _, status, _ in rows}
    report = {
        "locust": {"requests": requests, "failures": failures, "exit_code": locust.returncode},
        "answers_logged": len(rows),
        "statuses": sorted(statuses),
        "slowest_request_s": max(taken for _, taken, _, _ in rows),
        "rollout_to_v2": {k: v for k, v in rollout.items() if not k.endswith("_at")},
        "rollback_to_v1": {k: v for k, v in rollback.items() if not k.endswith("_at")},
    }
    (tmp_path / "rollout.json").write_text(json.dumps(report, indent=2))
    print("\nrollout under load:", json.dumps(report, indent=2))

    assert failures == 0 and locust.returncode == 0, output
    assert requests >= len(rows) - 10 and requests > 100, report
    assert statuses == {200}, report

    def versions(start: float, end: float = float("inf")) -> set[str]:
        return {version for done, _, _, version in rows if start < done < end}

    assert versions(0, rollout["started_at"]) == {"1"}, report
    assert versions(rollout["done_at"] + 1, rollback["started_at"]) == {"2"}, report
    assert versions(rollback["done_at"] + 1) == {"1"}, report
    for phase in (rollout, rollback):  # max_surge_percent: the new replica is up first
        assert min(phase["handover_s"].values()) >= 0, report
