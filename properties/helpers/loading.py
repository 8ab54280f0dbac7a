"""Load the implementation under test from a TARGET: `package.module:function`, `path/to/file.py:function`
or `path/to/notebook.ipynb:function`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def load_function(target: str) -> Callable[..., Any]:
    """Import and return the function named by `target`; ValueError with the reason when it cannot."""
    module_part, sep, attribute = target.rpartition(":")
    if not sep or not module_part or not attribute:
        raise ValueError(f"TARGET must be 'package.module:function' or 'path/to/file.py:function'; got {target!r}")
    if module_part.endswith(".ipynb"):  # a notebook's function, from its extraction (properties.helpers.notebook)
        from properties.helpers.notebook import load_notebook_function

        return load_notebook_function(Path(module_part).expanduser(), attribute)
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"TARGET file {str(path)!r} does not exist (from {target!r})")
        name = f"attention_target_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {str(path)!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
    else:
        module = importlib.import_module(module_part)
    function = module
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise ValueError(f"{module_part!r} has no attribute {attribute!r} (from TARGET {target!r})")
        function = getattr(function, part)
    if not callable(function):
        raise ValueError(f"{target!r} is not callable")
    return function
