"""Batched per-row sampling: the right distribution, and a row's token independent of its batch."""

from __future__ import annotations

import torch

from service.decoding.sampling import SamplingRows, draw_uniforms

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])


def rows(*settings, draws=4000):
    """One SamplingRows for (temperature, top_k, top_p, seed) tuples."""
    return SamplingRows.cat(
        [
            SamplingRows.single(t, k, p, draw_uniforms(draws, seed), "cpu")
            for t, k, p, seed in settings
        ]
    )


def draw(sampling, log_probs, times):
    return torch.stack([sampling.choose(log_probs) for _ in range(times)])  # (times, B)


def test_draws_follow_the_distribution_and_never_pick_an_impossible_token():
    log_probs = PROBS.log()[None]
    tokens = draw(rows((1.0, 0, 1.0, 0)), log_probs, 4000)[:, 0]
    frequencies = torch.bincount(tokens, minlength=5).double() / 4000
    torch.testing.assert_close(frequencies, PROBS.double(), atol=0.03, rtol=0)
    assert frequencies[4] == 0


def test_top_k_top_p_and_temperature_filter_per_row():
    log_probs = PROBS.log()[None].expand(4, -1)
    settings = [(1.0, 2, 1.0, 1), (1.0, 0, 0.6, 2), (0.05, 0, 1.0, 3), (0.0, 0, 1.0, 0)]
    tokens = draw(rows(*settings), log_probs, 2000)
    assert set(tokens[:, 0].tolist()) == {0, 1}  # top-k 2
    assert set(tokens[:, 1].tolist()) == {0, 1}  # 0.5 + 0.3 reach top-p 0.6
    assert (tokens[:, 2] == 0).float().mean() > 0.99  # a cold temperature is nearly greedy
    assert (tokens[:, 3] == 0).all()  # greedy


def test_a_rows_tokens_do_not_depend_on_the_other_rows():
    torch.manual_seed(0)
    log_probs = torch.randn(3, 50).log_softmax(-1)
    alone = draw(rows((0.9, 0, 1.0, 7)), log_probs[1:2], 200)[:, 0]
    # Neighbours that filter make the batch sort; the unfiltered row must not notice.
    batched = draw(rows((1.0, 5, 0.9, 1), (0.9, 0, 1.0, 7), (0.0, 0, 1.0, 0)), log_probs, 200)
    assert torch.equal(alone, batched[:, 1])
    again = draw(rows((0.9, 0, 1.0, 8)), log_probs[1:2], 200)[:, 0]
    assert not torch.equal(alone, again)


def test_rows_follow_their_requests_through_selection():
    log_probs = torch.randn(2, 30, generator=torch.Generator().manual_seed(1)).log_softmax(-1)
    reference = draw(rows((1.0, 0, 1.0, 5)), log_probs[1:], 6)[:, 0]
    sampling = rows((1.0, 0, 1.0, 4), (1.0, 0, 1.0, 5), draws=6)
    first = sampling.choose(log_probs)
    sampling = sampling.select(torch.tensor([1]))  # the other request finished
    rest = draw(sampling, log_probs[1:], 5)[:, 0]
    assert torch.equal(torch.cat([first[1:], rest]), reference)
