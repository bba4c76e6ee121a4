"""Locust load for tests/deploy/test_rollout.py: translations without pause, every answer logged.

Each answer is appended to $ROLLOUT_LOG as `<unix time done> <seconds taken> <status> <version>`
(version `-` when there is none), so the test can tell which model version answered when, how
long requests took while replicas were replaced, and that none failed. Locust's own statistics
(`--json-file`) count failures independently.
"""

from __future__ import annotations

import os
import time

from locust import HttpUser, constant, task

PAYLOAD = {"text": "la casa del rey", "max_length": 8, "beam_size": 1}
LOG = open(os.environ["ROLLOUT_LOG"], "a", buffering=1, encoding="utf-8")


class Translator(HttpUser):
    wait_time = constant(0.05)

    @task
    def translate(self) -> None:
        started = time.perf_counter()
        with self.client.post(
            "/v1/translate", json=PAYLOAD, catch_response=True, timeout=120
        ) as response:
            version = "-"
            if response.status_code == 200:
                try:
                    version = str(response.json()["version"])
                except (ValueError, KeyError, TypeError):
                    response.failure("200 without a version")
            taken = time.perf_counter() - started
            LOG.write(f"{time.time():.3f} {taken:.3f} {response.status_code} {version}\n")
