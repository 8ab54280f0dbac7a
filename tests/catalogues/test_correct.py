"""The false-alarm meta-test: every law on every correct implementation of properties/catalogues/correct.py.

A law that FAILs on one of them has a tolerance too tight for that algorithm (or a strategy that breaks its
precondition), or the reference's blockwise path (in the catalogue at block sizes 1, 3, 16) is broken. Each
law runs on the same examples for every variant: its own explicit examples and false_alarm_examples() drawn ones
(1 under the dev profile, 5 under ci, 50 under thorough; at most a third of the law's own number), derandomised,
drawn once and replayed by calling the law's body (hypothesis_internals.replay: no engine per run), without
shrinking. SKIPs (laws needing keywords or the attention matrix) are expected.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _pytest.outcomes import Skipped
from hypothesis import HealthCheck, Phase, settings

from attention.rows import scaled_dot_product_attention
from properties.catalogues import registry
from properties.catalogues.correct import CATALOGUE, Variant, as_flash
from properties.helpers.backward import RowBackward
from properties.helpers.flash_convention import MergeImplementation, VarlenImplementation
from properties.helpers.hypothesis_internals import (
    draws,
    explicit_examples_of,
    is_hypothesis_test,
    replay,
    rerun,
    settings_of,
    strategies_of,
)
from properties.helpers.implementations import REFERENCE, REFERENCE_MULTIHEAD, Implementation, Multihead, Softmax
from properties.helpers.options import SDPA_REFERENCE_TARGET
from properties.helpers.problems import AttentionProblem
from properties.helpers.row_convention import Convention, sdpa_implementation
from properties.helpers.strategies import LONG_LENGTHS
from properties.helpers.tolerances import PRECISIONS, dtype_of, epsilon_of, tiny_of

pytestmark = pytest.mark.meta


# The reference's blockwise path loops over query and key blocks in Python: at block sizes 1 and 3 a long
# sequence (N up to 700) costs N^2 / b^2 iterations per call, too slow for the default suite (CI runs them).
SLOW_ON_LONG_SEQUENCES = ("reference_blockwise_1", "reference_blockwise_3")
MAX_FLOAT = float(np.finfo(np.float64).max)
# (laws run, examples run) per variant, filled as the variants pass: tools and reports may read it.
RUNS: dict[str, tuple[int, int]] = {}


def false_alarm_examples() -> int:
    """Drawn examples per (law, variant), besides the law's explicit ones: 1 under dev (the default run), 5 under
    ci (.ci/run), 50 under thorough (a law that draws fewer than usual, such as the long-sequence laws, a third of
    its own number)."""
    return max(1, int(settings().max_examples) // 20)


def laws() -> Iterator[tuple[str, Callable[..., Any], dict[str, Any]]]:
    """(name, law, parameters) for every law of the registry and each of its parametrisations."""
    for law in registry.laws():
        for parameters in registry.parametrizations(law.function):
            suffix = "".join(f"[{v}]" for v in parameters.values())
            yield f"{law.module}.{law.name}{suffix}", law.function, parameters


def magnitude(arrays: tuple[Any, ...]) -> float:
    """The largest of the inputs, the bounds Qhat, Khat, Vhat on |Q|, |K|, |V| and the logit bound (for a
    softmax, of its input)."""
    if len(arrays) == 1:
        return float(np.max(np.abs(arrays[0]), initial=0.0))
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (np.abs(np.asarray(a, dtype=np.float64)) for a in arrays)
    Qhat, Khat, Vhat = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    parts = (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, Qhat, Khat, Vhat, Khat.T @ Qhat)
    return max(float(np.max(a, initial=0.0)) for a in parts)


def guarded(variant: Variant) -> Callable[..., Any]:
    """The variant's function, skipping the law on problems beyond the range of the dtype it computes in."""
    if variant.max_magnitude >= MAX_FLOAT:
        return variant.function

    def function(*arrays: Any, **keywords: Any) -> Any:
        if magnitude(arrays) > variant.max_magnitude:
            pytest.skip(f"the problem's magnitudes exceed {variant.name}'s range ({variant.max_magnitude:.3g})")
        return variant.function(*arrays, **keywords)

    function.__name__ = function.__qualname__ = variant.name
    function.__signature__ = inspect.signature(variant.function)  # type: ignore[attr-defined]
    return function


# The fixtures a variant of each role fills (a kernel is also the implementation, through the sdpa adapter).
ROLE_FIXTURES = {"kernel": {"implementation", "kernel"}}
ROW_FORWARD_TARGET = SDPA_REFERENCE_TARGET  # the forward every backward variant differentiates


def under_test(variant: Variant) -> dict[str, Any]:
    """The fixtures for a law run on `variant`; roles the variant does not fill come from the reference."""
    target = f"properties.catalogues.correct:{variant.name}"
    fixtures: dict[str, Any] = {"implementation": REFERENCE["scaled"], "multihead": REFERENCE_MULTIHEAD}
    if variant.role == "implementation":
        fixtures["implementation"] = Implementation(guarded(variant), variant.kind, target)
    elif variant.role == "kernel":  # a row-convention kernel: every law, through the sdpa adapter
        kernel = sdpa_implementation(variant.function, SDPA_REFERENCE_TARGET, Convention(), variant.kind)
        fixtures["implementation"] = fixtures["kernel"] = kernel
    elif variant.role == "backward":  # a backward of the bundled row kernel: every gradient law
        fixtures["backward"] = RowBackward(variant.function, target, scaled_dot_product_attention, ROW_FORWARD_TARGET)
    elif variant.role == "flash":  # the rectangular laws, through the flash adapter
        fixtures["flash"] = as_flash(variant.function)
    elif variant.role == "varlen":  # the packed-batch laws
        fixtures["varlen"] = VarlenImplementation(variant.function, target)
    elif variant.role == "merge":
        fixtures["merge"] = MergeImplementation(variant.function, target)
    elif variant.role == "softmax":
        fixtures["softmax"] = Softmax(guarded(variant), target)
    else:
        fixtures["multihead"] = Multihead(variant.function, target)
    return fixtures


def _settings(law: Callable[..., Any], *phases: Phase) -> settings:
    parent = settings_of(law)
    return settings(
        parent,
        max_examples=max(1, min(false_alarm_examples(), parent.max_examples // 3)),
        derandomize=True,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def shares_examples(law: Callable[..., Any]) -> bool:
    """Whether the law's drawn arguments can be replayed (st.data() objects live only inside one run)."""
    return not any(repr(strategy) == "data()" for strategy in strategies_of(law).values())


def beyond_the_drawn_lengths(values: Any) -> bool:
    """Whether an explicit example holds a problem longer than any the strategies draw: the fixed examples of
    N = TWO_SLABS_N aim at the reference's slabs of queries, while every variant's own tiles are crossed by the
    drawn lengths; replaying them on every variant would cost seconds and find nothing new."""
    return any(isinstance(v, AttentionProblem) and max(LONG_LENGTHS) < v.N for v in values) or any(
        isinstance(v, tuple) and beyond_the_drawn_lengths(v) for v in values
    )


@functools.cache
def examples_of(law: Callable[..., Any]) -> tuple[dict[str, Any], ...]:
    """The law's own explicit examples and false_alarm_examples() drawn ones, derandomised: drawn once and
    replayed on every variant, so that all variants meet the same problems."""
    explicit = [e for e in explicit_examples_of(law) if not beyond_the_drawn_lengths(e.values())]
    return tuple(explicit + draws(law, _settings(law, Phase.generate)))


def run(law: Callable[..., Any], arguments: dict[str, Any], *, one_by_one: bool = False) -> int:
    """Run the law with `arguments` (fixtures and parameters) on its shared examples (examples_of), or on
    freshly drawn derandomised ones when they cannot be shared; return how many examples ran (not skipped).
    `one_by_one` runs each shared example on its own, so that a skip (a problem beyond a variant's range)
    skips that example only. Raises what the law raises."""
    if not is_hypothesis_test(law):
        law(**arguments)
        return 1
    if not shares_examples(law):
        rerun(law, _settings(law, Phase.generate))(**arguments)
        return false_alarm_examples()
    batches = [[drawn] for drawn in examples_of(law)] if one_by_one else [list(examples_of(law))]
    ran = 0
    for batch in batches:
        try:
            replay(law, batch, **arguments)
        except Skipped:
            if not one_by_one:
                raise
            continue
        ran += len(batch)
    if ran == 0:
        pytest.skip("every example was skipped")
    return ran


@pytest.mark.parametrize("variant", CATALOGUE, ids=[variant.name for variant in CATALOGUE])
def test_no_law_fails_on_a_correct_implementation(variant: Variant) -> None:
    """Every law PASSes (or SKIPs) on every correct implementation of the catalogue."""
    available = under_test(variant)
    ran, examples, alarms = 0, 0, []
    for name, law, parameters in laws():
        needed = registry.fixtures_of(law, parameters)
        if not ROLE_FIXTURES.get(variant.role, {variant.role}) & set(needed):
            continue
        if variant.name in SLOW_ON_LONG_SEQUENCES and "long_sequences" in name:
            continue
        if not variant.conventions and registry.category_of(law, sys.modules[law.__module__]) == "conventions":
            continue
        try:
            examples += run(law, {**{key: available[key] for key in needed}, **parameters},
                            one_by_one=variant.max_magnitude < MAX_FLOAT)  # fmt: skip
        except Skipped:
            continue
        except Exception as error:
            alarms.append(f"{name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
        ran += 1
    assert not alarms, f"{len(alarms)} of {ran} laws FAIL on the correct {variant.name}:\n" + "\n".join(alarms)
    assert ran > 0, f"no law ran on {variant.name}"
    RUNS[variant.name] = (ran, examples)


def test_the_catalogue_has_every_algorithm_of_the_error_model() -> None:
    """At least ten self-attention variants, block sizes 1, 3, 16 and 64, float16 and float32, and lengths long
    enough to cross their blocks."""
    names = {variant.name for variant in CATALOGUE if variant.role == "implementation"}
    assert len(names) >= 10
    assert {f"online_blocks_of_{b}" for b in (1, 3, 16, 64)} <= names
    assert any("float16" in name for name in names) and any("float32" in name for name in names)
    assert max(LONG_LENGTHS) > 512


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_eps_and_tiny_are_those_of_the_dtype_judged(dtype: type[np.floating[Any]]) -> None:
    """epsilon_of a dtype and tiny_of that epsilon are the dtype's own (float16 included)."""
    eps = epsilon_of(np.dtype(dtype))
    assert eps == float(np.finfo(dtype).eps)
    assert tiny_of(eps) == float(np.finfo(dtype).smallest_normal)
    assert dtype_of(eps) is dtype
    finfo = np.finfo(dtype)
    assert PRECISIONS[np.dtype(dtype).name] == (float(finfo.eps), float(finfo.max), float(finfo.smallest_normal))
