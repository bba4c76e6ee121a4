from dataclasses import dataclass

import pytest

from service.decoding.search import DecodeOptions
from service.training.evaluate import bucket_of, evaluate, orient

from .helpers import SimplePair


@dataclass
class _Candidate:
    text: str


@dataclass
class _Translation:
    best: _Candidate


class LookupTranslator:
    """Returns a fixed answer per source: the reference (perfect) or something else."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls = 0

    def translate(self, texts, options, stats=None):
        self.calls += 1
        if stats is not None:
            stats.batches += 1
            stats.generated_tokens += sum(len(self.answers[t].split()) + 1 for t in texts)
        return [_Translation(_Candidate(self.answers[t])) for t in texts]


PAIRS = [
    SimplePair(
        "Genesis 1:1",
        "En el principio creó Dios los cielos y la tierra.",
        "In the beginning, God created the heavens and the earth.",
    ),
    SimplePair(
        "Genesis 1:3",
        "Y dijo Dios: Sea la luz: y fué la luz.",
        'God said, "Let there be light," and there was light.',
    ),
    SimplePair("John 11:35", "Y lloró Jesús.", "And then Jesus wept."),
    SimplePair("Esther 8:9", " ".join(["palabra"] * 55), " ".join(["word"] * 50) + " end."),
]


def test_a_perfect_translator_scores_100():
    translator = LookupTranslator({p.source: p.target for p in PAIRS})
    result = evaluate(translator, PAIRS, DecodeOptions(beam_size=4), progress=False)
    assert result["bleu"] == pytest.approx(100.0)
    assert result["chrf"] == pytest.approx(100.0)
    assert result["bleu_signature"].startswith("nrefs:1|")
    assert "chrF2" in result["chrf_signature"] or "nc:6" in result["chrf_signature"]
    assert result["sentences"] == 4
    counts = {b["bucket"]: b["count"] for b in result["buckets"]}
    assert counts == {"0-10": 1, "10-20": 2, "20-30": 0, "30-40": 0, "40-50": 0, "50+": 1}
    assert [b["bleu"] for b in result["buckets"] if b["count"]] == [100.0, 100.0, 100.0]
    assert all(b["bleu"] is None for b in result["buckets"] if not b["count"])
    speed = result["speed"]
    assert speed["sentences"] == 4 and speed["sentences_per_s"] > 0
    assert speed["target_tokens"] > 0 and speed["wall_s"] >= 0
    assert result["decode"]["beam_size"] == 4


def test_empty_outputs_are_counted():
    answers = {p.source: p.target for p in PAIRS}
    answers[PAIRS[2].source] = ""
    answers[PAIRS[0].source] = "  "
    result = evaluate(LookupTranslator(answers), PAIRS, progress=False)
    assert result["empty"] == 2
    perfect = evaluate(LookupTranslator({p.source: p.target for p in PAIRS}), PAIRS, progress=False)
    assert perfect["empty"] == 0


def test_an_en_es_model_translates_the_english_side():
    flipped = orient(PAIRS, "en", "es")
    assert [(p.key, p.source, p.target) for p in flipped] == [
        (p.key, p.target, p.source) for p in PAIRS
    ]
    assert [(p.source, p.target) for p in orient(PAIRS, "es", "en")] == [
        (p.source, p.target) for p in PAIRS
    ]
    perfect = LookupTranslator({p.target: p.source for p in PAIRS})
    assert evaluate(perfect, flipped, progress=False)["bleu"] == pytest.approx(100.0)


def test_a_wrong_translator_scores_low():
    translator = LookupTranslator({p.source: "the the of and" for p in PAIRS})
    result = evaluate(translator, PAIRS, progress=False)
    assert result["bleu"] < 5
    assert result["chrf"] < 30


def test_hypotheses_come_back_in_input_order():
    answers = {p.source: p.target for p in PAIRS}
    result = evaluate(LookupTranslator(answers), PAIRS, progress=False, return_hypotheses=True)
    assert result["hypotheses"] == [p.target for p in PAIRS]


def test_bucket_edges():
    assert bucket_of(0) == "0-10"
    assert bucket_of(9) == "0-10"
    assert bucket_of(10) == "10-20"
    assert bucket_of(49) == "40-50"
    assert bucket_of(50) == "50+"


def test_empty_input_is_refused():
    with pytest.raises(ValueError):
        evaluate(LookupTranslator({}), [], progress=False)
