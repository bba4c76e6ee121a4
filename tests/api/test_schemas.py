"""Request validation and error-shape rules of the HTTP API, without Ray or a model."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from service.api.errors import field_path, validation_error_body
from service.api.libretranslate import libretranslate_request_model
from service.api.settings import ApiSettings
from service.api.translate import translate_request_model

SETTINGS = ApiSettings(max_text_chars=20, max_items=3)
Request = translate_request_model(SETTINGS)


def first_error(data) -> dict:
    with pytest.raises(ValidationError) as caught:
        Request.model_validate(data)
    errors = caught.value.errors()
    return validation_error_body([{**e, "loc": ("body", *e["loc"])} for e in errors])["error"]


def test_string_and_list_text_are_accepted():
    assert Request.model_validate({"text": "hola"}).texts == ["hola"]
    assert Request.model_validate({"text": ["hola", "adiós"]}).texts == ["hola", "adiós"]


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"text": ""}, "text", "empty"),
        ({"text": "   \n\t"}, "text", "whitespace"),
        ({"text": "ab\ud800"}, "text", "unicode"),  # a lone surrogate (JSON "\ud800")
        ({"text": ["hola", " "]}, "text[1]", "empty"),
        ({"text": "x" * 21}, "text", "at most 20 characters"),
        ({"text": ["ok", "ok", "x" * 21]}, "text[2]", "at most 20 characters"),
        ({"text": ["a", "b", "c", "d"]}, "text", "at most 3 items"),
        ({"text": []}, "text", "at least 1 item"),
        ({"text": 5}, "text", "string or a list of strings"),
        ({"text": None}, "text", "string or a list of strings"),
        ({"text": ["a", 7]}, "text[1]", "valid string"),
        ({}, "text", "required"),
        ({"text": "a", "beam_size": 0}, "beam_size", "greater than or equal to 1"),
        ({"text": "a", "beam_size": 9}, "beam_size", "less than or equal to 8"),
        ({"text": "a", "beam_size": "4"}, "beam_size", "valid integer"),
        ({"text": "a", "beam_size": 2.5}, "beam_size", "valid integer"),
        ({"text": "a", "max_length": 0}, "max_length", "greater than or equal to 1"),
        ({"text": "a", "max_length": 513}, "max_length", "less than or equal to 512"),
        ({"text": "a", "n_best": 3, "beam_size": 2}, "n_best", "must not exceed beam_size"),
        ({"text": "a", "return_scores": "yes"}, "return_scores", "valid boolean"),
        ({"text": "a", "version": 0}, "version", "greater than or equal to 1"),
        ({"text": "a", "model": "../../etc/passwd"}, "model", "pattern"),
        ({"text": "a", "source": "spanish"}, "source", "pattern"),
        ({"text": "a", "beam": 4}, "beam", "Extra inputs"),
    ],
)
def test_invalid_requests_name_the_field(data, field, words):
    error = first_error(data)
    assert error["type"] == "validation_error"
    assert error["field"] == field
    assert words in error["message"]
    assert error["message"].startswith(f"{field}:")


def test_limits_come_from_settings():
    roomy = translate_request_model(ApiSettings(max_text_chars=5000, max_items=100))
    assert roomy.model_validate({"text": ["x" * 5000] * 100}).texts[0] == "x" * 5000
    schema = Request.model_json_schema()
    text = schema["properties"]["text"]["oneOf"]
    assert text[0]["maxLength"] == 20 and text[1]["maxItems"] == 3


def test_settings_reject_inconsistent_defaults():
    with pytest.raises(ValidationError):
        ApiSettings(max_beam_size=2, default_beam_size=4)


def test_field_path():
    assert field_path(("body", "text", "list", 3)) == "text[3]"
    assert field_path(("body", "text", "string")) == "text"
    assert field_path(("body", "a", "b", 0, "c")) == "a.b[0].c"
    assert field_path(("body",)) == "body"


def test_invalid_json_and_missing_body_messages():
    invalid = validation_error_body(
        [{"type": "json_invalid", "loc": ("body", 7), "msg": "JSON decode error", "ctx": {}}]
    )["error"]
    assert invalid["field"] == "body"
    assert "not valid JSON" in invalid["message"]
    missing = validation_error_body([{"type": "missing", "loc": ("body",), "msg": "x"}])["error"]
    assert missing == {
        "type": "validation_error",
        "field": "body",
        "message": "request body is required (a JSON object)",
    }


def test_libretranslate_request_is_lenient_but_checks_text():
    LT = libretranslate_request_model(SETTINGS)
    parsed = LT.model_validate(
        {"q": "hola", "source": "es", "target": "en", "api_key": "k", "alternatives": "2"}
    )
    assert parsed.texts == ["hola"] and parsed.alternatives == 2
    with pytest.raises(ValidationError):
        LT.model_validate({"q": "", "target": "en"})
    with pytest.raises(ValidationError) as caught:
        LT.model_validate({"q": "hola", "target": "en", "format": "markdown"})
    assert (
        LT.model_validate({"q": "<b>hola</b>", "target": "en", "format": "html"}).format == "html"
    )
    assert caught.value.errors()[0]["loc"] == ("format",)


@pytest.mark.parametrize("text", ["\x1d", "\x85", "\u3000 \t", "\ufeff"])
def test_blank_means_blank_to_python_and_to_json_schema_alike(text):
    """White space to either Python or ECMA-262 (JSON Schema's regexes) is blank: refused by
    the validator, and outside the schema's `pattern`, which the validator uses itself."""
    assert first_error({"text": text})["field"] == "text"
    pattern = Request.model_json_schema()["properties"]["text"]["oneOf"][0]["pattern"]
    assert re.search(pattern, text) is None
    assert re.search(pattern, text + "a") is not None
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # Schemathesis's validator
    schema = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    assert not schema.is_valid(text) and schema.is_valid(text + "a")
