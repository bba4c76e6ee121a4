"""The SentencePiece wrapper and the shipped joint vocabulary."""

from __future__ import annotations

import hashlib

import pytest
import sentencepiece

from service.text.corpus import DEFAULT_DATA_DIR
from service.text.tokenizer import EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer

SHIPPED_MODEL = DEFAULT_DATA_DIR / "spm.model"

SENTENCES = [
    "En el principio creó Dios los cielos y la tierra.",
    "¿Dónde está la biblioteca? ¡Quiero leer un libro!",
    "La vergüenza del niño — dijo él — no duró mucho.",
    "In the beginning, God created the heavens and the earth.",
    "Where is the library? I want to read a book, “now”.",
]

TINY_CORPUS = [
    "el gato negro duerme en la casa",
    "the black cat sleeps in the house",
    "la casa es grande y blanca",
    "the house is big and white",
    "el perro come pan",
    "the dog eats bread",
] * 20


@pytest.fixture(scope="module")
def shipped() -> Tokenizer:
    return Tokenizer.load(SHIPPED_MODEL)


def test_shipped_model_has_the_project_special_ids_and_no_bos(shipped):
    assert shipped.vocab_size == 16000
    assert (shipped.pad_id, shipped.unk_id, shipped.eos_id) == (0, 1, 2)
    raw = sentencepiece.SentencePieceProcessor(model_file=str(SHIPPED_MODEL))
    assert (raw.pad_id(), raw.unk_id(), raw.eos_id(), raw.bos_id()) == (0, 1, 2, -1)


def test_shipped_model_falls_back_to_bytes_for_unseen_characters(shipped):
    text = "Reunión 🎉 confirmada"
    ids = shipped.encode(text)

    assert shipped.unk_id not in ids
    assert shipped.decode(ids) == text


@pytest.mark.parametrize("sentence", SENTENCES)
def test_round_trip_without_unknown_pieces(shipped, sentence):
    ids = shipped.encode(sentence)

    assert UNK_ID not in ids
    assert EOS_ID not in ids, "callers append eos themselves"
    assert shipped.decode(ids) == sentence


def test_decode_ignores_padding_and_eos(shipped):
    ids = shipped.encode(SENTENCES[0])

    assert shipped.decode(ids + [EOS_ID, PAD_ID, PAD_ID]) == SENTENCES[0]


def test_encode_batch_matches_encode(shipped):
    assert shipped.encode_batch(SENTENCES) == [shipped.encode(s) for s in SENTENCES]


def test_pieces_line_up_with_ids_and_spell_the_text(shipped):
    ids = shipped.encode(SENTENCES[3])

    pieces = shipped.pieces(ids)

    assert len(pieces) == len(ids)
    assert pieces[0].startswith("▁")
    assert "".join(pieces).replace("▁", " ").strip() == SENTENCES[3]


def test_out_of_range_ids_are_rejected(shipped):
    with pytest.raises(ValueError, match="out of range"):
        shipped.decode([5, shipped.vocab_size])
    with pytest.raises(ValueError, match="out of range"):
        shipped.pieces([-1])


def test_sha256_is_of_the_model_file_and_bytes_load_the_same(shipped):
    data = SHIPPED_MODEL.read_bytes()

    assert shipped.sha256 == hashlib.sha256(data).hexdigest()
    from_bytes = Tokenizer.from_bytes(data)
    assert from_bytes.encode(SENTENCES[1]) == shipped.encode(SENTENCES[1])


def test_training_is_byte_identical_across_runs(tmp_path):
    first = train_tokenizer(TINY_CORPUS, tmp_path / "one", vocab_size=40, byte_fallback=False)
    second = train_tokenizer(
        TINY_CORPUS, tmp_path / "two.model", vocab_size=40, byte_fallback=False
    )

    assert (first.name, second.name) == ("one.model", "two.model")
    assert first.read_bytes() == second.read_bytes()
    tokenizer = Tokenizer.load(first)
    assert tokenizer.vocab_size == 40
    assert tokenizer.decode(tokenizer.encode("el gato come pan")) == "el gato come pan"


def test_training_needs_some_text(tmp_path):
    with pytest.raises(ValueError, match="no non-empty text"):
        train_tokenizer(["", "   "], tmp_path / "empty")


def test_a_model_with_other_special_ids_is_refused(tmp_path):
    prefix = tmp_path / "default_ids"
    (tmp_path / "corpus.txt").write_text("\n".join(TINY_CORPUS))
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"), model_prefix=str(prefix), vocab_size=40, minloglevel=2
    )

    with pytest.raises(ValueError, match="special ids"):
        Tokenizer.load(f"{prefix}.model")
