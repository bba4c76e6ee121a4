"""The Spanish-English parallel corpus: two public-domain Bibles aligned verse by verse.

Why the Bible: the Reina-Valera 1909 and the World English Bible are both in the public domain,
install offline as Debian SWORD modules, and (almost everywhere) share a verse numbering, so a
verse is a free, sentence-sized alignment unit. Nothing here touches the network or torch, so the
corpus can be regenerated and checked on any machine that has the Debian packages.

Pipeline: ``mod2imp`` dumps each module as ``$$$Book C:V`` key lines followed by OSIS markup;
the markup is reduced to plain text, verses are aligned book by book (by key, corrected by
length and a learnt word lexicon where the Spanish module follows the Hebrew numbering),
unusable pairs are dropped, and whole books are held out for validation and test so that no
held-out verse shares a book (its names, phrasing and neighbouring verses) with training.
"""

from __future__ import annotations

import gzip
import html
import io
import itertools
import math
import re
import shutil
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

SOURCE_MODULE = "spaRV1909eb"
TARGET_MODULE = "engWEB2015eb"
DEBIAN_PACKAGES = ("sword-text-sparv", "sword-text-web", "libsword-utils")

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "model_store" / "data" / "es-en"
# The shipped splits: train and valid mix the Bible and the general-domain text; the three test
# splits are the held-out Bible books, held-out prose and held-out software strings.
SPLITS = ("train", "valid", "bible", "general", "ui")
TEST_SPLITS = ("bible", "general", "ui")
# `test` named the Bible test books before the general-domain text came in; old commands and
# manifests still say it.
SPLIT_ALIASES = {"test": "bible"}
BIBLE_SPLITS = ("train", "valid", "test")

# The two sides are within 5% of each other in characters on average; a ratio far outside this
# band means the modules disagree about where a verse starts or ends, or one side is a fragment,
# and such a pair teaches the model to hallucinate or drop content. A safety net behind the
# alignment: it removes only a handful of pairs.
MIN_LENGTH_RATIO = 0.5
MAX_LENGTH_RATIO = 2.0

# Held-out books, fixed here rather than drawn at run time so every checkout evaluates on the same
# text. Each list mixes narrative, poetry/wisdom and epistle, OT and NT, so scores are not a
# measure of one genre; each totals about 5% of the paired verses.
TEST_BOOKS = (
    "Ruth",
    "Esther",
    "Ecclesiastes",
    "Jonah",
    "Mark",
    "Galatians",
    "James",
    "I John",
)
VALID_BOOKS = (
    "Judges",
    "Daniel",
    "Nahum",
    "Philippians",
    "Titus",
    "Hebrews",
    "II Peter",
)

VERSE_KEY = re.compile(r"^(?P<book>.+) (?P<chapter>\d+):(?P<verse>\d+)$")

# Footnotes, cross references and editorial headings are not translated text: a footnote on one
# side only would teach the model to invent or delete whole clauses. Canonical titles (the psalm
# superscriptions) are kept because the Spanish module prints them inline as part of verse 1.
_NOTE = re.compile(r"<note\b[^>]*?(?<!/)>.*?</note>", re.DOTALL)
_NON_CANONICAL_TITLE = re.compile(
    r"<title\b(?![^>]*canonical=\"true\")[^>]*?(?<!/)>.*?</title>", re.DOTALL
)
_SPEAKER = re.compile(r"<speaker\b[^>]*>.*?</speaker>", re.DOTALL)
# The Reina-Valera module writes translator-supplied words (<transChange>) flush against the next
# word ("envíalo<w>á las siete" -> "envíaloá"); only Spanish enclitic pronouns really attach.
_GLUED_AFTER_SUPPLIED = re.compile(r"</transChange>(?=<w\b)")
_GLUED_BEFORE_SUPPLIED = re.compile(
    r"</w>(?=<transChange\b[^>]*>(?!(?:l[aeo]s?|les|[mts]e|n?os)</transChange>))"
)
# Tags that stand between words (line, paragraph and verse-group boundaries) become a space;
# inline tags (<w>, <transChange>, <q>) sit inside or against words and vanish.
_BOUNDARY_TAG = re.compile(r"</?(?:l|lg|lb|p|div|chapter|milestone|list|item|br)\b[^>]*>")
_ANY_TAG = re.compile(r"<[^>]*>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)\]»”’])")
_SPACE_AFTER_OPENER = re.compile(r"([(\[«“¿¡])\s+")
# The pilcrow marks a paragraph start in some modules; asterisks and daggers are editorial signs.
# None of them is read aloud or translated.
_EDITORIAL_MARKS = str.maketrans({"¶": " ", "*": " ", "†": " ", "‡": " "})

# Chapter openings are typeset in capitals up to the first lower-case word ("EN el principio",
# "DE SIETE años era Joas", after a psalm title "Salmo de David. OH Jehová"). Left as is, the
# tokenizer learns a second spelling of common words that only occurs at chapter starts.
# Inscriptions ("EL REY DE LOS JUDIOS.") are not followed by a lower-case word and stay.
_DROP_CAP_RUN = re.compile(
    r"(^|[.!?]\s+|[¡¿])"
    r"((?:[A-ZÁÉÍÓÚÑÜ] )?[A-ZÁÉÍÓÚÑÜ]{2,}(?: [A-ZÁÉÍÓÚÑÜ]{2,})*)"
    r"(?=\W+\w*[a-záéíóúñü])"
)
# Circumflexes mark a "ch" read as /k/ in proper names (Ezechîas, Achâb); modern Spanish has none.
_CIRCUMFLEX = str.maketrans("âêîôûÂÊÎÔÛ", "aeiouAEIOU")
# Spelling before the 1952 reform: accented one-letter conjunctions and prepositions ("á la
# tierra") and monosyllabic preterites ("fué"). People type the modern forms, and the model
# should see in training what it will be asked to translate.
_PRE_1952_SPELLING = {
    "á": "a", "Á": "A", "é": "e", "É": "E", "ó": "o", "Ó": "O", "ú": "u", "Ú": "U",
    "fué": "fue", "Fué": "Fue", "fuí": "fui", "Fuí": "Fui", "dió": "dio", "Dió": "Dio",
    "vió": "vio", "Vió": "Vio", "dí": "di", "Dí": "Di", "ví": "vi", "Ví": "Vi",
}  # fmt: skip
_PRE_1952_WORD = re.compile(r"(?<!\w)(" + "|".join(_PRE_1952_SPELLING) + r")(?!\w)")
# The Reina-Valera ends each Pauline epistle with the traditional subscription ("Amén. Escrita de
# Roma á los Efesios por Tichîco."), which the World English Bible does not translate.
_EPISTLE_SUBSCRIPTION = re.compile(r"(Amén\.)\s+[^\n]*\b(?:escrita|enviada)\b.*$", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class Pair:
    """One aligned verse; ``key`` is the SWORD verse key, e.g. ``"I Samuel 3:4"``."""

    key: str
    source: str
    target: str


@dataclass
class PairingStats:
    """Why verses were lost between the dumps and the shipped pairs, for the data README."""

    source_verses: int = 0
    target_verses: int = 0
    empty_source: int = 0
    empty_target: int = 0
    books_without_counterpart: int = 0
    unaligned: int = 0
    merged: int = 0
    ratio_outliers: int = 0
    realigned: int = 0
    kept: int = 0


@dataclass(frozen=True)
class Lexicon:
    """Most likely English word for each Spanish content word (Dice coefficient over verses).

    Learnt from the pairs whose keys agree, which are right almost everywhere; that is enough to
    tell a correct pairing (a median 75% of translatable Spanish words find their English word)
    from one a verse off (about 5%), where lengths alone cannot, e.g. in short poetic verses.
    """

    translations: dict[str, str]

    @classmethod
    def learn(
        cls,
        pairs: Iterable[tuple[str, str]],
        min_count: int = 3,
        max_verse_share: float = 0.1,
        min_dice: float = 0.3,
    ) -> Lexicon:
        """Words in more than ``max_verse_share`` of verses (articles, "and") are left out: they
        are in every verse, so they cannot say which verse is which."""
        word_pairs = [(words_of(source), words_of(target)) for source, target in pairs]
        max_count = max_verse_share * len(word_pairs)
        source_counts = Counter(word for source, _ in word_pairs for word in source)
        target_counts = Counter(word for _, target in word_pairs for word in target)
        source_vocab = {w for w, n in source_counts.items() if min_count <= n <= max_count}
        target_vocab = {w for w, n in target_counts.items() if min_count <= n <= max_count}
        together: Counter[tuple[str, str]] = Counter()
        for source, target in word_pairs:
            together.update(itertools.product(source & source_vocab, target & target_vocab))
        best: dict[str, tuple[float, str]] = {}
        for (source_word, target_word), count in together.items():
            dice = 2 * count / (source_counts[source_word] + target_counts[target_word])
            # Comparing (dice, word) tuples breaks ties the same way in every run.
            if dice >= min_dice and (dice, target_word) > best.get(source_word, (0.0, "")):
                best[source_word] = (dice, target_word)
        return cls({word: translation for word, (_, translation) in best.items()})

    def translate(self, text: str) -> frozenset[str]:
        return frozenset(
            self.translations[word] for word in words_of(text) if word in self.translations
        )


def words_of(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class AlignmentModel:
    """Costs (in nats) of grouping verses as translations of each other; lower is likelier.

    Length term after Gale & Church (1993): English characters ~ Normal(c * s, v * s) for s
    Spanish characters, c and v measured on the key-paired verses (v from the median absolute
    deviation, so misaligned verses do not inflate it). The lexical term rewards groups whose
    translatable Spanish words find their English translation (see Lexicon).
    """

    target_chars_per_source_char: float = 1.05
    variance_per_source_char: float = 1.9
    lexical_weight: float = 10.0
    # Share of translated words found below which a pairing is more likely wrong than right.
    lexical_threshold: float = 0.3
    # A small preference for the verse with the same key: it decides where the other evidence
    # is silent, so the alignment never wanders off the keys without a reason.
    same_key_bonus: float = 1.0
    # Nearly every verse is one-to-one; the rest are where one module follows the Hebrew
    # versification or merges verses.
    group_costs: tuple[tuple[tuple[int, int], float], ...] = (
        ((1, 1), -math.log(0.95)),
        ((1, 0), -math.log(0.005)),
        ((0, 1), -math.log(0.005)),
        ((2, 1), -math.log(0.02)),
        ((1, 2), -math.log(0.02)),
    )
    # Offsets between the two numberings stay within a handful of verses; the band keeps the
    # alignment linear in book length.
    band: int = 12

    def length_cost(self, source_chars: int, target_chars: int) -> float:
        spread = math.sqrt(max(source_chars, 1) * self.variance_per_source_char)
        delta = (target_chars - self.target_chars_per_source_char * source_chars) / spread
        return -math.log(max(math.erfc(abs(delta) / math.sqrt(2)), 1e-300))

    def lexical_cost(self, share_found: float) -> float:
        """``share_found``: share of the Spanish verse's translated words in the English verse."""
        return self.lexical_weight * (self.lexical_threshold - share_found)


@dataclass(frozen=True)
class AlignedVerse:
    """What the aligner compares: ``words`` are English words (translated, on the source side)."""

    key: str
    text: str
    words: frozenset[str]


@dataclass(frozen=True)
class Bead:
    """Verses that translate each other: indices into one book's verse lists."""

    source: range
    target: range

    @property
    def is_one_to_one(self) -> bool:
        return len(self.source) == 1 and len(self.target) == 1


def book_of(key: str) -> str:
    """Book name of a verse key: splits are made of whole books, so this is the split's unit."""
    match = VERSE_KEY.match(key)
    if match is None:
        raise ValueError(f"not a verse key (expected 'Book C:V'): {key!r}")
    return match["book"]


def clean_osis(fragment: str) -> str:
    """Reduce one verse of OSIS markup to the plain sentence a translator would have read."""
    text = _NOTE.sub(" ", fragment)
    text = _NON_CANONICAL_TITLE.sub(" ", text)
    text = _SPEAKER.sub(" ", text)
    text = _GLUED_AFTER_SUPPLIED.sub("</transChange> ", text)
    text = _GLUED_BEFORE_SUPPLIED.sub("</w> ", text)
    text = _BOUNDARY_TAG.sub(" ", text)
    text = _ANY_TAG.sub("", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text).translate(_EDITORIAL_MARKS)
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return _SPACE_AFTER_OPENER.sub(r"\1", text)


def tidy_reina_valera(verses: Mapping[str, str]) -> dict[str, str]:
    """Undo the Reina-Valera's typesetting habits that have no counterpart in the English.

    Takes the whole text because a capitalised chapter opening is re-cased the way each word is
    usually written elsewhere: "Y ACONTECIÓ" -> "Y aconteció" but "Y JACOB" -> "Y Jacob".
    """
    modern = {key: _modern_spelling(text) for key, text in verses.items()}
    spellings = Counter(word for text in modern.values() for word in _WORD.findall(text))
    return {key: _soften_drop_cap(text, spellings) for key, text in modern.items()}


def _modern_spelling(text: str) -> str:
    text = _EPISTLE_SUBSCRIPTION.sub(r"\1", text).translate(_CIRCUMFLEX)
    return _PRE_1952_WORD.sub(lambda match: _PRE_1952_SPELLING[match.group(1)], text)


def _soften_drop_cap(text: str, spellings: Counter[str]) -> str:
    def recase(match: re.Match[str]) -> str:
        words = match.group(2).split(" ")
        recased = [
            word if len(word) == 1 else word.capitalize() if index == 0 else usual(word)
            for index, word in enumerate(words)
        ]
        return match.group(1) + " ".join(recased)

    def usual(word: str) -> str:
        lower, capitalised = word.lower(), word.capitalize()
        return lower if spellings[lower] >= spellings[capitalised] else capitalised

    return _DROP_CAP_RUN.sub(recase, text)


def parse_imp(dump: str) -> dict[str, str]:
    """Verse key -> cleaned text from a ``mod2imp`` dump, in the module's canonical order.

    Book and chapter introductions (verse 0, chapter 0) and module headings are skipped: they are
    editorial prose with no counterpart in the other translation.
    """
    verses: dict[str, str] = {}
    for key, body in _imp_entries(dump):
        match = VERSE_KEY.match(key)
        if match is None or int(match["chapter"]) == 0 or int(match["verse"]) == 0:
            continue
        verses[key] = clean_osis(body)
    return verses


def _imp_entries(dump: str) -> Iterable[tuple[str, str]]:
    key: str | None = None
    body: list[str] = []
    for line in dump.splitlines():
        if line.startswith("$$$"):
            if key is not None:
                yield key, "\n".join(body)
            key, body = line[3:].strip(), []
        else:
            body.append(line)
    if key is not None:
        yield key, "\n".join(body)


def align_verses(
    source: list[AlignedVerse],
    target: list[AlignedVerse],
    model: AlignmentModel = AlignmentModel(),
) -> list[Bead]:
    """Monotone alignment of one book's verses by dynamic programming, in canonical order.

    Why not pair by key alone: the Reina-Valera module keeps the Hebrew verse numbering in some
    chapters (Numbers 13, Job 39-40, Jonah 2, ...), so there the same key holds different text.
    """
    n, m = len(source), len(target)
    group_cost = _GroupCost(source, target, model)
    best: dict[tuple[int, int], tuple[float, tuple[int, int]]] = {(0, 0): (0.0, (0, 0))}
    for i in range(n + 1):
        centre = round(i * m / n) if n else 0
        for j in range(max(0, centre - model.band), min(m, centre + model.band) + 1):
            candidates = [
                (previous[0] + group_cost(i, j, step, prior), step)
                for step, prior in model.group_costs
                if (previous := best.get((i - step[0], j - step[1]))) is not None
            ]
            if candidates and (i, j) != (0, 0):
                best[(i, j)] = min(candidates)
    if (n, m) not in best:
        raise ValueError(f"no alignment within a band of {model.band} verses ({n} vs {m})")
    beads = []
    i, j = n, m
    while (i, j) != (0, 0):
        di, dj = best[(i, j)][1]
        beads.append(Bead(range(i - di, i), range(j - dj, j)))
        i, j = i - di, j - dj
    return beads[::-1]


@dataclass
class _GroupCost:
    """Cost of the group of verses ending at (i, j); caches what every cell of the band reuses."""

    source: list[AlignedVerse]
    target: list[AlignedVerse]
    model: AlignmentModel
    _found: dict[tuple[int, int], int] = field(default_factory=dict)

    def __call__(self, i: int, j: int, step: tuple[int, int], prior: float) -> float:
        di, dj = step
        if not (di and dj):
            return prior
        sources, targets = range(i - di, i), range(j - dj, j)
        source_chars = sum(len(self.source[s].text) for s in sources)
        target_chars = sum(len(self.target[t].text) for t in targets)
        cost = prior + self.model.length_cost(source_chars, target_chars)
        translatable = sum(len(self.source[s].words) for s in sources)
        if translatable:
            found = sum(self.found(s, t) for s in sources for t in targets)
            cost += self.model.lexical_cost(min(found / translatable, 1.0))
        if di == dj == 1 and self.source[i - 1].key == self.target[j - 1].key:
            cost -= self.model.same_key_bonus
        return cost

    def found(self, s: int, t: int) -> int:
        """How many of source verse s's translated words occur in target verse t."""
        if (s, t) not in self._found:
            self._found[(s, t)] = len(self.source[s].words & self.target[t].words)
        return self._found[(s, t)]


def pair_verses(
    source: dict[str, str],
    target: dict[str, str],
    min_ratio: float = MIN_LENGTH_RATIO,
    max_ratio: float = MAX_LENGTH_RATIO,
    model: AlignmentModel = AlignmentModel(),
) -> tuple[list[Pair], PairingStats]:
    """One-to-one verse pairs, keyed by the target (English) numbering, in canonical order.

    Merged verses are dropped rather than concatenated, so every pair keeps a single key.
    """
    stats = PairingStats(source_verses=len(source), target_verses=len(target))
    stats.empty_source = sum(1 for text in source.values() if not text)
    stats.empty_target = sum(1 for text in target.values() if not text)
    lexicon = Lexicon.learn(
        (text, target[key]) for key, text in source.items() if text and target.get(key)
    )
    source_books = _verses_by_book(source, lexicon.translate)
    target_books = _verses_by_book(target, words_of)
    pairs: list[Pair] = []
    for book, source_verses in source_books.items():
        target_verses = target_books.get(book)
        if not target_verses:
            stats.books_without_counterpart += 1
            stats.unaligned += len(source_verses)
            continue
        for bead in align_verses(source_verses, target_verses, model):
            if not bead.is_one_to_one:
                if bead.source and bead.target:
                    stats.merged += len(bead.source) + len(bead.target)
                else:
                    stats.unaligned += len(bead.source) + len(bead.target)
                continue
            source_verse = source_verses[bead.source[0]]
            target_verse = target_verses[bead.target[0]]
            if not min_ratio <= len(source_verse.text) / len(target_verse.text) <= max_ratio:
                stats.ratio_outliers += 1
                continue
            stats.realigned += source_verse.key != target_verse.key
            pairs.append(Pair(target_verse.key, source_verse.text, target_verse.text))
    stats.kept = len(pairs)
    return pairs, stats


def _verses_by_book(
    verses: dict[str, str], english_words: Callable[[str], frozenset[str]]
) -> dict[str, list[AlignedVerse]]:
    books: dict[str, list[AlignedVerse]] = {}
    for key, text in verses.items():
        if text:
            verse = AlignedVerse(key, text, english_words(text))
            books.setdefault(book_of(key), []).append(verse)
    return books


def split_by_book(
    pairs: Iterable[Pair],
    test_books: Iterable[str] = TEST_BOOKS,
    valid_books: Iterable[str] = VALID_BOOKS,
) -> dict[str, list[Pair]]:
    """Whole-book split: a verse's neighbours must not leak its wording into training."""
    test, valid = frozenset(test_books), frozenset(valid_books)
    if test & valid:
        raise ValueError(f"books in both test and valid: {sorted(test & valid)}")
    splits: dict[str, list[Pair]] = {name: [] for name in BIBLE_SPLITS}
    for pair in pairs:
        book = book_of(pair.key)
        name = "test" if book in test else "valid" if book in valid else "train"
        splits[name].append(pair)
    return splits


def write_split(path: Path, pairs: Iterable[Pair]) -> None:
    """Gzipped TSV with a zero mtime and no embedded name, so regeneration is byte-identical."""
    lines = []
    for pair in pairs:
        fields = (pair.key, pair.source, pair.target)
        if any("\t" in value or "\n" in value for value in fields):
            raise ValueError(f"tab or newline inside a field of {pair.key!r}")
        lines.append("\t".join(fields) + "\n")
    payload = "".join(lines).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    path.write_bytes(buffer.getvalue())


def read_split(path: Path) -> list[Pair]:
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(f"{path}:{line_number}: expected 3 tab-separated fields")
            pairs.append(Pair(*fields))
    return pairs


def load_split(split: str, data_dir: Path = DEFAULT_DATA_DIR) -> list[Pair]:
    """The shipped pairs of one split, as training and evaluation read them."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    path = Path(data_dir) / f"{split}.tsv.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; regenerate it with `python -m service data prepare`"
        )
    return read_split(path)


def dump_module(module: str) -> str:
    """Text of a SWORD module as ``mod2imp`` prints it (libsword-utils)."""
    executable = shutil.which("mod2imp")
    if executable is None:
        raise RuntimeError(
            "mod2imp not found: install the Debian packages " + " ".join(DEBIAN_PACKAGES)
        )
    result = subprocess.run([executable, module], capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        detail = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"mod2imp {module} failed (is the module installed?) {detail}")
    return result.stdout.decode("utf-8")


def debian_package_versions(packages: Iterable[str] = DEBIAN_PACKAGES) -> dict[str, str]:
    """Installed versions, recorded in the README so a regeneration can be traced to its inputs."""
    versions = {}
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        versions[package] = result.stdout.strip() if result.returncode == 0 else "not installed"
    return versions


@dataclass(frozen=True)
class CorpusSummary:
    """What prepare_corpus did, for the CLI and for the data README."""

    out_dir: Path
    counts: dict[str, int]
    pairing: PairingStats
    package_versions: dict[str, str]

    def as_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "counts": dict(self.counts),
            "total_pairs": sum(self.counts.values()),
            "pairing": asdict(self.pairing),
            "test_books": list(TEST_BOOKS),
            "valid_books": list(VALID_BOOKS),
            "package_versions": dict(self.package_versions),
        }


def prepare_bible(on_step: Callable[[str], None] = lambda step: None):
    """The Bible pairs split by book (train / valid / test), from the installed SWORD modules."""
    on_step(f"dumping {SOURCE_MODULE}")
    source = tidy_reina_valera(parse_imp(dump_module(SOURCE_MODULE)))
    on_step(f"dumping {TARGET_MODULE}")
    target = parse_imp(dump_module(TARGET_MODULE))
    on_step("pairing verses")
    pairs, pairing = pair_verses(source, target)
    splits = split_by_book(pairs)
    _check_held_out_books_present(splits)
    return splits, pairing


def prepare_corpus(
    out_dir: Path = DEFAULT_DATA_DIR,
    on_step: Callable[[str], None] = lambda step: None,
    *,
    cache: Path | None = None,
    general: bool = True,
) -> dict:
    """Regenerate the shipped splits and their README from Debian packages.

    The Bible comes from the installed SWORD modules; the general-domain text (`general.py`)
    from package catalogs and descriptions fetched into `cache`. `general=False` writes the
    Bible alone (its train / valid / bible splits), which needs no download.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bible, pairing = prepare_bible(on_step)
    splits = {"train": bible["train"], "valid": bible["valid"], "bible": bible["test"]}
    general_readme = ""
    if general:
        from service.text.debian import DEFAULT_CACHE
        from service.text.general import build_general, render_general_readme

        general_splits, general_stats, provenance = build_general(
            cache or DEFAULT_CACHE, on_step=on_step
        )
        splits["train"] = splits["train"] + general_splits["train"]
        splits["valid"] = splits["valid"] + general_splits["valid"]
        splits["general"] = general_splits["general"]
        splits["ui"] = general_splits["ui"]
        general_readme = render_general_readme(general_stats, provenance)
    for name, pairs in splits.items():
        on_step(f"writing {name}.tsv.gz")
        write_split(out_dir / f"{name}.tsv.gz", pairs)
    summary = CorpusSummary(
        out_dir=out_dir,
        counts={
            "train": len(bible["train"]),
            "valid": len(bible["valid"]),
            "bible": len(bible["test"]),
        },
        pairing=pairing,
        package_versions=debian_package_versions(),
    )
    (out_dir / "README.md").write_text(render_readme(summary) + general_readme, encoding="utf-8")
    result = summary.as_dict()
    result["counts"] = {name: len(pairs) for name, pairs in splits.items()}
    result["total_pairs"] = sum(result["counts"].values())
    result["bible_counts"] = dict(summary.counts)
    return result


def _check_held_out_books_present(splits: dict[str, list[Pair]]) -> None:
    """A misspelt book name would silently leave a held-out split short; fail instead."""
    for name, books in (("test", TEST_BOOKS), ("valid", VALID_BOOKS)):
        present = Counter(book_of(pair.key) for pair in splits[name])
        missing = [book for book in books if present[book] == 0]
        if missing:
            raise ValueError(f"{name} books with no pairs (misspelt?): {missing}")


def render_readme(summary: CorpusSummary) -> str:
    """The data card, rendered from the run's own numbers so it cannot drift from the files."""
    counts, stats = summary.counts, summary.pairing
    total = sum(counts.values())
    split_rows = "\n".join(
        f"| {name} | {counts[name]} | {100 * counts[name] / total:.1f}% |" for name in counts
    )
    package_rows = "\n".join(
        f"| `{name}` | {version} |" for name, version in summary.package_versions.items()
    )
    return f"""# Spanish-English parallel corpus (es-en)

Generated by `python -m service data prepare` (`service/text/corpus.py`); do not edit by hand.

Two parts: the Bible (below), aligned verse by verse, and general-domain text from Debian's
message catalogs and package descriptions (after it). `train.tsv.gz` and `valid.tsv.gz` hold
both; the test splits are `bible.tsv.gz` (held-out books), `general.tsv.gz` (held-out prose)
and `ui.tsv.gz` (held-out software strings). The split name `test` is an alias of `bible`.

## The Bible: provenance and licence

| side | text | SWORD module | Debian package |
|------|------|--------------|----------------|
| source (es) | Reina-Valera 1909 | `{SOURCE_MODULE}` | `sword-text-sparv` |
| target (en) | World English Bible (2020 stable text) | `{TARGET_MODULE}` | `sword-text-web` |

| Debian package | version |
|----------------|---------|
{package_rows}

Both texts are in the **public domain** (module `DistributionLicense=Public Domain`), and so are
these files. "World English Bible" is a trademark of eBible.org; its terms ask that a changed
text not be called by that name, and the English here is cleaned (footnotes and headings
removed), so call it "derived from the World English Bible".

## Files

`*.tsv.gz`: gzip (mtime 0, no embedded file name), UTF-8, one pair per line, three
tab-separated columns and no header: `key`, `es`, `en`. A Bible key is the SWORD verse key in
the English numbering (`I Samuel 3:4`); a catalog key is `<package>/<catalog>`, a description
key `ddtp/<package>`. `spm.model` is the joint SentencePiece tokenizer trained on both sides of
the train split by `python -m service data tokenizer`.

## Cleaning

1. `mod2imp MODULE` dumps each module; book and chapter introductions (chapter or verse 0) are
   skipped.
2. `<note>` footnotes and cross references, non-canonical `<title>` headings and `<speaker>`
   labels are removed with their content. Canonical titles (psalm superscriptions) are kept,
   because the Spanish module prints them inline in verse 1.
3. All other OSIS markup is stripped (line and paragraph tags become a space, and a space is
   restored where the Spanish module glues translator-supplied words to the next word), HTML
   entities are unescaped, text is NFC-normalised, pilcrows and editorial marks (`¶ * † ‡`)
   are dropped, whitespace is collapsed and spaces before closing punctuation removed.
4. Spanish only: the epistle subscriptions after the final "Amén." ("Escrita de Roma...") are
   cut (the English has none); circumflexes in names (Ezechîas) are dropped; pre-1952 accents
   are modernised (á/é/ó/ú as words -> a/e/o/u, fué/fuí/dió/vió/dí/ví -> fue/fui/dio/vio/di/vi);
   chapter openings set in capitals ("EN el principio", "DE SIETE años", "Y ACONTECIÓ") are
   re-cased the way each word is usually written in the text. Inscriptions ("EL REY DE LOS
   JUDIOS.") keep their capitals, as in the English.
5. Alignment, book by book: a monotone dynamic-programming alignment over verses scored by a
   length model (Gale & Church 1993), a Spanish->English word lexicon learnt (Dice
   coefficient) from the verses whose keys agree, and a small bonus for equal keys. Needed
   because the Spanish module keeps the Hebrew numbering in some chapters (Numbers 13, Job
   39-40, Jonah 2, ...); a pair re-paired across keys carries the English key.
6. Pairs whose character-length ratio es/en lies outside [{MIN_LENGTH_RATIO}, {MAX_LENGTH_RATIO}]
   are dropped, and so are verses in many-to-one groups, so that every pair has one key.

| verses | count |
|--------|-------|
| Spanish verses read | {stats.source_verses} |
| English verses read (deuterocanon included; no Spanish counterpart) | {stats.target_verses} |
| empty Spanish / English verses | {stats.empty_source} / {stats.empty_target} |
| verses left without a counterpart by the alignment | {stats.unaligned} |
| verses in many-to-one groups, dropped | {stats.merged} |
| length-ratio outliers dropped | {stats.ratio_outliers} |
| pairs re-paired across keys | {stats.realigned} |
| **pairs kept** | **{total}** |

## Splits

Whole books are held out (a fixed list in `service/text/corpus.py`, about 5% of the pairs each),
so no validation or test verse shares a book with training.

| Bible split | pairs | share |
|-------|-------|-------|
{split_rows}

- test books: {", ".join(TEST_BOOKS)}
- valid books: {", ".join(VALID_BOOKS)}

## Regenerate

```
apt-get install {" ".join(DEBIAN_PACKAGES)}
python -m service data prepare --out model_store/data/es-en
python -m service data tokenizer --vocab-size 16000
```

Regeneration is byte-for-byte identical for the same package versions.
"""
