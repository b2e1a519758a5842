"""Per-step cell math: compiled step kernels, one file per cell (see ``_spec.py`` for the contract)."""

from rnnkit.cells._spec import CellSpec, step_backward, step_forward, step_pack, step_pack_t
from rnnkit.cells.gru import GRU_CELL, GRUCache
from rnnkit.cells.lnlstm import LNLSTM_CELL, LNLSTMCache
from rnnkit.cells.lstm import LSTM_CELL, LSTMCache
from rnnkit.cells.rnn import RNN_RELU_CELL, RNN_TANH_CELL, RNNCache

__all__ = [
    "CellSpec",
    "GRU_CELL",
    "GRUCache",
    "LNLSTM_CELL",
    "LNLSTMCache",
    "LSTM_CELL",
    "LSTMCache",
    "RNN_RELU_CELL",
    "RNN_TANH_CELL",
    "RNNCache",
    "step_backward",
    "step_forward",
    "step_pack",
    "step_pack_t",
]
