"""Argument checks shared by the layers: each names the argument and the problem in its message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnkit._finite import all_finite
from rnnkit._types import Array, Params


def check_dtype(dtype: Any) -> np.dtype[Any]:
    """The layers' parameter dtype, float32 or float64, as a ``np.dtype``.

    ``None`` is refused rather than read as NumPy's float64 default: the layers default to float32.
    """
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.float32, np.float64):
        shown = resolved.name if resolved is not None else repr(dtype)
        raise ValueError(f"dtype must be float32 or float64, got {shown}")
    return resolved


def check_size(name: str, value: Any) -> int:
    """A positive integer size argument (``in_features``, ``num_embeddings`` ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def checked_state_dict(
    state_dict: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dtype: np.dtype[Any],
) -> Params:
    """Validate ``state_dict`` against the expected ``shapes`` and return float copies in ``dtype``.

    Every expected key must be present and no other key may appear; every value must be a finite
    floating-point array of the expected shape (NaN or infinite weights are refused: a model that
    holds them can only produce NaN).  The error messages name the offending keys, so a
    failed load says exactly what to fix, and nothing is returned (nor loaded) on failure.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict of arrays, got {type(state_dict).__name__}")
    missing = sorted(set(shapes) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(shapes))
    if missing or unexpected:
        raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
    loaded = {}
    for name, shape in shapes.items():
        value = np.asarray(state_dict[name])
        if value.shape != tuple(shape):
            raise ValueError(f"load_state_dict: {name!r} has shape {value.shape}, expected {tuple(shape)}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"load_state_dict: {name!r} has dtype {value.dtype}, expected a float array")
        converted = np.array(value, dtype=dtype, copy=True)
        if not all_finite(converted):
            raise ValueError(f"load_state_dict: {name!r} contains NaN or infinite values")
        loaded[name] = converted
    return loaded


def check_float_input(name: str, a: Any, dtype: np.dtype[Any], finite: bool = True) -> Array:
    """``a`` must be a finite NumPy array of ``dtype`` (the layer's); returns it, in native byte order.

    ``finite=False`` leaves the scan for NaN and ±inf to the caller, which then does it itself (the
    time loops count them as they read their input a step at a time: see
    :func:`rnnkit.unroll.unroll_forward`'s ``check_finite``).

    Either byte order is accepted (``>f4`` is float32 too), so data read from a big-endian file
    needs no conversion by the caller; a non-native array comes back as a native copy, because the
    compiled time loop reads native arrays only.  Any other array is returned as it is.
    """
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype.newbyteorder("=") != dtype:
        # Suggest building the layer in the input's dtype only where a layer can have that dtype.
        other = a.dtype.newbyteorder("=")
        rebuild = f" or build the layer with dtype=np.{other}" if other in (np.float32, np.float64) else ""
        raise ValueError(
            f"{name} has dtype {a.dtype} but the layer's parameters are {dtype}; "
            f"convert it with .astype(np.{dtype}){rebuild}"
        )
    if finite and not all_finite(a):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
