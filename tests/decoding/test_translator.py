"""The Translator's promise: a non-empty input never comes back as an empty translation."""

from __future__ import annotations

import pytest
import torch

from service.decoding.search import DecodeOptions, generate
from service.decoding.translator import Translator, silent_token_ids
from service.models import build_model, make_config

ARCHS = ["transformer", "rnnsearch"]
SEARCHES = {
    "greedy": DecodeOptions(max_length=6),
    "beam": DecodeOptions(beam_size=3, n_best=3, max_length=6),
    "beam-early": DecodeOptions(beam_size=2, n_best=2, max_length=6, early_stopping=True),
    "beam-never": DecodeOptions(beam_size=2, max_length=6, early_stopping="never"),
    "sample": DecodeOptions(sampling=True, n_best=2, seed=0, max_length=6),
}
VOCAB, PAD, EOS, SPACE = 40, 0, 2, 3  # id 3 is a bare "▁": it writes no text on its own


class SpaceTokenizer:
    """Words w4..w39; id 3 decodes to a space, which a text made of it alone strips to ""."""

    pad_id, unk_id, eos_id = PAD, 1, EOS
    vocab_size = VOCAB

    def encode(self, text: str) -> list[int]:
        return [int(word[1:]) for word in text.split()]

    def decode(self, ids: list[int]) -> str:
        words = [" " if i == SPACE else f"w{i}" for i in ids if i not in (PAD, EOS)]
        return " ".join(words).strip()

    def pieces(self, ids: list[int]) -> list[str]:
        return ["▁" if i == SPACE else f"w{i}" for i in ids]


def eos_then_space(arch: str) -> torch.nn.Module:
    """A tiny model whose likeliest token is EOS at every step, then the bare space."""
    torch.manual_seed(0)
    model = build_model(arch, make_config(arch, "tiny", vocab_size=VOCAB)).eval()
    bias = model.final_logits_bias[0] if arch == "transformer" else model.out_vocab.bias
    with torch.no_grad():
        bias[EOS] = 100.0
        bias[SPACE] = 50.0
    return model


def test_silent_tokens_are_those_that_write_nothing():
    assert silent_token_ids(SpaceTokenizer(), VOCAB) == (SPACE,)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("options", SEARCHES.values(), ids=SEARCHES.keys())
def test_every_search_says_something(arch, options):
    model = eos_then_space(arch)
    translator = Translator(model, SpaceTokenizer())
    texts = ["w5", "w6 w7 w8", "w9 w10"]
    for translation in translator.translate(texts, options):
        assert all(candidate.text for candidate in translation.candidates)
    # Without the tokenizer's silent ids the search keeps to one token: the bare space.
    src = torch.tensor([[5, EOS, PAD, PAD], [6, 7, 8, EOS]])
    for nbest in generate(model, src, options):
        assert nbest[0].tokens == [SPACE]
