"""What the live service benchmarks share: Ray and Serve on a free loopback port, and the
versions and load average their reports name.

`bench service` and `bench cache` both start a local Ray instance with the machine's cores
(at least 2), no dashboard and no driver logs, and Serve's HTTP proxy on a port nobody holds;
each then deploys its own applications on it.
"""

from __future__ import annotations

import os
import platform
import socket

from service.bench.machine import processor_name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(namespace: str, num_cpus: float | None = None) -> int:
    """Ray (unless already up) and Serve on a free loopback port; returns the port."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=num_cpus or max(2, os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=False,
            namespace=namespace,
        )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


def stop_serve() -> None:
    """Serve's applications and proxy, then Ray, even when Serve's shutdown fails."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def versions() -> dict[str, str]:
    import httpx
    import ray
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "httpx": httpx.__version__,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: the machine is shared, so reports say how much."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_description() -> str:
    return f"{processor_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
