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

With a projection (``proj_size`` P > 0, PyTorch's LSTM with ``weight_hr``) the state ``h`` is
``(P, n)``, ``W_hh`` is ``(4H, P)``, and the unprojected output ĥ is kept in the cache::

    ĥ = o ⊙ tanh(c)                      h = W_hr ĥ          (cache: cb = [tanh(c); ĥ])
    dĥ = W_hrᵀ dh                        (then as above with dĥ in place of dh; the loop keeps each
                                          step's dh to form dW_hr = Σ_t dh_t ĥ_tᵀ after the last step)

Forgetting either carried gradient (dh *or* dc) is the classic LSTM backprop bug; the gradient
checks in ``tests/`` catch it.  Each step is one matrix product and one pass over the ``(H, n)``
units that reads and writes every gate once.
"""

from __future__ import annotations

from typing import NamedTuple

import numba

from rnnkit._blas import gemm
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


class LSTMCache(NamedTuple):
    """What one LSTM step keeps for its backward pass."""

    gates: Array   # (4H, B): i, f, g, o after their nonlinearities
    tanh_c: Array  # (H, B)


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
    """Both biases add straight into the pre-activations."""
    return b_ih + b_hh, b_ih[:0]


@numba.njit(**KERNEL_OPTIONS)
def step_forward(xp, b_x, b_in, w_hh, w_hr, p, h_prev, c_prev, h, c, ca, cb, u0, u1):  # type: ignore[no-untyped-def]
    """One LSTM step for units ``u0 .. u1-1`` (see the module docstring); ``b_in`` is unused,
    ``w_hr`` empty without projection (with one, always all units)."""
    H, n = c.shape
    project = w_hr.shape[0] > 0
    out = cb[H:] if project else h                          # ĥ: the cache's second half, or h itself
    gates_product(w_hh, 4, H, u0, u1, h_prev, ca)           # a = W_hh h_prev
    # Two passes, each a loop over few rows, which the compiler vectorises fully (one pass over
    # all eleven rows a unit touches is slower: too many possibly-overlapping rows to check).
    for gate in range(4):                                   # i, f, g, o = σ, σ, tanh, σ of a + xp + b_x
        for r in range(gate * H + u0, gate * H + u1):
            a, x, bias = row(ca, r), row(xp, r), b_x[r]
            if gate == 2:
                for b in range(n):
                    a[b] = tanh(a[b] + x[b] + bias)
            else:
                for b in range(n):
                    a[b] = sigmoid(a[b] + x[b] + bias)
    for j in range(u0, u1):
        i, f, g, o = row(ca, j), row(ca, H + j), row(ca, 2 * H + j), row(ca, 3 * H + j)
        c_prev_j, c_j, tanh_c_j, h_j = row(c_prev, j), row(c, j), row(cb, j), row(out, j)
        for b in range(n):
            c_new = f[b] * c_prev_j[b] + i[b] * g[b]            # c = f ⊙ c_prev + i ⊙ g
            tanh_c = tanh(c_new)
            c_j[b] = c_new
            tanh_c_j[b] = tanh_c
            h_j[b] = o[b] * tanh_c                              # h = o ⊙ tanh(c)   (ĥ with projection)
    if project:
        gemm(False, 1.0, w_hr, out, 0.0, h)                 # h = W_hr ĥ


@numba.njit(**KERNEL_OPTIONS)
def step_backward(dh, dc, h_prev, c_prev, h, ca, cb, w_hh_t, w_hr, p, d_xp, d_hp, dp, u0, u1, dh_prev):  # type: ignore[no-untyped-def]
    """Backward of one LSTM step for units ``u0 .. u1-1``: ``dc`` becomes the gradient for ``c_prev``,
    ``dh_prev`` receives these units' share of the gradient for ``h_prev``."""
    H, n = dc.shape
    d_out = dh
    if w_hr.shape[0] > 0:  # dĥ = W_hrᵀ dh, written where d_o goes (each entry is read before d_o overwrites it)
        d_out = d_xp[3 * H :]
        gemm(True, 1.0, w_hr, dh, 0.0, d_out)
    for j in range(u0, u1):                                 # the gradients of the gates' outputs
        i, f, g, o = row(ca, j), row(ca, H + j), row(ca, 2 * H + j), row(ca, 3 * H + j)
        d_i, d_f, d_g, d_o = row(d_xp, j), row(d_xp, H + j), row(d_xp, 2 * H + j), row(d_xp, 3 * H + j)
        dh_j, dc_j, c_prev_j, tanh_c_j = row(d_out, j), row(dc, j), row(c_prev, j), row(cb, j)
        for b in range(n):
            tanh_c = tanh_c_j[b]
            dc_ = dc_j[b] + dh_j[b] * o[b] * (ONE - tanh_c * tanh_c)
            d_i[b] = dc_ * g[b]
            d_f[b] = dc_ * c_prev_j[b]
            d_g[b] = dc_ * i[b]
            d_o[b] = dh_j[b] * tanh_c
            dc_j[b] = dc_ * f[b]                                # dc_prev = dc ⊙ f
    for gate in range(4):                                   # through the nonlinearities: σ' = y(1-y), tanh' = 1-y²
        for r in range(gate * H + u0, gate * H + u1):
            d, y = row(d_xp, r), row(ca, r)
            if gate == 2:
                for b in range(n):
                    d[b] *= ONE - y[b] * y[b]
            else:
                for b in range(n):
                    d[b] *= y[b] * (ONE - y[b])
    gates_product_t(w_hh_t, 4, H, u0, u1, d_xp, 0.0, dh_prev)    # dh_prev = W_hhᵀ da


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
