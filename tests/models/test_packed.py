"""Linear layers on oneDNN-prepacked weights: same results, never stale, only when allowed."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from service.models import packed
from service.models.packed import Linear, PackedWeight, linear, packable


def test_the_pinned_torch_can_pack():
    assert packed.AVAILABLE  # CPU builds of torch ship oneDNN; without it nothing below runs


def _layer(seed: int = 0, bias: bool = True) -> Linear:
    torch.manual_seed(seed)
    return Linear(16, 24, bias=bias).eval()


@pytest.mark.parametrize("bias", [True, False])
def test_packed_inference_equals_f_linear(bias):
    layer = _layer(bias=bias)
    x = torch.randn(2, 5, 16)  # any leading shape
    with torch.inference_mode():
        out = layer(x)
    assert layer.packed._entry is not None  # the packed kernel ran
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_an_in_place_weight_update_repacks():
    layer = _layer()
    x = torch.randn(3, 16)
    with torch.no_grad():
        before = layer(x)
        layer.weight.mul_(2)  # what an optimizer step does: same storage, new version
        after = layer(x)
    torch.testing.assert_close(after, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_a_replaced_weight_repacks():
    layer = _layer()
    x = torch.randn(3, 16)
    with torch.no_grad():
        layer(x)
        layer.weight = torch.nn.Parameter(torch.randn(24, 16))
        out = layer(x)
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_training_takes_the_autograd_path():
    layer = _layer().train()
    x = torch.randn(3, 16)
    assert not packable(x, layer.weight)  # grad wanted for the weight
    layer(x).sum().backward()
    assert layer.weight.grad is not None
    assert layer.packed._entry is None  # nothing was packed


@pytest.mark.skipif(
    torch.bfloat16 not in packed.PACKED_DTYPES, reason="this CPU has no native bfloat16"
)
def test_bfloat16_packs_where_the_cpu_has_it():
    layer = _layer().to(torch.bfloat16)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = layer(x)
    assert layer.packed._entry is not None
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=2e-2, atol=2e-2)


def test_other_dtypes_take_the_plain_path():
    weight = torch.randn(8, 4, dtype=torch.float16)
    x = torch.randn(2, 4, dtype=torch.float16)
    cache = PackedWeight()
    with torch.inference_mode():
        assert not packable(x, weight)
        torch.testing.assert_close(linear(x, weight, None, cache), F.linear(x, weight))
    assert cache._entry is None


def test_copies_and_pickles_leave_the_packed_weight_behind():
    layer = _layer()
    with torch.inference_mode():
        layer(torch.randn(1, 16))
    assert layer.packed._entry is not None
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone.packed._entry is None
        x = torch.randn(2, 16)
        with torch.inference_mode():
            torch.testing.assert_close(clone(x), layer(x), rtol=1e-5, atol=1e-5)


def test_state_dict_is_that_of_nn_linear():
    layer = _layer()
    plain = torch.nn.Linear(16, 24)
    plain.load_state_dict(layer.state_dict())
    assert list(layer.state_dict()) == ["weight", "bias"]
