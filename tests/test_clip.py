"""Gradient clipping against torch.nn.utils.clip_grad_value_ / clip_grad_norm_ and hand-derived numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnkit.clip import clip_grad_norm, clip_grad_value

SHAPES = {"weight_ih_l0": (8, 3), "weight_hh_l0": (8, 2), "bias_ih_l0": (8,), "bias_hh_l0": (8,)}


def _random_grads(scale: float, seed: int = 0, dtype: type = np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.normal(size=shape) * scale).astype(dtype) for name, shape in SHAPES.items()}


def _torch_params_with_grads(grads: dict[str, np.ndarray]) -> list[torch.nn.Parameter]:
    params = []
    for grad in grads.values():
        param = torch.nn.Parameter(torch.zeros(grad.shape, dtype=torch.float64))
        param.grad = torch.tensor(grad)
        params.append(param)
    return params


# --- clip_grad_value -----------------------------------------------------------------------------


def test_clip_grad_value_matches_torch_and_leaves_input_untouched() -> None:
    grads = _random_grads(scale=2.0)
    originals = {name: grad.copy() for name, grad in grads.items()}
    clipped = clip_grad_value(grads, 1.5)

    params = _torch_params_with_grads(grads)
    torch.nn.utils.clip_grad_value_(params, 1.5)
    assert clipped.keys() == grads.keys()
    for (name, grad), param in zip(clipped.items(), params, strict=True):
        np.testing.assert_array_equal(grad, param.grad.numpy())
        assert grad is not grads[name]
        np.testing.assert_array_equal(grads[name], originals[name])
    # The data has entries on both sides of the threshold, so the comparison above means something.
    assert any(np.abs(g).max() > 1.5 for g in originals.values())
    assert max(np.abs(g).max() for g in clipped.values()) == 1.5


def test_clip_grad_value_hand_values_and_dtype() -> None:
    grads = {"w": np.array([-3.0, -0.5, 0.0, 0.5, 3.0], dtype=np.float32), "b": np.array([np.nan])}
    clipped = clip_grad_value(grads, 1.0)
    np.testing.assert_array_equal(clipped["w"], [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert clipped["w"].dtype == np.float32
    assert np.isnan(clipped["b"][0])


# --- clip_grad_norm ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type: float, max_norm: float) -> None:
    grads = _random_grads(scale=1.0, seed=3)
    params = _torch_params_with_grads(grads)
    ref_total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type).item()

    total = clip_grad_norm(grads, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert abs(total - ref_total) <= 1e-10 * ref_total
    for grad, param in zip(grads.values(), params, strict=True):
        np.testing.assert_allclose(grad, param.grad.numpy(), rtol=1e-10, atol=0)


def test_clip_grad_norm_without_clipping_changes_nothing() -> None:
    grads = _random_grads(scale=0.01, seed=5)
    originals = {name: grad.copy() for name, grad in grads.items()}
    total = clip_grad_norm(grads, max_norm=10.0)
    expected = math.sqrt(sum(float(np.sum(g**2)) for g in originals.values()))
    assert total == pytest.approx(expected, rel=1e-14)
    assert total < 10.0
    for name, grad in grads.items():
        np.testing.assert_array_equal(grad, originals[name])


def test_clip_grad_norm_hand_values() -> None:
    # Global 2-norm of (3, 4) and (12,) is 13; clipping to 6.5 halves every entry (up to the 1e-6 guard).
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]], dtype=np.float64)}
    total = clip_grad_norm(grads, max_norm=6.5)
    assert total == 13.0
    scale = 6.5 / (13.0 + 1e-6)
    np.testing.assert_array_equal(grads["a"], np.array([3.0, 4.0]) * scale)
    np.testing.assert_array_equal(grads["b"], np.array([[12.0]]) * scale)
    # The infinity norm is the largest absolute entry.
    grads = {"a": np.array([-7.0, 2.0]), "b": np.array([5.0])}
    assert clip_grad_norm(grads, max_norm=100.0, norm_type=math.inf) == 7.0


def test_clip_grad_norm_float32_in_place_without_overflow() -> None:
    # Squaring 1e20 overflows float32; the norm is accumulated in float64 instead.
    grads = {"w": np.full(4, 1e20, dtype=np.float32)}
    array_before = grads["w"]
    total = clip_grad_norm(grads, max_norm=1.0)
    assert total == pytest.approx(2e20, rel=1e-6)
    assert grads["w"] is array_before and grads["w"].dtype == np.float32
    np.testing.assert_allclose(grads["w"], np.full(4, 0.5), rtol=1e-6)


def test_clip_grad_norm_reports_non_finite_norm() -> None:
    grads = {"w": np.array([np.nan, 1.0])}
    assert math.isnan(clip_grad_norm(grads, max_norm=1.0))


def test_clip_grad_norm_of_empty_dict_is_zero() -> None:
    assert clip_grad_norm({}, max_norm=1.0) == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_clip_thresholds_must_be_positive(bad: float) -> None:
    grads = _random_grads(scale=1.0)
    with pytest.raises(ValueError, match="max_value must be a positive finite number"):
        clip_grad_value(grads, bad)
    with pytest.raises(ValueError, match="max_norm must be a positive finite number"):
        clip_grad_norm(grads, bad)


@pytest.mark.parametrize("bad", [0.0, -2.0, math.nan])
def test_clip_grad_norm_rejects_bad_norm_type(bad: float) -> None:
    with pytest.raises(ValueError, match="norm_type must be a positive number"):
        clip_grad_norm(_random_grads(scale=1.0), 1.0, norm_type=bad)


def test_clip_rejects_bad_grads() -> None:
    with pytest.raises(ValueError, match=r"grads\['w'\] must have a floating-point dtype"):
        clip_grad_norm({"w": np.arange(3)}, 1.0)
    with pytest.raises(TypeError, match=r"grads\['w'\] must be a NumPy array"):
        clip_grad_value({"w": [1.0, 2.0]}, 1.0)
    with pytest.raises(TypeError, match="grads must be a dict"):
        clip_grad_norm([np.zeros(3)], 1.0)
    with pytest.raises(TypeError, match="max_norm must be a number"):
        clip_grad_norm({"w": np.zeros(3)}, "1.0")
