"""Iteration-level (continuous) batching for the translators: one engine loop, one step at a time.

`TranslationEngine.step()` advances every running sentence by one decoder step in a single
batched model call. A sentence that arrives is encoded with the other newcomers of that step
(the encoder runs for them alone) and its rows join the running batch at once; a sentence that
finishes leaves it at once and comes back from that very `step()`. A short sentence therefore
never waits for a long one that happened to be in its batch, and a batch does not empty as its
sentences end: newcomers take their places.

Rows of one batch are at different positions and attend over sources of different lengths, so
the model runs a ragged state (`protocol.ContinuousDecoder`: per-row positions, per-row cross
attention keys and values, sources padded and masked). Each sentence owns consecutive rows: one
per beam hypothesis (beam search; sentences with different beam sizes side by side), one per
sample (sampling with n-best), or one (greedy). The search itself is the static path's:
`search.masked_log_probs` with per-row flags, `search.beam_step` for each group of sentences
with the same beam size and width, and `search.sentence_sampling` rows for greedy and sampling,
so a sentence gets the hypotheses that `search.generate` gives it alone, whatever it shares
steps with (tests/decoding/test_continuous.py).

Rows that leave (finished sentences, beams reordered) are not copied out of the model state at
once: the engine keeps which state row each of its rows is (`_state_rows`) and copies when it
has to: before a step that needs rows reordered (beam search), once the dead rows are a
quarter of the state or have been stepped for as much as a whole step costs (`_sync_state`),
or with a join that comes after that (`merge_states` with an index: one copy for both). Until
then dead rows are fed a pad and their outputs dropped, and newcomers are appended after them:
the model writes them into room its buffers keep (`attention.gather_cat`), so a join copies
the newcomers' rows only, not the batch's.

Newcomers are admitted in groups while the batch is at least half full (`_waits_for_company`:
an encoder call costs about a quarter of a 32-row step whatever it encodes), encoded in groups
of similar length (`encode_groups`), at most `ADMIT_TOKENS` padded source tokens per step, and
a sentence that the token budget keeps out is passed by shorter ones for `PASS_STEPS` steps.

A failure stays with the sentence that caused it, as the static path's retry one by one does
(`service/serving/batcher.py`): newcomers whose encoding fails are encoded again one by one and
only those that fail alone come back failed (`TranslationOutput.error`); a model step that
fails is undone (`checkpoint_state`) and bisected over the running sentences, each half stepped
on a copy of its rows, until the sentences that fail alone are found; they leave failed and the
step runs again for the others, who get what they would have got without them. A step that
fails although each half steps alone (the whole batch is the problem), or a failure in the
search itself, still raises: the caller then fails what the engine held.

The engine is synchronous and single-threaded; the serving layer drives it
(`service/serving/translation.py`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from service.decoding.batching import pad_batch
from service.decoding.protocol import ContinuousDecoder
from service.decoding.sampling import SamplingRows
from service.decoding.search import (
    BeamSentence,
    DecodeOptions,
    Hypothesis,
    _Finished,
    beam_step,
    masked_log_probs,
    sentence_sampling,
)

LAZY_WASTE = 1.0  # dead rows may be stepped until they add up to this many steps of the state
LAZY_DEAD = 4  # and while they are fewer than 1 / LAZY_DEAD of its rows
JOIN_STEPS = 2  # a newcomer to a busy batch waits at most this many steps for company
JOIN_SENTENCES = 4  # or until this many wait (`_waits_for_company`)
ADMIT_TOKENS = 1024  # padded source tokens encoded in one step (more wait for the next)
PASS_STEPS = 8  # steps after which a sentence over the token budget is passed no more


ENCODE_CALL_TOKENS = 128  # an encoder call's own cost, in padded source tokens (see below)


def encode_groups(sizes: list[tuple[int, int]]) -> list[list[int]]:
    """Split sources sorted by length, (rows, length) each, into consecutive groups, one
    encoder call each, so that the calls' padded tokens (rows x longest) plus
    `ENCODE_CALL_TOKENS` per call are fewest: a short newcomer is not padded to a long one's
    length when a call of its own costs less (measured on 2 shared cores, 1 thread: a call
    costs about 4.5 ms whatever it encodes, and about 0.04 ms per padded token).
    """
    count = len(sizes)
    best = [0.0] + [float("inf")] * count  # best[j]: the cost of the first j sources
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        rows = 0
        for start in range(end - 1, -1, -1):
            rows += sizes[start][0]
            cost = best[start] + ENCODE_CALL_TOKENS + rows * sizes[end - 1][1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], count
    while end:
        groups.append(list(range(cut[end], end)))
        end = cut[end]
    return groups[::-1]


@dataclass(frozen=True)
class TranslationOutput:
    """A finished sentence: its n-best list (best first) and what it waited for and cost."""

    request_id: Hashable
    hypotheses: list[Hypothesis]
    source_tokens: int
    steps: int  # decoder steps it took part in
    queue_s: float  # added -> encoded
    decode_s: float  # encoded -> finished
    mean_batch: float  # sentences per step, averaged over its steps
    error: str | None = None  # it failed (no hypotheses): its encoding or a step on its rows


@dataclass
class _Sentence:
    request_id: Hashable
    source: list[int]
    options: DecodeOptions
    beam: BeamSentence | None  # beam search; None: greedy or sampling, one row per sample
    added: float = field(default_factory=time.perf_counter)
    added_step: int = 0  # the engine's step count when it was added
    admitted: float = 0.0
    width: int = 0  # rows it holds in the running batch
    slots: list[int] = field(default_factory=list)  # sample of each row it holds, in order
    scores: list[float] = field(default_factory=list)  # per sample: sum of log-probs
    samples: list[Hypothesis | None] = field(default_factory=list)
    steps: int = 0
    batch_total: int = 0  # sum of the running sentences over its steps

    @property
    def rows(self) -> int:
        """Rows it holds once its search is under way."""
        if self.beam is not None:
            return self.options.beam_size
        return self.options.n_best if self.options.sampling else 1

    def hypotheses(self) -> list[Hypothesis]:
        if self.beam is not None:
            return self.beam.finished.items[: self.options.n_best]
        return sorted(self.samples, key=lambda h: -h.score)  # type: ignore[arg-type, union-attr]


class TranslationEngine:
    """Continuous batching of source-id sentences over one `ContinuousDecoder` model.

    max_batch_size bounds the sentences running together; max_batch_tokens the padded source
    tokens of their rows (rows x longest source), as the static path's `Translator` budget
    does for one call. A sentence over the budget alone still runs, alone.
    """

    def __init__(
        self,
        model: ContinuousDecoder,
        silent_ids: Sequence[int] = (),
        max_batch_size: int = 32,
        max_batch_tokens: int = 8192,
    ):
        self.model = model
        self.config = model.config
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = next(model.parameters()).device
        self.silent = (
            torch.tensor(sorted(set(silent_ids)), dtype=torch.long, device=self.device)
            if silent_ids
            else None
        )
        self.waiting: deque[_Sentence] = deque()
        self.running: list[_Sentence] = []
        self.batch_sizes: list[int] = []  # sentences per step, for metrics; the caller clears it
        self.steps = 0  # steps run (admission counts waits in steps)
        self._clear()

    def _clear(self) -> None:
        """No rows: every per-row tensor below has one entry per row of the model state."""
        self.state = None
        self._state_rows: Tensor | None = None  # state row of each row; None: the same
        self._state_size = 0  # rows of the model state, dead ones included
        self._lazy_steps = 0  # steps run since rows were left dead in the state
        self._lazy_waste = 0  # dead rows stepped since then, summed over the steps
        self._lazy_longest = 0  # longest row when rows were left dead
        self.tokens = self._rows(torch.long)  # the token each row feeds next
        self.generated = self._rows(torch.long)  # tokens each row has generated
        self.history = torch.zeros((0, 16), dtype=torch.long, device=self.device)  # (R, T)
        self.beam_scores = self._rows(torch.float32)
        self.beam_rows = self._rows(torch.bool)
        self.wordless = self._rows(torch.bool)  # only silent tokens so far (search.py)
        self.min_length = self._rows(torch.long)
        self.max_length = self._rows(torch.long)
        self.attention: Tensor | None = None  # (R, T, S) once a sentence asks for alignment
        self.sampling: SamplingRows | None = None  # the rows that are not beams, in order

    def _rows(self, dtype: torch.dtype) -> Tensor:
        return torch.zeros(0, dtype=dtype, device=self.device)

    def add(self, request_id: Hashable, source: list[int], options: DecodeOptions) -> None:
        """Queue one sentence (source ids, EOS included); it joins the batch at the next step."""
        if not source:
            raise ValueError("a source needs at least one token (its EOS)")
        if not options.use_cache:
            raise ValueError(
                "continuous batching decodes with the cache; use_cache=False is static"
            )
        beam = None
        if options.beam_size > 1:
            beam = BeamSentence(options, len(source), _Finished(options.beam_size))
        sentence = _Sentence(request_id, list(source), options, beam)
        sentence.added_step = self.steps
        self.waiting.append(sentence)

    def cancel(self, request_id: Hashable) -> bool:
        """Drop a sentence wherever it is; its rows leave the batch now. True if it was there."""
        for sentence in self.waiting:
            if sentence.request_id == request_id:
                self.waiting.remove(sentence)
                return True
        offset = 0
        for position, sentence in enumerate(self.running):
            if sentence.request_id == request_id:
                rows = torch.arange(self.tokens.shape[0], device=self.device)
                keep = (rows < offset) | (rows >= offset + sentence.width)
                del self.running[position]
                if self.running:
                    self._select(keep.nonzero().squeeze(1))
                else:
                    self._clear()
                return True
            offset += sentence.width
        return False

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])

    @torch.inference_mode()
    def step(self) -> list[TranslationOutput]:
        """Admit newcomers, run one decoder step for every row, retire finished sentences.

        Sentences that failed (their encoding, or a model step on their rows) come back with
        `error` set; the others are unaffected.
        """
        self.steps += 1
        outputs = self._admit()
        if not self.running:
            return outputs
        logits, attention = self._forward(outputs)
        if logits is None:  # every running sentence failed
            return outputs
        self.batch_sizes.append(len(self.running))
        log_probs = masked_log_probs(
            self.config,
            logits,
            self.generated < self.min_length,
            self.generated == self.max_length - 1,
            self.wordless if self.silent is not None else None,
            self.silent,
        )
        if attention is not None:
            self._record_attention(attention)

        offsets, offset = [], 0
        for sentence in self.running:
            offsets.append(offset)
            offset += sentence.width
            sentence.steps += 1
            sentence.batch_total += len(self.running)
            if sentence.beam is not None:
                sentence.beam.length += 1
        beams = self._beam_steps(log_probs, offsets)
        chosen = self._choose(log_probs)

        index, tokens, scores, running = [], [], [], []
        generated = self.generated.tolist()
        eos = self.config.eos_id
        for position, sentence in enumerate(self.running):
            first = offsets[position]
            if sentence.beam is not None:
                picked = beams.get(position)
                if picked is None:
                    outputs.append(self._output(sentence))
                    continue
                rows, words, beam_scores = picked
                index.append(rows)
                tokens.append(words)
                scores.append(beam_scores)
                sentence.width = rows.shape[0]
                running.append(sentence)
                continue
            kept, kept_tokens, slots = [], [], []
            for row in range(first, first + sentence.width):
                token, score = chosen[row]
                slot = sentence.slots[row - first]
                sentence.scores[slot] += score
                length = generated[row] + 1
                if token == eos or length >= sentence.options.max_length:
                    tokens_so_far = self.history[row, : length - 1].tolist()
                    sentence.samples[slot] = Hypothesis(
                        tokens_so_far + ([] if token == eos else [token]),
                        sentence.scores[slot],
                        self._alignment(sentence, row, length),
                        token == eos,
                    )
                else:
                    kept.append(row)
                    kept_tokens.append(token)
                    slots.append(slot)
            if not kept:
                outputs.append(self._output(sentence))
                continue
            index.append(torch.tensor(kept, device=self.device))
            tokens.append(torch.tensor(kept_tokens, device=self.device))
            scores.append(torch.zeros(len(kept), device=self.device))
            sentence.width, sentence.slots = len(kept), slots
            running.append(sentence)

        self.running = running
        if not running:
            self._clear()
            return outputs
        self._select(torch.cat(index))
        self._extend(torch.cat(tokens))
        self.beam_scores = torch.cat(scores)
        return outputs

    def _forward(self, failed: list[TranslationOutput]) -> tuple[Tensor | None, Tensor | None]:
        """The model step for every row; on a failure, the sentences that fail alone leave
        (into `failed`) and the others step again from the state before the failed step."""
        self._sync_state()
        saved = self.model.checkpoint_state(self.state)
        try:
            return self._model_step()
        except Exception:
            self.state = saved
            if self._state_rows is not None:  # dead rows stepped too: try without them
                self._sync_state(force=True)
                return self._forward(failed)
            culprits = self._failing(list(range(len(self.running))))
            if not culprits:
                raise  # no sentence fails alone: the batch as a whole does
            for position, message in culprits.items():
                failed.append(self._output(self.running[position], message))
            self._remove(set(culprits))
            self._sync_state(force=True)  # a failing row must not stay, even dead
            if not self.running:
                return None, None
            return self._forward(failed)

    def _model_step(self) -> tuple[Tensor, Tensor | None]:
        """The model step; with dead rows left in the state, they are fed a pad and their
        logits and alignments dropped."""
        if self._state_rows is None:
            return self.model.step(self.tokens, self.state)
        tokens = self.tokens.new_full((self._state_size,), self.config.pad_id)
        tokens[self._state_rows] = self.tokens
        logits, attention = self.model.step(tokens, self.state)
        if attention is not None:
            attention = attention.index_select(0, self._state_rows)
        return logits.index_select(0, self._state_rows), attention

    def _sync_state(self, force: bool = False) -> None:
        """Copy the rows `_state_rows` names out of the model state, unless they are the
        state's rows in order with a few dead ones between that cost less than a copy: fewer
        than an eighth of them, for at most 4 steps, and not near the model's positions."""
        rows = self._state_rows
        if rows is None:
            return
        if not force and self._stays_lazy():
            self._lazy_steps += 1
            self._lazy_waste += self._state_size - rows.shape[0]
            return
        self.state = self.model.reorder_state(self.state, rows)
        self._state_rows, self._state_size = None, rows.shape[0]
        self._lazy_steps = self._lazy_longest = self._lazy_waste = 0

    def _stays_lazy(self) -> bool:
        """Whether the dead rows may stay in the state for another step: fewer than a quarter
        of it, and the rows stepped in vain so far less than a full step's (a copy of the
        state costs about a step), the live rows in order and none of them twice (a beam
        reorder must copy), not near the model's positions (dead rows go on)."""
        rows = self._state_rows
        dead = self._state_size - rows.shape[0]
        return (
            LAZY_DEAD * dead < self._state_size
            and self._lazy_waste + dead <= LAZY_WASTE * self._state_size
            and self._lazy_longest + 8 < self.config.max_positions
            and bool((rows[1:] > rows[:-1]).all())
        )

    def _failing(self, members: list[int]) -> dict[int, str]:
        """Running sentences (positions) among `members` whose rows fail a step alone, each
        with its error; the halves step on copies of their rows, so nothing here changes."""
        offsets = self._offsets()
        rows = torch.cat(
            [
                torch.arange(offsets[m], offsets[m] + self.running[m].width, device=self.device)
                for m in members
            ]
        )
        try:
            self.model.step(self.tokens[rows], self.model.reorder_state(self.state, rows))
        except Exception as error:  # noqa: BLE001 - what the bisection looks for
            if len(members) == 1:
                return {members[0]: f"{type(error).__name__}: {error}"}
            half = len(members) // 2
            return self._failing(members[:half]) | self._failing(members[half:])
        return {}

    def _offsets(self) -> list[int]:
        """Each running sentence's first row."""
        offsets, offset = [], 0
        for sentence in self.running:
            offsets.append(offset)
            offset += sentence.width
        return offsets

    def _remove(self, positions: set[int]) -> None:
        """Running sentences at `positions` leave the batch, their rows with them."""
        keep = []
        for position, first in enumerate(self._offsets()):
            if position not in positions:
                keep.extend(range(first, first + self.running[position].width))
        self.running = [s for p, s in enumerate(self.running) if p not in positions]
        if self.running:
            self._select(torch.tensor(keep, dtype=torch.long, device=self.device))
        else:
            self._clear()

    def _beam_steps(self, log_probs: Tensor, offsets: list[int]) -> dict[int, tuple]:
        """`search.beam_step` per group of sentences of one beam size and width.

        Returns, per running sentence (its position) that goes on, its K rows to extend, their
        tokens and scores (K,) each.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for position, sentence in enumerate(self.running):
            if sentence.beam is not None:
                key = (sentence.options.beam_size, sentence.width)
                groups.setdefault(key, []).append(position)
        picked: dict[int, tuple] = {}
        for (beam_size, width), members in groups.items():
            first = torch.tensor([offsets[m] for m in members], device=self.device)
            rows = (first[:, None] + torch.arange(width, device=self.device)).flatten()
            going, scores, sources, words = beam_step(
                log_probs.index_select(0, rows),
                self.beam_scores.index_select(0, rows).view(len(members), width),
                first,
                [self.running[m].beam for m in members],
                beam_size,
                self.config.eos_id,
                self.history,
                self.attention,
            )
            for j, slot in enumerate(going):
                picked[members[slot]] = (sources[j], words[j], scores[j])
        return picked

    def _choose(self, log_probs: Tensor) -> dict[int, tuple[int, float]]:
        """Greedy and sampled rows: row -> (token, its log-probability)."""
        rows = (~self.beam_rows).nonzero().squeeze(1)
        if rows.numel() == 0:
            return {}
        candidates = log_probs.index_select(0, rows)
        tokens = self.sampling.choose(candidates)
        scores = candidates.gather(1, tokens[:, None]).squeeze(1)
        pairs = zip(tokens.tolist(), scores.tolist(), strict=True)
        return dict(zip(rows.tolist(), pairs, strict=True))

    def _alignment(self, sentence: _Sentence, row: int, length: int) -> Tensor | None:
        if not sentence.options.return_alignment or self.attention is None:
            return None
        return self.attention[row, :length, : len(sentence.source)].clone()

    def _output(self, sentence: _Sentence, error: str | None = None) -> TranslationOutput:
        now = time.perf_counter()
        admitted = sentence.admitted or now
        return TranslationOutput(
            request_id=sentence.request_id,
            hypotheses=[] if error is not None else sentence.hypotheses(),
            source_tokens=len(sentence.source),
            steps=sentence.steps,
            queue_s=admitted - sentence.added,
            decode_s=now - admitted,
            mean_batch=sentence.batch_total / max(sentence.steps, 1),
            error=error,
        )

    def _select(self, index: Tensor) -> None:
        """Keep rows `index` (R',) of every per-row tensor and of the model state."""
        rows = index if self._state_rows is None else self._state_rows.index_select(0, index)
        if rows.shape[0] == self._state_size and torch.equal(
            rows, torch.arange(self._state_size, device=self.device)
        ):
            self._state_rows = None
        else:
            self._lazy_longest = max(self._lazy_longest, int(self.generated.max()))
            self._state_rows = rows  # copied by `_sync_state` or the next join
        if self.sampling is not None:
            free = ~self.beam_rows
            position = free.long().cumsum(0) - 1  # each free row's place in `sampling`
            kept = index[free.index_select(0, index)]
            self.sampling = self.sampling.select(position.index_select(0, kept))
        for name in (
            "tokens",
            "generated",
            "history",
            "beam_scores",
            "beam_rows",
            "wordless",
            "min_length",
            "max_length",
        ):
            setattr(self, name, getattr(self, name).index_select(0, index))
        if self.attention is not None:
            self.attention = self.attention.index_select(0, index)

    def _extend(self, tokens: Tensor) -> None:
        """Each row takes the token it chose (R,): into its history, and fed at the next step."""
        width = int(self.generated.max()) + 1
        if width > self.history.shape[1]:
            grow = max(width, 2 * self.history.shape[1]) - self.history.shape[1]
            self.history = F.pad(self.history, (0, grow))
        rows = torch.arange(self.rows, device=self.device)
        self.history[rows, self.generated] = tokens
        self.generated = self.generated + 1
        if self.silent is not None:
            self.wordless &= torch.isin(tokens, self.silent)
        self.tokens = tokens

    def _record_attention(self, attention: Tensor) -> None:
        """Store each row's cross-attention (R, S) of this step at its own position."""
        rows, sources = attention.shape
        if self.attention is None:
            self.attention = attention.new_zeros((rows, self.history.shape[1], sources))
        width = int(self.generated.max()) + 1
        grow_t = max(0, width - self.attention.shape[1])
        if grow_t:
            grow_t = max(grow_t, self.attention.shape[1])
        if grow_t or sources > self.attention.shape[2]:
            self.attention = F.pad(
                self.attention, (0, sources - self.attention.shape[2], 0, grow_t)
            )
        self.attention[torch.arange(rows, device=self.device), self.generated] = attention

    def _admit(self) -> list[TranslationOutput]:
        """Encode the waiting sentences that fit, together, and join their rows to the batch.

        Returns the newcomers that failed: when encoding them together fails, each is encoded
        alone, those that fail alone fail, and the others are encoded together again."""
        if not self.waiting or self._waits_for_company():
            return []
        admitted: list[_Sentence] = []
        left: deque[_Sentence] = deque()
        rows = sum(s.rows for s in self.running)
        longest = max((len(s.source) for s in self.running), default=0)
        widest = 0  # the newcomers' longest source: they are encoded padded to it
        while self.waiting:
            candidate = self.waiting[0]
            if len(self.running) + len(admitted) >= self.max_batch_size:
                break
            padded = (len(admitted) + 1) * max(widest, len(candidate.source))
            if admitted and padded > ADMIT_TOKENS:
                break  # the rest are encoded at the next steps: no step stalls on a burst
            cost = (rows + candidate.rows) * max(longest, len(candidate.source))
            if cost > self.max_batch_tokens and (self.running or admitted):
                if self.steps - candidate.added_step > PASS_STEPS:
                    break  # it waited long enough: none passes it any more
                left.append(self.waiting.popleft())  # a shorter one behind it may fit
                continue
            admitted.append(self.waiting.popleft())
            rows += candidate.rows
            longest = max(longest, len(candidate.source))
            widest = max(widest, len(candidate.source))
        left.extend(self.waiting)
        self.waiting = left
        if not admitted:
            return []
        need_alignment = any(s.options.return_alignment for s in admitted)
        failed: list[TranslationOutput] = []
        admitted, fresh = self._encode_groups(admitted, need_alignment, failed)
        if not admitted:
            return failed
        now = time.perf_counter()
        beam_rows, min_length, max_length, wordless, sampling = [], [], [], [], []
        for sentence in admitted:
            sentence.admitted = now
            sentence.width = 1 if sentence.beam is not None else sentence.rows
            if sentence.beam is None:
                sentence.slots = list(range(sentence.width))
                sentence.scores = [0.0] * sentence.width
                sentence.samples = [None] * sentence.width
                sampling.append(sentence_sampling(sentence.options, sentence.width, self.device))
            options = sentence.options
            for _ in range(sentence.width):
                beam_rows.append(sentence.beam is not None)
                min_length.append(options.min_length)
                max_length.append(options.max_length)
                wordless.append(options.min_length >= 1)
        count = len(beam_rows)
        if self.state is None:
            self.state, self._state_size = fresh, count
        elif self._state_rows is not None and self._stays_lazy():
            # The newcomers go after the state's rows, dead ones included: the model appends
            # them into its buffers' room without copying the rows already there.
            self.state = self.model.merge_states(self.state, fresh)
            joined = torch.arange(self._state_size, self._state_size + count, device=self.device)
            self._state_rows = torch.cat([self._state_rows, joined])
            self._state_size += count
        else:
            self.state = self.model.merge_states(self.state, fresh, self._state_rows)
            self._state_size = self.rows + count
            self._state_rows, self._lazy_steps, self._lazy_longest = None, 0, 0
            self._lazy_waste = 0
        self.running.extend(admitted)

        tensor = lambda values, dtype: torch.tensor(values, dtype=dtype, device=self.device)  # noqa: E731
        start = torch.full((count,), self.config.decoder_start_id, device=self.device)
        self.tokens = torch.cat([self.tokens, start])
        self.generated = torch.cat([self.generated, self._zeros(count, torch.long)])
        self.history = torch.cat(
            [self.history, self.history.new_zeros((count, self.history.shape[1]))]
        )
        self.beam_scores = torch.cat([self.beam_scores, self._zeros(count, torch.float32)])
        self.beam_rows = torch.cat([self.beam_rows, tensor(beam_rows, torch.bool)])
        self.wordless = torch.cat([self.wordless, tensor(wordless, torch.bool)])
        self.min_length = torch.cat([self.min_length, tensor(min_length, torch.long)])
        self.max_length = torch.cat([self.max_length, tensor(max_length, torch.long)])
        if self.attention is not None:
            shape = (count, *self.attention.shape[1:])
            self.attention = torch.cat([self.attention, self.attention.new_zeros(shape)])
        if sampling:
            parts = sampling if self.sampling is None else [self.sampling, *sampling]
            self.sampling = SamplingRows.cat(parts)
        return failed

    def _encode_groups(
        self, admitted: list[_Sentence], need_alignment: bool, failed: list[TranslationOutput]
    ) -> tuple[list[_Sentence], object]:
        """The newcomers' ragged state, encoded in groups of similar length (`encode_groups`),
        and the newcomers in its row order; those whose group fails are encoded one by one
        and those failing alone go into `failed`."""
        ordered = sorted(admitted, key=lambda s: len(s.source))
        kept: list[_Sentence] = []
        states = []
        for group in encode_groups([(self._encoder_rows(s), len(s.source)) for s in ordered]):
            sentences = [ordered[i] for i in group]
            try:
                states.append(self._encode(sentences, need_alignment))
                kept.extend(sentences)
                continue
            except Exception:  # noqa: BLE001 - find the newcomers that cause it
                pass
            for sentence in sentences:
                try:
                    states.append(self._encode([sentence], need_alignment))
                except Exception as error:  # noqa: BLE001 - this sentence's own failure
                    failed.append(self._output(sentence, f"{type(error).__name__}: {error}"))
                else:
                    kept.append(sentence)
        fresh = states[0] if states else None
        for state in states[1:]:
            fresh = self.model.merge_states(fresh, state)
        return kept, fresh

    @staticmethod
    def _encoder_rows(sentence: _Sentence) -> int:
        return 1 if sentence.beam is not None else sentence.rows

    def _waits_for_company(self) -> bool:
        """Whether the newcomers wait another step for others to be encoded with.

        An encoder call costs about a quarter of a 32-row step whatever it encodes (its
        weights are read once a call; measured on 2 shared cores), and each join copies a
        little of the state, so a batch that is at least half full takes newcomers in groups:
        they join once `JOIN_SENTENCES` wait or the first has waited `JOIN_STEPS` steps. A
        smaller batch, where few others would come, takes each at once."""
        if len(self.running) < self.max_batch_size // 2 or len(self.waiting) >= JOIN_SENTENCES:
            return False
        return self.steps - 1 - self.waiting[0].added_step < JOIN_STEPS

    def _encode(self, sentences: list[_Sentence], need_alignment: bool):
        """A ragged state for the sentences' first rows: one per beam, else one per sample."""
        sources = [s.source for s in sentences for _ in range(self._encoder_rows(s))]
        src = pad_batch(sources, self.config.pad_id, self.device)
        return self.model.init_ragged_state(self.model.encode(src), need_alignment)

    def _zeros(self, count: int, dtype: torch.dtype) -> Tensor:
        return torch.zeros(count, dtype=dtype, device=self.device)
