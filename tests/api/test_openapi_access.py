"""The OpenAPI document stays truthful with keys required and a rate limit set: Schemathesis
`--checks all` (ignored_auth included: a request without the key must be refused) against the
app with fake backends, the key given to it per security scheme in schemathesis.toml."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from test_openapi import MODELS, FakeGeneration, FakeTranslation, free_port, schemathesis_run

from service.api.access import Access, RateLimitSettings
from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.keys import KeyCache, KeyStore
from service.api.limits import LocalLimiter
from service.api.settings import ApiSettings


@pytest.fixture(scope="module")
def keyed_app(tmp_path_factory):
    import uvicorn

    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.sqlite")
    _, key = store.add("schemathesis")
    access = Access(
        keys_required=True,
        # High enough never to refuse the run, so 429 is documented but not provoked.
        rate_limit=RateLimitSettings(req_limit=1_000_000),
        limiter=LocalLimiter(),
        keys=KeyCache(store),
    )
    backends = Backends(Catalog(MODELS), FakeTranslation(), FakeGeneration())
    app = create_app(ApiSettings(), backends, access=access)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
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
    yield url, key
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow
def test_schemathesis_finds_nothing_with_keys_and_limits(keyed_app, tmp_path):
    url, key = keyed_app
    spec = httpx.get(f"{url}/openapi.json").json()
    translate = spec["paths"]["/v1/translate"]["post"]
    assert {"401", "429"} <= set(translate["responses"]) and translate["security"]
    assert "403" in spec["paths"]["/translate"]["post"]["responses"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    (tmp_path / "schemathesis.toml").write_text(
        f'[auth.openapi.ApiKeyQuery]\napi_key = "{key}"\n\n'
        f'[auth.openapi.Bearer]\nbearer = "{key}"\n'
    )
    result = schemathesis_run(url, tmp_path, "--max-examples", "10", "--seed", "1")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
