"""rnnkit: recurrent neural networks (RNN, LSTM, GRU) from first principles in NumPy."""

from rnnkit.layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["GRU", "LSTM", "RNN", "__version__"]
