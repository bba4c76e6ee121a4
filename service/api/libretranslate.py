"""LibreTranslate compatibility (https://libretranslate.com/docs): `POST /translate`,
`POST /detect`, `GET /languages`, `GET /frontend/settings` and `GET /spec` (and, in
`service.api.files`, `POST /translate_file`) with LibreTranslate's
field names, response shapes and error shape, so its clients and its web front end work against
this service unchanged.

Unlike the v1 routes the request is lenient, as LibreTranslate's server is: every field may
come in the query string, a JSON body or a urlencoded form (the body's wins), form fields
arrive as strings, `q` is a string or a list, and unknown fields are ignored (`api_key` is
read by `service.api.access` when keys are on). Errors are `{"error": "..."}`: 400 for a bad
request (a missing or invalid field, unreadable JSON), 404 for a language no served model
translates (the pair, or what `auto` detected: as on /v1), 403 and 429 from
`service.api.access`, 503/504/500 as on /v1.
"""

# No `from __future__ import annotations`: FastAPI must see the models built inside
# libretranslate_router, not their names as strings.

import json
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.api.backends import Backends
from service.api.detect import (
    AUTO,
    DetectedLanguage,
    SourceChoice,
    detect_sources,
    detected_language,
    detector_for,
    percent,
)
from service.api.errors import ApiError, api_error, request_id_of, validation_error_body
from service.api.experiments import ABTesting, record_choice
from service.api.markup import Pieces
from service.api.schemas import text_input_type
from service.api.segmented import (
    TextOutcome,
    layouts_for,
    translate_segmented,
    unchanged_outcome,
)
from service.api.settings import ApiSettings
from service.api.translate import decode_options
from service.contracts import ServiceError
from service.text.segment import segment_text

LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
}


# What /translate_file takes (service/api/files.py), by extension, and the type served back.
FILE_FORMATS = {".txt": "text/plain", ".html": "text/html", ".htm": "text/html"}


class LibreTranslateError(BaseModel):
    error: str


LT_ERRORS = {
    400: "Invalid request: a missing or invalid field, or a body that cannot be read.",
    404: "No served model translates this language pair, or the language `auto` detected.",
    403: "Banned or invalid API key (when keys are required).",
    413: "The file, or its text, is larger than the limit.",
    429: "Slow down: over the rate limit.",
    500: "Translation failed.",
    503: "Overloaded or the model is unavailable; retry after `Retry-After` seconds.",
    504: "The model took longer than the request timeout.",
}


def lt_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": LibreTranslateError, "description": LT_ERRORS[s]} for s in statuses}


def lt_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def as_lt_error(error: Exception) -> JSONResponse:
    """Our errors in LibreTranslate's shape: a request at fault is a 400, as there."""
    if isinstance(error, ServiceError):
        error = api_error(error)
    if isinstance(error, ApiError):
        # An unsupported language (pair) stays a 404, as on /v1; a malformed request is a 400.
        status = 400 if error.status in (409, 415, 422) else error.status
        return lt_error(status, error.message, error.headers)
    if isinstance(error, ValidationError):
        body = validation_error_body(error.errors(include_url=False))
        return lt_error(400, body["error"]["message"])
    raise error


class LibreTranslateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: Any = Field(description="Text or list of texts.")
    source: str = Field("auto", max_length=16, description="Source code, or `auto` to detect.")
    target: str = Field(max_length=16)
    format: str = Field(
        "text",
        description="`text`, or `html`: `q` is HTML, translated with its markup kept.",
        json_schema_extra={"enum": ["text", "html"]},
    )
    alternatives: int = Field(0, ge=0, description="Extra translations to return per text.")
    api_key: str | None = Field(None, description="Checked when keys are required.")

    @field_validator("alternatives", mode="before")
    @classmethod
    def _count_not_bool(cls, value: Any) -> Any:
        # Lax enough for form fields ("2"), but true/false are not counts.
        if isinstance(value, bool):
            raise PydanticCustomError("int_type", "Input should be a valid integer")
        return value

    @field_validator("format")
    @classmethod
    def _text_or_html(cls, value: str) -> str:
        if value not in ("text", "html"):
            raise PydanticCustomError(
                "unsupported_format",
                "format must be 'text' or 'html', got {value!r}",
                {"value": value},
            )
        return value

    @property
    def texts(self) -> list[str]:
        return [self.q] if isinstance(self.q, str) else list(self.q)


@lru_cache(maxsize=16)
def libretranslate_request_model(
    settings: ApiSettings, sources: tuple[str, ...] = (), targets: tuple[str, ...] = ()
) -> type[LibreTranslateRequest]:
    """The request with the configured limits and, when given, the served `sources` (and
    `auto`) and `targets` as the only languages its schema and its validation accept."""
    languages: dict[str, Any] = {}
    if sources:
        languages["source"] = (
            Literal[(AUTO, *sources)],
            Field(AUTO, description="Source language, or `auto` to detect it."),
        )
    if targets:
        languages["target"] = (Literal[targets], Field(description="Target language."))
    return create_model(
        "LibreTranslateRequest",
        __base__=LibreTranslateRequest,
        **languages,
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
    detectedLanguage: DetectedLanguage | list[DetectedLanguage | None] | None = Field(
        None, description="With `source: auto`: per text when `q` is a list."
    )


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: Any = Field(description="Text or list of texts.")
    api_key: str | None = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


async def form_or_json(request: Request) -> Any:
    """The fields of a LibreTranslate request: its query string, then its JSON or urlencoded
    form body over it (LibreTranslate's server reads all three)."""
    fields: dict[str, Any] = _single(parse_qs(request.url.query, keep_blank_values=True))
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    raw = await request.body()
    if not raw:
        return fields or None
    if content_type in ("application/json", ""):
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(
                400, "bad_request", f"request body is not valid JSON ({error})"
            ) from None
        return {**fields, **data} if isinstance(data, dict) else data
    if content_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "form body is not UTF-8", "body") from None
        return {**fields, **_single(form)}
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type {content_type!r} is not supported; send application/json or "
        "application/x-www-form-urlencoded",
        field="body",
    )


def _single(fields: dict[str, list[str]]) -> dict[str, Any]:
    return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }


async def translate_texts(
    settings: ApiSettings,
    backends: Backends,
    ab: ABTesting,
    request: Request,
    response: Response,
    texts: list[str],
    source: str,
    target: str,
    *,
    html: bool,
    n_best: int,
    single: bool,
    field: str = "q",
) -> tuple[list[TextOutcome], SourceChoice]:
    """Each text translated from `source` (or the language detected, per text, with `auto`)
    into `target`: what `/translate` and `/translate_file` answer with. Texts already in the
    target come back as they are; texts in several languages each go to their model."""
    pieces = Pieces.of(texts, html, field)
    if source == target:  # nothing to do: every text is already in the target
        choice = SourceChoice([], {}, frozenset(range(len(texts))))
    elif source == AUTO:
        detector = detector_for(backends.catalog)
        choice = detect_sources(
            detector, pieces.readable(texts), target, field=field, single=single
        )
    else:
        choice = SourceChoice([], {source: list(range(len(texts)))}, frozenset())
    outcomes: list[TextOutcome | None] = [None] * len(pieces.texts)
    for piece in pieces.of_texts(choice.unchanged):
        outcomes[piece] = unchanged_outcome(segment_text(pieces.texts[piece], target))
    # One job per source language (texts in several languages each go to their model).
    for number, (language, indices) in enumerate(choice.groups.items()):
        served, assignment = ab.choose("/translate", request.headers, None, None, language, target)
        if number == 0:
            record_choice(request, ab.recorder, served, assignment)
        options = decode_options(
            settings, served, beam_size=None, max_length=None, n_best=n_best, return_alignment=False
        )
        group = pieces.of_texts(set(indices))
        others = frozenset(range(len(pieces.texts))) - group
        layouts = layouts_for(
            settings,
            backends,
            served,
            pieces.texts,
            field=field,
            single=single,
            unchanged=others,
            owner=pieces.owner,
        )
        segmented = await translate_segmented(
            backends,
            served,
            layouts,
            options,
            request_id_of(request),
            field=field,
            single=single,
            unchanged=others,
            owner=pieces.owner,
        )
        if number == 0:
            ab.served(request_id_of(request), served, assignment, response)
        for piece in group:
            outcomes[piece] = segmented.texts[piece]
    return pieces.assemble(outcomes), choice


def libretranslate_router(
    settings: ApiSettings, backends: Backends, ab: ABTesting, *, keys_required: bool = False
) -> APIRouter:
    catalog = backends.catalog
    sources = tuple(sorted({m.source for m in catalog.models}))
    targets = tuple(sorted({m.target for m in catalog.models}))
    RequestModel = libretranslate_request_model(settings, sources, targets)
    DetectModel = create_model(
        "LibreTranslateDetectRequest",
        __base__=DetectRequest,
        q=(
            text_input_type(settings.max_text_chars, settings.max_items),
            Field(description="A text or a list of texts."),
        ),
    )
    router = APIRouter(tags=["libretranslate"])

    async def translate(request: Request, response: Response) -> LibreTranslateResponse:
        body = RequestModel.model_validate(await form_or_json(request))
        single = isinstance(body.q, str)
        n_best = body.alternatives + 1
        outcomes, choice = await translate_texts(
            settings,
            backends,
            ab,
            request,
            response,
            body.texts,
            body.source,
            body.target,
            html=body.format == "html",
            n_best=n_best,
            single=single,
        )
        best = [text.text(0) for text in outcomes]
        alternatives = [
            [text.text(rank) for rank in range(1, min(n_best, text.n_best))] for text in outcomes
        ]
        detected = None
        if choice.detections:
            detected = [detected_language(d) for d in choice.detections]
        return LibreTranslateResponse(
            translatedText=best[0] if single else best,
            alternatives=(alternatives[0] if single else alternatives)
            if body.alternatives
            else None,
            detectedLanguage=(detected[0] if single else detected) if detected else None,
        )

    @router.post(
        "/translate",
        response_model=LibreTranslateResponse,
        response_model_exclude_none=True,
        responses=lt_errors(400, 403, 404, 429, 500, 503, 504),
        summary="LibreTranslate-compatible translation",
        openapi_extra=_schema_of(RequestModel),
    )
    async def libretranslate(request: Request, response: Response) -> Any:
        try:
            return await translate(request, response)
        except (ApiError, ServiceError, ValidationError) as error:
            return as_lt_error(error)

    @router.post(
        "/detect",
        response_model=list[DetectedLanguage] | list[list[DetectedLanguage]],
        responses=lt_errors(400, 403, 429),
        summary="LibreTranslate-compatible language detection",
        openapi_extra=_schema_of(DetectModel),
    )
    async def detect(request: Request) -> Any:
        try:
            q = DetectModel.model_validate(await form_or_json(request)).q
        except (ApiError, ValidationError) as error:
            return as_lt_error(error)
        detector = detector_for(backends.catalog)

        def ranked(text: str) -> list[DetectedLanguage]:
            detection = detector.detect(text)
            if detection.language is None and detection.detected is not None:
                return [
                    DetectedLanguage(
                        language=detection.detected, confidence=percent(detection.confidence)
                    )
                ]
            return [
                DetectedLanguage(language=code, confidence=percent(value))
                for code, value in detection.candidates
            ]

        return ranked(q) if isinstance(q, str) else [ranked(text) for text in q]

    @router.get("/languages", response_model=list[Language])
    async def languages() -> list[Language]:
        return [
            Language(code=code, name=LANGUAGE_NAMES.get(code, code), targets=targets)
            for code, targets in backends.catalog.languages().items()
        ]

    @router.get("/frontend/settings", summary="LibreTranslate's web front end settings")
    async def frontend_settings() -> dict[str, Any]:
        languages = backends.catalog.languages()
        default = backends.catalog.resolve()
        return {
            "charLimit": settings.max_request_chars,
            "frontendTimeout": 500,
            # LibreTranslate's front end and clients read these to ask for a key.
            "apiKeys": keys_required,
            "keyRequired": keys_required,
            "suggestions": False,
            "filesTranslation": True,
            "supportedFilesFormat": list(FILE_FORMATS),
            "language": {
                "source": {"code": AUTO, "name": "Auto Detect"},
                "target": {
                    "code": default.target,
                    "name": LANGUAGE_NAMES.get(default.target, default.target),
                },
            },
            "languages": sorted(languages),
        }

    @router.get("/spec", summary="The OpenAPI document, where LibreTranslate serves its spec")
    async def spec(request: Request) -> dict[str, Any]:
        return request.app.openapi()

    return router
