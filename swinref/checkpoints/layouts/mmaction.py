"""Video Swin recognizers of the mmaction family: the official Video-Swin-Transformer checkpoints (mmaction2 0.x)
and mmaction2 1.x Recognizer3D(SwinTransformer3D, I3DHead) (verified against mmaction2 1.2).

    state_dict: backbone.{patch_embed.{proj, norm}, layers.i.blocks.j.{norm1, attn.{qkv, proj,
    relative_position_bias_table}, norm2, mlp.{fc1, fc2}}, layers.i.downsample.{norm, reduction}, <final norm>},
    cls_head.fc_cls.{weight, bias}

The backbone's names are the official (canonical) ones; the classifier is cls_head.fc_cls. The final norm is
backbone.norm in the official code and backbone.norm{L-1} in mmaction2 1.x (its output norm of the last stage,
out_indices=(L-1,)); both are the canonical `norm` (the head pools its output). Persistent derived buffer:
attn.relative_position_index [N, N], set aside. A bare SwinTransformer3D state dict (no 'backbone.', no head) has
the official names and is read by the official layout.

from_canonical writes mmaction2 1.x's recognizer; `recognizer(params, cfg, final_norm="norm")` the official one.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import Notes, arrays, put, stage_count, translate
from swinref.config import SwinConfig
from swinref.errors import CheckpointError

NAME = "mmaction"
SIGNATURE = "backbone.patch_embed.proj.weight with cls_head.fc_cls.weight"

_BACKBONE, _HEAD, _CANONICAL_HEAD = "backbone.", "cls_head.fc_cls.", "head."
_STAGE_NORM = re.compile(r"^norm(\d+)\.(weight|bias)$")


def recognise(keys: Collection[str]) -> bool:
    return _BACKBONE + "patch_embed.proj.weight" in keys and any(k.startswith(_HEAD) for k in keys)


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    # No `prefix`: 'backbone.' here is half of a classifier, not a detection backbone (api.is_backbone reads it).
    notes = Notes(messages=["a Video Swin recognizer: backbone.* and its classifier cls_head.fc_cls (head) read"])
    inner: dict[str, np.ndarray] = {}
    for name, value in sd.items():
        if name.startswith(_BACKBONE):
            inner[name[len(_BACKBONE):]] = value
        elif name.startswith(_HEAD):
            put(inner, _CANONICAL_HEAD + name[len(_HEAD):], value, name)
        else:
            module = name.split(".", 1)[0] + ("." if "." in name else "")
            if module not in notes.ignored:
                notes.ignored.append(module)
    params = translate(inner, str, notes)
    last = stage_count(params) - 1
    stage_norms = sorted({int(m.group(1)) for k in params if (m := _STAGE_NORM.match(k))})
    if stage_norms == [last] and "norm.weight" not in params:
        # mmaction2 1.x: the last stage's output norm is the one the head pools.
        for leaf in ("weight", "bias"):
            if f"norm{last}.{leaf}" in params:
                params[f"norm.{leaf}"] = params.pop(f"norm{last}.{leaf}")
        notes.messages.append(f"backbone.norm{last} (mmaction2 1.x's name) is the final norm")
    elif stage_norms:
        raise CheckpointError(
            f"{source}: a Video Swin recognizer has one final norm (backbone.norm or backbone.norm{last}), this one "
            f"has {['norm' + str(i) for i in stage_norms]}{' and norm' if 'norm.weight' in params else ''}; save "
            f"the recognizer with out_indices=({last},)"
        )
    return params, notes


def recognizer(params: Mapping[str, Any], cfg: SwinConfig, final_norm: str) -> dict[str, np.ndarray]:
    """The recognizer's state dict: canonical names under 'backbone.', the final norm as `final_norm` ('norm' for
    the official Video Swin code, 'norm{L-1}' for mmaction2 1.x), head as cls_head.fc_cls."""
    if not cfg.is_video:
        raise CheckpointError(f"the {NAME} layout holds Video Swin recognizers; {cfg.name} is an image model")
    out: dict[str, np.ndarray] = {}
    for name, value in arrays(params).items():
        if name.startswith(_CANONICAL_HEAD):
            out[_HEAD + name[len(_CANONICAL_HEAD):]] = value
        elif name.startswith("norm."):
            out[_BACKBONE + final_norm + name[len("norm"):]] = value
        elif _STAGE_NORM.match(name):
            raise CheckpointError(f"a Video Swin recognizer has no per-stage output norms; drop {name}")
        else:
            out[_BACKBONE + name] = value
    if "head.weight" not in params:
        raise CheckpointError("a Video Swin recognizer has a classifier head (cls_head.fc_cls): these params have "
                              "none (num_classes=0); write them with --layout swinref or torchvision3d")
    return out


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig) -> dict[str, np.ndarray]:
    return recognizer(params, cfg, final_norm=f"norm{cfg.num_layers - 1}")


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    return {}  # mmengine keeps the model config as Python text in the checkpoint's meta, which swinref does not run
