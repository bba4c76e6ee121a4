"""Scale-out and node loss on a real multi-node Ray cluster, all on this machine.

Two Ray nodes (`ray start --head`, then `ray start --address=...`, each with one CPU and a
resource naming it) host the application with two translator replicas; Serve's
`max_replicas_per_node: 1` puts them on different nodes, and both serve requests. A third,
standby node joins (as a spare pod of a KubeRay worker group, or a node an autoscaler adds,
would): it stays idle, since each node may hold one replica. Then node `b` is killed outright
(SIGKILL to every process of its session: raylet, object store, agents and the replica) while
a closed-loop load keeps calling the API. The replica on `a` keeps answering; Serve notices the
lost one and starts its replacement on `c`, the only node with room. The test reports every
error the load saw and how long each phase took, and asserts that the service answered
throughout except for requests on, or routed to, the killed replica (which must fail fast, as
503 `model_unavailable`), and that it is whole again (two replicas on two live nodes, both
serving) within a deadline.

The standby node joins before the kill, not after, because on a busy 2-core machine a node
booting under load can miss the raylet's fixed 15 s wait for its dashboard agent and abort:
Ray starting slowly, not what is tested here (an earlier version of this test let `c` join
after the kill; it then took about 30 s to join, and the replacement followed).

The Ingress is pinned to the head (`resources: {node_a: ...}`), as Serve's controller and
proxy are: this test is about losing a model replica, not the entry point.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]

APP = "translation"
MODEL = "es-en-transformer"
PAYLOAD = {"text": "la casa del rey", "max_length": 8, "beam_size": 1}
RECOVERY_DEADLINE_S = 180


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no HTTP answer
    kind: str  # "ok", the API error type, or the exception's class name


class Load:
    """`workers` closed-loop clients, each sending the next request when the last returns."""

    def __init__(self, url: str, workers: int = 2, timeout_s: float = 60):
        self.url = url
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout_s + 5)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            while not self.stop_event.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/v1/translate", json=PAYLOAD)
                    status = response.status_code
                    kind = "ok" if status == 200 else _error_type(response)
                except httpx.HTTPError as error:
                    status, kind = None, type(error).__name__
                self.outcomes.append(Outcome(started, time.monotonic(), status, kind))
                # A little think time: the load must not starve the nodes this test starts.
                time.sleep(0.05 if status == 200 else 0.2)

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        """The requests sent in [start, end)."""
        return [o for o in list(self.outcomes) if start <= o.started < end]

    def phases(self, failed_at: float, recovered_at: float) -> tuple[list[Outcome], ...]:
        """Split the requests into (done before the failure, the rest, sent after recovery).

        A request in flight when the failure happens belongs to the outage, even though it was
        sent before: it may have been routed to the replica that died.
        """
        outcomes = list(self.outcomes)
        before = [o for o in outcomes if o.ended < failed_at]
        after = [o for o in outcomes if o.started >= recovered_at]
        outage = [o for o in outcomes if o.ended >= failed_at and o.started < recovered_at]
        return before, outage, after


def _error_type(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(collections.Counter(f"{o.status} {o.kind}" for o in outcomes))


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def model_replicas(cluster) -> list[dict]:
    """The translator's replicas as Serve's REST API reports them (state, node_id, ...)."""
    response = httpx.get(f"{cluster.dashboard_url}/api/serve/applications/", timeout=10)
    response.raise_for_status()
    app = response.json()["applications"].get(APP)
    if not app or MODEL not in app["deployments"]:
        return []
    return app["deployments"][MODEL]["replicas"]


def running_by_node(cluster) -> dict[str, str]:
    """node_id -> replica_id of RUNNING replicas."""
    replicas = model_replicas(cluster)
    return {r["node_id"]: r["replica_id"] for r in replicas if r["state"] == "RUNNING"}


def access_log(cluster) -> dict[str, list[str]]:
    """replica_id -> the `translate` calls it completed, from the replicas' own access logs
    (`INFO <date> <time> <app>_<deployment> <replica> <request id> -- CALL translate OK 5.1ms`)."""
    calls: dict[str, list[str]] = {}
    for log in (cluster.temp_dir / "session_latest" / "logs" / "serve").glob(
        f"replica_{APP}_{MODEL}_*.log"
    ):
        replica_id = log.stem.rsplit("_", 1)[-1]
        lines = log.read_text(errors="replace").splitlines()
        calls[replica_id] = [line for line in lines if "CALL translate OK" in line]
    return calls


def requests_served(cluster) -> dict[str, int]:
    return {replica: len(lines) for replica, lines in access_log(cluster).items()}


def last_call_at(cluster, replica_id: str) -> float | None:
    """Wall-clock time of the replica's last completed call."""
    lines = access_log(cluster).get(replica_id)
    if not lines:
        return None
    _, day, clock, *_ = lines[-1].split()
    return datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S,%f").timestamp()


def node_ids_by_resource() -> dict[str, str]:
    import ray

    names = {}
    for node in ray.nodes():
        if node["Alive"]:
            for name in ("node_a", "node_b", "node_c"):
                if name in node["Resources"]:
                    names[name] = node["NodeID"]
    return names


def test_two_nodes_scale_out_and_node_loss(ray_cluster, tiny_model_store, tmp_path: Path):
    import ray
    from ray import serve

    from service.serving.app import build_app_with_options

    timeline: dict[str, float] = {}
    t0 = time.monotonic()

    def mark(event: str) -> None:
        timeline[event] = round(time.monotonic() - t0, 1)

    ray_cluster.start_head(num_cpus=1, resources={"node_a": 1}, dashboard=True)
    node_b = ray_cluster.add_node("b", num_cpus=1, resources={"node_b": 1})
    mark("two nodes up")
    ray.init(address=ray_cluster.address, namespace="serve", log_to_driver=False)
    nodes = wait_for(
        lambda: (ids := node_ids_by_resource()).keys() >= {"node_a", "node_b"} and ids,
        60,
        "both nodes to register",
    )

    port = ray_cluster.free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    args = {
        "store": str(tiny_model_store),
        "models": [{"id": "es-en/transformer"}],
        "default_model": "transformer",
        # No translation cache: every request must reach a replica for the test to see where.
        "api": {"default_beam_size": 1, "default_max_length": 8, "cache_size": 0},
    }
    options = {
        "Ingress": {"ray_actor_options": {"num_cpus": 0.1, "resources": {"node_a": 0.01}}},
        MODEL: {
            "num_replicas": 2,
            "max_replicas_per_node": 1,
            "ray_actor_options": {"num_cpus": 0.2},
            "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.0},
        },
    }
    serve.run(build_app_with_options(args, options), name=APP, route_prefix="/", blocking=False)
    placed = wait_for(
        lambda: len(by_node := running_by_node(ray_cluster)) == 2 and by_node,
        180,
        "two RUNNING translator replicas",
    )
    mark("app running")
    assert set(placed) == {nodes["node_a"], nodes["node_b"]}, (placed, nodes)
    replica_a, replica_b = placed[nodes["node_a"]], placed[nodes["node_b"]]

    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, 60, "/readyz")

    # Scale-out: both replicas, on both nodes, serve traffic.
    with Load(url, workers=3) as load:
        wait_for(
            lambda: (
                min(requests_served(ray_cluster).get(r, 0) for r in (replica_a, replica_b)) >= 5
            ),
            90,
            "both replicas to serve requests",
        )
    steady = summarize(load.outcomes)
    mark("both replicas served")
    assert set(steady) == {"200 ok"}, steady

    # A standby node joins (as a KubeRay worker group with a spare pod, or an autoscaler,
    # would provide): the replicas stay where they are, one per node, so it idles for now.
    # It joins before the failure because a node booting under load on this 2-core machine
    # can miss Ray's agent start-up deadline, which is no part of what is tested here.
    ray_cluster.add_node("c", num_cpus=1, resources={"node_c": 1})
    node_c = wait_for(lambda: node_ids_by_resource().get("node_c"), 60, "node c")
    mark("standby node c joined")
    assert set(running_by_node(ray_cluster)) == {nodes["node_a"], nodes["node_b"]}

    # Node loss. Four clients: enough concurrency that both replicas are busy when b dies.
    with Load(url, workers=4) as load:
        time.sleep(3)
        killed_at, killed_wall = time.monotonic(), time.time()
        node_b.kill()
        mark("node b killed")
        wait_for(
            lambda: nodes["node_b"] not in running_by_node(ray_cluster),
            120,
            "Serve to notice the lost replica",
        )
        mark("lost replica noticed")
        noticed_at = time.monotonic()
        recovered = wait_for(
            lambda: (
                (by_node := running_by_node(ray_cluster)).keys() == {nodes["node_a"], node_c}
                and by_node
            ),
            RECOVERY_DEADLINE_S,
            "a replacement replica on node c",
        )
        mark("replacement running")
        replica_c = recovered[node_c]
        wait_for(
            lambda: requests_served(ray_cluster).get(replica_c, 0) >= 5,
            60,
            "the replacement replica to serve requests",
        )
        mark("replacement served")
        recovered_at = time.monotonic()
        time.sleep(3)

    before_kill, outage, after_recovery = load.phases(killed_at, recovered_at)
    before, after = summarize(before_kill), summarize(after_recovery)
    errors = [o for o in outage if o.status != 200]
    report = {
        "timeline_s": timeline,
        "before_kill": before,
        "kill_to_recovery": summarize(outage),
        "after_recovery": after,
        "errors": len(errors),
        "errors_window_s": (
            [round(errors[0].started - killed_at, 1), round(errors[-1].ended - killed_at, 1)]
            if errors
            else None
        ),
        "answered_on_one_replica": sum(
            1 for o in load.between(noticed_at, recovered_at) if o.status == 200
        ),
        "requests_per_replica": requests_served(ray_cluster),
        "replica_b_last_call_before_kill_s": round(
            killed_wall - (last_call_at(ray_cluster, replica_b) or float("nan")), 2
        ),
    }
    (tmp_path / "failover.json").write_text(json.dumps(report, indent=2))
    print("\ncluster failover:", json.dumps(report, indent=2))

    assert set(before) == {"200 ok"}, report
    assert set(after) == {"200 ok"}, report
    assert report["answered_on_one_replica"] > 0, report
    # What may fail: requests on, or routed to, the killed replica before Ray marked it dead.
    # They must fail fast and say so (503 model_unavailable), never hang.
    for outcome in errors:
        assert (outcome.status, outcome.kind) == (503, "model_unavailable"), report
        assert outcome.ended - outcome.started < 30, report
