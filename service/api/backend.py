"""The typed hand-off between the HTTP layer and whatever runs the models.

Routes build a `TranslationJob` from a validated request and hand it to a `Backend`; the Ray
Serve ingress is the production backend, a fake one serves the unit tests. Keeping this seam
explicit is what lets routes carry no model code and deployments carry no HTTP code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from service.api.catalog import Catalog, ServedModel
from service.decoding.search import DecodeOptions
from service.decoding.translator import Translation


@dataclass(frozen=True)
class TranslationJob:
    """All texts of one request, decoded with the same options."""

    texts: list[str]
    options: DecodeOptions
    request_id: str


@dataclass(frozen=True)
class ItemOutcome:
    """One text's translation and what it waited for and cost."""

    translation: Translation | None
    queue_s: float  # enqueued -> its decode batch started
    compute_s: float  # duration of the decode call that carried it
    batch_size: int  # texts decoded in that call, from all requests
    batch_id: int = 0  # which decode call, per replica; equal ids shared one call
    error: str | None = None  # set when this text alone could not be decoded


@dataclass(frozen=True)
class JobResult:
    items: list[ItemOutcome]
    model_id: str
    version: int
    wall_s: float  # in the model replica, from receipt to the last item done

    @property
    def compute_s(self) -> float:
        """Time in decode calls, each counted once even when it carried several items."""
        seen: dict[int, float] = {}
        for item in self.items:
            seen.setdefault(item.batch_id, item.compute_s)
        return sum(seen.values())

    @property
    def queue_s(self) -> float:
        return max(0.0, self.wall_s - self.compute_s)


@dataclass
class ModelStatus:
    ready: bool
    serving: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    catalog: Catalog

    async def translate(self, model: ServedModel, job: TranslationJob) -> JobResult:
        """Raise `ApiError` for overload (503) or timeout (504); never a transport error."""
        ...

    async def status(self) -> dict[str, ModelStatus]:
        """Keyed by `ServedModel.key`; must answer quickly even when a model does not."""
        ...
