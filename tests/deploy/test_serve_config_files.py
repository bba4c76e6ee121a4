"""deploy/serve_config.yaml names the file settings of POST /translate_file, with their
defaults, and says that an uploaded file's text counts against the character limit."""

from __future__ import annotations

import yaml

from service.api.settings import ApiSettings
from service.serving import kuberay

FILE_SETTINGS = ("max_file_bytes", "file_ttl_s", "file_store_max", "file_store_dir")


def test_file_settings_are_in_the_serve_config_with_their_defaults():
    config = yaml.safe_load(kuberay.SERVE_CONFIG.read_text())
    (app,) = [a for a in config["applications"] if "api" in a["args"]]
    api = app["args"]["api"]
    defaults = ApiSettings()
    for name in FILE_SETTINGS:
        assert name in api, f"{name} missing from serve_config.yaml's api section"
        assert api[name] == getattr(defaults, name)


def test_each_file_setting_and_char_limit_have_a_comment_naming_files():
    lines = kuberay.SERVE_CONFIG.read_text().splitlines()
    for name in (*FILE_SETTINGS, "char_limit"):
        (line,) = [line for line in lines if line.strip().startswith(f"{name}:")]
        _, _, comment = line.partition("#")
        assert "file" in comment, line
