"""The vanilla (Elman) RNN cell: PyTorch's ``nn.RNN`` equations, feature-major, compiled.

One step, in the symbols of the code below (``j`` a hidden unit, ``b`` a sequence)::

    h = f(W_hh h_prev + xp + b_x)        xp = W_ih x (hoisted),  b_x = b_ih + b_hh
                                         f = tanh, or relu with nonlinearity="relu"

Backward, given dh = ∂L/∂h (carried from the step after, plus this step's output gradient)::

    da      = dh ⊙ f'(·)                 tanh: 1 - h²;  relu: [h > 0]      (= d_xp = d_hp)
    dh_prev = W_hhᵀ da

The step needs nothing beyond its output ``h`` for its backward pass: its cache is empty.
"""

from __future__ import annotations

from typing import NamedTuple

import numba

from rnnkit._types import Array
from rnnkit.cells._spec import (
    KERNEL_OPTIONS,
    ONE,
    ZERO,
    CellKind,
    CellSpec,
    gates_product,
    gates_product_t,
    register,
    row,
    tanh,
)


class RNNCache(NamedTuple):
    """An RNN step needs nothing beyond its output ``h`` for its backward pass."""


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
    """Both biases add straight into the pre-activation."""
    return b_ih + b_hh, b_ih[:0]


@numba.njit(**KERNEL_OPTIONS)
def tanh_forward(xp, b_x, b_in, w_hh, w_hr, p, h_prev, c_prev, h, c, ca, cb, u0, u1, w_pack):  # type: ignore[no-untyped-def]
    """One RNN step with f = tanh for units ``u0 .. u1-1``; only ``h`` is written."""
    H, n = h.shape
    gates_product(w_hh, 1, H, u0, u1, h_prev, h)            # a = W_hh h_prev
    for j in range(u0, u1):
        h_j, x_j, b_j = row(h, j), row(xp, j), b_x[j]
        for b in range(n):
            h_j[b] = tanh(h_j[b] + x_j[b] + b_j)


@numba.njit(**KERNEL_OPTIONS)
def tanh_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh_t, w_hr, p, d_xp, d_hp, dp, u0, u1, dh_prev,  # type: ignore[no-untyped-def]
    w_pack_t, dx):
    """Backward of one tanh RNN step for units ``u0 .. u1-1``: their share of the gradient for ``h_prev``."""
    H, n = dh.shape
    for j in range(u0, u1):
        d_j, dh_j, h_j = row(d_xp, j), row(dh, j), row(h, j)
        for b in range(n):
            d_j[b] = dh_j[b] * (ONE - h_j[b] * h_j[b])
    gates_product_t(w_hh_t, 1, H, u0, u1, d_xp, 0.0, dh_prev)   # dh_prev = W_hhᵀ da


@numba.njit(**KERNEL_OPTIONS)
def relu_forward(xp, b_x, b_in, w_hh, w_hr, p, h_prev, c_prev, h, c, ca, cb, u0, u1, w_pack):  # type: ignore[no-untyped-def]
    """One RNN step with f = relu for units ``u0 .. u1-1``; only ``h`` is written."""
    H, n = h.shape
    gates_product(w_hh, 1, H, u0, u1, h_prev, h)
    for j in range(u0, u1):
        h_j, x_j, b_j = row(h, j), row(xp, j), b_x[j]
        for b in range(n):
            a = h_j[b] + x_j[b] + b_j
            h_j[b] = a if a > ZERO else ZERO


@numba.njit(**KERNEL_OPTIONS)
def relu_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh_t, w_hr, p, d_xp, d_hp, dp, u0, u1, dh_prev,  # type: ignore[no-untyped-def]
    w_pack_t, dx):
    """Backward of one relu RNN step for units ``u0 .. u1-1``: their share of the gradient for ``h_prev``."""
    H, n = dh.shape
    for j in range(u0, u1):
        d_j, dh_j, h_j = row(d_xp, j), row(dh, j), row(h, j)
        for b in range(n):
            d_j[b] = dh_j[b] if h_j[b] > ZERO else ZERO
    gates_product_t(w_hh_t, 1, H, u0, u1, d_xp, 0.0, dh_prev)


TANH_KIND = register(0, tanh_forward, tanh_backward)
RELU_KIND = register(1, relu_forward, relu_backward)


def _spec(nonlinearity: str, kind: CellKind) -> CellSpec:
    return CellSpec(
        name=f"rnn_{nonlinearity}",
        kind=kind,
        num_gates=1,
        state_names=("h",),
        cache_type=RNNCache,
        cache_rows=(0, 0),
        separate_hidden_grad=False,
        split_bias=split_bias,
        options={"nonlinearity": nonlinearity},
    )


RNN_TANH_CELL = _spec("tanh", TANH_KIND)
RNN_RELU_CELL = _spec("relu", RELU_KIND)
