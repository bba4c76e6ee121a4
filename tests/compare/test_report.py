import json
import re
import struct

import pytest

from service.compare import choose_samples, compare_models, compare_splits, paired_bootstrap
from service.compare.plots import plot_alignment
from service.compare.report import model_labels, parse_model_spec
from service.training import apertium
from service.training.evaluate import score

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# Statistics on hypothesis lists.

REFERENCES = [
    "In the beginning God created the heavens and the earth.",
    "God said, let there be light, and there was light.",
    "And Jesus wept in front of the tomb.",
    "The people went out to the mountain at night.",
    "The king gave bread and wine to the poor.",
] * 4
GARBAGE = ["xq zzv plonk", "brr", "qq ww ee rr", "lorem ipsum dolor", "zz"] * 4


def test_an_oracle_beats_garbage_significantly():
    result = paired_bootstrap([("garbage", GARBAGE), ("oracle", REFERENCES)], REFERENCES)
    oracle, garbage = result.scores["oracle"], result.scores["garbage"]
    assert oracle["BLEU"].score == pytest.approx(100.0)
    assert garbage["BLEU"].score < 5
    assert oracle["BLEU"].p_value < 0.05
    assert oracle["chrF"].p_value < 0.05
    assert garbage["BLEU"].p_value is None  # the baseline is not tested against itself
    assert not result.identical["oracle"]
    assert "bs:1000" in result.signatures["BLEU"] and "seed:" in result.signatures["chrF"]


def test_identical_systems_are_not_significantly_different():
    # sacrebleu alone reports p = 1/(n+1) here; identical outputs must not look significant.
    hypotheses = [r.replace("the", "a") for r in REFERENCES]
    result = paired_bootstrap([("a", hypotheses), ("b", list(hypotheses))], REFERENCES, 200)
    assert result.identical["b"]
    for metric in ("BLEU", "chrF"):
        assert result.scores["b"][metric].p_value == 1.0
        assert result.scores["b"][metric].score == result.scores["a"][metric].score


def test_a_small_difference_on_few_sentences_is_not_significant():
    slightly_worse = list(REFERENCES)
    slightly_worse[0] = "In the beginning God made the heavens and the earth."
    result = paired_bootstrap([("a", REFERENCES), ("b", slightly_worse)], REFERENCES, 500)
    assert not result.identical["b"]
    assert result.scores["b"]["BLEU"].p_value > 0.05


def test_intervals_contain_the_point_estimate_and_match_sacrebleu_scores():
    hypotheses = [r.replace("the", "a") for r in REFERENCES[:10]] + REFERENCES[10:]
    result = paired_bootstrap([("base", GARBAGE), ("sys", hypotheses)], REFERENCES)
    corpus = score(hypotheses, REFERENCES, REFERENCES)
    sys = result.scores["sys"]
    assert sys["BLEU"].score == pytest.approx(corpus["bleu"], abs=0.005)
    assert sys["chrF"].score == pytest.approx(corpus["chrf"], abs=0.005)
    for metric in sys.values():
        assert metric.ci > 0
        assert metric.low <= metric.score <= metric.high


def test_paired_bootstrap_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="hypotheses"):
        paired_bootstrap([("a", REFERENCES[:3])], REFERENCES)
    with pytest.raises(ValueError, match="unique"):
        paired_bootstrap([("a", REFERENCES), ("a", REFERENCES)], REFERENCES)


# Sample choice, labels, specs.


def test_samples_are_deterministic_short_to_medium_and_spread(pairs):
    chosen = choose_samples(pairs, 3)
    assert chosen == choose_samples(pairs, 3)
    assert len(chosen) == len(set(chosen)) == 3
    assert all(8 <= len(pairs[i].source.split()) <= 20 for i in chosen)
    assert chosen == sorted(chosen) and chosen[-1] - chosen[0] >= len(pairs) // 3


def test_samples_fall_back_to_the_nearest_lengths(pairs):
    short = [p for p in pairs if len(p.source.split()) < 6]
    chosen = choose_samples(short, 2)
    assert len(chosen) == 2
    lengths = sorted(len(p.source.split()) for p in short)
    assert sorted(len(short[i].source.split()) for i in chosen) == lengths[-2:]
    assert choose_samples(pairs, 0) == [] and choose_samples(short, 50) == list(range(len(short)))


def test_labels_and_model_specs():
    assert model_labels([("es-en/transformer", 1), ("es-en/rnnsearch", 1)]) == [
        "transformer",
        "rnnsearch",
    ]
    assert model_labels([("es-en/transformer", 1), ("es-en/transformer", 2)]) == [
        "transformer-v1",
        "transformer-v2",
    ]
    assert len(set(model_labels([("es-en/t", 1), ("es-en/t", 1)]))) == 2
    assert parse_model_spec("transformer@3") == ("transformer", 3)
    assert parse_model_spec(" es-en/rnnsearch ", 2) == ("es-en/rnnsearch", 2)


def test_alignment_plot_checks_its_shape(tmp_path):
    with pytest.raises(ValueError, match="weights are 1x2"):
        plot_alignment(["a", "</s>", "x"], ["b"], [[0.5, 0.5]], tmp_path / "a.png")


# The full comparison on tiny models.


def test_report_files_are_written(comparison, pairs):
    report, out = comparison
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    for name in ["bleu_by_length.png", "scores.png"] + [
        f"alignment_{label}_{i}.png" for label in ("transformer", "rnnsearch") for i in (1, 2, 3)
    ]:
        width, height = png_size(out / name)
        assert width > 50 and height > 50
    for label in ("transformer", "rnnsearch"):
        lines = (out / f"hypotheses_{label}.txt").read_text(encoding="utf-8").splitlines()
        assert lines == report.model(label).hypotheses and len(lines) == len(pairs)


def test_json_has_scores_intervals_and_p_values(comparison, pairs):
    report, out = comparison
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["baseline"] == "transformer" and data["sentences"] == len(pairs)
    assert set(data["models"]) == {"transformer", "rnnsearch"}
    for model in data["models"].values():
        for metric in ("bleu", "chrf"):
            entry = model[metric]
            low, high = entry["ci95"]
            assert low <= entry["score"] <= high
            assert entry["ci95_half_width"] >= 0
        speed = model["speed"]
        assert speed["sentences"] == len(pairs)
        assert speed["sentences_per_s"] > 0 and speed["target_tokens_per_s"] > 0
        assert 0 < speed["p50_latency_ms"] <= speed["p95_latency_ms"]
        assert speed["mean_latency_ms"] > 0
    assert data["models"]["transformer"]["bleu"]["p_value"] is None
    assert 0 < data["models"]["rnnsearch"]["bleu"]["p_value"] <= 1
    assert 0 < data["models"]["rnnsearch"]["chrf"]["p_value"] <= 1
    assert {c["metric"] for c in data["comparisons"]} == {"BLEU", "chrF"}
    assert all(c["system"] == "rnnsearch" for c in data["comparisons"])
    assert "bs:200" in data["signatures"]["BLEU"] and "nrefs:1" in data["signatures"]["chrF"]


def test_scores_agree_with_evaluate(comparison, pairs):
    report, _ = comparison
    for model in report.models:
        direct = score(model.hypotheses, [p.target for p in pairs], [p.source for p in pairs])
        assert model.bleu.score == pytest.approx(direct["bleu"], abs=0.005)
        assert model.chrf.score == pytest.approx(direct["chrf"], abs=0.005)
        assert model.buckets == direct["buckets"]


def test_bucket_counts_sum_to_the_sentences(comparison, pairs):
    report, _ = comparison
    for model in report.models:
        assert sum(b["count"] for b in model.buckets) == len(pairs)
        assert sum(1 for b in model.buckets if b["count"]) >= 3
    assert [b["bucket"] for b in report.models[0].buckets] == [
        b["bucket"] for b in report.models[1].buckets
    ]


def test_samples_are_the_same_sentences_with_consistent_alignments(comparison, pairs):
    report, _ = comparison
    assert len(report.sample_indices) == 3
    for model in report.models:
        assert [s.index for s in model.samples] == report.sample_indices
        for sample in model.samples:
            assert sample.source == pairs[sample.index].source
            assert sample.source_tokens[-1] == "</s>"
            assert len(sample.weights) == len(sample.target_tokens) > 0
            for row in sample.weights:
                assert len(row) == len(sample.source_tokens)
                assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_markdown_links_existing_files_and_lists_both_models(comparison):
    report, out = comparison
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Model comparison: transformer vs rnnsearch")
    for model in report.models:
        row = re.search(rf"^\| {model.label} \| {model.bleu.score:.2f} \| \[", markdown, re.M)
        assert row, f"no quality row for {model.label}"
    assert "nrefs:1|bs:200|seed:12345" in markdown
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert "bleu_by_length.png" in images and len(images) == 2 + 2 * 3
    for image in images:
        assert (out / image).is_file(), image
    assert "rnnsearch vs transformer: ΔBLEU" in markdown


def test_identical_models_are_not_significantly_different(tmp_path, store, pairs, options):
    report = compare_models(
        store,
        ["transformer@1", "transformer@2"],
        pairs[:10],
        options,
        tmp_path,
        samples=1,
        progress=False,
        n_bootstrap=200,
    )
    assert [m.label for m in report.models] == ["transformer-v1", "transformer-v2"]
    first, second = report.models
    assert first.hypotheses == second.hypotheses
    assert second.bleu.score == first.bleu.score
    for comparison in report.comparisons:
        assert comparison.identical_outputs
        assert comparison.p_value == 1.0 and not comparison.significant
    assert (tmp_path / "alignment_transformer-v2_1.png").is_file()


def test_unknown_models_fail_before_any_translation(tmp_path, store, pairs, options):
    from service.store import ModelNotFound

    with pytest.raises(ModelNotFound):
        compare_models(store, ["transformer", "nosuchmodel"], pairs, options, tmp_path)
    assert not (tmp_path / "report.md").exists()


# Apertium beside the models, other directions, several splits.

needs_apertium = pytest.mark.skipif(
    not apertium.available("es", "en") or not apertium.available("en", "es"),
    reason="Apertium is not installed (`make test` installs apertium apertium-eng-spa)",
)


@needs_apertium
def test_apertium_is_scored_on_the_same_lines_as_the_models(tmp_path, store, pairs, options):
    chosen = pairs[:10]
    report = compare_models(
        store,
        ["transformer@1"],
        chosen,
        options,
        tmp_path,
        samples=2,
        progress=False,
        n_bootstrap=100,
        apertium=True,
    )
    assert [m.label for m in report.models] == ["transformer", "apertium"]
    peer = report.model("apertium")
    expected = apertium.translate_lines([p.source for p in chosen]).translations
    assert peer.hypotheses == expected and peer.peer
    direct = score(expected, [p.target for p in chosen], [p.source for p in chosen])
    assert peer.bleu.score == pytest.approx(direct["bleu"], abs=0.005)
    assert peer.chrf.score == pytest.approx(direct["chrf"], abs=0.005)
    assert peer.buckets == direct["buckets"] and peer.empty == direct["empty"]
    assert peer.model_id == "apertium spa-eng" and peer.version is None
    assert 0 < peer.bleu.p_value <= 1  # tested against the baseline like any system
    assert [s.hypothesis for s in peer.samples] == [expected[i] for i in report.sample_indices]
    assert all(s.plot is None for s in peer.samples)
    assert not list(tmp_path.glob("alignment_apertium*"))  # heatmaps only for our models
    lines = (tmp_path / "hypotheses_apertium.txt").read_text(encoding="utf-8").splitlines()
    assert lines == expected
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["models"]["apertium"]["peer"] is True
    assert data["models"]["apertium"]["speed"]["target_tokens"] is None
    assert data["environment"]["apertium"].startswith("Apertium")
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert re.search(rf"^\| apertium \| {peer.bleu.score:.2f} \| \[", markdown, re.M)
    assert "apertium vs transformer: ΔBLEU" in markdown
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (tmp_path / image).is_file(), image


@pytest.fixture(scope="module")
def both_directions(tmp_path_factory, spm_path):
    """A store with an es-en and an en-es model (tiny, random)."""
    import sentencepiece

    from service.store import ModelStore

    from .conftest import tiny_model

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()
    store = ModelStore(tmp_path_factory.mktemp("directions") / "model_store")
    store.save(tiny_model("transformer", vocab, seed=3), spm_path, model_id="en-es/transformer")
    store.save(tiny_model("rnnsearch", vocab, seed=4), spm_path, model_id="es-en/rnnsearch")
    return store


def test_an_en_es_model_translates_the_english_side(tmp_path, both_directions, pairs, options):
    report = compare_models(
        both_directions,
        ["en-es/transformer"],
        pairs[:6],
        options,
        tmp_path,
        samples=1,
        progress=False,
        n_bootstrap=50,
        apertium=apertium.available("en", "es"),
    )
    assert report.direction == "en-es"
    sample = report.baseline.samples[0]
    assert sample.source == pairs[sample.index].target  # English in
    assert sample.reference == pairs[sample.index].source  # scored against the Spanish
    if apertium.available("en", "es"):
        assert report.model("apertium").model_id == "apertium eng-spa"
        expected = apertium.translate_lines([p.target for p in pairs[:6]], "en", "es")
        assert report.model("apertium").hypotheses == expected.translations
    assert "en→es" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_models_of_two_directions_are_refused(tmp_path, both_directions, pairs, options):
    with pytest.raises(ValueError, match="one direction"):
        compare_models(
            both_directions, ["en-es/transformer", "es-en/rnnsearch"], pairs, options, tmp_path
        )


def test_several_splits_make_one_report(tmp_path, store, pairs, options):
    splits = {"bible": pairs[:8], "ui": pairs[8:14]}
    result = compare_splits(
        store,
        ["transformer@1", "rnnsearch"],
        splits,
        options,
        tmp_path,
        samples=1,
        progress=False,
        n_bootstrap=100,
    )
    assert [r.split for r in result.reports] == ["bible", "ui"]
    assert [r.sentences for r in result.reports] == [8, 6]
    for name in splits:
        assert (tmp_path / name / "report.json").is_file()
        assert png_size(tmp_path / name / "alignment_rnnsearch_1.png")[0] > 50
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Model comparison: transformer vs rnnsearch on bible, ui")
    assert "## Split bible: transformer vs rnnsearch" in markdown and "## Split ui:" in markdown
    assert "### Quality" in markdown and "#### Sample 1:" in markdown
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert "bible/bleu_by_length.png" in images and "ui/scores.png" in images
    for image in images:
        assert (tmp_path / image).is_file(), image
    ui = result.reports[1].model("rnnsearch")
    row = re.search(r"^\| rnnsearch \| (.+) \|$", markdown, re.M).group(1).split(" | ")
    assert row[2] == f"{ui.bleu.score:.2f} [{ui.bleu.low:.2f}, {ui.bleu.high:.2f}]"
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["splits"] == ["bible", "ui"] and data["systems"] == ["transformer", "rnnsearch"]
    assert data["summary"]["rnnsearch"]["ui"]["bleu"]["score"] == round(ui.bleu.score, 2)
    assert data["reports"]["ui"]["sentences"] == 6
    with pytest.raises(ValueError, match="split"):
        compare_splits(store, ["transformer@1"], {"ui": []}, options, tmp_path / "x")
