"""The LSTM cell: PyTorch's equations and gate order (i, f, g, o), feature-major, compiled.

One step, in the symbols of the code below (``ca`` holds the gate pre-activations, then the gates;
``j`` a hidden unit, ``b`` a sequence of the batch)::

    a = W_hh h_prev + xp + b_x           xp = W_ih x (hoisted out of the time loop),  b_x = b_ih + b_hh
    i = σ(a[j])      f = σ(a[H+j])       g = tanh(a[2H+j])        o = σ(a[3H+j])
    c = f ⊙ c_prev + i ⊙ g
    h = o ⊙ tanh(c)                      (cache: ca = [i; f; g; o], cb = tanh(c))

Backward, given dh = ∂L/∂h and dc = ∂L/∂c (both carried from the step after, dh already holding
this step's output gradient)::

    dc     += dh ⊙ o ⊙ (1 - tanh(c)²)
    da[j]    = dc ⊙ g ⊙ i(1-i)           da[H+j]  = dc ⊙ c_prev ⊙ f(1-f)
    da[2H+j] = dc ⊙ i ⊙ (1-g²)           da[3H+j] = dh ⊙ tanh(c) ⊙ o(1-o)        (d_xp = d_hp = da)
    dc_prev  = dc ⊙ f
    dh_prev  = W_hhᵀ da

Forgetting either carried gradient (dh *or* dc) is the classic LSTM backprop bug; the gradient
checks in ``tests/`` catch it.  Each step is one matrix product and one pass over the ``(H, n)``
units that reads and writes every gate once.
"""

from __future__ import annotations

from typing import NamedTuple

import numba

from rnnkit._blas import gemm
from rnnkit._types import Array
from rnnkit.cells._spec import KERNEL_OPTIONS, ONE, CellSpec, register, row, sigmoid, tanh


class LSTMCache(NamedTuple):
    """What one LSTM step keeps for its backward pass."""

    gates: Array   # (4H, B): i, f, g, o after their nonlinearities
    tanh_c: Array  # (H, B)


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
    """Both biases add straight into the pre-activations."""
    return b_ih + b_hh, b_ih[:0]


@numba.njit(**KERNEL_OPTIONS)
def step_forward(xp, b_x, b_in, w_hh, h_prev, c_prev, h, c, ca, cb):  # type: ignore[no-untyped-def]
    """One LSTM step (see the module docstring); ``b_in`` is unused."""
    H, n = h.shape
    gemm(False, 1.0, w_hh, h_prev, 0.0, ca)                 # a = W_hh h_prev
    for j in range(H):
        a_i, a_f, a_g, a_o = row(ca, j), row(ca, H + j), row(ca, 2 * H + j), row(ca, 3 * H + j)
        x_i, x_f, x_g, x_o = row(xp, j), row(xp, H + j), row(xp, 2 * H + j), row(xp, 3 * H + j)
        b_i, b_f, b_g, b_o = b_x[j], b_x[H + j], b_x[2 * H + j], b_x[3 * H + j]
        c_prev_j, c_j, tanh_c_j, h_j = row(c_prev, j), row(c, j), row(cb, j), row(h, j)
        for b in range(n):
            i = sigmoid(a_i[b] + x_i[b] + b_i)
            f = sigmoid(a_f[b] + x_f[b] + b_f)
            g = tanh(a_g[b] + x_g[b] + b_g)
            o = sigmoid(a_o[b] + x_o[b] + b_o)
            c_new = f * c_prev_j[b] + i * g
            tanh_c = tanh(c_new)
            a_i[b], a_f[b], a_g[b], a_o[b] = i, f, g, o
            c_j[b] = c_new
            tanh_c_j[b] = tanh_c
            h_j[b] = o * tanh_c


@numba.njit(**KERNEL_OPTIONS)
def step_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh, d_xp, d_hp):  # type: ignore[no-untyped-def]
    """Backward of one LSTM step: ``(dh, dc)`` become the gradients for ``(h_prev, c_prev)``."""
    H, n = dh.shape
    for j in range(H):
        g_i, g_f, g_g, g_o = row(ca, j), row(ca, H + j), row(ca, 2 * H + j), row(ca, 3 * H + j)
        d_i, d_f, d_g, d_o = row(d_xp, j), row(d_xp, H + j), row(d_xp, 2 * H + j), row(d_xp, 3 * H + j)
        dh_j, dc_j, c_prev_j, tanh_c_j = row(dh, j), row(dc, j), row(c_prev, j), row(cb, j)
        for b in range(n):
            i, f, g, o, tanh_c = g_i[b], g_f[b], g_g[b], g_o[b], tanh_c_j[b]
            dc_ = dc_j[b] + dh_j[b] * o * (ONE - tanh_c * tanh_c)
            d_i[b] = dc_ * g * i * (ONE - i)
            d_f[b] = dc_ * c_prev_j[b] * f * (ONE - f)
            d_g[b] = dc_ * i * (ONE - g * g)
            d_o[b] = dh_j[b] * tanh_c * o * (ONE - o)
            dc_j[b] = dc_ * f
    gemm(True, 1.0, w_hh, d_xp, 0.0, dh)                    # dh_prev = W_hhᵀ da


KIND = register(2, step_forward, step_backward)

LSTM_CELL = CellSpec(
    name="lstm",
    kind=KIND,
    num_gates=4,
    state_names=("h", "c"),
    cache_type=LSTMCache,
    cache_rows=(4, 1),
    separate_hidden_grad=False,
    split_bias=split_bias,
    options={},
)
