"""Batch-first recurrent layers with PyTorch's names and layouts: :class:`RNN`, :class:`LSTM`, :class:`GRU`,
and the layer-normalised LSTM :class:`LayerNormLSTM` (PyTorch-style names; torch has no such module).

A layer is a cell (:mod:`rnnkit.cells`) run by the one time loop (:mod:`rnnkit.unroll`); stacking
and bidirectionality are composition of that loop:

* layer ``l`` reads the output of layer ``l-1`` (both directions concatenated along features);
* the reverse direction runs the same forward loop on each sequence reversed *within its length*
  and reverses the result back, so a padded sequence's reverse pass starts at its last valid step.

Regularization is composition around the same loop (:mod:`rnnkit.layers.dropout` has the masks):
``dropout=p`` multiplies each layer's output but the last by a fresh mask (PyTorch's semantics),
and ``weight_drop=p`` (DropConnect on ``W_hh``, as in AWD-LSTM) hands the loop a masked copy of
``W_hh``, drawn once per forward pass, and masks its gradient.  Both act only in
``forward(..., training=True, rng=generator)``; the default ``training=False`` is deterministic and
equals the layer without dropout.  ``bias=False`` runs the loop with zero biases and has no
``bias_*`` parameters, as ``torch.nn`` with ``bias=False``.

Two regularizers act inside the time loop (:class:`rnnkit.unroll.StepMasks`), with masks drawn
once per forward call from ``rng`` for every (layer, direction):

* ``recurrent_dropout=p`` (Keras's ``recurrent_dropout``; RNN and LSTM): the ``h_{t-1}`` fed to
  ``W_hh`` is multiplied by one inverted-dropout mask per sequence, the same at every step;
  inference uses no mask.
* ``zoneout=p`` (Krueger et al. 2016): each unit keeps its previous value with probability ``p``
  at each step, ``h_t = m ⊙ h_{t-1} + (1 - m) ⊙ h̃_t`` (the LSTM's ``c`` likewise, with its own
  mask); inference uses the expectation ``h_t = p h_{t-1} + (1 - p) h̃_t`` (deterministic).

Nothing about a forward pass is kept in the layer object: ``forward`` returns an explicit cache
that ``backward`` takes back, so several forward passes can be in flight and truncated BPTT is
just passing ``state`` on.  Shapes: ``x`` ``(B, T, I)``, ``out`` ``(B, T, D*H)``, each state
``(L*D, B, H)`` (L layers, D directions), as in ``torch.nn`` with ``batch_first=True``; an LSTM with
``proj_size`` P has ``out`` ``(B, T, D*P)`` and ``h`` ``(L*D, B, P)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from rnnkit._types import Array, Grads, IntArray, Params
from rnnkit.cells import GRU_CELL, LNLSTM_CELL, LSTM_CELL, RNN_RELU_CELL, RNN_TANH_CELL, CellSpec, step_forward
from rnnkit.cells._spec import empty_pack, empty_state, empty_vector
from rnnkit.cells.lnlstm import param_slices
from rnnkit.layers import init
from rnnkit.layers._checks import check_dtype, check_float_input, check_size, checked_state_dict
from rnnkit.layers._versions import WeightVersion, check_version, weight_version
from rnnkit.layers.dropout import check_probability, check_training, dropout_mask
from rnnkit.unroll import (
    StepMasks,
    UnrollCache,
    Weights,
    batch_sizes_from_lengths,
    to_batch_first,
    to_feature_major,
    unroll_backward,
    unroll_forward,
)

State = Any
"""``h`` ``(L*D, B, H)`` for RNN and GRU; the pair ``(h, c)`` for LSTM."""


class DropMasks(NamedTuple):
    """The masks one training pass drew (each already scaled by ``1/(1-p)``)."""

    between: list[Array]   # dropout: layer l's output (D*H, T, B), l = 0 .. L-2
    w_hh: list[Array]      # weight_drop: per unit (G*H, H); empty when weight_drop is 0


class RecurrentCache(NamedTuple):
    """What :meth:`Recurrent.backward` needs from :meth:`Recurrent.forward`."""

    units: list[UnrollCache]     # one per (layer, direction), index l*D + d
    order: IntArray | None       # batch permutation sorting the lengths (longest first), or None
    rev_index: IntArray | None   # (T, B) reversal within each length (sorted order), or None
    x_shape: tuple[int, int, int]
    signature: tuple[Any, ...]   # the producing layer's cell and sizes: backward checks it is its own
    version: WeightVersion       # the producing layer object and its weights: backward checks they are unchanged
    masks: DropMasks | None = None  # None: an inference pass, or a layer without dropout


def _to_feature_major(a: Array, order: IntArray | None) -> Array:
    """``(B, T, F)`` -> a new C-contiguous ``(F, T, B)``, the batch permuted by ``order`` if given."""
    return to_feature_major(a, order)


def _to_batch_first(a: Array, inv: IntArray | None) -> Array:
    """``(F, T, B)`` -> a new C-contiguous ``(B, T, F)``, un-permuting the batch by ``inv`` if given.

    Always a copy: the result must never share memory with a cache (``a`` may be a view of one).
    """
    return to_batch_first(a, inv)


class Recurrent:
    """A stacked, optionally bidirectional recurrent layer over any cell (see the module docstring)."""

    cell: CellSpec

    def __init__(
        self,
        cell: CellSpec,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        init_hh: str = "pytorch",
        init_ih: str = "pytorch",
        forget_bias: float | None = None,
        proj_size: int = 0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        self.dtype = check_dtype(dtype)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")
        self.cell = cell
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        self.bias = bool(bias)
        self.dropout = check_probability("dropout", dropout)
        self.weight_drop = check_probability("weight_drop", weight_drop)
        self.recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        if self.recurrent_dropout and cell.name == "gru":
            # The GRU reads h_{t-1} outside W_hh too (h = (1-z) n + z h_{t-1}); Keras's recurrent
            # dropout masks only the copy fed to W_hh, which the shared loop cannot separate.
            raise ValueError("recurrent_dropout is not available for the GRU (its h_{t-1} also enters the "
                             "update outside W_hh); use zoneout, dropout or weight_drop")
        self.zoneout = check_probability("zoneout", zoneout)
        self.init_hh = init.check_choice("init_hh", init_hh, init.INIT_HH)
        self.init_ih = init.check_choice("init_ih", init_ih, init.INIT_IH)
        if forget_bias is not None:
            if cell.name not in ("lstm", "lnlstm"):
                raise ValueError(f"forget_bias is an LSTM option (the forget gate), not one of {cell.name}")
            if not self.bias:
                raise ValueError("forget_bias needs bias=True (it sets the forget gate's bias)")
            if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)) or not np.isfinite(
                    forget_bias):
                raise ValueError(f"forget_bias must be a finite number or None, got {forget_bias!r}")
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) or proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative integer, got {proj_size!r}")
        if proj_size and cell.name != "lstm":
            raise ValueError(f"proj_size is an LSTM option (PyTorch's LSTM with projections), not one of {cell.name}")
        if proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({self.hidden_size}), got {proj_size}")
        self.proj_size = int(proj_size)
        self.output_size = self.proj_size or self.hidden_size
        """The size of ``h`` (per direction): ``proj_size`` when projecting, else ``hidden_size``."""
        # bias=False runs the same loop with zero biases; one read-only zero vector serves every unit.
        self._zero_bias = np.zeros(cell.num_gates * self.hidden_size, self.dtype)
        self._zero_bias.flags.writeable = False
        self.params: Params = self._init_params(np.random.default_rng(seed))

    # ------------------------------------------------------------------ parameters
    def _suffix(self, layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        GH, H, P = self.cell.num_gates * self.hidden_size, self.hidden_size, self.output_size
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.num_directions * P
            for direction in range(self.num_directions):
                s = self._suffix(layer, direction)
                shapes[f"weight_ih{s}"] = (GH, in_size)
                shapes[f"weight_hh{s}"] = (GH, P)
                if self.bias:
                    shapes[f"bias_ih{s}"] = (GH,)
                    shapes[f"bias_hh{s}"] = (GH,)
                if self.proj_size:  # PyTorch's order: weight_hr after the biases
                    shapes[f"weight_hr{s}"] = (self.proj_size, H)
        return shapes

    def _init_params(self, rng: np.random.Generator) -> Params:
        # PyTorch's initialisation: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)).
        # The other initializers (rnnkit.layers.init) overwrite it afterwards, so the default draws
        # stay exactly what they always were for a given seed.
        k = 1.0 / np.sqrt(self.hidden_size)
        params = {
            name: rng.uniform(-k, k, size=shape).astype(self.dtype)
            for name, shape in self._param_shapes().items()
        }
        G, H, P = self.cell.num_gates, self.hidden_size, self.output_size
        for name, shape in self._param_shapes().items():
            if name.startswith("weight_hh") and self.init_hh == "orthogonal":
                # (H, P) blocks; with a projection (P < H) the first P columns of an orthogonal
                # matrix: orthonormal columns (semi-orthogonal), exactly orthogonal when P = H.
                params[name] = init.per_gate(G, lambda: init.orthogonal(rng, H, self.dtype)[:, :P])
            elif name.startswith("weight_ih") and self.init_ih == "xavier":
                params[name] = init.per_gate(G, lambda shape=shape: init.xavier_uniform(rng, (H, shape[1]),
                                                                                          self.dtype))
            elif name.startswith("bias_") and self.forget_bias is not None:
                # LSTM gate order i, f, g, o: the forget gate is rows H .. 2H; b_ih + b_hh = forget_bias.
                params[name][H : 2 * H] = self.forget_bias if name.startswith("bias_ih") else 0.0
        return params

    def _signature(self) -> tuple[Any, ...]:
        """What a cache must match to be this layer's: cell, sizes, directions and dtype."""
        return (self.cell.name, self.input_size, self.hidden_size, self.num_layers, self.num_directions,
                self.dtype.name, self.bias, self.proj_size)

    def _weights(
        self, layer: int, direction: int, masks: DropMasks | None = None, rng: np.random.Generator | None = None,
    ) -> Weights:
        """One unit's weights as the loop sees them: ``W_hh ⊙ M`` under weight drop, zero biases without bias,
        and ``W_hr`` with a projection.

        With ``rng`` (a training forward pass) the unit's weight-drop mask is drawn into ``masks``;
        without it (backward) the mask the forward pass drew is used.
        """
        s = self._suffix(layer, direction)
        p = self.params
        w_hh = p[f"weight_hh{s}"]
        if masks is not None and self.weight_drop > 0:
            if rng is not None:
                masks.w_hh.append(dropout_mask(rng, w_hh.shape, self.weight_drop, self.dtype))
            w_hh = w_hh * masks.w_hh[layer * self.num_directions + direction]
        w_hr = p[f"weight_hr{s}"] if self.proj_size else None
        b_ih, b_hh, cell_params = self._cell_params(s)
        return Weights(p[f"weight_ih{s}"], w_hh, b_ih, b_hh, w_hr, cell_params)

    def _cell_params(self, s: str) -> tuple[Array, Array, Array | None]:
        """The unit's ``b_ih``, ``b_hh`` (zeros without bias) and the cell's packed extra parameters (None: none)."""
        if not self.bias:
            return self._zero_bias, self._zero_bias, None
        return self.params[f"bias_ih{s}"], self.params[f"bias_hh{s}"], None

    def _unit_grads(self, s: str, g: Weights, w_hh_mask: Array | None) -> Grads:
        """One unit's gradients under the parameters' names (``backward`` keeps those in :attr:`params`).

        ``w_hh_mask``: the weight-drop mask the loop's ``W_hh`` carried (None: none).
        """
        grads = {f"weight_ih{s}": g.w_ih, f"weight_hh{s}": g.w_hh if w_hh_mask is None else g.w_hh * w_hh_mask,
                 f"bias_ih{s}": g.b_ih, f"bias_hh{s}": g.b_hh}
        if g.w_hr is not None:
            grads[f"weight_hr{s}"] = g.w_hr
        return grads

    def _step_masks(self, T: int, B: int, training: bool, rng: np.random.Generator | None) -> StepMasks | None:
        """One unit's in-loop masks: recurrent dropout's ``(P, B)`` and zoneout's ``(T, ., B)`` when
        training; at inference zoneout's expectation (``p`` everywhere) and no recurrent dropout."""
        H, P, p = self.hidden_size, self.output_size, self.zoneout
        has_c = len(self.cell.state_names) > 1
        if not training:
            if not p:
                return None
            return StepMasks(None, np.full((1, P, B), p, self.dtype),
                             np.full((1, H, B), p, self.dtype) if has_c else None)
        if not (self.recurrent_dropout or p):
            return None
        assert rng is not None
        recurrent = dropout_mask(rng, (P, B), self.recurrent_dropout, self.dtype) if self.recurrent_dropout else None
        if not p:
            return StepMasks(recurrent)
        # 1: the unit keeps its previous value this step (probability p), 0: it takes the cell's.
        zone_h = (rng.random((T, P, B)) < p).astype(self.dtype)
        zone_c = (rng.random((T, H, B)) < p).astype(self.dtype) if has_c else None
        return StepMasks(recurrent, zone_h, zone_c)

    def state_dict(self) -> Params:
        """A copy of the parameters (PyTorch's names)."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Replace the parameters; every key must be present, known and of the right shape."""
        loaded = checked_state_dict(state_dict, self._param_shapes(), self.dtype)
        self.params = loaded

    # ------------------------------------------------------------------ helpers
    def _unit_states(self, state: tuple[Array, ...], order: IntArray | None) -> list[list[Array]]:
        """(L*D, B, H) per state -> per unit, a list of feature-major (H, B) states."""
        units = []
        for u in range(self.num_layers * self.num_directions):
            per_state = []
            for s in state:
                su = s[u] if order is None else s[u][order]
                per_state.append(np.ascontiguousarray(su.T))
            units.append(per_state)
        return units

    @staticmethod
    def _reverse(seq: Array, rev_index: IntArray | None) -> Array:
        """Reverse a feature-major (F, T, B) sequence in time, each column within its own length."""
        if rev_index is None:
            return seq[:, ::-1]
        return seq[:, rev_index, np.arange(seq.shape[2])]

    def _pack_state(self, finals: list[tuple[Array, ...]], inv: IntArray | None) -> State:
        stacked = []
        for k in range(len(self.cell.state_names)):
            s = np.stack([f[k].T for f in finals])  # (L*D, B, H)
            stacked.append(s if inv is None else s[:, inv])
        return tuple(stacked) if len(stacked) > 1 else stacked[0]

    # ------------------------------------------------------------------ validation
    def _check_array(self, name: str, a: Any, shape: tuple[int, ...], finite: bool = True) -> Array:
        a = check_float_input(name, a, self.dtype, finite)  # (a native-order copy of a big-endian array)
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
        return a

    def _check_state(self, name: str, state: Any, B: int) -> tuple[Array, ...]:
        LD = self.num_layers * self.num_directions
        shape = (LD, B, self.output_size)                 # h (P wide with a projection); c is H wide
        n = len(self.cell.state_names)
        if n == 1:
            return (self._check_array(name, state, shape),)
        if not isinstance(state, (tuple, list)) or len(state) != n:
            shapes = f"{shape} and {(LD, B, self.hidden_size)}" if self.proj_size else f"shape {shape}"
            raise ValueError(f"{name} must be a pair (h, c) of arrays of {shapes}")
        return tuple(
            self._check_array(f"{name}[{k}] ({s})", a, shape if k == 0 else (LD, B, self.hidden_size))
            for k, (s, a) in enumerate(zip(self.cell.state_names, state, strict=True))
        )

    def _check_lengths(self, lengths: Any, B: int, T: int) -> IntArray:
        lengths = np.asarray(lengths)
        if not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"lengths must be an integer array, got dtype {lengths.dtype}")
        if lengths.shape != (B,):
            raise ValueError(f"lengths has shape {lengths.shape}, expected ({B},) (one length per sequence)")
        if lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"lengths must lie in 1..{T} (T = x.shape[1]), got values in "
                             f"{lengths.min()}..{lengths.max()}")
        return lengths.astype(np.int64)

    # ------------------------------------------------------------------ forward / backward
    def forward(
        self,
        x: Array,
        state: State | None = None,
        lengths: IntArray | None = None,
        *,
        keep_cache: bool = True,
        training: bool = False,
        rng: np.random.Generator | None = None,
    ) -> tuple[Array, State, RecurrentCache | None]:
        """Run the layer over a batch of sequences.

        Args:
            x: ``(B, T, I)`` input, the layer's dtype.
            state: initial state (zeros when None): ``h`` ``(L*D, B, H)``, or ``(h, c)`` for LSTM.
            lengths: ``(B,)`` integers in ``1..T``, each sequence's true length (None: all ``T``).
                Outputs past a sequence's end are zero and its final state is the state after
                its last valid step; the reverse direction starts at that step.
            keep_cache: False for inference (no backward possible; faster, less memory).
            training: True applies ``dropout`` and ``weight_drop`` with masks drawn from ``rng``;
                False (the default) is deterministic and equals the layer without dropout.
            rng: the ``numpy.random.Generator`` the masks are drawn from (needed only when training
                with a non-zero ``dropout`` or ``weight_drop``).

        Returns:
            ``(out, state, cache)``: ``out`` ``(B, T, D*H)``, the final state in the same form as
            ``state``, and the cache for :meth:`backward` (None when ``keep_cache`` is False).
        """
        if not isinstance(x, np.ndarray) or x.ndim != 3:
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"x must be a batch-first array (B, T, I) with I = {self.input_size}, got {got}")
        B, T, _ = x.shape
        if B == 0 or T == 0:
            raise ValueError(f"x must hold at least one sequence of at least one step, got shape {x.shape}")
        L, D, H, P = self.num_layers, self.num_directions, self.hidden_size, self.output_size
        drawn = self.dropout > 0 or self.weight_drop > 0 or self.recurrent_dropout > 0 or self.zoneout > 0
        masks = DropMasks([], []) if check_training(training, rng, drawn) else None
        # Through one direction the loop does both layout copies itself (it gathers the first
        # layer's inputs from the batch-first x and writes the last layer's states batch-first).
        # Drawing no masks, it also counts x's NaN and ±inf on the way; with masks x is scanned
        # first, so that a refused call has drawn nothing from rng.
        fused = D == 1
        counted = fused and masks is None
        x = self._check_array("x", x, (B, T, self.input_size), finite=not counted)
        if state is None:
            state_t = tuple(np.zeros((L * D, B, P if k == 0 else H), self.dtype)
                            for k in range(len(self.cell.state_names)))
        else:
            state_t = self._check_state("state", state, B)

        order = batch_sizes = rev_index = inv = None
        if lengths is not None:
            lengths = self._check_lengths(lengths, B, T)
            order = np.argsort(-lengths, kind="stable")
            inv = np.argsort(order)
            sorted_lengths = lengths[order]
            batch_sizes = batch_sizes_from_lengths(sorted_lengths, T)
            if D == 2:
                t = np.arange(T)[:, None]
                rev_index = np.where(t < sorted_lengths, sorted_lengths - 1 - t, t)  # (T, B)
        columns = np.arange(B) if order is None else order  # the loop's column b is sequence columns[b]
        layer_in = x if fused else _to_feature_major(x, order)  # (I, T, B), or x itself when fused
        states0 = self._unit_states(state_t, order)

        units: list[Any] = []  # UnrollCache per unit (None without keep_cache)
        finals = []
        for layer in range(L):
            outs = []
            for direction in range(D):
                u = layer * D + direction
                seq = layer_in if direction == 0 else self._reverse(layer_in, rev_index)
                out, final, cache = unroll_forward(
                    self.cell, self._weights(layer, direction, masks, rng), seq, states0[u], batch_sizes, keep_cache,
                    self._step_masks(T, B, masks is not None, rng),
                    x_order=columns if fused and layer == 0 else None,
                    out_dest=columns if fused and layer == L - 1 else None,
                    check_finite="x" if counted and layer == 0 else None,
                )
                outs.append(out if direction == 0 else self._reverse(out, rev_index))
                finals.append(final)
                units.append(cache)
            layer_in = outs[0] if D == 1 else np.concatenate(outs, axis=0)  # (D*H, T, B)
            if masks is not None and self.dropout > 0 and layer < L - 1:
                assert rng is not None
                masks.between.append(dropout_mask(rng, layer_in.shape, self.dropout, self.dtype))
                layer_in = layer_in * masks.between[-1]

        out_bf = layer_in if fused else _to_batch_first(layer_in, inv)  # (fused: already batch-first, a new array)
        rcache = None
        if keep_cache:
            rcache = RecurrentCache(units, order, rev_index, (B, T, self.input_size), self._signature(),
                                    weight_version(self, self.params), masks)
        return out_bf, self._pack_state(finals, inv), rcache

    def step(self, x: Array, state: State | None = None) -> tuple[Array, State]:
        """One time step for inference, from ``state``: what ``forward(x[:, None], state)`` gives, without its overhead.

        Generation feeds one token at a time, so the per-call work of :meth:`forward` (layout copies,
        the time loop's buffers and threads, the cache machinery) would outweigh the step itself;
        here each layer is one matrix product for its input and one call of the cell's compiled
        kernel -- the same kernel the time loop runs.  Dropout of every kind is off (inference);
        zoneout mixes in its expectation, as :meth:`forward` does at inference.

        Args:
            x: ``(B, I)`` the step's input.
            state: as for :meth:`forward` (zeros when None).

        Returns:
            ``(out, state)``: ``out`` ``(B, H)`` (``(B, P)`` with a projection) and the new state in
            the form of ``state``.

        Raises:
            ValueError: a bidirectional layer (its backward direction needs the whole sequence),
                or a malformed ``x`` / ``state``.
        """
        if self.num_directions != 1:
            raise ValueError("step needs a unidirectional layer: a bidirectional one reads the sequence backwards")
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] == 0:
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"x must be one step of a batch, (B, I) with B >= 1 and I = {self.input_size}, got {got}")
        B = x.shape[0]
        x = self._check_array("x", x, (B, self.input_size))
        L, H, P = self.num_layers, self.hidden_size, self.output_size
        if state is None:
            state_t = tuple(np.zeros((L, B, P if k == 0 else H), self.dtype) for k in range(len(self.cell.state_names)))
        else:
            state_t = self._check_state("state", state, B)
        prevs = self._unit_states(state_t, None)
        rows_a, rows_b = self.cell.cache_sizes(H)
        has_c = len(self.cell.state_names) > 1
        layer_in = np.ascontiguousarray(x.T)                                  # (I, B)
        finals: list[tuple[Array, ...]] = []
        for layer in range(L):
            w = self._weights(layer, 0)
            b_x, b_in = self.cell.split_bias(w.b_ih, w.b_hh)
            xp = np.matmul(w.w_ih, layer_in)                                  # (G*H, B)
            h = np.empty((P, B), self.dtype)
            c = np.empty((H, B), self.dtype) if has_c else empty_state(self.dtype)
            ca = np.empty((rows_a, B), self.dtype) if rows_a else empty_state(self.dtype)
            cb = np.empty((rows_b + (H if self.proj_size else 0), B), self.dtype) if rows_b else empty_state(self.dtype)
            c_prev = prevs[layer][1] if has_c else empty_state(self.dtype)
            step_forward(self.cell.kind, xp, b_x, b_in, w.w_hh, empty_state(self.dtype) if w.w_hr is None else w.w_hr,
                         empty_vector(self.dtype) if w.p is None else w.p, prevs[layer][0], c_prev, h, c, ca, cb, 0, H,
                         empty_pack(self.dtype))
            if self.zoneout:  # at inference each unit keeps p of its previous value (the masks' expectation)
                h += self.zoneout * (prevs[layer][0] - h)
                if has_c:
                    c += self.zoneout * (c_prev - c)
            finals.append((h, c) if has_c else (h,))
            layer_in = h
        return np.ascontiguousarray(layer_in.T), self._pack_state(finals, None)

    def backward(
        self,
        d_out: Array | None,
        d_state: State | None,
        cache: RecurrentCache,
    ) -> tuple[Array, State, Grads]:
        """Backpropagation through time.

        Args:
            d_out: ``(B, T, D*H)`` gradient of the loss with respect to ``out`` (None: zero).
            d_state: gradient with respect to the final state, same form as the state (None: zero).
            cache: from :meth:`forward` of this very layer, with the weights unchanged since.

        The cache is checked first (see :mod:`rnnkit.layers._versions`): a cache of another layer
        object (even one of the same shape), parameter arrays replaced since the forward pass, any
        step of an rnnkit optimizer since, and in-place edits that change any of the up to 256
        evenly spaced elements sampled from each weight array all raise ValueError saying which of
        these happened.  An in-place edit of a few single elements that all miss the sample is the
        one change that is not detected.

        Returns:
            ``(dx, d_state0, grads)``: ``dx`` ``(B, T, I)``, the gradient with respect to the initial
            state (same form as the state), and ``grads`` with exactly the keys of :attr:`params`.
        """
        if not isinstance(cache, RecurrentCache):
            raise ValueError("cache must be the cache returned by forward(..., keep_cache=True)")
        if cache.signature != self._signature():
            raise ValueError(f"cache comes from another layer ({cache.signature}), not from this one "
                             f"({self._signature()}): pass the cache of this layer's own forward")
        check_version(cache.version, self, self.params, type(self).__name__)
        B, T, _ = cache.x_shape
        L, D, H = self.num_layers, self.num_directions, self.output_size
        order, rev_index = cache.order, cache.rev_index
        inv = None if order is None else np.argsort(order)
        # Through one direction the top layer's loop gathers d_out from its batch-first form (and
        # counts its NaN and ±inf on the way).
        fused = D == 1
        if d_out is not None:
            d_out = self._check_array("d_out", d_out, (B, T, D * H), finite=not fused)
            # (D*H, T, B), or d_out itself, batch-first, when fused
            d_layer: Array | None = d_out if fused else _to_feature_major(d_out, order)
        else:
            d_layer = None
        d_finals = None
        if d_state is not None:
            d_finals = self._unit_states(self._check_state("d_state", d_state, B), order)

        grads: Grads = {}
        d_states0: list[tuple[Array, ...]] = [()] * (L * D)
        masks = cache.masks
        for layer in reversed(range(L)):
            if masks is not None and layer < len(masks.between):  # through the dropout on this layer's output
                assert d_layer is not None
                d_layer = d_layer * masks.between[layer]
            d_in = None
            for direction in range(D):
                u = layer * D + direction
                top_fused = fused and layer == L - 1 and d_layer is not None  # d_layer is then (B, T, H)
                d_o = None if d_layer is None or top_fused else d_layer[direction * H : (direction + 1) * H]
                if d_o is not None and direction == 1:
                    d_o = self._reverse(d_o, rev_index)
                w = self._weights(layer, direction, masks)
                columns = np.arange(B) if order is None else order
                dx, d_s0, g = unroll_backward(
                    self.cell, w, cache.units[u], d_layer if top_fused else d_o,
                    None if d_finals is None else d_finals[u],
                    d_order=columns if top_fused else None,
                    check_finite="d_out" if top_fused else None,
                    # through one direction the bottom layer's dx comes batch-first from the loop
                    dx_dest=columns if fused and layer == 0 else None,
                )
                if direction == 1:
                    dx = self._reverse(dx, rev_index)
                d_in = dx if d_in is None else d_in + dx
                d_states0[u] = d_s0
                # Under weight drop the loop saw W_hh ⊙ M: dL/dW_hh = dL/d(W_hh ⊙ M) ⊙ M.
                w_hh_mask = masks.w_hh[u] if masks is not None and masks.w_hh else None
                grads.update(self._unit_grads(self._suffix(layer, direction), g, w_hh_mask))
            d_layer = d_in
        assert d_layer is not None
        dx_batch_first = d_layer if fused else _to_batch_first(d_layer, inv)
        return dx_batch_first, self._pack_state(d_states0, inv), {k: grads[k] for k in self.params}

    __call__ = forward

    def __repr__(self) -> str:
        options = "".join(f", {name}={getattr(self, name)!r}" for name, default in (
            ("bias", True), ("dropout", 0.0), ("weight_drop", 0.0), ("init_hh", "pytorch"), ("init_ih", "pytorch"),
            ("forget_bias", None), ("proj_size", 0), ("recurrent_dropout", 0.0), ("zoneout", 0.0))
            if getattr(self, name) != default)
        return (f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, dtype={self.dtype.name}{options})")


class RNN(Recurrent):
    """Elman RNN (as ``torch.nn.RNN``): ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, f tanh/relu.

    The keyword-only options (``bias``, ``dropout``, ``weight_drop``, ``init_hh``, ``init_ih``) are
    those of :class:`Recurrent`, described in the module docstring and :mod:`rnnkit.layers.init`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        init_hh: str = "pytorch",
        init_ih: str = "pytorch",
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        cells = {"tanh": RNN_TANH_CELL, "relu": RNN_RELU_CELL}
        if nonlinearity not in cells:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(cells[nonlinearity], input_size, hidden_size, num_layers, bidirectional, dtype, seed,
                         bias=bias, dropout=dropout, weight_drop=weight_drop, init_hh=init_hh, init_ih=init_ih,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)


class LSTM(Recurrent):
    """Long short-term memory, gates i, f, g, o (as ``torch.nn.LSTM``); the state is ``(h, c)``.

    Keyword-only options as :class:`RNN`, plus ``forget_bias`` (e.g. 1.0: the forget gate's bias)
    and ``proj_size`` P (PyTorch's LSTM with projections, ``0 < P < H``): ``h = W_hr (o ⊙ tanh c)``
    with ``weight_hr_l{k}`` ``(P, H)``, so ``h`` and ``out`` are P wide per direction (``out``
    ``(B, T, D*P)``, ``h`` ``(L*D, B, P)``), ``c`` stays ``(L*D, B, H)`` and ``weight_hh`` is ``(4H, P)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        init_hh: str = "pytorch",
        init_ih: str = "pytorch",
        forget_bias: float | None = None,
        proj_size: int = 0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(LSTM_CELL, input_size, hidden_size, num_layers, bidirectional, dtype, seed,
                         bias=bias, dropout=dropout, weight_drop=weight_drop, init_hh=init_hh, init_ih=init_ih,
                         forget_bias=forget_bias, proj_size=proj_size, recurrent_dropout=recurrent_dropout,
                         zoneout=zoneout)


class GRU(Recurrent):
    """Gated recurrent unit, gates r, z, n with the reset gate on ``W_hn h + b_hn`` (as ``torch.nn.GRU``).

    The keyword-only options are those of :class:`RNN`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        init_hh: str = "pytorch",
        init_ih: str = "pytorch",
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(GRU_CELL, input_size, hidden_size, num_layers, bidirectional, dtype, seed,
                         bias=bias, dropout=dropout, weight_drop=weight_drop, init_hh=init_hh, init_ih=init_ih,
                         zoneout=zoneout)


class LayerNormLSTM(Recurrent):
    """The layer-normalised LSTM (Ba, Kiros & Hinton 2016; haste's ``LayerNormLSTM``), gates i, f, g, o.

    Each step normalises both halves of the pre-activations and the cell state over their features,
    per sequence (:mod:`rnnkit.cells.lnlstm` has the equations)::

        a = γ_x ⊙ LN(W_ih x) + γ_h ⊙ LN(W_hh h_prev) + b        i, f, g, o = σ, σ, tanh, σ of a
        c = f ⊙ c_prev + i ⊙ g                                   h = o ⊙ tanh(γ_c ⊙ LN(c) + β_c)

    Parameters per layer ``k`` (``_reverse`` appended for the reverse direction): ``weight_ih_l{k}``
    ``(4H, I)`` and ``weight_hh_l{k}`` ``(4H, H)`` as ``torch.nn.LSTM``'s; ``bias_l{k}`` ``(4H,)`` = b
    (one bias: separate input and hidden biases would be cancelled by the normalisation);
    ``ln_ih_weight_l{k}`` = γ_x, ``ln_hh_weight_l{k}`` = γ_h ``(4H,)``, ``ln_c_weight_l{k}`` = γ_c and
    ``ln_c_bias_l{k}`` = β_c ``(H,)``.  Initialisation: the weights as :class:`LSTM`'s (``init_hh``,
    ``init_ih``), every γ 1, β_c and b 0, the forget gate's part of b ``forget_bias`` (0 when None).
    The state is ``(h, c)``, each ``(L*D, B, H)``; shapes and the other options (``bias=False``:
    no ``bias_l{k}``, b fixed at 0; ``dropout``, ``weight_drop``, ``recurrent_dropout``,
    ``zoneout``) as :class:`LSTM`.  There is no ``proj_size`` (only 0 is accepted, so code written for
    :class:`LSTM` runs unchanged without one).  torch and ONNX have no such
    module: :func:`rnnkit.interop.to_torch` and :func:`rnnkit.interop.export_onnx` refuse it.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        seed: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        init_hh: str = "pytorch",
        init_ih: str = "pytorch",
        forget_bias: float | None = None,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        proj_size: int = 0,
    ) -> None:
        if proj_size != 0:
            raise ValueError(f"proj_size is not available for the LayerNormLSTM (got {proj_size!r}): its output "
                             "is o ⊙ tanh(LN(c)), with no projection; use LSTM(proj_size=...)")
        super().__init__(LNLSTM_CELL, input_size, hidden_size, num_layers, bidirectional, dtype, seed,
                         bias=bias, dropout=dropout, weight_drop=weight_drop, init_hh=init_hh, init_ih=init_ih,
                         forget_bias=forget_bias, recurrent_dropout=recurrent_dropout, zoneout=zoneout)

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self.num_directions * H
            for direction in range(self.num_directions):
                s = self._suffix(layer, direction)
                shapes[f"weight_ih{s}"] = (4 * H, in_size)
                shapes[f"weight_hh{s}"] = (4 * H, H)
                if self.bias:
                    shapes[f"bias{s}"] = (4 * H,)
                for name, where in param_slices(H).items():  # the gains and the cell's shift
                    if name != "bias":
                        shapes[f"{name}{s}"] = (where.stop - where.start,)
        return shapes

    def _init_params(self, rng: np.random.Generator) -> Params:
        params = super()._init_params(rng)  # the weights (and draws for the rest, overwritten here)
        H = self.hidden_size
        for name, value in params.items():
            if name.startswith("ln_") and "_weight" in name:
                value[:] = 1.0                                  # every gain γ starts at 1
            elif name.startswith(("ln_c_bias", "bias")):
                value[:] = 0.0
                if name.startswith("bias") and self.forget_bias is not None:
                    value[H : 2 * H] = self.forget_bias         # gate order i, f, g, o
        return params

    def _cell_params(self, s: str) -> tuple[Array, Array, Array | None]:
        """Zero ``b_ih``, ``b_hh`` (b follows the normalisation) and ``p``, packed as the kernels read it."""
        H = self.hidden_size
        packed = np.zeros(14 * H, self.dtype)
        for name, where in param_slices(H).items():
            if name != "bias" or self.bias:
                packed[where] = self.params[f"{name}{s}"]
        return self._zero_bias, self._zero_bias, packed

    def _unit_grads(self, s: str, g: Weights, w_hh_mask: Array | None) -> Grads:
        grads = super()._unit_grads(s, g, w_hh_mask)  # the weights (its bias entries are not parameters here)
        assert g.p is not None
        for name, where in param_slices(self.hidden_size).items():
            grads[f"{name}{s}"] = g.p[where]
        return grads
