from collections import Counter

import torch

from service.training.data import BatchSampler, collate, encode_pairs, plan_token_batches

from .helpers import reversal_pairs


def _sampler(tokenizer, max_tokens=60, seed=3, count=200):
    examples = encode_pairs(reversal_pairs(count, min_len=1, max_len=12), tokenizer, eos_id=2)
    return BatchSampler(examples, max_tokens, pad_id=0, eos_id=2, decoder_start_id=0, seed=seed)


def test_collate_builds_shifted_decoder_input_and_labels(tokenizer):
    examples = encode_pairs(reversal_pairs(5), tokenizer, eos_id=2)
    batch = collate(examples, pad_id=0, eos_id=2, decoder_start_id=0)
    for row, example in enumerate(examples):
        n = len(example.target)
        assert batch.src[row, : len(example.source)].tolist() == example.source
        assert example.source[-1] == 2
        assert (batch.src[row, len(example.source) :] == 0).all()
        assert batch.tgt_in[row, 0] == 0
        assert batch.tgt_in[row, 1 : n + 1].tolist() == example.target
        assert batch.labels[row, :n].tolist() == example.target
        assert batch.labels[row, n] == 2
        assert (batch.labels[row, n + 1 :] == 0).all()
    assert batch.target_tokens == sum(len(e.target) + 1 for e in examples)


def test_long_sides_are_truncated_keeping_eos(tokenizer):
    pair = reversal_pairs(1, min_len=12, max_len=12)[0]
    [example] = encode_pairs([pair], tokenizer, eos_id=2, max_source_tokens=5, max_target_tokens=4)
    assert len(example.source) == 5 and example.source[-1] == 2
    assert len(example.target) == 3


def test_batches_respect_token_budget_and_cover_every_example_once(tokenizer):
    sampler = _sampler(tokenizer)
    for epoch in range(3):
        seen = Counter()
        for indices in sampler.plan(epoch):
            batch = sampler.collate(indices)
            assert batch.src.numel() <= 60 and batch.labels.numel() <= 60
            assert batch.padded_tokens <= 60
            seen.update(indices)
        assert seen == Counter(range(len(sampler.examples)))


def test_shuffle_is_seeded_and_changes_between_epochs(tokenizer):
    a, b = _sampler(tokenizer), _sampler(tokenizer)
    assert a.plan(0) == b.plan(0)
    assert a.plan(0) != a.plan(1)
    assert _sampler(tokenizer, seed=4).plan(0) != a.plan(0)


def test_batches_can_skip_into_a_resumed_epoch(tokenizer):
    sampler = _sampler(tokenizer)
    full = list(sampler.batches(epoch=2))
    tail = list(sampler.batches(epoch=2, skip=3))
    assert len(tail) == len(full) - 3
    assert torch.equal(tail[0].src, full[3].src)


def test_an_example_wider_than_the_budget_gets_its_own_batch(tokenizer):
    examples = encode_pairs(reversal_pairs(10, min_len=8, max_len=8), tokenizer, eos_id=2)
    batches = plan_token_batches(examples, max_tokens=5)
    assert sorted(len(b) for b in batches) == [1] * 10
