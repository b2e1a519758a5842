"""Gradient-flow diagnostics: how much of the loss's gradient reaches each time step.

For a loss ``L`` taken at the *last* step of a sequence, :func:`gradient_norms_over_time` returns
``||dL/dh_t||`` for every step ``t``: the vanishing (or exploding) gradient problem made visible.
In a tanh RNN the factor ``W_hh^T diag(1 - h^2)`` multiplies in once per step back, so the norm
falls geometrically.  The LSTM's additive cell path decays only as fast as its forget gate ``f``
lets it: with PyTorch's default initialisation ``f ≈ sigmoid(0) = 0.5`` and the gradient vanishes
nearly as fast as the RNN's; raising the forget-gate bias slows it down, and a tanh RNN whose
``W_hh`` is too large explodes instead (see :func:`gradient_flow_curves` and ``docs/gradient_flow.png``).

The gradients come from real backward passes of the public layer API, exactly and in O(T):
the sequence is run as T chunks of one step each, every chunk starting from the state the
previous one ended in (identical to one long forward pass), and the backward pass walks the
chunks in reverse, handing each chunk's ``d_state0`` to the previous chunk as its ``d_state``.
The ``d_state0`` of the chunk that starts at step ``t`` *is* ``dL/dh_t``, the gradient with
respect to the state that step ``t`` reads — no change to the layers' internals was needed.

:func:`plot_gradient_flow` draws the classic picture for RNN, LSTM and GRU to a PNG (matplotlib is
an optional extra, imported only there).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit._types import Array
from rnnkit.layers.recurrent import GRU, LSTM, RNN
from rnnkit.layers.sequential import ModelState, Sequential, takes_state

LastStepLoss = Callable[[Array], tuple[float, Array]]
"""``loss_fn(out_last) -> (loss, d_out_last)`` on the model's output at the last step, ``(B, F)``."""


_DEFAULT_CURVES = ("RNN (tanh)", "LSTM", "GRU")


def _as_model(layer_or_model: Any) -> Sequential:
    if isinstance(layer_or_model, Sequential):
        return layer_or_model
    if not takes_state(layer_or_model):
        raise TypeError(f"layer_or_model must be a Sequential or a recurrent layer (RNN, LSTM, GRU), "
                        f"got {type(layer_or_model).__name__}")
    return Sequential([("rnn", layer_or_model)])


def _hidden_norms(d_state: ModelState) -> Array:
    """Per-sequence L2 norm of the ``h`` parts of a model state (all recurrent layers together), ``(B,)``."""
    squares = 0.0
    for layer_state in d_state.values():
        h = layer_state[0] if isinstance(layer_state, tuple) else layer_state  # (L*D, B, H); LSTM: (h, c)
        squares = squares + np.sum(np.square(h, dtype=np.float64), axis=(0, 2))
    return np.sqrt(squares)


def gradient_norms_over_time(
    layer_or_model: Any,
    x: np.ndarray,
    loss_fn: LastStepLoss | None = None,
    seed: int = 0,
) -> Array:
    """``||dL/dh_t||`` for ``t = 0 .. T-1``, with the loss taken at the last step.

    ``h_t`` is the hidden state that step ``t`` starts from (``h_0`` the initial state, zeros), so
    ``norms[t]`` measures the gradient that survives ``T - t`` steps of back-propagation.  For an
    LSTM it is the gradient with respect to ``h`` (not ``c``); with several recurrent layers, the
    ``h`` of all layers together.

    Args:
        layer_or_model: a recurrent layer (RNN, LSTM, GRU) or a :class:`Sequential` model.
        x: ``(B, T, ...)`` a batch of input sequences (ids for a model that starts with an embedding).
        loss_fn: ``(out_last) -> (loss, d_out_last)`` on the output at the last step ``(B, F)``, e.g.
            ``lambda z: softmax_cross_entropy(z, targets, reduction="sum")``.  Default: the projection
            ``L = sum_b v . out_last[b]`` on a fixed random unit vector ``v`` (drawn from ``seed``).
            Use a loss that sums over the batch so each sequence's gradient is its own.

    Returns:
        ``(T,)`` float64: the mean over the batch of the per-sequence L2 norm of ``dL/dh_t``.
    """
    model = _as_model(layer_or_model)
    if not model.recurrent:
        raise ValueError("the model has no recurrent layer, so there is no hidden state to diagnose")
    if not isinstance(x, np.ndarray) or x.ndim < 2 or x.shape[1] == 0:
        raise ValueError(f"x must be a batch of sequences (B, T, ...) with T >= 1, got "
                         f"{x.shape if isinstance(x, np.ndarray) else type(x).__name__}")
    T = x.shape[1]

    # Forward: T one-step chunks, each starting from the state the previous one ended in.
    caches: list[Any] = []
    state = None
    for t in range(T):
        out, state, cache = model.forward(x[:, t : t + 1], state=state)
        caches.append(cache)
    out_last = out[:, -1]  # T >= 1, so out is the last chunk's output
    if loss_fn is None:
        v = np.random.default_rng(seed).standard_normal(out_last.shape[-1])
        d_last = np.broadcast_to((v / np.linalg.norm(v)).astype(out_last.dtype), out_last.shape)
    else:
        _, d_last = loss_fn(out_last)
        if not isinstance(d_last, np.ndarray) or d_last.shape != out_last.shape:
            raise ValueError(f"loss_fn must return (loss, d_out_last) with d_out_last of shape {out_last.shape}")

    # Backward: chunk t gets the gradient of its final state from chunk t+1 and returns dL/dh_t.
    norms = np.empty(T)
    d_state = None
    for t in reversed(range(T)):
        d_out = np.zeros_like(out)
        if t == T - 1:
            d_out[:, -1] = d_last
        _, d_state, _ = model.backward(d_out, d_state, caches[t])
        norms[t] = _hidden_norms(d_state).mean()
    return norms


def gradient_flow_curves(
    seq_len: int = 100,
    batch_size: int = 16,
    input_size: int = 32,
    hidden_size: int = 64,
    seed: int = 0,
    variants: bool = True,
) -> dict[str, Array]:
    """``||dL/dh_t||`` over ``t`` for a tanh RNN, an LSTM and a GRU on the same random sequences.

    All three have the same sizes and PyTorch's default initialisation (``U(-1/sqrt(H), 1/sqrt(H))``,
    drawn from ``seed``), run in float64 on the same ``N(0, 1)`` inputs ``(batch_size, seq_len,
    input_size)``, with the default last-step loss of :func:`gradient_norms_over_time`.

    With ``variants``, two altered copies show what moves the curves: the LSTM with its forget-gate
    bias raised by 1 (the usual remedy: the cell state then decays more slowly), and the RNN with
    ``W_hh`` four times larger, whose gradient *explodes* instead.
    """
    x = np.random.default_rng(seed).standard_normal((batch_size, seq_len, input_size))
    H = hidden_size
    defaults = (RNN(input_size, H, dtype=np.float64, seed=seed), LSTM(input_size, H, dtype=np.float64, seed=seed),
                GRU(input_size, H, dtype=np.float64, seed=seed))
    layers: dict[str, Any] = dict(zip(_DEFAULT_CURVES, defaults, strict=True))
    if variants:
        lstm = LSTM(input_size, H, dtype=np.float64, seed=seed)
        lstm.params["bias_ih_l0"][H : 2 * H] += 1.0  # gate order i, f, g, o: rows H..2H are the forget gate
        rnn = RNN(input_size, H, dtype=np.float64, seed=seed)
        rnn.params["weight_hh_l0"] *= 4.0
        layers["LSTM, forget-gate bias +1"] = lstm
        layers["RNN (tanh), W_hh ×4"] = rnn
    return {name: gradient_norms_over_time(layer, x, seed=seed) for name, layer in layers.items()}


def plot_gradient_flow(
    path: str | Path,
    seq_len: int = 100,
    batch_size: int = 16,
    input_size: int = 32,
    hidden_size: int = 64,
    seed: int = 0,
    variants: bool = True,
) -> dict[str, Array]:
    """Plot :func:`gradient_flow_curves` (log y-axis) to the image file ``path`` and return the curves.

    The arguments are those of :func:`gradient_flow_curves`.  Needs matplotlib
    (``pip install 'rnnkit[app]'``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_gradient_flow needs matplotlib: pip install 'rnnkit[app]' "
                          "(or pip install matplotlib)") from error
    curves = gradient_flow_curves(seq_len, batch_size, input_size, hidden_size, seed, variants)
    # A Figure without pyplot: no GUI backend and no global state are involved.
    fig = Figure(figsize=(9, 5.4), layout="constrained")
    ax = fig.add_subplot()
    t = np.arange(seq_len)
    for name, norms in curves.items():
        # Geometric-mean factor per step back over the whole curve: below 1 vanishes, above 1 explodes.
        rate = (norms[0] / norms[-1]) ** (1.0 / max(seq_len - 1, 1))
        style = "-" if name in _DEFAULT_CURVES else "--"
        ax.semilogy(t, norms, style, linewidth=2, label=f"{name}: ×{rate:.2f} per step back")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlim(0, seq_len - 1)
    ax.set_xlabel(f"time step t   (the loss is taken at the last step, t = {seq_len - 1}: "
                  f"further left = more steps back)")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$   (mean over the batch)")
    ax.set_title("Vanishing and exploding gradients: how much of the last step's gradient reaches step t")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", title_fontsize="small",
              title=f"H = {hidden_size}, {batch_size} random sequences of {seq_len} steps\n"
                    "solid: PyTorch's default init; dashed: altered copies")
    fig.savefig(path, dpi=110)
    return curves
