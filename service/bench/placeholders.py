"""Placeholders: whole sentences with sentinels against the words between spans as pieces.

`python -m service.bench.placeholders` takes the `ui` test lines that hold a protected span
(`service.text.segment.PROTECTED`: placeholders, tags, URLs, numbers, ...), translates them
with the shipped models three ways, and prints, per direction, how often the model returned
exactly the multiset of sentinels it was given, and the chrF of each way (results in
docs/benchmarks.md, placeholders):

- `piecewise`: the routes' default (`placeholders: pieces`): the text between spans is
  decoded as separate pieces (`protect_units`), the spans kept verbatim around them;
- `as_is`: the whole sentence with every span as it is;
- `sentinels`: the whole sentence with printf placeholders and numbers as they are and every
  other span a numbered `{k}` (`mask`); `..._cut_at_numbers`: cut at its numbers first (what
  `placeholders: sentinels` serves); `printf_...`: the numbered form `%k$s`.

The whole-sentence ways are scored after `restore` and `repair` (alignment from the same
decode), so chrF is that of what a user gets.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Annotated

import typer

# (name, printf placeholders kept as they are and other spans numbered, cut at numbers, form)
SCHEMES = (
    ("as_is", False, False, "braces"),
    ("sentinels", True, False, "braces"),
    ("sentinels_cut_at_numbers", True, True, "braces"),
    ("printf_sentinels_cut_at_numbers", True, True, "printf"),
)
DATA = Path("model_store/data/es-en/ui.tsv.gz")


def ui_lines(limit: int) -> list[tuple[str, str]]:
    """(es, en) pairs of the ui split where either side has a protected span."""
    from service.text.segment import PROTECTED

    pairs = []
    with gzip.open(DATA, "rt", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3:
                continue
            es, en = fields[-2], fields[-1]
            if PROTECTED.search(es) and PROTECTED.search(en):
                pairs.append((es, en))
    return pairs[:limit]


def measure(
    model_id: str, sources: list[str], references: list[str], beam: int, schemes=SCHEMES
) -> dict:
    import sacrebleu

    from service.decoding.search import DecodeOptions
    from service.decoding.translator import Translator
    from service.store import ModelStore
    from service.text.placeholders import MaskedLayout, kept_exactly, repair, restore
    from service.text.segment import protect_units, segment_text

    loaded = ModelStore("model_store").load(model_id)
    translator = Translator(loaded.model, loaded.tokenizer)
    source_language = model_id[:2]
    options = DecodeOptions(beam_size=beam, max_length=128, return_alignment=True)
    out: dict = {"model": f"{model_id} v{loaded.manifest.version}", "lines": len(sources)}

    layouts = [segment_text(text, source_language) for text in sources]
    for layout in layouts:
        protect_units(layout)
    units = [unit for layout in layouts for unit in layout.units]
    decoded = iter(t.best.text for t in translator.translate(units, options))
    piecewise = [layout.join([next(decoded) for _ in layout.units]) for layout in layouts]
    out["piecewise_chrf"] = round(sacrebleu.corpus_chrf(piecewise, [references]).score, 2)

    for name, keep, cut, form in schemes:
        layouts = [
            MaskedLayout.of(
                segment_text(text, source_language), cut_numbers=cut, keep=keep, form=form
            )
            for text in sources
        ]
        masks = [layout.masks for layout in layouts]
        flat = [m for ms in masks for m in ms if m.spans]
        results = translator.translate([m.text for m in flat], options)
        exact = sum(kept_exactly(m, t.best.text) for m, t in zip(flat, results, strict=True))
        repaired = failed = 0
        finals = {}
        for m, t in zip(flat, results, strict=True):
            best = t.best
            restored = restore(m, best.text)
            if restored.missing:
                a = best.alignment
                fixed = repair(m, restored, best.text, a.source_tokens, a.target_tokens, a.weights)
                if fixed is None:
                    failed += 1
                    fixed = restored
                else:
                    repaired += 1
                restored = fixed
            finals[id(m)] = restored.text
        plain = {
            id(m): t.best.text
            for m, t in zip(
                [m for ms in masks for m in ms if not m.spans],
                translator.translate([m.text for ms in masks for m in ms if not m.spans], options),
                strict=True,
            )
        }
        texts = [
            layout.join([finals.get(id(m), plain.get(id(m))) for m in ms])
            for layout, ms in zip(layouts, masks, strict=True)
        ]
        out[name] = {
            "sentences_with_spans": len(flat),
            "kept_exactly": exact,
            "kept_exactly_pct": round(100 * exact / max(1, len(flat)), 1),
            "repaired_by_alignment": repaired,
            "not_repairable": failed,
            "chrf": round(sacrebleu.corpus_chrf(texts, [references]).score, 2),
        }
    return out


def main(
    limit: Annotated[int, typer.Option(help="ui lines with a protected span, per direction")] = 200,
    beam: Annotated[int, typer.Option(help="beam size")] = 4,
    scheme: Annotated[list[str] | None, typer.Option(help="only these (default: all)")] = None,
) -> None:
    chosen = tuple(s for s in SCHEMES if not scheme or s[0] in scheme)
    pairs = ui_lines(limit)
    es = [p[0] for p in pairs]
    en = [p[1] for p in pairs]
    report = [
        measure("es-en/transformer", es, en, beam, chosen),
        measure("en-es/transformer", en, es, beam, chosen),
    ]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    typer.run(main)
