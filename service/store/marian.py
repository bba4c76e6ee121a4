"""Import and export Hugging Face MarianMT directories.

Our Transformer uses MarianMT's parameter names, so an OPUS-MT checkpoint becomes one of our
models by renaming a few keys, and one of ours becomes a MarianMT directory that `transformers`
and CTranslate2 can load: the benchmark and parity tests then compare implementations on
identical weights instead of on models trained separately.

Only safetensors weights are read; a `pytorch_model.bin` is a pickle and is refused. Configs
whose computation our Transformer does not reproduce (pre-norm blocks, an embedding layer norm,
untied or learned embeddings, a separate decoder vocabulary) are refused rather than imported
into a model that would silently translate differently.

Tokenizers. Our serving path expects one joint SentencePiece model whose ids are the model's
ids. An OPUS-MT directory instead has `source.spm` and `target.spm` (segmenters only) and a
`vocab.json` that maps pieces to the model's ids. On import:

- a directory with `spm.model` (what `export_marian` writes), or whose `source.spm` equals
  `target.spm` and whose `vocab.json` is the identity on that model's pieces, becomes a plain
  `sentencepiece` model version;
- otherwise the version is stored with `tokenizer: "marian_vocab"`: `spm.model` is the source
  SentencePiece model, `target.spm` and `vocab.json` sit beside it, and
  `LoadedModel.tokenizer` is a `service.text.marian_vocab.MarianVocabTokenizer` applying that
  mapping (what Hugging Face's MarianTokenizer does, minus its optional Moses punctuation
  normalization);
- `separate_vocabs` models (`target_vocab.json`) are refused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from service.models.transformer import (
    ACTIVATIONS,
    Transformer,
    TransformerConfig,
    sinusoidal_positions,
)
from service.store.errors import MarianImportError
from service.store.manifest import Manifest
from service.store.registry import ModelStore, parse_model_id, sha256_file
from service.text.marian_vocab import load_marian_vocab, load_sentencepiece

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")

# MarianConfig's defaults (transformers 5.x), for config.json files written without them.
MARIAN_DEFAULTS: dict[str, Any] = {
    "vocab_size": 58101,
    "decoder_vocab_size": None,
    "max_position_embeddings": 1024,
    "encoder_layers": 12,
    "encoder_ffn_dim": 4096,
    "encoder_attention_heads": 16,
    "decoder_layers": 12,
    "decoder_ffn_dim": 4096,
    "decoder_attention_heads": 16,
    "activation_function": "gelu",
    "d_model": 1024,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "decoder_start_token_id": 58100,
    "scale_embedding": False,
    "pad_token_id": 58100,
    "eos_token_id": 0,
}

# Flags of Marian/BART-family configs and the only value our Transformer computes faithfully.
REQUIRED_FLAGS: dict[str, Any] = {
    "share_encoder_decoder_embeddings": True,
    "tie_word_embeddings": True,
    "normalize_before": False,
    "normalize_embedding": False,
    "layernorm_embedding": False,
    "add_final_layer_norm": False,
    "add_bias_logits": False,
    "static_position_embeddings": True,
    "is_decoder": False,
}

EMBEDDING_KEYS = (
    "shared.weight",
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "lm_head.weight",
)
POSITION_KEYS = ("encoder.embed_positions.weight", "decoder.embed_positions.weight")
# fp16-stored sinusoids differ from the fp32 table by at most half an fp16 ulp of 1.0.
POSITION_TOLERANCE = 1e-3


# Configs.


def transformer_config_from_marian(marian: Mapping[str, Any]) -> TransformerConfig:
    """Map a MarianMT config.json onto TransformerConfig, refusing what we cannot reproduce."""
    if marian.get("model_type", "marian") != "marian":
        raise MarianImportError(f"model_type is {marian['model_type']!r}, not 'marian'")
    for flag, required in REQUIRED_FLAGS.items():
        if flag in marian and marian[flag] != required:
            raise MarianImportError(
                f"unsupported Marian config: {flag}={marian[flag]!r} (our Transformer implements "
                f"{flag}={required!r} only)"
            )
    c = {**MARIAN_DEFAULTS, **marian}
    if c["decoder_vocab_size"] not in (None, c["vocab_size"]):
        raise MarianImportError(
            f"unsupported Marian config: decoder_vocab_size={c['decoder_vocab_size']} differs from "
            f"vocab_size={c['vocab_size']} (our Transformer shares one vocabulary)"
        )
    for encoder_key, decoder_key in [
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ]:
        if c[encoder_key] != c[decoder_key]:
            raise MarianImportError(
                f"unsupported Marian config: {encoder_key}={c[encoder_key]} differs from "
                f"{decoder_key}={c[decoder_key]}"
            )
    if c["activation_function"] not in ACTIVATIONS:
        raise MarianImportError(
            f"unsupported activation_function {c['activation_function']!r}; "
            f"supported: {sorted(ACTIVATIONS)}"
        )
    eos = c["eos_token_id"]
    if isinstance(eos, list):
        if len(eos) != 1:
            raise MarianImportError(f"several eos_token_id values {eos}; expected one")
        eos = eos[0]
    for key, value in [
        ("pad_token_id", c["pad_token_id"]),
        ("eos_token_id", eos),
        ("decoder_start_token_id", c["decoder_start_token_id"]),
    ]:
        if not isinstance(value, int) or not 0 <= value < c["vocab_size"]:
            raise MarianImportError(
                f"{key}={value!r} is not an id below vocab_size={c['vocab_size']}"
            )
    try:
        return TransformerConfig(
            vocab_size=c["vocab_size"],
            d_model=c["d_model"],
            n_heads=c["encoder_attention_heads"],
            encoder_layers=c["encoder_layers"],
            decoder_layers=c["decoder_layers"],
            ffn_dim=c["encoder_ffn_dim"],
            dropout=float(c["dropout"]),
            attention_dropout=float(c["attention_dropout"]),
            activation_dropout=float(c["activation_dropout"]),
            activation=c["activation_function"],
            max_positions=c["max_position_embeddings"],
            pad_id=c["pad_token_id"],
            eos_id=eos,
            decoder_start_id=c["decoder_start_token_id"],
            scale_embedding=bool(c["scale_embedding"]),
        )
    except (TypeError, ValueError) as error:
        raise MarianImportError(f"cannot map Marian config: {error}") from None


def marian_config_from_transformer(config: TransformerConfig) -> dict[str, Any]:
    """A config.json that MarianMTModel (and CTranslate2's converter) reads as our model."""
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "vocab_size": config.vocab_size,
        "decoder_vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "encoder_attention_heads": config.n_heads,
        "decoder_attention_heads": config.n_heads,
        "encoder_ffn_dim": config.ffn_dim,
        "decoder_ffn_dim": config.ffn_dim,
        "activation_function": config.activation,
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "max_position_embeddings": config.max_positions,
        "pad_token_id": config.pad_id,
        "eos_token_id": config.eos_id,
        "forced_eos_token_id": config.eos_id,
        "decoder_start_token_id": config.decoder_start_id,
        "bos_token_id": None,
        "scale_embedding": config.scale_embedding,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": True,
        "static_position_embeddings": True,
        "normalize_before": False,
        "normalize_embedding": False,
        "is_encoder_decoder": True,
        "use_cache": True,
    }


# Weights.


def transformer_state_dict_from_marian(
    marian_state: Mapping[str, torch.Tensor], config: TransformerConfig
) -> dict[str, torch.Tensor]:
    """Rename MarianMT keys to ours and drop the tied and recomputed ones once checked.

    Embedding copies (encoder/decoder embed_tokens, lm_head) must equal `shared`: different
    values would mean untied embeddings. Stored sinusoidal positions must equal the table our
    model recomputes: different values would mean learned positions.
    """
    state = {k.removeprefix("model."): v for k, v in marian_state.items()}
    embeddings = {k: state.pop(k) for k in EMBEDDING_KEYS if k in state}
    if not embeddings:
        raise MarianImportError(
            f"no token embedding in the checkpoint (looked for {EMBEDDING_KEYS})"
        )
    first_key, shared = next(iter(embeddings.items()))
    for key, tensor in embeddings.items():
        if tensor.shape != shared.shape or not torch.equal(tensor, shared):
            raise MarianImportError(
                f"unsupported checkpoint: {key} differs from {first_key}; our Transformer ties "
                f"source, target and output embeddings"
            )
    expected_positions = sinusoidal_positions(config.max_positions, config.d_model)
    for key in POSITION_KEYS:
        if key in state:
            positions = state.pop(key).float()
            if positions.shape != expected_positions.shape or not torch.allclose(
                positions, expected_positions, atol=POSITION_TOLERANCE, rtol=0
            ):
                raise MarianImportError(
                    f"unsupported checkpoint: {key} is not the sinusoidal table our Transformer "
                    f"computes (learned positions?)"
                )
    state["shared.weight"] = shared
    state.setdefault("final_logits_bias", torch.zeros(1, config.vocab_size))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def marian_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under MarianMTModel's names (what `save_pretrained` writes: tied copies and
    sinusoidal positions left out)."""
    state = {}
    for key, tensor in model.state_dict().items():
        name = key if key == "final_logits_bias" else f"model.{key}"
        state[name] = tensor.detach().to("cpu").clone().contiguous()
    return state


def build_transformer_from_marian(hf_dir: Path) -> Transformer:
    """Read a MarianMT directory into our Transformer (fp32, eval mode) without storing it."""
    hf_dir = Path(hf_dir)
    marian_config = _read_marian_config(hf_dir)
    config = transformer_config_from_marian(marian_config)
    state = transformer_state_dict_from_marian(_read_marian_weights(hf_dir), config)
    model = Transformer(config)
    missing, unexpected = _key_differences(model, state)
    if missing or unexpected:
        raise MarianImportError(
            f"{hf_dir / WEIGHTS_FILE} does not match the config: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]} (unsupported Marian variant?)"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise MarianImportError(
            f"{hf_dir / WEIGHTS_FILE} does not fit the config: {error}"
        ) from None
    return model.eval()


def _key_differences(model: Transformer, state: Mapping[str, torch.Tensor]) -> tuple[list, list]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def _read_marian_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / CONFIG_FILE
    if not path.is_file():
        raise MarianImportError(f"{hf_dir} is not a Hugging Face model directory: no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MarianImportError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise MarianImportError(f"{path}: expected a JSON object")
    return config


def _read_marian_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    path = hf_dir / WEIGHTS_FILE
    if not path.is_file():
        if (hf_dir / f"{WEIGHTS_FILE}.index.json").is_file():
            raise MarianImportError(
                f"{hf_dir} holds sharded safetensors; merge them into one {WEIGHTS_FILE} first"
            )
        pickles = [name for name in PICKLE_WEIGHTS if (hf_dir / name).exists()]
        if pickles:
            raise MarianImportError(
                f"{hf_dir} has weights only in {pickles[0]}, a pickle that can run code when "
                f"loaded; this store reads safetensors only. Convert it with a trusted tool "
                f"(e.g. `save_pretrained(..., safe_serialization=True)` in a sandbox) and retry"
            )
        raise MarianImportError(f"{hf_dir} has no {WEIGHTS_FILE}")
    try:
        return safetensors.torch.load_file(path)
    except Exception as error:  # SafetensorError is not exported under a stable name
        raise MarianImportError(f"{path}: not a readable safetensors file ({error})") from None


# Tokenizers.


@dataclass(frozen=True)
class MarianTokenizerFiles:
    """What an import stores: spm.model, how ids relate to it, and any files beside it."""

    spm_model: Path
    kind: str  # "sentencepiece" or "marian_vocab"
    extra_files: dict[str, Path]


@contextmanager
def _as_import_error():
    """The text layer's loaders raise ValueError; an import reports MarianImportError."""
    try:
        yield
    except (OSError, ValueError) as error:
        raise MarianImportError(str(error)) from None


def marian_tokenizer_files(hf_dir: Path, vocab_size: int) -> MarianTokenizerFiles:
    """Decide how to store the tokenizer of a MarianMT directory (see the module docstring)."""
    hf_dir = Path(hf_dir)
    if (hf_dir / "spm.model").is_file():
        return MarianTokenizerFiles(hf_dir / "spm.model", "sentencepiece", {})
    source, target, vocab_path = (hf_dir / n for n in ("source.spm", "target.spm", "vocab.json"))
    if not source.is_file():
        raise MarianImportError(
            f"{hf_dir} has no tokenizer (spm.model or source.spm); pass tokenizer_path"
        )
    if (hf_dir / "target_vocab.json").exists():
        raise MarianImportError(
            f"{hf_dir} uses separate source and target vocabularies (target_vocab.json); "
            f"our Transformer shares one vocabulary"
        )
    if not vocab_path.is_file():
        raise MarianImportError(f"{hf_dir} has source.spm but no vocab.json to map pieces to ids")
    if not target.is_file():
        raise MarianImportError(f"{hf_dir} has source.spm but no target.spm")
    with _as_import_error():
        vocab = load_marian_vocab(vocab_path, vocab_size)
        spm = load_sentencepiece(source)
    identity = len(vocab) == spm.get_piece_size() and all(
        vocab.get(spm.id_to_piece(i)) == i for i in range(spm.get_piece_size())
    )
    if identity and sha256_file(source) == sha256_file(target):
        return MarianTokenizerFiles(source, "sentencepiece", {})
    return MarianTokenizerFiles(
        source, "marian_vocab", {"target.spm": target, "vocab.json": vocab_path}
    )


def _write_identity_vocab(spm_path: Path, out_path: Path) -> None:
    with _as_import_error():
        spm = load_sentencepiece(spm_path)
    vocab = {spm.id_to_piece(i): i for i in range(spm.get_piece_size())}
    out_path.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")


# Import and export.


def import_marian(
    hf_dir: Path | str,
    store: ModelStore,
    model_id: str | None = None,
    *,
    tokenizer_path: Path | str | None = None,
    version: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> Manifest:
    """Store a Hugging Face MarianMT directory as a new version of `model_id`.

    `model_id` defaults to `<src>-<tgt>/opus` with the languages of tokenizer_config.json.
    `tokenizer_path` overrides the directory's tokenizer with one joint SentencePiece model
    whose ids are the model's ids (for directories that carry none, such as freshly
    `save_pretrained` ones).
    """
    hf_dir = Path(hf_dir)
    if model_id is None:
        model_id = _default_model_id(hf_dir)
    pair, _ = parse_model_id(model_id)
    if pair is None:
        raise MarianImportError(f"model_id must be a full id like 'es-en/opus', got {model_id!r}")
    model = build_transformer_from_marian(hf_dir)
    if tokenizer_path is not None:
        files = MarianTokenizerFiles(Path(tokenizer_path), "sentencepiece", {})
    else:
        files = marian_tokenizer_files(hf_dir, model.config.vocab_size)
    provenance = {
        "command": "import-marian",
        "imported_from": str(hf_dir.resolve()),
        "source_format": "huggingface-marian",
        "source_weights_sha256": sha256_file(hf_dir / WEIGHTS_FILE),
    }
    return store.save(
        model,
        files.spm_model,
        model_id=model_id,
        arch="transformer",
        version=version,
        metrics=metrics,
        training={**provenance, **(training or {})},
        tokenizer_kind=files.kind,
        extra_files=files.extra_files,
    )


def _default_model_id(hf_dir: Path) -> str:
    path = hf_dir / "tokenizer_config.json"
    try:
        tokenizer_config = json.loads(path.read_text(encoding="utf-8"))
        source, target = tokenizer_config["source_lang"], tokenizer_config["target_lang"]
        model_id = f"{source}-{target}/opus"
        parse_model_id(model_id)
        return model_id
    except (OSError, ValueError, KeyError, TypeError):
        raise MarianImportError(
            f"cannot tell the language pair of {hf_dir} (no source_lang/target_lang in "
            f"tokenizer_config.json); pass model_id like 'es-en/opus'"
        ) from None


def export_marian(
    model: Transformer,
    out_dir: Path | str,
    *,
    tokenizer_path: Path | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a MarianMT directory (config.json + model.safetensors) holding `model`'s weights.

    With `tokenizer_path` (a joint SentencePiece model whose ids are the model's ids) it also
    writes source.spm, target.spm and an identity vocab.json, so that Hugging Face's
    MarianTokenizer and CTranslate2's converter see the same ids we do.
    """
    if not isinstance(model, Transformer):
        raise TypeError(f"only a Transformer has a MarianMT layout, got {type(model).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {**marian_config_from_transformer(model.config), "dtype": str(dtype).split(".")[-1]}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = {
        k: v.to(dtype) if v.is_floating_point() else v for k, v in marian_state_dict(model).items()
    }
    safetensors.torch.save_file(state, out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    if tokenizer_path is not None:
        tokenizer_path = Path(tokenizer_path)
        for name in ("source.spm", "target.spm"):
            shutil.copyfile(tokenizer_path, out_dir / name)
        _write_identity_vocab(tokenizer_path, out_dir / "vocab.json")
    return out_dir
