"""The playground in a real headless browser (Debian's chromium + chromium-driver, through
Selenium) against a live service on a local Ray Serve with the tiny untrained models.

The service runs as deploy/serve_config.yaml says, test-sized, with API keys required and the
A/B experiment enabled, so the page has to ask for a key and the Compare view has a variant
to show. What the page shows is checked against what the API answers to the same request.
"""

from __future__ import annotations

import copy
import socket
import time

import httpx
import pytest

from service.playground.browser import BrowserMissing, chromium, find_browser
from service.playground.page import PlaygroundPage

pytestmark = [pytest.mark.ray, pytest.mark.slow]

USER_HEADER = "X-User-ID"
LONG = 400  # generated tokens: long enough for the stream to be seen growing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service(tiny_lm_store, tmp_path_factory):
    """(base URL, API key) of the shipped config on the tiny models, keys required."""
    import ray
    from ray import serve

    from service.api.keys import KeyStore
    from service.serving.launch import DEFAULT_CONFIG, load_config, start

    db = tmp_path_factory.mktemp("keys") / "keys.sqlite"
    _, key = KeyStore(db).add("browser")
    config = copy.deepcopy(load_config(DEFAULT_CONFIG))
    app = config["applications"][0]
    args = app["args"]
    args["store"] = str(tiny_lm_store)
    args["api"].update(default_beam_size=1, default_max_length=8)
    args["api"]["keys"] = {"required": True, "db": str(db), "ttl_s": 0.5}
    args["generation"]["max_new_tokens_limit"] = LONG
    [experiment] = args["experiments"]
    experiment["enabled"] = True
    assert experiment["user_header"] == USER_HEADER
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.2
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        base = start(config, host="127.0.0.1", port=free_port())
        yield base, key
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def api(service):
    base, key = service
    with httpx.Client(
        base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    try:
        find_browser()
        with chromium() as driver:
            yield driver
    except BrowserMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture
def page(browser, service):
    base, key = service
    page = PlaygroundPage(browser, base, timeout_s=120)
    page.open(key=key)
    return page


def translate_in_page(page, text, **fields):
    page.show("translate")
    page.fill("t-text", text)
    for element_id, value in fields.items():
        page.fill(element_id, value)
    page.press_and_wait("t-go", "a translation")


def test_without_a_key_the_page_asks_for_one_and_shows_the_api_refusal(browser, service):
    base, key = service
    page = PlaygroundPage(browser, base, timeout_s=120)
    page.open()
    page.js("localStorage.clear()")
    page.open()
    assert page.visible("key-bar")
    assert page.visible("banner") and "401" in page.text("banner")
    translate_in_page(page, "Hola")
    error = page.text("t-error")
    assert page.visible("t-error") and "401 invalid_api_key" in error
    assert "an API key is required" in error  # the API's words
    page.set_key(key)
    assert not page.visible("banner")
    assert {"es-en/transformer", "es-en/rnnsearch"} <= set(page.options("t-model"))


def test_translate_shows_the_translation_alternatives_scores_and_timing(page, api):
    translate_in_page(
        page, "Guarde el archivo.", **{"t-model": "es-en/rnnsearch", "t-beam": 3, "t-nbest": 3}
    )
    assert not page.visible("t-error")
    shown = page.text("t-output")
    answer = api.post(
        "/v1/translate",
        json={
            "text": "Guarde el archivo.",
            "source": "es",
            "target": "en",
            "model": "es-en/rnnsearch",
            "beam_size": 3,
            "n_best": 3,
            "return_scores": True,
        },
    ).json()
    [result] = answer["translations"]
    assert shown.strip() and shown == result["text"]
    alternatives = page.js(
        "return [...document.querySelectorAll('#t-alternatives li')].map(li => li.firstChild"
        ".textContent)"
    )
    assert alternatives == [a["text"] for a in result["alternatives"]] and len(alternatives) == 2
    meta = page.text("t-meta")
    assert "es-en/rnnsearch v1" in meta and f"{result['score']:.3f}" in meta
    assert "ms total" in meta and "request id" in meta


def test_a_bad_input_shows_the_api_error_as_worded(page, api):
    translate_in_page(page, "Hola", **{"t-beam": 9, "t-nbest": 1})
    refusal = api.post("/v1/translate", json={"text": "Hola", "beam_size": 9}).json()["error"]
    error = page.text("t-error")
    assert page.visible("t-error") and not page.visible("t-result")
    assert error.startswith("422 validation_error")
    assert refusal["message"] in error and f"(field: {refusal['field']})" in error


def test_compare_shows_every_model_side_by_side_and_the_users_variant(page, api):
    page.show("compare")
    page.fill("c-text", "La casa del rey.")
    page.fill("c-beam", 1)
    page.fill("c-user", "carmen")
    page.press_and_wait("c-go", "the comparison")
    assert not page.visible("c-error")
    columns = page.js(
        "return [...document.querySelectorAll('#c-columns .column')].map(c => ({"
        "title: c.querySelector('h4').textContent, text: c.querySelector('.text').textContent,"
        "latency: c.querySelector('.latency').textContent}))"
    )
    titles = sorted(c["title"] for c in columns)
    assert titles == ["es-en/rnnsearch v1", "es-en/transformer v1"]
    for column in columns:
        assert column["text"].strip() and column["latency"].endswith(" ms")
    variant = api.post(
        "/v1/translate",
        json={"text": "La casa del rey.", "source": "es", "target": "en"},
        headers={USER_HEADER: "carmen"},
    ).json()["variant"]
    shown = page.text("c-variant")
    assert page.visible("c-variant") and f"gets variant {variant}" in shown
    assert "transformer-vs-rnnsearch" in shown


def cell_greys(page, figure: int) -> list[list[int]]:
    """The red channel at the centre of every cell of the figure's first heatmap."""
    return page.js(
        """
        const canvas = document.querySelectorAll('#a-maps figure')[arguments[0]]
            .querySelector('canvas');
        const {left, top, cell, rows, columns} = canvas.dataset;
        const context = canvas.getContext('2d');
        const ratio = canvas.width / parseFloat(canvas.style.width);
        const greys = [];
        for (let i = 0; i < +rows; i++) {
            const row = [];
            for (let j = 0; j < +columns; j++) {
                const x = (+left + (j + 0.5) * +cell) * ratio;
                const y = (+top + (i + 0.5) * +cell) * ratio;
                row.push(context.getImageData(x, y, 1, 1).data[0]);
            }
            greys.push(row);
        }
        return greys;
        """,
        figure,
    )


def test_attention_draws_each_architectures_alignment_as_a_heatmap(page, api):
    sentence = "Sea la luz."
    page.show("attention")
    page.fill("a-text", sentence)
    page.fill("a-beam", 1)
    page.press_and_wait("a-go", "the heatmaps")
    assert not page.visible("a-error")
    models = page.js(
        "return [...document.querySelectorAll('#a-maps figure')].map(f => f.dataset.model)"
    )
    assert sorted(models) == ["es-en/rnnsearch", "es-en/transformer"]
    for index, model in enumerate(models):
        [result] = api.post(
            "/v1/translate",
            json={
                "text": sentence,
                "source": "es",
                "target": "en",
                "model": model,
                "beam_size": 1,
                "return_alignment": True,
            },
        ).json()["translations"]
        weights = result["alignment"]["weights"]
        greys = cell_greys(page, index)
        assert len(greys) == len(result["alignment"]["target_tokens"]) == len(weights)
        assert len(greys[0]) == len(result["alignment"]["source_tokens"])
        # Every cell drawn, in the grey its weight says (black 0, white 1): not a blank canvas.
        expected = [[round(255 * min(1.0, max(0.0, w))) for w in row] for row in weights]
        for drawn, wanted in zip(greys, expected, strict=True):
            assert all(abs(d - w) <= 1 for d, w in zip(drawn, wanted, strict=True)), model
        assert any(g < 250 for row in greys for g in row)


def test_generate_streams_the_text_token_by_token(page, api):
    page.show("generate")
    fields = {"g-prompt": "In the beginning", "g-max": LONG, "g-temp": 1, "g-topp": 1}
    for element_id, value in fields.items():
        page.fill(element_id, value)
    page.fill("g-seed", 7)
    page.press("g-go")
    lengths = []
    deadline = time.monotonic() + 120
    while page.busy("g-go") and time.monotonic() < deadline:
        lengths.append(len(page.text("g-text")))
        time.sleep(0.02)
    assert not page.visible("g-error"), page.text("g-error")
    shown = page.text("g-text")
    growing = sorted(set(n for n in lengths if 0 < n < len(shown)))
    assert len(growing) >= 2, lengths  # seen part-way, more than once
    assert int(page.js("return document.getElementById('g-text').dataset.events")) > 2
    plain = api.post(
        "/v1/generate",
        json={
            "prompt": "In the beginning",
            "max_new_tokens": LONG,
            "temperature": 1,
            "top_p": 1,
            "seed": 7,
        },
    ).json()
    assert shown == plain["text"]  # the events add up to the whole answer
    assert plain["finish_reason"] in page.text("g-meta")


def test_feedback_on_the_last_translation_is_acknowledged_once(page):
    translate_in_page(page, "Buenos días.", **{"t-beam": 1, "t-nbest": 1, "t-model": ""})
    request_id = page.text("t-meta").split("request id")[-1].strip()
    page.show("feedback")
    assert page.element("f-id").get_attribute("value") == request_id
    assert page.visible("f-context") and "Buenos días." in page.text("f-context")
    page.element("f-stars").find_element("css selector", "input[value='5']").click()
    page.press_and_wait("f-go", "the acknowledgement")
    assert page.visible("f-result") and "rating 5 recorded" in page.text("f-result")
    page.press_and_wait("f-go", "the refusal")
    assert "409 feedback_already_recorded" in page.text("f-error")
    assert "already been rated" in page.text("f-error")


def test_the_screenshot_command_writes_one_png_per_view(service, tmp_path):
    from typer.testing import CliRunner

    from service.__main__ import app
    from service.playground.screenshots import VIEWS

    try:
        find_browser()
    except BrowserMissing as missing:
        pytest.skip(str(missing))
    base, key = service
    command = ["playground-screenshots", "--url", base, "--key", key, "--out", str(tmp_path)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    for view in VIEWS:
        png = (tmp_path / f"{view}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", view
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width == 1280 and height >= 600, (view, width, height)
