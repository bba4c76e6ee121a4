"""Search algorithms on real (tiny, random) models and on a scripted decoder worked out by hand."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch

from service.decoding.search import DecodeOptions, beam_search, generate
from service.models import build_model, make_config

VOCAB = 40
ARCHS = ["transformer", "rnnsearch"]


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, make_config(arch, "tiny", vocab_size=VOCAB)).eval()
    with torch.no_grad():  # sharper distributions than the init gives: fewer near-ties
        for _name, param in model.named_parameters():
            if param.dim() > 1:
                param.mul_(3.0)
    return model.double()  # float64: decisions never hinge on rounding


def source_batch() -> torch.Tensor:
    torch.manual_seed(1)
    src = torch.randint(3, VOCAB, (4, 9))
    for row, length in enumerate([9, 5, 7, 2]):
        src[row, length - 1] = 2
        src[row, length:] = 0
    return src


def tokens(hypotheses):
    return [[h.tokens for h in nbest] for nbest in hypotheses]


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_and_uncached_steps_give_the_same_logits(arch):
    model = tiny_model(arch)
    src = source_batch()
    encoder = model.encode(src)
    cached = model.init_state(encoder, 12, use_cache=True, need_alignment=True)
    uncached = model.init_state(encoder, 12, use_cache=False, need_alignment=True)
    forced = torch.randint(3, VOCAB, (src.shape[0], 12))
    forced[:, 0] = model.config.decoder_start_id
    for step in range(12):
        a_logits, a_attn = model.step(forced[:, step], cached)
        b_logits, b_attn = model.step(forced[:, step], uncached)
        torch.testing.assert_close(a_logits, b_logits)
        torch.testing.assert_close(a_attn, b_attn)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_cached_and_uncached_decoding_give_identical_tokens(arch, beam_size):
    model = tiny_model(arch)
    options = DecodeOptions(beam_size=beam_size, n_best=beam_size, max_length=15)
    cached = generate(model, source_batch(), options)
    uncached = generate(
        model, source_batch(), DecodeOptions(**{**vars(options), "use_cache": False})
    )
    assert tokens(cached) == tokens(uncached)
    for a, b in zip(cached, uncached, strict=True):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("beam_size", [1, 4])
def test_a_sentence_decodes_the_same_alone_and_in_a_padded_batch(arch, beam_size):
    model = tiny_model(arch)
    src = source_batch()
    options = DecodeOptions(beam_size=beam_size, n_best=beam_size, max_length=15)
    batched = generate(model, src, options)
    for row in range(src.shape[0]):
        length = int((src[row] != 0).sum())
        alone = generate(model, src[row : row + 1, :length], options)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[row]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[row]], abs=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("early_stopping", [False, True])
def test_beam_search_with_one_beam_equals_greedy(arch, early_stopping):
    # Called directly: `generate` would route beam_size=1 to the greedy loop itself.
    model = tiny_model(arch)
    greedy = generate(model, source_batch(), DecodeOptions(max_length=15))
    beam = beam_search(
        model,
        source_batch(),
        DecodeOptions(max_length=15, length_penalty=0.0, early_stopping=early_stopping),
    )
    assert tokens(beam) == tokens(greedy)
    assert [n[0].score for n in beam] == pytest.approx([n[0].score for n in greedy])


@pytest.mark.parametrize("arch", ARCHS)
def test_alignment_rows_are_distributions_over_the_real_source(arch):
    model = tiny_model(arch)
    src = source_batch()
    for options in [
        DecodeOptions(max_length=8, return_alignment=True),
        DecodeOptions(beam_size=3, n_best=2, max_length=8, return_alignment=True),
    ]:
        for row, nbest in enumerate(generate(model, src, options)):
            for hyp in nbest:
                steps = len(hyp.tokens) + (1 if hyp.finished else 0)
                assert hyp.alignment.shape == (steps, int((src[row] != 0).sum()))
                torch.testing.assert_close(
                    hyp.alignment.sum(-1), torch.ones(steps, dtype=hyp.alignment.dtype)
                )


def test_sampling_is_reproducible_with_a_seed_and_varies_without():
    model = tiny_model("transformer")
    options = DecodeOptions(sampling=True, seed=7, max_length=12)
    first = generate(model, source_batch(), options)
    assert tokens(first) == tokens(generate(model, source_batch(), options))
    others = [
        tokens(generate(model, source_batch(), DecodeOptions(sampling=True, seed=s, max_length=12)))
        for s in range(8, 12)
    ]
    assert any(o != tokens(first) for o in others)


def test_top_k_one_sampling_is_greedy():
    model = tiny_model("rnnsearch")
    greedy = generate(model, source_batch(), DecodeOptions(max_length=12))
    sampled = generate(
        model, source_batch(), DecodeOptions(sampling=True, top_k=1, seed=3, max_length=12)
    )
    assert tokens(sampled) == tokens(greedy)


def test_tiny_top_p_sampling_is_greedy():
    model = tiny_model("transformer")
    greedy = generate(model, source_batch(), DecodeOptions(max_length=12))
    sampled = generate(
        model, source_batch(), DecodeOptions(sampling=True, top_p=1e-6, seed=3, max_length=12)
    )
    assert tokens(sampled) == tokens(greedy)


def test_max_length_cuts_hypotheses_and_marks_them_unfinished():
    model = tiny_model("transformer")
    for options in [DecodeOptions(max_length=3), DecodeOptions(beam_size=2, max_length=3)]:
        for nbest in generate(model, source_batch(), options):
            for hyp in nbest:
                assert len(hyp.tokens) <= 3
                assert hyp.finished == (len(hyp.tokens) < 3 or hyp.finished)


# A scripted decoder: next-token probabilities depend only on the prefix, so beam search can be
# worked out by hand. Tokens: 0 pad, 1 unk, 2 eos, 3 "a", 4 "b".
PAD, EOS, A, B = 0, 2, 3, 4
SCRIPT = {
    (): {A: 0.5, B: 0.4, EOS: 0.1},
    (A,): {EOS: 0.2, A: 0.5, B: 0.3},
    (B,): {EOS: 0.9, A: 0.05, B: 0.05},
    (A, A): {EOS: 0.6, A: 0.2, B: 0.2},
    (A, B): {EOS: 0.5, A: 0.25, B: 0.25},
}
DEFAULT = {EOS: 0.8, A: 0.1, B: 0.1}
SCRIPTED_SOURCE = 5  # other sources always get DEFAULT


@dataclass
class ScriptConfig:
    pad_id: int = PAD
    eos_id: int = EOS
    decoder_start_id: int = PAD
    max_positions: int = 64


@dataclass
class Sources:
    first_tokens: list[int]

    def reorder(self, index):
        return Sources([self.first_tokens[i] for i in index.tolist()])


@dataclass
class ScriptState:
    sources: list[int]
    prefixes: list[tuple[int, ...]]
    started: bool = False


class ScriptedDecoder:
    config = ScriptConfig()

    def __init__(self, script: dict | None = None):
        self.script = SCRIPT if script is None else script
        self.rows_per_step: list[int] = []

    def encode(self, src):
        return Sources(src[:, 0].tolist())

    def init_state(self, encoder, max_len, use_cache=True, need_alignment=False):
        return ScriptState(encoder.first_tokens, [() for _ in encoder.first_tokens])

    def step(self, tokens, state):
        self.rows_per_step.append(len(tokens))
        if state.started:
            state.prefixes = [
                p + (t,) for p, t in zip(state.prefixes, tokens.tolist(), strict=True)
            ]
        state.started = True
        logits = torch.full((len(tokens), 5), float("-inf"), dtype=torch.float64)
        for row, (source, prefix) in enumerate(zip(state.sources, state.prefixes, strict=True)):
            script = self.script if source == SCRIPTED_SOURCE else {}
            for token, prob in script.get(prefix, DEFAULT).items():
                logits[row, token] = math.log(prob)
        return logits, None

    def reorder_state(self, state, index):
        pick = index.tolist()
        return ScriptState(
            [state.sources[i] for i in pick], [state.prefixes[i] for i in pick], state.started
        )


@pytest.mark.parametrize("max_length", [3, 10])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_beam_search_finds_the_hand_worked_hypotheses(max_length, early_stopping):
    # Step 1 keeps "a" (.5) and "b" (.4). Step 2: "b eos" (.36) ranks first and finishes with
    # score log(.36)/2; "a a" (.25) and "a b" (.15) run on. Step 3: "a a eos" (.15) finishes
    # with log(.15)/3 and fills the beam; "a b eos" (.075) is worse than both.
    src = torch.tensor([[5, EOS]])
    result = generate(
        ScriptedDecoder(),
        src,
        DecodeOptions(beam_size=2, n_best=2, max_length=max_length, early_stopping=early_stopping),
    )[0]
    assert [h.tokens for h in result] == [[B], [A, A]]
    assert [h.score for h in result] == pytest.approx([math.log(0.36) / 2, math.log(0.15) / 3])
    greedy = generate(ScriptedDecoder(), src, DecodeOptions(max_length=max_length))[0][0]
    assert greedy.tokens == [A, A] and greedy.score == pytest.approx(math.log(0.15))


def test_length_penalty_zero_ranks_by_total_log_probability():
    result = generate(
        ScriptedDecoder(),
        torch.tensor([[5, EOS]]),
        DecodeOptions(beam_size=2, n_best=2, max_length=10, length_penalty=0.0),
    )[0]
    assert [h.score for h in result] == pytest.approx([math.log(0.36), math.log(0.15)])


def test_finished_rows_stop_costing_decoder_steps():
    decoder = ScriptedDecoder()
    # Row 0 follows the script (greedy "a a eos": three steps); the other sources get DEFAULT,
    # say "a" (EOS is not allowed first) and end at the second step, so from step 3 on only
    # row 0 is computed.
    generate(decoder, torch.tensor([[5, EOS], [6, EOS], [7, EOS]]), DecodeOptions(max_length=10))
    assert decoder.rows_per_step == [3, 3, 1]


def test_a_finished_sentence_drops_out_of_the_beam_batch():
    decoder = ScriptedDecoder()
    generate(decoder, torch.tensor([[6, EOS], [5, EOS]]), DecodeOptions(beam_size=2, max_length=10))
    # Step 1 runs one row per sentence (every beam starts alike), then two sentences x two
    # beams; the DEFAULT sentence (EOS not allowed first) fills its beam with "a eos" and
    # "b eos" at step 2 and leaves; the scripted one runs to step 3 alone.
    assert decoder.rows_per_step == [2, 4, 2]


def test_invalid_options_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="beam_size"):
        DecodeOptions(beam_size=0)
    with pytest.raises(ValueError, match="n_best"):
        DecodeOptions(beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="temperature"):
        DecodeOptions(sampling=True, temperature=0)
    with pytest.raises(ValueError, match="exclusive"):
        DecodeOptions(sampling=True, beam_size=2)


# A script that wants EOS first: what an undertrained model does with a short input ("la luz"
# -> ""). EOS is masked until one token is generated; the remaining log-probabilities are not
# renormalised (Hugging Face's processors mask after the log-softmax too).
EOS_FIRST = {
    (): {EOS: 0.9, A: 0.06, B: 0.04},
    (A,): {EOS: 0.7, A: 0.2, B: 0.1},
    (B,): {EOS: 0.95, A: 0.03, B: 0.02},
}
EVERY_SEARCH = [
    DecodeOptions(max_length=6),
    DecodeOptions(beam_size=2, max_length=6),
    DecodeOptions(beam_size=2, n_best=2, max_length=6, early_stopping=True),
    DecodeOptions(beam_size=2, n_best=2, max_length=6, early_stopping="never"),
    DecodeOptions(beam_size=2, n_best=2, max_length=6, length_penalty=0.0),
    # Every sentence of a seeded batch draws the seed's uniforms (the same alone or batched):
    # seed 4's draws (0.48, 0.73) land on EOS first when it is allowed, else on a silent token
    # and then EOS, which the tests below need to see (seed 0's first draw, 0.97, does not).
    DecodeOptions(sampling=True, seed=4, max_length=6),
    DecodeOptions(sampling=True, n_best=3, seed=1, max_length=6, top_k=2),
    DecodeOptions(sampling=True, seed=2, max_length=6, top_p=0.5, temperature=0.7),
]
SEARCH_IDS = [
    "greedy",
    "beam",
    "beam-early",
    "beam-never",
    "beam-lp0",
    "sample",
    "sample-n3",
    "sample-top-p",
]


def test_greedy_never_ends_before_the_first_token():
    result = generate(ScriptedDecoder(EOS_FIRST), torch.tensor([[5, EOS]]), DecodeOptions())[0]
    assert [h.tokens for h in result] == [[A]]
    assert result[0].score == pytest.approx(math.log(0.06) + math.log(0.7))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_beam_search_never_ends_before_the_first_token(early_stopping):
    # Step 1 keeps "a" (.06) and "b" (.04): EOS (.9) is masked. Step 2: "a eos" (.042) and
    # "b eos" (.038) rank first and fill the beam; "a a" (.012) cannot beat log(.038)/2.
    options = DecodeOptions(beam_size=2, n_best=2, max_length=10, early_stopping=early_stopping)
    result = generate(ScriptedDecoder(EOS_FIRST), torch.tensor([[5, EOS]]), options)[0]
    assert [h.tokens for h in result] == [[A], [B]]
    assert [h.score for h in result] == pytest.approx([math.log(0.042) / 2, math.log(0.038) / 2])


@pytest.mark.parametrize("options", EVERY_SEARCH, ids=SEARCH_IDS)
def test_no_search_returns_an_empty_hypothesis(options):
    src = torch.tensor([[5, EOS], [6, EOS], [5, EOS]])  # scripted and DEFAULT (EOS .8) sources
    result = generate(ScriptedDecoder(EOS_FIRST), src, options)
    assert len(result) == 3
    for nbest in result:
        assert nbest and all(len(h.tokens) >= 1 for h in nbest)
    allowed = generate(ScriptedDecoder(EOS_FIRST), src, dataclasses.replace(options, min_length=0))
    assert any(h.tokens == [] for nbest in allowed for h in nbest), "EOS lost its edge"


def eos_first(model: torch.nn.Module) -> torch.nn.Module:
    """The model with an output bias that makes EOS by far the likeliest token at every step."""
    with torch.no_grad():
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias[0, model.config.eos_id] = 100.0
        else:
            model.out_vocab.bias[model.config.eos_id] = 100.0
    return model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("options", EVERY_SEARCH, ids=SEARCH_IDS)
def test_real_models_that_want_eos_first_still_say_one_token(arch, options):
    model = eos_first(tiny_model(arch))
    for nbest in generate(model, source_batch(), options):
        # EOS wins every step it may: exactly one token, then EOS.
        assert [len(h.tokens) for h in nbest] == [1] * len(nbest)
        assert all(h.finished for h in nbest)
    allowed = generate(model, source_batch(), dataclasses.replace(options, min_length=0))
    assert all(nbest[0].tokens == [] for nbest in allowed)  # the best one says nothing


def test_min_length_is_bounded_by_max_length():
    assert DecodeOptions().min_length == 1
    assert DecodeOptions(max_length=1).min_length == 1
    with pytest.raises(ValueError, match="min_length"):
        DecodeOptions(max_length=4, min_length=5)
    with pytest.raises(ValueError, match="min_length"):
        DecodeOptions(min_length=-1)


# A token that writes no text on its own (SentencePiece's bare "▁"): B here. A hypothesis of
# silent tokens alone would detokenize to "", so EOS stays masked until another token comes.
SILENT_FIRST = {
    (): {EOS: 0.5, B: 0.4, A: 0.1},
    (B,): {EOS: 0.9, A: 0.05, B: 0.05},
    (B, B): {EOS: 0.9, A: 0.05, B: 0.05},
}


def test_greedy_does_not_end_on_silent_tokens_alone():
    src = torch.tensor([[5, EOS]])
    plain = generate(ScriptedDecoder(SILENT_FIRST), src, DecodeOptions())[0][0]
    assert plain.tokens == [B]  # one token, but no text
    guarded = generate(ScriptedDecoder(SILENT_FIRST), src, DecodeOptions(), silent_ids=[B])[0][0]
    assert guarded.tokens == [B, A]  # "a" (.05) wins the tie with "b" by its lower id
    assert guarded.score == pytest.approx(math.log(0.4) + math.log(0.05) + math.log(0.8))


def test_beam_search_does_not_end_on_silent_tokens_alone():
    # Step 1: "b" (.4) and "a" (.1). Step 2: "a eos" (.08) finishes; "b eos" (.36) may not, so
    # "b a" and "b b" (.02 each) run on. Step 3: "b a eos" (.016) fills the beam.
    result = generate(
        ScriptedDecoder(SILENT_FIRST),
        torch.tensor([[5, EOS]]),
        DecodeOptions(beam_size=2, n_best=2, max_length=10),
        silent_ids=[B],
    )[0]
    assert [h.tokens for h in result] == [[A], [B, A]]
    assert [h.score for h in result] == pytest.approx([math.log(0.08) / 2, math.log(0.016) / 3])


@pytest.mark.parametrize("options", EVERY_SEARCH, ids=SEARCH_IDS)
def test_no_search_returns_silent_tokens_alone(options):
    src = torch.tensor([[5, EOS], [6, EOS], [5, EOS]])
    result = generate(ScriptedDecoder(SILENT_FIRST), src, options, silent_ids=[B])
    for nbest in result:
        assert all(any(t != B for t in h.tokens) for h in nbest)
    plain = generate(ScriptedDecoder(SILENT_FIRST), src, options)
    assert any(h.tokens and set(h.tokens) == {B} for n in plain for h in n), "lost its edge"
    unbounded = dataclasses.replace(options, min_length=0)
    allowed = generate(ScriptedDecoder(SILENT_FIRST), src, unbounded, silent_ids=[B])
    assert any(h.tokens == [] for n in allowed for h in n)  # min_length=0 allows nothing at all


def test_the_last_step_writes_a_word_when_only_silent_tokens_came_before():
    loop = {prefix: {EOS: 0.5, B: 0.45, A: 0.05} for prefix in [(), (B,), (B, B)]}
    src = torch.tensor([[5, EOS]])
    greedy = generate(ScriptedDecoder(loop), src, DecodeOptions(max_length=3), silent_ids=[B])
    assert greedy[0][0].tokens == [B, B, A] and not greedy[0][0].finished  # cut, with a word
    options = DecodeOptions(beam_size=2, n_best=2, max_length=3)
    for hypothesis in generate(ScriptedDecoder(loop), src, options, silent_ids=[B])[0]:
        assert A in hypothesis.tokens
    assert generate(ScriptedDecoder(loop), src, DecodeOptions(max_length=3))[0][0].tokens == [B]


@pytest.mark.parametrize("sampling", [False, True])
def test_finished_rows_left_in_the_state_change_no_result(monkeypatch, sampling):
    """Greedy and sampling step a few finished rows instead of copying every cache to drop
    them: each row's tokens and scores stay exactly those of dropping them at once."""
    from service.decoding import search

    model = tiny_model("transformer").float()  # float32, the serving dtype, and its rounding
    with torch.no_grad():  # sentences ending at many different steps
        model.final_logits_bias[0, model.config.eos_id] += 4.0
    torch.manual_seed(3)
    src = torch.randint(3, VOCAB, (16, 9))
    for row in range(16):
        src[row, 2 + row % 7 :] = 0
    options = DecodeOptions(max_length=24, sampling=sampling, seed=5 if sampling else None)
    kept = []
    keep = search._keep_dead_rows

    def counted(*args):
        kept.append(keep(*args))
        return kept[-1]

    monkeypatch.setattr(search, "_keep_dead_rows", counted)
    lazy = generate(model, src, options)
    assert any(kept), "no finished row was ever left in the state: the test lost its edge"
    monkeypatch.setattr(search, "_keep_dead_rows", lambda *args: False)
    eager = generate(model, src, options)
    assert tokens(lazy) == tokens(eager)
    assert [n[0].score for n in lazy] == [n[0].score for n in eager]
