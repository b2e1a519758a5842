"""rnnkit: recurrent neural networks (RNN, LSTM, GRU) from first principles in NumPy.

The public API, by stratum (each imports only from the ones before it):

* cells and the BPTT loop: :mod:`rnnkit.cells`, :mod:`rnnkit.unroll`;
* layers: :class:`RNN`, :class:`LSTM`, :class:`GRU` (batch-first, PyTorch's names and layouts) and the
  layer-normalised :class:`LayerNormLSTM`;
* the textbook API: :mod:`rnnkit.textbook` (``rnn_cell_forward``, ``lstm_backward``, ...);
* models: :class:`Embedding`, :class:`Linear`, :class:`Dropout`, :class:`Sequential` (tied parameters),
  the pooling heads :class:`LastStep`, :class:`MeanPool`;
* data: :func:`pad_sequences`, :class:`SequenceBatches`, :func:`stream_batches` (:mod:`rnnkit.data`);
* training: losses, clipping, optimizers, truncated BPTT, gradient checking, gradient-flow
  diagnostics, and the training loop :func:`fit` / :func:`evaluate` / :func:`predict` with its
  metrics and callbacks (:mod:`rnnkit.fit`);
* saving a whole model, architecture included: :func:`save` / :func:`load` (:mod:`rnnkit.io.model`);
* interop and deployment: :func:`export_onnx`, :func:`to_torch` / :func:`from_torch`,
  :func:`load_state_dict_file` (onnx and torch are imported inside them only).
"""

import sys
import types
from typing import TYPE_CHECKING

# The names are imported on first use (PEP 562), not here: ``import rnnkit.cli`` -- what the
# ``rnnkit`` command runs first -- then costs almost nothing, so a Ctrl-C while NumPy and the layers
# load happens inside the command's own handler (one line, exit 130) rather than as a traceback.
_EXPORTS = {
    "data": "rnnkit.data", "optim": "rnnkit.optim",
    "Array": "rnnkit._types", "Grads": "rnnkit._types", "IntArray": "rnnkit._types", "Params": "rnnkit._types",
    "clip_grad_norm": "rnnkit.clip", "clip_grad_value": "rnnkit.clip", "grad_norm": "rnnkit.clip",
    "Batch": "rnnkit.data", "SequenceBatches": "rnnkit.data", "StreamBatches": "rnnkit.data",
    "pad_sequences": "rnnkit.data", "stream_batches": "rnnkit.data",
    "gradient_norms_over_time": "rnnkit.diagnostics", "plot_gradient_flow": "rnnkit.diagnostics",
    "Accuracy": "rnnkit.fit", "BitsPerChar": "rnnkit.fit", "Callback": "rnnkit.fit", "CSVLogger": "rnnkit.fit",
    "EarlyStopping": "rnnkit.fit", "History": "rnnkit.fit", "JSONLLogger": "rnnkit.fit",
    "MeanSquaredError": "rnnkit.fit", "Metric": "rnnkit.fit", "ModelCheckpoint": "rnnkit.fit",
    "Perplexity": "rnnkit.fit", "ProgressBar": "rnnkit.fit", "evaluate": "rnnkit.fit", "fit": "rnnkit.fit",
    "predict": "rnnkit.fit", "train_step": "rnnkit.fit",
    "GradcheckReport": "rnnkit.gradcheck", "gradcheck": "rnnkit.gradcheck",
    "export_onnx": "rnnkit.interop", "from_torch": "rnnkit.interop", "load_state_dict_file": "rnnkit.interop",
    "to_torch": "rnnkit.interop",
    "load": "rnnkit.io.model", "save": "rnnkit.io.model",
    "GRU": "rnnkit.layers", "LSTM": "rnnkit.layers", "RNN": "rnnkit.layers", "Embedding": "rnnkit.layers",
    "Dropout": "rnnkit.layers", "LastStep": "rnnkit.layers", "LayerNormLSTM": "rnnkit.layers",
    "Linear": "rnnkit.layers", "MeanPool": "rnnkit.layers",
    "ModelState": "rnnkit.layers", "Sequential": "rnnkit.layers", "detach_state": "rnnkit.layers",
    "log_softmax": "rnnkit.losses", "mse": "rnnkit.losses", "softmax": "rnnkit.losses",
    "softmax_cross_entropy": "rnnkit.losses",
    "SGD": "rnnkit.optim", "Adagrad": "rnnkit.optim", "Adam": "rnnkit.optim", "AdamW": "rnnkit.optim",
    "CosineAnnealingLR": "rnnkit.optim", "LinearWarmup": "rnnkit.optim", "RMSprop": "rnnkit.optim",
    "StepLR": "rnnkit.optim",
    "TBPTTStep": "rnnkit.tbptt", "tbptt_step": "rnnkit.tbptt",
    "get_num_threads": "rnnkit.parallel", "set_num_threads": "rnnkit.parallel", "threads": "rnnkit.parallel",
}
# Names in _EXPORTS that are submodules themselves (``rnnkit.optim``); every other name is an
# attribute of its module.
_MODULES = {"data", "optim"}

# An exported function named like the submodule it lives in: ``rnnkit.fit`` is the function ``fit``.
# The import system binds a submodule to its package's attribute when the submodule is first loaded
# -- by anyone, e.g. ``from rnnkit.fit import History`` -- which would leave the module there
# instead, so the package skips that binding (the module stays importable by name through
# ``sys.modules``).
_SHADOWED = {name for name, module in _EXPORTS.items() if module == f"rnnkit.{name}" and name not in _MODULES}


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> object:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(module_name)
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
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
    from rnnkit.interop import export_onnx, from_torch, load_state_dict_file, to_torch
    from rnnkit.io.model import load, save
    from rnnkit.layers import (
        GRU,
        LSTM,
        RNN,
        Dropout,
        Embedding,
        LastStep,
        LayerNormLSTM,
        Linear,
        MeanPool,
        ModelState,
        Sequential,
        detach_state,
    )
    from rnnkit.losses import log_softmax, mse, softmax, softmax_cross_entropy
    from rnnkit.optim import SGD, Adagrad, Adam, AdamW, CosineAnnealingLR, LinearWarmup, RMSprop, StepLR
    from rnnkit.parallel import get_num_threads, set_num_threads, threads
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
    "Dropout",
    "Embedding",
    "LastStep",
    "LayerNormLSTM",
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
    "get_num_threads",
    "set_num_threads",
    "threads",
    "__version__",
]
