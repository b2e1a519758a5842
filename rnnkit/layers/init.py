"""Weight initializers for the recurrent layers, selectable per layer.

* ``"pytorch"`` (the default for every weight): ``U(-1/sqrt(H), 1/sqrt(H))``, as ``torch.nn.RNN``.
* ``init_hh="orthogonal"``: every gate's ``(H, H)`` block of ``weight_hh`` is an orthogonal matrix
  (Saxe et al. 2014): its singular values are all 1, so repeated multiplication by it neither
  shrinks nor grows the hidden state at the start of training, which is what long lags need.
  Each gate gets its own block, as each gate is its own linear map of ``h_{t-1}``.
* ``init_ih="xavier"``: every gate's ``(H, I)`` block of ``weight_ih`` is Glorot/Xavier uniform,
  ``U(-a, a)`` with ``a = sqrt(6 / (I + H))`` (Glorot & Bengio 2010).
* ``forget_bias=b`` (LSTM only): the forget gate's bias is ``b`` (``bias_ih`` carries it,
  ``bias_hh`` is zero there), e.g. +1 so the cell remembers by default (Jozefowicz et al. 2015).

The functions draw from a caller's ``numpy.random.Generator``; the defaults draw exactly what the
layers always drew, so a seed gives the same weights as before these options existed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnkit._types import Array

INIT_HH = ("pytorch", "orthogonal")
"""Choices for a recurrent layer's ``init_hh`` (the recurrent weights ``weight_hh_l*``)."""
INIT_IH = ("pytorch", "xavier")
"""Choices for a recurrent layer's ``init_ih`` (the input weights ``weight_ih_l*``)."""


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` must be one of ``choices`` (a ValueError naming the argument otherwise)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def orthogonal(rng: np.random.Generator, n: int, dtype: Any) -> Array:
    """A random ``(n, n)`` orthogonal matrix, uniformly distributed (QR of a Gaussian, signs fixed by R's diagonal)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    # Without the sign fix, QR's convention biases the distribution (Mezzadri 2007).
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    return q.astype(dtype)


def xavier_uniform(rng: np.random.Generator, shape: tuple[int, int], dtype: Any) -> Array:
    """``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` for a ``(fan_out, fan_in)`` matrix."""
    fan_out, fan_in = shape
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def per_gate(num_gates: int, block: Any) -> Array:
    """Stack ``num_gates`` blocks made by ``block()`` along the rows: PyTorch's ``(G*H, ...)`` layout."""
    return np.concatenate([block() for _ in range(num_gates)], axis=0)
