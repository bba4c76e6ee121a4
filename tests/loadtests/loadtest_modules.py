"""Import the scripts in `loadtests/` by path: they are scripts, not an installed package.

A module of its own (not conftest) so test files can import it: several test folders have a
conftest.py, and only one of them can be the importable module named `conftest`.
"""

import importlib.util
import sys
from pathlib import Path

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"


def load_module(name: str):
    """Import `loadtests/<name>.py` by path: `loadtests/` is scripts, not an installed package."""
    spec = importlib.util.spec_from_file_location(f"loadtests_{name}", LOADTESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
