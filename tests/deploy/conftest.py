"""Real Ray nodes for the deployment tests, started with `ray start` and stopped by session.

`ray stop` would stop every Ray process on the machine, other tests' included, so it is never
called here. Each node runs `ray start --block` in a session of its own: SIGTERM to that process
makes Ray shut the node down, and SIGKILL to every process of the session is the fallback (and
is how a test simulates a node dying). Every port is picked free and passed explicitly, so that
nodes of one test, and a Ray instance another test started, never collide; the head keeps its
session files (and its `ray_current_cluster` address file) under a temp dir of its own, so a
later `ray.init()` elsewhere in the session never finds this cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")
SERVE = Path(sys.executable).with_name("serve")
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # the tests move kilobytes; Ray's minimum is 75 MiB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_env() -> dict[str, str]:
    """The environment of this cluster's processes and of the CLIs that talk to it.

    Token authentication is off: the cluster is reached only from this machine, and a local
    `ray.init()` elsewhere in the session (which turns token mode on for its own process and
    children) must not leak a mode into these nodes that the worker nodes would not share.
    """
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        # A busy 2-core machine can take longer than the default 30 s to register a raylet.
        "RAY_raylet_start_wait_time_s": "60",
    }
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class RayNode:
    """One `ray start --block` process (and everything it started) in its own process group."""

    name: str
    process: subprocess.Popen
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """The node dies at once, as a machine that loses power: SIGKILL to every process
        of its session (the raylet and agents share `ray start`'s process group; the worker
        processes, replicas among them, each get a group of their own but stay in the
        session)."""
        _kill_session(self.process.pid)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 15) -> None:
        """Graceful: `ray start --block` shuts its node's processes down on SIGTERM; whatever
        is left after `timeout_s` is killed."""
        if self.alive:
            try:
                os.kill(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        _kill_session(self.process.pid)
        if self.alive:
            self.process.wait(timeout=30)


def _kill_session(sid: int) -> None:
    """SIGKILL every process in session `sid` (one that this module started)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the parenthesised command: state, ppid, pgrp, session, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


class RayCluster:
    """A head node and any number of worker nodes on 127.0.0.1, each with its own resources."""

    def __init__(self, workdir: Path):
        # Short: Ray's socket paths live under it and must stay within 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        self.workdir = workdir
        self.nodes: list[RayNode] = []
        self.gcs_port: int | None = None
        self.dashboard_port: int | None = None

    free_port = staticmethod(free_port)
    env = staticmethod(node_env)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(
        self,
        *,
        num_cpus: int,
        resources: dict[str, float] | None = None,
        dashboard: bool = False,
    ) -> RayNode:
        self.gcs_port = free_port()
        extra = [f"--port={self.gcs_port}", f"--temp-dir={self.temp_dir}", "--head"]
        extra.append(f"--ray-client-server-port={free_port()}")
        if dashboard:
            self.dashboard_port = free_port()
            extra += [
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            extra.append("--include-dashboard=false")
        return self._start("head", extra, num_cpus, resources)

    def add_node(
        self, name: str, *, num_cpus: int, resources: dict[str, float] | None = None
    ) -> RayNode:
        assert self.gcs_port is not None, "start the head first"
        return self._start(name, [f"--address={self.address}"], num_cpus, resources)

    def _start(
        self, name: str, extra: list[str], num_cpus: int, resources: dict[str, float] | None
    ) -> RayNode:
        """Start a node, retrying with fresh ports when it fails to come up.

        On a loaded machine a raylet can abort at start-up: it waits a fixed 15 s for its
        dashboard agent to report its ports, and the agent's imports alone can take longer
        when a few cores are shared by many busy processes. That is Ray starting slowly, not
        what these tests test, so such a start is retried."""
        attempts = 5
        for attempt in range(attempts):
            crashes = self._raylet_crashes()
            node = self._launch(name, extra, num_cpus, resources, attempt)
            try:
                self._wait_started(node, crashes)
            except RuntimeError:
                node.stop(timeout_s=5)
                self.nodes.remove(node)
                if attempt == attempts - 1:
                    raise
                continue
            return node
        raise AssertionError("unreachable")

    def _raylet_crashes(self) -> int:
        """Fatal raylet log lines so far, in every session of this cluster's temp dir."""
        return sum(
            log.read_text(errors="replace").count("Check failed")
            for log in self.temp_dir.glob("session_*/logs/raylet*.out")
        )

    def _launch(
        self,
        name: str,
        extra: list[str],
        num_cpus: int,
        resources: dict[str, float] | None,
        attempt: int,
    ) -> RayNode:
        ports = {
            "node-manager-port": free_port(),
            "object-manager-port": free_port(),
            "dashboard-agent-listen-port": free_port(),
            "dashboard-agent-grpc-port": free_port(),
            "runtime-env-agent-port": free_port(),
            "metrics-export-port": free_port(),
        }
        command = [
            str(RAY),
            "start",
            "--block",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps(resources or {})}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
            *(f"--{flag}={port}" for flag, port in ports.items()),
            *extra,
        ]
        log = self.workdir / f"ray-{name}-{attempt}.log"
        env = node_env()
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        node = RayNode(name, process, log, ports)
        self.nodes.append(node)
        return node

    def _wait_started(self, node: RayNode, crashes_before: int, timeout_s: float = 150) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not node.alive:
                raise RuntimeError(f"ray node {node.name} exited:\n{node.log.read_text()[-4000:]}")
            if "Ray runtime started" in node.log.read_text(errors="replace"):
                return
            if self._raylet_crashes() > crashes_before:  # `ray start` would notice only later
                raise RuntimeError(f"the raylet of ray node {node.name} aborted at start-up")
            time.sleep(0.5)
        raise RuntimeError(f"ray node {node.name} did not start:\n{node.log.read_text()[-4000:]}")

    def shutdown(self) -> None:
        """Workers first, the head last; never `ray stop`."""
        for node in reversed(self.nodes):
            node.stop()
        for logs in self.temp_dir.glob("session_2*/logs"):  # kept for a post-mortem
            target = self.workdir / "ray-logs" / logs.parent.name
            shutil.copytree(logs, target, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_cluster(tmp_path) -> Iterator[RayCluster]:
    """A cluster to build up in the test; everything it started is stopped afterwards."""
    import ray

    if ray.is_initialized():  # a previous test's driver must not linger into this cluster
        ray.shutdown()
    cluster = RayCluster(tmp_path)
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
