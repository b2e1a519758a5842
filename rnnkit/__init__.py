"""rnnkit: recurrent neural networks (RNN, LSTM, GRU) from first principles in NumPy.

The public API, by stratum (each imports only from the ones before it):

* cells and the BPTT loop: :mod:`rnnkit.cells`, :mod:`rnnkit.unroll`;
* layers: :class:`RNN`, :class:`LSTM`, :class:`GRU` (batch-first, PyTorch's names and layouts);
* the textbook API: :mod:`rnnkit.textbook` (``rnn_cell_forward``, ``lstm_backward``, ...);
* models: :class:`Embedding`, :class:`Linear`, :class:`Sequential`;
* training: losses, clipping, optimizers, truncated BPTT, gradient checking, gradient-flow
  diagnostics;
* interop and deployment: :func:`export_onnx`, :func:`to_torch` / :func:`from_torch`,
  :func:`load_state_dict_file` (onnx and torch are imported inside them only).
"""

from rnnkit import optim
from rnnkit._types import Array, Grads, IntArray, Params
from rnnkit.clip import clip_grad_norm, clip_grad_value, grad_norm
from rnnkit.diagnostics import gradient_norms_over_time, plot_gradient_flow
from rnnkit.gradcheck import GradcheckReport, gradcheck
from rnnkit.interop import export_onnx, from_torch, load_state_dict_file, to_torch
from rnnkit.layers import GRU, LSTM, RNN, Embedding, Linear, ModelState, Sequential, detach_state
from rnnkit.losses import log_softmax, mse, softmax, softmax_cross_entropy
from rnnkit.optim import SGD, Adagrad, Adam, AdamW, CosineAnnealingLR, LinearWarmup, RMSprop, StepLR
from rnnkit.tbptt import TBPTTStep, stream_batches, tbptt_step

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
    "Linear",
    "Sequential",
    "TBPTTStep",
    "detach_state",
    "export_onnx",
    "from_torch",
    "load_state_dict_file",
    "to_torch",
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
