"""Ray Serve: the model deployments, the HTTP ingress in front of them, and the app builder.

The rule: a model replica's module never imports the API layer (`service.api`), and the API
layer never imports Ray. Replicas and the ingress talk in the types and domain errors of
`service.contracts`; the ingress (`ingress.py`) is the one module on both sides.

One module per concern:

- `runtime.py`: where a replica runs (device, dtype, threads) and loading its model once;
  turning a manifest into the `ServedModel` the ingress routes by; deployment names;
- `translation.py`: the translation deployment, one per served model version;
- `batcher.py`: its queue, which batches the texts of concurrent requests into decode calls;
- `generation.py`: the language model deployment around the continuous-batching engine;
- `ingress.py`: the FastAPI app on Serve and its clients of the model deployments;
- `app.py`: the application builder (`import_path: service.serving.app:build_app`);
- `config.py`: the typed `args:` of serve_config.yaml; `launch.py`, `cli.py`: `python -m
  service serve` on a local Ray; `kuberay.py`: the KubeRay config derived from it.
"""
