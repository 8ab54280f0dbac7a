"""A law's failing call as data and as code: the counterexample (JSON) and a snippet that replays it.

Both are built from the keyword arguments the law's body received in its final, shrunk failing call
(recorded by properties.checker.verdicts), never from hypothesis's printed text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import resource
import sys
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from properties.helpers.hypothesis_internals import fresh_body
from properties.helpers.options import FIXTURES
from properties.helpers.problems import ARGUMENT_ORDER, AttentionProblem, code_for

# Arrays of more entries than this leave the counterexample and the snippet for an .npz file beside the report
# (the fixed N = 1100 examples carry a 1100 x 1100 bias: 19 MB as hex in a snippet, 24 MB as JSON).
LARGE_ENTRIES = 1024


@contextlib.contextmanager
def own_output() -> Generator[None, None, None]:
    """Lift the output-size limit (RLIMIT_FSIZE's soft limit, which the grading worker sets for the code under
    test) while the checker writes its own files: results and counterexamples never count against it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


class ArrayStore:
    """The large arrays of one counterexample, saved to one .npz file (`path`) that its snippet loads; with no
    path, every array stays inline."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.arrays: dict[str, np.ndarray] = {}
        self._keys: dict[int, str] = {}

    def key(self, array: np.ndarray) -> str | None:
        """The array's key in the file, or None when it stays inline (small, or no file)."""
        if self.path is None or array.size <= LARGE_ENTRIES:
            return None
        if id(array) not in self._keys:
            self._keys[id(array)] = f"a{len(self.arrays)}"
            self.arrays[self._keys[id(array)]] = array
        return self._keys[id(array)]

    def save(self) -> str | None:
        """Write the file (when it holds an array); its path, or None."""
        if self.path is None or not self.arrays:
            return None
        with own_output():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(self.path, **self.arrays)  # type: ignore[arg-type]
        return str(self.path)


def _holds_large_arrays(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.size > LARGE_ENTRIES
    if isinstance(value, tuple | list):
        return any(_holds_large_arrays(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_holds_large_arrays(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


class Draws:
    """Stands for hypothesis's `data` argument: records what a law draws, or replays recorded draws."""

    def __init__(self, data: Any = None, values: list[Any] | None = None) -> None:
        self._data = data
        self.values: list[Any] = [] if values is None else list(values)
        self._next = 0

    def draw(self, strategy: st.SearchStrategy[Any], label: Any = None) -> Any:
        """The next value: drawn (and recorded) while recording, the recorded one when replaying."""
        if self._data is None:
            value = self.values[self._next]
            self._next += 1
            return value
        value = self._data.draw(strategy, label=label)
        self.values.append(value)
        return value

    def __repr__(self) -> str:
        return f"Draws(values={self.values!r})"


def _float_code(value: float) -> str:
    return repr(value) if math.isfinite(value) else f"float({str(value)!r})"


def _nested_code(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_nested_code(v) for v in value) + "]"
    return _float_code(value) if isinstance(value, float) else repr(value)


def code_of(value: Any, imports: set[str], store: ArrayStore | None = None) -> str:
    """Python source that rebuilds `value`; adds the import lines it needs to `imports`. Arrays the `store` takes
    (large ones) are read from its file as ARRAYS[key]."""
    store = store or ArrayStore()
    if isinstance(value, np.ndarray):
        imports.add("import numpy as np")
        key = store.key(value)
        if key is not None:
            return f"ARRAYS[{key!r}]"
        if value.dtype.kind == "f" and value.size and not np.isfinite(value).all():
            return f"np.array({_nested_code(value.tolist())})"
        return code_for(value)
    if isinstance(value, np.generic):
        return code_of(value.item(), imports)
    if isinstance(value, float):
        return _float_code(value)
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, tuple):
        items = [code_of(v, imports, store) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(code_of(v, imports, store) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{code_of(k, imports, store)}: {code_of(v, imports, store)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, Draws):
        imports.add("from properties.checker.report import Draws")
        return f"Draws(values={code_of(value.values, imports)})"
    kind = type(value)
    if callable(getattr(value, "function", None)):
        # The function under test: an Implementation, or a softmax / multi-head wrapper, reloaded by its TARGET.
        target = str(getattr(value, "target", None) or getattr(value, "name", ""))
        if ":" not in target:
            raise ValueError(f"cannot reload {value!r}: no TARGET")
        imports.add("from properties.helpers.loading import load_function")
        if hasattr(value, "kind") and hasattr(value, "bounds"):
            # An Implementation (or its row-convention subclass, which also prints its Convention) prints as code.
            imports.add(f"from {kind.__module__} import {kind.__qualname__}")
            convention = getattr(value, "convention", None)
            if convention is not None:
                imports.add(f"from {type(convention).__module__} import {type(convention).__qualname__}")
            return repr(value)
        return f"load_function({target!r})"  # the laws call a softmax or multi-head function directly
    if store.path is not None and dataclasses.is_dataclass(value) and _holds_large_arrays(value):
        # A problem or options holding large arrays: rebuilt field by field, the large arrays from the file.
        imports.add(f"from {kind.__module__} import {kind.__qualname__}")
        fields = [f"    {f.name}={code_of(getattr(value, f.name), imports, store)}," for f in dataclasses.fields(value)]
        return "\n".join([f"{kind.__qualname__}(", *fields, ")"])
    if "__repr__" in vars(kind) and repr(value).startswith(kind.__qualname__ + "("):
        text = repr(value)  # prints as code (AttentionProblem, ...), perhaps with the problems it holds
        module = sys.modules[kind.__module__]
        imports.update(f"from {kind.__module__} import {name}" for name in dir(module) if f"{name}(" in text
                       and isinstance(getattr(module, name), type))  # fmt: skip
        imports.add(f"from {kind.__module__} import {kind.__qualname__}")
        return text
    qualname = getattr(value, "__qualname__", "")
    if callable(value) and qualname and "." not in qualname and "<" not in qualname:
        imports.add(f"from {value.__module__} import {qualname}")  # a module-level function
        return str(qualname)
    raise ValueError(f"cannot write a {kind.__qualname__} as code")


def replay(law: Callable[..., Any], /, **arguments: Any) -> None:
    """Run the body of the hypothesis test `law` once on these keyword arguments, inside hypothesis (so that
    note() and the like work); raises what the law raises."""
    strategies = {
        name: st.just(value).map(lambda d: Draws(values=d.values)) if isinstance(value, Draws) else st.just(value)
        for name, value in arguments.items()
    }
    once = settings(database=None, max_examples=1, phases=[Phase.generate], report_multiple_bugs=False,
                    suppress_health_check=list(HealthCheck))  # fmt: skip
    once(given(**strategies)(fresh_body(law)))()


def snippet(
    law: Callable[..., Any],
    arguments: Mapping[str, Any],
    error: BaseException | None = None,
    store: ArrayStore | None = None,
    shrunk: bool = True,
) -> str:
    """Self-contained Python that calls the law's body on `arguments`; it raises (exits non-zero) while the
    implementation still breaks the law. Large arrays are loaded from the store's .npz file. `shrunk`: whether
    hypothesis shrank the example (not when it is an example shared by a grading run's workers that the law's own
    run did not meet, properties/checker/shared_draws.py)."""
    store = store or ArrayStore()
    imports = {"import numpy as np"}  # problems print their arrays as np.array(...)
    lines = [f"    {name}={code_of(value, imports, store)}," for name, value in arguments.items()]
    loads = [f"ARRAYS = np.load({str(store.path)!r})  # the counterexample's large arrays"] if store.arrays else []
    module, name = law.__module__, law.__name__
    header = f'"""Replays the {"shrunk " if shrunk else ""}counterexample of {name}'
    if not shrunk:
        header += " (an example the grading run drew once for every file; the law's own draws did not meet it)"
    header += f": it raised {type(error).__name__}." if error is not None else "."
    return "\n".join(
        [
            header + ' Run with python; it raises while the law fails."""',
            *sorted(imports, key=lambda line: (not line.startswith("import"), line)),
            "from properties.checker.report import replay",
            f"from {module} import {name} as law",
            "",
            *loads,
            "replay(",
            "    law,",
            *lines,
            ")",
        ]
    )


def _json_value(value: Any, store: ArrayStore | None = None) -> Any:
    store = store or ArrayStore()
    if isinstance(value, np.ndarray):
        key = store.key(value)
        if key is not None:
            return {"npz": str(store.path), "key": key, "shape": list(value.shape), "dtype": str(value.dtype)}
        return _json_value(value.tolist())
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, tuple | list):
        return [_json_value(v, store) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v, store) for k, v in value.items()}
    if isinstance(value, AttentionProblem):
        shapes = {"D": value.D, "D_q": value.D_q, "D_v": value.D_v, "N": value.N}
        return {**{name: _json_value(getattr(value, name), store) for name in ARGUMENT_ORDER}, **shapes}
    if isinstance(value, Draws):
        return _json_value(value.values, store)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_value(getattr(value, f.name), store) for f in dataclasses.fields(value)}
    return repr(value)


def first_problem(value: Any) -> AttentionProblem | None:
    """The first AttentionProblem in a law's arguments (a problem, or a tuple case that holds one)."""
    if isinstance(value, AttentionProblem):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple | list) else ()
    return next((p for p in (first_problem(v) for v in items) if p is not None), None)


def counterexample(arguments: Mapping[str, Any], store: ArrayStore | None = None) -> dict[str, Any]:
    """The drawn arguments as JSON: each by name, and the (first) problem's arrays and D, D_q, D_v, N on top;
    large arrays as {"npz", "key", "shape", "dtype"}, saved in the store's file."""
    drawn = {name: value for name, value in arguments.items() if name not in FIXTURES}
    problem = first_problem(drawn)
    top = _json_value(problem, store) if problem is not None else {}
    return {**top, "arguments": {name: _json_value(value, store) for name, value in drawn.items()}}
