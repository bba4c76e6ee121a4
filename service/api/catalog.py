"""Which models this service answers with, and how a request's model/version/languages pick one.

Requests name models by short name (`transformer`) or full id (`es-en/transformer`); both are
looked up in this in-memory list of served models, never in the file system.
"""

from __future__ import annotations

from service.api.errors import ApiError
from service.contracts import ServedModel


class Catalog:
    """The served translation models, newest version first within an id.

    A request that names neither languages nor a model gets the first default model in the
    order served (the config's order): its language pair is the service's default pair, and
    the other pairs' defaults answer only when their languages are asked for.
    """

    def __init__(self, models: list[ServedModel]):
        if not models:
            raise ValueError("a catalog needs at least one model")
        first_default = next((m for m in models if m.default), models[0])
        self.default_pair = (first_default.source, first_default.target)
        self.models = sorted(models, key=lambda m: (m.id, -m.version))

    def languages(self) -> dict[str, list[str]]:
        """Every language code with the targets it translates into (targets may be empty)."""
        pairs: dict[str, set[str]] = {}
        for model in self.models:
            pairs.setdefault(model.source, set()).add(model.target)
            pairs.setdefault(model.target, set())
        return {code: sorted(targets) for code, targets in sorted(pairs.items())}

    def resolve(
        self,
        model: str | None = None,
        version: int | None = None,
        source: str | None = None,
        target: str | None = None,
        *,
        source_field: str = "source",
        target_field: str = "target",
    ) -> ServedModel:
        """The served model for a request, or a 404 ApiError naming the field at fault."""
        candidates = self.models
        if model is None and source is None and target is None:
            source, target = self.default_pair
        if source is not None:
            candidates = [m for m in candidates if m.source == source]
            if not candidates:
                raise ApiError(
                    404,
                    "language_pair_not_supported",
                    f"no model translates from {source!r}; sources: {self.sources()}",
                    field=source_field,
                )
        if target is not None:
            candidates = [m for m in candidates if m.target == target]
            if not candidates:
                raise ApiError(
                    404,
                    "language_pair_not_supported",
                    f"no model translates {source or 'any language'!r} into {target!r}; "
                    f"pairs: {self.pairs()}",
                    field=target_field,
                )

        if model is None:
            defaults = [m for m in candidates if m.default]
            chosen_id = (defaults or candidates)[0].id
        else:
            named = [m for m in self.models if model in (m.id, m.name)]
            if not named:
                raise ApiError(
                    404,
                    "model_not_found",
                    f"no served model {model!r}; available: {self.names()}",
                    field="model",
                )
            in_pair = [m for m in named if m in candidates]
            if not in_pair:
                raise ApiError(
                    404,
                    "language_pair_not_supported",
                    f"model {named[0].id!r} translates {named[0].source}->{named[0].target}, "
                    f"not {source or named[0].source}->{target or named[0].target}",
                    field=target_field if target is not None else source_field,
                )
            ids = sorted({m.id for m in in_pair})
            if len(ids) > 1:
                raise ApiError(
                    404,
                    "model_not_found",
                    f"model name {model!r} is served for several language pairs ({ids}); "
                    "give source and target, or use the full id",
                    field="model",
                )
            chosen_id = ids[0]

        versions = [m for m in candidates if m.id == chosen_id]  # newest first
        if version is None:
            return versions[0]
        for served in versions:
            if served.version == version:
                return served
        raise ApiError(
            404,
            "version_not_found",
            f"model {chosen_id!r} is not served at version {version}; served versions: "
            f"{[m.version for m in versions]}",
            field="version",
        )

    def sources(self) -> list[str]:
        return sorted({m.source for m in self.models})

    def pairs(self) -> list[str]:
        return sorted({f"{m.source}-{m.target}" for m in self.models})

    def names(self) -> list[str]:
        return sorted({m.name for m in self.models} | {m.id for m in self.models})
