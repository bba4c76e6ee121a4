"""Language-model training through the shared trainer: examples, learning, store, generation."""

import json
import math
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from service.training.data import BatchSampler, collate_lm, encode_texts, lm_sequences
from service.training.tasks import LanguageModelTask
from service.training.trainer import TrainConfig, Trainer, label_smoothed_loss

from .helpers import WORDS, SimplePair, SpmTokenizer, WordTokenizer, train_spm

EOS, PAD = 2, 0


def counting_pairs(count, seed=0):
    """Runs of consecutive words (w5 w6 w7 ...): after the first word the text is certain."""
    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        start, length = rng.randrange(len(WORDS)), rng.randint(2, 8)
        words = [WORDS[(start + k) % len(WORDS)] for k in range(length)]
        pairs.append(SimplePair(f"Book {i}:1", " ".join(words), " ".join(reversed(words))))
    return pairs


def _config(tmp_path, **overrides):
    values = dict(
        arch="lm",
        preset="tiny",
        max_tokens=256,
        lr=3e-3,
        warmup_steps=10,
        max_steps=60,
        eval_every=20,
        log_every=10,
        threads=1,
        dropout=0.0,
        pack_tokens=32,
        out=str(tmp_path / "run"),
        save=False,
        evaluate_test=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _trainer(config, tokenizer=None, **kwargs):
    return Trainer(
        config,
        tokenizer=tokenizer or WordTokenizer(),
        train_pairs=counting_pairs(300),
        valid_pairs=counting_pairs(40, seed=1),
        test_pairs=counting_pairs(30, seed=2),
        command="pytest",
        log=lambda line: None,
        **kwargs,
    )


# Examples.


def test_each_verse_is_framed_by_eos_when_not_packed():
    rows = lm_sequences([[5, 6, 7], [8], [], [9, 10]], EOS, max_tokens=16, pack=False)
    assert rows == [[EOS, 5, 6, 7, EOS], [EOS, 8, EOS], [EOS, 9, 10, EOS]]


def test_packing_fills_rows_up_to_the_limit_and_keeps_every_prediction():
    rng = random.Random(0)
    documents = [[rng.randrange(4, 20) for _ in range(rng.randint(1, 9))] for _ in range(200)]
    for max_tokens in (4, 9, 16, 33):
        rows = lm_sequences(documents, EOS, max_tokens=max_tokens, pack=True)
        assert all(2 <= len(row) <= max_tokens + 1 for row in rows)
        assert rows[0][0] == EOS
        # Every row is predicted from its first token on; together the rows predict the whole
        # stream "d1 eos d2 eos ..." exactly once, in order.
        predicted = [token for row in rows for token in row[1:]]
        assert predicted == [token for doc in documents for token in [*doc, EOS]]
        unpacked = lm_sequences(documents, EOS, max_tokens=max_tokens, pack=False)
        if max_tokens >= 10:  # no document needs splitting: packing means fewer, fuller rows
            assert len(rows) < len(unpacked)


def test_a_document_longer_than_a_row_is_split_with_one_token_of_overlap():
    rows = lm_sequences([list(range(10, 20))], EOS, max_tokens=4, pack=True)
    assert rows == [[EOS, 10, 11, 12, 13], [13, 14, 15, 16, 17], [17, 18, 19, EOS]]


def test_collate_shifts_by_one_and_pads_labels_that_the_loss_ignores():
    examples = encode_texts(["w1 w2 w3", "w4", "w5 w6"], WordTokenizer(), EOS, 16, pack=False)
    batch = collate_lm(examples, PAD)
    assert batch.inputs.shape == batch.labels.shape == (3, 4)
    for row, example in enumerate(examples):
        n = len(example.tokens) - 1
        assert batch.inputs[row, :n].tolist() == example.tokens[:-1]
        assert batch.labels[row, :n].tolist() == example.tokens[1:]
        assert batch.inputs[row, 0] == EOS and batch.labels[row, n - 1] == EOS
        assert (batch.inputs[row, n:] == PAD).all() and (batch.labels[row, n:] == PAD).all()
    assert batch.target_tokens == 4 + 2 + 3

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 30)
    _, nll, tokens = label_smoothed_loss(logits, batch.labels, PAD, 0.0)
    keep = batch.labels != PAD
    expected = F.cross_entropy(logits[keep], batch.labels[keep], reduction="sum")
    assert tokens == 9 and nll.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_task_trains_on_both_languages_and_scores_verses_unpacked():
    pairs = [SimplePair("B 1:1", "w1 w2", "w3 w4 w5"), SimplePair("B 1:2", "w6", "w7 w8")]
    tokenizer = WordTokenizer()
    from service.models import make_config

    config = make_config("lm", "tiny", tokenizer.vocab_size)
    task = LanguageModelTask(pack_tokens=64)
    train = task.examples(pairs, tokenizer, config, training=True)
    assert [e.tokens for e in train] == [
        [EOS, 5, 6, EOS, 10, EOS],  # es side, packed
        [EOS, 7, 8, 9, EOS, 11, 12, EOS],  # en side, packed
    ]
    valid = task.examples(pairs, tokenizer, config, training=False)
    assert sorted(len(e.tokens) for e in valid) == [3, 4, 4, 5]

    sampler = task.sampler(valid, max_tokens=8, model_config=config, seed=3)
    assert isinstance(sampler, BatchSampler)
    seen = Counter(i for batch in sampler.plan(0) for i in batch)
    assert seen == Counter(range(len(valid)))
    assert all(sampler.collate(b).padded_tokens <= 8 for b in sampler.plan(0))


# Training.


def test_lm_defaults_to_no_label_smoothing():
    assert TrainConfig(arch="lm").label_smoothing == 0.0
    assert TrainConfig(arch="transformer").label_smoothing == 0.1
    assert TrainConfig(arch="lm", label_smoothing=0.05).label_smoothing == 0.05


def test_lm_training_lowers_loss_and_perplexity(tmp_path):
    trainer = _trainer(_config(tmp_path))
    before = trainer.validate()
    assert trainer.fit() == "max_steps"
    after = trainer.validate()
    assert after["valid_ppl"] == pytest.approx(math.exp(after["valid_loss"]), rel=1e-4)
    assert after["valid_ppl"] < 0.5 * before["valid_ppl"], (before, after)
    train_losses = [h["loss"] for h in _events(tmp_path, "train")]
    assert train_losses[-1] < 0.7 * train_losses[0], train_losses
    assert trainer.history[-1]["valid_ppl"] < trainer.history[0]["valid_ppl"]


def _events(tmp_path, kind):
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == kind]


def _generate_twice(model, tokenizer, **params):
    from service.decoding.generation import GenerationEngine, SamplingParams

    texts = []
    for _ in range(2):
        engine = GenerationEngine(model, tokenizer, max_batch_size=2)
        engine.add("r", "w3 w4", SamplingParams(**params))
        text = ""
        while engine.has_work():
            text += "".join(out.text for out in engine.step())
        texts.append(text)
    return texts


def test_train_save_load_generate_round_trip(tmp_path):
    from service.store import ModelStore

    spm_path = train_spm(tmp_path, counting_pairs(300))
    tokenizer = SpmTokenizer(spm_path)
    config = _config(
        tmp_path,
        save=True,
        evaluate_test=True,
        store_root=str(tmp_path / "store"),
        version=1,
    )
    result = _trainer(config, tokenizer=tokenizer, tokenizer_path=spm_path).run()
    manifest = result.manifest
    assert (manifest.id, manifest.version, manifest.arch) == ("es-en/lm", 1, "lm")
    metrics = manifest.metrics
    assert metrics["split"] == "test" and metrics["languages"] == ["es", "en"]
    for key in ("test_perplexity", "test_perplexity_es", "test_perplexity_en"):
        assert 1.0 < metrics[key] < tokenizer.vocab_size, (key, metrics[key])
    assert metrics["valid_perplexity"] == pytest.approx(math.exp(result.best_valid_loss), rel=1e-3)
    assert metrics["test_verses"] == 60
    assert manifest.training["task"] == "lm"
    assert manifest.training["languages"] == ["es", "en"]
    assert manifest.training["config"]["label_smoothing"] == 0.0

    loaded = ModelStore(tmp_path / "store").load("es-en/lm", 1)
    sampled = _generate_twice(loaded.model, tokenizer, max_new_tokens=12, temperature=0.8, seed=7)
    assert sampled[0] == sampled[1] and sampled[0].strip()
    greedy = _generate_twice(loaded.model, tokenizer, max_new_tokens=6, temperature=0)
    # The counting pattern is learnt: greedy continues "w3 w4" with " w5 w6 ...".
    assert greedy[0] == greedy[1] and greedy[0].startswith(" w5"), greedy


# The command line.


@pytest.fixture
def corpus(tmp_path):
    pytest.importorskip("service.text.tokenizer")
    from service.text.corpus import write_split

    data = tmp_path / "data"
    data.mkdir()
    for split, count, seed in (("train", 300, 0), ("valid", 30, 1), ("bible", 20, 2)):
        write_split(data / f"{split}.tsv.gz", counting_pairs(count, seed=seed))
    train_spm(data, counting_pairs(300))
    return data


def test_cli_trains_an_lm_into_the_store_and_generates_repeatably(tmp_path, corpus, monkeypatch):
    from service.__main__ import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    store = tmp_path / "store"
    trained = runner.invoke(
        app,
        [
            "train", "--arch", "lm", "--preset", "tiny", "--max-steps", "40",
            "--max-tokens", "256", "--eval-every", "20", "--warmup-steps", "5", "--lr", "3e-3",
            "--pack-tokens", "32", "--threads", "1", "--out", str(tmp_path / "run"),
            "--root", str(store), "--data-dir", str(corpus), "--version", "1",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output[trained.output.index("{\n") :])
    assert summary["saved"] == {"id": "es-en/lm", "version": 1}
    assert summary["test_perplexity"] > 1 and summary["bleu"] is None
    manifest = json.loads((store / "es-en" / "lm" / "1" / "manifest.json").read_text())
    assert manifest["training"]["command"].startswith("python -m service")
    assert {"valid_perplexity", "test_perplexity"} <= set(manifest["metrics"])
    # The run trained on its own snapshot of the tokenizer, and that is what was stored.
    assert (tmp_path / "run" / "spm.model").read_bytes() == (corpus / "spm.model").read_bytes()

    args = ["generate", "w3 w4", "--root", str(store), "--max-new-tokens", "10", "--seed", "1"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output and first.output.startswith("w3 w4")
    whole = runner.invoke(app, [*args, "--no-stream"])
    assert whole.output == first.output
    exact = runner.invoke(app, [*args, "--dtype", "float32"])  # without it: the device default
    assert exact.exit_code == 0 and exact.output.startswith("w3 w4"), exact.output
    unknown = runner.invoke(app, [*args, "--dtype", "int4"])
    assert unknown.exit_code == 2 and "--dtype" in unknown.output

    bad = runner.invoke(app, ["generate", "w1", "--root", str(store), "--top-p", "0"])
    assert bad.exit_code == 2 and "top_p" in bad.output
