"""The layer-normalised LSTM (issue 10, item 5): kernel, layer, save/load, interop refusal, char-LM.

* The compiled step kernels equal the NumPy oracle (tests/numpy_cells.py): float64 to rounding,
  float32 within its precision; also for H = 1 (the cell's LN over one feature gives ĉ = 0) and on
  a prefix of a wider block's columns (what the time loop hands a step).
* The layer equals a hand loop over the oracle cell, one sequence and one step at a time.
* Float64 central differences for every parameter, the input and h0/c0: 1 and 2 layers,
  bidirectional, variable lengths, ``bias=False``, and every dropout kind with its masks fixed.
* PyTorch: the same equations written with torch primitives (``F.layer_norm``, autograd), float64
  to 1e-10 and float32 to 1e-5 relative, outputs and all gradients, with non-zero biases, shifts,
  gains away from 1, and non-zero initial states.
* Save/load round trip, the interop refusals, and the char-LM with ``--cell lnlstm``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy_cells as oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_charlm_train import assert_same_run, config, run, write_words

import rnnkit
from rnnkit import LayerNormLSTM
from rnnkit.cells import LNLSTM_CELL, step_backward, step_forward
from rnnkit.cells._spec import empty_state
from rnnkit.cells.lnlstm import param_slices
from rnnkit.gradcheck import gradcheck

B, T, I, H = 3, 5, 4, 3
LENGTHS = np.array([3, 5, 1])  # unsorted, with a 1


def _perturbed(layer: LayerNormLSTM, seed: int) -> LayerNormLSTM:
    """Gains away from 1 and non-zero biases and shifts (the initial 1s and 0s would hide mistakes)."""
    rng = np.random.default_rng(seed)
    for name, value in layer.params.items():
        if name.startswith("ln_") and "_weight" in name:
            value[:] = 1 + rng.uniform(-0.4, 0.4, value.shape)
        elif name.startswith(("bias", "ln_c_bias")):
            value[:] = rng.uniform(-0.5, 0.5, value.shape)
    return layer


def _layer(num_layers: int = 1, bidirectional: bool = False, dtype: Any = np.float64, seed: int = 0,
           **options: Any) -> LayerNormLSTM:
    return _perturbed(LayerNormLSTM(I, H, num_layers, bidirectional, dtype=dtype, seed=seed, **options), seed + 100)


def _random_state(layer: LayerNormLSTM, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (layer.num_layers * layer.num_directions, batch, H)
    h0, c0 = (rng.uniform(-0.8, 0.8, shape).astype(layer.dtype) for _ in range(2))
    return h0, c0


# --- the kernels equal the NumPy oracle ------------------------------------------------------------

TOL = {np.float64: 1e-12, np.float32: 3e-6}


def _kernel_case(rng: np.random.Generator, hidden: int, n: int, dtype: Any, scale: float = 1.0) -> dict[str, Any]:
    G = 4 * hidden

    def r(*shape: int, s: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * s).astype(dtype)

    p = np.concatenate([1 + r(G, s=0.3), 1 + r(G, s=0.3), r(G, s=0.5), 1 + r(hidden, s=0.3), r(hidden, s=0.5)])
    return {"xp": r(G, n, s=scale), "h_prev": r(hidden, n, s=0.5), "c_prev": r(hidden, n),
            "w_hh": r(G, hidden, s=scale / np.sqrt(hidden)), "p": p.astype(dtype), "dh": r(hidden, n),
            "dc": r(hidden, n)}


def _run_kernels(c: dict[str, Any], hidden: int, n: int, dtype: Any) -> dict[str, np.ndarray]:
    """Forward then backward of one step through the compiled kernels, on fresh arrays."""
    e = empty_state(np.dtype(dtype))
    G = 4 * hidden
    rows_a, rows_b = LNLSTM_CELL.cache_sizes(hidden)
    h, cc, ca, cb = (np.empty(s, dtype) for s in ((hidden, n), (hidden, n), (rows_a, n), (rows_b, n)))
    step_forward(LNLSTM_CELL.kind, c["xp"], np.zeros(G, dtype), np.zeros(0, dtype), c["w_hh"], e, c["p"],
                 c["h_prev"], c["c_prev"], h, cc, ca, cb, 0, hidden)
    dh, dc, d_xp, d_hp = c["dh"].copy(), c["dc"].copy(), np.empty((G, n), dtype), np.empty((G, n), dtype)
    dp = np.full(14 * hidden, 0.25, dtype)  # the kernel adds its step's share to what is there
    step_backward(LNLSTM_CELL.kind, dh, dc, c["h_prev"], c["c_prev"], h, ca, cb, c["w_hh"].T.copy(), e, c["p"], d_xp,
                  d_hp, dp, 0, hidden, dh)
    return {"h": h, "c": cc, "ca": ca, "cb": cb, "dh": dh, "dc": dc, "d_xp": d_xp, "d_hp": d_hp, "dp": dp - 0.25}


def _assert_kernels_equal_oracle(c: dict[str, Any], got: dict[str, np.ndarray], hidden: int, dtype: Any,
                                 tol: float) -> None:
    f64 = {k: np.asarray(v, np.float64) for k, v in c.items()}
    h, cc, saved = oracle.lnlstm_forward(f64["xp"], f64["h_prev"], f64["c_prev"], f64["w_hh"], f64["p"])
    ref = oracle.lnlstm_backward(f64["dh"], f64["dc"], f64["c_prev"], saved, f64["w_hh"], f64["p"])
    G = 4 * hidden

    def close(a: np.ndarray, b: np.ndarray, what: str) -> None:
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())), err_msg=what)

    close(got["h"], h, "h")
    close(got["c"], cc, "c")
    close(got["ca"], np.concatenate([saved["gates"], saved["x_hat"], saved["h_hat"]]), "ca: gates, x̂, ĥ")
    close(got["cb"][: 2 * hidden], np.concatenate([saved["c_hat"], saved["tanh_y"]]), "cb: ĉ, tanh(y)")
    for k, name in enumerate(("r_x", "r_h", "r_c")):
        np.testing.assert_allclose(got["cb"][2 * hidden + k], saved[name], rtol=tol, err_msg=name)
    for name, value in zip(("dh", "dc", "d_xp", "d_hp", "dp"), ref, strict=True):
        close(got[name], value, name)
    assert got["d_xp"].shape == (G, got["h"].shape[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hidden", [5, 1])
def test_kernels_equal_numpy(dtype: Any, hidden: int) -> None:
    c = _kernel_case(np.random.default_rng(hidden), hidden, 4, dtype)
    _assert_kernels_equal_oracle(c, _run_kernels(c, hidden, 4, dtype), hidden, dtype, TOL[dtype])


def test_hidden_size_one_normalises_the_cell_to_its_shift() -> None:
    """LN over a single feature is 0 (variance 0): h = o ⊙ tanh(β_c) and no gradient reaches c through it."""
    c = _kernel_case(np.random.default_rng(7), 1, 3, np.float64)
    got = _run_kernels(c, 1, 3, np.float64)
    assert not got["cb"][0].any()                                    # ĉ = 0
    o = got["ca"][3]
    np.testing.assert_allclose(got["h"][0], o * np.tanh(c["p"][-1]), rtol=1e-14)


@settings(max_examples=25, deadline=None)
@given(hidden=st.integers(1, 9), n=st.integers(1, 6), scale=st.sampled_from([1e-3, 1.0, 30.0]),
       seed=st.integers(0, 2**32 - 1))
def test_kernels_equal_numpy_over_sizes_and_scales(hidden: int, n: int, scale: float, seed: int) -> None:
    """Any size and input scale (layer normalisation removes the scale of W_ih x and W_hh h)."""
    c = _kernel_case(np.random.default_rng(seed), hidden, n, np.float64, scale)
    _assert_kernels_equal_oracle(c, _run_kernels(c, hidden, n, np.float64), hidden, np.float64, 1e-10)


def test_kernels_work_on_a_prefix_of_columns() -> None:
    """The loop hands a step the first n columns of wider blocks: same numbers, nothing written past n."""
    hidden, wide, n = 4, 7, 5
    c = _kernel_case(np.random.default_rng(11), hidden, wide, np.float64)
    e = empty_state(np.dtype(np.float64))
    G = 4 * hidden
    rows_a, rows_b = LNLSTM_CELL.cache_sizes(hidden)
    h, cc, ca, cb = (np.zeros((rows, wide)) for rows in (hidden, hidden, rows_a, rows_b))
    step_forward(LNLSTM_CELL.kind, c["xp"][:, :n], np.zeros(G), np.zeros(0), c["w_hh"], e, c["p"],
                 c["h_prev"][:, :n], c["c_prev"][:, :n], h[:, :n], cc[:, :n], ca[:, :n], cb[:, :n], 0, hidden)
    dh, dc, d_xp, d_hp = c["dh"].copy(), c["dc"].copy(), np.zeros((G, wide)), np.zeros((G, wide))
    dp = np.zeros(14 * hidden)
    step_backward(LNLSTM_CELL.kind, dh[:, :n], dc[:, :n], c["h_prev"][:, :n], c["c_prev"][:, :n], h[:, :n],
                  ca[:, :n], cb[:, :n], c["w_hh"].T.copy(), e, c["p"], d_xp[:, :n], d_hp[:, :n], dp, 0, hidden,
                  dh[:, :n])
    for a in (h, cc, ca, cb, d_xp, d_hp):
        assert not a[:, n:].any()
    np.testing.assert_array_equal(dh[:, n:], c["dh"][:, n:])
    narrow = {k: (v[:, :n] if k not in ("w_hh", "p") else v) for k, v in c.items()}
    _assert_kernels_equal_oracle(narrow, {"h": h[:, :n], "c": cc[:, :n], "ca": ca[:, :n], "cb": cb[:, :n],
                                          "dh": dh[:, :n], "dc": dc[:, :n], "d_xp": d_xp[:, :n],
                                          "d_hp": d_hp[:, :n], "dp": dp}, hidden, np.float64, 1e-12)


# --- the layer equals a hand loop over the oracle cell --------------------------------------------


def _unpack(p: dict[str, np.ndarray], s: str = "_l0") -> np.ndarray:
    """The unit's extra parameters packed as the kernels read them."""
    return np.concatenate([p[f"{name}{s}"] for name in param_slices(H)])


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_layer_equals_a_hand_loop_over_the_oracle(lengths: np.ndarray | None) -> None:
    rng = np.random.default_rng(3)
    layer = _layer(seed=2)
    x = rng.normal(size=(B, T, I))
    h0, c0 = _random_state(layer, B, rng)
    d_out, d_h, d_c = rng.normal(size=(B, T, H)), rng.normal(size=(1, B, H)), rng.normal(size=(1, B, H))
    out, (h_n, c_n), cache = layer.forward(x, (h0, c0), lengths)
    dx, (dh0, dc0), grads = layer.backward(d_out, (d_h, d_c), cache)

    p = layer.params
    w_ih, w_hh, packed = p["weight_ih_l0"], p["weight_hh_l0"], _unpack(p)
    hand = {"weight_ih_l0": np.zeros_like(w_ih), "weight_hh_l0": np.zeros_like(w_hh), "p": np.zeros_like(packed)}
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        h, c = h0[0, b][:, None], c0[0, b][:, None]
        tape = []
        for t in range(n):
            h_new, c_new, saved = oracle.lnlstm_forward(w_ih @ x[b, t][:, None], h, c, w_hh, packed)
            tape.append((h, c, saved))
            np.testing.assert_allclose(out[b, t], h_new[:, 0], rtol=1e-12, atol=1e-14)
            h, c = h_new, c_new
        assert not out[b, n:].any()  # zero past the sequence's end
        np.testing.assert_allclose(h_n[0, b], h[:, 0], rtol=1e-12)
        np.testing.assert_allclose(c_n[0, b], c[:, 0], rtol=1e-12)
        dh, dc = d_h[0, b][:, None], d_c[0, b][:, None]
        for t in reversed(range(n)):
            h_prev, c_prev, saved = tape[t]
            dh = dh + d_out[b, t][:, None]
            dh, dc, d_xp, d_hp, dp = oracle.lnlstm_backward(dh, dc, c_prev, saved, w_hh, packed)
            hand["weight_ih_l0"] += d_xp @ x[b, t][None, :]
            hand["weight_hh_l0"] += d_hp @ h_prev.T
            hand["p"] += dp
            np.testing.assert_allclose(dx[b, t], (w_ih.T @ d_xp)[:, 0], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(dh0[0, b], dh[:, 0], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(dc0[0, b], dc[:, 0], rtol=1e-10, atol=1e-13)
    for name in ("weight_ih_l0", "weight_hh_l0"):
        np.testing.assert_allclose(grads[name], hand[name], rtol=1e-10, atol=1e-13, err_msg=name)
    np.testing.assert_allclose(_unpack(grads), hand["p"], rtol=1e-10, atol=1e-13)


# --- gradient checks (float64 central differences) -------------------------------------------------

GRADCHECK_CASES = {
    "L1": dict(num_layers=1),
    "L1-lengths": dict(num_layers=1, lengths=True),
    "L2": dict(num_layers=2),
    "bi": dict(bidirectional=True),
    "L2-bi-lengths": dict(num_layers=2, bidirectional=True, lengths=True),
    "no-bias": dict(num_layers=2, lengths=True, bias=False),
    "dropout-kinds": dict(num_layers=2, bidirectional=True, lengths=True, dropout=0.3, weight_drop=0.3,
                          recurrent_dropout=0.3, zoneout=0.3, training=True),
    "zoneout-inference": dict(zoneout=0.4, lengths=True),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck(case: str) -> None:
    opts = dict(GRADCHECK_CASES[case])
    lengths = LENGTHS if opts.pop("lengths", False) else None
    training = opts.pop("training", False)
    layer = _layer(opts.pop("num_layers", 1), opts.pop("bidirectional", False), seed=5, **opts)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(B, T, I))
    state = _random_state(layer, B, rng)
    D = layer.num_directions
    w_out, w_h, w_c = rng.normal(size=(B, T, D * H)), rng.normal(size=state[0].shape), rng.normal(size=state[1].shape)

    def forward(keep_cache: bool) -> Any:  # the same masks every time: a generator seeded alike
        return layer.forward(x, state, lengths, keep_cache=keep_cache, training=training,
                             rng=np.random.default_rng(7) if training else None)

    def loss() -> float:
        out, (h_n, c_n), _ = forward(False)
        return float((out * w_out).sum() + (h_n * w_h).sum() + (c_n * w_c).sum())

    _, _, cache = forward(True)
    dx, (dh0, dc0), grads = layer.backward(w_out, (w_h, w_c), cache)
    assert sorted(grads) == sorted(layer.params)
    arrays = {**layer.params, "x": x, "h0": state[0], "c0": state[1]}
    analytic = {**grads, "x": dx, "h0": dh0, "c0": dc0}
    report = gradcheck(loss, arrays, analytic)
    assert report.max_error < 1e-7, str(report)
    for name, g in analytic.items():  # a zero gradient would pass vacuously
        assert np.abs(g).max() > 1e-4, name


# --- PyTorch: the same equations with torch primitives ---------------------------------------------


def _torch_reference(layer: LayerNormLSTM, x: np.ndarray, state: tuple[np.ndarray, np.ndarray],
                     lengths: np.ndarray | None, weights: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """Forward and autograd backward of the layer's equations, written with ``F.layer_norm``, in float64 (the
    values of a float32 layer and inputs are exact in float64: this is the answer they approximate)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def tensor(a: np.ndarray) -> Any:
        return torch.tensor(np.asarray(a, np.float64), requires_grad=True)

    params = {name: tensor(value) for name, value in layer.params.items()}
    x_t = tensor(x)
    h0, c0 = (tensor(s) for s in state)
    batch, steps, _ = x.shape
    lens = torch.tensor(np.full(batch, steps) if lengths is None else lengths)
    layer_in, finals_h, finals_c = x_t, [], []
    for k in range(layer.num_layers):
        outs = []
        for d in range(layer.num_directions):
            s, u = f"_l{k}" + ("_reverse" if d else ""), k * layer.num_directions + d
            h, c = h0[u], c0[u]
            out: list[Any] = [None] * steps
            for t in (range(steps) if d == 0 else reversed(range(steps))):
                valid = (t < lens)[:, None]  # padding: the state stays, the output is 0
                a = (F.layer_norm(layer_in[:, t] @ params[f"weight_ih{s}"].T, (4 * H,),
                                  weight=params[f"ln_ih_weight{s}"], eps=1e-5)
                     + F.layer_norm(h @ params[f"weight_hh{s}"].T, (4 * H,), weight=params[f"ln_hh_weight{s}"],
                                    eps=1e-5)
                     + params[f"bias{s}"])
                i, f, g, o = a.chunk(4, dim=1)
                c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(F.layer_norm(c_new, (H,), weight=params[f"ln_c_weight{s}"],
                                                                   bias=params[f"ln_c_bias{s}"], eps=1e-5))
                h, c = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
                out[t] = torch.where(valid, h_new, torch.zeros_like(h_new))
            outs.append(torch.stack(out, 1))
            finals_h.append(h)
            finals_c.append(c)
        layer_in = torch.cat(outs, 2)
    h_n, c_n = torch.stack(finals_h), torch.stack(finals_c)
    w_out, w_h, w_c = (torch.tensor(np.asarray(w, np.float64)) for w in weights)
    ((layer_in * w_out).sum() + (h_n * w_h).sum() + (c_n * w_c).sum()).backward()
    result = {"out": layer_in, "h_n": h_n, "c_n": c_n, "dx": x_t.grad, "dh0": h0.grad, "dc0": c0.grad,
              **{f"grad {name}": value.grad for name, value in params.items()}}
    return {k: v.detach().numpy() for k, v in result.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", ["L1-full", "L2-bi-lengths"])
def test_matches_torch_primitives(dtype: Any, shape: str) -> None:
    """float64 to 1e-10; float32 to 1e-5 of each array's scale from the exact (float64) answer, which
    torch's own float32 misses by up to 1.5e-5 on these cases (rnnkit's by up to 8e-6)."""
    layers, bidirectional, lengths = (1, False, None) if shape == "L1-full" else (2, True, LENGTHS)
    layer = _layer(layers, bidirectional, dtype=dtype, seed=8)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    state = _random_state(layer, B, rng)
    weights = (rng.normal(size=(B, T, layer.num_directions * H)).astype(dtype),
               *(rng.normal(size=s.shape).astype(dtype) for s in state))
    out, (h_n, c_n), cache = layer.forward(x, state, lengths)
    dx, (dh0, dc0), grads = layer.backward(weights[0], weights[1:], cache)
    ours = {"out": out, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0,
            **{f"grad {name}": g for name, g in grads.items()}}
    theirs = _torch_reference(layer, x, state, lengths, weights)
    assert ours.keys() == theirs.keys()
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (1e-5, 1e-5)
    for name, value in ours.items():
        assert value.dtype == dtype, name
        scale = max(1.0, float(np.abs(theirs[name]).max()))
        np.testing.assert_allclose(value, theirs[name], rtol=rtol, atol=atol * scale, err_msg=name)


# --- threads: the batch split into groups that run the loop at once -------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_three_batch_groups_equal_one(dtype: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each group of the batch adds its share of the gains' and biases' gradients into its own
    accumulator (the groups run in threads at the same time): the sum equals one thread's."""
    from test_batch_groups import _run, _split_available

    monkeypatch.setattr(rnnkit.unroll, "SPLIT_BATCH", True)  # off by default

    if not _split_available():
        pytest.skip("this BLAS cannot run single-threaded per thread")
    batch = 27
    layer = _layer(2, True, dtype=dtype, seed=12, recurrent_dropout=0.2, zoneout=0.1)
    rng = np.random.default_rng(13)
    x = rng.normal(size=(batch, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=batch)
    state = _random_state(layer, batch, rng)
    d_out = rng.normal(size=(batch, T, 2 * H)).astype(dtype)
    with rnnkit.threads(3):
        assert len(rnnkit.unroll.batch_groups(batch, None)) == 3  # the split really happens
    one = _run(layer, x, state, lengths, 1, 14, d_out)
    three = _run(layer, x, state, lengths, 3, 14, d_out)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-6}
    for a, b in zip((three[0], *three[1], three[3]), (one[0], *one[1], one[3]), strict=True):
        np.testing.assert_allclose(a, b, **tol)
    assert three[2].keys() == one[2].keys()
    for name in one[2]:
        np.testing.assert_allclose(three[2][name], one[2][name], err_msg=name, **tol)


# --- the layer's surface ---------------------------------------------------------------------------


def test_parameters_names_shapes_and_initialisation() -> None:
    layer = LayerNormLSTM(I, H, 2, bidirectional=True, seed=0, forget_bias=1.0)
    assert list(layer.params)[:7] == ["weight_ih_l0", "weight_hh_l0", "bias_l0", "ln_ih_weight_l0",
                                      "ln_hh_weight_l0", "ln_c_weight_l0", "ln_c_bias_l0"]
    assert layer.params["weight_ih_l1_reverse"].shape == (4 * H, 2 * H)
    assert layer.params["ln_c_bias_l1_reverse"].shape == (H,)
    for name, value in layer.params.items():
        if name.startswith("ln_") and "_weight" in name:
            assert (value == 1).all(), name
        elif name.startswith("ln_c_bias"):
            assert not value.any(), name
        elif name.startswith("bias"):
            np.testing.assert_array_equal(value, np.repeat([0.0, 1.0, 0.0, 0.0], H))  # i, f, g, o
    assert "bias_l0" not in LayerNormLSTM(I, H, bias=False).params
    orthogonal = LayerNormLSTM(I, H, init_hh="orthogonal", seed=1).params["weight_hh_l0"]
    np.testing.assert_allclose(orthogonal[:H] @ orthogonal[:H].T, np.eye(H), atol=1e-6)


@pytest.mark.parametrize("options,message", [
    (dict(proj_size=2), "proj_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(forget_bias=1.0, bias=False), "forget_bias"),
    (dict(zoneout=-0.1), "zoneout"),
])
def test_unsupported_or_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LayerNormLSTM(I, H, **options)


def test_inference_equals_no_dropout_and_float32_stays_finite_on_large_inputs() -> None:
    plain = LayerNormLSTM(I, H, 2, seed=3)
    regularized = LayerNormLSTM(I, H, 2, seed=3, dropout=0.5, weight_drop=0.5, recurrent_dropout=0.5)
    x = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
    np.testing.assert_array_equal(plain.forward(x)[0], regularized.forward(x)[0])
    out, _, cache = plain.forward(x * 1e4)  # normalisation: a huge input saturates nothing
    assert np.isfinite(out).all() and np.isfinite(plain.backward(np.ones_like(out), None, cache)[0]).all()


def test_backward_refuses_an_lstm_cache_and_a_changed_weight() -> None:
    """The two layers share sizes and state shapes; a cache still belongs to its own layer and weights."""
    x = np.random.default_rng(1).normal(size=(B, T, I))
    lstm, ln = rnnkit.LSTM(I, H, dtype=np.float64), _layer()
    out, _, lstm_cache = lstm.forward(x)
    with pytest.raises(ValueError, match="another layer"):
        ln.backward(out, None, lstm_cache)
    _, _, cache = ln.forward(x)
    ln.params["ln_c_bias_l0"] = ln.params["ln_c_bias_l0"] + 1.0  # replaced after the forward pass
    with pytest.raises(ValueError, match="ln_c_bias_l0|replaced|changed"):
        ln.backward(out, None, cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip(tmp_path: Path, dtype: Any) -> None:
    rnn = _layer(2, True, dtype=dtype, seed=4, dropout=0.1, zoneout=0.2, init_hh="orthogonal")
    model = rnnkit.Sequential([("rnn", rnn), ("last", rnnkit.LastStep(bidirectional=True)),
                               ("head", rnnkit.Linear(2 * H, 2, dtype=dtype, seed=1))])
    rnnkit.save(model, tmp_path / "m.safetensors")
    loaded = rnnkit.load(tmp_path / "m.safetensors")
    twin = loaded.layers["rnn"]
    assert type(twin) is LayerNormLSTM and repr(twin) == repr(rnn)
    assert loaded.params.keys() == model.params.keys()
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
    x = np.random.default_rng(5).normal(size=(B, T, I)).astype(dtype)
    np.testing.assert_array_equal(loaded.forward(x, lengths=LENGTHS)[0], model.forward(x, lengths=LENGTHS)[0])
    with pytest.raises(ValueError, match="missing"):  # an LSTM's weights do not fit
        twin.load_state_dict(rnnkit.LSTM(I, H, 2, bidirectional=True, dtype=dtype).state_dict())


def test_torch_and_onnx_refuse_it(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    layer = LayerNormLSTM(I, H)
    with pytest.raises(TypeError, match="LayerNormLSTM.*torch.nn has no layer-normalised LSTM"):
        rnnkit.to_torch(layer)
    with pytest.raises(TypeError, match="block 'rnn': cannot convert LayerNormLSTM"):
        rnnkit.to_torch(rnnkit.Sequential([("rnn", layer), ("head", rnnkit.Linear(H, 2))]))
    with pytest.raises(TypeError, match="LayerNormLSTM to ONNX: ONNX's LSTM operator has no layer normalisation"):
        rnnkit.export_onnx(layer, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# --- the char-LM -----------------------------------------------------------------------------------


def test_charlm_trains_resumes_exactly_samples_and_refuses_export(tmp_path: Path, capsys: Any) -> None:
    from rnnkit.charlm.model import load_model
    from rnnkit.cli import main

    data = write_words(tmp_path / "words.txt", 110)
    options = dict(cell="lnlstm", layers=2, dropout=0.2, zoneout=0.1, forget_bias=1.0, steps=10)
    straight = run(config(tmp_path, data, "straight", **options))
    assert straight.step == 10
    run(config(tmp_path, data, "split", **{**options, "steps": 5}))
    run(config(tmp_path, data, "split", steps=10, resume=True), explicit={"steps", "resume", "out"})
    assert_same_run(tmp_path / "split", tmp_path / "straight")
    model = load_model(tmp_path / "straight" / "latest.safetensors").model
    assert type(model.net["rnn"]) is LayerNormLSTM and model.net["rnn"].zoneout == 0.1

    capsys.readouterr()
    texts = []
    for _ in range(2):
        assert main(["sample", str(tmp_path / "straight"), "--length", "30", "--seed", "3"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and len(texts[0].strip()) > 0  # the same seed, the same text

    for fmt, suffix in (("onnx", "onnx"), ("torch", "pt")):
        out = tmp_path / f"m.{suffix}"
        assert main(["export", str(tmp_path / "straight"), "--format", fmt, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "LayerNormLSTM" in err, err
        assert not out.exists()


def test_charlm_config_refuses_a_projection() -> None:
    from rnnkit.charlm.model import ModelConfig

    with pytest.raises(ValueError, match="proj_size"):
        ModelConfig(vocab_size=10, cell="lnlstm", proj_size=2)
