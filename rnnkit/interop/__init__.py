"""Interop and deployment: ONNX export, conversion to and from PyTorch, weight files written by PyTorch.

* :func:`export_onnx` (:mod:`rnnkit.interop.onnx`) -- an ONNX graph of ONNX's own RNN / LSTM / GRU
  operators, for onnxruntime; needs the ``onnx`` package (``pip install 'rnnkit[onnx]'``).
* :func:`to_torch` / :func:`from_torch` (:mod:`rnnkit.interop.torch`) -- the equivalent ``torch.nn``
  modules and back; need torch.
* :func:`load_state_dict_file` -- a state dict from a safetensors file (pure NumPy) or a PyTorch
  ``.pt`` / ``.pth`` file (only through ``torch.load(weights_only=True)``, when torch is installed).

onnx and torch are imported inside these functions only: ``import rnnkit`` needs neither.
"""

from rnnkit.interop.onnx import export_onnx
from rnnkit.interop.torch import from_torch, load_state_dict_file, to_torch

__all__ = ["export_onnx", "from_torch", "load_state_dict_file", "to_torch"]
