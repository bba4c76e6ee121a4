"""Named sizes for model configs: one `preset` classmethod that every config shares."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar


class Presets:
    """Mixin for a frozen config dataclass whose first field is `vocab_size`.

    `PRESETS` maps a name to the fields it changes from the dataclass defaults: "tiny" for
    tests, "small" (the defaults) for the shipped models.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"small": {}}

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any):
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(cls.PRESETS)}")
        return replace(cls(vocab_size=vocab_size, **cls.PRESETS[name]), **overrides)
