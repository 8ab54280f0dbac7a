"""The catalogue of mistakes that attention-check names: each new broken implementation is caught by a law
(meta-tests), and the diagnosis names every mistake of the catalogue, and nothing for correct code."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from properties.catalogues import mistakes as b
from properties.checker.diagnosis import (
    BACKWARD_MISTAKES,
    GRADIENT_PROBES,
    MISTAKES,
    SOFTMAX_MISTAKES,
    diagnose,
    diagnose_attention,
    diagnose_backward,
    diagnose_softmax,
)
from properties.helpers.implementations import Implementation
from properties.helpers.problems import AttentionProblem

pytestmark = pytest.mark.meta


@pytest.mark.parametrize(
    "mistake", [m for m in MISTAKES if m.function is not b.notebook_softmax], ids=lambda m: m.function.__name__
)
def test_each_mistake_is_diagnosed_as_itself(mistake: Any) -> None:
    """On the probe problems alone, every mistake is told apart from the correct answer and the others."""
    kind = mistake.kinds[0]
    function = mistake.function if kind == "scaled" or mistake.function is b.scaled_by_sqrt_D_q else None
    if function is None:
        pytest.skip("diagnosed for unscaled attention through its scaled form")
    diagnosis = diagnose_attention(Implementation(function, kind), None)
    assert diagnosis is not None and diagnosis.mistake == function.__name__, diagnosis


def test_overflow_is_diagnosed_on_the_counterexample_only() -> None:
    """The notebook's unshifted softmax agrees with the correct answer on moderate logits: only a
    counterexample with large logits tells it apart."""
    implementation = Implementation(b.notebook_softmax, "scaled")
    assert diagnose_attention(implementation, None) is None
    ones = np.ones((1, 1))
    large = AttentionProblem(np.array([[0.0, 1000.0]]), ones, ones, ones, 0 * ones, 0 * ones, 0 * ones)
    diagnosis = diagnose_attention(implementation, large)
    assert diagnosis is not None and diagnosis.mistake == "notebook_softmax"


@pytest.mark.parametrize("kind", ["scaled", "unscaled"])
def test_correct_implementations_get_no_diagnosis(kind: str) -> None:
    correct = b.scaled_by_sqrt_D_q if kind == "scaled" else b.not_scaled
    assert diagnose_attention(b.broken(correct, kind), None) is None
    assert diagnose_softmax(b.stable_softmax, None) is None


@pytest.mark.parametrize("mistake", SOFTMAX_MISTAKES[:2], ids=lambda m: m.function.__name__)
def test_each_softmax_mistake_is_diagnosed_as_itself(mistake: Any) -> None:
    diagnosis = diagnose_softmax(mistake.function, None)
    assert diagnosis is not None and diagnosis.mistake == mistake.function.__name__


def test_float32_accuracy_returned_as_float64_is_diagnosed_in_words() -> None:
    """A softmax run in float32 and returned as float64: named, with its error against both dtypes' bounds; the
    correct float64 reference and float32 code returning float32 are not."""

    def float32_softmax_in_float64(*arrays: Any) -> Any:
        X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays
        Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
        logits = (K.T @ Q / np.sqrt(omega_q.shape[0])).astype(np.float32)
        A = np.exp(logits - logits.max(axis=0))
        A = (A / A.sum(axis=0)).astype(np.float64)
        return V @ A, A

    problem = AttentionProblem(*(np.random.default_rng(5).uniform(-1, 1, s)
                                 for s in [(3, 4), (2, 3), (2, 3), (2, 3), (2, 1), (2, 1), (2, 1)]))  # fmt: skip
    diagnosis = diagnose_attention(Implementation(float32_softmax_in_float64), problem)
    assert diagnosis is not None and diagnosis.mistake == "float32_accuracy_in_float64", diagnosis
    assert "only as accurate as float32" in diagnosis.message and "float64's bound" in diagnosis.message
    assert diagnose_attention(Implementation(b.scaled_by_sqrt_D_q), problem) is None


@pytest.mark.parametrize("mistake", BACKWARD_MISTAKES, ids=lambda m: m.function.__name__)
def test_each_broken_backward_is_diagnosed_as_itself(mistake: Any) -> None:
    """On the gradient probes alone, every broken backward is told apart from the correct one and the others."""
    diagnosis = diagnose_backward(b.broken_backward(mistake.function), None)
    assert diagnosis is not None and diagnosis.mistake == mistake.function.__name__, diagnosis


def test_correct_backwards_get_no_diagnosis() -> None:
    """The catalogue's correct backward passes (P from the saved lse, blocks, the log domain, float32) and the
    reference's get none; a backward that changes only its bits (summation order) is not named either."""
    from properties.catalogues.correct import CATALOGUE
    from properties.helpers.backward import RowBackward

    for variant in (v for v in CATALOGUE if v.role == "backward"):
        assert diagnose_backward(b.broken_backward(variant.function), None) is None, variant
    assert diagnose_backward(b.broken_backward(b.backward_in_a_changing_order), None) is None
    assert isinstance(b.broken_backward(b.textbook_backward), RowBackward)


def test_a_gradient_law_fail_is_diagnosed_from_its_arguments() -> None:
    problem = GRADIENT_PROBES[0]
    arguments = {"backward": b.broken_backward(b.backward_dk_without_the_scale), "problem": problem}
    diagnosis = diagnose(arguments)
    assert diagnosis is not None and diagnosis.mistake == "backward_dk_without_the_scale"
