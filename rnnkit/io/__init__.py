"""Saving and loading: safetensors files, atomic writes, and single-file checkpoints (weights + document).

The formats and guarantees are in :mod:`rnnkit.io.checkpoint`'s docstring; :mod:`rnnkit.io.files`
reads the files a user names (regular files only, bounded reads); :mod:`rnnkit.io.model` saves and
loads a whole model, architecture included (``rnnkit.save`` / ``rnnkit.load``).
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
from rnnkit.io.files import UnreadableFile, available_memory, format_bytes, read_regular_file
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
    "UnreadableFile",
    "available_memory",
    "format_bytes",
    "read_regular_file",
]
