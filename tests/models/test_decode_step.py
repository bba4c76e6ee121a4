"""The static search's decode step (`Transformer._step_static`) computes what the layers'
general `forward` computes, bit for bit, in every dtype, across beam reorders and the
cache's growth."""

from __future__ import annotations

import pytest
import torch

from service.models import build_model, make_config
from service.models.precision import prepare_for_inference

VOCAB = 48


def _model(dtype: str):
    torch.manual_seed(0)
    model = build_model("transformer", make_config("transformer", "tiny", vocab_size=VOCAB))
    return prepare_for_inference(model, dtype)


def _general_step(model, tokens, state):
    """The layers' `forward` path: what `step` runs for alignments (weights dropped)."""
    state.need_alignment = True
    try:
        return model.step(tokens, state)[0]
    finally:
        state.need_alignment = False


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("group", [1, 3])
def test_fast_step_equals_the_general_step_bit_for_bit(dtype, group):
    model = _model(dtype)
    generator = torch.Generator().manual_seed(1)
    src = torch.randint(3, VOCAB, (4, 9), generator=generator)
    src[1, 6:] = model.config.pad_id  # padded sources: the additive mask must match
    src[3, 2:] = model.config.pad_id
    with torch.inference_mode():
        fast = model.init_state(model.encode(src), 40)
        general = model.init_state(model.encode(src), 40)
        tokens = torch.zeros(src.shape[0], dtype=torch.long)
        for step in range(24):  # past the cache's first growth block
            expected = _general_step(model, tokens, general)
            got, alignment = model.step(tokens, fast)
            assert alignment is None
            assert torch.equal(got, expected), f"step {step}"
            tokens = got.float().argmax(-1)
            if step == 0 and group > 1:  # fan out into beams: memory rows shared by groups
                index = torch.arange(src.shape[0]).repeat_interleave(group)
            elif step % 5 == 4:  # a beam reorder that mixes rows within groups
                index = torch.randperm(tokens.shape[0], generator=generator)
            elif step == 11:  # a sentence leaves
                index = torch.arange(tokens.shape[0] - group)
            else:
                continue
            fast = model.reorder_state(fast, index)
            general = model.reorder_state(general, index)
            tokens = tokens[index]
