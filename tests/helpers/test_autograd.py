"""The autograd backward (--gradients): jax.vjp of a jax kernel against the reference's exact backward, its replay
code, and torch.autograd's plumbing on a stand-in for torch (torch itself is not installed here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from attention import scaled_dot_product_attention_backward
from properties.helpers.autograd import AutogradBackward, torch_vjp
from properties.helpers.backward import GradientProblem
from properties.helpers.loading import load_function
from properties.helpers.row_convention import Convention


def _problem(**keywords: Any) -> GradientProblem:
    rng = np.random.default_rng(7)

    def grid(*shape: int) -> Any:
        return np.round(rng.uniform(-2, 2, shape) * 256) / 256

    return GradientProblem(grid(2, 2, 5, 3), grid(2, 1, 5, 3), grid(2, 1, 5, 2), grid(2, 2, 5, 2), **keywords)


@pytest.mark.slow  # jax compiles each shape: run by pytest -m slow (CI)
@pytest.mark.parametrize("keywords", [{}, {"is_causal": True}, {"scale": 0.5}])
def test_jax_gradients_match_the_exact_backward_within_their_bounds(keywords: dict[str, Any]) -> None:
    jax = pytest.importorskip("jax")
    convention = Convention("BLHE", "jax", "float32")
    backward = AutogradBackward.of(jax.nn.dot_product_attention, "jax.nn:dot_product_attention", convention)
    problem = backward.adapt(_problem(enable_gqa=True, **keywords))
    gradients = backward(problem)
    assert gradients.eps == 2.0**-23 and gradients.modified == ()
    exact = scaled_dot_product_attention_backward(problem.query, problem.key, problem.value, problem.d_out,
                                                  **problem.keywords())  # fmt: skip
    for got, expected, bound in zip(gradients.as_float64(), exact, backward.bounds(problem, gradients.eps),
                                    strict=False):  # fmt: skip
        assert np.all(np.abs(got - expected) <= bound)
    assert float(np.abs(gradients.d_query).max()) > 0  # values widths 2 != 3: the padded path was taken


@pytest.mark.slow  # imports and compiles jax: run by pytest -m slow (CI)
def test_the_autograd_backward_prints_as_code_that_rebuilds_it() -> None:
    pytest.importorskip("jax")
    convention = Convention("BLHE", "jax", "float32")
    backward = AutogradBackward.of(load_function("jax.nn:dot_product_attention"), "jax.nn:dot_product_attention",
                                   convention)  # fmt: skip
    rebuilt = eval(repr(backward), {"AutogradBackward": AutogradBackward, "load_function": load_function,
                                    "Convention": Convention})  # fmt: skip
    assert repr(rebuilt) == repr(backward)
    problem = backward.adapt(_problem())
    assert all(np.array_equal(a, b) for a, b in zip(backward(problem)[:3], rebuilt(problem)[:3], strict=True))


def test_gradients_need_an_array_library_with_autograd() -> None:
    from properties.helpers.autograd import autograd_backward
    from properties.helpers.row_convention import sdpa_implementation

    kernel = sdpa_implementation(load_function("attention.rows:scaled_dot_product_attention"), "k", Convention())
    with pytest.raises(ValueError, match="--gradients needs --array jax or torch"):
        autograd_backward(kernel)


class _Tensor:
    """A stand-in for a torch tensor: a numpy array that records what torch_vjp does to it."""

    def __init__(self, array: Any, log: list[str], name: str) -> None:
        self.array, self.log, self.name, self.dtype = np.asarray(array), log, name, "float32"

    def detach(self) -> _Tensor:
        self.log.append(f"detach {self.name}")
        return self

    def clone(self) -> _Tensor:
        return _Tensor(self.array.copy(), self.log, self.name + "'")

    def requires_grad_(self, flag: bool) -> _Tensor:
        self.log.append(f"requires_grad {self.name} {flag}")
        return self

    def to(self, dtype: str) -> _Tensor:
        self.log.append(f"to {self.name} {dtype}")
        return self


class _FakeTorch:
    """torch's few names torch_vjp uses: enable_grad, autograd.grad (here: out = 2 q + 3 k + 5 v), zeros_like."""

    def __init__(self) -> None:
        self.log: list[str] = []
        fake = self

        class autograd:  # noqa: N801
            @staticmethod
            def grad(out: _Tensor, inputs: tuple[_Tensor, ...], grad_outputs: _Tensor, allow_unused: bool) -> Any:
                fake.log.append(f"grad of {out.name} by {[t.name for t in inputs]} at {grad_outputs.name}")
                return tuple(_Tensor(c * grad_outputs.array, fake.log, f"d{t.name}")
                             for c, t in zip((2, 3, 5), inputs, strict=True))  # fmt: skip

        self.autograd = autograd

    def enable_grad(self) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def zeros_like(self, t: _Tensor) -> _Tensor:
        return _Tensor(np.zeros_like(t.array), self.log, "0")


def test_torch_vjp_differentiates_fresh_leaves_at_the_cotangent() -> None:
    torch = _FakeTorch()
    q, k, v = (_Tensor(np.ones(2), torch.log, n) for n in "qkv")
    d_out = _Tensor(np.full(2, 0.5), torch.log, "d_out")

    def forward(q: _Tensor, k: _Tensor, v: _Tensor) -> _Tensor:
        return _Tensor(2 * q.array + 3 * k.array + 5 * v.array, torch.log, f"f({q.name},{k.name},{v.name})")

    grads = torch_vjp(forward, (q, k, v), d_out, library=torch)
    assert [g.array.tolist() for g in grads] == [[1.0, 1.0], [1.5, 1.5], [2.5, 2.5]]
    assert "requires_grad q' True" in torch.log and "to d_out float32" in torch.log
    assert "grad of f(q',k',v') by [\"q'\", \"k'\", \"v'\"] at d_out" in torch.log
    assert [t.name for t in (q, k, v)] == ["q", "k", "v"]  # the caller's tensors are not the leaves
