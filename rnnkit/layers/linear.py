"""A fully connected layer applied at every time step, as ``torch.nn.Linear``.

``Linear`` maps the last axis of any array ``(..., in_features)`` to ``(..., out_features)``, so the
same layer is the output head of a recurrent model (``(B, T, H) -> (B, T, V)``) and an ordinary
dense layer.  All steps of all sequences go through one matrix product over ``x.reshape(-1, in)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from rnnkit._blas import matmul
from rnnkit._types import Array, Grads, Params
from rnnkit.layers._checks import check_dtype, check_float_input, check_size, checked_state_dict
from rnnkit.layers._versions import WeightVersion, check_version, weight_version


class LinearCache(NamedTuple):
    """What :meth:`Linear.backward` needs from :meth:`Linear.forward`."""

    x: Array                 # (..., in_features) the input
    version: WeightVersion   # the layer object and its weights at forward time (checked by backward)


class Linear:
    """``y = x W^T + b`` over the last axis, at every time step (as ``torch.nn.Linear``).

    Parameters (PyTorch's names and layouts): ``weight`` ``(out_features, in_features)`` and
    ``bias`` ``(out_features,)``, both initialised ``U(-1/sqrt(in_features), 1/sqrt(in_features))``
    like PyTorch's default.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        dtype: Any = np.float32,
        seed: int | None = None,
    ) -> None:
        self.in_features = check_size("in_features", in_features)
        self.out_features = check_size("out_features", out_features)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.in_features)
        self.params: Params = {
            name: rng.uniform(-k, k, size=shape).astype(self.dtype)
            for name, shape in self._param_shapes().items()
        }

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def state_dict(self) -> Params:
        """A copy of the parameters (``weight``, ``bias``)."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace the parameters; every key must be present, known and of the right shape."""
        self.params = checked_state_dict(state_dict, self._param_shapes(), self.dtype)

    def forward(self, x: Array) -> tuple[Array, LinearCache]:
        """Apply the layer to the last axis of ``x``.

        Args:
            x: ``(..., in_features)``, e.g. ``(B, T, H)``; the layer's dtype.

        Returns:
            ``(out, cache)``: ``out`` ``(..., out_features)`` (a new array) and the cache for
            :meth:`backward`; neither shares memory with ``x``.
        """
        check_float_input("x", x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x has shape {x.shape}, expected (..., {self.in_features}) (in_features)")
        # The cache keeps its own copy: the caller may reuse x before backward.
        x = x.copy()
        # One GEMM over every position: (N, in) @ (in, out), shared by rnnkit's threads.
        out = matmul(x.reshape(-1, self.in_features), self.params["weight"].T)
        out += self.params["bias"]
        return out.reshape(*x.shape[:-1], self.out_features), LinearCache(x, weight_version(self, self.params))

    def backward(self, d_out: Array, cache: LinearCache) -> tuple[Array, Grads]:
        """Gradients of the loss given ``d_out = dL/d out``.

        ``cache`` must come from this layer's :meth:`forward`, with the weights unchanged since: a cache
        of another layer, replaced weights, an rnnkit optimizer step and in-place edits that touch the
        sampled elements raise ValueError (the guarantee is stated in :mod:`rnnkit.layers._versions`).

        Returns:
            ``(dx, grads)``: ``dx`` with the shape of ``x``, and ``grads`` with the keys of :attr:`params`.
        """
        if not isinstance(cache, LinearCache):
            raise ValueError("cache must be the cache returned by Linear.forward")
        check_version(cache.version, self, self.params, "Linear")
        x = cache.x
        check_float_input("d_out", d_out, self.dtype)
        expected = (*x.shape[:-1], self.out_features)
        if d_out.shape != expected:
            raise ValueError(f"d_out has shape {d_out.shape}, expected {expected} (the shape of out)")
        d2 = d_out.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        grads = {"weight": matmul(d2.T, x2), "bias": d2.sum(axis=0)}
        dx = matmul(d2, self.params["weight"]).reshape(x.shape)
        return dx, grads

    __call__ = forward

    def __repr__(self) -> str:
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={self.dtype.name})")
