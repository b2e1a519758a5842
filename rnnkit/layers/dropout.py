"""Dropout: the masks every regularizer of rnnkit draws, and the :class:`Dropout` block for ``Sequential``.

Training and inference are explicit in rnnkit: a layer with any kind of dropout takes
``forward(..., training=False, rng=None)``.  With ``training=False`` (the default) the layer is
deterministic and equal to the same layer without dropout; with ``training=True`` every mask is
drawn from ``rng``, a ``numpy.random.Generator`` the caller owns, so the same generator state gives
the same masks (a checkpoint stores ``rng.bit_generator.state`` and a resumed run draws the same
masks).  There is no hidden train/eval mode in any object.

All masks are *inverted* dropout, as in PyTorch: a kept entry is scaled by ``1/(1-p)`` during
training, so nothing needs rescaling at inference.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numba
import numpy as np

from rnnkit._types import Array, Grads, Params
from rnnkit.layers._checks import check_float_input


def check_probability(name: str, p: Any) -> float:
    """A dropout probability: a real number in ``[0, 1)`` (1 would drop everything)."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not (0.0 <= p < 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}")
    return float(p)


def check_training(training: Any, rng: Any, needs_rng: bool) -> bool:
    """Validate the ``training`` / ``rng`` pair of a forward call; True when masks must be drawn.

    ``rng`` is only required when ``training`` is True and the layer has a non-zero dropout.
    """
    if not isinstance(training, (bool, np.bool_)):
        raise ValueError(f"training must be True or False, got {training!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    if training and needs_rng and rng is None:
        raise ValueError("training=True with dropout needs rng=np.random.default_rng(seed): the masks are "
                         "drawn from a generator you own, so runs are reproducible")
    return bool(training) and needs_rng


_LEVELS = 1 << 16
"""Each entry's uniform is a 16-bit integer: ``p`` acts rounded to a multiple of 2⁻¹⁶."""


def dropout_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float, dtype: Any) -> Array:
    """An inverted-dropout mask: each entry independently 0 (probability ``p``) or ``1/(1-p)``.

    Each entry takes 16 bits of the generator's raw 64-bit output (four entries a draw): an entry
    is dropped when its 16-bit integer is below ``round(p * 2¹⁶)``, so the drop probability is ``p``
    to within 2⁻¹⁷.  A quarter of the generator's work of float32 uniforms, which matters because
    the char-LM draws two masks of B*T*(E+H) entries every step; the same generator state still
    gives the same mask.
    """
    size = int(np.prod(shape, dtype=np.int64))
    words = rng.bit_generator.random_raw((size + 3) // 4)
    mask = np.empty(size, dtype)
    threshold, scale = round(p * _LEVELS), mask.dtype.type(1.0 / (1.0 - p))
    if sys.byteorder == "little":  # lane i of a word is then the word's i-th 16-bit integer in memory
        _expand_lanes(words.view(np.uint16), threshold, scale, mask)
    else:
        _expand_mask(words, threshold, scale, mask)
    return mask.reshape(shape)


@numba.njit(cache=True, nogil=True)
def _expand_mask(words, threshold, scale, mask):
    """``mask[i] = scale`` where the ``i``-th 16-bit lane of ``words`` is at least ``threshold``, else 0
    (lane ``i & 3`` of word ``i >> 2``, counted from the low bits)."""
    zero = scale - scale
    for i in range(mask.shape[0]):
        lane = (words[i >> 2] >> np.uint64(16 * (i & 3))) & np.uint64(0xFFFF)
        mask[i] = scale if lane >= threshold else zero


@numba.njit(cache=True, nogil=True)
def _expand_lanes(lanes, threshold, scale, mask):
    """:func:`_expand_mask` with the lanes already apart (``lanes`` the words viewed as uint16 on a
    little-endian machine): one comparison per entry, which the compiler vectorises."""
    zero = scale - scale
    for i in range(mask.shape[0]):
        mask[i] = scale if lanes[i] >= threshold else zero


class DropoutCache(NamedTuple):
    """What :meth:`Dropout.backward` needs: the mask that was applied (None: the pass was inference)."""

    mask: Array | None  # broadcastable to the input, already scaled by 1/(1-p)


class Dropout:
    """Zero entries of its input at random during training (a feed-forward block for ``Sequential``).

    Args:
        p: probability of dropping an entry, in ``[0, 1)``.
        variational: False: an independent mask per element (``torch.nn.Dropout``).  True: one mask
            per sequence and feature, shared by every time step ("variational" or "locked" dropout,
            Gal & Ghahramani 2016); the input must then be ``(B, T, F)`` and the mask is ``(B, 1, F)``.

    ``forward(x, training=False, rng=None)`` is the identity at inference (``training=False``).
    The block has no parameters (``params == {}``).
    """

    def __init__(self, p: float = 0.5, variational: bool = False) -> None:
        self.p = check_probability("p", p)
        if not isinstance(variational, (bool, np.bool_)):
            raise ValueError(f"variational must be True or False, got {variational!r}")
        self.variational = bool(variational)
        self.params: Params = {}

    def state_dict(self) -> Params:
        """No parameters: an empty dict."""
        return {}

    def load_state_dict(self, state_dict: Any) -> None:
        """Accepts only an empty dict (there are no parameters)."""
        if not isinstance(state_dict, dict) or state_dict:
            raise ValueError(f"Dropout has no parameters; load_state_dict expects {{}}, got {state_dict!r}")

    def forward(
        self, x: Array, *, training: bool = False, rng: np.random.Generator | None = None,
    ) -> tuple[Array, DropoutCache]:
        """Apply the mask (training) or pass ``x`` through (inference).

        Args:
            x: any float array; ``(B, T, F)`` when ``variational``.
            training: draw and apply a mask; False: identity.
            rng: the generator the mask is drawn from (required when training with ``p > 0``).

        Returns:
            ``(out, cache)``: ``out`` a new array of the shape of ``x``.
        """
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"x must be a float NumPy array, got {type(x).__name__}")
        check_float_input("x", x, x.dtype)
        if self.variational and x.ndim != 3:
            raise ValueError(f"variational dropout needs a batch-first sequence (B, T, F), got shape {x.shape}")
        if not check_training(training, rng, self.p > 0):
            return x.copy(), DropoutCache(None)
        assert rng is not None
        shape = (x.shape[0], 1, x.shape[2]) if self.variational else x.shape
        mask = dropout_mask(rng, shape, self.p, x.dtype)
        return x * mask, DropoutCache(mask)

    def backward(self, d_out: Array, cache: DropoutCache) -> tuple[Array, Grads]:
        """``dx = d_out ⊙ mask`` (the mask of the forward pass); no parameter gradients."""
        if not isinstance(cache, DropoutCache):
            raise ValueError("cache must be the cache returned by Dropout.forward")
        if cache.mask is None:
            check_float_input("d_out", d_out, d_out.dtype if isinstance(d_out, np.ndarray) else np.float64)
            return d_out.copy(), {}
        check_float_input("d_out", d_out, cache.mask.dtype)
        if np.broadcast_shapes(d_out.shape, cache.mask.shape) != d_out.shape or d_out.ndim != cache.mask.ndim:
            raise ValueError(f"d_out has shape {d_out.shape}, which does not fit the mask {cache.mask.shape}")
        return d_out * cache.mask, {}

    __call__ = forward

    def __repr__(self) -> str:
        return f"Dropout(p={self.p}, variational={self.variational})"
