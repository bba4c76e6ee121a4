"""Linear layers that run on oneDNN-prepacked weights for float32 inference on CPU.

oneDNN multiplies fastest by a weight it has reordered into its own blocked layout. PyTorch's
inductor does that reorder when it freezes a model; eager `F.linear` does not, and calls MKL on
the plain row-major weight instead. For the decoding shapes of our models the prepacked kernel
is clearly faster on one core (AMD EPYC, 128 rows: the 8000-word output layer 5.1 vs 7.0 ms;
whole beam-4 decoding of the test set ~12% faster), so every linear layer keeps a packed copy of
its weight and uses it whenever no gradient is wanted: validation, decoding, serving.

bfloat16 models (`precision.prepare_for_inference(model, "bfloat16")`) pack the same way where
the CPU has native bfloat16 (AVX512-BF16, AMX), where oneDNN's packed bfloat16 kernel beat eager
`F.linear` in bfloat16 too (Xeon with AMX, 128 rows, output layer: 2.0 vs 2.9 ms).

The copy is rebuilt whenever the weight changes (its storage or its version counter: optimizer
steps update weights in place), so training never sees stale weights. Training itself, GPUs and
other dtypes take the ordinary `F.linear` path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _bfloat16_available() -> bool:
    return AVAILABLE and torch.ops.mkldnn._is_mkldnn_bf16_supported()


AVAILABLE = _packing_available()
PACKED_DTYPES = (torch.float32, torch.bfloat16) if _bfloat16_available() else (torch.float32,)


class PackedWeight:
    """A weight's oneDNN-blocked copy, rebuilt lazily when the weight changes.

    The key and the copy are swapped in as one tuple, so a replica's threads never pair a key
    with another weight's copy; at worst two of them pack the same weight once each. Copies and
    pickles (checkpoints, Ray) leave the packed copy behind.
    """

    def __init__(self):
        self._entry: tuple[tuple[int, int], Tensor] | None = None

    def of(self, weight: Tensor) -> Tensor:
        key = (weight.data_ptr(), weight._version)
        entry = self._entry
        if entry is None or entry[0] != key:
            entry = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
            self._entry = entry
        return entry[1]

    def __getstate__(self) -> dict:
        return {"_entry": None}


def packable(x: Tensor, weight: Tensor) -> bool:
    """True when `x @ weight.T` may run on the packed copy: CPU float32 (or bfloat16 where the
    CPU has it), no autograd."""
    return (
        AVAILABLE
        and x.device.type == "cpu"
        and x.dtype == weight.dtype
        and x.dtype in PACKED_DTYPES
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, packed: PackedWeight) -> Tensor:
    """`F.linear`, on `packed`'s copy of `weight` whenever `packable` allows."""
    if packable(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, packed.of(weight), bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state dict) that infers on a packed weight."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.packed = PackedWeight()

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, self.packed)
