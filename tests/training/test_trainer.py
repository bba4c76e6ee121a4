import json
import math

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from service.training.trainer import (
    TrainConfig,
    Trainer,
    inverse_sqrt_lr,
    label_smoothed_loss,
)

from .helpers import SpmTokenizer, WordTokenizer, reversal_pairs, train_spm


def _config(tmp_path, **overrides):
    values = dict(
        arch="transformer",
        preset="tiny",
        max_tokens=300,
        lr=3e-3,
        warmup_steps=10,
        max_steps=60,
        eval_every=20,
        log_every=10,
        threads=1,
        out=str(tmp_path / "run"),
        save=False,
        evaluate_test=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _trainer(config, tokenizer=None, count=200, **kwargs):
    return Trainer(
        config,
        tokenizer=tokenizer or WordTokenizer(),
        train_pairs=reversal_pairs(count),
        valid_pairs=reversal_pairs(40, seed=1),
        test_pairs=reversal_pairs(20, seed=2),
        command="pytest",
        log=lambda line: None,
        **kwargs,
    )


def test_learning_rate_warms_up_then_decays():
    assert inverse_sqrt_lr(1, 1e-3, 100) == pytest.approx(1e-5)
    assert inverse_sqrt_lr(50, 1e-3, 100) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(100, 1e-3, 100) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(400, 1e-3, 100) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(7, 1e-3, 0) == 1e-3


def test_loss_without_smoothing_is_cross_entropy_ignoring_pad():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[4, 5, 2, 0, 0], [6, 7, 8, 9, 2]])
    loss, nll, tokens = label_smoothed_loss(logits, labels, pad_id=0, smoothing=0.0)
    expected = F.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=0, reduction="sum"
    )
    assert tokens == 8
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert nll.item() == pytest.approx(expected.item(), rel=1e-5)
    smoothed, nll2, _ = label_smoothed_loss(logits, labels, pad_id=0, smoothing=0.1)
    assert nll2.item() == pytest.approx(nll.item())
    assert smoothed.item() != pytest.approx(nll.item())


@pytest.mark.parametrize("arch", ["transformer", "rnnsearch"])
def test_a_short_run_learns_the_task(tmp_path, arch):
    trainer = _trainer(
        _config(tmp_path, arch=arch, dropout=0.0, lr=1e-2 if arch == "rnnsearch" else 3e-3)
    )

    def batches():
        for epoch in range(1000):
            yield from trainer.sampler.batches(epoch)

    initial = trainer.validate()["valid_loss"]
    losses = [trainer.train_step(batch)[0] for batch, _ in zip(batches(), range(60), strict=False)]
    final = trainer.validate()["valid_loss"]
    assert final < initial - 0.5, (initial, final)
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10, losses


def test_fit_keeps_the_best_checkpoint_and_a_resume_point(tmp_path):
    trainer = _trainer(_config(tmp_path))
    result = trainer.run()
    out = tmp_path / "run"
    assert result.steps == 60 and result.stopped_because == "max_steps"
    assert {
        "last.safetensors",
        "last.optim.safetensors",
        "last.json",
        "best.safetensors",
        "best.json",
        "log.jsonl",
        "result.json",
    } <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.tmp"))
    meta = json.loads((out / "last.json").read_text())
    assert meta["step"] == 60
    assert [h["step"] for h in meta["history"]] == [20, 40, 60]
    best = json.loads((out / "best.json").read_text())
    assert best["best_valid_loss"] == pytest.approx(
        min(h["valid_loss"] for h in meta["history"]), abs=1e-4
    )
    assert result.best_valid_loss == pytest.approx(best["best_valid_loss"])
    # The model the run ends with is the best one, not the last.
    best_weights = safetensors.torch.load_file(str(out / "best.safetensors"))
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, best_weights[name])


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = _trainer(_config(tmp_path / "a", max_steps=40))
    straight.fit()

    first = _trainer(_config(tmp_path / "b", max_steps=20))
    first.fit()
    assert json.loads((tmp_path / "b" / "run" / "last.json").read_text())["step"] == 20
    resumed = _trainer(_config(tmp_path / "b", max_steps=40, resume=True))
    assert resumed.step == 20
    assert resumed.optimizer.state  # Adam moments came back
    resumed.fit()
    assert resumed.step == 40
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    history = json.loads((tmp_path / "b" / "run" / "last.json").read_text())["history"]
    assert [h["step"] for h in history] == [20, 40]


def test_resume_refuses_a_different_architecture(tmp_path):
    _trainer(_config(tmp_path, max_steps=5, eval_every=5)).fit()
    with pytest.raises(ValueError, match="transformer run"):
        _trainer(_config(tmp_path, arch="rnnsearch", resume=True))


def test_early_stopping(tmp_path):
    # A learning rate this small cannot improve the validation loss measurably.
    trainer = _trainer(_config(tmp_path, lr=1e-12, max_steps=200, eval_every=5, patience=2))
    assert trainer.fit() == "early_stopping"
    assert trainer.step < 200


def test_time_budget_stops_the_run(tmp_path):
    trainer = _trainer(_config(tmp_path, max_steps=0, max_epochs=1000, max_minutes=0.05))
    assert trainer.fit() == "max_minutes"


@pytest.mark.parametrize("arch", ["transformer", "rnnsearch"])
def test_train_evaluate_save_to_store_and_load_back(tmp_path, arch):
    from service.decoding.search import DecodeOptions
    from service.decoding.translator import Translator
    from service.store import ModelStore

    pairs = reversal_pairs(200)
    spm_path = train_spm(tmp_path, pairs)
    tokenizer = SpmTokenizer(spm_path)
    config = _config(
        tmp_path,
        arch=arch,
        save=True,
        evaluate_test=True,
        store_root=str(tmp_path / "store"),
        version=1,
        max_steps=40,
    )
    result = _trainer(config, tokenizer=tokenizer, tokenizer_path=spm_path).run()
    manifest = result.manifest
    assert (manifest.id, manifest.version, manifest.arch) == (f"es-en/{arch}", 1, arch)
    assert manifest.metrics["bleu"] >= 0 and "chrf" in manifest.metrics
    assert manifest.metrics["bleu_signature"].startswith("nrefs:1")
    assert len(manifest.metrics["buckets"]) == 6
    assert manifest.training["steps"] == 40
    assert manifest.training["command"] == "pytest"
    assert manifest.training["device"] == "cpu"
    assert math.isfinite(manifest.training["best_valid_loss"])

    loaded = ModelStore(tmp_path / "store").load(f"es-en/{arch}", 1)
    source = [pairs[0].source]
    expected = Translator(result and _reload_best(tmp_path, arch, config), tokenizer).translate(
        source, DecodeOptions(beam_size=2)
    )
    got = Translator(loaded.model, tokenizer).translate(source, DecodeOptions(beam_size=2))
    assert got[0].best.text == expected[0].best.text

    # Version 1 is taken now: a second save goes to version 2 instead of failing.
    again = _trainer(
        _config(
            tmp_path / "again",
            arch=arch,
            save=True,
            evaluate_test=False,
            store_root=str(tmp_path / "store"),
            version=1,
            max_steps=2,
            eval_every=2,
        ),
        tokenizer=tokenizer,
        tokenizer_path=spm_path,
    ).run()
    assert again.manifest.version == 2
    assert again.manifest.metrics == {}


def _reload_best(tmp_path, arch, config):
    """The fp32 best weights, rounded through fp16 as the store keeps them."""
    from service.models import build_model, make_config

    state = safetensors.torch.load_file(str(tmp_path / "run" / "best.safetensors"))
    model = build_model(arch, make_config(arch, "tiny", len(state) and _vocab(state, arch)))
    model.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    )
    return model.eval()


def _vocab(state, arch):
    key = "shared.weight" if arch == "transformer" else "tgt_embed.weight"
    return state[key].shape[0]
