"""Window geometry for any number of spatial axes: partition, reverse, the cyclic shift's regions and mask, the
relative position tables and the token gather of a padded, shifted map.

Shapes use the paper's letters with S the spatial sides: S = (H, W) for images, (D, H, W) for video (Video Swin),
or a single side. Every window, shift and padded size is a per-axis tuple; the window M x M of the 2-D paper is
(M, M), N = prod(window) tokens per window and nW the number of windows of a map.

The index tables and masks depend only on these tuples, never on data: they are built on the host with NumPy,
cached and read-only, and moved to the compute device once by the caller. The two array functions (partition and
reverse) take the array namespace `xp` explicitly and use only array-API standard calls, so they run on any backend.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

import numpy as np

from swinref.plan import MASK_VALUE

__all__ = [
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shift_region_labels",
    "shift_mask",
    "relative_coords_table",
    "window_token_index",
    "MASK_VALUE",
]



def _window_axes(k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Permutations between [B, g1, w1, ..., gk, wk, C] (grid and window side per axis, interleaved) and
    [B, g1..gk, w1..wk, C] (the window grid first): (to grid-first, back to interleaved)."""
    grid_first = (0, *range(1, 2 * k, 2), *range(2, 2 * k + 1, 2), 2 * k + 1)
    interleaved = tuple(int(a) for a in np.argsort(grid_first))
    return grid_first, interleaved


def window_partition(x: Any, window: tuple[int, ...], xp: Any) -> Any:
    """[B, *S, C] -> [B*nW, N, C], every side of S divisible by its window side.

    Windows in row-major order over the window grid (b first), tokens row-major inside a window.
    """
    B, *spatial, C = x.shape
    grid = [n // w for n, w in zip(spatial, window, strict=True)]
    to_grid_first, _ = _window_axes(len(window))
    x = xp.reshape(x, (B, *(side for g, w in zip(grid, window) for side in (g, w)), C))
    x = xp.permute_dims(x, to_grid_first)  # B, *grid, *window, C
    return xp.reshape(x, (B * math.prod(grid), math.prod(window), C))


def window_reverse(windows: Any, window: tuple[int, ...], spatial: tuple[int, ...], xp: Any) -> Any:
    """[B*nW, N, C] -> [B, *S, C], the inverse of window_partition for a map of sides `spatial` (S)."""
    C = windows.shape[-1]
    grid = tuple(n // w for n, w in zip(spatial, window, strict=True))
    B = windows.shape[0] // math.prod(grid)
    _, to_interleaved = _window_axes(len(window))
    x = xp.reshape(windows, (B, *grid, *window, C))
    x = xp.permute_dims(x, to_interleaved)  # B, g1, w1, ..., gk, wk, C
    return xp.reshape(x, (B, *spatial, C))


def _host_table(build: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Cache a host table builder and hand out one read-only array per geometry.

    Arguments are bound to the signature (defaults filled in) and sequences become tuples of int first, so
    positional and keyword calls, lists and tuples of NumPy integers all share one cache entry and none of them
    fails as unhashable.
    """
    signature = inspect.signature(build)

    @functools.lru_cache(maxsize=64)
    def cached(*args: Any) -> np.ndarray:
        table = build(*args)
        table.setflags(write=False)
        return table

    @functools.wraps(build)
    def table(*args: Any, **kwargs: Any) -> np.ndarray:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return cached(*(tuple(int(v) for v in a) if isinstance(a, (tuple, list)) else a for a in bound.args))

    table.cache_info, table.cache_clear = cached.cache_info, cached.cache_clear  # type: ignore[attr-defined]
    return table


def _windows_of(table: np.ndarray, window: tuple[int, ...]) -> np.ndarray:
    """[*S] host table -> [nW, N], its entries cut into windows like the tokens of a map of that size."""
    return window_partition(table[None, ..., None], window, np)[:, :, 0]


@_host_table
def relative_position_index(window: tuple[int, ...]) -> np.ndarray:
    """int64 [N, N] row of the prod(2w-1)-row bias table for query i and key j.

    Mixed radix over the per-axis offsets d = query coordinate - key coordinate, first axis most significant:
    2-D (dh + Wh-1)*(2Ww-1) + (dw + Ww-1), which for a square window M is (hi-hj+M-1)*(2M-1) + (wi-wj+M-1).
    """
    coords = np.indices(window).reshape(len(window), -1)  # k, N
    sides = np.asarray(window)[:, None, None]
    offsets = coords[:, :, None] - coords[:, None, :] + sides - 1  # k, N, N, each in 0..2w-2
    return np.ravel_multi_index(tuple(offsets), tuple(2 * w - 1 for w in window)).astype(np.int64)


@_host_table
def shift_region_labels(padded: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]) -> np.ndarray:
    """int64 [*S] region label of every position of the shifted, padded map of sides `padded`.

    Per axis the official bands are the slices (0, -w), (-w, -s), (-s, None): after a cyclic shift by s the last
    s positions hold positions that wrapped round from the start, and the w - s before them are real neighbours of
    each other but not of the wrapped ones. The label is the mixed-radix number of the per-axis bands (3 per axis).
    """
    bands = []
    for n, w, s in zip(padded, window, shift, strict=True):
        axis_bands = np.zeros(n, dtype=np.int64)
        # Assigned in the peers' order, later slices overwriting earlier ones: with s == 0 the slice (-0, None) is
        # the whole axis, so an unshifted axis is one band, as in timm and torchvision when only some axes shift.
        for band, (start, stop) in enumerate(((0, -w), (-w, -s), (-s, None))):
            axis_bands[start:stop] = band
        bands.append(axis_bands)
    return np.ravel_multi_index(np.ix_(*bands), (3,) * len(bands)).astype(np.int64)


@_host_table
def shift_mask(padded: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]) -> np.ndarray:
    """float64 [nW, N, N] additive mask for shifted-window attention: 0 within a region, MASK_VALUE across."""
    labels = _windows_of(shift_region_labels(padded, window, shift), window)  # nW, N
    return np.where(labels[:, :, None] != labels[:, None, :], MASK_VALUE, 0.0)


@_host_table
def relative_coords_table(window: tuple[int, ...], pretrained_window: tuple[int, ...] | None = None) -> np.ndarray:
    """Swin V2: float64 [prod(2w-1), k] log-spaced relative coordinates fed to the continuous position bias MLP.

    Offsets -(w-1)..(w-1) on each axis (rows in meshgrid "ij" order, first axis slowest), divided per axis by
    (pretrained w - 1) when the model was fine-tuned from another window (a pretrained side 0 means none), else by
    (w - 1), scaled to [-8, 8], then sign(t) * log2(|t| + 1) / log2(8).
    """
    offsets = [np.arange(-(w - 1), w, dtype=np.float64) for w in window]
    table = np.stack(np.meshgrid(*offsets, indexing="ij"), axis=-1).reshape(-1, len(window))
    pretrained = pretrained_window or (0,) * len(window)
    denominator = np.array([(p if p > 0 else w) - 1 for w, p in zip(window, pretrained, strict=True)], np.float64)
    # An axis with denominator 0 has the single offset 0 (w == 1), where the official 0/0 would give NaN; 0 is
    # the limit, so that axis is left undivided.
    table = table / np.where(denominator > 0, denominator, 1.0)
    table = table * 8.0
    return np.sign(table) * np.log2(np.abs(table) + 1.0) / math.log2(8)


def _source_positions(n: int, padded: int, shift: int, roll_before_pad: bool) -> np.ndarray:
    """[padded] source position on one axis of each position of the padded, rolled map; -1 marks padding."""
    i = np.arange(padded)
    if roll_before_pad:
        return np.where(i < n, (i + shift) % n, -1)
    src = (i + shift) % padded
    return np.where(src < n, src, -1)


@_host_table
def window_token_index(
    spatial: tuple[int, ...], padded: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
    roll_before_pad: bool,
) -> np.ndarray:
    """int64 [nW, N] row-major flat index into the prod(S) positions of the unpadded map (S = `spatial`) of the
    token at each window position of the padded, cyclically shifted map; -1 where the position is padding.

    roll_before_pad=False: pad each axis at its end to `padded`, then roll by -shift, so position i holds source
    (i + s) mod padded, padding when that is >= n. roll_before_pad=True: roll the n real positions by -shift,
    then pad, so position i < n holds (i + s) mod n. Windows in window_partition order.
    """
    sources = [_source_positions(n, p, s, roll_before_pad) for n, p, s in zip(spatial, padded, shift, strict=True)]
    grids = np.ix_(*sources)
    is_padding = functools.reduce(np.logical_or, (g < 0 for g in grids))
    flat = np.ravel_multi_index(tuple(np.maximum(g, 0) for g in grids), spatial)
    return _windows_of(np.where(is_padding, -1, flat).astype(np.int64), window)
