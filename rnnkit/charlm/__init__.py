"""The character-level language model: rnnkit's main application (``rnnkit train`` / ``rnnkit sample``).

Built only on rnnkit's public API (layers, losses, clipping, optimizers, checkpoints):

* :mod:`~rnnkit.charlm.data` -- loading text (or the built-in corpus), the vocabulary, stream and line batches;
* :mod:`~rnnkit.charlm.model` -- :class:`CharLM` (Embedding -> RNN/LSTM/GRU -> Linear), loss, evaluation,
  generation, loading checkpoints;
* :mod:`~rnnkit.charlm.sample` -- generating text in either mode;
* :mod:`~rnnkit.charlm.train` -- :class:`TrainConfig` and :func:`train`: the loop, the run directory, exact resume;
* :mod:`~rnnkit.charlm.plot` -- the loss curve.
"""

from rnnkit.charlm.data import DataError, Vocab, load_text
from rnnkit.charlm.model import CharLM, LoadedModel, ModelConfig, bits, load_model
from rnnkit.charlm.sample import generate_text
from rnnkit.charlm.train import TrainConfig, Trainer, TrainResult, train

__all__ = [
    "CharLM",
    "DataError",
    "LoadedModel",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "Vocab",
    "bits",
    "generate_text",
    "load_model",
    "load_text",
    "train",
]
