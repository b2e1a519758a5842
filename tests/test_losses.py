"""Losses against PyTorch (values and gradients), central differences and hand-derived numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.losses import log_softmax, mse, softmax, softmax_cross_entropy

B, T, V, FEAT = 3, 5, 7, 4


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _padding_mask() -> np.ndarray:
    """(B, T) mask of three sequences of lengths 5, 3 and 1 (right padding)."""
    lengths = np.array([5, 3, 1])
    return np.arange(T)[None, :] < lengths[:, None]


def _torch_cross_entropy(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None, reduction: str):
    """Reference loss and gradient: torch's cross_entropy over the selected (valid) tokens."""
    logits_t = torch.tensor(logits, requires_grad=True)
    targets_t = torch.tensor(targets)
    if mask is None:
        selected, selected_targets = logits_t.reshape(-1, logits.shape[-1]), targets_t.reshape(-1)
    else:
        mask_t = torch.tensor(mask)
        selected, selected_targets = logits_t[mask_t], targets_t[mask_t]
    loss = F.cross_entropy(selected, selected_targets, reduction=reduction)
    loss.backward()
    return loss.item(), logits_t.grad.numpy()


# --- softmax helpers ------------------------------------------------------------------------------


def test_softmax_and_log_softmax_match_torch(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(B, T, V)) * 3
    np.testing.assert_allclose(softmax(logits), torch.softmax(torch.tensor(logits), -1).numpy(), atol=1e-14)
    np.testing.assert_allclose(
        log_softmax(logits), torch.log_softmax(torch.tensor(logits), -1).numpy(), atol=1e-13
    )
    np.testing.assert_allclose(
        softmax(logits, axis=0), torch.softmax(torch.tensor(logits), 0).numpy(), atol=1e-14
    )


def test_softmax_is_stable_for_huge_logits() -> None:
    logits = np.array([[1e4, 0.0, -1e4], [1e308, 1e308, 0.0]])
    probs = softmax(logits)
    np.testing.assert_array_equal(probs, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(log_softmax(logits)[0], [0.0, -1e4, -2e4])


def test_softmax_keeps_float32() -> None:
    logits = np.ones((2, 3), dtype=np.float32)
    assert softmax(logits).dtype == np.float32
    assert log_softmax(logits).dtype == np.float32


def test_softmax_rejects_integer_input() -> None:
    with pytest.raises(ValueError, match="logits must have a floating-point dtype"):
        softmax(np.arange(3))


# --- softmax_cross_entropy -----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masked", [False, True])
def test_cross_entropy_matches_torch(rng: np.random.Generator, reduction: str, masked: bool) -> None:
    logits = rng.normal(size=(B, T, V)) * 2
    targets = rng.integers(0, V, size=(B, T))
    mask = _padding_mask() if masked else None
    loss, d_logits = softmax_cross_entropy(logits, targets, mask=mask, reduction=reduction)
    ref_loss, ref_grad = _torch_cross_entropy(logits, targets, mask, reduction)
    assert abs(loss - ref_loss) < 1e-10
    np.testing.assert_allclose(d_logits, ref_grad, rtol=0, atol=1e-10)
    assert d_logits.dtype == np.float64 and d_logits.shape == logits.shape


def test_cross_entropy_sum_is_sum_over_time_of_step_losses(rng: np.random.Generator) -> None:
    # L = sum_t L_t with L_t = -log softmax(z_t)[y_t], computed by hand for a single sequence.
    logits = rng.normal(size=(1, T, V))
    targets = rng.integers(0, V, size=(1, T))
    step_losses = [-(logits[0, t, targets[0, t]] - np.log(np.exp(logits[0, t]).sum())) for t in range(T)]
    loss, _ = softmax_cross_entropy(logits, targets, reduction="sum")
    assert abs(loss - sum(step_losses)) < 1e-12
    mean_loss, _ = softmax_cross_entropy(logits, targets)
    assert abs(mean_loss - sum(step_losses) / T) < 1e-12


def test_cross_entropy_accepts_flat_batch(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(11, V))
    targets = rng.integers(0, V, size=11)
    for reduction in ("mean", "sum"):
        loss, d_logits = softmax_cross_entropy(logits, targets, reduction=reduction)
        ref_loss, ref_grad = _torch_cross_entropy(logits, targets, None, reduction)
        assert abs(loss - ref_loss) < 1e-10
        np.testing.assert_allclose(d_logits, ref_grad, rtol=0, atol=1e-10)


def test_cross_entropy_masked_positions_are_ignored(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(B, T, V))
    targets = rng.integers(0, V, size=(B, T))
    mask = _padding_mask()
    loss, d_logits = softmax_cross_entropy(logits, targets, mask=mask)
    # Padding ids (even out of range) and the logits at masked positions change nothing.
    padded_targets = np.where(mask, targets, -1)
    scrambled_logits = np.where(mask[..., None], logits, 99.0)
    loss2, d_logits2 = softmax_cross_entropy(scrambled_logits, padded_targets, mask=mask)
    assert loss == loss2
    np.testing.assert_array_equal(d_logits, d_logits2)
    assert not d_logits[~mask].any()
    # A 0/1 integer mask means the same as the boolean one.
    loss3, d_logits3 = softmax_cross_entropy(logits, targets, mask=mask.astype(np.int64))
    assert loss == loss3
    np.testing.assert_array_equal(d_logits, d_logits3)


def test_cross_entropy_all_masked_sum_is_zero(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(B, T, V))
    targets = rng.integers(0, V, size=(B, T))
    loss, d_logits = softmax_cross_entropy(logits, targets, mask=np.zeros((B, T), bool), reduction="sum")
    assert loss == 0.0
    assert not d_logits.any()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_gradient_matches_central_differences(rng: np.random.Generator, reduction: str) -> None:
    logits = rng.normal(size=(2, 3, 5))
    targets = rng.integers(0, 5, size=(2, 3))
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=bool)
    _, d_logits = softmax_cross_entropy(logits, targets, mask=mask, reduction=reduction)
    eps = 1e-6
    numeric = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += eps
        minus[index] -= eps
        loss_plus, _ = softmax_cross_entropy(plus, targets, mask=mask, reduction=reduction)
        loss_minus, _ = softmax_cross_entropy(minus, targets, mask=mask, reduction=reduction)
        numeric[index] = (loss_plus - loss_minus) / (2 * eps)
    np.testing.assert_allclose(d_logits, numeric, rtol=1e-7, atol=1e-9)


def test_cross_entropy_extreme_logits_stay_finite() -> None:
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]])
    targets = np.array([0, 2])
    loss, d_logits = softmax_cross_entropy(logits, targets, reduction="sum")
    # Token 0 is predicted with probability 1 (loss 0), token 2 with log-probability -2e4.
    assert loss == pytest.approx(2e4, rel=1e-15)
    np.testing.assert_allclose(d_logits, [[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]], atol=1e-300)
    ref_loss, ref_grad = _torch_cross_entropy(logits, targets, None, "sum")
    assert loss == ref_loss
    np.testing.assert_allclose(d_logits, ref_grad, atol=1e-10)

    float32_loss, float32_grad = softmax_cross_entropy(logits.astype(np.float32), targets)
    assert np.isfinite(float32_loss) and np.all(np.isfinite(float32_grad))


def test_cross_entropy_keeps_float32(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(B, T, V)).astype(np.float32)
    targets = rng.integers(0, V, size=(B, T)).astype(np.int32)
    loss, d_logits = softmax_cross_entropy(logits, targets, mask=_padding_mask())
    assert d_logits.dtype == np.float32
    ref_loss, ref_grad = _torch_cross_entropy(logits, targets.astype(np.int64), _padding_mask(), "mean")
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    np.testing.assert_allclose(d_logits, ref_grad, atol=1e-7)


def _ce_inputs() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((B, T, V)), np.zeros((B, T), dtype=np.int64)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lg, tg: (lg.astype(np.int64), tg, None, "mean"), "logits must have a floating-point dtype"),
        (lambda lg, tg: (lg[0, 0], tg[0, 0], None, "mean"), r"logits must be \(B, T, V\) or \(N, V\)"),
        (lambda lg, tg: (lg[..., :0], tg, None, "mean"), "at least one class"),
        (lambda lg, tg: (lg, tg.astype(np.float64), None, "mean"), "targets must have an integer dtype"),
        (lambda lg, tg: (lg, tg[:, :-1], None, "mean"), "targets shape"),
        (lambda lg, tg: (lg, np.full_like(tg, V), None, "mean"), r"targets must lie in \[0, 7\)"),
        (lambda lg, tg: (lg, np.full_like(tg, -1), None, "mean"), r"targets must lie in \[0, 7\).*-1"),
        (lambda lg, tg: (np.full_like(lg, np.nan), tg, None, "mean"), "logits contains NaN"),
        (lambda lg, tg: (np.full_like(lg, np.inf), tg, None, "mean"), "logits contains inf"),
        (lambda lg, tg: (lg, tg, None, "avg"), "reduction must be one of"),
        (lambda lg, tg: (lg, tg, np.ones((B, T + 1), bool), "mean"), "mask shape"),
        (lambda lg, tg: (lg, tg, np.full((B, T), 2), "mean"), "mask must hold booleans or 0/1"),
        (lambda lg, tg: (lg, tg, np.zeros((B, T), bool), "mean"), "mask selects no position"),
    ],
)
def test_cross_entropy_rejects_bad_input(change, message: str) -> None:
    logits, targets, mask, reduction = change(*_ce_inputs())
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(logits, targets, mask=mask, reduction=reduction)


def test_cross_entropy_rejects_non_arrays() -> None:
    with pytest.raises(TypeError, match="logits must be a NumPy array"):
        softmax_cross_entropy([[0.0, 1.0]], np.array([0]))
    with pytest.raises(TypeError, match="targets must be a NumPy integer array"):
        softmax_cross_entropy(np.zeros((1, 2)), [0])


# --- mse -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masked", [False, True])
def test_mse_matches_torch(rng: np.random.Generator, reduction: str, masked: bool) -> None:
    pred = rng.normal(size=(B, T, FEAT))
    target = rng.normal(size=(B, T, FEAT))
    mask = _padding_mask() if masked else None
    loss, d_pred = mse(pred, target, mask=mask, reduction=reduction)

    pred_t = torch.tensor(pred, requires_grad=True)
    target_t = torch.tensor(target)
    if mask is None:
        ref = F.mse_loss(pred_t, target_t, reduction=reduction)
    else:
        ref = F.mse_loss(pred_t[torch.tensor(mask)], target_t[torch.tensor(mask)], reduction=reduction)
    ref.backward()
    assert abs(loss - ref.item()) < 1e-10
    np.testing.assert_allclose(d_pred, pred_t.grad.numpy(), rtol=0, atol=1e-10)
    assert d_pred.dtype == np.float64


def test_mse_hand_values() -> None:
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    # Squared errors 1, 0, 4, 16; the second row is masked out in the second call.
    loss, d_pred = mse(pred, target, reduction="sum")
    assert loss == 21.0
    np.testing.assert_array_equal(d_pred, [[2.0, 0.0], [4.0, 8.0]])
    loss, d_pred = mse(pred, target, mask=np.array([True, False]))
    assert loss == 0.5
    np.testing.assert_array_equal(d_pred, [[1.0, 0.0], [0.0, 0.0]])


def test_mse_gradient_matches_central_differences(rng: np.random.Generator) -> None:
    pred = rng.normal(size=(2, 3, 2))
    target = rng.normal(size=(2, 3, 2))
    mask = np.array([[1, 0, 1], [1, 1, 0]])
    _, d_pred = mse(pred, target, mask=mask)
    eps = 1e-6
    numeric = np.zeros_like(pred)
    for index in np.ndindex(pred.shape):
        plus, minus = pred.copy(), pred.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (mse(plus, target, mask=mask)[0] - mse(minus, target, mask=mask)[0]) / (2 * eps)
    np.testing.assert_allclose(d_pred, numeric, rtol=1e-7, atol=1e-9)


def test_mse_keeps_float32(rng: np.random.Generator) -> None:
    pred = rng.normal(size=(B, T)).astype(np.float32)
    _, d_pred = mse(pred, np.zeros_like(pred), mask=_padding_mask())
    assert d_pred.dtype == np.float32


@pytest.mark.parametrize(
    ("pred", "target", "mask", "reduction", "message"),
    [
        (np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64), None, "mean", "pred must have a floating"),
        (np.zeros((2, 3)), np.zeros((2, 4)), None, "mean", "target shape"),
        (np.zeros((2, 3)), np.zeros((2, 3), np.float32), None, "mean", "target dtype float32"),
        (np.full((2, 3), np.nan), np.zeros((2, 3)), None, "mean", "pred contains NaN"),
        (np.zeros((2, 3)), np.full((2, 3), np.nan), None, "mean", "target contains NaN"),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3, bool), "mean", "mask shape"),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2, bool), "mean", "mask selects no element"),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.array(["a", "b"]), "mean", "mask must hold booleans"),
        (np.zeros((2, 3)), np.zeros((2, 3)), None, "none", "reduction must be one of"),
    ],
)
def test_mse_rejects_bad_input(pred, target, mask, reduction: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mse(pred, target, mask=mask, reduction=reduction)
