"""Parity with Hugging Face's MarianMTModel on identical (random) weights, fully offline."""

from __future__ import annotations

import pytest
import torch

from service.decoding.search import DecodeOptions, generate
from service.store.marian import build_transformer_from_marian

transformers = pytest.importorskip("transformers")

VOCAB, PAD, EOS = 64, 0, 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.MarianConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        forced_eos_token_id=None,
        activation_function="swish",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=True,
    )
    hf = transformers.MarianMTModel(config).eval()
    with torch.no_grad():  # the default init is nearly uniform; make choices decisive
        for name, param in hf.named_parameters():
            if "embed_positions" not in name:
                param.normal_(0, 0.3)
        hf.final_logits_bias.normal_(0, 0.5)
        hf.final_logits_bias[0, EOS] = 2.5  # hypotheses end at varied lengths
    directory = tmp_path_factory.mktemp("marian")
    hf.save_pretrained(directory)
    return hf, build_transformer_from_marian(directory)


@pytest.fixture
def src():
    torch.manual_seed(1)
    src = torch.randint(3, VOCAB, (6, 10))
    for row, length in enumerate([10, 6, 8, 3, 10, 5]):
        src[row, length - 1] = EOS
        src[row, length:] = PAD
    return src


def hf_generate(hf, src, min_new_tokens=1, **kwargs):
    """`generate` with our search's rules: no padding, and (DecodeOptions.min_length's default)
    no EOS before the first token."""
    return hf.generate(
        input_ids=src,
        attention_mask=(src != PAD).long(),
        do_sample=False,
        bad_words_ids=[[PAD]],  # ours never emits padding
        min_new_tokens=min_new_tokens,
        return_dict_in_generate=True,
        output_scores=True,
        **kwargs,
    )


def strip(sequence: list[int]) -> list[int]:
    body = sequence[1:]  # decoder start
    if EOS in body:
        body = body[: body.index(EOS)]
    return [t for t in body if t != PAD]


def test_logits_match(models, src):
    hf, ours = models
    tgt = torch.randint(3, VOCAB, (src.shape[0], 7))
    tgt[:, 0] = PAD
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt)
        torch.testing.assert_close(ours(src, tgt), expected.logits, atol=1e-5, rtol=1e-5)


def test_greedy_matches_generate(models, src):
    hf, ours = models
    expected = hf_generate(hf, src, num_beams=1, max_new_tokens=20).sequences.tolist()
    result = generate(ours, src, DecodeOptions(max_length=20))
    assert [n[0].tokens for n in result] == [strip(s) for s in expected]
    assert any(len(n[0].tokens) < 19 for n in result), "EOS never chosen: the test lost its edge"


@pytest.mark.parametrize(
    "beams, n_best, length_penalty, early_stopping",
    [(4, 1, 1.0, False), (3, 3, 0.6, False), (4, 2, 1.2, True), (2, 2, 0.0, "never")],
)
def test_beam_search_matches_generate(models, src, beams, n_best, length_penalty, early_stopping):
    hf, ours = models
    expected = hf_generate(
        hf,
        src,
        num_beams=beams,
        num_return_sequences=n_best,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        max_new_tokens=20,
    )
    result = generate(
        ours,
        src,
        DecodeOptions(
            beam_size=beams,
            n_best=n_best,
            max_length=20,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
        ),
    )
    sequences = expected.sequences.tolist()
    scores = expected.sequences_scores.tolist()
    for row, nbest in enumerate(result):
        want = [strip(s) for s in sequences[row * n_best : (row + 1) * n_best]]
        assert [h.tokens for h in nbest] == want
        assert [h.score for h in nbest] == pytest.approx(
            scores[row * n_best : (row + 1) * n_best], abs=1e-4
        )


@pytest.fixture(scope="module")
def eos_first_models(tmp_path_factory, models):
    """The same weights with EOS the likeliest first token for most sources."""
    hf, _ = models
    eager = transformers.MarianMTModel(hf.config).eval()
    eager.load_state_dict(hf.state_dict())
    with torch.no_grad():
        eager.final_logits_bias[0, EOS] = 6.0
    directory = tmp_path_factory.mktemp("marian-eos-first")
    eager.save_pretrained(directory)
    return eager, build_transformer_from_marian(directory)


@pytest.mark.parametrize("min_length", [0, 1, 3])
@pytest.mark.parametrize("beams", [1, 3])
def test_min_length_matches_min_new_tokens(eos_first_models, src, min_length, beams):
    hf, ours = eos_first_models
    expected = hf_generate(
        hf, src, min_new_tokens=min_length, num_beams=beams, max_new_tokens=12
    ).sequences.tolist()
    result = generate(
        ours, src, DecodeOptions(beam_size=beams, max_length=12, min_length=min_length)
    )
    got = [n[0].tokens for n in result]
    assert got == [strip(s) for s in expected]
    assert min(len(t) for t in got) == min_length, "EOS first lost its edge"
