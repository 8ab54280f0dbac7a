"""A law's failing call as data and as code: the counterexample (JSON) and a snippet that replays it.

Both are built from the keyword arguments the law's body received in its final, shrunk failing call
(recorded by properties.checker.verdicts), never from hypothesis's printed text.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from properties.helpers.meta import law_body
from properties.helpers.problems import ARGUMENT_ORDER, AttentionProblem, code_for

# What the checker supplies; the rest hypothesis draws.
FIXTURES = ("implementation", "softmax", "multihead", "backward")


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


def code_of(value: Any, imports: set[str]) -> str:
    """Python source that rebuilds `value`; adds the import lines it needs to `imports`."""
    if isinstance(value, np.ndarray):
        imports.add("import numpy as np")
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
        items = [code_of(v, imports) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(code_of(v, imports) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{code_of(k, imports)}: {code_of(v, imports)}" for k, v in value.items()) + "}"
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
    once(given(**strategies)(law_body(law)))()


def snippet(law: Callable[..., Any], arguments: Mapping[str, Any], error: BaseException | None = None) -> str:
    """Self-contained Python that calls the law's body on `arguments`; it raises (exits non-zero) while the
    implementation still breaks the law."""
    imports = {"import numpy as np"}  # problems print their arrays as np.array(...)
    lines = [f"    {name}={code_of(value, imports)}," for name, value in arguments.items()]
    module, name = law.__module__, law.__name__
    header = f'"""Replays the shrunk counterexample of {name}'
    header += f": it raised {type(error).__name__}." if error is not None else "."
    return "\n".join(
        [
            header + ' Run with python; it raises while the law fails."""',
            *sorted(imports, key=lambda line: (not line.startswith("import"), line)),
            "from properties.checker.report import replay",
            f"from {module} import {name} as law",
            "",
            "replay(",
            "    law,",
            *lines,
            ")",
        ]
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, AttentionProblem):
        shapes = {"D": value.D, "D_q": value.D_q, "D_v": value.D_v, "N": value.N}
        return {**{name: _json_value(getattr(value, name)) for name in ARGUMENT_ORDER}, **shapes}
    if isinstance(value, Draws):
        return _json_value(value.values)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def first_problem(value: Any) -> AttentionProblem | None:
    """The first AttentionProblem in a law's arguments (a problem, or a tuple case that holds one)."""
    if isinstance(value, AttentionProblem):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple | list) else ()
    return next((p for p in (first_problem(v) for v in items) if p is not None), None)


def counterexample(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The drawn arguments as JSON: each by name, and the (first) problem's arrays and D, D_q, D_v, N on top."""
    drawn = {name: value for name, value in arguments.items() if name not in FIXTURES}
    problem = first_problem(drawn)
    top = _json_value(problem) if problem is not None else {}
    return {**top, "arguments": {name: _json_value(value) for name, value in drawn.items()}}
