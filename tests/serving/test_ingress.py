"""The ingress's side of the seam, without a cluster: domain errors cross Ray's pickling intact,
and every transport failure of a model deployment becomes one domain error."""

from __future__ import annotations

import pickle

import pytest
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from service.api.errors import api_error
from service.contracts import (
    DecodeFailed,
    ModelUnavailable,
    Overloaded,
    PromptTooLong,
    ServedModel,
    Timeout,
)
from service.serving.ingress import domain_error

MODEL = ServedModel("es-en-lm", "es-en/lm", 1, "lm", "es", "en", 10)


@pytest.mark.parametrize(
    "error",
    [
        PromptTooLong("too long", field="prompt"),
        Overloaded("busy", retry_after_s=2),
        ModelUnavailable("restarting", retry_after_s=1),
        Timeout("slow"),
        DecodeFailed("boom"),
    ],
)
def test_domain_errors_survive_pickling(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.message, back.field, back.retry_after_s) == (
        error.message,
        error.field,
        error.retry_after_s,
    )


def test_transport_errors_become_domain_errors():
    full = domain_error(BackPressureError(num_queued_requests=1, max_queued_requests=1), MODEL, 3)
    assert isinstance(full, Overloaded) and full.retry_after_s == 3
    assert (api_error(full).status, api_error(full).headers) == (503, {"Retry-After": "3"})
    gone = domain_error(RayActorError(), MODEL, 1)
    assert isinstance(gone, ModelUnavailable)
    assert (api_error(gone).status, api_error(gone).type) == (503, "model_unavailable")
    cause = PromptTooLong("too long", field="prompt")
    wrapped = RayTaskError("generate_stream", "traceback", cause).as_instanceof_cause()
    assert domain_error(wrapped, MODEL, 1) is cause
    assert api_error(wrapped).status == 422  # a wrapped one maps like its cause, too
    bug = RuntimeError("bug")
    assert domain_error(bug, MODEL, 1) is bug
