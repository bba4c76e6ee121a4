"""The one tokenizer protocol that translators, the generator and the store's models speak.

Two tokenizers implement it: `Tokenizer` (the project's joint SentencePiece model, whose ids
are the model's ids) and `MarianVocabTokenizer` (an imported OPUS-MT model, whose
SentencePiece pieces are mapped to ids by its vocab.json). Code that decodes only ever sees
this protocol, so both behave alike where it matters:

- `encode` never adds eos: the caller appends it (`Translator.encode`) or puts it first
  (`GenerationEngine.encode_prompt`), so no source ends in two;
- `decode` drops padding and eos, so a padded or finished hypothesis decodes cleanly;
- `pieces` is a method, one piece per id spelt as SentencePiece spells it ("▁" starts a
  word), for displays that line ids up with attention weights;

`tests/text/test_tokenizer_protocol.py` runs the same checks against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class TextTokenizer(Protocol):
    @property
    def pad_id(self) -> int: ...

    @property
    def unk_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without eos."""

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; padding and eos are dropped."""

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """One piece per id, in SentencePiece's spelling."""
