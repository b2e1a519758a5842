"""Exporting a trained char-LM (what ``rnnkit export`` runs): ONNX, weights-only safetensors, a PyTorch state dict.

A training checkpoint carries Adam's moments, the data position and the random state beside the
weights -- three times the weights' size.  For deployment only the weights and what is needed to use
them travel:

* ``onnx``: the network as an ONNX graph (:func:`rnnkit.export_onnx`) with the vocabulary and the
  model settings in its ``metadata_props``, for onnxruntime;
* ``safetensors``: the weights under their PyTorch names plus the architecture document (that of
  :func:`rnnkit.save`, :func:`rnnkit.io.describe`) -- a
  weights-only char-LM checkpoint, which ``rnnkit sample`` and ``rnnkit train --init-from`` read like
  any other (:func:`save_weights`), and the ``safetensors`` package reads too;
* ``torch``: the ``state_dict`` of the equivalent ``torch.nn`` module (:func:`rnnkit.to_torch`),
  for ``module.load_state_dict(torch.load(path, weights_only=True))``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnkit import export_onnx, to_torch
from rnnkit.charlm.data import Vocab
from rnnkit.charlm.model import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CharLM, load_model
from rnnkit.io import describe
from rnnkit.io.checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint

FORMATS = {"onnx": (".onnx",), "safetensors": (".safetensors",), "torch": (".pt", ".pth")}
"""Each export format and the file suffixes it writes."""


@dataclass
class ExportConfig:
    """What ``rnnkit export`` does; the command line only parses its options into this."""

    checkpoint: str               # a char-LM checkpoint, or a run directory (its best checkpoint)
    format: str                   # one of FORMATS
    out: str                      # the file to write (its suffix must fit the format)
    with_lengths: bool = False    # onnx: a `lengths` input for padded batches
    with_state: bool = False      # onnx: initial-state inputs (generation token by token)
    opset: int | None = None      # onnx: the opset (None: rnnkit.interop.onnx.DEFAULT_OPSET)
    dtype: str = "float32"        # onnx: the exported float type (onnxruntime's recurrent ops are float32 only)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        suffixes = FORMATS[self.format]
        if Path(self.out).suffix not in suffixes or not Path(self.out).stem:
            raise ValueError(f"--out must name a {' or '.join(suffixes)} file for --format {self.format}, "
                             f"got {self.out!r}")
        onnx_only = {"with_lengths": self.with_lengths, "with_state": self.with_state,
                     "opset": self.opset is not None, "dtype": self.dtype != "float32"}
        if self.format != "onnx" and any(onnx_only.values()):
            used = [name for name, given in onnx_only.items() if given]
            raise ValueError(f"{', '.join(used)}: options of --format onnx only")


def weights_document(model: CharLM, vocab: Vocab, mode: str, max_item_length: int | None) -> dict[str, Any]:
    """The checkpoint document of a weights-only char-LM: what ``rnnkit sample`` needs, no training state."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model.config.to_json(),
        "vocab": vocab.to_json(),
        "mode": mode,
        "max_item_length": max_item_length,
        # The architecture document of rnnkit.save (blocks, their options, tied parameters): one
        # description of a model for every file rnnkit writes.
        "architecture": describe(model.net),
    }


def save_weights(
    path: str | Path, model: CharLM, vocab: Vocab, *, mode: str = "stream", max_item_length: int | None = None
) -> Path:
    """Write ``model`` as a weights-only char-LM checkpoint (atomically), readable by :func:`load_model`.

    ``mode`` and ``max_item_length`` are the training run's (``document["mode"]``,
    ``document["max_item_length"]``): lines-mode sampling needs them.  Refuses to replace a training
    checkpoint (one with optimizer state), which would lose what ``--resume`` needs.
    """
    target = Path(path)
    _refuse_training_checkpoint(target)
    return save_checkpoint(target, model.state_dict(), weights_document(model, vocab, mode, max_item_length))


def _refuse_training_checkpoint(target: Path) -> None:
    if target.suffix != ".safetensors" or not target.is_file():
        return
    try:
        _, document = load_checkpoint(target)
    except CheckpointError:
        return  # not an rnnkit checkpoint, or a damaged one: nothing of a training run is lost
    if "optimizer" in document or "progress" in document:
        raise ValueError(f"{target} is a training checkpoint (it holds optimizer state); exporting over it would "
                         f"lose what --resume needs: choose another --out")


def export_model(config: ExportConfig) -> str:
    """Export the checkpoint as ``config`` says and return a one-line summary of what was written."""
    loaded = load_model(config.checkpoint)
    out = Path(config.out)
    if out.resolve() == loaded.path.resolve():
        raise ValueError(f"--out {out} is the checkpoint being exported; choose another file")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the directory {out.parent} does not exist")
    document = loaded.document
    mode, max_item_length = document.get("mode", "stream"), document.get("max_item_length")
    model, net = loaded.model, loaded.model.net

    if config.format == "onnx":
        metadata = {
            "rnnkit.format": CHECKPOINT_FORMAT,
            "vocab": json.dumps(loaded.vocab.to_json(), ensure_ascii=False),
            "mode": mode,
            "max_item_length": json.dumps(max_item_length),
            "model": json.dumps(model.config.to_json()),
        }
        try:
            export_onnx(net, out, with_lengths=config.with_lengths, with_state=config.with_state,
                        opset=config.opset, dtype=config.dtype, metadata=metadata)
        except TypeError as error:  # a model ONNX cannot hold (a layer-normalised LSTM, zoneout, proj_size)
            raise ValueError(f"--format onnx: {error}") from None
        inputs = ["tokens", *(["lengths"] if config.with_lengths else []),
                  *(f"rnn.{s}0" for s in _state_names(model) if config.with_state)]
        outputs = ["out", *(f"rnn.{s}_n" for s in _state_names(model))]
        detail = f"inputs {', '.join(inputs)}; outputs {', '.join(outputs)}; vocabulary in its metadata"
    elif config.format == "safetensors":
        save_weights(out, model, loaded.vocab, mode=mode, max_item_length=max_item_length)
        detail = "weights and architecture; rnnkit sample reads it"
    else:
        try:
            module = to_torch(net)  # without torch, its ImportError says how to install it
        except TypeError as error:  # a model torch.nn cannot hold (a layer-normalised LSTM, zoneout)
            raise ValueError(f"--format torch: {error}") from None
        import torch

        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        atomic_write_bytes(out, buffer.getvalue())
        detail = "a state_dict for rnnkit.to_torch(model) or an nn.Module with the blocks embed, rnn, head"
    size = sum(p.stat().st_size for p in (out, out.with_name(out.name + ".data")) if p.is_file())
    return f"wrote {out} ({config.format}, {size / 1e6:.2f} MB): {detail}"


def _state_names(model: CharLM) -> tuple[str, ...]:
    return ("h", "c") if model.config.cell in ("lstm", "lnlstm") else ("h",)
