"""Metric definitions, in one place.

Serving metrics use `ray.serve.metrics`, which tags each series with the deployment and replica
and exports it through Ray's Prometheus endpoint. They must be created inside a replica, so
`ServingMetrics` is built in the deployment's `__init__`, not at import time.
"""

from __future__ import annotations

# Seconds; decode batches on CPU run from milliseconds to tens of seconds.
LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class ServingMetrics:
    """What the batcher records per decode call and per text."""

    def __init__(self, model_id: str, version: int):
        from ray.serve import metrics

        self._tags = {"model": model_id, "version": str(version)}
        tag_keys = tuple(self._tags)
        self.batch_size = metrics.Histogram(
            "translation_batch_size",
            description="Texts decoded together in one translate call.",
            boundaries=BATCH_SIZE_BUCKETS,
            tag_keys=tag_keys,
        )
        self.queue_seconds = metrics.Histogram(
            "translation_queue_seconds",
            description="Per text: enqueued until its decode batch started.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=tag_keys,
        )
        self.compute_seconds = metrics.Histogram(
            "translation_batch_compute_seconds",
            description="Duration of one decode call.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=tag_keys,
        )
        self.texts = metrics.Counter(
            "translation_texts_total", description="Texts translated.", tag_keys=tag_keys
        )
        self.failures = metrics.Counter(
            "translation_failures_total",
            description="Texts that could not be decoded (a bug: each is logged).",
            tag_keys=tag_keys,
        )

    def record_call(self, size: int, compute_s: float) -> None:
        """One translate call that decoded `size` texts together."""
        self.batch_size.observe(size, tags=self._tags)
        self.compute_seconds.observe(compute_s, tags=self._tags)
        if size > 0:
            self.texts.inc(size, tags=self._tags)

    def record_queue(self, seconds: float) -> None:
        self.queue_seconds.observe(seconds, tags=self._tags)

    def record_failures(self, count: int) -> None:
        if count > 0:
            self.failures.inc(count, tags=self._tags)
