"""Offline comparison of stored translation models, and Apertium, on corpus splits.

Every model translates the same sentences through the serving path (`Translator`), and the
per-model numbers come from `service.training.evaluate`, so the report agrees with `python -m
service eval`. What this module adds is the comparison: sacrebleu's paired bootstrap
resampling (95% intervals and p-values against the first model, the baseline), BLEU by source
length side by side (Bahdanau et al. 2014, Figure 2), and attention alignments of the same
sample sentences from every model (their Figure 3). Apertium, the rule-based engine a user
could run instead (`service.training.apertium`), can join as one more system scored on the
same lines; it has no attention to plot.

`compare_models` compares on one split; `compare_splits` runs it per split into a
subdirectory each and writes one report over all of them. Computation returns a
`ComparisonReport` (or `SplitsReport`); rendering (`render_markdown`, `report_to_dict`,
`render_splits_markdown`, `splits_to_dict`) and plotting (`service.compare.plots`) only read it.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from service.training.evaluate import CHUNK_SENTENCES, orient, score, translate_all

DEFAULT_BOOTSTRAP_SAMPLES = 1000  # sacrebleu's default for `--paired-bs`
SIGNIFICANCE_LEVEL = 0.05
# Alignment samples: verses of this many source words fit a readable heatmap (about 10-40
# pieces a side) and are long enough to show reordering, as in the paper's Figure 3.
SAMPLE_MIN_WORDS = 8
SAMPLE_MAX_WORDS = 20
METRICS = ("BLEU", "chrF")

REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"
BLEU_BY_LENGTH_PLOT = "bleu_by_length.png"
SCORES_PLOT = "scores.png"
APERTIUM_LABEL = "apertium"


class TextPair(Protocol):
    source: str
    target: str


# Results.


@dataclass(frozen=True)
class MetricScore:
    """A corpus score and sacrebleu's bootstrap estimate of it: `mean` ± `ci` is the 95% interval.

    `p_value` is the paired bootstrap test against the baseline (None for the baseline itself).
    """

    score: float
    mean: float
    ci: float
    p_value: float | None = None

    @property
    def low(self) -> float:
        return self.mean - self.ci

    @property
    def high(self) -> float:
        return self.mean + self.ci


@dataclass(frozen=True)
class Speed:
    """Decode cost over the whole split, timed around `Translator.translate` calls.

    `*_latency_ms`: every sentence waits for the whole translate call (one chunk of sentences,
    packed into batches) that returned it; mean and percentiles are over sentences.
    `ms_per_sentence` is the amortised cost, wall time over sentences (1 / throughput).
    Apertium translates the whole split in one process: its latency is that one call, and it
    has no tokens or batches (None).
    """

    sentences: int
    wall_s: float
    sentences_per_s: float
    target_tokens: int | None  # generated tokens, EOS included
    target_tokens_per_s: float | None
    batches: int | None
    mean_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    ms_per_sentence: float


@dataclass(frozen=True)
class AlignmentSample:
    """One sample sentence as a model translated it, with its cross-attention weights."""

    index: int  # position in the compared pairs
    key: str
    source: str
    reference: str
    hypothesis: str
    source_tokens: list[str]
    target_tokens: list[str]
    weights: list[list[float]]  # (target, source), rows sum to 1
    plot: str | None  # file name in the output directory; None without attention weights


@dataclass
class ModelResult:
    """One system of the comparison: a stored model, or the Apertium peer (`peer`), which has
    no version in the store, no parameters and no attention to plot."""

    label: str  # short name used in tables and file names, unique within a report
    model_id: str
    version: int | None
    arch: str
    parameters: int | None
    bleu: MetricScore
    chrf: MetricScore
    buckets: list[dict[str, Any]]  # evaluate.score's: bucket, min_words, max_words, count, bleu
    speed: Speed
    samples: list[AlignmentSample]
    hypotheses: list[str] = field(repr=False)
    hypotheses_file: str = ""
    empty: int = 0  # translations with no text
    peer: bool = False


@dataclass(frozen=True)
class PairedComparison:
    """One system against the baseline on one metric."""

    baseline: str
    system: str
    metric: str
    delta: float  # system minus baseline
    p_value: float
    significant: bool  # p_value < SIGNIFICANCE_LEVEL
    identical_outputs: bool = False


@dataclass
class ComparisonReport:
    split: str
    sentences: int
    decode: dict[str, Any]
    bootstrap: dict[str, Any]  # test, resamples, seed, significance level
    signatures: dict[str, str]  # metric -> sacrebleu signature, with bs and seed
    models: list[ModelResult]
    comparisons: list[PairedComparison]
    sample_indices: list[int]
    environment: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    direction: str = "es-en"  # source-target language of every system and of the references

    @property
    def baseline(self) -> ModelResult:
        return self.models[0]

    def model(self, label: str) -> ModelResult:
        for result in self.models:
            if result.label == label:
                return result
        raise KeyError(label)


# Statistics.


@dataclass(frozen=True)
class PairedBootstrap:
    """sacrebleu's paired bootstrap over several systems; the first is the baseline."""

    signatures: dict[str, str]  # "BLEU" / "chrF" -> signature string
    scores: dict[str, dict[str, MetricScore]]  # system -> metric -> score
    identical: dict[str, bool]  # system -> same hypotheses as the baseline
    n_samples: int
    seed: str


def paired_bootstrap(
    systems: Sequence[tuple[str, Sequence[str]]],
    references: Sequence[str],
    n_samples: int = DEFAULT_BOOTSTRAP_SAMPLES,
) -> PairedBootstrap:
    """BLEU and chrF of each system with 95% intervals, and p-values against `systems[0]`.

    Runs `sacrebleu.significance.PairedTest(test_type="bs")`, the Moses
    `bootstrap-hypothesis-difference-significance.pl` procedure; the seed is sacrebleu's
    (`SACREBLEU_SEED`, default 12345) and appears in the signatures.

    One correction: when a system's hypotheses equal the baseline's, every resampled difference
    is zero and sacrebleu's strict `>` count reports p = 1/(n+1), i.e. "significant". Identical
    outputs are no evidence of a difference, so their p-value is 1.
    """
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    if not systems:
        raise ValueError("paired_bootstrap needs at least one system")
    names = [name for name, _ in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"system names must be unique, got {names}")
    for name, hypotheses in systems:
        if len(hypotheses) != len(references):
            raise ValueError(
                f"{name}: {len(hypotheses)} hypotheses for {len(references)} references"
            )
    if not references:
        raise ValueError("paired_bootstrap needs at least one sentence")

    test = PairedTest(
        [(name, list(hypotheses)) for name, hypotheses in systems],
        {"BLEU": BLEU(), "chrF": CHRF()},
        [list(references)],
        test_type="bs",
        n_samples=n_samples,
    )
    signatures, table = test()
    # sacrebleu keys results by the metric's display name ("BLEU", "chrF2"), in the order given.
    metric_keys = [key for key in table if key != "System"]
    baseline_hypotheses = list(systems[0][1])
    identical = {name: list(hyps) == baseline_hypotheses for name, hyps in systems}
    scores: dict[str, dict[str, MetricScore]] = {name: {} for name in names}
    for metric, key in zip(METRICS, metric_keys, strict=True):
        for position, (name, result) in enumerate(zip(table["System"], table[key], strict=True)):
            p_value = None
            if position > 0:
                p_value = 1.0 if identical[name] else float(result.p_value)
            scores[name][metric] = MetricScore(
                score=float(result.score),
                mean=float(result.mean),
                ci=float(result.ci),
                p_value=p_value,
            )
    seed = signatures[metric_keys[0]].info.get("seed", "12345")
    return PairedBootstrap(
        signatures={m: str(signatures[k]) for m, k in zip(METRICS, metric_keys, strict=True)},
        scores=scores,
        identical=identical,
        n_samples=test.n_samples,
        seed=str(seed),
    )


def choose_samples(
    pairs: Sequence[TextPair],
    count: int,
    min_words: int = SAMPLE_MIN_WORDS,
    max_words: int = SAMPLE_MAX_WORDS,
) -> list[int]:
    """`count` indices of short-to-medium sentences, spread evenly over the split.

    Deterministic (no randomness): the same split gives the same samples, so reports from
    different runs and different models show the same sentences. When too few sentences have
    `min_words`..`max_words` source words, the ones closest to that range are used.
    """
    if count <= 0 or not pairs:
        return []
    lengths = [len(pair.source.split()) for pair in pairs]
    candidates = [i for i, n in enumerate(lengths) if min_words <= n <= max_words]
    if len(candidates) < count:
        distance = [max(min_words - n, n - max_words, 0) for n in lengths]
        candidates = sorted(sorted(range(len(pairs)), key=lambda i: (distance[i], i))[:count])
    count = min(count, len(candidates))
    return [candidates[(2 * k + 1) * len(candidates) // (2 * count)] for k in range(count)]


def model_labels(ids: Sequence[tuple[str, int]]) -> list[str]:
    """Short unique labels for (model id, version): the name, then name-v<version> if needed."""
    names = [model_id.split("/", 1)[-1] for model_id, _ in ids]
    labels = [
        name if names.count(name) == 1 else f"{name}-v{version}"
        for name, (_, version) in zip(names, ids, strict=True)
    ]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique


_VERSIONED = re.compile(r"^(?P<id>[^@]+)@(?P<version>[0-9]+)$")


def parse_model_spec(spec: str, default_version: int | None = None) -> tuple[str, int | None]:
    """`es-en/transformer@2` -> ("es-en/transformer", 2); without `@`, the default version."""
    spec = spec.strip()
    if match := _VERSIONED.fullmatch(spec):
        return match["id"], int(match["version"])
    return spec, default_version


# Timing.


class _TimedTranslator:
    """Passes calls through to a translator and records (sentences, seconds) per call."""

    def __init__(self, translator: Any):
        self.translator = translator
        self.calls: list[tuple[int, float]] = []

    def translate(self, texts: list[str], options: Any, stats: Any = None) -> list[Any]:
        started = time.perf_counter()
        results = self.translator.translate(texts, options, stats)
        self.calls.append((len(texts), time.perf_counter() - started))
        return results


def _speed(measured: dict[str, Any], calls: list[tuple[int, float]]) -> Speed:
    latencies = np.repeat([seconds for _, seconds in calls], [n for n, _ in calls]) * 1000.0
    if latencies.size == 0:
        latencies = np.zeros(1)
    return Speed(
        sentences=int(measured["sentences"]),
        wall_s=float(measured["wall_s"]),
        sentences_per_s=float(measured["sentences_per_s"]),
        target_tokens=int(measured["target_tokens"]),
        target_tokens_per_s=float(measured["target_tokens_per_s"]),
        batches=int(measured["batches"]),
        mean_latency_ms=round(float(latencies.mean()), 2),
        p50_latency_ms=round(float(np.percentile(latencies, 50)), 2),
        p95_latency_ms=round(float(np.percentile(latencies, 95)), 2),
        ms_per_sentence=round(
            1000.0 * float(measured["wall_s"]) / max(measured["sentences"], 1), 2
        ),
    )


# The comparison.


def compare_models(
    store: Any,
    model_ids: Sequence[str | tuple[str, int | None]],
    pairs: Sequence[TextPair],
    options: Any,
    out_dir: Path | str,
    samples: int = 3,
    *,
    split: str = "",
    device: Any = "cpu",
    n_bootstrap: int = DEFAULT_BOOTSTRAP_SAMPLES,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    apertium: bool = False,
) -> ComparisonReport:
    """Translate `pairs` with every model, compare them, and write the report into `out_dir`.

    model_ids: store ids or short names, each optionally `(id, version)` or `"id@version"`;
        the first model is the baseline of the paired tests. All must translate the same
        way (their manifests' languages); an en->es model reads the pairs' English side.
    pairs: corpus pairs as stored, Spanish `source`, English `target`.
    options: a `DecodeOptions` used for every model (alignments are requested on top of it for
        the sample sentences only, so they do not slow the timed run).
    apertium: also score Apertium on the same lines, as the last system (it runs first, so a
        missing Apertium fails before any model translates).
    Writes report.md, report.json, bleu_by_length.png, scores.png,
    alignment_<label>_<i>.png and hypotheses_<label>.txt; returns what it wrote.
    """
    import torch

    from service.decoding.translator import Translator

    if not model_ids:
        raise ValueError("compare_models needs at least one model")
    if not pairs:
        raise ValueError("nothing to compare: no pairs")
    say = log or (lambda message: None)
    specs = [parse_model_spec(m) if isinstance(m, str) else m for m in model_ids]
    manifests = [store.resolve(model_id, version) for model_id, version in specs]
    directions = sorted({(m.source_lang, m.target_lang) for m in manifests})
    if len(directions) > 1:
        raise ValueError(
            "compare models of one direction at a time, not "
            + " and ".join(f"{s}->{t}" for s, t in directions)
        )
    source_lang, target_lang = directions[0]
    pairs = orient(pairs, source_lang, target_lang)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = [pair.source for pair in pairs]
    references = [pair.target for pair in pairs]
    sample_indices = choose_samples(pairs, samples)
    alignment_options = dataclasses.replace(options, return_alignment=True)

    labels = model_labels([(m.id, m.version) for m in manifests])
    peer = None
    if apertium:
        say(f"apertium {source_lang}->{target_lang}: translating {len(sources)} sentences")
        peer = _apertium_partial(pairs, sample_indices, source_lang, target_lang)
    partial: list[dict[str, Any]] = []
    for label, manifest in zip(labels, manifests, strict=True):
        say(f"{manifest.id} v{manifest.version}: loading")
        loaded = store.load(manifest.id, manifest.version, device=device)
        translator = Translator(loaded.model, loaded.tokenizer)
        # Translating the samples first also warms the model up before the timed run.
        sample_translations = translator.translate(
            [sources[i] for i in sample_indices], alignment_options
        )
        say(
            f"{manifest.id} v{manifest.version}: translating {len(sources)} sentences "
            f"(beam {options.beam_size})"
        )
        timed = _TimedTranslator(translator)
        hypotheses, measured = translate_all(timed, sources, options, progress=progress)
        scored = score(hypotheses, references, sources)
        partial.append(
            dict(
                label=label,
                model_id=manifest.id,
                version=manifest.version,
                arch=manifest.arch,
                parameters=sum(p.numel() for p in loaded.model.parameters()),
                hypotheses=hypotheses,
                buckets=scored["buckets"],
                empty=scored["empty"],
                speed=_speed(measured, timed.calls),
                samples=[
                    _sample(label, n, index, pairs[index], translation.best)
                    for n, (index, translation) in enumerate(
                        zip(sample_indices, sample_translations, strict=True), start=1
                    )
                ],
            )
        )
        del loaded, translator, timed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if peer is not None:
        partial.append(peer)

    say(f"paired bootstrap resampling ({n_bootstrap} samples)")
    bootstrap = paired_bootstrap(
        [(p["label"], p["hypotheses"]) for p in partial], references, n_bootstrap
    )
    models = []
    for p in partial:
        scores = bootstrap.scores[p["label"]]
        models.append(
            ModelResult(
                label=p["label"],
                model_id=p["model_id"],
                version=p["version"],
                arch=p["arch"],
                parameters=p["parameters"],
                bleu=scores["BLEU"],
                chrf=scores["chrF"],
                buckets=p["buckets"],
                speed=p["speed"],
                samples=p["samples"],
                hypotheses=p["hypotheses"],
                hypotheses_file=f"hypotheses_{p['label']}.txt",
                empty=p["empty"],
                peer=p.get("peer", False),
            )
        )
    comparisons = [
        PairedComparison(
            baseline=models[0].label,
            system=system.label,
            metric=metric,
            delta=getattr(system, attr).score - getattr(models[0], attr).score,
            p_value=getattr(system, attr).p_value,
            significant=getattr(system, attr).p_value < SIGNIFICANCE_LEVEL,
            identical_outputs=bootstrap.identical[system.label],
        )
        for system in models[1:]
        for metric, attr in (("BLEU", "bleu"), ("chrF", "chrf"))
    ]
    report = ComparisonReport(
        split=split,
        sentences=len(pairs),
        decode={
            "beam_size": options.beam_size,
            "length_penalty": options.length_penalty,
            "max_length": options.max_length,
        },
        bootstrap={
            "test": "paired bootstrap resampling (sacrebleu PairedTest, test_type='bs')",
            "resamples": bootstrap.n_samples,
            "seed": bootstrap.seed,
            "significance_level": SIGNIFICANCE_LEVEL,
        },
        signatures=bootstrap.signatures,
        models=models,
        comparisons=comparisons,
        sample_indices=sample_indices,
        environment={
            "device": str(device),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"apertium": peer["version_text"]} if peer is not None else {}),
        },
        direction=f"{source_lang}-{target_lang}",
    )
    write_report(report, out)
    say(f"report written to {out / REPORT_MARKDOWN}")
    return report


def _apertium_partial(
    pairs: Sequence[Any], sample_indices: list[int], source_lang: str, target_lang: str
) -> dict[str, Any]:
    """Apertium's translations of the (oriented) pairs, scored like a model's."""
    from service.training.apertium import translate_lines

    sources = [pair.source for pair in pairs]
    result = translate_lines(sources, source_lang, target_lang)
    scored = score(result.translations, [pair.target for pair in pairs], sources)
    seconds, count = max(result.seconds, 1e-9), len(sources)
    call_ms = round(1000.0 * result.seconds, 2)
    return dict(
        label=APERTIUM_LABEL,
        model_id=f"apertium {result.direction}",
        version=None,
        arch=f"rule-based ({result.version})",
        parameters=None,
        hypotheses=result.translations,
        buckets=scored["buckets"],
        empty=scored["empty"],
        speed=Speed(
            sentences=count,
            wall_s=result.seconds,
            sentences_per_s=round(count / seconds, 3),
            target_tokens=None,
            target_tokens_per_s=None,
            batches=None,
            mean_latency_ms=call_ms,
            p50_latency_ms=call_ms,
            p95_latency_ms=call_ms,
            ms_per_sentence=round(1000.0 * result.seconds / max(count, 1), 2),
        ),
        samples=[
            AlignmentSample(
                index=index,
                key=str(getattr(pairs[index], "key", index)),
                source=pairs[index].source,
                reference=pairs[index].target,
                hypothesis=result.translations[index],
                source_tokens=[],
                target_tokens=[],
                weights=[],
                plot=None,
            )
            for index in sample_indices
        ],
        peer=True,
        version_text=result.version,
    )


def _sample(label: str, number: int, index: int, pair: Any, best: Any) -> AlignmentSample:
    alignment = best.alignment
    return AlignmentSample(
        index=index,
        key=str(getattr(pair, "key", index)),
        source=pair.source,
        reference=pair.target,
        hypothesis=best.text,
        source_tokens=list(alignment.source_tokens) if alignment else [],
        target_tokens=list(alignment.target_tokens) if alignment else [],
        weights=[list(row) for row in alignment.weights] if alignment else [],
        plot=f"alignment_{label}_{number}.png" if alignment and alignment.weights else None,
    )


def write_report(report: ComparisonReport, out_dir: Path) -> None:
    """Plots, hypotheses, report.json and report.md, all into `out_dir`."""
    from service.compare import plots

    plots.plot_bleu_by_length(
        {m.label: m.buckets for m in report.models}, out_dir / BLEU_BY_LENGTH_PLOT
    )
    plots.plot_scores(
        {m.label: {"BLEU": m.bleu, "chrF": m.chrf} for m in report.models},
        out_dir / SCORES_PLOT,
    )
    for model in report.models:
        (out_dir / model.hypotheses_file).write_text(
            "".join(h.replace("\n", " ") + "\n" for h in model.hypotheses), encoding="utf-8"
        )
        for sample in model.samples:
            if sample.plot:
                plots.plot_alignment(
                    sample.source_tokens,
                    sample.target_tokens,
                    sample.weights,
                    out_dir / sample.plot,
                    title=f"{model.label}: {sample.key}",
                )
    report.files = {
        "markdown": REPORT_MARKDOWN,
        "json": REPORT_JSON,
        "bleu_by_length": BLEU_BY_LENGTH_PLOT,
        "scores": SCORES_PLOT,
    }
    (out_dir / REPORT_JSON).write_text(
        json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / REPORT_MARKDOWN).write_text(render_markdown(report), encoding="utf-8")


# Several splits.


@dataclass
class SplitsReport:
    """One `ComparisonReport` per split, same systems in the same order in each."""

    reports: list[ComparisonReport]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.reports[0].models]


def compare_splits(
    store: Any,
    model_ids: Sequence[str | tuple[str, int | None]],
    splits: Mapping[str, Sequence[TextPair]],
    options: Any,
    out_dir: Path | str,
    samples: int = 3,
    **kwargs: Any,
) -> SplitsReport:
    """`compare_models` on every split, each into `out_dir/<split>/`, then one report over all
    of them: `out_dir/report.md` (a summary table of every system on every split, then each
    split's full report) and `out_dir/report.json`. `kwargs` go to `compare_models`."""
    if not splits:
        raise ValueError("compare_splits needs at least one split")
    if any(not pairs for pairs in splits.values()):
        empty = [name for name, pairs in splits.items() if not pairs]
        raise ValueError(f"nothing to compare on split(s) {', '.join(empty)}: no pairs")
    out = Path(out_dir)
    reports = [
        compare_models(store, model_ids, pairs, options, out / name, samples, split=name, **kwargs)
        for name, pairs in splits.items()
    ]
    result = SplitsReport(reports)
    result.files = {"markdown": REPORT_MARKDOWN, "json": REPORT_JSON}
    (out / REPORT_JSON).write_text(
        json.dumps(splits_to_dict(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / REPORT_MARKDOWN).write_text(render_splits_markdown(result), encoding="utf-8")
    return result


def splits_to_dict(result: SplitsReport) -> dict[str, Any]:
    """The JSON over all splits: a summary per system and split, then each split's report."""
    return {
        "splits": [r.split for r in result.reports],
        "systems": result.labels,
        "baseline": result.reports[0].baseline.label,
        "summary": {
            label: {
                r.split: {
                    "bleu": _metric_dict(r.model(label).bleu),
                    "chrf": _metric_dict(r.model(label).chrf),
                    "empty": r.model(label).empty,
                    "sentences": r.sentences,
                }
                for r in result.reports
            }
            for label in result.labels
        },
        "reports": {r.split: report_to_dict(r) for r in result.reports},
        "files": result.files,
    }


def render_splits_markdown(result: SplitsReport) -> str:
    first = result.reports[0]
    splits = [r.split for r in result.reports]
    lines = [
        f"# Model comparison: {' vs '.join(result.labels)} on {', '.join(splits)}",
        "",
        f"{first.direction.replace('-', '→')}; every system translates the same lines of each "
        f"split. Corpus BLEU and chrF (sacrebleu) with 95% paired-bootstrap intervals "
        f"({first.bootstrap['resamples']} resamples); the sections below give p-values against "
        f"**{first.baseline.label}**, BLEU by length, speed and alignments per split.",
        "",
        "| system | " + " | ".join(f"{split} BLEU | {split} chrF" for split in splits) + " |",
        "|---|" + "---:|---:|" * len(splits),
    ]
    for label in result.labels:
        cells = []
        for r in result.reports:
            m = r.model(label)
            cells += [
                f"{metric.score:.2f} [{metric.low:.2f}, {metric.high:.2f}]"
                for metric in (m.bleu, m.chrf)
            ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| split | sentences | " + " | ".join(f"empty {label}" for label in result.labels) + " |",
        "|---|---:|" + "---:|" * len(result.labels),
    ]
    for r in result.reports:
        lines.append(
            f"| {r.split} | {r.sentences} | "
            + " | ".join(str(r.model(label).empty) for label in result.labels)
            + " |"
        )
    lines += ["", "Signatures:", "", "```"]
    lines += [f"{metric}: {signature}" for metric, signature in first.signatures.items()]
    lines += ["```", ""]
    for r in result.reports:
        lines += [render_markdown(r, level=2, prefix=f"{r.split}/"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# Rendering.


def _metric_dict(metric: MetricScore) -> dict[str, Any]:
    return {
        "score": round(metric.score, 2),
        "bootstrap_mean": round(metric.mean, 2),
        "ci95": [round(metric.low, 2), round(metric.high, 2)],
        "ci95_half_width": round(metric.ci, 2),
        "p_value": None if metric.p_value is None else round(metric.p_value, 4),
    }


def report_to_dict(report: ComparisonReport) -> dict[str, Any]:
    """The JSON form: everything but the hypotheses themselves (those go to text files)."""
    return {
        "split": report.split,
        "direction": report.direction,
        "sentences": report.sentences,
        "baseline": report.baseline.label,
        "decode": report.decode,
        "bootstrap": report.bootstrap,
        "signatures": report.signatures,
        "models": {
            m.label: {
                "model_id": m.model_id,
                "version": m.version,
                "arch": m.arch,
                "parameters": m.parameters,
                "peer": m.peer,
                "bleu": _metric_dict(m.bleu),
                "chrf": _metric_dict(m.chrf),
                "empty": m.empty,
                "buckets": m.buckets,
                "speed": dataclasses.asdict(m.speed),
                "hypotheses_file": m.hypotheses_file,
                "samples": [
                    {
                        **dataclasses.asdict(s),
                        "weights": [[round(w, 4) for w in row] for row in s.weights],
                    }
                    for s in m.samples
                ],
            }
            for m in report.models
        },
        "comparisons": [
            {**dataclasses.asdict(c), "delta": round(c.delta, 2), "p_value": round(c.p_value, 4)}
            for c in report.comparisons
        ],
        "sample_indices": report.sample_indices,
        "environment": report.environment,
        "files": report.files,
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "(baseline)"
    return f"{value:.4f}" + (" *" if value < SIGNIFICANCE_LEVEL else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: ComparisonReport, *, level: int = 1, prefix: str = "") -> str:
    """The report as markdown. `level` is the depth of its top heading and `prefix` goes before
    every file it links, so a split's report can sit inside the report over all splits."""
    labels = [m.label for m in report.models]
    base = report.baseline
    h1, h2, h3 = ("#" * (level + n) for n in range(3))
    title = f"Model comparison: {' vs '.join(labels)}"
    if level > 1:
        title = f"Split {report.split or '(custom)'}: {' vs '.join(labels)}"
    lines = [
        f"{h1} {title}",
        "",
        f"Split **{report.split or '(custom)'}**, {report.sentences} sentences, "
        f"{report.direction.replace('-', '→')}; "
        f"beam {report.decode['beam_size']}, length penalty {report.decode['length_penalty']}, "
        f"max length {report.decode['max_length']}. Device {report.environment['device']}, "
        f"{report.environment['torch_threads']} torch threads, torch "
        f"{report.environment['torch']}; {report.environment['created']}.",
        "",
        "| system | id | version | arch | parameters |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m.label} | {m.model_id} | {_fmt(m.version, 0)} | {m.arch} | "
        f"{'–' if m.parameters is None else f'{m.parameters:,}'} |"
        for m in report.models
    ]
    lines += [
        "",
        f"{h2} Quality",
        "",
        f"Corpus BLEU and chrF (sacrebleu) with 95% confidence intervals from paired bootstrap "
        f"resampling ({report.bootstrap['resamples']} resamples, seed "
        f"{report.bootstrap['seed']}); p-values test each model against the baseline "
        f"**{base.label}** (* : p < {SIGNIFICANCE_LEVEL}). Empty: translations with no text.",
        "",
        "| system | BLEU | BLEU 95% CI | p (BLEU) | chrF | chrF 95% CI | p (chrF) | empty |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.models:
        lines.append(
            f"| {m.label} | {m.bleu.score:.2f} | [{m.bleu.low:.2f}, {m.bleu.high:.2f}] | "
            f"{_p(m.bleu.p_value)} | {m.chrf.score:.2f} | [{m.chrf.low:.2f}, {m.chrf.high:.2f}] "
            f"| {_p(m.chrf.p_value)} | {m.empty} |"
        )
    lines.append("")
    for c in report.comparisons:
        verdict = "significant" if c.significant else "not significant"
        note = " (identical outputs)" if c.identical_outputs else ""
        lines.append(
            f"- {c.system} vs {c.baseline}: Δ{c.metric} = {c.delta:+.2f}, p = {c.p_value:.4f}, "
            f"{verdict} at {SIGNIFICANCE_LEVEL}{note}."
        )
    lines += [
        "",
        "Signatures:",
        "",
        "```",
        *(f"{metric}: {signature}" for metric, signature in report.signatures.items()),
        "```",
        "",
        f"![BLEU and chrF with 95% intervals]({prefix}{report.files.get('scores', SCORES_PLOT)})",
        "",
        f"{h2} BLEU by source sentence length",
        "",
        "Corpus BLEU of the sentences in each bucket of source length (whitespace words), as in "
        "Figure 2 of Bahdanau et al. (2014). Small buckets give noisy scores.",
        "",
        f"![BLEU by source length]({prefix}"
        f"{report.files.get('bleu_by_length', BLEU_BY_LENGTH_PLOT)})",
        "",
        "| source words | sentences | " + " | ".join(f"BLEU {label}" for label in labels) + " |",
        "|---|---:|" + "---:|" * len(labels),
    ]
    for position, bucket in enumerate(base.buckets):
        row = [bucket["bucket"], str(bucket["count"])]
        row += [_fmt(m.buckets[position]["bleu"]) for m in report.models]
        lines.append("| " + " | ".join(row) + " |")
    peers = [m.label for m in report.models if m.peer]
    lines += [
        "",
        f"{h2} Speed",
        "",
        f"Sentences are sorted by length and handed to the translator in chunks of "
        f"{CHUNK_SENTENCES}, which it packs into batches. Latency is the time of the chunk that "
        f"returned a sentence (what a client sending that chunk at once waits), over sentences; "
        f"ms/sentence is the amortised cost (wall time / sentences). Target tokens include EOS."
        + (
            f" {', '.join(peers)}: one process for the whole split, so its latency is that one "
            "call; it has no tokens or batches."
            if peers
            else ""
        ),
        "",
        "| model | sentences/s | target tokens/s | mean latency (ms) | p50 (ms) | p95 (ms) "
        "| ms/sentence | batches | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.models:
        s = m.speed
        lines.append(
            f"| {m.label} | {s.sentences_per_s:.2f} | {_fmt(s.target_tokens_per_s, 1)} | "
            f"{s.mean_latency_ms:.1f} | {s.p50_latency_ms:.1f} | {s.p95_latency_ms:.1f} | "
            f"{s.ms_per_sentence:.1f} | {_fmt(s.batches, 0)} | {s.wall_s:.2f} |"
        )
    lines += [
        "",
        f"{h2} Alignments",
        "",
        "Cross-attention weights of each model on the same sample sentences, as in Figure 3 of "
        "Bahdanau et al. (2014): source pieces on x, generated pieces on y, white = weight 1. "
        "RNNSearch shows its single additive attention; the Transformer shows the last decoder "
        "layer's cross-attention averaged over heads."
        + (f" {', '.join(peers)} has no attention: its translations only." if peers else ""),
        "",
    ]
    for number in range(1, len(report.sample_indices) + 1):
        first = base.samples[number - 1]
        lines += [
            f"{h3} Sample {number}: {first.key}",
            "",
            f"- source: {_cell(first.source)}",
            f"- reference: {_cell(first.reference)}",
            *(f"- {m.label}: {_cell(m.samples[number - 1].hypothesis)}" for m in report.models),
            "",
        ]
        lines += [
            f"![{m.label} alignment, sample {number}]({prefix}{m.samples[number - 1].plot})"
            for m in report.models
            if m.samples[number - 1].plot
        ]
        lines.append("")
    lines += [
        f"{h2} Files",
        "",
        f"- `{prefix}{report.files.get('json', REPORT_JSON)}`: every number above, plus "
        "attention weights of the samples",
        *(
            f"- `{prefix}{m.hypotheses_file}`: {m.label} translations, one per line"
            for m in report.models
        ),
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "AlignmentSample",
    "ComparisonReport",
    "MetricScore",
    "ModelResult",
    "PairedBootstrap",
    "PairedComparison",
    "Speed",
    "choose_samples",
    "SplitsReport",
    "compare_models",
    "compare_splits",
    "model_labels",
    "paired_bootstrap",
    "parse_model_spec",
    "render_markdown",
    "render_splits_markdown",
    "report_to_dict",
    "splits_to_dict",
    "write_report",
]
