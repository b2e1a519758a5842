"""Gradient clipping, the usual guard against exploding gradients in recurrent networks.

Both functions take a :data:`~rnnkit._types.Grads` dict and follow ``torch.nn.utils``:

* :func:`clip_grad_value` clamps every element to ``[-max_value, max_value]`` (the textbook ``clip``),
  returning a new dict;
* :func:`clip_grad_norm` rescales all arrays together, in place, so that their global norm is at most
  ``max_norm``; it keeps the gradient's direction, which element-wise clipping does not.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from rnnkit._types import Grads

# torch.nn.utils.clip_grad_norm_ adds this to the norm so that a zero gradient never divides by zero.
_NORM_EPS = 1e-6


def clip_grad_value(grads: Grads, max_value: float) -> Grads:
    """Clamp every gradient element to ``[-max_value, max_value]``.

    Args:
        grads: named gradient arrays (floating point, any shapes).
        max_value: positive clipping threshold.

    Returns:
        A new dict with the same keys holding clipped copies (same shapes and dtypes); ``grads`` and its
        arrays are left untouched.  NaN elements stay NaN, as in ``torch.nn.utils.clip_grad_value_``.

    Raises:
        TypeError: ``grads`` is not a dict of NumPy arrays.
        ValueError: ``max_value`` is not a positive finite number, or a gradient is not floating point.
    """
    _check_grads(grads)
    _check_positive(max_value, "max_value")
    # maximum then minimum: what np.clip computes (NaN stays NaN), without its Python wrapper layers,
    # which cost more than the clipping itself for the small arrays of a textbook model.
    return {name: np.minimum(np.maximum(grad, -max_value), max_value) for name, grad in grads.items()}


def grad_norm(grads: Grads, norm_type: float = 2.0) -> float:
    """The global ``norm_type``-norm of all gradients taken as one long vector (what :func:`clip_grad_norm` clips).

    Raises:
        TypeError: ``grads`` is not a dict of NumPy arrays.
        ValueError: ``norm_type`` is not positive, or a gradient is not floating point.
    """
    _check_grads(grads)
    if not isinstance(norm_type, (int, float)) or isinstance(norm_type, bool) or not norm_type > 0:
        raise ValueError(f"norm_type must be a positive number or math.inf, got {norm_type!r}")
    if not grads:
        return 0.0
    if norm_type == 2.0:
        # Squares summed in float64 (float32 gradients with large entries cannot overflow it) in one
        # compiled pass per array, without a float64 copy of every gradient.
        total = 0.0
        for grad in grads.values():
            total += _sum_of_squares(np.ascontiguousarray(grad, dtype=grad.dtype.newbyteorder("=")).reshape(-1))
        return math.sqrt(total)
    # Accumulate in float64 so that float32 gradients with large entries do not overflow the sum.
    flat = [grad.ravel().astype(np.float64, copy=False) for grad in grads.values()]
    if math.isinf(norm_type):
        # np.max, not Python's max: a NaN in any array must give NaN (Python's max ignores a NaN
        # that is not first, because every comparison with it is False).
        return float(np.max([np.max(np.abs(values), initial=0.0) for values in flat]))
    per_array = np.array([np.linalg.norm(values, ord=norm_type) for values in flat])
    return float(np.linalg.norm(per_array, ord=norm_type))


@numba.njit(cache=True, nogil=True)
def _sum_of_squares(values):  # type: ignore[no-untyped-def]
    total = 0.0
    for v in values:
        total += np.float64(v) * np.float64(v)
    return total


def clip_grad_norm(grads: Grads, max_norm: float, norm_type: float = 2.0) -> float:
    """Scale all gradients in place so that their global ``norm_type``-norm is at most ``max_norm``.

    The global norm treats all arrays as one long vector.  As in ``torch.nn.utils.clip_grad_norm_``,
    every array is multiplied by ``min(1, max_norm / (total_norm + 1e-6))``, so gradients already
    within the bound are not changed.

    Args:
        grads: named gradient arrays (floating point, any shapes), modified in place.
        max_norm: positive bound on the global norm.
        norm_type: order of the norm, a positive number or ``math.inf`` (largest absolute element).

    Returns:
        The global norm *before* clipping, as a Python float (``nan``/``inf`` if a gradient holds
        them, so the caller can skip the update).

    Raises:
        TypeError: ``grads`` is not a dict of NumPy arrays.
        ValueError: ``max_norm`` is not a positive finite number, ``norm_type`` is not positive, or a
            gradient is not floating point.
    """
    _check_positive(max_norm, "max_norm")
    total = grad_norm(grads, norm_type)
    scale = max_norm / (total + _NORM_EPS)
    # A NaN norm makes the comparison false and propagates NaN into the gradients, as torch does.
    if not scale >= 1.0:
        for grad in grads.values():
            grad *= scale
    return total


def _check_grads(grads: Grads) -> None:
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of NumPy arrays, got {type(grads).__name__}")
    for name, grad in grads.items():
        if not isinstance(grad, np.ndarray):
            raise TypeError(f"grads[{name!r}] must be a NumPy array, got {type(grad).__name__}")
        if grad.dtype.kind != "f":
            raise ValueError(f"grads[{name!r}] must have a floating-point dtype, got {grad.dtype}")


def _check_positive(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
