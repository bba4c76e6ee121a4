"""Incremental detokenization against decoding everything again, on real and byte pieces."""

from __future__ import annotations

import pytest

from service.decoding.detokenize import IncrementalDetokenizer
from service.text.corpus import DEFAULT_DATA_DIR
from service.text.tokenizer import Tokenizer

SHIPPED_TOKENIZER = DEFAULT_DATA_DIR / "spm.model"

SENTENCES = [
    "En el principio creó Dios los cielos y la tierra.",
    "In the beginning, God created the heavens and the earth.",
    "¿Dónde está la biblioteca? ¡Quiero leer un libro, “ahora”!",
    "La vergüenza del niño — dijo él — no duró mucho.",
]


def streamed(tokenizer, prompt_ids, completion_ids):
    detokenizer = IncrementalDetokenizer.after(tokenizer, prompt_ids)
    chunks = [detokenizer.push(token) for token in completion_ids]
    return chunks, "".join(chunks) + detokenizer.push(None, final=True)


@pytest.mark.skipif(not SHIPPED_TOKENIZER.exists(), reason="needs the shipped tokenizer")
@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("split", [1, 3, 8])
def test_the_stream_is_the_completion_that_decoding_everything_gives(sentence, split):
    tokenizer = Tokenizer.load(SHIPPED_TOKENIZER)
    ids = [tokenizer.eos_id, *tokenizer.encode(sentence)]
    prompt, completion = ids[:split], ids[split:]
    whole = tokenizer.decode(ids)[len(tokenizer.decode(prompt)) :]
    chunks, text = streamed(tokenizer, prompt, completion)
    assert text == whole
    assert len([c for c in chunks if c]) > 1


class ByteTokenizer:
    """UTF-8 bytes as ids 3..258: a character of several bytes is several pieces."""

    pad_id, unk_id, eos_id, vocab_size = 0, 1, 2, 259

    def encode(self, text):
        return [b + 3 for b in text.encode()]

    def decode(self, ids):
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")

    def pieces(self, ids):
        return [f"<0x{i - 3:02X}>" for i in ids]


def test_an_incomplete_character_is_held_back_until_its_last_piece():
    tokenizer = ByteTokenizer()
    chunks, text = streamed(tokenizer, tokenizer.encode("dijo "), tokenizer.encode("él—sí"))
    assert text == "él—sí"
    assert chunks == ["", "é", "l", "", "", "—", "s", "", "í"]
    assert all("\ufffd" not in chunk for chunk in chunks)


def test_the_final_flush_gives_what_is_still_held_back():
    tokenizer = ByteTokenizer()
    detokenizer = IncrementalDetokenizer.after(tokenizer, tokenizer.encode("a"))
    assert detokenizer.push("é".encode()[0] + 3) == ""
    assert detokenizer.push(None, final=True) == "\ufffd"  # the output really ends there


def test_each_token_decodes_a_window_that_does_not_grow():
    tokenizer = ByteTokenizer()
    lengths = []
    decode = tokenizer.decode
    tokenizer.decode = lambda ids: (lengths.append(len(ids)), decode(ids))[1]
    streamed(tokenizer, tokenizer.encode("x" * 50), tokenizer.encode("y" * 500))
    assert max(lengths) <= 7
