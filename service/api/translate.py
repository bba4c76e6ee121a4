"""`POST /v1/translate`: its request and response models, and request -> job -> response.

`translate_router` is also where the pieces the other translation routes reuse live:
`decode_options` fills in defaults and applies the model's own output limit, `check_items`
turns a text the replica could not decode into an error, and `build_response` makes the
response that `/v1/compare` shows per model.
"""

# No `from __future__ import annotations`: FastAPI must see the request model class built
# inside translate_router, not its name as a string.

import math
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.api.backends import Backends
from service.api.detect import (
    AUTO,
    DetectedLanguage,
    SourceChoice,
    add_detect_route,
    detect_sources,
    detected_language,
    detector_for,
)
from service.api.errors import ApiError, request_id_of
from service.api.experiments import ABTesting, record_choice
from service.api.markup import Pieces
from service.api.schemas import (
    BODY_ERRORS,
    LanguageCode,
    ModelName,
    errors,
    json_int,
    text_input_type,
)
from service.api.segmented import (
    SegmentedResult,
    TextOutcome,
    layouts_for,
    translate_segmented,
    unchanged_outcome,
)
from service.api.settings import ApiSettings
from service.contracts import DecodeFailed, JobResult, ServedModel
from service.decoding.search import DecodeOptions
from service.decoding.translator import Candidate
from service.text.segment import segment_text

TRANSLATE_ERRORS = (*BODY_ERRORS, 404, 500, 503, 504)


def n_best_within_beam(max_beam_size: int) -> dict[str, Any]:
    """The cross-field rule `n_best <= beam_size` as JSON Schema, for /openapi.json.

    Either beam_size is left out (or null), and then n_best may be up to the largest beam, or
    beam_size is some k and n_best is at most k: one `anyOf` branch per k, which generators
    such as Schemathesis can satisfy.
    """
    unset = {"properties": {"beam_size": {"type": "null"}}}
    per_beam = [
        {
            "required": ["beam_size"],
            "properties": {"beam_size": {"const": k}, "n_best": {"maximum": k}},
        }
        for k in range(1, max_beam_size + 1)
    ]
    return {"anyOf": [unset, *per_beam]}


EXAMPLES = [
    {"text": "Hola, mundo.", "source": "es", "target": "en"},
    {
        "text": ["En el principio creó Dios los cielos y la tierra.", "Buenos días."],
        "model": "rnnsearch",
        "beam_size": 4,
        "n_best": 2,
        "return_scores": True,
    },
]


# A language code or `auto`, as one pattern so that errors name the field alone.
SourceCode = Annotated[str, StringConstraints(pattern=r"^(?:[a-z]{2,3}|auto)$")]


def _schema_extra(schema: dict[str, Any]) -> None:
    schema["examples"] = EXAMPLES
    largest_beam = schema["properties"]["n_best"].get("maximum")
    if largest_beam is not None:
        schema.update(n_best_within_beam(largest_beam))


class TranslateRequest(BaseModel):
    """`POST /v1/translate`. Use `translate_request_model(settings)` for the configured limits."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_schema_extra)

    text: Any = Field(description="A string or a list of strings to translate.")
    source: SourceCode | None = Field(
        None,
        description="Source language code, or `auto` to detect it per text (texts already in "
        "the target language come back unchanged); omitted means the model's source (es).",
    )
    target: LanguageCode | None = Field(
        None, description="Target language code; omitted means the model's target (en)."
    )
    model: ModelName | None = Field(
        None,
        description="`transformer`, `rnnsearch` or a full id such as `es-en/transformer`; "
        "omitted means the default model.",
    )
    version: json_int(ge=1) | None = Field(
        None, description="Model version; omitted means the newest."
    )
    beam_size: json_int(ge=1) | None = Field(None, description="Beam width; 1 is greedy decoding.")
    max_length: json_int(ge=1) | None = Field(None, description="Most generated tokens per text.")
    n_best: json_int(ge=1) = Field(
        1, description="How many hypotheses to return per text (at most beam_size)."
    )
    return_scores: bool = Field(False, description="Include length-normalised log-probabilities.")
    return_alignment: bool = Field(False, description="Include cross-attention alignments.")
    format: Literal["text", "html"] = Field(
        "text",
        description="`html`: each text is HTML (a fragment or a whole document); its text "
        "nodes are translated sentence by sentence with inline tags kept around the words "
        "they held, and attributes, scripts, styles, code, comments and entities are left "
        "as they were. The translation is HTML of the same kind.",
    )

    @field_validator("n_best")
    @classmethod
    def _n_best_fits_beam(cls, n_best: int, info: ValidationInfo) -> int:
        beam_size = info.data.get("beam_size")
        if beam_size is not None and n_best > beam_size:
            raise PydanticCustomError(
                "n_best_exceeds_beam",
                "n_best ({n_best}) must not exceed beam_size ({beam_size})",
                {"n_best": n_best, "beam_size": beam_size},
            )
        return n_best

    @property
    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


def max_length_limit(settings: ApiSettings, models: Sequence[ServedModel] = ()) -> int:
    """The largest max_length any served model accepts: what the schema can promise.

    A model with a smaller limit of its own refuses more (a 422 naming it), which the field's
    description states; that rule depends on the model chosen, so JSON Schema cannot say it.
    """
    limits = [m.max_output_tokens or settings.max_length_limit for m in models]
    return min(settings.max_length_limit, max(limits, default=settings.max_length_limit))


@lru_cache(maxsize=16)
def translate_request_model(
    settings: ApiSettings, longest: int | None = None
) -> type[TranslateRequest]:
    """`TranslateRequest` with the configured limits on text, beam_size, max_length, n_best;
    `longest`: the largest max_length a served model takes (`max_length_limit`)."""
    longest = longest or settings.max_length_limit
    return create_model(
        "TranslateRequest",
        __base__=TranslateRequest,
        text=(
            text_input_type(settings.max_text_chars, settings.max_items),
            Field(
                description=f"A string or a list of 1 to {settings.max_items} strings, each up "
                f"to {settings.max_text_chars} characters and not blank."
            ),
        ),
        beam_size=(
            json_int(1, settings.max_beam_size) | None,
            Field(
                None,
                description=f"Beam width, 1 (greedy) to {settings.max_beam_size}; omitted means "
                f"{settings.default_beam_size}, or n_best if that is larger.",
            ),
        ),
        max_length=(
            json_int(1, longest) | None,
            Field(
                None,
                description=f"Most generated tokens per text, 1 to {longest} (and at most the "
                f"chosen model's own limit); omitted means {settings.default_max_length}.",
            ),
        ),
        n_best=(
            json_int(1, settings.max_beam_size),
            Field(
                1,
                description="How many hypotheses to return per text; at most beam_size when "
                "beam_size is given.",
            ),
        ),
    )


class Alignment(BaseModel):
    source_tokens: list[str] = Field(description="Source pieces, `</s>` last.")
    target_tokens: list[str] = Field(description="Target pieces, `</s>` last when finished.")
    weights: list[list[float]] = Field(
        description="Cross-attention, one row per target token over the source tokens."
    )


class Alternative(BaseModel):
    text: str
    score: float | None = None


class Segment(BaseModel):
    source: str = Field(description="The sentence (or clause of a long one) that was decoded.")
    text: str = Field(description="Its best translation.")
    score: float | None = Field(None, description="Its score, when return_scores is set.")
    alignment: Alignment | None = Field(None, description="When return_alignment is set.")
    cached: bool = Field(False, description="Answered from the translation cache.")
    placeholders: Literal["kept", "repaired", "fallback"] | None = Field(
        None,
        description="With the `sentinels` setting (service/api/settings.py), how its "
        "placeholders, tags and URLs came back (null: it had none, or the setting is `pieces`, "
        "the default, where the model never sees them): `kept`, the model returned each once; "
        "`repaired`, one it dropped was put back "
        "where the attention puts it, or extra copies were removed; `fallback`, translated "
        "as the pieces between them (no alignment then).",
    )


class PlaceholderRepair(BaseModel):
    segment: int = Field(description="Index of the sentence in `segments`.")
    source: str = Field(description="The sentence.")
    status: Literal["repaired", "fallback"] = Field(description="See `segments[].placeholders`.")
    inserted: list[str] = Field(
        default_factory=list, description="Spans the model dropped, put back by the alignment."
    )
    removed: list[str] = Field(
        default_factory=list, description="Spans the model repeated: the extra copies removed."
    )


class TranslationResult(BaseModel):
    text: str = Field(
        description="The best translation, sentence by sentence with the input's white space."
    )
    score: float | None = Field(
        None,
        description="When return_scores is set: its sentences' scores averaged, weighted by "
        "their output tokens.",
    )
    alternatives: list[Alternative] | None = Field(
        None,
        description="The other n-best hypotheses, best first, when n_best > 1; the k-th joins "
        "each sentence's k-th hypothesis.",
    )
    alignment: Alignment | None = Field(
        None,
        description="When return_alignment is set and the text is one sentence; otherwise "
        "per sentence in `segments`.",
    )
    sentences: int = Field(description="How many sentences the text was split into.")
    detected_language: DetectedLanguage | None = Field(
        None, description="With `source: auto`: the language detected, confidence 0-100."
    )
    segments: list[Segment] | None = Field(
        None,
        description="What was decoded, sentence by sentence (a sentence longer than the "
        "model's source limit as clauses), when return_scores or return_alignment is set.",
    )
    placeholder_repairs: list[PlaceholderRepair] = Field(
        default_factory=list,
        description="With the `sentinels` setting each sentence is translated whole, its "
        "placeholders, tags and URLs masked as sentinels and restored after: the sentences "
        "where the model lost or repeated one, and what was done. Empty when every one came "
        "back as it was, and always with `pieces` (the default), where none can be lost.",
    )
    input_tokens: int
    output_tokens: int


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class Timing(BaseModel):
    queue_ms: float = Field(description="Waiting for a decode batch, in the model replica.")
    compute_ms: float = Field(description="Decoding the batches that carried this request.")
    total_ms: float = Field(description="From receipt to response, at the API.")
    batch_sizes: list[int] = Field(
        description="Per input: the most sentences (from all requests) decoded together with "
        "one of its sentences."
    )
    cached_sentences: list[int] = Field(
        default_factory=list,
        description="Per input: how many of its sentences came from the translation cache "
        "(which ones: `segments[].cached`).",
    )


class TranslateResponse(BaseModel):
    id: str = Field(description="The request id, also sent as the X-Request-ID header.")
    model: str | None = Field(
        description="Full id of the model that answered; null when none ran (with `source: "
        "auto`, every text was already in the target language and came back unchanged)."
    )
    version: int | None = Field(description="Its version; null when no model ran.")
    source: str = Field(
        description="The source language: the model's, or, when no model ran, the one detected."
    )
    target: str
    translations: list[TranslationResult] = Field(description="One per input text, in order.")
    usage: Usage
    timing: Timing
    experiment: str | None = Field(
        None, description="The A/B experiment that chose the model, if one did."
    )
    variant: str | None = Field(None, description="The experiment's variant that served.")


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


def check_items(result: JobResult) -> None:
    """Every text must have come back translated; one that did not fails the request."""
    for index, item in enumerate(result.items):
        if item.error is not None or item.translation is None:
            raise DecodeFailed(
                f"text[{index}] could not be translated: {item.error or 'no result'}",
                field=f"text[{index}]",
            )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _alignment(candidate: Candidate) -> Alignment | None:
    if candidate.alignment is None:
        return None
    return Alignment(
        source_tokens=candidate.alignment.source_tokens,
        target_tokens=candidate.alignment.target_tokens,
        weights=candidate.alignment.weights,
    )


def _placeholder_states(outcome: TextOutcome) -> list:
    return list(outcome.placeholders) or [None] * len(outcome.items)


def _segments(outcome: TextOutcome, return_scores: bool, return_alignment: bool) -> list[Segment]:
    return [
        Segment(
            source=unit,
            text=candidate.text,
            score=_finite(candidate.score) if return_scores else None,
            alignment=_alignment(candidate) if return_alignment else None,
            cached=item.cached,
            placeholders=state.status if state is not None else None,
        )
        for unit, candidate, item, state in zip(
            outcome.sources,
            outcome.candidate(0),
            outcome.items,
            _placeholder_states(outcome),
            strict=True,
        )
    ]


def _repairs(outcome: TextOutcome) -> list[PlaceholderRepair]:
    return [
        PlaceholderRepair(
            segment=index,
            source=source,
            status=state.status,
            inserted=list(state.inserted),
            removed=list(state.removed),
        )
        for index, (source, state) in enumerate(
            zip(outcome.sources, _placeholder_states(outcome), strict=True)
        )
        if state is not None and state.status != "kept"
    ]


def build_response(
    request_id: str,
    model: ServedModel | None,
    segmented: SegmentedResult,
    *,
    n_best: int,
    return_scores: bool,
    return_alignment: bool,
    started: float,
    choice: SourceChoice | None = None,
    language: str | None = None,
) -> TranslateResponse:
    """`model` None: no model ran, every text came back as it was, in `language`."""
    translations = []
    result = segmented.result
    for index, outcome in enumerate(segmented.texts):
        alternatives = None
        if n_best > 1:
            alternatives = [
                Alternative(
                    text=outcome.text(rank),
                    score=_finite(outcome.score(rank)) if return_scores else None,
                )
                for rank in range(1, min(n_best, outcome.n_best))
            ]
        one = len(outcome.items) == 1
        translations.append(
            TranslationResult(
                text=outcome.text(0),
                score=_finite(outcome.score(0)) if return_scores else None,
                alternatives=alternatives,
                alignment=_alignment(outcome.candidate(0)[0]) if return_alignment and one else None,
                sentences=outcome.layout.sentences,
                detected_language=detected_language(choice.detections[index])
                if choice is not None
                else None,
                segments=_segments(outcome, return_scores, return_alignment)
                if return_scores or return_alignment
                else None,
                placeholder_repairs=_repairs(outcome),
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
            )
        )
    input_tokens = sum(t.input_tokens for t in translations)
    output_tokens = sum(t.output_tokens for t in translations)
    return TranslateResponse(
        id=request_id,
        model=result.model_id if model is not None else None,
        version=result.version if model is not None else None,
        source=model.source if model is not None else language,
        target=model.target if model is not None else language,
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
            batch_sizes=[
                max((item.batch_size for item in o.items), default=0) for o in segmented.texts
            ],
            cached_sentences=[sum(item.cached for item in o.items) for o in segmented.texts],
        ),
    )


def _already_in(
    language: str,
    pieces: Pieces,
    choice: SourceChoice,
    request_id: str,
    started: float,
    body: TranslateRequest,
) -> TranslateResponse:
    """Every text is in the target language already: each comes back as it was, segmented
    in that language, and the response names no model (none ran)."""
    outcomes = [unchanged_outcome(segment_text(text, language)) for text in pieces.texts]
    segmented = SegmentedResult(JobResult([], "", 0, 0.0), pieces.assemble(outcomes))
    return build_response(
        request_id,
        None,
        segmented,
        n_best=body.n_best,
        return_scores=body.return_scores,
        return_alignment=body.return_alignment,
        started=started,
        choice=choice,
        language=language,
    )


def translate_router(settings: ApiSettings, backends: Backends, ab: ABTesting) -> APIRouter:
    TranslateRequestModel = translate_request_model(
        settings, max_length_limit(settings, backends.catalog.models)
    )
    router = APIRouter(tags=["translation"])
    add_detect_route(router, settings, backends)

    @router.post(
        "/v1/translate",
        response_model=TranslateResponse,
        responses=errors(*TRANSLATE_ERRORS),
        summary="Translate one text or a list of texts",
        openapi_extra={"x-cross-field-rules": ["n_best <= beam_size when beam_size is given"]},
    )
    async def translate(
        body: TranslateRequestModel, request: Request, response: Response
    ) -> TranslateResponse:
        started = time.perf_counter()
        source, target, choice = body.source, body.target, None
        pieces = Pieces.of(body.texts, body.format == "html")
        if source == AUTO:
            if target is None:
                target = backends.catalog.resolve(body.model, body.version).target
            detector = detector_for(backends.catalog)
            choice = detect_sources(detector, pieces.readable(body.texts), target)
            source = choice.single_source()
            if choice.unchanged and len(choice.unchanged) == len(body.texts):
                return _already_in(target, pieces, choice, request_id_of(request), started, body)
            if source is None:  # nothing to translate, or not in any language: the default
                target = body.target
        served, assignment = ab.choose(
            "/v1/translate",
            request.headers,
            body.model,
            body.version,
            source,
            target,
        )
        record_choice(request, ab.recorder, served, assignment)
        options = decode_options(
            settings,
            served,
            beam_size=body.beam_size,
            max_length=body.max_length,
            n_best=body.n_best,
            return_alignment=body.return_alignment,
        )
        request_id = request_id_of(request)
        unchanged = pieces.of_texts(choice.unchanged) if choice is not None else frozenset()
        layouts = layouts_for(
            settings, backends, served, pieces.texts, unchanged=unchanged, owner=pieces.owner
        )
        segmented = await translate_segmented(
            backends, served, layouts, options, request_id, unchanged=unchanged, owner=pieces.owner
        )
        segmented = pieces.assemble_result(segmented)
        ab.served(request_id, served, assignment, response)
        answer = build_response(
            request_id,
            served,
            segmented,
            n_best=body.n_best,
            return_scores=body.return_scores,
            return_alignment=body.return_alignment,
            started=started,
            choice=choice,
        )
        if assignment is not None:
            answer.experiment, answer.variant = assignment.experiment, assignment.variant
        return answer

    return router
