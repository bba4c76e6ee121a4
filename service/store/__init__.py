"""The model store: versioned, sha256-verified checkpoints under `model_store/`.

Nothing here knows about Ray, HTTP or pydantic; the API layer maps the errors below to status
codes (ModelNotFound/VersionNotFound -> 404, InvalidModelId/InvalidVersion -> 422, anything
else -> 500).
"""

from service.store.errors import (
    AmbiguousModelId,
    CheckpointError,
    IntegrityError,
    InvalidModelId,
    InvalidVersion,
    ManifestError,
    MarianImportError,
    ModelNotFound,
    ModelStoreError,
    VersionExists,
    VersionNotFound,
)
from service.store.manifest import Manifest
from service.store.registry import LoadedModel, ModelStore, StoreEntry, parse_model_id

DEFAULT_ROOT = "model_store"

__all__ = [
    "DEFAULT_ROOT",
    "AmbiguousModelId",
    "CheckpointError",
    "IntegrityError",
    "InvalidModelId",
    "InvalidVersion",
    "LoadedModel",
    "Manifest",
    "ManifestError",
    "MarianImportError",
    "ModelNotFound",
    "ModelStore",
    "ModelStoreError",
    "StoreEntry",
    "VersionExists",
    "VersionNotFound",
    "parse_model_id",
]
