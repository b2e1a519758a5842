"""The GRU cell: PyTorch's equations and gate order (r, z, n), feature-major.

PyTorch applies the reset gate to the *whole* hidden part of the candidate, bias included, so
``b_hn`` cannot be hoisted with the other biases.  One step, in the symbols of the code below::

    hp = W_hh h_prev                     xp = W_ih x + b_ih + [b_hr; b_hz; 0], hoisted
    r  = σ(xp_r + hp_r)
    z  = σ(xp_z + hp_z)
    hn = hp_n + b_hn
    n  = tanh(xp_n + r ⊙ hn)
    h  = n + z ⊙ (h_prev - n)            (= (1 - z) ⊙ n + z ⊙ h_prev)

Backward, given dh = ∂L/∂h (carried, plus this step's output gradient)::

    dz  = dh ⊙ (h_prev - n)              da_z = dz ⊙ z(1-z)
    dn  = dh ⊙ (1 - z)                   da_n = dn ⊙ (1-n²)     (= d_xp_n)
    dr  = da_n ⊙ hn                      da_r = dr ⊙ r(1-r)
    d_xp = [da_r; da_z; da_n]            d_hp = [da_r; da_z; da_n ⊙ r]
    dh_prev = z ⊙ dh + W_hhᵀ d_hp
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnkit._types import Array
from rnnkit.cells._spec import CellSpec, sigmoid, sigmoid_grad, tanh_grad


class GRUCache(NamedTuple):
    """What one GRU step keeps for its backward pass."""

    gates: Array  # (3H, B): r, z, n after their nonlinearities
    hn: Array     # (H, B): W_hn h_prev + b_hn, the part the reset gate scales


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
    """Hoist ``b_ih`` and ``b_hr, b_hz``; keep ``b_hn`` (as a column) inside the step."""
    H = b_hh.shape[0] // 3
    b_x = b_ih.copy()
    b_x[: 2 * H] += b_hh[: 2 * H]
    return b_x, b_hh[2 * H :, None]


def forward(
    xp: Array,
    prev: tuple[Array],
    new: tuple[Array],
    cache: GRUCache,
    w_hh: Array,
    b_in: Array,
    scratch: Array,
) -> None:
    """One GRU step; writes ``new = (h,)`` and ``cache`` (see the module docstring)."""
    (h_prev,) = prev
    (h,) = new
    gates, hn = cache
    H = h.shape[0]
    r, z, n = gates[:H], gates[H : 2 * H], gates[2 * H :]
    hp = scratch
    np.matmul(w_hh, h_prev, out=hp)                       # hp = W_hh h_prev
    np.add(xp[: 2 * H], hp[: 2 * H], out=gates[: 2 * H])  # r, z = σ(xp_r + hp_r), σ(xp_z + hp_z)
    sigmoid(gates[: 2 * H], out=gates[: 2 * H])
    np.add(hp[2 * H :], b_in, out=hn)                     # hn = hp_n + b_hn
    np.multiply(r, hn, out=n)                             # n = tanh(xp_n + r ⊙ hn)
    n += xp[2 * H :]
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)                         # h = n + z ⊙ (h_prev - n)
    h *= z
    h += n


def backward(
    d_state: tuple[Array],
    prev: tuple[Array],
    new: tuple[Array],
    cache: GRUCache,
    w_hh: Array,
    d_xp: Array,
    d_hp: Array,
    scratch: Array,
) -> None:
    """Backward of one GRU step; turns ``d_state = (dh,)`` into the gradient for ``h_prev``."""
    (dh,) = d_state
    (h_prev,) = prev
    gates, hn = cache
    H = dh.shape[0]
    r, z, n = gates[:H], gates[H : 2 * H], gates[2 * H :]
    da_r, da_z, da_n = d_xp[:H], d_xp[H : 2 * H], d_xp[2 * H :]
    tmp, tmp2 = scratch[:H], scratch[: 2 * H]
    np.subtract(h_prev, n, out=da_z)              # dz = dh ⊙ (h_prev - n)
    da_z *= dh
    np.subtract(1.0, z, out=da_n)                 # dn = dh ⊙ (1 - z)
    da_n *= dh
    tanh_grad(n, da_n, tmp)                       # da_n = dn ⊙ (1 - n²)
    np.multiply(da_n, hn, out=da_r)               # dr = da_n ⊙ hn
    sigmoid_grad(gates[: 2 * H], d_xp[: 2 * H], tmp2)   # da_r, da_z through σ
    np.copyto(d_hp[: 2 * H], d_xp[: 2 * H])       # d_hp = [da_r; da_z; da_n ⊙ r]
    np.multiply(da_n, r, out=d_hp[2 * H :])
    np.multiply(dh, z, out=tmp)                   # dh_prev = z ⊙ dh + W_hhᵀ d_hp
    np.matmul(w_hh.T, d_hp, out=dh)
    dh += tmp


GRU_CELL = CellSpec(
    name="gru",
    num_gates=3,
    state_names=("h",),
    cache_type=GRUCache,
    cache_rows=(3, 1),
    scratch_rows=3,
    separate_hidden_grad=True,
    split_bias=split_bias,
    forward=forward,
    backward=backward,
    options={},
)
