"""What the routes call to get work done: the typed `Backends` handed to `create_app`.

The Ray Serve ingress passes its clients of the model deployments (`service.serving.ingress`);
the unit tests pass fakes. Either way the routes see these protocols and the contracts types,
never Ray, and a backend reports failure with the domain errors of `service.contracts`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from service.api.cache import TranslationCache
from service.api.catalog import Catalog
from service.api.settings import GenerationSettings
from service.contracts import (
    GenerationChunk,
    GenerationJob,
    JobResult,
    ModelStatus,
    ServedModel,
    TranslationJob,
)


class TranslationBackend(Protocol):
    async def translate(self, model: ServedModel, job: TranslationJob) -> JobResult:
        """Raise `Overloaded`, `ModelUnavailable` or `Timeout`; never a transport error."""
        ...

    async def status(self) -> dict[str, ModelStatus]:
        """Keyed by `ServedModel.key`; must answer quickly even when a model does not."""
        ...


class TokenCounter(Protocol):
    def source_tokens(self, model: ServedModel, text: str) -> int:
        """How many source tokens `model`'s tokenizer makes of `text`, EOS not counted."""
        ...


class GenerationBackend(Protocol):
    model: ServedModel
    settings: GenerationSettings

    def stream(self, job: GenerationJob) -> AsyncIterator[GenerationChunk]:
        """Chunks as they come, the first an acknowledgement; raises a domain error
        (`PromptTooLong`, `Overloaded`, ...) before it. Closing the iterator early cancels the
        generation."""
        ...

    async def status(self) -> ModelStatus:
        """Must answer quickly even when the model does not."""
        ...


@dataclass(frozen=True)
class Backends:
    """Everything the app serves with: the translation catalog and its backend, and the
    language model's backend if one is served (else the generation routes answer 404), and the
    source tokenizers that tell how long a sentence is for a model (without them a sentence's
    UTF-8 bytes bound its tokens: SentencePiece with byte fallback makes at most one a byte)."""

    catalog: Catalog
    translation: TranslationBackend
    generation: GenerationBackend | None = None
    tokens: TokenCounter | None = None
    cache: TranslationCache | None = None  # sentences already translated (service/api/cache.py)
