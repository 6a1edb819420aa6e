"""Infer a Video Swin SwinConfig from canonical parameters (detect.infer_config hands over a 5-D patch kernel).

What the weights tell: embed_dim, the per-axis patch (T, H, W) and input channels (patch_embed.proj.weight
[C, in, pt, ph, pw]), depths, heads (the bias tables' second dim), num_classes, mlp_ratio, qkv_bias, patch_norm.
The window is (Wd, Wh, Ww) with (2Wd-1)(2Wh-1)(2Ww-1) table rows. The rows alone fit several windows (2535 rows:
(8, 7, 7), (7, 8, 7), (1, 7, 98), ...), so the relative_position_index buffer [N, N] the peers save (the full
window's index: every stage keeps its full table, video models clamp at run time only) picks the one whose index it
is. Without the buffer the file's config decides, else the one window with Wh = Ww > 1; an ambiguity left is
refused with the candidates.

What they do not tell: the clip size (nothing in a video model depends on it at build time). It comes from the
file's config, else the registry entry with the same architecture, else the Kinetics clip every released model
was trained with, 32x224x224.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import numpy as np

from swinref.errors import CheckpointError

__all__ = ["infer_video_config", "video_window_hints", "relative_position_index_3d", "windows_for_rows",
           "DEFAULT_CLIP"]

DEFAULT_CLIP = (32, 224, 224)  # the Kinetics / SSv2 clip of every released Video Swin model
_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_FIRST_INDEX = "layers.0.blocks.0.attn.relative_position_index"


def relative_position_index_3d(window: tuple[int, int, int]) -> np.ndarray:
    """[N, N] index into the (2Wd-1)(2Wh-1)(2Ww-1)-row table, tokens in (d, h, w) row-major order (the peers')."""
    coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1)
    rel = (coords[:, :, None] - coords[:, None, :]) + (np.asarray(window) - 1)[:, None, None]
    return rel[0] * (2 * window[1] - 1) * (2 * window[2] - 1) + rel[1] * (2 * window[2] - 1) + rel[2]


def windows_for_rows(rows: int) -> list[tuple[int, int, int]]:
    """Every (Wd, Wh, Ww) with (2Wd-1)(2Wh-1)(2Ww-1) = rows."""
    if rows < 1 or rows % 2 == 0:
        return []
    small = [f for f in range(1, math.isqrt(rows) + 1, 2) if rows % f == 0]
    odd = sorted(set(small + [rows // f for f in small]))  # every divisor of an odd number is odd
    out = []
    for a, b in itertools.product(odd, odd):
        c, rest = divmod(rows, a * b)
        if rest == 0 and c % 2 == 1:
            out.append(((a + 1) // 2, (b + 1) // 2, (c + 1) // 2))
    return out


def video_window_hints(buffers: dict[str, Any], params: dict) -> dict[str, Any]:
    """{'window_size': (Wd, Wh, Ww)} when the first block's saved relative_position_index is the index of exactly
    one window that fits its table; {} otherwise (the buffer is only evidence, never used for computing)."""
    index, table = buffers.get(_FIRST_INDEX), params.get("layers.0.blocks.0.attn.relative_position_bias_table")
    if index is None or table is None or getattr(table, "ndim", 0) != 2:
        return {}
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[0] != index.shape[1] or index.dtype.kind not in "iu":
        return {}
    fits = [w for w in windows_for_rows(int(table.shape[0])) if math.prod(w) == index.shape[0]
            and np.array_equal(relative_position_index_3d(w), index)]
    return {"window_size": fits[0]} if len(fits) == 1 else {}


def _window_from_tables(rows: list[int], hint: Any, source: str) -> tuple[int, int, int]:
    if len(set(rows)) != 1:
        raise CheckpointError(
            f"{source}: the stages' bias tables have {rows} rows; a Video Swin model keeps the same full window in "
            f"every stage: the file is damaged or not a Video Swin model"
        )
    candidates = windows_for_rows(rows[0])
    if not candidates:
        raise CheckpointError(f"{source}: layers.0.blocks.0.attn.relative_position_bias_table has {rows[0]} rows, "
                              f"which is not (2Wd-1)(2Wh-1)(2Ww-1) for any window")
    if hint is not None:
        hint = tuple(int(v) for v in hint) if isinstance(hint, (tuple, list)) else (int(hint),) * 3
        if hint not in candidates:
            raise CheckpointError(f"{source}: window {hint} does not fit its {rows[0]}-row bias tables (windows that "
                                  f"do: {candidates})")
        return hint
    square = [w for w in candidates if w[1] == w[2] > 1]
    if len(square) == 1:
        return square[0]
    raise CheckpointError(
        f"{source}: its {rows[0]}-row bias tables fit the windows {candidates} and the file saves no "
        f"relative_position_index to tell them apart; give the window (config=..., CLI --window TxHxW)"
    )


def infer_video_config(params: dict, hints: dict[str, Any], source: str) -> Any:
    """The Video Swin configuration of canonical params (patch_embed.proj.weight is [C, in, pt, ph, pw])."""
    from swinref.checkpoints.arch import param_shape, registry_matches, same_arch
    from swinref.config import SwinConfig
    from swinref.errors import ConfigError

    hints = dict(hints)
    embed_dim, in_chans, *patch = param_shape(params, "patch_embed.proj.weight", source, "every Swin model has")
    blocks: dict[int, int] = {}
    for name in params:
        if m := _BLOCK.match(name):
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    if sorted(blocks) != list(range(len(blocks))) or not blocks:
        raise CheckpointError(f"{source}: its stages {sorted(blocks)} are not numbered 0..L-1 (layers.i.blocks.j.*): "
                              f"truncated or not a Swin model")
    depths = tuple(blocks[i] for i in range(len(blocks)))
    if any(n.endswith("attn.logit_scale") for n in params):
        raise CheckpointError(f"{source}: a 5-D patch embedding with Swin V2 attention (logit_scale): Video Swin is a "
                              f"V1 model, swinref reads no V2 video checkpoints")
    tables = [param_shape(params, f"layers.{i}.blocks.0.attn.relative_position_bias_table", source, "a Video Swin block "
                     "has") for i in range(len(depths))]
    window = _window_from_tables([t[0] for t in tables], hints.get("window_size"), source)
    fc1 = param_shape(params, "layers.0.blocks.0.mlp.fc1.weight", source, "every block has")
    detected: dict[str, Any] = dict(
        version=1, patch_size=tuple(patch), in_chans=in_chans, embed_dim=embed_dim, depths=depths,
        num_heads=tuple(t[1] for t in tables), mlp_ratio=fc1[0] / embed_dim, window_size=window,
        num_classes=params["head.weight"].shape[0] if "head.weight" in params else 0,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in params, patch_norm="patch_embed.norm.weight" in params,
    )
    for key, value in detected.items():
        if key in hints and _as_tuple(hints[key]) != _as_tuple(value):
            raise CheckpointError(f"{source}: its config says {key}={hints[key]!r} but the weights show {value!r}; "
                                  f"the config file does not belong to these weights")
    fields = {**hints, **detected}
    fields.pop("name", None)
    if "img_size" not in fields:
        same = registry_matches({k: v for k, v in fields.items() if k != "img_size"})
        fields["img_size"] = same[0].img_size if same else DEFAULT_CLIP
    fields.setdefault("layer_norm_eps", 1e-5)
    try:
        cfg = SwinConfig(**fields)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: the detected architecture is not valid: {exc}") from None
    for reg in registry_matches(cfg.to_dict()):
        if same_arch(reg, cfg):
            return reg
    return cfg


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
