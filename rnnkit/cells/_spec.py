"""What the one BPTT loop (:mod:`rnnkit.unroll`) needs to know about a cell.

A cell is a pair of pure step functions plus a few facts about its shapes.  Everything is
feature-major: one step's hidden state is ``(H, B)``, its gate pre-activations ``(G*H, B)``.

``forward(xp, prev, new, cache, w_hh, b_in, scratch) -> None``
    ``xp`` ``(G*H, B)`` is the input side of the gate pre-activations, already computed for all
    steps by one matrix product (``W_ih x + b_x``, where ``b_x`` is the part of the biases that can
    be hoisted).  ``prev`` is the tuple of previous states, ``new`` the tuple of views the new
    states are written into, ``cache`` a NamedTuple of views the step writes what its backward
    needs into.  The step computes ``W_hh @ h_prev`` itself: that product is the one piece of
    work that cannot leave the time loop.

``backward(d_state, prev, new, cache, w_hh, d_xp, d_hp, scratch) -> None``
    ``d_state`` is the tuple of gradients with respect to the new states (for ``h`` it already
    includes this step's output gradient); the step overwrites it *in place* with the gradients
    with respect to ``prev``.  It writes the gradient with respect to ``xp`` into ``d_xp`` and
    with respect to the hidden projection ``W_hh h_prev + b_hh`` into ``d_hp`` (the same array
    as ``d_xp`` for cells where the two coincide).  Weight gradients are *not* formed per step:
    the loop forms them after the last step as one matrix product each.

Writing into preallocated views (``out=``) rather than returning new arrays is what keeps the
time loop free of allocations; the functions are still pure in the sense that matters: all they
read and write is passed in, and they keep nothing between calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from rnnkit._types import Array


@dataclass(frozen=True)
class CellSpec:
    """The facts about one cell kind that the generic time loop uses."""

    name: str
    num_gates: int
    """G: rows of ``weight_ih`` / ``weight_hh`` are ``G*H`` (gates stacked in PyTorch's order)."""
    state_names: tuple[str, ...]
    """``("h",)`` or ``("h", "c")``; the first state is always the output ``h``."""
    cache_type: type[Any]
    """The cell's step-cache NamedTuple class (called with one array per field)."""
    cache_rows: tuple[int, ...]
    """Rows of each cache field in units of H (one step's field is ``(rows*H, B)``)."""
    scratch_rows: int
    """Rows (in units of H) of per-step scratch space the step functions may use."""
    separate_hidden_grad: bool
    """True when ``d(W_hh h + b_hh)`` differs from ``d(xp)`` (GRU: the reset gate sits between)."""
    split_bias: Callable[[Array, Array], tuple[Array, Array | None]]
    """``(b_ih, b_hh) -> (b_x, b_in)``: the hoisted bias added to ``xp`` and the part kept inside."""
    forward: Callable[..., None]
    backward: Callable[..., None]
    options: dict[str, Any]


def sigmoid(x: Array, out: Array) -> Array:
    """σ(x) = ½·tanh(½x) + ½, written into ``out`` (may be ``x``).

    The tanh form never overflows (``1/(1+exp(-x))`` warns for x < -88 in float32) and agrees
    with it to a few units in the last place.
    """
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    np.add(out, 0.5, out=out)
    return out


def sigmoid_grad(s: Array, d: Array, tmp: Array) -> None:
    """``d *= σ'(a)`` given ``s = σ(a)``: σ' = s - s², formed in ``tmp``."""
    np.multiply(s, s, out=tmp)
    np.subtract(s, tmp, out=tmp)
    d *= tmp


def tanh_grad(y: Array, d: Array, tmp: Array) -> None:
    """``d *= tanh'(a)`` given ``y = tanh(a)``: tanh' = 1 - y², formed in ``tmp``."""
    np.multiply(y, y, out=tmp)
    np.subtract(1.0, tmp, out=tmp)
    d *= tmp


class MixedGates(NamedTuple):
    """Constants that let one ``tanh`` call compute a block of σ and tanh gates, and one pass differentiate it.

    With ``s = ½`` on σ rows and ``1`` on tanh rows, ``σ(a) = ½ tanh(½ a) + ½`` and ``tanh(a) = 1 tanh(1 a) + 0``,
    so ``y = s ⊙ tanh(s ⊙ a) + offset``.  Backward, ``σ' = y (1 - y)`` and ``tanh' = 1 - y²`` are both
    ``p + y ⊙ (q - y)``, with ``(p, q) = (0, 1)`` on σ rows and ``(1, 0)`` on tanh rows.  Every array is a full
    ``(rows, B)`` block, because same-shape ufuncs are about twice as fast as broadcasting a column.
    """

    scale: Array   # s
    offset: Array  # ½ on σ rows, 0 on tanh rows
    p: Array
    q: Array


def mixed_gates(pattern: str, H: int, B: int, dtype: np.dtype[Any]) -> MixedGates:
    """The :class:`MixedGates` constants for gate blocks ``pattern`` (one letter per block of H rows: "s" for σ,
    "t" for tanh; the LSTM's i, f, g, o is "ssts") and ``B`` columns, read-only.

    Built once per power-of-two width and cached; other widths (a batch whose sequences end at different
    steps works on ever fewer columns) are views of the next wider block, so memory stays bounded.
    """
    width = 1 << max(0, B - 1).bit_length()
    block = _mixed_gates_block(pattern, H, width, np.dtype(dtype))
    return block if width == B else MixedGates(*(a[:, :B] for a in block))


@functools.lru_cache(maxsize=64)
def _mixed_gates_block(pattern: str, H: int, width: int, dtype: np.dtype[Any]) -> MixedGates:
    sig = np.repeat(np.array([c == "s" for c in pattern], dtype=dtype), H)[:, None] * np.ones((1, width), dtype)
    arrays = MixedGates(scale=1.0 - 0.5 * sig, offset=0.5 * sig, p=1.0 - sig, q=sig)
    for a in arrays:
        a.flags.writeable = False
    return arrays
