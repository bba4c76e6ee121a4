"""A stand-in for the service on 127.0.0.1, so Locust can be run end to end without Ray."""

# No `from __future__ import annotations`: FastAPI must see `Request` in the fake's routes.

import asyncio
import itertools
import json
import os
import threading
import time

import pytest
from loadtest_modules import LOADTESTS, load_module  # noqa: F401


def _import_locust_unpatched() -> None:
    """Importing locust monkey-patches the whole process for gevent (sockets, threads), which
    would break the Ray and asyncio tests sharing this pytest session. Import it without the
    patch; the Locust runs these tests start are subprocesses, and get the patch as usual."""
    previous = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        import locust  # noqa: F401
    finally:
        if previous is None:
            del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
        else:
            os.environ["LOCUST_SKIP_MONKEY_PATCH"] = previous


_import_locust_unpatched()


def fake_app():
    """The routes the locustfile calls, answering instantly; /v1/compare always sheds load."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    ids = itertools.count(1)

    @app.post("/v1/translate")
    async def translate(request: Request):
        body = await request.json()
        texts = [body["text"]] if isinstance(body["text"], str) else body["text"]
        await asyncio.sleep(0.005)
        return {
            "id": f"req-{next(ids)}",
            "translations": [{"text": f"EN {t[:10]}"} for t in texts],
            "timing": {
                "queue_ms": 1.0,
                "compute_ms": 4.0,
                "total_ms": 5.0,
                "batch_sizes": [len(texts)] * len(texts),
            },
        }

    @app.post("/translate")
    async def libretranslate(request: Request):
        return {"translatedText": "Hello"}

    @app.post("/v1/compare")
    async def compare():
        body = {"error": {"type": "overloaded", "message": "busy", "field": None}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        body = await request.json()
        assert 1 <= body["rating"] <= 5 and body["request_id"].startswith("req-")
        return {"ok": True}

    @app.post("/v1/generate")
    async def generate(request: Request):
        body = await request.json()
        if not body.get("stream"):
            return {"text": "and it was so"}

        async def events():
            for word in ("and", " it", " was", " so"):
                yield f"data: {json.dumps({'token': word})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions():
        return {"choices": [{"text": "and it was so"}]}

    return app


@pytest.fixture(scope="module")
def fake_service():
    """Base URL of `fake_app` served by uvicorn in a thread on 127.0.0.1."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(fake_app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake service did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
