"""LibreTranslate compatibility (https://libretranslate.com/docs): `POST /translate` and
`GET /languages` with LibreTranslate's field names and response shapes, so its clients work
against this service unchanged.

Unlike the v1 routes the request is lenient: clients send JSON or urlencoded forms (whose
fields arrive as strings), and unknown fields such as `api_key` are ignored.
"""

# No `from __future__ import annotations`: FastAPI must see the models built inside
# libretranslate_router, not their names as strings.

import json
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_core import PydanticCustomError

from service.api.backends import Backends
from service.api.errors import ApiError, request_id_of
from service.api.experiments import ABTesting, record_choice
from service.api.schemas import BODY_ERRORS, errors, text_input_type
from service.api.segmented import layouts_for, translate_segmented
from service.api.settings import ApiSettings
from service.api.translate import decode_options

LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
}


class LibreTranslateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: Any = Field(description="Text or list of texts.")
    source: str = Field("auto", max_length=16, description="Source code, or `auto`.")
    target: str = Field(max_length=16)
    format: str = Field(
        "text", description="Only `text` is supported.", json_schema_extra={"enum": ["text"]}
    )
    alternatives: int = Field(0, ge=0, description="Extra translations to return per text.")
    api_key: str | None = Field(None, description="Accepted and ignored.")

    @field_validator("format")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":
            raise PydanticCustomError(
                "unsupported_format",
                "Only format 'text' is supported, got {value!r}",
                {"value": value},
            )
        return value

    @property
    def texts(self) -> list[str]:
        return [self.q] if isinstance(self.q, str) else list(self.q)


@lru_cache(maxsize=16)
def libretranslate_request_model(settings: ApiSettings) -> type[LibreTranslateRequest]:
    return create_model(
        "LibreTranslateRequest",
        __base__=LibreTranslateRequest,
        q=(
            text_input_type(settings.max_text_chars, settings.max_items),
            Field(
                description=f"A text or a list of 1 to {settings.max_items} texts, each up to "
                f"{settings.max_text_chars} characters and not blank."
            ),
        ),
        alternatives=(
            int,
            Field(
                0,
                ge=0,
                le=settings.max_beam_size - 1,
                description="Extra translations to return per text.",
            ),
        ),
    )


class LibreTranslateResponse(BaseModel):
    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


async def form_or_json(request: Request) -> Any:
    """LibreTranslate clients send JSON or urlencoded forms; accept both, as LibreTranslate does."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    raw = await request.body()
    if content_type in ("application/json", ""):
        try:
            return json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body",),
                        "msg": "invalid JSON",
                        "ctx": {"error": str(error)},
                    }
                ]
            ) from None
    if content_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ApiError(422, "validation_error", "form body is not UTF-8", "body") from None
        return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type {content_type!r} is not supported; send application/json or "
        "application/x-www-form-urlencoded",
        field="body",
    )


def libretranslate_router(settings: ApiSettings, backends: Backends, ab: ABTesting) -> APIRouter:
    RequestModel = libretranslate_request_model(settings)
    schema = RequestModel.model_json_schema()
    router = APIRouter(tags=["libretranslate"])

    @router.post(
        "/translate",
        response_model=LibreTranslateResponse,
        response_model_exclude_none=True,
        responses=errors(*BODY_ERRORS, 404, 415, 500, 503, 504),
        summary="LibreTranslate-compatible translation",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "application/x-www-form-urlencoded": {"schema": schema},
                },
            }
        },
    )
    async def libretranslate(request: Request, response: Response) -> LibreTranslateResponse:
        data = await form_or_json(request)
        try:
            body = RequestModel.model_validate(data)
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            ) from None
        source = None if body.source == "auto" else body.source
        served, assignment = ab.choose(
            "/translate", request.headers, None, None, source, body.target
        )
        record_choice(request, ab.recorder, served, assignment)
        n_best = body.alternatives + 1
        options = decode_options(
            settings, served, beam_size=None, max_length=None, n_best=n_best, return_alignment=False
        )
        single = isinstance(body.q, str)
        layouts = layouts_for(settings, backends, served, body.texts, field="q", single=single)
        segmented = await translate_segmented(
            backends, served, layouts, options, request_id_of(request), field="q", single=single
        )
        ab.served(request_id_of(request), served, assignment, response)
        best = [text.text(0) for text in segmented.texts]
        others = [
            [text.text(rank) for rank in range(1, min(n_best, text.n_best))]
            for text in segmented.texts
        ]
        return LibreTranslateResponse(
            translatedText=best[0] if single else best,
            alternatives=(others[0] if single else others) if body.alternatives else None,
        )

    @router.get("/languages", response_model=list[Language])
    async def languages() -> list[Language]:
        return [
            Language(code=code, name=LANGUAGE_NAMES.get(code, code), targets=targets)
            for code, targets in backends.catalog.languages().items()
        ]

    return router
