"""The typed application builder: `import_path: service.serving.app:build_app` plus `args:`.

Model ids and versions are resolved against the store here, on the machine that builds the
application, so a config naming a missing model fails at deploy time with the store's message
instead of as a crashing replica; each deployment then loads exactly the version resolved here.
"""

# No `from __future__ import annotations`: Serve inspects build_app's annotation to turn the
# `args:` mapping into an AppArgs.

from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from service.api.catalog import ServedModel
from service.api.experiments import check_experiments
from service.serving.config import AppArgs
from service.serving.deployments import Ingress, LoadSpec, TranslatorDeployment
from service.serving.generation import bind_generator, created_timestamp

INGRESS_NAME = "Ingress"


def deployment_name(model_id: str) -> str:
    return model_id.replace("/", "-")


def build_app(args: AppArgs) -> Application:
    """What `serve run deploy/serve_config.yaml` calls."""
    return build_app_with_options(args)


def build_app_with_options(
    args: AppArgs | Mapping[str, Any],
    deployment_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Application:
    """`build_app`, plus per-deployment overrides in the form of the config file's
    `deployments:` entries (keyed by name), for launchers that call `serve.run` themselves."""
    from service.store import ModelStore

    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    options = {
        name: {k: v for k, v in values.items() if k != "name"}
        for name, values in (deployment_options or {}).items()
    }
    store = ModelStore(args.store_path())

    served: list[ServedModel] = []
    handles: dict[str, Application] = {}
    for spec in args.models:
        manifest = store.resolve(spec.id, spec.version)
        key = spec.deployment or deployment_name(manifest.id)
        if key in handles:
            raise ValueError(
                f"two served models share the deployment name {key!r}; give one a `deployment:`"
            )
        served.append(
            ServedModel(
                key=key,
                id=manifest.id,
                version=manifest.version,
                arch=manifest.arch,
                source=manifest.source_lang,
                target=manifest.target_lang,
                parameters=manifest.parameters,
                metrics=dict(manifest.metrics),
                max_output_tokens=manifest.config.get("max_positions"),
                default=args.default_model in (manifest.id, manifest.name),
                created=created_timestamp(manifest.created),
            )
        )
        load = LoadSpec(
            store=str(store.root),
            model_id=manifest.id,
            version=manifest.version,
            runtime=args.runtime,
            max_batch_tokens=spec.max_batch_tokens,
            max_source_tokens=spec.max_source_tokens,
        )
        handles[key] = TranslatorDeployment.options(name=key, **options.pop(key, {})).bind(load)

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
    )
