"""timm's layout (timm.models.swin_transformer / swin_transformer_v2, verified against timm 1.0.31).

As official, except that the merge after stage i sits at the START of stage i+1 (layers.{i+1}.downsample) and
the classifier is head.fc.*. Index and mask buffers are not saved (non-persistent). timm's hub directories
(save_for_hf / push_to_hub) put a config.json beside the weights: its `architecture` and `model_args`.

features_only models (timm.create_model(..., features_only=True), a FeatureListNet; checked on timm 1.0.31, V1 and
V2): the same names with layers_N. for layers.N. (FeatureListNet flattens the module path), no final norm and no
head; their features are the raw stage outputs. Read with `norm` set to the identity (said in the notes);
from_canonical(..., features_only=True) writes them.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import Notes, Rule, Rules, arrays, identity_final_norm, translate
from swinref.config import REGISTRY, SwinConfig
from swinref.errors import CheckpointError

NAME = "timm"
SIGNATURE = "patch_embed.proj.weight + head.fc.weight"

RULES = Rules([
    Rule("layers.{s}.downsample.", "layers.{s+1}.downsample."),
    Rule("head.", "head.fc."),
])
_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.")
_FEATURES = re.compile(r"^layers_(\d+)\.")  # a features_only model's stages


def recognise(keys: Collection[str]) -> bool:
    if "patch_embed.proj.weight" not in keys:
        return False
    if "head.fc.weight" in keys or any(_FEATURES.match(k) for k in keys):
        return True
    merges = {int(m.group(1)) for k in keys if (m := _MERGE.match(k))}
    return bool(merges) and 0 not in merges  # a merge at the start of stage 1 but none at the end of stage 0


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    features_only = any(_FEATURES.match(k) for k in sd)
    if features_only:
        sd = {_FEATURES.sub(r"layers.\1.", k): v for k, v in sd.items()}
    if any(k.startswith("layers.0.downsample.") for k in sd):
        raise CheckpointError(f"{source}: a timm checkpoint cannot have a downsample in stage 0 (layers.0.downsample)")
    notes = Notes()
    params = translate(sd, RULES.to_canonical, notes)
    if features_only:
        identity_final_norm(params, notes, "a timm features_only model")
    return params, notes


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig | None, *, features_only: bool = False
                   ) -> dict[str, np.ndarray]:
    """timm's state dict; its names do not depend on the config (V1 and V2 alike), so cfg may be None.
    features_only: a features_only model's (layers_N., no final norm, no head)."""
    params = arrays(params)
    stage_norms = sorted(k for k in params if k.startswith("norm") and k[4:5].isdigit())
    if stage_norms:
        raise CheckpointError(
            f"timm's Swin models have no per-stage output norms ({', '.join(stage_norms[:2])}, ...): write them in "
            f"the official, openmmlab or transformers layout, or leave them out"
        )
    if not features_only:
        return {RULES.to_peer(k): v for k, v in params.items()}
    if "head.weight" in params:
        raise CheckpointError("a timm features_only model has no head: build the params with num_classes=0")
    out = {}
    for name, value in params.items():
        if not name.startswith("norm."):
            peer = RULES.to_peer(name)
            out[re.sub(r"^layers\.(\d+)\.", r"layers_\1.", peer)] = value
    return out


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
