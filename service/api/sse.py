"""Server-Sent Events: `data: <JSON>` frames, the closing `[DONE]`, and a response that always
closes its iterator (which is what cancels a generation when the client goes away)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from service.api.errors import ApiError, error_body

SSE_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(data: BaseModel | dict[str, Any]) -> bytes:
    """One `data:` event. JSON never contains a raw newline, so one line always suffices."""
    payload = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    return f"data: {payload}\n\n".encode()


def sse_error(error: ApiError) -> bytes:
    return sse_event(error_body(error.type, error.message, error.field))


def _event(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": data,
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }


def sse_response_doc(event: type[BaseModel], description: str) -> dict[str, Any]:
    """The OpenAPI entry of a 200 that may be a stream of `event`s, beside the route's JSON
    response model: `text/event-stream`, whose `schema` (OpenAPI 3.1: one event) is an event
    whose `data` is the JSON of an `event`, or of an error body, or the closing `[DONE]`.

    `event`'s own references must name schemas that the document has anyway.
    """
    payload = event.model_json_schema(ref_template="#/components/schemas/{model}")
    payload.pop("$defs", None)
    return {
        "description": description,
        "content": {
            "text/event-stream": {
                "schema": {
                    "description": f"One event: `data: <{event.__name__}>`, or `data: "
                    '{"error": ...}` when the generation fails after the stream began; the '
                    "last event is `data: [DONE]`.",
                    "anyOf": [
                        _event({"const": "[DONE]"}),
                        _event(
                            {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {
                                    "anyOf": [
                                        payload,
                                        {"$ref": "#/components/schemas/ErrorResponse"},
                                    ]
                                },
                            }
                        ),
                    ],
                }
            }
        },
    }


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that always closes its iterator.

    Starlette leaves the body iterator suspended when the response is cancelled between two
    chunks (the client went away during a send); closing it here runs the iterator's cleanup,
    which cancels the generation at once instead of whenever the garbage collector gets to it.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]):
        super().__init__(content, headers=SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
