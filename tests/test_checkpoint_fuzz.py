"""A mutation fuzzer for char-LM checkpoints: every damaged file is a clean error or the very same state.

A real checkpoint of a short training run is truncated, bit-flipped in its header (length field,
JSON, document, checksum) and in its data, and overwritten with short runs of random bytes.  For
each mutant, loading it -- as ``rnnkit sample`` and ``--resume`` do -- must either raise
:class:`CheckpointError` (a one-line message, no other exception type) or give back weights and a
document identical to the original's.  The mutations are drawn from a seeded generator, so a
failure is reproducible; their number is printed with ``-s``.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnkit.charlm import train as train_module
from rnnkit.charlm.model import load_model
from rnnkit.charlm.train import TrainConfig, train
from rnnkit.io.checkpoint import CheckpointError

TRUNCATIONS = 150
HEADER_FLIPS = 700
DATA_FLIPS = 250
OVERWRITES = 150


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    words = ["alpha", "beta", "gamma", "the", "cat", "sat", "on", "a", "mat"]
    rng = np.random.default_rng(0)
    (base / "words.txt").write_text(" ".join(words[i] for i in rng.integers(0, len(words), 200)), encoding="utf-8")
    config = TrainConfig(data=str(base / "words.txt"), hidden=8, embed_dim=4, seq_len=8, batch_size=4, steps=6,
                         eval_every=3, sample_every=0, out=str(base / "run"))
    patched = pytest.MonkeyPatch()
    patched.setattr(train_module, "plot_losses", lambda *args, **kwargs: None)
    try:
        train(config, log=io.StringIO(), progress=False)
    finally:
        patched.undo()
    return base / "run" / "latest.safetensors"


def same(a: Any, b: Any) -> bool:
    """Deep equality of documents holding arrays (dtype, shape and every bit)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def mutants(data: bytes, rng: np.random.Generator):
    """(kind, mutated bytes) for every mutation of the budget above."""
    (header_len,) = struct.unpack("<Q", data[:8])
    header_end = 8 + header_len
    for _ in range(TRUNCATIONS):
        yield "truncation", data[: int(rng.integers(0, len(data)))]
    for region, count, low, high in (("header", HEADER_FLIPS, 0, header_end),
                                     ("data", DATA_FLIPS, header_end, len(data))):
        for _ in range(count):
            mutated = bytearray(data)
            position = int(rng.integers(low, high))
            mutated[position] ^= 1 << int(rng.integers(0, 8))
            yield f"{region} bit flip", bytes(mutated)
    for _ in range(OVERWRITES):
        mutated = bytearray(data)
        length = int(rng.integers(1, 17))
        position = int(rng.integers(0, len(data) - length))
        mutated[position : position + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        yield "overwrite", bytes(mutated)


def test_every_mutant_is_a_clean_error_or_the_identical_state(checkpoint, tmp_path) -> None:
    original = load_model(checkpoint)
    weights = original.model.state_dict()
    data = checkpoint.read_bytes()
    target = tmp_path / "mutant.safetensors"
    outcomes: dict[str, int] = {}
    for kind, mutated in mutants(data, np.random.default_rng(2026)):
        target.write_bytes(mutated)
        try:
            loaded = load_model(target)
        except CheckpointError as error:
            message = str(error)
            assert "\n" not in message and message.startswith(str(target)), message
            outcomes["clean error"] = outcomes.get("clean error", 0) + 1
            continue
        # It loaded: then it must be exactly what was saved.
        assert same(loaded.document, original.document), kind
        assert same(loaded.model.state_dict(), weights), kind
        outcomes["identical"] = outcomes.get("identical", 0) + 1
    total = TRUNCATIONS + HEADER_FLIPS + DATA_FLIPS + OVERWRITES
    print(f"checkpoint fuzzer: {total} mutants: {outcomes}")
    assert sum(outcomes.values()) == total
