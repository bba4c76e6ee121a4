"""Continuous-batching text generation: the scheduler and model runner for the language model.

`GenerationEngine.step()` advances every running sequence by one token in a single batched
model call, admits waiting requests by prefilling them and merging their caches into the
running batch, and retires finished or cancelled sequences at once. Requests that arrive at
different times therefore share decode steps, and a cancelled request stops costing compute
at the next step. The engine is synchronous and single-threaded; the serving layer drives it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from service.decoding.search import sample_next
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
    generator: torch.Generator | None
    prompt_text: str = ""  # the prompt as the tokenizer decodes it
    generated: list[int] = field(default_factory=list)
    emitted_text: str = ""
    arrived: float = field(default_factory=time.perf_counter)


class GenerationEngine:
    def __init__(self, model: LanguageModel, tokenizer: TextTokenizer, max_batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self.state: LMState | None = None
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
        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        prompt_text = self.tokenizer.decode(prompt_ids)
        self.waiting.append(_Sequence(request_id, prompt_ids, params, generator, prompt_text))
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
            last = torch.tensor([s.generated[-1] for s in self.running], device=self.device)
            logits.append(self.model.step(last, self.state))
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
            self.running.extend(admitted)
        if not logits:
            return []
        self.batch_sizes.append(len(self.running))
        log_probs = torch.cat(logits).float().log_softmax(-1)
        log_probs[:, self.model.config.pad_id] = float("-inf")
        outputs, finished_rows = [], []
        for row, sequence in enumerate(self.running):
            token = self._choose(log_probs[row : row + 1], sequence)
            output = self._advance(sequence, token)
            outputs.append(output)
            if output.finished:
                finished_rows.append(row)
        self._retire(finished_rows)
        return outputs

    def _choose(self, log_probs: torch.Tensor, sequence: _Sequence) -> int:
        params = sequence.params
        if params.temperature == 0:
            return int(log_probs.argmax(-1))
        return int(
            sample_next(
                log_probs, params.temperature, params.top_k, params.top_p, sequence.generator
            )
        )

    def _advance(self, sequence: _Sequence, token: int) -> GenerationOutput:
        finish_reason = None
        if token == self.tokenizer.eos_id:
            finish_reason = "stop"
        else:
            sequence.generated.append(token)
        text = self._completion(sequence)
        for stop in sequence.params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish_reason = text[:cut], "stop"
        if finish_reason is None and len(sequence.generated) >= sequence.params.max_new_tokens:
            finish_reason = "length"
        delta = ""
        if text.startswith(sequence.emitted_text):
            end = len(text) if finish_reason else len(text) - _held_back(text, sequence.params.stop)
            delta = text[len(sequence.emitted_text) : max(end, len(sequence.emitted_text))]
            sequence.emitted_text += delta
        return GenerationOutput(
            request_id=sequence.request_id,
            text=delta,
            token_ids=[] if token == self.tokenizer.eos_id else [token],
            finished=finish_reason is not None,
            finish_reason=finish_reason,
            prompt_tokens=len(sequence.prompt_ids),
            completion_tokens=len(sequence.generated),
        )

    def _completion(self, sequence: _Sequence) -> str:
        """The text the generated tokens add after the prompt.

        Decoded together with the prompt: SentencePiece drops the space a word-initial piece
        ("▁God") carries at the start of a text, so decoding the new tokens alone would glue
        the first word to the prompt ("In the beginningGod").
        """
        joined = self.tokenizer.decode(sequence.prompt_ids + sequence.generated)
        if joined.startswith(sequence.prompt_text):
            return joined[len(sequence.prompt_text) :]
        return self.tokenizer.decode(sequence.generated)

    def _retire(self, rows: list[int]):
        if not rows:
            return
        keep = [i for i in range(len(self.running)) if i not in set(rows)]
        self.running = [self.running[i] for i in keep]
        if keep:
            self.state = self.model.reorder_state(
                self.state, torch.tensor(keep, device=self.device)
            )
        else:
            self.state = None


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
