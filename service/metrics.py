"""Metric definitions, in one place.

Every metric the service exports is a `MetricSpec` below. They are recorded with
`ray.serve.metrics` inside the replicas; Ray's metrics agent on each node gathers every worker's
series and serves them, with Ray Serve's own `ray_serve_*` metrics, on the node's metrics export
port (`python -m service serve --metrics-port`, default 8080). So one scrape target holds every
replica's series, each tagged with `deployment`, `replica` and `application` by Ray Serve (and
`WorkerId`, `NodeAddress` by Ray); `sum by (...)` in PromQL gives the totals.

Why Ray's export and not prometheus-client: replicas are separate processes (on separate nodes in
a cluster) that Ray starts, restarts and moves; prometheus-client's multiprocess mode wants one
shared directory and a single parent that forks the workers, which Ray actors are not.

Prometheus sees each name with Ray's `ray_` prefix (`translation_requests_total` is scraped as
`ray_translation_requests_total`) and histograms as `_bucket`, `_sum` and `_count` series.
Recorders are built inside a replica (`IngressMetrics` in the ingress, `ModelMetrics` in a model
deployment), never at import time; this module itself imports no Ray, so tests and the dashboard
check can read the definitions anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger("ray.serve")

EXPORT_PREFIX = "ray_"  # added by Ray's exporter to every application metric
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Tags Ray Serve adds to every metric recorded in a replica, and Ray to every exported series.
SERVE_TAGS = ("deployment", "replica", "application")
NONE = "none"  # label value for "no such thing here" (no experiment, no resolved model)

# Seconds; decode batches on CPU run from milliseconds to tens of seconds.
LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Generated tokens per second of one decode call: a tiny CPU model to a large GPU batch.
THROUGHPUT_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000)
RATING_BUCKETS = (1, 2, 3, 4, 5)

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as recorded; Prometheus sees EXPORT_PREFIX + name
    kind: Kind
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()

    @property
    def exported(self) -> tuple[str, ...]:
        """The series names a Prometheus scrape of Ray's export port shows for this metric."""
        base = EXPORT_PREFIX + self.name
        if self.kind == "histogram":
            return tuple(base + suffix for suffix in HISTOGRAM_SUFFIXES)
        return (base,)


# At the ingress: one observation per HTTP request, assignment and rating.
_REQUEST_TAGS = ("model", "version", "route", "status", "experiment", "variant")
_VARIANT_TAGS = ("experiment", "variant", "model", "version")

REQUESTS = MetricSpec(
    "translation_requests_total",
    "counter",
    "HTTP requests answered by the API, by served model, route template and status code. "
    "model/version are 'none' when no single model answered (errors before one was chosen, "
    "/v1/compare, /v1/models); experiment/variant are 'none' outside an A/B experiment.",
    _REQUEST_TAGS,
)
REQUEST_LATENCY = MetricSpec(
    "translation_request_latency_seconds",
    "histogram",
    "End to end at the API: request received until the response started.",
    _REQUEST_TAGS,
    LATENCY_BUCKETS_S,
)
AB_ASSIGNMENTS = MetricSpec(
    "translation_ab_assignments_total",
    "counter",
    "Requests routed by an A/B experiment, by variant; assignment is 'sticky' (hashed user "
    "header) or 'random' (no user header).",
    (*_VARIANT_TAGS, "assignment"),
)
FEEDBACK = MetricSpec(
    "translation_feedback_total",
    "counter",
    "User ratings received through POST /v1/feedback, by variant and rating (1-5).",
    (*_VARIANT_TAGS, "rating"),
)
FEEDBACK_RATING = MetricSpec(
    "translation_feedback_rating",
    "histogram",
    "The ratings themselves; _sum / _count is the mean rating per variant.",
    _VARIANT_TAGS,
    RATING_BUCKETS,
)

# In a model deployment: per decode call and per text, from the batcher's report.
_MODEL_TAGS = ("model", "version")

QUEUE_WAIT = MetricSpec(
    "translation_queue_wait_seconds",
    "histogram",
    "Per text: enqueued in the model replica until its decode batch started.",
    _MODEL_TAGS,
    LATENCY_BUCKETS_S,
)
BATCH_SIZE = MetricSpec(
    "translation_batch_size",
    "histogram",
    "Texts decoded together in one translate call, from all requests.",
    _MODEL_TAGS,
    BATCH_SIZE_BUCKETS,
)
BATCH_COMPUTE = MetricSpec(
    "translation_batch_compute_seconds",
    "histogram",
    "Duration of one decode call.",
    _MODEL_TAGS,
    LATENCY_BUCKETS_S,
)
DECODE_THROUGHPUT = MetricSpec(
    "translation_decode_throughput_tokens_per_second",
    "histogram",
    "Per decode call: output tokens (best hypotheses) divided by its duration.",
    _MODEL_TAGS,
    THROUGHPUT_BUCKETS,
)
INPUT_TOKENS = MetricSpec(
    "translation_input_tokens_total",
    "counter",
    "Source tokens (after truncation, with </s>) of the texts decoded.",
    _MODEL_TAGS,
)
OUTPUT_TOKENS = MetricSpec(
    "translation_output_tokens_total",
    "counter",
    "Tokens of the best translation of each text decoded.",
    _MODEL_TAGS,
)
TEXTS = MetricSpec(
    "translation_texts_total", "counter", "Texts decoded (one request may carry many).", _MODEL_TAGS
)
FAILURES = MetricSpec(
    "translation_failures_total",
    "counter",
    "Texts that could not be decoded (a bug: each is logged).",
    _MODEL_TAGS,
)
MODEL_INFO = MetricSpec(
    "translation_model_info",
    "gauge",
    "1 per live model replica, labelled with what it serves and how.",
    ("model", "version", "arch", "parameters", "device", "dtype"),
)

# Usage per API key, at the ingress (service/api/access.py). Labelled by the key's name,
# never by the key; 'none' when keys are off (the caller is then a client address, which
# would make one series per address).
KEY_REQUESTS = MetricSpec(
    "api_key_requests_total",
    "counter",
    "Requests let through by the key and rate-limit check, by API key name.",
    ("key",),
)
KEY_CHARACTERS = MetricSpec(
    "api_key_characters_total",
    "counter",
    "Characters of the texts and prompts (q, text, prompt) of those requests, by API key name.",
    ("key",),
)
KEY_RATE_LIMITED = MetricSpec(
    "api_key_rate_limited_total",
    "counter",
    "Requests refused with 429, by API key name and the limit (requests | characters).",
    ("key", "limit"),
)
USAGE_METRICS = (KEY_REQUESTS, KEY_CHARACTERS, KEY_RATE_LIMITED)

CACHE_HITS = MetricSpec(
    "translation_cache_hits_total",
    "counter",
    "Sentences answered from the ingress's translation cache, by model (id@version).",
    ("model",),
)
CACHE_MISSES = MetricSpec(
    "translation_cache_misses_total",
    "counter",
    "Sentences looked up in the translation cache and decoded, by model (id@version).",
    ("model",),
)

INGRESS_METRICS = (
    REQUESTS,
    REQUEST_LATENCY,
    AB_ASSIGNMENTS,
    FEEDBACK,
    FEEDBACK_RATING,
    *USAGE_METRICS,
    CACHE_HITS,
    CACHE_MISSES,
)
MODEL_METRICS = (
    QUEUE_WAIT,
    BATCH_SIZE,
    BATCH_COMPUTE,
    DECODE_THROUGHPUT,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    TEXTS,
    FAILURES,
    MODEL_INFO,
)

# In the language model deployment: per request, per generated token and per decode step.
_GENERATION_TAGS = ("model", "version")
# Seconds between two tokens of one stream: one decode step, sub-millisecond to seconds.
INTER_TOKEN_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

TIME_TO_FIRST_TOKEN = MetricSpec(
    "generation_time_to_first_token_seconds",
    "histogram",
    "Per request: accepted by the model replica until its first token was generated (queueing "
    "for a batch slot and the prompt's prefill included).",
    _GENERATION_TAGS,
    LATENCY_BUCKETS_S,
)
INTER_TOKEN_LATENCY = MetricSpec(
    "generation_inter_token_latency_seconds",
    "histogram",
    "Per generated token after the first: time since the request's previous token.",
    _GENERATION_TAGS,
    INTER_TOKEN_BUCKETS_S,
)
GENERATED_TOKENS = MetricSpec(
    "generation_tokens_total",
    "counter",
    "Tokens generated (an end-of-text token included), over all requests.",
    _GENERATION_TAGS,
)
GENERATION_PROMPT_TOKENS = MetricSpec(
    "generation_prompt_tokens_total",
    "counter",
    "Prompt tokens of the requests accepted (each prefilled once).",
    _GENERATION_TAGS,
)
GENERATION_REQUESTS = MetricSpec(
    "generation_requests_total",
    "counter",
    "Generation requests that ended, by finish_reason: 'stop' (end of text or a stop string), "
    "'length' (max_new_tokens), 'cancelled' (the client went away), 'error'.",
    (*_GENERATION_TAGS, "finish_reason"),
)
GENERATION_BATCH_SIZE = MetricSpec(
    "generation_batch_size",
    "histogram",
    "Sequences advanced together by one decode step, from all requests.",
    _GENERATION_TAGS,
    BATCH_SIZE_BUCKETS,
)

GENERATION_METRICS = (
    TIME_TO_FIRST_TOKEN,
    INTER_TOKEN_LATENCY,
    GENERATED_TOKENS,
    GENERATION_PROMPT_TOKENS,
    GENERATION_REQUESTS,
    GENERATION_BATCH_SIZE,
)
ALL_METRICS = INGRESS_METRICS + MODEL_METRICS + GENERATION_METRICS


def exported_names() -> set[str]:
    """Every series name this service's own metrics appear under in Prometheus."""
    return {name for spec in ALL_METRICS for name in spec.exported}


def _gauge_refresh_s() -> float:
    """Ray's agent drops a gauge series that its worker has not set again within two report
    intervals (`metrics_report_interval_ms`, at least 1 s, 10 s by default); setting it twice
    per interval keeps it in every export."""
    import ray

    return max(ray._config.metrics_report_interval_ms(), 1000) / 2000


class _Metric:
    """One Ray Serve metric of a spec; recording errors are logged once, never raised."""

    def __init__(self, spec: MetricSpec):
        from ray.serve import metrics

        self.spec = spec
        self._failed = False
        if spec.kind == "counter":
            self._metric: Any = metrics.Counter(
                spec.name, description=spec.description, tag_keys=spec.tag_keys
            )
        elif spec.kind == "gauge":
            self._metric = metrics.Gauge(
                spec.name, description=spec.description, tag_keys=spec.tag_keys
            )
        else:
            self._metric = metrics.Histogram(
                spec.name,
                description=spec.description,
                boundaries=list(spec.boundaries),
                tag_keys=spec.tag_keys,
            )

    def record(self, value: float, tags: Mapping[str, Any]) -> None:
        try:
            tags = {key: str(tags[key]) for key in self.spec.tag_keys}
            if self.spec.kind == "counter":
                if value > 0:
                    self._metric.inc(value, tags=tags)
            elif self.spec.kind == "gauge":
                self._metric.set(value, tags=tags)
            else:
                self._metric.observe(value, tags=tags)
        except Exception:  # a metric must never fail a request
            if not self._failed:
                self._failed = True
                logger.warning("recording metric %s failed", self.spec.name, exc_info=True)


class IngressMetrics:
    """What the HTTP layer records (see `service.api.observability.Recorder`)."""

    def __init__(self) -> None:
        self._requests = _Metric(REQUESTS)
        self._latency = _Metric(REQUEST_LATENCY)
        self._assignments = _Metric(AB_ASSIGNMENTS)
        self._feedback = _Metric(FEEDBACK)
        self._rating = _Metric(FEEDBACK_RATING)
        self._key_requests = _Metric(KEY_REQUESTS)
        self._key_characters = _Metric(KEY_CHARACTERS)
        self._key_rate_limited = _Metric(KEY_RATE_LIMITED)
        self._cache_hits = _Metric(CACHE_HITS)
        self._cache_misses = _Metric(CACHE_MISSES)

    def request(self, labels: Mapping[str, str], seconds: float) -> None:
        self._requests.record(1, labels)
        self._latency.record(seconds, labels)

    def assignment(self, labels: Mapping[str, str]) -> None:
        self._assignments.record(1, labels)

    def feedback(self, labels: Mapping[str, str], rating: int) -> None:
        self._feedback.record(1, {**labels, "rating": rating})
        self._rating.record(rating, labels)

    def usage(self, key: str, characters: int) -> None:
        """One request let through for the key named `key` (see `access.UsageRecorder`)."""
        self._key_requests.record(1, {"key": key})
        self._key_characters.record(characters, {"key": key})

    def rate_limited(self, key: str, limit: str) -> None:
        self._key_rate_limited.record(1, {"key": key, "limit": limit})

    def cache(self, model: str, hits: int, misses: int) -> None:
        """One lookup of a job's sentences in the translation cache (`api.cache`)."""
        if hits:
            self._cache_hits.record(hits, {"model": model})
        if misses:
            self._cache_misses.record(misses, {"model": model})


class ModelMetrics:
    """What a model replica records per decode call and per text."""

    def __init__(self, model_id: str, version: int):
        self._tags = {"model": model_id, "version": str(version)}
        self._queue = _Metric(QUEUE_WAIT)
        self._batch_size = _Metric(BATCH_SIZE)
        self._compute = _Metric(BATCH_COMPUTE)
        self._throughput = _Metric(DECODE_THROUGHPUT)
        self._input_tokens = _Metric(INPUT_TOKENS)
        self._output_tokens = _Metric(OUTPUT_TOKENS)
        self._texts = _Metric(TEXTS)
        self._failures = _Metric(FAILURES)
        self._info = _Metric(MODEL_INFO)
        self._stopped = threading.Event()  # never set: the thread ends with the process

    def set_info(self, *, arch: str, parameters: int, device: str, dtype: str) -> None:
        """Publish the model info gauge for as long as this replica lives."""
        tags = {**self._tags, "arch": arch, "parameters": parameters, "device": device}
        tags["dtype"] = dtype
        self._info.record(1, tags)

        def refresh() -> None:
            while not self._stopped.wait(_gauge_refresh_s()):
                self._info.record(1, tags)

        threading.Thread(target=refresh, name="model-info-gauge", daemon=True).start()

    def record_call(self, size: int, seconds: float, input_tokens: int, output_tokens: int) -> None:
        """One translate call that decoded `size` texts together."""
        self._batch_size.record(size, self._tags)
        self._compute.record(seconds, self._tags)
        self._texts.record(size, self._tags)
        self._input_tokens.record(input_tokens, self._tags)
        self._output_tokens.record(output_tokens, self._tags)
        if seconds > 0 and output_tokens > 0:
            self._throughput.record(output_tokens / seconds, self._tags)

    def record_step(self, size: int, seconds: float) -> None:
        """One step of continuous batching: `size` texts each advanced by one token."""
        self._batch_size.record(size, self._tags)
        self._compute.record(seconds, self._tags)
        if seconds > 0:
            self._throughput.record(size / seconds, self._tags)

    def record_texts(self, count: int, input_tokens: int, output_tokens: int) -> None:
        """Texts that continuous batching finished: counted once each, when they leave."""
        self._texts.record(count, self._tags)
        self._input_tokens.record(input_tokens, self._tags)
        self._output_tokens.record(output_tokens, self._tags)

    def record_queue(self, seconds: float) -> None:
        self._queue.record(seconds, self._tags)

    def record_failures(self, count: int) -> None:
        self._failures.record(count, self._tags)


class GenerationMetrics:
    """What the language model replica records per request, token and decode step."""

    def __init__(self, model_id: str, version: int):
        self._tags = {"model": model_id, "version": str(version)}
        self._first_token = _Metric(TIME_TO_FIRST_TOKEN)
        self._inter_token = _Metric(INTER_TOKEN_LATENCY)
        self._tokens = _Metric(GENERATED_TOKENS)
        self._prompt_tokens = _Metric(GENERATION_PROMPT_TOKENS)
        self._requests = _Metric(GENERATION_REQUESTS)
        self._batch_size = _Metric(GENERATION_BATCH_SIZE)

    def record_step(self, batch_size: int) -> None:
        """One decode step that advanced `batch_size` sequences by a token each."""
        self._batch_size.record(batch_size, self._tags)
        self._tokens.record(batch_size, self._tags)

    def record_first_token(self, seconds: float) -> None:
        self._first_token.record(seconds, self._tags)

    def record_inter_token(self, seconds: float) -> None:
        self._inter_token.record(seconds, self._tags)

    def record_accepted(self, prompt_tokens: int) -> None:
        self._prompt_tokens.record(prompt_tokens, self._tags)

    def record_finished(self, finish_reason: str) -> None:
        self._requests.record(1, {**self._tags, "finish_reason": finish_reason})
