"""Every error the API returns, in one shape: `{"error": {"type", "message", "field"}}`.

This module is the one place that decides status codes: validation errors (422), unparseable
bodies (400), unknown routes (404/405), oversized bodies (413), errors the routes raise as
`ApiError` (404 unknown model/version/language pair, 409, 415), and the domain errors of
`service.contracts` that the model replicas and the ingress's clients raise (503 overloaded or
model unavailable, 504 timeout, 422 prompt too long, 500 decode failed). Anything unexpected
still answers JSON (500, `internal_error`) and never takes the process down; such a response is
a bug to fix, and its request id is logged with the traceback.

The middlewares here are plain ASGI rather than Starlette's BaseHTTPMiddleware, which would
buffer responses and interfere with cancellation.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.schemas import REQUEST_ID, TEXT_UNION_TAGS
from service.contracts import (
    DecodeFailed,
    ModelUnavailable,
    Overloaded,
    PromptTooLong,
    ServiceError,
    Timeout,
)

logger = logging.getLogger("service.api")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(REQUEST_ID)
_STATUS_TYPES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """An error meant for the client: status, stable type, message, and the field at fault."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


# Domain errors -> (status, type). Looked up along the class's MRO, so a subclass (Ray's
# RayTaskError wraps a replica's exception in one) maps like its base.
DOMAIN_ERRORS: dict[type[ServiceError], tuple[int, str]] = {
    Overloaded: (503, "overloaded"),
    ModelUnavailable: (503, "model_unavailable"),
    Timeout: (504, "timeout"),
    PromptTooLong: (422, "validation_error"),
    DecodeFailed: (500, "internal_error"),
    ServiceError: (500, "internal_error"),
}


def api_error(error: ServiceError) -> ApiError:
    """The HTTP status and body of a domain error, with Retry-After when it says when."""
    status, kind = next(DOMAIN_ERRORS[k] for k in type(error).__mro__ if k in DOMAIN_ERRORS)
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(0, round(error.retry_after_s)))
    message = error.message
    if status == 422 and error.field:  # like every validation message: "field: what is wrong"
        message = f"{error.field}: {message}"
    return ApiError(status, kind, message, error.field, headers)


def error_body(type: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type, "message": message, "field": field}}


def error_response(
    status: int,
    type: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(type, message, field), status_code=status, headers=headers)


def field_path(loc: Sequence[Any]) -> str | None:
    """("body", "text", "list", 3) -> "text[3]"; ("body", "beam_size") -> "beam_size"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in TEXT_UNION_TAGS:  # a branch of the text union, not a field
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or ("body" if loc and loc[0] == "body" else None)


def _validation_message(error: Mapping[str, Any], field: str | None) -> str:
    kind = error.get("type", "")
    if kind == "json_invalid":
        reason = error.get("ctx", {}).get("error", "")
        return f"request body is not valid JSON{f' ({reason})' if reason else ''}"
    if kind == "missing" and field == "body":
        return "request body is required (a JSON object)"
    if kind == "model_attributes_type" and field == "body":
        return "request body must be a JSON object"
    message = str(error.get("msg", "invalid value"))
    return f"{field}: {message}" if field and field != "body" else message


def validation_error_body(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The first error decides the message and field; the rest are usually its echoes."""
    if not errors:
        return error_body("validation_error", "invalid request")
    first = errors[0]
    # A JSON syntax error's location is a character offset, not a field.
    field = "body" if first.get("type") == "json_invalid" else field_path(first.get("loc", ()))
    return error_body("validation_error", _validation_message(first, field), field)


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", None) or "-"


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.type, exc.message, exc.field, exc.headers)


async def _on_service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return await _on_api_error(request, api_error(exc))


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(validation_error_body(exc.errors()), status_code=422)


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = _STATUS_TYPES.get(exc.status_code, "http_error")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, kind, message, headers=getattr(exc, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)


async def _send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *[(k.lower().encode(), str(v).encode()) for k, v in headers],
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class RequestIdMiddleware:
    """Gives every request an id, exposes it as `request.state.request_id`, and returns it as
    the X-Request-ID header.

    Standalone, a client's X-Request-ID is adopted if well-formed, else replaced by a uuid4.
    Behind Ray Serve's proxy (`proxy_owns_header=True`) the proxy has already set the header,
    to the client's value or its own id, and echoes it on the response; the app adopts that
    value as is, so the id in a response body, its header and Ray's logs are the same.
    """

    def __init__(self, app: ASGIApp, proxy_owns_header: bool = False):
        self.app = app
        self.proxy_owns_header = proxy_owns_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == REQUEST_ID_HEADER.encode():
                incoming = value.decode("latin-1")
                break
        if self.proxy_owns_header and incoming:
            scope.setdefault("state", {})["request_id"] = incoming
            await self.app(scope, receive, send)
            return
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else None
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class CatchAllMiddleware:
    """Last line of defence: an exception nobody handled becomes a JSON 500, not a dead
    connection or an HTML page, and the traceback is logged with the request id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            request_id = scope.get("state", {}).get("request_id", "-")
            logger.exception("unhandled error in request %s", request_id)
            if not started:
                await _send_json(
                    send,
                    500,
                    error_body(
                        "internal_error",
                        f"internal error; quote request id {request_id} when reporting it",
                    ),
                )


class BodySizeLimitMiddleware:
    """413 for a body over `max_bytes`, judged by Content-Length when given and by the bytes
    actually received otherwise (chunked uploads), before any parsing happens."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> dict[str, Any]:
        return error_body(
            "payload_too_large",
            f"request body exceeds the limit of {self.max_bytes} bytes",
            "body",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(
                        send, 400, error_body("bad_request", "invalid Content-Length header")
                    )
                    return
                if declared > self.max_bytes:
                    await _send_json(send, 413, self._too_large())
                    return
                break

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_json(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        await self.app(scope, replay_body(b"".join(chunks), receive), send)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands a middleware's already-read body to the app, then the rest."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
