"""The command line: `python -m service ...`."""

import typer

from service.bench.cli import bench_app
from service.compare.cli import compare_command
from service.playground.screenshots import playground_screenshots_command
from service.serving.cli import serve_command
from service.serving.keys_cli import keys_app
from service.store.cli import import_marian_command, models_app
from service.text.cli import data_app
from service.training.cli import (
    eval_command,
    generate_command,
    train_command,
    translate_command,
)

app = typer.Typer(no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
app.command("import-marian")(import_marian_command)
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("translate")(translate_command)
app.command("generate")(generate_command)
app.command("compare")(compare_command)
app.command("serve")(serve_command)
app.command("playground-screenshots")(playground_screenshots_command)

if __name__ == "__main__":
    app()
