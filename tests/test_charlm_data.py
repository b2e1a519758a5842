"""rnnkit.charlm.data: loading text, the vocabulary, splits, stream and line batches, the unigram baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnkit.charlm.data import (
    DataError,
    LineBatches,
    StreamBatches,
    Vocab,
    builtin_corpus,
    load_text,
    split_lines,
    split_stream,
    text_lines,
    unigram_bits_per_char,
)

# --------------------------------------------------------------------------------------------------
# load_text
# --------------------------------------------------------------------------------------------------


def test_builtin_corpus_is_pydoc_topics_in_sorted_key_order() -> None:
    from pydoc_data.topics import topics

    text = load_text(None)
    assert text == builtin_corpus()
    first, last = sorted(topics)[0], sorted(topics)[-1]
    assert text.startswith(topics[first]) and text.endswith(topics[last])
    assert len(text) == sum(len(v) for v in topics.values()) + len(topics) - 1  # newline separators
    assert len(text) > 300_000


def test_load_text_reads_utf8_and_normalises_line_endings(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffcafé\r\nnaïve\rend\n".encode())
    assert load_text(path) == "café\nnaïve\nend\n"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"abc\xff\xfedef"), "not UTF-8 text: byte 0xff at offset 3"),
    ],
    ids=["missing", "directory", "empty", "not-utf8"],
)
def test_load_text_errors_name_the_file_and_problem(tmp_path, setup, message) -> None:
    path = tmp_path / "data.txt"
    setup(path)
    with pytest.raises(DataError, match=message) as info:
        load_text(path, what="prime file")
    assert "prime file" in str(info.value) and "data.txt" in str(info.value)


# --------------------------------------------------------------------------------------------------
# Vocab
# --------------------------------------------------------------------------------------------------


def test_vocab_is_sorted_and_round_trips() -> None:
    vocab = Vocab.from_text("hello, world\n")
    assert vocab.chars == ("\n", " ", ",", "d", "e", "h", "l", "o", "r", "w")
    ids = vocab.encode("hello\n")
    assert ids.dtype == np.int64
    assert ids.tolist() == [5, 4, 6, 6, 7, 0]
    assert vocab.decode(ids) == "hello\n"
    assert Vocab.from_json(vocab.to_json()) == vocab
    assert vocab.encode("").shape == (0,)


def test_vocab_encode_lists_unknown_characters() -> None:
    vocab = Vocab.from_text("abc")
    with pytest.raises(ValueError, match=r"3 character\(s\) not in the model's vocabulary of 3: '\\t', 'é', '😀'"):
        vocab.encode("a\tbé😀é")
    assert vocab.unknown("a\tbé") == ["\t", "é"]


def test_vocab_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="single characters"):
        Vocab(["ab"])
    with pytest.raises(ValueError, match="at least one"):
        Vocab([])
    with pytest.raises(ValueError, match="distinct"):
        Vocab(["a", "a"])
    with pytest.raises(ValueError, match="sorted"):
        Vocab.from_json(["b", "a"])
    with pytest.raises(ValueError, match="0..1"):
        Vocab.from_text("ab").decode([2])
    with pytest.raises(ValueError, match="ids must lie in 0..1"):
        Vocab.from_text("ab").decode([-1])  # not the last character, silently


# --------------------------------------------------------------------------------------------------
# Splits and the unigram baseline
# --------------------------------------------------------------------------------------------------


def test_split_stream_holds_out_the_tail() -> None:
    ids = np.arange(100)
    train, val = split_stream(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    with pytest.raises(DataError, match="too few"):
        split_stream(np.arange(3), 0.1)


def test_split_lines_is_a_seeded_shuffle() -> None:
    items = [np.array([i]) for i in range(20)]
    train, val = split_lines(items, 0.25, seed=3)
    assert len(train) == 15 and len(val) == 5
    assert sorted(int(a[0]) for a in train + val) == list(range(20))
    again, _ = split_lines(items, 0.25, seed=3)
    assert [int(a[0]) for a in again] == [int(a[0]) for a in train]
    assert [int(a[0]) for a in train] != list(range(15))  # shuffled, not the sorted head


def test_unigram_bits_per_char_by_hand() -> None:
    train = np.array([0, 0, 0, 1])         # counts + 1: [4, 2, 1] / 7
    val = np.array([0, 1, 2])
    expected = -(math.log2(4 / 7) + math.log2(2 / 7) + math.log2(1 / 7)) / 3
    assert unigram_bits_per_char(train, val, 3) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------


def test_stream_batches_rows_continue_across_chunks() -> None:
    ids = np.arange(1000)
    batches = StreamBatches(ids, batch_size=4, seq_len=10)
    row_len = 999 // 4
    assert len(batches) == math.ceil(row_len / 10)
    first, second = batches.get(0), batches.get(1)
    assert first.x.shape == (4, 10) and first.lengths is None and first.mask is None
    assert first.num_targets == 40
    # Row b is the contiguous slice starting at b * row_len; targets are the next ids; chunk 1 continues chunk 0.
    for b in range(4):
        assert first.x[b].tolist() == list(range(b * row_len, b * row_len + 10))
        assert (first.y[b] == first.x[b] + 1).all()
        assert second.x[b, 0] == first.x[b, -1] + 1
    assert batches.new_order(np.random.default_rng(0)) is None


def test_stream_batches_too_short_for_one_batch() -> None:
    with pytest.raises(DataError, match=r"too short for one batch: 40 characters, but batch_size 4 x seq_len 10"):
        StreamBatches(np.arange(40), batch_size=4, seq_len=10)
    StreamBatches(np.arange(41), batch_size=4, seq_len=10)


def test_stream_batches_for_evaluation_shrink_to_fit() -> None:
    small = StreamBatches.for_evaluation(np.arange(30), batch_size=8, seq_len=10)
    assert small.get(0).x.shape == (2, 10)
    tiny = StreamBatches.for_evaluation(np.arange(5), batch_size=8, seq_len=10)
    assert tiny.get(0).x.shape == (1, 4)
    assert sum(tiny.get(i).num_targets for i in range(len(tiny))) == 4


def test_line_batches_pad_and_terminate_items() -> None:
    vocab = Vocab.from_text("abc\n")
    items = [vocab.encode(s) for s in ["ab", "c", "abca"]]
    nl = vocab.chars.index("\n")
    batches = LineBatches(items, nl, batch_size=2, drop_last=False)
    assert len(batches) == 2
    batch = batches.get(0)
    assert batch.lengths.tolist() == [3, 2]
    assert vocab.decode(batch.x[0]) == "\nab" and vocab.decode(batch.y[0]) == "ab\n"
    assert vocab.decode(batch.x[1, :2]) == "\nc" and vocab.decode(batch.y[1, :2]) == "c\n"
    assert batch.mask.tolist() == [[True, True, True], [True, True, False]]
    assert batch.num_targets == 5
    last = batches.get(1)
    assert vocab.decode(last.y[0]) == "abca\n" and last.x.shape == (1, 5)
    # An epoch order picks the items; drop_last leaves out the incomplete batch.
    order = np.array([2, 0, 1])
    assert vocab.decode(batches.get(0, order).y[0]) == "abca\n"
    assert len(LineBatches(items, nl, batch_size=2, drop_last=True)) == 1
    with pytest.raises(DataError, match="3 training lines, but batch_size is 4"):
        LineBatches(items, nl, batch_size=4, drop_last=True)


def test_text_lines_skips_blank_lines() -> None:
    assert text_lines("ann\n\nbob\ncy\n") == ["ann", "bob", "cy"]
