"""timm's layout (timm.models.swin_transformer / swin_transformer_v2, verified against timm 1.0.31).

As official, except that the merge after stage i sits at the START of stage i+1 (layers.{i+1}.downsample) and
the classifier is head.fc.*. Index and mask buffers are not saved (non-persistent). timm's hub directories
(save_for_hf / push_to_hub) put a config.json beside the weights: its `architecture` and `model_args`.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import Notes, Rule, Rules, arrays, translate
from swinref.config import REGISTRY, SwinConfig
from swinref.errors import CheckpointError

NAME = "timm"
SIGNATURE = "patch_embed.proj.weight + head.fc.weight"

RULES = Rules([
    Rule("layers.{s}.downsample.", "layers.{s+1}.downsample."),
    Rule("head.", "head.fc."),
])
_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.")


def recognise(keys: Collection[str]) -> bool:
    if "patch_embed.proj.weight" not in keys:
        return False
    if "head.fc.weight" in keys:
        return True
    merges = {int(m.group(1)) for k in keys if (m := _MERGE.match(k))}
    return bool(merges) and 0 not in merges  # a merge at the start of stage 1 but none at the end of stage 0


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    if any(k.startswith("layers.0.downsample.") for k in sd):
        raise CheckpointError(f"{source}: a timm checkpoint cannot have a downsample in stage 0 (layers.0.downsample)")
    notes = Notes()
    return translate(sd, RULES.to_canonical, notes), notes


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig | None) -> dict[str, np.ndarray]:
    """timm's state dict; its names do not depend on the config (V1 and V2 alike), so cfg may be None."""
    return {RULES.to_peer(k): v for k, v in arrays(params).items()}


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    """SwinConfig fields from the config.json timm writes beside hub weights.

    Its model_args hold the constructor arguments that differ from the variant's defaults; the variant's own
    defaults (window, pretrained windows) come from the registry entry of the same model.
    """
    arch = str(sidecar.get("architecture", ""))
    if not arch.startswith("swin"):
        raise CheckpointError(f"{source}: timm architecture {arch!r} is not a Swin model")
    if arch.startswith("swinv2_cr"):
        raise CheckpointError(f"{source}: {arch} is timm's SwinV2-CR, a different architecture swinref does not read")
    hints: dict[str, Any] = {}
    base = _registry_entry(arch)
    if base is not None:
        hints.update(img_size=base.img_size, window_size=base.window_size, version=base.version,
                     pretrained_window_sizes=base.pretrained_window_sizes)
    elif arch.startswith("swinv2"):
        hints["version"] = 2
    size = (sidecar.get("pretrained_cfg") or {}).get("input_size")
    if isinstance(size, list) and len(size) == 3:
        hints["img_size"] = (int(size[1]), int(size[2]))
    args = sidecar.get("model_args") or {}
    for name in ("img_size", "window_size", "patch_size", "pretrained_window_sizes"):
        value = args.get(name)
        if value is None:
            continue
        if name == "img_size":
            value = (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
        elif isinstance(value, list):
            value = tuple(value) if name == "pretrained_window_sizes" else value[0]
        hints[name] = value
    if "depths" in args and "pretrained_window_sizes" in hints and len(hints["pretrained_window_sizes"]) != len(
            args["depths"]):
        hints.pop("pretrained_window_sizes")  # the variant's default belongs to another depth
    return hints


def _registry_entry(arch: str) -> SwinConfig | None:
    # timm drops 'patch4' from V2 names and the '_22k' / '_22kto1k_ft' suffixes of the official ones.
    name = arch.split(".")[0]
    v2 = re.sub(r"^(swinv2_[a-z]+)_window", r"\1_patch4_window", name)
    for candidate in (name, v2, v2 + "_22k", v2 + "_22kto1k_ft"):
        if candidate in REGISTRY:
            return REGISTRY[candidate]
    return None
