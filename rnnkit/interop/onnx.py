"""ONNX export: :func:`export_onnx` writes an rnnkit model as an ONNX graph that onnxruntime (or any ONNX
runtime, from any language) runs.

The recurrent layers become ONNX's own ``RNN`` / ``LSTM`` / ``GRU`` operators, one per stacked layer
(both directions in one ``direction="bidirectional"`` node), so a runtime uses its fused kernels.
The weights need three translations, all done here once:

* **gate order**: PyTorch (and rnnkit) stack LSTM gates as ``i, f, g, o`` and GRU gates as
  ``r, z, n``; ONNX wants ``i, o, f, c`` and ``z, r, h``.  The rows of ``W``, ``R`` and both biases
  are reordered by gate blocks.
* **GRU reset gate**: PyTorch applies the reset gate to ``W_hn h + b_hn`` (after the product),
  which is ONNX's ``linear_before_reset=1``.
* **layout**: ONNX's operators are time-major (``X`` ``(T, B, I)``, ``Y`` ``(T, D, B, H)``); the graph
  transposes at its edges so that its inputs and outputs have rnnkit's batch-first layouts.

Variable lengths map onto the operators' ``sequence_lens``, which has rnnkit's semantics: outputs
past a sequence's end are zero, its final state is the state after its last valid step, and the
reverse direction starts at that step.  B and T are dynamic: one exported file serves any batch
size and sequence length.

The ``onnx`` package builds and checks the graph; it is imported inside :func:`export_onnx` only
(install it with ``pip install 'rnnkit[onnx]'``).  Each kind of block is one :class:`OnnxHandler`
in :data:`HANDLERS`: a new block is one more entry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.io.checkpoint import atomic_write_bytes
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
from rnnkit.layers._checks import check_dtype

DEFAULT_OPSET = 17
"""The default ONNX opset: supported by every onnxruntime since 1.11."""
MIN_OPSET = 11
"""The oldest opset the exported graph is valid in (``Slice`` and ``Reshape`` with tensor inputs)."""
EXTERNAL_DATA_BYTES = 1 << 30
"""Weights above this size go to a ``<file>.data`` beside the model: protobuf cannot hold 2 GiB."""

_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
"""Torch gate block ``k`` of the ONNX order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h."""


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package, which is not installed: "
                          "pip install 'rnnkit[onnx]' (or pip install onnx)") from None
    return onnx


@dataclass
class _Graph:
    """The graph under construction: nodes, initializers, inputs, outputs and unique names."""

    onnx: Any
    dtype: np.dtype[Any]  # the float type of the exported weights and float tensors
    elem_type: int        # the same as an ONNX type (TensorProto.FLOAT or DOUBLE)
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    _used: set[str] = field(default_factory=set)

    def fresh(self, hint: str) -> str:
        """A new internal name; internal names start with "/", so they never take an input's or output's."""
        name, k = f"/{hint}", 1
        while name in self._used:
            name, k = f"/{hint}_{k}", k + 1
        self._used.add(name)
        return name

    def reserve(self, name: str) -> str:
        """A graph input or output name, used exactly as given."""
        if name in self._used:
            raise ValueError(f"the ONNX name {name!r} is used twice; rename the model's blocks")
        self._used.add(name)
        return name

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, hint: str, values: list[int]) -> str:
        return self.const(hint, np.array(values, dtype=np.int64))

    def node(self, op: str, inputs: list[str], hint: str, n_outputs: int = 1, **attrs: Any) -> list[str]:
        outputs = [self.fresh(hint if n_outputs == 1 else f"{hint}_{k}") for k in range(n_outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs, name=self.fresh(f"{hint}/{op}"), **attrs))
        return outputs

    def add_input(self, name: str, elem_type: int, shape: list[int | str]) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(self.reserve(name), elem_type, shape))
        return name

    def add_output(self, source: str, name: str, elem_type: int, shape: list[int | str]) -> None:
        """Expose the tensor ``source`` as the graph output ``name`` (an Identity node renames it)."""
        self.nodes.append(self.onnx.helper.make_node("Identity", [source], [self.reserve(name)],
                                                     name=self.fresh(f"{name}/Identity")))
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem_type, shape))


@dataclass(frozen=True)
class _Context:
    """What every block's handler may need besides its input."""

    lengths: str | None   # the int32 (B,) sequence_lens tensor, or None: every sequence is T long
    lengths64: str | None  # the same lengths as the int64 graph input (what the pooling heads read), or None
    with_state: bool      # recurrent blocks take their initial state as graph inputs
    prefix: str           # "" for a bare layer, "<block name>." inside a Sequential: names its state tensors


@dataclass(frozen=True)
class OnnxHandler:
    """How one kind of block becomes ONNX nodes.

    ``emit(graph, block, x, context)`` adds the nodes computing the block on the batch-first tensor
    named ``x`` and returns the name of its batch-first output; a recurrent block also adds its state
    inputs (with ``context.with_state``) and final-state outputs.  ``in_features(block)`` is the size
    of the input's last axis (None: the block reads int64 token ids ``(B, T)``) and
    ``out_features(block, features)`` that of the output given the input's (``features``: an int,
    or a symbolic name like ``"F"`` for a model that starts with a parameter-free block).
    ``keeps_time``: the output still has the time axis (False for the pooling heads: ``(B, F)``).
    """

    rnnkit_types: tuple[type, ...]
    emit: Callable[[_Graph, Any, str, _Context], str]
    in_features: Callable[[Any], int | str | None]
    out_features: Callable[[Any, int | str], int | str]
    keeps_time: bool = True


def _reorder_gates(array: np.ndarray, cell: str) -> np.ndarray:
    """Rows (axis 0) of a ``(G*H, ...)`` weight or ``(G*H,)`` bias from PyTorch's gate order to ONNX's."""
    order = _GATE_ORDER.get(cell)
    if order is None:  # a plain RNN has one gate
        return array
    blocks = np.split(array, len(order), axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)


def _emit_recurrent(g: _Graph, block: Recurrent, x: str, context: _Context) -> str:
    if getattr(block, "proj_size", 0):
        raise TypeError("ONNX's LSTM operator has no output projection: an LSTM with proj_size does not export")
    if getattr(block, "zoneout", 0.0):
        raise TypeError(f"ONNX's {type(block).__name__} operator has no zoneout, whose inference mixes each "
                        f"state with the previous one (p h_{{t-1}} + (1-p) h_t): a layer with zoneout does not export")
    L, D, H = block.num_layers, block.num_directions, block.hidden_size
    cell = block.cell.name
    kind = "lstm" if cell == "lstm" else "gru" if cell == "gru" else "rnn"
    p = context.prefix
    state_names = block.cell.state_names  # ("h",) or ("h", "c")
    state_shape: list[int | str] = [L * D, "B", H]
    initial = {s: g.add_input(f"{p}{s}0", g.elem_type, state_shape) for s in state_names} if context.with_state else {}

    attrs: dict[str, Any] = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if kind == "rnn":
        attrs["activations"] = [block.cell.options["nonlinearity"].capitalize()] * D  # "Tanh" / "Relu"
    if kind == "gru":
        attrs["linear_before_reset"] = 1
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]

    seq = g.node("Transpose", [x], f"{p}time_major", perm=[1, 0, 2])[0]  # (T, B, F)
    finals: dict[str, list[str]] = {s: [] for s in state_names}
    for layer in range(L):
        suffixes = [f"_l{layer}" + ("_reverse" if d else "") for d in range(D)]  # PyTorch's parameter names
        params = block.params
        w = np.stack([_reorder_gates(params[f"weight_ih{s}"], kind) for s in suffixes])  # (D, G*H, F)
        r = np.stack([_reorder_gates(params[f"weight_hh{s}"], kind) for s in suffixes])  # (D, G*H, H)
        bias = ""  # a layer with bias=False has no bias arrays: ONNX's optional B input is left out (zeros)
        if f"bias_ih{suffixes[0]}" in params:
            b = np.stack([np.concatenate([_reorder_gates(params[f"bias_ih{s}"], kind),
                                          _reorder_gates(params[f"bias_hh{s}"], kind)])
                          for s in suffixes])  # (D, 2*G*H)
            bias = g.const(f"{p}B_l{layer}", b)
        inputs = [seq, g.const(f"{p}W_l{layer}", w), g.const(f"{p}R_l{layer}", r), bias, context.lengths or ""]
        if context.with_state:
            starts, ends, axes = g.ints("starts", [layer * D]), g.ints("ends", [(layer + 1) * D]), g.ints("axes", [0])
            for s in state_names:
                inputs.append(g.node("Slice", [initial[s], starts, ends, axes], f"{p}{s}0_l{layer}")[0])
        else:
            inputs.extend([""] * len(state_names))
        # Trailing empty optional inputs are dropped: they mean "absent" either way.
        while inputs[-1] == "":
            inputs.pop()
        y, *y_states = g.node(op, inputs, f"{p}{op}_l{layer}", n_outputs=1 + len(state_names), **attrs)
        for s, y_s in zip(state_names, y_states, strict=True):
            finals[s].append(y_s)  # (D, B, H)
        # Y (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H): both directions side by side, as rnnkit's out.
        y = g.node("Transpose", [y], f"{p}Y_l{layer}", perm=[0, 2, 1, 3])[0]
        seq = g.node("Reshape", [y, g.ints("shape", [0, 0, D * H])], f"{p}out_l{layer}")[0]

    for s in state_names:
        stacked = finals[s][0] if L == 1 else g.node("Concat", finals[s], f"{p}{s}_n_stacked", axis=0)[0]
        g.add_output(stacked, f"{p}{s}_n", g.elem_type, state_shape)
    return g.node("Transpose", [seq], f"{p}out", perm=[1, 0, 2])[0]  # (B, T, D*H)


def _emit_linear(g: _Graph, block: Linear, x: str, context: _Context) -> str:
    p = context.prefix
    y = g.node("MatMul", [x, g.const(f"{p}weight_T", block.params["weight"].T)], f"{p}matmul")[0]
    if "bias" in block.params:
        y = g.node("Add", [y, g.const(f"{p}bias", block.params["bias"])], f"{p}add_bias")[0]
    return y


def _emit_embedding(g: _Graph, block: Embedding, x: str, context: _Context) -> str:
    return g.node("Gather", [g.const(f"{context.prefix}weight", block.params["weight"]), x],
                  f"{context.prefix}lookup", axis=0)[0]


def _emit_dropout(g: _Graph, block: Dropout, x: str, context: _Context) -> str:
    # The export computes inference (forward's default training=False), where dropout is the identity.
    return g.node("Identity", [x], f"{context.prefix}identity")[0]


def _lengths_or_full(g: _Graph, x: str, context: _Context) -> str:
    """The int64 ``(B,)`` lengths: the graph input, or ``T`` for every sequence when there is none."""
    if context.lengths64 is not None:
        return context.lengths64
    p = context.prefix
    shape = g.node("Shape", [x], f"{p}shape")[0]
    batch = g.node("Slice", [shape, g.ints("starts", [0]), g.ints("ends", [1]), g.ints("axes", [0])], f"{p}B")[0]
    steps = g.node("Slice", [shape, g.ints("starts", [1]), g.ints("ends", [2]), g.ints("axes", [0])], f"{p}T")[0]
    return g.node("Expand", [steps, batch], f"{p}full_lengths")[0]


def _emit_last_step(g: _Graph, block: LastStep, x: str, context: _Context) -> str:
    # out[b] = x[b, lengths[b] - 1]: GatherElements along time with an index (B, 1, F) of that step.
    p = context.prefix
    last = g.node("Sub", [_lengths_or_full(g, x, context), g.ints("one", [1])], f"{p}last_step")[0]
    index = g.node("Reshape", [last, g.ints("shape", [-1, 1, 1])], f"{p}last_step_b11")[0]
    shape = g.node("Shape", [x], f"{p}x_shape")[0]
    one_step = g.node("ScatterElements", [shape, g.ints("indices", [1]), g.ints("one", [1])], f"{p}shape_b1f")[0]
    index = g.node("Expand", [index, one_step], f"{p}last_step_b1f")[0]
    picked = g.node("GatherElements", [x, index], f"{p}gather_last", axis=1)[0]
    out = g.node("Reshape", [picked, g.ints("shape", [0, -1])], f"{p}last")[0]  # (B, F)
    if not block.bidirectional:
        return out
    # The reverse direction's last step is step 0: its half of the features comes from there.
    first = g.node("Slice", [x, g.ints("starts", [0]), g.ints("ends", [1]), g.ints("axes", [1])], f"{p}step0")[0]
    first = g.node("Reshape", [first, g.ints("shape", [0, -1])], f"{p}first")[0]
    half = g.node("Div", [g.node("Slice", [shape, g.ints("starts", [2]), g.ints("ends", [3]), g.ints("axes", [0])],
                                 f"{p}F")[0], g.ints("two", [2])], f"{p}half")[0]
    forward_half = g.node("Slice", [out, g.ints("zero", [0]), half, g.ints("axes", [1])], f"{p}forward_half")[0]
    big = g.ints("end", [np.iinfo(np.int64).max])
    reverse_half = g.node("Slice", [first, half, big, g.ints("axes", [1])], f"{p}reverse_half")[0]
    return g.node("Concat", [forward_half, reverse_half], f"{p}last_both", axis=1)[0]


def _emit_mean_pool(g: _Graph, block: MeanPool, x: str, context: _Context) -> str:
    # As MeanPool.forward: (valid steps as a (B, 1, T) row of 0/1) @ x, divided by the length.
    p = context.prefix
    lengths = _lengths_or_full(g, x, context)
    shape = g.node("Shape", [x], f"{p}x_shape")[0]
    steps = g.node("Slice", [shape, g.ints("starts", [1]), g.ints("ends", [2]), g.ints("axes", [0])], f"{p}T")[0]
    steps = g.node("Reshape", [steps, g.ints("scalar", [])], f"{p}T_scalar")[0]
    times = g.node("Range", [g.const("zero", np.array(0, np.int64)), steps, g.const("one", np.array(1, np.int64))],
                   f"{p}times")[0]
    column = g.node("Reshape", [lengths, g.ints("shape", [-1, 1])], f"{p}lengths_b1")[0]
    valid = g.node("Cast", [g.node("Less", [times, column], f"{p}valid")[0]], f"{p}valid_float", to=g.elem_type)[0]
    row = g.node("Reshape", [valid, g.ints("shape", [0, 1, -1])], f"{p}valid_b1t")[0]
    total = g.node("MatMul", [row, x], f"{p}total")[0]
    total = g.node("Reshape", [total, g.ints("shape", [0, -1])], f"{p}total_bf")[0]
    count = g.node("Cast", [column], f"{p}count", to=g.elem_type)[0]
    return g.node("Div", [total, count], f"{p}mean")[0]


def _same(block: Any, features: int | str) -> int | str:
    return features


HANDLERS: tuple[OnnxHandler, ...] = (
    OnnxHandler((RNN, LSTM, GRU), _emit_recurrent, lambda b: b.input_size,
                lambda b, f: b.num_directions * b.output_size),
    OnnxHandler((Linear,), _emit_linear, lambda b: b.in_features, lambda b, f: b.out_features),
    OnnxHandler((Embedding,), _emit_embedding, lambda b: None, lambda b, f: b.embedding_dim),
    OnnxHandler((Dropout,), _emit_dropout, lambda b: "F", _same),
    OnnxHandler((LastStep, MeanPool), lambda g, b, x, c: (_emit_last_step if isinstance(b, LastStep)
                                                          else _emit_mean_pool)(g, b, x, c),
                lambda b: "F", _same, keeps_time=False),
)
"""One entry per kind of block (see :class:`OnnxHandler`)."""


def _handler(block: Any) -> OnnxHandler:
    for handler in HANDLERS:
        if isinstance(block, handler.rnnkit_types):
            return handler
    if isinstance(block, LayerNormLSTM):
        raise TypeError("cannot export LayerNormLSTM to ONNX: ONNX's LSTM operator has no layer normalisation "
                        "(save it with rnnkit.save instead)")
    supported = ", ".join(cls.__name__ for h in HANDLERS for cls in h.rnnkit_types)
    raise TypeError(f"cannot export {type(block).__name__} to ONNX; supported blocks: {supported}")


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    *,
    with_lengths: bool = False,
    with_state: bool = False,
    opset: int | None = None,
    dtype: Any = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` as an ONNX file that computes what ``model.forward`` computes (inference).

    Args:
        model: a recurrent layer (``RNN`` / ``LSTM`` / ``GRU``, stacked, bidirectional, with or
            without biases), or a ``Sequential`` of ``Embedding``, recurrent layers, ``Linear``,
            ``Dropout`` (the identity: the export is inference) and the pooling heads ``LastStep`` /
            ``MeanPool`` (which read ``lengths`` when given).  Dropout options of the layers
            (``dropout``, ``weight_drop``, ``recurrent_dropout``, embedding dropout) act only in training and
            export as nothing; ``proj_size`` and ``zoneout`` (which changes inference) are refused.
        path: the ``.onnx`` file to write (atomically: an interrupted export leaves the old file).
        with_lengths: add the input ``lengths`` (int64 ``(B,)``, values in ``1..T``): the true length
            of each padded sequence, as ``forward(..., lengths=...)``.
        with_state: add the initial states as inputs -- ``h0`` (and ``c0``) ``(L*D, B, H)`` for a bare
            layer, ``<block>.h0`` (``<block>.c0``) for each recurrent block of a ``Sequential`` --
            as ``forward(..., state=...)``; without it every sequence starts from zeros.  This is what
            generation token by token needs: feed each step's final states back in.
        opset: the ONNX opset, from :data:`MIN_OPSET` to the installed onnx's newest (default
            :data:`DEFAULT_OPSET`).
        dtype: the float type of the exported weights and float inputs and outputs, float32 or
            float64 (default: the model's).  onnxruntime runs ONNX's recurrent operators in float32
            only, so a float64 model meant for it is exported with ``dtype=np.float32``.
        metadata: strings stored in the model's ``metadata_props`` (e.g. a vocabulary as JSON).

    The graph's inputs are ``x`` (float ``(B, T, I)``, the model's dtype), or ``tokens`` (int64
    ``(B, T)``) when the model starts with an ``Embedding``; then ``lengths`` and the states as
    above.  Its outputs are ``out`` (``(B, T, F)``, the layouts of ``forward``; ``(B, F)`` after a
    pooling head) and the final states:
    ``h_n`` (and ``c_n``) ``(L*D, B, H)`` for a bare layer, ``<block>.h_n`` (``<block>.c_n``) for each
    recurrent block of a ``Sequential``.  B and T are dynamic.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ImportError: the onnx package is not installed.
        TypeError: the model, or one of its blocks (named), is of a kind that does not export.
        ValueError: a bad option (``opset`` out of range, a dtype other than float32 / float64,
            ``with_lengths`` / ``with_state`` without a recurrent block, a non-string metadata entry).
    """
    onnx = _import_onnx()
    from rnnkit import __version__

    blocks = _blocks(model)
    for option, value in (("with_lengths", with_lengths), ("with_state", with_state)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{option} must be True or False, got {value!r}")
    newest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (the installed onnx's newest), "
                         f"got {opset!r}")
    metadata = dict(metadata or {})
    for key, text in metadata.items():
        if not (isinstance(key, str) and isinstance(text, str)):
            raise ValueError(f"metadata must map strings to strings, got {key!r}: {type(text).__name__}")
    has_recurrent = any(isinstance(block, Recurrent) for _, block in blocks)
    if (with_lengths or with_state) and not has_recurrent:
        raise ValueError("with_lengths and with_state need a recurrent block in the model")

    if dtype is None:  # the model's: that of its first block with parameters (Dropout and the heads have none)
        dtype = next((np.dtype(block.dtype) for _, block in blocks if hasattr(block, "dtype")), np.dtype(np.float32))
    else:
        dtype = check_dtype(dtype)
    TensorProto = onnx.TensorProto
    g = _Graph(onnx, dtype, TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT)
    in_features = _handler(blocks[0][1]).in_features(blocks[0][1])
    if in_features is None:
        x = g.add_input("tokens", TensorProto.INT64, ["B", "T"])
    else:
        x = g.add_input("x", g.elem_type, ["B", "T", in_features])
    lengths = lengths64 = None
    if with_lengths:
        lengths64 = g.add_input("lengths", TensorProto.INT64, ["B"])
        lengths = g.node("Cast", [lengths64], "sequence_lens", to=TensorProto.INT32)[0]

    bare = not isinstance(model, Sequential)
    features: int | str = in_features if in_features is not None else "T"  # (the ids have no feature axis)
    keeps_time = True
    for name, block in blocks:
        handler = _handler(block)
        context = _Context(lengths, lengths64, bool(with_state), "" if bare else f"{name}.")
        x = handler.emit(g, block, x, context)
        features = handler.out_features(block, features)
        keeps_time = keeps_time and handler.keeps_time
    g.add_output(x, "out", g.elem_type, ["B", "T", features] if keeps_time else ["B", features])
    # The final states were added as outputs while emitting; "out" comes first, as in forward.
    g.outputs.insert(0, g.outputs.pop())

    graph = onnx.helper.make_graph(g.nodes, "rnnkit", g.inputs, g.outputs, initializer=g.initializers,
                                   doc_string=f"rnnkit {__version__}: {model!r}")
    opset_id = onnx.helper.make_opsetid("", int(opset))
    proto = onnx.helper.make_model(graph, opset_imports=[opset_id], producer_name="rnnkit",
                                   producer_version=__version__,
                                   ir_version=onnx.helper.find_min_ir_version_for([opset_id]))
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)

    target = Path(path)
    weight_bytes = sum(value.nbytes for _, block in blocks for value in block.params.values())
    if weight_bytes < EXTERNAL_DATA_BYTES:
        atomic_write_bytes(target, proto.SerializeToString())
    else:
        onnx.save_model(proto, target, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{target.name}.data")  # shape constants (< 1 KiB) stay inline
    return target


def _blocks(model: Any) -> list[tuple[str, Any]]:
    """``(name, block)`` pairs of the model, each of a kind that exports (else TypeError naming it)."""
    if isinstance(model, Sequential):
        pairs = list(model.layers.items())
        for name, block in pairs:
            try:
                _handler(block)
            except TypeError as error:
                raise TypeError(f"block {name!r}: {error}") from None
        for name, block in pairs[1:]:
            if _handler(block).in_features(block) is None:
                raise TypeError(f"block {name!r}: a {type(block).__name__} reads token ids, so it can only be "
                                f"the first block")
        for k, (name, block) in enumerate(pairs):
            pooled = [earlier for earlier, b in pairs[:k] if not _handler(b).keeps_time]
            if pooled and isinstance(block, (Recurrent, LastStep, MeanPool)):
                raise TypeError(f"block {name!r}: a {type(block).__name__} needs a sequence (B, T, F), but "
                                f"{pooled[0]!r} has already pooled the time axis away")
        return pairs
    if isinstance(model, Recurrent):
        return [("", model)]
    raise TypeError(f"model must be a recurrent layer (RNN, LSTM, GRU) or a Sequential, got {type(model).__name__}")

