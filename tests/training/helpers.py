"""Synthetic data for fast training tests: a word-level reversal task with a toy tokenizer."""

from __future__ import annotations

import random
from dataclasses import dataclass

WORDS = [f"w{i}" for i in range(20)]


@dataclass(frozen=True)
class SimplePair:
    key: str
    source: str
    target: str


class WordTokenizer:
    """Whitespace tokenizer over a fixed vocabulary; ids 0-3 are pad, unk, eos, bos."""

    pad_id, unk_id, eos_id = 0, 1, 2

    def __init__(self, words=WORDS):
        self.itos = ["<pad>", "<unk>", "</s>", "<s>", *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.itos[i] for i in ids if i > 3)

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.itos[i] for i in ids]


def reversal_pairs(count: int, seed: int = 0, min_len: int = 2, max_len: int = 8):
    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))]
        pairs.append(SimplePair(f"Book {i}:1", " ".join(words), " ".join(reversed(words))))
    return pairs


class SpmTokenizer:
    """A bare SentencePiece wrapper, so store round trips do not depend on service.text."""

    pad_id, unk_id, eos_id = 0, 1, 2

    def __init__(self, path):
        import sentencepiece

        self.path = path
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]


def train_spm(directory, pairs, vocab_size: int = 24):
    """A tiny SentencePiece model with the project's special ids (pad 0, unk 1, eos 2, bos 3)."""
    import sentencepiece

    text = directory / "spm-train.txt"
    text.write_text("\n".join(s for p in pairs for s in (p.source, p.target)) + "\n")
    prefix = directory / "spm"
    sentencepiece.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="word",
        pad_id=0,
        unk_id=1,
        eos_id=2,
        bos_id=3,
        minloglevel=2,
    )
    return directory / "spm.model"
