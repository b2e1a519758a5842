"""Text for the character-level language model: loading, the vocabulary, splits and batches.

* :func:`load_text` reads a UTF-8 file (or, with no path, the built-in corpus: the documentation
  text of ``pydoc_data.topics`` that ships with Python, so nothing is ever downloaded) and turns
  every defect a user can hit into a :class:`DataError` that says what is wrong with which file.
* :class:`Vocab` maps characters to ids ``0 .. V-1`` in sorted order; encoding text with
  characters it lacks is an error that lists them.
* Two ways to cut text into training batches, one per mode:

  - **stream** (:class:`StreamBatches`): the text is one long sequence, cut into ``B`` contiguous
    rows and chunks of ``seq_len`` steps (:func:`rnnkit.tbptt.stream_batches`); row ``b`` of chunk
    ``k + 1`` continues row ``b`` of chunk ``k``, so the hidden state is carried from batch to batch
    (truncated BPTT).  The order is the same every epoch, so the position in the data is just
    ``(epoch, index)``.
  - **lines** (:class:`LineBatches`): every non-empty line is its own sequence (a name, a word),
    started from the zero state.  The input is ``"\\n" + line`` and the target ``line + "\\n"``: the
    newline ending the previous item is the start symbol and the newline ending this one is the
    terminator the model learns to emit.  Each batch is padded to its longest item and carries
    ``lengths``, and the loss mask excludes the padding.  The items are shuffled every epoch by a
    permutation drawn from the training generator; the permutation is part of the data position.

Both batchers offer ``len()``, ``new_order(rng)`` (the order of one epoch) and ``get(index, order)``,
so the training loop and the evaluation treat them alike; ``carries_state`` tells whether the
hidden state flows from one batch into the next.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rnnkit import IntArray
from rnnkit.io import UnreadableFile, read_regular_file
from rnnkit.tbptt import stream_batches

BUILTIN_CORPUS = "pydoc_data.topics"
"""What ``load_text(None)`` reads: the documentation topics bundled with every Python installation."""

_MAX_LISTED = 20  # unknown characters named in an error message before "and N more"


class DataError(ValueError):
    """Training text that cannot be used: missing, unreadable, empty, not UTF-8, or too short."""


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def builtin_corpus() -> str:
    """The built-in corpus: the values of ``pydoc_data.topics.topics`` joined by newlines, in sorted key order.

    About 460k characters of English prose and Python code (the exact text depends on the Python
    version); sorting the keys makes it the same text on every run of the same Python.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as error:
        # Some Linux distributions package parts of the standard library separately.
        raise DataError(f"the built-in corpus needs the standard-library module {BUILTIN_CORPUS}, which this "
                        f"Python lacks ({error}); pass --data with a text file instead") from None
    return "\n".join(topics[key] for key in sorted(topics))


def load_text(path: str | os.PathLike[str] | None, what: str = "data file") -> str:
    """Read a UTF-8 text file, or the built-in corpus when ``path`` is None.

    A leading byte-order mark is dropped and line endings are normalised to ``"\\n"``, as Python's
    text mode does, so the same list written on Windows and on Linux gives the same vocabulary.
    ``what`` names the file in error messages (``"data file"``, ``"prime file"``).

    Only a regular file is read (a device such as ``/dev/zero``, or a FIFO, is refused unread: it
    could be endless), and one larger than the memory available is refused before it is read.

    Raises:
        DataError: the file does not exist, is a directory or not a regular file, cannot be read,
            is too large, is empty, or is not UTF-8 (the message gives the offset of the first
            invalid byte).
    """
    if path is None:
        return builtin_corpus()
    file = Path(path)
    name = f"{what} {str(file)!r}"
    try:
        raw = read_regular_file(file, what)
    except UnreadableFile as error:
        raise DataError(str(error)) from None
    if not raw:
        raise DataError(f"{name} is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{name} is not UTF-8 text: byte 0x{raw[error.start]:02x} at offset {error.start} "
                        f"is invalid ({error.reason})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_lines(text: str) -> list[str]:
    """The items of a list, one per line: every non-empty line, without its newline."""
    return [line for line in text.split("\n") if line]


# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------


def describe_chars(chars: Iterable[str]) -> str:
    """A readable list of characters for error messages: ``'é', '\\t', '😀'`` (at most 20, then a count)."""
    chars = sorted(set(chars))
    shown = ", ".join(repr(c) for c in chars[:_MAX_LISTED])
    more = len(chars) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


UNKNOWN_POLICIES = ("error", "skip", "replace")
"""What to do with characters a model's vocabulary lacks (``--unknown``)."""


def handle_unknown(text: str, vocab: Vocab, policy: str, what: str, owner: str = "the model's vocabulary") -> str:
    """``text`` made encodable by ``vocab`` as ``policy`` says.

    ``"error"``: raise, listing the missing characters; ``"skip"``: drop them; ``"replace"``: put the
    space (or, in a vocabulary without one, ``"\\n"``) in their place.

    Raises:
        DataError: the policy is ``"error"`` and there are unknown characters, the policy is not one
            of :data:`UNKNOWN_POLICIES`, or ``"replace"`` finds neither replacement in the vocabulary.
    """
    if policy not in UNKNOWN_POLICIES:
        raise DataError(f"unknown must be one of {', '.join(UNKNOWN_POLICIES)}, got {policy!r}")
    unknown = vocab.unknown(text)
    if not unknown:
        return text
    if policy == "error":
        raise DataError(f"{what} has {len(unknown)} character(s) that {owner} lacks: "
                        f"{describe_chars(unknown)} (--unknown skip or replace handles them)")
    if policy == "skip":
        return text.translate({ord(c): None for c in unknown})
    replacement = next((c for c in (" ", "\n") if c in vocab), None)
    if replacement is None:
        raise DataError(f"{what}: --unknown replace needs ' ' or '\\n' in the model's vocabulary, which has neither")
    return text.translate({ord(c): replacement for c in unknown})


class Vocab:
    """The characters a model knows, in sorted (code point) order: character ``chars[i]`` has id ``i``.

    Args:
        chars: the distinct single characters of the vocabulary, in any order (they are sorted);
            at least one.
    """

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"a vocabulary holds single characters, got {c!r}")
        if not chars:
            raise ValueError("a vocabulary needs at least one character")
        if len(set(chars)) != len(chars):
            raise ValueError(f"vocabulary characters must be distinct, got {describe_chars(chars)} with repeats")
        self.chars: tuple[str, ...] = tuple(sorted(chars))
        # Code points in id order: encoding is one binary search per character (np.searchsorted).
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """The vocabulary of every distinct character in ``text`` (which must not be empty)."""
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(set(text))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self.chars

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.chars == self.chars

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value type: compare, don't hash

    def __repr__(self) -> str:
        return f"Vocab({len(self)} characters: {describe_chars(self.chars)})"

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))

    def encode(self, text: str) -> IntArray:
        """``text`` as ids ``(len(text),)`` int64.

        Raises:
            ValueError: ``text`` has characters outside the vocabulary; the message lists them.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
        ids = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(ids, len(self) - 1)] == codes
        if not known.all():
            unknown = self.unknown(text)
            raise ValueError(f"{len(unknown)} character(s) not in the model's vocabulary of {len(self)}: "
                             f"{describe_chars(unknown)}")
        return ids.astype(np.int64)

    def decode(self, ids: Iterable[int] | IntArray) -> str:
        """The text of a sequence of ids (each in ``0 .. V-1``)."""
        ids = np.asarray(ids).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            # Checked up front: a negative id would otherwise index from the end and decode silently.
            raise ValueError(f"ids must lie in 0..{len(self) - 1} (the vocabulary size is {len(self)})")
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def to_json(self) -> list[str]:
        """The characters as a JSON-friendly list (the form stored in checkpoints)."""
        return list(self.chars)

    @classmethod
    def from_json(cls, chars: Any) -> Vocab:
        """Inverse of :meth:`to_json`; the list must be sorted and distinct, as :meth:`to_json` writes it."""
        if not isinstance(chars, list):
            raise ValueError(f"a stored vocabulary is a list of characters, got {type(chars).__name__}")
        vocab = cls(chars)
        if list(vocab.chars) != chars:
            raise ValueError("a stored vocabulary must list its characters in sorted order")
        return vocab


# --------------------------------------------------------------------------------------------------
# Splits and the unigram baseline
# --------------------------------------------------------------------------------------------------


def split_stream(ids: IntArray, val_fraction: float) -> tuple[IntArray, IntArray]:
    """``(train, val)``: the last ``val_fraction`` of the stream (at least 2 ids) is the validation part.

    A contiguous tail, not random positions, so validation text is text the model never trained
    on, read with the same carried state as in training.
    """
    n_val = max(2, round(len(ids) * val_fraction))
    if len(ids) - n_val < 2:
        raise DataError(f"the text has {len(ids)} characters, too few to split off a validation part "
                        f"({val_fraction:.0%}) and still train")
    return ids[:-n_val], ids[-n_val:]


def split_lines(items: Sequence[IntArray], val_fraction: float, seed: int) -> tuple[list[IntArray], list[IntArray]]:
    """``(train, val)`` items: a seeded shuffle, then the last ``val_fraction`` (at least one item) is validation.

    Lists are often sorted (names A to Z); shuffling first keeps the validation items representative.
    """
    if len(items) < 2:
        raise DataError(f"lines mode needs at least 2 non-empty lines (one to train on, one to validate), "
                        f"got {len(items)}")
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(len(items) - 1, max(1, round(len(items) * val_fraction)))
    shuffled = [items[i] for i in order]
    return shuffled[:-n_val], shuffled[-n_val:]


def unigram_bits_per_char(train_ids: IntArray, val_ids: IntArray, vocab_size: int) -> float:
    """Bits per character on ``val_ids`` of the unigram model of ``train_ids`` (the baseline to beat).

    The unigram model predicts every character with its frequency in the training text, ignoring
    context: ``-mean(log2 p_train(c))`` over the validation characters.  Add-one (Laplace) smoothing
    keeps a character that occurs only in validation from costing infinitely many bits.
    """
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    log2_p = np.log2(counts / counts.sum())
    return float(-np.mean(log2_p[val_ids]))


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """One training or evaluation batch."""

    x: IntArray                          # (B, T) input ids
    y: IntArray                          # (B, T) target ids: the next character at each position
    lengths: IntArray | None             # (B,) valid steps per row (lines mode); None: all T are valid
    mask: npt.NDArray[np.bool_] | None   # (B, T) True where the loss counts; None: everywhere

    @property
    def num_targets(self) -> int:
        """The number of predicted characters the loss counts."""
        return int(self.y.size if self.mask is None else np.count_nonzero(self.mask))


class StreamBatches:
    """Truncated-BPTT batches over one long stream of ids (see the module docstring).

    Args:
        ids: ``(N,)`` the stream.
        batch_size: ``B`` contiguous rows.
        seq_len: ``T`` steps per chunk; the last chunk of an epoch may be shorter.

    Raises:
        DataError: the stream is shorter than one batch (``B * T + 1`` ids: each row needs ``T``
            inputs and the target after the last one).
    """

    carries_state = True

    def __init__(self, ids: IntArray, batch_size: int, seq_len: int) -> None:
        needed = batch_size * seq_len + 1
        if len(ids) < needed:
            raise DataError(f"the text is too short for one batch: {len(ids)} characters, but batch_size "
                            f"{batch_size} x seq_len {seq_len} needs at least {needed}; use a longer text or "
                            f"a smaller --batch-size / --seq-len")
        # Materialised once: an epoch is a few MB of ids, and indexing a list makes the data position
        # (epoch, index) directly addressable, which is what an exact resume needs.
        self._batches = [Batch(x, y, None, None) for x, y in stream_batches(ids, batch_size, seq_len)]

    @classmethod
    def for_evaluation(cls, ids: IntArray, batch_size: int, seq_len: int) -> StreamBatches:
        """Batches covering a (possibly short) validation stream: fewer rows, or shorter chunks, when it
        is shorter than one training batch.  ``ids`` needs at least 2 entries."""
        if len(ids) < 2:
            raise DataError(f"a validation stream needs at least 2 characters, got {len(ids)}")
        rows = max(1, min(batch_size, (len(ids) - 1) // seq_len))
        return cls(ids, rows, min(seq_len, (len(ids) - 1) // rows))

    def __len__(self) -> int:
        return len(self._batches)

    def new_order(self, rng: np.random.Generator) -> None:
        """The stream is read in the same order every epoch (the carried state needs it): nothing to draw."""
        return None

    def get(self, index: int, order: IntArray | None = None) -> Batch:
        """Batch ``index`` (``0 <= index < len(self)``) of an epoch; ``order`` is ignored (always None here)."""
        return self._batches[index]


class LineBatches:
    """Padded batches of separate items (lines mode, see the module docstring).

    Args:
        items: the items as id arrays, without newlines (each non-empty).
        newline_id: the id of ``"\\n"``, the start symbol and terminator.
        batch_size: ``B`` items per batch.
        drop_last: leave out the last batch when it has fewer than ``B`` items (training: every
            step sees ``B`` items, and the shuffle puts the left-out items into other epochs).

    Raises:
        DataError: there are fewer than ``B`` items while ``drop_last`` is set.
    """

    carries_state = False

    def __init__(self, items: Sequence[IntArray], newline_id: int, batch_size: int, drop_last: bool) -> None:
        if drop_last and len(items) < batch_size:
            raise DataError(f"the list is too short for one batch: {len(items)} training lines, but batch_size "
                            f"is {batch_size}; use a longer list or a smaller --batch-size")
        self._items = list(items)
        self._newline_id = newline_id
        self._batch_size = batch_size
        self._count = len(items) // batch_size if drop_last else math.ceil(len(items) / batch_size)

    def __len__(self) -> int:
        return self._count

    @property
    def num_items(self) -> int:
        """The number of items (an epoch's order is a permutation of ``range(num_items)``)."""
        return len(self._items)

    def new_order(self, rng: np.random.Generator) -> IntArray:
        """A fresh shuffle of the items for one epoch, drawn from ``rng``."""
        return rng.permutation(len(self._items))

    def get(self, index: int, order: IntArray | None = None) -> Batch:
        """Batch ``index`` of the epoch whose item order is ``order`` (None: the given order)."""
        B = self._batch_size
        chosen = range(index * B, min((index + 1) * B, len(self._items)))
        items = [self._items[i if order is None else int(order[i])] for i in chosen]
        lengths = np.array([len(item) + 1 for item in items], dtype=np.int64)  # + the terminator
        T = int(lengths.max())
        # Padding id 0 is a valid id (the embedding can look it up); the mask and the lengths keep
        # it out of the loss and out of the recurrence.
        x = np.zeros((len(items), T), dtype=np.int64)
        y = np.zeros((len(items), T), dtype=np.int64)
        for row, item in enumerate(items):
            n = len(item)
            x[row, 0] = self._newline_id
            x[row, 1 : n + 1] = item
            y[row, :n] = item
            y[row, n] = self._newline_id
        mask = np.arange(T)[None, :] < lengths[:, None]
        return Batch(x, y, lengths, mask)
