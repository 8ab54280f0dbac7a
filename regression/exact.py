"""An independent self-attention in 50-digit decimal arithmetic, written with loops from the book's equations.

It shares no code with `attention/` and is used only to make and cross-check golden values:
its rounding error (about 1e-45 relative) is far below anything a float64 computation can show.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, localcontext

Matrix = list[list[Decimal]]
PRECISION = 50


def to_decimal(rows: Sequence[Sequence[float]]) -> Matrix:
    """A matrix of floats as exact decimals (every binary float has a finite decimal expansion)."""
    return [[Decimal(float(value)) for value in row] for row in rows]


def _project(omega: Matrix, beta: Matrix, X: Matrix) -> Matrix:
    """omega X + beta 1^T, entry by entry (eq. 12.2 / 12.4)."""
    N = len(X[0])
    return [
        [sum((omega[i][d] * X[d][n] for d in range(len(X))), Decimal(0)) + beta[i][0] for n in range(N)]
        for i in range(len(omega))
    ]


def self_attention_exact(
    X: Matrix,
    omega_v: Matrix,
    omega_q: Matrix,
    omega_k: Matrix,
    beta_v: Matrix,
    beta_q: Matrix,
    beta_k: Matrix,
    *,
    scaled: bool,
    queries: Matrix | None = None,
) -> tuple[Matrix, Matrix]:
    """(X_prime, attentions) of (scaled) dot-product self-attention; betas are (rows, 1) matrices.

    With `queries` (D x M, inputs as columns), only those inputs query (keys and values come from X): X_prime is
    D_v x M and attentions N x M, the columns of the full result for those queries.
    """
    with localcontext() as context:
        context.prec = PRECISION
        Q = _project(omega_q, beta_q, X if queries is None else queries)
        K = _project(omega_k, beta_k, X)
        V = _project(omega_v, beta_v, X)
        N, D_q, M = len(X[0]), len(omega_q), len(Q[0])
        scale = Decimal(1) / Decimal(D_q).sqrt() if scaled else Decimal(1)
        attentions: Matrix = [[Decimal(0)] * M for _ in range(N)]
        for n in range(M):
            logits = [scale * sum((K[i][m] * Q[i][n] for i in range(D_q)), Decimal(0)) for m in range(N)]
            top = max(logits)
            weights = [(logit - top).exp() for logit in logits]
            total = sum(weights, Decimal(0))
            for m in range(N):
                attentions[m][n] = weights[m] / total
        X_prime = [
            [sum((V[d][m] * attentions[m][n] for m in range(N)), Decimal(0)) for n in range(M)] for d in range(len(V))
        ]
    return X_prime, attentions


def to_float(matrix: Matrix) -> list[list[float]]:
    """Round each decimal to the nearest float."""
    return [[float(value) for value in row] for row in matrix]


def self_attention_exact_with_options(
    X: Matrix,
    omega_v: Matrix,
    omega_q: Matrix,
    omega_k: Matrix,
    beta_v: Matrix,
    beta_q: Matrix,
    beta_k: Matrix,
    *,
    scaled: bool,
    positional: Matrix | None = None,
    positional_mode: str = "input",
    visible: Sequence[Sequence[bool]] | None = None,
    bias: Matrix | None = None,
) -> tuple[Matrix, Matrix]:
    """(X_prime, attentions) with the forward's options, from the book's equations in 50 digits.

    positional Pi (D x N) is added to X for queries and keys, and for the values when positional_mode is "input";
    visible[m][n] says whether key m is visible to query n (None: all are; causal is visible[m][n] = m <= n);
    bias (N x N) is added to the (scaled) logits. A query with no visible key gets zero columns.
    """
    with localcontext() as context:
        context.prec = PRECISION
        D, N = len(X), len(X[0])
        X_qk = X if positional is None else [[X[d][n] + positional[d][n] for n in range(N)] for d in range(D)]
        Q, K = _project(omega_q, beta_q, X_qk), _project(omega_k, beta_k, X_qk)
        V = _project(omega_v, beta_v, X_qk if positional_mode == "input" else X)
        D_q = len(omega_q)
        scale = Decimal(1) / Decimal(D_q).sqrt() if scaled else Decimal(1)
        attentions: Matrix = [[Decimal(0)] * N for _ in range(N)]
        for n in range(N):
            keys = [m for m in range(N) if visible is None or visible[m][n]]
            if not keys:
                continue
            logits = {
                m: scale * sum((K[i][m] * Q[i][n] for i in range(D_q)), Decimal(0))
                + (Decimal(0) if bias is None else bias[m][n])
                for m in keys
            }
            top = max(logits.values())
            weights = {m: (logit - top).exp() for m, logit in logits.items()}
            total = sum(weights.values(), Decimal(0))
            for m in keys:
                attentions[m][n] = weights[m] / total
        X_prime = [
            [sum((V[d][m] * attentions[m][n] for m in range(N)), Decimal(0)) for n in range(N)] for d in range(len(V))
        ]
    return X_prime, attentions
