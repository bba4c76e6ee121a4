"""The versioned model store: `<root>/<src>-<tgt>/<name>/<version>/`.

Every version directory holds `model.safetensors` (fp16 to keep the repository small),
`spm.model` and `manifest.json`, plus whatever `extra_files` the manifest lists. Versions are
immutable: `save` writes into a hidden temporary directory and renames it into place, so a
reader never sees half a checkpoint and a second writer cannot overwrite the first.

Ids that arrive from outside (HTTP requests) are matched against the directory listing and
never joined onto a path, so no id can reach a file outside the store. Weights are read once,
hashed, and parsed from the same bytes by safetensors: no pickles, and no window between the
check and the load.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from service.models import ARCHITECTURES, build_model, config_to_dict, count_parameters
from service.store.errors import (
    AmbiguousModelId,
    CheckpointError,
    IntegrityError,
    InvalidModelId,
    InvalidVersion,
    ManifestError,
    ModelNotFound,
    ModelStoreError,
    VersionExists,
    VersionNotFound,
)
from service.store.manifest import (
    LANGUAGE_PAIR_PATTERN,
    MANIFEST_FILE,
    MODEL_ID_PATTERN,
    MODEL_NAME_PATTERN,
    TOKENIZER_FILE,
    TOKENIZER_KINDS,
    WEIGHTS_FILE,
    Manifest,
    utc_now_iso,
)

VERSION_DIR_PATTERN = re.compile(r"^[1-9][0-9]*$")
MAX_ID_LENGTH = 64  # longest valid id is 7 + 1 + a name; a cap keeps error messages short
STORAGE_DTYPE = torch.float16
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ID_LENGTH + 2 else text[:MAX_ID_LENGTH] + "...'"


def parse_model_id(model_id: Any) -> tuple[str | None, str]:
    """Split an untrusted id into (language pair or None for a short name, name).

    Accepts only `es-en/transformer` or `transformer`; everything else (empty, `..`, slashes
    beyond the one separator, backslashes, upper case, absolute paths) is an InvalidModelId.
    """
    if not isinstance(model_id, str) or not model_id or len(model_id) > MAX_ID_LENGTH:
        raise InvalidModelId(
            f"model id must be a non-empty string like 'es-en/transformer' or 'transformer', "
            f"got {_shown(model_id)}"
        )
    if match := MODEL_ID_PATTERN.fullmatch(model_id):
        return f"{match['source']}-{match['target']}", match["name"]
    if MODEL_NAME_PATTERN.fullmatch(model_id):
        return None, model_id
    raise InvalidModelId(
        f"invalid model id {_shown(model_id)}: expected '<src>-<tgt>/<name>' such as "
        f"'es-en/transformer', or a bare name of lowercase letters, digits and underscores"
    )


def _check_language_pair(language_pair: Any) -> None:
    if language_pair is not None and (
        not isinstance(language_pair, str) or not LANGUAGE_PAIR_PATTERN.fullmatch(language_pair)
    ):
        raise InvalidModelId(
            f"invalid language_pair {_shown(language_pair)}: expected '<src>-<tgt>' like 'es-en'"
        )


def _check_version(version: Any) -> None:
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise InvalidVersion(f"version must be a positive integer, got {_shown(version)}")


@dataclass(frozen=True)
class StoreEntry:
    """One version directory as found on disk: its manifest, or why it could not be read."""

    model_id: str
    version: int
    directory: Path
    manifest: Manifest | None = None
    error: ModelStoreError | None = None


@dataclass
class LoadedModel:
    """A verified model ready for inference: eval mode, on the requested device and dtype."""

    manifest: Manifest
    model: nn.Module
    directory: Path
    tokenizer_path: Path  # spm.model; for `marian_vocab` models, the source-side SentencePiece
    extra_paths: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def tokenizer(self):
        """Loaded on first use so that loading weights does not require the tokenizer code.

        `marian_vocab` models (OPUS-MT imports) need Marian's piece -> id mapping, so they get a
        MarianVocabTokenizer instead of the plain SentencePiece wrapper.
        """
        if self.manifest.tokenizer == "marian_vocab":
            from service.text.marian_vocab import MarianVocabTokenizer

            return MarianVocabTokenizer.load(
                self.tokenizer_path, self.extra_paths["target.spm"], self.extra_paths["vocab.json"]
            )
        from service.text.tokenizer import Tokenizer

        return Tokenizer.load(self.tokenizer_path)


class ModelStore:
    """A directory of versioned models.

    Nothing is cached: every call reads the (small) directory tree, so a version that training
    writes while a server runs is visible on the next call, and a deleted one is not served.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # Discovery. Only directory names matching the id and version patterns are ever considered.

    def _index(self) -> dict[str, dict[int, Path]]:
        """{model id: {version: directory}} from the directory tree alone; no file is parsed."""
        index: dict[str, dict[int, Path]] = {}
        for pair in _subdirectories(self.root, LANGUAGE_PAIR_PATTERN):
            for name in _subdirectories(pair, MODEL_NAME_PATTERN):
                versions = {
                    int(directory.name): directory
                    for directory in _subdirectories(name, VERSION_DIR_PATTERN)
                }
                if versions:
                    index[f"{pair.name}/{name.name}"] = versions
        return index

    def entries(self) -> list[StoreEntry]:
        """Every version directory with its manifest or its error: for tools that report damage."""
        found = []
        for model_id, versions in sorted(self._index().items()):
            for version, directory in sorted(versions.items()):
                try:
                    manifest = self._read_manifest(model_id, version, directory)
                    found.append(StoreEntry(model_id, version, directory, manifest))
                except ModelStoreError as error:
                    found.append(StoreEntry(model_id, version, directory, error=error))
        return found

    def list(self) -> list[Manifest]:
        """Every version of every model, sorted by id then version. A broken manifest raises."""
        manifests = []
        for entry in self.entries():
            if entry.error is not None:
                raise entry.error
            manifests.append(entry.manifest)
        return manifests

    def ids(self, language_pair: str | None = None) -> list[str]:
        _check_language_pair(language_pair)
        return sorted(
            model_id
            for model_id in self._index()
            if language_pair is None or model_id.startswith(language_pair + "/")
        )

    def versions(self, model_id: str, *, language_pair: str | None = None) -> list[int]:
        index = self._index()
        return sorted(index[self._canonical_id(model_id, language_pair, index)])

    def _canonical_id(
        self, model_id: Any, language_pair: str | None, known: dict[str, dict[int, Path]]
    ) -> str:
        """The full id of a stored model that `model_id` names, or an error saying why not."""
        pair, name = parse_model_id(model_id)
        _check_language_pair(language_pair)
        if pair is not None and language_pair is not None and pair != language_pair:
            raise ModelNotFound(f"model {model_id!r} is not a {language_pair} model")
        pair = pair or language_pair
        if pair is not None:
            if f"{pair}/{name}" in known:
                return f"{pair}/{name}"
            candidates = []
        else:
            candidates = sorted(i for i in known if i.split("/", 1)[1] == name)
            if len(candidates) == 1:
                return candidates[0]
            if len(candidates) > 1:
                raise AmbiguousModelId(
                    f"model name {name!r} exists for several language pairs: {candidates}; "
                    f"use the full id or give language_pair"
                )
        available = sorted(known) or "none; the store is empty"
        raise ModelNotFound(f"no model {model_id!r} in {self.root}; available: {available}")

    def resolve(
        self, model_id: str, version: int | None = None, *, language_pair: str | None = None
    ) -> Manifest:
        """The manifest of `model_id` at `version`, or at its highest version when None.

        `model_id` may be a full id (`es-en/transformer`) or a bare name (`transformer`) that
        exactly one language pair has; `language_pair` narrows a bare name.
        """
        _check_version(version)
        index = self._index()
        canonical = self._canonical_id(model_id, language_pair, index)
        versions = index[canonical]
        chosen = max(versions) if version is None else version
        if chosen not in versions:
            raise VersionNotFound(
                f"model {canonical!r} has no version {version}; available: {sorted(versions)}"
            )
        return self._read_manifest(canonical, chosen, versions[chosen])

    def directory(self, manifest: Manifest) -> Path:
        """Where a manifest's files live: looked up in the listing, never built from the id."""
        try:
            return self._index()[manifest.id][manifest.version]
        except KeyError:
            raise VersionNotFound(
                f"model {manifest.id!r} version {manifest.version} is no longer in {self.root}"
            ) from None

    def _read_manifest(self, model_id: str, version: int, directory: Path) -> Manifest:
        manifest = Manifest.read(directory / MANIFEST_FILE)
        if (manifest.id, manifest.version) != (model_id, version):
            raise ManifestError(
                f"{directory / MANIFEST_FILE}: describes {manifest.id!r} version "
                f"{manifest.version} but sits in the directory of {model_id!r} version {version}"
            )
        return manifest

    # Verification and loading.

    def verify(
        self, model_id: str, version: int | None = None, *, language_pair: str | None = None
    ) -> Manifest:
        """Check every file's sha256 against the manifest without building the model."""
        manifest = self.resolve(model_id, version, language_pair=language_pair)
        directory = self.directory(manifest)
        for name, expected in _expected_digests(manifest).items():
            _verify_file(directory / name, expected, manifest)
        return manifest

    def load(
        self,
        model_id: str,
        version: int | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        language_pair: str | None = None,
    ) -> LoadedModel:
        """Verify, then build the model from its safetensors weights (strictly: every key)."""
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        manifest = self.resolve(model_id, version, language_pair=language_pair)
        directory = self.directory(manifest)
        digests = _expected_digests(manifest)
        weights = _read_verified(directory / WEIGHTS_FILE, digests.pop(WEIGHTS_FILE), manifest)
        for name, expected in digests.items():
            _verify_file(directory / name, expected, manifest)

        try:
            state = safetensors.torch.load(weights)
        except Exception as error:  # safetensors raises its own SafetensorError
            raise CheckpointError(
                f"{directory / WEIGHTS_FILE}: not a readable safetensors file ({error})"
            ) from None
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        model = build_model(manifest.arch, manifest.config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise CheckpointError(
                f"{directory / WEIGHTS_FILE} does not fit {manifest.arch} with the manifest's "
                f"config: {error}"
            ) from None
        model.to(device=device, dtype=dtype).eval()
        return LoadedModel(
            manifest=manifest,
            model=model,
            directory=directory,
            tokenizer_path=directory / TOKENIZER_FILE,
            extra_paths={name: directory / name for name in manifest.extra_files},
        )

    # Writing.

    def save(
        self,
        model: nn.Module,
        tokenizer_path: Path | str,
        *,
        model_id: str,
        arch: str | None = None,
        version: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        data_sha256: str | None = None,
        extra_files: Mapping[str, Path | str] | None = None,
        tokenizer_kind: str = "sentencepiece",
        storage_dtype: torch.dtype = STORAGE_DTYPE,
    ) -> Manifest:
        """Write a new immutable version; `version=None` takes the next free number.

        Weights are stored in `storage_dtype` (fp16 by default: half the bytes, and the models
        here lose nothing measurable at inference). A weight that would overflow it is refused
        rather than silently turned into inf.
        """
        pair, name = parse_model_id(model_id)
        if pair is None:
            raise InvalidModelId(f"save needs a full id like 'es-en/{name}', got {model_id!r}")
        _check_version(version)
        arch = arch or _architecture_of(model)
        if arch not in ARCHITECTURES:
            raise ModelStoreError(f"unknown arch {arch!r}; known: {sorted(ARCHITECTURES)}")
        if not isinstance(model, ARCHITECTURES[arch][1]):
            raise ModelStoreError(
                f"model is a {type(model).__name__}, not the {ARCHITECTURES[arch][1].__name__} "
                f"that arch {arch!r} builds"
            )
        if tokenizer_kind not in TOKENIZER_KINDS:
            raise ModelStoreError(f"tokenizer_kind must be one of {TOKENIZER_KINDS}")
        tokenizer_path = Path(tokenizer_path)
        extra = {file_name: Path(path) for file_name, path in (extra_files or {}).items()}
        for path in [tokenizer_path, *extra.values()]:
            if not path.is_file():
                raise ModelStoreError(f"cannot save {model_id!r}: file {path} does not exist")
        if tokenizer_kind == "sentencepiece":
            _check_tokenizer_fits(tokenizer_path, model.config.vocab_size)

        state = _storage_state_dict(model, storage_dtype)
        model_dir = self.root / pair / name
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            safetensors.torch.save_file(
                state, staging / WEIGHTS_FILE, metadata={"format": "pt", "model_id": model_id}
            )
            shutil.copyfile(tokenizer_path, staging / TOKENIZER_FILE)
            for file_name, path in extra.items():
                shutil.copyfile(path, staging / file_name)
            sha256 = {
                "weights": sha256_file(staging / WEIGHTS_FILE),
                "tokenizer": sha256_file(staging / TOKENIZER_FILE),
            }
            if data_sha256 is not None:
                sha256["data"] = data_sha256
            for _ in range(100):
                chosen = version if version is not None else _next_version(model_dir)
                manifest = Manifest(
                    id=model_id,
                    arch=arch,
                    version=chosen,
                    source_lang=pair.split("-")[0],
                    target_lang=pair.split("-")[1],
                    config=config_to_dict(model.config),
                    created=utc_now_iso(),
                    parameters=count_parameters(model),
                    sha256=sha256,
                    training=dict(training or {}),
                    metrics=dict(metrics or {}),
                    tokenizer=tokenizer_kind,
                    extra_files={n: sha256_file(staging / n) for n in extra},
                )
                manifest.write(staging / MANIFEST_FILE)
                target = model_dir / str(chosen)
                if not target.exists():
                    try:
                        os.rename(staging, target)  # atomic; fails if a writer got there first
                        return manifest
                    except OSError:
                        if not target.exists():
                            raise
                if version is not None:
                    raise VersionExists(
                        f"{model_id!r} version {version} already exists at {target}; "
                        f"versions are immutable, save with version=None for the next one"
                    )
            raise ModelStoreError(f"could not find a free version for {model_id!r}")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _subdirectories(parent: Path, pattern: re.Pattern) -> list[Path]:
    """Child directories whose names match `pattern`, sorted.

    Symlinks are skipped: one could lead a valid-looking id to files outside the store.
    """
    try:
        children = list(os.scandir(parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        Path(child.path)
        for child in children
        if pattern.fullmatch(child.name) and child.is_dir(follow_symlinks=False)
    )


def _next_version(model_dir: Path) -> int:
    taken = [int(d.name) for d in _subdirectories(model_dir, VERSION_DIR_PATTERN)]
    return max(taken, default=0) + 1


def _architecture_of(model: nn.Module) -> str:
    for arch, (_, model_cls) in ARCHITECTURES.items():
        if type(model) is model_cls:
            return arch
    raise ModelStoreError(
        f"cannot tell the arch of a {type(model).__name__}; "
        f"pass arch= one of {sorted(ARCHITECTURES)}"
    )


def _check_tokenizer_fits(tokenizer_path: Path, vocab_size: int) -> None:
    """A tokenizer with more pieces than the model has rows would index out of range."""
    import sentencepiece

    try:
        pieces = sentencepiece.SentencePieceProcessor(
            model_file=str(tokenizer_path)
        ).get_piece_size()
    except (OSError, RuntimeError) as error:
        raise ModelStoreError(f"{tokenizer_path} is not a SentencePiece model ({error})") from None
    if pieces > vocab_size:
        raise ModelStoreError(
            f"tokenizer {tokenizer_path} has {pieces} pieces but the model only {vocab_size} "
            f"embedding rows"
        )


def _storage_state_dict(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            stored = tensor.to(dtype, copy=True)
            if not torch.isfinite(stored).all() and torch.isfinite(tensor).all():
                largest = tensor.abs().max().item()
                raise ModelStoreError(
                    f"weight {key!r} overflows {dtype} (max |w| = {largest:.4g}); "
                    f"save with storage_dtype=torch.float32"
                )
            tensor = stored
        else:
            tensor = tensor.clone()
        state[key] = tensor.contiguous()
    return state


def _expected_digests(manifest: Manifest) -> dict[str, str]:
    return {
        WEIGHTS_FILE: manifest.sha256["weights"],
        TOKENIZER_FILE: manifest.sha256["tokenizer"],
        **manifest.extra_files,
    }


def _integrity_failure(
    path: Path, expected: str, actual: str, manifest: Manifest
) -> IntegrityError:
    return IntegrityError(
        f"{path.name} of {manifest.id!r} version {manifest.version} is corrupted: sha256 "
        f"{actual} does not match the manifest's {expected} ({path})"
    )


def _missing_file(path: Path, manifest: Manifest) -> IntegrityError:
    return IntegrityError(
        f"{path.name} of {manifest.id!r} version {manifest.version} is missing ({path})"
    )


def _verify_file(path: Path, expected: str, manifest: Manifest) -> None:
    try:
        actual = sha256_file(path)
    except (FileNotFoundError, IsADirectoryError):
        raise _missing_file(path, manifest) from None
    if actual != expected:
        raise _integrity_failure(path, expected, actual, manifest)


def _read_verified(path: Path, expected: str, manifest: Manifest) -> bytes:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise _missing_file(path, manifest) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise _integrity_failure(path, expected, actual, manifest)
    return data


__all__ = ["LoadedModel", "ModelStore", "StoreEntry", "parse_model_id", "sha256_file"]
