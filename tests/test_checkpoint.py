"""Tests for rnnkit.io.checkpoint: safetensors in pure NumPy, atomic writes, single-file checkpoints.

The safetensors package (a test dependency) is the oracle for the file format: files must pass
between it and rnnkit in both directions, and rnnkit's writer must produce its exact bytes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy as st

from rnnkit.io import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    decode_tensors,
    encode_tensors,
    load_checkpoint,
    load_tensors,
    save_checkpoint,
    save_tensors,
)
from rnnkit.io import checkpoint as ckpt

ALL_DTYPES = [
    np.bool_,
    np.uint8,
    np.int8,
    np.int16,
    np.uint16,
    np.float16,
    np.int32,
    np.uint32,
    np.float32,
    np.float64,
    np.int64,
    np.uint64,
]
SHAPES = [(2, 3), (), (0, 3), (0,), (3, 1, 2)]


def random_array(dtype: Any, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that exercise every bit: full integer ranges; floats with NaN, infinities and -0.0."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    # np.asarray: with shape () the generators return NumPy scalars, not 0-d arrays.
    if dtype.kind == "b":
        return np.asarray(rng.integers(0, 2, size=shape), dtype=bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))
    values = np.asarray(rng.standard_normal(size=shape) * 1000, dtype=dtype)
    flat = values.reshape(-1)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=dtype)
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    return values


def assert_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype, same shape, same bytes (NaN payloads and the sign of zero included)."""
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


def assert_same_tensors(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert_identical(actual[name], expected[name])


def assert_same_document(actual: Any, expected: Any) -> None:
    """Deep equality that also compares arrays bit for bit and refuses int/float/bool look-alikes."""
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same_document(actual[key], expected[key])
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same_document(a, e)
    elif isinstance(expected, np.ndarray):
        assert_identical(actual, expected)
    else:
        assert actual == expected


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def mixed_tensors() -> dict[str, np.ndarray]:
    return {
        "rnn.weight_ih_l0": random_array(np.float32, (8, 3), seed=1),
        "rnn.bias_hh_l0": random_array(np.float64, (8,), seed=2),
        "embedding.weight": random_array(np.float32, (5, 3), seed=3),
        "counts": random_array(np.int64, (4,), seed=4),
        "lengths": random_array(np.int32, (2, 2), seed=5),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


# --------------------------------------------------------------------------------------------------
# safetensors: round trips and interoperability
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_is_bit_exact_for_every_dtype_and_shape(tmp_path: Path, dtype: Any) -> None:
    tensors = {f"t{i}": random_array(dtype, shape, seed=i) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "x.safetensors"
    save_tensors(path, tensors, metadata={"note": "é ✓"})
    loaded, metadata = load_tensors(path)
    assert_same_tensors(loaded, tensors)
    assert metadata == {"note": "é ✓"}


def test_loaded_arrays_are_owned_writable_native_copies(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_tensors(path, {"w": np.arange(6, dtype=">f8").reshape(2, 3), "s": np.array(3, dtype=np.int32)})
    loaded, metadata = load_tensors(path)
    assert metadata == {}
    for array in loaded.values():
        assert array.flags.writeable and array.flags.owndata and array.dtype.isnative
    # The big-endian input comes back with the same values as native float64.
    np.testing.assert_array_equal(loaded["w"], np.arange(6.0).reshape(2, 3))
    loaded["w"][0, 0] = 42.0
    assert load_tensors(path)[0]["w"][0, 0] == 0.0


def test_non_contiguous_input_is_written_in_c_order(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base.T[::2]  # (3, 4), neither C- nor F-contiguous
    path = tmp_path / "x.safetensors"
    save_tensors(path, {"v": view})
    assert_identical(load_tensors(path)[0]["v"], np.ascontiguousarray(view))
    assert_identical(st.load_file(path)["v"], np.ascontiguousarray(view))


def test_files_written_by_rnnkit_are_read_identically_by_safetensors(tmp_path: Path) -> None:
    from safetensors import safe_open

    tensors = mixed_tensors()
    path = tmp_path / "ours.safetensors"
    save_tensors(path, tensors, metadata={"format": "np", "step": "12"})
    assert_same_tensors(st.load_file(path), tensors)
    with safe_open(path, framework="np") as handle:
        assert handle.metadata() == {"format": "np", "step": "12"}


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_files_written_by_safetensors_are_read_identically(tmp_path: Path, dtype: Any) -> None:
    tensors = {f"t{i}": random_array(dtype, shape, seed=i) for i, shape in enumerate(SHAPES)}
    tensors.update(mixed_tensors())
    path = tmp_path / "theirs.safetensors"
    st.save_file(tensors, path, metadata={"k": "v"})
    loaded, metadata = load_tensors(path)
    assert_same_tensors(loaded, tensors)
    assert metadata == {"k": "v"}


# At most one metadata entry: the reference writes several in Rust hash-map order, which changes from
# one process to the next (their round trip is checked by the interoperability tests instead).
@pytest.mark.parametrize("metadata", [None, {}, {"ключ": "значение"}])
def test_encoding_is_byte_identical_to_the_reference(metadata: dict[str, str] | None) -> None:
    # One tensor per dtype, named against the reference's dtype order, plus same-dtype ties broken by name.
    tensors = {f"{chr(ord('z') - i)}": random_array(d, (3,), seed=i) for i, d in enumerate(ALL_DTYPES)}
    tensors.update(mixed_tensors())
    assert encode_tensors(tensors, metadata) == st.save(tensors, metadata=metadata)


def test_empty_file_round_trips_and_matches_reference() -> None:
    data = encode_tensors({})
    assert data == st.save({}) == struct.pack("<Q", 8) + b"{}      "
    assert decode_tensors(data) == ({}, {})


def test_header_is_padded_to_a_multiple_of_eight_with_spaces() -> None:
    for length in range(1, 12):
        data = encode_tensors({"n" * length: np.zeros(1, np.float32)})
        (header_len,) = struct.unpack("<Q", data[:8])
        assert header_len % 8 == 0
        header = data[8 : 8 + header_len]
        assert header.rstrip(b" ").endswith(b"}")
        assert json.loads(header)["n" * length] == {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


def test_encode_rejects_values_it_cannot_store() -> None:
    with pytest.raises(TypeError, match="tensor 'w' must be an np.ndarray, got list"):
        encode_tensors({"w": [1.0, 2.0]})
    with pytest.raises(TypeError, match="tensor 'c' has dtype complex128"):
        encode_tensors({"c": np.zeros(2, np.complex128)})
    with pytest.raises(TypeError, match="tensor 'o' has dtype object"):
        encode_tensors({"o": np.array([None])})
    with pytest.raises(TypeError, match="tensor names must be str"):
        encode_tensors({1: np.zeros(1)})
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        encode_tensors({"__metadata__": np.zeros(1)})
    with pytest.raises(TypeError, match="metadata must map str to str"):
        encode_tensors({}, metadata={"step": 3})


# --------------------------------------------------------------------------------------------------
# safetensors: corrupt files
# --------------------------------------------------------------------------------------------------


def raw_file(header: dict[str, Any], buffer: bytes) -> bytes:
    """A safetensors file with an arbitrary (possibly invalid) header."""
    header_bytes = json.dumps(header).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + buffer


def f32_entry(begin: int, end: int, shape: list[int] | None = None) -> dict[str, Any]:
    return {
        "dtype": "F32",
        "shape": [(end - begin) // 4] if shape is None else shape,
        "data_offsets": [begin, end],
    }


def load_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    load_tensors(path)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    good = encode_tensors(mixed_tensors())
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: truncated: tensor '.*' ends at byte"):
        load_bytes(tmp_path, good[:-3])
    with pytest.raises(
        CheckpointError, match=r"bad\.safetensors: truncated or not a safetensors file: the header"
    ):
        load_bytes(tmp_path, good[:20])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file: 5 bytes"):
        load_bytes(tmp_path, good[:5])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file: 0 bytes"):
        load_bytes(tmp_path, b"")


def test_garbage_is_not_a_safetensors_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_bytes(tmp_path, b"this is a text file, certainly not tensors\n" * 4)
    # A plausible length but a header that is not a JSON object.
    with pytest.raises(CheckpointError, match="header does not start with '{'"):
        load_bytes(tmp_path, struct.pack("<Q", 8) + b"[1, 2]  ")
    with pytest.raises(CheckpointError, match="not a safetensors file: header length"):
        load_bytes(tmp_path, struct.pack("<Q", 200_000_000) + b"{" + b" " * 200_000_000)


@pytest.mark.parametrize(
    ("header_bytes", "message"),
    [
        (b'{"w": {"dtype": "F32", ', "header is not valid UTF-8 JSON"),
        (b'{"w": "\xff\xfe"}', "header is not valid UTF-8 JSON"),
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    ],
)
def test_bad_json_header_is_reported(tmp_path: Path, header_bytes: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_bytes(tmp_path, struct.pack("<Q", len(header_bytes)) + header_bytes)


@pytest.mark.parametrize(
    ("header", "buffer", "message"),
    [
        (
            {"w": {"dtype": "X", "shape": [1], "data_offsets": [0, 4]}},
            b"\0" * 4,
            "unknown dtype 'X' for tensor 'w'",
        ),
        (
            {"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
            b"\0" * 4,
            "'BF16', which NumPy cannot",
        ),
        ({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "unknown dtype"),
        (
            {"w": {"dtype": "F32", "shape": [1]}},
            b"\0" * 4,
            "must be an object with dtype, shape and data_offsets",
        ),
        ({"w": [1, 2]}, b"", "must be an object with dtype"),
        ({"w": f32_entry(0, 4, shape=[-1])}, b"\0" * 4, r"shape \[-1\], not a list of non-negative"),
        ({"w": f32_entry(0, 4, shape=[True])}, b"\0" * 4, "not a list of non-negative integers"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\0" * 4, "not a pair of non-negative"),
        ({"w": f32_entry(4, 0, shape=[1])}, b"\0" * 4, "end before they begin"),
        ({"w": f32_entry(0, 8, shape=[1])}, b"\0" * 8, r"shape \[1\] of F32 needs 4 bytes but .* span 8"),
        ({"w": f32_entry(0, 8), "v": f32_entry(4, 12)}, b"\0" * 12, "tensor 'v' .* overlaps tensor 'w'"),
        ({"w": f32_entry(0, 4), "v": f32_entry(0, 4)}, b"\0" * 4, "tensor 'w' .* overlaps tensor 'v'"),
        (
            {"w": f32_entry(0, 4), "v": f32_entry(8, 12)},
            b"\0" * 12,
            "tensor 'v' .* leaves a gap of 4 bytes after tensor 'w'",
        ),
        ({"w": f32_entry(4, 8)}, b"\0" * 8, "tensor 'w' .* leaves a gap of 4 bytes before it"),
        ({"w": f32_entry(0, 4)}, b"\0" * 8, "4 trailing bytes after the last tensor"),
        ({"w": f32_entry(0, 8)}, b"\0" * 4, "truncated: tensor 'w' ends at byte 8 .* only 4 bytes"),
        ({"__metadata__": {"step": 3}}, b"", "'__metadata__' must be an object mapping str to str"),
        (
            {"b": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}},
            b"\x01\x02",
            "bytes other than 0 and 1",
        ),
    ],
)
def test_inconsistent_headers_are_reported(
    tmp_path: Path, header: dict[str, Any], buffer: bytes, message: str
) -> None:
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: .*" + message):
        load_bytes(tmp_path, raw_file(header, buffer))


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: safetensors file does not exist"):
        load_tensors(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_tensors(tmp_path)


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------


def test_atomic_write_creates_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second ✓\r\n")
    assert path.read_bytes() == "second ✓\r\n".encode()
    assert temp_files(tmp_path) == []
    with pytest.raises(TypeError, match="data must be bytes"):
        atomic_write_bytes(path, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        atomic_write_text(path, b"bytes")  # type: ignore[arg-type]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_gives_ordinary_permissions(tmp_path: Path) -> None:
    # A temporary file made by tempfile.mkstemp is 0o600; the result must follow the umask instead.
    old_umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"w": np.ones(3, np.float32)})
    before = path.read_bytes()

    def crash(*args: Any) -> None:
        raise OSError(f"simulated crash in os.{failing}")

    monkeypatch.setattr(ckpt.os, failing, crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_tensors(path, {"w": np.zeros(1000, np.float32)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []
    assert_same_tensors(load_tensors(path)[0], {"w": np.ones(3, np.float32)})


def test_killed_process_never_leaves_a_torn_file(tmp_path: Path) -> None:
    # A real crash runs no cleanup: the child process dies (os._exit) right before the rename.
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"w": np.ones(3, np.float32)})
    before = path.read_bytes()
    child = (
        "import os, sys, numpy as np\n"
        "from rnnkit.io import checkpoint\n"
        "checkpoint.os.replace = lambda *a: os._exit(3)\n"
        "checkpoint.save_tensors(sys.argv[1], {'w': np.zeros(1000, np.float32)})\n"
    )
    result = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr.decode()
    assert path.read_bytes() == before
    # The complete new data sits in the stray temporary file, never under the real name.
    (stray,) = temp_files(tmp_path)
    assert stray.startswith(".model.safetensors.")
    assert decode_tensors((tmp_path / stray).read_bytes())[0]["w"].shape == (1000,)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def training_document(rng: np.random.Generator) -> dict[str, Any]:
    params = mixed_tensors()
    return {
        "config": {
            "hidden_size": 8,
            "cell": "lstm",
            "lr": 0.002,
            "clip": None,
            "bidirectional": False,
            "sizes": [8, 8],
        },
        "vocab": ["\n", " ", "a", "é", "✓", '"', "\\"],
        "step": 1234,
        "losses": [4.25, 3.5, 1e-300, -0.0],
        "optimizer": {
            "name": "adam",
            "t": 1234,
            "m": {name: random_array(np.float32, p.shape, seed=7) for name, p in params.items() if p.size},
            "v": {
                name: random_array(np.uint16, p.shape, seed=8).astype(np.float32)
                for name, p in params.items()
                if p.size
            },
        },
        "rng": rng.bit_generator.state,
        "history": [{"step": 1, "loss": 4.0}, np.array([1.5, 2.5])],
    }


def test_checkpoint_round_trip_restores_weights_and_document(tmp_path: Path) -> None:
    rng = np.random.default_rng(2024)
    rng.standard_normal(17)  # advance, so the state is not the seed's
    weights = mixed_tensors()
    document = training_document(rng)
    assert document["rng"]["state"]["state"] > 2**64  # PCG64's 128-bit state: a big int for JSON

    written = save_checkpoint(str(tmp_path / "model.safetensors"), weights, document)
    assert written == tmp_path / "model.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # one file, nothing beside it
    loaded_weights, loaded_document = load_checkpoint(written)
    assert_same_tensors(loaded_weights, weights)
    assert_same_document(loaded_document, document)

    # The restored RNG continues exactly where the saved one was.
    resumed = np.random.default_rng()
    resumed.bit_generator.state = loaded_document["rng"]
    np.testing.assert_array_equal(resumed.standard_normal(5), rng.standard_normal(5))
    assert resumed.integers(0, 2**63, size=3).tolist() == rng.integers(0, 2**63, size=3).tolist()


def test_checkpoint_file_is_plain_safetensors_for_other_tools(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = tmp_path / "model.safetensors"
    document = training_document(np.random.default_rng(0))
    save_checkpoint(path, mixed_tensors(), document)

    # Weights under their own names, document arrays under doc/.
    theirs = st.load_file(path)
    assert_identical(theirs["rnn.weight_ih_l0"], mixed_tensors()["rnn.weight_ih_l0"])
    assert_identical(theirs["doc/optimizer/m/rnn.weight_ih_l0"], document["optimizer"]["m"]["rnn.weight_ih_l0"])
    assert_identical(theirs["doc/history/1"], np.array([1.5, 2.5]))
    assert sum(not name.startswith("doc/") for name in theirs) == len(mixed_tensors())

    with safe_open(path, framework="np") as handle:
        metadata = handle.metadata()
    assert sorted(metadata) == ["document", "format", "sha256", "version"]
    assert (metadata["format"], metadata["version"]) == ("rnnkit.checkpoint", "2")
    plain = json.loads(metadata["document"])
    assert plain["step"] == 1234 and plain["vocab"] == document["vocab"]
    assert plain["optimizer"]["m"]["rnn.weight_ih_l0"] == {"__ndarray__": "doc/optimizer/m/rnn.weight_ih_l0"}
    assert plain["history"][1] == {"__ndarray__": "doc/history/1"}
    # The checksum covers the whole file but itself: the canonical JSON of the other metadata entries
    # and of the tensor entries, a newline, then the data buffer.
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    covered = {key: value for key, value in header.pop("__metadata__").items() if key != "sha256"}
    canonical = json.dumps({"metadata": covered, "tensors": header}, sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(canonical.encode("ascii") + b"\n" + data[8 + header_len :]).hexdigest()
    assert metadata["sha256"] == expected


@pytest.mark.parametrize("bit_generator", [np.random.MT19937, np.random.Philox, np.random.SFC64])
def test_rng_states_holding_arrays_round_trip(tmp_path: Path, bit_generator: Any) -> None:
    # MT19937 keeps a uint32 key array, Philox uint64 arrays: they travel as doc/ tensors.
    rng = np.random.Generator(bit_generator(5))
    rng.random(3)
    save_checkpoint(tmp_path / "c.safetensors", {}, {"rng": rng.bit_generator.state})
    _, document = load_checkpoint(tmp_path / "c.safetensors")
    resumed = np.random.Generator(bit_generator())
    resumed.bit_generator.state = document["rng"]
    np.testing.assert_array_equal(resumed.random(4), rng.random(4))


@pytest.mark.parametrize("name", ["model", "model.json", "model.safetensors.tmp", ".safetensors"])
def test_checkpoint_path_must_end_in_safetensors(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="path must name a checkpoint file ending in '.safetensors'"):
        save_checkpoint(tmp_path / name, {"w": np.zeros(1)}, {})
    with pytest.raises(ValueError, match="path must name a checkpoint file ending in '.safetensors'"):
        load_checkpoint(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("document", "error", "message"),
    [
        ({"config": {"sizes": (8, 8)}}, TypeError, r"document\['config'\]\['sizes'\] is a tuple"),
        ({"step": np.int64(3)}, TypeError, r"document\['step'\] is a NumPy scalar \(int64\)"),
        ({"losses": [1.0, float("nan")]}, ValueError, r"document\['losses'\]\[1\] is nan"),
        ({"lr": float("inf")}, ValueError, r"document\['lr'\] is inf"),
        ({"vocab": {1: "a"}}, TypeError, r"document\['vocab'\]: keys must be str"),
        ({"x": {"__ndarray__": "doc/x"}}, ValueError, "'__ndarray__' is reserved"),
        ({"a/b": np.zeros(1), "a": {"b": np.ones(1)}}, ValueError, "'doc/a/b' is already used"),
        ({"when": object()}, TypeError, r"document\['when'\] has type object"),
        ({"m": np.zeros(2, np.complex64)}, TypeError, "has dtype complex64"),
    ],
)
def test_documents_that_would_not_round_trip_are_refused_before_writing(
    tmp_path: Path, document: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        save_checkpoint(tmp_path / "c.safetensors", {"w": np.zeros(1)}, document)
    assert list(tmp_path.iterdir()) == []


def test_reserved_weight_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'doc/w': names starting with 'doc/' are reserved"):
        save_checkpoint(tmp_path / "c.safetensors", {"doc/w": np.zeros(1)}, {})
    with pytest.raises(TypeError, match="document must be a dict"):
        save_checkpoint(tmp_path / "c.safetensors", {}, [])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_save_is_a_single_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One rename is what makes an interrupted save harmless: there is no moment between two files.
    real_replace = os.replace
    renamed: list[str] = []

    def spy(src: Any, dst: Any) -> None:
        renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", spy)
    save_checkpoint(tmp_path / "c.safetensors", {"w": np.zeros(2)}, {"m": np.ones(2), "step": 3})
    assert renamed == ["c.safetensors"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_crash_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "c.safetensors"
    old_weights, old_document = {"w": np.full(3, 1.0)}, {"step": 1, "m": np.full(2, 10.0)}
    save_checkpoint(path, old_weights, old_document)

    def crash(*args: Any) -> None:
        raise OSError(f"simulated crash in os.{failing}")

    monkeypatch.setattr(ckpt.os, failing, crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"w": np.full(3, 2.0)}, {"step": 2, "m": np.full(2, 20.0)})
    monkeypatch.undo()
    weights, document = load_checkpoint(path)
    assert_same_tensors(weights, old_weights)
    assert_same_document(document, old_document)
    assert temp_files(tmp_path) == []


def test_missing_file_and_directory_are_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors: checkpoint file does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"dir\.safetensors: checkpoint file is a directory"):
        load_checkpoint(tmp_path / "dir.safetensors")


def saved_checkpoint(tmp_path: Path) -> tuple[Path, bytes, int]:
    """A small valid checkpoint: its path, its bytes, and where its data buffer starts."""
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": np.arange(4.0)}, {"step": 7, "m": np.ones(2)})
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    return path, data, 8 + header_len


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    path, data, buffer_start = saved_checkpoint(tmp_path)
    path.write_bytes(data[:-3])
    with pytest.raises(CheckpointError, match=r"c\.safetensors: truncated: tensor '.*' ends at byte"):
        load_checkpoint(path)
    path.write_bytes(data[: buffer_start // 2])
    with pytest.raises(CheckpointError, match=r"c\.safetensors: truncated or not a safetensors file"):
        load_checkpoint(path)
    path.write_bytes(b"not tensors at all, just some text\n")
    with pytest.raises(CheckpointError, match=r"c\.safetensors: .*not a safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["flip one bit", "zero the second half"])
def test_changed_data_fails_the_checksum(tmp_path: Path, damage: str) -> None:
    # The file keeps its length and a valid header, so only the checksum can notice.
    path, data, buffer_start = saved_checkpoint(tmp_path)
    corrupt = bytearray(data)
    if damage == "flip one bit":
        corrupt[-1] ^= 0x01
    else:
        middle = (buffer_start + len(data)) // 2
        corrupt[middle:] = bytes(len(data) - middle)
    assert len(corrupt) == len(data) and bytes(corrupt) != data
    path.write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError, match=r"c\.safetensors: corrupt: the file does not match its checksum"):
        load_checkpoint(path)


def test_plain_safetensors_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    st.save_file({"w": np.zeros(2)}, path)
    with pytest.raises(
        CheckpointError, match=r"plain\.safetensors: not an rnnkit checkpoint: a plain safetensors file without"
    ):
        load_checkpoint(path)
    st.save_file({"w": np.zeros(2)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"not an rnnkit checkpoint: its format is 'pt'"):
        load_checkpoint(path)


def rewrite_metadata(path: Path, change: Any, resign: bool = True) -> None:
    """Re-save the checkpoint with ``change`` applied to its metadata, and (``resign``) a checksum
    recomputed over the changed file, so that the loader's checks after the checksum are reached."""
    tensors, metadata = load_tensors(path)
    original = metadata.get("sha256")
    change(metadata)
    save_tensors(path, tensors, metadata)
    if resign and metadata.get("sha256", None) == original is not None:  # a change of the checksum stays
        data = path.read_bytes()
        (header_len,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_len])
        covered = {key: value for key, value in header.pop("__metadata__").items() if key != "sha256"}
        canonical = json.dumps({"metadata": covered, "tensors": header}, sort_keys=True, separators=(",", ":"))
        metadata["sha256"] = hashlib.sha256(canonical.encode("ascii") + b"\n" + data[8 + header_len :]).hexdigest()
        save_tensors(path, tensors, metadata)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(version="3"), "checkpoint version '3' is not supported"),
        (lambda m: m.pop("version"), "checkpoint version None is not supported"),
        (lambda m: m.pop("sha256"), "metadata has no 'sha256' entry"),
        (lambda m: m.pop("document"), "metadata has no 'document' entry"),
        (lambda m: m.update(sha256="0" * 64), "corrupt: the file does not match its checksum"),
        (lambda m: m.update(document="{not json"), "document is not valid JSON"),
        (lambda m: m.update(document='{"step": NaN}'), "document is not valid JSON .*NaN"),
        (lambda m: m.update(document='{"a": 1, "a": 2}'), "document is not valid JSON .*duplicate key 'a'"),
        (lambda m: m.update(document="[1, 2]"), "document is a JSON list, not an object"),
        (
            lambda m: m.update(document='{"m": {"__ndarray__": "doc/zz"}}'),
            r"document array reference \{'__ndarray__': 'doc/zz'\} names no array",
        ),
        (lambda m: m.update(document='{"step": 7}'), r"document arrays \['doc/m'\] are not referenced"),
    ],
)
def test_defective_metadata_is_reported(tmp_path: Path, change: Any, message: str) -> None:
    path, _, _ = saved_checkpoint(tmp_path)
    rewrite_metadata(path, change)
    with pytest.raises(CheckpointError, match=r"c\.safetensors: .*" + message):
        load_checkpoint(path)


def test_the_checksum_covers_the_document(tmp_path: Path) -> None:
    # One changed digit in the document is still valid JSON: only the checksum can tell.
    path, _, _ = saved_checkpoint(tmp_path)
    rewrite_metadata(path, lambda m: m.update(document=m["document"].replace('"step":', '"step":9', 1)), resign=False)
    with pytest.raises(CheckpointError, match="corrupt: the file does not match its checksum"):
        load_checkpoint(path)


def test_version_1_files_are_still_read(tmp_path: Path) -> None:
    # Written by rnnkit before the checksum covered the document: data checksum only.
    path, _, _ = saved_checkpoint(tmp_path)
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    data_hash = hashlib.sha256(data[8 + header_len :]).hexdigest()
    rewrite_metadata(path, lambda m: (m.pop("sha256"), m.update(version="1", tensors_sha256=data_hash)),
                     resign=False)
    loaded, loaded_document = load_checkpoint(path)
    assert loaded_document["step"] == 7 and np.array_equal(loaded["w"], np.arange(4.0))
    rewrite_metadata(path, lambda m: m.update(tensors_sha256="0" * 64), resign=False)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(path)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle or np.load was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    document = training_document(np.random.default_rng(1))
    save_checkpoint(tmp_path / "c.safetensors", mixed_tensors(), document)
    _, loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert_same_document(loaded, document)
    # And the module does not even import a deserializer that can run code.
    tree = ast.parse(Path(ckpt.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "numpy" in imported and not imported & {"pickle", "marshal", "shelve", "dill", "cloudpickle"}
