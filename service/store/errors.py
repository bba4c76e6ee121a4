"""Errors of the model store.

Each failure has its own class so the HTTP layer can map it to a status code (an unknown model
is a 404, a malformed id a 422, a corrupted checkpoint a 500 that must never be served) without
parsing messages. Every message names the model, version or file involved.
"""

from __future__ import annotations


class ModelStoreError(Exception):
    """Base class: anything the store refuses to do."""


class InvalidModelId(ModelStoreError, ValueError):
    """The id is not of the form `<src>-<tgt>/<name>` (or a bare `<name>`)."""


class InvalidVersion(ModelStoreError, ValueError):
    """A version that cannot exist: versions are positive integers."""


class ModelNotFound(ModelStoreError, LookupError):
    """A well-formed id that names no model in the store."""


class AmbiguousModelId(ModelStoreError, LookupError):
    """A short name that matches models of more than one language pair."""


class VersionNotFound(ModelStoreError, LookupError):
    """The model exists but not at the requested version."""


class VersionExists(ModelStoreError):
    """Saving would overwrite a version: versions are immutable once written."""


class ManifestError(ModelStoreError, ValueError):
    """manifest.json is missing, not JSON, or does not describe a valid model."""


class IntegrityError(ModelStoreError):
    """A file is missing or its sha256 differs from the manifest: never serve it."""


class CheckpointError(ModelStoreError):
    """The weights do not fit the architecture and config the manifest describes."""


class MarianImportError(ModelStoreError, ValueError):
    """A Hugging Face Marian directory that cannot be imported faithfully."""
