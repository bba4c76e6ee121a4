"""Store fixtures: a tiny SentencePiece model and tiny models, all built offline in seconds."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from service.models import build_model, make_config
from service.store import ModelStore

SPM_VOCAB_SIZE = 48
MODEL_VOCAB_SIZE = 100  # larger than the tokenizer, as an imported model's may be

WORDS = (
    "el la los las un una casa perro gato agua tierra cielo dios hombre mujer hijo hija "
    "palabra camino luz noche dia pan vino mar monte ciudad rey pueblo dijo vino fue era"
).split()


def _sentences() -> list[str]:
    pairs = itertools.product(WORDS, repeat=2)
    return [f"{a} {b} {c}." for (a, b), c in zip(pairs, itertools.cycle(WORDS))]


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory) -> Path:
    """A SentencePiece model with Marian's special pieces at pad=0, unk=1, eos=2."""
    import sentencepiece

    prefix = tmp_path_factory.mktemp("spm") / "tiny"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_sentences()),
        model_prefix=str(prefix),
        vocab_size=SPM_VOCAB_SIZE,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        eos_id=2,
        bos_id=-1,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "model_store")


def _tiny_model(arch: str, seed: int = 0, vocab_size: int = MODEL_VOCAB_SIZE):
    torch.manual_seed(seed)
    model = build_model(arch, make_config(arch, "tiny", vocab_size))
    if arch == "transformer":
        with torch.no_grad():
            model.final_logits_bias.normal_()  # nonzero, so a dropped bias shows in the logits
    return model.eval()


@pytest.fixture
def tiny_model():
    """Factory: tiny_model(arch, seed=0) -> an untrained model in eval mode."""
    return _tiny_model


@pytest.fixture
def batch():
    """(B, S) sources, right-padded with pad=0, and (B, T) decoder inputs starting at pad."""
    generator = torch.Generator().manual_seed(1)
    src = torch.randint(3, MODEL_VOCAB_SIZE, (3, 7), generator=generator)
    src[1, 5:] = 0
    src[2, 3:] = 0
    tgt_in = torch.randint(3, MODEL_VOCAB_SIZE, (3, 5), generator=generator)
    tgt_in[:, 0] = 0
    return src, tgt_in
