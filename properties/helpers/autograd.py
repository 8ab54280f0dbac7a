"""Gradients from an array library's autograd (--gradients): a row-convention kernel in jax or torch,
differentiated by `jax.vjp` or `torch.autograd.grad`, checked by the gradient laws as a backward pass in the
row contract of properties/helpers/backward.py.

`row_forward(kernel)` is the kernel called with the row contract's keywords (attn_mask, is_causal, scale,
enable_gqa) translated to its own (mask= for jax, grouped heads without a keyword, scale=1.0 for an unscaled kernel,
dropout_p=0.0), on arrays of its library, laid out and cast by its Convention; values narrower or wider than the
keys are padded with zero columns when the target needs equal widths (jax), which changes no logit and, with
zero columns of d_out, no gradient of the other columns. `autograd_backward(kernel)` is the row contract's
backward(query, key, value, d_out, **keywords) -> (d_query, d_key, d_value) of that forward, taken by the
library's reverse mode in the kernel's dtype (bfloat16 gradients of bfloat16 inputs: the laws judge them by
bfloat16's epsilon, and the directional derivative against the float64 derivative of the same problem).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from properties.helpers.backward import RowBackward
from properties.helpers.row_convention import (
    Convention,
    SdpaImplementation,
    row_forward,
    row_keywords,
    sdpa_implementation,
    with_signature,
)

Vjp = Callable[[Callable[..., Any], tuple[Any, Any, Any], Any], tuple[Any, Any, Any]]


def jax_vjp(forward: Callable[..., Any], primals: tuple[Any, Any, Any], cotangent: Any) -> tuple[Any, Any, Any]:
    """The cotangents of query, key, value of <cotangent, forward(query, key, value)> by jax.vjp."""
    import jax

    _, pullback = jax.vjp(forward, *primals)
    d_query, d_key, d_value = pullback(cotangent.astype(primals[0].dtype))
    return d_query, d_key, d_value


def torch_vjp(
    forward: Callable[..., Any], primals: tuple[Any, Any, Any], cotangent: Any, library: Any = None
) -> tuple[Any, Any, Any]:
    """The cotangents of query, key, value of <cotangent, forward(query, key, value)> by torch.autograd.grad, on
    detached copies that require grad (the caller's tensors are left alone); `library` is torch (a test can
    pass a stand-in)."""
    torch = library if library is not None else importlib.import_module("torch")
    leaves = tuple(p.detach().clone().requires_grad_(True) for p in primals)
    with torch.enable_grad():
        out = forward(*leaves)
        grads = torch.autograd.grad(out, leaves, grad_outputs=cotangent.to(out.dtype), allow_unused=True)
    return tuple(torch.zeros_like(p) if g is None else g.detach() for p, g in zip(primals, grads, strict=True))


VJPS: dict[str, Vjp] = {"jax": jax_vjp, "torch": torch_vjp}
# Forwards whose vjp cannot be traced under jax.jit: differentiated op by op.
JAX_EAGER: set[Callable[..., Any]] = set()


@functools.cache
def _jitted_vjp(forward: Callable[..., Any], static: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
    """jax_vjp of `forward` under one jax.jit: the keywords `static` fixed, the arrays (q, k, v, d_out, a mask and
    the scale) traced, so that each shape compiles once for the whole pullback instead of once an operation."""
    import jax

    def pull(query: Any, key: Any, value: Any, d_out: Any, arrays: dict[str, Any]) -> tuple[Any, Any, Any]:
        return jax_vjp(lambda q, k, v: forward(q, k, v, **dict(static), **arrays), (query, key, value), d_out)

    compiled: Callable[..., Any] = jax.jit(pull)
    return compiled


def compiled_jax_vjp(
    forward: Callable[..., Any], query: Any, key: Any, value: Any, d_out: Any, keywords: dict[str, Any]
) -> tuple[Any, Any, Any] | None:
    """jax_vjp(forward, ...) through `_jitted_vjp` (a float scale traced as a 0-d array); None when the forward
    cannot be traced (it is then differentiated op by op from now on)."""
    import jax

    arrays = {name: value for name, value in keywords.items() if isinstance(value, jax.Array)}
    if isinstance(keywords.get("scale"), float | int) and not isinstance(keywords["scale"], bool):
        arrays["scale"] = jax.device_put(np.asarray(float(keywords["scale"])))
    static = tuple(sorted((name, value) for name, value in keywords.items() if name not in arrays))
    try:
        hash(static)
    except TypeError:  # a keyword neither a jax array nor hashable: op by op
        return None
    try:
        return _jitted_vjp(forward, static)(query, key, value, d_out, arrays)  # type: ignore[no-any-return]
    except (jax.errors.JAXTypeError, jax.errors.NonConcreteBooleanIndexError, jax.errors.JAXIndexError):
        JAX_EAGER.add(forward)
        return None


@dataclass(frozen=True, repr=False)
class AutogradBackward(RowBackward):
    """The backward of a row-convention kernel by its library's autograd, in the row contract (its function is
    the vjp of `row_forward(kernel)`), on the arrays of the kernel's convention (library, layout, dtype)."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}.of(load_function({self.forward_target!r}), {self.forward_target!r}, "
            f"{self.convention!r}, {self.kind!r})"
        )

    @classmethod
    def of(
        cls, function: Callable[..., Any], name: str, convention: Convention, kind: str = "scaled"
    ) -> AutogradBackward:
        """The autograd backward of the kernel `function` (TARGET `name`) in `convention`."""
        return autograd_backward(sdpa_implementation(function, name, convention, kind))


def autograd_backward(kernel: SdpaImplementation) -> AutogradBackward:
    """The backward of the kernel by its library's autograd, in the row contract, behind the backward wrapper
    (in the kernel's convention: library, layout, dtype). ValueError for numpy arrays, which have no autograd."""
    library = kernel.convention.array
    if library not in VJPS:
        raise ValueError(f"--gradients needs --array jax or torch (an array library with autograd); got {library}")
    vjp = VJPS[library]
    forward = row_forward(kernel)

    def backward(query: Any, key: Any, value: Any, d_out: Any, **keywords: Any) -> tuple[Any, Any, Any]:
        if library == "jax" and forward not in JAX_EAGER:
            compiled = compiled_jax_vjp(forward, query, key, value, d_out, keywords)
            if compiled is not None:
                return compiled
        return vjp(lambda q, k, v: forward(q, k, v, **keywords), (query, key, value), d_out)

    with_signature(backward, row_keywords(kernel), extra=("d_out",))
    backward.__name__ = backward.__qualname__ = f"autograd_of_{getattr(kernel.function, '__name__', 'kernel')}"
    return AutogradBackward(backward, f"{library} autograd of {kernel.name}", kernel.function, kernel.name,
                            kernel.kind, kernel.convention)  # fmt: skip
