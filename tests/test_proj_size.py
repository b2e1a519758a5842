"""``LSTM(proj_size=P)``: PyTorch's LSTM with projections (``h = W_hr (o ⊙ tanh c)``, ``weight_hr_l{k}``).

Against ``torch.nn.LSTM(proj_size=P)`` with copied weights in float64 to 1e-10 (outputs, final
states, ``dx``, initial-state gradients and every parameter gradient), stacked, bidirectional and
with variable lengths; float64 central differences; names, shapes and the refusals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.gradcheck import gradcheck

B, T, I, H, P = 5, 6, 4, 7, 3  # pairwise distinct, so a mixed-up axis shows
LENGTHS = np.array([4, 1, 5, 3, 4])


def _torch_twin(layer: rnnkit.LSTM) -> Any:
    module = torch.nn.LSTM(layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias,
                           batch_first=True, bidirectional=layer.bidirectional, proj_size=layer.proj_size)
    module = module.to(torch.float64 if layer.dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(module, name).copy_(torch.from_numpy(value))
    return module


def _random_problem(layer: rnnkit.LSTM, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    LD = layer.num_layers * layer.num_directions
    dtype = layer.dtype.type
    return {
        "x": rng.normal(size=(B, T, I)).astype(dtype),
        "h0": rng.uniform(-0.8, 0.8, (LD, B, P)).astype(dtype),
        "c0": rng.uniform(-0.8, 0.8, (LD, B, H)).astype(dtype),
        "w_out": rng.normal(size=(B, T, layer.num_directions * P)).astype(dtype),
        "w_h": rng.normal(size=(LD, B, P)).astype(dtype),
        "w_c": rng.normal(size=(LD, B, H)).astype(dtype),
    }


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
def test_matches_torch_float64(num_layers: int, bidirectional: bool, lengths: np.ndarray | None) -> None:
    layer = rnnkit.LSTM(I, H, num_layers, bidirectional, dtype=np.float64, seed=3, proj_size=P)
    module = _torch_twin(layer)
    pr = _random_problem(layer, seed=4)

    out, (h_n, c_n), cache = layer.forward(pr["x"], (pr["h0"], pr["c0"]), lengths)
    assert out.shape == (B, T, layer.num_directions * P) and h_n.shape[2] == P and c_n.shape[2] == H
    dx, (dh0, dc0), grads = layer.backward(pr["w_out"], (pr["w_h"], pr["w_c"]), cache)

    x_t = torch.tensor(pr["x"], requires_grad=True)
    h0_t, c0_t = (torch.tensor(pr[k], requires_grad=True) for k in ("h0", "c0"))
    if lengths is None:
        out_t, (h_t, c_t) = module(x_t, (h0_t, c0_t))
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=True,
                                                         enforce_sorted=False)
        out_p, (h_t, c_t) = module(packed, (h0_t, c0_t))
        out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=T)
    loss = ((out_t * torch.tensor(pr["w_out"])).sum() + (h_t * torch.tensor(pr["w_h"])).sum()
            + (c_t * torch.tensor(pr["w_c"])).sum())
    loss.backward()

    def close(a: np.ndarray, e: Any, what: str) -> None:
        np.testing.assert_allclose(a, e.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=what)

    close(out, out_t, "out")
    close(h_n, h_t, "h_n")
    close(c_n, c_t, "c_n")
    close(dx, x_t.grad, "dx")
    close(dh0, h0_t.grad, "dh0")
    close(dc0, c0_t.grad, "dc0")
    torch_grads = dict(module.named_parameters())
    assert list(grads) == list(torch_grads)
    for name, g in grads.items():
        close(g, torch_grads[name].grad, name)


def test_float32_matches_torch() -> None:
    layer = rnnkit.LSTM(I, H, 2, True, dtype=np.float32, seed=5, proj_size=P)
    module = _torch_twin(layer)
    pr = _random_problem(layer, seed=6)
    out, (h_n, c_n), _ = layer.forward(pr["x"], (pr["h0"], pr["c0"]), LENGTHS)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(pr["x"]), torch.tensor(LENGTHS),
                                                     batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out_p, (h_t, c_t) = module(packed, (torch.tensor(pr["h0"]), torch.tensor(pr["c0"])))
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=T)
    np.testing.assert_allclose(out, out_t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, h_t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_n, c_t.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradcheck(bidirectional: bool) -> None:
    """Central differences on every parameter, the input and both initial states (with lengths)."""
    layer = rnnkit.LSTM(I, H, 2, bidirectional, dtype=np.float64, seed=7, proj_size=P)
    pr = _random_problem(layer, seed=8)
    arrays = {**layer.params, "x": pr["x"], "h0": pr["h0"], "c0": pr["c0"]}

    def loss() -> float:
        out, (h_n, c_n), _ = layer.forward(pr["x"], (pr["h0"], pr["c0"]), LENGTHS, keep_cache=False)
        return float((out * pr["w_out"]).sum() + (h_n * pr["w_h"]).sum() + (c_n * pr["w_c"]).sum())

    _, _, cache = layer.forward(pr["x"], (pr["h0"], pr["c0"]), LENGTHS)
    dx, (dh0, dc0), grads = layer.backward(pr["w_out"], (pr["w_h"], pr["w_c"]), cache)
    report = gradcheck(loss, arrays, {**grads, "x": dx, "h0": dh0, "c0": dc0}, max_entries=12)
    assert report.max_error < 1e-7, str(report)


def test_names_and_shapes_match_torch() -> None:
    layer = rnnkit.LSTM(I, H, 3, True, proj_size=P, bias=False)
    module = torch.nn.LSTM(I, H, 3, bias=False, batch_first=True, bidirectional=True, proj_size=P)
    assert [(n, p.shape) for n, p in layer.params.items()] == [(n, tuple(p.shape))
                                                             for n, p in module.named_parameters()]


def test_inference_without_cache_equals_training_pass() -> None:
    layer = rnnkit.LSTM(I, H, 2, True, seed=9, proj_size=P)
    x = np.random.default_rng(10).normal(size=(B, T, I)).astype(np.float32)
    out, state, _ = layer.forward(x, lengths=LENGTHS)
    out2, state2, cache = layer.forward(x, lengths=LENGTHS, keep_cache=False)
    assert cache is None
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(state[0], state2[0])
    np.testing.assert_array_equal(state[1], state2[1])


@pytest.mark.parametrize("kwargs,message", [
    (dict(proj_size=7), "smaller than hidden_size"),
    (dict(proj_size=-1), "non-negative integer"),
    (dict(proj_size=1.5), "non-negative integer"),
    (dict(proj_size=True), "non-negative integer"),
])
def test_bad_proj_size_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rnnkit.LSTM(I, H, **kwargs)


def test_proj_size_is_an_lstm_option() -> None:
    from rnnkit.cells import GRU_CELL
    from rnnkit.layers.recurrent import Recurrent
    with pytest.raises(ValueError, match="LSTM option"):
        Recurrent(GRU_CELL, I, H, proj_size=2)


def test_state_of_the_wrong_width_is_refused() -> None:
    layer = rnnkit.LSTM(I, H, proj_size=P)
    x = np.zeros((B, T, I), np.float32)
    with pytest.raises(ValueError, match=r"state\[0\] \(h\) has shape"):
        layer.forward(x, (np.zeros((1, B, H), np.float32), np.zeros((1, B, H), np.float32)))


def test_orthogonal_recurrent_init_is_semi_orthogonal() -> None:
    layer = rnnkit.LSTM(I, H, proj_size=P, init_hh="orthogonal", dtype=np.float64, seed=11)
    for block in np.split(layer.params["weight_hh_l0"], 4):  # (H, P): orthonormal columns
        np.testing.assert_allclose(block.T @ block, np.eye(P), atol=1e-12)
