"""The classic step-by-step RNN, LSTM and GRU API, in the textbook's column layout.

The functions, argument orders, dictionary keys and shapes are those of the well-known "build a
recurrent network step by step" exercise, so that material written for it runs unchanged.  Layout
is features × batch × time: an input sequence ``x`` is ``(n_x, m, T_x)``, one step's input ``xt``
is ``(n_x, m)``, the hidden state ``a`` is ``(n_a, m)`` per step, predictions are ``(n_y, m)`` per
step, and every bias is a column ``(n, 1)``.  Every array of one call must share one floating
dtype (float64 for gradient checks); nothing is converted silently.

This module holds no recurrent math of its own.  The gate equations live once, in
:mod:`rnnkit.cells` (the same code the fast layers run); each cell function here is an adapter
that

1. stacks the exercise's weights into PyTorch's layout (gates along rows, in PyTorch's order:
   LSTM ``i, f, g, o``, GRU ``r, z, n``) as ``W_ih`` (input side), ``W_hh`` (hidden side) and the
   biases ``b_ih``, ``b_hh``;
2. forms the input side of the pre-activations, ``xp = W_ih xt + b_x`` (``b_x`` being the part of
   the biases the cell lets us hoist, see :attr:`rnnkit.cells.CellSpec.split_bias`);
3. calls the cell's pure step function, and its backward maps the gradients back::

       dW_ih = d_xp xtᵀ       dW_hh = d_hp a_prevᵀ       db = row sums of d_xp (d_hp: hidden side)
       dxt   = W_ihᵀ d_xp     da_prev (and dc_prev) = what the cell's backward leaves in d_state

The sequence functions compute what a loop over the cell functions computes (the tests check it),
the way the fast layers do: the arguments are checked once per call, never per step; the input
side of every step is one batched product before the loop; the loop runs only the cell's step
functions; the weight gradients, the exercise's per-step ``+=``, are one product each after it.
Every cache unpacks exactly as the exercise's tuple (``a_next, a_prev, xt, parameters = cache``);
what the adapter needs beyond that rides along as attributes.  The character-model helpers
(``clip``, ``sample``, ``optimize``) also take the W1A2 exercise's hidden-bias key ``b`` (``db``).

Weights as PyTorch names them (``torch.nn.RNN`` / ``LSTM`` / ``GRU`` with one layer; every
textbook bias goes to ``bias_ih_l0`` with ``bias_hh_l0`` zero, except the GRU's ``bn_a``)::

    RNN   weight_ih_l0 = Wax                      weight_hh_l0 = Waa
          bias_ih_l0   = ba[:, 0]                 bias_hh_l0   = 0
    LSTM  W = [Wi; Wf; Wc; Wo]  (4 n_a, n_a + n_x), gates act on [a_prev; xt]
          weight_ih_l0 = W[:, n_a:]               weight_hh_l0 = W[:, :n_a]
          bias_ih_l0   = [bi; bf; bc; bo][:, 0]   bias_hh_l0   = 0
    GRU   weight_ih_l0 = [Wr[:, n_a:]; Wz[:, n_a:]; Wn_x]
          weight_hh_l0 = [Wr[:, :n_a]; Wz[:, :n_a]; Wn_a]
          bias_ih_l0   = [br; bz; bn_x][:, 0]     bias_hh_l0   = [0; 0; bn_a[:, 0]]

(Any split ``b_ih + b_hh`` of a torch bias that the textbook keeps as one works too: the
textbook bias is their sum, and its gradient equals each of theirs.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from rnnkit._types import Array, Grads, IntArray, Params
from rnnkit.cells import GRU_CELL, LSTM_CELL, RNN_RELU_CELL, RNN_TANH_CELL, CellSpec, GRUCache, LSTMCache
from rnnkit.cells.rnn import RNNCache
from rnnkit.clip import clip_grad_value
from rnnkit.losses import log_softmax, softmax
from rnnkit.unroll import Weights

Nonlinearity = Literal["tanh", "relu"]

_RNN_CELLS: dict[str, CellSpec] = {"tanh": RNN_TANH_CELL, "relu": RNN_RELU_CELL}

# The symbolic shape of every parameter, in the exercise's names.  Sizes are bound from the
# inputs (xt gives n_x and m, a_prev gives n_a) or, for n_y, from the first key that has it.
_RNN_KEYS: dict[str, tuple[str | int, ...]] = {
    "Wax": ("n_a", "n_x"),
    "Waa": ("n_a", "n_a"),
    "Wya": ("n_y", "n_a"),
    "ba": ("n_a", 1),
    "by": ("n_y", 1),
}
_LSTM_KEYS: dict[str, tuple[str | int, ...]] = {
    **{f"W{gate}": ("n_a", "n_a+n_x") for gate in "fico"},
    **{f"b{gate}": ("n_a", 1) for gate in "fico"},
    "Wy": ("n_y", "n_a"),
    "by": ("n_y", 1),
}
_GRU_KEYS: dict[str, tuple[str | int, ...]] = {
    "Wr": ("n_a", "n_a+n_x"),
    "br": ("n_a", 1),
    "Wz": ("n_a", "n_a+n_x"),
    "bz": ("n_a", 1),
    "Wn_x": ("n_a", "n_x"),
    "bn_x": ("n_a", 1),
    "Wn_a": ("n_a", "n_a"),
    "bn_a": ("n_a", 1),
    "Wy": ("n_y", "n_a"),
    "by": ("n_y", 1),
}

SAMPLE_MAX_CHARS = 50
""":func:`sample` stops after this many characters if it has not drawn a newline."""


# ------------------------------------------------------------------------------------ step caches
# Each step cache unpacks exactly as the exercise's tuple (same length, same order), e.g.
# ``(a_next, a_prev, xt, parameters) = cache``.  What the adapter needs beyond that — the cell's own
# step cache (``core``) and, for the RNN, the nonlinearity — rides along as attributes: the
# NamedTuple of the exercise's fields is subclassed without ``__slots__``, so instances have a
# ``__dict__`` for them, and ``len``, indexing and unpacking see only the exercise's fields.
class _RNNFields(NamedTuple):
    a_next: Array  # (n_a, m)
    a_prev: Array  # (n_a, m)
    xt: Array  # (n_x, m)
    parameters: Params


class RNNStepCache(_RNNFields):
    """What :func:`rnn_cell_forward` keeps: the exercise's ``(a_next, a_prev, xt, parameters)``.

    Attributes beyond the tuple: ``core`` (the cell's step cache, :mod:`rnnkit.cells.rnn`) and
    ``nonlinearity``.
    """

    core: RNNCache
    nonlinearity: str


class _LSTMFields(NamedTuple):
    a_next: Array  # (n_a, m)
    c_next: Array  # (n_a, m)
    a_prev: Array  # (n_a, m)
    c_prev: Array  # (n_a, m)
    ft: Array  # (n_a, m) forget gate
    it: Array  # (n_a, m) update (input) gate
    cct: Array  # (n_a, m) candidate cell value
    ot: Array  # (n_a, m) output gate
    xt: Array  # (n_x, m)
    parameters: Params


class LSTMStepCache(_LSTMFields):
    """What :func:`lstm_cell_forward` keeps: the exercise's ten fields
    ``(a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)``.

    Attribute beyond the tuple: ``core``, the cell's step cache (``ft, it, cct, ot`` are views of its gates).
    """

    core: LSTMCache


class _GRUFields(NamedTuple):
    a_next: Array  # (n_a, m)
    a_prev: Array  # (n_a, m)
    rt: Array  # (n_a, m) reset gate
    zt: Array  # (n_a, m) update gate
    nt: Array  # (n_a, m) candidate
    xt: Array  # (n_x, m)
    parameters: Params


class GRUStepCache(_GRUFields):
    """What :func:`gru_cell_forward` keeps, in the exercise's style: ``(a_next, a_prev, rt, zt, nt, xt, parameters)``.

    Attribute beyond the tuple: ``core``, the cell's step cache (``rt, zt, nt`` are views of its gates).
    """

    core: GRUCache


def _attach(cache: Any, **attributes: Any) -> Any:
    """Set the adapter's attributes on a step cache (see the note above :class:`RNNStepCache`)."""
    for name, value in attributes.items():
        setattr(cache, name, value)
    return cache


# ------------------------------------------------------------------------------------ validation
class _Shapes:
    """Checks arrays against symbolic shapes such as ``("n_a", "n_x")``.

    Each size (``n_x``, ``n_a``, ``m``, ...) is bound by the first array that has it (or by
    :meth:`bind`), and a later mismatch is reported with where the expected sizes came from.
    The functions check their inputs before their parameters, so a composite size such as
    ``n_a+n_x`` always has both parts bound when it is met.  The first array checked also fixes
    the dtype every other array must have.
    """

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.origins: dict[str, str] = {}
        self.dtype: np.dtype[Any] | None = None
        self.dtype_origin = ""

    def bind(self, origin: str, dtype: np.dtype[Any] | None = None, **sizes: int) -> None:
        """Fix sizes (and optionally the dtype) that come from somewhere other than a checked array."""
        self.sizes.update(sizes)
        self.origins.update(dict.fromkeys(sizes, origin))
        if dtype is not None:
            self.dtype, self.dtype_origin = dtype, origin

    def _size(self, dim: str | int) -> int | None:
        if isinstance(dim, int):
            return dim
        parts = [self.sizes.get(part) for part in dim.split("+")]
        return None if None in parts else sum(p for p in parts if p is not None)

    def check(self, name: str, value: object, dims: tuple[str | int, ...]) -> Array:
        # The common case in few operations (this runs for every array of every call): the right
        # rank, dtype and sizes (binding sizes met for the first time), finite values.  Anything
        # else is handed to _check_slowly, which finds and names the problem.
        if (not isinstance(value, np.ndarray) or value.ndim != len(dims) or value.dtype.kind != "f"
                or (self.dtype is not None and value.dtype != self.dtype)):
            return self._check_slowly(name, value, dims)
        sizes, new = self.sizes, {}
        for dim, size in zip(dims, value.shape, strict=True):
            if isinstance(dim, int):
                expected = dim
            elif dim in sizes:
                expected = sizes[dim]
            elif "+" in dim:
                expected = sum(sizes.get(part, -1) for part in dim.split("+"))
            else:
                expected = new[dim] = size
            if size != expected or size < 1:
                return self._check_slowly(name, value, dims)
        # total - total is 0 exactly when the sum is finite; a NaN or inf anywhere makes it NaN.
        # (A sum that overflows on finite values fails this test too and gets the exact check.)
        total = value.sum()
        if not (total - total == 0 or np.isfinite(value).all()):
            return self._check_slowly(name, value, dims)
        if new:
            self.bind(name, **new)
        if self.dtype is None:
            self.dtype, self.dtype_origin = value.dtype, name
        return value

    def _check_slowly(self, name: str, value: object, dims: tuple[str | int, ...]) -> Array:
        """:meth:`check` with every step spelled out, binding new sizes and naming what is wrong."""
        symbolic = "(" + ", ".join(str(d) for d in dims) + ")"
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array of shape {symbolic}, got {type(value).__name__}")
        if value.ndim != len(dims):
            raise ValueError(f"{name} must be {len(dims)}-D with shape {symbolic}, got shape {value.shape}")
        for dim, size in zip(dims, value.shape, strict=True):
            if isinstance(dim, str) and "+" not in dim and dim not in self.sizes:
                if size < 1:
                    raise ValueError(f"{name} has shape {value.shape}: {dim} must be at least 1")
                self.bind(name, **{dim: size})
        expected = tuple(self._size(d) for d in dims)
        if value.shape != expected:
            used = dict.fromkeys(p for d in dims if isinstance(d, str) for p in d.split("+"))
            sources = [f"{d} = {self.sizes[d]} from {self.origins[d]}" for d in used
                       if d in self.sizes and self.origins[d] != name]
            raise ValueError(
                f"{name} has shape {value.shape}, expected {symbolic} = {expected}"
                + (f" ({', '.join(sources)})" if sources else "")
            )
        if value.dtype.kind != "f":
            raise ValueError(f"{name} must have a floating-point dtype, got {value.dtype}")
        if self.dtype is None:
            self.dtype, self.dtype_origin = value.dtype, name
        elif value.dtype != self.dtype:
            raise ValueError(
                f"{name} has dtype {value.dtype}, expected {self.dtype} like {self.dtype_origin} "
                "(convert with .astype; rnnkit never converts silently)"
            )
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return value

    def parameters(self, parameters: object, keys: Mapping[str, tuple[str | int, ...]], what: str) -> Params:
        if not isinstance(parameters, Mapping):
            raise TypeError(f"parameters must be a dict of NumPy arrays, got {type(parameters).__name__}")
        missing = [key for key in keys if key not in parameters]
        if missing:
            raise ValueError(
                f"parameters is missing {', '.join(repr(k) for k in missing)}; {what} needs "
                + ", ".join(f"{k} ({', '.join(str(d) for d in dims)})" for k, dims in keys.items())
            )
        for key, dims in keys.items():
            self.check(f"parameters[{key!r}]", parameters[key], dims)
        return dict(parameters)


def _check_nonlinearity(nonlinearity: object) -> CellSpec:
    if nonlinearity not in _RNN_CELLS:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return _RNN_CELLS[str(nonlinearity)]


def _check_step_cache(cache: object, kind: type, producer: str) -> None:
    if not isinstance(cache, kind):
        raise TypeError(
            f"cache must be the {kind.__name__} returned by {producer}, got {type(cache).__name__}"
        )


def _check_sequence_caches(caches: object, kind: type, producer: str) -> list[Any]:
    """``caches`` must be ``(list_of_step_caches, x)`` as returned by ``producer``."""
    if not (isinstance(caches, (tuple, list)) and len(caches) == 2 and isinstance(caches[0], Sequence)):
        raise TypeError(f"caches must be the pair (list_of_step_caches, x) returned by {producer}")
    steps = list(caches[0])
    for t, step in enumerate(steps):
        if not isinstance(step, kind):
            raise TypeError(
                f"caches[0][{t}] must be a {kind.__name__} from {producer}, got {type(step).__name__}"
            )
    return steps


def _check_upstream(name: str, d: object, steps: list[Any], state: str) -> None:
    """``d`` ``(n_a, m, T)`` with ``1 <= T <= len(steps)``; n_a, m and dtype those of the caches."""
    if not steps:
        raise ValueError("caches holds no time step")
    ref = getattr(steps[0], state)
    shapes = _Shapes()
    shapes.bind("caches", ref.dtype, n_a=ref.shape[0], m=ref.shape[1])
    shapes.check(name, d, ("n_a", "m", "T_x"))
    if shapes.sizes["T_x"] > len(steps):
        raise ValueError(f"{name} has {shapes.sizes['T_x']} time steps but caches holds only {len(steps)}")


# ------------------------------------------------------------------------------------ the core adapter
# Validation happens once per public call; everything below trusts its inputs.  A sequence is run
# as the fast layers run it: the input side of every gate for all steps in one batched matrix
# product before the loop, only the cell step inside it, and the weight gradients as one matrix
# product each after the loop — the same sums as the exercise's per-step ``+=``, in fewer calls.
# A cell function is the one-step case of the same code.
class _Run(NamedTuple):
    """The states before and after every step of :func:`_run_forward`, and the cell's step caches."""

    prevs: list[tuple[Array, ...]]  # prevs[t]: the states step t started from
    news: list[tuple[Array, ...]]   # news[t]: the states after step t (news[t] is prevs[t + 1])
    cores: list[Any]
    hs: Array                       # (T+1, n_a, m): the hidden states, the initial one first, in one block


def _run_forward(cell: CellSpec, weights: Weights, x: Array, prev0: tuple[Array, ...]) -> _Run:
    """Run ``cell`` over ``x`` ``(n_x, m, T)`` from the states ``prev0``."""
    n_a, m = prev0[0].shape
    T, dtype = x.shape[2], x.dtype
    b_x, b_in = cell.split_bias(weights.b_ih, weights.b_hh)
    xp = np.matmul(weights.w_ih, x.transpose(2, 0, 1))  # (T, G*n_a, m): the input side of every gate
    xp += b_x[:, None]
    # One block per state and per cache field for all steps; each step works on its own slices.
    # The hidden states' block has a slot before the first step, so that all the states the steps
    # start from are one (T, n_a, m) block for the weight gradient (the caches keep prev0 itself).
    blocks = [np.empty((T + 1, n_a, m), dtype) for _ in prev0]   # h (and c), the initial states in slot 0
    for block, s0 in zip(blocks, prev0, strict=True):
        block[0] = s0
    sizes = cell.cache_sizes(n_a)
    fields = [np.empty((T, rows, m), dtype) if rows else None for rows in sizes]  # None: the cell has no such field
    cell.forward_steps(xp, blocks[0], blocks[1] if len(blocks) > 1 else None, fields[0], fields[1], weights.w_hh, b_in)
    news: list[tuple[Array, ...]] = list(zip(*(b[1:] for b in blocks), strict=True))  # a block's step views
    used = [f for f in fields if f is not None]
    cores = [cell.cache_type(*views) for views in zip(*used, strict=True)] if used else [cell.cache_type()] * T
    prevs = [prev0, *news[:-1]]
    return _Run(prevs, news, cores, blocks[0])


def _run_backward(
    cell: CellSpec,
    weights: Weights,
    x: Array,
    run: _Run,
    da: Array,
    d_final: tuple[Array, ...] | None = None,
) -> tuple[Array, tuple[Array, ...], Weights]:
    """Backpropagation through the ``T = da.shape[2]`` steps of ``run``.

    ``da`` ``(n_a, m, T)`` is the gradient reaching each step's hidden state from outside the
    recurrence; ``d_final`` the gradients with respect to the last step's states (None: zeros).
    Returns ``(dx (n_x, m, T), d_prev0, weight gradients)``.
    """
    n_a, m, T = da.shape
    dtype = da.dtype
    rows = cell.num_gates * n_a
    d_xp = np.empty((T, rows, m), dtype)
    d_hp = np.empty_like(d_xp) if cell.separate_hidden_grad else d_xp
    # d_state holds the gradients for the states after step t; the cell turns it, in place, into
    # those for the states before it, which are the next (earlier) step's carry.  So one set of
    # arrays of our own (the caller's d_final is copied) serves every step.
    if d_final is None:
        d_state = tuple(np.zeros((n_a, m), dtype) for _ in run.news[0])
    else:
        d_state = tuple(np.array(d, copy=True) for d in d_final)
    da_steps = da.transpose(2, 0, 1)  # (T, n_a, m) views, one per step
    dh = d_state[0]
    w_hh_t = np.ascontiguousarray(weights.w_hh.T)  # what the cells' backward reads, made once
    for t in reversed(range(T)):
        dh += da_steps[t]  # this step's own gradient joins what came back from the future
        cell.backward(d_state, run.prevs[t], run.news[t], run.cores[t], w_hh_t, d_xp[t], d_hp[t])
    # Σ_t d_xp⟨t⟩ xtᵀ and Σ_t d_hp⟨t⟩ a_prevᵀ as single products over all (t, column) pairs.
    d_xp_flat = d_xp.transpose(1, 0, 2).reshape(rows, T * m)
    d_hp_flat = d_xp_flat if d_hp is d_xp else d_hp.transpose(1, 0, 2).reshape(rows, T * m)
    a_prev_flat = run.hs[:T].transpose(1, 0, 2).reshape(n_a, T * m)
    grads = Weights(
        w_ih=d_xp_flat @ x[:, :, :T].transpose(0, 2, 1).reshape(-1, T * m).T,
        w_hh=d_hp_flat @ a_prev_flat.T,
        b_ih=d_xp_flat.sum(axis=1),
        b_hh=d_hp_flat.sum(axis=1),
    )
    dx = np.matmul(weights.w_ih.T, d_xp).transpose(1, 2, 0)  # (n_x, m, T)
    return dx, d_state, grads


def _rnn_weights(p: Params, bias: str = "ba") -> Weights:
    b = p[bias][:, 0]
    return Weights(w_ih=p["Wax"], w_hh=p["Waa"], b_ih=b, b_hh=np.zeros_like(b))


def _lstm_weights(p: Params) -> Weights:
    n_a = p["Wi"].shape[0]
    w = np.concatenate([p["Wi"], p["Wf"], p["Wc"], p["Wo"]])  # PyTorch's gate order i, f, g, o
    b = np.concatenate([p["bi"], p["bf"], p["bc"], p["bo"]])[:, 0]
    # Contiguous copies: the cell kernels get plain C arrays, not column slices.
    return Weights(w_ih=np.ascontiguousarray(w[:, n_a:]), w_hh=np.ascontiguousarray(w[:, :n_a]), b_ih=b,
                   b_hh=np.zeros_like(b))


def _gru_weights(p: Params) -> Weights:
    n_a = p["Wr"].shape[0]
    b_hn = p["bn_a"][:, 0]
    return Weights(
        w_ih=np.concatenate([p["Wr"][:, n_a:], p["Wz"][:, n_a:], p["Wn_x"]]),
        w_hh=np.concatenate([p["Wr"][:, :n_a], p["Wz"][:, :n_a], p["Wn_a"]]),
        b_ih=np.concatenate([p["br"], p["bz"], p["bn_x"]])[:, 0],
        # Only the candidate has a hidden-side bias: the reset gate scales it (see rnnkit.cells.gru).
        b_hh=np.concatenate([np.zeros(2 * n_a, b_hn.dtype), b_hn]),
    )


def _outputs(w_y: Array, b_y: Array, a: Array) -> Array:
    """``softmax(W_y a⟨t⟩ + b_y)`` over the classes for every column of every step: ``(n_a, m, T) -> (n_y, m, T)``."""
    logits = np.matmul(w_y, a.transpose(2, 0, 1)) + b_y  # (T, n_y, m)
    return softmax(logits, axis=1).transpose(1, 2, 0)


def _sequence_weights(steps: list[Any], build: Callable[[Params], Weights], producer: str) -> Weights:
    """The weights of a sequence's caches: every step must hold the same parameters (one forward call)."""
    parameters = steps[0].parameters
    if any(step.parameters is not parameters for step in steps):
        raise ValueError(f"caches mix steps run with different parameters dicts; pass the caches of one "
                         f"{producer} call")
    return build(parameters)


def _stacked(steps: list[Any], field: str) -> Array:
    """``(n, m, T)`` from one field of every step cache."""
    return np.stack([getattr(step, field) for step in steps], axis=2)


def _run_of(steps: list[Any], states: tuple[str, ...], prev_states: tuple[str, ...]) -> _Run:
    """The :class:`_Run` a sequence of step caches describes (their states and the cell's caches)."""
    return _Run([tuple(getattr(s, f) for f in prev_states) for s in steps],
                [tuple(getattr(s, f) for f in states) for s in steps],
                [s.core for s in steps],
                np.stack([getattr(steps[0], prev_states[0]), *(getattr(s, states[0]) for s in steps)]))


# ------------------------------------------------------------------------------------ RNN
def rnn_cell_forward(
    xt: Array, a_prev: Array, parameters: Params, nonlinearity: Nonlinearity = "tanh"
) -> tuple[Array, Array, RNNStepCache]:
    """One step of a vanilla RNN::

        a_next  = f(Waa a_prev + Wax xt + ba)        f = tanh (default) or relu
        yt_pred = softmax(Wya a_next + by)

    Args:
        xt: ``(n_x, m)`` input at this step.
        a_prev: ``(n_a, m)`` previous hidden state.
        parameters: ``Wax (n_a, n_x)``, ``Waa (n_a, n_a)``, ``Wya (n_y, n_a)``, ``ba (n_a, 1)``,
            ``by (n_y, 1)`` (other keys are ignored).
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        ``(a_next (n_a, m), yt_pred (n_y, m), cache)``; ``cache`` unpacks as ``(a_next, a_prev, xt, parameters)``.

    Raises:
        TypeError / ValueError: an argument is not an array, has the wrong shape or dtype, holds
            NaN, a key is missing, or ``nonlinearity`` is unknown.
    """
    cell = _check_nonlinearity(nonlinearity)
    shapes = _Shapes()
    shapes.check("xt", xt, ("n_x", "m"))
    shapes.check("a_prev", a_prev, ("n_a", "m"))
    p = shapes.parameters(parameters, _RNN_KEYS, "an RNN cell")
    run = _run_forward(cell, _rnn_weights(p), xt[:, :, None], (a_prev,))
    (a_next,) = run.news[0]
    yt_pred = _outputs(p["Wya"], p["by"], a_next[:, :, None])[:, :, 0]
    cache = _attach(RNNStepCache(a_next, a_prev, xt, parameters), core=run.cores[0], nonlinearity=str(nonlinearity))
    return a_next, yt_pred, cache


def rnn_forward(
    x: Array, a0: Array, parameters: Params, nonlinearity: Nonlinearity = "tanh"
) -> tuple[Array, Array, tuple[list[RNNStepCache], Array]]:
    """Run :func:`rnn_cell_forward` over a sequence.

    Args:
        x: ``(n_x, m, T_x)`` inputs, one ``(n_x, m)`` column block per step.
        a0: ``(n_a, m)`` initial hidden state.
        parameters: as for :func:`rnn_cell_forward`.

    Returns:
        ``(a (n_a, m, T_x), y_pred (n_y, m, T_x), caches)`` with ``caches = (list_of_step_caches, x)``.
    """
    cell = _check_nonlinearity(nonlinearity)
    shapes = _Shapes()
    shapes.check("x", x, ("n_x", "m", "T_x"))
    shapes.check("a0", a0, ("n_a", "m"))
    p = shapes.parameters(parameters, _RNN_KEYS, "an RNN")
    run = _run_forward(cell, _rnn_weights(p), x, (a0,))
    a = np.ascontiguousarray(run.hs[1:].transpose(1, 2, 0))  # (n_a, m, T_x)
    steps = [
        _attach(RNNStepCache(new[0], prev[0], x[:, :, t], parameters), core=core, nonlinearity=str(nonlinearity))
        for t, (prev, new, core) in enumerate(zip(run.prevs, run.news, run.cores, strict=True))
    ]
    return a, _outputs(p["Wya"], p["by"], a), (steps, x)


def _rnn_cell(cache: RNNStepCache) -> CellSpec:
    return _RNN_CELLS[cache.nonlinearity]


def rnn_cell_backward(da_next: Array, cache: RNNStepCache) -> Grads:
    """Backward of :func:`rnn_cell_forward` through the hidden state (the output layer is outside).

    With ``dz = da_next ⊙ f'(·)`` (tanh: ``1 - a_next²``)::

        dxt = Waxᵀ dz   da_prev = Waaᵀ dz   dWax = dz xtᵀ   dWaa = dz a_prevᵀ   dba = Σ_columns dz

    Args:
        da_next: ``(n_a, m)`` gradient of the loss with respect to ``a_next``.
        cache: the step cache from :func:`rnn_cell_forward`.

    Returns:
        ``{"dxt": (n_x, m), "da_prev": (n_a, m), "dWax": (n_a, n_x), "dWaa": (n_a, n_a), "dba": (n_a, 1)}``.
    """
    _check_step_cache(cache, RNNStepCache, "rnn_cell_forward")
    shapes = _Shapes()
    shapes.bind("the cache", cache.a_next.dtype, n_a=cache.a_next.shape[0], m=cache.a_next.shape[1])
    shapes.check("da_next", da_next, ("n_a", "m"))
    run = _run_of([cache], ("a_next",), ("a_prev",))
    dx, (da_prev,), g = _run_backward(
        _rnn_cell(cache), _rnn_weights(cache.parameters), cache.xt[:, :, None], run, da_next[:, :, None]
    )
    return {"dxt": dx[:, :, 0], "da_prev": da_prev, "dWax": g.w_ih, "dWaa": g.w_hh, "dba": g.b_ih[:, None]}


def rnn_backward(da: Array, caches: tuple[list[RNNStepCache], Array]) -> Grads:
    """Backpropagation through time for :func:`rnn_forward`.

    The loss is ``L = Σ_t L_t``; ``da[:, :, t]`` is ``∂L/∂a⟨t⟩`` through the outputs only, and the
    gradient carried back from step ``t+1`` is added to it before the step's backward.  Weight
    gradients are the sums of the per-step ones.

    Args:
        da: ``(n_a, m, T_x)`` upstream gradients for every hidden state; the number of steps is
            taken from ``da`` (at most the number of cached steps).
        caches: ``(list_of_step_caches, x)`` from :func:`rnn_forward`.

    Returns:
        ``{"dx": (n_x, m, T_x), "da0": (n_a, m), "dWax", "dWaa", "dba"}`` (parameter shapes).
    """
    steps = _check_sequence_caches(caches, RNNStepCache, "rnn_forward")
    _check_upstream("da", da, steps, "a_next")
    steps = steps[: da.shape[2]]
    if len({step.nonlinearity for step in steps}) > 1:
        raise ValueError("caches mix tanh and relu steps; pass the caches of one rnn_forward call")
    weights = _sequence_weights(steps, _rnn_weights, "rnn_forward")
    dx, (da0,), g = _run_backward(_rnn_cell(steps[0]), weights, _stacked(steps, "xt"),
                                  _run_of(steps, ("a_next",), ("a_prev",)), da)
    return {"dx": dx, "da0": da0, "dWax": g.w_ih, "dWaa": g.w_hh, "dba": g.b_ih[:, None]}


# ------------------------------------------------------------------------------------ LSTM
def _lstm_cache(new: tuple[Array, ...], prev: tuple[Array, ...], xt: Array, parameters: Params,
                core: LSTMCache) -> LSTMStepCache:
    n_a = new[0].shape[0]
    it, ft, cct, ot = (core.gates[k * n_a : (k + 1) * n_a] for k in range(4))
    return _attach(LSTMStepCache(new[0], new[1], prev[0], prev[1], ft, it, cct, ot, xt, parameters), core=core)


def lstm_cell_forward(
    xt: Array, a_prev: Array, c_prev: Array, parameters: Params
) -> tuple[Array, Array, Array, LSTMStepCache]:
    """One LSTM step; every gate acts on the concatenation ``concat = [a_prev; xt]`` (a_prev first)::

        ft = σ(Wf concat + bf)     it = σ(Wi concat + bi)     ot = σ(Wo concat + bo)
        cct = tanh(Wc concat + bc)
        c_next = ft ⊙ c_prev + it ⊙ cct
        a_next = ot ⊙ tanh(c_next)
        yt_pred = softmax(Wy a_next + by)

    Args:
        xt: ``(n_x, m)``.  a_prev, c_prev: ``(n_a, m)``.
        parameters: ``Wf, Wi, Wc, Wo (n_a, n_a + n_x)``, ``bf, bi, bc, bo (n_a, 1)``,
            ``Wy (n_y, n_a)``, ``by (n_y, 1)``.

    Returns:
        ``(a_next (n_a, m), c_next (n_a, m), yt_pred (n_y, m), cache)``; ``cache`` unpacks as
        ``(a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)``.
    """
    shapes = _Shapes()
    shapes.check("xt", xt, ("n_x", "m"))
    shapes.check("a_prev", a_prev, ("n_a", "m"))
    shapes.check("c_prev", c_prev, ("n_a", "m"))
    p = shapes.parameters(parameters, _LSTM_KEYS, "an LSTM cell")
    run = _run_forward(LSTM_CELL, _lstm_weights(p), xt[:, :, None], (a_prev, c_prev))
    a_next, c_next = run.news[0]
    yt_pred = _outputs(p["Wy"], p["by"], a_next[:, :, None])[:, :, 0]
    return a_next, c_next, yt_pred, _lstm_cache(run.news[0], run.prevs[0], xt, parameters, run.cores[0])


def lstm_forward(
    x: Array, a0: Array, parameters: Params
) -> tuple[Array, Array, Array, tuple[list[LSTMStepCache], Array]]:
    """Run :func:`lstm_cell_forward` over a sequence, the cell state starting from zeros.

    Args:
        x: ``(n_x, m, T_x)``.  a0: ``(n_a, m)`` initial hidden state.
        parameters: as for :func:`lstm_cell_forward`.

    Returns:
        ``(a (n_a, m, T_x), y (n_y, m, T_x), c (n_a, m, T_x), caches)``, ``caches = (list, x)``.
    """
    shapes = _Shapes()
    shapes.check("x", x, ("n_x", "m", "T_x"))
    shapes.check("a0", a0, ("n_a", "m"))
    p = shapes.parameters(parameters, _LSTM_KEYS, "an LSTM")
    run = _run_forward(LSTM_CELL, _lstm_weights(p), x, (a0, np.zeros_like(a0)))
    a = np.ascontiguousarray(run.hs[1:].transpose(1, 2, 0))  # (n_a, m, T_x)
    c = np.stack([new[1] for new in run.news], axis=2)
    steps = [_lstm_cache(new, prev, x[:, :, t], parameters, core)
             for t, (prev, new, core) in enumerate(zip(run.prevs, run.news, run.cores, strict=True))]
    return a, _outputs(p["Wy"], p["by"], a), c, (steps, x)


def _lstm_grads(dx: Array, d_prev: tuple[Array, ...], g: Weights) -> Grads:
    n_a = d_prev[0].shape[0]
    dW = np.concatenate([g.w_hh, g.w_ih], axis=1)  # (4 n_a, n_a + n_x), columns as in [a_prev; xt]
    db = g.b_ih[:, None]
    di, df, dc, do = (slice(k * n_a, (k + 1) * n_a) for k in range(4))
    return {
        "dx": dx, "da_prev": d_prev[0], "dc_prev": d_prev[1],
        "dWf": dW[df], "dbf": db[df], "dWi": dW[di], "dbi": db[di],
        "dWc": dW[dc], "dbc": db[dc], "dWo": dW[do], "dbo": db[do],
    }


def lstm_cell_backward(da_next: Array, dc_next: Array, cache: LSTMStepCache) -> Grads:
    """Backward of :func:`lstm_cell_forward` through the states (the output layer is outside).

    The equations are those of :mod:`rnnkit.cells.lstm`; for each gate ``k`` in ``f, i, c, o``,
    with ``dk`` its pre-activation gradient, ``dWk = dk [a_prev; xt]ᵀ`` and ``dbk = Σ_columns dk``.

    Args:
        da_next, dc_next: ``(n_a, m)`` gradients of the loss with respect to ``a_next`` and ``c_next``.
        cache: the step cache from :func:`lstm_cell_forward`.

    Returns:
        ``{"dxt": (n_x, m), "da_prev", "dc_prev": (n_a, m), "dWf", "dbf", "dWi", "dbi", "dWc", "dbc",
        "dWo", "dbo"}`` (parameter shapes).
    """
    _check_step_cache(cache, LSTMStepCache, "lstm_cell_forward")
    shapes = _Shapes()
    shapes.bind("the cache", cache.a_next.dtype, n_a=cache.a_next.shape[0], m=cache.a_next.shape[1])
    shapes.check("da_next", da_next, ("n_a", "m"))
    shapes.check("dc_next", dc_next, ("n_a", "m"))
    run = _run_of([cache], ("a_next", "c_next"), ("a_prev", "c_prev"))
    dx, d_prev, g = _run_backward(LSTM_CELL, _lstm_weights(cache.parameters), cache.xt[:, :, None], run,
                                  da_next[:, :, None], (np.zeros_like(da_next), dc_next))
    grads = _lstm_grads(dx, d_prev, g)
    return {"dxt": grads.pop("dx")[:, :, 0], **grads}


def lstm_backward(da: Array, caches: tuple[list[LSTMStepCache], Array]) -> Grads:
    """Backpropagation through time for :func:`lstm_forward`.

    Both carried gradients go back from step to step: ``∂L/∂a⟨t-1⟩`` (added to ``da[:, :, t-1]``)
    *and* ``∂L/∂c⟨t-1⟩`` (the cell state has no output of its own, so it is the carry alone).

    Args:
        da: ``(n_a, m, T_x)`` upstream gradients for every hidden state; the number of steps is
            taken from ``da`` (at most the number of cached steps).
        caches: ``(list_of_step_caches, x)`` from :func:`lstm_forward`.

    Returns:
        ``{"dx": (n_x, m, T_x), "da0": (n_a, m), "dWf", "dbf", "dWi", "dbi", "dWc", "dbc", "dWo",
        "dbo"}`` (parameter shapes).
    """
    steps = _check_sequence_caches(caches, LSTMStepCache, "lstm_forward")
    _check_upstream("da", da, steps, "a_next")
    steps = steps[: da.shape[2]]
    weights = _sequence_weights(steps, _lstm_weights, "lstm_forward")
    dx, d_prev, g = _run_backward(LSTM_CELL, weights, _stacked(steps, "xt"),
                                  _run_of(steps, ("a_next", "c_next"), ("a_prev", "c_prev")), da)
    grads = _lstm_grads(dx, d_prev, g)
    del grads["dc_prev"]  # the exercise's lstm_backward returns da0 only (c0 is zeros, not an input)
    return {"dx": grads.pop("dx"), "da0": grads.pop("da_prev"), **grads}


# ------------------------------------------------------------------------------------ GRU
def _gru_cache(new: tuple[Array, ...], prev: tuple[Array, ...], xt: Array, parameters: Params,
               core: GRUCache) -> GRUStepCache:
    n_a = new[0].shape[0]
    rt, zt, nt = (core.gates[k * n_a : (k + 1) * n_a] for k in range(3))
    return _attach(GRUStepCache(new[0], prev[0], rt, zt, nt, xt, parameters), core=core)


def gru_cell_forward(xt: Array, a_prev: Array, parameters: Params) -> tuple[Array, Array, GRUStepCache]:
    """One GRU step with PyTorch's equations; ``concat = [a_prev; xt]`` as for the LSTM::

        rt = σ(Wr concat + br)                         reset gate
        zt = σ(Wz concat + bz)                         update gate
        nt = tanh(Wn_x xt + bn_x + rt ⊙ (Wn_a a_prev + bn_a))
        a_next = (1 - zt) ⊙ nt + zt ⊙ a_prev
        yt_pred = softmax(Wy a_next + by)

    The reset gate scales the whole hidden part of the candidate, its bias included, so the
    candidate keeps separate input-side (``Wn_x, bn_x``) and hidden-side (``Wn_a, bn_a``) weights.

    Args:
        xt: ``(n_x, m)``.  a_prev: ``(n_a, m)``.
        parameters: ``Wr, Wz (n_a, n_a + n_x)``, ``br, bz (n_a, 1)``, ``Wn_x (n_a, n_x)``,
            ``bn_x (n_a, 1)``, ``Wn_a (n_a, n_a)``, ``bn_a (n_a, 1)``, ``Wy (n_y, n_a)``, ``by (n_y, 1)``.

    Returns:
        ``(a_next (n_a, m), yt_pred (n_y, m), cache)``; ``cache`` unpacks as
        ``(a_next, a_prev, rt, zt, nt, xt, parameters)``.
    """
    shapes = _Shapes()
    shapes.check("xt", xt, ("n_x", "m"))
    shapes.check("a_prev", a_prev, ("n_a", "m"))
    p = shapes.parameters(parameters, _GRU_KEYS, "a GRU cell")
    run = _run_forward(GRU_CELL, _gru_weights(p), xt[:, :, None], (a_prev,))
    (a_next,) = run.news[0]
    yt_pred = _outputs(p["Wy"], p["by"], a_next[:, :, None])[:, :, 0]
    return a_next, yt_pred, _gru_cache(run.news[0], run.prevs[0], xt, parameters, run.cores[0])


def gru_forward(
    x: Array, a0: Array, parameters: Params
) -> tuple[Array, Array, tuple[list[GRUStepCache], Array]]:
    """Run :func:`gru_cell_forward` over a sequence.

    Args:
        x: ``(n_x, m, T_x)``.  a0: ``(n_a, m)`` initial hidden state.
        parameters: as for :func:`gru_cell_forward`.

    Returns:
        ``(a (n_a, m, T_x), y (n_y, m, T_x), caches)`` with ``caches = (list_of_step_caches, x)``.
    """
    shapes = _Shapes()
    shapes.check("x", x, ("n_x", "m", "T_x"))
    shapes.check("a0", a0, ("n_a", "m"))
    p = shapes.parameters(parameters, _GRU_KEYS, "a GRU")
    run = _run_forward(GRU_CELL, _gru_weights(p), x, (a0,))
    a = np.ascontiguousarray(run.hs[1:].transpose(1, 2, 0))  # (n_a, m, T_x)
    steps = [_gru_cache(new, prev, x[:, :, t], parameters, core)
             for t, (prev, new, core) in enumerate(zip(run.prevs, run.news, run.cores, strict=True))]
    return a, _outputs(p["Wy"], p["by"], a), (steps, x)


def _gru_grads(g: Weights, n_a: int) -> Grads:
    r, z, n = (slice(k * n_a, (k + 1) * n_a) for k in range(3))
    # The r and z gates act on [a_prev; xt]: their hidden and input columns sit side by side.
    return {
        "dWr": np.concatenate([g.w_hh[r], g.w_ih[r]], axis=1), "dbr": g.b_ih[r, None],
        "dWz": np.concatenate([g.w_hh[z], g.w_ih[z]], axis=1), "dbz": g.b_ih[z, None],
        "dWn_x": g.w_ih[n], "dbn_x": g.b_ih[n, None],
        "dWn_a": g.w_hh[n], "dbn_a": g.b_hh[n, None],
    }


def gru_cell_backward(da_next: Array, cache: GRUStepCache) -> Grads:
    """Backward of :func:`gru_cell_forward` through the hidden state (the output layer is outside).

    The equations are those of :mod:`rnnkit.cells.gru`.  The gradient keys are the parameter keys
    with a ``d`` prefix.

    Args:
        da_next: ``(n_a, m)`` gradient of the loss with respect to ``a_next``.
        cache: the step cache from :func:`gru_cell_forward`.

    Returns:
        ``{"dxt": (n_x, m), "da_prev": (n_a, m), "dWr", "dbr", "dWz", "dbz", "dWn_x", "dbn_x",
        "dWn_a", "dbn_a"}`` (parameter shapes).
    """
    _check_step_cache(cache, GRUStepCache, "gru_cell_forward")
    shapes = _Shapes()
    shapes.bind("the cache", cache.a_next.dtype, n_a=cache.a_next.shape[0], m=cache.a_next.shape[1])
    shapes.check("da_next", da_next, ("n_a", "m"))
    run = _run_of([cache], ("a_next",), ("a_prev",))
    dx, (da_prev,), g = _run_backward(GRU_CELL, _gru_weights(cache.parameters), cache.xt[:, :, None], run,
                                      da_next[:, :, None])
    return {"dxt": dx[:, :, 0], "da_prev": da_prev, **_gru_grads(g, da_prev.shape[0])}


def gru_backward(da: Array, caches: tuple[list[GRUStepCache], Array]) -> Grads:
    """Backpropagation through time for :func:`gru_forward`.

    Args:
        da: ``(n_a, m, T_x)`` upstream gradients for every hidden state; the number of steps is
            taken from ``da`` (at most the number of cached steps).
        caches: ``(list_of_step_caches, x)`` from :func:`gru_forward`.

    Returns:
        ``{"dx": (n_x, m, T_x), "da0": (n_a, m), "dWr", "dbr", "dWz", "dbz", "dWn_x", "dbn_x",
        "dWn_a", "dbn_a"}`` (parameter shapes).
    """
    steps = _check_sequence_caches(caches, GRUStepCache, "gru_forward")
    _check_upstream("da", da, steps, "a_next")
    steps = steps[: da.shape[2]]
    weights = _sequence_weights(steps, _gru_weights, "gru_forward")
    dx, (da0,), g = _run_backward(GRU_CELL, weights, _stacked(steps, "xt"), _run_of(steps, ("a_next",), ("a_prev",)),
                                  da)
    return {"dx": dx, "da0": da0, **_gru_grads(g, da0.shape[0])}


# ------------------------------------------------------------------------------------ character model
def clip(gradients: Grads, maxValue: float) -> Grads:  # maxValue: the exercise's name
    """Clip every gradient entry to ``[-maxValue, maxValue]``.

    Returns a new dict with the same keys (``db`` or ``dba``, whichever it was given);
    ``gradients`` and its arrays are left untouched.  (This is :func:`rnnkit.clip.clip_grad_value`
    under the exercise's name.)
    """
    return clip_grad_value(gradients, maxValue)


def _char_model_keys(parameters: object, what: str) -> tuple[dict[str, tuple[str | int, ...]], str]:
    """The RNN keys to check and the name of the hidden bias: the W1A2 exercise's ``b`` or ``ba``."""
    if isinstance(parameters, Mapping) and "b" in parameters:
        if "ba" in parameters:
            raise ValueError(f"{what}: parameters has both 'b' and 'ba'; give the hidden bias once "
                             f"(the exercise calls it 'b', the step-by-step functions 'ba')")
        return {("b" if key == "ba" else key): dims for key, dims in _RNN_KEYS.items()}, "b"
    return _RNN_KEYS, "ba"


def sample(parameters: Params, char_to_ix: Mapping[str, int], seed: int) -> list[int]:
    """Draw a sequence of character indices from a character-level RNN (:func:`rnn_cell_forward`).

    Starts from a zero input vector and a zero hidden state; at each step draws the next index
    from ``yt_pred``, feeds it back as a one-hot input, and stops when it draws ``'\\n'`` or after
    :data:`SAMPLE_MAX_CHARS` characters.  The list always ends with the newline index (appended
    when the limit was hit).  The same ``seed`` gives the same list; no global random state is used.

    Args:
        parameters: RNN parameters (see :func:`rnn_cell_forward`) with ``n_x == n_y``: the input is
            one-hot over the same vocabulary as the output.  The hidden bias may be called ``b``
            (the Dinosaurus exercise's name) or ``ba``.
        char_to_ix: maps characters to indices; must contain ``'\\n'``.
        seed: seed of the random generator.

    Returns:
        The drawn indices, ending with ``char_to_ix['\\n']``.
    """
    keys, bias = _char_model_keys(parameters, "sample")
    shapes = _Shapes()
    p = shapes.parameters(parameters, keys, "sample (an RNN)")
    n_x, n_a, n_y = shapes.sizes["n_x"], shapes.sizes["n_a"], shapes.sizes["n_y"]
    if n_x != n_y:
        raise ValueError(f"sample feeds its output back as input: needs n_x == n_y, got Wax {p['Wax'].shape} "
                         f"and Wya {p['Wya'].shape}")
    newline = _newline_index(char_to_ix, n_y)
    rng = np.random.default_rng(seed)
    weights = _rnn_weights(p, bias)
    dtype = p["Waa"].dtype
    x = np.zeros((n_x, 1, 1), dtype)
    a_prev = np.zeros((n_a, 1), dtype)
    indices: list[int] = []
    while len(indices) < SAMPLE_MAX_CHARS and (not indices or indices[-1] != newline):
        (a_prev,) = _run_forward(RNN_TANH_CELL, weights, x, (a_prev,)).news[0]
        y = _outputs(p["Wya"], p["by"], a_prev[:, :, None])
        # Drawn in float64 so that a float32 softmax's rounding cannot trip rng.choice's sum check.
        probs = y[:, 0, 0].astype(np.float64)
        idx = int(rng.choice(n_y, p=probs / probs.sum()))
        indices.append(idx)
        x = np.zeros((n_x, 1, 1), dtype)
        x[idx] = 1.0
    if indices[-1] != newline:
        indices.append(newline)
    return indices


def optimize(
    X: Sequence[int | None],  # X, Y: the exercise's names
    Y: Sequence[int],
    a_prev: Array,
    parameters: Params,
    learning_rate: float = 0.01,
) -> tuple[float, Grads, Array]:
    """One training step of a character-level RNN on one sequence: forward, BPTT, clip, SGD.

    The inputs are one-hot vectors of the indices in ``X`` (``None`` means a zero vector, the
    exercise's "start" input), the targets the indices in ``Y``.  With
    ``ŷ⟨t⟩ = softmax(Wya a⟨t⟩ + by)``::

        loss = Σ_t -log ŷ⟨t⟩[Y[t]]

    The gradients (output layer included) are clipped to ``[-5, 5]`` by :func:`clip`, and
    ``parameters`` are updated *in place*: ``W -= learning_rate * dW``.  Everything is checked once
    per call; the steps run through the RNN cell of :mod:`rnnkit.cells` without further checks.

    Args:
        X: ``T_x`` input indices in ``[0, n_x)`` or ``None``.
        Y: ``T_x`` target indices in ``[0, n_y)``.
        a_prev: ``(n_a, 1)`` hidden state to start from.
        parameters: RNN parameters as for :func:`rnn_cell_forward`, the hidden bias named ``ba``
            or — as in the Dinosaurus exercise — ``b``; updated in place.
        learning_rate: positive SGD step size.

    Returns:
        ``(loss, gradients, a_last)``: the loss (a float, before the update), the clipped gradients
        ``{"dWax", "dWaa", "dWya", "db" or "dba" (as the bias was named), "dby"}`` and the last
        hidden state ``(n_a, 1)``.
    """
    keys, bias = _char_model_keys(parameters, "optimize")
    shapes = _Shapes()
    shapes.bind("optimize (one sequence)", m=1)
    shapes.check("a_prev", a_prev, ("n_a", "m"))
    p = shapes.parameters(parameters, keys, "optimize (an RNN)")
    n_x, n_y = shapes.sizes["n_x"], shapes.sizes["n_y"]
    real = (int, float, np.integer, np.floating)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, real):
        raise TypeError(f"learning_rate must be a number, got {type(learning_rate).__name__}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if len(X) != len(Y) or not X:
        raise ValueError(f"X and Y must be non-empty and of the same length, got {len(X)} and {len(Y)}")
    fed = [t for t, ix in enumerate(X) if ix is not None]  # the steps with an input character
    inputs = _indices("X", [X[t] for t in fed], n_x, fed)
    targets = _indices("Y", Y, n_y, range(len(Y)))
    x = np.zeros((n_x, 1, len(X)), a_prev.dtype)
    x[inputs, 0, fed] = 1.0  # one-hot columns; a None input stays a zero vector

    weights = _rnn_weights(p, bias)
    run = _run_forward(RNN_TANH_CELL, weights, x, (a_prev,))
    states = run.hs[1:, :, 0].T  # (n_a, T_x): m = 1
    # The loss is taken from the logits (log-softmax) rather than from log(y_pred): a probability
    # that underflows to 0 then gives a large finite loss instead of inf.
    logits = p["Wya"] @ states + p["by"]  # (n_y, T_x)
    log_probs = log_softmax(logits, axis=0)
    steps = np.arange(len(Y))
    loss = -float(log_probs[targets, steps].sum())
    dz = np.exp(log_probs)  # (n_y, T_x): ŷ⟨t⟩ - onehot(Y[t]) per step
    dz[targets, steps] -= 1.0
    da = (p["Wya"].T @ dz)[:, None, :]  # (n_a, 1, T_x) through the output layer only
    _, _, g = _run_backward(RNN_TANH_CELL, weights, x, run, da)
    gradients = {
        "dWax": g.w_ih,
        "dWaa": g.w_hh,
        "dWya": dz @ states.T,
        f"d{bias}": g.b_ih[:, None],
        "dby": dz.sum(axis=1, keepdims=True),
    }
    gradients = clip(gradients, 5)
    for key in ("Wax", "Waa", "Wya", bias, "by"):
        parameters[key] -= learning_rate * gradients["d" + key]
    return loss, gradients, states[:, -1:].copy()


def _indices(name: str, values: Sequence[object], size: int, positions: Sequence[int]) -> IntArray:
    """``values`` as an index array, each an integer in ``[0, size)``; the error names ``name[position]``."""
    if len(values) == 0:  # e.g. X = [None]: the empty name of the exercise's last line
        return np.zeros(0, np.int64)
    array = np.array(values)
    if (array.dtype.kind in "iu" and not any(isinstance(v, (bool, np.bool_)) for v in values)
            and array.min() >= 0 and array.max() < size):
        return array
    for position, value in zip(positions, values, strict=True):  # find the first bad one, and name it
        _index(f"{name}[{position}]", value, size)
    raise ValueError(f"{name} must hold integer indices in [0, {size})")


def _index(name: str, value: object, size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer index, got {type(value).__name__}")
    if not 0 <= value < size:
        raise ValueError(f"{name} = {value} is out of range [0, {size})")
    return int(value)


def _newline_index(char_to_ix: object, size: int) -> int:
    if not isinstance(char_to_ix, Mapping) or "\n" not in char_to_ix:
        raise ValueError("char_to_ix must be a dict from characters to indices that contains '\\n'")
    return _index("char_to_ix['\\n']", char_to_ix["\n"], size)
