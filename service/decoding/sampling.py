"""One next token for every row of a batch whose rows each have their own sampling settings.

The generation engine batches requests with different temperatures, top-k, top-p and seeds.
Everything here is tensor work over the whole batch; the only per-request state is a row of
uniform draws made from the request's own generator when it is admitted
(`draw_uniforms`). A row's token then depends on its logits and its own draws alone, so a
seeded request gives the same text alone or in any batch. Each row is sampled by inverting
its cumulative distribution at its next draw: one number per token, no per-row generator call
per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def draw_uniforms(count: int, seed: int | None) -> Tensor:
    """`count` draws in [0, 1) for one request (CPU, float64); unseeded ones differ per call."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return torch.rand(count, generator=generator, dtype=torch.float64)


@dataclass
class SamplingRows:
    """Per-row settings of a running batch; kept in the order of the rows of the model state."""

    temperature: Tensor  # (B,) float; 0 means greedy
    top_k: Tensor  # (B,) long; 0 disables
    top_p: Tensor  # (B,) float; 1 disables
    uniforms: Tensor  # (B, N) float64: row b's i-th sampled token inverts its CDF at [b, i]
    drawn: Tensor  # (B,) long: tokens chosen so far per row

    @classmethod
    def single(
        cls, temperature: float, top_k: int, top_p: float, uniforms: Tensor, device
    ) -> SamplingRows:
        return cls(
            torch.tensor([temperature], device=device, dtype=torch.float32),
            torch.tensor([top_k], device=device),
            torch.tensor([top_p], device=device, dtype=torch.float32),
            uniforms.to(device)[None],
            torch.zeros(1, dtype=torch.long, device=device),
        )

    @staticmethod
    def cat(parts: list[SamplingRows]) -> SamplingRows:
        width = max(p.uniforms.shape[1] for p in parts)
        return SamplingRows(
            torch.cat([p.temperature for p in parts]),
            torch.cat([p.top_k for p in parts]),
            torch.cat([p.top_p for p in parts]),
            torch.cat(
                [
                    torch.nn.functional.pad(p.uniforms, (0, width - p.uniforms.shape[1]))
                    for p in parts
                ]
            ),
            torch.cat([p.drawn for p in parts]),
        )

    def select(self, index: Tensor) -> SamplingRows:
        return SamplingRows(
            self.temperature[index],
            self.top_k[index],
            self.top_p[index],
            self.uniforms[index],
            self.drawn[index],
        )

    def choose(self, log_probs: Tensor) -> Tensor:
        """(B, V) log-probabilities -> (B,) tokens: argmax for greedy rows, else a draw.

        Temperature, then top-k (ties with the k-th kept), then nucleus (top-p, the top token
        always kept). The static search samples with these rows too (`search.sentence_sampling`).
        """
        greedy = log_probs.argmax(-1)
        sampled = self.temperature > 0
        drawn, self.drawn = self.drawn, self.drawn + 1
        if not bool(sampled.any()):
            return greedy
        # A greedy row's draws are none (width 0 or padding): clamped, and then not used.
        rows = torch.arange(log_probs.shape[0], device=log_probs.device)
        u = self.uniforms[rows, drawn.clamp(max=self.uniforms.shape[1] - 1)]
        temperature = torch.where(sampled, self.temperature, torch.ones_like(self.temperature))
        logits = log_probs / temperature[:, None]
        if bool(((self.top_k > 0) | (self.top_p < 1)).any()):
            logits = logits.masked_fill(self._filtered_out(logits), float("-inf"))
        # In vocabulary order whatever the other rows ask for: a row's token must not depend
        # on its batch.
        cdf = logits.double().softmax(-1).cumsum(-1)
        index = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
        # Rounding can carry `index` past the last token with probability (where the CDF
        # first reaches its total): clamp it back.
        index = torch.minimum(index, (cdf < cdf[:, -1:]).sum(-1))
        return torch.where(sampled, index, greedy)

    def _filtered_out(self, logits: Tensor) -> Tensor:
        """(B, V) True where top-k or top-p removes a token; all False on rows that use neither.

        Worked out on each row sorted descending, where both filters drop a suffix.
        """
        ordered, order = logits.sort(-1, descending=True)
        kth = ordered.gather(1, (self.top_k - 1).clamp(0, logits.shape[-1] - 1)[:, None])
        drop = (self.top_k > 0)[:, None] & (ordered < kth)
        probs = ordered.masked_fill(drop, float("-inf")).softmax(-1)
        drop |= (self.top_p < 1)[:, None] & (probs.cumsum(-1) - probs >= self.top_p[:, None])
        return drop.scatter(1, order, drop)
