"""What a model learns from the corpus: the seam between the training loop and an architecture.

The loop in `trainer.py` is the same for every model: token-budget batches, a cross-entropy step,
validation loss, checkpoints, the store. A task says the rest: how corpus pairs become examples
and batches, how the model is called on a batch, and what the final test metrics are.

- `Seq2SeqTask` (transformer, rnnsearch): Spanish source -> English target (or the other way
  round, `direction="en-es"`), teacher forcing; tested with beam search and sacrebleu.
- `LanguageModelTask` (lm): one or both sides of every pair as monolingual text (the
  tokenizer is joint es+en), each text as [eos] text [eos], packed into rows; tested by
  perplexity.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

from service.text.corpus import Pair
from service.training.data import (
    BatchSampler,
    TextPair,
    collate_lm,
    encode_pairs,
    encode_texts,
)

if TYPE_CHECKING:
    from service.training.trainer import Trainer


class Task(Protocol):
    name: str
    label_smoothing: float  # the default when the run's config does not set one

    def examples(
        self, pairs: Sequence[TextPair], tokenizer: Any, model_config: Any, *, training: bool
    ) -> list: ...

    def sampler(
        self, examples: Sequence, max_tokens: int, model_config: Any, seed: int | None
    ) -> BatchSampler: ...

    def logits(self, model: nn.Module, batch: Any) -> Tensor:
        """(B, T, V) scores for `batch.labels`."""
        ...

    def preload(self) -> None:
        """Import what `test_metrics` needs, before a long run (the working tree may change)."""
        ...

    def test_metrics(self, trainer: Trainer, pairs: Sequence[TextPair]) -> dict[str, Any]: ...

    def summary(self, metrics: dict[str, Any]) -> str: ...

    def facts(self) -> dict[str, Any]:
        """Training facts for the manifest beyond the loop's own."""
        ...


class Seq2SeqTask:
    name = "seq2seq"
    label_smoothing = 0.1

    def __init__(self, beam_size: int = 4, direction: str = "es-en"):
        self.beam_size = beam_size
        self.direction = direction

    def oriented(self, pairs: Sequence[TextPair]) -> Sequence[TextPair]:
        """The corpus stores (es, en); an en-es model reads them the other way round."""
        if self.direction == "es-en":
            return pairs
        return [Pair(pair.key, pair.target, pair.source) for pair in pairs]

    def examples(self, pairs, tokenizer, model_config, *, training):
        return encode_pairs(self.oriented(pairs), tokenizer, model_config.eos_id)

    def sampler(self, examples, max_tokens, model_config, seed):
        mc = model_config
        return BatchSampler(
            examples,
            max_tokens,
            pad_id=mc.pad_id,
            eos_id=mc.eos_id,
            decoder_start_id=mc.decoder_start_id,
            seed=seed,
        )

    def logits(self, model, batch):
        return model(batch.src, batch.tgt_in)

    def preload(self):
        import sacrebleu  # noqa: F401
        import tqdm  # noqa: F401

        import service.decoding.search  # noqa: F401
        import service.decoding.translator  # noqa: F401
        import service.training.evaluate  # noqa: F401

    def test_metrics(self, trainer, pairs):
        from service.decoding.search import DecodeOptions
        from service.decoding.translator import Translator
        from service.training.evaluate import evaluate

        translator = Translator(trainer.model.eval(), trainer.tokenizer)
        return evaluate(
            translator,
            self.oriented(pairs),
            DecodeOptions(beam_size=self.beam_size),
            progress=sys.stderr.isatty(),
        )

    def summary(self, metrics):
        return (
            f"BLEU {metrics['bleu']:.2f} chrF {metrics['chrf']:.2f} "
            f"({metrics['speed']['sentences_per_s']:.1f} sent/s)"
        )

    def facts(self):
        return {"task": self.name, "direction": self.direction}


PERPLEXITY_UNIT = (
    "exp of the mean next-token NLL per SentencePiece token (joint es+en vocabulary, the "
    "closing eos included); each verse scored on its own as [eos] verse [eos]"
)


def perplexity(nll: float) -> float:
    return math.exp(min(nll, 50.0))


class LanguageModelTask:
    """Next-token prediction on the Spanish and the English side of the corpus.

    Training rows pack neighbouring verses of one language (`pack_tokens` > 0); validation and
    test score each verse on its own, the way a generation prompt starts, so the perplexities
    do not depend on the packing a run used.
    """

    name = "lm"
    label_smoothing = 0.0  # smoothing would bias the perplexity this model is judged by

    def __init__(self, pack_tokens: int = 128, languages: Sequence[str] = ("es", "en")):
        self.pack_tokens = pack_tokens
        self.languages = tuple(languages)

    def texts(self, pairs: Sequence[TextPair]) -> dict[str, list[str]]:
        sides = {"es": [p.source for p in pairs], "en": [p.target for p in pairs]}
        return {language: sides[language] for language in self.languages}

    def _encode(self, texts, tokenizer, model_config, pack: bool):
        limit = min(self.pack_tokens, model_config.max_positions) if pack else None
        return encode_texts(
            texts,
            tokenizer,
            model_config.eos_id,
            max_tokens=limit or model_config.max_positions,
            pack=pack,
        )

    def examples(self, pairs, tokenizer, model_config, *, training):
        pack = training and self.pack_tokens > 0
        return [
            example
            for texts in self.texts(pairs).values()
            for example in self._encode(texts, tokenizer, model_config, pack)
        ]

    def sampler(self, examples, max_tokens, model_config, seed):
        pad_id = model_config.pad_id
        return BatchSampler(
            examples, max_tokens, seed=seed, collate_fn=lambda rows: collate_lm(rows, pad_id)
        )

    def logits(self, model, batch):
        return model(batch.inputs)

    def preload(self):
        pass

    def test_metrics(self, trainer, pairs):
        c, mc = trainer.config, trainer.model_config
        metrics: dict[str, Any] = {}
        nll_sum, tokens_sum = 0.0, 0
        for language, texts in self.texts(pairs).items():
            examples = self._encode(texts, trainer.tokenizer, mc, pack=False)
            nll, _, tokens = trainer.token_losses(self.sampler(examples, c.max_tokens, mc, None))
            metrics[f"test_perplexity_{language}"] = round(perplexity(nll / tokens), 4)
            metrics[f"test_tokens_{language}"] = tokens
            nll_sum, tokens_sum = nll_sum + nll, tokens_sum + tokens
        best = trainer.best_valid_loss
        return {
            "test_perplexity": round(perplexity(nll_sum / tokens_sum), 4),
            "test_nll": round(nll_sum / tokens_sum, 5),
            "test_tokens": tokens_sum,
            **metrics,
            "test_verses": len(self.languages) * len(pairs),
            "valid_verses": len(trainer.valid_sampler.examples),
            "valid_perplexity": round(perplexity(best), 4) if math.isfinite(best) else None,
            "valid_nll": round(best, 5) if math.isfinite(best) else None,
            "perplexity_unit": PERPLEXITY_UNIT,
            "languages": list(self.languages),
        }

    def summary(self, metrics):
        per_language = ", ".join(
            f"{language} {metrics[f'test_perplexity_{language}']:.2f}"
            for language in self.languages
        )
        return (
            f"perplexity {metrics['test_perplexity']:.2f} ({per_language}) "
            f"over {metrics['test_tokens']:,} tokens"
        )

    def facts(self):
        return {
            "task": self.name,
            "languages": list(self.languages),
            "text": f"monolingual: the {' and '.join(self.languages)} side(s) of the es-en "
            "train split, each text as [eos] text [eos]",
            "pack_tokens": self.pack_tokens,
        }


def task_for(
    arch: str,
    *,
    pack_tokens: int = 128,
    beam_size: int = 4,
    direction: str = "es-en",
    languages: Sequence[str] = ("es", "en"),
) -> Task:
    if arch == "lm":
        return LanguageModelTask(pack_tokens, languages)
    return Seq2SeqTask(beam_size, direction)


def default_label_smoothing(arch: str) -> float:
    return task_for(arch).label_smoothing
