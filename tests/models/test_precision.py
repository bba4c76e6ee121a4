"""Inference dtypes: each one decodes, float32 is untouched, int8 quantizes every linear layer
(the tied output projection included) and still agrees with float32 on most tokens."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from service.decoding.search import DecodeOptions, generate
from service.models import build_model, make_config
from service.models.precision import (
    DTYPES,
    Int8Linear,
    default_dtype,
    model_dtype,
    prepare_for_inference,
    quantize_linears,
)

VOCAB = 48
ARCHS = ["transformer", "rnnsearch"]


def tiny_model(arch: str, seed: int = 0, sharpen: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, make_config(arch, "tiny", vocab_size=VOCAB)).eval()
    if sharpen:
        with torch.no_grad():  # sharper distributions than the init gives: fewer near-ties
            for param in model.parameters():
                if param.dim() > 1:
                    param.mul_(3.0)
    return model


def sources(rows: int = 6, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(3, VOCAB, (rows, 10), generator=generator)
    for row in range(rows):
        length = 3 + (row * 7) % 8
        src[row, length - 1] = 2
        src[row, length:] = 0
    return src


def tokens(model: nn.Module, src: torch.Tensor, beam_size: int) -> list[list[int]]:
    options = DecodeOptions(beam_size=beam_size, max_length=12)
    return [nbest[0].tokens for nbest in generate(model, src, options)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_each_dtype_decodes(arch, dtype, beam_size):
    model = prepare_for_inference(tiny_model(arch), dtype)
    assert model_dtype(model) == dtype
    assert not model.training
    src = sources()
    out = tokens(model, src, beam_size)
    assert len(out) == src.shape[0]
    assert all(1 <= len(t) <= 12 and all(3 <= i < VOCAB or i == 1 for i in t) for t in out)
    with torch.inference_mode():
        logits, _ = model.step(
            torch.zeros(src.shape[0], dtype=torch.long), model.init_state(model.encode(src), 4)
        )
    assert logits.shape == (src.shape[0], VOCAB) and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_float32_decodes_exactly_as_before(arch):
    reference = tiny_model(arch)
    prepared = prepare_for_inference(copy.deepcopy(reference), "float32")
    src = sources()
    for beam_size in (1, 3):
        assert tokens(prepared, src, beam_size) == tokens(reference, src, beam_size)


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_quantizes_every_linear_layer_and_the_output_projection(arch):
    model = tiny_model(arch)
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    prepare_for_inference(model, "int8")
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    quantized = [m for m in model.modules() if isinstance(m, Int8Linear)]
    if arch == "transformer":  # the output layer is the tied embedding, not a module
        assert isinstance(model.output_layer, Int8Linear)
        assert model.output_layer.out_features == VOCAB
        fused = [layer.self_attn.qkv_proj for layer in model.decoder.layers]
        fused += [layer.self_attn.qkv_proj for layer in model.encoder.layers]
        assert all(isinstance(f, Int8Linear) for f in fused)
        assert len(quantized) == linears + len(fused) + 1
    else:
        assert model.out_vocab in quantized  # RNNSearch's output layer
        assert len(quantized) == linears


def test_the_language_models_output_projection_is_quantized_too():
    model = build_model("lm", make_config("lm", "tiny", vocab_size=VOCAB)).eval()
    prepare_for_inference(model, "int8")
    assert isinstance(model.output_layer, Int8Linear)
    with torch.inference_mode():
        logits = model(torch.randint(3, VOCAB, (2, 5)))
    assert logits.shape == (2, 5, VOCAB)


def teacher_forced_argmax(model: nn.Module, src: torch.Tensor, prefix: torch.Tensor):
    """Next-token choices (B, T) of the decoder fed `prefix` (B, T), one step at a time."""
    state = model.init_state(model.encode(src), prefix.shape[1])
    chosen = []
    with torch.inference_mode():
        for t in range(prefix.shape[1]):
            logits, _ = model.step(prefix[:, t], state)
            chosen.append(logits.float().argmax(-1))
    return torch.stack(chosen, 1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_reduced_precision_agrees_with_float32_on_most_tokens(arch, dtype):
    # The initialised weights, not sharpened: tripled weights make attention scores nine times
    # larger, and then even bfloat16 moves the transformer's logits by ~20%.
    reference = tiny_model(arch, sharpen=False)
    reduced = prepare_for_inference(copy.deepcopy(reference), dtype)
    src = sources(rows=16)
    prefix = torch.randint(3, VOCAB, (16, 10), generator=torch.Generator().manual_seed(2))
    prefix[:, 0] = 0  # the decoder start token
    expected = teacher_forced_argmax(reference, src, prefix)
    agreement = (teacher_forced_argmax(reduced, src, prefix) == expected).float().mean()
    assert agreement >= 0.9, f"{dtype} chose float32's token at {agreement:.0%} of positions"


def test_fused_self_attention_projections_change_no_int8_result():
    model = prepare_for_inference(tiny_model("transformer"), "int8")
    unfused = copy.deepcopy(model)
    for module in unfused.modules():
        if hasattr(module, "qkv_proj"):
            module.qkv_proj = None
    src = sources()
    assert tokens(model, src, 3) == tokens(unfused, src, 3)
    with torch.inference_mode():
        encoded = model.encode(src)
        # the same int32 sums (same scales, exact accumulation); float rounding after them
        # may differ in the last bit
        torch.testing.assert_close(encoded.memory, unfused.encode(src).memory)


def test_float32_keeps_separate_projections():
    model = prepare_for_inference(tiny_model("transformer"), "float32")
    assert all(layer.self_attn.qkv_proj is None for layer in model.decoder.layers)


def test_int8_linear_is_close_to_float_linear():
    torch.manual_seed(0)
    layer = nn.Linear(64, 40)
    x = torch.randn(7, 3, 64)
    quantized = Int8Linear(layer.weight, layer.bias)
    with torch.inference_mode():
        expected, got = layer(x), quantized(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).norm() / expected.norm() < 0.03


def test_quantize_linears_counts_what_it_replaced():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    assert quantize_linears(model) == 2
    assert isinstance(model[0], Int8Linear) and isinstance(model[2][0], Int8Linear)


def test_unknown_dtypes_are_refused_and_auto_is_the_devices_default():
    with pytest.raises(ValueError, match="dtype must be one of"):
        prepare_for_inference(tiny_model("transformer"), "int4")
    assert default_dtype("cpu") in DTYPES
    assert default_dtype("cuda") in ("bfloat16", "float16")
    model = prepare_for_inference(tiny_model("transformer"), "auto")
    assert model_dtype(model) == default_dtype("cpu")
