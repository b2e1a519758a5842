"""Batch-first layers with explicit caches and PyTorch's parameter names."""

from rnnkit.layers.recurrent import GRU, LSTM, RNN, Recurrent, RecurrentCache

__all__ = ["GRU", "LSTM", "RNN", "Recurrent", "RecurrentCache"]
