"""Every CLI default that names a stored model names exactly one shipped model.

The store now has `transformer` under two language pairs (es-en and en-es), so a bare name
as a default would make `python -m service translate "Hola"` (or `bench peers`) fail with
"model name 'transformer' exists for several language pairs".
"""

import inspect
from pathlib import Path

import pytest

from service.bench import peers
from service.bench.cli import all_command, peers_command
from service.store.registry import ModelStore
from service.training.cli import eval_command, translate_command

SHIPPED = Path(__file__).resolve().parents[1] / "model_store"


def _default(function, name: str):
    value = inspect.signature(function).parameters[name].default
    return getattr(value, "default", value)  # a typer.Option default, or a plain one


@pytest.mark.parametrize(
    ("function", "parameter"),
    [
        (translate_command, "model"),
        (eval_command, "model"),
        (peers_command, "model"),
        (all_command, "model"),
        (peers.stored_subject, "model_id"),
        (peers.resolve_subject, "model_id"),
    ],
)
def test_default_model_is_one_shipped_model(function, parameter):
    default = _default(function, parameter)
    manifest = ModelStore(SHIPPED).resolve(default)
    assert manifest.id == "es-en/transformer"
