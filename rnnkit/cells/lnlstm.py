"""The layer-normalised LSTM cell (Ba, Kiros & Hinton 2016; haste's ``LayerNormLSTM``), compiled.

PyTorch's LSTM gate order (i, f, g, o), feature-major.  Layer normalisation acts on each
sequence's column of features separately: for a block ``v`` of F rows, ``LN(v) = (v - μ) ⊙ r``
with ``μ`` the column's mean and ``r = 1/sqrt(var + 1e-5)`` (``var`` the biased variance), as
``torch.nn.functional.layer_norm``.  The two halves of the pre-activations are normalised
separately, so ``b_ih`` and ``b_hh`` would be cancelled by the normalisation: one bias ``b``
follows it.  One step, in the symbols of the code below (``ca`` and ``cb`` the cache fields, ``p``
the extra parameters)::

    xp  = W_ih x            (hoisted out of the time loop; no bias)
    x̂   = LN(xp)            over the 4H rows,      r_x its per-sequence 1/sqrt(var + eps)
    ĥ   = LN(W_hh h_prev)   over the 4H rows,      r_h
    a   = γ_x ⊙ x̂ + γ_h ⊙ ĥ + b
    i, f, g, o = σ(a[j]), σ(a[H+j]), tanh(a[2H+j]), σ(a[3H+j])
    c   = f ⊙ c_prev + i ⊙ g
    ĉ   = LN(c)             over the H rows,       r_c
    y   = γ_c ⊙ ĉ + β_c     h = o ⊙ tanh(y)

    p  = [γ_x (4H); γ_h (4H); b (4H); γ_c (H); β_c (H)]        (:func:`param_slices`)
    ca = [i; f; g; o; x̂; ĥ]  (12H rows)
    cb = [ĉ; tanh(y); r_x; r_h; r_c; w0..w3]  (2H + 7 rows; w0..w3: the backward's per-sequence sums)

Backward, given dh = ∂L/∂h and dc = ∂L/∂c (carried from the step after, dh already holding this
step's output gradient).  The backward of ``v̂ = LN(v)`` for a gradient ``dv̂`` (F rows) is
``dv = r ⊙ (dv̂ - mean(dv̂) - v̂ ⊙ mean(dv̂ ⊙ v̂))``, the means over the F rows of each column::

    dy   = dh ⊙ o ⊙ (1 - tanh(y)²)          dγ_c += Σ_b dy ⊙ ĉ      dβ_c += Σ_b dy
    do   = dh ⊙ tanh(y)
    dc  += r_c ⊙ (γ_c dy - mean(γ_c dy) - ĉ ⊙ mean(γ_c dy ⊙ ĉ))                    (w0, w1: the means)
    da[j]    = dc ⊙ g ⊙ i(1-i)              da[H+j]  = dc ⊙ c_prev ⊙ f(1-f)
    da[2H+j] = dc ⊙ i ⊙ (1-g²)              da[3H+j] = do ⊙ o(1-o)
    dc_prev  = dc ⊙ f
    db  += Σ_b da                            dγ_x += Σ_b da ⊙ x̂      dγ_h += Σ_b da ⊙ ĥ
    d_xp = r_x ⊙ (γ_x da - mean(γ_x da) - x̂ ⊙ mean(γ_x da ⊙ x̂))                   (w0, w1)
    d_hp = r_h ⊙ (γ_h da - mean(γ_h da) - ĥ ⊙ mean(γ_h da ⊙ ĥ))                   (w2, w3)
    dh_prev = W_hhᵀ d_hp

``d_xp`` is the gradient with respect to ``xp = W_ih x`` and ``d_hp`` with respect to
``W_hh h_prev``, both before normalisation, so the time loop's after-the-loop products
``dW_ih = Σ d_xp xᵀ`` and ``dW_hh = Σ d_hp h_prevᵀ`` hold as for every cell; ``b``, the gains
``γ`` and the shift ``β_c`` get their gradients through ``dp``, one sum over the batch per step.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from rnnkit._blas import gemm
from rnnkit._types import Array
from rnnkit.cells._spec import KERNEL_OPTIONS, ONE, ZERO, CellSpec, register, row, sigmoid, tanh

EPS = 1e-5
"""Added to the variance under the square root (``torch.nn.LayerNorm``'s default)."""


class LNLSTMCache(NamedTuple):
    """What one layer-normalised LSTM step keeps for its backward pass."""

    gates: Array  # (12H, B): i, f, g, o after their nonlinearities, then x̂, ĥ
    cell: Array   # (2H + 7, B): ĉ, tanh(y), r_x, r_h, r_c, and four rows of backward workspace


def param_slices(H: int) -> dict[str, slice]:
    """Where each extra parameter lies in the packed vector ``p`` (length 14H), in the kernels' order.

    ``ln_ih_weight`` is γ_x, ``ln_hh_weight`` γ_h, ``bias`` b, ``ln_c_weight`` γ_c, ``ln_c_bias`` β_c.
    """
    G = 4 * H
    return {"ln_ih_weight": slice(0, G), "ln_hh_weight": slice(G, 2 * G), "bias": slice(2 * G, 3 * G),
            "ln_c_weight": slice(3 * G, 3 * G + H), "ln_c_bias": slice(3 * G + H, 3 * G + 2 * H)}


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
    """Nothing is hoisted: the cell's one bias ``b`` follows the normalisation and lives in ``p``."""
    return b_ih + b_hh, b_ih[:0]


# Per-batch sums that are reduced into one number (the gradients of b, γ and β): reassociation lets
# the compiler vectorise them (a float sum is otherwise evaluated strictly left to right).  Only these
# two helpers are compiled so; the order of additions changes the result only by rounding.
_REDUCE_OPTIONS = {**KERNEL_OPTIONS, "fastmath": {"reassoc", "nsz"}}


@numba.njit(**_REDUCE_OPTIONS)
def _sum(a):  # type: ignore[no-untyped-def]
    s = ZERO
    for b in range(a.shape[0]):
        s += a[b]
    return s


@numba.njit(**_REDUCE_OPTIONS)
def _dot(a, v):  # type: ignore[no-untyped-def]
    s = ZERO
    for b in range(a.shape[0]):
        s += a[b] * v[b]
    return s


@numba.njit(**KERNEL_OPTIONS)
def _normalise(src, dst, r):  # type: ignore[no-untyped-def]
    """``dst = LN(src)`` over the rows of each column; ``r`` (one row) receives 1/sqrt(var + eps).

    ``dst`` may be ``src``.  Every pass runs along rows, so each inner loop is vectorised over the
    batch; ``r`` holds the mean first, then the sum of squares (two passes: no cancellation).
    """
    F, n = dst.shape
    for b in range(n):
        r[b] = 0
    for k in range(F):
        s = row(src, k)
        for b in range(n):
            r[b] += s[b]
    for b in range(n):
        r[b] = r[b] / F                                     # μ
    for k in range(F):
        s, d = row(src, k), row(dst, k)
        for b in range(n):
            d[b] = s[b] - r[b]                              # v - μ
    for b in range(n):
        r[b] = 0
    for k in range(F):
        d = row(dst, k)
        for b in range(n):
            r[b] += d[b] * d[b]
    for b in range(n):
        r[b] = 1.0 / np.sqrt(r[b] / F + EPS)                # r = 1/sqrt(var + eps)
    for k in range(F):
        d = row(dst, k)
        for b in range(n):
            d[b] *= r[b]                                    # v̂ = (v - μ) ⊙ r


@numba.njit(**KERNEL_OPTIONS)
def step_forward(xp, b_x, b_in, w_hh, w_hr, p, h_prev, c_prev, h, c, ca, cb, u0, u1, w_pack):  # type: ignore[no-untyped-def]
    """One layer-normalised LSTM step (see the module docstring); ``b_x``, ``b_in``, ``w_hr`` are unused.
    Always all units (``u0, u1 = 0, H``): the layer norms couple them within the step."""
    H, n = c.shape
    G = 4 * H
    x_hat, h_hat, c_hat = ca[G : 2 * G], ca[2 * G : 3 * G], cb[:H]
    _normalise(xp, x_hat, row(cb, 2 * H))                   # x̂ = LN(xp)
    gemm(False, 1.0, w_hh, h_prev, 0.0, h_hat)
    _normalise(h_hat, h_hat, row(cb, 2 * H + 1))            # ĥ = LN(W_hh h_prev)
    for r in range(G):                                      # i, f, g, o = σ, σ, tanh, σ of γ_x x̂ + γ_h ĥ + b
        a, xh, hh = row(ca, r), row(x_hat, r), row(h_hat, r)
        g_x, g_h, bias = p[r], p[G + r], p[2 * G + r]
        if 2 * H <= r < 3 * H:
            for b in range(n):
                a[b] = tanh(g_x * xh[b] + g_h * hh[b] + bias)
        else:
            for b in range(n):
                a[b] = sigmoid(g_x * xh[b] + g_h * hh[b] + bias)
    for j in range(H):
        i, f, g = row(ca, j), row(ca, H + j), row(ca, 2 * H + j)
        c_prev_j, c_j = row(c_prev, j), row(c, j)
        for b in range(n):
            c_j[b] = f[b] * c_prev_j[b] + i[b] * g[b]       # c = f ⊙ c_prev + i ⊙ g
    _normalise(c, c_hat, row(cb, 2 * H + 2))                # ĉ = LN(c)
    for j in range(H):
        o, ch, tanh_y, h_j = row(ca, 3 * H + j), row(c_hat, j), row(cb, H + j), row(h, j)
        g_c, b_c = p[3 * G + j], p[3 * G + H + j]
        for b in range(n):
            t = tanh(g_c * ch[b] + b_c)                     # tanh(y), y = γ_c ĉ + β_c
            tanh_y[b] = t
            h_j[b] = o[b] * t                               # h = o ⊙ tanh(y)


@numba.njit(**KERNEL_OPTIONS)
def step_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh_t, w_hr, p, d_xp, d_hp, dp, u0, u1, dh_prev,  # type: ignore[no-untyped-def]
    w_pack_t, dx):
    """Backward of one layer-normalised LSTM step (all units): ``dc`` becomes the gradient for ``c_prev``,
    ``dh_prev`` (``dh`` itself in the time loop) the one for ``h_prev``; this step's gradients of ``p``
    are added into ``dp``."""
    H, n = dc.shape
    G = 4 * H
    x_hat, h_hat, c_hat = ca[G : 2 * G], ca[2 * G : 3 * G], cb[:H]
    r_x, r_h, r_c = row(cb, 2 * H), row(cb, 2 * H + 1), row(cb, 2 * H + 2)
    w0, w1, w2, w3 = row(cb, 2 * H + 3), row(cb, 2 * H + 4), row(cb, 2 * H + 5), row(cb, 2 * H + 6)
    # dy (kept in d_xp's i rows until the gate pass) and do (in its o rows); the sums of LN(c)'s backward.
    for b in range(n):
        w0[b] = 0
        w1[b] = 0
    for j in range(H):
        o, tanh_y, ch, dh_j = row(ca, 3 * H + j), row(cb, H + j), row(c_hat, j), row(dh, j)
        dy, do = row(d_xp, j), row(d_xp, 3 * H + j)
        g_c = p[3 * G + j]
        for b in range(n):
            t = tanh_y[b]
            dy_ = dh_j[b] * o[b] * (ONE - t * t)            # dy = dh ⊙ o ⊙ (1 - tanh(y)²)
            dy[b] = dy_
            do[b] = dh_j[b] * t                             # do = dh ⊙ tanh(y)
            w0[b] += g_c * dy_
            w1[b] += g_c * dy_ * ch[b]
        dp[3 * G + j] += _dot(dy, ch)                       # dγ_c
        dp[3 * G + H + j] += _sum(dy)                       # dβ_c
    for b in range(n):
        w0[b] = w0[b] / H                                   # mean(γ_c dy), mean(γ_c dy ⊙ ĉ)
        w1[b] = w1[b] / H
    for j in range(H):                                      # dc through LN(c), then the gates
        i, f, g, o = row(ca, j), row(ca, H + j), row(ca, 2 * H + j), row(ca, 3 * H + j)
        d_i, d_f, d_g, d_o = row(d_xp, j), row(d_xp, H + j), row(d_xp, 2 * H + j), row(d_xp, 3 * H + j)
        dc_j, c_prev_j, ch = row(dc, j), row(c_prev, j), row(c_hat, j)
        g_c = p[3 * G + j]
        for b in range(n):
            dc_ = dc_j[b] + r_c[b] * (g_c * d_i[b] - w0[b] - ch[b] * w1[b])
            i_, f_, g_, o_ = i[b], f[b], g[b], o[b]
            d_i[b] = dc_ * g_ * i_ * (ONE - i_)
            d_f[b] = dc_ * c_prev_j[b] * f_ * (ONE - f_)
            d_g[b] = dc_ * i_ * (ONE - g_ * g_)
            d_o[b] *= o_ * (ONE - o_)
            dc_j[b] = dc_ * f_                              # dc_prev = dc ⊙ f
    # d_xp holds da: the gradients of b and the gains, and the sums of both LN backwards.
    for b in range(n):
        w0[b] = 0
        w1[b] = 0
        w2[b] = 0
        w3[b] = 0
    for r in range(G):
        da, xh, hh = row(d_xp, r), row(x_hat, r), row(h_hat, r)
        g_x, g_h = p[r], p[G + r]
        for b in range(n):
            d = da[b]
            w0[b] += g_x * d
            w1[b] += g_x * d * xh[b]
            w2[b] += g_h * d
            w3[b] += g_h * d * hh[b]
        dp[r] += _dot(da, xh)                               # dγ_x
        dp[G + r] += _dot(da, hh)                           # dγ_h
        dp[2 * G + r] += _sum(da)                           # db
    for b in range(n):
        w0[b] = w0[b] / G
        w1[b] = w1[b] / G
        w2[b] = w2[b] / G
        w3[b] = w3[b] / G
    for r in range(G):                                      # through both normalisations
        da, xh, hh, dhp = row(d_xp, r), row(x_hat, r), row(h_hat, r), row(d_hp, r)
        g_x, g_h = p[r], p[G + r]
        for b in range(n):
            d = da[b]
            dhp[b] = r_h[b] * (g_h * d - w2[b] - hh[b] * w3[b])
            da[b] = r_x[b] * (g_x * d - w0[b] - xh[b] * w1[b])
    gemm(False, 1.0, w_hh_t, d_hp, 0.0, dh_prev)            # dh_prev = W_hhᵀ d_hp


KIND = register(4, step_forward, step_backward)

LNLSTM_CELL = CellSpec(
    name="lnlstm",
    kind=KIND,
    num_gates=4,
    state_names=("h", "c"),
    cache_type=LNLSTMCache,
    cache_rows=(12, 2),
    separate_hidden_grad=True,
    split_bias=split_bias,
    options={},
    cache_extra_rows=(0, 7),
    splits_units=False,
)
