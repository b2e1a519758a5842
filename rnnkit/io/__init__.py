"""Saving and loading: safetensors files, atomic writes, and single-file checkpoints (weights + document).

Everything lives in :mod:`rnnkit.io.checkpoint`; its docstring describes the formats and guarantees.
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

__all__ = [
    "CheckpointError",
    "Tensors",
    "atomic_write_bytes",
    "atomic_write_text",
    "decode_tensors",
    "encode_tensors",
    "load_checkpoint",
    "load_tensors",
    "save_checkpoint",
    "save_tensors",
]
