"""The chunked top-k of beam search equals torch.topk."""

from __future__ import annotations

import pytest
import torch

from service.decoding.search import row_argmax, row_topk


@pytest.mark.parametrize("vocab", [8000, 8003, 1000, 40])
@pytest.mark.parametrize("k", [1, 8])
def test_row_topk_equals_torch_topk(vocab, k):
    generator = torch.Generator().manual_seed(vocab + k)
    values = torch.randn(37, vocab, generator=generator).log_softmax(-1)
    values[:, 0] = float("-inf")  # padding, as the search masks it
    values[3, vocab // 2] = 5.0  # a winner deep inside a chunk
    values[5, -1] = 5.0  # and one in the tail that fills no whole chunk
    expected = values.topk(k, dim=1)
    best, indices = row_topk(values, k)
    assert torch.equal(best, expected.values)
    assert torch.equal(indices, expected.indices)


def test_row_topk_returns_the_same_values_on_ties():
    generator = torch.Generator().manual_seed(0)
    values = (torch.randn(16, 4096, generator=generator) * 2).round()  # many equal entries
    best, indices = row_topk(values, 8)
    assert torch.equal(best, values.topk(8, dim=1).values)
    assert torch.equal(values.gather(1, indices), best)
    assert all(len(set(row)) == 8 for row in indices.tolist())


@pytest.mark.parametrize("vocab", [8000, 8003, 128, 40])
def test_row_argmax_equals_torch_argmax_first_maximum_and_nan_included(vocab):
    generator = torch.Generator().manual_seed(vocab)
    values = (torch.randn(23, vocab, generator=generator) * 2).round()  # many tied maxima
    values[:, 0] = float("-inf")
    values[4] = float("-inf")  # a row of -inf: index 0, as torch
    values[6, vocab // 3] = values[6, vocab // 2] = 9.0  # tied winners in different chunks
    values[9, vocab - 1] = float("nan")  # NaN is the maximum for torch.argmax
    values[11, vocab // 2] = values[11, vocab - 2] = float("nan")
    assert torch.equal(row_argmax(values), values.argmax(1))
