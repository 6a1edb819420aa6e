"""Video Swin checkpoints beyond reading: the peers' layouts to write, and 2-D -> 3-D inflation.

    sd, lines = export_state_dict(params, cfg, "torchvision")      # torchvision swin3d names (export_params)
    params3d, cfg3d = inflate(params2d, cfg2d, window=(8, 7, 7))    # an ImageNet Swin as a Video Swin backbone

Inflation follows the official Video Swin Transformer's `SwinTransformer3D.inflate_weights` (mmaction2 1.x has
the same code, tests/test_video_peers.py runs it): the patch kernel [C, in, p, p] is repeated over the pt temporal
positions and divided by pt (a clip of identical frames embeds as the image did); each block's bias table
[(2M-1)^2, nH] is resized bicubically (align_corners=False) to (2Wh-1) x (2Ww-1) when the window differs, then
repeated for each of the 2Wd-1 temporal offsets (the table's slowest axis), so attention between frames starts
with the spatial bias of the image model; the index and mask buffers are not params; every other weight is kept.
The 2-D classifier is not carried over (the official code trains a new video head): the result has num_classes 0
unless a head of the right width is given.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

from swinref.checkpoints.layouts import mmaction, torchvision3d
from swinref.config import SwinConfig
from swinref.errors import CheckpointError

__all__ = ["export_state_dict", "inflate", "VIDEO_EXPORT_LAYOUTS", "KINETICS_CLIP"]

# What `--layout X` writes for a Video Swin model: torchvision swin3d, the official Video Swin Transformer's
# recognizer (final norm backbone.norm) or mmaction2 1.x's (final norm backbone.norm{L-1}).
VIDEO_EXPORT_LAYOUTS = ("torchvision", "torchvision3d", "official", "mmaction")
KINETICS_CLIP = (32, 224, 224)
_TABLE = re.compile(r"^layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table$")


def export_state_dict(params: Mapping[str, Any], cfg: SwinConfig, layout: str, backbone_prefix: bool = False,
                      ) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the peer's state dict, what the writing did besides renaming) for a Video Swin model's canonical params."""
    if backbone_prefix:
        raise CheckpointError("--backbone-prefix writes a detection backbone; a Video Swin recognizer keeps its "
                              "backbone under 'backbone.' already: use --layout official or mmaction")
    if layout in ("torchvision", "torchvision3d"):
        return torchvision3d.from_canonical(params, cfg), []
    if layout == "official":
        return mmaction.recognizer(params, cfg, final_norm="norm"), [
            "the official Video Swin Transformer's recognizer: backbone.*, final norm backbone.norm, cls_head.fc_cls"]
    if layout == "mmaction":
        return mmaction.from_canonical(params, cfg), [
            f"mmaction2 1.x's Recognizer3D: backbone.*, final norm backbone.norm{cfg.num_layers - 1}, cls_head.fc_cls"]
    raise CheckpointError(f"there is no Video Swin model in the {layout} layout; write a video model with --layout "
                          f"{', '.join(VIDEO_EXPORT_LAYOUTS)} (or swinref's own files)")


def inflate(params: Mapping[str, Any], cfg: SwinConfig, *, window: tuple[int, int, int] = (8, 7, 7),
            patch_t: int = 2, clip: tuple[int, int, int] | None = None, head: Mapping[str, Any] | None = None,
            ) -> tuple[dict[str, np.ndarray], SwinConfig]:
    """(Video Swin params, their config) from a 2-D Swin V1 model's canonical params (see the module docstring).

    window: the video model's (Wd, Wh, Ww); patch_t: frames per patch; clip: the config's clip size (T, H, W)
    (default: 32 frames at the 2-D model's image size); head: {'weight', 'bias'} of a new classifier
    [classes, C_last] (none: num_classes 0)."""
    if cfg.is_video:
        raise CheckpointError(f"{cfg.name} is a video model already; inflate takes an image Swin (V1) checkpoint")
    if cfg.version != 1:
        raise CheckpointError("inflation follows the Video Swin rule for Swin V1 bias tables; a Swin V2 model has a "
                              "position-bias MLP instead (not supported)")
    window = tuple(int(w) for w in window)
    if len(window) != 3 or min(window) < 1 or int(patch_t) < 1:
        raise CheckpointError(f"inflate needs a window (Wd, Wh, Ww) of positive ints and patch_t >= 1, got window "
                              f"{window}, patch_t {patch_t}")
    patch_t = int(patch_t)
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        value = np.asarray(value)
        if name == "patch_embed.proj.weight":
            # [C, in, p, p] -> [C, in, pt, p, p] / pt (official: unsqueeze(2).repeat(1, 1, pt, 1, 1) / pt)
            out[name] = np.repeat(value[:, :, None], patch_t, axis=2) / value.dtype.type(patch_t)
        elif _TABLE.match(name):
            out[name] = _inflate_table(value, window, name)
        elif name.startswith("head."):
            continue
        elif name.startswith("absolute_pos_embed") or (name.startswith("norm") and name[4:5].isdigit()):
            raise CheckpointError(f"{name} belongs to a detection backbone; inflate a classifier's checkpoint")
        else:
            out[name] = value
    num_classes = 0
    if head is not None:
        out["head.weight"], out["head.bias"] = np.asarray(head["weight"]), np.asarray(head["bias"])
        num_classes = out["head.weight"].shape[0]
    size = clip if clip is not None else (KINETICS_CLIP[0], *cfg.img_size)
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    fields.update(name="custom", img_size=tuple(size), patch_size=(patch_t, cfg.patch_size, cfg.patch_size),
                  window_size=window, num_classes=num_classes, pretrained_window_sizes=(0,) * cfg.num_layers)
    if "ape" in fields:
        fields["ape"] = False
    return out, SwinConfig(**fields)


def _inflate_table(table: np.ndarray, window: tuple[int, int, int], name: str) -> np.ndarray:
    """[(2M-1)^2, nH] -> [(2Wd-1)(2Wh-1)(2Ww-1), nH]: resized to (2Wh-1, 2Ww-1) if needed, then tiled 2Wd-1 times."""
    from swinref.transfer import bicubic_resize

    rows, nH = table.shape
    side = int(round(rows ** 0.5))
    if side * side != rows or side % 2 == 0:
        raise CheckpointError(f"{name} has {rows} rows, which is not (2M-1)^2 for any window M")
    spatial = (2 * window[1] - 1, 2 * window[2] - 1)
    if (side, side) != spatial:
        grid = np.ascontiguousarray(table.T).reshape(nH, side, side)  # permute(1, 0).view(1, nH, S1, S1)
        table = np.ascontiguousarray(bicubic_resize(grid, spatial).reshape(nH, -1).T)
    return np.tile(table, (2 * window[0] - 1, 1))  # .repeat(2 * Wd - 1, 1)
