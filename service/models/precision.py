"""Inference precision: one call turns a loaded model into its float32, bfloat16 or int8 form.

- `float32`: the model as trained; on CPU every linear layer already runs on oneDNN-prepacked
  weights (`service.models.packed`).
- `bfloat16`: every parameter and buffer cast to bfloat16, so activations, the KV cache and the
  attention matmuls are bfloat16 too (half the bytes that a beam reorder copies). On CPUs with
  AVX512-BF16 / AMX, oneDNN multiplies bfloat16 by prepacked bfloat16 weights several times
  faster than float32. Log-probabilities and beam scores stay float32 (`search._log_probs`).
- `int8`: every linear layer, the output projection included, becomes an `Int8Linear`: int8
  weights (symmetric, one scale per output channel) and activations quantized on the fly
  (asymmetric uint8, one scale per call), PyTorch's `quantized::linear_dynamic` on oneDNN
  packed weights. Embeddings, layer norms, attention and the GRUs of RNNSearch stay float32,
  as in CTranslate2's `int8` compute type.

int8 trades two properties of the float path for speed: results differ from float32 (most
tokens agree; the quality is measured, see docs/benchmarks.md), and since the activation
scale is per call, a text's result can depend on the other texts of its batch. A prepared
model is for inference only: its int8 layers have no gradients and no ordinary state dict.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from service.models.attention import MultiHeadAttention
from service.models.packed import Linear

DTYPES = ("float32", "bfloat16", "int8")  # what the CLI offers; GPUs also take float16
# The fastest dtype within 0.3 BLEU of float32 on the shipped models (docs/benchmarks.md: es-en
# transformer v4 and en-es transformer v2, bible and general at beam 4, within 0.06 BLEU;
# 1.16-1.34x float32's speed, 3-16% ahead of bfloat16 on a Xeon with AMX). What `translate`,
# `eval`, `generate` and the served replicas (`runtime.dtype: auto`) run on CPU.
DEFAULT_CPU_DTYPE = "int8"
QUANTIZED_ENGINE = "onednn"  # AMX / VNNI int8 on x86; the fastest engine measured for our shapes


def default_dtype(device: str | torch.device = "cpu") -> str:
    """The dtype a model serves in when nothing is asked for: DEFAULT_CPU_DTYPE on CPU; on
    GPUs bfloat16 where supported, else float16 (int8 here is CPU-only)."""
    device = torch.device(device)
    if device.type == "cpu":
        return DEFAULT_CPU_DTYPE
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "float16"
    return "bfloat16"


def prepare_for_inference(model: nn.Module, dtype: str | None = None) -> nn.Module:
    """Put a loaded float32 model into eval mode at `dtype`, in place; None or "auto" is
    `default_dtype` of the model's device.

    Works on the Transformer, RNNSearch and the language model (anything built from
    `nn.Linear` layers; an optional `output_layer` attribute replaces the tied output
    projection). Returns the model, so loading code reads `model = prepare_for_inference(...)`.
    """
    device = _device_of(model)
    if dtype in (None, "auto"):
        dtype = default_dtype(device)
    if dtype not in (*DTYPES, "float16"):
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or float16, got {dtype!r}")
    model.eval()
    if dtype == "float16":
        return model.half()
    if dtype == "bfloat16":
        fuse_self_attention(model)
        return model.to(torch.bfloat16)
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError(f"int8 inference runs on CPU only, the model is on {device}")
        model.float()
        fuse_self_attention(model)
        quantize_linears(model)
        output = _tied_output_projection(model)
        if output is not None:
            model.output_layer = Int8Linear(*output)
    return model


def model_dtype(model: nn.Module) -> str:
    """The `DTYPES` name a prepared model runs in."""
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        return "int8"
    floating = [p.dtype for p in model.parameters() if p.is_floating_point()]
    names = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
    return names.get(floating[0], "float32") if floating else "float32"


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _tied_output_projection(model: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """The output layer's (weight, bias) where it is the tied embedding rather than a module."""
    if hasattr(model, "shared") and hasattr(model, "final_logits_bias"):  # Transformer
        return model.shared.weight, model.final_logits_bias[0]
    if hasattr(model, "embed_tokens") and hasattr(model, "output_packed"):  # LanguageModel
        return model.embed_tokens.weight, None
    return None


def fuse_self_attention(model: nn.Module) -> int:
    """Give every self-attention block one C -> 3C projection for q, k and v; returns how many.

    One call instead of three per layer and step (and in int8 one activation quantization):
    the small decode-step projections cost mostly their fixed overhead. Not for float32, which
    keeps its results bit for bit: a wider GEMM may round differently. In int8 the integer
    sums are those of three layers (same per-channel weight scales, same activation scale,
    exact int32 accumulation); only the float rounding after them may differ.
    """
    fused = 0
    for name, module in model.named_modules():
        if isinstance(module, MultiHeadAttention) and name.rsplit(".", 1)[-1] == "self_attn":
            parts = (module.q_proj, module.k_proj, module.v_proj)
            layer = Linear(parts[0].in_features, sum(p.out_features for p in parts))
            layer.to(device=parts[0].weight.device, dtype=parts[0].weight.dtype)
            with torch.no_grad():
                layer.weight.copy_(torch.cat([p.weight for p in parts]))
                layer.bias.copy_(torch.cat([p.bias for p in parts]))
            module.qkv_proj = layer.eval()
            fused += 1
    return fused


def quantize_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` below `model` by an `Int8Linear`; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child.weight, child.bias))
                replaced += 1
    return replaced


@contextmanager
def quantized_engine(name: str):
    """Pack with `name`'s kernels; the engine is a process-wide setting, so restore it."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class Int8Linear(nn.Module):
    """`F.linear` with int8 weights and dynamically quantized activations.

    The weight is quantized once, symmetrically per output channel; each call quantizes its
    input to uint8 with a scale from that input's range (per tensor) and oneDNN accumulates in
    int32 and returns float32 with the bias added. The packed weight is tied to the engine
    that packed it (oneDNN), whatever `torch.backends.quantized.engine` says later.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        weight = weight.detach().float()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scales = (weight.abs().amax(1) / 127).clamp(min=1e-8).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        bias = None if bias is None else bias.detach().float().contiguous()
        with warnings.catch_warnings():
            # Quantized tensors are deprecated in favour of torchao, which the pinned torch
            # does not ship; the kernels below are still the fastest int8 path it has.
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            with quantized_engine(QUANTIZED_ENGINE):
                self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_features) float32 -> (..., out_features) float32."""
        # reduce_range=False: full 8-bit activations (7-bit only guards against saturation in
        # pre-VNNI kernels, which oneDNN does not use).
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"
