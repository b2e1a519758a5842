"""A container that chains layers: embedding -> recurrent layers -> output head.

:class:`Sequential` runs its layers in order on the way forward and in reverse order on the way
back, and keeps nothing about a pass in the object (the cache is returned, as for every layer).
It exposes all parameters as one flat dict with unique dotted names, ``"rnn.weight_ih_l0"``,
``"head.weight"`` (PyTorch's ``state_dict`` names), whose values *are* the layers' arrays, so an
optimizer updating ``model.params`` in place updates the layers.

Two kinds of layer are told apart by duck typing, not by their class:

* a *recurrent* layer's ``forward`` takes a ``state`` argument:
  ``out, state, cache = layer.forward(x, state=..., lengths=..., keep_cache=...)`` and
  ``dx, d_state0, grads = layer.backward(d_out, d_state, cache)``;
* any other layer is feed-forward: ``out, cache = layer.forward(x)`` and
  ``dx, grads = layer.backward(d_out, cache)`` (``dx`` is None for an :class:`Embedding`); one
  whose ``forward`` takes ``lengths`` (the pooling heads :class:`~rnnkit.layers.LastStep` and
  :class:`~rnnkit.layers.MeanPool`) is called ``layer.forward(x, lengths=lengths)``.

The model's state is a dict ``{layer_name: layer_state}`` over its recurrent layers.  Passing the
state one forward pass returns into the next one carries the hidden state across chunks of a
long sequence; backward never sends a gradient across that boundary unless ``d_state`` is given,
which is truncated BPTT (see :mod:`rnnkit.tbptt`).

Training and inference: ``forward(..., training=False, rng=None)`` passes ``training`` and ``rng``
on to every layer whose ``forward`` takes a ``training`` argument (the dropout kinds, see
:mod:`rnnkit.layers.dropout`).  The default is inference: deterministic, no masks.  A model has
no train/eval mode of its own; each call says which it is.

Tied parameters: ``Sequential(layers, tied={"head.weight": "embed.weight"})`` makes two names one
parameter (see :meth:`Sequential.__init__`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from rnnkit._types import Array, Grads, IntArray, Params
from rnnkit.layers._checks import checked_state_dict

ModelState = dict[str, Any]
"""``{layer_name: state}`` for the recurrent layers of a :class:`Sequential` (``h``, or ``(h, c)``)."""


class SequentialCache(NamedTuple):
    """What :meth:`Sequential.backward` needs from :meth:`Sequential.forward`: one cache per layer."""

    caches: list[Any]
    owner: Any = None        # the Sequential whose forward made it
    names: tuple[str, ...] = ()   # its layer names then (a cache from before a change of layers is refused)


def detach_state(state: Any) -> Any:
    """A deep copy of a state: a model state dict, an LSTM ``(h, c)`` pair, an array, or None.

    In NumPy there is no autograd graph to cut; "detaching" a state means the copy shares no memory
    with the forward pass that produced it, so a caller may modify or keep it freely.
    """
    if state is None:
        return None
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, Mapping):
        return {name: detach_state(value) for name, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(value) for value in state)
    raise TypeError(f"state must be None, an array, a tuple of arrays or a dict of those, "
                    f"got {type(state).__name__}")


def takes_state(layer: Any) -> bool:
    """Whether ``layer`` is recurrent, i.e. its ``forward`` accepts a ``state`` argument."""
    return "state" in inspect.signature(layer.forward).parameters


def takes_lengths(layer: Any) -> bool:
    """Whether ``layer``'s ``forward`` accepts a ``lengths`` argument (recurrent layers, pooling heads)."""
    return "lengths" in inspect.signature(layer.forward).parameters


class Sequential:
    """Layers applied one after the other, addressed by name.

    Args:
        layers: ordered ``(name, layer)`` pairs, or a dict (its order is kept).  Names must be
            unique, non-empty and free of dots; every layer needs ``forward``, ``backward`` and a
            ``params`` dict, and all parameters must share one dtype.
        tied: ``{follower: leader}`` dotted parameter names that are one parameter, e.g.
            ``{"head.weight": "embed.weight"}`` (weight tying; the shapes must agree).  The
            follower's layer uses the leader's array itself; only the leader appears in
            :attr:`params`, :meth:`state_dict` and the gradients, and its gradient is the sum of
            both uses, so an optimizer keeps one state and makes one update for it.

    Example::

        model = Sequential([("embed", Embedding(V, 16)), ("rnn", LSTM(16, 64)), ("head", Linear(64, V))])
        logits, state, cache = model.forward(ids)                 # ids (B, T) -> logits (B, T, V)
        loss, d_logits = softmax_cross_entropy(logits, targets)
        _, _, grads = model.backward(d_logits, None, cache)             # keys == model.params keys
    """

    def __init__(
        self, layers: Iterable[tuple[str, Any]] | Mapping[str, Any], tied: Mapping[str, str] | None = None,
    ) -> None:
        pairs = list(layers.items()) if isinstance(layers, Mapping) else list(layers)
        if not pairs:
            raise ValueError("layers must hold at least one (name, layer) pair")
        self.layers: dict[str, Any] = {}
        for entry in pairs:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise TypeError(f"layers must be (name, layer) pairs, got {entry!r}")
            name, layer = entry
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"layer names must be non-empty strings without dots, got {name!r}")
            if name in self.layers:
                raise ValueError(f"layer name {name!r} is used twice; names must be unique")
            for attribute in ("forward", "backward"):
                if not callable(getattr(layer, attribute, None)):
                    raise TypeError(f"layer {name!r} ({type(layer).__name__}) has no {attribute}() method")
            if not isinstance(getattr(layer, "params", None), dict):
                raise TypeError(f"layer {name!r} ({type(layer).__name__}) has no params dict")
            self.layers[name] = layer
        self.recurrent: tuple[str, ...] = tuple(name for name, layer in self.layers.items() if takes_state(layer))
        # Feed-forward blocks that read the batch's lengths (LastStep, MeanPool) get them too.
        self.length_aware: tuple[str, ...] = tuple(
            name for name, layer in self.layers.items() if name not in self.recurrent and takes_lengths(layer)
        )
        self.regularized: tuple[str, ...] = tuple(
            name for name, layer in self.layers.items() if "training" in inspect.signature(layer.forward).parameters
        )
        self.tied: dict[str, str] = self._check_tied(tied)
        self._link_tied()
        dtypes = {value.dtype for value in self.params.values()}
        if len(dtypes) > 1:
            raise ValueError(f"all layers must share one dtype, got {sorted(d.name for d in dtypes)}")
        self.dtype = dtypes.pop() if dtypes else np.dtype(np.float32)

    # ------------------------------------------------------------------ parameters
    def _all_params(self) -> Params:
        """Every layer's parameters under dotted names, tied followers included."""
        return {
            f"{name}.{key}": value for name, layer in self.layers.items() for key, value in layer.params.items()
        }

    def _check_tied(self, tied: Mapping[str, str] | None) -> dict[str, str]:
        if tied is None:
            return {}
        if not isinstance(tied, Mapping):
            raise TypeError(f"tied must be a dict {{follower: leader}} of parameter names, got {type(tied).__name__}")
        every = self._all_params()
        for follower, leader in tied.items():
            for role, key in (("follower", follower), ("leader", leader)):
                if key not in every:
                    raise ValueError(f"tied: {role} {key!r} is not a parameter of this model "
                                     f"(parameters: {sorted(every)})")
            if follower == leader or leader in tied or follower in tied.values():
                raise ValueError(f"tied: {follower!r} -> {leader!r}: a name cannot be tied to itself, and a "
                                 f"follower cannot lead (tie every follower to the one leader directly)")
            if every[follower].shape != every[leader].shape:
                raise ValueError(f"tied: {follower!r} has shape {every[follower].shape} but {leader!r} has "
                                 f"{every[leader].shape}; tied parameters must have the same shape")
        return dict(tied)

    def _link_tied(self) -> None:
        """Make every follower's layer hold its leader's array itself (after init and after every load)."""
        for follower, leader in self.tied.items():
            layer_name, key = follower.split(".", 1)
            leader_name, leader_key = leader.split(".", 1)
            self.layers[layer_name].params[key] = self.layers[leader_name].params[leader_key]

    @property
    def params(self) -> Params:
        """All parameters as ``{"layer.param": array}``; the arrays are the layers' own (not copies).

        A tied follower is left out (its layer uses the leader's array).  Built afresh on each
        access, so it stays right after a layer's ``load_state_dict``.
        """
        return {key: value for key, value in self._all_params().items() if key not in self.tied}

    def state_dict(self) -> Params:
        """A copy of all parameters under their dotted names."""
        return {key: value.copy() for key, value in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace all parameters; every dotted key must be present, known and of the right shape.

        The whole dict is validated before any layer changes, so a failed load leaves the model as it was.
        """
        shapes = {key: value.shape for key, value in self.params.items()}
        loaded = checked_state_dict(state_dict, shapes, self.dtype)
        loaded.update({follower: loaded[leader] for follower, leader in self.tied.items()})
        for name, layer in self.layers.items():
            prefix = f"{name}."
            layer.load_state_dict({key[len(prefix):]: v for key, v in loaded.items() if key.startswith(prefix)})
        self._link_tied()  # the layers copied what they loaded: share the leader's array again

    def __getitem__(self, name: str) -> Any:
        return self.layers[name]

    # ------------------------------------------------------------------ forward / backward
    def _check_state(self, arg: str, state: Any) -> ModelState:
        """A (possibly partial) ``{recurrent_layer_name: state}`` dict; None means all zeros."""
        if state is None:
            return {}
        if not isinstance(state, Mapping):
            raise ValueError(f"{arg} must be a dict {{layer_name: state}} over the recurrent layers "
                             f"{list(self.recurrent)}, got {type(state).__name__}")
        unknown = sorted(set(state) - set(self.recurrent))
        if unknown:
            raise ValueError(f"{arg} has keys {unknown} that are not recurrent layers of this model "
                             f"(recurrent layers: {list(self.recurrent)})")
        return dict(state)

    def forward(
        self,
        x: Array | IntArray,
        state: ModelState | None = None,
        lengths: IntArray | None = None,
        *,
        keep_cache: bool = True,
        training: bool = False,
        rng: np.random.Generator | None = None,
    ) -> tuple[Array, ModelState, SequentialCache | None]:
        """Run every layer in order.

        Args:
            x: the first layer's input, e.g. ids ``(B, T)`` for an embedding or ``(B, T, I)``.
            state: ``{layer_name: state}`` to start the recurrent layers from; layers left out (or
                the whole argument None) start from zeros.
            lengths: ``(B,)`` true sequence lengths, passed to every layer whose ``forward`` takes
                ``lengths`` (the recurrent layers and the pooling heads).
            keep_cache: False for inference (no backward possible).
            training: passed to every layer with dropout: True draws masks from ``rng``; False (the
                default) is deterministic inference.
            rng: the ``numpy.random.Generator`` every mask of this pass is drawn from, layer by layer.

        Returns:
            ``(out, state, cache)``: the last layer's output, the final state of every recurrent
            layer ``{layer_name: state}`` (to pass to the next chunk), and the cache for :meth:`backward`.
        """
        states = self._check_state("state", state)
        out: Any = x  # each layer's output is the next one's input
        final: ModelState = {}
        caches: list[Any] = []
        for name, layer in self.layers.items():
            mode = {"training": training, "rng": rng} if name in self.regularized else {}
            try:
                if name in self.recurrent:
                    out, final[name], cache = layer.forward(
                        out, state=states.get(name), lengths=lengths, keep_cache=keep_cache, **mode
                    )
                elif name in self.length_aware:
                    out, cache = layer.forward(out, lengths=lengths, **mode)
                else:
                    out, cache = layer.forward(out, **mode)
            except (ValueError, TypeError) as error:
                raise type(error)(f"layer {name!r}: {error}") from error
            caches.append(cache if keep_cache else None)
        return out, final, SequentialCache(caches, self, tuple(self.layers)) if keep_cache else None

    def backward(
        self,
        d_out: Array | None,
        d_state: ModelState | None,
        cache: SequentialCache,
    ) -> tuple[Array | None, ModelState, Grads]:
        """Backpropagate through every layer in reverse order.

        Args:
            d_out: gradient with respect to the model's output (None: zero, if the last layer is
                recurrent).
            d_state: ``{layer_name: gradient w.r.t. that layer's final state}``; layers left out
                (or None) get zero — the truncated-BPTT boundary.
            cache: from this model's :meth:`forward`, with the weights unchanged since; each layer
                checks its own part (see :mod:`rnnkit.layers._versions` for what is detected).

        Returns:
            ``(d_in, d_state0, grads)``: the gradient with respect to ``x`` (None when the first
            layer is an embedding), ``{layer_name: gradient w.r.t. its initial state}`` for every
            recurrent layer, and ``grads`` keyed exactly like :attr:`params`.
        """
        if not isinstance(cache, SequentialCache) or len(cache.caches) != len(self.layers):
            raise ValueError("cache must be the cache returned by this model's forward(..., keep_cache=True)")
        if cache.owner is not self or cache.names != tuple(self.layers):
            raise ValueError("cache comes from another Sequential model (or from before its layers changed), not "
                             "from this one: pass the cache of this model's own forward")
        d_states = self._check_state("d_state", d_state)
        names = list(self.layers)
        grads: Grads = {}
        d_state0: ModelState = {}
        d = d_out
        for i in reversed(range(len(names))):
            name, layer = names[i], self.layers[names[i]]
            if d is None and i < len(names) - 1:
                raise ValueError(f"layer {name!r} gets no gradient: layer {names[i + 1]!r} returned no "
                                 f"input gradient (an embedding can only be the first layer)")
            try:
                if name in self.recurrent:
                    d, d_state0[name], layer_grads = layer.backward(d, d_states.get(name), cache.caches[i])
                else:
                    d, layer_grads = layer.backward(d, cache.caches[i])
            except (ValueError, TypeError) as error:
                raise type(error)(f"layer {name!r}: {error}") from error
            grads.update({f"{name}.{key}": value for key, value in layer_grads.items()})
        for follower, leader in self.tied.items():  # one parameter used twice: the gradients add
            grads[leader] = grads[leader] + grads.pop(follower)
        # Same key order as params: optimizers and clipping walk both dicts together.
        return d, {name: d_state0[name] for name in self.recurrent}, {key: grads[key] for key in self.params}

    __call__ = forward

    def __repr__(self) -> str:
        rows = "".join(f"\n  ({name}): {layer!r}" for name, layer in self.layers.items())
        tied = "".join(f"\n  tied: {follower} = {leader}" for follower, leader in self.tied.items())
        return f"Sequential({rows}{tied}\n)"
