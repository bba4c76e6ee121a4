"""`python -m service train | eval | translate | generate`.

Registered by `service/__main__.py`; torch and the models load when a command runs, not on
`--help`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_ROOT = Path("model_store")

RootOption = Annotated[Path, typer.Option("--root", help="Model store directory.")]
ModelOption = Annotated[
    str,
    typer.Option("--model", help="Model id in the store: 'transformer' or 'es-en/transformer'."),
]
VersionOption = Annotated[
    int | None, typer.Option("--version", help="Model version; default: the newest.")
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype", help="float32, bfloat16 or int8; default: int8 on CPU, bfloat16 on GPUs."
    ),
]


def _command_line() -> str:
    return "python -m service " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def train_command(
    arch: Annotated[str, typer.Option(help="transformer, rnnsearch or lm.")] = "transformer",
    preset: Annotated[str, typer.Option(help="Model size preset: tiny or small.")] = "small",
    max_minutes: Annotated[float, typer.Option(help="Training wall-clock budget; 0: none.")] = 0.0,
    max_epochs: Annotated[int, typer.Option(help="Epoch limit.")] = 50,
    max_steps: Annotated[int, typer.Option(help="Update limit; 0: none.")] = 0,
    max_tokens: Annotated[int, typer.Option(help="Padded tokens per batch.")] = 4096,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 7e-4,
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps.")] = 1000,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing; default 0.1, for lm 0.")
    ] = None,
    clip_norm: Annotated[float, typer.Option(help="Gradient norm clip; 0: off.")] = 1.0,
    dropout: Annotated[float | None, typer.Option(help="Override the preset's dropout.")] = None,
    pack_tokens: Annotated[
        int, typer.Option(help="lm: pack verses into rows of at most N inputs; 0: one per row.")
    ] = 128,
    eval_every: Annotated[int, typer.Option(help="Steps between validations/checkpoints.")] = 500,
    patience: Annotated[int, typer.Option(help="Validations without improvement; 0: off.")] = 0,
    log_every: Annotated[int, typer.Option(help="Steps between log lines.")] = 50,
    valid_limit: Annotated[int, typer.Option(help="Validate on the first N pairs; 0: all.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    threads: Annotated[int, typer.Option(help="Torch threads; 0: torch default.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Run directory; default runs/<arch>.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from <out>/last.json.")
    ] = False,
    test_beam_size: Annotated[int, typer.Option(help="Beam size of the final test eval.")] = 4,
    test_limit: Annotated[
        int, typer.Option(help="Final eval on the first N test pairs; 0: all.")
    ] = 0,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the final test eval.")] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not save into the store.")] = False,
    model_id: Annotated[str | None, typer.Option(help="Store id; default es-en/<arch>.")] = None,
    version: Annotated[int | None, typer.Option(help="Store version; default: next free.")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Model store directory.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Corpus directory (the *.tsv.gz splits, spm.model).")
    ] = None,
    direction: Annotated[
        str, typer.Option(help="Translators: es-en or en-es (the corpus read the other way).")
    ] = "es-en",
    lm_languages: Annotated[
        str, typer.Option(help="lm: the corpus sides it learns, 'en', 'es' or 'es,en'.")
    ] = "es,en",
    init_from: Annotated[
        str | None,
        typer.Option(help="Start from a stored model, 'es-en/transformer@2' (same arch/size)."),
    ] = None,
    bf16: Annotated[
        bool, typer.Option("--bf16", help="bfloat16 autocast (fp32 weights and loss).")
    ] = False,
    test_split: Annotated[str, typer.Option(help="Split of the final test eval.")] = "test",
) -> None:
    """Train a translator or the language model, test the best checkpoint, save it to the store."""
    from service.training.trainer import TrainConfig, Trainer

    config = TrainConfig(
        arch=arch,
        preset=preset,
        max_tokens=max_tokens,
        lr=lr,
        warmup_steps=warmup_steps,
        label_smoothing=label_smoothing,
        clip_norm=clip_norm,
        dropout=dropout,
        pack_tokens=pack_tokens,
        max_epochs=max_epochs,
        max_steps=max_steps,
        max_minutes=max_minutes,
        eval_every=eval_every,
        patience=patience,
        log_every=log_every,
        valid_limit=valid_limit,
        seed=seed,
        device=device,
        threads=threads,
        out=str(out or Path("runs") / arch),
        resume=resume,
        test_beam_size=test_beam_size,
        test_limit=test_limit,
        evaluate_test=not no_eval,
        save=not no_save,
        model_id=model_id,
        version=version,
        store_root=str(root) if root else None,
        data_dir=str(data_dir) if data_dir else None,
        direction=direction,
        lm_languages=lm_languages,
        init_from=init_from,
        bf16=bf16,
        test_split=test_split,
    )
    result = Trainer(config, command=_command_line()).run()
    summary = {
        "out": str(result.out),
        "steps": result.steps,
        "best_step": result.best_step,
        "best_valid_loss": result.best_valid_loss,
        "stopped_because": result.stopped_because,
        "bleu": result.metrics.get("bleu"),
        "chrf": result.metrics.get("chrf"),
        "test_perplexity": result.metrics.get("test_perplexity"),
        "saved": None
        if result.manifest is None
        else {"id": result.manifest.id, "version": result.manifest.version},
    }
    typer.echo(json.dumps(summary, indent=2))


def _load(model: str, version: int | None, root: Path, device: str, dtype: str | None = None):
    """Load from the store, prepared for inference at `dtype` (None: the device's default), as
    the serving replicas load theirs (`runtime.load_replica_model`)."""
    from service.models.device import resolve_device
    from service.models.precision import DTYPES, prepare_for_inference
    from service.store import ModelStore

    if dtype is not None and dtype not in DTYPES:
        raise typer.BadParameter(f"choose from {', '.join(DTYPES)}", param_hint="--dtype")
    loaded = ModelStore(root).load(model, version, device=resolve_device(device))
    prepare_for_inference(loaded.model, dtype)
    return loaded


def eval_command(
    model: ModelOption = "es-en/transformer",
    version: VersionOption = None,
    split: Annotated[
        str, typer.Option(help="bible, general or ui (test: the same as bible), train or valid.")
    ] = "bible",
    beam_size: Annotated[int, typer.Option(help="Beam size; 1 is greedy.")] = 4,
    limit: Annotated[int, typer.Option(help="First N pairs only; 0: all.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    apertium: Annotated[
        bool | None,
        typer.Option(
            "--apertium/--no-apertium",
            help="Score Apertium on the same lines; default: when it is installed.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    dtype: DtypeOption = None,
    threads: Annotated[int, typer.Option(help="Torch threads; 0: torch default.")] = 0,
    root: RootOption = DEFAULT_ROOT,
    data_dir: Annotated[Path | None, typer.Option(help="Corpus directory.")] = None,
) -> None:
    """BLEU / chrF (sacrebleu), empty outputs, BLEU by source length and decode speed of a
    stored model, with Apertium scored on the same lines beside it.

    The model's manifest says its direction: an en->es model translates the English side.
    """
    import torch

    from service.decoding.search import DecodeOptions
    from service.decoding.translator import Translator
    from service.models.precision import model_dtype
    from service.store import ModelStoreError
    from service.text.corpus import load_split
    from service.training import apertium as peer
    from service.training.evaluate import evaluate, orient

    if threads > 0:
        torch.set_num_threads(threads)
    try:
        loaded = _load(model, version, root, device, dtype)
    except ModelStoreError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    source_lang, target_lang = loaded.manifest.source_lang, loaded.manifest.target_lang
    try:
        pairs = load_split(split, data_dir) if data_dir else load_split(split)
        pairs = orient(pairs, source_lang, target_lang)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if limit:
        pairs = pairs[:limit]
    with_apertium = apertium
    if with_apertium is None:
        with_apertium = peer.available(source_lang, target_lang)
        if not with_apertium:
            typer.echo(f"note: Apertium not scored; {peer.INSTALL_HINT}", err=True)
    peer_result = None
    if with_apertium:
        try:
            peer_result = peer.evaluate_apertium(pairs, source_lang, target_lang)
        except (peer.ApertiumError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
    result = evaluate(
        Translator(loaded.model, loaded.tokenizer),
        pairs,
        DecodeOptions(beam_size=beam_size),
        progress=sys.stderr.isatty(),
    )
    result = {
        "model": loaded.manifest.id,
        "version": loaded.manifest.version,
        "split": split,
        "dtype": model_dtype(loaded.model),
        "direction": f"{source_lang}-{target_lang}",
        **result,
        "apertium": None
        if peer_result is None
        else {
            key: peer_result[key]
            for key in (
                "bleu",
                "chrf",
                "empty",
                "sentences",
                "direction",
                "version",
                "bleu_signature",
                "chrf_signature",
                "wall_s",
            )
        },
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    typer.echo(
        f"{result['model']} v{result['version']} on {split} ({result['sentences']} sentences, "
        f"beam {beam_size}): BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  "
        f"empty {result['empty']}"
    )
    if peer_result is not None:
        typer.echo(
            f"apertium {peer_result['direction']} on the same lines: BLEU "
            f"{peer_result['bleu']:.2f}  chrF {peer_result['chrf']:.2f}  "
            f"empty {peer_result['empty']}  ({peer_result['version']}, "
            f"{peer_result['wall_s']:.1f} s)"
        )
    typer.echo(f"  {result['bleu_signature']}\n  {result['chrf_signature']}")
    for bucket in result["buckets"]:
        bleu = "-" if bucket["bleu"] is None else f"{bucket['bleu']:.2f}"
        typer.echo(
            f"  source words {bucket['bucket']:>6}: {bucket['count']:5d} sentences  BLEU {bleu}"
        )
    speed = result["speed"]
    typer.echo(
        f"  {speed['sentences_per_s']:.1f} sentences/s, {speed['target_tokens_per_s']:.0f} "
        f"target tokens/s, {speed['wall_s']:.1f} s"
    )


def translate_command(
    texts: Annotated[list[str], typer.Argument(help="Sentences in the model's source language.")],
    model: ModelOption = "es-en/transformer",
    version: VersionOption = None,
    beam_size: Annotated[int, typer.Option(help="Beam size; 1 is greedy.")] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    dtype: DtypeOption = None,
    root: RootOption = DEFAULT_ROOT,
) -> None:
    """Translate the given sentences with a stored model; one line out per input."""
    from service.decoding.search import DecodeOptions
    from service.decoding.translator import Translator

    loaded = _load(model, version, root, device, dtype)
    translations = Translator(loaded.model, loaded.tokenizer).translate(
        list(texts), DecodeOptions(beam_size=beam_size)
    )
    for translation in translations:
        typer.echo(translation.best.text)


def generate_command(
    prompt: Annotated[str, typer.Argument(help="Text to continue.")],
    model: Annotated[str, typer.Option("--model", help="Language model id in the store.")] = "lm",
    version: VersionOption = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 40,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0: greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="Sample from the k likeliest tokens; 0: all.")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    seed: Annotated[int | None, typer.Option(help="Sampling seed; default: random.")] = None,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="Stop at this text (repeatable).")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print tokens as they come.")
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    dtype: DtypeOption = None,
    root: RootOption = DEFAULT_ROOT,
) -> None:
    """Continue a prompt with a stored language model, running the generation engine locally.

    Prints the prompt, then the continuation; a seed makes the text repeatable.
    """
    from service.decoding.generation import GenerationEngine, SamplingParams

    try:
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop=tuple(stop or ()),
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    loaded = _load(model, version, root, device, dtype)
    if loaded.manifest.arch != "lm":
        raise typer.BadParameter(
            f"{loaded.manifest.id} is a {loaded.manifest.arch} model, not a language model",
            param_hint="--model",
        )
    engine = GenerationEngine(loaded.model, loaded.tokenizer, max_batch_size=1)
    try:
        engine.add("cli", prompt, params)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="PROMPT / --max-new-tokens") from None
    pieces = []
    if stream:
        typer.echo(prompt, nl=False)
    while engine.has_work():
        for output in engine.step():
            pieces.append(output.text)
            if stream and output.text:
                typer.echo(output.text, nl=False)
                sys.stdout.flush()
    typer.echo("" if stream else prompt + "".join(pieces))
