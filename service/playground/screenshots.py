"""`python -m service playground-screenshots`: one PNG per playground view, from a live service.

Without `--url` it serves the shipped models as `make serve` does (deploy/serve_config.yaml
on a local Ray, here on a free port and with the config's A/B experiment switched on, so that
the Compare view has a variant to show), drives headless Chromium through every view with
the inputs below, writes `<view>.png` and stops the service again.
"""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from service.playground.page import PlaygroundPage

DEFAULT_OUT = Path("docs/playground")
VIEWS = ("translate", "compare", "attention", "generate", "feedback")
TRANSLATE_TEXT = "No se pudo conectar con el servidor. Guarde el archivo antes de salir."
COMPARE_TEXT = "La reunión se ha aplazado hasta el próximo lunes."
ATTENTION_TEXT = "Y dijo Dios: Sea la luz; y fue la luz."
PROMPT = "And God said"


def capture(page: PlaygroundPage, out: Path, key: str | None = None) -> list[Path]:
    """Go through every view as a visitor would and write `<view>.png` under `out`."""
    page.open(key=key)
    written = []

    page.show("translate")
    page.fill("t-text", TRANSLATE_TEXT)
    page.fill("t-beam", 4)
    page.fill("t-nbest", 3)
    page.press_and_wait("t-go", "a translation")
    written.append(page.screenshot(out / "translate.png"))

    page.show("compare")
    page.fill("c-text", COMPARE_TEXT)
    page.fill("c-user", "alice")
    page.press_and_wait("c-go", "the comparison")
    written.append(page.screenshot(out / "compare.png"))

    page.show("attention")
    page.fill("a-text", ATTENTION_TEXT)
    page.press_and_wait("a-go", "the heatmaps")
    written.append(page.screenshot(out / "attention.png"))

    page.show("generate")
    page.fill("g-prompt", PROMPT)
    page.fill("g-max", 48)
    page.fill("g-seed", 7)
    page.press_and_wait("g-go", "the generated text")
    written.append(page.screenshot(out / "generate.png"))

    page.show("translate")  # the translation to rate: the first one, back in the form
    page.fill("t-text", TRANSLATE_TEXT)
    page.press_and_wait("t-go", "a translation")
    page.show("feedback")
    page.element("f-stars").find_element("css selector", "input[value='4']").click()
    page.fill("f-comment", "Right meaning; 'exit' should be 'exiting'.")
    page.press_and_wait("f-go", "the acknowledgement")
    written.append(page.screenshot(out / "feedback.png"))
    return written


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def shipped_service(config_path: Path, enable_experiments: bool) -> Iterator[str]:
    """The config's application on a local Ray at a free port, until the block ends."""
    import httpx
    import ray
    from ray import serve

    from service.serving.launch import load_config, start

    config = copy.deepcopy(load_config(config_path))
    if enable_experiments:
        for experiment in config["applications"][0]["args"].get("experiments") or []:
            experiment["enabled"] = True
    try:
        url = start(config, host="127.0.0.1", port=free_port(), metrics_export_port=None)
        deadline = time.monotonic() + 300
        while httpx.get(url + "/readyz", timeout=30).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not get ready in 5 minutes")
            time.sleep(1)
        yield url
    finally:
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()


def playground_screenshots_command(
    out: Annotated[Path, typer.Option(help="Where the PNGs go.")] = DEFAULT_OUT,
    url: Annotated[
        str | None,
        typer.Option(help="A running service; default: start the shipped models (make serve)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(envvar="SERVICE_API_KEY", help="API key, if it requires one.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Serve config to start (without --url).")
    ] = None,
    enable_experiments: Annotated[
        bool,
        typer.Option(help="Switch the config's A/B experiments on (without --url)."),
    ] = True,
    width: Annotated[int, typer.Option(help="Window width, CSS pixels.")] = 1280,
) -> None:
    """Screenshot every playground view (translate, compare, attention, generate, feedback)."""
    from service.playground.browser import BrowserMissing, chromium
    from service.serving.launch import DEFAULT_CONFIG

    @contextmanager
    def target() -> Iterator[str]:
        if url is not None:
            yield url
        else:
            with shipped_service(config or DEFAULT_CONFIG, enable_experiments) as started:
                yield started

    try:
        with target() as base, chromium(width=width) as driver:
            typer.echo(f"screenshots of {base}/")
            for path in capture(PlaygroundPage(driver, base), out, key):
                typer.echo(f"wrote {path}")
    except BrowserMissing as missing:
        typer.echo(str(missing), err=True)
        raise typer.Exit(code=2) from None
