"""The LSTM cell: PyTorch's equations and gate order (i, f, g, o), feature-major.

One step, in the symbols of the code below (``a`` holds the gate pre-activations, then the gates)::

    a = xp + W_hh h_prev                 xp = W_ih x + b_ih + b_hh, hoisted out of the time loop
    i = σ(a[0:H])    f = σ(a[H:2H])      g = tanh(a[2H:3H])      o = σ(a[3H:4H])
    c = f ⊙ c_prev + i ⊙ g
    h = o ⊙ tanh(c)

The four gate nonlinearities run as one pass over the whole ``(4H, B)`` block: with ``s = ½`` on the
σ rows and ``1`` on the g rows, ``σ(a) = ½ tanh(½a) + ½`` and ``tanh(a) = 1·tanh(1·a) + 0``, so
``[i; f; g; o] = s ⊙ tanh(s ⊙ a) + (1 - s)`` (:class:`~rnnkit.cells._spec.MixedGates`): one tanh
call instead of three σ/tanh calls on strided pieces, which is what a step's time goes to at small H.

Backward, given dh = ∂L/∂h and dc = ∂L/∂c (both carried from the step after, dh already holding
this step's output gradient)::

    do      = dh ⊙ tanh(c)
    dc     += dh ⊙ o ⊙ (1 - tanh(c)²)
    di, df, dg = dc ⊙ g,  dc ⊙ c_prev,  dc ⊙ i
    dc_prev = dc ⊙ f
    da      = [di; df; dg; do] ⊙ [i(1-i); f(1-f); 1-g²; o(1-o)]      (= d_xp = d_hp; one pass, p + y ⊙ (q - y))
    dh_prev = W_hhᵀ da

Forgetting either carried gradient (dh *or* dc) is the classic LSTM backprop bug; the gradient
checks in ``tests/`` catch it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnkit._types import Array
from rnnkit.cells._spec import CellSpec, mixed_gates, tanh_grad


class LSTMCache(NamedTuple):
    """What one LSTM step keeps for its backward pass."""

    gates: Array   # (4H, B): i, f, g, o after their nonlinearities
    tanh_c: Array  # (H, B)


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, None]:
    """Both biases add straight into the pre-activations, so both are hoisted."""
    return b_ih + b_hh, None


def forward(
    xp: Array,
    prev: tuple[Array, Array],
    new: tuple[Array, Array],
    cache: LSTMCache,
    w_hh: Array,
    b_in: None,
    scratch: Array,
) -> None:
    """One LSTM step; writes ``new = (h, c)`` and ``cache`` (see the module docstring)."""
    h_prev, c_prev = prev
    h, c = new
    H = h.shape[0]
    a, tanh_c = cache
    i, f, g, o = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
    k = mixed_gates("ssts", H, a.shape[1], a.dtype)
    np.matmul(w_hh, h_prev, out=a)        # a = W_hh h_prev
    a += xp                               #   + xp
    a *= k.scale                          # i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o):
    np.tanh(a, out=a)                     #   s ⊙ tanh(s ⊙ a) + (1 - s)
    a *= k.scale
    a += k.offset
    np.multiply(f, c_prev, out=c)         # c = f ⊙ c_prev
    ig = scratch[:H]
    np.multiply(i, g, out=ig)             #     + i ⊙ g
    c += ig
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)         # h = o ⊙ tanh(c)


def backward(
    d_state: tuple[Array, Array],
    prev: tuple[Array, Array],
    new: tuple[Array, Array],
    cache: LSTMCache,
    w_hh: Array,
    d_xp: Array,
    d_hp: Array,
    scratch: Array,
) -> None:
    """Backward of one LSTM step; turns ``d_state = (dh, dc)`` into the gradients for ``prev``."""
    dh, dc = d_state
    _, c_prev = prev
    gates, tanh_c = cache
    H = dh.shape[0]
    i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    di, df, dg, do = d_xp[:H], d_xp[H : 2 * H], d_xp[2 * H : 3 * H], d_xp[3 * H :]
    tmp, tmp4 = scratch[:H], scratch[: 4 * H]
    np.multiply(dh, tanh_c, out=do)       # do = dh ⊙ tanh(c)
    np.multiply(dh, o, out=df)            # dc += dh ⊙ o ⊙ (1 - tanh(c)²)   (df as a temporary)
    tanh_grad(tanh_c, df, tmp)
    dc += df
    np.multiply(dc, g, out=di)            # di = dc ⊙ g
    np.multiply(dc, c_prev, out=df)       # df = dc ⊙ c_prev
    np.multiply(dc, i, out=dg)            # dg = dc ⊙ i
    dc *= f                               # dc_prev = dc ⊙ f
    k = mixed_gates("ssts", H, dh.shape[1], dh.dtype)
    np.subtract(k.q, gates, out=tmp4)     # da = [di; df; dg; do] ⊙ (p + y ⊙ (q - y)):
    tmp4 *= gates                         #   σ' = y(1-y) on i, f, o;  tanh' = 1 - y² on g
    tmp4 += k.p
    d_xp *= tmp4
    np.matmul(w_hh.T, d_xp, out=dh)       # dh_prev = W_hhᵀ da


LSTM_CELL = CellSpec(
    name="lstm",
    num_gates=4,
    state_names=("h", "c"),
    cache_type=LSTMCache,
    cache_rows=(4, 1),
    scratch_rows=4,
    separate_hidden_grad=False,
    split_bias=split_bias,
    forward=forward,
    backward=backward,
    options={},
)
