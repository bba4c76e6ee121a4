"""The general-domain half of the corpus: Debian's Spanish message catalogs and descriptions.

Sources (each read by its own module): the gettext catalogs of the packages listed in
`catalog_packages.txt` (`catalogs.py`) and the package description translations
(`descriptions.py`), fetched without installing anything (`debian.py`).

Splits hold out whole source packages, so no test text shares a program (its names, its
phrasing, its neighbouring strings) with training:

- `general`: prose (`catalogs.is_prose`: sentences, not labels) from the narrative games
  in `GENERAL_TEST` and their package descriptions;
- `ui`: the software strings (labels, menu items, messages) of the programs in `UI_TEST`;
- `valid`: both kinds, from the packages in `VALID`.

Each held-out split is a fixed-size sample (ordered by a hash of its text, so the sample is
stable), and every English or Spanish string of a held-out package is removed from train,
even where another package ships the same string.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from service.text.catalogs import catalog_pairs, clean_message, drop_reason, is_prose, read_catalog
from service.text.corpus import Pair
from service.text.debian import (
    DEFAULT_CACHE,
    FetchedPackage,
    fetch_packages,
    fetch_translation_indexes,
    source_packages,
)
from service.text.descriptions import description_pairs, read_descriptions

PACKAGE_LIST = Path(__file__).with_name("catalog_packages.txt")

# Narrative games (dialogue, quests, item descriptions) and the prose of their descriptions.
GENERAL_TEST = ("freedroidrpg", "freedink-data", "adonthell-data", "gbrainy")
# Desktop programs across toolkits (GTK, Qt/KDE, wx) and domains (finance, mail, audio, files).
UI_TEST = ("gnucash", "filezilla", "audacity", "pidgin", "caja", "k3b", "gnome-commander")
VALID = ("7kaa", "kmymoney", "cairo-dock", "cairo-dock-plug-ins", "gnubg", "network-manager")
SPLIT_SIZES = {"general": 2000, "ui": 2000, "valid": 1500}


@dataclass
class GeneralStats:
    packages_listed: int = 0
    packages_fetched: int = 0
    packages_failed: list[str] = field(default_factory=list)
    catalogs: int = 0
    catalogs_unreadable: list[str] = field(default_factory=list)
    messages: int = 0
    dropped: Counter = field(default_factory=Counter)
    duplicates: int = 0
    description_pairs: int = 0
    held_out_removed_from_train: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Provenance:
    package: str
    source: str
    version: str
    licences: str
    pairs: int


def listed_packages(path: Path = PACKAGE_LIST) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _stable_order(pairs: Iterable[Pair]) -> list[Pair]:
    return sorted(pairs, key=lambda p: hashlib.sha1(f"{p.source}\t{p.target}".encode()).digest())


@dataclass(frozen=True)
class HeldOut:
    """Which source packages each held-out split takes, and how many pairs it keeps."""

    general: tuple[str, ...] = GENERAL_TEST
    ui: tuple[str, ...] = UI_TEST
    valid: tuple[str, ...] = VALID
    sizes: tuple[tuple[str, int], ...] = tuple(SPLIT_SIZES.items())

    def split_of(self, source: str) -> str:
        for split in ("general", "ui", "valid"):
            if source in getattr(self, split):
                return split
        return "train"


def build_general(
    cache: Path = DEFAULT_CACHE,
    packages: list[str] | None = None,
    on_step: Callable[[str], None] = lambda step: None,
) -> tuple[dict[str, list[Pair]], GeneralStats, list[Provenance]]:
    """Fetch the listed packages and the description indexes, then `assemble` them."""
    names = packages if packages is not None else listed_packages()
    on_step(f"fetching {len(names)} packages (cached ones are reused)")
    fetched, failed = fetch_packages(
        names,
        cache / "packages",
        on_progress=lambda done: on_step(f"fetching packages: {done}/{len(names)}"),
    )
    on_step("fetching package description translations")
    indexes = fetch_translation_indexes(("en", "es"), cache)
    english = read_descriptions(indexes["en"], "en")
    spanish = read_descriptions(indexes["es"], "es")
    described = sorted({package for package, _ in spanish})
    sources = source_packages(sorted({pkg.name for pkg in fetched} | set(described)))
    splits, stats, provenance = assemble(
        fetched, sources, description_pairs(english, spanish), on_step=on_step
    )
    stats.packages_listed, stats.packages_failed = len(names), failed
    return splits, stats, provenance


def assemble(
    fetched: Iterable[FetchedPackage],
    sources: dict[str, str],
    descriptions: Iterable[tuple[str, str, str]],
    held_out: HeldOut = HeldOut(),
    on_step: Callable[[str], None] = lambda step: None,
) -> tuple[dict[str, list[Pair]], GeneralStats, list[Provenance]]:
    """Read, clean, dedupe and split; the pairs of each split in a stable order.

    `sources` maps a binary package to its source package (held-out splits hold out source
    packages); `descriptions` are (package, en, es) triples.
    """
    fetched = list(fetched)
    stats = GeneralStats(packages_fetched=len(fetched))
    by_split: dict[str, list[Pair]] = {"train": [], "valid": [], "general": [], "ui": []}
    seen: set[tuple[str, str]] = set()
    counts: Counter = Counter()

    def place(split: str, pair: Pair) -> None:
        # General holds prose and ui software strings; a label of a narrative game or a
        # sentence of a program's help goes to neither (nor to train: its package is held out).
        if split == "general" and not is_prose(pair.target):
            return
        if split == "ui" and is_prose(pair.target):
            return
        by_split[split].append(pair)

    on_step("reading catalogs")
    for package in fetched:
        split = held_out.split_of(sources.get(package.name, package.name))
        for path in package.files("*.mo"):
            stats.catalogs += 1
            try:
                messages = list(read_catalog(path))
            except (OSError, UnicodeDecodeError, ValueError) as error:
                stats.catalogs_unreadable.append(f"{package.name}/{path.name}: {error}")
                continue
            stats.messages += len(messages)
            for message, reason in catalog_pairs(messages):
                if reason is not None:
                    stats.dropped[reason] += 1
                    continue
                if (message.en, message.es) in seen:
                    stats.duplicates += 1
                    continue
                seen.add((message.en, message.es))
                counts[package.name] += 1
                place(split, Pair(f"{package.name}/{message.domain}", message.es, message.en))

    on_step("reading package descriptions")
    for package, en, es in descriptions:
        en, es = clean_message(en), clean_message(es)
        if drop_reason(en, es) is not None or (en, es) in seen:
            continue
        seen.add((en, es))
        stats.description_pairs += 1
        split = held_out.split_of(sources.get(package, package))
        # Descriptions are prose: the ui split holds software strings only.
        place("train" if split == "ui" else split, Pair(f"ddtp/{package}", es, en))

    on_step("sampling held-out splits")
    held_out_texts: set[str] = set()
    sizes = dict(held_out.sizes)
    for split in ("general", "ui", "valid"):
        for pair in by_split[split]:
            held_out_texts.update((pair.source, pair.target))
        by_split[split] = _stable_order(by_split[split])[: sizes[split]]
    train = [p for p in by_split["train"] if not ({p.source, p.target} & held_out_texts)]
    stats.held_out_removed_from_train = len(by_split["train"]) - len(train)
    by_split["train"] = train
    stats.counts = {split: len(pairs) for split, pairs in by_split.items()}

    provenance = [
        Provenance(
            package=package.name,
            source=sources.get(package.name, package.name),
            version=package.version,
            licences=licence_summary(package),
            pairs=counts[package.name],
        )
        for package in fetched
        if counts[package.name]
    ]
    return by_split, stats, provenance


__all__ = ["GENERAL_TEST", "UI_TEST", "VALID", "HeldOut", "assemble", "build_general"]


_LICENCE_HINTS = (
    ("GNU Lesser General Public License", "LGPL"),
    ("GNU Library General Public License", "LGPL"),
    ("GNU Affero General Public License", "AGPL"),
    ("GNU General Public License", "GPL"),
    ("Mozilla Public License", "MPL"),
    ("Apache License", "Apache"),
    ("Artistic License", "Artistic"),
    ("GNU Free Documentation License", "GFDL"),
    ("Creative Commons", "CC"),
    ("BSD", "BSD"),
    ("MIT", "MIT"),
    ("public domain", "public domain"),
)


def licence_summary(package: FetchedPackage) -> str:
    """The DEP-5 licence names, or for an old-style copyright file the licences it mentions."""
    names = package.licences()
    if names:
        return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    mentioned = []
    for path in package.files("copyright"):
        text = path.read_text(encoding="utf-8", errors="replace")
        mentioned += [short for phrase, short in _LICENCE_HINTS if phrase in text]
    if mentioned:
        return ", ".join(dict.fromkeys(mentioned)) + " (free-form copyright file)"
    return "no copyright file of its own (see its source package)"


def render_general_readme(stats: GeneralStats, provenance: list[Provenance]) -> str:
    """The general-domain part of the data card: cleaning counts, splits and every source."""
    dropped = "\n".join(f"| {reason} | {count} |" for reason, count in stats.dropped.most_common())
    counts = "\n".join(f"| {split} | {count} |" for split, count in stats.counts.items())
    rows = "\n".join(
        f"| `{p.package}` | `{p.source}` | {p.version} | {p.licences} | {p.pairs} |"
        for p in provenance
    )
    unreadable = "\n".join(f"- {line}" for line in stats.catalogs_unreadable) or "- none"
    failed = ", ".join(f"`{name}`" for name in stats.packages_failed) or "none"
    return f"""
## General-domain text: Debian message catalogs and package descriptions

Built by `service/text/general.py` from the packages in `service/text/catalog_packages.txt`
(every package of Debian 12 "bookworm" main that ships a Spanish `.mo` catalog), fetched with
`apt-get download` and unpacked with `dpkg-deb` (nothing installed), and from the Spanish and
English package description translations of the Debian Description Translation Project
(apt's `Translation-es` / `Translation-en` indexes).

Each catalog message pairs the English msgid with its Spanish msgstr (both plural forms; a
multi-line message line by line when both sides break alike). Cleaning: markup removed, entities
unescaped, keyboard accelerators (`_`, `&`, `~`) stripped, NFC, whitespace collapsed. Placeholders
(`%s`, `%1$s`, `{{name}}`, `$VAR`, ...) are kept, and a pair whose two sides do not carry the same
placeholders is dropped. Exact duplicates are dropped (first occurrence kept, packages in list
order). Apertium output is never used.

| packages listed | fetched | catalogs read | messages |
|---|---|---|---|
| {stats.packages_listed} | {stats.packages_fetched} | {stats.catalogs} | {stats.messages} |

| dropped because | pairs |
|---|---|
{dropped}
| duplicate | {stats.duplicates} |

Description pairs kept (summaries and paragraphs): {stats.description_pairs}. Train pairs
removed because a held-out split has their English or Spanish text:
{stats.held_out_removed_from_train}. Packages apt could not fetch: {failed}.

### Splits (general-domain part)

Whole source packages are held out:

- `general` (held-out prose: sentences, not labels):
  {", ".join(f"`{p}`" for p in GENERAL_TEST)}
- `ui` (held-out software strings): {", ".join(f"`{p}`" for p in UI_TEST)}
- `valid` (both kinds): {", ".join(f"`{p}`" for p in VALID)}

| part | pairs |
|---|---|
{counts}

Held-out splits are fixed-size samples ordered by a hash of the pair.

Catalogs that could not be read (a charset polib does not know):

{unreadable}

### Sources, versions and licences

Each package keeps its own licence (GPL, LGPL, MPL-2.0, GFDL, CC-BY-SA, ...; as the package's
`copyright` file states it); "pairs" counts the catalog pairs it contributed after cleaning
and deduplication. The description translations are DDTP's, under the licences of the packages
they describe.

| package | source | version | licence | pairs |
|---|---|---|---|---|
{rows}
"""
