"""The typed application builder: `import_path: service.serving.app:build_app` plus `args:`.

Model ids and versions are resolved against the store here, on the machine that builds the
application, so a config naming a missing model fails at deploy time with the store's message
instead of as a crashing replica; each deployment then loads exactly the version resolved here.
The translation deployments, the language model's and the ingress are bound together with
`.bind()`; the ingress gets each model's `ServedModel` and deployment handle.
"""

# No `from __future__ import annotations`: Serve inspects build_app's annotation to turn the
# `args:` mapping into an AppArgs.

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ray.serve import Application

from service.api.experiments import check_experiments
from service.contracts import ServedModel
from service.serving.config import AppArgs
from service.serving.generation import GeneratorDeployment
from service.serving.ingress import Ingress, ServedGenerator
from service.serving.runtime import LoadSpec, deployment_name, served_model
from service.serving.translation import TranslatorDeployment

logger = logging.getLogger("ray.serve")

INGRESS_NAME = "Ingress"


def build_app(args: AppArgs) -> Application:
    """What `serve run deploy/serve_config.yaml` calls."""
    return build_app_with_options(args)


def bind_generator(
    args: AppArgs, store: Any, options: dict[str, dict[str, Any]]
) -> tuple[ServedGenerator, Application] | None:
    """The language model deployment of `args.generation`, bound, or None.

    A store without the model turns text generation off with a warning, unless the config
    says `required: true`; then the deploy fails with the store's message. Pops the
    deployment's entry from `options` (the config file's `deployments:` overrides) either way.
    """
    from service.store import ModelNotFound, VersionNotFound

    spec = args.generation
    if spec is None:
        return None
    try:
        manifest = store.resolve(spec.id, spec.version)
    except (ModelNotFound, VersionNotFound) as error:
        if spec.required:
            raise
        names = {spec.deployment or deployment_name(spec.id)}
        if spec.deployment is None and "/" not in spec.id:
            names |= {name for name in options if name.endswith(f"-{spec.id}")}
        for name in names:
            options.pop(name, None)
        logger.warning("text generation is off: %s", error)
        return None
    if manifest.arch != "lm":
        raise ValueError(
            f"generation.id {spec.id!r} is a {manifest.arch} model, not a language model (lm)"
        )
    key = spec.deployment or deployment_name(manifest.id)
    load = LoadSpec(str(store.root), manifest.id, manifest.version, args.runtime_for(spec))
    app = GeneratorDeployment.options(name=key, **options.pop(key, {})).bind(load)
    return ServedGenerator(served_model(manifest, key), spec.api_settings()), app


def build_app_with_options(
    args: AppArgs | Mapping[str, Any],
    deployment_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Application:
    """`build_app`, plus per-deployment overrides in the form of the config file's
    `deployments:` entries (keyed by name), for launchers that call `serve.run` themselves."""
    from service.store import ModelNotFound, ModelStore, VersionNotFound

    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    options = {
        name: {k: v for k, v in values.items() if k != "name"}
        for name, values in (deployment_options or {}).items()
    }
    store = ModelStore(args.store_path())

    served: list[ServedModel] = []
    handles: dict[str, Application] = {}
    for spec in args.models:
        try:
            manifest = store.resolve(spec.id, spec.version)
        except (ModelNotFound, VersionNotFound) as error:
            if spec.required:
                raise
            options.pop(spec.deployment or deployment_name(spec.id), None)
            logger.warning("not serving %s: %s", spec.id, error)
            continue
        key = spec.deployment or deployment_name(manifest.id)
        if key in handles:
            raise ValueError(
                f"two served models share the deployment name {key!r}; give one a `deployment:`"
            )
        default = args.default_model in (manifest.id, manifest.name)
        entry = served_model(manifest, key, default=default)
        served.append(replace(entry, max_source_tokens=spec.max_source_tokens))
        load = LoadSpec(str(store.root), manifest.id, manifest.version, args.runtime_for(spec))
        handles[key] = TranslatorDeployment.options(name=key, **options.pop(key, {})).bind(
            load, spec.max_batch_tokens, spec.max_source_tokens, spec.batching
        )

    # The language model behind /v1/generate and /v1/completions, if configured and stored.
    generator = bind_generator(args, store, options)
    if generator is not None:
        served_generator, generator_app = generator
        if served_generator.model.key in handles:
            raise ValueError(
                f"the language model and a translation model share the deployment name "
                f"{served_generator.model.key!r}; set generation.deployment"
            )
        handles[served_generator.model.key] = generator_app

    if not any(model.default for model in served):
        raise ValueError(
            f"default_model {args.default_model!r} is not among the served models "
            f"{[m.id for m in served]}"
        )
    check_experiments(args.experiments, served)
    ingress = Ingress.options(name=INGRESS_NAME, **options.pop(INGRESS_NAME, {}))
    if options:
        raise ValueError(
            f"deployment options for unknown deployments {sorted(options)}; "
            f"known: {sorted([*handles, INGRESS_NAME])}"
        )
    return ingress.bind(
        args.api,
        served,
        handles,
        generation=generator[0] if generator is not None else None,
        experiments=args.experiments,
        feedback_capacity=args.feedback_capacity,
        store=str(store.root),
        # Resolved here, where the working directory is the operator's.
        keys=args.api.keys.model_copy(update={"db": str(args.keys_db())}),
        rate_limit=args.api.rate_limit,
    )
