"""What the HTTP layer enforces and assumes when a request leaves a knob out.

Operators set these in `deploy/serve_config.yaml` (`args.api`, `args.generation`); the request
models are built from them, so validation, error messages and the OpenAPI document at /docs
all state the limits actually in force.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    """Translation: the longest text, most items, largest beam, and the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_text_chars: int = Field(
        20000, ge=1, description="Longest text per item, in characters (a page)."
    )
    max_items: int = Field(64, ge=1, le=1024, description="Most texts per request.")
    max_request_chars: int = Field(
        20000, ge=1, description="Most characters per request, all texts together."
    )
    max_sentences: int = Field(
        1024, ge=1, description="Most sentences (decode items) per request, all texts together."
    )
    placeholders: Literal["pieces", "sentinels"] = Field(
        "pieces",
        description="How placeholders, tags, URLs and numbers reach the model: `pieces`, the "
        "words between spans as separate pieces (a span is never lost; the words lose their "
        "context); `sentinels`, each sentence whole (cut at its numbers) with its spans "
        "masked and restored after, a lost one put back by the alignment. `pieces` measured "
        "better chrF with the shipped models (docs/benchmarks.md, placeholders).",
    )
    cache_size: int = Field(
        10000,
        ge=0,
        description="Sentences the translation cache of each ingress replica keeps; 0 turns "
        "it off.",
    )
    # 20,000 characters, each JSON-escaped as \uXXXX, fit with room to spare.
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest request body.")
    # POST /translate_file (service/api/files.py); a body over max_body_bytes is refused first.
    max_file_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Largest file /translate_file takes (413 above); its text is held to "
        "max_request_chars as well (413).",
    )
    file_ttl_s: float = Field(
        3600.0, gt=0, description="How long a translated file waits to be downloaded."
    )
    file_store_max: int = Field(
        256, ge=1, description="Most translated files kept (the oldest go first)."
    )
    file_store_dir: str | None = Field(
        None,
        description="Where translated files wait (shared by the ingress replicas of one node); "
        "null: service-translated-files in the system's temp directory.",
    )
    max_beam_size: int = Field(8, ge=1, le=64)
    max_length_limit: int = Field(
        512, ge=1, description="Upper bound for max_length (further capped by each model)."
    )
    default_beam_size: int = Field(4, ge=1)
    default_max_length: int = Field(256, ge=1)
    request_timeout_s: float = Field(
        60.0, gt=0, description="A translation not done by then is answered with 504."
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a 503.")

    def model_post_init(self, _: Any) -> None:
        if self.default_beam_size > self.max_beam_size:
            raise ValueError("default_beam_size must not exceed max_beam_size")
        if self.default_max_length > self.max_length_limit:
            raise ValueError("default_max_length must not exceed max_length_limit")


class GenerationSettings(BaseModel):
    """Text generation: the longest prompt, most new tokens, stop strings, and the timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_prompt_chars: int = Field(2000, ge=1, description="Longest prompt, in characters.")
    max_new_tokens_limit: int = Field(
        256, ge=1, description="Upper bound for max_new_tokens (further capped by the model)."
    )
    default_max_new_tokens: int = Field(64, ge=1)
    max_stop_sequences: int = Field(4, ge=0, le=64, description="Most `stop` strings.")
    max_stop_chars: int = Field(64, ge=1, description="Longest `stop` string, in characters.")
    request_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A non-streamed generation not done by then is answered with 504; a stream "
        "that has not started by then likewise.",
    )

    def model_post_init(self, _: Any) -> None:
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("default_max_new_tokens must not exceed max_new_tokens_limit")
