"""MarianMT import/export against Hugging Face's own implementation, on random tiny weights."""

import json
import shutil

import pytest
import safetensors.torch
import torch

from service.decoding.search import DecodeOptions
from service.decoding.translator import Translator
from service.store import MarianImportError
from service.store.marian import (
    build_transformer_from_marian,
    export_marian,
    import_marian,
    marian_tokenizer_files,
)
from service.text.marian_vocab import MarianVocabTokenizer

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

VOCAB_SIZE = 100


def marian_config(**overrides):
    values = dict(
        vocab_size=VOCAB_SIZE,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
        forced_eos_token_id=2,
        activation_function="swish",
        scale_embedding=True,
    )
    values.update(overrides)
    return transformers.MarianConfig(**values)


def hf_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = transformers.MarianMTModel(marian_config(**overrides))
    with torch.no_grad():
        model.final_logits_bias.normal_()  # zero after init; random so the test can fail
    return model.eval()


@pytest.fixture
def hf_dir(tmp_path):
    model = hf_model()
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def hf_logits(model, src, tgt_in):
    with torch.no_grad():
        return model(
            input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt_in
        ).logits


def our_logits(model, src, tgt_in):
    with torch.no_grad():
        return model(src, tgt_in)


def test_imported_model_matches_hugging_face_logits(hf_dir, batch):
    reference = transformers.MarianMTModel.from_pretrained(hf_dir).eval()
    ours = build_transformer_from_marian(hf_dir)
    assert ours.config.activation == "swish" and ours.config.scale_embedding
    expected = hf_logits(reference, *batch)
    assert torch.allclose(our_logits(ours, *batch), expected, atol=1e-5)
    assert expected.abs().max() > 0.1  # the comparison is not of two near-zero tensors


def test_import_into_store_then_load(hf_dir, store, spm_path, batch):
    manifest = import_marian(hf_dir, store, "es-en/opus", tokenizer_path=spm_path)
    assert (manifest.id, manifest.version, manifest.arch) == ("es-en/opus", 1, "transformer")
    assert manifest.training["source_format"] == "huggingface-marian"
    assert manifest.tokenizer == "sentencepiece"
    loaded = store.load("opus")
    reference = transformers.MarianMTModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():  # the store keeps fp16 weights; sinusoids are recomputed in fp32
        for name, tensor in reference.state_dict().items():
            if "embed_positions" not in name:
                tensor.copy_(tensor.half().float())
    assert torch.allclose(our_logits(loaded.model, *batch), hf_logits(reference, *batch), atol=1e-5)


def test_export_loads_in_hugging_face_and_reimports(store, spm_path, tiny_model, batch, tmp_path):
    model = tiny_model("transformer")
    out = export_marian(model, tmp_path / "exported", tokenizer_path=spm_path)
    reference = transformers.MarianMTModel.from_pretrained(out).eval()
    assert torch.allclose(hf_logits(reference, *batch), our_logits(model, *batch), atol=1e-5)

    again = build_transformer_from_marian(out)
    assert again.config == model.config
    for (name, got), want in zip(
        again.state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), name

    manifest = import_marian(out, store, "es-en/reimported")
    assert manifest.tokenizer == "sentencepiece"  # identity vocab.json: plain spm.model
    assert manifest.sha256["tokenizer"] == store.resolve("es-en/reimported").sha256["tokenizer"]
    assert (store.directory(manifest) / "spm.model").read_bytes() == spm_path.read_bytes()


def test_exported_tokenizer_files_agree_with_marian_tokenizer(spm_path, tiny_model, tmp_path):
    out = export_marian(tiny_model("transformer"), tmp_path / "exported", tokenizer_path=spm_path)
    import sentencepiece

    spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    hf = marian_tokenizer(out)
    text = "el perro dijo agua."
    assert hf(text).input_ids == spm.encode(text) + [2]


def marian_tokenizer(directory):
    return transformers.MarianTokenizer(
        *(str(directory / name) for name in ("source.spm", "target.spm", "vocab.json"))
    )


def write_safetensors_state(directory, edit):
    path = directory / "model.safetensors"
    state = safetensors.torch.load_file(path)
    edit(state)
    safetensors.torch.save_file(state, path, metadata={"format": "pt"})


def test_pickle_weights_are_refused(hf_dir):
    (hf_dir / "model.safetensors").rename(hf_dir / "pytorch_model.bin")
    with pytest.raises(MarianImportError, match="pytorch_model.bin, a pickle"):
        build_transformer_from_marian(hf_dir)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"normalize_before": True}, "normalize_before"),
        ({"normalize_embedding": True}, "normalize_embedding"),
        ({"layernorm_embedding": True}, "layernorm_embedding"),
        ({"share_encoder_decoder_embeddings": False}, "share_encoder_decoder_embeddings"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"decoder_vocab_size": 120}, "decoder_vocab_size"),
        ({"decoder_ffn_dim": 128}, "decoder_ffn_dim"),
        ({"activation_function": "gelu_new"}, "gelu_new"),
        ({"model_type": "bart"}, "model_type"),
        ({"pad_token_id": None}, "pad_token_id"),
    ],
)
def test_unsupported_configs_are_refused(hf_dir, change, fragment):
    path = hf_dir / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(MarianImportError, match=fragment):
        build_transformer_from_marian(hf_dir)


def test_untied_embeddings_are_refused(hf_dir):
    def untie(state):
        state["lm_head.weight"] = state["model.shared.weight"] + 1.0

    write_safetensors_state(hf_dir, untie)
    with pytest.raises(MarianImportError, match="lm_head.weight differs"):
        build_transformer_from_marian(hf_dir)


def test_stored_positions_are_checked(hf_dir, batch):
    from service.models.transformer import sinusoidal_positions

    def add_sinusoids(state):
        state["model.encoder.embed_positions.weight"] = sinusoidal_positions(64, 32).half()

    write_safetensors_state(hf_dir, add_sinusoids)
    build_transformer_from_marian(hf_dir)  # the real table, even in fp16, is accepted

    def learned(state):
        state["model.decoder.embed_positions.weight"] = torch.randn(64, 32)

    write_safetensors_state(hf_dir, learned)
    with pytest.raises(MarianImportError, match="decoder.embed_positions.weight is not the sinus"):
        build_transformer_from_marian(hf_dir)


def test_unknown_weights_are_refused(hf_dir):
    def extra(state):
        state["model.encoder.layernorm_embedding.weight"] = torch.ones(32)

    write_safetensors_state(hf_dir, extra)
    with pytest.raises(MarianImportError, match="layernorm_embedding"):
        build_transformer_from_marian(hf_dir)


def test_a_directory_without_tokenizer_needs_one(hf_dir, store):
    with pytest.raises(MarianImportError, match="no tokenizer"):
        import_marian(hf_dir, store, "es-en/opus")
    with pytest.raises(MarianImportError, match="pass model_id"):
        import_marian(hf_dir, store)
    assert store.ids() == []


def opus_like_vocab(spm_path):
    """An OPUS-MT style vocab.json: the same pieces under different ids (specials kept)."""
    import sentencepiece

    spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    pieces = [spm.id_to_piece(i) for i in range(spm.get_piece_size())]
    specials, others = pieces[:3], pieces[3:]
    return {piece: i for i, piece in enumerate(specials + others[::-1] + [">>es<<"])}


@pytest.fixture
def opus_dir(hf_dir, spm_path):
    shutil.copyfile(spm_path, hf_dir / "source.spm")
    shutil.copyfile(spm_path, hf_dir / "target.spm")
    (hf_dir / "vocab.json").write_text(json.dumps(opus_like_vocab(spm_path)))
    (hf_dir / "tokenizer_config.json").write_text(
        json.dumps({"source_lang": "es", "target_lang": "en"})
    )
    return hf_dir


@pytest.mark.parametrize("text", ["el perro dijo agua.", "la casa del rey", ">>es<< pan y vino"])
def test_marian_vocab_tokenizer_matches_hugging_face(opus_dir, text):
    ours = MarianVocabTokenizer.load(
        opus_dir / "source.spm", opus_dir / "target.spm", opus_dir / "vocab.json"
    )
    hf = marian_tokenizer(opus_dir)
    ids = ours.encode(text) + [ours.eos_id]  # eos is the caller's to add, as for every tokenizer
    assert ids == hf(text).input_ids
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    assert ours.pieces(ids) == hf.convert_ids_to_tokens(ids)


def test_opus_directory_imports_with_its_vocab_mapping(opus_dir, store):
    manifest = import_marian(opus_dir, store)
    assert manifest.id == "es-en/opus"
    assert manifest.tokenizer == "marian_vocab"
    assert sorted(manifest.extra_files) == ["target.spm", "vocab.json"]
    loaded = store.load("es-en/opus")
    assert isinstance(loaded.tokenizer, MarianVocabTokenizer)
    hf = marian_tokenizer(opus_dir)
    assert loaded.tokenizer.encode("el gato") + [loaded.tokenizer.eos_id] == hf("el gato").input_ids

    (store.directory(manifest) / "vocab.json").write_text("{}")
    with pytest.raises(Exception, match="vocab.json of 'es-en/opus' version 1 is corrupted"):
        store.load("es-en/opus")


def test_an_imported_opus_model_translates_with_one_eos_and_alignments(opus_dir, store):
    import_marian(opus_dir, store)
    loaded = store.load("es-en/opus")
    translator = Translator(loaded.model, loaded.tokenizer)
    expected = marian_tokenizer(opus_dir)("el gato").input_ids
    assert translator.encode("el gato") == expected  # one </s>, not [..., 2, 2]

    options = DecodeOptions(max_length=4, return_alignment=True)
    [translation] = translator.translate(["el gato"], options)
    alignment = translation.best.alignment
    assert alignment.source_tokens == loaded.tokenizer.pieces(expected)
    assert alignment.source_tokens[-1] == "</s>"
    assert len(alignment.weights) == len(alignment.target_tokens)


def test_separate_vocabularies_are_refused(opus_dir):
    (opus_dir / "target_vocab.json").write_text("{}")
    with pytest.raises(MarianImportError, match="separate source and target vocabularies"):
        marian_tokenizer_files(opus_dir, VOCAB_SIZE)
