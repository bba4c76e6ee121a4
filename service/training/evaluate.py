"""Corpus-level translation quality and decode speed, measured through the serving path.

`evaluate` drives a `Translator` (the same object the service uses), so the numbers describe
what users get. Scores are sacrebleu's, with their signature strings, so they can be compared
with published numbers and with each other only when the signatures match.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sacrebleu.metrics import BLEU, CHRF

# Source length in whitespace words: [low, high) per bucket, the last one open-ended.
LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = (
    (0, 10),
    (10, 20),
    (20, 30),
    (30, 40),
    (40, 50),
    (50, None),
)
CHUNK_SENTENCES = 64  # sentences handed to the translator at a time: one progress-bar tick


class TextPair(Protocol):
    source: str
    target: str


class SupportsTranslate(Protocol):
    def translate(self, texts: list[str], options: Any, stats: Any = None) -> list[Any]: ...


@dataclass(frozen=True)
class OrientedPair:
    """A corpus pair read in a model's direction: `source` is what the model translates."""

    key: str
    source: str
    target: str


# The corpus stores every pair as (key, es, en): `Pair.source` is Spanish, `Pair.target` English.
CORPUS_LANGUAGES = ("es", "en")


def orient(pairs: Sequence[TextPair], source_lang: str, target_lang: str) -> list[OrientedPair]:
    """The pairs as a `source_lang` -> `target_lang` model is scored on them.

    An en->es model translates the English side and is scored against the Spanish one; what
    its manifest's languages say, not its id, decides.
    """
    if (source_lang, target_lang) == CORPUS_LANGUAGES:
        flip = False
    elif (target_lang, source_lang) == CORPUS_LANGUAGES:
        flip = True
    else:
        raise ValueError(
            f"the corpus is es<->en; a {source_lang}->{target_lang} model cannot be scored on it"
        )
    return [
        OrientedPair(
            str(getattr(p, "key", i)),
            p.target if flip else p.source,
            p.source if flip else p.target,
        )
        for i, p in enumerate(pairs)
    ]


def count_empty(hypotheses: Sequence[str]) -> int:
    """Translations with no text at all (whitespace only): a non-empty input should have none."""
    return sum(1 for h in hypotheses if not h.strip())


def bucket_name(low: int, high: int | None) -> str:
    return f"{low}-{high}" if high is not None else f"{low}+"


def bucket_of(words: int) -> str:
    for low, high in LENGTH_BUCKETS:
        if words >= low and (high is None or words < high):
            return bucket_name(low, high)
    raise ValueError(f"negative length {words}")


def translate_all(
    translator: SupportsTranslate,
    sources: Sequence[str],
    options: Any,
    *,
    progress: bool = True,
    chunk: int = CHUNK_SENTENCES,
) -> tuple[list[str], dict[str, float]]:
    """Best hypothesis per source (input order) and the decode speed.

    Sources are sorted by length before chunking so each chunk packs into tight batches.
    """
    from service.decoding.translator import BatchStats

    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hypotheses: list[str] = [""] * len(sources)
    stats = BatchStats()
    chunks = [order[i : i + chunk] for i in range(0, len(order), chunk)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(sources), unit="sent", desc="translating", leave=False)
    started = time.perf_counter()
    try:
        for indices in chunks:
            results = translator.translate([sources[i] for i in indices], options, stats)
            for index, result in zip(indices, results, strict=True):
                hypotheses[index] = result.best.text
            if bar is not None:
                bar.update(len(indices))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    speed = {
        "wall_s": round(seconds, 3),
        "sentences": len(sources),
        "sentences_per_s": round(len(sources) / max(seconds, 1e-9), 3),
        "target_tokens": stats.generated_tokens,
        "target_tokens_per_s": round(stats.generated_tokens / max(seconds, 1e-9), 1),
        "batches": stats.batches,
    }
    return hypotheses, speed


def score(hypotheses: Sequence[str], references: Sequence[str], sources: Sequence[str]) -> dict:
    """BLEU and chrF over the corpus, BLEU per source-length bucket, and empty outputs."""
    if len(hypotheses) != len(references) or len(sources) != len(references):
        raise ValueError("hypotheses, references and sources must have the same length")
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    grouped: dict[str, list[int]] = {bucket_name(lo, hi): [] for lo, hi in LENGTH_BUCKETS}
    for i, source in enumerate(sources):
        grouped[bucket_of(len(source.split()))].append(i)
    buckets = []
    for (low, high), (name, indices) in zip(LENGTH_BUCKETS, grouped.items(), strict=True):
        entry: dict[str, Any] = {
            "bucket": name,
            "min_words": low,
            "max_words": high,
            "count": len(indices),
        }
        if indices:
            bucket_bleu = BLEU().corpus_score(
                [hypotheses[i] for i in indices], [[references[i] for i in indices]]
            )
            entry["bleu"] = round(bucket_bleu.score, 2)
        else:
            entry["bleu"] = None
        buckets.append(entry)
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(bleu_score),
        "empty": count_empty(hypotheses),
        "sentences": len(references),
        "buckets": buckets,
    }


def evaluate(
    translator: SupportsTranslate,
    pairs: Sequence[TextPair],
    options: Any = None,
    *,
    progress: bool = True,
    return_hypotheses: bool = False,
) -> dict[str, Any]:
    """Translate every pair's source and score against its target.

    Returns {"bleu", "chrf", "bleu_signature", "chrf_signature", "bleu_detail", "empty",
    "sentences",
    "buckets": [{"bucket", "min_words", "max_words", "count", "bleu"}], "speed": {"wall_s",
    "sentences", "sentences_per_s", "target_tokens", "target_tokens_per_s", "batches"},
    "decode": {beam_size, ...}} and "hypotheses" when asked.
    """
    from service.decoding.search import DecodeOptions

    if not pairs:
        raise ValueError("nothing to evaluate: no pairs")
    options = options if options is not None else DecodeOptions(beam_size=4)
    sources = [p.source for p in pairs]
    references = [p.target for p in pairs]
    hypotheses, speed = translate_all(translator, sources, options, progress=progress)
    result = score(hypotheses, references, sources)
    result["speed"] = speed
    result["decode"] = {
        "beam_size": getattr(options, "beam_size", None),
        "length_penalty": getattr(options, "length_penalty", None),
        "max_length": getattr(options, "max_length", None),
    }
    if return_hypotheses:
        result["hypotheses"] = hypotheses
    return result


__all__ = [
    "LENGTH_BUCKETS",
    "OrientedPair",
    "bucket_of",
    "count_empty",
    "evaluate",
    "orient",
    "score",
    "translate_all",
]
