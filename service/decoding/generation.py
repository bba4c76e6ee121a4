"""Continuous-batching text generation: the scheduler and model runner for the language model.

`GenerationEngine.step()` advances every running sequence by one token in a single batched
model call, admits waiting requests by prefilling them and merging their caches into the
running batch, and retires finished or cancelled sequences at once. Requests that arrive at
different times therefore share decode steps, and a cancelled request stops costing compute
at the next step. The engine is synchronous and single-threaded; the serving layer drives it.

Per step, the work that grows with the batch is tensor work: one model call, one batched
choice of every row's token (`sampling.SamplingRows`, each row with its own settings and
seeded draws), and a detokenizer per row that decodes only a short window of ids
(`detokenize.IncrementalDetokenizer`), so a stream's cost per token does not grow with its
length.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from service.decoding.detokenize import IncrementalDetokenizer
from service.decoding.sampling import SamplingRows, draw_uniforms
from service.models.lm import LanguageModel, LMState
from service.text.protocol import TextTokenizer


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass
class GenerationOutput:
    """What one step produced for one request."""

    request_id: str
    text: str  # new text since the previous output
    token_ids: list[int]
    finished: bool
    finish_reason: str | None  # "stop" (EOS or a stop string), "length", "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    detokenizer: IncrementalDetokenizer
    sampling: SamplingRows  # this request's row, until it joins the running batch
    generated: list[int] = field(default_factory=list)
    pending: str = ""  # text decoded but not streamed yet: it may begin a stop string
    arrived: float = field(default_factory=time.perf_counter)


class GenerationEngine:
    def __init__(self, model: LanguageModel, tokenizer: TextTokenizer, max_batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self.state: LMState | None = None
        self.sampling: SamplingRows | None = None  # rows in the order of `running`
        self.tokens: torch.Tensor | None = None  # (B,) each running row's last token
        self.batch_sizes: list[int] = []  # rows per model step, for metrics

    @property
    def max_prompt_tokens(self) -> int:
        return self.model.config.max_positions - 1

    def encode_prompt(self, prompt: str) -> list[int]:
        """EOS first: it separates documents in training, so it is how a text begins."""
        return [self.tokenizer.eos_id] + self.tokenizer.encode(prompt)

    def add(self, request_id: str, prompt: str, params: SamplingParams) -> int:
        """Queue a request; returns its prompt length in tokens."""
        prompt_ids = self.encode_prompt(prompt)
        if len(prompt_ids) + params.max_new_tokens > self.model.config.max_positions:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) plus max_new_tokens "
                f"({params.max_new_tokens}) exceeds the model's {self.model.config.max_positions}"
            )
        uniforms = (
            draw_uniforms(params.max_new_tokens, params.seed)
            if params.temperature > 0
            else torch.zeros(0, dtype=torch.float64)
        )
        sampling = SamplingRows.single(
            params.temperature, params.top_k, params.top_p, uniforms, self.device
        )
        detokenizer = IncrementalDetokenizer.after(self.tokenizer, prompt_ids)
        self.waiting.append(_Sequence(request_id, prompt_ids, params, detokenizer, sampling))
        return len(prompt_ids)

    def cancel(self, request_id: str) -> bool:
        """Drop a request wherever it is; True if it was still there."""
        for queue in (self.waiting, self.running):
            for sequence in list(queue):
                if sequence.request_id == request_id:
                    if queue is self.running:
                        self._retire([self.running.index(sequence)])
                    else:
                        self.waiting.remove(sequence)
                    return True
        return False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @torch.inference_mode()
    def step(self) -> list[GenerationOutput]:
        """One decode step for the running batch plus prefill for newly admitted requests."""
        logits = []
        if self.running:
            logits.append(self.model.step(self.tokens, self.state))
        admitted = []
        while self.waiting and len(self.running) + len(admitted) < self.max_batch_size:
            admitted.append(self.waiting.popleft())
        if admitted:
            width = max(len(s.prompt_ids) + s.params.max_new_tokens for s in admitted)
            prefill_logits, prefill_state = self.model.prefill(
                [s.prompt_ids for s in admitted], width
            )
            logits.append(prefill_logits)
            self.state = (
                prefill_state
                if self.state is None
                else LanguageModel.merge(self.state, prefill_state)
            )
            rows = [s.sampling for s in admitted]
            self.sampling = SamplingRows.cat(
                rows if self.sampling is None else [self.sampling, *rows]
            )
            self.running.extend(admitted)
        if not logits:
            return []
        self.batch_sizes.append(len(self.running))
        log_probs = torch.cat(logits).float().log_softmax(-1)
        log_probs[:, self.model.config.pad_id] = float("-inf")
        self.tokens = self.sampling.choose(log_probs)
        outputs = [
            self._advance(sequence, token)
            for sequence, token in zip(self.running, self.tokens.tolist(), strict=True)
        ]
        self._retire([row for row, output in enumerate(outputs) if output.finished])
        return outputs

    def _advance(self, sequence: _Sequence, token: int) -> GenerationOutput:
        """Record `token` for `sequence`; return the text that may be streamed now."""
        params = sequence.params
        finish_reason = None
        if token == self.tokenizer.eos_id:
            finish_reason = "stop"
        else:
            sequence.generated.append(token)
            if len(sequence.generated) >= params.max_new_tokens:
                finish_reason = "length"
        # Streamed text never holds the start of a stop string (`_held_back`), so a stop can
        # only occur in the pending text, and only where the new text ends it.
        searched = len(sequence.pending)
        text = sequence.pending + sequence.detokenizer.push(
            None if finish_reason == "stop" else token, final=finish_reason is not None
        )
        for stop in params.stop:
            cut = text.find(stop, max(searched - len(stop) + 1, 0))
            if cut >= 0:
                text, finish_reason = text[:cut], "stop"
        end = len(text) if finish_reason else len(text) - _held_back(text, params.stop)
        delta, sequence.pending = text[:end], text[end:]
        return GenerationOutput(
            request_id=sequence.request_id,
            text=delta,
            token_ids=[] if token == self.tokenizer.eos_id else [token],
            finished=finish_reason is not None,
            finish_reason=finish_reason,
            prompt_tokens=len(sequence.prompt_ids),
            completion_tokens=len(sequence.generated),
        )

    def _retire(self, rows: list[int]):
        if not rows:
            return
        gone = set(rows)
        keep = [i for i in range(len(self.running)) if i not in gone]
        self.running = [self.running[i] for i in keep]
        if keep:
            index = torch.tensor(keep, device=self.device)
            self.state = self.model.reorder_state(self.state, index)
            self.sampling = self.sampling.select(index)
            self.tokens = self.tokens[index]
        else:
            self.state = self.sampling = self.tokens = None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of `text` that could be the start of a stop string.

    They are not streamed until the next tokens show whether the stop string completes, so a
    client never receives text that the final answer leaves out.
    """
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
