"""Pure PyTorch models. Nothing here knows about Ray, HTTP or pydantic."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from service.models.lm import LanguageModel, LMConfig
from service.models.rnnsearch import RNNSearch, RNNSearchConfig
from service.models.transformer import Transformer, TransformerConfig

ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    "transformer": (TransformerConfig, Transformer),
    "rnnsearch": (RNNSearchConfig, RNNSearch),
    "lm": (LMConfig, LanguageModel),
}


def _lookup(arch: str) -> tuple[type, type[nn.Module]]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def make_config(arch: str, preset: str, vocab_size: int, **overrides) -> Any:
    config_cls, _ = _lookup(arch)
    return config_cls.preset(preset, vocab_size, **overrides)


def config_from_dict(arch: str, values: dict[str, Any]) -> Any:
    config_cls, _ = _lookup(arch)
    return config_cls(**values)


def build_model(arch: str, config: Any) -> nn.Module:
    """Build an untrained model from a config object or its dict form."""
    _, model_cls = _lookup(arch)
    if isinstance(config, dict):
        config = config_from_dict(arch, config)
    return model_cls(config)


def config_to_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
