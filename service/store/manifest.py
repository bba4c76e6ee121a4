"""The manifest: what a stored model version is, where it came from, and how to verify it.

A manifest is the only thing the store trusts about a checkpoint, so it is validated field by
field on every read: a hand-edited or truncated manifest fails with a message naming the file
and the field rather than surfacing later as a shape error deep inside `load_state_dict`.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from service.models import ARCHITECTURES, config_from_dict
from service.store.errors import ManifestError

FORMAT_VERSION = 1  # bump when a field changes meaning; readers refuse formats they do not know

MODEL_ID_PATTERN = re.compile(
    r"^(?P<source>[a-z]{2,3})-(?P<target>[a-z]{2,3})/(?P<name>[a-z0-9_]+)$"
)
LANGUAGE_PAIR_PATTERN = re.compile(r"^[a-z]{2,3}-[a-z]{2,3}$")
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# Extra files live next to the weights; a plain name keeps a manifest from pointing elsewhere.
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "spm.model"
MANIFEST_FILE = "manifest.json"
RESERVED_FILES = frozenset({WEIGHTS_FILE, TOKENIZER_FILE, MANIFEST_FILE})

# How token ids relate to the SentencePiece model stored as spm.model:
#   sentencepiece  the model's ids are the SentencePiece ids (everything we train);
#   marian_vocab   spm.model segments the source, vocab.json maps pieces to ids and target.spm
#                  detokenizes (OPUS-MT checkpoints imported from Hugging Face).
TOKENIZER_KINDS = ("sentencepiece", "marian_vocab")
MARIAN_VOCAB_FILES = ("target.spm", "vocab.json")

SHA256_KEYS_REQUIRED = ("weights", "tokenizer")
SHA256_KEYS_OPTIONAL = ("data",)


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Manifest:
    """One immutable model version. Treat the dict fields as read-only."""

    id: str  # "<src>-<tgt>/<name>", e.g. "es-en/transformer"
    arch: str  # key of service.models.ARCHITECTURES
    version: int
    source_lang: str
    target_lang: str
    config: dict[str, Any]
    created: str  # ISO 8601 with time zone
    parameters: int
    sha256: dict[str, str]  # weights, tokenizer, and data when known
    training: dict[str, Any] = field(default_factory=dict)  # command, device, wall_time_s, ...
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. test bleu/chrf + signature
    tokenizer: str = "sentencepiece"
    extra_files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    format: int = FORMAT_VERSION

    def __post_init__(self):
        validate(self)

    @property
    def language_pair(self) -> str:
        return f"{self.source_lang}-{self.target_lang}"

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        """Build and validate; `source` (usually the file path) prefixes every error."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ManifestError(f"{source}: unknown field(s) {unknown}")
        required = {
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ManifestError(f"{source}: missing field(s) {missing}")
        try:
            return cls(**data)
        except ManifestError as error:
            raise ManifestError(f"{source}: {error}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{source}: not valid JSON ({error})") from None
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: manifest file is missing") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path}: cannot read manifest ({error})") from None
        return cls.from_json(text, source=str(path))

    def write(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_json_object(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ManifestError(f"field {name!r} must be a JSON object with string keys")
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise ManifestError(f"field {name!r} is not JSON-serializable ({error})") from None


def _check_sha256_map(name: str, value: Any) -> None:
    for key, digest in value.items():
        if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
            raise ManifestError(f"{name}[{key!r}] must be 64 lowercase hex digits, got {digest!r}")


def validate(manifest: Manifest) -> None:
    """Raise ManifestError on the first field that cannot be right."""
    m = manifest
    if not _is_int(m.format) or m.format != FORMAT_VERSION:
        raise ManifestError(
            f"field 'format' is {m.format!r}; this code reads format {FORMAT_VERSION} only"
        )
    if not isinstance(m.id, str) or not (match := MODEL_ID_PATTERN.fullmatch(m.id)):
        raise ManifestError(
            f"field 'id' must look like 'es-en/transformer' ({MODEL_ID_PATTERN.pattern}), "
            f"got {m.id!r}"
        )
    if (m.source_lang, m.target_lang) != (match["source"], match["target"]):
        raise ManifestError(
            f"source_lang/target_lang {m.source_lang!r}/{m.target_lang!r} disagree with id {m.id!r}"
        )
    if m.arch not in ARCHITECTURES:
        raise ManifestError(f"field 'arch' is {m.arch!r}; known: {sorted(ARCHITECTURES)}")
    if not _is_int(m.version) or m.version < 1:
        raise ManifestError(f"field 'version' must be a positive integer, got {m.version!r}")
    _check_json_object("config", m.config)
    try:
        config_from_dict(m.arch, m.config)
    except (TypeError, ValueError) as error:
        raise ManifestError(f"field 'config' does not fit arch {m.arch!r}: {error}") from None
    if not isinstance(m.created, str):
        raise ManifestError(f"field 'created' must be an ISO 8601 string, got {m.created!r}")
    try:
        datetime.fromisoformat(m.created)
    except ValueError:
        raise ManifestError(f"field 'created' is not ISO 8601: {m.created!r}") from None
    if not _is_int(m.parameters) or m.parameters < 0:
        raise ManifestError(f"field 'parameters' must be a count, got {m.parameters!r}")

    if not isinstance(m.sha256, dict):
        raise ManifestError("field 'sha256' must be an object")
    missing = [k for k in SHA256_KEYS_REQUIRED if k not in m.sha256]
    unknown = sorted(set(m.sha256) - set(SHA256_KEYS_REQUIRED) - set(SHA256_KEYS_OPTIONAL))
    if missing or unknown:
        raise ManifestError(
            f"field 'sha256' needs keys {list(SHA256_KEYS_REQUIRED)} (optional "
            f"{list(SHA256_KEYS_OPTIONAL)}); missing {missing}, unknown {unknown}"
        )
    _check_sha256_map("sha256", m.sha256)

    _check_json_object("training", m.training)
    _check_json_object("metrics", m.metrics)

    if m.tokenizer not in TOKENIZER_KINDS:
        raise ManifestError(
            f"field 'tokenizer' must be one of {TOKENIZER_KINDS}, got {m.tokenizer!r}"
        )
    if not isinstance(m.extra_files, dict):
        raise ManifestError("field 'extra_files' must be an object")
    for name in m.extra_files:
        if (
            not isinstance(name, str)
            or not FILE_NAME_PATTERN.fullmatch(name)
            or name in RESERVED_FILES
        ):
            raise ManifestError(
                f"extra_files names must be plain file names other than {sorted(RESERVED_FILES)}, "
                f"got {name!r}"
            )
    _check_sha256_map("extra_files", m.extra_files)
    if m.tokenizer == "marian_vocab":
        absent = [f for f in MARIAN_VOCAB_FILES if f not in m.extra_files]
        if absent:
            raise ManifestError(f"tokenizer 'marian_vocab' needs extra_files {absent}")
