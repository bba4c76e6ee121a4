"""The playground's page and files as the app serves them (no browser: that is
tests/playground/test_browser.py): content types, the embedded experiment, and no key needed
for them when keys are required."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from service.api.access import Access, RateLimitSettings
from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.experiments import ExperimentConfig, VariantConfig
from service.api.keys import KeyCache, KeyStore
from service.api.limits import LocalLimiter
from service.api.playground import ASSETS, STATIC_DIR
from service.api.settings import ApiSettings
from service.contracts import ModelStatus, ServedModel

MODELS = [
    ServedModel(
        "es-en-transformer", "es-en/transformer", 3, "transformer", "es", "en", 10, default=True
    ),
    ServedModel("es-en-rnnsearch", "es-en/rnnsearch", 1, "rnnsearch", "es", "en", 10),
]


class Idle:
    """A translation backend the page's own requests never reach."""

    async def translate(self, model, job):
        raise AssertionError("the playground's files need no model")

    async def status(self):
        return {m.key: ModelStatus(ready=True) for m in MODELS}


def client_for(access=None, experiments=()) -> TestClient:
    app = create_app(
        ApiSettings(), Backends(Catalog(MODELS), Idle()), access=access, experiments=experiments
    )
    return TestClient(app)


def embedded_config(page: str) -> dict:
    match = re.search(
        r'<script id="playground-config" type="application/json">(.*?)</script>', page, re.S
    )
    assert match, "the page lacks its config block"
    return json.loads(match.group(1))


def test_page_and_files_with_their_content_types():
    with client_for() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        for name, media_type in ASSETS.items():
            assert f"/static/playground/{name}" in page.text  # the page loads every file
            served = client.get(f"/static/playground/{name}")
            assert served.status_code == 200, name
            assert served.headers["content-type"] == media_type
            assert served.content == (STATIC_DIR / name).read_bytes()
        assert embedded_config(page.text) == {"experiment": None}
        # Nothing from elsewhere: no CDN, no external script, style or font.
        for text in (page.text, client.get("/static/playground/app.css").text):
            assert not re.search(r"(src|href)=\"https?://|url\(https?://|@import", text)
        # Only the listed files: no directory listing, no way out of the folder.
        assert client.get("/static/playground/index.html").status_code == 404
        assert client.get("/static/playground/../playground.py").status_code == 404
        assert "/" not in client.get("/openapi.json").json()["paths"]


def test_the_page_names_the_experiment_splitting_translate():
    experiment = ExperimentConfig(
        name="arch-ab",
        user_header="X-Tester",
        variants=[
            VariantConfig(model="es-en/transformer", weight=0.5),
            VariantConfig(model="rnnsearch", weight=0.5, name="rnn"),
        ],
    )
    with client_for(experiments=[experiment]) as client:
        config = embedded_config(client.get("/").text)
    assert config == {
        "experiment": {
            "name": "arch-ab",
            "header": "X-Tester",
            "variants": [
                {"name": "es-en/transformer", "model": "es-en/transformer", "version": 3},
                {"name": "rnn", "model": "es-en/rnnsearch", "version": 1},
            ],
        }
    }


@pytest.fixture
def keyed(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    _, key = store.add("alice")
    access = Access(True, RateLimitSettings(), LocalLimiter(), KeyCache(store, ttl_s=0.01))
    return client_for(access), key


def test_no_key_needed_for_the_page_and_its_files(keyed):
    client, key = keyed
    with client:
        assert client.get("/").status_code == 200
        for name, media_type in ASSETS.items():
            served = client.get(f"/static/playground/{name}")
            assert served.status_code == 200 and served.headers["content-type"] == media_type
        # What the page then asks for first: the settings (exempt), then the models (keyed).
        assert client.get("/frontend/settings").json()["keyRequired"] is True
        refused = client.get("/v1/models")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "invalid_api_key"
        listed = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert listed.status_code == 200
