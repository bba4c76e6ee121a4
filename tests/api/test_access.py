"""API keys, rate limits and usage at the HTTP seam (service/api/access.py, keys.py,
limits.py): the window's arithmetic on a fake clock, the key store, and the app with fake
backends, one process (`LocalLimiter`). The limit shared by Ray replicas is
tests/serving/test_ratelimit.py."""

from __future__ import annotations

import sqlite3
import time

import pytest
from fastapi.testclient import TestClient

from service.api.access import Access, RateLimitSettings, characters_of
from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.keys import KeyCache, KeyStore, key_hash
from service.api.limits import Limits, LocalLimiter, MovingWindow
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ModelStatus, ServedModel
from service.decoding.translator import Candidate, Translation

MODEL = ServedModel(
    "es-en-transformer", "es-en/transformer", 1, "transformer", "es", "en", 10, default=True
)


class UpperCase:
    async def translate(self, model, job):
        items = [
            ItemOutcome(
                Translation([Candidate(t.upper(), -1.0, len(t.split()) or 1, True)], 2),
                0.0,
                0.001,
                len(job.texts),
                1,
            )
            for t in job.texts
        ]
        return JobResult(items, model.id, model.version, wall_s=0.001)

    async def status(self):
        return {MODEL.key: ModelStatus(ready=True)}


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counted:
    def __init__(self):
        self.granted: list[tuple[str, int]] = []
        self.refused: list[tuple[str, str]] = []

    def usage(self, key, characters):
        self.granted.append((key, characters))

    def rate_limited(self, key, limit):
        self.refused.append((key, limit))


# --- the window's arithmetic -------------------------------------------------------------


def test_requests_per_window_and_retry_after():
    window = MovingWindow(60)
    limits = Limits(requests=3)
    for t in (0, 10, 20):
        assert window.acquire("a", 0, limits, t).granted
    refused = window.acquire("a", 0, limits, 30)
    assert not refused.granted and refused.limit == "requests"
    assert refused.retry_after_s == pytest.approx(30)  # the t=0 request leaves at t=60
    assert not window.acquire("a", 0, limits, 59.9).granted  # refusals are not logged
    assert window.acquire("a", 0, limits, 60).granted
    assert not window.acquire("a", 0, limits, 60.5).granted
    assert window.acquire("b", 0, limits, 60.5).granted  # callers are apart
    assert window.usage("a", 60.5) == (3, 0)
    assert window.usage("a", 200) == (0, 0)


def test_moving_not_fixed_window():
    """At most N in every 60 s, across any boundary (a fixed window would let 2N through)."""
    window = MovingWindow(60)
    limits = Limits(requests=10)
    granted = [t / 10 for t in range(0, 3000) if window.acquire("a", 0, limits, t / 10).granted]
    for start in granted:
        assert sum(start <= g < start + 60 for g in granted) <= 10
    assert len(granted) == 10 * 5  # 300 s of asking: the full share, every minute


def test_characters_per_window():
    window = MovingWindow(60)
    limits = Limits(characters=100)
    assert window.acquire("a", 60, limits, 0).granted
    assert window.acquire("a", 30, limits, 5).granted
    refused = window.acquire("a", 20, limits, 10)
    assert refused.limit == "characters" and refused.retry_after_s == pytest.approx(50)
    assert window.acquire("a", 10, limits, 10).granted  # a smaller one still fits
    too_big = window.acquire("a", 101, limits, 10)
    assert too_big.never and not too_big.granted
    assert window.acquire("a", 20, limits, 60).granted


def test_zero_limit_refuses_everything():
    decision = MovingWindow().acquire("a", 0, Limits(requests=0), 0)
    assert not decision.granted and decision.never


def test_characters_of_counts_texts_and_prompts():
    assert characters_of({"q": ["ab", "cde"], "target": "en"}) == 5
    assert characters_of({"text": "hola", "prompt": "xy", "model": "transformer"}) == 6
    assert characters_of(None) == 0 and characters_of({"q": 3}) == 0


# --- the key store ------------------------------------------------------------------------


def test_key_store_keeps_only_hashes(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    record, key = store.add("alice", req_limit=5)
    assert record.key_sha256 == key_hash(key)
    raw = sqlite3.connect(tmp_path / "keys.sqlite").execute("SELECT * FROM api_keys").fetchall()
    assert key not in repr(raw) and record.key_sha256 in repr(raw)
    with pytest.raises(ValueError, match="exists"):
        store.add("alice")
    other, other_key = store.add(char_limit=50)
    assert other.name.startswith("key-")
    assert store.remove(other_key) == other.name  # by key
    assert store.remove("alice") == "alice"  # by name
    assert store.remove("alice") is None and store.records() == []


def test_key_cache_sees_changes_after_its_ttl_and_flushes_usage(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    clock = FakeClock()
    cache = KeyCache(store, ttl_s=2, clock=clock)
    cache.refresh()
    _, key = store.add("bob")
    assert cache.lookup(key) is None and not cache.stale()
    clock.now += 2
    assert cache.stale()
    cache.refresh()
    assert cache.lookup(key).name == "bob"
    cache.count("bob", requests=2, characters=7)
    assert cache.totals("bob").requests == 2
    cache.refresh()
    assert store.records()[0].requests == 2 and store.records()[0].characters == 7
    assert cache.totals("bob").characters == 7  # flushed: not counted twice


# --- the app ------------------------------------------------------------------------------


def make_client(access: Access | None):
    app = create_app(ApiSettings(), Backends(Catalog([MODEL]), UpperCase()), access=access)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def keyed(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    _, limited = store.add("alice", req_limit=3, char_limit=20)
    _, free = store.add("bob")
    recorder = Counted()
    access = Access(
        keys_required=True,
        rate_limit=RateLimitSettings(),
        limiter=LocalLimiter(),
        keys=KeyCache(store, ttl_s=0.01),
        recorder=recorder,
    )
    return make_client(access), limited, free, store, recorder


def test_keys_off_by_default_change_nothing():
    with make_client(None) as client:
        assert client.post("/v1/translate", json={"text": "hola"}).status_code == 200
        assert client.post("/translate", json={"q": "hola", "target": "en"}).status_code == 200
        usage = client.get("/v1/usage").json()
        assert usage["request_limit"] is None and usage["request_count"] is None
        spec = client.get("/openapi.json").json()
        assert "429" not in spec["paths"]["/v1/translate"]["post"]["responses"]
        assert "securitySchemes" not in spec["components"]


def test_frontend_settings_tell_libretranslate_clients_a_key_is_required(keyed):
    client, *_ = keyed
    with client:
        settings = client.get("/frontend/settings")  # exempt: a client asks before it has a key
        assert settings.status_code == 200
        assert settings.json()["keyRequired"] is True and settings.json()["apiKeys"] is True
    with make_client(None) as open_client:
        assert open_client.get("/frontend/settings").json()["keyRequired"] is False


def test_missing_or_invalid_key(keyed):
    client, *_ = keyed
    with client:
        lt = client.post("/translate", json={"q": "hola", "target": "en"})
        assert lt.status_code == 403 and lt.json() == {"error": "Invalid API key"}
        bad = client.post("/translate", data={"q": "hola", "target": "en", "api_key": "nope"})
        assert bad.status_code == 403 and bad.json() == {"error": "Invalid API key"}
        v1 = client.post("/v1/translate", json={"text": "hola"})
        assert v1.status_code == 401 and v1.json()["error"]["type"] == "invalid_api_key"
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer sk-nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"
        for path in ("/healthz", "/readyz", "/languages", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path


def test_key_in_every_place(keyed):
    client, _, free, *_ = keyed
    with client:
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {free}"}).is_success
        assert client.get("/v1/models", params={"api_key": free}).is_success
        body = client.post("/v1/translate", json={"text": "hola", "api_key": free})
        assert body.status_code == 200 and body.json()["translations"][0]["text"] == "HOLA"
        form = {"q": "hola", "target": "en", "api_key": free}
        assert client.post("/translate", data=form).json()["translatedText"] == "HOLA"
        assert client.post("/translate", json=form).json()["translatedText"] == "HOLA"
        # Bearer is OpenAI's way, for /v1/* only.
        lt = client.post(
            "/translate", json={"q": "hola", "target": "en"}, headers={"Authorization": free}
        )
        assert lt.status_code == 403


def test_rate_limits_answer_429_with_retry_after_and_name_the_limit(keyed):
    client, limited, _, store, recorder = keyed
    auth = {"Authorization": f"Bearer {limited}"}
    with client:
        big = client.post("/v1/translate", json={"text": "x" * 21}, headers=auth)
        assert (
            big.status_code == 429 and "20 characters per minute" in big.json()["error"]["message"]
        )
        assert client.post("/v1/translate", json={"text": "hola " * 3}, headers=auth).is_success
        over = client.post("/v1/translate", json={"text": "hola hola"}, headers=auth)
        assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
        assert "20 characters per minute for key 'alice'" in over.json()["error"]["message"]
        assert client.get("/v1/usage", headers=auth).json() == {
            "key": "alice",
            "window_s": 60.0,
            "request_count": 2,
            "request_limit": 3,
            "character_count": 15,
            "character_limit": 20,
            "total_requests": 2,
            "total_characters": 15,
            "total_rate_limited": 2,
        }
        lt = {"q": "a", "target": "en", "api_key": limited}
        assert client.post("/translate", json=lt).status_code == 200  # the third
        lt = client.post("/translate", json=lt)
        assert lt.status_code == 429 and "3 requests per minute" in lt.json()["error"]
    assert recorder.refused == [
        ("alice", "characters"),
        ("alice", "characters"),
        ("alice", "requests"),
    ]
    assert ("alice", 15) in recorder.granted and all(key != limited for key, _ in recorder.granted)


def test_global_limit_by_client_address_and_x_forwarded_for():
    access = Access(
        keys_required=False,
        rate_limit=RateLimitSettings(req_limit=2, trust_x_forwarded_for=True),
        limiter=LocalLimiter(),
    )
    with make_client(access) as client:
        for address in ("10.0.0.1", "10.0.0.2"):
            headers = {"X-Forwarded-For": f"{address}, 192.168.0.1"}
            assert client.get("/v1/models", headers=headers).is_success
            assert client.get("/v1/usage", headers=headers).json()["request_count"] == 2
            refused = client.get("/v1/models", headers=headers)
            assert refused.status_code == 429 and "this client address" in refused.text
        spec = client.get("/openapi.json").json()
        assert "429" in spec["paths"]["/v1/translate"]["post"]["responses"]
        assert "429" not in spec["paths"]["/healthz"]["get"]["responses"]


def test_usage_reaches_the_database_without_further_requests(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    _, key = store.add("carol")
    access = Access(True, RateLimitSettings(), LocalLimiter(), KeyCache(store, ttl_s=0.2))
    with make_client(access) as client:
        assert client.post(
            "/v1/translate", json={"text": "hola"}, params={"api_key": key}
        ).is_success
        deadline = time.monotonic() + 5
        while store.records()[0].requests == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    [record] = store.records()
    assert (record.requests, record.characters) == (1, 4)
