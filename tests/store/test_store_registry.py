import hashlib
import json
import os
import shutil

import pytest
import torch

from service.store import (
    AmbiguousModelId,
    CheckpointError,
    IntegrityError,
    InvalidModelId,
    InvalidVersion,
    ManifestError,
    ModelNotFound,
    ModelStore,
    ModelStoreError,
    VersionExists,
    VersionNotFound,
)

ARCHS = ["transformer", "rnnsearch"]


def fp16_rounded(model):
    """The model the store should give back: every float weight rounded through fp16."""
    rounded = type(model)(model.config)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return rounded.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_gives_fp16_rounded_weights(store, spm_path, tiny_model, batch, arch):
    model = tiny_model(arch)
    manifest = store.save(
        model,
        spm_path,
        model_id=f"es-en/{arch}",
        metrics={"test": {"bleu": 1.0}},
        training={"command": "pytest", "device": "cpu", "wall_time_s": 0.0},
        data_sha256="0" * 64,
    )
    loaded = store.load(f"es-en/{arch}")

    assert loaded.manifest == manifest
    assert (manifest.version, manifest.arch, manifest.id) == (1, arch, f"es-en/{arch}")
    assert manifest.parameters == sum(p.numel() for p in model.parameters())
    assert manifest.sha256["data"] == "0" * 64
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    expected = fp16_rounded(model)
    for (name, got), want in zip(
        loaded.model.state_dict().items(), expected.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), name
    with torch.no_grad():
        assert torch.allclose(loaded.model(*batch), expected(*batch), atol=1e-6)
        assert torch.allclose(loaded.model(*batch), model(*batch), atol=5e-2)


def test_files_on_disk_match_the_manifest(store, spm_path, tiny_model):
    manifest = store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    directory = store.directory(manifest)
    assert directory == store.root / "es-en" / "transformer" / "1"
    assert sorted(p.name for p in directory.iterdir()) == [
        "manifest.json",
        "model.safetensors",
        "spm.model",
    ]
    assert (
        manifest.sha256["weights"]
        == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    )
    assert manifest.sha256["tokenizer"] == hashlib.sha256(spm_path.read_bytes()).hexdigest()
    from safetensors import safe_open

    with safe_open(directory / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no staging


def test_load_in_requested_dtype(store, spm_path, tiny_model):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    loaded = store.load("es-en/transformer", dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    with pytest.raises(TypeError, match="floating"):
        store.load("es-en/transformer", dtype=torch.int64)


def test_weights_never_go_through_torch_load(store, spm_path, tiny_model, monkeypatch):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", forbidden)
    store.load("es-en/transformer")


@pytest.mark.parametrize("file_name", ["model.safetensors", "spm.model"])
def test_one_flipped_byte_is_an_integrity_error_naming_the_file(
    store, spm_path, tiny_model, file_name
):
    manifest = store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    path = store.directory(manifest) / file_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{file_name} of 'es-en/transformer' version 1"):
        store.load("es-en/transformer")
    with pytest.raises(IntegrityError, match="corrupted"):
        store.verify("es-en/transformer")


def test_missing_tokenizer_is_a_clear_error(store, spm_path, tiny_model):
    manifest = store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    (store.directory(manifest) / "spm.model").unlink()
    with pytest.raises(IntegrityError, match=r"spm\.model .* is missing"):
        store.load("es-en/transformer")


def test_missing_or_misplaced_manifest(store, spm_path, tiny_model):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    v2 = store.save(tiny_model("transformer", seed=1), spm_path, model_id="es-en/transformer")
    v2_dir = store.directory(v2)
    shutil.copyfile(v2_dir.parent / "1" / "manifest.json", v2_dir / "manifest.json")
    with pytest.raises(
        ManifestError, match="sits in the directory of 'es-en/transformer' version 2"
    ):
        store.resolve("es-en/transformer")
    (v2_dir / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="manifest file is missing"):
        store.load("es-en/transformer", 2)
    assert store.resolve("es-en/transformer", 1).version == 1  # other versions stay usable
    entries = store.entries()
    assert [(e.version, e.error is None) for e in entries] == [(1, True), (2, False)]
    with pytest.raises(ManifestError):
        store.list()


def test_weights_that_do_not_fit_the_config(store, spm_path, tiny_model):
    manifest = store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    path = store.directory(manifest) / "manifest.json"
    data = json.loads(path.read_text())
    data["config"]["decoder_layers"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="Unexpected key"):
        store.load("es-en/transformer")


def test_unknown_model_and_version(store, spm_path, tiny_model):
    with pytest.raises(ModelNotFound, match="store is empty"):
        store.resolve("es-en/transformer")
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    with pytest.raises(ModelNotFound, match=r"available: \['es-en/transformer'\]"):
        store.load("es-en/rnnsearch")
    with pytest.raises(ModelNotFound):
        store.resolve("fr-en/transformer")
    with pytest.raises(ModelNotFound):
        store.resolve("gpt")
    with pytest.raises(VersionNotFound, match=r"no version 7; available: \[1\]"):
        store.load("es-en/transformer", 7)


@pytest.mark.parametrize("version", [0, -1, "2", True, 1.0])
def test_impossible_versions(store, spm_path, tiny_model, version):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    with pytest.raises(InvalidVersion):
        store.resolve("es-en/transformer", version)


@pytest.mark.parametrize(
    "model_id",
    [
        "../etc",
        "/etc/passwd",
        "es-en/../../x",
        "es-en\\x",
        "",
        "..",
        ".",
        "es-en/",
        "/transformer",
        "es-en/transformer/1",
        "es-en/Transformer",
        "es-en//transformer",
        "es-en/transformer\n",
        "~/x",
        "x" * 200,
        None,
        7,
        ["es-en/transformer"],
    ],
)
def test_hostile_ids_are_invalid_model_ids(store, spm_path, tiny_model, model_id):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    for call in (store.resolve, store.load, store.versions):
        with pytest.raises(InvalidModelId):
            call(model_id)


def test_ids_match_the_listing_not_the_filesystem(store, spm_path, tiny_model, tmp_path):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    outside = tmp_path / "outside" / "es-en" / "evil" / "1"
    outside.mkdir(parents=True)
    os.symlink(outside.parent, store.root / "es-en" / "evil")
    (store.root / "es-en" / "transformer" / "latest").mkdir()
    with pytest.raises(ModelNotFound):
        store.resolve("es-en/evil")
    assert store.ids() == ["es-en/transformer"]
    assert store.versions("es-en/transformer") == [1]


def test_latest_and_pinned_versions(store, spm_path, tiny_model, batch):
    first, second = tiny_model("transformer", seed=0), tiny_model("transformer", seed=1)
    assert store.save(first, spm_path, model_id="es-en/transformer").version == 1
    assert store.save(second, spm_path, model_id="es-en/transformer").version == 2
    assert store.versions("es-en/transformer") == [1, 2]
    assert store.resolve("es-en/transformer").version == 2
    assert store.resolve("es-en/transformer", 1).version == 1
    with torch.no_grad():
        pinned = store.load("es-en/transformer", 1).model(*batch)
        latest = store.load("es-en/transformer").model(*batch)
        assert torch.allclose(pinned, fp16_rounded(first)(*batch), atol=1e-6)
        assert torch.allclose(latest, fp16_rounded(second)(*batch), atol=1e-6)
    assert [(m.id, m.version) for m in store.list()] == [
        ("es-en/transformer", 1),
        ("es-en/transformer", 2),
    ]


def test_versions_are_immutable(store, spm_path, tiny_model):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer", version=3)
    with pytest.raises(VersionExists, match="version 3 already exists"):
        store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer", version=3)
    assert (
        store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer").version == 4
    )
    assert not [p for p in (store.root / "es-en" / "transformer").iterdir() if p.name[0] == "."]


def test_short_names_and_language_pair_filter(store, spm_path, tiny_model):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    store.save(tiny_model("rnnsearch"), spm_path, model_id="es-en/rnnsearch")
    assert store.resolve("transformer").id == "es-en/transformer"
    assert store.load("rnnsearch").manifest.id == "es-en/rnnsearch"
    assert store.resolve("transformer", language_pair="es-en").id == "es-en/transformer"
    with pytest.raises(ModelNotFound):
        store.resolve("transformer", language_pair="fr-en")
    with pytest.raises(ModelNotFound, match="not a fr-en model"):
        store.resolve("es-en/transformer", language_pair="fr-en")
    with pytest.raises(InvalidModelId, match="language_pair"):
        store.resolve("transformer", language_pair="../x")

    store.save(tiny_model("transformer"), spm_path, model_id="fr-en/transformer")
    with pytest.raises(AmbiguousModelId, match=r"\['es-en/transformer', 'fr-en/transformer'\]"):
        store.resolve("transformer")
    assert store.resolve("transformer", language_pair="fr-en").id == "fr-en/transformer"
    assert store.ids(language_pair="fr-en") == ["fr-en/transformer"]


def test_save_refuses_what_would_break_loading(store, spm_path, tiny_model):
    model = tiny_model("transformer")
    with pytest.raises(InvalidModelId):
        store.save(model, spm_path, model_id="transformer")
    with pytest.raises(InvalidModelId):
        store.save(model, spm_path, model_id="es-en/../x")
    with pytest.raises(ModelStoreError, match="does not exist"):
        store.save(model, spm_path.parent / "nope.model", model_id="es-en/transformer")
    with pytest.raises(ModelStoreError, match="not the RNNSearch"):
        store.save(model, spm_path, model_id="es-en/transformer", arch="rnnsearch")
    with pytest.raises(ModelStoreError, match="embedding rows"):
        store.save(tiny_model("transformer", vocab_size=20), spm_path, model_id="es-en/transformer")
    with torch.no_grad():
        model.shared.weight[5, 0] = 1e6
    with pytest.raises(ModelStoreError, match="overflows torch.float16"):
        store.save(model, spm_path, model_id="es-en/transformer")
    manifest = store.save(
        model, spm_path, model_id="es-en/transformer", storage_dtype=torch.float32
    )
    assert store.load(manifest.id).model.shared.weight[5, 0].item() == 1e6
    assert store.versions("es-en/transformer") == [1]


def test_missing_store_root_is_empty(tmp_path):
    empty = ModelStore(tmp_path / "nowhere")
    assert empty.list() == [] and empty.ids() == []
