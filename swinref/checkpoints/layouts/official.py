"""The official layout (microsoft/Swin-Transformer): swinref's canonical names themselves.

    patch_embed.{proj,norm}.*, layers.i.blocks.j.{norm1, attn.{qkv, proj, relative_position_bias_table}, norm2,
    mlp.{fc1,fc2}}.*, layers.i.downsample.{norm,reduction}.* at the END of stage i, norm.*, head.*
    V2 blocks: attn.{logit_scale, q_bias, v_bias, cpb_mlp.{0,2}}.* instead of the bias table and qkv.bias.

Official files also save derived buffers (relative_position_index, attn_mask, V2's relative_coords_table), which
are set aside. The official detection / segmentation backbones keep the same names under 'backbone.', with one
output norm per stage (norm0..norm3) and no final norm or head; those norms keep their names.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import Notes, alias_final_norm, arrays, split_backbone, translate
from swinref.config import SwinConfig

NAME = "official"
SIGNATURE = "patch_embed.proj.weight"


def recognise(keys: Collection[str]) -> bool:
    return SIGNATURE in keys or "backbone." + SIGNATURE in keys


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    notes = Notes()
    sd, notes.prefix, notes.ignored = split_backbone(sd, SIGNATURE)
    params = translate(sd, str, notes)
    alias_final_norm(params, notes)
    return params, notes


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig) -> dict[str, np.ndarray]:
    return arrays(params)


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    return {}  # official files carry their yacs config inside the pickle, which swinref does not read
