"""Warm starts from the store, with the same vocabulary or a new one; the trainer's direction
and language-model language options."""

from __future__ import annotations

import pytest
import torch

from service.models import build_model, make_config
from service.store import ModelStore
from service.text.tokenizer import Tokenizer, train_tokenizer
from service.training.trainer import TrainConfig, Trainer
from service.training.warmstart import parse_init_from, piece_map, warm_start

from .helpers import reversal_pairs

OLD_TEXT = [
    "la casa del perro",
    "el perro come pan",
    "la luz del día",
    "el gato y la casa",
    "los hombres del pueblo",
    "una noche en el monte",
    "agua de la tierra",
    "dijo el rey",
] * 30
NEW_TEXT = [
    "la casa grande",
    "el perro come",
    "reunión de la luz",
    "salir del archivo",
    "guardar el documento",
    "abrir una ventana nueva",
    "mensajes nuevos",
    "buenos días",
] * 30


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    work = tmp_path_factory.mktemp("spm")
    old = train_tokenizer(OLD_TEXT, work / "old.model", vocab_size=30, byte_fallback=False)
    new = train_tokenizer(NEW_TEXT, work / "new.model", vocab_size=34, byte_fallback=False)
    return old, new


def stored_transformer(root, spm_path, arch="transformer"):
    torch.manual_seed(0)
    vocab = Tokenizer.load(spm_path).vocab_size
    model = build_model(arch, make_config(arch, "tiny", vocab)).eval()
    ModelStore(root).save(model, spm_path, model_id=f"es-en/{arch}", metrics={})
    return model


def test_parse_init_from():
    assert parse_init_from("es-en/transformer@2") == ("es-en/transformer", 2)
    assert parse_init_from("es-en/transformer") == ("es-en/transformer", None)
    with pytest.raises(ValueError, match="version must be a number"):
        parse_init_from("es-en/transformer@two")


def test_same_vocabulary_copies_every_tensor(tmp_path, tokenizers):
    old_path, _ = tokenizers
    old = stored_transformer(tmp_path, old_path)
    tokenizer = Tokenizer.load(old_path)
    config = make_config("transformer", "tiny", tokenizer.vocab_size)
    torch.manual_seed(1)
    model = build_model("transformer", config)

    result = warm_start(model, "transformer", config, tokenizer, "es-en/transformer@1", tmp_path)

    assert result.remapped == 0 and result.new_pieces == 0
    for name, tensor in model.state_dict().items():
        # the store keeps fp16 weights
        torch.testing.assert_close(tensor, old.state_dict()[name].half().float(), msg=name)


def test_new_vocabulary_carries_rows_over_by_piece(tmp_path, tokenizers):
    old_path, new_path = tokenizers
    old = stored_transformer(tmp_path, old_path)
    old_tok, new_tok = Tokenizer.load(old_path), Tokenizer.load(new_path)
    config = make_config("transformer", "tiny", new_tok.vocab_size)
    torch.manual_seed(1)
    model = build_model("transformer", config)
    fresh_rows = model.state_dict()["shared.weight"].clone()

    result = warm_start(model, "transformer", config, new_tok, "es-en/transformer", tmp_path)

    old_rows = old.state_dict()["shared.weight"].half().float()
    new_rows = model.state_dict()["shared.weight"]
    mapping = piece_map(old_tok, new_tok)
    assert result.remapped >= 1 and result.new_pieces > 0
    for new_id, old_ids in enumerate(mapping):
        if old_ids:
            torch.testing.assert_close(new_rows[new_id], old_rows[old_ids].mean(dim=0))
        else:
            torch.testing.assert_close(new_rows[new_id], fresh_rows[new_id])
    shared = [
        i
        for i, piece in enumerate(new_tok.pieces(list(range(new_tok.vocab_size))))
        if piece in set(old_tok.pieces(list(range(old_tok.vocab_size))))
    ]
    assert shared and all(len(mapping[i]) == 1 for i in shared)
    # layers that do not depend on the vocabulary are copied as they are
    name = "model.encoder.layers.0.fc1.weight"
    name = (
        name
        if name in model.state_dict()
        else next(k for k in model.state_dict() if "layers.0" in k and k.endswith("weight"))
    )
    torch.testing.assert_close(model.state_dict()[name], old.state_dict()[name].half().float())


def test_warm_start_refuses_another_arch_or_size(tmp_path, tokenizers):
    old_path, _ = tokenizers
    stored_transformer(tmp_path, old_path, arch="rnnsearch")
    tokenizer = Tokenizer.load(old_path)
    config = make_config("transformer", "tiny", tokenizer.vocab_size)
    with pytest.raises(ValueError, match="rnnsearch model cannot start a transformer run"):
        warm_start(
            build_model("transformer", config),
            "transformer",
            config,
            tokenizer,
            "es-en/rnnsearch@1",
            tmp_path,
        )

    stored_transformer(tmp_path, old_path)
    small = make_config("transformer", "small", tokenizer.vocab_size)
    with pytest.raises(ValueError, match="config differs"):
        warm_start(
            build_model("transformer", small),
            "transformer",
            small,
            tokenizer,
            "es-en/transformer@1",
            tmp_path,
        )


def _train(tmp_path, tokenizer_path, **overrides):
    values = dict(
        arch="transformer",
        preset="tiny",
        max_tokens=300,
        max_steps=3,
        eval_every=3,
        log_every=1,
        threads=1,
        out=str(tmp_path / "run"),
        save=True,
        store_root=str(tmp_path / "store"),
        evaluate_test=True,
        test_limit=4,
        test_beam_size=1,
    )
    values.update(overrides)
    pairs = reversal_pairs(60)
    return Trainer(
        TrainConfig(**values),
        tokenizer_path=tokenizer_path,
        train_pairs=pairs,
        valid_pairs=pairs[:10],
        test_pairs=pairs[:4],
        command="pytest",
        log=lambda line: None,
    ).run()


def test_en_es_direction_trains_the_reversed_pairs_and_saves_under_en_es(tmp_path, tokenizers):
    old_path, _ = tokenizers
    result = _train(tmp_path, old_path, direction="en-es")

    assert (result.manifest.id, result.manifest.source_lang) == ("en-es/transformer", "en")
    assert result.manifest.training["direction"] == "en-es"


def test_init_from_is_recorded_in_the_manifest(tmp_path, tokenizers):
    old_path, _ = tokenizers
    stored_transformer(tmp_path / "store", old_path)
    result = _train(tmp_path, old_path, init_from="es-en/transformer@1", version=2)

    assert result.manifest.training["warm_start"]["from"] == "es-en/transformer@1"


def test_lm_languages_choose_the_sides_it_learns(tmp_path, tokenizers):
    old_path, _ = tokenizers
    result = _train(tmp_path, old_path, arch="lm", lm_languages="en", pack_tokens=0)

    assert result.metrics["languages"] == ["en"]
    assert "test_perplexity_en" in result.metrics and "test_perplexity_es" not in result.metrics


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction must be es-en or en-es"):
        TrainConfig(direction="fr-en")
