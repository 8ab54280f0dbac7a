"""Take the attention functions out of a filled-in copy of notebook 12.1, and nothing else of it.

Only the import statements and the definitions of softmax_cols, self_attention and
scaled_dot_product_self_attention (with every notebook function they call) are kept; no other cell runs.
A function still in the notebook's template form is replaced by one that raises NotImplementedError.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

FUNCTIONS = ("softmax_cols", "self_attention", "scaled_dot_product_self_attention")
# The notebook's unfilled body of both attention functions (its TODO comments aside).
TEMPLATE_BODY = tuple(ast.dump(statement) for statement in ast.parse("X_prime = np.zeros_like(X)\nreturn X_prime").body)


@dataclass(frozen=True)
class Extraction:
    """The module source built from a notebook, and what became of each function it should define."""

    source: str
    status: dict[str, str]  # function -> "defined", "template" or "missing"
    calls_softmax_cols: dict[str, bool]  # attention function -> whether it calls softmax_cols


def code_cells(path: Path) -> list[str]:
    """The source of every code cell, with IPython magics and shell escapes (% and ! lines) removed."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        lines = [line for line in text.splitlines() if not line.lstrip().startswith(("%", "!"))]
        cells.append("\n".join(lines))
    return cells


def _is_template(function: ast.FunctionDef) -> bool:
    body = [s for s in function.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return tuple(ast.dump(s) for s in body) == TEMPLATE_BODY


def _names_used(function: ast.FunctionDef) -> set[str]:
    return {node.id for node in ast.walk(function) if isinstance(node, ast.Name)}


def extract(path: Path) -> Extraction:
    """Build a module from the notebook's imports and the three functions (last definition wins)."""
    imports: list[ast.stmt] = []
    functions: dict[str, ast.FunctionDef] = {}
    for text in code_cells(path):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue  # a cell that is not Python (or not finished) cannot define what we need
        for statement in tree.body:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                imports.append(statement)
            elif isinstance(statement, ast.FunctionDef):
                functions[statement.name] = statement
    status = {}
    for name in FUNCTIONS:
        if name not in functions:
            status[name] = "missing"
        elif name != "softmax_cols" and _is_template(functions[name]):
            status[name] = "template"
        else:
            status[name] = "defined"
    needed: list[str] = []
    pending = [name for name in FUNCTIONS if status[name] == "defined"]
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.append(name)
        pending.extend(sorted(n for n in _names_used(functions[name]) if n in functions and n not in needed))
    parts = ['"""Functions extracted from a notebook by attention-check; nothing else of it runs."""', ""]
    for statement in imports:
        parts += ["try:", f"    {ast.unparse(statement)}", "except ImportError:", "    pass", ""]
    for name in [n for n in functions if n in needed]:
        parts += [ast.unparse(functions[name]), ""]
    for name in FUNCTIONS:
        if status[name] != "defined":
            reason = "still the notebook's template" if status[name] == "template" else "not defined in the notebook"
            parts += [f"def {name}(*args, **kwargs):", f"    raise NotImplementedError({name + ': ' + reason!r})", ""]
    calls = {
        name: status[name] == "defined" and "softmax_cols" in _names_used(functions[name]) for name in FUNCTIONS[1:]
    }
    return Extraction("\n".join(parts), status, calls)
