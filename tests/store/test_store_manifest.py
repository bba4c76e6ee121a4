import json

import pytest

from service.models import config_to_dict, make_config
from service.store import Manifest, ManifestError

SHA = "ab" * 32


def manifest_dict(**overrides):
    values = dict(
        id="es-en/transformer",
        arch="transformer",
        version=3,
        source_lang="es",
        target_lang="en",
        config=config_to_dict(make_config("transformer", "tiny", 100)),
        created="2025-01-02T03:04:05+00:00",
        parameters=12345,
        sha256={"weights": SHA, "tokenizer": "cd" * 32, "data": "ef" * 32},
        training={"command": "python -m service train", "device": "cpu", "wall_time_s": 1.5},
        metrics={"test": {"bleu": 21.3, "chrf": 45.6, "signature": "nrefs:1|case:mixed"}},
    )
    values.update(overrides)
    return values


def test_json_round_trip_preserves_every_field(tmp_path):
    manifest = Manifest.from_dict(manifest_dict())
    path = tmp_path / "manifest.json"
    manifest.write(path)
    again = Manifest.read(path)
    assert again == manifest
    assert json.loads(path.read_text()) == manifest.to_dict()
    assert again.language_pair == "es-en"
    assert again.name == "transformer"


def test_optional_fields_take_defaults():
    data = manifest_dict()
    for key in ("training", "metrics"):
        del data[key]
    manifest = Manifest.from_dict(data)
    assert (manifest.training, manifest.metrics, manifest.tokenizer) == ({}, {}, "sentencepiece")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"id": "es-en/../x"}, "'id'"),
        ({"id": "ES-en/transformer"}, "'id'"),
        ({"id": "es-en/transformer\n"}, "'id'"),
        ({"source_lang": "fr"}, "disagree"),
        ({"arch": "lstm"}, "'arch'"),
        ({"version": 0}, "'version'"),
        ({"version": "1"}, "'version'"),
        ({"version": True}, "'version'"),
        ({"config": {"vocab_size": 10, "no_such_field": 1}}, "'config'"),
        ({"config": []}, "'config'"),
        ({"created": "yesterday"}, "'created'"),
        ({"parameters": -1}, "'parameters'"),
        ({"sha256": {"weights": SHA}}, "missing ['tokenizer']"),
        ({"sha256": {"weights": SHA, "tokenizer": SHA, "extra": SHA}}, "unknown ['extra']"),
        ({"sha256": {"weights": "AB" * 32, "tokenizer": SHA}}, "64 lowercase hex"),
        ({"sha256": {"weights": SHA[:-1], "tokenizer": SHA}}, "64 lowercase hex"),
        ({"metrics": "good"}, "'metrics'"),
        ({"tokenizer": "bpe"}, "'tokenizer'"),
        ({"tokenizer": "marian_vocab"}, "needs extra_files"),
        ({"extra_files": {"../vocab.json": SHA}}, "plain file names"),
        ({"extra_files": {"model.safetensors": SHA}}, "plain file names"),
        ({"format": 2}, "format"),
    ],
)
def test_invalid_field_is_named_in_the_error(overrides, fragment):
    with pytest.raises(ManifestError, match="manifest.json") as info:
        Manifest.from_dict(manifest_dict(**overrides), source="x/manifest.json")
    assert fragment in str(info.value)


def test_missing_and_unknown_fields_are_listed():
    data = manifest_dict(surprise=1)
    with pytest.raises(ManifestError, match=r"unknown field\(s\) \['surprise'\]"):
        Manifest.from_dict(data)
    data = manifest_dict()
    del data["sha256"], data["arch"]
    with pytest.raises(ManifestError, match=r"missing field\(s\) \['arch', 'sha256'\]"):
        Manifest.from_dict(data)


def test_unreadable_files_fail_clearly(tmp_path):
    with pytest.raises(ManifestError, match="missing"):
        Manifest.read(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.read(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(ManifestError, match="expected a JSON object"):
        Manifest.read(tmp_path / "manifest.json")
