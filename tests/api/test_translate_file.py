"""LibreTranslate's `POST /translate_file` and `GET /download_file/{name}` (service/api/files.py)
with a fake backend: a .txt and an .html file round trip, every bad input and what it gets,
the bounded store, keys, and /frontend/settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.access import Access, RateLimitSettings
from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.files import FileStore, safe_filename
from service.api.keys import KeyCache, KeyStore
from service.api.limits import LocalLimiter
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ServedModel
from service.decoding.translator import Candidate, Translation

PAGE = Path(__file__).parents[1] / "text" / "fixtures" / "libffi-thread-safety.html"
MODELS = [
    ServedModel(
        "es-en-transformer", "es-en/transformer", 1, "transformer", "es", "en", 10, default=True
    ),
    ServedModel("en-es-transformer", "en-es/transformer", 1, "transformer", "en", "es", 10),
]


class Upper:
    """Upper-cases each sentence."""

    catalog = Catalog(MODELS)

    async def translate(self, model, job):
        items = [
            ItemOutcome(Translation([Candidate(t.upper(), -1.0, 1, True)], 2), 0.0, 0.001, 1)
            for t in job.texts
        ]
        return JobResult(items, model.id, model.version, 0.001)

    async def status(self):
        return {}


FORM = {"source": "es", "target": "en"}


def make_client(tmp_path: Path, access: Access | None = None, **settings) -> TestClient:
    backend = Upper()
    app = create_app(
        ApiSettings(file_store_dir=str(tmp_path / "files"), **settings),
        Backends(backend.catalog, backend),
        access=access,
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as client:
        yield client


def assert_lt_error(response, status, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert all(word in body["error"] for word in words), body["error"]


def download(client, response):
    assert response.status_code == 200, response.text
    url = response.json()["translatedFileUrl"]
    assert "/download_file/" in url
    return client.get(url)


def test_a_text_file_round_trip(client):
    text = "Primera línea.\nSegunda línea.\n\nTercer párrafo.\n"
    response = client.post(
        "/translate_file", data=FORM, files={"file": ("notas de viaje.txt", text.encode())}
    )
    got = download(client, response)
    assert got.status_code == 200
    assert got.text == "PRIMERA LÍNEA.\nSEGUNDA LÍNEA.\n\nTERCER PÁRRAFO.\n"
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert got.headers["content-disposition"] == 'attachment; filename="notas_de_viaje.txt"'


def test_an_html_file_round_trip_keeps_the_markup(client):
    source = PAGE.read_text()
    response = client.post(
        "/translate_file",
        data={"source": "en", "target": "es"},
        files={"file": ("Thread-Safety.html", source.encode(), "text/html")},
    )
    got = download(client, response)
    assert got.headers["content-type"] == "text/html; charset=utf-8"
    assert got.headers["content-disposition"] == 'attachment; filename="Thread-Safety.html"'
    assert got.text.startswith("<!DOCTYPE html PUBLIC")
    assert "<p><code>libffi</code> IS NOT COMPLETELY THREAD-SAFE." in got.text


def test_bad_inputs_and_what_each_gets(client):
    post = client.post
    # No file at all (a form without it), and a file field sent as plain text.
    assert_lt_error(post("/translate_file", data=FORM), 400, "missing file")
    assert_lt_error(post("/translate_file", data={**FORM, "file": "x"}), 400, "missing file")
    # Not multipart.
    assert_lt_error(post("/translate_file", json={**FORM, "file": "x"}), 400, "multipart")
    # Missing languages.
    files = {"file": ("a.txt", b"Hola.")}
    assert_lt_error(post("/translate_file", data={"target": "en"}, files=files), 400, "source")
    assert_lt_error(post("/translate_file", data={"source": "es"}, files=files), 400, "target")
    # Empty: no bytes, or only white space.
    assert_lt_error(
        post("/translate_file", data=FORM, files={"file": ("a.txt", b"")}), 400, "empty"
    )
    blank = {"file": ("a.txt", b" \n\t\n")}
    assert_lt_error(post("/translate_file", data=FORM, files=blank), 400, "empty")
    # Wrong extension, or none.
    for name in ("a.pdf", "README"):
        wrong = {"file": (name, b"Hola.")}
        assert_lt_error(post("/translate_file", data=FORM, files=wrong), 400, "not supported")
    # Bytes that are not UTF-8.
    latin1 = {"file": ("a.txt", "Canción".encode("latin-1"))}
    assert_lt_error(post("/translate_file", data=FORM, files=latin1), 400, "not UTF-8")
    # A language no model serves.
    assert_lt_error(
        post("/translate_file", data={"source": "fr", "target": "en"}, files=files), 404
    )


def test_too_big_is_413(tmp_path):
    with make_client(tmp_path, max_file_bytes=100, max_request_chars=40) as client:
        big = {"file": ("a.txt", b"Hola. " * 20)}
        assert_lt_error(client.post("/translate_file", data=FORM, files=big), 413, "100 bytes")
        # Under the byte limit, over the character limit.
        wordy = {"file": ("a.txt", "ñ" * 41)}
        assert_lt_error(client.post("/translate_file", data=FORM, files=wordy), 413, "at most 40")
        # An HTML file is held to its translatable characters, not its markup.
        page = '<p class="a-long-class-name-here">Hola.</p><!-- ' + "x" * 40 + " -->"
        html = {"file": ("a.html", page.encode()[:100])}
        assert client.post("/translate_file", data=FORM, files=html).status_code == 200
    with make_client(tmp_path, max_body_bytes=1024) as client:  # the body limit comes first
        huge = {"file": ("a.txt", b"x" * 2000)}
        assert client.post("/translate_file", data=FORM, files=huge).status_code == 413


def test_unknown_malformed_and_expired_downloads_are_404(client, tmp_path):
    assert_lt_error(client.get("/download_file/" + "0" * 32 + ".a.txt"), 404, "unknown")
    assert_lt_error(client.get("/download_file/..%2F..%2Fetc%2Fpasswd"), 404)
    assert_lt_error(client.get("/download_file/not-an-id.txt"), 404)
    now = [1000.0]
    store = FileStore(tmp_path / "store", ttl_s=10, max_files=2, clock=lambda: now[0])
    first = store.put("a.txt", b"1")
    assert store.get(first) == b"1"
    now[0] += 10
    assert store.get(first) is None  # expired
    names = []
    for i in range(3):
        now[0] += 1
        names.append(store.put(f"{i}.txt", str(i).encode()))
    assert store.get(names[0]) is None  # the oldest went when a third came
    assert [store.get(n) for n in names[1:]] == [b"1", b"2"]
    assert len(list((tmp_path / "store").iterdir())) == 2


def test_safe_filename():
    assert safe_filename("../../etc/passwd.txt", ".txt") == "passwd.txt"
    assert safe_filename("C:\\Users\\x\\página web.HTML", ".html") == "p_gina_web.html"
    assert safe_filename("...txt", ".txt") == "file.txt"


def test_keys_required_means_translate_file_needs_one_and_download_does_not(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    _, key = store.add("carol")
    access = Access(True, RateLimitSettings(), LocalLimiter(), KeyCache(store, ttl_s=0.01))
    files = {"file": ("a.txt", b"Hola.")}
    with make_client(tmp_path, access) as client:
        assert_lt_error(client.post("/translate_file", data=FORM, files=files), 403, "API key")
        bad = {**FORM, "api_key": "nope"}
        assert_lt_error(client.post("/translate_file", data=bad, files=files), 403)
        ok = client.post("/translate_file", data={**FORM, "api_key": key}, files=files)
        assert download(client, ok).text == "HOLA."
        in_query = client.post(f"/translate_file?api_key={key}", data=FORM, files=files)
        assert in_query.status_code == 200


def test_frontend_settings_advertise_the_file_formats(client):
    settings = client.get("/frontend/settings").json()
    assert settings["filesTranslation"] is True
    assert settings["supportedFilesFormat"] == [".txt", ".html", ".htm"]


def test_a_files_characters_count_against_the_character_limit(tmp_path):
    access = Access(False, RateLimitSettings(char_limit=30), LocalLimiter())
    with make_client(tmp_path, access) as client:
        short = {"file": ("a.txt", "Hola, ¿qué tal?".encode())}  # 15 characters
        assert client.post("/translate_file", data=FORM, files=short).status_code == 200
        assert client.post("/translate_file", data=FORM, files=short).status_code == 200
        over = client.post("/translate_file", data=FORM, files=short)
        assert_lt_error(over, 429, "30 characters per minute")
