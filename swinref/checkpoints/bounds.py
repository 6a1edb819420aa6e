"""What every checkpoint reader checks before it allocates, inflates, recurses or trusts a value from a file.

A checkpoint is untrusted input: a damaged or crafted file must end in a CheckpointError that names the problem,
in bounded time and memory, never in a foreign exception, a hang or an exhausted machine. The containers (pth.py,
files.py) and the shared detection code use these helpers; a new layout or container inherits them by reading
through them.

- `open_regular` / `check_regular`: only regular files (a FIFO, a device such as /dev/zero or a socket would
  block or never end).
- `SafeZip`: a zip archive whose members are read only when their declared size is the one expected, stored or
  deflated (bzip2 / LZMA can inflate a few KB into gigabytes in one step), inflated in bounded chunks up to the
  declared size.
- `load_json`: JSON with a size limit and a nesting limit, every parser error as a CheckpointError.
- `shorten`: values from a file quoted in a message, cut to a bounded length.
- `from_file`: turns a foreign exception raised while interpreting a file's contents into a CheckpointError.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Iterator

from swinref.errors import CheckpointError, SwinrefError

__all__ = ["MAX_NESTING", "MAX_NAME", "shorten", "check_regular", "open_regular", "SafeZip", "load_json",
           "from_file", "nesting_depth"]

# Containers nested deeper than this are refused. torch checkpoints nest a few levels (an optimizer state, a
# config node); CPython hashes and compares nested tuples recursively in C, so depth is bounded before that.
MAX_NESTING = 100
# A parameter name longer than this is refused (real names are under 200 characters).
MAX_NAME = 1024
# deflate cannot expand data by more than about 1032:1; a member declaring more is lying about its size.
_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20
_FOREIGN = (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
            RecursionError, UnicodeError, struct.error, zlib.error, EOFError, NotImplementedError)


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters: a file's names and values quoted in messages stay readable."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except RecursionError:
        text = f"<deeply nested {type(value).__name__}>"
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<{type(value).__name__} too long to print>"
    if isinstance(value, str):
        text = repr(text[:limit + 1])
    if len(text) > limit:
        text = text[:limit - 15] + f"... ({len(value) if isinstance(value, (str, bytes)) else 'long'} chars)"
    return text


def check_regular(path: str) -> os.stat_result:
    """The stat of `path` (following links); CheckpointError unless it is a regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        raise CheckpointError(f"{path} is {kind}, not a checkpoint file; give the path of the file itself")
    return st


def open_regular(path: str) -> BinaryIO:
    """Open a regular file for reading without blocking on a FIFO; CheckpointError for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        check_regular(path)  # names what it is
        raise CheckpointError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def nesting_depth(obj: Any, limit: int = MAX_NESTING) -> int:
    """How deep lists and dicts nest in a JSON value (stops counting past `limit`); iterative, so any depth is safe."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def load_json(raw: bytes, what: str, limit: int = 16 * 1024 * 1024) -> Any:
    """JSON from bytes: size, encoding, syntax and nesting checked; `what` names it in the message."""
    if len(raw) > limit:
        raise CheckpointError(f"{what} is {len(raw)} bytes, more than the {limit} a checkpoint's JSON may have")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{what} is not valid JSON ({shorten(str(exc), 120)}): the file is corrupt; "
                              f"re-download or re-save it") from None
    if nesting_depth(value) > MAX_NESTING:
        raise CheckpointError(f"{what} nests deeper than {MAX_NESTING} levels: the file is corrupt")
    return value


@contextlib.contextmanager
def from_file(source: str, what: str) -> Iterator[None]:
    """Inside: code interpreting a file's contents. A foreign exception there means the contents do not have the
    types or shapes that code expects: it becomes a CheckpointError naming `what` was being read."""
    try:
        yield
    except SwinrefError:
        raise
    except _FOREIGN as exc:
        raise CheckpointError(
            f"{source}: {what} failed on a value of the wrong type or shape ({type(exc).__name__}: "
            f"{shorten(str(exc), 160)}): the file is corrupt or not a Swin checkpoint; re-download or re-save it"
        ) from None


class SafeZip:
    """A zip archive read defensively: every zipfile error becomes a CheckpointError naming the archive."""

    def __init__(self, path: str, what: str = "a zip archive"):
        self.path = path
        self.size = check_regular(path).st_size
        with open_regular(path) as f:
            head = f.read(4)
        if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # a member first, or the end record of an empty archive
            raise CheckpointError(
                f"{path} is not {what}: it starts with {head!r}, not a zip archive's 'PK'; the file is corrupt or "
                f"of another kind"
            )
        try:
            self._zf = zipfile.ZipFile(path)
            infos = self._zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, *_FOREIGN) as exc:
            raise CheckpointError(
                f"{path} starts like {what} but its zip directory cannot be read ({type(exc).__name__}: "
                f"{shorten(str(exc), 120)}): the file is truncated or corrupt; re-download or re-save it"
            ) from None
        self.names = [info.filename for info in infos]
        self._infos = {info.filename: info for info in infos}

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._zf.close()

    def declared_size(self, name: str) -> int | None:
        info = self._infos.get(name)
        return None if info is None else info.file_size

    def read(self, name: str, expected: int | None = None, limit: int | None = None) -> bytes:
        """The member's bytes. `expected`: the size it must declare (a tensor's bytes); `limit`: the most it may.
        Checked against the archive before anything is inflated, inflated in 1 MiB steps up to the declared
        size."""
        info = self._infos.get(name)
        where = f"{self.path}: member {shorten(name)}"
        if info is None:
            raise CheckpointError(f"{where} is missing: the archive is truncated or corrupt; re-download or re-save it")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where} is encrypted; swinref reads only plain archives")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{where} uses zip compression method {info.compress_type}; torch and NumPy write stored or "
                f"deflated members only: the file is corrupt or was re-packed; re-save it with torch.save / np.savez"
            )
        size = info.file_size
        if expected is not None and size != expected:
            raise CheckpointError(
                f"{where} holds {size} bytes but the file says it should hold {expected}: the file is truncated or "
                f"corrupt; re-download or re-save it"
            )
        if limit is not None and size > limit:
            raise CheckpointError(f"{where} declares {size} bytes, more than the {limit} it may hold: corrupt file")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO
        if size > info.compress_size * ratio + 64 or info.header_offset + info.compress_size > self.size:
            raise CheckpointError(
                f"{where} declares {size} bytes from {info.compress_size} stored in a file of {self.size}: the "
                f"sizes are inconsistent; the file is truncated or corrupt"
            )
        parts = []
        got = 0
        try:
            with self._zf.open(info) as f:
                while got < size:
                    chunk = f.read(min(_CHUNK, size - got))
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
                if got == size:
                    f.read(1)  # reaches the end of the member: zipfile checks its CRC there
        except (zipfile.BadZipFile, OSError, *_FOREIGN) as exc:
            raise CheckpointError(
                f"{where} is corrupt ({type(exc).__name__}: {shorten(str(exc), 120)}); re-download or re-save the "
                f"file"
            ) from None
        if got != size:
            raise CheckpointError(f"{where} ends after {got} of its {size} bytes: the file is truncated or corrupt")
        return b"".join(parts)
