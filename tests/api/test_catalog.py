"""How a request's model, version and languages pick a served model when both directions
are served (es->en and en->es, each with a `transformer`)."""

from __future__ import annotations

import pytest

from service.api.catalog import Catalog
from service.api.errors import ApiError
from service.contracts import ServedModel

ES_EN = ServedModel(
    "es-en-transformer", "es-en/transformer", 3, "transformer", "es", "en", 10, default=True
)
EN_ES = ServedModel(
    "en-es-transformer", "en-es/transformer", 1, "transformer", "en", "es", 10, default=True
)
RNN = ServedModel("es-en-rnnsearch", "es-en/rnnsearch", 1, "rnnsearch", "es", "en", 10)


@pytest.fixture
def catalog():
    return Catalog([ES_EN, RNN, EN_ES])  # the config's order: es-en first


def test_no_model_and_no_languages_is_the_first_default_pair(catalog):
    assert catalog.resolve() is ES_EN


def test_languages_pick_the_direction(catalog):
    assert catalog.resolve(source="en", target="es") is EN_ES
    assert catalog.resolve(source="es") is ES_EN
    assert catalog.resolve(target="es") is EN_ES


def test_a_short_name_served_in_both_directions_is_narrowed_by_the_languages(catalog):
    assert catalog.resolve("transformer", source="en", target="es") is EN_ES
    assert catalog.resolve("transformer", source="es", target="en") is ES_EN
    assert catalog.resolve("rnnsearch", source="es") is RNN


def test_a_short_name_served_in_both_directions_without_languages_is_ambiguous(catalog):
    # The default pair applies only when nothing is asked for; a named model is not narrowed.
    with pytest.raises(ApiError, match="several language pairs") as error:
        catalog.resolve("transformer")
    assert error.value.status == 404


def test_a_model_asked_for_in_the_wrong_direction_names_the_pair(catalog):
    with pytest.raises(ApiError, match="translates es->en, not en->es"):
        catalog.resolve("rnnsearch", source="en", target="es")


def test_languages_lists_both_directions(catalog):
    assert catalog.languages() == {"en": ["es"], "es": ["en"]}
