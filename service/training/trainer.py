"""The training loop: label-smoothed cross-entropy, Adam with warmup + inverse-sqrt decay.

One loop for every architecture: the task (`tasks.py`, chosen by `arch`) turns corpus pairs
into batches, calls the model and computes the final test metrics; translators learn es -> en
and are tested by BLEU, the language model learns es and en text and is tested by perplexity.

A run lives in one directory (`out`):

    last.safetensors / last.optim.safetensors / last.json   the resume point (every eval)
    best.safetensors / best.json                             lowest validation loss so far
    log.jsonl                                                one line per log / eval event
    result.json                                              what the run produced, at the end

Every file is written to a temporary name and renamed, so a crash (or the machine going away)
leaves the previous checkpoint intact. Nothing here is pickled: weights, optimizer moments and
RNG state are safetensors, step counters are JSON.

At the end the best weights are evaluated on the test split (the task's metrics) and saved
into the model store with the metrics and the training facts in the manifest. SIGTERM or
Ctrl-C stops training early but still runs that finalisation, so `kill <pid>` is a clean stop.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from service.models import build_model, config_to_dict, count_parameters, make_config
from service.models.device import resolve_device
from service.store.registry import sha256_file
from service.training.data import Batch, LMBatch
from service.training.tasks import Task, default_label_smoothing, task_for

DEFAULT_STORE = Path(__file__).resolve().parents[2] / "model_store"
DEFAULT_DATA_DIR = DEFAULT_STORE / "data" / "es-en"


@dataclass
class TrainConfig:
    arch: str = "transformer"
    preset: str = "small"
    max_tokens: int = 4096  # padded tokens (rows * longest side) per batch
    lr: float = 7e-4  # peak, reached at the end of warmup
    warmup_steps: int = 1000
    label_smoothing: float | None = None  # None: the task's (0.1 translators, 0 language model)
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    max_epochs: int = 50
    max_steps: int = 0  # 0: no limit (max_epochs / max_minutes stop the run)
    max_minutes: float = 0.0  # wall-clock budget for the training loop of this process; 0: none
    eval_every: int = 500  # steps between validations (and resume checkpoints)
    patience: int = 0  # validations without improvement before stopping; 0: never stop early
    log_every: int = 50
    seed: int = 1
    device: str = "auto"  # "auto": CUDA when present
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    out: str = "runs/transformer"
    resume: bool = False
    dropout: float | None = None  # overrides the preset's dropout when set
    # Language model only: rows pack neighbouring verses up to this many model inputs (fewer
    # pad tokens, context across verses); 0: one verse per row.
    pack_tokens: int = 128
    # Data and tokenizer; None means the shipped ones under model_store/data/es-en.
    data_dir: str | None = None
    tokenizer_path: str | None = None
    valid_limit: int = 0  # first N valid pairs for validation loss; 0: all
    # Finalisation.
    test_split: str = "test"
    test_beam_size: int = 4
    test_limit: int = 0  # 0: the whole split
    evaluate_test: bool = True
    save: bool = True
    store_root: str | None = None  # None: the repository's model_store
    model_id: str | None = None  # None: "es-en/<arch>" (the language model too: ids name a pair)
    version: int | None = None  # None: the next free version
    # Translators: which side of the corpus is the source. "en-es" trains the other direction
    # on the same pairs.
    direction: str = "es-en"
    # Language model: the sides of the corpus it learns, comma separated.
    lm_languages: str = "es,en"
    # "<id>@<version>" of a stored model of the same arch and size to start from (warmstart.py).
    init_from: str | None = None
    # CPU/GPU mixed precision: forward and backward under bfloat16 autocast, fp32 master weights
    # and fp32 loss. 1.35x per step on these AVX512-BF16 cores for the small Transformer.
    bf16: bool = False

    def __post_init__(self):
        if self.max_tokens < 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("max_tokens and lr must be positive, warmup_steps non-negative")
        if self.eval_every < 1 or self.log_every < 1:
            raise ValueError("eval_every and log_every must be at least 1")
        if self.pack_tokens < 0 or self.pack_tokens == 1:
            raise ValueError("pack_tokens must be 0 (off) or at least 2")
        if self.label_smoothing is None:
            self.label_smoothing = default_label_smoothing(self.arch)
        if self.direction not in ("es-en", "en-es"):
            raise ValueError(f"direction must be es-en or en-es, got {self.direction!r}")
        if not set(self.lm_languages.split(",")) <= {"es", "en"} or not self.lm_languages:
            raise ValueError(f"lm_languages must name es and/or en, got {self.lm_languages!r}")


@dataclass
class TrainResult:
    out: Path
    steps: int
    epochs_completed: int
    best_step: int
    best_valid_loss: float
    wall_seconds: float
    stopped_because: str
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    manifest: Any = None  # the store Manifest when saved


# Loss and schedule.


def label_smoothed_loss(
    logits: Tensor, labels: Tensor, pad_id: int, smoothing: float
) -> tuple[Tensor, Tensor, int]:
    """(B, T, V), (B, T) -> (smoothed loss sum, nll sum, target tokens); pad positions ignored.

    Smoothing spreads `smoothing` over the vocabulary except the pad token (fairseq-style eps
    over V - 1 classes would differ only in a constant).
    """
    log_probs = logits.float().log_softmax(-1).flatten(0, 1)  # (B*T, V)
    flat = labels.flatten()
    keep = flat != pad_id
    log_probs, flat = log_probs[keep], flat[keep]
    nll = -log_probs.gather(1, flat[:, None]).squeeze(1)
    vocab = log_probs.shape[-1]
    smooth = -(log_probs.sum(-1) - log_probs[:, pad_id]) / (vocab - 1)
    loss = (1.0 - smoothing) * nll + smoothing * smooth
    return loss.sum(), nll.sum(), int(flat.numel())


def inverse_sqrt_lr(step: int, peak: float, warmup: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then peak * sqrt(warmup / step)."""
    step = max(step, 1)
    if warmup <= 0:
        return peak
    return peak * min(step / warmup, math.sqrt(warmup / step))


# Checkpoints: safetensors + JSON, written atomically.


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    def write(tmp: Path):
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")

    _atomic(path, write)


def _save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))


def optimizer_tensors(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Tensor]:
    """Adam moments keyed by parameter name, plus the RNG state, for safetensors."""
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: dict[str, Tensor] = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            value = value if torch.is_tensor(value) else torch.tensor(float(value))
            tensors[f"state.{names[id(param)]}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, model: nn.Module, tensors: dict[str, Tensor]
) -> None:
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        name, _, slot = key[len("state.") :].rpartition(".")
        param = params[name]
        if slot == "step":
            value = value.to(torch.float32)  # Adam keeps `step` as a float32 CPU tensor
        else:
            value = value.to(device=param.device, dtype=param.dtype)
        optimizer.state[param][slot] = value
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def load_weights(path: Path, model: nn.Module) -> None:
    """Our own run-directory weights (safetensors), strictly."""
    state = safetensors.torch.load_file(str(path), device=str(next(model.parameters()).device))
    model.load_state_dict(state, strict=True)


# Devices and data.


def _default_tokenizer_path(config: TrainConfig) -> Path:
    if config.tokenizer_path:
        return Path(config.tokenizer_path)
    return (
        Path(config.data_dir) / "spm.model" if config.data_dir else DEFAULT_DATA_DIR / "spm.model"
    )


def _load_tokenizer(path: Path):
    from service.text.tokenizer import Tokenizer

    return Tokenizer.load(path)


def _load_split(split: str, config: TrainConfig):
    from service.text.corpus import load_split

    return load_split(split, Path(config.data_dir) if config.data_dir else DEFAULT_DATA_DIR)


def _preload_finalisation_modules(config: TrainConfig, task: Task) -> None:
    """Import now what the end of the run needs, so edits made to the working tree during a
    long run cannot break its evaluation or its save."""
    if config.evaluate_test:
        task.preload()
    if config.save:
        import sentencepiece  # noqa: F401

        import service.store  # noqa: F401
        import service.store.errors  # noqa: F401


# The loop.


@dataclass
class _LogWindow:
    """Training loss and target tokens since the last progress report."""

    loss_sum: float = 0.0  # per-token loss times tokens, summed over steps
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, tokens: int) -> None:
        self.loss_sum += loss * tokens
        self.tokens += tokens

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)


class _StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes its step, then finalises normally."""

    def __init__(self):
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners)
                pass

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.reason is not None:  # a second signal: stop right away
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name.lower()
        print(f"\n[train] got {self.reason}: finishing the current step, then saving", flush=True)


class Trainer:
    """One training run. `pairs` / `tokenizer` may be injected (tests); else the shipped ones."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        tokenizer=None,
        tokenizer_path: Path | str | None = None,
        train_pairs: Sequence | None = None,
        valid_pairs: Sequence | None = None,
        test_pairs: Sequence | None = None,
        command: str | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.command = command or " ".join(shlex.quote(a) for a in sys.argv)
        self._log_fn = log or (lambda line: print(line, flush=True))

        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = resolve_device(config.device)
        self.task = task_for(
            config.arch,
            pack_tokens=config.pack_tokens,
            beam_size=config.test_beam_size,
            direction=config.direction,
            languages=tuple(config.lm_languages.split(",")),
        )
        _preload_finalisation_modules(config, self.task)

        # The run trains on a snapshot of the tokenizer and records the data's digests up front,
        # so regenerating the corpus mid-run cannot pair these weights with another vocabulary.
        source_tokenizer = (
            Path(tokenizer_path) if tokenizer_path else _default_tokenizer_path(config)
        )
        self.tokenizer_path = self.out / "spm.model"
        if source_tokenizer.is_file() and not (config.resume and self.tokenizer_path.is_file()):
            _atomic(self.tokenizer_path, lambda tmp: shutil.copyfile(source_tokenizer, tmp))
        elif not self.tokenizer_path.is_file():
            self.tokenizer_path = source_tokenizer
        self.tokenizer = (
            tokenizer if tokenizer is not None else _load_tokenizer(self.tokenizer_path)
        )
        self.data_sha256: dict[str, str] = {}
        if train_pairs is None:
            data_dir = Path(config.data_dir) if config.data_dir else DEFAULT_DATA_DIR
            for split in ("train", "valid", "test"):
                if (data_dir / f"{split}.tsv.gz").is_file():
                    self.data_sha256[split] = sha256_file(data_dir / f"{split}.tsv.gz")
        train_pairs = train_pairs if train_pairs is not None else _load_split("train", config)
        valid_pairs = valid_pairs if valid_pairs is not None else _load_split("valid", config)
        if config.valid_limit:
            valid_pairs = list(valid_pairs)[: config.valid_limit]
        self._test_pairs = test_pairs

        overrides = {} if config.dropout is None else {"dropout": config.dropout}
        self.model_config = make_config(
            config.arch, config.preset, self.tokenizer.vocab_size, **overrides
        )
        mc = self.model_config
        self.model = build_model(config.arch, self.model_config)
        self.warm_start = None
        if config.init_from and not (config.resume and (self.out / "last.json").exists()):
            from service.training.warmstart import warm_start

            self.warm_start = warm_start(
                self.model,
                config.arch,
                self.model_config,
                self.tokenizer,
                config.init_from,
                config.store_root or DEFAULT_STORE,
            )
            self.log(f"warm start: {self.warm_start.as_dict()}", event="warm_start")
        self.model.to(self.device)
        task = self.task
        self.train_examples = task.examples(train_pairs, self.tokenizer, mc, training=True)
        valid_examples = task.examples(valid_pairs, self.tokenizer, mc, training=False)
        self.sampler = task.sampler(self.train_examples, config.max_tokens, mc, config.seed)
        self.valid_sampler = task.sampler(valid_examples, config.max_tokens, mc, None)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.lr,
            betas=(0.9, 0.98),
            eps=1e-9,
            weight_decay=config.weight_decay,
        )

        self.step = 0
        self.epoch = 0  # the epoch in progress, 0-based
        self.batch_in_epoch = 0  # batches of `epoch` already trained on
        self.best_valid_loss = math.inf
        self.best_step = 0
        self.bad_evals = 0
        self.elapsed_before = 0.0  # training seconds spent by earlier (resumed) processes
        self.history: list[dict[str, Any]] = []
        self.tokens_seen = 0
        if config.resume and (self.out / "last.json").exists():
            self._resume()

    # Logging.

    def log(self, message: str, **event: Any) -> None:
        self._log_fn(f"[train] {message}")
        if event:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"time": time.time(), **event}, default=str) + "\n")

    # Checkpoints.

    def _metadata(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_valid_loss": self.best_valid_loss
            if math.isfinite(self.best_valid_loss)
            else None,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "elapsed_s": self.elapsed_before + self._elapsed(),
            "tokens_seen": self.tokens_seen,
            "history": self.history,
            "arch": self.config.arch,
            "train_config": asdict(self.config),
            "model_config": config_to_dict(self.model_config),
            "tokenizer_path": str(self.tokenizer_path),
        }

    def save_checkpoint(self) -> None:
        """The resume point: weights, optimizer moments + RNG, then the JSON that names them."""
        _save_tensors(self.out / "last.safetensors", self.model.state_dict())
        _save_tensors(
            self.out / "last.optim.safetensors", optimizer_tensors(self.optimizer, self.model)
        )
        _write_json(self.out / "last.json", self._metadata())

    def _save_best(self) -> None:
        _save_tensors(self.out / "best.safetensors", self.model.state_dict())
        _write_json(self.out / "best.json", self._metadata())

    def _resume(self) -> None:
        meta = json.loads((self.out / "last.json").read_text(encoding="utf-8"))
        if meta.get("arch") != self.config.arch:
            raise ValueError(f"{self.out} holds a {meta.get('arch')} run, not {self.config.arch}")
        if meta.get("model_config") != config_to_dict(self.model_config):
            raise ValueError(f"{self.out}: the checkpoint's model config differs from this run's")
        load_weights(self.out / "last.safetensors", self.model)
        load_optimizer_tensors(
            self.optimizer,
            self.model,
            safetensors.torch.load_file(str(self.out / "last.optim.safetensors")),
        )
        self.step = meta["step"]
        self.epoch = meta["epoch"]
        self.batch_in_epoch = meta["batch_in_epoch"]
        best = meta.get("best_valid_loss")
        self.best_valid_loss = math.inf if best is None else best
        self.best_step = meta.get("best_step", 0)
        self.bad_evals = meta.get("bad_evals", 0)
        self.elapsed_before = meta.get("elapsed_s", 0.0)
        self.tokens_seen = meta.get("tokens_seen", 0)
        self.history = meta.get("history", [])
        self.log(
            f"resumed from {self.out / 'last.json'}: step {self.step}, epoch {self.epoch + 1} "
            f"batch {self.batch_in_epoch}, best valid loss {self.best_valid_loss:.4f}",
            event="resume",
            step=self.step,
        )

    # Steps.

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started if hasattr(self, "_started") else 0.0

    def train_step(self, batch: Batch | LMBatch) -> tuple[float, int]:
        """One optimizer update; returns (smoothed loss per target token, target tokens)."""
        self.model.train()
        batch = batch.to(self.device)
        lr = inverse_sqrt_lr(self.step + 1, self.config.lr, self.config.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            logits = self.task.logits(self.model, batch)
        loss_sum, _, tokens = label_smoothed_loss(
            logits.float(), batch.labels, batch.pad_id, self.config.label_smoothing
        )
        loss = loss_sum / max(tokens, 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.step += 1
        return loss.item(), tokens

    def _autocast(self):
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16
        )

    @torch.inference_mode()
    def token_losses(self, sampler) -> tuple[float, float, int]:
        """(NLL sum, smoothed loss sum, target tokens) of the model in eval mode over `sampler`."""
        self.model.eval()
        nll_total, smoothed_total, tokens_total = 0.0, 0.0, 0
        for batch in sampler.batches():
            batch = batch.to(self.device)
            logits = self.task.logits(self.model, batch)
            smoothed, nll, tokens = label_smoothed_loss(
                logits, batch.labels, batch.pad_id, self.config.label_smoothing
            )
            nll_total += float(nll)
            smoothed_total += float(smoothed)
            tokens_total += tokens
        return nll_total, smoothed_total, tokens_total

    def validate(self) -> dict[str, float]:
        """Token-averaged NLL (no smoothing) and perplexity over the validation examples."""
        nll_total, smoothed_total, tokens_total = self.token_losses(self.valid_sampler)
        nll = nll_total / max(tokens_total, 1)
        return {
            "valid_loss": nll,
            "valid_ppl": math.exp(min(nll, 50.0)),
            "valid_smoothed_loss": smoothed_total / max(tokens_total, 1),
            "valid_tokens": tokens_total,
        }

    def _evaluate_and_checkpoint(self) -> bool:
        """Validate, keep the best, write the resume point; True when patience is used up."""
        started = time.perf_counter()
        result = self.validate()
        improved = result["valid_loss"] < self.best_valid_loss - 1e-6
        if improved:
            self.best_valid_loss = result["valid_loss"]
            self.best_step = self.step
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        entry = {
            "step": self.step,
            "epoch": self.epoch + self.batch_in_epoch / max(self._epoch_batches, 1),
            "elapsed_s": round(self.elapsed_before + self._elapsed(), 1),
            **{k: round(v, 5) if isinstance(v, float) else v for k, v in result.items()},
            "best": improved,
        }
        self.history.append(entry)
        if improved:
            self._save_best()
        self.save_checkpoint()
        self.log(
            f"step {self.step} epoch {entry['epoch']:.2f}: valid loss {result['valid_loss']:.4f} "
            f"ppl {result['valid_ppl']:.2f}{' (best)' if improved else ''} "
            f"[{time.perf_counter() - started:.0f}s]",
            event="valid",
            **entry,
        )
        return self.config.patience > 0 and self.bad_evals >= self.config.patience

    def fit(self) -> str:
        """Train until a limit; returns why it stopped. Checkpoints stay in `out`."""
        self._started = time.perf_counter()
        stop = _StopFlag()
        stop.install()
        self._epoch_batches = len(self.sampler.plan(self.epoch))
        self._log_start()
        window = _LogWindow()
        progress = None
        reason = None
        last_eval_step = self.step
        try:
            progress = self._progress_bar()
            for indices in self._remaining_batches():
                reason = self._limit_reached(stop)
                if reason is not None:
                    break
                self._train_on(indices, window, progress)
                if self.step % self.config.log_every == 0:
                    self._log_progress(window, progress)
                    window = _LogWindow()
                if self.step % self.config.eval_every == 0:
                    last_eval_step = self.step
                    if self._evaluate_and_checkpoint():
                        reason = "early_stopping"
                        break
            reason = reason or "max_epochs"  # every batch of every epoch was trained on
        finally:
            stop.restore()
            if progress is not None:
                progress.close()
        if self.step != last_eval_step or not self.history:
            self._evaluate_and_checkpoint()
        else:
            self.save_checkpoint()
        self.log(
            f"stopped after step {self.step}: {reason}", event="stop", step=self.step, reason=reason
        )
        return reason

    def _log_start(self) -> None:
        c = self.config
        self.log(
            f"{c.arch}/{c.preset}: {count_parameters(self.model):,} parameters on {self.device}, "
            f"{len(self.train_examples):,} train examples, {self._epoch_batches} batches/epoch "
            f"of <= {c.max_tokens} padded tokens, {self.sampler.target_tokens:,} target "
            f"tokens/epoch",
            event="start",
            step=self.step,
            parameters=count_parameters(self.model),
        )

    def _progress_bar(self):
        """A tqdm bar on a terminal; None elsewhere, and log lines stand in for it."""
        if not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.max_steps or None, initial=self.step, unit="step")

    def _remaining_batches(self) -> Iterator[list[int]]:
        """The batches still to train on, epoch after epoch, from where the run stands.

        `epoch` advances only once every batch of it was asked for, so a run stopped after an
        epoch's last batch resumes at that epoch's end, and the next one starts afresh.
        """
        while self.epoch < self.config.max_epochs:
            plan = self.sampler.plan(self.epoch)
            self._epoch_batches = len(plan)
            yield from plan[self.batch_in_epoch :]
            self.epoch += 1
            self.batch_in_epoch = 0

    def _limit_reached(self, stop: _StopFlag) -> str | None:
        """Why to stop before the next step, or None. Checked before a step, so resuming a
        finished run only finalises."""
        c = self.config
        if c.max_steps and self.step >= c.max_steps:
            return "max_steps"
        if c.max_minutes > 0 and self._elapsed() >= c.max_minutes * 60:
            return "max_minutes"
        return stop.reason

    def _train_on(self, indices: list[int], window: _LogWindow, progress) -> None:
        loss, tokens = self.train_step(self.sampler.collate(indices))
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {self.step}")
        self.batch_in_epoch += 1
        self.tokens_seen += tokens
        window.add(loss, tokens)
        if progress is not None:
            progress.update(1)

    def _log_progress(self, window: _LogWindow, progress) -> None:
        """Loss and throughput since the last report: on the bar, or as a log line."""
        rate = window.tokens / max(time.perf_counter() - window.started, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        mean = window.mean_loss
        if progress is not None:
            progress.set_postfix(loss=f"{mean:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.2e}")
            return
        epoch_pos = self.epoch + self.batch_in_epoch / self._epoch_batches
        self.log(
            f"step {self.step} epoch {epoch_pos:.2f} loss {mean:.4f} lr {lr:.2e} {rate:.0f} "
            f"tgt tok/s elapsed {(self.elapsed_before + self._elapsed()) / 60:.1f} min",
            event="train",
            step=self.step,
            loss=mean,
            lr=lr,
            tokens_per_s=rate,
        )

    # Finalisation: best weights -> test metrics -> model store.

    def load_best(self) -> None:
        if (self.out / "best.safetensors").exists():
            load_weights(self.out / "best.safetensors", self.model)

    def evaluate_test(self) -> dict[str, Any]:
        c = self.config
        pairs = self._test_pairs if self._test_pairs is not None else _load_split(c.test_split, c)
        if c.test_limit:
            pairs = list(pairs)[: c.test_limit]
        metrics = self.task.test_metrics(self, pairs)
        metrics["split"] = c.test_split
        return metrics

    def training_facts(self, reason: str, wall_seconds: float) -> dict[str, Any]:
        c = self.config
        facts = {
            "command": self.command,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else f"cpu ({torch.get_num_threads()} threads)",
            "torch": torch.__version__,
            "wall_time_s": round(wall_seconds, 1),
            "train_time_s": round(self.elapsed_before + self._elapsed(), 1),
            "steps": self.step,
            "epochs": round(self.epoch + self.batch_in_epoch / max(self._epoch_batches, 1), 3),
            "target_tokens_seen": self.tokens_seen,
            "best_step": self.best_step,
            "best_valid_loss": round(self.best_valid_loss, 5)
            if math.isfinite(self.best_valid_loss)
            else None,
            "stopped_because": reason,
            "train_examples": len(self.train_examples),
            **self.task.facts(),
            **({"warm_start": self.warm_start.as_dict()} if self.warm_start else {}),
            "config": {
                k: v
                for k, v in asdict(c).items()
                if k not in ("resume", "save", "store_root", "out")
            },
        }
        if self.data_sha256:
            facts["data_sha256"] = dict(self.data_sha256)
        if self.tokenizer_path.is_file():
            facts["tokenizer_sha256"] = sha256_file(self.tokenizer_path)
        return facts

    def run(self) -> TrainResult:
        """fit -> best weights -> test metrics -> store. Never loses the run directory."""
        started = time.perf_counter()
        reason = self.fit()
        self.load_best()
        metrics: dict[str, Any] = {}
        if self.config.evaluate_test:
            try:
                split = self.config.test_split
                self.log(f"evaluating the best checkpoint (step {self.best_step}) on {split}")
                metrics = self.evaluate_test()
                self.log(
                    f"{split}: {self.task.summary(metrics)}",
                    event="test",
                    **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
                )
            except Exception:  # the weights matter more than the numbers: save anyway
                self.log(
                    "test evaluation failed; saving without metrics:\n" + traceback.format_exc()
                )
                metrics = {"error": "evaluation failed; see the run log"}
        wall = time.perf_counter() - started
        facts = self.training_facts(reason, wall)
        _write_json(self.out / "result.json", {"training": facts, "metrics": metrics})
        manifest = None
        if self.config.save:
            manifest = self.save_to_store(metrics, facts)
        return TrainResult(
            out=self.out,
            steps=self.step,
            epochs_completed=self.epoch,
            best_step=self.best_step,
            best_valid_loss=self.best_valid_loss,
            wall_seconds=wall,
            stopped_because=reason,
            history=self.history,
            metrics=metrics,
            manifest=manifest,
        )

    def save_to_store(self, metrics: dict[str, Any], facts: dict[str, Any]):
        from service.store import ModelStore
        from service.store.errors import VersionExists

        c = self.config
        store = ModelStore(c.store_root or DEFAULT_STORE)
        model_id = c.model_id or f"{c.direction}/{c.arch}"
        data_sha = facts.get("data_sha256", {}).get("train")
        model = self.model.to("cpu").float()
        kwargs = dict(
            model_id=model_id,
            arch=c.arch,
            metrics=metrics,
            training=facts,
            data_sha256=data_sha,
        )
        try:
            manifest = store.save(model, self.tokenizer_path, version=c.version, **kwargs)
        except VersionExists as error:
            self.log(f"{error}; saving as the next free version instead")
            manifest = store.save(model, self.tokenizer_path, version=None, **kwargs)
        self.log(
            f"saved {manifest.id} version {manifest.version} to {store.root}",
            event="saved",
            model_id=manifest.id,
            version=manifest.version,
        )
        _write_json(
            self.out / "result.json",
            {
                "training": facts,
                "metrics": metrics,
                "saved": {"id": manifest.id, "version": manifest.version, "store": str(store.root)},
            },
        )
        return manifest


def train(config: TrainConfig, **kwargs) -> TrainResult:
    return Trainer(config, **kwargs).run()


__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "inverse_sqrt_lr",
    "label_smoothed_loss",
    "train",
]
