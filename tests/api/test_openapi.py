"""The OpenAPI document tells the truth: Schemathesis (`schemathesis run --checks all`, as a
new user would run it) against the app, in-process behind a real HTTP server, with fake
backends that answer every schema-valid request. Any failure fails the test.

The checks include: every status a route returns is documented with its schema and content
type, schema-valid requests are accepted (positive data), schema-invalid ones rejected
(negative data), no 5xx, and unsupported methods get 405 with `Allow`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.settings import ApiSettings, GenerationSettings
from service.contracts import (
    GenerationChunk,
    ItemOutcome,
    JobResult,
    ModelStatus,
    ServedModel,
)
from service.decoding.translator import Alignment, Candidate, Translation

MODELS = [
    ServedModel(
        "es-en-transformer", "es-en/transformer", 2, "transformer", "es", "en", 10, default=True
    ),
    ServedModel("es-en-transformer-v1", "es-en/transformer", 1, "transformer", "es", "en", 10),
    ServedModel("es-en-rnnsearch", "es-en/rnnsearch", 1, "rnnsearch", "es", "en", 10),
]
LM = ServedModel("es-en-lm", "es-en/lm", 1, "lm", "es", "en", 10, max_output_tokens=512)


class FakeTranslation:
    """Answers every job: the text reversed, `n_best` candidates, with alignments."""

    async def translate(self, model, job):
        items = []
        for text in job.texts:
            pieces = text.split() or [text]
            source = [*pieces, "</s>"]
            candidates = [
                Candidate(
                    text=text[::-1],
                    score=-1.0 - rank,
                    tokens=len(pieces),
                    finished=True,
                    alignment=Alignment(
                        source, source, [[1 / len(source)] * len(source)] * len(source)
                    ),
                )
                for rank in range(job.options.n_best)
            ]
            items.append(
                ItemOutcome(Translation(candidates, len(source)), 0.0, 0.001, len(job.texts), 1)
            )
        return JobResult(items, model.id, model.version, wall_s=0.002)

    async def status(self):
        return {m.key: ModelStatus(ready=True) for m in MODELS}


class FakeGeneration:
    model = LM
    settings = GenerationSettings()

    async def stream(self, job):
        yield GenerationChunk("", 0, False, None, 3, 0)
        count = min(job.params.max_new_tokens, 3)
        for step in range(1, count + 1):
            last = step == count
            yield GenerationChunk(" word", 1, last, "length" if last else None, 3, step)
            await asyncio.sleep(0)

    async def status(self):
        return ModelStatus(ready=True)


def fake_app():
    backends = Backends(Catalog(MODELS), FakeTranslation(), FakeGeneration())
    return create_app(ApiSettings(), backends)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_app():
    """The app behind uvicorn on a loopback port, in a thread of this process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(10)


def schemathesis_run(
    url: str, workdir: Path, *extra: str, timeout_s: float = 600
) -> subprocess.CompletedProcess:
    """`schemathesis run <url>/openapi.json --checks all`, its cache kept in `workdir`.

    /translate_file is left out: what it accepts depends on the uploaded file's name (.txt,
    .html) and encoding (UTF-8), which OpenAPI cannot state, so schema-valid uploads are
    refused by design (tests/api/test_translate_file.py tests every such input)."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is not installed (pip install -e '.[test]')"
    return subprocess.run(
        [
            binary,
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--exclude-path",
            "/translate_file",
            "--no-color",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=workdir,
    )


def test_schemathesis_finds_nothing_against_the_app(served_app, tmp_path):
    result = schemathesis_run(served_app, tmp_path, "--max-examples", "10", "--seed", "1")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def live_service(tiny_lm_store):
    """The whole service on a local Ray with the tiny models (the language model included),
    its limits small enough that every schema-valid request is answered in seconds."""
    import ray
    from ray import serve

    from service.serving.launch import start

    config = {
        "http_options": {"host": "127.0.0.1", "port": free_port()},
        "applications": [
            {
                "name": "openapi",
                "route_prefix": "/",
                "args": {
                    "store": str(tiny_lm_store),
                    "api": {
                        "max_text_chars": 40,
                        "max_items": 2,
                        "max_beam_size": 2,
                        "max_length_limit": 8,
                        "default_beam_size": 1,
                        "default_max_length": 8,
                    },
                    "generation": {
                        "id": "es-en/lm",
                        "max_prompt_chars": 40,
                        "max_new_tokens_limit": 8,
                        "default_max_new_tokens": 8,
                    },
                },
                "deployments": [
                    {"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}},
                    {"name": "es-en-transformer", "ray_actor_options": {"num_cpus": 0.2}},
                    {"name": "es-en-rnnsearch", "ray_actor_options": {"num_cpus": 0.2}},
                    {"name": "es-en-lm", "ray_actor_options": {"num_cpus": 0.2}},
                ],
            }
        ],
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        yield start(config, host="127.0.0.1")
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_schemathesis_finds_nothing_against_the_live_service(live_service, tmp_path):
    """`schemathesis run <live service>/openapi.json --checks all`: 0 failures."""
    ready = httpx.get(f"{live_service}/readyz", timeout=60)
    assert ready.status_code == 200, ready.text
    result = schemathesis_run(
        live_service, tmp_path, "--max-examples", "10", "--seed", "1", "--request-timeout", "60"
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
