import json

import pytest
import typer
from typer.testing import CliRunner

from service.store.cli import import_marian_command, models_app
from service.store.marian import export_marian

runner = CliRunner()

# Registered as service/__main__.py does, so these tests do not depend on the other commands.
app = typer.Typer()
app.add_typer(models_app, name="models")
app.command("import-marian")(import_marian_command)


def test_commands_are_registered_in_the_service_cli():
    from service.__main__ import app as service_app

    result = runner.invoke(service_app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "models" in result.output and "import-marian" in result.output


def test_models_list_json_and_table(store, spm_path, tiny_model):
    store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    store.save(
        tiny_model("rnnsearch"),
        spm_path,
        model_id="es-en/rnnsearch",
        metrics={"test": {"bleu": 12.5, "signature": "nrefs:1"}},
    )
    result = runner.invoke(app, ["models", "list", "--json", "--root", str(store.root)])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(m["id"], m["version"]) for m in listed] == [
        ("es-en/rnnsearch", 1),
        ("es-en/transformer", 1),
    ]
    assert listed[0]["metrics"]["test"]["bleu"] == 12.5

    result = runner.invoke(
        app, ["models", "list", "--root", str(store.root)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "es-en/transformer" in result.output and "test.bleu=12.50" in result.output


def test_models_list_reports_damage_with_a_failing_exit_code(store, spm_path, tiny_model):
    manifest = store.save(tiny_model("transformer"), spm_path, model_id="es-en/transformer")
    (store.directory(manifest) / "manifest.json").write_text("{")
    result = runner.invoke(app, ["models", "list", "--json", "--root", str(store.root)])
    assert result.exit_code == 1
    assert "not valid JSON" in json.loads(result.output)[0]["error"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_import_marian_command(store, spm_path, tiny_model, tmp_path):
    exported = export_marian(tiny_model("transformer"), tmp_path / "hf", tokenizer_path=spm_path)
    args = ["import-marian", str(exported), "--id", "es-en/opus", "--root", str(store.root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "imported es-en/opus version 1" in result.output
    assert store.versions("es-en/opus") == [1]

    (exported / "model.safetensors").rename(exported / "pytorch_model.bin")
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "pickle" in result.output
    assert store.versions("es-en/opus") == [1]
