"""Request and response models of the HTTP API (pydantic v2), and the settings that shape them.

Limits that operators tune (longest text, most items per request, largest beam) live in
`ApiSettings`; the request models are built from them by `translate_request_model` and
`libretranslate_request_model`, so validation, error messages and the OpenAPI document at /docs
all state the limits actually in force.

The v1 request is strict (JSON types only, unknown fields refused, so a typo such as `beam`
for `beam_size` is a 422 rather than a silently ignored option). The LibreTranslate request is
lenient (form fields arrive as strings, unknown fields such as `api_key` are ignored) because
its clients must work unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

# A text field is a string or a list of strings; these tags name the two branches in error
# locations (`("text", "list", 3)`), and `errors.field_path` drops them again (`text[3]`).
TEXT_UNION_TAGS = frozenset({"string", "list"})

LANGUAGE_CODE = r"^[a-z]{2,3}$"
# A model is named by its short name (`transformer`) or full id (`es-en/transformer`); anything
# else is refused here and never reaches the registry, let alone a file path.
MODEL_NAME = r"^(?:[a-z]{2,3}-[a-z]{2,3}/)?[a-z0-9_]{1,32}$"
REQUEST_ID = r"^[A-Za-z0-9._:-]{1,128}$"

LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
}


class ApiSettings(BaseModel):
    """What the HTTP layer enforces and assumes when a request leaves a knob out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_text_chars: int = Field(2000, ge=1, description="Longest text per item, in characters.")
    max_items: int = Field(64, ge=1, le=1024, description="Most texts per request.")
    # 64 texts of 2,000 characters, each character JSON-escaped as \uXXXX, fit with room to spare.
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest request body.")
    max_beam_size: int = Field(8, ge=1, le=64)
    max_length_limit: int = Field(
        512, ge=1, description="Upper bound for max_length (further capped by each model)."
    )
    default_beam_size: int = Field(4, ge=1)
    default_max_length: int = Field(256, ge=1)
    request_timeout_s: float = Field(
        60.0, gt=0, description="A translation not done by then is answered with 504."
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a 503.")

    def model_post_init(self, _: Any) -> None:
        if self.default_beam_size > self.max_beam_size:
            raise ValueError("default_beam_size must not exceed max_beam_size")
        if self.default_max_length > self.max_length_limit:
            raise ValueError("default_max_length must not exceed max_length_limit")


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "Text must not be empty or whitespace-only")
    return text


def _text_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return None


def text_input_type(max_chars: int, max_items: int) -> Any:
    """`str | list[str]` with the length limits, as one tagged union for precise errors."""
    item = Annotated[str, StringConstraints(max_length=max_chars), AfterValidator(_not_blank)]
    return Annotated[
        Annotated[item, Tag("string")]
        | Annotated[list[item], Field(min_length=1, max_length=max_items), Tag("list")],
        Discriminator(
            _text_kind,
            custom_error_type="text_type",
            custom_error_message="Input should be a string or a list of strings",
        ),
    ]


LanguageCode = Annotated[str, StringConstraints(pattern=LANGUAGE_CODE)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME)]


class TranslateRequest(BaseModel):
    """`POST /v1/translate`. Use `translate_request_model(settings)` for the configured limits."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "Hola, mundo.", "source": "es", "target": "en"},
                {
                    "text": ["En el principio creó Dios los cielos y la tierra.", "Buenos días."],
                    "model": "rnnsearch",
                    "beam_size": 4,
                    "n_best": 2,
                    "return_scores": True,
                },
            ]
        },
    )

    text: Any = Field(description="A string or a list of strings to translate.")
    source: LanguageCode | None = Field(
        None, description="Source language code; omitted means the model's source (es)."
    )
    target: LanguageCode | None = Field(
        None, description="Target language code; omitted means the model's target (en)."
    )
    model: ModelName | None = Field(
        None,
        description="`transformer`, `rnnsearch` or a full id such as `es-en/transformer`; "
        "omitted means the default model.",
    )
    version: int | None = Field(None, ge=1, description="Model version; omitted means the newest.")
    beam_size: int | None = Field(None, ge=1, description="Beam width; 1 is greedy decoding.")
    max_length: int | None = Field(None, ge=1, description="Most generated tokens per text.")
    n_best: int = Field(
        1, ge=1, description="How many hypotheses to return per text (at most beam_size)."
    )
    return_scores: bool = Field(False, description="Include length-normalised log-probabilities.")
    return_alignment: bool = Field(False, description="Include cross-attention alignments.")

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


@lru_cache(maxsize=16)
def translate_request_model(settings: ApiSettings) -> type[TranslateRequest]:
    """`TranslateRequest` with the configured limits on text, beam_size, max_length, n_best."""
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
            int | None,
            Field(
                None,
                ge=1,
                le=settings.max_beam_size,
                description=f"Beam width, 1 (greedy) to {settings.max_beam_size}; omitted means "
                f"{settings.default_beam_size}, or n_best if that is larger.",
            ),
        ),
        max_length=(
            int | None,
            Field(
                None,
                ge=1,
                le=settings.max_length_limit,
                description=f"Most generated tokens per text, 1 to {settings.max_length_limit}; "
                f"omitted means {settings.default_max_length}.",
            ),
        ),
        n_best=(
            int,
            Field(
                1,
                ge=1,
                le=settings.max_beam_size,
                description="How many hypotheses to return per text (at most beam_size).",
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


class TranslationResult(BaseModel):
    text: str = Field(description="The best translation.")
    score: float | None = Field(None, description="Its score, when return_scores is set.")
    alternatives: list[Alternative] | None = Field(
        None, description="The other n-best hypotheses, best first, when n_best > 1."
    )
    alignment: Alignment | None = Field(None, description="When return_alignment is set.")
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
        description="Per input: how many texts (from all requests) were decoded together."
    )


class TranslateResponse(BaseModel):
    id: str = Field(description="The request id, also sent as the X-Request-ID header.")
    model: str = Field(description="Full id of the model that answered.")
    version: int
    source: str
    target: str
    translations: list[TranslationResult] = Field(description="One per input text, in order.")
    usage: Usage
    timing: Timing
    experiment: str | None = Field(
        None, description="The A/B experiment that chose the model, if one did."
    )
    variant: str | None = Field(None, description="The experiment's variant that served.")


class ModelCard(BaseModel):
    id: str
    name: str
    version: int
    arch: str
    source: str
    target: str
    parameters: int
    metrics: dict[str, Any] = Field(description="Test-set metrics from the manifest.")
    default: bool = Field(description="Answers requests that name no model.")
    status: Literal["ready", "unavailable"]
    serving: dict[str, Any] = Field(
        default_factory=dict, description="Device, dtype and live batching settings."
    )
    task: Literal["translation", "generation"] = "translation"
    # OpenAI's model object, so that OpenAI client libraries can list the models.
    object: Literal["model"] = "model"
    created: int = Field(0, description="Unix time the version was saved.")
    owned_by: str = "service"


class ModelList(BaseModel):
    models: list[ModelCard]
    # OpenAI's list shape: the same cards under `data`.
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)

    def model_post_init(self, _: Any) -> None:
        if not self.data:
            self.data = list(self.models)


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    models: dict[str, bool] = Field(description="Per served model (id@version): loaded or not.")


class ErrorDetail(BaseModel):
    type: str = Field(description="Stable machine-readable error kind, e.g. validation_error.")
    message: str
    field: str | None = Field(None, description="The offending request field, e.g. `text[3]`.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# LibreTranslate compatibility (https://libretranslate.com/docs): the same field names and
# response shape, so existing clients work against this service unchanged.


class LibreTranslateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    q: Any = Field(description="Text or list of texts.")
    source: str = Field("auto", max_length=16, description="Source code, or `auto`.")
    target: str = Field(max_length=16)
    format: str = Field("text", description="Only `text` is supported.")
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
        q=(text_input_type(settings.max_text_chars, settings.max_items), Field()),
        alternatives=(int, Field(0, ge=0, le=settings.max_beam_size - 1)),
    )


class LibreTranslateResponse(BaseModel):
    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]
