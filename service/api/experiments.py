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

Choosing is kept apart from recording: `assign_variant` is a pure function (experiment and user
id in, variant out), `ABTesting.choose` reads nothing but the route, the request's headers and
its fields, and the handlers that use it label their request's metrics (`record_choice`).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.api.catalog import Catalog
from service.api.errors import ApiError
from service.api.observability import Recorder, label_request, variant_labels
from service.api.schemas import BODY_ERRORS, MODEL_NAME, REQUEST_ID, errors, json_int
from service.contracts import ServedModel

logger = logging.getLogger("service.api")

DEFAULT_FEEDBACK_CAPACITY = 50_000
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
HEADER_NAME = r"^[A-Za-z0-9-]{1,64}$"
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


def assign_variant(experiment: Experiment, user: str) -> Variant:
    """The variant a user gets in an experiment: the same on every replica, every time."""
    return experiment.pick(user_point(experiment.name, user[:MAX_USER_ID_CHARS]))


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
        """Sticky for a user id; a random draw without one."""
        variant = assign_variant(self, user) if user else self.pick(self._rng.random())
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
        route: str,
        headers: Mapping[str, str],
        model: str | None,
        version: int | None,
        source: str | None,
        target: str | None,
        *,
        source_field: str = "source",
        target_field: str = "target",
    ) -> tuple[ServedModel, Assignment | None]:
        """The model for this request and, when an experiment chose it, the assignment.

        A request naming a model or version, or a language pair the variant does not serve,
        is outside the experiment.
        """
        experiment = self.router.by_route.get(route)
        if experiment is not None and model is None and version is None:
            candidate = experiment.assign(headers.get(experiment.header, "").strip())
            pair = (candidate.model.source, candidate.model.target)
            if source in (None, pair[0]) and target in (None, pair[1]):
                return candidate.model, candidate
        served = self.catalog.resolve(
            model, version, source, target, source_field=source_field, target_field=target_field
        )
        return served, None

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


def record_choice(
    request: Request, recorder: Recorder, model: ServedModel, assignment: Assignment | None
) -> None:
    """Label the request's metrics with the model that serves it and count the assignment."""
    if assignment is None:
        label_request(request, model)
        return
    label_request(request, model, assignment.experiment, assignment.variant)
    recorder.assignment(
        {
            **variant_labels(model, assignment.experiment, assignment.variant),
            "assignment": "sticky" if assignment.sticky else "random",
        }
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"examples": [{"request_id": "3f2b9c...", "rating": 4}]},
    )

    request_id: str = Field(
        pattern=REQUEST_ID, description="The `id` (X-Request-ID) of the response being rated."
    )
    rating: json_int(1, 5) = Field(description="1 (useless) to 5 (perfect).")
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


def feedback_router(ab: ABTesting) -> APIRouter:
    """`POST /v1/feedback`."""
    router = APIRouter(tags=["experiments"])

    @router.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        responses=errors(
            *BODY_ERRORS,
            404,
            409,
            also={404: "No translation with this request id is known here (`request_not_found`)."},
        ),
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
        ab.recorder.feedback(
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

    return router
