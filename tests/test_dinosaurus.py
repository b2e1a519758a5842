"""The W1A2 exercise material against rnnkit.textbook: cache tuples, the b/db keys, the Dinosaurus model.

The oracle is the exercise's own plain-NumPy code (tests/dinosaurus_course.py); the exercise's
``model`` function runs unchanged from examples/dinosaurus.py on the name list in tests/data.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any

import dinosaurus_course as course
import numpy as np
import pytest

from rnnkit import textbook
from rnnkit.textbook import (
    gru_cell_forward,
    gru_forward,
    lstm_cell_forward,
    lstm_forward,
    optimize,
    rnn_backward,
    rnn_cell_forward,
    rnn_forward,
    sample,
)

ROOT = Path(__file__).resolve().parents[1]
N_A, VOCAB = 50, 27


def _char_parameters(seed: int, bias_key: str = "b") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"Wax": rng.standard_normal((N_A, VOCAB)) * 0.3, "Waa": rng.standard_normal((N_A, N_A)) * 0.3,
            "Wya": rng.standard_normal((VOCAB, N_A)) * 0.3, bias_key: rng.standard_normal((N_A, 1)) * 0.1,
            "by": rng.standard_normal((VOCAB, 1)) * 0.1}


def test_caches_unpack_exactly_as_the_exercises_tuples() -> None:
    rng = np.random.default_rng(0)
    n_x, n_a, n_y, m = 3, 5, 2, 4
    xt, a_prev, c_prev = rng.standard_normal((n_x, m)), rng.standard_normal((n_a, m)), rng.standard_normal((n_a, m))
    rnn_p = {"Wax": rng.standard_normal((n_a, n_x)), "Waa": rng.standard_normal((n_a, n_a)),
             "Wya": rng.standard_normal((n_y, n_a)), "ba": rng.standard_normal((n_a, 1)),
             "by": rng.standard_normal((n_y, 1))}
    a_next, _, cache = rnn_cell_forward(xt, a_prev, rnn_p)
    (c_a_next, c_a_prev, c_xt, c_parameters) = cache  # the exercise's rnn_cell_forward cache
    assert c_a_next is a_next and c_a_prev is a_prev and c_xt is xt and c_parameters is rnn_p

    lstm_p = {**{f"W{g}": rng.standard_normal((n_a, n_a + n_x)) for g in "fico"},
              **{f"b{g}": rng.standard_normal((n_a, 1)) for g in "fico"},
              "Wy": rng.standard_normal((n_y, n_a)), "by": rng.standard_normal((n_y, 1))}
    a_next, c_next, _, cache = lstm_cell_forward(xt, a_prev, c_prev, lstm_p)
    (l_a_next, l_c_next, l_a_prev, l_c_prev, ft, it, cct, ot, l_xt, l_parameters) = cache
    assert l_a_next is a_next and l_c_next is c_next and l_a_prev is a_prev and l_c_prev is c_prev
    assert l_xt is xt and l_parameters is lstm_p
    np.testing.assert_allclose(c_next, ft * c_prev + it * cct, rtol=1e-13)
    np.testing.assert_allclose(a_next, ot * np.tanh(c_next), rtol=1e-13)

    gru_p = {"Wr": rng.standard_normal((n_a, n_a + n_x)), "br": rng.standard_normal((n_a, 1)),
             "Wz": rng.standard_normal((n_a, n_a + n_x)), "bz": rng.standard_normal((n_a, 1)),
             "Wn_x": rng.standard_normal((n_a, n_x)), "bn_x": rng.standard_normal((n_a, 1)),
             "Wn_a": rng.standard_normal((n_a, n_a)), "bn_a": rng.standard_normal((n_a, 1)),
             "Wy": rng.standard_normal((n_y, n_a)), "by": rng.standard_normal((n_y, 1))}
    a_next, _, cache = gru_cell_forward(xt, a_prev, gru_p)
    (g_a_next, g_a_prev, rt, zt, nt, g_xt, g_parameters) = cache
    np.testing.assert_allclose(a_next, (1 - zt) * nt + zt * a_prev, rtol=1e-13)
    assert g_a_next is a_next and g_a_prev is a_prev and g_xt is xt and g_parameters is gru_p

    x = rng.standard_normal((n_x, m, 6))
    for caches in (rnn_forward(x, a_prev, rnn_p)[-1], lstm_forward(x, a_prev, lstm_p)[-1],
                   gru_forward(x, a_prev, gru_p)[-1]):
        (steps, x_cached) = caches  # the exercise's (caches, x)
        assert x_cached is x and len(steps) == 6
    step_a_next, step_a_prev, _, _ = rnn_forward(x, a_prev, rnn_p)[2][0][1]
    assert len(lstm_forward(x, a_prev, lstm_p)[3][0][0]) == 10 and len(gru_forward(x, a_prev, gru_p)[2][0][0]) == 7


def test_optimize_with_the_exercises_b_key_equals_the_exercises_own_code() -> None:
    ours, theirs = _char_parameters(1), _char_parameters(1)
    a_ours = a_theirs = np.zeros((N_A, 1))
    rng = np.random.default_rng(2)
    largest = []
    for _ in range(4):  # consecutive calls: parameters are updated in place, the state carried on
        X = [None, *(int(i) for i in rng.integers(1, VOCAB, 19))]
        Y = [*X[1:], 0]
        loss, grads, a_ours = optimize(X, Y, a_ours, ours, learning_rate=0.05)
        course_loss, course_grads, a_theirs = course.optimize(X, Y, a_theirs, theirs, learning_rate=0.05)
        assert loss == pytest.approx(course_loss, rel=1e-12)
        assert sorted(grads) == sorted(course_grads) == ["dWaa", "dWax", "dWya", "db", "dby"]
        largest.append(max(abs(g).max() for g in grads.values()))
        for key in grads:
            np.testing.assert_allclose(grads[key], course_grads[key], rtol=1e-10, atol=1e-10)  # entries up to 5
        np.testing.assert_allclose(a_ours, a_theirs, rtol=1e-10, atol=1e-11)
        assert sorted(ours) == sorted(theirs) == ["Waa", "Wax", "Wya", "b", "by"]
        for key in ours:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-12, atol=1e-12)
    assert max(largest) == 5.0  # the clipping was active


def test_b_and_ba_give_the_same_numbers_and_not_both() -> None:
    with_b, with_ba = _char_parameters(3, "b"), _char_parameters(3, "ba")
    char_to_ix = {"\n": 0, **{chr(ord("a") + i): i + 1 for i in range(26)}}
    assert sample(with_b, char_to_ix, 7) == sample(with_ba, char_to_ix, 7)
    X = [None, 4, 9, 2]
    loss_b, grads_b, _ = optimize(X, [*X[1:], 0], np.zeros((N_A, 1)), with_b)
    loss_ba, grads_ba, _ = optimize(X, [*X[1:], 0], np.zeros((N_A, 1)), with_ba)
    assert loss_b == loss_ba and "db" in grads_b and "dba" in grads_ba
    np.testing.assert_array_equal(grads_b["db"], grads_ba["dba"])
    np.testing.assert_array_equal(with_b["b"], with_ba["ba"])
    both = {**with_b, "ba": with_b["b"]}
    for call in (lambda: sample(both, char_to_ix, 0), lambda: optimize(X, [*X[1:], 0], np.zeros((N_A, 1)), both)):
        with pytest.raises(ValueError, match="both 'b' and 'ba'"):
            call()


def test_validation_runs_once_per_call_not_once_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = textbook._Shapes.check

    def counting(self: Any, *args: Any) -> Any:
        calls["n"] += 1
        return original(self, *args)

    monkeypatch.setattr(textbook._Shapes, "check", counting)
    rng = np.random.default_rng(4)
    p = _char_parameters(4, "ba")
    counts = []
    for T in (2, 30):
        calls["n"] = 0
        x = rng.standard_normal((VOCAB, 3, T))
        a, _, caches = rnn_forward(x, np.zeros((N_A, 3)), p)
        rnn_backward(np.ones_like(a), caches)
        optimize([None] + [1] * (T - 1), [1] * T, np.zeros((N_A, 1)), p)
        counts.append(calls["n"])
    assert counts[0] == counts[1]


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("dinosaurus_example", ROOT / "examples" / "dinosaurus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dinosaurus_exercise_runs_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    example = _load_example()
    state = np.random.get_state()  # noqa: NPY002  (the exercise seeds the global generator)
    try:
        parameters, last_name = example.main(ROOT / "tests" / "data" / "dinos.txt", 4001)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    out = capsys.readouterr().out
    assert "There are 1037 total characters and 27 unique characters in your data." in out
    losses = [float(v) for v in re.findall(r"Iteration: \d+, Loss: ([0-9.]+)", out)]
    assert len(losses) == 3
    # The smoothed loss starts at the exercise's initial value (7 names of uniform guesses) and falls.
    assert losses[0] == pytest.approx(-np.log(1 / 27) * 7, rel=0.01) and losses[2] < 0.85 * losses[0]
    assert sorted(parameters) == ["Waa", "Wax", "Wya", "b", "by"]
    assert isinstance(last_name, str) and last_name.endswith("\n") and last_name[0].isupper()
    names = out.split("Iteration: 4000")[1].split()[3:]  # the 7 names sampled at the end
    assert len(names) == 7 and all(name.isalpha() for name in names)


def test_optimize_keeps_the_callers_arrays_and_dict() -> None:
    p = _char_parameters(5)
    before = copy.deepcopy(p)
    arrays = {key: value for key, value in p.items()}
    optimize([None, 3], [3, 0], np.zeros((N_A, 1)), p)
    assert all(p[key] is arrays[key] for key in p)  # updated in place, as the exercise's update_parameters
    assert any(not np.array_equal(p[key], before[key]) for key in p)


@pytest.mark.parametrize(
    ("X", "Y", "error", "message"),
    [
        ([None, 2.5], [1, 0], TypeError, r"X\[1\] must be an integer index, got float"),
        ([None, 3], [True, 0], TypeError, r"Y\[0\] must be an integer index, got bool"),
        ([None, 3], [1, 27], ValueError, r"Y\[1\] = 27 is out of range \[0, 27\)"),
        ([None, -1], [1, 0], ValueError, r"X\[1\] = -1 is out of range"),
    ],
)
def test_optimize_names_the_bad_index(X: list, Y: list, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        optimize(X, Y, np.zeros((N_A, 1)), _char_parameters(6))


def test_a_name_of_no_characters_is_one_step_from_the_zero_input() -> None:
    p, q = _char_parameters(7), _char_parameters(7)
    loss, _, a = optimize([None], [0], np.zeros((N_A, 1)), p)
    course_loss, _, course_a = course.optimize([None], [0], np.zeros((N_A, 1)), q)
    assert loss == pytest.approx(course_loss, rel=1e-12)
    np.testing.assert_allclose(a, course_a, rtol=1e-12, atol=1e-15)
