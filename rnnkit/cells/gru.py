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

from rnnkit._types import Array
from rnnkit.cells._spec import (
    KERNEL_OPTIONS,
    ONE,
    CellSpec,
    gates_product,
    gates_product_t,
    register,
    row,
    sigmoid,
    tanh,
)


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


@numba.njit(**KERNEL_OPTIONS)
def step_forward(xp, b_x, b_in, w_hh, w_hr, p, h_prev, c_prev, h, c, ca, cb, u0, u1, w_pack):  # type: ignore[no-untyped-def]
    """One GRU step for units ``u0 .. u1-1`` (see the module docstring); ``c_prev`` and ``c`` are unused."""
    H, n = h.shape
    gates_product(w_hh, 3, H, u0, u1, h_prev, ca)           # hp = W_hh h_prev
    for gate in range(2):                                   # r, z = σ(xp + b_x + hp): one short loop per row
        for r in range(gate * H + u0, gate * H + u1):
            a, x, bias = row(ca, r), row(xp, r), b_x[r]
            for b in range(n):
                a[b] = sigmoid(x[b] + bias + a[b])
    for j in range(u0, u1):
        r_j, z_j, a_n = row(ca, j), row(ca, H + j), row(ca, 2 * H + j)
        x_n, b_n, b_hn = row(xp, 2 * H + j), b_x[2 * H + j], b_in[j]
        h_prev_j, hn_j, h_j = row(h_prev, j), row(cb, j), row(h, j)
        for b in range(n):
            hn = a_n[b] + b_hn
            n_ = tanh(x_n[b] + b_n + r_j[b] * hn)
            a_n[b] = n_
            hn_j[b] = hn
            h_j[b] = n_ + z_j[b] * (h_prev_j[b] - n_)


@numba.njit(**KERNEL_OPTIONS)
def step_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh_t, w_hr, p, d_xp, d_hp, dp, u0, u1, dh_prev,  # type: ignore[no-untyped-def]
    w_pack_t, dx):
    """Backward of one GRU step for units ``u0 .. u1-1``: ``dh_prev`` receives their share of the
    gradient for ``h_prev`` (the direct path ``z ⊙ dh`` of these units, and ``W_hhᵀ d_hp``)."""
    H, n = dh.shape
    for j in range(u0, u1):
        g_r, g_z, g_n, hn_j = row(ca, j), row(ca, H + j), row(ca, 2 * H + j), row(cb, j)
        dx_r, dx_z, dx_n = row(d_xp, j), row(d_xp, H + j), row(d_xp, 2 * H + j)
        dp_r, dp_z, dp_n = row(d_hp, j), row(d_hp, H + j), row(d_hp, 2 * H + j)
        dh_j, h_prev_j = row(dh, j), row(h_prev, j)
        for b in range(n):
            r, z, n_, dh_ = g_r[b], g_z[b], g_n[b], dh_j[b]
            da_z = dh_ * (h_prev_j[b] - n_) * z * (ONE - z)
            da_n = dh_ * (ONE - z) * (ONE - n_ * n_)
            da_r = da_n * hn_j[b] * r * (ONE - r)
            dx_r[b], dx_z[b], dx_n[b] = da_r, da_z, da_n
            dp_r[b], dp_z[b], dp_n[b] = da_r, da_z, da_n * r
            dh_j[b] = z * dh_                                   # the direct path, kept in dh meanwhile
    if dh_prev.shape[0] == dh.shape[0] and dh_prev.ctypes.data == dh.ctypes.data:
        gates_product_t(w_hh_t, 3, H, u0, u1, d_hp, 1.0, dh)      # dh_prev = z ⊙ dh + W_hhᵀ d_hp
    else:
        gates_product_t(w_hh_t, 3, H, u0, u1, d_hp, 0.0, dh_prev)
        for j in range(u0, u1):
            out, direct = row(dh_prev, j), row(dh, j)
            for b in range(n):
                out[b] += direct[b]


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
