"""Saving a model with its architecture: :func:`save` and :func:`load` (``rnnkit.save`` / ``rnnkit.load``).

One file holds everything needed to rebuild the model — no Python code to import, no pickle::

    rnnkit.save(model, "classifier.safetensors")                    # optionally optimizer=...
    model = rnnkit.load("classifier.safetensors")                   # the same blocks, the same weights

The file is an rnnkit checkpoint (:mod:`rnnkit.io.checkpoint`: one safetensors file, written
atomically, checksummed), so any safetensors reader sees the weights under the model's own
parameter names (``rnn.weight_ih_l0``, ``head.bias``).  Its document holds

* ``"kind": "rnnkit.model"`` and ``"architecture"``: a JSON description of the blocks and their
  constructor options (regularization and initialisation options and tied parameters included),
  e.g. ``{"type": "Sequential", "layers": [["rnn", {"type": "LSTM",
  "input_size": 8, "hidden_size": 32, ...}], ["head", {"type": "Linear", ...}]]}``;
* optionally ``"optimizer"``: the optimizer's ``state_dict()`` (type, step, hyper-parameters and
  moment buffers), restored by ``load(path, optimizer=...)``;
* optionally ``"metadata"``: any JSON-like dict the caller passes (epoch, metrics ...).

**Loading executes no code.**  Each ``"type"`` is looked up in a fixed table of rnnkit's blocks
(:data:`BLOCKS`); an unknown type, an unknown or missing option, or an option of the wrong kind is
refused with a :class:`~rnnkit.io.checkpoint.CheckpointError` naming its place in the architecture.
The weights are then checked against the rebuilt model (every name present, every shape right) by
the blocks' own ``load_state_dict``, and the model is returned only when all of it fits.

A new block becomes saveable by adding it to :data:`BLOCKS`: its type name, its class and the
constructor options that describe it (read back from attributes of the same names).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rnnkit.layers import GRU, LSTM, RNN, Dropout, Embedding, LastStep, LayerNormLSTM, Linear, MeanPool, Sequential

__all__ = ["BLOCKS", "BlockType", "describe", "load", "save"]

MODEL_KIND = "rnnkit.model"


OptionalFloat = (float, type(None))
"""The kind of an option that is a number or ``null`` (the LSTM's ``forget_bias``)."""

Kind = type | tuple[type, ...]


@dataclass(frozen=True)
class BlockType:
    """How one block class is described and rebuilt: its constructor options and their kinds.

    ``options`` maps each constructor keyword to the JSON kind it must have (``int``, ``bool``,
    ``str``, ``float`` -- an integer is accepted for it --, or :data:`OptionalFloat`); each is read
    back from the block's attribute of the same name.  ``defaults`` names the options a file may
    leave out (the constructor's default then applies: files written before the option existed).
    ``dtype`` (the parameters' dtype) is added for blocks that have one.
    """

    cls: type
    options: Mapping[str, Kind]
    has_dtype: bool = True
    defaults: frozenset[str] = frozenset()


_RECURRENT_OPTIONS: dict[str, Kind] = {
    "input_size": int, "hidden_size": int, "num_layers": int, "bidirectional": bool,
    # The regularization and initialisation options: they change training (dropout) and how a fresh
    # layer is initialised, so a loaded model trains and re-initialises as the saved one did.
    "bias": bool, "dropout": float, "weight_drop": float, "init_hh": str, "init_ih": str,
}
_RECURRENT_DEFAULTS = frozenset({"bias", "dropout", "weight_drop", "init_hh", "init_ih", "forget_bias",
                                 "proj_size", "recurrent_dropout", "zoneout"})
# Options inside the time loop (issue 10, phase 2): every recurrent layer has zoneout; recurrent
# dropout is for the RNN, LSTM and LayerNormLSTM, proj_size for the LSTM.
_IN_LOOP: dict[str, Kind] = {"zoneout": float}
_RECURRENT_DROPOUT: dict[str, Kind] = {"recurrent_dropout": float}

BLOCKS: dict[str, BlockType] = {
    "Linear": BlockType(Linear, {"in_features": int, "out_features": int}),
    "Embedding": BlockType(Embedding, {"num_embeddings": int, "embedding_dim": int, "dropout": float},
                           defaults=frozenset({"dropout"})),
    "RNN": BlockType(RNN, {**_RECURRENT_OPTIONS, "nonlinearity": str, **_IN_LOOP, **_RECURRENT_DROPOUT},
                     defaults=_RECURRENT_DEFAULTS),
    "LSTM": BlockType(LSTM, {**_RECURRENT_OPTIONS, "forget_bias": OptionalFloat, "proj_size": int, **_IN_LOOP,
                             **_RECURRENT_DROPOUT}, defaults=_RECURRENT_DEFAULTS),
    "GRU": BlockType(GRU, {**_RECURRENT_OPTIONS, **_IN_LOOP}, defaults=_RECURRENT_DEFAULTS),
    "LayerNormLSTM": BlockType(LayerNormLSTM, {**_RECURRENT_OPTIONS, "forget_bias": OptionalFloat, **_IN_LOOP,
                                               **_RECURRENT_DROPOUT}, defaults=_RECURRENT_DEFAULTS),
    "LastStep": BlockType(LastStep, {"bidirectional": bool}, has_dtype=False),
    "MeanPool": BlockType(MeanPool, {}, has_dtype=False),
    "Dropout": BlockType(Dropout, {"p": float, "variational": bool}, has_dtype=False),
}
"""The blocks :func:`load` can rebuild, by type name.  ``Sequential`` is handled by :func:`describe`
and :func:`load` themselves (its options are its named layers and its tied parameters)."""


def _to_json(kind: Kind, value: Any) -> Any:
    """An option's value in its JSON kind (NumPy scalars and the like become Python ones)."""
    if kind is OptionalFloat:
        return None if value is None else float(value)
    assert isinstance(kind, type)
    return kind(value)


def _fits(kind: Kind, value: Any) -> bool:
    """Whether a value read from a file has the option's kind (a bool is never a number here)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float or kind is OptionalFloat:
        return isinstance(value, (int, float)) or (kind is OptionalFloat and value is None)
    return isinstance(value, kind)


def _kind_name(kind: Kind) -> str:
    return "a number or null" if kind is OptionalFloat else kind.__name__  # type: ignore[union-attr]

_DTYPES = ("float32", "float64")


def describe(block: Any) -> dict[str, Any]:
    """The JSON description of ``block`` (a :class:`Sequential` or any block in :data:`BLOCKS`).

    Raises:
        TypeError: the block (or one inside a Sequential) is not one rnnkit can save, e.g. a class of
            your own — :func:`load` could not rebuild it without running your code.
    """
    if isinstance(block, Sequential):
        return {"type": "Sequential", "layers": [[name, describe(layer)] for name, layer in block.layers.items()],
                "tied": dict(block.tied)}
    block_class = type(block)  # exact classes only: a subclass may take other options
    for type_name, spec in BLOCKS.items():
        if block_class is spec.cls:
            described: dict[str, Any] = {"type": type_name}
            for option, kind in spec.options.items():
                described[option] = _to_json(kind, getattr(block, option))
            if spec.has_dtype:
                described["dtype"] = np.dtype(block.dtype).name
            return described
    raise TypeError(f"cannot save a {type(block).__name__}: rnnkit.save knows the blocks {sorted(BLOCKS)} "
                    f"and Sequential; save other models' weights with rnnkit.io.save_tensors")


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    optimizer: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model``'s architecture and weights (and optionally ``optimizer``'s state) to ``path``.

    Args:
        model: a :class:`Sequential` or a single block (layer or head).
        path: the file, ending in ``.safetensors``; its directory must exist.  Written atomically:
            an interrupted save leaves any previous file at ``path`` intact.
        optimizer: an optimizer whose ``state_dict()`` is stored too (to resume training exactly).
        metadata: a JSON-like dict stored as is (epoch, metrics, ...); read it back with
            :func:`load_document`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    document: dict[str, Any] = {"kind": MODEL_KIND, "architecture": describe(model)}
    if optimizer is not None:
        document["optimizer"] = optimizer.state_dict()
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        document["metadata"] = dict(metadata)
    return save_checkpoint(path, model.params, document)


def load_document(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(weights, document)`` of a file written by :func:`save`, checked to be a model file."""
    tensors, document = load_checkpoint(path)
    if document.get("kind") != MODEL_KIND or "architecture" not in document:
        raise CheckpointError(f"{path}: not a model saved by rnnkit.save (no architecture in it); "
                              f"a char-LM checkpoint loads with rnnkit.charlm.load_model")
    return tensors, document


def load(path: str | os.PathLike[str], *, optimizer: Any = None) -> Any:
    """Rebuild the model saved by :func:`save` at ``path``, with its weights (exactly as saved).

    Args:
        path: a file written by :func:`save`.
        optimizer: if given, the saved optimizer state is loaded into it (it must be of the saved
            type; the file must hold an optimizer state).

    Returns:
        The model: a :class:`Sequential` or the single block that was saved.

    Raises:
        CheckpointError: the file is missing, damaged, not a model file, describes an unknown block
            or malformed options, its weights do not fit the architecture, or it holds no optimizer
            state while ``optimizer`` was given.  Nothing from the file is ever executed.
    """
    tensors, document = load_document(path)

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}")

    model = _build(document["architecture"], "architecture", fail)
    try:
        model.load_state_dict(tensors)
    except (ValueError, TypeError) as error:
        raise fail(f"the weights do not fit the architecture: {error}") from None
    if optimizer is not None:
        if "optimizer" not in document:
            raise fail("the file holds no optimizer state (save it with rnnkit.save(..., optimizer=...))")
        try:
            optimizer.load_state_dict(document["optimizer"])
        except (ValueError, TypeError, KeyError) as error:
            raise fail(f"the optimizer state does not fit this optimizer: {error}") from None
    return model


def _build(spec: Any, where: str, fail: Callable[[str], CheckpointError]) -> Any:
    """Rebuild one block from its description, refusing anything not in :data:`BLOCKS`."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise fail(f"{where} must be an object with a 'type' string, got {spec!r:.80}")
    type_name = spec["type"]
    if type_name == "Sequential":
        # "tied" ({follower: leader} parameter names) may be absent: files written before it existed.
        if not {"type", "layers"} <= set(spec) <= {"type", "layers", "tied"} or not isinstance(spec["layers"], list):
            raise fail(f"{where}: a Sequential needs a 'layers' list of [name, block] pairs (and optionally "
                       f"'tied'), got the keys {sorted(spec)}")
        tied = spec.get("tied", {})
        if not (isinstance(tied, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items())):
            raise fail(f"{where}.tied must be an object of parameter names {{follower: leader}}, got {tied!r:.80}")
        pairs = []
        for i, entry in enumerate(spec["layers"]):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise fail(f"{where}.layers[{i}] must be a [name, block] pair, got {entry!r:.80}")
            pairs.append((entry[0], _build(entry[1], f"{where}.layers[{i}] ({entry[0]!r})", fail)))
        try:
            return Sequential(pairs, tied=tied or None)
        except (ValueError, TypeError) as error:
            raise fail(f"{where}: {error}") from None
    if type_name not in BLOCKS:
        raise fail(f"{where}: unknown block type {type_name!r} (rnnkit can load {sorted(BLOCKS)} and Sequential)")
    block = BLOCKS[type_name]
    expected = {**block.options, **({"dtype": str} if block.has_dtype else {})}
    given = {key: value for key, value in spec.items() if key != "type"}
    missing = sorted(expected.keys() - given.keys() - block.defaults)
    unknown = sorted(given.keys() - expected.keys())
    if missing or unknown:
        raise fail(f"{where}: {type_name} options missing {missing}, unknown {unknown}")
    for key, value in given.items():
        # bool is an int in Python: a size given as true/false is as wrong as a string.
        if not _fits(expected[key], value):
            raise fail(f"{where}: {type_name} option {key!r} must be {_kind_name(expected[key])}, got {value!r:.40}")
    if block.has_dtype and given["dtype"] not in _DTYPES:
        raise fail(f"{where}: {type_name} dtype must be one of {list(_DTYPES)}, got {given['dtype']!r:.40}")
    try:
        return block.cls(**given)
    except (ValueError, TypeError) as error:
        raise fail(f"{where}: {type_name}: {error}") from None
