"""The training loop: :func:`fit`, :func:`evaluate` and :func:`predict`, with metrics and callbacks.

There is one training step, :func:`train_step` (forward, loss, backward, clip, optimizer step), and
one loop over it, :func:`fit`; :func:`rnnkit.tbptt.tbptt_step` is that same step with the state
carried by its caller.  A classifier on variable-length sequences::

    model = Sequential([("rnn", LSTM(I, 64)), ("last", LastStep()), ("head", Linear(64, C))])
    history = rnnkit.fit(model, softmax_cross_entropy, Adam(lr=3e-3), (X, y, lengths),
                         epochs=20, batch_size=32, val=(X_val, y_val, lengths_val),
                         metrics=["accuracy"], callbacks=[EarlyStopping(patience=3)])
    probabilities = softmax(rnnkit.predict(model, X_test, lengths_test))

**Data.**  ``train`` and ``val`` are either arrays ``(X, y)`` / ``(X, y, lengths)``, which :func:`fit`
batches with :class:`~rnnkit.data.SequenceBatches` (``batch_size``, ``shuffle``, ``seed``,
``bucket``), or any re-iterable of batches ``(x, y)`` / ``(x, y, lengths)`` — a
:class:`~rnnkit.data.SequenceBatches`, a :class:`~rnnkit.data.StreamBatches`, a list.

**Lengths and masks.**  A batch's ``lengths`` go to the model (every block that takes them) and,
when the model's output has a time axis (``out.shape[:2] == x.shape[:2]``, ``out.ndim >= 3``), to the
loss and the metrics as the mask ``t < lengths[b]``: padded steps never count.  A per-sequence output
(after :class:`~rnnkit.layers.LastStep`) needs no mask.

**State.**  ``stateful=True`` carries each batch's final state into the next (truncated BPTT over a
:class:`~rnnkit.data.StreamBatches`), starting from zeros at each epoch; no gradient crosses a batch.

**The log.**  After every epoch (or every ``eval_every`` steps) the training loss and metrics over
the steps since the previous log, the validation loss and metrics (``val_`` prefix), ``epoch``,
``step``, ``lr`` and ``seconds`` form one record; callbacks see it and :class:`History` keeps it.
Losses are averaged over batches weighted by their number of valid targets, so the mean over an
epoch is the mean over its targets.

**Stopping.**  ``epochs`` and/or ``steps`` (whichever comes first), ``max_seconds``, a callback
setting ``run.stop_training``, or Ctrl-C: the first SIGINT lets the current step finish, then the loop
ends as if it had run out of steps — callbacks' ``on_train_end`` still runs, so a checkpoint
callback writes the latest model — and ``History.interrupted`` is True; a second Ctrl-C raises
``KeyboardInterrupt`` at once.  A NaN or infinite loss raises ``FloatingPointError`` before that
step's update, so the model keeps the last finite weights.
"""

from __future__ import annotations

import copy
import csv
import inspect
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, TextIO

import numpy as np
import numpy.typing as npt

from rnnkit._types import Array, IntArray
from rnnkit.clip import clip_grad_norm, grad_norm
from rnnkit.data import SequenceBatches
from rnnkit.io.model import save as save_model
from rnnkit.layers.sequential import ModelState
from rnnkit.losses import log_softmax
from rnnkit.optim import Optimizer

__all__ = [
    "Accuracy", "BitsPerChar", "CSVLogger", "Callback", "EarlyStopping", "FitRun", "History", "JSONLLogger",
    "MeanSquaredError", "Metric", "ModelCheckpoint", "Perplexity", "ProgressBar", "StepResult", "evaluate",
    "fit", "predict", "train_step",
]

LossFn = Callable[..., tuple[float, Array]]
"""``loss_fn(out, y, mask=None) -> (loss, d_out)`` with mean reduction, e.g. :func:`rnnkit.softmax_cross_entropy`."""


# ------------------------------------------------------------------------------------ one step
class StepResult(NamedTuple):
    """What one :func:`train_step` returns."""

    loss: float               # the batch's loss, before the update
    state: ModelState         # the model's final state (pass it on for truncated BPTT)
    grad_norm: float          # global L2 norm of the gradient before clipping
    out: Array                # the model's output (before the update), for metrics
    mask: npt.NDArray[np.bool_] | None  # the valid-target mask the loss used (None: all valid)


def step_mask(out: Array, x: Any, lengths: IntArray | None) -> npt.NDArray[np.bool_] | None:
    """The mask ``t < lengths[b]`` when ``out`` has a time axis matching ``x``'s, else None."""
    if lengths is None or out.ndim < 3 or out.shape[:2] != np.shape(x)[:2]:
        return None
    return np.arange(out.shape[1]) < np.asarray(lengths)[:, None]


def _loss(loss_fn: LossFn, out: Array, y: Any, mask: npt.NDArray[np.bool_] | None) -> tuple[float, Array]:
    return loss_fn(out, y) if mask is None else loss_fn(out, y, mask)


def _training_options(model: Any, lengths: IntArray | None, rng: np.random.Generator | None) -> dict[str, Any]:
    """The keyword arguments of a training forward pass that ``model.forward`` takes.

    A model with the Sequential contract takes ``training`` (and then draws its dropout masks from
    ``rng``); a hand-written one with only ``forward(x, state)`` may not, and then has no dropout.
    ``lengths`` is passed only when given, so such a model still trains on unpadded batches.
    """
    options: dict[str, Any] = {} if lengths is None else {"lengths": lengths}
    if "training" in inspect.signature(model.forward).parameters:
        options.update(training=True, rng=rng)
    return options


def train_step(
    model: Any,
    loss_fn: LossFn,
    optimizer: Optimizer,
    x: Any,
    y: Any,
    *,
    state: ModelState | None = None,
    lengths: IntArray | None = None,
    mask: npt.ArrayLike | None = None,
    clip: float | None = None,
    rng: np.random.Generator | None = None,
) -> StepResult:
    """One update: forward from ``state``, loss, backward within the batch, clip, optimizer step.

    Args:
        model: a :class:`~rnnkit.layers.Sequential` (or a layer with the same forward/backward contract).
        loss_fn: ``(out, y[, mask]) -> (loss, d_out)``.
        optimizer: anything with ``step(params, grads)``.
        x, y: the batch's inputs and targets.
        state: the state to start from (None: zeros); it is a constant — no gradient flows into it.
        lengths: ``(B,)`` valid steps per sequence, passed to the model; with a per-step output it
            also masks the loss (see the module docstring).
        mask: an explicit ``(B, T)`` loss mask; overrides the one made from ``lengths``.
        clip: max global L2 norm of the gradient, or None.
        rng: the generator the model's dropout masks are drawn from (the forward pass runs with
            ``training=True``); needed only when the model has dropout.

    Raises:
        FloatingPointError: the loss or the gradient norm is NaN or infinite; the parameters are left
            as they were (a diverged step is never applied).
    """
    out, final_state, cache = model.forward(x, state=state, **_training_options(model, lengths, rng))
    used_mask = step_mask(out, x, lengths) if mask is None else np.asarray(mask, dtype=bool)
    loss, d_out = _loss(loss_fn, out, y, used_mask)
    if not math.isfinite(loss):
        raise FloatingPointError(f"the loss is {loss}: training diverged (lower the learning rate, or clip the "
                                 f"gradient); the parameters are those before this step")
    # d_state=None: the final state is only carried forward, and the initial state is a constant.
    try:
        _, _, grads = model.backward(d_out, None, cache)
    except ValueError as error:
        # Huge (finite) weights can overflow inside backward although the loss was finite; the layers
        # then refuse the non-finite gradient they are handed.  That is divergence, not bad input.
        if "NaN or infinite" not in str(error):
            raise
        raise FloatingPointError(f"the loss is {loss} and the gradient overflowed in backward ({error}): training "
                                 f"diverged (lower the learning rate); the parameters are those before this step"
                                 ) from None
    norm = clip_grad_norm(grads, clip) if clip is not None else grad_norm(grads)
    if not math.isfinite(norm):
        # A finite loss can still have an overflowing gradient; clipping cannot rescue an inf or NaN norm.
        raise FloatingPointError(f"the loss is {loss} and the gradient norm {norm}: training diverged (lower the "
                                 f"learning rate); the parameters are those before this step")
    optimizer.step(model.params, grads)
    return StepResult(loss, final_state, norm, out, used_mask)


# ------------------------------------------------------------------------------------ metrics
class Metric:
    """A quantity accumulated over batches: :meth:`update` per batch, :meth:`result` at the end.

    Subclasses keep sums (never per-batch means), so the result over an epoch is exact whatever the
    batch sizes.  ``mask`` (``(B, T)`` booleans, or None) selects the positions that count.
    """

    name = "metric"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.total = 0.0
        self.count = 0

    def update(self, out: Array, y: Any, mask: npt.NDArray[np.bool_] | None = None) -> None:
        """Add one batch: the model's output and the targets."""
        raise NotImplementedError

    def result(self) -> float:
        """The metric over everything added since :meth:`reset` (NaN when nothing was added)."""
        return self.total / self.count if self.count else math.nan


def _positions(mask: npt.NDArray[np.bool_] | None, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    return np.ones(shape, bool) if mask is None else mask


class Accuracy(Metric):
    """The fraction of positions whose highest-scoring class (``argmax`` over the last axis) is the target."""

    name = "accuracy"

    def update(self, out: Array, y: Any, mask: npt.NDArray[np.bool_] | None = None) -> None:
        """Count the valid positions whose ``argmax(out)`` equals ``y``."""
        hit = np.argmax(out, axis=-1) == np.asarray(y)
        valid = _positions(mask, hit.shape)
        self.total += float(hit[valid].sum())
        self.count += int(valid.sum())


class MeanSquaredError(Metric):
    """The mean of ``(out - y)²`` over the valid elements."""

    name = "mse"

    def update(self, out: Array, y: Any, mask: npt.NDArray[np.bool_] | None = None) -> None:
        """Add the squared errors ``(out - y)²`` of the valid elements."""
        sq = (out - np.asarray(y, dtype=out.dtype)) ** 2
        valid = _positions(mask, sq.shape[: mask.ndim] if mask is not None else sq.shape)
        selected = sq[valid]
        self.total += float(selected.sum())
        self.count += int(selected.size)


class _CrossEntropy(Metric):
    """Sums the cross-entropy (in nats) of ``softmax(out)`` against integer targets."""

    def update(self, out: Array, y: Any, mask: npt.NDArray[np.bool_] | None = None) -> None:
        targets = np.asarray(y)
        logp = log_softmax(out.astype(np.float64), axis=-1)
        picked = np.take_along_axis(logp, targets[..., None].astype(np.int64), axis=-1)[..., 0]
        valid = _positions(mask, picked.shape)
        self.total -= float(picked[valid].sum())
        self.count += int(valid.sum())


class BitsPerChar(_CrossEntropy):
    """Cross-entropy per target in bits (``nats / ln 2``): a character model's bits per character."""

    name = "bits_per_char"

    def result(self) -> float:
        """The mean cross-entropy per valid target, in bits."""
        return super().result() / math.log(2)


class Perplexity(_CrossEntropy):
    """``exp`` of the mean cross-entropy per target (in nats)."""

    name = "perplexity"

    def result(self) -> float:
        """``exp`` of the mean cross-entropy per valid target (nats)."""
        return math.exp(super().result())


METRICS: dict[str, type[Metric]] = {
    "accuracy": Accuracy, "mse": MeanSquaredError, "bits_per_char": BitsPerChar, "bpc": BitsPerChar,
    "perplexity": Perplexity,
}
"""The metrics :func:`fit` and :func:`evaluate` accept by name."""


def _metrics(metrics: Iterable[str | Metric]) -> list[Metric]:
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    made: list[Metric] = []
    for metric in metrics:
        if isinstance(metric, str):
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)} (or pass a Metric)")
            made.append(METRICS[metric]())
        elif isinstance(metric, Metric):
            # A copy of its own for every use: training and validation accumulate separately.
            fresh = copy.deepcopy(metric)
            fresh.reset()
            made.append(fresh)
        else:
            raise TypeError(f"metrics must be names or Metric objects, got {type(metric).__name__}")
    names = [m.name for m in made]
    if len(set(names)) != len(names):
        raise ValueError(f"metrics are named twice: {names}")
    return made


# ------------------------------------------------------------------------------------ data
def _batches(data: Any, what: str, *, batch_size: int, shuffle: bool, seed: int, bucket: bool) -> Iterable[Any]:
    """Arrays ``(X, y[, lengths])`` become a :class:`SequenceBatches`; a re-iterable of batches is kept."""
    if isinstance(data, tuple) and data and isinstance(data[0], np.ndarray):
        if len(data) not in (2, 3):
            raise ValueError(f"{what} must be (X, y) or (X, y, lengths), got a tuple of {len(data)} arrays")
        lengths = data[2] if len(data) == 3 else None
        return SequenceBatches(data[0], data[1], lengths, batch_size=batch_size, shuffle=shuffle, seed=seed,
                               bucket=bucket and lengths is not None)
    if not isinstance(data, Iterable):
        raise TypeError(f"{what} must be (X, y[, lengths]) arrays or an iterable of batches, "
                        f"got {type(data).__name__}")
    if iter(data) is data:
        raise TypeError(f"{what} is a one-shot iterator (e.g. a generator); pass a re-iterable such as a list, "
                        f"rnnkit.data.SequenceBatches or rnnkit.data.StreamBatches")
    return data


def _unpack(batch: Any, what: str) -> tuple[Any, Any, IntArray | None]:
    if not isinstance(batch, tuple) or len(batch) not in (2, 3):
        raise ValueError(f"each batch of {what} must be (x, y) or (x, y, lengths), got {type(batch).__name__}")
    return batch[0], batch[1], batch[2] if len(batch) == 3 else None


def _count(out: Array, mask: npt.NDArray[np.bool_] | None) -> int:
    """How many targets a batch's mean loss averaged over: its weight in an epoch's mean."""
    if mask is not None:
        return int(mask.sum())
    return int(out.shape[0] * out.shape[1]) if out.ndim >= 3 else int(out.shape[0])


# ------------------------------------------------------------------------------------ evaluate / predict
def evaluate(
    model: Any,
    loss: LossFn,
    data: Any,
    *,
    batch_size: int = 256,
    metrics: Iterable[str | Metric] = (),
    stateful: bool = False,
) -> dict[str, float]:
    """The loss and metrics of ``model`` on ``data``, without changing the model.

    Args:
        model, loss: as for :func:`fit`.
        data: ``(X, y)`` / ``(X, y, lengths)`` arrays or a re-iterable of batches.
        batch_size: sequences per forward pass (for arrays); only memory depends on it.
        metrics: names (``"accuracy"``, ``"mse"``, ``"bits_per_char"``, ``"perplexity"``) or :class:`Metric` objects.
        stateful: carry the state from batch to batch (a token stream).

    Returns:
        ``{"loss": ..., metric name: ...}``: means over all valid targets.
    """
    batches = _batches(data, "data", batch_size=batch_size, shuffle=False, seed=0, bucket=False)
    made = _metrics(metrics)
    total, count, state = 0.0, 0, None
    for batch in batches:
        x, y, lengths = _unpack(batch, "data")
        out, final, _ = model.forward(x, state=state, lengths=lengths, keep_cache=False)
        mask = step_mask(out, x, lengths)
        value, _ = _loss(loss, out, y, mask)
        n = _count(out, mask)
        total += value * n
        count += n
        for metric in made:
            metric.update(out, y, mask)
        state = final if stateful else None
    if count == 0:
        raise ValueError("data holds no batch to evaluate")
    return {"loss": total / count, **{m.name: m.result() for m in made}}


def predict(
    model: Any,
    X: Any,
    lengths: npt.ArrayLike | None = None,
    *,
    batch_size: int = 256,
) -> Array:
    """The model's output for every sequence of ``X``, in order (an inference pass: no cache kept).

    Args:
        X: ``(N, T, ...)`` inputs (or ``(N, T)`` ids).
        lengths: ``(N,)`` valid steps per sequence, or None.
        batch_size: sequences per forward pass; the result does not depend on it.

    Returns:
        The outputs stacked along the first axis: ``(N, C)`` for a per-sequence head, ``(N, T, F)`` for
        a per-step model (zero past each sequence's length where the model makes it so).
    """
    batches = SequenceBatches(X, None, lengths, batch_size=batch_size, shuffle=False, trim=False)
    outs = [model.forward(x, lengths=lens, keep_cache=False)[0] for x, _, lens in batches]
    return np.concatenate(outs, axis=0)


# ------------------------------------------------------------------------------------ the run and its history
@dataclass
class History:
    """What :func:`fit` returns: one record (a dict) per log, and how the run ended.

    ``history["val_loss"]`` is the list of one key's values over the records.
    """

    records: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = ""
    """``"epochs"``, ``"steps"``, ``"time"``, ``"callback"`` (e.g. early stopping) or ``"interrupt"``."""

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C ended the run."""
        return self.stopped_by == "interrupt"

    def __getitem__(self, key: str) -> list[float]:
        return [record[key] for record in self.records if key in record]


@dataclass
class FitRun:
    """The live state of a :func:`fit` call, as callbacks see it.

    Callbacks may read everything and set :attr:`stop_training` to end the run after the current log.
    """

    model: Any
    optimizer: Optimizer
    history: History
    epoch: int = 0            # epochs completed
    step: int = 0             # optimizer steps taken
    stop_training: bool = False
    total_steps: int | None = None  # the steps the run will take at most, when known (for progress bars)


class Callback:
    """Hooks into :func:`fit`; override the ones you need (each does nothing by default)."""

    def on_train_begin(self, run: FitRun) -> None:
        """Before the first step."""

    def on_step_end(self, run: FitRun, loss: float) -> None:
        """After every optimizer step, with that batch's loss."""

    def on_log(self, run: FitRun, logs: dict[str, float]) -> None:
        """After every epoch (or every ``eval_every`` steps), with that log's record."""

    def on_train_end(self, run: FitRun) -> None:
        """After the last step, however the run ended (Ctrl-C included; not when an error escapes)."""


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "accuracy" in monitor else "min"
    return mode


class _Monitor:
    """Tracks the best value of one logged quantity."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be the name of a logged value, got {monitor!r}")
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"min_delta must be a non-negative number, got {min_delta!r}")
        self.monitor, self.mode, self.min_delta = monitor, _mode(monitor, mode), float(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def improved(self, logs: Mapping[str, float]) -> bool:
        if self.monitor not in logs:
            raise ValueError(f"cannot monitor {self.monitor!r}: the log has only {sorted(logs)} "
                             f"(val_ values need val=...)")
        value = logs[self.monitor]
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best = value
        return better


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` logs; optionally restore the best weights.

    Args:
        monitor: a logged value, e.g. ``"val_loss"`` (default) or ``"val_accuracy"``.
        patience: logs without improvement to tolerate before stopping.
        min_delta: an improvement must exceed this.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracies, min otherwise).
        restore_best: at the end of training — early stop, last epoch or Ctrl-C alike — put back the
            weights of the best log.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "auto",
                 restore_best: bool = True) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        self._tracker = _Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best = patience, bool(restore_best)
        self.wait = 0
        self.best_weights: dict[str, Array] | None = None
        self.best_epoch = -1
        self.stopped_epoch = -1

    @property
    def best(self) -> float:
        """The best monitored value so far."""
        return self._tracker.best

    def on_log(self, run: FitRun, logs: dict[str, float]) -> None:
        """Track ``monitor``: keep the best weights on improvement, stop after ``patience`` logs without."""
        if self._tracker.improved(logs):
            self.wait = 0
            self.best_epoch = run.epoch
            if self.restore_best:
                self.best_weights = {key: value.copy() for key, value in run.model.params.items()}
        else:
            self.wait += 1
            if self.wait > self.patience:
                run.stop_training = True
                self.stopped_epoch = run.epoch

    def on_train_end(self, run: FitRun) -> None:
        """Put the best log's weights back (``restore_best``)."""
        if self.restore_best and self.best_weights is not None:
            run.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (:func:`rnnkit.save`) as ``latest.safetensors`` after every log and at the end, and
    as ``best.safetensors`` whenever ``monitor`` improves, in ``directory``.

    Each file holds the architecture, the weights, the optimizer state (``save_optimizer``) and the
    run's position and last log as metadata (``epoch``, ``step``, ``logs``); each write is atomic.
    """

    def __init__(self, directory: str | os.PathLike[str], monitor: str = "val_loss", mode: str = "auto",
                 save_optimizer: bool = True) -> None:
        self.directory = Path(directory)
        self._tracker = _Monitor(monitor, mode)
        self.save_optimizer = bool(save_optimizer)
        self._last_logs: dict[str, float] = {}

    def on_train_begin(self, run: FitRun) -> None:
        """Create ``directory``."""
        self.directory.mkdir(parents=True, exist_ok=True)

    def _save(self, run: FitRun, name: str) -> None:
        metadata = {"epoch": run.epoch, "step": run.step, "logs": self._last_logs}
        save_model(run.model, self.directory / name, optimizer=run.optimizer if self.save_optimizer else None,
                   metadata=metadata)

    def on_log(self, run: FitRun, logs: dict[str, float]) -> None:
        """Write ``latest.safetensors``, and ``best.safetensors`` when ``monitor`` improved."""
        self._last_logs = {k: v for k, v in logs.items() if math.isfinite(v)}
        if self._tracker.improved(logs):
            self._save(run, "best.safetensors")
        self._save(run, "latest.safetensors")

    def on_train_end(self, run: FitRun) -> None:
        """Write ``latest.safetensors`` with the final weights (also after an early stop or Ctrl-C)."""
        self._save(run, "latest.safetensors")


class _FileLogger(Callback):
    def __init__(self, path: str | os.PathLike[str], append: bool = False) -> None:
        self.path, self.append = Path(path), bool(append)
        self._file: TextIO | None = None

    def on_train_begin(self, run: FitRun) -> None:
        self._file = open(self.path, "a" if self.append else "w", encoding="utf-8", newline="")

    def _write(self, logs: dict[str, float]) -> None:
        raise NotImplementedError

    def on_log(self, run: FitRun, logs: dict[str, float]) -> None:
        self._write(logs)
        assert self._file is not None
        self._file.flush()  # a crash or Ctrl-C keeps every line written so far

    def on_train_end(self, run: FitRun) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CSVLogger(_FileLogger):
    """Write every log record as one CSV row (a header first), flushed at once."""

    def __init__(self, path: str | os.PathLike[str], append: bool = False) -> None:
        super().__init__(path, append)
        self._writer: Any = None

    def _write(self, logs: dict[str, float]) -> None:
        assert self._file is not None
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(logs), extrasaction="ignore", restval="")
            if self._file.tell() == 0:
                self._writer.writeheader()
        self._writer.writerow(logs)

    def on_train_end(self, run: FitRun) -> None:
        """Close the file."""
        super().on_train_end(run)
        self._writer = None


class JSONLLogger(_FileLogger):
    """Write every log record as one JSON object per line, flushed at once (NaN written as null)."""

    def _write(self, logs: dict[str, float]) -> None:
        assert self._file is not None
        clean = {k: (v if math.isfinite(v) else None) for k, v in logs.items()}
        self._file.write(json.dumps(clean) + "\n")


class ProgressBar(Callback):
    """A progress bar over the steps (tqdm, from the ``app`` extra); without tqdm, one line per log on stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._bar: Any = None

    def on_train_begin(self, run: FitRun) -> None:
        """Open the bar over ``run.total_steps`` (nothing without tqdm)."""
        try:
            from tqdm import tqdm  # optional: only the app extra installs it
        except ImportError:
            return
        self._bar = tqdm(total=run.total_steps, unit="step", file=self.stream or sys.stderr,
                         dynamic_ncols=True)

    def on_step_end(self, run: FitRun, loss: float) -> None:
        """Advance the bar by one step and show the step's loss."""
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"loss={loss:.4f}", refresh=False)

    def on_log(self, run: FitRun, logs: dict[str, float]) -> None:
        """Print the log record as one line (above the bar)."""
        shown = "  ".join(f"{k}={v:.4g}" for k, v in logs.items() if k not in ("epoch", "step", "seconds"))
        line = f"epoch {run.epoch} step {run.step}  {shown}"
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, file=self.stream or sys.stderr, flush=True)

    def on_train_end(self, run: FitRun) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _InterruptFlag:
    """The first Ctrl-C becomes a flag the loop checks between steps; a second one raises KeyboardInterrupt.

    Signal handlers can only be installed from the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self._restore()
        print("\nfit: stopping after this step (Ctrl-C again to interrupt at once)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler if self._previous is None else self._previous)
            self._installed = False

    def __exit__(self, *exc: object) -> None:
        self._restore()


# ------------------------------------------------------------------------------------ fit
def _check_count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def fit(
    model: Any,
    loss: LossFn,
    optimizer: Optimizer,
    train: Any,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    val: Any = None,
    batch_size: int = 32,
    shuffle: bool = True,
    bucket: bool = False,
    seed: int = 0,
    clip: float | None = None,
    schedule: Any = None,
    metrics: Sequence[str | Metric] = (),
    callbacks: Sequence[Callback] = (),
    stateful: bool = False,
    eval_every: int | None = None,
    max_seconds: float | None = None,
    initial_epoch: int = 0,
    rng: np.random.Generator | None = None,
) -> History:
    """Train ``model`` on ``train``; returns the :class:`History` (module docstring: data, masks, logs, stopping).

    Args:
        model: a :class:`~rnnkit.layers.Sequential` (or a layer with the same forward/backward contract).
        loss: ``(out, y[, mask]) -> (loss, d_out)`` with mean reduction, e.g. ``softmax_cross_entropy``, ``mse``.
        optimizer: e.g. :class:`~rnnkit.optim.Adam`; its state carries over between calls.
        train: ``(X, y)`` / ``(X, y, lengths)`` arrays, or a re-iterable of batches.
        epochs, steps: stop after this many passes over ``train`` / optimizer steps (at least one of
            the two, or ``max_seconds``).
        val: validation data (same forms as ``train``), scored at every log.
        batch_size, shuffle, bucket, seed: how arrays are batched (:class:`~rnnkit.data.SequenceBatches`;
            epoch ``e``'s order depends only on ``seed`` and ``e``).
        clip: max global L2 norm of the gradient, or None.
        schedule: a learning-rate schedule (``.step()`` after every update), e.g. ``CosineAnnealingLR``.
        metrics: names or :class:`Metric` objects, computed on training batches and on ``val``.
        callbacks: :class:`Callback` objects (early stopping, checkpoints, loggers, progress bar).
        stateful: carry the state from batch to batch within an epoch (truncated BPTT over a stream).
        eval_every: log every this many steps instead of once per epoch.
        max_seconds: stop after the step that passes this much wall-clock time.
        initial_epoch: the first epoch's number, to resume (shuffled orders continue from there).
        rng: the generator the model's dropout masks are drawn from during training (evaluation
            runs without dropout); None: one seeded from ``seed``, so a run is reproducible.
    """
    epochs, steps, eval_every = _check_count("epochs", epochs), _check_count("steps", steps), \
        _check_count("eval_every", eval_every)
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    if epochs is None and steps is None and max_seconds is None:
        raise ValueError("give epochs, steps or max_seconds: fit needs to know when to stop")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or initial_epoch < 0:
        raise ValueError(f"initial_epoch must be a non-negative integer, got {initial_epoch!r}")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback objects, got {type(cb).__name__}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    # Its own stream (not the batch order's): the masks do not change when shuffling is switched off.
    masks_rng = rng if rng is not None else np.random.default_rng([seed, 1])
    train_batches = _batches(train, "train", batch_size=batch_size, shuffle=shuffle, seed=seed, bucket=bucket)
    if isinstance(train_batches, SequenceBatches):
        train_batches.epoch = initial_epoch
    val_batches = None if val is None else _batches(val, "val", batch_size=max(batch_size, 256), shuffle=False,
                                                    seed=0, bucket=False)
    train_metrics = _metrics(metrics)
    history = History()
    run = FitRun(model, optimizer, history, epoch=initial_epoch)
    per_epoch = len(train_batches) if isinstance(train_batches, Sized) else None
    totals = [n for n in (steps, None if epochs is None or per_epoch is None else epochs * per_epoch) if n]
    run.total_steps = min(totals) if totals else None

    start = time.perf_counter()
    period_loss, period_count = 0.0, 0

    def log() -> None:
        nonlocal period_loss, period_count
        logs: dict[str, float] = {"epoch": float(run.epoch), "step": float(run.step),
                                  "loss": period_loss / period_count if period_count else math.nan}
        logs.update({m.name: m.result() for m in train_metrics})
        if val_batches is not None:
            scores = evaluate(model, loss, val_batches, metrics=metrics, stateful=stateful)
            logs.update({f"val_{k}": v for k, v in scores.items()})
        logs["lr"] = float(getattr(optimizer, "lr", math.nan))
        logs["seconds"] = time.perf_counter() - start
        history.records.append(logs)
        for cb in callbacks:
            cb.on_log(run, logs)
        period_loss, period_count = 0.0, 0
        for m in train_metrics:
            m.reset()

    def limit_reached() -> str:
        if steps is not None and run.step >= steps:
            return "steps"
        # At least one step, however short the time: a run that does nothing helps no one.
        if max_seconds is not None and run.step > 0 and time.perf_counter() - start >= max_seconds:
            return "time"
        return ""

    for cb in callbacks:
        cb.on_train_begin(run)
    stopped_by = ""
    with _InterruptFlag() as interrupt:
        while not stopped_by:
            if epochs is not None and run.epoch - initial_epoch >= epochs:
                stopped_by = "epochs"
                break
            state: ModelState | None = None
            took_step = False
            # Limits are checked before each step, so an epoch that ends exactly at the limit is complete.
            for batch in train_batches:
                stopped_by = limit_reached()
                if stopped_by:
                    break
                x, y, lengths = _unpack(batch, "train")
                try:
                    result = train_step(model, loss, optimizer, x, y, state=state, lengths=lengths, clip=clip,
                                        rng=masks_rng)
                except FloatingPointError as error:
                    raise FloatingPointError(f"step {run.step + 1}: {error}") from None
                took_step = True
                run.step += 1
                if schedule is not None:
                    schedule.step()
                n = _count(result.out, result.mask)
                period_loss += result.loss * n
                period_count += n
                for m in train_metrics:
                    m.update(result.out, y, result.mask)
                state = result.state if stateful else None
                for cb in callbacks:
                    cb.on_step_end(run, result.loss)
                if eval_every is not None and run.step % eval_every == 0:
                    log()
                if interrupt.requested:
                    stopped_by = "interrupt"
                elif run.stop_training:
                    stopped_by = "callback"
                if stopped_by:
                    break
            else:
                if not took_step:
                    raise ValueError("train yielded no batch")
                run.epoch += 1
                if eval_every is None:
                    log()
                if run.stop_training:
                    stopped_by = "callback"
                if not stopped_by and limit_reached():
                    stopped_by = limit_reached()
        # A run cut by its step or time limit logs the steps since its last log.
        if stopped_by in ("steps", "time") and period_count:
            log()
    history.stopped_by = stopped_by
    for cb in callbacks:
        cb.on_train_end(run)
    return history
