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
