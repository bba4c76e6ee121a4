"""Real text through a live service: both directions, source auto, sentences and clauses.

One Ray Serve application with tiny untrained `es-en/transformer` and `en-es/transformer`
(and the real tokenizer, read by the ingress to count source tokens); a small
`max_source_tokens` makes the ingress split long sentences at clause boundaries.
"""

from __future__ import annotations

import socket

import httpx
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def both_directions(tiny_model_store, tmp_path_factory):
    """The tiny store plus an en-es/transformer (the es-en one's weights: untrained anyway)."""
    import shutil

    from service.store import ModelStore

    root = tmp_path_factory.mktemp("both") / "model_store"
    shutil.copytree(tiny_model_store, root)
    store = ModelStore(root)
    loaded = store.load("es-en/transformer")
    store.save(loaded.model, loaded.tokenizer_path, model_id="en-es/transformer")
    return root


@pytest.fixture(scope="module")
def client(both_directions):
    import ray
    from ray import serve

    from service.serving.app import build_app_with_options

    args = {
        "store": str(both_directions),
        "models": [
            {"id": "es-en/transformer", "max_source_tokens": 24},
            {"id": "en-es/transformer", "required": False},
        ],
        "generation": None,
        "api": {"default_beam_size": 1, "default_max_length": 4},
    }
    options = {
        name: {"ray_actor_options": {"num_cpus": 0.2}}
        for name in ("Ingress", "es-en-transformer", "en-es-transformer")
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app_with_options(args, options), name="text", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            yield client
    finally:
        serve.shutdown()
        ray.shutdown()


def test_languages_list_both_directions(client):
    assert client.get("/languages").json() == [
        {"code": "en", "name": "English", "targets": ["es"]},
        {"code": "es", "name": "Spanish", "targets": ["en"]},
    ]


def test_auto_routes_by_the_detected_language(client):
    english = client.post(
        "/translate", json={"q": "The Lord is my shepherd", "source": "auto", "target": "es"}
    )
    assert english.status_code == 200, english.text
    assert english.json()["detectedLanguage"]["language"] == "en"
    kept = client.post(
        "/translate", data={"q": "The Lord is my shepherd", "source": "auto", "target": "en"}
    )
    assert kept.json()["translatedText"] == "The Lord is my shepherd"
    assert client.post("/detect", data={"q": "Hola, ¿qué tal?"}).json()[0]["language"] == "es"
    assert client.post("/translate?q=Hola&source=es&target=en").status_code == 200


def test_paragraphs_and_long_sentences_are_translated_in_pieces(client):
    text = (
        "En el principio creó Dios los cielos y la tierra, y la tierra estaba desordenada y "
        "vacía, y las tinieblas estaban sobre la faz del abismo.\n\nY dijo Dios: Sea la luz."
    )
    response = client.post(
        "/v1/translate", json={"text": text, "source": "es", "return_scores": True}
    )
    assert response.status_code == 200, response.text
    [translation] = response.json()["translations"]
    assert translation["sentences"] == 2
    assert "\n\n" in translation["text"]
    sources = [segment["source"] for segment in translation["segments"]]
    assert len(sources) > 2  # the first sentence went as clauses that fit 24 tokens
    assert " ".join(sources).replace(" \n", "\n") in text.replace("\n\n", " ")


def test_a_repeated_sentence_comes_from_the_cache(client):
    payload = {"text": "Las aguas se juntaron. El mar se calmó.", "source": "es"}
    first = client.post("/v1/translate", json=payload).json()
    again = client.post("/v1/translate", json={**payload, "return_scores": True}).json()
    assert first["timing"]["cached_sentences"] == [0]
    assert again["timing"]["cached_sentences"] == [2]
    assert again["translations"][0]["text"] == first["translations"][0]["text"]
    assert all(segment["cached"] for segment in again["translations"][0]["segments"])


def test_the_libretranslate_python_client_works_unchanged(client):
    """libretranslatepy 2.1.4 (pinned in the test extra), as its users call it. It posts
    urlencoded forms (a GET with a form body for /languages) and reads `translatedText` alone;
    its `translate` takes one string (a list would be sent as the list's repr), so lists are
    covered by the JSON and form tests above."""
    from libretranslatepy import LibreTranslateAPI

    lt = LibreTranslateAPI(str(client.base_url))
    assert lt.languages(timeout=120) == client.get("/languages").json()
    spanish = "Las aguas se juntaron."
    translated = lt.translate(spanish, "es", "en", timeout=120)
    assert isinstance(translated, str) and translated
    ours = client.post("/translate", json={"q": spanish, "source": "es", "target": "en"})
    assert translated == ours.json()["translatedText"]
    # source auto: English is detected, kept when it is already the target, else sent to en-es.
    english = "The Lord is my shepherd"
    assert lt.translate(english, "auto", "en", timeout=120) == english
    routed = client.post("/translate", data={"q": english, "source": "en", "target": "es"})
    assert lt.translate(english, "auto", "es", timeout=120) == routed.json()["translatedText"]
    [best, *_] = lt.detect(english, timeout=120)
    assert best["language"] == "en" and 50 < best["confidence"] <= 100
    assert lt.detect("Hola, ¿qué tal?", timeout=120)[0]["language"] == "es"
    # With keys off the client's api_key is accepted and ignored, as LibreTranslate does.
    keyed = LibreTranslateAPI(str(client.base_url), api_key="not-checked")
    assert keyed.translate(spanish, "es", "en", timeout=120) == translated
