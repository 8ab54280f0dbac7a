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


def tanh_exact(x: Decimal) -> Decimal:
    """tanh in the current context, from exp of a non-positive argument (no overflow for any x)."""
    e = (-2 * abs(x)).exp()
    magnitude = (1 - e) / (1 + e)
    return magnitude if x >= 0 else -magnitude


def flash_attention_exact(
    q: Sequence[Sequence[Sequence[Sequence[float]]]],
    k: Sequence[Sequence[Sequence[Sequence[float]]]],
    v: Sequence[Sequence[Sequence[Sequence[float]]]],
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Sequence[float] | None = None,
    sinks: Sequence[float] | None = None,
) -> tuple[list[list[list[list[Decimal]]]], list[list[list[Decimal | None]]]]:
    """(out, lse) of FlashAttention's attention in 50 digits, with loops from the definitions, inputs as nested lists
    q[b][i][h][d] (batch, L, nheads, D), k[b][j][g][d] and v[b][j][g][e] (batch, S, nheads_k, ...).

    Query head h reads key head h // (nheads / nheads_k). s = scale q_i . k_j, then softcap tanh(s / softcap), then
    - slope_h |i + S - L - j|; key j is visible to query i when j <= i + S - L + right and j >= i + S - L - left
    (a side of -1 unbounded; causal sets right = 0); lse = ln(sum of exp over the visible logits and the sink), and
    out_i = sum_j exp(s_ij - lse) v_j. A row with nothing to attend to has out 0 and lse None (-inf)."""
    B, L, H, D = len(q), len(q[0]) if q else 0, len(q[0][0]) if q and q[0] else 0, len(q[0][0][0]) if q and q[0] else 0
    S = len(k[0]) if k else 0
    H_k = len(k[0][0]) if S else 1
    D_v = len(v[0][0][0]) if S else 0
    left, right = window_size[0], 0 if causal else window_size[1]
    out: list[list[list[list[Decimal]]]] = []
    lse: list[list[list[Decimal | None]]] = [[[None] * L for _ in range(H)] for _ in range(B)]
    with localcontext() as context:
        context.prec = PRECISION
        scale = Decimal(1) / Decimal(D).sqrt() if softmax_scale is None else Decimal(softmax_scale)
        cap = Decimal(softcap)
        for b in range(B):
            rows: list[list[list[Decimal]]] = []
            for i in range(L):
                heads: list[list[Decimal]] = []
                for h in range(H):
                    g = h // (H // H_k)
                    logits: dict[int, Decimal] = {}
                    for j in range(S):
                        rel = i + S - L - j
                        if (right >= 0 and rel < -right) or (left >= 0 and rel > left):
                            continue
                        s = scale * sum((Decimal(q[b][i][h][d]) * Decimal(k[b][j][g][d]) for d in range(D)), Decimal(0))
                        if cap > 0:
                            s = cap * tanh_exact(s / cap)
                        if alibi_slopes is not None:
                            s -= Decimal(alibi_slopes[h]) * abs(rel)
                        logits[j] = s
                    terms = [*logits.values(), *([Decimal(sinks[h])] if sinks is not None else [])]
                    row = [Decimal(0)] * D_v
                    if terms:
                        top = max(terms)
                        total = sum(((t - top).exp() for t in terms), Decimal(0))
                        lse[b][h][i] = top + total.ln()
                        for j, s in logits.items():
                            weight = (s - top).exp() / total
                            row = [row[e] + weight * Decimal(v[b][j][g][e]) for e in range(D_v)]
                    heads.append(row)
                rows.append(heads)
            out.append(rows)
    return out, lse
