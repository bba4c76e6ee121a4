"""Offline comparison of stored translation models: `python -m service compare`.

`compare_models` translates one split with every model (and Apertium, when asked) and writes a
report (markdown, JSON, PNG plots): BLEU and chrF with paired bootstrap intervals and p-values,
BLEU by source length, speed, and attention alignments of sample sentences. `compare_splits`
does that per split and writes one report over all of them.
"""

from service.compare.report import (
    AlignmentSample,
    ComparisonReport,
    MetricScore,
    ModelResult,
    PairedBootstrap,
    PairedComparison,
    Speed,
    SplitsReport,
    choose_samples,
    compare_models,
    compare_splits,
    paired_bootstrap,
    render_markdown,
    report_to_dict,
)

__all__ = [
    "AlignmentSample",
    "ComparisonReport",
    "MetricScore",
    "ModelResult",
    "PairedBootstrap",
    "PairedComparison",
    "Speed",
    "SplitsReport",
    "choose_samples",
    "compare_models",
    "compare_splits",
    "paired_bootstrap",
    "render_markdown",
    "report_to_dict",
]
