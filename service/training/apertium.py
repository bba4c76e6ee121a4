"""Apertium, Debian's rule-based translator, as a peer scored on the same lines as our models.

Apertium (`apt-get install apertium apertium-eng-spa`) needs no training data, so it is the
yardstick a user would otherwise reach for: our models are worth serving only where they beat
it. It runs as one `apertium -u <pair>` process over all lines at once (1,556 sentences take
about 2 s; a process per line would take minutes). Its default `txt` format keeps every line
break, so the n-th output line is the n-th input line; the count that comes back is checked,
never assumed. `-f line` is not used: it drops sentence-final periods, which costs BLEU for
nothing. `-u` leaves unknown words unmarked (no `*`), as a user would read them.

Its output is only ever scored, never trained on: it would teach Apertium's errors.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

EXECUTABLE = "apertium"
# Our language codes -> Apertium's translation directions (modes) of apertium-eng-spa.
DIRECTIONS = {("es", "en"): "spa-eng", ("en", "es"): "eng-spa"}
DEBIAN_PACKAGES = ("apertium", "apertium-eng-spa")
INSTALL_HINT = "install it with `apt-get install apertium apertium-eng-spa`"
TIMEOUT_S = 600.0  # a test split takes seconds; a hang must not stall an evaluation forever


class TextPair(Protocol):
    source: str
    target: str


class ApertiumError(RuntimeError):
    """Apertium failed, or its output does not line up with its input."""


class ApertiumNotInstalled(ApertiumError):
    """The `apertium` program or the language pair's data is missing."""


@dataclass(frozen=True)
class ApertiumResult:
    """Translations in input order, one per line given, and what produced them."""

    translations: list[str]
    direction: str  # "spa-eng"
    version: str  # "Apertium 3.8.3"
    seconds: float  # wall time of the one process


def direction_for(source_lang: str, target_lang: str) -> str:
    """The Apertium mode translating `source_lang` into `target_lang` ("es", "en")."""
    try:
        return DIRECTIONS[(source_lang, target_lang)]
    except KeyError:
        supported = ", ".join(f"{s}->{t}" for s, t in DIRECTIONS)
        raise ValueError(
            f"Apertium peer: no direction for {source_lang}->{target_lang} (supported: {supported})"
        ) from None


def _run(arguments: list[str], text: str, executable: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [executable, *arguments],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise ApertiumNotInstalled(f"`{executable}` is not installed; {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise ApertiumError(
            f"`{executable} {' '.join(arguments)}` ran past {TIMEOUT_S:.0f} s"
        ) from None


def installed_directions(executable: str = EXECUTABLE) -> list[str]:
    """The translation directions Apertium offers here (`apertium -l`); [] if not installed."""
    if shutil.which(executable) is None:
        return []
    listing = _run(["-l"], "", executable)
    return listing.stdout.decode("utf-8", "replace").split() if listing.returncode == 0 else []


def available(source_lang: str, target_lang: str, executable: str = EXECUTABLE) -> bool:
    """True when Apertium can translate `source_lang` into `target_lang` on this machine."""
    direction = DIRECTIONS.get((source_lang, target_lang))
    return direction is not None and direction in installed_directions(executable)


def version(executable: str = EXECUTABLE) -> str:
    """`apertium -V`, e.g. "Apertium 3.8.3"."""
    result = _run(["-V"], "", executable)
    return result.stdout.decode("utf-8", "replace").strip() or "apertium (unknown version)"


def translate_lines(
    lines: Sequence[str],
    source_lang: str = "es",
    target_lang: str = "en",
    *,
    executable: str = EXECUTABLE,
) -> ApertiumResult:
    """Translate each line with one Apertium process; the result has exactly one line per line.

    A line break inside a line would split it in two on the way through, so "\\r" and "\\n"
    inside a line become spaces first. Raises `ApertiumNotInstalled` when the program or the
    pair is missing, `ApertiumError` when it fails or returns a different number of lines.
    """
    direction = direction_for(source_lang, target_lang)
    if shutil.which(executable) is None:
        raise ApertiumNotInstalled(f"`{executable}` is not installed; {INSTALL_HINT}")
    if direction not in installed_directions(executable):
        raise ApertiumNotInstalled(
            f"Apertium has no {direction} direction here (`{executable} -l`); {INSTALL_HINT}"
        )
    if not lines:
        return ApertiumResult([], direction, version(executable), 0.0)
    text = "".join(line.replace("\r", " ").replace("\n", " ") + "\n" for line in lines)
    started = time.perf_counter()
    result = _run(["-u", direction], text, executable)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        error = result.stderr.decode("utf-8", "replace").strip()
        raise ApertiumError(f"`{executable} -u {direction}` exited {result.returncode}: {error}")
    output = result.stdout.decode("utf-8", "replace")
    translations = output.split("\n")
    if translations and translations[-1] == "":
        translations.pop()  # the final line break, not an extra line
    if len(translations) != len(lines):
        raise ApertiumError(
            f"`{executable} -u {direction}` returned {len(translations)} lines for "
            f"{len(lines)}: its output no longer lines up with the input"
        )
    return ApertiumResult(translations, direction, version(executable), round(seconds, 3))


def evaluate_apertium(
    pairs: Sequence[TextPair], source_lang: str = "es", target_lang: str = "en"
) -> dict[str, Any]:
    """Apertium's translations of the pairs' sources, scored exactly as `evaluate` scores ours.

    `pairs` are already in the model's direction (`evaluate.orient`). Returns `score`'s dict
    ({"bleu", "chrf", signatures, "empty", "sentences", "buckets", ...}) plus "direction",
    "version", "wall_s" and "hypotheses".
    """
    from service.training.evaluate import score

    sources = [p.source for p in pairs]
    result = translate_lines(sources, source_lang, target_lang)
    scored = score(result.translations, [p.target for p in pairs], sources)
    return {
        **scored,
        "direction": result.direction,
        "version": result.version,
        "wall_s": result.seconds,
        "hypotheses": result.translations,
    }


__all__ = [
    "DIRECTIONS",
    "ApertiumError",
    "ApertiumNotInstalled",
    "ApertiumResult",
    "available",
    "direction_for",
    "evaluate_apertium",
    "installed_directions",
    "translate_lines",
    "version",
]
