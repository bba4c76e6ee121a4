"""Which torch device a `--device` / `device:` setting names: one rule for training,
evaluation and serving."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """The device `name` stands for: `auto` is CUDA when this process sees a GPU and the CPU
    otherwise; any other name is torch's (`cpu`, `cuda`, `cuda:1`). CUDA asked for where there
    is none is refused here, naming the setting, instead of at the first copy of a tensor."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(name)!r} asked for, but this process sees no GPU")
    return device
