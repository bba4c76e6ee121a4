"""The language model's ragged KV cache against full recomputation."""

from __future__ import annotations

import pytest
import torch

from service.models import build_model, make_config
from service.models.lm import LanguageModel


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    torch.manual_seed(0)
    return build_model("lm", make_config("lm", "tiny", vocab_size=50)).eval().double()


def last_logits(lm, sequences):
    return torch.stack([lm(torch.tensor([s]))[0, -1] for s in sequences])


@torch.no_grad()
def test_prefill_and_steps_match_full_recomputation_for_ragged_rows(lm):
    sequences = [[2, 5, 6, 7], [2, 9], [2, 11, 12, 13, 14, 15]]
    logits, state = lm.prefill(sequences, max_len=20)
    torch.testing.assert_close(logits, last_logits(lm, sequences))
    for _ in range(6):
        tokens = logits.argmax(-1)
        sequences = [s + [t] for s, t in zip(sequences, tokens.tolist(), strict=True)]
        logits = lm.step(tokens, state)
        torch.testing.assert_close(logits, last_logits(lm, sequences))


@torch.no_grad()
def test_a_request_merged_mid_flight_sees_only_its_own_prefix(lm):
    running = [[2, 5, 6], [2, 7]]
    logits, state = lm.prefill(running, max_len=10)
    for _ in range(2):  # the running batch moves on before the newcomer arrives
        tokens = logits.argmax(-1)
        running = [s + [t] for s, t in zip(running, tokens.tolist(), strict=True)]
        logits = lm.step(tokens, state)

    newcomer = [2, 3, 4, 5, 6, 7, 8, 9, 10]
    new_logits, new_state = lm.prefill([newcomer], max_len=16)  # wider buffers than the batch
    merged = LanguageModel.merge(state, new_state)
    assert merged.caches[0].keys.shape[2] == 16

    tokens = torch.cat([logits.argmax(-1), new_logits.argmax(-1)])
    sequences = [s + [t] for s, t in zip(running + [newcomer], tokens.tolist(), strict=True)]
    torch.testing.assert_close(lm.step(tokens, merged), last_logits(lm, sequences))

    only_newcomer = lm.reorder_state(merged, torch.tensor([2]))
    assert only_newcomer.lengths.tolist() == [len(newcomer) + 1]


def test_prefill_refuses_an_empty_prompt_and_a_short_cache(lm):
    with pytest.raises(ValueError, match="at least one token"):
        lm.prefill([[2, 3], []], max_len=8)
    with pytest.raises(ValueError, match="shorter than a prompt"):
        lm.prefill([[2, 3, 4]], max_len=2)


@torch.no_grad()
def test_prefill_projects_each_layers_keys_and_values_once(lm):
    calls = []
    hooks = [
        projection.register_forward_hook(lambda *_: calls.append(1))
        for layer in lm.layers
        for projection in (layer.self_attn.k_proj, layer.self_attn.v_proj)
    ]
    try:
        lm.prefill([[2, 5, 6, 7], [2, 9]], max_len=8)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(calls) == 2 * len(lm.layers)


@torch.no_grad()
def test_every_layer_cache_advances_its_own_lengths(lm):
    """Nothing is set on a cache before a layer runs: each knows where its rows' entries go."""
    logits, state = lm.prefill([[2, 5, 6], [2, 7]], max_len=6)
    lm.step(logits.argmax(-1), state)
    assert [cache.lengths.tolist() for cache in state.caches] == [[4, 3]] * len(lm.layers)
    layer, cache = lm.layers[0], state.caches[0]
    x = torch.randn(2, 1, lm.config.d_model, generator=torch.Generator().manual_seed(0))
    expected = layer.self_attn.split_heads(layer.self_attn.k_proj(x.double()))[:, :, 0]
    layer(x.double(), self_mask=None, cache=cache)  # called on its own, it writes where it should
    assert cache.lengths.tolist() == [5, 4]
    torch.testing.assert_close(cache.keys[0, :, 4], expected[0])
    torch.testing.assert_close(cache.keys[1, :, 3], expected[1])
    assert not cache.keys[1, :, 4].any()


def test_a_full_cache_is_refused(lm):
    logits, state = lm.prefill([[2, 5]], max_len=3)
    lm.step(logits.argmax(-1), state)
    with pytest.raises(ValueError, match="cache is full"):
        lm.step(logits.argmax(-1), state)
