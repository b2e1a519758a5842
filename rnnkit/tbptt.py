"""Truncated backpropagation through time (TBPTT): train on a long stream in chunks of T steps.

Back-propagating through a whole book is neither possible (memory grows with the length) nor
useful (the gradient from thousands of steps back has vanished).  Truncated BPTT, as in char-rnn,
cuts the stream into chunks of ``seq_len`` steps and

* runs the forward pass of each chunk from the hidden state the previous chunk ended in, so the
  model still *sees* the whole past, and
* back-propagates only within the chunk: the state that comes in is treated as a constant
  (``d_state=None`` in backward), so no gradient crosses a chunk boundary.

The batch is ``batch_size`` parallel streams: the token stream is cut into ``batch_size``
contiguous rows, and chunk ``k`` of every row forms batch ``k``, so row ``b`` of batch ``k + 1``
continues exactly where row ``b`` of batch ``k`` stopped — which is what makes carrying the state
from one batch to the next correct::

    model = Sequential([("embed", Embedding(V, 32)), ("rnn", LSTM(32, 128)), ("head", Linear(128, V))])
    optimizer = Adam(lr=2e-3)
    for epoch in range(n_epochs):
        state = None                                  # each epoch restarts the rows: zero state
        for x, y in stream_batches(tokens, batch_size=32, seq_len=64):
            step = tbptt_step(model, softmax_cross_entropy, optimizer, x, y, state, clip=5.0)
            state = step.state                        # carried forward, never back-propagated into
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from rnnkit._types import Array
from rnnkit.clip import clip_grad_norm, grad_norm
from rnnkit.layers.sequential import ModelState, Sequential
from rnnkit.optim import Optimizer

LossFn = Callable[[Array, Any], tuple[float, Array]]
"""``loss_fn(out, y) -> (loss, d_out)``, e.g. :func:`rnnkit.losses.softmax_cross_entropy`."""


class TBPTTStep(NamedTuple):
    """What one :func:`tbptt_step` returns."""

    loss: float          # the chunk's loss, before the update
    state: ModelState    # the final state of the chunk: pass it to the next chunk's step
    grad_norm: float     # global L2 norm of the gradient before clipping (watch it for explosions)


def stream_batches(
    tokens: np.ndarray,
    batch_size: int,
    seq_len: int,
    targets: np.ndarray | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut a long stream into ``batch_size`` contiguous rows and yield their chunks of ``seq_len`` steps.

    Args:
        tokens: ``(N, ...)`` the stream (token ids, or feature vectors), time along the first axis.
        batch_size: number of parallel rows ``B``; the stream is truncated to a multiple of it.
        seq_len: chunk length ``T``.
        targets: ``(N, ...)`` the target at each position of ``tokens``.  None: next-token
            prediction, the inputs are ``tokens[:-1]`` and the targets ``tokens[1:]``.
        drop_last: skip the final chunk when it is shorter than ``seq_len``.

    Yields:
        ``(x, y)`` pairs of shape ``(B, T, ...)`` (the last pair may be shorter in time), in stream
        order: row ``b`` of each pair continues row ``b`` of the previous pair.
    """
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(tokens, np.ndarray) or tokens.ndim == 0:
        raise ValueError("tokens must be a NumPy array with time along its first axis")
    if targets is None:
        inputs, targets = tokens[:-1], tokens[1:]
    else:
        if not isinstance(targets, np.ndarray) or targets.shape[:1] != tokens.shape[:1]:
            got = targets.shape if isinstance(targets, np.ndarray) else type(targets).__name__
            raise ValueError(f"targets must be an array with one entry per token ({len(tokens)}), got {got}")
        inputs = tokens
    row_len = len(inputs) // batch_size
    if row_len == 0:
        raise ValueError(f"the stream has {len(inputs)} positions, fewer than batch_size = {batch_size}")
    x_rows = inputs[: batch_size * row_len].reshape(batch_size, row_len, *inputs.shape[1:])
    y_rows = targets[: batch_size * row_len].reshape(batch_size, row_len, *targets.shape[1:])
    for start in range(0, row_len, seq_len):
        stop = min(start + seq_len, row_len)
        if drop_last and stop - start < seq_len:
            return
        yield np.ascontiguousarray(x_rows[:, start:stop]), np.ascontiguousarray(y_rows[:, start:stop])


def tbptt_step(
    model: Sequential,
    loss_fn: LossFn,
    optimizer: Optimizer,
    x: np.ndarray,
    y: Any,
    state: ModelState | None = None,
    clip: float | None = None,
    rng: np.random.Generator | None = None,
) -> TBPTTStep:
    """One truncated-BPTT update on one chunk.

    Runs ``model`` forward over ``x`` from ``state`` (the previous chunk's final state; None for
    zeros), takes ``loss, d_out = loss_fn(out, y)``, back-propagates *within the chunk only* (the
    incoming state is a constant: no gradient flows into the previous chunk), optionally clips the
    global gradient norm to ``clip``, and applies ``optimizer.step(model.params, grads)``.

    Args:
        model: a :class:`~rnnkit.layers.sequential.Sequential` (or anything with its forward/backward
            contract); wrap a bare recurrent layer as ``Sequential([("rnn", layer)])``.
        loss_fn: ``(out, y) -> (loss, d_out)``, e.g. :func:`rnnkit.losses.softmax_cross_entropy`.
        optimizer: anything with ``step(params, grads)``, e.g. :class:`rnnkit.optim.Adam`.
        x, y: the chunk's inputs and targets, e.g. from :func:`stream_batches`.
        state: ``{layer_name: state}`` the previous step returned, or None.
        clip: max global L2 norm of the gradient (:func:`rnnkit.clip.clip_grad_norm`), or None.
        rng: the generator the model's dropout masks are drawn from (the forward pass runs with
            ``training=True``); needed only when the model has dropout.

    Returns:
        :class:`TBPTTStep` ``(loss, state, grad_norm)``; ``state`` is the chunk's final state (fresh
        arrays, safe to keep) to pass to the next call.
    """
    # A model with the Sequential contract takes the training flag; a hand-written one may not (and then
    # has no dropout to apply).
    mode = {"training": True, "rng": rng} if "training" in inspect.signature(model.forward).parameters else {}
    out, final_state, cache = model.forward(x, state=state, **mode)
    loss, d_out = loss_fn(out, y)
    # d_state=None: the final state is only carried forward, and the initial state is a constant.
    _, _, grads = model.backward(d_out, None, cache)
    norm = clip_grad_norm(grads, clip) if clip is not None else grad_norm(grads)
    optimizer.step(model.params, grads)
    return TBPTTStep(loss, final_state, norm)
