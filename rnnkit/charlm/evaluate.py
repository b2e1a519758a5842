"""Scoring a text with a trained char-LM: bits per character and perplexity (what ``rnnkit eval`` prints).

:func:`evaluate_text` reads a UTF-8 file (at most ``max_chars`` characters of it), encodes it with the
checkpoint's vocabulary (characters it lacks handled as ``unknown`` says), and runs the model over it
as validation runs during training: a stream model carries its state from chunk to chunk, a lines
model reads each line from the zero state after the start symbol and predicts its newline too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.charlm.data import (
    UNKNOWN_POLICIES,
    DataError,
    LineBatches,
    StreamBatches,
    handle_unknown,
    load_text,
    text_lines,
)
from rnnkit.charlm.model import bits, load_model

DEFAULT_EVAL_SEQ_LEN = 64
"""Chunk length for a stream model whose checkpoint does not say its training ``seq_len``."""


@dataclass
class EvalConfig:
    """What ``rnnkit eval`` does; the command line only parses its options into this."""

    checkpoint: str                  # a .safetensors checkpoint, or a run directory (its best checkpoint)
    data: str                        # the UTF-8 text file to score
    max_chars: int = 0               # score at most this many characters (the first ones); 0: all
    batch_size: int = 32             # rows (stream) or lines (lines mode) per forward pass
    unknown: str = "error"           # characters the vocabulary lacks: "error", "skip" or "replace"

    def __post_init__(self) -> None:
        for name, low in (("max_chars", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {', '.join(UNKNOWN_POLICIES)}, got {self.unknown!r}")


@dataclass
class EvalResult:
    """What :func:`evaluate_text` measured."""

    checkpoint: Path                 # the checkpoint file that was read
    chars: int                       # characters predicted (each scored once)
    bits_per_char: float             # mean cross-entropy in bits per character
    perplexity: float                # per character: 2 ** bits_per_char


def evaluate_text(
    config: EvalConfig,
    progress: Callable[[int], Callable[[int], None] | None] | None = None,
) -> EvalResult:
    """Score ``config.data`` with ``config.checkpoint``.

    Args:
        config: the settings.
        progress: ``progress(total_batches)`` may return an ``on_batch(done)`` callback (a progress bar).

    Raises:
        ValueError: an unusable checkpoint (:class:`~rnnkit.io.checkpoint.CheckpointError`), or a text
            that is missing, not UTF-8, too short to score, or has characters the vocabulary lacks
            under ``unknown="error"`` (:class:`~rnnkit.charlm.data.DataError`).
    """
    loaded = load_model(config.checkpoint)
    text = load_text(config.data)
    if config.max_chars:
        text = text[: config.max_chars]
    text = handle_unknown(text, loaded.vocab, config.unknown, f"{config.data}")
    document = loaded.document
    batches: StreamBatches | LineBatches
    if document.get("mode", "stream") == "lines":
        newline = loaded.vocab.chars.index("\n")
        items = [loaded.vocab.encode(line) for line in text_lines(text)]
        if not items:
            raise DataError(f"{config.data}: no non-empty line to score")
        batches = LineBatches(items, newline, config.batch_size, drop_last=False)
    else:
        ids = loaded.vocab.encode(text)
        if len(ids) < 2:
            raise DataError(f"{config.data}: at least 2 characters are needed to score one prediction")
        seq_len = document.get("max_item_length")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            seq_len = DEFAULT_EVAL_SEQ_LEN
        batches = StreamBatches.for_evaluation(np.asarray(ids), config.batch_size, seq_len)
    chars = sum(batches.get(index).num_targets for index in range(len(batches)))
    on_batch = progress(len(batches)) if progress is not None else None
    loss = loaded.model.evaluate(batches, on_batch)
    bpc = bits(loss)
    return EvalResult(loaded.path, int(chars), bpc, math.pow(2.0, bpc) if bpc < 1024 else math.inf)
