"""Batch-first layers with explicit caches and PyTorch's parameter names."""

from rnnkit.layers.dropout import Dropout
from rnnkit.layers.embedding import Embedding
from rnnkit.layers.heads import LastStep, MeanPool
from rnnkit.layers.linear import Linear
from rnnkit.layers.recurrent import GRU, LSTM, RNN, LayerNormLSTM, Recurrent, RecurrentCache
from rnnkit.layers.sequential import ModelState, Sequential, detach_state

__all__ = [
    "GRU", "LSTM", "RNN", "Dropout", "Embedding", "LastStep", "LayerNormLSTM", "Linear", "MeanPool", "ModelState",
    "Recurrent",
    "RecurrentCache", "Sequential", "detach_state",
]
