"""The decode-loop optimizations the benchmarks rely on: shared encoder memory across beams
and KV caches that copy only their filled positions."""

from __future__ import annotations

import pytest
import torch

import service.models.transformer as transformer_module
from service.decoding.search import DecodeOptions, generate
from service.models import build_model, make_config
from service.models.attention import KVCache, shared_rows

VOCAB = 40


def tiny_model():
    torch.manual_seed(0)
    model = build_model("transformer", make_config("transformer", "tiny", VOCAB)).eval()
    with torch.no_grad():  # decisive choices; float64 so that no decision hinges on rounding
        for param in model.parameters():
            if param.dim() > 1:
                param.mul_(3.0)
        model.final_logits_bias[0, 2] = 1.0  # one sentence ends early: its rows are dropped
    return model.double()


def sources():
    torch.manual_seed(1)
    src = torch.randint(3, VOCAB, (5, 9))
    for row, length in enumerate([9, 5, 7, 2, 6]):
        src[row, length - 1] = 2
        src[row, length:] = 0
    return src


def test_shared_rows_finds_groups_and_copies_nothing_when_it_can():
    assert shared_rows(torch.arange(3).repeat_interleave(4), 1, 3) == (None, 4)
    entries, group = shared_rows(torch.tensor([9, 8, 8, 11, 1, 3, 2, 2]), 4, 3)
    assert entries.tolist() == [2, 0] and group == 4  # a sentence dropped, beams reordered
    entries, group = shared_rows(torch.tensor([0, 4, 1, 5]), 4, 2)
    assert entries.tolist() == [0, 1, 0, 1] and group == 1  # runs broken: one row each
    assert shared_rows(torch.tensor([2, 0]), 1, 3)[0].tolist() == [2, 0]


def test_beam_search_with_shared_memory_equals_copied_memory(monkeypatch):
    model, src = tiny_model(), sources()
    options = DecodeOptions(beam_size=4, n_best=2, max_length=16, return_alignment=True)
    shared = generate(model, src, options)
    ended = [n[0].finished for n in shared]
    assert any(ended) and not all(ended), "no sentence left the batch early"

    encoder = model.encode(src).reorder(torch.arange(5).repeat_interleave(4))
    state = model.init_state(encoder, 16)
    assert encoder.group == 4 and state.cross_attn[0].keys.shape[0] == 5

    def copy_always(index, group, entries):
        return index // group, 1

    monkeypatch.setattr(transformer_module, "shared_rows", copy_always)
    copied = generate(model, src, options)
    assert [[h.tokens for h in n] for n in shared] == [[h.tokens for h in n] for n in copied]
    for a, b in zip(shared, copied, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-9)
            torch.testing.assert_close(x.alignment, y.alignment)


def test_kv_cache_grows_by_blocks_appends_in_place_and_reorders():
    torch.manual_seed(0)
    batch, heads, dim, limit = 3, 2, 4, 12
    cache = KVCache.empty(batch, heads, dim, torch.zeros(1), max_len=limit)
    reference = torch.empty(batch, heads, 0, dim)
    buffers = set()
    for _ in range(5):
        step = torch.randn(batch, heads, 1, dim)
        keys, values = cache.append(step, 2 * step)
        reference = torch.cat([reference, step], 2)
        buffers.add(cache.keys.data_ptr())
    assert len(buffers) == 1  # grown once (up to max_len), then written in place
    assert cache.keys.shape[2] == limit
    torch.testing.assert_close(keys, reference, rtol=0, atol=0)
    torch.testing.assert_close(values, 2 * reference, rtol=0, atol=0)

    index = torch.tensor([2, 0, 0, 1])  # beams reordered, one row duplicated
    cache, reference = cache.reorder(index), reference[index]
    keys_buffer = cache.keys
    step = torch.randn(len(index), heads, 1, dim)
    keys, values = cache.append(step, 2 * step)
    reference = torch.cat([reference, step], 2)
    assert cache.keys is keys_buffer  # the reorder left room for this step: written in place
    assert keys.is_contiguous()
    torch.testing.assert_close(keys, reference, rtol=0, atol=0)
    torch.testing.assert_close(values, 2 * reference, rtol=0, atol=0)

    for _ in range(limit - 6):
        step = torch.randn(len(index), heads, 1, dim)
        keys, _ = cache.append(step, step)
        reference = torch.cat([reference, step], 2)
    torch.testing.assert_close(keys, reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match="holds 12 positions"):
        cache.append(step, step)
