"""rnnkit.data: pad_sequences, SequenceBatches (shuffle, seed, bucketing, trimming) and the stream batcher."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import Batch, SequenceBatches, StreamBatches, pad_sequences, stream_batches


def test_pad_sequences_values_and_lengths() -> None:
    X, lengths = pad_sequences([np.array([1, 2, 3]), np.array([4]), np.array([5, 6])])
    np.testing.assert_array_equal(X, [[1, 2, 3], [4, 0, 0], [5, 6, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 2])
    assert lengths.dtype == np.int64


def test_pad_sequences_features_dtype_value_and_truncation() -> None:
    a = np.arange(6.0).reshape(3, 2)
    b = np.array([[9.0, 8.0]])
    X, lengths = pad_sequences([a, b], dtype=np.float32, value=-1.0)
    assert X.dtype == np.float32 and X.shape == (2, 3, 2)
    np.testing.assert_array_equal(X[1], [[9, 8], [-1, -1], [-1, -1]])
    X, lengths = pad_sequences([a, b], maxlen=2)
    np.testing.assert_array_equal(X[0], a[:2])
    np.testing.assert_array_equal(lengths, [2, 1])
    X, _ = pad_sequences([a, b], maxlen=2, truncating="pre")
    np.testing.assert_array_equal(X[0], a[1:])


@pytest.mark.parametrize(
    ("sequences", "kwargs", "message"),
    [
        ([], {}, "non-empty list"),
        ([np.array([])], {}, r"sequences\[0\] is empty"),
        ([np.ones((2, 3)), np.ones((2, 4))], {}, r"sequences\[1\] has shape \(2, 4\)"),
        ([np.array([1.0, np.nan])], {}, "NaN"),
        ([np.array(["a", "b"])], {}, "not a numeric array"),
        ([np.ones(2)], {"maxlen": 0}, "maxlen must be a positive integer"),
        ([np.ones(2)], {"truncating": "middle"}, "truncating must be"),
    ],
)
def test_pad_sequences_refuses_bad_input(sequences: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pad_sequences(sequences, **kwargs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=20), st.integers(0, 2**31 - 1))
def test_pad_sequences_round_trips(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    seqs = [rng.standard_normal((n, 3)) for n in sizes]
    X, lengths = pad_sequences(seqs)
    assert X.shape == (len(sizes), max(sizes), 3)
    for b, seq in enumerate(seqs):
        np.testing.assert_array_equal(X[b, : lengths[b]], seq)
        assert not X[b, lengths[b]:].any()


def _data(N: int = 10, T: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.arange(N * T, dtype=np.float64).reshape(N, T, 1)
    y = np.arange(N)
    lengths = np.array([(i % T) + 1 for i in range(N)])
    return X, y, lengths


def test_batches_cover_every_sequence_once_per_epoch_and_reshuffle() -> None:
    X, y, lengths = _data()
    batches = SequenceBatches(X, y, lengths, batch_size=3, seed=7)
    assert len(batches) == 4
    epoch0 = list(batches)
    epoch1 = list(batches)
    for epoch in (epoch0, epoch1):
        assert all(isinstance(b, Batch) for b in epoch)
        assert sorted(np.concatenate([b.y for b in epoch]).tolist()) == list(range(10))
        for b in epoch:  # x, y and lengths stay aligned, and each batch is cut to its longest sequence
            np.testing.assert_array_equal(b.x[:, 0, 0], X[b.y, 0, 0])
            np.testing.assert_array_equal(b.lengths, lengths[b.y])
            assert b.x.shape[1] == b.lengths.max()
    order0 = np.concatenate([b.y for b in epoch0])
    assert not np.array_equal(order0, np.concatenate([b.y for b in epoch1]))
    # The same seed gives the same orders; epoch e depends only on (seed, e).
    again = SequenceBatches(X, y, lengths, batch_size=3, seed=7)
    np.testing.assert_array_equal(np.concatenate([b.y for b in again]), order0)
    again.epoch = 1
    np.testing.assert_array_equal(np.concatenate([b.y for b in again]), np.concatenate([b.y for b in epoch1]))


def test_batches_without_shuffle_keep_order_and_drop_last() -> None:
    X, y, _ = _data()
    batches = SequenceBatches(X, y, batch_size=4, shuffle=False, drop_last=True)
    assert len(batches) == 2
    assert [b.y.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(b.lengths is None and b.x.shape == (4, 6, 1) for b in batches)


def test_bucketing_groups_similar_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 41, 200)
    X = np.zeros((200, 40, 1))
    bucketed = SequenceBatches(X, None, lengths, batch_size=20, bucket=True, seed=1)
    plain = SequenceBatches(X, None, lengths, batch_size=20, seed=1)

    def padding(batches: SequenceBatches) -> int:
        return sum(int(b.x.shape[0] * b.x.shape[1] - b.lengths.sum()) for b in batches)

    # Sorted by length, each batch spans about 1/10 of the range: far less padding than random batches.
    assert padding(bucketed) < padding(plain) / 4
    spans = [int(b.lengths.max() - b.lengths.min()) for b in bucketed]
    assert max(spans) <= 8
    assert sorted(np.concatenate([b.lengths for b in bucketed]).tolist()) == sorted(lengths.tolist())


def test_per_step_targets_are_trimmed_with_x() -> None:
    X, _, lengths = _data()
    y = np.arange(60).reshape(10, 6)
    for b in SequenceBatches(X, y, lengths, batch_size=5, seed=0):
        assert b.y.shape == b.x.shape[:2]
        np.testing.assert_array_equal(b.x[..., 0], b.y + 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"X": np.zeros(3)}, r"X must be an array \(N, T, \.\.\.\)"),
        ({"y": np.zeros(4)}, "one entry per sequence"),
        ({"lengths": np.array([1, 2])}, "lengths must be an integer array of shape"),
        ({"lengths": np.full(3, 7)}, r"lengths must lie in 1\.\.6"),
        ({"lengths": None, "bucket": True}, "bucket=True needs lengths"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"shuffle": "yes"}, "shuffle must be True or False"),
    ],
)
def test_batches_refuse_bad_input(kwargs: dict, message: str) -> None:
    args = {"X": np.zeros((3, 6, 1)), "y": np.zeros(3), "lengths": np.array([1, 2, 3]), **kwargs}
    X, y, lengths = args.pop("X"), args.pop("y"), args.pop("lengths")
    with pytest.raises(ValueError, match=message):
        SequenceBatches(X, y, lengths, **args)


def test_stream_batches_old_import_still_works() -> None:
    from rnnkit import stream_batches as top
    from rnnkit.tbptt import stream_batches as old

    assert old is stream_batches and top is stream_batches


def test_stream_batches_reiterable_matches_the_generator() -> None:
    tokens = np.arange(50)
    stream = StreamBatches(tokens, batch_size=3, seq_len=4)
    expected = list(stream_batches(tokens, 3, 4))
    for _ in range(2):  # one pass per epoch, the same each time
        got = list(stream)
        assert len(got) == len(expected) == len(stream)
        for (x, y, lengths), (ex, ey) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(x, ex)
            np.testing.assert_array_equal(y, ey)
            assert lengths is None
    with pytest.raises(ValueError, match="fewer than batch_size"):
        StreamBatches(np.arange(3), batch_size=5, seq_len=2)
