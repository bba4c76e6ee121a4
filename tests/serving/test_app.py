"""The app builder and the config file, without starting Ray."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve import Application

from service.serving.app import build_app, build_app_with_options
from service.serving.config import AppArgs
from service.serving.launch import DEFAULT_CONFIG, deployment_overrides, load_config
from service.store import ModelNotFound, VersionNotFound


def test_config_file_is_valid_and_matches_the_builder():
    config = load_config(DEFAULT_CONFIG)
    app = config["applications"][0]
    assert app["import_path"] == "service.serving.app:build_app"
    assert config["http_options"]["host"] == "127.0.0.1" and config["http_options"]["port"] == 8000
    args = AppArgs.model_validate(app["args"])
    assert [m.id for m in args.models] == [
        "es-en/transformer",
        "es-en/rnnsearch",
        "en-es/transformer",
    ]
    assert [m.required for m in args.models] == [True, True, False]
    assert args.api.max_text_chars == args.api.max_request_chars == 20000
    overrides = deployment_overrides(app)
    assert set(overrides) == {
        "Ingress",
        "es-en-transformer",
        "es-en-rnnsearch",
        "en-es-transformer",
        "es-en-lm",
    }
    for name in ("es-en-transformer", "es-en-rnnsearch"):
        assert 0 < overrides[name]["ray_actor_options"]["num_cpus"] < 1
        assert set(overrides[name]["user_config"]) == {"max_batch_size", "batch_wait_timeout_s"}
    assert args.generation.id == "es-en/lm" and not args.generation.required
    assert 0 < overrides["es-en-lm"]["ray_actor_options"]["num_cpus"] < 1
    assert set(overrides["es-en-lm"]["user_config"]) == {"max_batch_size"}


def test_build_app_from_args(tiny_model_store):
    app = build_app(AppArgs(store=str(tiny_model_store)))
    assert isinstance(app, Application)
    config = load_config(DEFAULT_CONFIG)["applications"][0]
    args = {**config["args"], "store": str(tiny_model_store)}
    assert isinstance(build_app_with_options(args, deployment_overrides(config)), Application)


def test_a_model_not_required_is_skipped_when_not_stored(tiny_model_store):
    models = [{"id": "es-en/transformer"}, {"id": "en-es/transformer", "required": False}]
    app = build_app_with_options(
        {"store": str(tiny_model_store), "models": models, "generation": None},
        {"en-es-transformer": {"num_replicas": 1}},  # its options go with it
    )
    assert isinstance(app, Application)
    with pytest.raises(ModelNotFound):
        build_app(AppArgs(store=str(tiny_model_store), models=[{"id": "en-es/transformer"}]))


def test_build_app_refuses_bad_configs(tiny_model_store):
    store = str(tiny_model_store)
    with pytest.raises(ModelNotFound):
        build_app(AppArgs(store=store, models=[{"id": "es-en/marian"}]))
    with pytest.raises(VersionNotFound):
        build_app(AppArgs(store=store, models=[{"id": "transformer", "version": 9}]))
    with pytest.raises(ValueError, match="default_model"):
        build_app(AppArgs(store=store, models=[{"id": "rnnsearch"}]))
    with pytest.raises(ValueError, match="unknown deployments"):
        build_app_with_options({"store": store}, {"es-en-marian": {"num_replicas": 1}})
    with pytest.raises(ValueError, match="share the deployment name"):
        build_app(AppArgs(store=store, models=[{"id": "transformer"}, {"id": "es-en/transformer"}]))
    with pytest.raises(ValidationError):
        AppArgs.model_validate({"store": store, "modles": []})
