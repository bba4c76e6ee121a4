"""Turning many variable-length inputs into few, tightly packed decode batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, device="cpu") -> Tensor:
    """Right-pad id lists into a (B, S_max) tensor."""
    width = max(len(s) for s in sequences)
    batch = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for i, seq in enumerate(sequences):
        batch[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return batch.to(device)


def plan_batches(
    lengths: Sequence[int], max_tokens: int, max_rows: int | None = None
) -> list[list[int]]:
    """Group input indices into batches, longest first, each within a padded-token budget.

    Sorting by length keeps padding low; the budget counts `rows * longest row`, i.e. what the
    padded tensor really costs. A single input longer than the budget still gets its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        too_many = max_rows is not None and len(current) >= max_rows
        if current and (too_many or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
