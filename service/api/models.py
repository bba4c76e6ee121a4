"""`GET /v1/models`, `/healthz`, `/readyz`: what is served and whether it is ready.

`/v1/models` answers in this service's shape (`models`) and in OpenAI's list shape (`object`,
`data`) at once, so OpenAI client libraries can list the models too.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.api.backends import Backends
from service.contracts import ModelStatus, ServedModel

Task = Literal["translation", "generation"]


class ModelCard(BaseModel):
    id: str
    name: str
    version: int
    arch: str
    source: str
    target: str
    parameters: int
    metrics: dict[str, Any] = Field(description="Test-set metrics from the manifest.")
    default: bool = Field(description="Answers requests that name no model.")
    status: Literal["ready", "unavailable"]
    serving: dict[str, Any] = Field(
        default_factory=dict, description="Device, dtype and live batching settings."
    )
    task: Task = "translation"
    # OpenAI's model object, so that OpenAI client libraries can list the models.
    object: Literal["model"] = "model"
    created: int = Field(0, description="Unix time the version was saved.")
    owned_by: str = "service"


def model_card(model: ServedModel, status: ModelStatus | None, task: Task) -> ModelCard:
    """A served model's entry in `GET /v1/models`; no status means it did not answer."""
    return ModelCard(
        id=model.id,
        name=model.name,
        version=model.version,
        arch=model.arch,
        source=model.source,
        target=model.target,
        parameters=model.parameters,
        metrics=model.metrics,
        default=model.default,
        status="ready" if status is not None and status.ready else "unavailable",
        serving=status.serving if status is not None else {},
        task=task,
        created=model.created,
    )


class ModelList(BaseModel):
    models: list[ModelCard]
    # OpenAI's list shape: the same cards under `data`.
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)

    def model_post_init(self, _: Any) -> None:
        if not self.data:
            self.data = list(self.models)


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    models: dict[str, bool] = Field(description="Per served model (id@version): loaded or not.")


async def _cards(backends: Backends) -> list[ModelCard]:
    statuses = await backends.translation.status()
    cards = [model_card(m, statuses.get(m.key), "translation") for m in backends.catalog.models]
    if backends.generation is not None:
        status = await backends.generation.status()
        cards.append(model_card(backends.generation.model, status, "generation"))
    return cards


def models_router(backends: Backends) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models() -> ModelList:
        return ModelList(models=await _cards(backends))

    @router.get("/healthz", response_model=Health, tags=["operations"], summary="Process is alive")
    async def healthz() -> Health:
        return Health()

    @router.get(
        "/readyz",
        response_model=Readiness,
        tags=["operations"],
        summary="Every served model is loaded",
        responses={503: {"model": Readiness, "description": "Some model is not loaded."}},
    )
    async def readyz():
        cards = await _cards(backends)
        models = {f"{card.id}@{card.version}": card.status == "ready" for card in cards}
        body = Readiness(ready=all(models.values()), models=models)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    return router
