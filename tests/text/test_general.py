"""The general-domain corpus: catalogs and descriptions assembled into held-out splits.

Made-up packages stand in for the ~1,700 Debian packages the shipped corpus reads, so the
splitting rules are tested without a download.
"""

from __future__ import annotations

import pytest

from service.text.debian import FetchedPackage
from service.text.general import HeldOut, assemble, listed_packages, render_general_readme
from tests.text.test_catalogs import write_mo

PROSE_EN = "The old bridge collapsed during the storm last night."
PROSE_ES = "El viejo puente se derrumbó durante la tormenta de anoche."


def package(tmp_path, name, entries, copyright_text="License: GPL-2+\n"):
    root = tmp_path / name
    mo_dir = root / "usr" / "share" / "locale" / "es" / "LC_MESSAGES"
    mo_dir.mkdir(parents=True)
    write_mo(mo_dir / f"{name}.mo", [{"msgid": en, "msgstr": es} for en, es in entries])
    doc = root / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(copyright_text, encoding="utf-8")
    return FetchedPackage(name, "1.0-1", root)


@pytest.fixture
def assembled(tmp_path):
    packages = [
        package(tmp_path, "editor", [("Save file", "Guardar archivo"), ("Quit", "Salir")]),
        package(
            tmp_path,
            "game-data",
            [(PROSE_EN, PROSE_ES), ("Sword", "Espada")],
        ),
        package(
            tmp_path,
            "mailer",
            [("Quit", "Cerrar"), ("New message", "Mensaje nuevo"), (PROSE_EN, PROSE_ES)],
        ),
        package(tmp_path, "dup-editor", [("Save file", "Guardar archivo")]),
    ]
    sources = {"game-data": "game", "mailer": "mailer", "editor": "editor"}
    descriptions = [
        ("game-data", "A game of swords and sorcery in a large world.", "Un juego de espadas."),
        ("editor", "An editor for text files of every kind.", "Un editor de archivos."),
    ]
    held_out = HeldOut(
        general=("game",),
        ui=("mailer",),
        valid=(),
        sizes=(("general", 10), ("ui", 10), ("valid", 10)),
    )
    return assemble(packages, sources, descriptions, held_out)


def test_held_out_packages_feed_their_split_only(assembled):
    splits, _, _ = assembled
    texts = {name: {pair.target for pair in pairs} for name, pairs in splits.items()}

    assert texts["general"] == {PROSE_EN, "A game of swords and sorcery in a large world."}
    # The mailer's prose is neither ui nor train; its copy of the game's sentence is a duplicate.
    assert texts["ui"] == {"Quit", "New message"}
    assert "Sword" not in texts["train"]  # a held-out game's label goes nowhere


def test_train_loses_every_string_a_held_out_split_has(assembled):
    splits, stats, _ = assembled
    train = {pair.target for pair in splits["train"]}

    # The editor's ("Quit", "Salir") shares its English with the mailer's ("Quit", "Cerrar").
    assert "Quit" not in train
    assert "Save file" in train
    assert stats.held_out_removed_from_train == 1


def test_exact_duplicates_are_kept_once_with_the_first_package(assembled):
    splits, stats, provenance = assembled

    assert [p.key for p in splits["train"] if p.target == "Save file"] == ["editor/editor"]
    assert stats.duplicates == 2  # dup-editor's "Save file", the mailer's copy of the prose
    assert {p.package for p in provenance} == {"editor", "game-data", "mailer"}
    assert all(p.licences == "GPL-2+" for p in provenance)


def test_descriptions_of_ui_packages_train_and_keys_name_their_source(assembled):
    splits, stats, _ = assembled

    assert stats.description_pairs == 2
    assert any(p.key == "ddtp/editor" for p in splits["train"])


def test_held_out_samples_are_capped_and_stable(tmp_path):
    entries = [(f"Item number {i}", f"Elemento número {i}") for i in range(30)]
    packages = [package(tmp_path, "mailer", entries)]
    held_out = HeldOut(
        general=(), ui=("mailer",), valid=(), sizes=(("general", 5), ("ui", 5), ("valid", 5))
    )

    first, _, _ = assemble(packages, {}, [], held_out)
    second, _, _ = assemble(list(reversed(packages)), {}, [], held_out)

    assert len(first["ui"]) == 5
    assert first["ui"] == second["ui"]
    assert first["train"] == []  # the rest of a held-out package is not training data


def test_readme_lists_every_source_with_version_and_licence(assembled):
    _, stats, provenance = assembled
    readme = render_general_readme(stats, provenance)

    assert "| `editor` | `editor` | 1.0-1 | GPL-2+ |" in readme
    assert "held-out software strings" in readme


def test_the_shipped_package_list_has_no_duplicates():
    names = listed_packages()

    assert len(names) > 1000
    assert len(names) == len(set(names))
