"""Per-request metrics at the HTTP seam: what was asked (route), who answered (model, version,
experiment variant), how it ended (status) and how long it took.

The API records through a `Recorder`; the Ray Serve ingress passes `service.metrics.IngressMetrics`,
the unit tests a `MemoryRecorder`, and without one nothing is recorded. Handlers name the model
that served a request with `label_request`; `MetricsMiddleware` reads those labels when the
response starts, so errors raised anywhere (422, 404, 413, 503, 500) are counted with the route
and whatever was known by then.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.contracts import ServedModel
from service.metrics import NONE

UNMATCHED_ROUTE = "unmatched"
CLIENT_GONE = "499"  # no response was sent: the client went away or the request was cancelled
_STATE_KEY = "metric_labels"


class Recorder(Protocol):
    def request(self, labels: Mapping[str, str], seconds: float) -> None:
        """labels: model, version, route, status, experiment, variant."""

    def assignment(self, labels: Mapping[str, str]) -> None:
        """labels: experiment, variant, model, version, assignment (sticky | random)."""

    def feedback(self, labels: Mapping[str, str], rating: int) -> None:
        """labels: experiment, variant, model, version."""


class NullRecorder:
    def request(self, labels: Mapping[str, str], seconds: float) -> None:
        pass

    def assignment(self, labels: Mapping[str, str]) -> None:
        pass

    def feedback(self, labels: Mapping[str, str], rating: int) -> None:
        pass


@dataclass
class MemoryRecorder:
    """Keeps every observation in lists; for tests."""

    requests: list[tuple[dict[str, str], float]] = field(default_factory=list)
    assignments: list[dict[str, str]] = field(default_factory=list)
    feedbacks: list[tuple[dict[str, str], int]] = field(default_factory=list)

    def request(self, labels: Mapping[str, str], seconds: float) -> None:
        self.requests.append((dict(labels), seconds))

    def assignment(self, labels: Mapping[str, str]) -> None:
        self.assignments.append(dict(labels))

    def feedback(self, labels: Mapping[str, str], rating: int) -> None:
        self.feedbacks.append((dict(labels), rating))


def variant_labels(
    model: ServedModel | None, experiment: str | None, variant: str | None
) -> dict[str, str]:
    return {
        "model": model.id if model else NONE,
        "version": str(model.version) if model else NONE,
        "experiment": experiment or NONE,
        "variant": variant or NONE,
    }


def label_request(
    request: Any,
    model: ServedModel | None,
    experiment: str | None = None,
    variant: str | None = None,
) -> None:
    """Name the model (and A/B variant) that serves this request, for its metrics."""
    request.state.metric_labels = variant_labels(model, experiment, variant)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status.

    Sits just inside the request-id middleware, so it sees the final status of every response
    the app sends, the 413s and 500s of the inner middlewares included.
    """

    def __init__(self, app: ASGIApp, recorder: Recorder, route_paths: Collection[str]):
        self.app = app
        self.recorder = recorder
        self.route_paths = frozenset(route_paths)  # the app's routes, for requests not routed

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if path:
            return path
        # Answered before routing (413, 400): name the route if the path is one.
        if scope.get("path") in self.route_paths:
            return scope["path"]
        return UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = CLIENT_GONE
        elapsed: float | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = str(message["status"])
                elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            labels = {
                **variant_labels(None, None, None),
                **state.get(_STATE_KEY, {}),
                "route": self._route(scope),
                "status": status,
            }
            seconds = elapsed if elapsed is not None else time.perf_counter() - started
            self.recorder.request(labels, seconds)
