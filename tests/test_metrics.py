"""service/metrics.py without Ray: the recorders pass declared tags, and a failing metric is
logged, never raised. tests/serving/test_prometheus.py checks the real export."""

from __future__ import annotations

import logging

import pytest

from service import metrics


class FakeMetric:
    def __init__(self, name, description="", boundaries=None, tag_keys=()):
        self.name, self.tag_keys, self.calls = name, tag_keys, []

    def _call(self, kind, value, tags):
        assert set(tags) == set(self.tag_keys), (self.name, tags)
        assert all(isinstance(v, str) for v in tags.values())
        self.calls.append((kind, value, tags))

    def inc(self, value, tags):
        self._call("inc", value, tags)

    def observe(self, value, tags):
        self._call("observe", value, tags)

    def set(self, value, tags):
        self._call("set", value, tags)


@pytest.fixture
def fake_ray(monkeypatch):
    from ray.serve import metrics as serve_metrics

    created: dict[str, FakeMetric] = {}

    def factory(name, **kwargs):
        created[name] = FakeMetric(name, **kwargs)
        return created[name]

    for kind in ("Counter", "Histogram", "Gauge"):
        monkeypatch.setattr(serve_metrics, kind, factory)
    return created


def test_ingress_metrics(fake_ray):
    recorder = metrics.IngressMetrics()
    labels = {"model": "es-en/transformer", "version": "1", "experiment": "x", "variant": "a"}
    recorder.request({**labels, "route": "/v1/translate", "status": "200"}, 0.2)
    recorder.assignment({**labels, "assignment": "sticky"})
    recorder.feedback(labels, 4)
    assert fake_ray["translation_requests_total"].calls[0][:2] == ("inc", 1)
    assert fake_ray["translation_request_latency_seconds"].calls[0][:2] == ("observe", 0.2)
    assert fake_ray["translation_ab_assignments_total"].calls[0][2]["assignment"] == "sticky"
    assert fake_ray["translation_feedback_total"].calls[0][2]["rating"] == "4"
    assert fake_ray["translation_feedback_rating"].calls[0][:2] == ("observe", 4)


def test_model_metrics(fake_ray):
    recorder = metrics.ModelMetrics("es-en/rnnsearch", 2)
    recorder.record_call(size=4, seconds=0.5, input_tokens=40, output_tokens=30)
    recorder.record_call(size=1, seconds=0.0, input_tokens=5, output_tokens=0)
    recorder.record_queue(0.01)
    recorder.record_failures(0)
    assert [c[1] for c in fake_ray["translation_batch_size"].calls] == [4, 1]
    assert [c[1] for c in fake_ray["translation_output_tokens_total"].calls] == [30]  # no inc(0)
    assert [c[1] for c in fake_ray["translation_decode_throughput_tokens_per_second"].calls] == [60]
    assert fake_ray["translation_failures_total"].calls == []
    assert fake_ray["translation_queue_wait_seconds"].calls[0][2] == {
        "model": "es-en/rnnsearch",
        "version": "2",
    }


def test_a_failing_metric_is_logged_once_and_never_raises(fake_ray, caplog):
    recorder = metrics.IngressMetrics()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        recorder.request({"model": "m"}, 0.1)  # tags missing
        recorder.request({"model": "m"}, 0.1)
    assert fake_ray["translation_requests_total"].calls == []
    warnings = [r for r in caplog.records if "translation_requests_total" in r.getMessage()]
    assert len(warnings) == 1
