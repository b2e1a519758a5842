"""Pooling heads: turn a sequence of outputs ``(B, T, F)`` into one vector per sequence ``(B, F)``.

A sequence classifier is a recurrent layer, a pooling head and a :class:`~rnnkit.layers.Linear`::

    Sequential([("rnn", LSTM(I, H)), ("last", LastStep()), ("head", Linear(H, C))])

Both heads take the batch's ``lengths`` (:class:`~rnnkit.layers.Sequential` passes them on), so the
padding after a sequence's end is never read.  They have no parameters; their backward passes
route the gradient back to exactly the steps the forward pass read (and zero everywhere else).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from rnnkit._types import Array, Grads, IntArray, Params


def _check_x(x: Any) -> Array:
    if not isinstance(x, np.ndarray) or x.ndim != 3 or not np.issubdtype(x.dtype, np.floating):
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"x must be a floating-point array (B, T, F), got {got}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must hold at least one sequence of at least one step, got shape {x.shape}")
    return x


def _check_lengths(lengths: Any, B: int, T: int) -> IntArray:
    """``(B,)`` integers in ``1..T``; None means every sequence has all ``T`` steps."""
    if lengths is None:
        return np.full(B, T, np.int64)
    lengths = np.asarray(lengths)
    if not np.issubdtype(lengths.dtype, np.integer) or lengths.shape != (B,):
        raise ValueError(f"lengths must be an integer array of shape ({B},), got {lengths.dtype} {lengths.shape}")
    if lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must lie in 1..{T} (T = x.shape[1]), got values in "
                         f"{lengths.min()}..{lengths.max()}")
    return lengths.astype(np.int64)


def _check_d_out(d_out: Any, shape: tuple[int, int], dtype: np.dtype[Any]) -> Array:
    if not isinstance(d_out, np.ndarray) or d_out.shape != shape or d_out.dtype != dtype:
        got = f"{d_out.dtype} {d_out.shape}" if isinstance(d_out, np.ndarray) else type(d_out).__name__
        raise ValueError(f"d_out must be a {dtype} array of shape {shape} (the shape of out), got {got}")
    return d_out


class LastStepCache(NamedTuple):
    """What :meth:`LastStep.backward` needs: the input's shape and dtype and the steps that were read."""

    x_shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    steps: IntArray  # (B,) the step each sequence's (forward-direction) output came from


class LastStep:
    """The output at each sequence's last valid step: ``out[b] = x[b, lengths[b] - 1]``, ``(B, T, F) -> (B, F)``.

    Args:
        bidirectional: for the output of a bidirectional layer ``(B, T, 2H)``: the reverse
            direction's last step is step 0 (it reads the sequence backwards), so the first ``H``
            features are taken at ``lengths[b] - 1`` and the last ``H`` at step 0 — together the
            final hidden states of both directions, PyTorch's ``h_n[-2:]``.
    """

    def __init__(self, bidirectional: bool = False) -> None:
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")
        self.bidirectional = bool(bidirectional)
        self.params: Params = {}

    def state_dict(self) -> Params:
        """No parameters: an empty dict."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Accepts only an empty dict (the head has no parameters)."""
        if dict(state_dict):
            raise ValueError(f"load_state_dict: LastStep has no parameters, got keys {sorted(state_dict)}")

    def forward(self, x: Array, lengths: IntArray | None = None) -> tuple[Array, LastStepCache]:
        """Pick each sequence's last valid output.

        Args:
            x: ``(B, T, F)`` outputs of a recurrent layer (F even when ``bidirectional``).
            lengths: ``(B,)`` valid steps per sequence in ``1..T``; None: all ``T``.

        Returns:
            ``(out (B, F), cache)``; ``out`` is a new array.
        """
        x = _check_x(x)
        B, T, F = x.shape
        if self.bidirectional and F % 2:
            raise ValueError(f"bidirectional LastStep needs an even number of features (2H), got {F}")
        steps = _check_lengths(lengths, B, T) - 1
        rows = np.arange(B)
        out = x[rows, steps]  # fancy indexing: a copy
        if self.bidirectional:
            out[:, F // 2 :] = x[:, 0, F // 2 :]
        return out, LastStepCache((B, T, F), x.dtype, steps)

    def backward(self, d_out: Array, cache: LastStepCache) -> tuple[Array, Grads]:
        """Scatter ``d_out`` ``(B, F)`` back to the steps that were read; returns ``(dx (B, T, F), {})``."""
        if not isinstance(cache, LastStepCache):
            raise ValueError("cache must be the cache returned by LastStep.forward")
        B, T, F = cache.x_shape
        d_out = _check_d_out(d_out, (B, F), cache.dtype)
        dx = np.zeros(cache.x_shape, cache.dtype)
        rows = np.arange(B)
        if self.bidirectional:
            half = F // 2
            dx[rows, cache.steps, :half] = d_out[:, :half]
            dx[:, 0, half:] += d_out[:, half:]  # += : a sequence of length 1 reads step 0 for both halves
        else:
            dx[rows, cache.steps] = d_out
        return dx, {}

    __call__ = forward

    def __repr__(self) -> str:
        return f"LastStep(bidirectional={self.bidirectional})"


class MeanPoolCache(NamedTuple):
    """What :meth:`MeanPool.backward` needs: the input's shape and dtype and the lengths."""

    x_shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    lengths: IntArray  # (B,)


class MeanPool:
    """The mean over each sequence's valid steps: ``out[b] = Σ_{t < lengths[b]} x[b, t] / lengths[b]``."""

    def __init__(self) -> None:
        self.params: Params = {}

    def state_dict(self) -> Params:
        """No parameters: an empty dict."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Accepts only an empty dict (the head has no parameters)."""
        if dict(state_dict):
            raise ValueError(f"load_state_dict: MeanPool has no parameters, got keys {sorted(state_dict)}")

    def forward(self, x: Array, lengths: IntArray | None = None) -> tuple[Array, MeanPoolCache]:
        """Average the valid steps of every sequence.

        Args:
            x: ``(B, T, F)``.
            lengths: ``(B,)`` valid steps per sequence in ``1..T``; None: all ``T``.

        Returns:
            ``(out (B, F), cache)``.
        """
        x = _check_x(x)
        B, T, F = x.shape
        lengths = _check_lengths(lengths, B, T)
        valid = (np.arange(T) < lengths[:, None]).astype(x.dtype)  # (B, T)
        # One batched (1, T) @ (T, F) per sequence; padded steps are multiplied by 0, never read as data.
        total = np.matmul(valid[:, None, :], x)[:, 0, :]
        out = total / lengths[:, None].astype(x.dtype)
        return out, MeanPoolCache((B, T, F), x.dtype, lengths)

    def backward(self, d_out: Array, cache: MeanPoolCache) -> tuple[Array, Grads]:
        """``dx[b, t] = d_out[b] / lengths[b]`` on valid steps, 0 on padding; returns ``(dx, {})``."""
        if not isinstance(cache, MeanPoolCache):
            raise ValueError("cache must be the cache returned by MeanPool.forward")
        B, T, F = cache.x_shape
        d_out = _check_d_out(d_out, (B, F), cache.dtype)
        lengths = cache.lengths
        valid = (np.arange(T) < lengths[:, None]).astype(cache.dtype)  # (B, T)
        dx = valid[:, :, None] * (d_out / lengths[:, None].astype(cache.dtype))[:, None, :]
        return dx, {}

    __call__ = forward

    def __repr__(self) -> str:
        return "MeanPool()"
