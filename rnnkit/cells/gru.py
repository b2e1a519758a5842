"""The GRU cell: PyTorch's equations and gate order (r, z, n), feature-major, compiled.

PyTorch applies the reset gate to the *whole* hidden part of the candidate, bias included, so
``b_hn`` cannot be hoisted with the other biases.  One step, in the symbols of the code below
(``j`` a hidden unit, ``b`` a sequence)::

    hp = W_hh h_prev                     xp = W_ih x (hoisted),  b_x = b_ih + [b_hr; b_hz; 0],  b_in = b_hn
    r  = σ(xp[j] + b_x[j] + hp[j])
    z  = σ(xp[H+j] + b_x[H+j] + hp[H+j])
    hn = hp[2H+j] + b_in[j]
    n  = tanh(xp[2H+j] + b_x[2H+j] + r ⊙ hn)
    h  = n + z ⊙ (h_prev - n)            (= (1 - z) ⊙ n + z ⊙ h_prev;  cache: ca = [r; z; n], cb = hn)

Backward, given dh = ∂L/∂h (carried, plus this step's output gradient)::

    dz  = dh ⊙ (h_prev - n)              da_z = dz ⊙ z(1-z)
    dn  = dh ⊙ (1 - z)                   da_n = dn ⊙ (1-n²)     (= d_xp[2H+j])
    dr  = da_n ⊙ hn                      da_r = dr ⊙ r(1-r)
    d_xp = [da_r; da_z; da_n]            d_hp = [da_r; da_z; da_n ⊙ r]
    dh_prev = z ⊙ dh + W_hhᵀ d_hp
"""

from __future__ import annotations

from typing import NamedTuple

import numba

from rnnkit._blas import gemm
from rnnkit._types import Array
from rnnkit.cells._spec import ONE, CellSpec, register, sigmoid, tanh


class GRUCache(NamedTuple):
    """What one GRU step keeps for its backward pass."""

    gates: Array  # (3H, B): r, z, n after their nonlinearities
    hn: Array     # (H, B): W_hn h_prev + b_hn, the part the reset gate scales


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
    """Hoist ``b_ih`` and ``b_hr, b_hz``; keep ``b_hn`` inside the step."""
    H = b_hh.shape[0] // 3
    b_x = b_ih.copy()
    b_x[: 2 * H] += b_hh[: 2 * H]
    return b_x, b_hh[2 * H :].copy()


@numba.njit(cache=True, nogil=True)
def step_forward(xp, b_x, b_in, w_hh, h_prev, c_prev, h, c, ca, cb):  # type: ignore[no-untyped-def]
    """One GRU step (see the module docstring); ``c_prev`` and ``c`` are unused."""
    H, n = h.shape
    gemm(False, 1.0, w_hh, h_prev, 0.0, ca)                 # hp = W_hh h_prev
    for j in range(H):
        for b in range(n):
            r = sigmoid(xp[j, b] + b_x[j] + ca[j, b])
            z = sigmoid(xp[H + j, b] + b_x[H + j] + ca[H + j, b])
            hn = ca[2 * H + j, b] + b_in[j]
            n_ = tanh(xp[2 * H + j, b] + b_x[2 * H + j] + r * hn)
            ca[j, b], ca[H + j, b], ca[2 * H + j, b] = r, z, n_
            cb[j, b] = hn
            h[j, b] = n_ + z * (h_prev[j, b] - n_)


@numba.njit(cache=True, nogil=True)
def step_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh, d_xp, d_hp):  # type: ignore[no-untyped-def]
    """Backward of one GRU step: ``dh`` becomes the gradient for ``h_prev``."""
    H, n = dh.shape
    for j in range(H):
        for b in range(n):
            r, z, n_ = ca[j, b], ca[H + j, b], ca[2 * H + j, b]
            dh_ = dh[j, b]
            da_z = dh_ * (h_prev[j, b] - n_) * z * (ONE - z)
            da_n = dh_ * (ONE - z) * (ONE - n_ * n_)
            da_r = da_n * cb[j, b] * r * (ONE - r)
            d_xp[j, b], d_xp[H + j, b], d_xp[2 * H + j, b] = da_r, da_z, da_n
            d_hp[j, b], d_hp[H + j, b], d_hp[2 * H + j, b] = da_r, da_z, da_n * r
            dh[j, b] = z * dh_
    gemm(True, 1.0, w_hh, d_hp, 1.0, dh)                    # dh_prev = z ⊙ dh + W_hhᵀ d_hp


KIND = register(3, step_forward, step_backward)

GRU_CELL = CellSpec(
    name="gru",
    kind=KIND,
    num_gates=3,
    state_names=("h",),
    cache_type=GRUCache,
    cache_rows=(3, 1),
    separate_hidden_grad=True,
    split_bias=split_bias,
    options={},
)
