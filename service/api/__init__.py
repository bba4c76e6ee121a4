"""The HTTP API: FastAPI routes, pydantic request and response models, error mapping.

The rule: this package never imports Ray, and a model replica's module never imports it (the
ingress, `service.serving.ingress`, is the one Ray module that does). Work is handed to the
`Backends` given to `create_app`, in the types of `service.contracts`; failures come back as
that module's domain errors, and `errors.py` alone turns them into HTTP statuses.

One module per concern:

- `app.py`: `create_app`, the routers and middlewares put together;
- `translate.py`: `POST /v1/translate`, its models, and the decode options and response
  building the other translation routes reuse;
- `libretranslate.py`: LibreTranslate's `POST /translate` and `GET /languages`;
- `generation.py`: `POST /v1/generate` and OpenAI's `POST /v1/completions`, plain or streamed;
- `compare.py`: `POST /v1/compare`, several models side by side;
- `experiments.py`: A/B experiments (configuration, assignment) and `POST /v1/feedback`;
- `models.py`: `GET /v1/models`, `/healthz`, `/readyz`;
- `backends.py`: the `Backends` protocols; `catalog.py`: which served model a request picks;
- `settings.py`: the limits operators set; `schemas.py`: schema pieces several routes share;
- `errors.py`: error bodies, the status of every error, and the request-id, size-limit and
  catch-all middlewares; `observability.py`: per-request metrics; `sse.py`: Server-Sent Events.
"""
