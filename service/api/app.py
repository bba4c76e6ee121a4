"""`create_app`: the FastAPI application, assembled from the feature routers.

Called once per ingress replica (and by the unit tests with fake backends). The middlewares
wrap every route: request id outermost, so every response (a 413 or a 500 included) carries
it, then the metrics, then the catch-all 500, then the body-size limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from service.api.access import Access, AccessMiddleware, document_access, usage_router
from service.api.backends import Backends
from service.api.compare import compare_router
from service.api.errors import (
    BodySizeLimitMiddleware,
    CatchAllMiddleware,
    RequestIdMiddleware,
    install_error_handlers,
)
from service.api.experiments import (
    DEFAULT_FEEDBACK_CAPACITY,
    ABTesting,
    ExperimentConfig,
    feedback_router,
)
from service.api.files import files_router
from service.api.generation import generation_router
from service.api.libretranslate import libretranslate_router
from service.api.models import models_router
from service.api.observability import MetricsMiddleware, NullRecorder, Recorder
from service.api.playground import playground_router
from service.api.settings import ApiSettings
from service.api.translate import translate_router

API_VERSION = "1.0.0"

DESCRIPTION = """\
Spanish -> English machine translation with two models side by side: a Transformer and an
RNNSearch (Bahdanau et al. 2014) baseline, and text generation with a small language model.
Requests arriving together are decoded in shared, length-sorted batches.

Every error is `{"error": {"type", "message", "field"}}`; every response carries an
`X-Request-ID` header (yours, if you sent a valid one).
"""


def create_app(
    settings: ApiSettings,
    backends: Backends,
    *,
    behind_serve_proxy: bool = False,
    experiments: Sequence[ExperimentConfig] = (),
    recorder: Recorder | None = None,
    feedback_capacity: int = DEFAULT_FEEDBACK_CAPACITY,
    access: Access | None = None,
) -> FastAPI:
    """`behind_serve_proxy`: Ray Serve's proxy sets and echoes X-Request-ID itself.
    `experiments`, `recorder`, `feedback_capacity`: see service/api/experiments.py and
    service/api/observability.py. `access`: API keys and rate limits (service/api/access.py);
    None, or one with neither keys nor limits, lets every request through."""
    recorder = recorder or NullRecorder()
    ab = ABTesting(experiments, backends.catalog, recorder, feedback_capacity)

    app = FastAPI(
        title="Spanish-English translation service",
        version=API_VERSION,
        description=DESCRIPTION,
    )
    install_error_handlers(app)
    routers = [
        translate_router(settings, backends, ab),
        models_router(backends),
        libretranslate_router(
            settings, backends, ab, keys_required=access is not None and access.keys_required
        ),
        files_router(settings, backends, ab),
        feedback_router(ab),
        compare_router(settings, backends),
        generation_router(backends),
        usage_router(access),
        playground_router(ab),
    ]
    # add_middleware wraps: the last added runs first.
    if access is not None and access.limited:
        app.add_middleware(AccessMiddleware, access=access)
        document_access(app, access)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    paths = {route.path for router in routers for route in router.routes}
    app.add_middleware(MetricsMiddleware, recorder=recorder, route_paths=paths)
    app.add_middleware(RequestIdMiddleware, proxy_owns_header=behind_serve_proxy)
    for router in routers:
        app.include_router(router)
    return app
