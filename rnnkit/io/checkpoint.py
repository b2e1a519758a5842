"""Checkpoint I/O: atomic file writes, the safetensors format in pure NumPy, and checkpoints.

Three layers, each usable on its own.

**Atomic writes** -- :func:`atomic_write_bytes`, :func:`atomic_write_text`.  The data goes to a
temporary file in the destination's directory (``.<name>.<random>.tmp``), is flushed and
``os.fsync``-ed, then ``os.replace``-d over the destination, and finally the directory is fsync-ed so
the rename itself is durable.  ``os.replace`` is atomic on POSIX and Windows, so a reader or a crash
sees either the complete old file or the complete new one, never a torn mix.  When the write fails
with an exception the temporary file is removed; after a hard crash (power loss, ``kill -9``) a
stray ``.*.tmp`` file may remain next to the destination and is safe to delete.

**safetensors** -- :func:`save_tensors` / :func:`load_tensors` (files) and :func:`encode_tensors` /
:func:`decode_tensors` (bytes).  Hugging Face's format, implemented with NumPy + json + struct::

    8 bytes   N, unsigned 64-bit little-endian: the length of the header
    N bytes   UTF-8 JSON object {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
              optional "__metadata__": {str: str}}, padded with spaces to a multiple of 8 bytes
    rest      the byte buffer: every tensor's raw little-endian C-order bytes, back to back; offsets
              are relative to the start of the buffer

The writer reproduces the reference implementation byte for byte (tensors ordered by decreasing
dtype rank then by name, which also keeps every tensor aligned to its item size; compact JSON) --
except the order of several metadata entries, which the reference takes from a hash map and which
varies between its runs; readers do not depend on it.  Files are interchangeable with the
``safetensors`` package in both directions.  The reader never executes anything taken from a file
-- no pickle, no ``np.load(allow_pickle=True)``: it parses JSON and copies bytes, after checking the
header length against the file size, the header's JSON, every dtype, shape and offset, and that the
tensors tile the buffer exactly (contiguous, no overlap, no trailing bytes).  Any defect raises
:class:`CheckpointError` naming the file and the defect.  Loaded
arrays are owned, writable, native-byte-order copies.

**Checkpoints** -- :func:`save_checkpoint` / :func:`load_checkpoint`.  A checkpoint is ONE
safetensors file (``runs/model.safetensors``) written by a single :func:`atomic_write_bytes`.  So an
interrupted save -- an exception, ``kill -9``, a power loss -- never destroys the previous checkpoint:
the path holds the complete old checkpoint or the complete new one, and at worst a stray ``.*.tmp``
file remains beside it.  (Two files, say weights + JSON, cannot give this: a crash between their two
renames pairs new weights with the old document, and the previous checkpoint is gone.)  Any
safetensors reader, the ``safetensors`` package included, sees

* the tensors: the weights under their PyTorch names (``rnn.weight_ih_l0`` ...) and every NumPy array
  found in the document, under ``doc/...`` (see below);
* ``__metadata__`` (str -> str): ``"format": "rnnkit.checkpoint"``, ``"version": "2"``,
  ``"document"``: the document as compact JSON, and ``"sha256"``: the SHA-256 (hex) of everything
  else in the file (see below).

*Why a checksum, and over what.*  The structural checks of :func:`decode_tensors` catch a truncated
file and a header whose layout is broken, but not changed bytes that keep the layout valid: bit rot
in the data, a partial copy whose length happens to be right, or one changed digit in the document
(a learning rate of ``9.002`` instead of ``0.002`` is still valid JSON).  So ``sha256`` covers the
whole file but itself: the hash of the canonical JSON of ``{"metadata": <every other metadata
entry>, "tensors": <every tensor's dtype, shape and offsets>}``, a newline, and the data buffer.
:func:`load_checkpoint` recomputes it from the very bytes it parsed and refuses the file when it
differs, so a loaded checkpoint is bit for bit the one that was saved.  Files of version 1 (whose
``tensors_sha256`` covered the data buffer only) are still read, with that weaker check.

Reading is bounded (:func:`rnnkit.io.files.read_regular_file`): only a regular file is opened (a
symlink to ``/dev/zero`` or a FIFO is refused before anything is read), and a file larger than the
memory available is refused before it is read.

*Arrays in the document.*  The document (config, vocabulary, optimizer state, step, RNG state ...)
may hold NumPy arrays anywhere in its dicts and lists -- Adam's moments, an MT19937 key.  JSON is a
poor carrier for them (slow, and floats only round-trip through decimal text with care), so each
array is stored exactly as a tensor named by the reserved prefix ``doc/`` followed by its path in the
document (``document["optimizer"]["m"]["rnn.weight_ih_l0"]`` becomes the tensor
``doc/optimizer/m/rnn.weight_ih_l0``), and the document JSON holds the marker ``{"__ndarray__":
"<that name>"}`` in its place.  :func:`load_checkpoint` puts the arrays back, so callers just pass and
get back a dict with arrays in it.  Weight names must therefore not start with ``doc/``.

*The document must round-trip exactly*: dicts with ``str`` keys, lists, ``str``, ``int`` (of any
size -- the 128-bit state of ``np.random.default_rng`` is fine), finite ``float``, ``bool``, ``None``
and ``np.ndarray``.  Values that JSON would silently change are refused with a message naming their
place: tuples (they would come back as lists), NumPy scalars (they would come back as Python numbers;
pass ``.item()`` or a 0-d array), non-finite floats (not valid JSON), non-``str`` keys.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rnnkit.io.files import UnreadableFile, read_regular_file

__all__ = [
    "CheckpointError",
    "Tensors",
    "atomic_write_bytes",
    "atomic_write_text",
    "decode_tensors",
    "encode_tensors",
    "load_checkpoint",
    "load_tensors",
    "save_checkpoint",
    "save_tensors",
]

Tensors = dict[str, npt.NDArray[Any]]
"""Named arrays of any supported dtype, as stored in a safetensors file."""

# The safetensors dtype codes NumPy can represent, in the reference implementation's dtype order
# (its ``Dtype`` enum, ascending).  The writer sorts tensors by *decreasing* rank here, then by name,
# exactly as the reference does, so both produce the same bytes.  BF16 and the F8/F6/F4 formats have
# no NumPy dtype and are reported as unsupported rather than unknown.
_DTYPE_ORDER: tuple[tuple[str, np.dtype[Any]], ...] = (
    ("BOOL", np.dtype(np.bool_)),
    ("U8", np.dtype("<u1")),
    ("I8", np.dtype("<i1")),
    ("I16", np.dtype("<i2")),
    ("U16", np.dtype("<u2")),
    ("F16", np.dtype("<f2")),
    ("I32", np.dtype("<i4")),
    ("U32", np.dtype("<u4")),
    ("F32", np.dtype("<f4")),
    ("F64", np.dtype("<f8")),
    ("I64", np.dtype("<i8")),
    ("U64", np.dtype("<u8")),
)
_DTYPE_BY_CODE: dict[str, np.dtype[Any]] = dict(_DTYPE_ORDER)
_RANK_BY_CODE: dict[str, int] = {code: rank for rank, (code, _) in enumerate(_DTYPE_ORDER)}
# Keyed by (kind, itemsize) so that big-endian and native arrays map to the same code.
_CODE_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in _DTYPE_ORDER
}
_UNSUPPORTED_CODES = frozenset({"BF16", "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"})

_METADATA_KEY = "__metadata__"
# The reference refuses headers above 100 MB; so do we, so that a garbage length cannot make us
# try to parse a gigantic "header" out of a large but corrupt file.
_MAX_HEADER_BYTES = 100_000_000

_CHECKPOINT_FORMAT = "rnnkit.checkpoint"
_CHECKPOINT_VERSION = "2"  # a string: safetensors metadata maps str to str
_LEGACY_VERSION = "1"      # its checksum covered the data buffer only (read, never written)
_DOC_PREFIX = "doc/"
_ARRAY_MARKER = "__ndarray__"


class CheckpointError(ValueError):
    """A checkpoint or safetensors file is missing, corrupt, or inconsistent.

    The message names the file and what is wrong with it.
    """


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically and durably.

    Either the complete old content or the complete new content is at ``path`` at every moment,
    including after a crash.  The parent directory must exist.  On failure the exception propagates,
    the old file is untouched and the temporary file is removed.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with mode 0o666 (not tempfile.mkstemp, whose files are 0o600) so that the umask gives
    # the checkpoint the same permissions as any other file the user creates; O_EXCL never reuses
    # an existing file.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            # Without fsync the rename can reach the disk before the data does, and a power loss
            # would then leave an empty or partial file under the final name.
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave the temporary file behind either.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Replace the file at ``path`` with ``text`` atomically (see :func:`atomic_write_bytes`).

    The text is encoded as given: no newline translation happens.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_directory(directory: Path) -> None:
    """Make a completed rename in ``directory`` durable, where the platform supports it."""
    if os.name != "posix":
        # Windows cannot open a directory for fsync; NTFS journals the rename itself.
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        # Some file systems (network mounts, some FUSE) reject fsync on a directory.  The new file is
        # already complete and in place, so failing the whole write here would only mislead.
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------------


def encode_tensors(
    tensors: Mapping[str, npt.NDArray[Any]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialize ``tensors`` (and optional string ``metadata``) to safetensors bytes.

    Arrays keep their dtype and shape (0-d and empty shapes included); they are written little-endian
    in C order whatever their memory layout.  Raises TypeError for a non-array value, an unsupported
    dtype, or non-``str`` names or metadata, and ValueError for the reserved name ``__metadata__``.
    """
    entries, chunks = _tensor_entries(tensors)
    return _join_file(entries, metadata, chunks)


def _tensor_entries(tensors: Mapping[str, npt.NDArray[Any]]) -> tuple[dict[str, Any], list[bytes]]:
    """The header entries of ``tensors`` and their byte chunks, both in file order.

    Split from :func:`encode_tensors` because the data buffer does not depend on the metadata: a
    checkpoint hashes the chunks first and then puts the hash into the metadata.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of name -> np.ndarray, got {type(tensors).__name__}")
    ordered: list[tuple[int, str, str, npt.NDArray[Any]]] = []
    for name, array in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r} ({type(name).__name__})")
        if name == _METADATA_KEY:
            raise ValueError(f"tensor name {_METADATA_KEY!r} is reserved by the safetensors format")
        code = _dtype_code(name, array)
        ordered.append((-_RANK_BY_CODE[code], name, code, array))
    ordered.sort(key=lambda entry: (entry[0], entry[1]))

    entries: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for _, name, code, array in ordered:
        data = np.asarray(array, dtype=_DTYPE_BY_CODE[code]).tobytes(order="C")
        entries[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    return entries, chunks


def _join_file(entries: dict[str, Any], metadata: Mapping[str, str] | None, chunks: list[bytes]) -> bytes:
    """Assemble a safetensors file from :func:`_tensor_entries`' output and optional metadata."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header[_METADATA_KEY] = _checked_metadata(metadata)
    header.update(entries)
    # Compact separators and raw UTF-8 match the reference's serde_json output; the space padding
    # makes the buffer start 8-byte aligned, so every tensor (ordered by decreasing item size) is
    # aligned for zero-copy readers.
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    return b"".join([struct.pack("<Q", len(header_bytes)), header_bytes, *chunks])


def decode_tensors(data: bytes, source: str = "<bytes>") -> tuple[Tensors, dict[str, str]]:
    """Parse safetensors bytes into ``(tensors, metadata)``; the inverse of :func:`encode_tensors`.

    ``source`` names the data in error messages (usually the file path).  ``metadata`` is ``{}`` when
    the header has none.  Every array is an owned, writable copy in native byte order.  Raises
    :class:`CheckpointError` for any defect in the data.
    """

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{source}: {problem}")

    if len(data) < 8:
        raise fail(
            f"truncated or not a safetensors file: {len(data)} bytes, shorter than the 8-byte header length"
        )
    (header_len,) = struct.unpack("<Q", data[:8])
    available = len(data) - 8
    if header_len > available:
        raise fail(
            f"truncated or not a safetensors file: the header length field says {header_len} bytes "
            f"but only {available} bytes follow it"
        )
    if header_len > _MAX_HEADER_BYTES:
        raise fail(
            f"not a safetensors file: header length {header_len} exceeds the {_MAX_HEADER_BYTES}-byte limit"
        )
    header_bytes = data[8 : 8 + header_len]
    if not header_bytes.startswith(b"{"):
        raise fail("not a safetensors file: the header does not start with '{'")
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise fail(f"the header is not valid UTF-8 JSON ({error})") from None
    if not isinstance(header, dict):
        raise fail(f"the header is a JSON {type(header).__name__}, not an object")

    metadata = header.pop(_METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise fail(f"{_METADATA_KEY!r} must be an object mapping str to str, got {metadata!r}")

    buffer_start = 8 + header_len
    buffer_len = len(data) - buffer_start
    layouts = {name: _parse_tensor_info(name, info, fail) for name, info in header.items()}

    # The tensors must tile the buffer exactly: sorting by offsets, each one starts where the previous
    # one ended.  This rules out gaps, overlaps (one byte read as two tensors) and trailing bytes.
    expected, previous = 0, None
    for begin, end, name in sorted((begin, end, name) for name, (_, _, begin, end) in layouts.items()):
        if begin != expected:
            after = f"after tensor {previous!r}" if previous is not None else "before it"
            problem = (
                f"overlaps tensor {previous!r}"
                if begin < expected
                else f"leaves a gap of {begin - expected} bytes {after}"
            )
            raise fail(f"tensor {name!r} has data_offsets [{begin}, {end}] which {problem}")
        if end > buffer_len:
            raise fail(
                f"truncated: tensor {name!r} ends at byte {end} of the data buffer but the buffer has only "
                f"{buffer_len} bytes"
            )
        expected, previous = end, name
    if expected != buffer_len:
        raise fail(f"{buffer_len - expected} trailing bytes after the last tensor (file not fully covered)")

    # Built in the header's order, which is the order the writer chose.
    tensors: Tensors = {}
    for name, (dtype, shape, begin, end) in layouts.items():
        raw = np.frombuffer(
            data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=buffer_start + begin
        )
        if dtype.kind == "b" and np.any(raw.view(np.uint8) > 1):
            raise fail(f"tensor {name!r} is BOOL but holds bytes other than 0 and 1")
        # astype copies: the result owns its memory and is writable (frombuffer over bytes is
        # read-only), and it is in native byte order.
        tensors[name] = raw.reshape(shape).astype(dtype.newbyteorder("="))
    return tensors, dict(metadata)


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, npt.NDArray[Any]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` to a safetensors file at ``path``, atomically.

    See :func:`encode_tensors` for what is accepted and :func:`atomic_write_bytes` for the guarantee.
    """
    atomic_write_bytes(path, encode_tensors(tensors, metadata))


def load_tensors(path: str | os.PathLike[str]) -> tuple[Tensors, dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``, fully validated (see :func:`decode_tensors`).

    Raises :class:`CheckpointError` if the file is missing or defective.
    """
    return decode_tensors(_read_file(Path(path), "safetensors file"), source=str(path))


def _dtype_code(name: str, array: object) -> str:
    """The safetensors dtype code of ``array`` (stored under ``name``), or a TypeError."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"tensor {name!r} must be an np.ndarray, got {type(array).__name__}")
    code = _CODE_BY_KIND_SIZE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        supported = ", ".join(str(dtype) for _, dtype in _DTYPE_ORDER)
        raise TypeError(
            f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold here ({supported})"
        )
    return code


def _checked_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    return dict(metadata)


def _parse_tensor_info(
    name: str, info: object, fail: Callable[[str], CheckpointError]
) -> tuple[np.dtype[Any], tuple[int, ...], int, int]:
    """Validate one header entry: ``(little-endian dtype, shape, begin, end)`` or a CheckpointError."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise fail(
            f"tensor {name!r}: header entry must be an object with dtype, shape and data_offsets, "
            f"got {info!r}"
        )
    code = info["dtype"]
    if isinstance(code, str) and code in _UNSUPPORTED_CODES:
        raise fail(f"tensor {name!r} has dtype {code!r}, which NumPy cannot represent")
    if not isinstance(code, str) or code not in _DTYPE_BY_CODE:
        raise fail(f"unknown dtype {code!r} for tensor {name!r}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_is_natural(dim) for dim in shape):
        raise fail(f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_natural(offset) for offset in offsets)
    ):
        raise fail(f"tensor {name!r} has data_offsets {offsets!r}, not a pair of non-negative integers")
    begin, end = offsets
    if end < begin:
        raise fail(f"tensor {name!r} has data_offsets [{begin}, {end}] that end before they begin")
    dtype = _DTYPE_BY_CODE[code]
    expected_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if end - begin != expected_bytes:
        raise fail(
            f"tensor {name!r}: shape {shape} of {code} needs {expected_bytes} bytes but data_offsets "
            f"[{begin}, {end}] span {end - begin}"
        )
    return dtype, tuple(shape), begin, end


def _is_natural(value: object) -> bool:
    # bool is a subclass of int, but ``true`` is no dimension.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a repeated key would silently shadow the first entry, so refuse it."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _read_file(path: Path, what: str) -> bytes:
    """The bytes of a regular file, read with a bound (a device or FIFO is refused unread)."""
    try:
        return read_regular_file(path, what)
    except UnreadableFile as error:
        raise CheckpointError(f"{path}: {what} {error.problem}") from None


# --------------------------------------------------------------------------------------------------
# Checkpoints: weights + document in one file
# --------------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    tensors: Mapping[str, npt.NDArray[Any]],
    document: Mapping[str, Any],
) -> Path:
    """Save ``tensors`` (weights) and ``document`` as the checkpoint file ``path``, atomically.

    ``path``: the file, ending in ``.safetensors``; its directory must exist.
    ``tensors``: name -> array (PyTorch names); names must not start with ``doc/``.
    ``document``: a JSON-like dict that may contain NumPy arrays (module docstring: "Arrays in the
    document" and "The document must round-trip exactly").

    One atomic write: if it is interrupted, the previous checkpoint at ``path`` stays intact.  Returns
    ``path`` as a :class:`~pathlib.Path`.  Raises ValueError for a path without the ``.safetensors``
    suffix, and TypeError / ValueError naming the offending tensor or document entry, before anything
    is written.
    """
    target = _checkpoint_file(path)
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of name -> np.ndarray, got {type(tensors).__name__}")
    for name in tensors:
        if isinstance(name, str) and name.startswith(_DOC_PREFIX):
            raise ValueError(
                f"tensor name {name!r}: names starting with {_DOC_PREFIX!r} are reserved for document arrays"
            )
    if not isinstance(document, Mapping):
        raise TypeError(f"document must be a dict, got {type(document).__name__}")

    doc_arrays: Tensors = {}
    plain_document = _externalize_arrays(document, "document", [], doc_arrays)
    entries, chunks = _tensor_entries({**tensors, **doc_arrays})
    metadata = {
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        # allow_nan=False keeps the document standard JSON; _externalize_arrays has already rejected
        # non-finite floats with a message naming their place.
        "document": json.dumps(plain_document, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
    }
    metadata["sha256"] = _file_hash(metadata, entries, chunks)
    atomic_write_bytes(target, _join_file(entries, metadata, chunks))
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Tensors, dict[str, Any]]:
    """Load the checkpoint file ``path``: ``(tensors, document)``, as given to :func:`save_checkpoint`.

    Document arrays are put back in their places (and are not among ``tensors``).  Raises ValueError
    for a path without the ``.safetensors`` suffix, and :class:`CheckpointError` naming the file and
    the problem when it is missing, not a valid safetensors file, not an rnnkit checkpoint, of an
    unsupported version, has a damaged document, or its data does not match its checksum.
    """
    source = _checkpoint_file(path)
    data = _read_file(source, "checkpoint file")
    all_tensors, metadata = decode_tensors(data, source=str(source))

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{source}: {problem}")

    if metadata.get("format") != _CHECKPOINT_FORMAT:
        if "format" not in metadata:
            raise fail(
                "not an rnnkit checkpoint: a plain safetensors file without rnnkit metadata "
                f"(no 'format': {_CHECKPOINT_FORMAT!r} in its {_METADATA_KEY})"
            )
        raise fail(f"not an rnnkit checkpoint: its format is {metadata['format']!r}, not {_CHECKPOINT_FORMAT!r}")
    version = metadata.get("version")
    if version not in (_CHECKPOINT_VERSION, _LEGACY_VERSION):
        raise fail(
            f"checkpoint version {version!r} is not supported "
            f"(this rnnkit reads versions {_LEGACY_VERSION!r} and {_CHECKPOINT_VERSION!r})"
        )
    hash_key = "sha256" if version == _CHECKPOINT_VERSION else "tensors_sha256"
    for key in ("document", hash_key):
        if key not in metadata:
            raise fail(f"the checkpoint metadata has no {key!r} entry")

    # Hash the very bytes that decode_tensors parsed, so nothing can change between check and use.
    # decode_tensors has validated the header length and its JSON, so both parse again here.
    (header_len,) = struct.unpack("<Q", data[:8])
    buffer = memoryview(data)[8 + header_len :]
    if version == _CHECKPOINT_VERSION:
        entries = json.loads(data[8 : 8 + header_len].decode("utf-8"))
        entries.pop(_METADATA_KEY, None)
        covered = {key: value for key, value in metadata.items() if key != "sha256"}
        actual_hash = _file_hash(covered, entries, [buffer])
    else:
        actual_hash = hashlib.sha256(buffer).hexdigest()
    expected_hash = metadata[hash_key]
    if actual_hash != expected_hash:
        raise fail(
            f"corrupt: the file does not match its checksum (sha256 {actual_hash[:16]}..., "
            f"recorded {expected_hash[:16]}...)"
        )

    try:
        document = json.loads(
            metadata["document"], object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as error:
        raise fail(f"the checkpoint document is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise fail(f"the checkpoint document is a JSON {type(document).__name__}, not an object")

    doc_arrays = {name: array for name, array in all_tensors.items() if name.startswith(_DOC_PREFIX)}
    tensors = {name: array for name, array in all_tensors.items() if not name.startswith(_DOC_PREFIX)}
    used: set[str] = set()
    restored = _internalize_arrays(document, doc_arrays, used, fail)
    unused = doc_arrays.keys() - used
    if unused:
        raise fail(f"document arrays {sorted(unused)} are not referenced by the document")
    return tensors, restored


def _file_hash(metadata: Mapping[str, str], entries: Mapping[str, Any], chunks: list[Any]) -> str:
    """The ``sha256`` of a version-2 checkpoint: canonical JSON of the metadata (without ``sha256``)
    and the tensor entries, a newline, then the data buffer (``chunks`` in file order)."""
    digest = hashlib.sha256()
    header = {"metadata": dict(metadata), "tensors": dict(entries)}
    digest.update(json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
    digest.update(b"\n")
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or a ValueError unless it names a ``.safetensors`` file."""
    target = Path(path)
    # Path(".safetensors").suffix is "": a bare suffix names a hidden file, not a checkpoint.
    if target.suffix != ".safetensors":
        raise ValueError(f"path must name a checkpoint file ending in '.safetensors', got {str(path)!r}")
    return target


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _externalize_arrays(value: Any, where: str, keys: list[str], arrays: Tensors) -> Any:
    """Copy of the document ``value`` with arrays moved to ``arrays`` and replaced by markers.

    ``where`` is the Python expression of ``value`` for messages (``document['optim']['m']``) and
    ``keys`` its path, which names the array's tensor.  Refuses everything that would not come back
    from JSON identical (see the module docstring).
    """
    if isinstance(value, np.ndarray):
        name = _DOC_PREFIX + "/".join(keys)
        if name in arrays:
            raise ValueError(
                f"{where}: its tensor name {name!r} is already used by another array (a key contains '/')"
            )
        _dtype_code(where, value)
        arrays[name] = value
        return {_ARRAY_MARKER: name}
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where}: keys must be str (JSON would turn {key!r} into a string), got {key!r}"
                )
            if key == _ARRAY_MARKER:
                raise ValueError(f"{where}: the key {_ARRAY_MARKER!r} is reserved for array references")
            result[key] = _externalize_arrays(item, f"{where}[{key!r}]", [*keys, key], arrays)
        return result
    if isinstance(value, list):
        return [
            _externalize_arrays(item, f"{where}[{index}]", [*keys, str(index)], arrays)
            for index, item in enumerate(value)
        ]
    if isinstance(value, tuple):
        raise TypeError(f"{where} is a tuple, which JSON would return as a list; pass a list")
    if isinstance(value, np.generic):
        raise TypeError(
            f"{where} is a NumPy scalar ({type(value).__name__}), which JSON would return as a Python "
            "number; pass value.item() or a 0-d array"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}, which is not valid JSON")
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"{where} has type {type(value).__name__}, which a checkpoint document cannot hold")


def _internalize_arrays(
    value: Any, arrays: Tensors, used: set[str], fail: Callable[[str], CheckpointError]
) -> Any:
    """Inverse of :func:`_externalize_arrays`: replace every array marker by its array.

    The names of the arrays put back are added to ``used``, so that the caller can find arrays that
    no marker refers to.
    """
    if isinstance(value, dict):
        if _ARRAY_MARKER in value:
            name = value[_ARRAY_MARKER]
            if len(value) != 1 or not isinstance(name, str) or name not in arrays:
                raise fail(f"document array reference {value!r} names no array in the file")
            used.add(name)
            return arrays[name]
        return {key: _internalize_arrays(item, arrays, used, fail) for key, item in value.items()}
    if isinstance(value, list):
        return [_internalize_arrays(item, arrays, used, fail) for item in value]
    return value
