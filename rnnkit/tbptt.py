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

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rnnkit._types import Array, IntArray
from rnnkit.data import stream_batches
from rnnkit.fit import train_step
from rnnkit.layers.sequential import ModelState, Sequential
from rnnkit.optim import Optimizer

__all__ = ["LossFn", "TBPTTStep", "stream_batches", "tbptt_step"]  # stream_batches lives in rnnkit.data

LossFn = Callable[[Array, Any], tuple[float, Array]]
"""``loss_fn(out, y) -> (loss, d_out)``, e.g. :func:`rnnkit.losses.softmax_cross_entropy`."""


class TBPTTStep(NamedTuple):
    """What one :func:`tbptt_step` returns."""

    loss: float          # the chunk's loss, before the update
    state: ModelState    # the final state of the chunk: pass it to the next chunk's step
    grad_norm: float     # global L2 norm of the gradient before clipping (watch it for explosions)


def tbptt_step(
    model: Sequential,
    loss_fn: LossFn,
    optimizer: Optimizer,
    x: np.ndarray,
    y: Any,
    state: ModelState | None = None,
    clip: float | None = None,
    *,
    lengths: IntArray | None = None,
    mask: npt.ArrayLike | None = None,
    rng: np.random.Generator | None = None,
) -> TBPTTStep:
    """One truncated-BPTT update on one chunk: :func:`rnnkit.fit.train_step` with the state passed in.

    Runs ``model`` forward over ``x`` from ``state`` (the previous chunk's final state; None for
    zeros), takes ``loss, d_out = loss_fn(out, y[, mask])``, back-propagates *within the chunk only*
    (the incoming state is a constant: no gradient flows into the previous chunk), optionally clips
    the global gradient norm to ``clip``, and applies ``optimizer.step(model.params, grads)``.

    Args:
        model: a :class:`~rnnkit.layers.sequential.Sequential` (or anything with its forward/backward
            contract); wrap a bare recurrent layer as ``Sequential([("rnn", layer)])``.
        loss_fn: ``(out, y[, mask]) -> (loss, d_out)``, e.g. :func:`rnnkit.losses.softmax_cross_entropy`.
        optimizer: anything with ``step(params, grads)``, e.g. :class:`rnnkit.optim.Adam`.
        x, y: the chunk's inputs and targets, e.g. from :func:`stream_batches`.
        state: ``{layer_name: state}`` the previous step returned, or None.
        clip: max global L2 norm of the gradient (:func:`rnnkit.clip.clip_grad_norm`), or None.
        lengths: ``(B,)`` valid steps per row (padded chunks): passed to the model, and — for a
            per-step output — the loss is masked to ``t < lengths[b]``.
        mask: an explicit ``(B, T)`` loss mask (True: the position counts); overrides ``lengths``'s.
        rng: the generator the model's dropout masks are drawn from (the forward pass runs with
            ``training=True``); needed only when the model has dropout.

    Returns:
        :class:`TBPTTStep` ``(loss, state, grad_norm)``; ``state`` is the chunk's final state (fresh
        arrays, safe to keep) to pass to the next call.

    Raises:
        FloatingPointError: the loss is NaN or infinite; the update is not applied.
    """
    result = train_step(model, loss_fn, optimizer, x, y, state=state, lengths=lengths, mask=mask, clip=clip,
                        rng=rng)
    return TBPTTStep(result.loss, result.state, result.grad_norm)
