"""A temporary store with tiny random models, a tiny tokenizer and ~20 sentence pairs.

Random models translate badly but deterministically, which is all the report needs: every
number in it is computed the same way for a real model.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from service.decoding.search import DecodeOptions
from service.models import build_model, make_config
from service.store import ModelStore
from service.text.corpus import Pair

SPM_VOCAB_SIZE = 60

SPANISH = (
    "el la los las un una casa perro gato agua tierra cielo dios hombre mujer hijo hija "
    "palabra camino luz noche dia pan vino mar monte ciudad rey pueblo dijo fue era"
).split()
ENGLISH = (
    "the the the the a a house dog cat water earth heaven god man woman son daughter "
    "word way light night day bread wine sea mountain city king people said was was"
).split()
# Source lengths spread over several of evaluate's buckets (0-10, 10-20, 20-30).
LENGTHS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 26, 9)


def make_pairs() -> list[Pair]:
    words = itertools.cycle(range(len(SPANISH)))
    pairs = []
    for number, length in enumerate(LENGTHS, start=1):
        ids = [next(words) for _ in range(length)]
        pairs.append(
            Pair(
                f"Ruth 1:{number}",
                " ".join(SPANISH[i] for i in ids) + ".",
                " ".join(ENGLISH[i] for i in ids) + ".",
            )
        )
    return pairs


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and the test machines share two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def pairs() -> list[Pair]:
    return make_pairs()


@pytest.fixture(scope="package")
def spm_path(tmp_path_factory) -> Path:
    import sentencepiece

    sentences = [s for p in make_pairs() for s in (p.source, p.target)]
    prefix = tmp_path_factory.mktemp("spm") / "tiny"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 5),
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


def tiny_model(arch: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(arch, make_config(arch, "tiny", vocab_size)).eval()


@pytest.fixture(scope="package")
def store(tmp_path_factory, spm_path) -> ModelStore:
    """es-en/transformer v1 and v2 (same weights), es-en/rnnsearch v1."""
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()
    store = ModelStore(tmp_path_factory.mktemp("store") / "model_store")
    transformer = tiny_model("transformer", vocab, seed=1)
    store.save(transformer, spm_path, model_id="es-en/transformer", version=1)
    store.save(transformer, spm_path, model_id="es-en/transformer", version=2)
    store.save(tiny_model("rnnsearch", vocab, seed=2), spm_path, model_id="es-en/rnnsearch")
    return store


@pytest.fixture(scope="package")
def options() -> DecodeOptions:
    # Random models rarely emit EOS: a short max_length keeps decoding cheap.
    return DecodeOptions(beam_size=2, max_length=8)


@pytest.fixture(scope="package")
def comparison(tmp_path_factory, store, pairs, options):
    """One comparison of transformer (baseline) and rnnsearch, shared by the report tests."""
    from service.compare import compare_models

    out = tmp_path_factory.mktemp("comparison")
    report = compare_models(
        store,
        ["transformer@1", "rnnsearch"],
        pairs,
        options,
        out,
        samples=3,
        split="test",
        progress=False,
        n_bootstrap=200,
    )
    return report, out
