"""Who may call, and how much: API keys, rate limits and usage, at the HTTP seam.

Off by default. `args.api.keys.required: true` makes every route but the exempt ones
(`EXEMPT_PATHS`) ask for a key from the key store (`service.api.keys`); `args.api.rate_limit`
sets requests and characters per minute for every caller (a key's own limits override them).
A key comes as `api_key` in the query string, a JSON body or a form (LibreTranslate's way), or
as `Authorization: Bearer KEY` on /v1/* (OpenAI's way). Without keys the caller is the client
address (or the first X-Forwarded-For address, when told to trust it).

`AccessMiddleware` runs inside the body-size limit, so it reads a body already bounded and
buffered: it finds the key, counts the characters of the texts to translate and the prompts
(`q`, `text`, `prompt`), asks the `Limiter` for a grant, and answers 401/403/429 itself;
LibreTranslate routes get LibreTranslate's `{"error": "..."}` shape, /v1/* the API's own.
Every request counts, whatever its answer, except those refused here.
"""

# No `from __future__ import annotations`: FastAPI must see the response model.

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import _send_json, error_body, replay_body
from service.api.keys import KeyCache, KeyRecord
from service.api.limits import WINDOW_S, Decision, Limiter, Limits, retry_after_header
from service.api.schemas import RETRY_AFTER, ErrorResponse
from service.metrics import NONE

logger = logging.getLogger("service.api")

# Operations, probes, the LibreTranslate front end's settings, the docs and static files.
EXEMPT_PATHS = frozenset(
    {
        "/",
        "/healthz",
        "/readyz",
        "/languages",
        "/frontend/settings",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/favicon.ico",
    }
)
# A translated file's download URL holds 128 random bits and needs no key (as LibreTranslate).
EXEMPT_PREFIXES = ("/static/", "/download_file/")
TEXT_FIELDS = ("q", "text", "prompt", "file")  # what is charged as characters
INVALID_KEY = "Invalid API key"  # LibreTranslate's words


class KeySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = Field(
        False, description="true: every route but the probes, /languages and the docs needs a key."
    )
    db: str | None = Field(
        None,
        description="The key database (SQLite); relative paths from the working directory; "
        "default `keys.sqlite` beside the model store.",
    )
    ttl_s: float = Field(
        2.0, gt=0, le=60, description="Replicas re-read the key database this often."
    )


class RateLimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    req_limit: int | None = Field(
        None, ge=0, description="Requests per minute per caller (a key's own limit overrides it)."
    )
    char_limit: int | None = Field(
        None,
        ge=0,
        description="Characters (of q, text, prompt and an uploaded file) per minute per "
        "caller; likewise.",
    )
    trust_x_forwarded_for: bool = Field(
        False,
        description="Without keys the caller is the client address; true takes the first "
        "X-Forwarded-For address instead (only behind a proxy that sets it).",
    )

    @property
    def limits(self) -> Limits:
        return Limits(self.req_limit, self.char_limit)


class UsageRecorder(Protocol):
    def usage(self, key: str, characters: int) -> None:
        """One request granted to the key named `key` ('none' without keys)."""

    def rate_limited(self, key: str, limit: str) -> None:
        """One request refused by `limit` (requests | characters)."""


class NullUsageRecorder:
    def usage(self, key: str, characters: int) -> None:
        pass

    def rate_limited(self, key: str, limit: str) -> None:
        pass


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the middleware found out: `request.state.caller`."""

    identity: str  # the limiter's key: "key:<name>" or "addr:<address>"
    key: KeyRecord | None
    limits: Limits


@dataclass
class Access:
    """What the middleware and /v1/usage work with; `keys` is None when keys are off."""

    keys_required: bool
    rate_limit: RateLimitSettings
    limiter: Limiter
    keys: KeyCache | None = None
    recorder: UsageRecorder = NullUsageRecorder()

    @property
    def limited(self) -> bool:
        return self.keys_required or self.rate_limit.limits.any

    def limits_for(self, key: KeyRecord | None) -> Limits:
        default = self.rate_limit.limits
        if key is None:
            return default
        return Limits(
            key.req_limit if key.req_limit is not None else default.requests,
            key.char_limit if key.char_limit is not None else default.characters,
        )


def is_exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def is_openai_style(path: str) -> bool:
    return path.startswith("/v1/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def parse_body(scope: Scope, body: bytes) -> Mapping[str, Any] | None:
    """A JSON object or a urlencoded form, as LibreTranslate reads them; None otherwise."""
    content_type = (_header(scope, b"content-type") or "application/json").split(";")[0].strip()
    try:
        if content_type in ("application/json", ""):
            data = json.loads(body) if body else None
        elif content_type == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            data = {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
        elif content_type == "multipart/form-data":
            data = multipart_fields(_header(scope, b"content-type") or "", body)
        else:
            return None
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    """A multipart form's fields as text (a file's bytes read as UTF-8, what cannot be read
    replaced): enough to find `api_key` and to count a file's characters (/translate_file)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes) and name not in fields:
            fields[name] = payload.decode("utf-8", "replace")
    return fields


def characters_of(data: Mapping[str, Any] | None) -> int:
    """Characters of the texts and prompts a request carries, whatever else it is."""
    if not data:
        return 0
    total = 0
    for name in TEXT_FIELDS:
        value = data.get(name)
        values = value if isinstance(value, list) else [value]
        total += sum(len(v) for v in values if isinstance(v, str))
    return total


def key_of(scope: Scope, data: Mapping[str, Any] | None) -> str | None:
    """The key sent: Bearer on /v1/*, else `api_key` in the query string, else in the body."""
    if is_openai_style(scope["path"]):
        authorization = _header(scope, b"authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("api_key"):
        return query["api_key"][0]
    if data is not None and isinstance(data.get("api_key"), str) and data["api_key"]:
        return data["api_key"]
    return None


def client_address(scope: Scope, trust_forwarded: bool) -> str:
    if trust_forwarded:
        forwarded = _header(scope, b"x-forwarded-for")
        if forwarded and forwarded.split(",")[0].strip():
            return forwarded.split(",")[0].strip()
    client = scope.get("client")
    return client[0] if client else "unknown"


def rate_limit_message(decision: Decision, limits: Limits, caller: Caller) -> str:
    who = f"key {caller.key.name!r}" if caller.key else "this client address"
    limit = limits.requests if decision.limit == "requests" else limits.characters
    unit = "requests" if decision.limit == "requests" else "characters"
    if decision.never:
        return (
            f"rate limit: this request's {unit} exceed the limit of {limit} {unit} per minute "
            f"for {who}; send less per request"
        )
    return (
        f"rate limit exceeded: {limit} {unit} per minute for {who}; retry after "
        f"{retry_after_header(decision)} s"
    )


class AccessMiddleware:
    """Keys, then limits, then the app; see the module docstring."""

    def __init__(self, app: ASGIApp, access: Access):
        self.app = app
        self.access = access

    async def _deny(
        self, scope: Scope, send: Send, status: int, kind: str, message: str, headers=()
    ) -> None:
        if is_openai_style(scope["path"]):
            body: dict[str, Any] = error_body(kind, message, "api_key" if status == 401 else None)
        else:
            body = {"error": message}
        await _send_json(send, status, body, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        access = self.access
        body, more = await _read_body(receive)
        if more is None:  # the client went away
            return
        data = parse_body(scope, body) if body else None

        record = None
        if access.keys_required:
            assert access.keys is not None
            await _refresh(access.keys)
            key = key_of(scope, data)
            record = access.keys.lookup(key) if key else None
            if record is None:
                if is_openai_style(scope["path"]):
                    message = (
                        "invalid API key"
                        if key
                        else "an API key is required: send "
                        "Authorization: Bearer KEY (or api_key in the query string or body)"
                    )
                    await self._deny(scope, send, 401, "invalid_api_key", message)
                else:
                    await self._deny(scope, send, 403, "invalid_api_key", INVALID_KEY)
                return
            identity = f"key:{record.name}"
        else:
            identity = f"addr:{client_address(scope, access.rate_limit.trust_x_forwarded_for)}"
        caller = Caller(identity, record, access.limits_for(record))
        scope.setdefault("state", {})["caller"] = caller

        label = record.name if record else NONE
        characters = characters_of(data)
        if caller.limits.any:
            decision = await access.limiter.acquire(identity, characters, caller.limits)
            if not decision.granted:
                access.recorder.rate_limited(label, decision.limit or "requests")
                if access.keys is not None and record is not None:
                    access.keys.count(record.name, rate_limited=1)
                    _flush_later(access.keys)
                await self._deny(
                    scope,
                    send,
                    429,
                    "rate_limited",
                    rate_limit_message(decision, caller.limits, caller),
                    [("Retry-After", retry_after_header(decision))],
                )
                return
        access.recorder.usage(label, characters)
        if access.keys is not None and record is not None:
            access.keys.count(record.name, requests=1, characters=characters)
            _flush_later(access.keys)

        if data is not None and "api_key" in data and is_openai_style(scope["path"]):
            # The v1 bodies forbid unknown fields; the key has done its work.
            body = json.dumps({k: v for k, v in data.items() if k != "api_key"}).encode()
            scope = _with_content_length(scope, len(body))
        await self.app(scope, replay_body(body, receive), send)


async def _refresh(keys: KeyCache) -> None:
    """Re-read a stale key cache off the event loop; one re-read at a time (requests that
    come meanwhile use the current view, unless there is none yet)."""
    if not keys.stale():
        return
    if keys.refreshing is not None:
        if keys.known() == 0:
            await asyncio.wait([keys.refreshing])  # its failure is the first one's to log
        return
    keys.refreshing = asyncio.ensure_future(asyncio.to_thread(keys.refresh))
    try:
        await asyncio.shield(keys.refreshing)
    except Exception:
        logger.warning("cannot read the key database %s", keys.store.path, exc_info=True)
    finally:
        keys.refreshing = None


def _flush_later(keys: KeyCache) -> None:
    """Write the counts within one TTL even if no request comes to trigger a re-read."""
    if keys.flush_scheduled:
        return
    keys.flush_scheduled = True

    def flush() -> None:
        keys.flush_scheduled = False
        keys.expire()  # the re-read flushes
        asyncio.ensure_future(_refresh(keys))

    asyncio.get_running_loop().call_later(keys.ttl_s, flush)


async def _read_body(receive: Receive) -> tuple[bytes, bool | None]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _with_content_length(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


class KeyUsage(BaseModel):
    """The caller's use of the current window and its limits (as DeepL's /v2/usage)."""

    key: str | None = Field(description="The key's name; null without keys.")
    window_s: float = Field(description="The moving window the counts and limits are over.")
    request_count: int | None = Field(
        description="Requests granted in the window (this one included); null: not metered."
    )
    request_limit: int | None = Field(description="Requests allowed per window; null: no limit.")
    character_count: int | None = Field(description="Characters granted in the window.")
    character_limit: int | None = Field(description="Characters allowed per window.")
    total_requests: int | None = Field(
        None, description="The key's lifetime requests (the database's, a few seconds behind)."
    )
    total_characters: int | None = None
    total_rate_limited: int | None = Field(None, description="The key's lifetime 429s.")


def usage_router(access: Access | None) -> APIRouter:
    router = APIRouter(tags=["usage"])

    @router.get(
        "/v1/usage",
        response_model=KeyUsage,
        summary="Your requests and characters, and your limits",
    )
    async def usage(request: Request) -> KeyUsage:
        caller: Caller | None = getattr(request.state, "caller", None)
        if access is None or caller is None:
            return KeyUsage(
                key=None,
                window_s=WINDOW_S,
                request_count=None,
                request_limit=None,
                character_count=None,
                character_limit=None,
            )
        requests, characters = (
            await access.limiter.usage(caller.identity) if caller.limits.any else (None, None)
        )
        totals = access.keys.totals(caller.key.name) if access.keys and caller.key else None
        return KeyUsage(
            key=caller.key.name if caller.key else None,
            window_s=WINDOW_S,
            request_count=requests,
            request_limit=caller.limits.requests,
            character_count=characters,
            character_limit=caller.limits.characters,
            total_requests=totals.requests if totals else None,
            total_characters=totals.characters if totals else None,
            total_rate_limited=totals.rate_limited if totals else None,
        )

    return router


class LibreTranslateError(BaseModel):
    error: str


def document_access(app: FastAPI, access: Access) -> None:
    """State 401/403/429 and the key schemes in the OpenAPI document, where they can happen."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
        components["LibreTranslateError"] = LibreTranslateError.model_json_schema()
        if access.keys_required:
            schema["components"]["securitySchemes"] = {
                "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            }
        for path, operations in schema.get("paths", {}).items():
            if is_exempt(path):
                continue
            openai_style = is_openai_style(path)
            ref = "ErrorResponse" if openai_style else "LibreTranslateError"
            content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if access.keys_required:
                    _describe_body_key(operation)
                    operation["security"] = (
                        [{"Bearer": []}, {"ApiKeyQuery": []}]
                        if openai_style
                        else [{"ApiKeyQuery": []}]
                    )
                    status = "401" if openai_style else "403"
                    responses[status] = {
                        "description": "No API key, or one the service does not know.",
                        "content": content,
                    }
                responses["429"] = {
                    "description": "Over a rate limit (requests or characters per minute); "
                    "the message names it.",
                    "headers": RETRY_AFTER,
                    "content": content,
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_body_key(operation: dict[str, Any]) -> None:
    """A body's `api_key` field (LibreTranslate's) is no longer ignored once keys are on."""
    for media in operation.get("requestBody", {}).get("content", {}).values():
        field = media.get("schema", {}).get("properties", {}).get("api_key")
        if isinstance(field, dict):
            field["description"] = "Your API key (or send it as the api_key query parameter)."


def default_db(store: Path) -> Path:
    """`keys.sqlite` beside the model store."""
    return store.parent / "keys.sqlite"
