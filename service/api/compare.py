"""`POST /v1/compare`: one input through several models at once, each model's output and
latency side by side; a model that fails is reported beside the others' answers."""

# No `from __future__ import annotations`: FastAPI must see the request model built inside
# compare_router, not its name as a string.

import asyncio
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.errors import ApiError, api_error, request_id_of
from service.api.markup import Pieces
from service.api.schemas import (
    BODY_ERRORS,
    MODEL_NAME,
    ErrorDetail,
    LanguageCode,
    errors,
    json_int,
    text_input_type,
)
from service.api.segmented import layouts_for, translate_segmented
from service.api.settings import ApiSettings
from service.api.translate import (
    Timing,
    TranslationResult,
    Usage,
    build_response,
    decode_options,
    max_length_limit,
)
from service.contracts import ServedModel, ServiceError
from service.decoding.search import DecodeOptions

# A model as in a translate request, optionally pinned to a version: `transformer@2`.
MODEL_AT_VERSION = MODEL_NAME.removesuffix("$") + r"(?:@[1-9][0-9]{0,8})?$"


class CompareRequest(BaseModel):
    """`POST /v1/compare`. Use `compare_request_model(settings)` for the configured limits."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "En el principio creó Dios los cielos y la tierra."},
                {"text": ["Hola.", "Buenos días."], "models": ["transformer", "rnnsearch@1"]},
            ]
        },
    )

    text: Any = Field(description="A string or a list of strings to translate.")
    models: list[Annotated[str, StringConstraints(pattern=MODEL_AT_VERSION)]] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Models to compare, as `transformer`, `es-en/rnnsearch` or `transformer@1`, "
        "each at most once; omitted means every served model (newest version of each).",
    )
    source: LanguageCode | None = None
    target: LanguageCode | None = None
    beam_size: json_int(ge=1) | None = None
    max_length: json_int(ge=1) | None = None
    return_scores: bool = False
    format: Literal["text", "html"] = Field(
        "text", description="`html`: each text is HTML, translated as `/v1/translate` does."
    )

    @property
    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


@lru_cache(maxsize=16)
def compare_request_model(
    settings: ApiSettings, longest: int | None = None
) -> type[CompareRequest]:
    return create_model(
        "CompareRequest",
        __base__=CompareRequest,
        text=(text_input_type(settings.max_text_chars, settings.max_items), Field()),
        beam_size=(json_int(1, settings.max_beam_size) | None, None),
        max_length=(json_int(1, longest or settings.max_length_limit) | None, None),
    )


class ComparedModel(BaseModel):
    model: str
    version: int
    arch: str
    source: str
    target: str
    latency_ms: float = Field(description="At the API, from dispatch to this model's answer.")
    translations: list[TranslationResult] | None = Field(
        None, description="One per input text; null when this model failed (see `error`)."
    )
    usage: Usage | None = None
    timing: Timing | None = None
    error: ErrorDetail | None = Field(
        None, description="Why this model gave no answer (overloaded, timeout); others still do."
    )


class CompareResponse(BaseModel):
    id: str
    results: list[ComparedModel] = Field(description="One per model, in the order asked.")


def _split_model(entry: str) -> tuple[str, int | None]:
    name, _, version = entry.partition("@")
    return name, int(version) if version else None


def resolve_compared(
    catalog: Catalog, entries: Sequence[str] | None, source: str | None, target: str | None
) -> list[ServedModel]:
    """The models a compare request names (or all served ones), each at most once."""
    if entries is None:
        newest: dict[str, ServedModel] = {}
        for model in catalog.models:  # newest version first within an id
            if model.id not in newest and source in (None, model.source):
                if target in (None, model.target):
                    newest[model.id] = model
        if not newest:
            catalog.resolve(None, None, source, target)  # raises the language-pair 404
        return list(newest.values())
    chosen: list[ServedModel] = []
    for index, entry in enumerate(entries):
        name, version = _split_model(entry)
        try:
            served = catalog.resolve(name, version, source, target)
        except ApiError as error:
            if error.field in ("model", "version"):
                error.field = f"models[{index}]"
            raise
        if served in chosen:
            raise ApiError(
                422,
                "validation_error",
                f"models[{index}]: {served.label} is listed twice",
                field=f"models[{index}]",
            )
        chosen.append(served)
    return chosen


def compare_router(settings: ApiSettings, backends: Backends) -> APIRouter:
    CompareRequestModel = compare_request_model(
        settings, max_length_limit(settings, backends.catalog.models)
    )
    router = APIRouter(tags=["experiments"])

    @router.post(
        "/v1/compare",
        response_model=CompareResponse,
        responses=errors(*BODY_ERRORS, 404),
        summary="Translate the same input with several models, side by side",
    )
    async def compare(body: CompareRequestModel, request: Request) -> CompareResponse:
        models = resolve_compared(backends.catalog, body.models, body.source, body.target)
        pieces = Pieces.of(body.texts, body.format == "html")
        request_id = request_id_of(request)
        jobs = [
            (
                model,
                decode_options(
                    settings,
                    model,
                    beam_size=body.beam_size,
                    max_length=body.max_length,
                    n_best=1,
                    return_alignment=False,
                ),
            )
            for model in models
        ]

        def failed(model: ServedModel, error: ApiError, started: float) -> ComparedModel:
            return ComparedModel(
                model=model.id,
                version=model.version,
                arch=model.arch,
                source=model.source,
                target=model.target,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=ErrorDetail(type=error.type, message=error.message, field=error.field),
            )

        async def run(model: ServedModel, options: DecodeOptions) -> ComparedModel:
            started = time.perf_counter()
            try:
                layouts = layouts_for(settings, backends, model, pieces.texts, owner=pieces.owner)
                result = pieces.assemble_result(
                    await translate_segmented(
                        backends, model, layouts, options, request_id, owner=pieces.owner
                    )
                )
            except ServiceError as error:
                return failed(model, api_error(error), started)
            except ApiError as error:
                return failed(model, error, started)
            answer = build_response(
                request_id,
                model,
                result,
                n_best=1,
                return_scores=body.return_scores,
                return_alignment=False,
                started=started,
            )
            return ComparedModel(
                model=answer.model,
                version=answer.version,
                arch=model.arch,
                source=answer.source,
                target=answer.target,
                latency_ms=answer.timing.total_ms,
                translations=answer.translations,
                usage=answer.usage,
                timing=answer.timing,
            )

        results = await asyncio.gather(*(run(model, options) for model, options in jobs))
        return CompareResponse(id=request_id, results=list(results))

    return router
