"""Saving and loading: safetensors files, atomic writes, and single-file checkpoints (weights + document).

The file formats live in :mod:`rnnkit.io.checkpoint` (its docstring describes them and their guarantees);
:mod:`rnnkit.io.model` saves and loads a whole model, architecture included (``rnnkit.save`` / ``rnnkit.load``).
"""

from rnnkit.io.checkpoint import (
    CheckpointError,
    Tensors,
    atomic_write_bytes,
    atomic_write_text,
    decode_tensors,
    encode_tensors,
    load_checkpoint,
    load_tensors,
    save_checkpoint,
    save_tensors,
)
from rnnkit.io.model import describe, load, save

__all__ = [
    "CheckpointError",
    "Tensors",
    "atomic_write_bytes",
    "atomic_write_text",
    "decode_tensors",
    "describe",
    "encode_tensors",
    "load",
    "load_checkpoint",
    "load_tensors",
    "save",
    "save_checkpoint",
    "save_tensors",
]
