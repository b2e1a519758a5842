"""The recurrent layers against ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` with copied weights.

Compared: outputs, final states, ``dx``, the gradient with respect to the initial state(s) and every
parameter gradient, in float64 (to 1e-10) and float32 (to 1e-5 relative).  Biases (PyTorch's own
initialisation, never zero) and initial states are random, so a double-counted or dropped bias, or a
dropped initial state, shows.  The loss ``sum(out * W1) + sum(h_n * W2) (+ sum(c_n * W3))`` with
random ``W`` sends gradient down every path.  Variable lengths go through torch's packed sequences
(``pack_padded_sequence(enforce_sorted=False)`` / ``pad_packed_sequence(total_length=T)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import run_torch

# Pairwise distinct sizes, so that a mixed-up axis cannot go unnoticed.
B, T, I, H = 5, 6, 4, 3
LENGTHS = np.array([4, 1, 5, 3, 4])  # unsorted, with a tie and a 1; max < T, so the last step is padding

TOLERANCES = {np.float64: (1e-10, 1e-12), np.float32: (1e-5, 1e-6)}
"""(rtol, atol) per dtype.  atol is scaled by the array's largest entry (when above 1): an entry that
is a sum of terms of size ~5 that nearly cancel carries the rounding error of the terms, not its own."""


def _states(state: Any) -> tuple[np.ndarray, ...]:
    """A layer state as a tuple of arrays (``(h,)`` or ``(h, c)``)."""
    return state if isinstance(state, tuple) else (state,)


def _as_layer_state(arrays: tuple[np.ndarray, ...]) -> Any:
    return arrays if len(arrays) > 1 else arrays[0]


def _assert_matches(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    rtol, atol = TOLERANCES[actual.dtype.type]
    assert actual.shape == expected.shape, what
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def _compare_with_torch(
    layer: Any, module: Any, batch: int, steps: int, lengths: np.ndarray | None, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    dtype = layer.dtype.type
    x = rng.normal(size=(batch, steps, layer.input_size)).astype(dtype)
    state_shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    state = tuple(rng.uniform(-0.8, 0.8, state_shape).astype(dtype) for _ in layer.cell.state_names)
    w_out = rng.normal(size=(batch, steps, layer.num_directions * layer.hidden_size)).astype(dtype)
    w_state = tuple(rng.normal(size=state_shape).astype(dtype) for _ in state)

    out, final, cache = layer.forward(x, _as_layer_state(state), lengths)
    dx, d_state0, grads = layer.backward(w_out, _as_layer_state(w_state), cache)
    t_out, t_final, t_dx, t_d_state0, t_grads = run_torch(module, x, state, lengths, w_out, w_state)

    _assert_matches(out, t_out, "out")
    for k, (a, e) in enumerate(zip(_states(final), t_final, strict=True)):
        _assert_matches(a, e, f"final state {k}")
    _assert_matches(dx, t_dx, "dx")
    for k, (a, e) in enumerate(zip(_states(d_state0), t_d_state0, strict=True)):
        _assert_matches(a, e, f"d_state0 {k}")
    assert grads.keys() == t_grads.keys()
    for name in grads:
        assert grads[name].dtype == dtype
        _assert_matches(grads[name], t_grads[name], name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
def test_matches_torch(
    layer_kind: str, num_layers: int, bidirectional: bool, lengths: np.ndarray | None, dtype: type,
    make_layer: Any, torch_twin: Any,
) -> None:
    layer = make_layer(layer_kind, I, H, num_layers, bidirectional, dtype=dtype, seed=21)
    _compare_with_torch(layer, torch_twin(layer), B, T, lengths, seed=22)


@pytest.mark.parametrize(
    "batch,steps,lengths",
    [(1, 1, None), (1, 7, None), (1, 7, np.array([3])), (4, 1, np.array([1, 1, 1, 1])),
     (3, 5, np.array([5, 5, 5])), (3, 5, np.array([2, 2, 2]))],
    ids=["B1-T1", "B1", "B1-packed", "T1-packed", "all-T", "all-short"],
)
def test_matches_torch_at_the_edges(
    layer_kind: str, batch: int, steps: int, lengths: np.ndarray | None, make_layer: Any, torch_twin: Any
) -> None:
    """One sequence, one step, every length equal (to T or below it): bidirectional two-layer stacks."""
    layer = make_layer(layer_kind, I, H, 2, True, seed=23)
    _compare_with_torch(layer, torch_twin(layer), batch, steps, lengths, seed=24)


def test_matches_torch_over_a_long_sequence(layer_kind: str, make_layer: Any, torch_twin: Any) -> None:
    """T*B = 1150 columns: the input projection runs in several chunks (rnnkit.unroll computes it
    ~512 columns at a time), the last one partial, and the sequences end in different chunks."""
    layer = make_layer(layer_kind, I, H, 2, True, seed=25)
    _compare_with_torch(layer, torch_twin(layer), 5, 230, np.array([230, 100, 57, 150, 1]), seed=26)


def test_parameter_names_order_and_shapes_match_torch(layer_kind: str, make_layer: Any) -> None:
    """Same names, in the same order (what a state dict or an export iterates over), and shapes."""
    layer = make_layer(layer_kind, 7, 5, 3, True, dtype=np.float32)
    cls = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
    module = cls[layer_kind](7, 5, 3, bidirectional=True, batch_first=True)
    torch_shapes = [(name, tuple(p.shape)) for name, p in module.named_parameters()]
    assert [(name, p.shape) for name, p in layer.params.items()] == torch_shapes
    assert list(layer.state_dict()) == [name for name, _ in torch_shapes]
