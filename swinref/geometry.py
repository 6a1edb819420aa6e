"""Window geometry: partition, reverse, cyclic shift, the shift mask and the relative position tables.

The index tables and masks depend only on (H, W, M, s), never on data: they are built on the host with NumPy,
cached, and moved to the compute device once by the caller. The two array functions (partition and reverse) take
the array namespace `xp` explicitly so they run on any backend.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

__all__ = [
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shift_region_labels",
    "shift_mask",
    "relative_coords_table",
    "MASK_VALUE",
]

# The value added to attention logits of token pairs from different regions. All four peers use -100.0, not
# -inf: exp(-100) is tiny but not zero, and matching it keeps float64 outputs within 1e-9 of theirs.
MASK_VALUE = -100.0


def window_partition(x: Any, M: int, xp: Any) -> Any:
    """[B, H, W, C] -> [B*nW, N, C] with windows in row-major order, N = M*M (H, W divisible by M)."""
    B, H, W, C = x.shape
    x = xp.reshape(x, (B, H // M, M, W // M, M, C))
    x = xp.permute_dims(x, (0, 1, 3, 2, 4, 5))  # B, H/M, W/M, M, M, C
    return xp.reshape(x, (B * (H // M) * (W // M), M * M, C))


def window_reverse(windows: Any, M: int, H: int, W: int, xp: Any) -> Any:
    """[B*nW, N, C] -> [B, H, W, C], the inverse of window_partition."""
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // M) * (W // M))
    x = xp.reshape(windows, (B, H // M, W // M, M, M, C))
    x = xp.permute_dims(x, (0, 1, 3, 2, 4, 5))  # B, H/M, M, W/M, M, C
    return xp.reshape(x, (B, H, W, C))


@functools.lru_cache(maxsize=64)
def relative_position_index(M: int) -> np.ndarray:
    """[N, N] index into the (2M-1)^2-row bias table: (hi-hj+M-1)*(2M-1) + (wi-wj+M-1), i query, j key."""
    h, w = np.divmod(np.arange(M * M), M)
    dh = h[:, None] - h[None, :] + M - 1
    dw = w[:, None] - w[None, :] + M - 1
    index = dh * (2 * M - 1) + dw
    index.setflags(write=False)
    return index


@functools.lru_cache(maxsize=64)
def shift_region_labels(H: int, W: int, M: int, s: int) -> np.ndarray:
    """[H, W] region label of every position of the shifted (and padded) map: 3 bands per axis, 9 regions.

    Bands follow the official slices (0, -M), (-M, -s), (-s, None): after a cyclic shift by s the last M-s rows
    of the map hold rows that were not neighbours of the first s rows.
    """
    bands_h = np.zeros(H, dtype=np.int64)
    bands_w = np.zeros(W, dtype=np.int64)
    for axis_bands, n in ((bands_h, H), (bands_w, W)):
        for label, (start, stop) in enumerate(((0, -M), (-M, -s), (-s, None))):
            axis_bands[slice(start, stop)] = label
        del n
    labels = bands_h[:, None] * 3 + bands_w[None, :]
    labels.setflags(write=False)
    return labels


@functools.lru_cache(maxsize=64)
def shift_mask(H: int, W: int, M: int, s: int) -> np.ndarray:
    """[nW, N, N] additive mask (0 or MASK_VALUE) for shifted-window attention on an H x W map (float64)."""
    labels = shift_region_labels(H, W, M, s)
    windows = window_partition(labels[None, :, :, None], M, np)[:, :, 0]  # nW, N
    different = windows[:, :, None] != windows[:, None, :]
    mask = np.where(different, MASK_VALUE, 0.0)
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=64)
def relative_coords_table(M: int, pretrained_M: int = 0) -> np.ndarray:
    """Swin V2: [(2M-1)^2, 2] log-spaced relative coordinates fed to the continuous position bias MLP (float64).

    Offsets in -(M-1)..(M-1) on each axis (h first, then w), divided by (pretrained window - 1) when the model was
    fine-tuned from a smaller window, else by (M - 1), scaled to [-8, 8], then sign(t) * log2(|t| + 1) / log2(8).
    """
    offsets = np.arange(-(M - 1), M, dtype=np.float64)
    th, tw = np.meshgrid(offsets, offsets, indexing="ij")
    table = np.stack([th, tw], axis=-1).reshape(-1, 2)
    denominator = (pretrained_M - 1) if pretrained_M > 0 else (M - 1)
    if denominator > 0:
        table = table / denominator
    # else: M == 1 has the single offset 0, where the official division 0/0 would give NaN; 0 is the limit.
    table = table * 8.0
    table = np.sign(table) * np.log2(np.abs(table) + 1.0) / math.log2(8)
    table.setflags(write=False)
    return table
