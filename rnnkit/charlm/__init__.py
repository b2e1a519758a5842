"""The character-level language model: rnnkit's main application (``rnnkit train`` / ``rnnkit sample``).

Built only on rnnkit's public API (layers, losses, clipping, optimizers, checkpoints):

* :mod:`~rnnkit.charlm.data` -- loading text (or the built-in corpus), the vocabulary, stream and line batches;
* :mod:`~rnnkit.charlm.model` -- :class:`CharLM` (Embedding -> RNN/LSTM/GRU -> Linear), loss, evaluation,
  generation, loading checkpoints;
* :mod:`~rnnkit.charlm.sample` -- :class:`SampleConfig` and :func:`sample_text` (what ``rnnkit sample`` runs),
  generating text in either mode;
* :mod:`~rnnkit.charlm.train` -- :class:`TrainConfig` and :func:`rnnkit.charlm.train.train`: the loop, the run
  directory, exact resume (the function is not re-exported here, so that ``rnnkit.charlm.train`` stays the module);
* :mod:`~rnnkit.charlm.plot` -- the loss curve.
"""

from rnnkit.charlm.data import DataError, Vocab, load_text
from rnnkit.charlm.model import CharLM, LoadedModel, ModelConfig, bits, load_model
from rnnkit.charlm.sample import SampleConfig, generate_text, sample_text
from rnnkit.charlm.train import TrainConfig, Trainer, TrainResult

__all__ = [
    "CharLM",
    "DataError",
    "LoadedModel",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "Vocab",
    "bits",
    "generate_text",
    "load_model",
    "load_text",
    "sample_text",
]
