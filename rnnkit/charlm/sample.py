"""Generating text from a trained char-LM, one character at a time (what ``rnnkit sample`` prints).

:func:`generate_text` yields the text to show as it is generated, so a caller can stream it:

* **stream** models continue a prime: the prime is yielded first, then ``length`` new characters.
  Without a prime the model starts as after a line break (``"\\n"`` is fed in, not shown), or, for
  a text without line breaks, from one uniformly drawn character.
* **lines** models invent ``length`` new items, one per line, each from the zero state after the
  start symbol ``"\\n"`` (as in training).  A prime is the beginning every item shares (``"Ty"``
  gives items starting with ``Ty``) and cannot contain a line break.  An item that reaches the
  longest item length seen in training (``max_item_length``, the newline included) without the
  model ending it is cut there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnkit.charlm.data import UNKNOWN_POLICIES, Vocab, handle_unknown, load_text
from rnnkit.charlm.model import CharLM, check_sampling, load_model

MODES = ("stream", "lines")

DEFAULT_LENGTH = {"stream": 500, "lines": 20}
"""What :class:`SampleConfig` ``length=None`` means: characters for stream models, items for lines models."""


@dataclass
class SampleConfig:
    """What ``rnnkit sample`` does; the command line only parses its options into this."""

    checkpoint: str                  # a .safetensors checkpoint, or a run directory (its best checkpoint)
    prime: str = ""                  # text to continue (lines mode: how every item starts)
    prime_file: str | None = None    # read the prime from this UTF-8 file instead
    length: int | None = None        # characters (stream) or items (lines); None: DEFAULT_LENGTH[mode]
    temperature: float = 1.0         # 0: greedy
    top_k: int | None = None         # sample among the top_k most likely characters only
    seed: int | None = None          # the same seed gives the same text
    unknown: str = "error"           # prime characters the vocabulary lacks: "error", "skip" or "replace"

    def __post_init__(self) -> None:
        if self.prime and self.prime_file is not None:
            raise ValueError("give a prime or a prime file, not both")
        if self.unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {', '.join(UNKNOWN_POLICIES)}, got {self.unknown!r}")


def sample_text(config: SampleConfig) -> Iterator[str]:
    """Load the checkpoint and the prime now (errors surface before any text), then generate lazily.

    Returns the iterator of :func:`generate_text`: stream it as it comes.
    """
    loaded = load_model(config.checkpoint)
    prime = load_text(config.prime_file, what="prime file") if config.prime_file is not None else config.prime
    if config.unknown != "error":  # "error": generate_text's own message, which lists them
        prime = handle_unknown(prime, loaded.vocab, config.unknown, "the prime")
    mode = loaded.document.get("mode", "stream")
    length = config.length if config.length is not None else DEFAULT_LENGTH[mode]
    return generate_text(loaded.model, loaded.vocab, mode=mode, prime=prime, length=length,
                         rng=np.random.default_rng(config.seed), temperature=config.temperature,
                         top_k=config.top_k, max_item_length=loaded.document.get("max_item_length"))


def generate_text(
    model: CharLM,
    vocab: Vocab,
    *,
    mode: str = "stream",
    prime: str = "",
    length: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    max_item_length: int | None = None,
) -> Iterator[str]:
    """Yield generated text piece by piece (see the module docstring for the two modes).

    Args:
        model, vocab: a trained model and its vocabulary.
        mode: ``"stream"`` (``length`` = new characters after the prime) or ``"lines"`` (``length``
            = items, each ending with ``"\\n"``).
        prime: text to start from; every character must be in the vocabulary.
        rng: the randomness: the same arguments and generator state give the same text.
        temperature, top_k: as in :meth:`CharLM.generate`.
        max_item_length: lines mode: the most characters per item, the newline included.

    Raises:
        ValueError: the prime has characters outside the vocabulary (listed), a lines-mode prime
            has a line break or is too long, or an argument is out of range.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    # Checked here, before anything is yielded, so that a bad setting never prints half a result.
    check_sampling(temperature, top_k, rng)
    try:
        prime_ids = vocab.encode(prime)
    except ValueError as error:
        raise ValueError(f"the prime has {error}") from None
    settings: dict[str, Any] = {"rng": rng, "temperature": temperature, "top_k": top_k}
    newline = vocab.chars.index("\n") if "\n" in vocab else None

    if mode == "stream":
        if prime:
            yield prime
        if prime_ids.size == 0:
            if newline is not None:
                prime_ids = np.array([newline])
            elif length > 0:
                first = int(rng.integers(len(vocab)))
                yield vocab.chars[first]
                prime_ids, length = np.array([first]), length - 1
            else:
                return
        for token in model.generate(prime_ids, length, **settings):
            yield vocab.chars[token]
        return

    if newline is None:
        raise ValueError("a lines-mode model needs '\\n' in its vocabulary (it ends every item)")
    if "\n" in prime:
        raise ValueError("in lines mode the prime is the beginning of one item and cannot contain a line break")
    if max_item_length is None or isinstance(max_item_length, bool) or not isinstance(max_item_length, int):
        raise ValueError(f"lines mode needs max_item_length, a positive integer, got {max_item_length!r}")
    room = max_item_length - 1 - len(prime)  # characters left for the model, before the newline
    if room < 0:
        raise ValueError(f"the prime has {len(prime)} characters, but items are at most "
                         f"{max_item_length - 1} long (plus the newline)")
    start = np.concatenate(([newline], prime_ids))
    for _ in range(length):
        yield prime
        added = 0
        # room + 1 draws: up to `room` characters and then the newline; an item still going at its
        # longest is cut, and the newline closes it either way.
        for token in model.generate(start, room + 1, stop_id=newline, **settings):
            if token == newline or added == room:
                break
            yield vocab.chars[token]
            added += 1
        yield "\n"
