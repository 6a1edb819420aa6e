"""Classify image files: decode, preprocess as the official evaluation does, run the model, take the top k."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from swinref.api import Model
from swinref.errors import InputError
from swinref.layers import softmax
from swinref.preprocess import class_name, load_image, preprocess

__all__ = ["predict_files", "top_k"]


def top_k(logits: np.ndarray, k: int, num_classes: int) -> list[list[dict[str, Any]]]:
    """Per image, the k most probable classes: index, name, probability (softmax of the logits, float64)."""
    probs = softmax(np.asarray(logits, dtype=np.float64), np)
    k = min(k, probs.shape[-1])
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([{"index": int(i), "name": class_name(int(i), num_classes), "probability": float(row[i])}
                    for i in order])
    return out


def predict_files(model: Model, paths: Sequence[str], *, top: int = 5, batch: int = 8, crop: bool | None = None,
                  on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Top-k predictions for each image file, in order. `on_batch(n)` is called after each batch of n images."""
    if top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    if model.config.num_classes == 0:
        raise InputError("this model has no classification head (num_classes 0); use model.features instead")
    size = model.config.img_size
    results: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch):
        chunk = list(paths[start:start + batch])
        x = np.stack([preprocess(load_image(p), size, crop=crop) for p in chunk])
        logits = model(x)
        if model.backend is not None and model.backend.name == "cupy":
            logits = logits.get()
        for path, best in zip(chunk, top_k(np.asarray(logits), top, model.config.num_classes)):
            results.append({"image": str(path), "top": best})
        if on_batch is not None:
            on_batch(len(chunk))
    return results


