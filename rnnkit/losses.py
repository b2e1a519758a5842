"""Loss functions that return the loss *and* its gradient with respect to their input.

Every loss here has the shape ``loss, d_input = f(input, target, mask=None, reduction="mean")``: the
backward pass of a loss is one line of algebra, so computing it together with the forward pass avoids
keeping a cache around.  The loss is a Python ``float``; the gradient has the input's shape and dtype.

Conventions shared by both losses:

* ``mask`` marks the valid positions (``True``/``1``) of a padded batch; masked positions contribute
  nothing to the loss and get a zero gradient.
* ``reduction="sum"`` adds the per-position losses — for a sequence this is the textbook
  ``L = sum_t L_t`` — and ``reduction="mean"`` divides that sum by the number of valid positions,
  which is what ``torch.nn.functional.cross_entropy`` / ``mse_loss`` compute over the selected elements.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from rnnkit._types import Array, IntArray

Reduction = Literal["mean", "sum"]

_REDUCTIONS = ("mean", "sum")


def log_softmax(logits: Array, axis: int = -1) -> Array:
    """Numerically stable ``log(softmax(logits))`` along ``axis``, in the dtype of ``logits``.

    Subtracting the maximum before exponentiating keeps ``exp`` in ``(0, 1]``, so logits of any
    magnitude give finite results (``log-sum-exp`` trick).
    """
    _check_floating(logits, "logits")
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits: Array, axis: int = -1) -> Array:
    """Numerically stable softmax along ``axis``, in the dtype of ``logits``."""
    _check_floating(logits, "logits")
    exps = np.exp(logits - np.max(logits, axis=axis, keepdims=True))
    return exps / np.sum(exps, axis=axis, keepdims=True)


def softmax_cross_entropy(
    logits: Array,
    targets: IntArray,
    mask: npt.ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> tuple[float, Array]:
    """Cross-entropy of ``softmax(logits)`` against integer class ``targets``, and its gradient.

    Args:
        logits: ``(B, T, V)`` unnormalised scores per time step, or ``(N, V)`` for a flat batch.
        targets: ``(B, T)`` (or ``(N,)``) integer class ids in ``[0, V)``.  Ids at masked positions
            are ignored and may hold any padding value.
        mask: optional ``(B, T)`` (or ``(N,)``) booleans or 0/1 values; ``False``/``0`` positions
            contribute nothing.
        reduction: ``"sum"`` gives ``L = sum_t L_t`` over all valid positions, ``"mean"`` divides it by
            the number of valid positions.

    Returns:
        ``(loss, d_logits)``: the loss as a Python float and ``dL/dlogits`` with the shape and dtype
        of ``logits`` — per position ``softmax(logits) - onehot(target)``, zero where masked, divided by
        the number of valid positions for ``"mean"``.

    Raises:
        TypeError: ``logits`` or ``targets`` is not a NumPy array.
        ValueError: shapes disagree, ``logits`` is not floating point or holds NaN/inf, ``targets`` is
            not integer or out of range, ``mask`` is malformed or (with ``"mean"``) selects nothing,
            or ``reduction`` is unknown.
    """
    _check_reduction(reduction)
    _check_floating(logits, "logits")
    if logits.ndim not in (2, 3):
        raise ValueError(f"logits must be (B, T, V) or (N, V), got shape {logits.shape}")
    if logits.shape[-1] == 0:
        raise ValueError(f"logits must have at least one class (V >= 1), got shape {logits.shape}")
    if not isinstance(targets, np.ndarray):
        raise TypeError(f"targets must be a NumPy integer array, got {type(targets).__name__}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must have an integer dtype, got {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets shape {targets.shape} does not match logits shape {logits.shape} "
            f"(expected {logits.shape[:-1]})"
        )
    _check_finite(logits, "logits")
    valid = _as_mask(mask, targets.shape)
    n_valid = int(np.count_nonzero(valid))
    if reduction == "mean" and n_valid == 0:
        raise ValueError("mask selects no position; the mean over zero tokens is undefined")

    vocab = logits.shape[-1]
    checked = targets[valid]
    if checked.size and (checked.min() < 0 or checked.max() >= vocab):
        bad = checked[(checked < 0) | (checked >= vocab)][0]
        raise ValueError(f"targets must lie in [0, {vocab}) at valid positions, found {bad}")
    # Masked positions may hold padding ids (e.g. -1); gather a harmless id there instead.
    safe_targets = np.where(valid, targets, 0)[..., None]

    log_probs = log_softmax(logits)
    token_loss = -np.take_along_axis(log_probs, safe_targets, axis=-1)[..., 0]
    loss = float(np.sum(token_loss[valid], dtype=np.float64))

    # d(-log p_y)/dz = softmax(z) - onehot(y), row by row; the reshape of a fresh array is a view.
    d_logits = np.exp(log_probs)
    d_rows = d_logits.reshape(-1, vocab)
    d_rows[np.arange(d_rows.shape[0]), safe_targets.ravel()] -= 1
    d_logits *= valid[..., None]
    if reduction == "mean":
        loss /= n_valid
        d_logits /= n_valid
    return loss, d_logits


def mse(
    pred: Array,
    target: Array,
    mask: npt.ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> tuple[float, Array]:
    """Squared error ``(pred - target)**2`` summed or averaged over the valid elements, and its gradient.

    Args:
        pred: any shape, floating point, e.g. ``(B, T, F)`` predictions per time step.
        target: same shape and dtype as ``pred``.
        mask: optional booleans or 0/1 values whose shape is a leading part of ``pred.shape`` (e.g.
            ``(B, T)`` for ``(B, T, F)``); a masked position removes all its trailing elements.
        reduction: ``"sum"`` or ``"mean"``; the mean divides by the number of valid *elements*
            (valid positions times trailing features), as ``torch.nn.functional.mse_loss`` over the
            selected elements does.

    Returns:
        ``(loss, d_pred)``: the loss as a Python float and ``dL/dpred`` with the shape and dtype of
        ``pred``.

    Raises:
        TypeError: ``pred`` or ``target`` is not a NumPy array.
        ValueError: shapes or dtypes disagree, an input is not floating point or holds NaN/inf,
            ``mask`` is malformed or (with ``"mean"``) selects nothing, or ``reduction`` is unknown.
    """
    _check_reduction(reduction)
    _check_floating(pred, "pred")
    _check_floating(target, "target")
    if target.shape != pred.shape:
        raise ValueError(f"target shape {target.shape} does not match pred shape {pred.shape}")
    if target.dtype != pred.dtype:
        raise ValueError(f"target dtype {target.dtype} does not match pred dtype {pred.dtype}")
    _check_finite(pred, "pred")
    _check_finite(target, "target")
    diff = pred - target
    if mask is None:
        n_valid = pred.size
    else:
        mask_shape = np.shape(mask)
        if pred.shape[: len(mask_shape)] != mask_shape:
            raise ValueError(f"mask shape {mask_shape} must be a leading part of pred shape {pred.shape}")
        valid = _as_mask(mask, mask_shape)
        # Each valid position stands for all the trailing elements below it.
        per_position = int(np.prod(pred.shape[valid.ndim :], dtype=np.int64))
        n_valid = int(np.count_nonzero(valid)) * per_position
        diff *= valid.reshape(valid.shape + (1,) * (pred.ndim - valid.ndim))
    if reduction == "mean" and n_valid == 0:
        raise ValueError("mask selects no element; the mean over zero elements is undefined")

    loss = float(np.sum(np.square(diff), dtype=np.float64))
    d_pred = 2 * diff
    if reduction == "mean":
        loss /= n_valid
        d_pred /= n_valid
    return loss, d_pred


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_floating(array: object, name: str) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(array).__name__}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must have a floating-point dtype, got {array.dtype}")


def _check_finite(array: Array, name: str) -> None:
    if not np.all(np.isfinite(array)):
        problem = "NaN" if np.isnan(array).any() else "inf"
        raise ValueError(f"{name} contains {problem}")


def _as_mask(mask: npt.ArrayLike | None, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Validate ``mask`` against ``shape`` and return it as booleans (all ``True`` when absent)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask_array = np.asarray(mask)
    if mask_array.shape != shape:
        raise ValueError(f"mask shape {mask_array.shape} does not match expected shape {shape}")
    if mask_array.dtype != np.bool_:
        if not (np.issubdtype(mask_array.dtype, np.number) and np.isin(mask_array, (0, 1)).all()):
            raise ValueError(f"mask must hold booleans or 0/1 values, got dtype {mask_array.dtype}")
        mask_array = mask_array.astype(bool)
    return mask_array
