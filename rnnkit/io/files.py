"""Reading files a user names, safely: regular files only, reads bounded by size and by memory.

Every file rnnkit reads on a user's word -- a training text, a prime, a checkpoint -- goes through
:func:`read_regular_file`.  A path that names a directory, a device (``/dev/zero``, ``/dev/stdin``, a
symlink to one), a FIFO or a socket is refused before a single byte is read: such a "file" can be
endless, or block forever.  A regular file is read for at most the size it had when it was opened,
so a file that keeps growing cannot make the read endless either, and a file larger than the given
bound (by default: the memory available now) is refused before it is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["UnreadableFile", "available_memory", "format_bytes", "read_regular_file"]

_CHUNK = 1 << 24  # bytes per read() call


class UnreadableFile(ValueError):
    """A named file that cannot or must not be read; the message names the file and the reason.

    ``problem`` is the reason alone (``"does not exist"``), for callers that word the message their way.
    """

    def __init__(self, what: str, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{what} {str(path)!r} {problem}")
        self.what, self.path, self.problem = what, str(path), problem


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (Linux: ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KB"``: a size for messages."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if unit == "TB" and count >= 10_000:
            return f"{count:.2e} TB"
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def read_regular_file(path: str | os.PathLike[str], what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), read with a bound.

    Args:
        path: the file.
        what: names the file in messages (``"data file"``, ``"checkpoint file"``).
        max_bytes: refuse a larger file; None: the memory available now (when known).

    Raises:
        UnreadableFile: the path does not exist, is a directory, is not a regular file (a device,
            FIFO or socket), cannot be opened, or is larger than the bound.
    """
    def fail(problem: str) -> UnreadableFile:
        return UnreadableFile(what, path, problem)

    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer before we could look
    # at what it is.  It changes nothing for a regular file.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(Path(path), flags)
    except FileNotFoundError:
        raise fail("does not exist") from None
    except IsADirectoryError:
        raise fail("is a directory, not a file") from None
    except OSError as error:
        if Path(path).is_dir():
            raise fail("is a directory, not a file") from None
        raise fail(f"cannot be read: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise fail("is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise fail("is not a regular file (a device, pipe or socket); pass a file on disk")
        size = info.st_size
        limit = max_bytes if max_bytes is not None else available_memory()
        if limit is not None and size > limit:
            bound = "the limit" if max_bytes is not None else "the memory available"
            raise fail(f"is {format_bytes(size)}, more than {bound} ({format_bytes(limit)})")
        chunks, remaining = [], size
        while remaining > 0:
            try:
                chunk = os.read(fd, min(_CHUNK, remaining))
            except OSError as error:
                raise fail(f"cannot be read: {error.strerror or error}") from None
            if not chunk:
                break  # the file shrank while we read it: what is there is what we have
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
