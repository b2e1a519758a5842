"""The vanilla (Elman) RNN cell: PyTorch's ``nn.RNN`` equations, feature-major.

One step, in the symbols of the code below::

    h = f(xp + W_hh h_prev)              xp = W_ih x + b_ih + b_hh, hoisted out of the time loop
                                         f = tanh, or relu with nonlinearity="relu"

Backward, given dh = ∂L/∂h (carried from the step after, plus this step's output gradient)::

    da      = dh ⊙ f'(·)                 tanh: 1 - h²;  relu: [h > 0]      (= d_xp = d_hp)
    dh_prev = W_hhᵀ da
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import numpy as np

from rnnkit._types import Array
from rnnkit.cells._spec import CellSpec, tanh_grad


class RNNCache(NamedTuple):
    """An RNN step needs nothing beyond its output ``h`` for its backward pass."""


def split_bias(b_ih: Array, b_hh: Array) -> tuple[Array, None]:
    """Both biases add straight into the pre-activation, so both are hoisted."""
    return b_ih + b_hh, None


def forward(
    xp: Array,
    prev: tuple[Array],
    new: tuple[Array],
    cache: RNNCache,
    w_hh: Array,
    b_in: None,
    scratch: Array,
    *,
    nonlinearity: str = "tanh",
) -> None:
    """One RNN step; writes ``new = (h,)``."""
    (h_prev,) = prev
    (h,) = new
    a = scratch
    np.matmul(w_hh, h_prev, out=a)        # a = W_hh h_prev
    a += xp                               #   + xp
    if nonlinearity == "tanh":
        np.tanh(a, out=h)                 # h = tanh(a)
    else:
        np.maximum(a, 0.0, out=h)         # h = relu(a)


def backward(
    d_state: tuple[Array],
    prev: tuple[Array],
    new: tuple[Array],
    cache: RNNCache,
    w_hh: Array,
    d_xp: Array,
    d_hp: Array,
    scratch: Array,
    *,
    nonlinearity: str = "tanh",
) -> None:
    """Backward of one RNN step; turns ``d_state = (dh,)`` into the gradient for ``h_prev``."""
    (dh,) = d_state
    (h,) = new
    np.copyto(d_xp, dh)
    if nonlinearity == "tanh":
        tanh_grad(h, d_xp, scratch)       # da = dh ⊙ (1 - h²)
    else:
        np.greater(h, 0.0, out=scratch)   # da = dh ⊙ [h > 0]
        d_xp *= scratch
    np.matmul(w_hh.T, d_xp, out=dh)       # dh_prev = W_hhᵀ da


def _spec(nonlinearity: str) -> CellSpec:
    return CellSpec(
        name=f"rnn_{nonlinearity}",
        num_gates=1,
        state_names=("h",),
        cache_type=RNNCache,
        cache_rows=(),
        scratch_rows=1,
        separate_hidden_grad=False,
        split_bias=split_bias,
        forward=partial(forward, nonlinearity=nonlinearity),
        backward=partial(backward, nonlinearity=nonlinearity),
        options={"nonlinearity": nonlinearity},
    )


RNN_TANH_CELL = _spec("tanh")
RNN_RELU_CELL = _spec("relu")
