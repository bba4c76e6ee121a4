"""Language detection: `POST /v1/detect`, and `source: auto` on the translation routes.

`detect_sources` decides, text by text, which served language each is in (lingua among the
served languages, `service.text.langid`), which texts are already in the target language (they
come back unchanged) and which model translates each of the rest; a text in a language no
served model translates is a 404 naming what it is (as an unsupported language pair is).
Confidence is 0-100, as LibreTranslate's.
LibreTranslate's own `POST /detect` lives with its other routes (`libretranslate.py`).
"""

# No `from __future__ import annotations`: FastAPI must see the request model built inside
# detect_router, not its name as a string.

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, create_model

from service.api.backends import Backends
from service.api.catalog import Catalog
from service.api.errors import ApiError
from service.api.schemas import BODY_ERRORS, errors, text_input_type
from service.api.settings import ApiSettings
from service.text.langid import Detection, Detector

AUTO = "auto"


@lru_cache(maxsize=8)
def _detector(languages: tuple[str, ...]) -> Detector:
    return Detector(languages)


def detector_for(catalog: Catalog) -> Detector:
    """One detector per set of served languages, shared by every route and app."""
    return _detector(tuple(catalog.languages()))


def percent(confidence: float) -> float:
    return round(100 * confidence, 2)


@dataclass(frozen=True)
class SourceChoice:
    detections: list[Detection]
    # Texts to translate by detected language; a text with no language to go by (digits,
    # symbols) goes with the first group, or alone under None (the default model's source).
    groups: dict[str | None, list[int]]
    unchanged: frozenset[int]  # texts already in the target language

    def single_source(self, field: str = "text") -> str | None:
        """The one source of a request that must have one (its response names one model)."""
        if len(self.groups) > 1:
            found = ", ".join(f"{code} ({len(where)})" for code, where in self.groups.items())
            raise ApiError(
                422,
                "validation_error",
                f"{field}: the texts are in several languages ({found}); send each language "
                "in its own request or name the source",
                field=field,
            )
        return next(iter(self.groups), None)


def detect_sources(
    detector: Detector,
    texts: list[str],
    target: str | None,
    *,
    field: str = "text",
    single: bool = False,
) -> SourceChoice:
    """Each text's language, the texts in `target` already, and the groups of the rest by
    language; a text in a language no served model translates is a 404 naming it."""
    detections = [detector.detect(text) for text in texts]
    served = sorted(detector.served)
    groups: dict[str | None, list[int]] = {}
    undetected = []
    unchanged = set()
    for index, detection in enumerate(detections):
        name = field if single else f"{field}[{index}]"
        if detection.language is None and detection.detected is not None:
            raise ApiError(
                404,
                "language_not_supported",
                f"{name}: detected {detection.detected_name} ({detection.detected}, confidence "
                f"{percent(detection.confidence):g}), which no served model translates; served "
                f"languages: {', '.join(served)}",
                field=name,
            )
        if detection.language is None:
            undetected.append(index)
        elif target is not None and detection.language == target:
            unchanged.add(index)
        else:
            groups.setdefault(detection.language, []).append(index)
    if undetected:
        first = next(iter(groups), None)
        groups[first] = sorted([*groups.get(first, []), *undetected])
    return SourceChoice(detections, groups, frozenset(unchanged))


class DetectedLanguage(BaseModel):
    language: str = Field(description="Language code.")
    confidence: float = Field(description="0-100.")


def detected_language(detection: Detection) -> DetectedLanguage | None:
    if detection.language is None:
        return None
    return DetectedLanguage(language=detection.language, confidence=percent(detection.confidence))


class DetectRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    text: Any = Field(description="A string or a list of strings.")


@lru_cache(maxsize=16)
def detect_request_model(settings: ApiSettings) -> type[DetectRequest]:
    return create_model(
        "DetectRequest",
        __base__=DetectRequest,
        text=(
            text_input_type(settings.max_text_chars, settings.max_items),
            Field(description=f"A string or a list of 1 to {settings.max_items} strings."),
        ),
    )


class TextDetection(BaseModel):
    language: str | None = Field(
        description="The served language the text is in; null when it is in none of them."
    )
    confidence: float = Field(description="0-100, of `language` (or of `detected`).")
    detected: str | None = Field(
        None, description="When `language` is null: the language it seems to be in instead."
    )
    candidates: list[DetectedLanguage] = Field(
        description="Every served language, most likely first."
    )


class DetectResponse(BaseModel):
    detections: list[TextDetection] = Field(description="One per input text, in order.")


def text_detection(detection: Detection) -> TextDetection:
    return TextDetection(
        language=detection.language,
        confidence=percent(detection.confidence),
        detected=detection.detected,
        candidates=[
            DetectedLanguage(language=code, confidence=percent(value))
            for code, value in detection.candidates
        ],
    )


def add_detect_route(router: APIRouter, settings: ApiSettings, backends: Backends) -> None:
    """`POST /v1/detect` on `router` (the translation feature's)."""
    RequestModel = detect_request_model(settings)

    @router.post(
        "/v1/detect",
        response_model=DetectResponse,
        responses=errors(*BODY_ERRORS),
        summary="Detect the language of one text or a list of texts",
    )
    async def detect(body: RequestModel) -> DetectResponse:
        detector = detector_for(backends.catalog)
        texts = [body.text] if isinstance(body.text, str) else list(body.text)
        return DetectResponse(detections=[text_detection(detector.detect(t)) for t in texts])
