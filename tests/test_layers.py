"""The recurrent layers on their own: central differences, a hand loop over the cell, a hand-built
stack, behaviour (lengths, caches, dtypes, seeds, state dicts, truncated BPTT) and input validation.

The comparison with PyTorch is in ``test_layers_vs_torch.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rnnkit import GRU, LSTM, RNN
from rnnkit.cells import CellSpec
from rnnkit.gradcheck import gradcheck
from rnnkit.layers import Recurrent

# Tiny sizes for the gradient checks (every entry of every array is perturbed).
GB, GT, GI, GH = 3, 4, 3, 4
G_LENGTHS = np.array([2, 4, 1])  # unsorted, includes both ends of 1..T

# Pairwise distinct sizes elsewhere, so that a transposed or mixed-up axis cannot go unnoticed.
B, T, I, H = 4, 6, 5, 3
LENGTHS = np.array([4, 1, 6, 3])


# --- helpers --------------------------------------------------------------------------------------


def _states(state: Any) -> tuple[np.ndarray, ...]:
    """A layer state as a tuple of arrays (``(h,)`` or ``(h, c)``)."""
    return state if isinstance(state, tuple) else (state,)


def _as_layer_state(arrays: tuple[np.ndarray, ...]) -> Any:
    return arrays if len(arrays) > 1 else arrays[0]


def _loss_weights(
    layer: Recurrent, batch: int, steps: int, rng: np.random.Generator
) -> tuple[np.ndarray, Any]:
    """Random weights for loss = sum(out * w_out) + sum(h_n * w_h) (+ sum(c_n * w_c))."""
    w_out = rng.normal(size=(batch, steps, layer.num_directions * layer.hidden_size)).astype(layer.dtype)
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    w_state = tuple(rng.normal(size=shape).astype(layer.dtype) for _ in layer.cell.state_names)
    return w_out, _as_layer_state(w_state)


def _weighted_sum(out: np.ndarray, state: Any, w_out: np.ndarray, w_state: Any) -> float:
    total = float(np.sum(out * w_out))
    for s, w in zip(_states(state), _states(w_state), strict=True):
        total += float(np.sum(s * w))
    return total


def _assert_close(actual: Any, expected: Any, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """Compare two arrays, or two states (tuples of arrays), entry by entry."""
    for a, e in zip(_states(actual), _states(expected), strict=True):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def _reverse_within(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reverse each batch-first sequence ``a[b]`` in time within its first ``lengths[b]`` steps."""
    out = a.copy()
    for b, n in enumerate(lengths):
        out[b, :n] = a[b, :n][::-1]
    return out


# --- gradient checks against central differences --------------------------------------------------


@pytest.mark.parametrize("lengths", [None, G_LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
def test_gradcheck_every_parameter_input_and_initial_state(
    layer_kind: str, num_layers: int, bidirectional: bool, lengths: np.ndarray | None,
    make_layer: Any, random_state: Any,
) -> None:
    rng = np.random.default_rng(11)
    layer = make_layer(layer_kind, GI, GH, num_layers, bidirectional, seed=5)
    x = rng.normal(size=(GB, GT, GI))
    state = random_state(layer, GB, rng)
    w_out, w_state = _loss_weights(layer, GB, GT, rng)

    def loss() -> float:
        # keep_cache=False here: the inference path must compute the same function.
        out, final, _ = layer.forward(x, state, lengths, keep_cache=False)
        return _weighted_sum(out, final, w_out, w_state)

    _, _, cache = layer.forward(x, state, lengths)
    dx, d_state0, grads = layer.backward(w_out, w_state, cache)
    names = [f"state0_{n}" for n in layer.cell.state_names]
    arrays = {**layer.params, "x": x, **dict(zip(names, _states(state), strict=True))}
    analytic = {**grads, "x": dx, **dict(zip(names, _states(d_state0), strict=True))}
    report = gradcheck(loss, arrays, analytic)
    assert report.max_error < 1e-7, report
    # Every array got a non-trivial gradient (a zero one would pass the check vacuously).
    for name, g in analytic.items():
        assert np.abs(g).max() > 1e-3, name


# --- the layer equals a hand loop over the cell, and a hand-built stack ---------------------------


def _hand_loop_forward(
    cell: CellSpec, p: dict[str, np.ndarray], x_seq: np.ndarray, state0: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, tuple[np.ndarray, ...], list[tuple[Any, ...]]]:
    """One sequence ``x_seq`` ``(n, I)`` through the cell's step function, one column, one step at a time."""
    w_ih, w_hh = p["weight_ih_l0"], p["weight_hh_l0"]
    hidden = w_hh.shape[1]
    b_x, b_in = cell.split_bias(p["bias_ih_l0"], p["bias_hh_l0"])
    prev = tuple(s[:, None].copy() for s in state0)
    outs, tape = [], []
    for x_t in x_seq:
        xp = w_ih @ x_t[:, None] + b_x[:, None]
        new = tuple(np.empty((hidden, 1)) for _ in prev)
        step_cache = cell.cache_type(*(np.empty((rows * hidden, 1)) for rows in cell.cache_rows if rows))
        cell.forward(xp, prev, new, step_cache, w_hh, b_in)
        tape.append((x_t, prev, new, step_cache))
        outs.append(new[0][:, 0].copy())
        prev = new
    return np.array(outs), tuple(s[:, 0] for s in prev), tape


def _hand_loop_backward(
    cell: CellSpec, p: dict[str, np.ndarray], tape: list[tuple[Any, ...]], d_out: np.ndarray,
    d_final: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict[str, np.ndarray]]:
    """BPTT through :func:`_hand_loop_forward`, weight gradients accumulated step by step."""
    w_ih, w_hh = p["weight_ih_l0"], p["weight_hh_l0"]
    grads = {name: np.zeros_like(value) for name, value in p.items()}
    d = tuple(g[:, None].copy() for g in d_final)
    dx = np.zeros((len(tape), w_ih.shape[1]))
    for t in reversed(range(len(tape))):
        x_t, prev, new, step_cache = tape[t]
        d[0][:, 0] += d_out[t]
        d_xp = np.empty((w_hh.shape[0], 1))
        d_hp = np.empty((w_hh.shape[0], 1)) if cell.separate_hidden_grad else d_xp
        cell.backward(d, prev, new, step_cache, w_hh.T, d_xp, d_hp)  # (the kernels read W_hhᵀ)
        grads["weight_ih_l0"] += d_xp @ x_t[None, :]
        grads["weight_hh_l0"] += d_hp @ prev[0].T
        grads["bias_ih_l0"] += d_xp[:, 0]
        grads["bias_hh_l0"] += d_hp[:, 0]
        dx[t] = (w_ih.T @ d_xp)[:, 0]
    return dx, tuple(g[:, 0] for g in d), grads


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_layer_equals_a_hand_loop_over_the_cell(
    layer_kind: str, lengths: np.ndarray | None, make_layer: Any, random_state: Any
) -> None:
    rng = np.random.default_rng(3)
    layer = make_layer(layer_kind, I, H, seed=2)
    x = rng.normal(size=(B, T, I))
    state = random_state(layer, B, rng)
    d_out, d_state = _loss_weights(layer, B, T, rng)
    out, final, cache = layer.forward(x, state, lengths)
    dx, d_state0, grads = layer.backward(d_out, d_state, cache)

    lens = np.full(B, T) if lengths is None else lengths
    exp_out, exp_dx = np.zeros((B, T, H)), np.zeros((B, T, I))
    exp_final = tuple(np.zeros_like(s) for s in _states(final))
    exp_d_state0 = tuple(np.zeros_like(s) for s in _states(d_state0))
    exp_grads = {name: np.zeros_like(value) for name, value in layer.params.items()}
    for b, n in enumerate(lens):
        # Each sequence alone, for exactly its own length: no masks, no sorting, no packing.
        outs, fin, tape = _hand_loop_forward(layer.cell, layer.params, x[b, :n],
                                             tuple(s[0, b] for s in _states(state)))
        exp_out[b, :n] = outs
        d_fin = tuple(d[0, b] for d in _states(d_state))
        dxb, ds0, g = _hand_loop_backward(layer.cell, layer.params, tape, d_out[b, :n], d_fin)
        exp_dx[b, :n] = dxb
        for k in range(len(fin)):
            exp_final[k][0, b] = fin[k]
            exp_d_state0[k][0, b] = ds0[k]
        for name in g:
            exp_grads[name] += g[name]

    _assert_close(out, exp_out)
    _assert_close(final, exp_final)
    _assert_close(dx, exp_dx)
    _assert_close(d_state0, exp_d_state0)
    assert grads.keys() == exp_grads.keys()
    for name in grads:
        _assert_close(grads[name], exp_grads[name])


def _unit_state(state: Any, u: int) -> Any:
    return _as_layer_state(tuple(s[u : u + 1] for s in _states(state)))


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_stacked_bidirectional_equals_composition_of_single_layers(
    layer_kind: str, lengths: np.ndarray | None, make_layer: Any, random_state: Any
) -> None:
    L = 2
    rng = np.random.default_rng(4)
    layer = make_layer(layer_kind, I, H, L, True, seed=8)
    x = rng.normal(size=(B, T, I))
    state = random_state(layer, B, rng)
    d_out, d_state = _loss_weights(layer, B, T, rng)
    out, final, cache = layer.forward(x, state, lengths)
    dx, d_state0, grads = layer.backward(d_out, d_state, cache)

    lens = np.full(B, T) if lengths is None else lengths
    units = {}
    for lyr in range(L):
        for direction, suffix in enumerate(["", "_reverse"]):
            unit = make_layer(layer_kind, I if lyr == 0 else 2 * H, H, 1, False, seed=99)
            unit.load_state_dict({f"{kind}_l0": layer.params[f"{kind}_l{lyr}{suffix}"]
                                  for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            units[lyr, direction] = unit

    # Forward by hand: the reverse unit reads each sequence reversed within its length.
    inp, finals, caches = x, [], {}
    for lyr in range(L):
        out_f, fin_f, caches[lyr, 0] = units[lyr, 0].forward(inp, _unit_state(state, 2 * lyr), lengths)
        out_b, fin_b, caches[lyr, 1] = units[lyr, 1].forward(
            _reverse_within(inp, lens), _unit_state(state, 2 * lyr + 1), lengths)
        finals += [fin_f, fin_b]
        inp = np.concatenate([out_f, _reverse_within(out_b, lens)], axis=2)
    exp_final = tuple(np.concatenate([_states(f)[k] for f in finals]) for k in range(len(_states(final))))
    _assert_close(out, inp)
    _assert_close(final, exp_final)

    # Backward by hand, top layer first; the two directions' input gradients add up.
    d_top, d_state0_units, exp_grads = d_out, [None] * (2 * L), {}
    for lyr in reversed(range(L)):
        d_in = np.zeros((B, T, I if lyr == 0 else 2 * H))
        for direction, suffix in enumerate(["", "_reverse"]):
            d_o = d_top[..., direction * H : (direction + 1) * H]
            if direction:
                d_o = _reverse_within(d_o, lens)
            u = 2 * lyr + direction
            unit, unit_cache = units[lyr, direction], caches[lyr, direction]
            d_x, d_s0, g = unit.backward(d_o, _unit_state(d_state, u), unit_cache)
            d_in += _reverse_within(d_x, lens) if direction else d_x
            d_state0_units[u] = d_s0
            exp_grads.update({name.replace("_l0", f"_l{lyr}{suffix}"): value for name, value in g.items()})
        d_top = d_in
    _assert_close(dx, d_top)
    exp_d_state0 = tuple(np.concatenate([_states(d)[k] for d in d_state0_units])
                         for k in range(len(_states(final))))
    _assert_close(d_state0, exp_d_state0)
    assert grads.keys() == exp_grads.keys()
    for name in grads:
        _assert_close(grads[name], exp_grads[name])


# --- behaviour ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_outputs_and_input_gradients_past_a_sequence_end_are_exactly_zero(
    layer_kind: str, bidirectional: bool, make_layer: Any, random_state: Any
) -> None:
    rng = np.random.default_rng(5)
    layer = make_layer(layer_kind, I, H, 2, bidirectional, dtype=np.float32)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    state = random_state(layer, B, rng)
    out, _, cache = layer.forward(x, state, LENGTHS)
    dx, _, _ = layer.backward(np.ones_like(out), None, cache)
    for b, n in enumerate(LENGTHS):
        assert np.all(out[b, n:] == 0.0)
        assert np.all(dx[b, n:] == 0.0)
        assert np.abs(out[b, :n]).sum() > 0.0  # and the valid part is not (the check above can fail)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_padded_sequence_equals_the_sequence_run_alone(
    layer_kind: str, bidirectional: bool, make_layer: Any, random_state: Any
) -> None:
    rng = np.random.default_rng(6)
    layer = make_layer(layer_kind, I, H, 2, bidirectional)
    x = rng.normal(size=(B, T, I))
    state = random_state(layer, B, rng)
    # Garbage past each end must not leak into anything.
    x_padded = x.copy()
    for b, n in enumerate(LENGTHS):
        x_padded[b, n:] = 1e3 * rng.normal(size=(T - n, I))
    out, final, _ = layer.forward(x_padded, state, LENGTHS)
    for b, n in enumerate(LENGTHS):
        alone_state = _as_layer_state(tuple(s[:, b : b + 1] for s in _states(state)))
        out_b, final_b, _ = layer.forward(x[b : b + 1, :n], alone_state)
        _assert_close(out[b : b + 1, :n], out_b)
        _assert_close(_as_layer_state(tuple(s[:, b : b + 1] for s in _states(final))), final_b)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lengths_all_T_equals_no_lengths(
    layer_kind: str, bidirectional: bool, make_layer: Any, random_state: Any
) -> None:
    rng = np.random.default_rng(7)
    layer = make_layer(layer_kind, I, H, 2, bidirectional)
    x = rng.normal(size=(B, T, I))
    state = random_state(layer, B, rng)
    d_out, d_state = _loss_weights(layer, B, T, rng)
    results = []
    for lengths in (None, np.full(B, T)):
        out, final, cache = layer.forward(x, state, lengths)
        results.append((out, final, *layer.backward(d_out, d_state, cache)))
    (out0, fin0, dx0, ds0, g0), (out1, fin1, dx1, ds1, g1) = results
    _assert_close(out1, out0)
    _assert_close(fin1, fin0)
    _assert_close(dx1, dx0)
    _assert_close(ds1, ds0)
    for name in g0:
        _assert_close(g1[name], g0[name])


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_keep_cache_false_gives_identical_results_and_no_cache(
    layer_kind: str, lengths: np.ndarray | None, make_layer: Any, random_state: Any
) -> None:
    rng = np.random.default_rng(8)
    layer = make_layer(layer_kind, I, H, 2, True, dtype=np.float32)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    state = random_state(layer, B, rng)
    out, final, cache = layer.forward(x, state, lengths)
    out_nc, final_nc, cache_nc = layer.forward(x, state, lengths, keep_cache=False)
    assert cache is not None and cache_nc is None
    np.testing.assert_array_equal(out_nc, out)
    for s_nc, s in zip(_states(final_nc), _states(final), strict=True):
        np.testing.assert_array_equal(s_nc, s)


def test_float32_is_the_default_and_float64_is_kept_throughout(layer_kind: str, make_layer: Any) -> None:
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        if dtype == np.float32:
            # The default, not passed: build through the public classes directly.
            layer = {"rnn_tanh": RNN(I, H), "rnn_relu": RNN(I, H, nonlinearity="relu"),
                     "lstm": LSTM(I, H), "gru": GRU(I, H)}[layer_kind]
        else:
            layer = make_layer(layer_kind, I, H, dtype=dtype)
        assert layer.dtype == dtype
        x = rng.normal(size=(B, T, I)).astype(dtype)
        out, final, cache = layer.forward(x, None, LENGTHS)
        dx, d_state0, grads = layer.backward(np.ones_like(out), None, cache)
        arrays = [*layer.params.values(), out, *_states(final), dx, *_states(d_state0), *grads.values()]
        assert all(a.dtype == dtype for a in arrays)


def test_seed_makes_parameters_reproducible(layer_kind: str, make_layer: Any) -> None:
    a = make_layer(layer_kind, I, H, 2, True, dtype=np.float32, seed=42)
    b = make_layer(layer_kind, I, H, 2, True, dtype=np.float32, seed=42)
    c = make_layer(layer_kind, I, H, 2, True, dtype=np.float32, seed=43)
    assert a.params.keys() == b.params.keys() == c.params.keys()
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        assert not np.array_equal(a.params[name], c.params[name]), name


def test_initialisation_is_uniform_within_one_over_sqrt_hidden(layer_kind: str, make_layer: Any) -> None:
    hidden = 16
    layer = make_layer(layer_kind, 8, hidden, 2, True, dtype=np.float32, seed=0)
    bound = 1.0 / np.sqrt(hidden)
    values = np.concatenate([p.ravel() for p in layer.params.values()])
    assert np.abs(values).max() <= np.float32(bound)
    # It fills the interval (not, say, a tenth of it, or only one sign).
    assert values.min() < -0.95 * bound and values.max() > 0.95 * bound
    assert abs(values.mean()) < 0.05 * bound
    for p in layer.params.values():
        assert np.abs(p).max() > 0.5 * bound  # every array is initialised, biases included


def test_state_dict_round_trip(layer_kind: str, make_layer: Any, random_state: Any) -> None:
    rng = np.random.default_rng(10)
    a = make_layer(layer_kind, I, H, 2, True, seed=1)
    b = make_layer(layer_kind, I, H, 2, True, seed=2)
    x = rng.normal(size=(B, T, I))
    state = random_state(a, B, rng)
    sd = a.state_dict()
    assert sd.keys() == a.params.keys()
    b.load_state_dict(sd)
    out_a, fin_a, _ = a.forward(x, state, LENGTHS)
    out_b, fin_b, _ = b.forward(x, state, LENGTHS)
    np.testing.assert_array_equal(out_b, out_a)
    for sb, sa in zip(_states(fin_b), _states(fin_a), strict=True):
        np.testing.assert_array_equal(sb, sa)
    # Both directions copy: changing the dict afterwards, or the layer, touches nothing else.
    name = next(iter(sd))
    original = sd[name].copy()
    sd[name] += 1.0
    a.params[name] += 2.0
    np.testing.assert_array_equal(b.params[name], original)
    np.testing.assert_array_equal(a.state_dict()[name], original + 2.0)


def test_load_state_dict_names_missing_unexpected_and_misshaped_keys(
    layer_kind: str, make_layer: Any
) -> None:
    layer = make_layer(layer_kind, I, H, 2, True)
    before = layer.state_dict()
    sd = layer.state_dict()
    del sd["weight_hh_l1_reverse"]
    with pytest.raises(ValueError, match=r"missing.*weight_hh_l1_reverse"):
        layer.load_state_dict(sd)
    sd = {**layer.state_dict(), "weight_ih_l2": np.zeros((1, 1))}
    with pytest.raises(ValueError, match=r"unexpected.*weight_ih_l2"):
        layer.load_state_dict(sd)
    sd = layer.state_dict()
    sd["bias_ih_l0"] = sd["bias_ih_l0"][:-1]
    with pytest.raises(ValueError, match=r"bias_ih_l0.*shape"):
        layer.load_state_dict(sd)
    sd = layer.state_dict()
    sd["weight_ih_l0"] = sd["weight_ih_l0"].T.copy()  # transposed: right size, wrong shape
    with pytest.raises(ValueError, match=r"weight_ih_l0.*shape"):
        layer.load_state_dict(sd)
    sd = layer.state_dict()
    sd["bias_hh_l1"] = np.zeros(sd["bias_hh_l1"].shape, dtype=np.int64)
    with pytest.raises(ValueError, match=r"bias_hh_l1.*dtype"):
        layer.load_state_dict(sd)
    # A failed load changes nothing.
    for name, value in before.items():
        np.testing.assert_array_equal(layer.params[name], value)


def test_truncated_bptt_chunks_with_the_state_passed_on_equal_one_run(
    layer_kind: str, make_layer: Any, random_state: Any
) -> None:
    rng = np.random.default_rng(12)
    layer = make_layer(layer_kind, I, H, 2, False)
    x = rng.normal(size=(B, T, I))
    state = random_state(layer, B, rng)
    d_out, d_state = _loss_weights(layer, B, T, rng)
    out, final, cache = layer.forward(x, state)
    dx, d_state0, grads = layer.backward(d_out, d_state, cache)

    cut = 2
    out1, mid, cache1 = layer.forward(x[:, :cut], state)
    out2, final2, cache2 = layer.forward(x[:, cut:], mid)
    _assert_close(np.concatenate([out1, out2], axis=1), out)
    _assert_close(final2, final)
    # Gradients compose the same way: the second chunk's d_state0 is the first chunk's d_state.
    dx2, d_mid, grads2 = layer.backward(d_out[:, cut:], d_state, cache2)
    dx1, d_state0_1, grads1 = layer.backward(d_out[:, :cut], d_mid, cache1)
    _assert_close(np.concatenate([dx1, dx2], axis=1), dx)
    _assert_close(d_state0_1, d_state0)
    for name in grads:
        _assert_close(grads1[name] + grads2[name], grads[name])


def test_forward_and_backward_leave_their_inputs_and_the_cache_alone(
    layer_kind: str, make_layer: Any, random_state: Any
) -> None:
    """Nothing is modified in place: backward can run twice on one cache, two passes can be in flight."""
    rng = np.random.default_rng(13)
    layer = make_layer(layer_kind, I, H, 2, True)
    x = rng.normal(size=(B, T, I))
    state = random_state(layer, B, rng)
    d_out, d_state = _loss_weights(layer, B, T, rng)
    copies = [a.copy() for a in (x, *_states(state), d_out, *_states(d_state))]
    out, final, cache = layer.forward(x, state, LENGTHS)
    first = layer.backward(d_out, d_state, cache)
    # Another forward pass in between, then the first cache again.
    layer.forward(rng.normal(size=(B, T, I)), random_state(layer, B, rng))
    second = layer.backward(d_out, d_state, cache)
    for a, b in zip(first[:2], second[:2], strict=True):
        for sa, sb in zip(_states(a), _states(b), strict=True):
            np.testing.assert_array_equal(sa, sb)
    for name in first[2]:
        np.testing.assert_array_equal(first[2][name], second[2][name])
    for a, c in zip((x, *_states(state), d_out, *_states(d_state)), copies, strict=True):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("batch,hidden,inputs", [(4, 3, 5), (1, 3, 5), (1, 1, 1)])
def test_the_cache_shares_no_memory_with_the_callers_arrays(
    layer_kind: str, batch: int, hidden: int, inputs: int, make_layer: Any, random_state: Any
) -> None:
    """Between forward and backward a caller may reuse ``x`` and ``state`` and modify ``out`` and the
    final state in place (say, ``out *= mask``).  With B = H = I = 1 the transposes at the boundary
    are C-contiguous views, so a layer that only copies when it must would hand out its cache."""
    rng = np.random.default_rng(14)
    layer = make_layer(layer_kind, inputs, hidden, 1, False)
    x = rng.normal(size=(batch, T, inputs))
    state = random_state(layer, batch, rng)
    d_out, d_state = _loss_weights(layer, batch, T, rng)
    _, _, cache = layer.forward(x.copy(), _as_layer_state(tuple(s.copy() for s in _states(state))))
    expected = layer.backward(d_out, d_state, cache)
    out, final, cache = layer.forward(x, state)
    for a in (x, *_states(state), out, *_states(final)):
        a[...] = 7.0
    got = layer.backward(d_out, d_state, cache)
    _assert_close(got[0], expected[0], rtol=0, atol=0)
    _assert_close(got[1], expected[1], rtol=0, atol=0)
    for name in expected[2]:
        _assert_close(got[2][name], expected[2][name], rtol=0, atol=0)


def test_backward_accepts_none_for_either_gradient(
    layer_kind: str, make_layer: Any, random_state: Any
) -> None:
    """None means zero: the results equal those for explicit zero arrays."""
    rng = np.random.default_rng(15)
    layer = make_layer(layer_kind, I, H, 2, True)
    x = rng.normal(size=(B, T, I))
    state = random_state(layer, B, rng)
    d_out, d_state = _loss_weights(layer, B, T, rng)
    zero_state = _as_layer_state(tuple(np.zeros_like(s) for s in _states(d_state)))
    _, _, cache = layer.forward(x, state, LENGTHS)
    cases = [((d_out, None), (d_out, zero_state)), ((None, d_state), (np.zeros_like(d_out), d_state))]
    for args, explicit in cases:
        got, exp = layer.backward(*args, cache), layer.backward(*explicit, cache)
        _assert_close(got[0], exp[0], rtol=0, atol=0)
        _assert_close(got[1], exp[1], rtol=0, atol=0)
        assert np.abs(got[0]).max() > 0  # both paths carry gradient on their own
        for name in exp[2]:
            _assert_close(got[2][name], exp[2][name], rtol=0, atol=0)


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture
def lstm_and_rnn() -> tuple[Recurrent, Recurrent]:
    return LSTM(I, H, num_layers=2, seed=0), RNN(I, H, num_layers=2, seed=0)


def _x(shape: tuple[int, ...] = (B, T, I), dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(dtype)


def _x_with(value: float) -> np.ndarray:
    x = _x()
    x[1, 2, 3] = value
    return x


FORWARD_ERRORS = [
    ("rank 2", dict(x=_x((B, T))), r"x must be .*\(B, T, I\).*got \(4, 6\)"),
    ("rank 4", dict(x=_x((B, T, I, 1))), r"x must be .*\(B, T, I\)"),
    ("feature size", dict(x=_x((B, T, I + 1))), r"x has shape \(4, 6, 6\), expected \(4, 6, 5\)"),
    ("empty time", dict(x=_x((B, 0, I))), r"x must hold at least one"),
    ("float64 x", dict(x=_x(dtype=np.float64)), r"x has dtype float64 .* float32"),
    ("int x", dict(x=_x().astype(np.int64)), r"x has dtype int64"),
    ("NaN in x", dict(x=_x_with(np.nan)), r"x contains NaN"),
    ("inf in x", dict(x=_x_with(-np.inf)), r"x contains NaN or infinite"),
    ("length 0", dict(lengths=np.array([1, 0, 2, 6])), r"lengths must lie in 1\.\.6.*got values in 0\.\.6"),
    ("length T+1", dict(lengths=np.array([1, 7, 2, 6])), r"lengths must lie in 1\.\.6.*1\.\.7"),
    ("negative length", dict(lengths=np.array([-1, 3, 2, 6])), r"lengths must lie in 1\.\.6"),
    ("float lengths", dict(lengths=np.array([1.0, 2.0, 3.0, 4.0])),
     r"lengths must be an integer array.*float64"),
    ("bool lengths", dict(lengths=np.ones(B, dtype=bool)), r"lengths must be an integer array.*bool"),
    ("lengths too short", dict(lengths=np.array([1, 2, 3])), r"lengths has shape \(3,\), expected \(4,\)"),
    ("lengths 2-D", dict(lengths=np.ones((B, 1), dtype=np.int64)), r"lengths has shape \(4, 1\)"),
]


@pytest.mark.parametrize("kwargs,match", [c[1:] for c in FORWARD_ERRORS], ids=[c[0] for c in FORWARD_ERRORS])
def test_forward_rejects_bad_input(
    lstm_and_rnn: tuple[Recurrent, Recurrent], kwargs: dict[str, Any], match: str
) -> None:
    for layer in lstm_and_rnn:
        args = {"x": _x(), **kwargs}
        with pytest.raises(ValueError, match=match):
            layer.forward(args["x"], None, args.get("lengths"))


def test_forward_rejects_x_that_is_not_an_array(lstm_and_rnn: tuple[Recurrent, Recurrent]) -> None:
    for layer in lstm_and_rnn:
        with pytest.raises((TypeError, ValueError), match=r"x must be .*got list"):
            layer.forward([[[0.0] * I] * T] * B)


def test_forward_rejects_bad_states(lstm_and_rnn: tuple[Recurrent, Recurrent]) -> None:
    lstm, rnn = lstm_and_rnn
    x, good = _x(), np.zeros((2, B, H), np.float32)
    with pytest.raises(ValueError, match=r"state has shape \(1, 4, 3\), expected \(2, 4, 3\)"):
        rnn.forward(x, np.zeros((1, B, H), np.float32))
    with pytest.raises(ValueError, match=r"state has shape \(2, 3, 3\), expected \(2, 4, 3\)"):
        rnn.forward(x, np.zeros((2, B - 1, H), np.float32))
    with pytest.raises(ValueError, match=r"state has dtype float64"):
        rnn.forward(x, np.zeros((2, B, H)))
    with pytest.raises(ValueError, match=r"state contains NaN"):
        rnn.forward(x, np.full((2, B, H), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"state must be a NumPy array, got tuple"):
        rnn.forward(x, (good, good))
    with pytest.raises(ValueError, match=r"state must be a pair \(h, c\)"):
        lstm.forward(x, good)
    with pytest.raises(ValueError, match=r"state must be a pair \(h, c\)"):
        lstm.forward(x, (good, good, good))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\) has shape \(2, 4, 4\), expected \(2, 4, 3\)"):
        lstm.forward(x, (good, np.zeros((2, B, H + 1), np.float32)))


def test_backward_rejects_bad_gradients_and_a_missing_cache(
    lstm_and_rnn: tuple[Recurrent, Recurrent],
) -> None:
    lstm, rnn = lstm_and_rnn
    x = _x()
    out, state, cache = lstm.forward(x)
    with pytest.raises(ValueError, match=r"d_out has shape \(4, 5, 3\), expected \(4, 6, 3\)"):
        lstm.backward(out[:, 1:], None, cache)
    with pytest.raises(ValueError, match=r"d_out has dtype float64"):
        lstm.backward(out.astype(np.float64), None, cache)
    with pytest.raises(ValueError, match=r"d_state must be a pair \(h, c\)"):
        lstm.backward(None, state[0], cache)
    with pytest.raises(ValueError, match=r"d_state\[0\] \(h\) has shape"):
        lstm.backward(None, (state[0][:1], state[1]), cache)
    _, _, no_cache = lstm.forward(x, keep_cache=False)
    with pytest.raises(ValueError, match=r"cache must be the cache returned by forward"):
        lstm.backward(out, state, no_cache)
    _, rnn_state, _ = rnn.forward(x)
    with pytest.raises(ValueError, match=r"cache must be"):
        rnn.backward(None, rnn_state, (out, state))


CONSTRUCTOR_ERRORS = [
    ("hidden 0", lambda: RNN(I, 0), r"hidden_size must be a positive integer, got 0"),
    ("input -1", lambda: LSTM(-1, H), r"input_size must be a positive integer, got -1"),
    ("layers 0", lambda: GRU(I, H, num_layers=0), r"num_layers must be a positive integer, got 0"),
    ("float hidden", lambda: GRU(I, 3.0), r"hidden_size must be a positive integer, got 3\.0"),
    ("bool hidden", lambda: LSTM(I, True), r"hidden_size must be a positive integer, got True"),
    ("nonlinearity", lambda: RNN(I, H, nonlinearity="sigmoid"),
     r"nonlinearity must be 'tanh' or 'relu'.*sigmoid"),
    ("dtype int32", lambda: RNN(I, H, dtype=np.int32), r"dtype must be float32 or float64, got int32"),
    ("dtype float16", lambda: LSTM(I, H, dtype=np.float16), r"dtype must be float32 or float64, got float16"),
]


@pytest.mark.parametrize(
    "build,match", [c[1:] for c in CONSTRUCTOR_ERRORS], ids=[c[0] for c in CONSTRUCTOR_ERRORS]
)
def test_constructor_rejects_bad_arguments(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_constructor_rejects_a_dtype_that_is_not_a_dtype_naming_the_argument() -> None:
    with pytest.raises((TypeError, ValueError), match=r"dtype"):
        LSTM(I, H, dtype="bogus")


def test_constructor_dtype_none_is_not_silently_float64() -> None:
    """None must either mean the default (float32) or be refused; float64 is neither."""
    try:
        layer = GRU(I, H, dtype=None)
    except ValueError as err:
        assert "dtype" in str(err)
    else:
        assert layer.dtype == np.float32


def test_backward_refuses_the_cache_of_another_layer() -> None:
    lstm, gru = LSTM(I, H, seed=0), GRU(I, H, seed=0)
    x = np.zeros((2, 3, I), np.float32)
    out, _, cache = lstm.forward(x)
    with pytest.raises(ValueError, match="cache comes from another layer"):
        gru.backward(out, None, cache)
    with pytest.raises(ValueError, match="cache comes from another layer"):
        LSTM(I, H + 1, seed=0).backward(np.zeros((2, 3, H + 1), np.float32), None, cache)
