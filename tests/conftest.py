"""Fixtures shared across test packages. Keep this file small."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "model_store" / "data" / "es-en"
TRAIN_DATA = DATA_DIR / "train.tsv.gz"
SHIPPED_TOKENIZER = DATA_DIR / "spm.model"

_WORDS = (
    "el la los las un una casa perro gato agua tierra cielo dios hombre mujer hijo hija "
    "palabra camino luz noche día pan vino mar monte ciudad rey pueblo dijo fue era y de en"
).split()


def _tokenizer_lines(limit: int = 400) -> list[str]:
    """A few hundred lines of the shipped corpus, or made-up Spanish if it is not built yet."""
    if TRAIN_DATA.exists():
        from service.text.corpus import load_split

        pairs = load_split("train", TRAIN_DATA.parent)[:limit]
        return [line for pair in pairs for line in (pair.source, pair.target)]
    pairs = itertools.product(_WORDS, repeat=2)
    return [f"{a} {b} {c}." for (a, b), c in zip(pairs, itertools.cycle(_WORDS))][:limit]


def build_tiny_store(work: Path) -> Path:
    """Untrained tiny `es-en/transformer` and `es-en/rnnsearch` (version 1) under `work`, with
    the shipped tokenizer, or one trained on the spot when the corpus is not built yet.

    The models' vocabulary equals the tokenizer's, so every id they emit decodes.
    """
    import torch

    from service.models import build_model, make_config
    from service.store import ModelStore
    from service.text.tokenizer import Tokenizer, train_tokenizer

    if SHIPPED_TOKENIZER.exists():
        spm_path = SHIPPED_TOKENIZER
    else:
        vocab = 200 if TRAIN_DATA.exists() else 48
        spm_path = train_tokenizer(
            _tokenizer_lines(), work / "spm.model", vocab_size=vocab, byte_fallback=False
        )
    vocab_size = Tokenizer.load(spm_path).vocab_size
    store = ModelStore(work / "model_store")
    for seed, arch in enumerate(("transformer", "rnnsearch")):
        torch.manual_seed(seed)
        model = build_model(arch, make_config(arch, "tiny", vocab_size)).eval()
        store.save(
            model,
            spm_path,
            model_id=f"es-en/{arch}",
            metrics={"test": {"bleu": 0.0, "chrf": 0.0, "note": "untrained test model"}},
        )
    return store.root


@pytest.fixture(scope="session")
def tiny_model_store(tmp_path_factory) -> Path:
    """A model store with untrained tiny models; see `build_tiny_store`."""
    return build_tiny_store(tmp_path_factory.mktemp("tiny_store"))


def add_tiny_lm(store_root: Path, max_positions: int = 1024) -> Path:
    """An untrained tiny `es-en/lm` (version 1) in the store at `store_root`, sharing the
    translation models' tokenizer. A long context lets tests run long generations."""
    import torch

    from service.models import build_model, make_config
    from service.store import ModelStore
    from service.text.tokenizer import Tokenizer

    store = ModelStore(store_root)
    spm_path = store.directory(store.resolve("es-en/transformer")) / "spm.model"
    torch.manual_seed(2)
    vocab_size = Tokenizer.load(spm_path).vocab_size
    config = make_config("lm", "tiny", vocab_size, max_positions=max_positions)
    store.save(
        build_model("lm", config).eval(),
        spm_path,
        model_id="es-en/lm",
        metrics={"valid_perplexity": 1.0, "note": "untrained test model"},
    )
    return store.root


@pytest.fixture(scope="session")
def tiny_lm_store(tmp_path_factory) -> Path:
    """`build_tiny_store` plus an untrained tiny `es-en/lm`; see `add_tiny_lm`."""
    return add_tiny_lm(build_tiny_store(tmp_path_factory.mktemp("tiny_lm_store")))


def pytest_configure(config):
    # Ray Serve 2.60's own models still use pydantic v1 idioms; nothing to act on here.
    config.addinivalue_line(
        "filterwarnings", "ignore:Using extra keyword arguments on `Field`:DeprecationWarning"
    )
