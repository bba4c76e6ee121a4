"""One conformance suite for every `TextTokenizer`: the joint SentencePiece `Tokenizer` and the
`MarianVocabTokenizer` of imported OPUS-MT models must behave alike where callers rely on it."""

from __future__ import annotations

import json

import pytest
import sentencepiece
import torch

from service.decoding.translator import Translator
from service.text.corpus import DEFAULT_DATA_DIR
from service.text.marian_vocab import MarianVocabTokenizer
from service.text.protocol import TextTokenizer
from service.text.tokenizer import Tokenizer

TEXTS = ["el gato negro duerme en la casa", "the dog eats bread", "la casa es grande"]


@pytest.fixture(scope="module")
def spm_model():
    return DEFAULT_DATA_DIR / "spm.model"  # the shipped joint vocabulary


def opus_vocab(spm_model) -> dict[str, int]:
    """OPUS-MT style: the same pieces under other ids (specials first), plus a language code."""
    spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    pieces = [spm.id_to_piece(i) for i in range(spm.get_piece_size())]
    specials, others = pieces[:3], pieces[3:]
    return {piece: i for i, piece in enumerate(specials + others[::-1] + [">>es<<"])}


def build_sentencepiece(spm_model, tmp_path):
    return Tokenizer.load(spm_model)


def build_marian(spm_model, tmp_path):
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps(opus_vocab(spm_model)))
    return MarianVocabTokenizer.load(spm_model, spm_model, vocab)


@pytest.fixture(params=[build_sentencepiece, build_marian], ids=["sentencepiece", "marian"])
def tokenizer(request, spm_model, tmp_path) -> TextTokenizer:
    return request.param(spm_model, tmp_path)


def test_speaks_the_protocol_with_distinct_special_ids(tokenizer):
    assert isinstance(tokenizer, TextTokenizer)
    specials = {tokenizer.pad_id, tokenizer.unk_id, tokenizer.eos_id}
    assert len(specials) == 3
    assert max(specials) < tokenizer.vocab_size


@pytest.mark.parametrize("text", TEXTS)
def test_encode_adds_no_eos_and_round_trips(tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids and tokenizer.eos_id not in ids and tokenizer.pad_id not in ids
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_decode_drops_padding_and_eos(tokenizer):
    ids = tokenizer.encode(TEXTS[0])
    assert (
        tokenizer.decode(ids + [tokenizer.eos_id, tokenizer.pad_id, tokenizer.pad_id]) == (TEXTS[0])
    )


def test_pieces_is_a_method_giving_one_piece_per_id(tokenizer):
    ids = tokenizer.encode(TEXTS[1])
    pieces = tokenizer.pieces(ids)
    assert len(pieces) == len(ids) and all(isinstance(p, str) for p in pieces)
    assert pieces[0].startswith("▁")
    assert "".join(pieces).replace("▁", " ").strip() == TEXTS[1]


def test_a_translator_source_ends_in_exactly_one_eos(tokenizer):
    translator = Translator(torch.nn.Linear(1, 1), tokenizer)
    ids = translator.encode(TEXTS[2])
    assert ids[-1] == tokenizer.eos_id
    assert ids[:-1] == tokenizer.encode(TEXTS[2])


def test_marian_ids_come_from_the_vocabulary_not_the_sentencepiece_model(spm_model, tmp_path):
    marian, plain = build_marian(spm_model, tmp_path), Tokenizer.load(spm_model)
    vocab = opus_vocab(spm_model)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    text = TEXTS[0]
    assert marian.encode(text) == [vocab[p] for p in spm.encode(text, out_type=str)]
    assert marian.encode(text) != plain.encode(text)
    assert marian.pieces(marian.encode(text)) == plain.pieces(plain.encode(text))
    assert marian.encode(">>es<< " + text)[0] == vocab[">>es<<"]
