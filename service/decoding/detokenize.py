"""Incremental detokenization: the text each new token adds, at a cost that does not grow.

Decoding the new token alone would be wrong: SentencePiece drops the space that a
word-initial piece ("▁God") carries at the start of a text, so the first word would be glued
to the prompt ("In the beginningGod"), and a character split over several byte pieces decodes
to U+FFFD until its last piece arrives. Decoding the whole prompt and output for every token
is right but quadratic per stream. So, as vLLM's incremental detokenizer does, two offsets
into the ids mark a short window: `prefix_offset` starts a few ids of already-emitted context,
`read_offset` ends what has been emitted. Each new token decodes the window with and without
the unread ids; the difference is the new text. While it is empty or ends in U+FFFD the
offsets stay put, so those ids are read again with the next token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from service.text.protocol import TextTokenizer

CONTEXT_IDS = 5  # prompt ids decoded with the first new token: enough to place its space
REPLACEMENT_CHARACTER = "\ufffd"


@dataclass
class IncrementalDetokenizer:
    tokenizer: TextTokenizer
    ids: list[int] = field(default_factory=list)  # the prompt, then every generated id
    prefix_offset: int = 0
    read_offset: int = 0

    @classmethod
    def after(cls, tokenizer: TextTokenizer, prompt_ids: Sequence[int]) -> IncrementalDetokenizer:
        """Ready for the first generated id; the prompt itself is never emitted."""
        ids = list(prompt_ids)
        return cls(tokenizer, ids, max(len(ids) - CONTEXT_IDS, 0), len(ids))

    def push(self, token: int | None, final: bool = False) -> str:
        """Add `token` (None: nothing new) and return the text that is now complete.

        `final` flushes what is held back (an incomplete character at the end of the output).
        """
        if token is not None:
            self.ids.append(token)
        window = self.ids[self.prefix_offset :]
        prefix_text = self.tokenizer.decode(window[: self.read_offset - self.prefix_offset])
        text = self.tokenizer.decode(window)
        if len(text) <= len(prefix_text) or (text.endswith(REPLACEMENT_CHARACTER) and not final):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(prefix_text) :]
