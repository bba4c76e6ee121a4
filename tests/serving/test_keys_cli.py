"""`python -m service keys add|list|remove`, and where the config says the database is."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from service.__main__ import app
from service.api.keys import KeyStore, key_hash
from service.serving.config import AppArgs

runner = CliRunner()


def test_add_list_remove(tmp_path):
    db = str(tmp_path / "keys.sqlite")
    added = runner.invoke(app, ["keys", "add", "--db", db, "--req-limit", "60", "--name", "ann"])
    assert added.exit_code == 0, added.output
    key = added.output.strip().splitlines()[-1]
    assert key.startswith("sk-") and " " not in key
    [record] = KeyStore(db).records()
    assert (record.name, record.req_limit, record.char_limit) == ("ann", 60, None)
    assert record.key_sha256 == key_hash(key)

    listed = runner.invoke(app, ["keys", "list", "--db", db])
    assert listed.exit_code == 0 and "ann" in listed.output and key not in listed.output
    assert runner.invoke(app, ["keys", "add", "--db", db, "--name", "ann"]).exit_code == 1
    assert runner.invoke(app, ["keys", "add", "--db", db, "--name", "a b"]).exit_code == 2

    removed = runner.invoke(app, ["keys", "remove", "--db", db, key])
    assert removed.exit_code == 0 and "ann" in removed.output
    assert runner.invoke(app, ["keys", "remove", "--db", db, "ann"]).exit_code == 1


def test_db_defaults_beside_the_store_and_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store").mkdir()
    assert AppArgs(store="store").keys_db() == tmp_path / "keys.sqlite"
    assert AppArgs(api={"keys": {"db": "x/k.db"}}).keys_db() == tmp_path / "x" / "k.db"
    config = tmp_path / "serve.yaml"
    config.write_text(
        "applications:\n  - name: t\n    import_path: service.serving.app:build_app\n"
        "    args:\n      store: store\n      api:\n        keys: {required: true, db: mine.db}\n"
    )
    added = runner.invoke(app, ["keys", "add", "--config", str(config)])
    assert added.exit_code == 0, added.output
    assert Path("mine.db").exists() and len(KeyStore("mine.db").records()) == 1
