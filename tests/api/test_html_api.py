"""`format: html` through the app (fake backend that upper-cases each sentence): /v1/translate
and LibreTranslate's /translate, a fragment and a real page (tests/text/fixtures)."""

from __future__ import annotations

from pathlib import Path

import lxml.html
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.settings import ApiSettings
from service.contracts import ItemOutcome, JobResult, ServedModel
from service.decoding.translator import Candidate, Translation

PAGE = Path(__file__).parents[1] / "text" / "fixtures" / "libffi-thread-safety.html"
ES_EN = ServedModel(
    "es-en-transformer", "es-en/transformer", 1, "transformer", "es", "en", 10, default=True
)
EN_ES = ServedModel("en-es-transformer", "en-es/transformer", 1, "transformer", "en", "es", 10)


class Upper:
    def __init__(self):
        self.catalog = Catalog([ES_EN, EN_ES])
        self.jobs = []

    async def translate(self, model, job):
        self.jobs.append(job)
        items = [
            ItemOutcome(
                Translation([Candidate(t.upper(), -1.0, len(t.split()) or 1, True)], 2),
                0.0,
                0.001,
                len(job.texts),
            )
            for t in job.texts
        ]
        return JobResult(items, model.id, model.version, 0.001)

    async def status(self):
        return {}


@pytest.fixture
def backend():
    return Upper()


@pytest.fixture
def client(backend, tmp_path):
    app = create_app(ApiSettings(file_store_dir=str(tmp_path)), Backends(backend.catalog, backend))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


FRAGMENT = 'Guarde <b>el archivo</b> antes de salir. <a href="/ayuda?a=1&amp;b=2">Ayuda</a>'


def test_v1_translate_html_fragment(client, backend):
    response = client.post("/v1/translate", json={"text": FRAGMENT, "format": "html"})
    assert response.status_code == 200, response.text
    (result,) = response.json()["translations"]
    assert result["text"] == (
        'GUARDE <b>EL ARCHIVO</b> ANTES DE SALIR. <a href="/ayuda?a=1&amp;b=2">AYUDA</a>'
    )
    assert result["sentences"] == 2
    # One job, markup never in it: the words between the tags are translated.
    (job,) = backend.jobs
    assert job.texts == ["Guarde", "el archivo", "antes de salir.", "Ayuda"]


def test_v1_translate_text_is_the_default_and_other_formats_are_refused(client):
    plain = client.post("/v1/translate", json={"text": "Hola <b>mundo</b>"}).json()
    assert plain["translations"][0]["text"] == "HOLA <b>MUNDO</b>"
    refused = client.post("/v1/translate", json={"text": "hola", "format": "markdown"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "format"


def test_v1_translate_a_real_page_whole(client, backend):
    source = PAGE.read_text()
    response = client.post(
        "/v1/translate",
        json={"text": source, "format": "html", "source": "en", "target": "es"},
    )
    assert response.status_code == 200, response.text
    out = response.json()["translations"][0]["text"]
    assert out.startswith("<!DOCTYPE html PUBLIC") and out.endswith("</html>\n")
    assert "<p><code>libffi</code> IS NOT COMPLETELY THREAD-SAFE." in out
    assert source[source.index("<style") : source.index("</style>")] in out
    before, after = lxml.html.document_fromstring(source), lxml.html.document_fromstring(out)
    assert [(e.tag, dict(e.attrib)) for e in before.iter()] == [
        (e.tag, dict(e.attrib)) for e in after.iter()
    ]
    assert all(
        "<" not in text and "\ue000" not in text for job in backend.jobs for text in job.texts
    )
    assert response.json()["translations"][0]["sentences"] >= 9


def test_libretranslate_html_json_form_and_list(client):
    json_body = {"q": FRAGMENT, "source": "es", "target": "en", "format": "html"}
    answer = client.post("/translate", json=json_body).json()
    assert answer["translatedText"].startswith("GUARDE <b>EL ARCHIVO</b>")
    form = client.post("/translate", data=json_body).json()
    assert form == answer
    listed = client.post(
        "/translate",
        json={**json_body, "q": ["<p>Hola</p>", "<p>1 &nbsp; 2</p>"]},
    ).json()
    assert listed["translatedText"] == ["<p>HOLA</p>", "<p>1 &nbsp; 2</p>"]


def test_libretranslate_html_already_in_the_target_comes_back_byte_for_byte(client, backend):
    source = PAGE.read_text()
    answer = client.post(
        "/translate", json={"q": source, "source": "en", "target": "en", "format": "html"}
    )
    assert answer.json()["translatedText"] == source
    assert backend.jobs == []


def test_html_with_source_auto_detects_the_words_not_the_markup(client):
    answer = client.post(
        "/translate",
        json={
            "q": "<p>The Lord is my <b>shepherd</b>, I shall not want.</p>",
            "source": "auto",
            "target": "es",
            "format": "html",
        },
    ).json()
    assert answer["detectedLanguage"]["language"] == "en"
    assert answer["translatedText"] == "<p>THE LORD IS MY <b>SHEPHERD</b>, I SHALL NOT WANT.</p>"
