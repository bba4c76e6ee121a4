"""Where and how a model replica runs: device, dtype, threads, and loading its model once.

Both model deployments (`translation.py`, `generation.py`) start the same way: set the torch
threads, pick the device and dtype from `RuntimeArgs`, load one verified model version from
the store (`load_replica_model`). The app builder turns a manifest into the `ServedModel` the
ingress routes by (`served_model`), and names each deployment (`deployment_name`). Nothing here
imports Ray or the API layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from service.contracts import ServedModel

if TYPE_CHECKING:
    from service.store.manifest import Manifest

logger = logging.getLogger("ray.serve")


class RuntimeArgs(BaseModel):
    """Where and how the models run, per replica (`args.runtime` in serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bfloat16 on GPUs that support it, else float16; float32 on CPU.
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # One intra-op thread per replica: replicas share few cores, and oversubscription makes
    # every batch slower.
    torch_threads: int = Field(1, ge=1, le=256)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but this replica sees no GPU; set num_gpus")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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
    dtype: torch.dtype
    manifest: Manifest
    model: torch.nn.Module
    tokenizer: Any

    def serving_info(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": dtype_name(self.dtype)}


def load_replica_model(spec: LoadSpec, arch: str | None = None) -> ReplicaModel:
    """Threads, device and dtype from `spec.runtime`, then the verified model from the store;
    `arch`, when given, is the architecture the replica can serve (anything else fails)."""
    from service.store import ModelStore

    torch.set_num_threads(spec.runtime.torch_threads)
    device = pick_device(spec.runtime.device)
    dtype = pick_dtype(spec.runtime.dtype, device)
    loaded = ModelStore(spec.store).load(spec.model_id, spec.version, device=device, dtype=dtype)
    manifest = loaded.manifest
    if arch is not None and manifest.arch != arch:
        raise ValueError(f"{manifest.id} is a {manifest.arch}, not an {arch}")
    logger.info("loaded %s v%d on %s (%s)", manifest.id, manifest.version, device, dtype)
    return ReplicaModel(device, dtype, manifest, loaded.model, loaded.tokenizer)


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
