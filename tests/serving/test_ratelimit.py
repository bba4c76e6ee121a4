"""One rate limit for the whole service, however many Ingress replicas: the live service on a
local Ray with two Ingress replicas, API keys required, and a client sending at twice its
key's limit for a minute. Also: keys added and removed while it runs are seen without a
restart. The window's arithmetic itself is tests/api/test_access.py."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from service.api.keys import KeyStore

LIMIT_PER_MIN = 300
SEND_PER_S = 2 * LIMIT_PER_MIN / 60
DURATION_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def keyed_service(tiny_model_store, tmp_path_factory):
    import ray
    from ray import serve

    from service.serving.launch import start

    db = tmp_path_factory.mktemp("keys") / "keys.sqlite"
    store = KeyStore(db)
    _, key = store.add("limited", req_limit=LIMIT_PER_MIN)
    config = {
        "http_options": {"host": "127.0.0.1", "port": free_port()},
        "applications": [
            {
                "name": "ratelimit",
                "route_prefix": "/",
                "args": {
                    "store": str(tiny_model_store),
                    "generation": None,
                    "api": {"keys": {"required": True, "db": str(db), "ttl_s": 1}},
                },
                "deployments": [
                    {
                        "name": "Ingress",
                        "num_replicas": 2,
                        "ray_actor_options": {"num_cpus": 0.1},
                    },
                    {"name": "es-en-transformer", "ray_actor_options": {"num_cpus": 0.2}},
                    {"name": "es-en-rnnsearch", "ray_actor_options": {"num_cpus": 0.2}},
                ],
            }
        ],
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        yield start(config, host="127.0.0.1"), store, key
    finally:
        serve.shutdown()
        ray.shutdown()


async def paced(url: str, key: str, per_s: float, duration_s: float) -> list[tuple[float, int]]:
    """(send time, status) of requests sent at `per_s` for `duration_s`, not waiting for
    answers before sending the next."""
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(at: float) -> tuple[float, int]:
            response = await client.get(f"{url}/v1/models", params={"api_key": key})
            return at, response.status_code

        tasks = []
        start = time.monotonic()
        for i in range(int(per_s * duration_s)):
            delay = start + i / per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(time.monotonic() - start)))
        return await asyncio.gather(*tasks)


@pytest.mark.ray
@pytest.mark.slow
def test_two_ingress_replicas_grant_one_limit(keyed_service):
    from ray import serve

    url, _, key = keyed_service
    status = serve.status().applications["ratelimit"].deployments["Ingress"]
    assert status.replica_states.get("RUNNING") == 2, status
    results = asyncio.run(paced(url, key, SEND_PER_S, DURATION_S))
    statuses = [status for _, status in results]
    assert set(statuses) <= {200, 429}, set(statuses)
    granted = statuses.count(200)
    rate = granted / (DURATION_S / 60)
    print(f"sent {len(statuses)} in {DURATION_S:g} s, granted {granted}: {rate:.1f}/min")
    assert abs(rate - LIMIT_PER_MIN) <= 0.05 * LIMIT_PER_MIN, rate
    # The first grants are a minute old by now: a few more pass, then the limit holds again.
    answers = [
        httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}) for _ in range(8)
    ]
    for answer in answers:
        if answer.status_code == 200:
            usage = answer.json()
            assert usage["key"] == "limited" and usage["request_limit"] == LIMIT_PER_MIN
            assert 0 < usage["request_count"] <= LIMIT_PER_MIN
        else:
            assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
            message = answer.json()["error"]["message"]
            assert f"{LIMIT_PER_MIN} requests per minute for key 'limited'" in message


@pytest.mark.ray
@pytest.mark.slow
def test_keys_added_and_removed_while_serving(keyed_service):
    url, store, _ = keyed_service

    def status_within(key: str, wanted: int, seconds: float = 10) -> int:
        deadline = time.monotonic() + seconds
        while True:
            got = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
            if got.status_code == wanted or time.monotonic() > deadline:
                return got.status_code
            time.sleep(0.2)

    _, key = store.add("late")
    assert status_within(key, 200) == 200
    time.sleep(2.5)  # the other replica's TTL (1 s here) has run out too
    for _ in range(8):  # every replica knows it
        assert status_within(key, 200, 0) == 200
    store.remove("late")
    assert status_within(key, 401) == 401
    time.sleep(2.5)
    for _ in range(8):
        assert status_within(key, 401, 0) == 401
    lt = httpx.post(f"{url}/translate", json={"q": "hola", "target": "en", "api_key": key})
    assert lt.status_code == 403 and lt.json() == {"error": "Invalid API key"}
