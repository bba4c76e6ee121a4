"""Schema building blocks shared by the feature routers: name patterns, the text union, the
error body, and the table of documented error responses.

Each feature's own request and response models live beside its routes (`translate.py`,
`generation.py`, ...); what is here is what several of them use, written once. Requests are
strict where our own clients are concerned (JSON types only, unknown fields refused, so a typo
such as `beam` for `beam_size` is a 422 rather than a silently ignored option).

Every limit the server enforces is in the JSON Schema too, so the OpenAPI document at
/openapi.json accepts exactly what the server accepts (Schemathesis holds it to that): a text
must hold a character that is not white space (`pattern: NOT_BLANK`, the validator's own test),
and rules between fields are stated as schema combinators where JSON Schema can say them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
)
from pydantic_core import PydanticCustomError

# A text field is a string or a list of strings; these tags name the two branches in error
# locations (`("text", "list", 3)`), and `errors.field_path` drops them again (`text[3]`).
TEXT_UNION_TAGS = frozenset({"string", "list"})

LANGUAGE_CODE = r"^[a-z]{2,3}$"
# A model is named by its short name (`transformer`) or full id (`es-en/transformer`); anything
# else is refused here and never reaches the catalog, let alone a file path.
MODEL_NAME = r"^(?:[a-z]{2,3}-[a-z]{2,3}/)?[a-z0-9_]{1,32}$"
REQUEST_ID = r"^[A-Za-z0-9._:-]{1,128}$"
# A text is blank when it holds only white space as Python (str.isspace) or JSON Schema's
# ECMA-262 regular expressions (`\s`) see it; the two disagree (\x1c-\x1f and \x85 are space
# to Python only, \ufeff to ECMA-262 only), so the class is spelled out, and the schema's
# `pattern` and the validator use this one string: every regex engine reads it alike.
NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_NOT_BLANK = re.compile(NOT_BLANK)
# The largest integer a JSON number holds exactly in most clients (JavaScript's
# Number.MAX_SAFE_INTEGER) and in the OpenAPI document, whose bounds are doubles: a larger
# bound would be rounded there, and the schema would promise what the server refuses.
MAX_JSON_INT = 2**53 - 1

LanguageCode = Annotated[str, StringConstraints(pattern=LANGUAGE_CODE)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME)]


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(ge: int | None = None, le: int | None = None) -> Any:
    """An integer as JSON Schema means it: `2.0` is one (and becomes 2), `2.5`, `"2"` and
    `true` are not, even in the strict request models. Bounds go here, not on a union's Field,
    so that they reach the schema as `minimum` and `maximum`."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral)]


def _not_blank(text: str) -> str:
    if not _NOT_BLANK.search(text):
        raise PydanticCustomError("blank_text", "Text must not be empty or whitespace-only")
    return text


def text_type(max_chars: int, *, min_chars: int = 0, not_blank: bool = True) -> Any:
    """One string of at most `max_chars` characters (and, by default, not blank)."""
    constraints = StringConstraints(min_length=min_chars or None, max_length=max_chars)
    if not not_blank:
        return Annotated[str, constraints]
    return Annotated[
        str,
        constraints,
        AfterValidator(_not_blank),
        Field(json_schema_extra={"pattern": NOT_BLANK}),
    ]


def _union_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return None


def string_or_list(item: Any, *, min_items: int, max_items: int, error_type: str) -> Any:
    """`item | list[item]` as one tagged union, so errors name `text` or `text[3]` precisely."""
    return Annotated[
        Annotated[item, Tag("string")]
        | Annotated[list[item], Field(min_length=min_items, max_length=max_items), Tag("list")],
        Discriminator(
            _union_kind,
            custom_error_type=error_type,
            custom_error_message="Input should be a string or a list of strings",
        ),
    ]


def text_input_type(max_chars: int, max_items: int) -> Any:
    """`str | list[str]` of 1 to `max_items` non-blank texts of at most `max_chars`."""
    return string_or_list(
        text_type(max_chars), min_items=1, max_items=max_items, error_type="text_type"
    )


def stop_type(max_sequences: int, max_chars: int) -> Any:
    """`str | list[str]` of up to `max_sequences` non-empty stop strings."""
    item = text_type(max_chars, min_chars=1, not_blank=False)
    return string_or_list(item, min_items=0, max_items=max_sequences, error_type="stop_type")


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class ErrorDetail(BaseModel):
    type: str = Field(description="Stable machine-readable error kind, e.g. validation_error.")
    message: str
    field: str | None = Field(None, description="The offending request field, e.g. `text[3]`.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# What each status means on every route that can answer it; routes pick theirs by number and
# may say more (`errors(404, ..., also={404: "..."})`).
ERROR_MEANINGS: dict[int, str] = {
    400: "The body could not be read (not UTF-8 JSON, or a bad Content-Length).",
    404: "Unknown model, version or language pair (`model_not_found`, `version_not_found`, "
    "`language_pair_not_supported`).",
    409: "This request was already rated (`feedback_already_recorded`).",
    413: "Request body too large (`payload_too_large`).",
    415: "Neither JSON nor a urlencoded form (`unsupported_media_type`).",
    422: "Invalid request (`validation_error`); `field` names the culprit.",
    500: "A bug (`internal_error`): report it with the request id.",
    503: "Overloaded or the model is unavailable (`overloaded`, `model_unavailable`); retry "
    "after `Retry-After` seconds.",
    504: "The model took longer than the request timeout (`timeout`).",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}
BODY_ERRORS = (400, 413, 422)  # every route with a request body


def errors(*statuses: int, also: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for these statuses, each with the one error schema."""
    meanings = {**ERROR_MEANINGS, **(also or {})}
    table: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        table[status] = {"model": ErrorResponse, "description": meanings[status]}
        if status == 503:
            table[status]["headers"] = RETRY_AFTER
    return table
