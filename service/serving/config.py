"""Typed arguments of the Serve application: what `args:` in deploy/serve_config.yaml may say.

Ray-level knobs (CPUs, GPUs, replicas, queue bounds, batching `user_config`) belong to the
`deployments:` section of the same file, where Serve applies them; everything the application
itself needs to know lives here. The model replicas never import this module (it holds the
API's settings): each gets a `runtime.LoadSpec`, and its live `user_config` model lives beside
its deployment (`translation.BatchingConfig`, `generation.GeneratorConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.api.access import KeySettings, RateLimitSettings, default_db
from service.api.experiments import DEFAULT_FEEDBACK_CAPACITY, ExperimentConfig
from service.api.settings import ApiSettings, GenerationSettings
from service.serving.runtime import RuntimeArgs, RuntimeOverrides

REPO_ROOT = Path(__file__).resolve().parents[2]


class ModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Store id (`es-en/transformer`) or short name (`transformer`).")
    version: int | None = Field(None, ge=1, description="None serves the newest version.")
    deployment: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Deployment name; default `<src>-<tgt>-<name>`, e.g. `es-en-transformer`.",
    )
    max_batch_tokens: int = Field(
        8192, ge=16, description="Padded (rows x tokens) budget of one decode call."
    )
    required: bool = Field(
        True,
        description="If the store lacks the model: true fails the deploy; false serves the "
        "others and logs a warning (a direction that ships later, such as en-es).",
    )
    max_source_tokens: int = Field(
        256,
        ge=2,
        description="Longest source the replica decodes; the ingress splits longer sentences "
        "at clause boundaries to fit.",
    )
    batching: Literal["static", "continuous"] = Field(
        "static",
        description="static: batches of the texts queued while the previous batch decoded; "
        "continuous: every sentence joins the running batch at the next decoder step and "
        "leaves it when done (service/decoding/continuous.py).",
    )
    runtime: RuntimeOverrides = Field(
        default_factory=RuntimeOverrides,
        description="This model's own device, dtype or torch_threads, over the app's `runtime`.",
    )


DEFAULT_MODELS = [
    ModelArgs(id="es-en/transformer"),
    ModelArgs(id="es-en/rnnsearch"),
    ModelArgs(id="en-es/transformer", required=False),  # English->Spanish, once stored
]


class GenerationArgs(GenerationSettings):
    """The language model behind /v1/generate and /v1/completions, and the limits of both."""

    id: str = Field("es-en/lm", description="Store id or short name of the language model.")
    version: int | None = Field(None, ge=1, description="None serves the newest version.")
    deployment: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Deployment name; default `es-en-lm`."
    )
    required: bool = Field(
        False,
        description="If the store lacks the model: true fails the deploy; false (the default) "
        "serves translation alone and logs a warning.",
    )
    runtime: RuntimeOverrides = Field(
        default_factory=RuntimeOverrides,
        description="The language model's own device, dtype or torch_threads, over the app's "
        "`runtime`.",
    )

    def api_settings(self) -> GenerationSettings:
        return GenerationSettings(**self.model_dump(include=set(GenerationSettings.model_fields)))


class ApiArgs(ApiSettings):
    """The HTTP API's limits, and who may call it how often (service/api/access.py)."""

    keys: KeySettings = Field(default_factory=KeySettings, description="API keys; off by default.")
    rate_limit: RateLimitSettings = Field(
        default_factory=RateLimitSettings,
        description="Limits per caller (per key, else per client address); none by default.",
    )


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = Field(
        "model_store",
        description="Model store root; a relative path is taken from the working directory "
        "if it exists there, else from the repository root.",
    )
    models: list[ModelArgs] = Field(default_factory=lambda: list(DEFAULT_MODELS), min_length=1)
    default_model: str = Field("transformer", description="Answers requests naming no model.")
    runtime: RuntimeArgs = Field(default_factory=RuntimeArgs)
    api: ApiArgs = Field(default_factory=ApiArgs)
    generation: GenerationArgs | None = Field(
        default_factory=GenerationArgs, description="Text generation; null turns it off."
    )
    experiments: list[ExperimentConfig] = Field(
        default_factory=list,
        description="A/B experiments: weighted variants of the served models, sticky per user; "
        "at most one enabled per route (service/api/experiments.py).",
    )
    feedback_capacity: int = Field(
        DEFAULT_FEEDBACK_CAPACITY,
        ge=0,
        description="Request ids each ingress replica remembers for POST /v1/feedback (an LRU).",
    )

    @model_validator(mode="after")
    def _runtimes_are_valid(self) -> AppArgs:
        """Every model's runtime, its own keys over the app's, is checked here (int8 with
        device cuda fails), so a bad combination fails the deploy rather than a replica."""
        for spec in [*self.models, *([self.generation] if self.generation else [])]:
            self.runtime_for(spec)
        return self

    def runtime_for(self, spec: ModelArgs | GenerationArgs) -> RuntimeArgs:
        """The runtime a model's replicas load it with: its own `runtime:` over the app's."""
        try:
            return spec.runtime.over(self.runtime)
        except ValidationError as error:
            messages = "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
            raise ValueError(f"runtime of {spec.id}: {messages}") from None

    def keys_db(self) -> Path:
        """`api.keys.db` from the working directory; default `keys.sqlite` beside the store."""
        if self.api.keys.db is None:
            return default_db(self.store_path())
        return (Path.cwd() / Path(self.api.keys.db).expanduser()).resolve()

    def store_path(self) -> Path:
        path = Path(self.store).expanduser()
        if path.is_absolute():
            return path
        if (Path.cwd() / path).is_dir():
            return (Path.cwd() / path).resolve()
        return REPO_ROOT / path
