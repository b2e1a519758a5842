"""rnnkit: recurrent neural networks (RNN, LSTM, GRU) from first principles in NumPy.

The public API, by stratum (each imports only from the ones before it):

* cells and the BPTT loop: :mod:`rnnkit.cells`, :mod:`rnnkit.unroll`;
* layers: :class:`RNN`, :class:`LSTM`, :class:`GRU` (batch-first, PyTorch's names and layouts);
* the textbook API: :mod:`rnnkit.textbook` (``rnn_cell_forward``, ``lstm_backward``, ...);
* models: :class:`Embedding`, :class:`Linear`, :class:`Sequential`, the pooling heads
  :class:`LastStep`, :class:`MeanPool`;
* data: :func:`pad_sequences`, :class:`SequenceBatches`, :func:`stream_batches` (:mod:`rnnkit.data`);
* training: losses, clipping, optimizers, truncated BPTT, gradient checking, gradient-flow
  diagnostics, and the training loop :func:`fit` / :func:`evaluate` / :func:`predict` with its
  metrics and callbacks (:mod:`rnnkit.fit`);
* saving a whole model, architecture included: :func:`save` / :func:`load` (:mod:`rnnkit.io.model`).
"""

from rnnkit import data, optim
from rnnkit._types import Array, Grads, IntArray, Params
from rnnkit.clip import clip_grad_norm, clip_grad_value, grad_norm
from rnnkit.data import Batch, SequenceBatches, StreamBatches, pad_sequences, stream_batches
from rnnkit.diagnostics import gradient_norms_over_time, plot_gradient_flow
from rnnkit.fit import (
    Accuracy,
    BitsPerChar,
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    JSONLLogger,
    MeanSquaredError,
    Metric,
    ModelCheckpoint,
    Perplexity,
    ProgressBar,
    evaluate,
    fit,
    predict,
    train_step,
)
from rnnkit.gradcheck import GradcheckReport, gradcheck
from rnnkit.io.model import load, save
from rnnkit.layers import (
    GRU,
    LSTM,
    RNN,
    Embedding,
    LastStep,
    Linear,
    MeanPool,
    ModelState,
    Sequential,
    detach_state,
)
from rnnkit.losses import log_softmax, mse, softmax, softmax_cross_entropy
from rnnkit.optim import SGD, Adagrad, Adam, AdamW, CosineAnnealingLR, LinearWarmup, RMSprop, StepLR
from rnnkit.tbptt import TBPTTStep, tbptt_step

__version__ = "0.1.0"

__all__ = [
    "Array",
    "Grads",
    "IntArray",
    "ModelState",
    "Params",
    "GRU",
    "LSTM",
    "RNN",
    "Embedding",
    "LastStep",
    "Linear",
    "MeanPool",
    "Sequential",
    "Batch",
    "SequenceBatches",
    "StreamBatches",
    "data",
    "pad_sequences",
    "Accuracy",
    "BitsPerChar",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "JSONLLogger",
    "MeanSquaredError",
    "Metric",
    "ModelCheckpoint",
    "Perplexity",
    "ProgressBar",
    "evaluate",
    "fit",
    "load",
    "predict",
    "save",
    "train_step",
    "TBPTTStep",
    "detach_state",
    "gradient_norms_over_time",
    "plot_gradient_flow",
    "stream_batches",
    "tbptt_step",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "GradcheckReport",
    "LinearWarmup",
    "RMSprop",
    "StepLR",
    "clip_grad_norm",
    "clip_grad_value",
    "grad_norm",
    "gradcheck",
    "log_softmax",
    "mse",
    "optim",
    "softmax",
    "softmax_cross_entropy",
    "__version__",
]
