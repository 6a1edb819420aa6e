"""A compact, deterministic fingerprint of a large activation, for fixtures that must stay small.

A stage output [B, h, w, C] of an 800x1333 image has over a million values; a fixture stores this instead:

    sketch(x)[b] = [ p_1 .. p_k | mean_C | last_row_C | last_col_C | max_abs ]      (float64, k + 3C + 1 values)

- p_j = sum_{t,c} x[b, t, c] * a_j[t] * g_j[c] / sqrt(T * C): k random projections (k = PROJECTIONS) over the
  T = h*w tokens and C channels. The projection vectors are separable, a_j[t] * g_j[c], with
  a = counter_uniform(f"sketch:tokens:{T}", T*k) and g = counter_uniform(f"sketch:channels:{C}", C*k)
  (swinref.params: values in [-1, 1), reproducible in any language), so no T*C*k matrix is ever built.
  An error that spreads over the map moves the projections by about its own size; an error confined to one token
  moves them by about its size / sqrt(T*C), which a float64 comparison still sees (at 1e-9, a 1e-3 change of one
  token of a million-value map shows: see tests/test_sketch.py) but a float32 one (1e-4) does not.
- mean_C: the per-channel mean over all tokens.
- last_row_C, last_col_C: the per-channel means over the last token row (x[b, h-1, :, :]) and the last token
  column (x[b, :, w-1, :]): the tokens next to the zero padding of the bottom and right edges, where the peers'
  padding rules differ, so a wrong edge moves these by 1/w (1/h) of its size, not 1/(h*w).
- max_abs: max |x[b]|, the scale a comparison tolerance is relative to (`sketch_scale`).

Every sum runs in float64 in a fixed order (np.einsum without BLAS), so the same input gives the same bits on
every run; float64 rounding of the input moves the sketch by rounding only (tests/test_sketch.py).

`compact(x)` keeps small arrays whole (at most FULL_LIMIT values) and sketches larger ones; a check sketches its
own output with `sketch` and compares the two sketches.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from swinref.params import counter_uniform

__all__ = ["PROJECTIONS", "FULL_LIMIT", "sketch", "sketch_scale", "sketch_parts", "compact", "scaled_error"]

PROJECTIONS = 16  # k
FULL_LIMIT = 1024  # arrays with at most this many values are stored whole


@functools.lru_cache(maxsize=32)
def _vectors(name: str, n: int, k: int) -> np.ndarray:
    v = counter_uniform(f"sketch:{name}:{n}", n * k).reshape(n, k)
    v.setflags(write=False)
    return v


def sketch(x: Any, k: int = PROJECTIONS) -> np.ndarray:
    """[B, k + 3C + 1] float64 fingerprint of a channels-last map x [B, h, w, C] (layout in the module doc)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"sketch takes a channels-last map [B, h, w, C], got shape {list(x.shape)}")
    B, h, w, C = x.shape
    T = h * w
    xs = x.astype(np.float64).reshape(B, T, C)
    a, g = _vectors("tokens", T, k), _vectors("channels", C, k)
    per_token = np.einsum("btc,ck->btk", xs, g, optimize=False)
    proj = np.einsum("btk,tk->bk", per_token, a, optimize=False) / math.sqrt(T * C)
    x64 = xs.reshape(B, h, w, C)
    mean = x64.mean(axis=(1, 2))
    last_row = x64[:, h - 1, :, :].mean(axis=1)
    last_col = x64[:, :, w - 1, :].mean(axis=1)
    max_abs = np.abs(x64).max(axis=(1, 2, 3))[:, None]
    return np.concatenate([proj, mean, last_row, last_col, max_abs], axis=1)


def sketch_parts(s: np.ndarray, k: int = PROJECTIONS) -> dict[str, np.ndarray]:
    """The named parts of a sketch [B, k + 3C + 1]: projections, mean, last_row, last_col, max_abs."""
    C = (s.shape[-1] - k - 1) // 3
    cuts = np.cumsum([k, C, C, C])
    proj, mean, row, col, max_abs = np.split(s, cuts, axis=-1)
    return {"projections": proj, "mean": mean, "last_row": row, "last_col": col, "max_abs": max_abs[..., 0]}


def sketch_scale(s: np.ndarray, k: int = PROJECTIONS) -> float:
    """max |x| of the sketched array (over the batch): the scale a tolerance is taken relative to."""
    return float(np.max(sketch_parts(s, k)["max_abs"]))


def compact(x: Any, limit: int = FULL_LIMIT) -> tuple[str, np.ndarray]:
    """("full", x) when x has at most `limit` values, else ("sketch", sketch(x))."""
    x = np.asarray(x)
    if x.size <= limit:
        return "full", x
    return "sketch", sketch(x)


def scaled_error(reference: np.ndarray, candidate: np.ndarray, stored: str) -> tuple[float, float]:
    """(max |candidate - reference|, scale) for a stored "full" array or a "sketch": a check passes when the
    error is at most tolerance * scale. The scale is max(1, max |x|) of the original array (for a sketch its
    recorded max_abs), so tolerances are absolute for values up to 1 and relative beyond."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shape {list(candidate.shape)} != reference {list(reference.shape)}")
    if stored == "sketch":
        peak = sketch_scale(reference)
    elif stored == "full":
        peak = float(np.abs(reference).max()) if reference.size else 0.0
    else:
        raise ValueError(f"stored must be 'full' or 'sketch', got {stored!r}")
    return float(np.abs(candidate - reference).max()), max(1.0, peak)
