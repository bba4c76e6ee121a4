"""The ingress's translation cache: a sentence already translated is not decoded again.

Keyed by everything that decides a translation: the model id and version (a new version
never answers from an old one's entries), the decoding options, and the sentence exactly as
sent to the model. Per ingress replica, in memory, least recently used out first; size 0
turns it off. Hits and misses go to the recorder (Prometheus counters in the service).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from service.contracts import ItemOutcome, ServedModel
from service.decoding.search import DecodeOptions


class TranslationCache:
    def __init__(self, size: int, record: Callable[[str, int, int], None] | None = None):
        """`record(model label, hits, misses)` is called once per lookup of a job's units."""
        self.size = size
        self.record = record
        self._entries: OrderedDict[tuple[Any, ...], ItemOutcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(model: ServedModel, options: DecodeOptions, unit: str) -> tuple[Any, ...]:
        return (model.id, model.version, options, unit)

    def lookup(
        self, model: ServedModel, options: DecodeOptions, units: list[str]
    ) -> list[ItemOutcome | None]:
        """The cached outcome of each unit, None where there is none (a miss)."""
        found: list[ItemOutcome | None] = []
        for unit in units:
            key = self.key(model, options, unit)
            outcome = self._entries.get(key) if self.size else None
            if outcome is not None:
                self._entries.move_to_end(key)
            found.append(outcome)
        if self.record is not None and self.size and units:
            hits = sum(outcome is not None for outcome in found)
            self.record(model.label, hits, len(units) - hits)
        return found

    def store(
        self, model: ServedModel, options: DecodeOptions, units: list[str], items: list[ItemOutcome]
    ) -> None:
        if not self.size:
            return
        for unit, item in zip(units, items, strict=True):
            if item.error is not None or item.translation is None:
                continue
            key = self.key(model, options, unit)
            self._entries[key] = item
            self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
