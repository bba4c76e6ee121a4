"""Masking protected spans as sentinels, restoring them, and repairing lost ones."""

from __future__ import annotations

from service.text.placeholders import (
    Masked,
    MaskedLayout,
    kept_exactly,
    mask,
    piece_offsets,
    repair,
    restore,
)
from service.text.segment import segment_text

UI = "Hola {name}, tienes %d mensajes nuevos en <b>tu bandeja</b>."


def test_printf_and_numbers_are_their_own_sentinel_the_rest_numbered():
    masked = mask(UI)
    assert masked.text == "Hola {0}, tienes %d mensajes nuevos en {1}tu bandeja{2}."
    assert [(s.sentinel, s.original) for s in masked.spans] == [
        ("{0}", "{name}"),
        ("%d", "%d"),
        ("{1}", "<b>"),
        ("{2}", "</b>"),
    ]
    assert all(masked.text[s.start : s.end] == s.sentinel for s in masked.spans)
    assert masked.original == UI
    assert mask(UI, keep=False).text == UI


def test_a_numbered_form_the_text_has_is_not_reused():
    masked = mask("{0} de <i>{name}</i> en 3 días")
    assert masked.text == "{0} de {1}{2}{3} en 3 días"
    assert restore(masked, "{0} of {1}{2}{3} in 3 days").text == "{0} of <i>{name}</i> in 3 days"


def test_restore_swaps_back_in_the_order_the_translation_has():
    masked = mask(UI)
    translation = "Hello {0}, you have %d new messages in {1}your inbox{2}."
    assert kept_exactly(masked, translation)
    restored = restore(masked, translation)
    assert restored.text == "Hello {name}, you have %d new messages in <b>your inbox</b>."
    assert restored.missing == () and restored.removed == ()
    moved = restore(masked, "{1}Your inbox{2} has %d messages, {0}.")
    assert moved.text == "<b>Your inbox</b> has %d messages, {name}."


def test_extra_copies_are_removed_and_lost_ones_listed():
    masked = mask(UI)
    doubled = "Hello {0} {0}, you have %d %d messages in {1}your inbox{2}."
    assert not kept_exactly(masked, doubled)
    restored = restore(masked, doubled)
    assert restored.text == "Hello {name}, you have %d messages in <b>your inbox</b>."
    assert restored.removed == ("{name}", "%d")
    lost = restore(masked, "Hello, you have %d new messages in {1}your inbox{2}.")
    assert [s.original for s in lost.missing] == ["{name}"]


def test_piece_offsets_spell_the_text_or_give_none():
    assert piece_offsets(["▁Hola", "▁{0}", ",", "</s>"], "Hola {0},") == [
        (0, 4),
        (5, 8),
        (8, 9),
        (9, 9),
    ]
    assert piece_offsets(["▁Hola", "▁⁇"], "Hola ñ") is None


def test_repair_inserts_a_lost_span_at_the_word_attending_to_it():
    masked = mask("Hola {name}, adiós amigo.")
    raw = "Hello, goodbye friend."
    source = ["▁Hola", "▁{0}", ",", "▁adiós", "▁amigo", ".", "</s>"]
    target = ["▁Hello", ",", "▁good", "bye", "▁friend", ".", "</s>"]
    weights = [[0.0] * len(source) for _ in target]
    for row, column in enumerate([0, 2, 3, 1, 4, 5, 6]):  # "bye" attends to {0} most
        weights[row][column] = 1.0
    restored = repair(masked, restore(masked, raw), raw, source, target, weights)
    assert restored.text == "Hello, {name} goodbye friend."
    assert restored.inserted == ("{name}",)


def test_repair_at_the_end_goes_before_the_full_stop_and_gives_up_on_unreadable_pieces():
    masked = mask("Ver <br/>.")
    raw = "See."
    source, target = ["▁Ver", "▁{0}", ".", "</s>"], ["▁See", ".", "</s>"]
    weights = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    assert repair(masked, restore(masked, raw), raw, source, target, weights).text == "See <br/>."
    assert repair(masked, restore(masked, raw), raw, ["▁X"], target, weights) is None


def test_a_masked_layout_is_cut_at_numbers_and_its_clauses_keep_their_spans():
    layout = MaskedLayout.of(segment_text("Copie 24 archivos de {dir} a <b>{dest}</b>.", "es"))
    assert layout.units == ["Copie", "archivos de {0} a {1}{2}{3}."]
    assert layout.originals == ["Copie", "archivos de {dir} a <b>{dest}</b>."]
    assert not Masked("{0} %s", mask("{x} %s").spans).has_words
    long = MaskedLayout.of(
        segment_text("Abra {a} ahora, y cierre {b} luego.", "es"), cut_numbers=False
    )
    assert long.fit(lambda text: len(text.split()) <= 3) is None
    assert long.units == ["Abra {0} ahora,", "y cierre", "{1} luego."]
    assert [m.original for m in long.masks] == ["Abra {a} ahora,", "y cierre", "{b} luego."]
    assert [[s.original for s in m.spans] for m in long.masks] == [["{a}"], [], ["{b}"]]
