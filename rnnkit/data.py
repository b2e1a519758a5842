"""Getting data into batches: padding, a shuffling (and bucketing) batcher, and token streams.

Three pieces, each usable on its own and each what :func:`rnnkit.fit` accepts:

* :func:`pad_sequences` turns a list of variable-length sequences into one padded array ``(B, T, ...)``
  and their ``lengths`` ``(B,)``: the form every rnnkit layer takes (``layer.forward(x, lengths=...)``).
  Padding always goes *after* the valid steps, because ``lengths`` means "the first ``lengths[b]``
  steps are real".
* :class:`SequenceBatches` cuts ``(X, y, lengths)`` into mini-batches, shuffled with a seed (a new
  order each epoch, the same orders every run) and optionally *bucketed*: sequences of similar
  length go into the same batch, and each batch is trimmed to its own longest sequence, so short
  sequences do not pay for the padding of long ones.
* :func:`stream_batches` / :class:`StreamBatches` cut one long token stream into ``B`` parallel rows
  and chunks of ``T`` steps for truncated BPTT (row ``b`` of chunk ``k + 1`` continues row ``b`` of
  chunk ``k``, so the hidden state can be carried from batch to batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from rnnkit._types import IntArray

__all__ = ["Batch", "SequenceBatches", "StreamBatches", "pad_sequences", "stream_batches"]


class Batch(NamedTuple):
    """One mini-batch: inputs ``x`` ``(B, T, ...)``, targets ``y`` and ``lengths`` ``(B,)`` (or None)."""

    x: npt.NDArray[Any]
    y: Any
    lengths: IntArray | None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def pad_sequences(
    sequences: Sequence[npt.ArrayLike],
    *,
    maxlen: int | None = None,
    dtype: npt.DTypeLike | None = None,
    value: float = 0,
    truncating: Literal["pre", "post"] = "post",
) -> tuple[npt.NDArray[Any], IntArray]:
    """Stack variable-length sequences into one array padded at the end, and their lengths.

    Args:
        sequences: ``B`` sequences, each an array ``(T_b,)`` (token ids) or ``(T_b, F...)`` (feature
            vectors), time along the first axis, ``T_b >= 1``; all must share the trailing shape.
        maxlen: pad (and cut) every sequence to this many steps; None: the longest sequence's length.
        dtype: the result's dtype; None: NumPy's common dtype of the sequences.
        value: the padding value (layers never read it: outputs past ``lengths`` are zero).
        truncating: a sequence longer than ``maxlen`` keeps its first (``"post"``: cut the end) or
            its last (``"pre"``) ``maxlen`` steps.

    Returns:
        ``(X, lengths)``: ``X`` ``(B, T, F...)`` with sequence ``b`` in ``X[b, :lengths[b]]`` and
        ``value`` after it, and ``lengths`` ``(B,)`` int64 (after truncation).

    Raises:
        ValueError: no sequences, an empty or 0-d sequence, mismatched trailing shapes, NaN or
            infinite values, a bad ``maxlen`` or ``truncating``.
    """
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        sequences = list(sequences)
    if not isinstance(sequences, Sequence) or isinstance(sequences, (str, bytes)) or len(sequences) == 0:
        raise ValueError("sequences must be a non-empty list of arrays (one per sequence)")
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}")
    if maxlen is not None:
        maxlen = _positive_int("maxlen", maxlen)
    arrays: list[npt.NDArray[Any]] = []
    for b, seq in enumerate(sequences):
        a = np.asarray(seq)
        if a.ndim == 0 or len(a) == 0:
            raise ValueError(f"sequences[{b}] is empty (shape {a.shape}); every sequence needs at least one step")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"sequences[{b}] has dtype {a.dtype}, not a numeric array")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ValueError(f"sequences[{b}] contains NaN or infinite values")
        if arrays and a.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"sequences[{b}] has shape {a.shape}, but sequences[0] has {arrays[0].shape}: "
                             f"all must share the shape after the time axis")
        arrays.append(a)
    T = maxlen if maxlen is not None else max(len(a) for a in arrays)
    out_dtype = np.dtype(dtype) if dtype is not None else np.result_type(*arrays)
    X = np.full((len(arrays), T, *arrays[0].shape[1:]), value, dtype=out_dtype)
    lengths = np.empty(len(arrays), np.int64)
    for b, a in enumerate(arrays):
        kept = a[:T] if truncating == "post" else a[-T:]
        X[b, : len(kept)] = kept
        lengths[b] = len(kept)
    return X, lengths


class SequenceBatches:
    """Mini-batches over whole sequences ``(X, y, lengths)``; iterate it once per epoch.

    Args:
        X: ``(N, T, ...)`` inputs (e.g. from :func:`pad_sequences`), or ``(N, T)`` token ids.
        y: ``(N, ...)`` targets, one per sequence (class ids, values) or one per step
            (``(N, T, ...)``); None when there are none (prediction).
        lengths: ``(N,)`` valid steps per sequence, in ``1..T``, or None (all ``T``).
        batch_size: sequences per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: a new random order every epoch; False keeps the order of ``X``.
        seed: the orders are a function of ``(seed, epoch)``: the same seed gives the same batches
            in every run, and epoch ``e`` can be reproduced without replaying the ones before.
        bucket: put sequences of similar length into the same batch (needs ``lengths``): the
            sequences are sorted by length (ties broken at random), cut into batches, and the
            batches are shuffled.
        trim: cut each batch to its longest sequence (needs ``lengths``).  Per-step targets —
            ``y`` whose first two axes are ``X``'s ``(N, T)`` — are cut with it.
        drop_last: skip a final batch smaller than ``batch_size``.

    Iterating yields :class:`Batch` ``(x, y, lengths)`` tuples of fresh arrays; ``len()`` is the
    number of batches per epoch.  :attr:`epoch` counts completed iterations; set it to resume.
    """

    def __init__(
        self,
        X: npt.NDArray[Any],
        y: npt.NDArray[Any] | None = None,
        lengths: npt.ArrayLike | None = None,
        *,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = False,
        trim: bool = True,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(X, np.ndarray) or X.ndim < 2:
            got = X.shape if isinstance(X, np.ndarray) else type(X).__name__
            raise ValueError(f"X must be an array (N, T, ...) of N sequences, got {got}")
        N, T = X.shape[:2]
        if N == 0 or T == 0:
            raise ValueError(f"X must hold at least one sequence of at least one step, got shape {X.shape}")
        if y is not None and (not isinstance(y, np.ndarray) or y.ndim == 0 or len(y) != N):
            got = y.shape if isinstance(y, np.ndarray) else type(y).__name__
            raise ValueError(f"y must be an array with one entry per sequence ({N}), got {got}")
        self.lengths: IntArray | None = None
        if lengths is not None:
            lens = np.asarray(lengths)
            if not np.issubdtype(lens.dtype, np.integer) or lens.shape != (N,):
                raise ValueError(f"lengths must be an integer array of shape ({N},), got {lens.dtype} {lens.shape}")
            if lens.min() < 1 or lens.max() > T:
                raise ValueError(f"lengths must lie in 1..{T} (T = X.shape[1]), got {lens.min()}..{lens.max()}")
            self.lengths = lens.astype(np.int64)
        if bucket and self.lengths is None:
            raise ValueError("bucket=True needs lengths (it groups sequences of similar length)")
        for name, flag in (("shuffle", shuffle), ("bucket", bucket), ("trim", trim), ("drop_last", drop_last)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.X, self.y = X, y
        self.batch_size = _positive_int("batch_size", batch_size)
        self.shuffle, self.bucket, self.trim, self.drop_last = bool(shuffle), bool(bucket), bool(trim), bool(drop_last)
        self.seed = int(seed)
        self.epoch = 0
        self._y_per_step = y is not None and y.ndim >= 2 and y.shape[:2] == X.shape[:2]

    def __len__(self) -> int:
        n = len(self.X)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch_indices(self, epoch: int) -> list[IntArray]:
        """The sequence indices of every batch of ``epoch``, in the order they are yielded."""
        n, size = len(self.X), self.batch_size
        rng = np.random.default_rng([self.seed, epoch])
        if self.bucket:
            assert self.lengths is not None
            # Random tie-breaking first, then a stable sort by length: equal lengths mix across epochs.
            tie = rng.permutation(n) if self.shuffle else np.arange(n)
            order = tie[np.argsort(self.lengths[tie], kind="stable")]
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches: list[IntArray] = [order[i : i + size] for i in range(0, n, size)]
        if self.drop_last and batches and len(batches[-1]) < size:
            batches.pop()
        if self.bucket and self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        for idx in self.batch_indices(epoch):
            x = self.X[idx]
            y = None if self.y is None else self.y[idx]
            lengths = None if self.lengths is None else self.lengths[idx]
            if self.trim and lengths is not None:
                t = int(lengths.max())
                x = x[:, :t]
                if self._y_per_step and y is not None:
                    y = y[:, :t]
            yield Batch(np.ascontiguousarray(x), None if y is None else np.ascontiguousarray(y), lengths)
        self.epoch = epoch + 1


def stream_batches(
    tokens: npt.NDArray[Any],
    batch_size: int,
    seq_len: int,
    targets: npt.NDArray[Any] | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    """Cut a long stream into ``batch_size`` contiguous rows and yield their chunks of ``seq_len`` steps.

    Args:
        tokens: ``(N, ...)`` the stream (token ids, or feature vectors), time along the first axis.
        batch_size: number of parallel rows ``B``; the stream is truncated to a multiple of it.
        seq_len: chunk length ``T``.
        targets: ``(N, ...)`` the target at each position of ``tokens``.  None: next-token
            prediction, the inputs are ``tokens[:-1]`` and the targets ``tokens[1:]``.
        drop_last: skip the final chunk when it is shorter than ``seq_len``.

    Yields:
        ``(x, y)`` pairs of shape ``(B, T, ...)`` (the last pair may be shorter in time), in stream
        order: row ``b`` of each pair continues row ``b`` of the previous pair.
    """
    _positive_int("batch_size", batch_size)
    _positive_int("seq_len", seq_len)
    if not isinstance(tokens, np.ndarray) or tokens.ndim == 0:
        raise ValueError("tokens must be a NumPy array with time along its first axis")
    if targets is None:
        inputs, targets = tokens[:-1], tokens[1:]
    else:
        if not isinstance(targets, np.ndarray) or targets.shape[:1] != tokens.shape[:1]:
            got = targets.shape if isinstance(targets, np.ndarray) else type(targets).__name__
            raise ValueError(f"targets must be an array with one entry per token ({len(tokens)}), got {got}")
        inputs = tokens
    row_len = len(inputs) // batch_size
    if row_len == 0:
        raise ValueError(f"the stream has {len(inputs)} positions, fewer than batch_size = {batch_size}")
    x_rows = inputs[: batch_size * row_len].reshape(batch_size, row_len, *inputs.shape[1:])
    y_rows = targets[: batch_size * row_len].reshape(batch_size, row_len, *targets.shape[1:])
    for start in range(0, row_len, seq_len):
        stop = min(start + seq_len, row_len)
        if drop_last and stop - start < seq_len:
            return
        yield np.ascontiguousarray(x_rows[:, start:stop]), np.ascontiguousarray(y_rows[:, start:stop])


class StreamBatches:
    """:func:`stream_batches` as a re-iterable: each iteration is one pass (epoch) over the stream.

    Train on it with ``rnnkit.fit(..., stateful=True)`` so the hidden state is carried from chunk to
    chunk within an epoch (truncated BPTT) and reset at the start of each epoch.
    """

    def __init__(
        self,
        tokens: npt.NDArray[Any],
        batch_size: int,
        seq_len: int,
        targets: npt.NDArray[Any] | None = None,
        drop_last: bool = False,
    ) -> None:
        # Validate now (the generator would only complain on first use).
        next(stream_batches(tokens, batch_size, seq_len, targets, drop_last), None)
        self.tokens, self.targets = tokens, targets
        self.batch_size, self.seq_len, self.drop_last = int(batch_size), int(seq_len), drop_last

    def __len__(self) -> int:
        n = len(self.tokens) - (1 if self.targets is None else 0)
        row_len = n // self.batch_size
        return row_len // self.seq_len if self.drop_last else -(-row_len // self.seq_len)

    def __iter__(self) -> Iterator[Batch]:
        for x, y in stream_batches(self.tokens, self.batch_size, self.seq_len, self.targets, self.drop_last):
            yield Batch(x, y, None)
