"""`GET /`: the web playground, one page of plain HTML, CSS and JavaScript served by the app.

The page (`static/playground/`) is written by hand and vendored: no CDN, no build step, so
it works offline and from any Ingress replica. It calls the public API exactly as a client
would (`/frontend/settings`, `/languages`, `/v1/models`, `/v1/translate`, `/v1/compare`,
`/v1/generate`, `/v1/feedback`), with the key as `Authorization: Bearer` when keys are
required. The one thing the API does not say is which A/B experiment splits
`/v1/translate` and by which header, so the page is served with that written into it.

The page and its files are exempt from keys (`service.api.access.is_exempt`: `/` and
`/static/`); they hold no data, only the code that asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from service.api.experiments import ABTesting

STATIC_DIR = Path(__file__).parent / "static" / "playground"
STATIC_PREFIX = "/static/playground"
CONFIG_MARKER = "/*PLAYGROUND_CONFIG*/null"
# The files the page loads, and how they are sent; nothing else under static/ is served.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CACHE_CONTROL = "no-cache"  # revalidated each load: a redeploy's page is never mixed with old JS


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


def playground_config(ab: ABTesting) -> dict[str, Any]:
    """What the page needs that no route says: the experiment splitting /v1/translate."""
    experiment = ab.router.by_route.get("/v1/translate")
    if experiment is None:
        return {"experiment": None}
    return {
        "experiment": {
            "name": experiment.name,
            "header": experiment.header,
            "variants": [
                {"name": v.name, "model": v.model.id, "version": v.model.version}
                for v in experiment.variants
            ],
        }
    }


def render_page(config: dict[str, Any]) -> str:
    """index.html with `config` in its JSON script block (`<` escaped: it cannot end it)."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if CONFIG_MARKER not in page:
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} lacks {CONFIG_MARKER}")
    return page.replace(CONFIG_MARKER, json.dumps(config).replace("<", "\\u003c"))


def playground_router(ab: ABTesting) -> APIRouter:
    """`GET /` and its files, read once when the app is built."""
    page = render_page(playground_config(ab))
    assets = {
        name: Asset((STATIC_DIR / name).read_bytes(), media_type)
        for name, media_type in ASSETS.items()
    }
    router = APIRouter(include_in_schema=False)
    headers = {"Cache-Control": CACHE_CONTROL}

    @router.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    def serve(asset: Asset):
        async def send() -> Response:
            return Response(asset.body, media_type=asset.media_type, headers=headers)

        return send

    for name, asset in assets.items():
        router.add_api_route(f"{STATIC_PREFIX}/{name}", serve(asset), methods=["GET"])
    return router
