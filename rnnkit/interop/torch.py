"""Conversion between rnnkit models and ``torch.nn`` modules: :func:`to_torch` and :func:`from_torch`.

rnnkit's parameters already carry PyTorch's names, shapes and gate orders, so a conversion is:
build the equivalent module with the same options, then copy the arrays by name.  torch is imported
only inside these functions (and by :mod:`rnnkit.interop._torch_modules`, which they import), so
rnnkit itself never needs it.

What converts (both ways):

=========================  ===========================================================================
rnnkit                     torch.nn
=========================  ===========================================================================
``RNN`` (tanh / relu)      ``nn.RNN(nonlinearity=..., batch_first=True)``
``LSTM``                   ``nn.LSTM(batch_first=True)``
``GRU``                    ``nn.GRU(batch_first=True)``
``Linear``                 ``nn.Linear``
``Embedding``              ``nn.Embedding``
``Dropout``                ``nn.Dropout`` (``variational=True`` has no counterpart: a warning, then ``nn.Dropout``)
``LastStep``, ``MeanPool`` :class:`~rnnkit.interop._torch_modules.LastStep` / ``MeanPool``: the same pooling in
                           torch, reading the ``lengths`` their container passes
``Sequential``             :class:`~rnnkit.interop._torch_modules.RnnkitSequential` (the same forward contract:
                           ``out, state = module(x, state, lengths)``); back from it, from ``nn.Sequential`` and
                           ``nn.ModuleDict`` (blocks in their order), and from a ``DistributedDataParallel``
                           or ``DataParallel`` wrapper around any of these
=========================  ===========================================================================

Stacking, bidirectionality, ``bias=False``, dropout between stacked layers, tied parameters (one
shared ``Parameter`` in torch), float32 and float64 are kept.  rnnkit's ``weight_drop`` and
embedding dropout act only in training and have no ``torch.nn`` counterpart: ``to_torch`` leaves
them out with a warning.  Options that only act in training and have no rnnkit counterpart are
dropped when coming back, because the converted block computes the same function:
``nn.Embedding(padding_idx=i)`` (a row that receives no gradient; rnnkit trains every row).  Options
that change the function and rnnkit's block does not have (``proj_size``, ``Linear(bias=False)``,
``Embedding(max_norm=...)``) are refused with an error naming the option.  A module with
``batch_first=False`` converts too; the rnnkit layer is batch-first, as always.

Each kind of block is one :class:`TorchHandler` in :data:`HANDLERS`: a new block is one more entry.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.io.checkpoint import CheckpointError, load_checkpoint, load_tensors
from rnnkit.layers import (
    GRU,
    LSTM,
    RNN,
    Dropout,
    Embedding,
    LastStep,
    LayerNormLSTM,
    Linear,
    MeanPool,
    Recurrent,
    Sequential,
)

_DTYPES = ("float32", "float64")


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError("this conversion needs PyTorch, which is not installed: pip install torch") from None
    return torch


def _torch_dtype(torch: Any, dtype: np.dtype[Any]) -> Any:
    return {"float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name]


@dataclass(frozen=True)
class TorchHandler:
    """How one kind of block converts.

    ``to_torch(block, torch)`` builds the ``torch.nn`` module with the block's options and
    ``from_torch(module, dtype)`` the rnnkit block with the module's options (weights still random:
    the caller copies them by name, which also checks that the names and shapes agree).
    """

    rnnkit_types: tuple[type, ...]
    torch_names: tuple[str, ...]   # class names in torch_module
    to_torch: Callable[[Any, Any], Any]
    from_torch: Callable[[Any, np.dtype[Any]], Any]
    torch_module: str = "torch.nn"  # where the torch classes live (the heads: rnnkit's own torch modules)


def _accepts(cls: type, option: str) -> bool:
    return option in inspect.signature(cls).parameters


def _dropped(block: Any, option: str, what: str) -> None:
    """Warn that a training-only option has no torch.nn counterpart (the module computes the same at inference)."""
    warnings.warn(f"{type(block).__name__}({option}): {what} has no torch.nn counterpart and is left out; the "
                  f"module computes the same function at inference, but trains without it", stacklevel=4)


def _recurrent_to_torch(block: Recurrent, torch: Any) -> Any:
    kwargs: dict[str, Any] = dict(
        input_size=block.input_size, hidden_size=block.hidden_size, num_layers=block.num_layers,
        bidirectional=block.bidirectional, batch_first=True, dtype=_torch_dtype(torch, block.dtype),
        bias=any(name.startswith("bias_") for name in block.params),
    )
    # nn.RNN/LSTM/GRU's dropout is rnnkit's (between stacked layers); torch warns about it on one
    # layer, where it does nothing in either.
    if getattr(block, "dropout", 0.0) and block.num_layers > 1:
        kwargs["dropout"] = float(block.dropout)
    if getattr(block, "weight_drop", 0.0):
        _dropped(block, f"weight_drop={block.weight_drop}", "DropConnect on W_hh")
    if getattr(block, "recurrent_dropout", 0.0):
        _dropped(block, f"recurrent_dropout={block.recurrent_dropout}", "dropout on the h fed to W_hh")
    if getattr(block, "zoneout", 0.0):
        raise TypeError(f"{type(block).__name__}(zoneout={block.zoneout}) has no torch.nn counterpart: zoneout "
                        f"changes inference too (p h_(t-1) + (1-p) h_t), so no nn.{type(block).__name__} computes it")
    proj_size: Any = getattr(block, "proj_size", 0)  # an LSTM option rnnkit's layer may gain
    if isinstance(block, LSTM) and proj_size:
        kwargs["proj_size"] = proj_size
    if isinstance(block, RNN):
        return torch.nn.RNN(nonlinearity=block.nonlinearity, **kwargs)
    return (torch.nn.LSTM if isinstance(block, LSTM) else torch.nn.GRU)(**kwargs)


def _recurrent_from_torch(module: Any, dtype: np.dtype[Any]) -> Recurrent:
    kind = type(module).__name__
    cls = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}[kind]
    kwargs: dict[str, Any] = {"bidirectional": bool(module.bidirectional), "dtype": dtype}
    if kind == "RNN":
        kwargs["nonlinearity"] = module.nonlinearity
    # Options rnnkit's layer may not have: passed only when they differ from the default, and
    # refused with their name when the layer cannot take them.
    for option, value, default in (("bias", bool(module.bias), True), ("proj_size", module.proj_size, 0)):
        if value != default:
            if not _accepts(cls, option):
                raise ValueError(f"torch.nn.{kind}({option}={value!r}) has no rnnkit equivalent: "
                                 f"rnnkit's {cls.__name__} has no {option} option")
            kwargs[option] = value
    if module.dropout and _accepts(cls, "dropout"):
        kwargs["dropout"] = float(module.dropout)
    return cls(module.input_size, module.hidden_size, module.num_layers, **kwargs)


def _linear_to_torch(block: Linear, torch: Any) -> Any:
    return torch.nn.Linear(block.in_features, block.out_features, bias="bias" in block.params,
                           dtype=_torch_dtype(torch, block.dtype))


def _linear_from_torch(module: Any, dtype: np.dtype[Any]) -> Linear:
    if module.bias is None:
        raise ValueError("torch.nn.Linear(bias=False) has no rnnkit equivalent: rnnkit's Linear always has a bias")
    return Linear(module.in_features, module.out_features, dtype=dtype)


def _embedding_to_torch(block: Embedding, torch: Any) -> Any:
    if getattr(block, "dropout", 0.0):
        _dropped(block, f"dropout={block.dropout}", "embedding dropout (whole rows)")
    return torch.nn.Embedding(block.num_embeddings, block.embedding_dim, dtype=_torch_dtype(torch, block.dtype))


def _embedding_from_torch(module: Any, dtype: np.dtype[Any]) -> Embedding:
    if module.max_norm is not None:
        raise ValueError(f"torch.nn.Embedding(max_norm={module.max_norm}) has no rnnkit equivalent: "
                         f"it renormalises looked-up rows, rnnkit's Embedding does not")
    return Embedding(module.num_embeddings, module.embedding_dim, dtype=dtype)


def _dropout_to_torch(block: Dropout, torch: Any) -> Any:
    if block.variational:
        _dropped(block, "variational=True", "one mask shared by every time step")
    return torch.nn.Dropout(block.p)


def _dropout_from_torch(module: Any, dtype: np.dtype[Any]) -> Dropout:
    return Dropout(float(module.p))


def _head_to_torch(block: LastStep | MeanPool, torch: Any) -> Any:
    from rnnkit.interop import _torch_modules

    if isinstance(block, LastStep):
        return _torch_modules.LastStep(block.bidirectional)
    return _torch_modules.MeanPool()


def _head_from_torch(module: Any, dtype: np.dtype[Any]) -> LastStep | MeanPool:
    if type(module).__name__ == "LastStep":
        return LastStep(bidirectional=module.bidirectional)
    return MeanPool()


HANDLERS: tuple[TorchHandler, ...] = (
    TorchHandler((RNN, LSTM, GRU), ("RNN", "LSTM", "GRU"), _recurrent_to_torch, _recurrent_from_torch),
    TorchHandler((Linear,), ("Linear",), _linear_to_torch, _linear_from_torch),
    TorchHandler((Embedding,), ("Embedding",), _embedding_to_torch, _embedding_from_torch),
    TorchHandler((Dropout,), ("Dropout",), _dropout_to_torch, _dropout_from_torch),
    TorchHandler((LastStep, MeanPool), ("LastStep", "MeanPool"), _head_to_torch, _head_from_torch,
                 torch_module="rnnkit.interop._torch_modules"),
)
"""One entry per kind of block (see :class:`TorchHandler`)."""


def _supported() -> str:
    return ", ".join(cls.__name__ for handler in HANDLERS for cls in handler.rnnkit_types) + ", Sequential"


# --------------------------------------------------------------------------------------------------
# rnnkit -> torch
# --------------------------------------------------------------------------------------------------


def to_torch(model: Any) -> Any:
    """The ``torch.nn`` module equivalent to an rnnkit block or :class:`~rnnkit.Sequential`, weights copied.

    Args:
        model: an ``RNN`` / ``LSTM`` / ``GRU`` layer, a ``Linear``, an ``Embedding``, or a
            ``Sequential`` of these (module docstring: the table).

    Returns:
        A new module on the CPU, in training mode, of the model's dtype, sharing no memory with it:
        ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` with ``batch_first=True`` (the same ``(B, T, I)``
        inputs and ``(L*D, B, H)`` states as rnnkit), ``nn.Linear``, ``nn.Embedding``, or for a
        ``Sequential`` a :class:`~rnnkit.interop._torch_modules.RnnkitSequential` whose
        ``state_dict()`` keys are the model's dotted parameter names.

    Raises:
        ImportError: torch is not installed.
        TypeError: a block of a kind that does not convert (the message names it).
    """
    torch = _import_torch()
    if isinstance(model, Sequential):
        from rnnkit.interop._torch_modules import RnnkitSequential

        blocks = []
        for name, layer in model.layers.items():
            try:
                blocks.append((name, _block_to_torch(layer, torch)))
            except (TypeError, ValueError) as error:
                raise type(error)(f"block {name!r}: {error}") from None
        result = RnnkitSequential(blocks)
        # Tied parameters stay tied: the follower's module holds the leader's Parameter itself.
        for follower, leader in model.tied.items():
            follower_block, follower_name = follower.split(".", 1)
            leader_block, leader_name = leader.split(".", 1)
            setattr(result.get_submodule(follower_block), follower_name,
                    getattr(result.get_submodule(leader_block), leader_name))
        return result
    return _block_to_torch(model, torch)


def _block_to_torch(block: Any, torch: Any) -> Any:
    handler = next((h for h in HANDLERS if isinstance(block, h.rnnkit_types)), None)
    if handler is not None:
        module = handler.to_torch(block, torch)
        _copy_into_torch(module, block.params, torch)
        return module
    if isinstance(block, LayerNormLSTM):
        raise TypeError("cannot convert LayerNormLSTM to PyTorch: torch.nn has no layer-normalised LSTM "
                        "(save it with rnnkit.save instead)")
    raise TypeError(f"cannot convert {type(block).__name__} to PyTorch; supported: {_supported()}")


def _copy_into_torch(module: Any, params: dict[str, np.ndarray], torch: Any) -> None:
    theirs = dict(module.named_parameters())
    if theirs.keys() != params.keys():
        raise ValueError(f"the parameters of {type(module).__name__} {sorted(theirs)} are not the block's "
                         f"{sorted(params)}")
    with torch.no_grad():
        for name, value in params.items():
            if tuple(theirs[name].shape) != value.shape:
                raise ValueError(f"parameter {name!r}: torch expects {tuple(theirs[name].shape)}, "
                                 f"the block has {value.shape}")
            theirs[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))


# --------------------------------------------------------------------------------------------------
# torch -> rnnkit
# --------------------------------------------------------------------------------------------------


def from_torch(module: Any) -> Any:
    """The rnnkit block or :class:`~rnnkit.Sequential` equivalent to a ``torch.nn`` module, weights copied.

    Args:
        module: ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` / ``nn.Linear`` / ``nn.Embedding``; or a
            container of them -- what :func:`to_torch` returns for a ``Sequential``,
            ``nn.Sequential``, ``nn.ModuleDict`` (blocks taken in their order, under their names) --
            possibly wrapped in ``DistributedDataParallel`` / ``DataParallel``.  Its parameters
            must be float32 or float64 (on any device: they are copied to the CPU).

    Returns:
        A new rnnkit block (or ``Sequential``) of the module's dtype whose parameters equal the
        module's and share no memory with them.

    Raises:
        TypeError: the module (or one of its children, named) is of a kind that does not convert,
            or is not a ``torch.nn.Module``.
        ValueError: it uses an option rnnkit's block does not have (named), or a dtype other than
            float32 / float64.
    """
    torch = _import_torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    while isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        module = module.module
    from rnnkit.interop._torch_modules import RnnkitSequential

    if isinstance(module, (RnnkitSequential, torch.nn.Sequential, torch.nn.ModuleDict)):
        children = list(module.named_children())
        if not children:
            raise ValueError(f"{type(module).__name__} has no blocks to convert")
        blocks = []
        for name, child in children:
            try:
                blocks.append((name, _block_from_torch(child, torch)))
            except (TypeError, ValueError) as error:
                raise type(error)(f"block {name!r}: {error}") from None
        return Sequential(blocks, tied=_shared_parameters(module) or None)
    return _block_from_torch(module, torch)


def _shared_parameters(module: Any) -> dict[str, str]:
    """``{follower: leader}`` for parameters one module holds under several names (weight tying)."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        leader = first.setdefault(id(parameter), name)
        if leader != name:
            tied[name] = leader
    return tied


def _block_from_torch(module: Any, torch: Any) -> Any:
    kind = type(module).__name__
    for handler in HANDLERS:
        # The exact class, not a subclass: a subclass may compute something else.
        if kind in handler.torch_names and type(module) is getattr(importlib.import_module(handler.torch_module), kind):
            dtype = _module_dtype(module, torch)
            block = handler.from_torch(module, dtype)
            tensors = {name: value.detach().cpu().numpy() for name, value in module.state_dict().items()}
            block.load_state_dict(tensors)
            return block
    raise TypeError(f"cannot convert {type(module).__module__}.{type(module).__qualname__} to rnnkit; "
                    f"supported: torch.nn.{', torch.nn.'.join(n for h in HANDLERS for n in h.torch_names)}, "
                    f"and nn.Sequential / nn.ModuleDict of them")


def _module_dtype(module: Any, torch: Any) -> np.dtype[Any]:
    dtypes = {str(p.dtype).removeprefix("torch.") for p in module.parameters()}
    if not dtypes:  # a block without parameters (Dropout, the heads): the dtype does not matter
        return np.dtype(np.float32)
    if len(dtypes) != 1 or not dtypes <= set(_DTYPES):
        raise ValueError(f"{type(module).__name__} has parameters of dtype {sorted(dtypes)}; rnnkit converts "
                         f"float32 or float64 modules (convert it first, e.g. module.float())")
    return np.dtype(dtypes.pop())


# --------------------------------------------------------------------------------------------------
# Weight files written by PyTorch
# --------------------------------------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"      # torch.save's format since PyTorch 1.6: a zip archive around a pickle
_PICKLE_PROTOCOL_2 = b"\x80"    # the legacy torch.save format starts with a pickle (protocol >= 2)


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The state dict stored in ``path``: ``{name: array}``, ready for ``model.load_state_dict``.

    The format is told from the file's first bytes, not its name:

    * **safetensors** (``safetensors.torch.save_file``, ``rnnkit export --format safetensors``, an
      rnnkit checkpoint): read in pure NumPy -- torch is not needed.  For an rnnkit checkpoint only
      the weights come back (not the optimizer state of its document).
    * **a PyTorch file** (``torch.save(module.state_dict(), "model.pt")``, ``.pt`` / ``.pth``): read only
      through ``torch.load(path, weights_only=True, map_location="cpu")``, which refuses anything but
      tensors and plain containers, and only when torch is installed; otherwise a one-line error
      says how to convert the file to safetensors.  rnnkit never unpickles a file itself.

    Returns:
        Owned NumPy copies on the CPU (bfloat16 tensors become float32, which holds them exactly).

    Raises:
        CheckpointError: (a ValueError) the file is missing, unreadable, of neither format, corrupt,
            a PyTorch file without torch installed, or does not hold a flat ``{str: tensor}`` dict;
            the message names the file.
    """
    source = Path(path)
    try:
        with open(source, "rb") as file:
            head = file.read(16)
    except FileNotFoundError:
        raise CheckpointError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{source}: is a directory, not a weights file") from None
    if len(head) >= 9 and head[8:9] == b"{":
        tensors, metadata = load_tensors(source)
        if metadata.get("format") == "rnnkit.checkpoint":
            if source.suffix == ".safetensors":
                tensors, _ = load_checkpoint(source)  # verifies the checksum; the document's arrays stay out
            else:
                tensors = {name: value for name, value in tensors.items() if not name.startswith("doc/")}
        return tensors
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL_2):
        return _load_torch_file(source)
    raise CheckpointError(f"{source}: neither a safetensors file nor a PyTorch (torch.save) file")


def _load_torch_file(source: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{source}: a PyTorch pickle file, which rnnkit reads only through torch.load(weights_only=True) and "
            f"torch is not installed; install torch, or convert the file to safetensors where torch is: "
            f"python -c \"import sys, torch, safetensors.torch as s; "
            f"s.save_file(torch.load(sys.argv[1], weights_only=True), sys.argv[2])\" {source} model.safetensors"
        ) from None
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch.load refuses, the answer is one line naming the file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{source}: torch.load(weights_only=True) cannot read it: {first_line}") from None
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{source}: holds a {type(loaded).__name__}, not a state dict {{name: tensor}}; "
                              f"save one with torch.save(module.state_dict(), path)")
    tensors = {}
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor: the file is not a flat "
                f"state dict (keys {sorted(map(str, loaded))[:8]}); save the module's own state_dict()"
            )
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds every value exactly
            value = value.float()
        tensors[name] = value.numpy().copy()
    return tensors
