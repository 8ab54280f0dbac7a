"""`python -m attention`: the matrix part of notebook 12.1, step by step, with the reference implementation."""

from __future__ import annotations

import numpy as np

from attention import scaled_dot_product_self_attention, self_attention, sinusoidal_positional_encoding
from attention.notebook import notebook_12_1_inputs


def section(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = notebook_12_1_inputs()
    arguments = (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    print("Notebook 12.1 (Understanding Deep Learning), matrix form: inputs are the columns of X (D x N).")
    section("Inputs X (D=4, N=3), np.random.seed(3)")
    print(X)
    section("Parameters, np.random.seed(0): omega_q, omega_k, omega_v (4 x 4), beta_q, beta_k, beta_v (4 x 1)")
    for name, value in zip(("omega_q", "omega_k", "omega_v"), (omega_q, omega_k, omega_v), strict=True):
        print(f"{name} =\n{value}")
    for name, value in zip(("beta_q", "beta_k", "beta_v"), (beta_q, beta_k, beta_v), strict=True):
        print(f"{name}^T = {value.T}")

    X_prime, attentions = self_attention(*arguments)
    section("self_attention: attentions = softmax_cols(K^T Q) (eq. 12.8); column n holds query n's weights")
    print(attentions)
    print("column sums:", attentions.sum(axis=0))
    section("self_attention: X' = V attentions; its columns are the notebook's x_prime_0, x_prime_1, x_prime_2")
    print(X_prime)
    print("x_prime_0_true: [[ 0.94744244 -0.24348429 -0.91310441 -0.44522983]]  (as the notebook prints it)")

    scaled_prime, scaled_attentions = scaled_dot_product_self_attention(*arguments)
    section(f"scaled_dot_product_self_attention: softmax_cols(K^T Q / sqrt(D_q)), D_q = {omega_q.shape[0]} (eq. 12.9)")
    print(scaled_attentions)
    print(
        "The scaled weights are less extreme: the largest weight per column is",
        np.round(scaled_attentions.max(axis=0), 4),
        "instead of",
        np.round(attentions.max(axis=0), 4),
    )
    section("scaled_dot_product_self_attention: X'")
    print(scaled_prime)

    permutation = [1, 2, 0]
    permuted_prime, _ = scaled_dot_product_self_attention(X[:, permutation], *arguments[1:])
    section(f"Permutation check: permute the columns of X by {permutation}")
    print(permuted_prime)
    print(
        f"equals X'[:, {permutation}]:",
        bool(np.allclose(permuted_prime, scaled_prime[:, permutation])),
        "-> self-attention is equivariant to permutations of its inputs (eq. 12.18)",
    )

    positional_question(arguments, permutation)


def positional_question(arguments: tuple[np.ndarray, ...], permutation: list[int]) -> None:
    """The notebook's closing question: would this still be equivariant with positional encodings?"""
    X, rest = arguments[0], arguments[1:]
    Pi = sinusoidal_positional_encoding(*X.shape)
    section("Would it still be equivariant with positional encoding? Pi = sinusoidal_positional_encoding(4, 3)")
    print(Pi)

    def largest_gap(first: np.ndarray, second: np.ndarray) -> str:
        return f"{float(np.abs(first - second).max()):.3g}"

    plain, _ = scaled_dot_product_self_attention(X, *rest)
    plain_permuted, _ = scaled_dot_product_self_attention(X[:, permutation], *rest)
    with_pi, _ = scaled_dot_product_self_attention(X, *rest, positional=Pi)
    fixed_pi, _ = scaled_dot_product_self_attention(X[:, permutation], *rest, positional=Pi)
    moving_pi, _ = scaled_dot_product_self_attention(X[:, permutation], *rest, positional=Pi[:, permutation])
    print(
        f"max |f(X P) - f(X) P|, no positions:                   {largest_gap(plain_permuted, plain[:, permutation])}"
    )
    print(f"max |f(X P; Pi) - f(X; Pi) P|, positions stay put:     {largest_gap(fixed_pi, with_pi[:, permutation])}")
    print(f"max |f(X P; Pi P) - f(X; Pi) P|, positions move along: {largest_gap(moving_pi, with_pi[:, permutation])}")
    print("-> No: with absolute positions the output depends on where each input stands; equivariance returns")
    print("   only if the positions are permuted together with the inputs.")


if __name__ == "__main__":
    main()
