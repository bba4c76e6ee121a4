"""The FastAPI application: routes, request -> job, result -> response. No model code here.

`create_app(settings, backend)` is called once per ingress replica (and by the unit tests with
a fake backend). Request models are built from the settings so that validation and /docs agree
with the configured limits.
"""

# No `from __future__ import annotations`: FastAPI must see the request model classes that are
# built inside create_app, not their names as strings.

import json
import math
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.api.backend import Backend, JobResult, TranslationJob
from service.api.catalog import ServedModel
from service.api.errors import (
    ApiError,
    BodySizeLimitMiddleware,
    CatchAllMiddleware,
    RequestIdMiddleware,
    install_error_handlers,
    request_id_of,
)
from service.api.experiments import (
    DEFAULT_FEEDBACK_CAPACITY,
    ABTesting,
    ExperimentConfig,
    install_ab_routes,
)
from service.api.generation import generation_model_card, install_generation_routes
from service.api.observability import MetricsMiddleware, NullRecorder, Recorder
from service.api.schemas import (
    LANGUAGE_NAMES,
    Alignment,
    Alternative,
    ApiSettings,
    ErrorResponse,
    Health,
    Language,
    LibreTranslateResponse,
    ModelCard,
    ModelList,
    Readiness,
    Timing,
    TranslateResponse,
    TranslationResult,
    Usage,
    libretranslate_request_model,
    translate_request_model,
)
from service.decoding.search import DecodeOptions
from service.decoding.translator import Candidate

API_VERSION = "1.0.0"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown model, version or language pair."},
    413: {"model": ErrorResponse, "description": "Request body too large."},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the culprit."},
    503: {"model": ErrorResponse, "description": "Overloaded; retry after `Retry-After` seconds."},
    504: {"model": ErrorResponse, "description": "The translation took too long."},
}

DESCRIPTION = """\
Spanish -> English machine translation with two models side by side: a Transformer and an
RNNSearch (Bahdanau et al. 2014) baseline. Requests arriving together are decoded in shared,
length-sorted batches.

Every error is `{"error": {"type", "message", "field"}}`; every response carries an
`X-Request-ID` header (yours, if you sent a valid one).
"""


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def decode_options(
    settings: ApiSettings,
    model: ServedModel,
    *,
    beam_size: int | None,
    max_length: int | None,
    n_best: int,
    return_alignment: bool,
) -> DecodeOptions:
    """Fill in defaults and apply the model's own limit on output length."""
    limit = min(settings.max_length_limit, model.max_output_tokens or settings.max_length_limit)
    if max_length is not None and max_length > limit:
        raise ApiError(
            422,
            "validation_error",
            f"max_length: must be at most {limit} for model {model.id}",
            field="max_length",
        )
    return DecodeOptions(
        beam_size=beam_size if beam_size is not None else max(settings.default_beam_size, n_best),
        n_best=n_best,
        max_length=max_length
        if max_length is not None
        else min(settings.default_max_length, limit),
        return_alignment=return_alignment,
    )


def _check_items(result: JobResult) -> None:
    for index, item in enumerate(result.items):
        if item.error is not None or item.translation is None:
            raise ApiError(
                500,
                "internal_error",
                f"text[{index}] could not be translated: {item.error or 'no result'}",
                field=f"text[{index}]",
            )


def _alignment(candidate: Candidate) -> Alignment | None:
    if candidate.alignment is None:
        return None
    return Alignment(
        source_tokens=candidate.alignment.source_tokens,
        target_tokens=candidate.alignment.target_tokens,
        weights=candidate.alignment.weights,
    )


def build_response(
    request_id: str,
    model: ServedModel,
    result: JobResult,
    *,
    n_best: int,
    return_scores: bool,
    return_alignment: bool,
    started: float,
) -> TranslateResponse:
    translations = []
    for item in result.items:
        translation = item.translation
        best = translation.best
        alternatives = None
        if n_best > 1:
            alternatives = [
                Alternative(text=c.text, score=_finite(c.score) if return_scores else None)
                for c in translation.candidates[1:n_best]
            ]
        translations.append(
            TranslationResult(
                text=best.text,
                score=_finite(best.score) if return_scores else None,
                alternatives=alternatives,
                alignment=_alignment(best) if return_alignment else None,
                input_tokens=translation.input_tokens,
                output_tokens=best.tokens,
            )
        )
    input_tokens = sum(t.input_tokens for t in translations)
    output_tokens = sum(t.output_tokens for t in translations)
    return TranslateResponse(
        id=request_id,
        model=result.model_id,
        version=result.version,
        source=model.source,
        target=model.target,
        translations=translations,
        usage=Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        ),
        timing=Timing(
            queue_ms=result.queue_s * 1000,
            compute_ms=result.compute_s * 1000,
            total_ms=(time.perf_counter() - started) * 1000,
            batch_sizes=[item.batch_size for item in result.items],
        ),
    )


async def _form_or_json(request: Request) -> Any:
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


def create_app(
    settings: ApiSettings,
    backend: Backend,
    *,
    behind_serve_proxy: bool = False,
    experiments: Sequence[ExperimentConfig] = (),
    recorder: Recorder | None = None,
    feedback_capacity: int = DEFAULT_FEEDBACK_CAPACITY,
) -> FastAPI:
    """`behind_serve_proxy`: Ray Serve's proxy sets and echoes X-Request-ID itself.
    `experiments`, `recorder`, `feedback_capacity`: see service/api/experiments.py and
    service/api/observability.py."""
    TranslateRequestModel = translate_request_model(settings)
    LibreTranslateRequestModel = libretranslate_request_model(settings)
    catalog = backend.catalog
    recorder = recorder or NullRecorder()
    ab = ABTesting(experiments, catalog, recorder, feedback_capacity)

    app = FastAPI(
        title="Spanish-English translation service",
        version=API_VERSION,
        description=DESCRIPTION,
    )
    install_error_handlers(app)
    # add_middleware wraps: the last added runs first. Request id outermost so every response,
    # a 413 or a 500 included, carries it.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(MetricsMiddleware, recorder=recorder, routes_of=app)
    app.add_middleware(RequestIdMiddleware, proxy_owns_header=behind_serve_proxy)

    @app.post(
        "/v1/translate",
        response_model=TranslateResponse,
        responses=ERROR_RESPONSES,
        tags=["translation"],
        summary="Translate one text or a list of texts",
    )
    async def translate(
        body: TranslateRequestModel, request: Request, response: Response
    ) -> TranslateResponse:
        started = time.perf_counter()
        served, assignment = ab.choose(
            request, "/v1/translate", body.model, body.version, body.source, body.target
        )
        options = decode_options(
            settings,
            served,
            beam_size=body.beam_size,
            max_length=body.max_length,
            n_best=body.n_best,
            return_alignment=body.return_alignment,
        )
        request_id = request_id_of(request)
        result = await backend.translate(served, TranslationJob(body.texts, options, request_id))
        _check_items(result)
        ab.served(request_id, served, assignment, response)
        answer = build_response(
            request_id,
            served,
            result,
            n_best=body.n_best,
            return_scores=body.return_scores,
            return_alignment=body.return_alignment,
            started=started,
        )
        if assignment is not None:
            answer.experiment, answer.variant = assignment.experiment, assignment.variant
        return answer

    @app.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models() -> ModelList:
        statuses = await backend.status()
        cards = []
        for model in catalog.models:
            status = statuses.get(model.key)
            cards.append(
                ModelCard(
                    id=model.id,
                    name=model.name,
                    version=model.version,
                    arch=model.arch,
                    source=model.source,
                    target=model.target,
                    parameters=model.parameters,
                    metrics=model.metrics,
                    default=model.default,
                    status="ready" if status and status.ready else "unavailable",
                    serving=status.serving if status else {},
                    created=model.created,
                )
            )
        if (generation := getattr(backend, "generation", None)) is not None:
            cards.append(await generation_model_card(generation))
        return ModelList(models=cards)

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="Process is alive")
    async def healthz() -> Health:
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["operations"],
        summary="Every served model is loaded",
        responses={503: {"model": Readiness, "description": "Some model is not loaded."}},
    )
    async def readyz():
        statuses = await backend.status()
        models = {
            m.label: bool(statuses.get(m.key) and statuses[m.key].ready) for m in catalog.models
        }
        if (generation := getattr(backend, "generation", None)) is not None:
            models[generation.model.label] = (await generation.status()).ready
        body = Readiness(ready=all(models.values()), models=models)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    lt_schema = LibreTranslateRequestModel.model_json_schema()

    @app.post(
        "/translate",
        response_model=LibreTranslateResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        tags=["libretranslate"],
        summary="LibreTranslate-compatible translation",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": lt_schema},
                    "application/x-www-form-urlencoded": {"schema": lt_schema},
                },
            }
        },
    )
    async def libretranslate(request: Request, response: Response) -> LibreTranslateResponse:
        data = await _form_or_json(request)
        try:
            body = LibreTranslateRequestModel.model_validate(data)
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            ) from None
        source = None if body.source == "auto" else body.source
        served, assignment = ab.choose(request, "/translate", None, None, source, body.target)
        n_best = body.alternatives + 1
        options = decode_options(
            settings, served, beam_size=None, max_length=None, n_best=n_best, return_alignment=False
        )
        result = await backend.translate(
            served, TranslationJob(body.texts, options, request_id_of(request))
        )
        _check_items(result)
        ab.served(request_id_of(request), served, assignment, response)
        best = [item.translation.best.text for item in result.items]
        others = [[c.text for c in item.translation.candidates[1:n_best]] for item in result.items]
        single = isinstance(body.q, str)
        return LibreTranslateResponse(
            translatedText=best[0] if single else best,
            alternatives=(others[0] if single else others) if body.alternatives else None,
        )

    @app.get("/languages", response_model=list[Language], tags=["libretranslate"])
    async def languages() -> list[Language]:
        return [
            Language(code=code, name=LANGUAGE_NAMES.get(code, code), targets=targets)
            for code, targets in catalog.languages().items()
        ]

    # A/B feedback and side-by-side comparison (/v1/feedback, /v1/compare).
    install_ab_routes(
        app,
        settings,
        backend,
        ab,
        decode_options=decode_options,
        check_items=_check_items,
        build_response=build_response,
    )

    # Text generation (/v1/generate, /v1/completions); see service/api/generation.py.
    install_generation_routes(app, getattr(backend, "generation", None))

    return app
