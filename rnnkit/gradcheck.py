"""Gradient checking: compare an analytic backward pass with central differences.

Use it on anything: a cell, a layer, a model, a loss.  Give a function that computes the scalar
loss from the *current* values of some arrays, the arrays themselves, and the gradients your
backward pass produced for them; :func:`gradcheck` perturbs each entry by ±eps in place (and puts
it back), and reports the worst relative error per array::

    def loss() -> float:
        out, _, _ = layer.forward(x)
        return float((out * w).sum())

    out, _, cache = layer.forward(x)
    dx, _, grads = layer.backward(w, None, cache)
    report = gradcheck(loss, {**layer.params, "x": x}, {**grads, "x": dx})
    assert report.max_error < 1e-7, report

Work in float64: with float32 the rounding error of the difference quotient alone is ~1e-3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rnnkit._types import Array


def relative_error(analytic: Array, numeric: Array) -> float:
    """``max |a - n| / max(|a| + |n|)``, the scale-free error; 0 when both are exactly zero."""
    scale = float(np.max(np.abs(analytic) + np.abs(numeric), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(analytic - numeric))) / scale


def numerical_gradient(
    loss: Callable[[], float],
    array: Array,
    eps: float = 1e-6,
    indices: list[tuple[int, ...]] | None = None,
) -> Array:
    """Central differences ``(L(a + eps) - L(a - eps)) / 2eps`` for each entry of ``array``.

    ``array`` is perturbed in place and restored exactly.  With ``indices`` only those entries are
    computed (the rest of the result is NaN).
    """
    grad = np.full(array.shape, np.nan) if indices is not None else np.empty(array.shape)
    for idx in indices if indices is not None else list(np.ndindex(array.shape)):
        saved = array[idx]
        array[idx] = saved + eps
        plus = float(loss())
        array[idx] = saved - eps
        minus = float(loss())
        array[idx] = saved
        grad[idx] = (plus - minus) / (2.0 * eps)
    return grad


@dataclass
class GradcheckReport:
    """Worst relative error per checked array (see :func:`relative_error`)."""

    errors: dict[str, float] = field(default_factory=dict)
    checked_entries: dict[str, int] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        """The worst relative error over all arrays (0.0 when nothing was checked)."""
        return max(self.errors.values(), default=0.0)

    def __str__(self) -> str:
        rows = [f"  {name:<28} {err:.2e}  ({self.checked_entries[name]} entries)"
                for name, err in self.errors.items()]
        return "gradcheck: worst relative error per array\n" + "\n".join(rows)


def gradcheck(
    loss: Callable[[], float],
    arrays: Mapping[str, Array],
    analytic: Mapping[str, Array],
    eps: float = 1e-6,
    max_entries: int | None = None,
    seed: int = 0,
) -> GradcheckReport:
    """Check ``analytic[name]`` against central differences of ``loss`` for every ``arrays[name]``.

    Args:
        loss: computes the scalar loss from the current contents of ``arrays``.
        arrays: the inputs to perturb (float64 arrays, modified in place and restored).
        analytic: the gradients to check, same keys and shapes as ``arrays``.
        max_entries: check at most this many randomly chosen entries per array (None: all).
    """
    missing = sorted(set(arrays) ^ set(analytic))
    if missing:
        raise ValueError(f"gradcheck: arrays and analytic must have the same keys; differ in {missing}")
    rng = np.random.default_rng(seed)
    report = GradcheckReport()
    for name, array in arrays.items():
        grad = np.asarray(analytic[name])
        if grad.shape != array.shape:
            raise ValueError(f"gradcheck: analytic[{name!r}] has shape {grad.shape}, expected {array.shape}")
        if array.dtype != np.float64:
            raise ValueError(f"gradcheck: {name!r} is {array.dtype}; check gradients in float64")
        indices = None
        if max_entries is not None and array.size > max_entries:
            flat = rng.choice(array.size, size=max_entries, replace=False)
            indices = [tuple(int(i) for i in np.unravel_index(f, array.shape)) for f in flat]
        numeric = numerical_gradient(loss, array, eps, indices)
        if indices is not None:
            sel = tuple(np.array(ix) for ix in zip(*indices, strict=True))
            report.errors[name] = relative_error(grad[sel], numeric[sel])
            report.checked_entries[name] = len(indices)
        else:
            report.errors[name] = relative_error(grad, numeric)
            report.checked_entries[name] = array.size
    return report
