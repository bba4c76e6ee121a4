"""Our decoder against real peers on identical weights: Hugging Face `generate` and CTranslate2.

One Transformer is exported to a MarianMT directory (what `transformers` loads) and from there
to a CTranslate2 model. All three engines then translate the same length-sorted batches of the
same token ids with the same search settings and thread count, so the differences measured are
the implementations', not the models'. Tokenization is done once, before any clock starts: the
engines are timed on ids (pieces for CTranslate2, whose interface is token strings) in and ids
out.

CTranslate2's stock Marian converter assumes OPUS-MT's layout, where `<pad>` is the *last*
vocabulary entry that the converter strips from every embedding and projection matrix. Our
models keep `<pad>` at id 0 (SentencePiece's convention), so the stock converter drops a real
word's row and fails validation ("Source vocabulary 0 has size V but the model expected V-1").
`convert_to_ctranslate2` therefore runs the same loader code minus that step, with our piece
strings as the vocabulary and the decoder started from the `<pad>` embedding exactly as
Hugging Face and we start it (instead of CTranslate2's Marian shortcut, a zero vector, which is
only equal while that embedding row is zero).
"""

from __future__ import annotations

import copy
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from service.bench.machine import processor_name
from service.decoding.search import DEFAULT_MIN_LENGTH, DecodeOptions, generate
from service.models import build_model, make_config
from service.models.precision import DTYPES, prepare_for_inference, quantize_linears
from service.models.transformer import Transformer
from service.store.marian import export_marian

ENGINES = ("ours", "huggingface", "ctranslate2")
# The targets on CPU, at every matched precision: ours at least 3x Hugging Face
# generate and at least as fast as CTranslate2.
TARGET_VS_HUGGINGFACE = 3.0
TARGET_VS_CTRANSLATE2 = 1.0
# Our inference dtype -> CTranslate2's compute_type for the same precision.
CTRANSLATE2_COMPUTE_TYPES = {"float32": "float32", "bfloat16": "bfloat16", "int8": "int8"}
DEFAULT_STORE = Path(__file__).resolve().parents[2] / "model_store"


@dataclass(frozen=True)
class Subject:
    """The model under test and the identical inputs every engine translates."""

    model: Transformer
    pieces: list[str]  # id -> token string; CTranslate2's vocabulary
    sources: list[list[int]]  # token ids, EOS last
    description: str  # "es-en/transformer v3" or "random small"
    spm_path: Path | None = None  # written into the MarianMT export when it is a plain spm
    fixed_length: int | None = None  # random subjects: min_length = max_length = this


@dataclass(frozen=True)
class EngineResult:
    seconds: float  # wall time of the best pass over all batches
    cpu_seconds: float  # CPU time of the best pass: less sensitive to other jobs' load
    sentences_per_s: float
    target_tokens: int  # generated tokens, EOS excluded
    target_tokens_per_s: float
    agreement: float  # share of sentences whose best hypothesis equals ours, token for token


@dataclass(frozen=True)
class PeersBenchmark:
    model: str
    sentences: int
    source_tokens: int
    batch_size: int
    beam_size: int
    max_length: int
    min_length: int
    length_penalty: float
    early_stopping: bool  # ours and Hugging Face; CTranslate2's beam search has one behaviour
    threads: int
    repeats: int
    engines: dict[str, EngineResult]
    ours_vs_huggingface: float  # their wall seconds / ours: > 1 means we are faster
    ours_vs_ctranslate2: float
    ours_vs_huggingface_cpu: float  # the same in CPU seconds
    ours_vs_ctranslate2_cpu: float
    versions: dict[str, str]
    machine: str
    load_average: tuple[float, float, float]  # 1-minute load before, 1-minute load after, cores
    notes: list[str] = field(default_factory=list)
    dtype: str = "float32"  # ours (`precision.prepare_for_inference`) and Hugging Face
    ctranslate2_compute_type: str = "float32"  # the dtype's match, where CTranslate2 has it

    def to_dict(self) -> dict:
        return asdict(self)


# The subject: a stored model and the test split, or a random one.


def random_subject(
    preset: str = "small",
    vocab_size: int = 8000,
    sentences: int = 64,
    seed: int = 0,
    output_length: int = 40,
    min_source: int = 6,
    max_source: int = 40,
) -> Subject:
    """A random Transformer, synthetic piece strings and random sources of varied lengths.

    Random weights almost never choose EOS, so lengths are pinned instead (min_length =
    max_length = `output_length`, as `bench decode` does): every engine does the same number
    of steps. (A large EOS bias with min_length would end sentences too, but it dominates
    every row's softmax normaliser, and CTranslate2's beams then parted from ours and Hugging
    Face's on 58% of random sentences, for reasons no trained model meets.)
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model("transformer", make_config("transformer", preset, vocab_size)).eval()
    config = model.config
    special = {config.pad_id: "<pad>", 1: "<unk>", config.eos_id: "</s>"}
    pieces = [special.get(i, f"\u2581w{i}") for i in range(vocab_size)]
    lengths = torch.randint(min_source, max_source + 1, (sentences,), generator=generator)
    sources = [
        torch.randint(3, vocab_size, (int(n) - 1,), generator=generator).tolist() + [config.eos_id]
        for n in lengths
    ]
    return Subject(
        model,
        pieces,
        sources,
        f"random {preset} (seed {seed}, {output_length} target tokens each)",
        fixed_length=output_length,
    )


def stored_subject(
    model_id: str = "es-en/transformer",
    version: int | None = None,
    split: str = "test",
    limit: int | None = 256,
    store_root: Path = DEFAULT_STORE,
    data_dir: Path | None = None,
) -> Subject:
    """A verified model from the store and the first `limit` sentences of a corpus split,
    tokenized the way the serving Translator tokenizes them."""
    from service.decoding.translator import Translator
    from service.store.registry import ModelStore
    from service.text.corpus import DEFAULT_DATA_DIR, load_split

    loaded = ModelStore(store_root).load(model_id, version)
    model = loaded.model
    if not isinstance(model, Transformer):
        raise ValueError(f"{loaded.manifest.id} is a {loaded.manifest.arch}, not a transformer")
    tokenizer = loaded.tokenizer
    pairs = load_split(split, data_dir or DEFAULT_DATA_DIR)[:limit]
    translator = Translator(model, tokenizer)
    sources = [translator.encode(pair.source) for pair in pairs]
    pieces, spm_path = _pieces_of(loaded, model.config.vocab_size)
    return Subject(
        model,
        pieces,
        sources,
        f"{loaded.manifest.id} v{loaded.manifest.version}",
        spm_path,
    )


def _pieces_of(loaded, vocab_size: int) -> tuple[list[str], Path | None]:
    """Token strings by id: the tokenizer's own pieces, so the CTranslate2 model is usable on
    its own; ids the tokenizer lacks get unique placeholders."""
    if loaded.manifest.tokenizer == "marian_vocab":
        by_id = loaded.tokenizer.pieces  # {id: piece}
        spm_path = None
    else:
        import sentencepiece

        spm = sentencepiece.SentencePieceProcessor(model_file=str(loaded.tokenizer_path))
        by_id = {i: spm.id_to_piece(i) for i in range(spm.get_piece_size())}
        spm_path = loaded.tokenizer_path
    pieces = [by_id.get(i, f"<extra_{i}>") for i in range(vocab_size)]
    if len(set(pieces)) != len(pieces):
        raise ValueError("the tokenizer maps two ids to the same piece; CTranslate2 needs unique")
    return pieces, spm_path


# Exports.


def convert_to_ctranslate2(
    hf_dir: Path | str,
    ct2_dir: Path | str,
    pieces: Sequence[str],
    *,
    quantization: str = "float32",
) -> Path:
    """Convert a MarianMT directory written by `export_marian` into a CTranslate2 model.

    `pieces[i]` is the token string of id i. See the module docstring for why this is not
    `TransformersConverter(hf_dir).convert(...)`.
    """
    import ctranslate2
    import transformers
    from ctranslate2.converters.transformers import BartLoader, MarianMTLoader

    hf_dir, ct2_dir = Path(hf_dir), Path(ct2_dir)
    pieces = list(pieces)

    class PadFirstMarianLoader(MarianMTLoader):
        def get_model_spec(self, model):
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return BartLoader.get_model_spec(self, model)  # without the pad-row removal

        def set_decoder(self, spec, decoder):
            BartLoader.set_decoder(self, spec, decoder)
            spec.start_from_zero_embedding = False

        def set_config(self, config, model, tokenizer):
            config.eos_token = pieces[model.config.eos_token_id]
            config.decoder_start_token = pieces[model.config.decoder_start_token_id]
            if "<unk>" in pieces:
                config.unk_token = "<unk>"

        def get_vocabulary(self, model, tokenizer):
            if len(pieces) != model.config.vocab_size:
                raise ValueError(
                    f"{len(pieces)} pieces for a vocabulary of {model.config.vocab_size}"
                )
            return pieces

    class Converter(ctranslate2.converters.Converter):
        def _load(self):
            transformers.utils.logging.disable_progress_bar()
            with torch.no_grad():
                model = transformers.MarianMTModel.from_pretrained(hf_dir, dtype=torch.float32)
                return PadFirstMarianLoader()(model, None)

    return Path(Converter().convert(str(ct2_dir), quantization=quantization, force=True))


def export_peers(subject: Subject, workdir: Path) -> tuple[Path, Path]:
    """Write the MarianMT and CTranslate2 copies of the subject's model under `workdir`."""
    hf_dir = export_marian(subject.model, workdir / "marian", tokenizer_path=subject.spm_path)
    ct2_dir = convert_to_ctranslate2(hf_dir, workdir / "ctranslate2", subject.pieces)
    return hf_dir, ct2_dir


# Engines: each maps a batch of source ids to the best hypothesis' ids (EOS excluded).

Batch = list[list[int]]
Engine = Callable[[Batch], list[list[int]]]


def _padded(batch: Batch, pad_id: int) -> torch.Tensor:
    width = max(len(s) for s in batch)
    return torch.tensor([s + [pad_id] * (width - len(s)) for s in batch], dtype=torch.long)


def ours_engine(model: Transformer, options: DecodeOptions) -> Engine:
    pad_id = model.config.pad_id

    def run(batch: Batch) -> list[list[int]]:
        return [nbest[0].tokens for nbest in generate(model, _padded(batch, pad_id), options)]

    return run


def huggingface_engine(hf_dir: Path, options: DecodeOptions, dtype: str = "float32") -> Engine:
    """`MarianMTModel.generate` with our search semantics: no padding emitted, no forced EOS.

    bfloat16 loads the weights in bfloat16; int8 swaps every `nn.Linear` (lm_head included)
    for the same dynamically quantized oneDNN layer ours uses.
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    hf = transformers.MarianMTModel.from_pretrained(hf_dir, dtype=torch_dtype).eval()
    if dtype == "int8":
        quantize_linears(hf)
    pad_id, eos_id = hf.config.pad_token_id, hf.config.eos_token_id
    # A stopping rule means nothing to greedy search, and transformers warns when given one.
    beam = {"early_stopping": options.early_stopping} if options.beam_size > 1 else {}

    def run(batch: Batch) -> list[list[int]]:
        src = _padded(batch, pad_id)
        with torch.inference_mode():
            sequences = hf.generate(
                input_ids=src,
                attention_mask=(src != pad_id).long(),
                do_sample=False,
                num_beams=options.beam_size,
                max_new_tokens=options.max_length,
                min_new_tokens=options.min_length,
                length_penalty=options.length_penalty,
                **beam,
                bad_words_ids=[[pad_id]],
                forced_eos_token_id=None,
                use_cache=True,
            ).tolist()
        return [_strip_hf(s, pad_id, eos_id) for s in sequences]

    return run


def _strip_hf(sequence: list[int], pad_id: int, eos_id: int) -> list[int]:
    body = sequence[1:]  # the decoder start token
    if eos_id in body:
        body = body[: body.index(eos_id)]
    return [t for t in body if t != pad_id]


def ctranslate2_engine(
    ct2_dir: Path,
    pieces: Sequence[str],
    options: DecodeOptions,
    threads: int,
    pad_piece: str,
    compute_type: str = "float32",
) -> Engine:
    import ctranslate2

    translator = ctranslate2.Translator(
        str(ct2_dir),
        device="cpu",
        inter_threads=1,
        intra_threads=threads,
        compute_type=compute_type,
    )
    ids = {piece: i for i, piece in enumerate(pieces)}

    def run(batch: Batch) -> list[list[int]]:
        results = translator.translate_batch(
            [[pieces[i] for i in source] for source in batch],
            beam_size=options.beam_size,
            num_hypotheses=1,
            length_penalty=options.length_penalty,
            max_decoding_length=options.max_length,
            min_decoding_length=options.min_length,
            suppress_sequences=[[pad_piece]],
            max_input_length=0,
        )
        return [[ids[p] for p in result.hypotheses[0]] for result in results]

    return run


# The benchmark.


def length_sorted_batches(sources: Sequence[list[int]], batch_size: int) -> list[Batch]:
    """Batches of similar lengths: what each engine's own batcher would make."""
    order = sorted(range(len(sources)), key=lambda i: (len(sources[i]), i))
    batches = [
        [sources[i] for i in order[start : start + batch_size]]
        for start in range(0, len(order), batch_size)
    ]
    return batches


@dataclass
class Timing:
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the whole process: work done, whatever the other load
    outputs: list[list[int]] = field(default_factory=list)


def time_engines(
    engines: dict[str, Engine], batches: list[Batch], repeats: int, label: str = "peers"
) -> dict[str, Timing]:
    """Each engine's best pass over all batches (wall and CPU seconds), after a warm-up.

    Engines take turns batch by batch, so on a machine shared with other jobs every engine
    meets the same spells of load instead of one engine drawing a quiet minute and the next
    a busy one.
    """
    for engine in engines.values():
        engine(batches[0][:2])
    best = {name: Timing(float("inf"), float("inf")) for name in engines}
    progress = tqdm(total=repeats * len(batches), desc=label, unit="batch", leave=False)
    for _ in range(repeats):
        passes = {name: Timing() for name in engines}
        for batch in batches:
            progress.update()
            for name, engine in engines.items():
                wall, cpu = time.perf_counter(), time.process_time()
                outputs = engine(batch)
                passes[name].wall_s += time.perf_counter() - wall
                passes[name].cpu_s += time.process_time() - cpu
                passes[name].outputs.extend(outputs)
        for name, timing in passes.items():
            best[name] = Timing(
                min(best[name].wall_s, timing.wall_s),
                min(best[name].cpu_s, timing.cpu_s),
                timing.outputs,
            )
    progress.close()
    return best


def ctranslate2_compute_type(dtype: str) -> str:
    """CTranslate2's compute_type for our `dtype`, or float32 where its CPU build lacks it
    (CTranslate2 4.8 has no bfloat16 on CPU)."""
    import ctranslate2

    wanted = CTRANSLATE2_COMPUTE_TYPES[dtype]
    return wanted if wanted in ctranslate2.get_supported_compute_types("cpu") else "float32"


def library_versions() -> dict[str, str]:
    import ctranslate2
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "ctranslate2": ctranslate2.__version__,
        "python": platform.python_version(),
    }


def machine_description(threads: int) -> str:
    cores = os.cpu_count()
    return f"{processor_name()}, {cores} cores, {threads} thread{'s' if threads > 1 else ''}"


def benchmark_peers(
    subject: Subject,
    *,
    batch_size: int = 32,
    beam_size: int = 4,
    max_length: int = 256,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    threads: int | None = None,
    repeats: int = 1,
    engines: Sequence[str] = ENGINES,
    workdir: Path | None = None,
    dtype: str = "float32",
) -> PeersBenchmark:
    """Export, convert, translate the subject's sources with each engine; time and compare.

    Every engine gets identical batches; the reported time is the best of `repeats` passes.
    Ratios are time ratios (their seconds / ours) because the engines' outputs, and hence
    their token counts, may differ slightly. CTranslate2's beam search stops a sentence as
    `early_stopping=True` does, the default here (on the trained model the three engines'
    outputs are then identical); with False, the decoders' default, ours and Hugging Face
    search a little longer.

    `dtype` is ours and Hugging Face's inference precision; CTranslate2 runs the matching
    `compute_type` (`ctranslate2_compute_type`). Every engine starts from the float32 weights.
    """
    if "ours" not in engines:
        raise ValueError("agreement is measured against ours; include it in engines")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    compute_type = ctranslate2_compute_type(dtype) if "ctranslate2" in engines else dtype
    with torch_threads(threads):
        threads = torch.get_num_threads()
        model = subject.model.eval()  # exported as it is; ours decodes a prepared copy
        prepared = prepare_for_inference(copy.deepcopy(model), dtype)
        max_length = subject.fixed_length or max_length
        min_length = subject.fixed_length or DEFAULT_MIN_LENGTH
        options = DecodeOptions(
            beam_size=beam_size,
            max_length=max_length,
            min_length=min_length,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
        )
        batches = length_sorted_batches(subject.sources, batch_size)
        load_before = os.getloadavg()[0]

        with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
            hf_dir, ct2_dir = export_peers(subject, Path(workdir or tmp))
            runners: dict[str, Callable[[], Engine]] = {
                "ours": lambda: ours_engine(prepared, options),
                "huggingface": lambda: huggingface_engine(hf_dir, options, dtype),
                "ctranslate2": lambda: ctranslate2_engine(
                    ct2_dir,
                    subject.pieces,
                    options,
                    threads,
                    subject.pieces[model.config.pad_id],
                    compute_type,
                ),
            }
            timings = time_engines(
                {name: runners[name]() for name in engines},
                batches,
                repeats,
                f"peers, {search_label(beam_size, early_stopping)}, {dtype}",
            )

        ours = timings["ours"]
        results = {}
        for name, timing in timings.items():
            tokens = sum(len(o) for o in timing.outputs)
            same = sum(a == b for a, b in zip(timing.outputs, ours.outputs, strict=True))
            results[name] = EngineResult(
                seconds=round(timing.wall_s, 3),
                cpu_seconds=round(timing.cpu_s, 3),
                sentences_per_s=round(len(timing.outputs) / timing.wall_s, 2),
                target_tokens=tokens,
                target_tokens_per_s=round(tokens / timing.wall_s, 1),
                agreement=round(same / len(timing.outputs), 4),
            )

        def ratio(other: str, cpu: bool = False) -> float:
            if other not in timings:
                return float("nan")
            if cpu:
                return round(timings[other].cpu_s / ours.cpu_s, 2)
            return round(timings[other].wall_s / ours.wall_s, 2)

        return PeersBenchmark(
            model=subject.description,
            sentences=len(subject.sources),
            source_tokens=sum(len(s) for s in subject.sources),
            batch_size=batch_size,
            beam_size=beam_size,
            max_length=max_length,
            min_length=min_length,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
            threads=threads,
            repeats=repeats,
            engines=results,
            ours_vs_huggingface=ratio("huggingface"),
            ours_vs_ctranslate2=ratio("ctranslate2"),
            ours_vs_huggingface_cpu=ratio("huggingface", cpu=True),
            ours_vs_ctranslate2_cpu=ratio("ctranslate2", cpu=True),
            versions=library_versions(),
            machine=machine_description(threads),
            load_average=(round(load_before, 2), round(os.getloadavg()[0], 2), os.cpu_count() or 0),
            notes=[
                f"batches of {batch_size} length-sorted sentences; tokenization not timed",
                "engines take turns batch by batch; CPU seconds count every thread of the process",
            ]
            + (
                [f"CTranslate2 has no {dtype} on CPU: it ran {compute_type}"]
                if compute_type != CTRANSLATE2_COMPUTE_TYPES[dtype]
                else []
            ),
            dtype=dtype,
            ctranslate2_compute_type=compute_type,
        )


@contextmanager
def torch_threads(threads: int | None):
    """Run with `threads` intra-op threads (None: unchanged), restoring the setting after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_subject(
    model_id: str = "es-en/transformer",
    version: int | None = None,
    *,
    split: str = "test",
    limit: int | None = 256,
    random: bool = False,
    preset: str = "small",
    output_length: int = 40,
    store_root: Path = DEFAULT_STORE,
) -> Subject:
    """The stored model (and split) unless `random`, or a random model when none is stored."""
    from service.store.errors import ModelNotFound

    if not random:
        try:
            return stored_subject(model_id, version, split, limit, store_root)
        except ModelNotFound:
            pass  # the store has no such model yet: fall back to a random one, and say so
    subject = random_subject(preset, sentences=limit or 64, output_length=output_length)
    if not random:
        return Subject(
            subject.model,
            subject.pieces,
            subject.sources,
            subject.description + f"; no {model_id!r} in {store_root}",
            fixed_length=subject.fixed_length,
        )
    return subject


ENGINE_TITLES = {
    "ours": "ours (`service.decoding`)",
    "huggingface": "Hugging Face `MarianMTModel.generate`",
    "ctranslate2": "CTranslate2 `Translator.translate_batch`",
}


def search_label(beam_size: int, early_stopping: bool) -> str:
    if beam_size == 1:
        return "greedy"
    return f"beam {beam_size}, early_stopping={early_stopping}"


def peers_markdown(results: Sequence[PeersBenchmark]) -> str:
    """A markdown table per search setting: throughput, time ratio to ours, agreement."""
    blocks = []
    for r in results:
        lines = [
            f"{search_label(r.beam_size, r.early_stopping)}, {r.dtype}, batch {r.batch_size}, "
            f"{r.sentences} sentences ({r.source_tokens} source tokens), "
            f"max_length {r.max_length}, length_penalty {r.length_penalty}, "
            f"{r.threads} thread(s), best of {r.repeats}; model: {r.model}; load average "
            f"{r.load_average[0]} -> {r.load_average[1]} on {r.load_average[2]} cores",
            "",
            "| engine | wall s | CPU s | sentences/s | target tokens/s "
            "| ours faster by (wall) | ours faster by (CPU) | identical to ours |",
            "|---|---|---|---|---|---|---|---|",
        ]
        ours = r.engines["ours"]
        for name, e in r.engines.items():
            wall = "—" if name == "ours" else f"{e.seconds / ours.seconds:.2f}x"
            cpu = "—" if name == "ours" else f"{e.cpu_seconds / ours.cpu_seconds:.2f}x"
            precision = r.ctranslate2_compute_type if name == "ctranslate2" else r.dtype
            lines.append(
                f"| {ENGINE_TITLES.get(name, name)} ({precision}) | {e.seconds:.2f} "
                f"| {e.cpu_seconds:.2f} "
                f"| {e.sentences_per_s:,.1f} | {e.target_tokens_per_s:,.0f} | {wall} | {cpu} "
                f"| {e.agreement:.1%} |"
            )
        lines += ["", _targets(r)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _targets(r: PeersBenchmark) -> str:
    def verdict(wall: float, cpu: float, target: float) -> str:
        met = "met" if min(wall, cpu) >= target else "not met"
        return f"{wall:.2f}x wall, {cpu:.2f}x CPU (target {target}x: {met})"

    ctranslate2 = verdict(r.ours_vs_ctranslate2, r.ours_vs_ctranslate2_cpu, TARGET_VS_CTRANSLATE2)
    if r.beam_size > 1 and r.early_stopping is not True:
        ctranslate2 = (
            f"{r.ours_vs_ctranslate2:.2f}x wall, {r.ours_vs_ctranslate2_cpu:.2f}x CPU (a "
            "different search: CTranslate2 stops early; judged with early_stopping=True)"
        )
    return (
        f"Targets: ours vs Hugging Face "
        f"{verdict(r.ours_vs_huggingface, r.ours_vs_huggingface_cpu, TARGET_VS_HUGGINGFACE)}; "
        f"ours vs CTranslate2 {ctranslate2}."
    )
