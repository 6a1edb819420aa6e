"""Classify or embed image files in batches: the pipeline `swinref predict` and `swinref embed` share.

Files are read through a Predictor with on_error="skip", so an image that cannot be decoded costs only itself: it
comes back as a failure (path and reason) and the run goes on with the others.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from swinref.errors import InputError
from swinref.inputs import batches
from swinref.predictor import Predictor

__all__ = ["predict_files", "run_files"]


def run_files(predictor: Predictor, paths: Sequence[str | os.PathLike], batch_size: int,
              on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """(paths, outputs) per batch of files, outputs holding an "error" column ('' for the images that decoded).
    `on_batch(n)` is called after each batch of n files."""
    if predictor.on_error != "skip":
        raise InputError("run_files reports bad files instead of stopping: build the Predictor with on_error='skip'")
    predictor.model.check_memory(min(batch_size, len(paths)) or 1)  # before any image is decoded
    for chunk in batches(list(paths), batch_size):
        names = [os.fspath(p) for p in chunk]
        yield names, predictor(names)
        if on_batch is not None:
            on_batch(len(chunk))


def predict_files(predictor: Predictor, paths: Sequence[str | os.PathLike], *, batch: int = 8,
                  on_batch: Callable[[int], None] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Top-k predictions for each image file that decodes, in order, and the files that did not (image, error)."""
    if "top" not in predictor.outputs:
        raise InputError("predict_files needs a Predictor with outputs=('top',)")
    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for names, out in run_files(predictor, paths, batch, on_batch):
        for j, name in enumerate(names):
            if out["error"][j]:
                failures.append({"image": name, "error": out["error"][j]})
                continue
            top = [{"index": int(i), "name": str(n), "probability": float(p)}
                   for i, n, p in zip(out["top_indices"][j], out["top_names"][j], out["top_probs"][j])]
            results.append({"image": name, "top": top})
    return results, failures
