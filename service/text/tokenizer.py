"""One joint Spanish+English SentencePiece vocabulary shared by every model in the store.

Why joint: names, numbers and loanwords are spelt alike in both languages, so a shared unigram
vocabulary lets the models copy them piece for piece and lets the source and target embeddings
be tied. The special ids are fixed here because checkpoints bake them in: pad 0 (so a zeroed
tensor is padding), unk 1, eos 2 and no bos (the decoders start from eos).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
DEFAULT_VOCAB_SIZE = 16000


def train_tokenizer(
    texts: Iterable[str],
    model_prefix_or_path: Path | str,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    byte_fallback: bool = True,
) -> Path:
    """Train a unigram model on ``texts`` and write ``<prefix>.model`` (or the ``.model`` path).

    Byte-identical across runs and machines: every sentence is used in the order given (no
    sampling, no shuffling) and training runs on one thread, so no float sums change order.
    `byte_fallback` adds the 256 byte pieces, so it needs a vocabulary of a few hundred at least;
    tests with toy vocabularies turn it off.
    """
    path = Path(model_prefix_or_path)
    if path.suffix != ".model":
        path = path.with_name(path.name + ".model")
    sentences = [text for text in texts if text.strip()]
    if not sentences:
        raise ValueError("no non-empty text to train the tokenizer on")
    model = io.BytesIO()
    spm.set_random_generator_seed(1)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        # Every character seen in training gets a piece: at 0.9999 the em dash and "ü"
        # (vergüenza) fell below the cut and became <unk>. SentencePiece recommends 1.0 for
        # small alphabets; 0.9995 is for Chinese or Japanese.
        character_coverage=1.0,
        # A character never seen in training (an emoji, a CJK name in a UI string) becomes its
        # UTF-8 bytes instead of <unk>, so it survives a copy through the model.
        byte_fallback=byte_fallback,
        normalization_rule_name="nmt_nfkc",
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        eos_id=EOS_ID,
        bos_id=-1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


class Tokenizer:
    """Text <-> ids with the project's special ids; eos is the caller's to add, never implicit.

    Speaks `service.text.protocol.TextTokenizer`.
    """

    def __init__(self, model_bytes: bytes):
        self._processor = spm.SentencePieceProcessor(model_proto=model_bytes)
        self._sha256 = hashlib.sha256(model_bytes).hexdigest()
        self._check_special_ids()

    @classmethod
    def load(cls, path: Path | str) -> Tokenizer:
        return cls(Path(path).read_bytes())

    @classmethod
    def from_bytes(cls, model_bytes: bytes) -> Tokenizer:
        return cls(model_bytes)

    def _check_special_ids(self) -> None:
        """A model trained with other ids would silently scramble padding and end of sentence."""
        found = (self._processor.pad_id(), self._processor.unk_id(), self._processor.eos_id())
        if found != (PAD_ID, UNK_ID, EOS_ID):
            raise ValueError(
                f"tokenizer special ids (pad, unk, eos) are {found}, expected "
                f"{(PAD_ID, UNK_ID, EOS_ID)}; retrain it with `python -m service data tokenizer`"
            )

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def sha256(self) -> str:
        """Of the model file's bytes: manifests pin a checkpoint to the vocabulary it learnt."""
        return self._sha256

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._processor.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        """Padding and eos are dropped, so a padded or finished hypothesis decodes cleanly."""
        self._check_range(ids)
        return self._processor.decode([i for i in ids if i not in (PAD_ID, EOS_ID)])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """Pieces as SentencePiece spells them ("▁" starts a word), one per id, for displays
        that line ids up with attention weights."""
        self._check_range(ids)
        return [self._processor.id_to_piece(i) for i in ids]

    def _check_range(self, ids: Sequence[int]) -> None:
        size = self.vocab_size
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise ValueError(f"token ids out of range [0, {size}): {bad[:5]}")

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"
