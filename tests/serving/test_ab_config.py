"""Experiments in the application config: validated when the app is built, not at request time."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.serving.app import build_app
from service.serving.config import AppArgs
from service.serving.launch import DEFAULT_CONFIG, load_config

SPLIT = {
    "name": "tf-vs-rnn",
    "variants": [{"model": "transformer", "weight": 0.8}, {"model": "rnnsearch", "weight": 0.2}],
}


def test_shipped_config_has_a_disabled_example_experiment():
    args = AppArgs.model_validate(load_config(DEFAULT_CONFIG)["applications"][0]["args"])
    [experiment] = args.experiments
    assert not experiment.enabled and experiment.user_header == "X-User-ID"
    assert [(v.model, v.weight) for v in experiment.variants] == [
        ("es-en/transformer", 0.8),
        ("es-en/rnnsearch", 0.2),
    ]
    assert args.feedback_capacity > 0


def test_build_app_checks_experiments(tiny_model_store):
    store = str(tiny_model_store)
    build_app(AppArgs(store=store, generation=None, experiments=[SPLIT]))
    with pytest.raises(ValueError, match="experiment 'tf-vs-rnn': no served model 'rnnsearch'"):
        build_app(
            AppArgs(
                store=store, models=[{"id": "transformer"}], generation=None, experiments=[SPLIT]
            )
        )
    with pytest.raises(ValidationError):
        AppArgs(store=store, experiments=[{**SPLIT, "variants": []}])
    with pytest.raises(ValidationError):
        AppArgs(store=store, feedback_capacity=-1)
