"""The continuous engine gives every sentence what the static search gives it alone.

Sentences arrive at random steps with mixed options (greedy, beam 2-5 with n-best, length
penalties and early stopping, seeded sampling with n-best, alignments, min_length 0) on both
architectures. The reference is `search.generate` on that sentence alone (batch size 1): the
engine's rows share padded batches whose float sums can differ from the unbatched ones in the
last bits, so scores are compared within a tolerance; on these float64 models with sharpened
weights the tokens come out identical.
"""

from __future__ import annotations

import random

import pytest
import torch

from service.decoding.continuous import TranslationEngine
from service.decoding.search import DecodeOptions, generate
from tests.decoding.test_search import ARCHS, VOCAB, tiny_model

SILENT = (5, 7)  # ids that write no text: the searches may not end on them alone

OPTIONS = [
    DecodeOptions(max_length=12),
    DecodeOptions(max_length=5),  # cut off: finished=False
    DecodeOptions(beam_size=2, max_length=10),
    DecodeOptions(beam_size=3, n_best=3, max_length=12, length_penalty=0.6),
    DecodeOptions(beam_size=4, n_best=2, max_length=12, early_stopping=True),
    DecodeOptions(beam_size=5, n_best=5, max_length=9, early_stopping="never"),
    DecodeOptions(beam_size=4, max_length=12, length_penalty=0.0, return_alignment=True),
    DecodeOptions(sampling=True, seed=3, max_length=12),
    DecodeOptions(sampling=True, n_best=3, seed=11, max_length=10, top_k=5),
    DecodeOptions(sampling=True, seed=5, max_length=12, top_p=0.7, temperature=0.8),
    DecodeOptions(max_length=12, min_length=0, return_alignment=True),
    DecodeOptions(beam_size=3, n_best=2, max_length=12, min_length=0),
]


def sources(count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [
        [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 11))] + [2] for _ in range(count)
    ]


def alone(model, source: list[int], options: DecodeOptions):
    return generate(model, torch.tensor([source]), options, SILENT)[0]


def run_engine(engine: TranslationEngine, arrivals: dict[int, list[tuple]]) -> dict:
    """Add each (id, source, options) at its step; step until everything is done."""
    results, step = {}, 0
    while engine.has_work() or any(s >= step for s in arrivals):
        for request_id, source, options in arrivals.get(step, []):
            engine.add(request_id, source, options)
        for output in engine.step():
            assert output.request_id not in results
            results[output.request_id] = output
        step += 1
    return results


def assert_same(got, expected):
    assert [h.tokens for h in got] == [h.tokens for h in expected]
    assert [h.finished for h in got] == [h.finished for h in expected]
    assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)
    for a, b in zip(got, expected, strict=True):
        assert (a.alignment is None) == (b.alignment is None)
        if a.alignment is not None:
            torch.testing.assert_close(a.alignment, b.alignment, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_random_arrivals_with_mixed_options_equal_the_static_search_alone(arch, seed):
    model = tiny_model(arch)
    rng = random.Random(seed)
    work = [(i, src, rng.choice(OPTIONS)) for i, src in enumerate(sources(24, seed))]
    arrivals: dict[int, list[tuple]] = {}
    for item in work:
        arrivals.setdefault(rng.randrange(0, 20), []).append(item)
    engine = TranslationEngine(model, SILENT, max_batch_size=rng.choice([3, 8, 32]))
    results = run_engine(engine, arrivals)
    assert sorted(results) == [i for i, _, _ in work]
    for i, source, options in work:
        assert_same(results[i].hypotheses, alone(model, source, options))
    assert max(engine.batch_sizes) > 1  # the sentences did share steps
    assert engine.rows == 0 and engine.state is None


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_option_in_one_batch_at_once(arch):
    model = tiny_model(arch, seed=2)
    work = [(i, src, OPTIONS[i % len(OPTIONS)]) for i, src in enumerate(sources(24, 5))]
    results = run_engine(TranslationEngine(model, SILENT), {0: work})
    for i, source, options in work:
        assert_same(results[i].hypotheses, alone(model, source, options))


def test_a_finished_sentence_leaves_at_once_and_a_newcomer_joins_the_next_step():
    model = tiny_model("transformer")
    engine = TranslationEngine(model)
    engine.add("long", sources(1, 3)[0], DecodeOptions(beam_size=3, max_length=30, min_length=30))
    engine.add("short", [9, 2], DecodeOptions(max_length=2, min_length=2))
    assert engine.step() == [] and engine.rows == 3 + 1  # the beam fans out to its 3 rows
    assert [o.request_id for o in engine.step()] == ["short"]  # two steps, then done
    assert engine.rows == 3
    engine.add("late", [4, 2], DecodeOptions(max_length=1))
    assert [o.request_id for o in engine.step()] == ["late"]
    assert engine.batch_sizes[-1] == 2 and engine.rows == 3


def test_a_cancelled_sentence_leaves_and_the_others_are_unaffected():
    model = tiny_model("rnnsearch")
    work = [(i, src, OPTIONS[i + 2]) for i, src in enumerate(sources(4, 7))]
    engine = TranslationEngine(model, SILENT)
    for item in work:
        engine.add(*item)
    engine.step()
    engine.step()
    rows = engine.rows
    assert engine.cancel(1) and not engine.cancel(1)
    assert engine.rows == rows - OPTIONS[3].beam_size
    engine.add("queued", [5, 2], DecodeOptions())
    assert engine.cancel("queued")
    results = run_engine(engine, {})
    assert sorted(results) == [0, 2, 3]
    for i, source, options in work:
        if i != 1:
            assert_same(results[i].hypotheses, alone(model, source, options))


def test_the_token_budget_holds_back_sentences_until_rows_leave():
    model = tiny_model("transformer")
    engine = TranslationEngine(model, max_batch_tokens=4 * 12)
    for i in range(3):
        engine.add(i, [3 + i] * 11 + [2], DecodeOptions(beam_size=4, max_length=6))
    engine.step()
    assert len(engine.running) == 1 and len(engine.waiting) == 2  # 4 rows x 12 tokens
    results = run_engine(engine, {})
    assert sorted(results) == [0, 1, 2]
    assert max(engine.batch_sizes) == 1


def test_use_cache_off_and_empty_sources_are_refused():
    engine = TranslationEngine(tiny_model("transformer"))
    with pytest.raises(ValueError, match="cache"):
        engine.add(0, [3, 2], DecodeOptions(use_cache=False))
    with pytest.raises(ValueError, match="token"):
        engine.add(0, [], DecodeOptions())


ENCODE_POISON, STEP_POISON = VOCAB - 2, VOCAB - 1  # source ids the stub below fails on


class Poisoned:
    """A model that fails on specific inputs: encoding any source holding ENCODE_POISON, and
    every step that has a row of a source holding STEP_POISON (its memory is NaN, the step
    sees NaN logits and raises after it has written the caches)."""

    def __init__(self, model):
        self.model = model
        self.failed_encodes = self.failed_steps = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, src):
        if bool((src == ENCODE_POISON).any()):
            self.failed_encodes += 1
            raise ValueError("cannot encode this source")
        encoder = self.model.encode(src)
        bad = (src == STEP_POISON).any(1)
        memory = encoder.memory if hasattr(encoder, "memory") else encoder.states
        memory[bad] = float("nan")
        return encoder

    def step(self, tokens, state):
        logits, attention = self.model.step(tokens, state)
        if bool(logits.isnan().any()):
            self.failed_steps += 1
            raise FloatingPointError("NaN logits")
        return logits, attention


@pytest.mark.parametrize("arch", ARCHS)
def test_a_sentence_that_fails_fails_alone_and_the_others_get_their_translations(arch):
    model = tiny_model(arch)
    rng = random.Random(3)
    clean = [[t if t < ENCODE_POISON else 4 for t in src] for src in sources(12, 3)]
    work = [(i, src, rng.choice(OPTIONS)) for i, src in enumerate(clean)]
    arrivals: dict[int, list[tuple]] = {}
    for item in work:
        arrivals.setdefault(rng.randrange(0, 8), []).append(item)
    # Newcomers with company: one whose encoding fails, one whose first step fails while
    # the batch is mid-decode, and a poisoned beam of a later step.
    arrivals.setdefault(3, []).extend(
        [("encode", [5, ENCODE_POISON, 2], OPTIONS[0]), ("step", [6, STEP_POISON, 2], OPTIONS[0])]
    )
    arrivals.setdefault(5, []).append(("beam", [STEP_POISON, 9, 2], OPTIONS[3]))
    stub = Poisoned(model)
    engine = TranslationEngine(stub, SILENT, max_batch_size=32)
    results = run_engine(engine, arrivals)
    assert stub.failed_encodes >= 2 and stub.failed_steps >= 2  # both paths taken
    for name in ("encode", "step", "beam"):
        assert results[name].error and results[name].hypotheses == []
    assert "encode" in results["encode"].error and "NaN" in results["step"].error
    for i, source, options in work:
        assert results[i].error is None
        assert_same(results[i].hypotheses, alone(model, source, options))
    assert engine.rows == 0 and engine.state is None


def test_a_step_that_fails_without_a_culprit_raises():
    class Crowded(Poisoned):  # fails on a batch of more than two rows, never on fewer
        def step(self, tokens, state):
            if tokens.shape[0] > 2:
                raise RuntimeError("out of memory")
            return self.model.step(tokens, state)

    engine = TranslationEngine(Crowded(tiny_model("transformer")))
    for i in range(3):
        engine.add(i, [3 + i, 2], DecodeOptions())
    with pytest.raises(RuntimeError, match="memory"):
        engine.step()


def test_a_few_dead_rows_stay_and_newcomers_are_appended_after_them():
    model = tiny_model("transformer")

    class Counting(Poisoned):  # counts the state copies
        reorders = 0
        merges: list = []

        def reorder_state(self, state, index):
            Counting.reorders += 1
            return self.model.reorder_state(state, index)

        def merge_states(self, first, second, index=None):
            Counting.merges.append(index)
            return self.model.merge_states(first, second, index)

    engine = TranslationEngine(Counting(model))
    long = DecodeOptions(max_length=8, min_length=8)
    work = [(i, [3 + i, 2], long) for i in range(9)] + [
        ("short", [9, 2], DecodeOptions(max_length=1))
    ]
    for item in work:
        engine.add(*item)
    results = {o.request_id: o for o in engine.step()}
    assert list(results) == ["short"] and engine.rows == 9
    assert Counting.reorders == 0 and engine._state_size == 10  # its row stays, dead
    late = ("late", [4, 5, 2], DecodeOptions(max_length=6))
    engine.add(*late)
    engine.step()
    # One dead row of ten: it stays, and the newcomer is appended after it (no copy).
    assert Counting.reorders == 0 and engine._state_size == 11
    assert Counting.merges[-1] is None
    assert torch.equal(engine._state_rows, torch.tensor([*range(9), 10]))
    results.update(run_engine(engine, {}))
    for i, source, options in [*work, late]:
        assert_same(results[i].hypotheses, alone(model, source, options))


def test_many_dead_rows_are_copied_out_of_the_state_with_the_next_join():
    model = tiny_model("transformer")

    class Counting(Poisoned):
        merges: list = []

        def merge_states(self, first, second, index=None):
            Counting.merges.append(index)
            return self.model.merge_states(first, second, index)

    engine = TranslationEngine(Counting(model))
    long = DecodeOptions(max_length=8, min_length=8)
    work = [(i, [3 + i, 2], long) for i in range(6)] + [
        (f"short{i}", [9, 2], DecodeOptions(max_length=1)) for i in range(2)
    ]
    for item in work:
        engine.add(*item)
    results = {o.request_id: o for o in engine.step()}
    assert engine.rows == 6 and engine._state_size == 8  # two dead rows of eight
    late = ("late", [4, 5, 2], DecodeOptions(max_length=6))
    engine.add(*late)
    engine.step()
    assert torch.equal(Counting.merges[-1], torch.arange(6))  # dropped as it joined
    assert engine._state_size == 7 and engine._state_rows is None
    results.update(run_engine(engine, {}))
    for i, source, options in [*work, late]:
        assert_same(results[i].hypotheses, alone(model, source, options))


def test_a_busy_batch_takes_newcomers_in_groups():
    from service.decoding.continuous import JOIN_SENTENCES, JOIN_STEPS

    model = tiny_model("transformer")
    engine = TranslationEngine(model, SILENT, max_batch_size=2 * JOIN_SENTENCES + 2)
    long = DecodeOptions(max_length=12, min_length=12)
    work = [(i, [3 + i, 2], long) for i in range(JOIN_SENTENCES + 1)]
    for item in work:
        engine.add(*item)
    engine.step()  # half full: newcomers wait for company
    late = ("late", [4, 5, 2], DecodeOptions(max_length=6))
    engine.add(*late)
    for _ in range(JOIN_STEPS):
        engine.step()
        assert [s.request_id for s in engine.waiting] == ["late"]
    engine.step()  # it waited JOIN_STEPS steps: it joins alone
    assert not engine.waiting and len(engine.running) == JOIN_SENTENCES + 2
    group = [(f"g{i}", [6 + i, 2], DecodeOptions(max_length=4)) for i in range(JOIN_SENTENCES)]
    for item in group[:-1]:
        engine.add(*item)
    engine.step()
    assert len(engine.waiting) == JOIN_SENTENCES - 1
    engine.add(*group[-1])
    engine.step()  # JOIN_SENTENCES wait: they join at once
    assert not engine.waiting
    results = run_engine(engine, {})
    for i, source, options in [*work, late, *group]:
        assert_same(results[i].hypotheses, alone(model, source, options))


def test_a_sentence_over_the_token_budget_is_passed_until_it_waited_long_enough():
    from service.decoding.continuous import PASS_STEPS

    model = tiny_model("transformer")
    engine = TranslationEngine(model, SILENT, max_batch_tokens=24)
    first = (0, [3, 4, 5, 6, 7, 8, 9, 10, 11, 2], DecodeOptions(max_length=40, min_length=40))
    engine.add(*first)
    engine.step()
    wide = ("wide", [3] * 19 + [2], DecodeOptions(max_length=4))
    engine.add(*wide)
    engine.add("short", [4, 2], DecodeOptions(max_length=4))
    engine.step()  # 2 rows x 20 tokens > 24: the short one behind it goes first
    assert [s.request_id for s in engine.running] == [0, "short"]
    assert [s.request_id for s in engine.waiting] == ["wide"]
    results = {}
    for _ in range(PASS_STEPS):
        results.update({o.request_id: o for o in engine.step()})
    assert list(results) == ["short"] and [s.request_id for s in engine.running] == [0]
    engine.add("later", [5, 2], DecodeOptions(max_length=4))
    engine.step()  # "wide" waited PASS_STEPS steps: nothing passes it any more
    assert [s.request_id for s in engine.waiting] == ["wide", "later"]
    results.update(run_engine(engine, {}))
    for i, source, options in [first, wide, ("short", [4, 2], DecodeOptions(max_length=4))]:
        assert_same(results[i].hypotheses, alone(model, source, options))


def test_encode_groups_pad_a_short_source_to_a_long_one_only_when_a_call_costs_more():
    from service.decoding.continuous import ENCODE_CALL_TOKENS, encode_groups

    assert encode_groups([]) == []
    assert encode_groups([(1, 10), (1, 12), (1, 14)]) == [[0, 1, 2]]  # little padding
    long = 10 + 2 * ENCODE_CALL_TOKENS
    assert encode_groups([(1, 10), (1, 12), (1, long)]) == [[0, 1], [2]]
    assert encode_groups([(4, 10), (1, long)]) == [[0], [1]]  # rows count: 4 samples
    assert sum(encode_groups([(1, n) for n in range(1, 40)]), []) == list(range(39))
