"""torchvision's Video Swin layout (torchvision.models.video.swin_transformer.SwinTransformer3d, swin3d_t/s/b;
verified against torchvision 0.29.1).

    patch_embed.{proj (Conv3d [C, 3, 2, 4, 4]), norm}; stage i = features.{2i}.j.{norm1, attn.{qkv, proj,
    relative_position_bias_table}, norm2, mlp.{0: fc1, 3: fc2}}; the merge after stage i = features.{2i+1}.{
    reduction, norm} (torchvision's 2-D PatchMerging, the official concat order); norm; head.

Unlike the 2-D layout (features.0 is the patch embedding there, stage i is features.{2i+1}) the stages start at
features.0. Persistent derived buffer: attn.relative_position_index [N, N] (the full window's), set aside.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import Notes, Rule, Rules, arrays, translate
from swinref.config import SwinConfig
from swinref.errors import CheckpointError

NAME = "torchvision3d"
SIGNATURE = "patch_embed.proj.weight with features.0.0.norm1.weight"

RULES = Rules([
    Rule("layers.{s}.blocks.{b}.mlp.fc1.", "features.{s*2}.{b}.mlp.0."),
    Rule("layers.{s}.blocks.{b}.mlp.fc2.", "features.{s*2}.{b}.mlp.3."),
    Rule("layers.{s}.blocks.{b}.", "features.{s*2}.{b}."),
    Rule("layers.{s}.downsample.", "features.{s*2+1}."),
])


def recognise(keys: Collection[str]) -> bool:
    return "patch_embed.proj.weight" in keys and any(k.startswith("features.0.0.") for k in keys)


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    notes = Notes()
    return translate(sd, RULES.to_canonical, notes), notes


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig) -> dict[str, np.ndarray]:
    if not cfg.is_video:
        raise CheckpointError(f"the {NAME} layout holds Video Swin models; {cfg.name} is an image model (write it "
                              f"with --layout torchvision)")
    return {RULES.to_peer(k): v for k, v in arrays(params).items()}


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    return {}  # torchvision saves no configuration with its weights
