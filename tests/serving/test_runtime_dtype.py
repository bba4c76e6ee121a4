"""`runtime.dtype` of the model replicas: app-wide and per model, validated before any replica
starts, and every replica's model prepared by `precision.prepare_for_inference`, the CLI's
path. In-process: no Ray cluster."""

from __future__ import annotations

import copy
from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from service.decoding.search import DecodeOptions
from service.decoding.translator import Translator
from service.models.precision import (
    DTYPES,
    Int8Linear,
    default_dtype,
    model_dtype,
    prepare_for_inference,
)
from service.serving import kuberay
from service.serving.config import AppArgs
from service.serving.runtime import Dtype, LoadSpec, RuntimeArgs, load_replica_model
from service.serving.translation import TranslatorDeployment
from service.store import ModelStore

TEXTS = ["la casa", "el rey dijo que la luz era buena", "pan"]


def test_the_config_offers_the_dtypes_prepare_for_inference_takes():
    assert set(get_args(Dtype)) == {"auto", "float16", *DTYPES}


def test_a_models_runtime_overrides_only_the_keys_it_sets():
    args = AppArgs.model_validate(
        {
            "runtime": {"dtype": "bfloat16", "torch_threads": 2},
            "models": [
                {"id": "es-en/transformer", "runtime": {"dtype": "float32"}},
                {"id": "es-en/rnnsearch"},
            ],
            "generation": {"runtime": {"device": "cpu", "dtype": "int8"}},
        }
    )
    transformer, rnnsearch = args.models
    assert args.runtime_for(transformer) == RuntimeArgs(dtype="float32", torch_threads=2)
    assert args.runtime_for(rnnsearch) == RuntimeArgs(dtype="bfloat16", torch_threads=2)
    assert args.runtime_for(args.generation) == RuntimeArgs(
        device="cpu", dtype="int8", torch_threads=2
    )


@pytest.mark.parametrize(
    "args",
    [
        {"runtime": {"device": "cuda", "dtype": "int8"}},
        {"models": [{"id": "es-en/transformer", "runtime": {"device": "cuda", "dtype": "int8"}}]},
        {"runtime": {"device": "cuda"}, "models": [{"id": "x", "runtime": {"dtype": "int8"}}]},
        {"runtime": {"device": "cuda"}, "generation": {"runtime": {"dtype": "int8"}}},
    ],
)
def test_int8_on_a_gpu_fails_the_config_and_says_why(args):
    with pytest.raises(ValidationError, match="int8 runs on CPU only, and device is cuda"):
        AppArgs.model_validate(args)


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ({"runtime": {"dtype": "int4"}}, "runtime.dtype"),
        ({"models": [{"id": "x", "runtime": {"dtype": "fp8"}}]}, "models.0.runtime.dtype"),
        ({"models": [{"id": "x", "runtime": {"precision": "int8"}}]}, "models.0.runtime.precision"),
    ],
)
def test_an_unknown_dtype_names_its_field_and_the_choices(args, where):
    with pytest.raises(ValidationError) as raised:
        AppArgs.model_validate(args)
    message = str(raised.value)
    assert where in message
    if "dtype" in where:
        assert "'auto', 'float32', 'bfloat16', 'float16' or 'int8'" in message


def test_int8_on_the_gpu_device_auto_picked_fails_before_loading(tiny_model_store, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    spec = LoadSpec(str(tiny_model_store), "es-en/transformer", 1, RuntimeArgs(dtype="int8"))
    with pytest.raises(ValueError, match="int8 runs on CPU only, and this replica runs on cuda"):
        load_replica_model(spec)


def test_kuberay_refuses_int8_for_its_gpu_replicas():
    config = copy.deepcopy(kuberay.load_serve_config())
    kuberay.cluster_serve_config(config)  # the shipped config: auto
    app = config["applications"][0]
    app["args"]["models"][1]["runtime"] = {"dtype": "int8"}
    with pytest.raises(ValueError, match="es-en/rnnsearch: dtype int8 runs on CPU only"):
        kuberay.cluster_serve_config(config)
    app["args"]["models"][1]["runtime"]["device"] = "cpu"  # int8 on the GPU node's CPU
    kuberay.cluster_serve_config(config)


@pytest.mark.parametrize("dtype", ["auto", *DTYPES])
def test_a_replica_serves_the_clis_model_and_reports_its_dtype(tiny_model_store, dtype):
    runtime = RuntimeArgs(device="cpu", dtype=dtype)
    spec = LoadSpec(str(tiny_model_store), "es-en/transformer", 1, runtime)
    replica = TranslatorDeployment.func_or_class(spec)
    served = default_dtype("cpu") if dtype == "auto" else dtype
    assert replica.info()["dtype"] == served and replica.info()["device"] == "cpu"
    assert model_dtype(replica.translator.model) == served
    assert any(isinstance(m, Int8Linear) for m in replica.translator.model.modules()) == (
        served == "int8"
    )
    # What `translate` / `eval --dtype` load: the store's model, prepared the same way.
    loaded = ModelStore(tiny_model_store).load("es-en/transformer", 1)
    cli = Translator(prepare_for_inference(loaded.model, dtype), loaded.tokenizer)
    options = DecodeOptions(beam_size=2, max_length=6)
    assert [t.best.text for t in replica.translator.translate(TEXTS, options)] == [
        t.best.text for t in cli.translate(TEXTS, options)
    ]


def test_the_language_model_takes_the_same_path(tiny_lm_store):
    runtime = RuntimeArgs(device="cpu", dtype="int8")
    replica = load_replica_model(LoadSpec(str(tiny_lm_store), "es-en/lm", 1, runtime), arch="lm")
    assert replica.serving_info() == {"device": "cpu", "dtype": "int8"}
    assert isinstance(replica.model.output_layer, Int8Linear)  # the tied projection too
