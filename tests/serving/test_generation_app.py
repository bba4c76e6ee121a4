"""How the app builder serves the language model (or not), without starting Ray."""

from __future__ import annotations

import pytest
from ray.serve import Application

from service.serving.app import bind_generator, build_app, build_app_with_options
from service.serving.config import AppArgs
from service.serving.runtime import created_timestamp
from service.store import ModelNotFound, ModelStore, VersionNotFound


def test_the_language_model_is_bound_when_the_store_has_it(tiny_lm_store):
    args = AppArgs(store=str(tiny_lm_store), generation={"max_new_tokens_limit": 100})
    options = {"es-en-lm": {"user_config": {"max_batch_size": 4}}}
    served, app = bind_generator(args, ModelStore(tiny_lm_store), options)
    assert options == {}  # its deployment options were taken
    assert isinstance(app, Application)
    model = served.model
    assert (model.key, model.id, model.version, model.arch) == ("es-en-lm", "es-en/lm", 1, "lm")
    assert model.max_output_tokens == 1024 and model.created > 0
    assert served.settings.max_new_tokens_limit == 100
    assert isinstance(build_app(args), Application)


def test_a_missing_language_model_turns_generation_off(tiny_model_store, caplog):
    store = ModelStore(tiny_model_store)
    options = {"es-en-lm": {"num_replicas": 1}}
    assert bind_generator(AppArgs(store=str(tiny_model_store)), store, options) is None
    assert options == {} and "text generation is off" in caplog.text
    assert bind_generator(AppArgs(generation=None), store, {}) is None
    app = build_app_with_options(
        {"store": str(tiny_model_store)}, {"es-en-lm": {"ray_actor_options": {"num_cpus": 0.1}}}
    )
    assert isinstance(app, Application)


def test_a_required_language_model_must_be_there(tiny_model_store, tiny_lm_store):
    required = {"id": "es-en/lm", "required": True}
    with pytest.raises(ModelNotFound):
        build_app(AppArgs(store=str(tiny_model_store), generation=required))
    with pytest.raises(VersionNotFound):
        build_app(AppArgs(store=str(tiny_lm_store), generation={**required, "version": 7}))
    with pytest.raises(ValueError, match="not a language model"):
        build_app(AppArgs(store=str(tiny_lm_store), generation={"id": "es-en/transformer"}))
    with pytest.raises(ValueError, match="share the deployment name"):
        build_app(
            AppArgs(
                store=str(tiny_lm_store),
                generation={"deployment": "es-en-transformer"},
            )
        )


def test_created_timestamp():
    assert created_timestamp("2026-01-02T03:04:05+00:00") == 1767323045
    assert created_timestamp("yesterday") == 0
