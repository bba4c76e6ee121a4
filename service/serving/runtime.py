"""Where and how a model replica runs: device, dtype, threads, and loading its model once.

Both model deployments (`translation.py`, `generation.py`) start the same way: set the torch
threads, pick the device from `RuntimeArgs`, load one verified model version from the store and
put it into its inference dtype with `precision.prepare_for_inference`, the call the CLI's
`translate`, `eval` and `bench peers` make too (`load_replica_model`). The app builder turns a
manifest into the `ServedModel` the ingress routes by (`served_model`), and names each
deployment (`deployment_name`). Nothing here imports Ray or the API layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.contracts import ServedModel

if TYPE_CHECKING:
    from service.store.manifest import Manifest

logger = logging.getLogger("ray.serve")


Device = Literal["auto", "cpu", "cuda"]
# auto: `precision.default_dtype` of the replica's device: the measured CPU default
# (`precision.DEFAULT_CPU_DTYPE`) on CPU, bfloat16 on GPUs that support it, else float16.
Dtype = Literal["auto", "float32", "bfloat16", "float16", "int8"]


class RuntimeArgs(BaseModel):
    """Where and how the models run, per replica (`args.runtime` in serve_config.yaml; a model
    entry's own `runtime:` overrides it for that model, `RuntimeOverrides`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Device = "auto"
    dtype: Dtype = "auto"
    # One intra-op thread per replica: replicas share few cores, and oversubscription makes
    # every batch slower.
    torch_threads: int = Field(1, ge=1, le=256)

    @model_validator(mode="after")
    def _int8_runs_on_cpu(self) -> RuntimeArgs:
        if self.dtype == "int8" and self.device == "cuda":
            raise ValueError(
                "dtype int8 runs on CPU only, and device is cuda: "
                "set device: cpu, or dtype auto, bfloat16 or float16"
            )
        return self


class RuntimeOverrides(BaseModel):
    """A model's own `runtime:` in serve_config.yaml: the keys it sets replace the app-wide
    `runtime`'s for that model's replicas (say `dtype: float32` for one model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Device | None = None
    dtype: Dtype | None = None
    torch_threads: int | None = Field(None, ge=1, le=256)

    def over(self, base: RuntimeArgs) -> RuntimeArgs:
        """`base` with the keys set here replaced (validated together: int8 with cuda fails)."""
        return RuntimeArgs.model_validate(
            {**base.model_dump(), **self.model_dump(exclude_none=True)}
        )


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but this replica sees no GPU; set num_gpus")
    return torch.device(device)


@dataclass(frozen=True)
class LoadSpec:
    """Exactly which model version a replica loads, and how: resolved by the app builder, so
    every replica loads the same version."""

    store: str
    model_id: str
    version: int
    runtime: RuntimeArgs


@dataclass
class ReplicaModel:
    """A replica's model, loaded once: what it runs on, its manifest, weights and tokenizer."""

    device: torch.device
    dtype: str  # what the model runs in (`precision.model_dtype`): auto resolved
    manifest: Manifest
    model: torch.nn.Module
    tokenizer: Any

    def serving_info(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": self.dtype}


def load_replica_model(spec: LoadSpec, arch: str | None = None) -> ReplicaModel:
    """Threads and device from `spec.runtime`, the verified model from the store, then
    `prepare_for_inference` at `spec.runtime.dtype`; `arch`, when given, is the architecture
    the replica can serve (anything else fails)."""
    from service.models.precision import model_dtype, prepare_for_inference
    from service.store import ModelStore

    torch.set_num_threads(spec.runtime.torch_threads)
    device = pick_device(spec.runtime.device)
    if spec.runtime.dtype == "int8" and device.type != "cpu":
        # The config cannot tell when runtime.device is auto; fail before loading the weights.
        raise ValueError(
            f"{spec.model_id}: runtime.dtype int8 runs on CPU only, and this replica runs on "
            f"{device} (runtime.device {spec.runtime.device}): set the model's runtime.device "
            "to cpu, or its dtype to auto, bfloat16 or float16"
        )
    loaded = ModelStore(spec.store).load(spec.model_id, spec.version, device=device)
    manifest = loaded.manifest
    if arch is not None and manifest.arch != arch:
        raise ValueError(f"{manifest.id} is a {manifest.arch}, not an {arch}")
    model = prepare_for_inference(loaded.model, spec.runtime.dtype)
    dtype = model_dtype(model)
    logger.info("loaded %s v%d on %s (%s)", manifest.id, manifest.version, device, dtype)
    return ReplicaModel(device, dtype, manifest, model, loaded.tokenizer)


def deployment_name(model_id: str) -> str:
    """The default deployment of a model: `es-en/transformer` -> `es-en-transformer`."""
    return model_id.replace("/", "-")


def created_timestamp(iso: str) -> int:
    """A manifest's `created` (ISO 8601) as Unix time; 0 when it cannot be read."""
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except (TypeError, ValueError):
        return 0


def served_model(manifest: Manifest, key: str, *, default: bool = False) -> ServedModel:
    """What the ingress knows of a manifest's model, served by deployment `key`."""
    return ServedModel(
        key=key,
        id=manifest.id,
        version=manifest.version,
        arch=manifest.arch,
        source=manifest.source_lang,
        target=manifest.target_lang,
        parameters=manifest.parameters,
        metrics=dict(manifest.metrics),
        max_output_tokens=manifest.config.get("max_positions"),
        default=default,
        created=created_timestamp(manifest.created),
    )
