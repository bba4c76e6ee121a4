"""The tokenizer of an imported OPUS-MT model: SentencePiece segments, vocab.json assigns ids.

An OPUS-MT directory has `source.spm` and `target.spm` (segmenters only) and a `vocab.json`
mapping pieces to the model's ids, so its ids are not the SentencePiece model's ids. This is
Hugging Face MarianTokenizer's mapping without transformers (and without its optional Moses
punctuation normalization), speaking the project's one `TextTokenizer` protocol: eos is the
caller's to add, exactly as with the joint SentencePiece `Tokenizer`.

Nothing here knows about the model store: loading raises ValueError, which the store's Marian
import turns into its own error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import sentencepiece

SPECIAL_PIECES = ("<unk>", "</s>", "<pad>")


def load_sentencepiece(path: Path | str) -> sentencepiece.SentencePieceProcessor:
    return _sentencepiece_from_bytes(Path(path).read_bytes(), path)


def _sentencepiece_from_bytes(
    data: bytes, path: Path | str
) -> sentencepiece.SentencePieceProcessor:
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=data)
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{path} is not a SentencePiece model ({error})") from None


def load_marian_vocab(path: Path | str, vocab_size: int | None = None) -> dict[str, int]:
    """vocab.json as {piece: id}; ids distinct and below `vocab_size` (default: its length)."""
    return _vocab_from_bytes(Path(path).read_bytes(), path, vocab_size)


def _vocab_from_bytes(data: bytes, path: Path | str, vocab_size: int | None) -> dict[str, int]:
    try:
        vocab = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in vocab.items()
    ):
        raise ValueError(f"{path}: expected an object of piece -> integer id")
    ids = list(vocab.values())
    limit = vocab_size if vocab_size is not None else len(ids)
    if len(set(ids)) != len(ids) or (ids and not 0 <= min(ids) <= max(ids) < limit):
        raise ValueError(f"{path}: ids must be distinct and in [0, {limit})")
    return vocab


class MarianVocabTokenizer:
    """encode: a leading `>>xx<<` language code stays one token, the rest goes through the
    source SentencePiece model, and pieces missing from the vocabulary become `<unk>`. decode:
    ids become pieces through the inverted vocabulary, padding and `</s>` are dropped, and the
    target SentencePiece model joins the pieces.
    """

    def __init__(self, source_spm, target_spm, vocab: Mapping[str, int], sha256: str = ""):
        self.source_spm = source_spm
        self.target_spm = target_spm
        self.vocab = dict(vocab)
        missing = [token for token in SPECIAL_PIECES if token not in self.vocab]
        if missing:
            raise ValueError(f"vocab.json lacks the special token {missing[0]!r}")
        self._id_to_piece = {i: piece for piece, i in self.vocab.items()}
        self.unk_id = self.vocab["<unk>"]
        self.eos_id = self.vocab["</s>"]
        self.pad_id = self.vocab["<pad>"]
        self.vocab_size = max(self._id_to_piece) + 1
        self.sha256 = sha256

    @classmethod
    def load(
        cls, source_spm: Path | str, target_spm: Path | str, vocab_json: Path | str
    ) -> MarianVocabTokenizer:
        """Each file is read once: parsed and hashed from the same bytes."""
        paths = [Path(p) for p in (source_spm, target_spm, vocab_json)]
        data = [path.read_bytes() for path in paths]
        # One digest naming all three files: the sha256 of their hex digests, concatenated.
        digests = "".join(hashlib.sha256(d).hexdigest() for d in data)
        return cls(
            _sentencepiece_from_bytes(data[0], paths[0]),
            _sentencepiece_from_bytes(data[1], paths[1]),
            _vocab_from_bytes(data[2], paths[2], None),
            hashlib.sha256(digests.encode()).hexdigest(),
        )

    def encode(self, text: str) -> list[int]:
        code = []
        if text.startswith(">>") and (end := text.find("<<")) != -1:
            code, text = [text[: end + 2]], text[end + 2 :]
        pieces = code + self.source_spm.encode(text, out_type=str)
        return [self.vocab.get(piece, self.unk_id) for piece in pieces]

    def decode(self, ids: Sequence[int]) -> str:
        skip = {self.pad_id, self.eos_id}
        return self.target_spm.decode_pieces(self.pieces([i for i in ids if int(i) not in skip]))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """An id that vocab.json does not name is `<unk>`, as in Hugging Face's MarianTokenizer:
        the model's vocabulary may be larger than the file (OPUS-MT pads it)."""
        return [self._id_to_piece.get(int(i), "<unk>") for i in ids]

    def __repr__(self) -> str:
        return f"MarianVocabTokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"
