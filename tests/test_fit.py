"""rnnkit.fit: the training loop, evaluate, predict, metrics and callbacks."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit
from rnnkit import (
    GRU,
    LSTM,
    SGD,
    Accuracy,
    Adam,
    BitsPerChar,
    Callback,
    CSVLogger,
    EarlyStopping,
    Embedding,
    JSONLLogger,
    LastStep,
    Linear,
    MeanSquaredError,
    ModelCheckpoint,
    Perplexity,
    ProgressBar,
    Sequential,
    StreamBatches,
    evaluate,
    fit,
    mse,
    pad_sequences,
    predict,
    softmax_cross_entropy,
    tbptt_step,
)


def _sign_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Variable-length sequences of one feature; the class is whether their sum is positive."""
    rng = np.random.default_rng(seed)
    seqs = [rng.standard_normal((int(t), 1)).astype(np.float32) for t in rng.integers(2, 12, n)]
    X, lengths = pad_sequences(seqs)
    y = np.array([int(s.sum() > 0) for s in seqs])
    return X, y, lengths


def _classifier(seed: int = 0) -> Sequential:
    return Sequential([("rnn", GRU(1, 16, seed=seed)), ("last", LastStep()), ("head", Linear(16, 2, seed=seed))])


def test_fit_learns_a_toy_classification_task() -> None:
    train, val = _sign_task(400, 0), _sign_task(200, 1)
    model = _classifier()
    before = evaluate(model, softmax_cross_entropy, val, metrics=["accuracy"])
    stopper = EarlyStopping(monitor="val_accuracy", patience=20)  # never stops here: keeps the best weights
    history = fit(model, softmax_cross_entropy, Adam(lr=1e-2), train, epochs=12, batch_size=32, val=val,
                  metrics=["accuracy"], bucket=True, clip=5.0, callbacks=[stopper])
    assert history.stopped_by == "epochs" and len(history.records) == 12
    assert history["epoch"] == list(range(1, 13)) and history["step"][-1] == 12 * 13
    after = evaluate(model, softmax_cross_entropy, val, metrics=["accuracy"])
    assert after["accuracy"] == max(history["val_accuracy"]) >= 0.95 > before["accuracy"]
    assert after["loss"] < before["loss"] / 2


def test_epoch_loss_and_metrics_are_means_over_all_targets() -> None:
    # With lr = 0 nothing changes, so the training log of an epoch must equal evaluate() on the same data,
    # although the batches have different sizes and numbers of valid steps.
    rng = np.random.default_rng(3)
    X, lengths = pad_sequences([rng.standard_normal((int(t), 2)) for t in rng.integers(1, 9, 23)])
    y = rng.integers(0, 3, X.shape[:2])
    model = Sequential([("rnn", LSTM(2, 5, dtype=np.float64, seed=1)), ("head", Linear(5, 3, dtype=np.float64))])
    history = fit(model, softmax_cross_entropy, SGD(lr=0.0), (X, y, lengths), epochs=1, batch_size=5,
                  metrics=["accuracy", "bits_per_char"])
    # "bpc" is an alias of "bits_per_char"
    scores = evaluate(model, softmax_cross_entropy, (X, y, lengths), batch_size=7, metrics=["accuracy", "bpc"])
    mask = np.arange(X.shape[1]) < lengths[:, None]
    whole = softmax_cross_entropy(model.forward(X, lengths=lengths)[0], y, mask)[0]
    assert history["loss"][0] == pytest.approx(whole, rel=1e-12)
    assert scores["loss"] == pytest.approx(whole, rel=1e-12)
    assert history["accuracy"][0] == pytest.approx(scores["accuracy"], rel=1e-12)
    assert history["bits_per_char"][0] == pytest.approx(whole / math.log(2), rel=1e-12)
    assert scores["bits_per_char"] == pytest.approx(whole / math.log(2), rel=1e-12)


def test_metrics_hand_derived_values() -> None:
    out = np.array([[[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], [[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]]])
    y = np.array([[0, 2], [2, 1]])
    accuracy = Accuracy()
    accuracy.update(out, y)
    assert accuracy.result() == 0.5
    accuracy.update(out, y, mask=np.array([[True, False], [True, False]]))  # adds 2 hits of 2
    assert accuracy.result() == pytest.approx(4 / 6)
    uniform = np.zeros((2, 3, 4))  # four equally likely classes: 2 bits, perplexity 4
    for metric, expected in ((BitsPerChar(), 2.0), (Perplexity(), 4.0)):
        metric.update(uniform, np.zeros((2, 3), int))
        assert metric.result() == pytest.approx(expected, rel=1e-12)
    err = MeanSquaredError()
    err.update(np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[1.0, 0.0], [3.0, 2.0]]))
    assert err.result() == pytest.approx((4 + 9) / 4)
    assert math.isnan(Accuracy().result())


def test_a_custom_metric_object_accumulates_training_and_validation_separately() -> None:
    class Count(Accuracy):
        name = "seen"

        def update(self, out: np.ndarray, y: Any, mask: Any = None) -> None:
            self.total += len(out)
            self.count = 1

    train, val = _sign_task(40, 0), _sign_task(25, 1)
    history = fit(_classifier(), softmax_cross_entropy, Adam(), train, epochs=2, batch_size=8, val=val,
                  metrics=[Count()])
    assert history["seen"] == [40, 40] and history["val_seen"] == [25, 25]


def test_stateful_fit_is_the_tbptt_loop() -> None:
    tokens = np.random.default_rng(0).integers(0, 6, 400)

    def model() -> Sequential:
        return Sequential([("embed", Embedding(6, 4, dtype=np.float64, seed=0)),
                           ("rnn", LSTM(4, 8, dtype=np.float64, seed=1)),
                           ("head", Linear(8, 6, dtype=np.float64, seed=2))])

    by_hand, opt = model(), Adam(lr=1e-2)
    losses = []
    for _ in range(2):
        state = None
        for x, y in rnnkit.stream_batches(tokens, 4, 10):
            step = tbptt_step(by_hand, softmax_cross_entropy, opt, x, y, state, clip=1.0)
            state = step.state
            losses.append(step.loss)

    class Losses(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_step_end(self, run: Any, loss: float) -> None:
            self.losses.append(loss)

    fitted, record = model(), Losses()
    fit(fitted, softmax_cross_entropy, Adam(lr=1e-2), StreamBatches(tokens, 4, 10), epochs=2, stateful=True,
        clip=1.0, callbacks=[record])
    assert record.losses == losses
    for key, value in by_hand.params.items():
        np.testing.assert_array_equal(fitted.params[key], value)


class _Scripted:
    """An 'optimizer' that sets the one weight of a Linear(1, 1) to a scripted value at each step."""

    def __init__(self, weights: list[float]) -> None:
        self.weights, self.lr, self.steps = weights, 0.1, 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        params["head.weight"][...] = self.weights[self.steps]
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}


def _line_data() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-1, 1, 8)[:, None]
    return x, 2.0 * x  # the best weight is 2


def _line_model() -> Sequential:
    model = Sequential([("head", Linear(1, 1, dtype=np.float64))])
    model.load_state_dict({"head.weight": np.zeros((1, 1)), "head.bias": np.zeros(1)})
    return model


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    model = _line_model()
    stopper = EarlyStopping(monitor="val_loss", patience=1)
    script = [0.0, 1.9, 1.0, 0.5, 0.2, 2.0]  # best after the second epoch, then worse twice
    history = fit(model, mse, _Scripted(script), _line_data(), val=_line_data(), epochs=6, batch_size=8,
                  callbacks=[stopper], shuffle=False)  # type: ignore[arg-type]
    assert history.stopped_by == "callback" and len(history.records) == 4
    assert stopper.best_epoch == 2 and stopper.best == pytest.approx(0.1**2 * np.mean(_line_data()[0] ** 2))
    assert model.params["head.weight"][0, 0] == 1.9  # restored, although the last step set 0.5


def test_model_checkpoint_and_loggers(tmp_path: Path) -> None:
    model = _line_model()
    script = [1.0, 1.9, 0.5]
    callbacks = [ModelCheckpoint(tmp_path / "ckpt", save_optimizer=False), CSVLogger(tmp_path / "log.csv"),
                 JSONLLogger(tmp_path / "log.jsonl")]
    history = fit(model, mse, _Scripted(script), _line_data(), val=_line_data(), epochs=3, batch_size=8,
                  callbacks=callbacks)  # type: ignore[arg-type]
    best, latest = rnnkit.load(tmp_path / "ckpt/best.safetensors"), rnnkit.load(tmp_path / "ckpt/latest.safetensors")
    assert best.params["head.weight"][0, 0] == 1.9 and latest.params["head.weight"][0, 0] == 0.5
    _, document = rnnkit.io.model.load_document(tmp_path / "ckpt/best.safetensors")
    assert document["metadata"]["epoch"] == 2 and "optimizer" not in document
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(history["val_loss"])
    lines = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [line["epoch"] for line in lines] == [1, 2, 3] and lines[-1]["loss"] == history["loss"][-1]


def test_ctrl_c_stops_after_the_step_and_still_runs_on_train_end(tmp_path: Path) -> None:
    class Interrupt(Callback):
        def on_step_end(self, run: Any, loss: float) -> None:
            if run.step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    train = _sign_task(64, 0)
    model = _classifier()
    history = fit(model, softmax_cross_entropy, Adam(), train, epochs=5, batch_size=8,
                  callbacks=[Interrupt(), ModelCheckpoint(tmp_path, monitor="loss")])
    assert history.interrupted and history.records == []
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is put back
    saved = rnnkit.load(tmp_path / "latest.safetensors", optimizer=Adam())
    np.testing.assert_array_equal(predict(saved, train[0], train[2]), predict(model, train[0], train[2]))


def test_step_and_time_limits_and_eval_every() -> None:
    train = _sign_task(40, 0)
    history = fit(_classifier(), softmax_cross_entropy, Adam(), train, steps=7, batch_size=8, eval_every=3)
    assert history.stopped_by == "steps" and history["step"] == [3, 6, 7]
    history = fit(_classifier(), softmax_cross_entropy, Adam(), train, epochs=100, max_seconds=1e-9, batch_size=8)
    assert history.stopped_by == "time" and history["step"] == [1]


def test_predict_is_in_order_and_independent_of_batch_size() -> None:
    X, _, lengths = _sign_task(37, 2)
    X = X.astype(np.float64)
    model = Sequential([("rnn", GRU(1, 4, dtype=np.float64)), ("last", LastStep())])
    whole = model.forward(X, lengths=lengths)[0]
    for batch_size in (1, 5, 64):  # equal up to the rounding of matrix products of other sizes
        np.testing.assert_allclose(predict(model, X, lengths, batch_size=batch_size), whole, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "give epochs, steps or max_seconds"),
        ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
        ({"epochs": 1, "metrics": ["f1"]}, ValueError, "unknown metric 'f1'"),
        ({"epochs": 1, "callbacks": [EarlyStopping(monitor="val_loss")]}, ValueError, "cannot monitor 'val_loss'"),
        ({"epochs": 1, "clip": -1.0}, ValueError, "clip must be a positive number"),
        ({"epochs": 1, "callbacks": [print]}, TypeError, "callbacks must be Callback objects"),
    ],
)
def test_fit_refuses_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        fit(_classifier(), softmax_cross_entropy, Adam(), _sign_task(16, 0), **kwargs)


def test_fit_refuses_one_shot_iterators_and_reports_divergence() -> None:
    X, y, lengths = _sign_task(16, 0)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fit(_classifier(), softmax_cross_entropy, Adam(), ((X, y, lengths) for _ in range(2)), epochs=1)
    model = Sequential([("head", Linear(1, 1, dtype=np.float64))])
    x = np.ones((4, 1))
    with pytest.raises(FloatingPointError, match="step 2: the loss is inf: training diverged"), \
            np.errstate(over="ignore"):
        fit(model, mse, SGD(lr=1e200), (x, x * 1e30), epochs=3, batch_size=4, callbacks=[_Snapshot()])
    # The diverged step was not applied: the weights are those after step 1 (huge, but finite).
    assert np.isfinite(model.params["head.weight"]).all()
    np.testing.assert_array_equal(model.params["head.weight"], _Snapshot.last["head.weight"])


class _Snapshot(Callback):
    last: dict[str, np.ndarray] = {}

    def on_step_end(self, run: Any, loss: float) -> None:
        _Snapshot.last = {k: v.copy() for k, v in run.model.params.items()}


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path: Path) -> None:
    train = _sign_task(48, 5)

    class Losses(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_step_end(self, run: Any, loss: float) -> None:
            self.losses.append(loss)

    straight = Losses()
    fit(_classifier(), softmax_cross_entropy, Adam(lr=1e-2), train, epochs=3, batch_size=16, callbacks=[straight])

    first = Losses()
    fit(_classifier(), softmax_cross_entropy, Adam(lr=1e-2), train, epochs=2, batch_size=16,
        callbacks=[first, ModelCheckpoint(tmp_path, monitor="loss")])
    optimizer = Adam()
    model = rnnkit.load(tmp_path / "latest.safetensors", optimizer=optimizer)
    _, document = rnnkit.io.model.load_document(tmp_path / "latest.safetensors")
    rest = Losses()
    fit(model, softmax_cross_entropy, optimizer, train, epochs=1, batch_size=16, callbacks=[rest],
        initial_epoch=document["metadata"]["epoch"])
    assert first.losses + rest.losses == straight.losses  # bit for bit: same batches, weights, Adam moments


def test_progress_bar_falls_back_to_plain_lines_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    stream = io.StringIO()
    fit(_classifier(), softmax_cross_entropy, Adam(), _sign_task(16, 0), epochs=2, batch_size=8,
        metrics=["accuracy"], callbacks=[ProgressBar(stream)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2 step 4  loss=") and "accuracy=" in lines[1]


# ------------------------------------------------------------------ dropout (issue 10) in the training loop
def _dropout_classifier() -> Sequential:
    return Sequential([("rnn", GRU(1, 8, num_layers=2, dropout=0.5, weight_drop=0.3, seed=0)),
                       ("last", LastStep()), ("drop", rnnkit.Dropout(0.5)), ("head", Linear(8, 2, seed=1))])


def test_fit_draws_dropout_masks_from_its_generator_and_evaluates_without_them() -> None:
    train = _sign_task(40, 0)

    def trained(**options: Any) -> dict[str, np.ndarray]:
        model = _dropout_classifier()
        fit(model, softmax_cross_entropy, Adam(lr=1e-2), train, epochs=2, batch_size=8, **options)
        return {k: v.copy() for k, v in model.params.items()}

    # The default generator is seeded from seed: passing the same one explicitly changes nothing.
    same_a, same_b = trained(seed=3), trained(seed=3, rng=np.random.default_rng([3, 1]))
    assert all(np.array_equal(same_a[k], same_b[k]) for k in same_a)
    other = trained(seed=3, rng=np.random.default_rng(99))  # same batch order, other masks
    assert any(not np.array_equal(same_a[k], other[k]) for k in same_a)

    # evaluate runs the inference forward: dropout off, the same loss every time.
    model = _dropout_classifier()
    scores = [evaluate(model, softmax_cross_entropy, train)["loss"] for _ in range(2)]
    out = model.forward(train[0], lengths=train[2], keep_cache=False)[0]
    assert scores[0] == scores[1] == pytest.approx(softmax_cross_entropy(out, train[1])[0], rel=1e-6)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        fit(model, softmax_cross_entropy, Adam(), train, epochs=1, rng=3)  # type: ignore[arg-type]


def test_train_step_with_dropout_needs_and_uses_rng() -> None:
    X, y, lengths = _sign_task(8, 2)
    with pytest.raises(ValueError, match="needs rng"):
        rnnkit.train_step(_dropout_classifier(), softmax_cross_entropy, Adam(), X, y, lengths=lengths)
    a = rnnkit.train_step(_dropout_classifier(), softmax_cross_entropy, Adam(), X, y, lengths=lengths,
                   rng=np.random.default_rng(5))
    b = rnnkit.train_step(_dropout_classifier(), softmax_cross_entropy, Adam(), X, y, lengths=lengths,
                   rng=np.random.default_rng(5))
    inference = softmax_cross_entropy(_dropout_classifier().forward(X, lengths=lengths, keep_cache=False)[0], y)[0]
    assert a.loss == b.loss != inference
