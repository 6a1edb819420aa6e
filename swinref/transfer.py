"""Resolution transfer: use a checkpoint at another window or image size, as the official fine-tuning does.

V1: each stage's relative position bias table [(2S-1)^2, nH] is resized to the new window's [(2M-1)^2, nH] by
bicubic interpolation of the [nH, 2S-1, 2S-1] grid, exactly what microsoft/Swin-Transformer utils.py
`load_pretrained` does when fine-tuning 224/window 7 -> 384/window 12:

    torch.nn.functional.interpolate(table.permute(1, 0).view(1, nH, S1, S1), size=(S2, S2), mode="bicubic")

(align_corners defaults to False). `bicubic_resize` is that interpolation in NumPy: Keys' cubic convolution with
A = -0.75, source coordinate (dst + 0.5) * in/out - 0.5, neighbours clamped at the border, as torch's
upsample_bicubic2d. It is computed in float64 and cast back to the table's dtype.

V2: nothing is resized. The continuous position bias MLP is reused and evaluated on the new window's coordinates,
normalised by the window the MLP was trained with: the official 12 -> 16 fine-tuning configs set
PRETRAINED_WINDOW_SIZES to the old per-stage windows [12, 12, 12, 6]. `v2_transfer_config` does that.

Pure NumPy on the host: checkpoints are translated before they are placed on a device.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from swinref.config import SwinConfig
from swinref.plan import build_windows
from swinref.errors import CheckpointError

__all__ = ["bicubic_resize", "resize_bias_table", "resize_v1_tables", "v2_transfer_config", "CUBIC_A"]

# The cubic convolution coefficient torch (and OpenCV) use for bicubic interpolation.
CUBIC_A = -0.75

_TABLE = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$")


def _cubic_weights(t: np.ndarray, A: float = CUBIC_A) -> np.ndarray:
    """[n] fractional offsets -> [n, 4] weights of the neighbours at -1, 0, +1, +2 (Keys' kernel)."""

    def near(x):  # |x| <= 1
        return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A

    return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of 1-D bicubic interpolation, align_corners=False, borders clamped (float64)."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5  # not clamped at 0: torch's cubic rule
    base = np.floor(src)
    weights = _cubic_weights(src - base)  # n_out, 4
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, n_in - 1)
        np.add.at(matrix, (rows, idx), weights[:, k])
    return matrix


def bicubic_resize(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[..., h, w] -> [..., H, W]: torch.nn.functional.interpolate(mode="bicubic", align_corners=False).

    Separable: rows, then columns, each a small matrix product; float64 inside, the input's dtype out.
    """
    grid = np.asarray(grid)
    if grid.ndim < 2 or min(grid.shape[-2:]) < 1:
        raise CheckpointError(f"cannot resize an array of shape {list(grid.shape)}: expected [..., h, w]")
    H, W = size
    Mh = _resize_matrix(grid.shape[-2], H)
    Mw = _resize_matrix(grid.shape[-1], W)
    out = Mh @ grid.astype(np.float64) @ Mw.T  # [..., H, h] @ [..., h, w] @ [w, W]
    return out.astype(grid.dtype if grid.dtype.kind == "f" else np.float64)


def resize_bias_table(table: np.ndarray, window: int) -> np.ndarray:
    """A V1 relative position bias table [(2S-1)^2, nH] resized to window M: [(2M-1)^2, nH] (official rule)."""
    rows, nH = table.shape
    side = int(round(rows ** 0.5))
    if side * side != rows:
        raise CheckpointError(f"a relative position bias table has {rows} rows, which is not a square (2M-1)^2")
    new = 2 * window - 1
    grid = np.ascontiguousarray(table.T).reshape(nH, side, side)  # table.permute(1, 0).view(nH, S1, S1)
    return np.ascontiguousarray(bicubic_resize(grid, (new, new)).reshape(nH, new * new).T)


def resize_v1_tables(params: dict[str, np.ndarray], cfg: SwinConfig) -> tuple[dict[str, np.ndarray], list[str]]:
    """Resize every V1 bias table whose window differs from cfg's plan; returns (params, one line per stage).

    Tables whose head count differs are left alone, so the shape check reports them (the official loader
    skips them with a warning).
    """
    if cfg.version != 1 or cfg.is_video:
        # Video Swin tables are 3-D; one for another window is reported by the shape check.
        return params, []
    heads, windows = cfg.num_heads, [w[0] for w in build_windows(cfg)]
    out = dict(params)
    changed: dict[int, tuple[int, int, int]] = {}  # stage -> (old window, new window, blocks)
    for name, table in params.items():
        m = _TABLE.match(name)
        if not m or table.ndim != 2:
            continue
        i = int(m.group(1))
        if i >= len(windows) or table.shape[1] != heads[i]:
            continue
        M = windows[i]
        if table.shape[0] == (2 * M - 1) ** 2:
            continue
        side = int(round(table.shape[0] ** 0.5))
        out[name] = resize_bias_table(table, M)
        old, new, n = changed.get(i, ((side + 1) // 2, M, 0))
        changed[i] = (old, new, n + 1)
    lines = [
        f"stage {i}: relative_position_bias_table of {n} block(s) resized from window {old} to {new} "
        f"({2 * old - 1}x{2 * old - 1} -> {2 * new - 1}x{2 * new - 1} per head, bicubic as the official fine-tuning)"
        for i, (old, new, n) in sorted(changed.items())
    ]
    return out, lines


def v2_transfer_config(source: SwinConfig, target: SwinConfig) -> tuple[SwinConfig, list[str]]:
    """The target config with the pretrained windows the checkpoint's position-bias MLP was trained with.

    When the per-stage windows of `target` (after the clamp rule at its image size) differ from `source`'s, each
    stage's pretrained window becomes the source's pretrained window if it had one, else the source's window:
    the official fine-tuning 12 -> 16 uses PRETRAINED_WINDOW_SIZES = the old windows [12, 12, 12, 6].
    """
    if source.version != 2 or target.version != 2 or len(source.depths) != len(target.depths):
        return target, []
    old = [w[0] for w in build_windows(source)]
    new = [w[0] for w in build_windows(target)]
    if old == new:
        return target, []
    pretrained = tuple(p or w for p, w in zip(source.pretrained_window_sizes, old))
    if pretrained == target.pretrained_window_sizes:
        return target, []
    result = dataclasses.replace(target, pretrained_window_sizes=pretrained)
    line = (
        f"continuous position bias: windows {','.join(map(str, old))} -> {','.join(map(str, new))}; the MLP is "
        f"reused with pretrained_window_sizes {','.join(map(str, pretrained))} (the windows it was trained with, "
        f"as the official fine-tuning from one window to another)"
    )
    return result, [line]
