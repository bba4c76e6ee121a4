"""Corpus preparation: OSIS cleaning, verse alignment, whole-book splits and the shipped files."""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter

import pytest

from service.text.corpus import (
    DEFAULT_DATA_DIR,
    TEST_BOOKS,
    VALID_BOOKS,
    VERSE_KEY,
    AlignedVerse,
    AlignmentModel,
    Lexicon,
    Pair,
    align_verses,
    book_of,
    clean_osis,
    load_split,
    pair_verses,
    parse_imp,
    prepare_corpus,
    read_split,
    split_by_book,
    tidy_reina_valera,
    write_split,
)

# The shape `mod2imp` prints: module and book headings, introductions at chapter/verse 0, then
# one `$$$Book C:V` line per verse followed by its OSIS markup (sometimes over several lines).
OSIS_DUMP = """$$$[ Module Heading ]

$$$[ Testament 1 Heading ]
<milestone type="x-importer" subType="x-osis2mod" n="$Rev: 3769 $"/>
$$$Genesis 0:0
<div type="book"/> <title level="1" type="main">Génesis</title> Introducción del libro.
$$$Genesis 1:0
<chapter n="1" osisID="Gen.1" sID="Gen.1"/>
$$$Genesis 1:1
<title type="x-heading">La creación</title><w lemma="strong:H7225">EN el principio</w> \
<w lemma="strong:H1254">crió</w> Dios<note placement="foot"><reference type="annotateRef">1:1 \
</reference>O <catchWord>crió</catchWord>: hizo.</note> los cielos &amp; la tierra.
$$$Genesis 1:2
¶ <w>Y la tierra</w> <w>estaba</w><l eID="a1"/><l sID="a2"/>desordenada &lt;y vacía&gt; .
$$$Genesis 1:3
<w>envía</w><transChange type="added">lo</transChange><w>á las siete</w> \
<w>hay allí</w><transChange type="added">también</transChange><w>bdelio</w>
$$$Psalms 3:1
<title canonical="true" type="psalm">Salmo de David.</title> <lg sID="g1"/>
<l level="1" sID="g2"/>¡OH Jehová,<l eID="g2"/> <speaker>Amado</speaker> cuánto!
"""


def test_parse_skips_headings_and_introductions():
    verses = parse_imp(OSIS_DUMP)

    assert list(verses) == ["Genesis 1:1", "Genesis 1:2", "Genesis 1:3", "Psalms 3:1"]


def test_notes_and_headings_are_dropped_with_their_content():
    verse = parse_imp(OSIS_DUMP)["Genesis 1:1"]

    assert verse == "EN el principio crió Dios los cielos & la tierra."
    assert "creación" not in verse and "hizo" not in verse and "<" not in verse


def test_entities_pilcrows_and_line_tags_become_plain_text():
    verse = parse_imp(OSIS_DUMP)["Genesis 1:2"]

    assert verse == "Y la tierra estaba desordenada <y vacía>."


def test_supplied_words_get_their_missing_spaces_but_enclitics_stay_attached():
    verse = parse_imp(OSIS_DUMP)["Genesis 1:3"]

    assert verse == "envíalo á las siete hay allí también bdelio"


def test_canonical_psalm_titles_stay_but_speaker_labels_go():
    verse = parse_imp(OSIS_DUMP)["Psalms 3:1"]

    assert verse == "Salmo de David. ¡OH Jehová, cuánto!"


def test_clean_osis_collapses_whitespace_and_self_closing_titles():
    assert clean_osis('<title type="x" />a\n\n  b <lb/>c') == "a b c"


def test_reina_valera_spelling_is_modernised_and_drop_caps_recased():
    tidied = tidy_reina_valera(
        {
            "a": "EN el principio fué hecha la luz á la tierra.",
            "b": "Y ACONTECIÓ que Jacob vió á Jacob; y aconteció.",
            "c": "Y JACOB se fué. Jacob, Jacob.",
            "d": "Salmo de David. ¡OH Jehová, cuánto!",
            "e": "su causa: EL REY DE LOS JUDIOS.",
            "f": "La gracia sea con vosotros. Amén. Escrita de Roma con Tichîco.",
            "g": "Ezechîas dió pan.",
        }
    )

    assert tidied == {
        "a": "En el principio fue hecha la luz a la tierra.",
        "b": "Y aconteció que Jacob vio a Jacob; y aconteció.",
        "c": "Y Jacob se fue. Jacob, Jacob.",
        "d": "Salmo de David. ¡Oh Jehová, cuánto!",
        "e": "su causa: EL REY DE LOS JUDIOS.",
        "f": "La gracia sea con vosotros. Amén.",
        "g": "Ezechias dio pan.",
    }


def _verse(key: str, text: str, words: str) -> AlignedVerse:
    return AlignedVerse(key, text, frozenset(words.split()))


def test_alignment_follows_the_words_across_a_shifted_numbering():
    # The source numbers the chapter one verse later than the target (as the Reina-Valera does
    # in Jonah 2); the translated words show which verse is which.
    source = [
        _verse("B 1:1", "x" * 40, "fish"),
        _verse("B 2:2", "x" * 40, "prayed"),
        _verse("B 2:3", "x" * 40, "called"),
        _verse("B 2:4", "x" * 40, "deep"),
    ]
    target = [
        _verse("B 1:1", "y" * 42, "fish big"),
        _verse("B 2:1", "y" * 42, "prayed god"),
        _verse("B 2:2", "y" * 42, "called out"),
        _verse("B 2:3", "y" * 42, "deep sea"),
    ]

    beads = align_verses(source, target)

    assert [(list(b.source), list(b.target)) for b in beads] == [
        ([0], [0]),
        ([1], [1]),
        ([2], [2]),
        ([3], [3]),
    ]


def test_alignment_skips_a_verse_one_side_lacks():
    source = [_verse(f"B 1:{v}", "x" * 50, w) for v, w in ((1, "a"), (2, "b"), (4, "d"))]
    target = [_verse(f"B 1:{v}", "y" * 52, w) for v, w in ((1, "a"), (2, "b"), (3, "c"), (4, "d"))]

    beads = align_verses(source, target, AlignmentModel())

    one_to_one = [
        (source[b.source[0]].key, target[b.target[0]].key) for b in beads if b.is_one_to_one
    ]
    assert one_to_one == [("B 1:1", "B 1:1"), ("B 1:2", "B 1:2"), ("B 1:4", "B 1:4")]


def test_lexicon_learns_translations_from_cooccurrence():
    pairs = [
        ("el gato come", "the cat eats"),
        ("el perro come", "the dog eats"),
        ("un gato duerme", "a cat sleeps"),
        ("un perro duerme", "a dog sleeps"),
        ("el gato duerme", "the cat sleeps"),
        ("el perro corre", "the dog runs"),
    ] * 2

    lexicon = Lexicon.learn(pairs, min_count=2, max_verse_share=0.9)

    assert lexicon.translations["gato"] == "cat"
    assert lexicon.translations["perro"] == "dog"
    assert lexicon.translate("un gato") >= {"cat"}


def _bible_pairs() -> tuple[dict[str, str], dict[str, str]]:
    words = [("casa", "house"), ("perro", "dog"), ("agua", "water"), ("pan", "bread")]
    source, target = {}, {}
    for verse in range(1, 13):
        es, en = words[verse % 4], words[(verse + 1) % 4]
        source[f"Genesis 1:{verse}"] = f"La {es[0]} y el {en[0]} del número {verse}."
        target[f"Genesis 1:{verse}"] = f"The {es[1]} and the {en[1]} of number {verse}."
    return source, target


def test_pairs_follow_keys_and_skip_empty_verses():
    source, target = _bible_pairs()
    source["Genesis 1:3"] = ""

    pairs, stats = pair_verses(source, target)

    assert [pair.key for pair in pairs] == [f"Genesis 1:{v}" for v in range(1, 13) if v != 3]
    assert all(pair.source == source[pair.key] for pair in pairs)
    assert all(pair.target == target[pair.key] for pair in pairs)
    assert (stats.empty_source, stats.realigned, stats.kept) == (1, 0, 11)


def test_length_ratio_outliers_are_dropped():
    source, target = _bible_pairs()
    source["Genesis 1:5"] += " Y dijo él otra vez, en voz alta."

    pairs, stats = pair_verses(source, target, min_ratio=0.8, max_ratio=1.3)

    assert "Genesis 1:5" not in [pair.key for pair in pairs]
    assert (stats.ratio_outliers, stats.kept) == (1, 11)


def test_books_only_in_the_target_are_ignored():
    source, target = _bible_pairs()
    target["Tobit 1:1"] = "Deuterocanon only in English."

    pairs, stats = pair_verses(source, target)

    assert {book_of(pair.key) for pair in pairs} == {"Genesis"}
    assert stats.target_verses == len(target)


def test_book_of_reads_multi_word_books_and_rejects_non_keys():
    assert book_of("I Samuel 3:4") == "I Samuel"
    assert book_of("Revelation of John 22:21") == "Revelation of John"
    with pytest.raises(ValueError, match="not a verse key"):
        book_of("[ Module Heading ]")


def test_split_by_book_holds_out_whole_books():
    pairs = [Pair(f"{book} 1:{v}", "es", "en") for book in ("A", "B", "C") for v in (1, 2)]

    splits = split_by_book(pairs, test_books=["B"], valid_books=["C"])

    assert {name: {book_of(p.key) for p in ps} for name, ps in splits.items()} == {
        "train": {"A"},
        "valid": {"C"},
        "test": {"B"},
    }
    with pytest.raises(ValueError, match="both test and valid"):
        split_by_book(pairs, test_books=["B"], valid_books=["B"])


def test_written_split_reads_back_and_is_byte_reproducible(tmp_path):
    pairs = [Pair("Genesis 1:1", "En el principio", "In the beginning"), Pair("X 1:2", "ñ ü", "—")]

    write_split(tmp_path / "a.tsv.gz", pairs)
    write_split(tmp_path / "b.tsv.gz", pairs)

    data = (tmp_path / "a.tsv.gz").read_bytes()
    assert data == (tmp_path / "b.tsv.gz").read_bytes()
    assert data[4:8] == b"\0\0\0\0", "gzip mtime must be zero"
    assert not data[3] & 0x08, "gzip must not embed a file name"
    assert read_split(tmp_path / "a.tsv.gz") == pairs


def test_write_split_refuses_tabs_inside_fields(tmp_path):
    with pytest.raises(ValueError, match="tab or newline"):
        write_split(tmp_path / "x.tsv.gz", [Pair("A 1:1", "a\tb", "c")])


def test_load_split_rejects_an_unknown_split_by_name():
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*train, valid, bible, general, ui"):
        load_split("dev")


def test_test_is_the_old_name_of_the_bible_split():
    assert load_split("test") == load_split("bible")


def test_load_split_names_the_regeneration_command_when_files_are_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="data prepare"):
        load_split("train", tmp_path)


# ---- the shipped corpus -------------------------------------------------------------------


def _is_verse(pair: Pair) -> bool:
    return VERSE_KEY.match(pair.key) is not None


@pytest.fixture(scope="module")
def shipped() -> dict[str, list[Pair]]:
    """The Bible part of the shipped splits, by the names `split_by_book` gives them."""
    return {
        "train": [pair for pair in load_split("train") if _is_verse(pair)],
        "valid": [pair for pair in load_split("valid") if _is_verse(pair)],
        "test": load_split("bible"),
    }


def test_shipped_splits_hold_out_the_named_books_only(shipped):
    books = {split: {book_of(pair.key) for pair in pairs} for split, pairs in shipped.items()}

    assert books["test"] == set(TEST_BOOKS)
    assert books["valid"] == set(VALID_BOOKS)
    assert not books["train"] & (books["test"] | books["valid"])


def test_shipped_split_sizes(shipped):
    counts = {split: len(pairs) for split, pairs in shipped.items()}
    total = sum(counts.values())

    assert 30_000 <= total <= 31_102
    assert 0.04 <= counts["test"] / total <= 0.06
    assert 0.04 <= counts["valid"] / total <= 0.06


def test_shipped_split_is_what_the_fixed_book_lists_give(shipped):
    everything = [pair for pairs in shipped.values() for pair in pairs]

    assert split_by_book(everything) == shipped


def test_shipped_pairs_are_clean(shipped):
    pairs = [pair for split_pairs in shipped.values() for pair in split_pairs]
    keys = Counter(pair.key for pair in pairs)

    assert max(keys.values()) == 1, "every key once"
    assert all(pair.source and pair.target for pair in pairs)
    assert not any("<" in pair.source or "<" in pair.target for pair in pairs)
    assert not any("¶" in pair.source + pair.target for pair in pairs)
    assert all(0.5 <= len(p.source) / len(p.target) <= 2.0 for p in pairs)


def test_shipped_pairs_are_aligned_where_the_spanish_numbering_differs(shipped):
    train = {pair.key: pair for pair in shipped["train"]}
    test = {pair.key: pair for pair in shipped["test"]}

    # The Reina-Valera module prints Jonah 1:17 as Jonah 2:1 and Numbers 12:16 as Numbers 13:1.
    assert "pez" in test["Jonah 1:17"].source and "fish" in test["Jonah 1:17"].target
    assert "Haseroth" in train["Numbers 12:16"].source
    assert "Hazeroth" in train["Numbers 12:16"].target


@pytest.mark.slow
def test_prepare_regenerates_the_shipped_bible_byte_for_byte(tmp_path, shipped):
    """The Bible part needs no download; the general part is tested on made-up catalogs
    (tests/text/test_general.py), since fetching ~1,700 packages is no unit test."""
    stats = prepare_corpus(tmp_path, general=False)

    assert stats["counts"] == {
        name: len(shipped[key])
        for name, key in (("train", "train"), ("valid", "valid"), ("bible", "test"))
    }
    shipped_digest = hashlib.sha256((DEFAULT_DATA_DIR / "bible.tsv.gz").read_bytes()).hexdigest()
    assert hashlib.sha256((tmp_path / "bible.tsv.gz").read_bytes()).hexdigest() == shipped_digest
    for name, key in (("train", "train"), ("valid", "valid")):
        assert read_split(tmp_path / f"{name}.tsv.gz") == shipped[key], name
    with gzip.open(tmp_path / "bible.tsv.gz", "rt", encoding="utf-8") as handle:
        assert handle.readline().startswith("Ruth 1:1\t")
