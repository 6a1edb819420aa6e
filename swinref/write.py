"""Atomic, explicit writes: every file or directory swinref writes (convert, golden export, Model.save, embed) goes
through here.

    check_target(path, force=force)              # before any work: refuses what the write would fail on later
    with atomic_file(path, force=force) as tmp:  # write tmp (same directory, same extension), renamed on success
        np.savez(tmp, **arrays)
    with atomic_dir(path, force=force) as tmp:   # a directory: filled, then renamed into place
        ...

The rules: a target whose directory is missing or not writable is refused before anything is computed (the check
creates and removes a probe file, because permission bits say nothing for root, ACLs or read-only mounts); an
existing output is kept unless `force`; the data goes to a hidden temporary name beside the target and is renamed
into place only when complete, so an interrupted or failed write leaves the old output (or nothing) and no partial
file. Every failure is an `OutputError` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from swinref.errors import OutputError

__all__ = ["OutputError", "check_target", "check_space", "atomic_file", "atomic_dir"]


def check_target(path: str | os.PathLike, *, force: bool = False, directory: bool = False) -> str:
    """Refuse an output path the write would fail on, before any work; returns its absolute path.

    directory=False: a file; an existing one is kept unless force. directory=True: a directory (a golden case); an
    existing empty one is filled, a non-empty one is replaced only with force."""
    shown = os.fspath(path)
    target = os.path.abspath(shown)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise OutputError(f"cannot write {shown}: directory {parent} does not exist; create it first")
    if os.path.lexists(target):
        if directory and not os.path.isdir(target):
            raise OutputError(f"{shown} is a file, and the output is a directory: give a new directory name")
        if not directory and os.path.isdir(target):
            raise OutputError(f"{shown} is a directory, and the output is a file: give a file name")
        if not force and (not directory or os.listdir(target)):
            what = "is not empty" if directory else "exists"
            raise OutputError(f"{shown} {what}; give a new name, or --force (force=True) to replace it")
    _probe(parent, shown)
    return target


def check_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse a write of `nbytes` that the file system holding `path`'s directory has no room for."""
    from swinref.analysis.memory import human_bytes

    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    free = shutil.disk_usage(parent).free
    if nbytes > free:
        raise OutputError(f"cannot write {os.fspath(path)}: it needs {human_bytes(nbytes)} and {parent} has "
                          f"{human_bytes(free)} free; free some space, choose another directory or make the output "
                          f"smaller")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, force: bool = False) -> Iterator[str]:
    """Yield a temporary path beside `path` (same extension, so writers that add one, like np.savez, keep it);
    rename it to `path` when the block ends without error, remove it otherwise."""
    target = check_target(path, force=force)
    base, ext = os.path.basename(target), os.path.splitext(target)[1]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{base}.", suffix=f".tmp{ext}")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual mode
        _recheck(path, target, force, directory=False)
        os.replace(tmp, target)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, force: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside `path`; when the block ends without error, give it and its files the
    usual modes and rename it to `path` (an existing directory, allowed by force or empty, is replaced)."""
    target = check_target(path, force=force, directory=True)
    parent, base = os.path.dirname(target), os.path.basename(target)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{base}.tmp-")
    try:
        yield tmp
        mask = _umask()
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes the directory private (0700)
        _recheck(path, target, force, directory=True)
        if os.path.isdir(target):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{base}.old-")
            os.rename(target, os.path.join(old, base))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def _recheck(path: str | os.PathLike, target: str, force: bool, directory: bool) -> None:
    """Something may have appeared at the target while the data was computed and written."""
    if force or not os.path.lexists(target):
        return
    if directory and os.path.isdir(target) and not os.listdir(target):
        return
    raise OutputError(f"{os.fspath(path)} appeared while swinref was writing it; nothing was replaced: give a new "
                      f"name, or --force (force=True) to replace it")


def _probe(parent: str, shown: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".swinref-write-probe-")
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: directory {parent} is not writable ({exc.strerror or exc}); "
                          f"choose another directory") from None
    os.close(fd)
    _remove(probe)


def _write_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {os.fspath(path)}: {exc.strerror or exc}; nothing was written (an existing "
                       f"output is unchanged): free space or choose another directory")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
