"""Mutation testing of the reference: how many single-point mutations of attention/ does the battery kill?

    python tools/mutate.py                       # 120 sampled mutants, seed 0, `pytest properties`, 2 jobs
    python tools/mutate.py --sample 0 --list     # list every mutation point, run nothing
    python tools/mutate.py --sample 40 --seed 3 --jobs 1 --command "pytest properties regression -x -q"
    python tools/mutate.py --json run.json; python tools/mutate.py --survivors-of run.json   # after new laws

Each mutant changes one thing in attention/_core.py, softmax.py, self_attention.py, blockwise.py or multihead.py
(an arithmetic or comparison operator, an axis, a constant, a slice bound, max <-> min, a dropped statement),
inside a function or a module-level numeric constant. It runs the command in a scratch copy of the repository
(one per job, so no hypothesis database or cache is shared) with the mutated file in place; a non-zero exit
(a failed law, an error, a timeout) kills the mutant. The hypothesis seed is fixed (--hypothesis-seed), so a
run is reproducible. Survivors are printed with their change, for a reader to judge which are equivalent.
No dependency beyond the standard library.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = (
    "attention/_core.py",
    "attention/softmax.py",
    "attention/self_attention.py",
    "attention/blockwise.py",
    "attention/multihead.py",
    "attention/self_attention_backward.py",
    "attention/rows_backward.py",
)
# `pytest properties` in two steps, the false-alarm test (which runs every law on the reference's blockwise path
# too) first: the same tests, in an order that stops sooner at a killed mutant. Steps are joined by " && ".
OPTIONS = "-x -q -p no:cacheprovider --hypothesis-seed=0"
# The battery's own tests moved to tests/ (the false-alarm test, the registry, the checker, the strategies) run too.
BATTERY = "properties tests/catalogues tests/checker tests/helpers"
COMMAND = (
    f"pytest tests/catalogues/test_correct.py {OPTIONS} && pytest {BATTERY} {OPTIONS} "
    "--deselect tests/catalogues/test_correct.py"
)

# Survivors judged equivalent: no input can tell them from the original, by (file, the mutated line as printed).
# The score leaves them out; a survivor not listed here is a blind spot of the battery until someone judges it.
# "Stricter" changes make the reference take its shifted (or checked) path more often: both paths are correct.
_SLACK = "slack = 1 {} 2 * (queries.shape[0] {} 3) {} float(np.finfo(queries.dtype).eps)"
_HEADROOM = "headroom = np.log(info.{} / {}) - np.log(max(keys, 1)) - np.log(largest)"
_CHECK = "return not bound {} float(np.finfo(dtype).{}) / {}"
_NORM = (
    "if rows {} float(info.smallest_normal) / float(info.eps) <= largest * largest <= float(info.{}) {} (rows + {}):"
)
EQUIVALENT: dict[tuple[str, str], str] = {
    ("attention/_core.py", _SLACK.format("-", "+", "*")): "lowers the logit bound by 2 (D_q + 3) u relative: the "
    "shift-free limit moves by < 1e-12, inside the factor 4 of headroom; at the footroom a weight a hair below "
    "the smallest normal keeps its precision (subnormal spacing 2^-1074)",
    ("attention/_core.py", _SLACK.format("+", "-", "*")): "as the slack with 1 - ...: lowers the bound by at most "
    "4u relative (D_q < 3)",
    ("attention/_core.py", _SLACK.replace("1 {}", "2 {}").format("+", "+", "*")): "stricter (a larger bound)",
    ("attention/_core.py", _SLACK.format("+", "+", "/")): "stricter (a bound ~1e16 times larger)",
    ("attention/_core.py", "footroom = np.log(smallest) + np.log(info.smallest_normal)"): "stricter (never shift-free)",
    ("attention/_core.py", _HEADROOM.format("max", "5")): "stricter (headroom smaller by log 5/4)",
    ("attention/_core.py", "rows = matrix.shape[1]"): "chooses between two exact ways of computing a norm: with "
    "N < D the direct sum may lose squares below N tiny / u relative to the largest (within the slack) or "
    "overflow to inf (a bound of inf: the shifted, checked path)",
    ("attention/_core.py", _CHECK.format("<=", "max", "2")): "differs only for a bound of exactly max/2, whose "
    "logits are finite, so the check it switches never fires",
    ("attention/_core.py", _CHECK.format("<", "max", "3")): "stricter (checks finite logits more often)",
    ("attention/_core.py", _CHECK.format("<", "min", "2")): "stricter (checks every block; finite logits pass)",
    ("attention/_core.py", "rows = max(1, BLOCK_ELEMENTS * max(N, 1))"): "one slab of queries: only memory changes",
    ("attention/_core.py", "rows = max(1, BLOCK_ELEMENTS // max(N, 2))"): "slab size for N <= 1 only",
    ("attention/_core.py", "column_max = np.where(visible, logits, lowest).max(axis=0, keepdims=False)"): "shape "
    "(N,) broadcasts along the columns exactly as (1, N)",
    ("attention/blockwise.py", "q = queries[:, q0:]"): "computes every later query too; the next blocks overwrite "
    "them with the same values",
    ("attention/blockwise.py", "q = np.ascontiguousarray(queries[:, q0:])"): "as q = queries[:, q0:]",
    (
        "attention/multihead.py",
        "return np.asarray(mixer.astype(dtype, copy=False) @ stacked.astype(dtype, copy=True))",
    ): "a copy of the same values",
    (
        "attention/_core.py",
        "def logit_bound(queries: FloatArray, keys: FloatArray, offset: float=1.0) -> float:",
    ): "stricter (the blockwise bound grows by 1)",
    ("attention/_core.py", _SLACK.replace("2 *", "2 /").format("+", "+", "*")): "as the slack with 1 - ...: the "
    "rounding slack shrinks below 2u relative",
    ("attention/_core.py", _SLACK.replace("2 *", "3 *").format("+", "+", "*")): "stricter (a larger bound)",
    ("attention/_core.py", _HEADROOM.replace("keys, 1", "keys, 2").format("max", "4")): "stricter, for N = 1 only",
    ("attention/_core.py", _NORM.format("*", "max", "*", "1")): "the direct sum only where a square overflows to "
    "inf: a bound of inf, the shifted and checked path",
    ("attention/_core.py", _NORM.format("/", "max", "/", "1")): "always the rescaled sum, which is exact too",
    ("attention/_core.py", _NORM.format("*", "min", "/", "1")): "always the rescaled sum, which is exact too",
    ("attention/_core.py", _NORM.format("*", "max", "/", "2")): "the rescaled sum a little more often (exact too)",
    ("attention/_core.py", "rows = min(1, BLOCK_ELEMENTS // max(N, 1))"): "one query per slab: only speed changes",
    ("attention/_core.py", "if logits.shape[1] == 0:"): "logits are N x N: shape[1] is shape[0]",
    ("attention/blockwise.py", "DEFAULT_BLOCK_SIZE = 513"): "another block size: every block size is correct",
    ("attention/blockwise.py", "block_max = scores.max(axis=0, keepdims=False)"): "shape (q,) broadcasts against "
    "the (1, q) running maximum exactly as (1, q)",
    ("attention/softmax.py", "column_max = data.max(axis=0, keepdims=False)"): "shape (N,) broadcasts along the "
    "columns of a 2-D input as (1, N), and is a scalar for a 1-D input either way",
    ("attention/_core.py", "values[:, ~seen] = 1.0"): "values of keys that no query sees get weight 0 from every "
    "query whatever they hold; the fill only removes inf and NaN, as 0.0 does",
    ("attention/_core.py", "logits[~visible] = 1.0"): "the masked softmax replaces hidden logits by -inf; the fill "
    "only keeps the overflow check quiet, as 0.0 does",
    ("attention/_core.py", "BLOCK_ELEMENTS = 1 << 21"): "larger slabs of queries: only memory and speed change",
    ("attention/_core.py", "rows = max(2, BLOCK_ELEMENTS // max(N, 1))"): "two queries a slab beyond N = 2^19",
    (
        "attention/_core.py",
        _NORM.replace("largest * largest", "largest / largest").format("*", "max", "/", "1"),
    ): "always the direct sum: squares lost to underflow shrink the bound only where it stays below ~1, or where the "
    "other norm overflows to inf (a bound of inf or NaN: the shifted, checked path)",
    ("attention/_core.py", "largest, smallest = (1.0, 2.0)"): "the footroom grows only when every |v| >= 2, and "
    "then the headroom, at most log(max / 4) - log 2 = 707.7, is the smaller limit",
    ("attention/_core.py", _CHECK.replace("/ {}", "* {}").format("<", "max", "2")): "checks only when the bound "
    "is inf: a computed logit overflows only when the bound, which exceeds every one of them, does",
    ("attention/blockwise.py", "total += scores.sum(axis=0, keepdims=False)"): "(q,) added to the (1, q) total "
    "broadcasts alike",
    (
        "attention/_core.py",
        "def attend(arguments: CheckedArguments, scaled: bool, Pi: FloatArray | None=None, "
        "positions_in_values: bool=False, visible: NDArray[np.bool_] | None=None, bias: FloatArray | None=None) "
        "-> tuple[FloatArray, FloatArray]:",
    ): "every caller passes positions_in_values, or no positions (where it changes nothing)",
    ("attention/_core.py", "largest, smallest = (2.0, 1.0)"): "stricter (headroom smaller by log 2)",
    ("attention/_core.py", "np.divide(weights, totals, out=weights, where=totals > 1)"): "after the shift by the "
    "maximum a column that sees a key sums to at least 1, and dividing by exactly 1 changes nothing",
    ("attention/blockwise.py", "keys_t = X_.T @ omega_k_.T - beta_k_.T"): "the key bias adds beta_k^T q_n to every "
    "logit of query n, which the softmax ignores, whatever its sign (the bound is taken from the keys used)",
    (
        "attention/multihead.py",
        "return np.asarray(mixer.astype(dtype, copy=True) @ stacked.astype(dtype, copy=False))",
    ): "a copy of the same values",
    ("attention/softmax.py", "shifted /= shifted.sum(axis=0, keepdims=False)"): "the (N,) sums broadcast along the "
    "columns of a 2-D input as (1, N), and are a scalar for a 1-D input either way",
    ("attention/softmax.py", "if data.shape[1] == 0:"): "differs only on logits of zero keys for N > 0 queries "
    "(0 x N), which self-attention never forms (its logits are N x N); a law demanding them would fail the usual "
    "stable softmax, whose max over an empty axis raises",
    # The backward (attention/self_attention_backward.py) fills the keys and values of keys no query sees, and the
    # queries of queries that see no key, as the forward does: masked entries have P = 0, so dS = 0 there and
    # dQ = s K dS, dP = V^T dX' (times P) and dK = s Q dS^T never read them.
    ("attention/self_attention_backward.py", "K[:, unseen] = 1.0"): "keys no query sees enter only masked logits "
    "(replaced) and dQ = s K dS, whose rows of dS are zero there",
    ("attention/self_attention_backward.py", "V[:, unseen] = 1.0"): "values of keys no query sees enter dP only "
    "where P = 0",
    ("attention/self_attention_backward.py", "Q[:, ~visible.any(axis=0)] = 1.0"): "a query that sees no key has a "
    "zero column of P, hence of dS: dK = s Q dS^T never reads it",
    (
        "attention/self_attention_backward.py",
        "gradients = attend_backward(work, scaled, dX_prime.astype(dtype, copy=True), cast(dA), cast(Pi), "
        "positions_in_values, visible, cast(bias_array))",
    ): "a copy of the same values (the backward never writes to dX')",
    (
        "attention/self_attention_backward.py",
        "return gradient.reshape(np.shape(given)).astype(as_float_array(name, given).dtype, copy=True)",
    ): "a copy of the same values",
    (
        "attention/self_attention_backward.py",
        "check_no_overflow('the queries Q and keys K', np.concatenate([Q, K], axis=0), LOGIT_REMEDY)",
    ): "Q and K are both D_q x N: joined along either axis, the check sees the same entries",
}
# Survivors that change only the reference's own error contract: what it raises on invalid arguments or on
# projections and logits that overflow. The laws judge results on valid inputs; tests/ judges these (each listed
# one is killed by `--command "pytest tests -x -q"`). A dropped check_... call counts as one of them.
CONTRACT: dict[tuple[str, str], str] = {
    ("attention/_core.py", "return bound < float(np.finfo(dtype).max) / 2"): "the overflow check of the logits "
    "inverted: overflowing logits give NaN instead of the ValueError",
    ("attention/multihead.py", "if not isinstance(head, Sequence) and len(head) != 6:"): "a head of the wrong "
    "length gets another TypeError, without heads[h] in it",
    ("attention/softmax.py", "if data.ndim not in (2, 2):"): "a 1-D input (one column) is refused",
    (
        "attention/multihead.py",
        "seen = type(head).__name__ - (f' of length {len(head)}' if isinstance(head, Sequence) else '')",
    ): "the TypeError for a malformed head loses its message",
    ("attention/_core.py", "return 1.0"): "largest_magnitude of an empty matrix: only the path of an empty input, "
    "whose outputs are empty either way (tests/attention checks the helper)",
    # The row backward's argument handling beyond the gradient laws' 4-D draws (B <= 2): tests/attention kills each.
    ("attention/rows_backward.py", "if array.ndim < 3:"): "refuses query, key or value without batch axes (2-D)",
    ("attention/rows_backward.py", "if key.ndim < 4:"): "enable_gqa with a 3-D key loses its ValueError",
    ("attention/rows_backward.py", "if not enable_gqa or query.ndim < 4:"): "enable_gqa on 3-D arrays skips the "
    "head check (a ValueError of numpy's instead of ours)",
    ("attention/rows_backward.py", "if key.shape[-4] == query.shape[-3]:"): "reads the batch axis as the heads: "
    "wrong only when B equals H with H_kv > 1 (B <= 2 < H in the laws)",
    ("attention/rows_backward.py", "shapes = (shapes[0], *((*shape[:-2], heads) for shape in shapes[1:]))"): "the "
    "batch check under enable_gqa on the wrong axis: key batch axes that do not broadcast pass it",
}
CONTRACT_PREFIX = "check_"


OPERATORS: dict[type[ast.AST], type[ast.AST]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
    ast.MatMult: ast.Mult, ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.And: ast.Or, ast.Or: ast.And,
}  # fmt: skip
SWAPPED_NAMES = {"max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum", "any": "all", "all": "any"}


@dataclass(frozen=True)
class Mutant:
    file: str
    index: int  # position of the mutation among the file's mutation points (Mutations order)
    line: int
    description: str


Mutation = tuple[ast.AST, int, str, Callable[[], None]]


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _skipped(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a raise, an f-string, an annotation, an import, a docstring, or outside any function (except a
    module-level numeric constant)."""
    inside_function = False
    child: ast.AST = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, ast.Raise | ast.JoinedStr | ast.Import | ast.ImportFrom):
            return True
        if isinstance(parent, ast.arg) or (isinstance(parent, ast.FunctionDef) and child is parent.returns):
            return True
        if isinstance(parent, ast.AnnAssign) and child is parent.annotation:
            return True
        if isinstance(parent, ast.FunctionDef):
            inside_function = True
        child = parent
    if inside_function:
        return False
    top = node
    while top in parents and not isinstance(parents[top], ast.Module):
        top = parents[top]
    return not (isinstance(top, ast.Assign) and isinstance(top.value, ast.Constant | ast.BinOp))


def _is_docstring(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)


def mutations(tree: ast.AST) -> Iterator[Mutation]:
    """Every single-point mutation of the tree, in a fixed order: (node, line, description, apply)."""
    parents = _parents(tree)
    for node in ast.walk(tree):
        if _skipped(node, parents):
            continue
        line = getattr(node, "lineno", getattr(parents.get(node), "lineno", 0))
        yield from _mutations_of(node, line, parents)


def _set(node: ast.AST, field: str, value: object) -> Callable[[], None]:
    return lambda: setattr(node, field, value)


def _replace(items: list[ast.AST], i: int, value: ast.AST) -> Callable[[], None]:
    return lambda: items.__setitem__(i, value)


def _mutations_of(node: ast.AST, line: int, parents: dict[ast.AST, ast.AST]) -> Iterator[Mutation]:
    if isinstance(node, ast.BinOp | ast.AugAssign | ast.BoolOp) and type(node.op) in OPERATORS:
        new = OPERATORS[type(node.op)]
        yield node, line, f"{type(node.op).__name__} -> {new.__name__}", _set(node, "op", new())
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in OPERATORS:
        new = OPERATORS[type(node.ops[0])]
        yield node, line, f"{type(node.ops[0]).__name__} -> {new.__name__}", _set(node, "ops", [new()])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not):
        parent = parents[node]
        for field, value in ast.iter_fields(parent):
            if value is node:
                yield node, line, f"drop unary {type(node.op).__name__}", _set(parent, field, node.operand)
            elif isinstance(value, list) and node in value:
                i = value.index(node)
                yield (
                    node,
                    line,
                    f"drop unary {type(node.op).__name__}",
                    _replace(value, i, node.operand),
                )
    in_axis = isinstance(parents.get(node), ast.keyword) and parents[node].arg == "axis"  # type: ignore[attr-defined]
    if isinstance(node, ast.Constant) and not isinstance(node.value, str) and node.value is not None and not in_axis:
        if isinstance(node.value, bool):
            yield node, line, f"{node.value} -> {not node.value}", _set(node, "value", not node.value)
        elif isinstance(node.value, int):
            yield node, line, f"{node.value} -> {node.value + 1}", _set(node, "value", node.value + 1)
        elif isinstance(node.value, float):
            new_value = node.value * 2 if node.value else 1.0
            yield node, line, f"{node.value} -> {new_value}", _set(node, "value", new_value)
    if isinstance(node, ast.keyword) and node.arg == "axis" and isinstance(node.value, ast.Constant):
        axis = node.value.value
        new_axis = {0: 1, 1: 0, -1: 0}.get(axis, 0) if isinstance(axis, int) else 0
        yield node, line, f"axis={axis!r} -> axis={new_axis}", _set(node.value, "value", new_axis)
    if isinstance(node, ast.Attribute) and node.attr in SWAPPED_NAMES:
        yield node, line, f".{node.attr} -> .{SWAPPED_NAMES[node.attr]}", _set(node, "attr", SWAPPED_NAMES[node.attr])
    if isinstance(node, ast.Name) and node.id in SWAPPED_NAMES and isinstance(parents.get(node), ast.Call):
        yield node, line, f"{node.id} -> {SWAPPED_NAMES[node.id]}", _set(node, "id", SWAPPED_NAMES[node.id])
    if isinstance(node, ast.Attribute) and node.attr == "T":
        parent = parents[node]
        for field, value in ast.iter_fields(parent):
            if value is node:
                yield node, line, "drop .T", _set(parent, field, node.value)
    if isinstance(node, ast.Slice):
        for bound in ("lower", "upper"):
            if getattr(node, bound) is not None:
                yield node, line, f"drop slice {bound} bound", _set(node, bound, None)
    for field in ("body", "orelse"):
        body = getattr(node, field, None)
        if isinstance(body, list) and len(body) > 1 and isinstance(node, ast.FunctionDef | ast.For | ast.If | ast.With):
            for i, statement in enumerate(body):
                if isinstance(statement, ast.Assign | ast.AugAssign | ast.Expr) and not _is_docstring(statement):
                    yield (
                        statement,
                        statement.lineno,
                        "drop statement",
                        _replace(body, i, ast.Pass()),
                    )


def mutants(files: tuple[str, ...]) -> list[Mutant]:
    found = []
    for file in files:
        tree = ast.parse((REPO / file).read_text())
        for index, (_, line, description, _) in enumerate(mutations(tree)):
            found.append(Mutant(file, index, line, description))
    return found


def mutated_source(mutant: Mutant) -> tuple[str, str, str]:
    """(the mutated module's source, the changed line before, after): unparsed from the mutated tree."""
    source = (REPO / mutant.file).read_text()
    tree = ast.parse(source)
    original = ast.unparse(tree).splitlines()
    _, _, _, apply = list(mutations(tree))[mutant.index]
    apply()
    ast.fix_missing_locations(tree)
    new = ast.unparse(tree)
    changed = [(a, b) for a, b in zip(original, new.splitlines(), strict=False) if a != b]
    before, after = changed[0] if changed else ("", "")
    return new + "\n", before.strip(), after.strip()


def listing(mutant: Mutant) -> str:
    """One line: file:line [kind] before  ->  after."""
    _, before, after = mutated_source(mutant)
    return f"{mutant.file}:{mutant.line} [{mutant.description}] {before}  ->  {after}"


def scratch_copy(root: Path) -> Path:
    target = root / "repo"
    ignore = shutil.ignore_patterns(".git", ".venv", "*.egg-info", ".hypothesis", ".pytest_cache", "__pycache__",
                                    ".mypy_cache", ".ruff_cache", ".benchmarks")  # fmt: skip
    shutil.copytree(REPO, target, ignore=ignore)
    return target


def run_mutant(mutant: Mutant, workdir: Path, command: str, timeout: float) -> dict[str, object]:
    source, before, after = mutated_source(mutant)
    path = workdir / mutant.file
    original = path.read_text()
    path.write_text(source)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(workdir), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    try:
        for step in command.split(" && "):
            left = max(timeout - (time.perf_counter() - start), 1.0)
            done = subprocess.run(step.split(), cwd=workdir, env=env, capture_output=True, timeout=left, check=False)
            if done.returncode:
                break
        outcome = "survived" if done.returncode == 0 else "killed"
        tail = done.stdout.decode(errors="replace").strip().splitlines()[-1:] if done.returncode else []
    except subprocess.TimeoutExpired:
        outcome, tail = "killed (timeout)", []
    finally:
        path.write_text(original)
    return {**asdict(mutant), "before": before, "after": after, "outcome": outcome,
            "seconds": round(time.perf_counter() - start, 1), "last_line": tail[0] if tail else ""}  # fmt: skip


def summarise(results: list[dict[str, object]]) -> None:
    """Print the score and the survivors: judged equivalent (EQUIVALENT), the error contract (CONTRACT), unjudged."""
    survivors = [r for r in results if r["outcome"] == "survived"]
    killed = len(results) - len(survivors)
    groups: dict[str, list[dict[str, object]]] = {"equivalent": [], "error contract (tests/)": [], "unjudged": []}
    for r in survivors:
        key = (str(r["file"]), str(r["after"]))
        if key in EQUIVALENT:
            r["judged"] = EQUIVALENT[key]
            groups["equivalent"].append(r)
        elif key in CONTRACT or str(r["before"]).startswith(CONTRACT_PREFIX):
            r["judged"] = CONTRACT.get(key, "a dropped argument or overflow check")
            groups["error contract (tests/)"].append(r)
        else:
            r["judged"] = ""
            groups["unjudged"].append(r)
    meaningful = len(results) - len(groups["equivalent"])
    in_scope = meaningful - len(groups["error contract (tests/)"])
    print(
        f"\nkilled {killed} of {len(results)} ({100 * killed / max(len(results), 1):.0f}%); "
        f"{killed} of the {meaningful} not judged equivalent ({100 * killed / max(meaningful, 1):.0f}%); "
        f"{killed} of the {in_scope} that change a result on valid input ({100 * killed / max(in_scope, 1):.0f}%)"
    )
    for title, group in groups.items():
        print(f"\nsurvivors, {title}: {len(group)}")
        for r in group:
            reason = f"\n      {r['judged']}" if r["judged"] else ""
            print(f"  {r['file']}:{r['line']} [{r['description']}]\n      {r['before']}\n   -> {r['after']}{reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=120, help="mutants to sample (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a timeout kills it)")
    parser.add_argument("--command", default=COMMAND, help=f"test command (default: {COMMAND!r})")
    parser.add_argument("--files", nargs="*", default=list(FILES))
    parser.add_argument("--list", action="store_true", help="list the sampled mutants and exit")
    parser.add_argument("--json", type=Path, help="write every result to this file")
    parser.add_argument(
        "--survivors-of",
        type=Path,
        metavar="JSON",
        help="run only the mutants that survived in this earlier --json (same change, same file)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="print the summary of an earlier --json; run nothing"
    )
    parser.add_argument(
        "--match",
        type=re.compile,
        metavar="REGEX",
        help="run only the mutants whose listing line (file:line [kind] before -> after) matches",
    )
    args = parser.parse_args(argv)
    if args.report:
        summarise(json.loads(args.report.read_text()))
        return 0

    population = mutants(tuple(args.files))
    chosen = (
        population
        if args.sample <= 0 or args.survivors_of or args.match
        else random.Random(args.seed).sample(population, min(args.sample, len(population)))
    )
    if args.survivors_of:
        earlier = json.loads(args.survivors_of.read_text())
        wanted = {(r["file"], r["before"], r["after"]) for r in earlier if r["outcome"] == "survived"}
        chosen = [m for m in chosen if (m.file, *mutated_source(m)[1:]) in wanted]
    if args.match:
        chosen = [m for m in chosen if args.match.search(listing(m))]
    chosen.sort(key=lambda m: (m.file, m.index))
    print(f"{len(population)} mutation points in {', '.join(args.files)}; running {len(chosen)}", flush=True)
    if args.list:
        for mutant in chosen:
            print(listing(mutant))
        return 0

    with tempfile.TemporaryDirectory(prefix="mutate-") as scratch:  # removed at the end, or on Ctrl-C
        workdirs = [scratch_copy(Path(scratch) / str(job)) for job in range(args.jobs)]
        free = list(workdirs)

        def work(mutant: Mutant) -> dict[str, object]:
            workdir = free.pop()
            try:
                result = run_mutant(mutant, workdir, args.command, args.timeout)
            finally:
                free.append(workdir)
            print(f"  {result['outcome']:>16}  {mutant.file}:{mutant.line} [{mutant.description}] "
                  f"({result['seconds']} s)", flush=True)  # fmt: skip
            return result

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(work, chosen))

    summarise(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
