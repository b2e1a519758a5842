"""A lookup table from integer ids to vectors, as ``torch.nn.Embedding``.

The forward pass is a row gather ``weight[ids]``; its backward pass is the matching scatter-add:
each row of ``weight`` receives the sum of the output gradients at the positions where its id
occurs.  The scatter sorts the positions by id once and sums each id's run with one
``np.add.reduceat`` (several times faster than ``np.add.at`` for the repeated ids of a text).

Embedding dropout (``dropout=p``, Gal & Ghahramani 2016, as in AWD-LSTM) drops whole rows of
``weight`` -- whole words or characters, at every position they occur in the batch -- and scales
the kept rows by ``1/(1-p)``; it acts only in ``forward(ids, training=True, rng=generator)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from rnnkit._types import Array, Grads, IntArray, Params
from rnnkit.layers._checks import check_dtype, check_float_input, check_size, checked_state_dict
from rnnkit.layers._versions import WeightVersion, check_version, weight_version
from rnnkit.layers.dropout import check_probability, check_training, dropout_mask


class EmbeddingCache(NamedTuple):
    """What :meth:`Embedding.backward` needs from :meth:`Embedding.forward`."""

    ids: IntArray            # (...) the looked-up ids, e.g. (B, T)
    version: WeightVersion   # the layer object and its weights at forward time (checked by backward)
    row_mask: Array | None = None  # (num_embeddings, 1) embedding-dropout mask of a training pass, or None


class Embedding:
    """Map integer ids ``(...)`` (e.g. ``(B, T)``) to vectors ``(..., embedding_dim)``.

    Parameter (PyTorch's name): ``weight`` ``(num_embeddings, embedding_dim)``, initialised
    ``N(0, 1)`` like PyTorch's default.  ``dropout``: the probability of dropping a whole row
    during training (embedding dropout; see the module docstring).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        dtype: Any = np.float32,
        seed: int | None = None,
        *,
        dropout: float = 0.0,
    ) -> None:
        self.dropout = check_probability("dropout", dropout)
        self.num_embeddings = check_size("num_embeddings", num_embeddings)
        self.embedding_dim = check_size("embedding_dim", embedding_dim)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        shape = self._param_shapes()["weight"]
        self.params: Params = {"weight": rng.standard_normal(shape).astype(self.dtype)}

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def state_dict(self) -> Params:
        """A copy of the parameters (``weight``)."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace the parameters; every key must be present, known and of the right shape."""
        self.params = checked_state_dict(state_dict, self._param_shapes(), self.dtype)

    def _check_ids(self, ids: Any) -> IntArray:
        if not isinstance(ids, np.ndarray):
            raise ValueError(f"ids must be a NumPy integer array, got {type(ids).__name__}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must have an integer dtype (token ids), got {ids.dtype}")
        V = self.num_embeddings
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            bad = ids[(ids < 0) | (ids >= V)]
            raise ValueError(
                f"ids contain {bad[0]}, outside the valid range [0, {V}) (num_embeddings = {V}); "
                f"{bad.size} id(s) out of range"
            )
        return ids

    def forward(
        self, ids: IntArray, *, training: bool = False, rng: np.random.Generator | None = None,
    ) -> tuple[Array, EmbeddingCache]:
        """Look up ``ids``.

        Args:
            ids: integer array of any shape, e.g. ``(B, T)``, with values in ``[0, num_embeddings)``.
            training: True applies embedding dropout (if ``dropout > 0``) with a row mask drawn from
                ``rng``; False (the default) is deterministic.
            rng: the ``numpy.random.Generator`` of the mask (needed when training with dropout).

        Returns:
            ``(out, cache)``: ``out`` ``(*ids.shape, embedding_dim)`` (a new array) and the cache.
        """
        self._check_ids(ids)
        # Fancy indexing returns a new array; the cache keeps its own copy of the ids.
        out = self.params["weight"][ids]
        version = weight_version(self, self.params)
        if not check_training(training, rng, self.dropout > 0):
            return out, EmbeddingCache(ids.copy(), version)
        assert rng is not None
        row_mask = dropout_mask(rng, (self.num_embeddings, 1), self.dropout, self.dtype)
        out *= row_mask[ids]  # (W ⊙ m)[ids] without forming the masked matrix
        return out, EmbeddingCache(ids.copy(), version, row_mask)

    def backward(self, d_out: Array, cache: EmbeddingCache) -> tuple[None, Grads]:
        """Scatter-add ``d_out`` into the rows of ``weight`` that were looked up.

        ``cache`` must come from this layer's :meth:`forward`, with the weights unchanged since (checked
        as for every layer; see :mod:`rnnkit.layers._versions`).

        Returns:
            ``(None, grads)``: ids are integers, so there is no input gradient; ``grads["weight"]``
            has the shape of ``weight`` (zero rows for ids that did not occur).
        """
        if not isinstance(cache, EmbeddingCache):
            raise ValueError("cache must be the cache returned by Embedding.forward")
        # The scatter does not read the weights, but a cache of another layer or of weights that
        # changed since means the caller's training loop is out of step: say so rather than go on.
        check_version(cache.version, self, self.params, "Embedding")
        ids = cache.ids
        check_float_input("d_out", d_out, self.dtype)
        expected = (*ids.shape, self.embedding_dim)
        if d_out.shape != expected:
            raise ValueError(f"d_out has shape {d_out.shape}, expected {expected} (the shape of out)")
        flat_ids = ids.ravel()
        d_rows = d_out.reshape(-1, self.embedding_dim)
        if cache.row_mask is not None:  # out = (W ⊙ m)[ids]: each row's gradient is scaled by its mask
            d_rows = d_rows * cache.row_mask[flat_ids]
        d_weight = np.zeros((self.num_embeddings, self.embedding_dim), self.dtype)
        if flat_ids.size:
            # Sort positions by id so that each id's rows are one contiguous run, then sum the runs.
            order = np.argsort(flat_ids, kind="stable")
            sorted_ids = flat_ids[order]
            starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
            d_weight[sorted_ids[starts]] = np.add.reduceat(d_rows[order], starts, axis=0)
        return None, {"weight": d_weight}

    __call__ = forward

    def __repr__(self) -> str:
        dropout = f", dropout={self.dropout}" if self.dropout else ""
        return (f"Embedding(num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
                f"dtype={self.dtype.name}{dropout})")
