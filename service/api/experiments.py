"""A/B experiments, user feedback and side-by-side comparison.

An experiment splits the requests that name no model between variants (a model, optionally a
version) by weight. Assignment is sticky: the experiment name and the user id from a request
header hash to a point in [0, 1) that falls into one variant's share of the cumulative weights,
so a user keeps their variant on every ingress replica and across restarts, with no state kept.
A request without the header is assigned at random (and counted as such). A request that names a
`model` or `version` bypasses the experiment. The variant that served is reported in the
response (`experiment`, `variant` fields; `X-Experiment` / `X-Variant` headers).

Feedback (`POST /v1/feedback`) refers to an earlier response by its request id. The ingress
remembers which model and variant served each of its most recent `feedback_capacity`
translations in memory (an LRU map, per ingress replica): an id it no longer remembers, or one
another ingress replica served, is answered 404, and each request can be rated once (409 after).

`POST /v1/compare` sends one input through several models at once and returns each model's
output and latency side by side.
"""

# No `from __future__ import annotations`: FastAPI must see the compare request model built in
# install_ab_routes, not its name as a string.

import asyncio
import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, field_validator

from service.api.backend import Backend, JobResult, TranslationJob
from service.api.catalog import Catalog, ServedModel
from service.api.errors import ApiError, request_id_of
from service.api.observability import Recorder, label_request, variant_labels
from service.api.schemas import (
    LANGUAGE_CODE,
    MODEL_NAME,
    REQUEST_ID,
    ApiSettings,
    ErrorDetail,
    ErrorResponse,
    Timing,
    TranslationResult,
    Usage,
    text_input_type,
)

logger = logging.getLogger("service.api")

DEFAULT_FEEDBACK_CAPACITY = 50_000
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
HEADER_NAME = r"^[A-Za-z0-9-]{1,64}$"
# A model as in a translate request, optionally pinned to a version: `transformer@2`.
MODEL_AT_VERSION = MODEL_NAME.removesuffix("$") + r"(?:@[1-9][0-9]{0,8})?$"
MAX_USER_ID_CHARS = 256  # longer header values are hashed as their first 256 characters


# Configuration (AppArgs.experiments).


class VariantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=MODEL_NAME, description="Short name or full id of a served model.")
    version: int | None = Field(None, ge=1, description="None: the newest served version.")
    weight: float = Field(gt=0, description="Relative share of the traffic.")
    name: str | None = Field(
        None, pattern=NAME, description="Reported name; default the model (`model@version`)."
    )

    @property
    def label(self) -> str:
        return self.name or (self.model if self.version is None else f"{self.model}@{self.version}")


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    variants: list[VariantConfig] = Field(min_length=1)
    user_header: str = Field(
        "X-User-ID", pattern=HEADER_NAME, description="The header whose value is the user id."
    )
    routes: list[Literal["/v1/translate", "/translate"]] = Field(
        default_factory=lambda: ["/v1/translate"],
        min_length=1,
        description="Routes this experiment splits; at most one enabled experiment per route.",
    )
    enabled: bool = True

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: list[VariantConfig]) -> list[VariantConfig]:
        labels = [v.label for v in variants]
        if len(set(labels)) != len(labels):
            raise ValueError(f"variant names must be unique, got {labels}; set `name:`")
        return variants


# Assignment.


@dataclass(frozen=True)
class Variant:
    name: str
    model: ServedModel
    upper: float  # this variant's share ends here on [0, 1)


@dataclass(frozen=True)
class Assignment:
    experiment: str
    variant: str
    model: ServedModel
    sticky: bool  # from the user header; else random


def user_point(experiment: str, user: str) -> float:
    """Where a user falls on [0, 1) in an experiment: stable, and independent across
    experiments (the name salts the hash)."""
    digest = hashlib.sha256(f"{experiment}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class Experiment:
    def __init__(self, config: ExperimentConfig, catalog: Catalog, rng: random.Random):
        self.name = config.name
        self.header = config.user_header
        self.routes = tuple(config.routes)
        self._rng = rng
        total = sum(v.weight for v in config.variants)
        variants, cumulative = [], 0.0
        for spec in config.variants:
            try:
                model = catalog.resolve(spec.model, spec.version)
            except ApiError as error:
                raise ValueError(f"experiment {config.name!r}: {error.message}") from None
            cumulative += spec.weight / total
            variants.append(Variant(spec.label, model, cumulative))
        variants[-1] = Variant(variants[-1].name, variants[-1].model, 1.0)  # no rounding gap
        self.variants = tuple(variants)

    def pick(self, point: float) -> Variant:
        for variant in self.variants:
            if point < variant.upper:
                return variant
        return self.variants[-1]

    def assign(self, user: str | None) -> Assignment:
        if user:
            variant = self.pick(user_point(self.name, user[:MAX_USER_ID_CHARS]))
        else:
            variant = self.pick(self._rng.random())
        return Assignment(self.name, variant.name, variant.model, sticky=bool(user))


class ExperimentRouter:
    """The enabled experiments of one app, by route; builds (and so validates) them all."""

    def __init__(
        self,
        configs: Sequence[ExperimentConfig],
        catalog: Catalog,
        rng: random.Random | None = None,
    ):
        rng = rng or random.Random()
        self.by_route: dict[str, Experiment] = {}
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be unique, got {names}")
        for config in configs:
            experiment = Experiment(config, catalog, rng)
            if not config.enabled:
                continue
            for route in config.routes:
                if route in self.by_route:
                    raise ValueError(
                        f"experiments {self.by_route[route].name!r} and {config.name!r} both "
                        f"split {route}; enable one"
                    )
                self.by_route[route] = experiment


def check_experiments(configs: Sequence[ExperimentConfig], models: Sequence[ServedModel]) -> None:
    """Raise ValueError, at build time, for an experiment that names a model not served."""
    ExperimentRouter(configs, Catalog(list(models)))


# What each request was served by, for feedback.


@dataclass
class ServedRecord:
    model: ServedModel
    experiment: str | None
    variant: str | None
    rated: bool = False


class ServedLedger:
    """The last `capacity` request ids and who served them (an LRU map, per ingress replica)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._records: OrderedDict[str, ServedRecord] = OrderedDict()

    def remember(self, request_id: str, record: ServedRecord) -> None:
        if self.capacity <= 0:
            return
        self._records[request_id] = record
        self._records.move_to_end(request_id)
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def get(self, request_id: str) -> ServedRecord | None:
        return self._records.get(request_id)

    def __len__(self) -> int:
        return len(self._records)


class ABTesting:
    """Per app: picks the model for a request (experiment or not), remembers who served it."""

    def __init__(
        self,
        experiments: Sequence[ExperimentConfig],
        catalog: Catalog,
        recorder: Recorder,
        feedback_capacity: int = DEFAULT_FEEDBACK_CAPACITY,
        rng: random.Random | None = None,
    ):
        self.catalog = catalog
        self.recorder = recorder
        self.router = ExperimentRouter(experiments, catalog, rng)
        self.ledger = ServedLedger(feedback_capacity)

    def choose(
        self,
        request: Request,
        route: str,
        model: str | None,
        version: int | None,
        source: str | None,
        target: str | None,
        *,
        source_field: str = "source",
        target_field: str = "target",
    ) -> tuple[ServedModel, Assignment | None]:
        """The model for this request and, when an experiment chose it, the assignment.

        Labels the request's metrics with the choice. A request naming a model or version, or a
        language pair the variant does not serve, is outside the experiment.
        """
        experiment = self.router.by_route.get(route)
        assignment = None
        if experiment is not None and model is None and version is None:
            candidate = experiment.assign(request.headers.get(experiment.header, "").strip())
            if (source in (None, candidate.model.source)) and (
                target in (None, candidate.model.target)
            ):
                assignment = candidate
        if assignment is None:
            served = self.catalog.resolve(
                model, version, source, target, source_field=source_field, target_field=target_field
            )
            label_request(request, served)
            return served, None
        label_request(request, assignment.model, assignment.experiment, assignment.variant)
        self.recorder.assignment(
            {
                **variant_labels(assignment.model, assignment.experiment, assignment.variant),
                "assignment": "sticky" if assignment.sticky else "random",
            }
        )
        return assignment.model, assignment

    def served(
        self,
        request_id: str,
        model: ServedModel,
        assignment: Assignment | None,
        response: Response | None = None,
    ) -> None:
        """After a successful answer: remember it for feedback, name the variant in headers."""
        experiment = assignment.experiment if assignment else None
        variant = assignment.variant if assignment else None
        self.ledger.remember(request_id, ServedRecord(model, experiment, variant))
        if response is not None and assignment is not None:
            response.headers["X-Experiment"] = assignment.experiment
            response.headers["X-Variant"] = assignment.variant


# Feedback and compare: request and response models.


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"examples": [{"request_id": "3f2b9c...", "rating": 4}]},
    )

    request_id: str = Field(
        pattern=REQUEST_ID, description="The `id` (X-Request-ID) of the response being rated."
    )
    rating: int = Field(ge=1, le=5, description="1 (useless) to 5 (perfect).")
    comment: str | None = Field(
        None, max_length=2000, description="Free text; written to the service log only."
    )


class FeedbackResponse(BaseModel):
    request_id: str
    rating: int
    model: str = Field(description="The model that served the rated request.")
    version: int
    experiment: str | None = None
    variant: str | None = None


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
        description="Models to compare, as `transformer`, `es-en/rnnsearch` or `transformer@1`; "
        "omitted means every served model (newest version of each).",
    )
    source: Annotated[str, StringConstraints(pattern=LANGUAGE_CODE)] | None = None
    target: Annotated[str, StringConstraints(pattern=LANGUAGE_CODE)] | None = None
    beam_size: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1)
    return_scores: bool = False

    @property
    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


@lru_cache(maxsize=16)
def compare_request_model(settings: ApiSettings) -> type[CompareRequest]:
    return create_model(
        "CompareRequest",
        __base__=CompareRequest,
        text=(text_input_type(settings.max_text_chars, settings.max_items), Field()),
        beam_size=(int | None, Field(None, ge=1, le=settings.max_beam_size)),
        max_length=(int | None, Field(None, ge=1, le=settings.max_length_limit)),
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


AB_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown request id, model or version."},
    409: {"model": ErrorResponse, "description": "This request was already rated."},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the culprit."},
}


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


def install_ab_routes(
    app: FastAPI,
    settings: ApiSettings,
    backend: Backend,
    ab: ABTesting,
    *,
    decode_options: Any,
    check_items: Any,
    build_response: Any,
) -> None:
    """Add /v1/feedback and /v1/compare; the translation helpers come from `routes`."""
    CompareRequestModel = compare_request_model(settings)
    recorder = ab.recorder

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        responses=AB_ERROR_RESPONSES,
        tags=["experiments"],
        summary="Rate an earlier translation (1-5)",
    )
    async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
        record = ab.ledger.get(body.request_id)
        if record is None:
            raise ApiError(
                404,
                "request_not_found",
                f"no translation with request id {body.request_id!r} is known here; feedback is "
                f"accepted for the last {ab.ledger.capacity} translations an API replica served",
                field="request_id",
            )
        label_request(request, record.model, record.experiment, record.variant)
        if record.rated:
            raise ApiError(
                409,
                "feedback_already_recorded",
                f"request {body.request_id!r} has already been rated",
                field="request_id",
            )
        record.rated = True
        recorder.feedback(
            variant_labels(record.model, record.experiment, record.variant), body.rating
        )
        if body.comment:
            logger.info(
                "feedback on %s (%s, variant %s): rating %d: %s",
                body.request_id,
                record.model.label,
                record.variant,
                body.rating,
                body.comment,
            )
        return FeedbackResponse(
            request_id=body.request_id,
            rating=body.rating,
            model=record.model.id,
            version=record.model.version,
            experiment=record.experiment,
            variant=record.variant,
        )

    @app.post(
        "/v1/compare",
        response_model=CompareResponse,
        responses={
            **AB_ERROR_RESPONSES,
            404: {"model": ErrorResponse, "description": "Unknown model, version or pair."},
        },
        tags=["experiments"],
        summary="Translate the same input with several models, side by side",
    )
    async def compare(body: CompareRequestModel, request: Request) -> CompareResponse:  # type: ignore[valid-type]
        models = resolve_compared(ab.catalog, body.models, body.source, body.target)
        request_id = request_id_of(request)
        jobs = [
            (
                model,
                TranslationJob(
                    body.texts,
                    decode_options(
                        settings,
                        model,
                        beam_size=body.beam_size,
                        max_length=body.max_length,
                        n_best=1,
                        return_alignment=False,
                    ),
                    request_id,
                ),
            )
            for model in models
        ]

        async def run(model: ServedModel, job: TranslationJob) -> ComparedModel:
            started = time.perf_counter()
            try:
                result: JobResult = await backend.translate(model, job)
                check_items(result)
            except ApiError as error:
                return ComparedModel(
                    model=model.id,
                    version=model.version,
                    arch=model.arch,
                    source=model.source,
                    target=model.target,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    error=ErrorDetail(type=error.type, message=error.message, field=error.field),
                )
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

        results = await asyncio.gather(*(run(model, job) for model, job in jobs))
        return CompareResponse(id=request_id, results=list(results))
