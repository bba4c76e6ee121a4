"""PNG figures for the comparison report.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting neither needs a
display nor changes the backend or global state of a process that imported this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120
# Enough colours and markers that lines stay distinguishable in grey-scale print too.
MARKERS = ("o", "s", "^", "D", "v", "P")


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_bleu_by_length(buckets: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """BLEU against source length, one line per model (Bahdanau et al. 2014, Figure 2).

    buckets: model label -> evaluate.score's buckets (same bucket order for every model).
    Empty buckets are gaps in the lines; the x labels carry each bucket's sentence count.
    """
    figure = _figure(6.4, 4.0)
    axes = figure.subplots()
    names: list[str] = []
    counts: list[int] = []
    for number, (label, rows) in enumerate(buckets.items()):
        if not names:
            names = [row["bucket"] for row in rows]
            counts = [row["count"] for row in rows]
        values = [math.nan if row["bleu"] is None else row["bleu"] for row in rows]
        axes.plot(
            range(len(values)),
            values,
            marker=MARKERS[number % len(MARKERS)],
            label=label,
        )
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels(
        [f"{name}\n(n={count})" for name, count in zip(names, counts, strict=True)]
    )
    axes.set_xlabel("source sentence length (words)")
    axes.set_ylabel("BLEU")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    axes.set_title("BLEU by source sentence length")
    return _save(figure, path)


def plot_scores(scores: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars of each metric per model, with the bootstrap 95% interval as error bars.

    scores: model label -> metric name -> object with score, mean, low and high (MetricScore).
    """
    figure = _figure(6.4, 3.6)
    axes = figure.subplots()
    labels = list(scores)
    metrics = list(next(iter(scores.values()))) if scores else []
    width = 0.8 / max(len(labels), 1)
    for number, label in enumerate(labels):
        positions = [m + (number - (len(labels) - 1) / 2) * width for m in range(len(metrics))]
        values = [scores[label][metric].score for metric in metrics]
        errors = [
            [max(v - scores[label][m].low, 0.0) for v, m in zip(values, metrics, strict=True)],
            [max(scores[label][m].high - v, 0.0) for v, m in zip(values, metrics, strict=True)],
        ]
        axes.bar(positions, values, width, yerr=errors, capsize=4, label=label)
    axes.set_xticks(range(len(metrics)))
    axes.set_xticklabels(metrics)
    axes.set_ylabel("score")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend()
    axes.set_title("Corpus scores with 95% bootstrap intervals")
    return _save(figure, path)


def plot_alignment(
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    weights: Sequence[Sequence[float]],
    path: Path,
    title: str = "",
) -> Path:
    """Attention heatmap as in Bahdanau et al. (2014), Figure 3.

    weights: (target, source), source pieces along x (on top), target pieces along y; grey
    scale with white = 1 and black = 0.
    """
    rows, columns = len(weights), len(weights[0]) if weights else 0
    if rows != len(target_tokens) or columns != len(source_tokens):
        raise ValueError(
            f"weights are {rows}x{columns} but there are {len(target_tokens)} target and "
            f"{len(source_tokens)} source tokens"
        )
    cell = 0.28  # inches per token: labels stay legible up to ~40 pieces a side
    figure = _figure(max(3.0, 1.5 + cell * columns), max(2.5, 1.5 + cell * rows))
    axes = figure.subplots()
    axes.imshow(weights, cmap="gray", vmin=0.0, vmax=1.0, aspect="equal", interpolation="nearest")
    axes.xaxis.tick_top()
    axes.set_xticks(range(columns))
    axes.set_xticklabels(source_tokens, rotation=90, fontsize=8)
    axes.set_yticks(range(rows))
    axes.set_yticklabels(target_tokens, fontsize=8)
    axes.tick_params(length=0)
    if title:
        axes.set_xlabel(title, fontsize=9)
    return _save(figure, path)


__all__ = ["plot_alignment", "plot_bleu_by_length", "plot_scores"]
