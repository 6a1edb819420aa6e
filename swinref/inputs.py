"""The image files of a whole dataset: folders (recursively) and glob patterns, in a stable order.

`predict` and `embed` take the same arguments: files, folders and patterns (`photos/`, `'shots/**/*.jpg'`), and
both read the result in batches through `swinref.predictor.Predictor`, so a bad file costs only itself.
"""

from __future__ import annotations

import glob
import os
import pathlib
from typing import Iterable, Iterator, Sequence

from swinref.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "find_images", "batches"]

# What a folder is searched for: the suffixes of the formats Pillow decodes that hold photographs. A file named
# explicitly is read whatever its suffix.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                            ".pbm", ".pnm", ".jp2", ".jfif", ".tga", ".ico", ".avif", ".heic"})


def _folder_images(folder: pathlib.Path) -> list[pathlib.Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden folders hold caches, not the dataset
        found += [pathlib.Path(root, f) for f in sorted(files)
                  if not f.startswith(".") and pathlib.Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return found


def find_images(sources: Iterable[str | os.PathLike]) -> list[pathlib.Path]:
    """Image files named by files, folders (searched recursively for IMAGE_SUFFIXES) and glob patterns (`**`
    crosses folders), in the order given, each folder's files sorted; every file once.

    A source that names nothing (a missing file, a pattern that matches nothing, an empty folder) raises
    InputError: a typo should not look like an empty dataset."""
    out: list[pathlib.Path] = []
    seen: set[pathlib.Path] = set()
    for source in sources:
        text = os.fspath(source)
        path = pathlib.Path(text)
        if path.is_dir():
            found = _folder_images(path)
            if not found:
                raise InputError(f"folder {text!r} holds no image files (searched recursively for "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...); check the folder")
        elif path.exists():
            found = [path]
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            found = []
            for m in matches:
                mp = pathlib.Path(m)
                found += _folder_images(mp) if mp.is_dir() else [mp]
            if not found:
                raise InputError(f"pattern {text!r} matches no files; check it (quote it so the shell does not "
                                 "expand it, and use ** to search sub-folders)")
        else:
            raise InputError(f"image {text!r} does not exist; check the path")
        for f in found:
            key = pathlib.Path(os.path.abspath(f))
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most `size` items."""
    if size < 1:
        raise InputError(f"batch size must be a positive integer, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]
