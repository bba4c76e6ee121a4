"""The locustfile: it imports without the service, its scenarios and tags, its failure labels."""

from __future__ import annotations

import gzip
import inspect
import json
from types import SimpleNamespace

import pytest
from loadtest_modules import load_module

locustfile = load_module("locustfile")

SCENARIOS = {
    "translate": "TranslateUser",
    "libretranslate": "LibreTranslateUser",
    "compare": "CompareUser",
    "feedback": "FeedbackUser",
    "generate": "GenerateUser",
}


def user_classes():
    from locust import HttpUser

    return [
        value
        for value in vars(locustfile).values()
        if inspect.isclass(value)
        and issubclass(value, HttpUser)
        and not value.__dict__.get("abstract", False)
        and value is not HttpUser
    ]


def task_tags(user_class) -> set[str]:
    return set().union(*(set(t) for t in locustfile._tags_of(user_class)))


def test_every_scenario_has_a_user_class_tagged_with_it():
    classes = {cls.__name__: cls for cls in user_classes()}
    assert set(classes) == set(SCENARIOS.values())
    for scenario, name in SCENARIOS.items():
        cls = classes[name]
        assert task_tags(cls) == {scenario}, name
        assert all(tags for tags in locustfile._tags_of(cls)), f"{name} has an untagged task"
        assert cls.weight >= 1
        assert cls.host.startswith("http://127.0.0.1")
        assert cls.wait_time(SimpleNamespace()) <= 1.0
    assert classes["TranslateUser"].weight > classes["CompareUser"].weight


def test_tags_pick_the_classes_that_keep_tasks():
    classes = user_classes()
    names = lambda kept: sorted(c.__name__ for c in kept)  # noqa: E731
    assert names(locustfile.runnable_user_classes(classes, ["translate"], None)) == [
        "TranslateUser"
    ]
    assert names(locustfile.runnable_user_classes(classes, ["compare", "generate"], None)) == [
        "CompareUser",
        "GenerateUser",
    ]
    assert len(locustfile.runnable_user_classes(classes, None, None)) == len(SCENARIOS)
    assert "FeedbackUser" not in names(
        locustfile.runnable_user_classes(classes, None, ["feedback"])
    )


def test_sentences_come_from_the_test_split(tmp_path):
    assert len(locustfile.SENTENCES) > 100 or locustfile.SENTENCES == [
        s for s, _ in locustfile.FALLBACK_PAIRS
    ]
    split = tmp_path / "test.tsv.gz"
    with gzip.open(split, "wt", encoding="utf-8") as handle:
        handle.write("Gen 1:1\tEn el principio.\tIn the beginning.\nbad line\n")
    assert locustfile.read_pairs(split) == [("En el principio.", "In the beginning.")]
    assert locustfile.read_pairs(tmp_path / "missing.tsv.gz") == locustfile.FALLBACK_PAIRS


class FakeResponse:
    def __init__(self, status, body=None, headers=None, error=None):
        self.status_code = status
        self._body = body
        self.headers = headers or {}
        self.error = error
        self.outcome = None

    def json(self):
        if self._body is None:
            raise ValueError("not JSON")
        return self._body

    def failure(self, message):
        self.outcome = ("failure", message)

    def success(self):
        self.outcome = ("success", None)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            FakeResponse(503, {"error": {"type": "overloaded"}}, {"Retry-After": "1"}),
            "overloaded: 503 overloaded, Retry-After 1 s",
        ),
        (
            FakeResponse(503, None, {"Retry-After": "2"}),
            "overloaded: 503 from the Serve proxy, Retry-After 2 s",
        ),
        (
            FakeResponse(429, {"error": {"type": "rate_limited"}}),
            "overloaded: 429 rate_limited, no Retry-After",
        ),
        (FakeResponse(422, {"error": {"type": "validation_error"}}), "HTTP 422 validation_error"),
        (FakeResponse(404, {"detail": "Not Found"}), "HTTP 404 Not Found"),
        (FakeResponse(0, error=ConnectionError()), "connection error: ConnectionError"),
    ],
)
def test_failures_are_labelled_by_status_and_type(response, message):
    assert locustfile.judge(response) is None
    assert response.outcome == ("failure", message)


def test_judge_checks_the_body():
    ok = FakeResponse(200, {"translations": [{"text": "x"}]})
    assert locustfile.judge(ok, locustfile._translations(1)) == {"translations": [{"text": "x"}]}
    assert ok.outcome == ("success", None)
    short = FakeResponse(200, {"translations": []})
    assert locustfile.judge(short, locustfile._translations(2)) is None
    assert short.outcome == ("failure", "expected 2 translations")


def test_request_bodies_pass_the_services_own_validation():
    """Every body the scenarios send is valid for the API's request models, at the shipped
    limits: a load test that only measured 422s would be worse than none."""
    import random

    from service.api.compare import compare_request_model
    from service.api.experiments import FeedbackRequest
    from service.api.generation import completion_request_model, generate_request_model
    from service.api.libretranslate import libretranslate_request_model
    from service.api.settings import ApiSettings, GenerationSettings
    from service.api.translate import translate_request_model

    api, generation = ApiSettings(), GenerationSettings()
    rng = random.Random(0)
    knobs = [
        locustfile.Knobs(),
        locustfile.Knobs(models=("transformer", "rnnsearch"), max_beam=8, max_length=64),
    ]
    sentences = locustfile.SENTENCES
    for _ in range(50):
        for knob in knobs:
            one, some = rng.choice(sentences), rng.sample(sentences, k=rng.randint(2, 5))
            for texts in (one, some):
                body = locustfile.translate_body(texts, knob, rng)
                translate_request_model(api).model_validate_json(json.dumps(body))
                body = locustfile.compare_body(texts, knob, rng)
                compare_request_model(api).model_validate_json(json.dumps(body))
            for stream in (False, True):
                body = locustfile.generate_body(knob, stream=stream, rng=rng)
                generate_request_model(generation).model_validate_json(json.dumps(body))
            body = locustfile.completion_body(knob, rng)
            completion_request_model(generation).model_validate_json(json.dumps(body))
        for form in (False, True):
            body = locustfile.libretranslate_body(one, form=form)
            libretranslate_request_model(api).model_validate(body)
        FeedbackRequest.model_validate_json(json.dumps(locustfile.feedback_body("abc-1", rng)))


def test_a_comparison_with_a_failed_model_is_a_failure():
    ok = {"results": [{"model": "es-en/transformer"}, {"model": "es-en/rnnsearch"}]}
    assert locustfile._compared(ok) is None
    failed = {"results": [{"model": "es-en/rnnsearch", "error": {"type": "overloaded"}}]}
    assert locustfile._compared(failed) == "compare: es-en/rnnsearch answered overloaded"
    assert locustfile._compared({"results": []}) == "no results"
