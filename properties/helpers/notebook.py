"""Take the attention functions out of a filled-in copy of notebook 12.1, and nothing else of it.

Only the import statements and the definitions of softmax_cols, self_attention and
scaled_dot_product_self_attention (with every notebook function they call) are kept; no other cell runs.
A function still in the notebook's template form (its body raises NotImplementedError before it can return,
as the course's `# YOUR CODE HERE` / `raise NotImplementedError()` cells do, or the older
`X_prime = np.zeros_like(X); return X_prime`) is replaced by one that raises NotImplementedError. Code after an
unconditional raise or return never runs, so it is never read (for the names it uses or the globals it reads).
A function that reads a variable the notebook assigns at top level (D, N, ...) is named as such: that
cell does not run here.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import linecache
import symtable
import sys
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FUNCTIONS = ("softmax_cols", "self_attention", "scaled_dot_product_self_attention")
# softmax_cols as notebook 12.1 gives it, complete (students do not write it): it does not subtract the column
# maximum, so it overflows for logits above ~709. Its overflow is the course's, not the student's (see
# properties/checker/grading.py, which shows those FAILs and does not count them).
COURSE_SOFTMAX_COLS = """def softmax_cols(data_in):
  # Exponentiate all of the values
  exp_values = np.exp(data_in)
  # Sum over columns
  denom = np.sum(exp_values, axis = 0)
  # Replicate denominator to N rows
  denom = np.matmul(np.ones((data_in.shape[0],1)), denom[np.newaxis,:])
  # Compute softmax
  softmax = exp_values / denom
  return softmax"""
# The notebook's unfilled body of both attention functions (its TODO comments aside).
TEMPLATE_BODY = tuple(ast.dump(statement) for statement in ast.parse("X_prime = np.zeros_like(X)\nreturn X_prime").body)


@dataclass(frozen=True)
class Extraction:
    """The module source built from a notebook, and what became of each function it should define."""

    source: str
    status: dict[str, str]  # function -> "implemented", "template", "missing" or "reads a notebook global D"
    calls_softmax_cols: dict[str, bool]  # attention function -> whether it calls softmax_cols
    globals_read: dict[str, tuple[str, ...]]  # function -> the notebook's top-level variables it reads
    given: tuple[str, ...] = ()  # functions defined exactly as the course gives them (COURSE_SOFTMAX_COLS)


def _statements(function: ast.FunctionDef) -> tuple[str, ...]:
    """A definition's name, arguments and body as ast dumps: the same for the same code whatever its comments,
    blank lines, spacing or docstring."""
    body = [s for s in function.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return (function.name, ast.dump(function.args), *(ast.dump(s) for s in body))


COURSE_CODE = {"softmax_cols": _statements(ast.parse(COURSE_SOFTMAX_COLS).body[0])}  # type: ignore[arg-type]


def code_cells(path: Path) -> list[str]:
    """The source of every code cell, with IPython magics and shell escapes (% and ! lines) removed."""
    if path.suffix == ".py":
        return [path.read_text(encoding="utf-8")]
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


JUMPS = (ast.Raise, ast.Return, ast.Continue, ast.Break)
BLOCKS = ("body", "orelse", "finalbody")


def reachable(function: ast.FunctionDef) -> ast.FunctionDef:
    """A copy of `function` without the statements that follow an unconditional raise, return, continue or break
    in any block (they never run)."""
    copy: ast.FunctionDef = ast.parse(ast.unparse(function)).body[0]  # type: ignore[assignment]
    for node in ast.walk(copy):
        for block in BLOCKS:
            statements = getattr(node, block, None)
            if isinstance(statements, list) and statements and isinstance(statements[0], ast.stmt):
                end = next((i for i, s in enumerate(statements) if isinstance(s, JUMPS)), len(statements) - 1)
                del statements[end + 1 :]
    return copy


def _raises_not_implemented(statement: ast.stmt) -> bool:
    if not isinstance(statement, ast.Raise) or statement.exc is None:
        return False
    raised = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
    return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"


def _is_template(function: ast.FunctionDef, old_form: bool = True) -> bool:
    """Whether `function` (its reachable statements) is still a template: it raises NotImplementedError before any
    return can run, or (`old_form`) its body is the notebook's older `X_prime = np.zeros_like(X); return X_prime`."""
    body = [s for s in function.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    body = [s for s in body if not isinstance(s, ast.Pass)]
    if body and _raises_not_implemented(body[-1]):
        return not any(isinstance(node, ast.Return) for s in body[:-1] for node in ast.walk(s))
    return old_form and tuple(ast.dump(s) for s in body) == TEMPLATE_BODY


def is_template(function: Callable[..., Any], old_form: bool = True) -> bool:
    """Whether a loaded function is still a template (as `_is_template` judges its reachable statements); False
    when its source cannot be read (a builtin, a lambda, a C extension)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    definition = next((node for node in tree.body if isinstance(node, ast.FunctionDef)), None)
    return definition is not None and _is_template(reachable(definition), old_form)


def _names_used(function: ast.FunctionDef) -> set[str]:
    return {node.id for node in ast.walk(function) if isinstance(node, ast.Name)}


def _assigned_at_top_level(statement: ast.stmt) -> set[str]:
    """Names a top-level statement of a cell assigns (outside any function or class it defines)."""
    names: set[str] = set()
    pending: list[ast.AST] = [statement]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        pending.extend(ast.iter_child_nodes(node))
    return names


def _globals_referenced(function: ast.FunctionDef) -> set[str]:
    """Names the function (and the functions nested in it) reads from module scope."""
    found: set[str] = set()
    tables = [symtable.symtable(ast.unparse(function), "<notebook>", "exec")]
    while tables:
        table = tables.pop()
        if table.get_type() != "module":
            found |= {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
        tables.extend(table.get_children())
    return found


def extract(path: Path) -> Extraction:
    """Build a module from the notebook's imports and the three functions (last definition wins)."""
    imports: list[ast.stmt] = []
    functions: dict[str, ast.FunctionDef] = {}
    assigned: set[str] = set()
    for text in code_cells(path):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue  # a cell that is not Python (or not finished) cannot define what we need
        for statement in tree.body:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                imports.append(statement)
            elif isinstance(statement, ast.FunctionDef):
                functions[statement.name] = reachable(statement)
            else:
                assigned |= _assigned_at_top_level(statement)
    imported = {(alias.asname or alias.name).split(".")[0] for s in imports for alias in s.names}  # type: ignore[attr-defined]
    status = {}
    for name in FUNCTIONS:
        if name not in functions:
            status[name] = "missing"
        elif _is_template(functions[name], old_form=name != "softmax_cols"):
            status[name] = "template"
        else:
            status[name] = "implemented"
    needed: list[str] = []
    pending = [name for name in FUNCTIONS if status[name] == "implemented"]
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
        if status[name] in ("template", "missing"):
            reason = "still the notebook's template" if status[name] == "template" else "not defined in the notebook"
            parts += [f"def {name}(*args, **kwargs):", f"    raise NotImplementedError({name + ': ' + reason!r})", ""]
    calls = {
        name: status[name] == "implemented" and "softmax_cols" in _names_used(functions[name]) for name in FUNCTIONS[1:]
    }
    known = imported | set(functions) | set(dir(builtins))
    globals_read: dict[str, tuple[str, ...]] = {}
    for name in FUNCTIONS:
        if status[name] != "implemented":
            continue
        reach, pending = [name], [name]
        while pending:
            for used in sorted(_names_used(functions[pending.pop()]) & set(functions)):
                if used not in reach:
                    reach.append(used)
                    pending.append(used)
        read = set().union(*(_globals_referenced(functions[f]) for f in reach))
        globals_read[name] = tuple(sorted((read & assigned) - known))
        if globals_read[name]:
            status[name] = f"reads a notebook global {', '.join(globals_read[name])}"
    given = tuple(
        name for name, code in COURSE_CODE.items() if name in functions and _statements(functions[name]) == code
    )
    return Extraction("\n".join(parts), status, calls, globals_read, given)


def global_message(names: tuple[str, ...]) -> str:
    """What to tell a student whose function reads notebook globals."""
    which = "global " + names[0] if len(names) == 1 else "globals " + ", ".join(names)
    return (
        f"reads the notebook {which}, which the checker does not run: use X.shape (or the arrays' shapes) or pass it in"
    )


def load_notebook_function(path: Path, name: str) -> Callable[..., Any]:
    """The function `name` of the notebook (or .py file) at `path`, built from its extraction alone."""
    extraction = extract(path)
    module = types.ModuleType(f"attention_notebook_{abs(hash(str(path.resolve())))}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    filename = f"{path} (its functions)"  # tracebacks show the extracted source's lines
    linecache.cache[filename] = (len(extraction.source), None, extraction.source.splitlines(True), filename)
    exec(compile(extraction.source, filename, "exec"), module.__dict__)
    if not hasattr(module, name):
        raise ValueError(f"{str(path)!r} defines no function {name!r}")
    function: Callable[..., Any] = getattr(module, name)
    return function
