"""torchvision's layout (torchvision.models.swin_transformer, verified against torchvision 0.29.1), V1 and V2.

    features.0.{0: Conv2d, 2: LayerNorm}; stage i = features.{2i+1}.j.{norm1, attn.{qkv, proj,
    relative_position_bias_table}, norm2, mlp.{0: fc1, 3: fc2}}; the merge after stage i = features.{2i+2}.{
    reduction, norm}; norm; head. V2 blocks (SwinTransformerBlockV2): attn.{logit_scale, cpb_mlp.{0,2}} and one
    qkv.bias of 3C whose k third torchvision zeroes in forward; the official layout has q_bias and v_bias only.

Persistent derived buffers: attn.relative_position_index (flat [N*N]) and V2's attn.relative_coords_table.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import Notes, Rule, Rules, arrays, translate
from swinref.config import SwinConfig

NAME = "torchvision"
SIGNATURE = "features.0.0.weight"

RULES = Rules([
    Rule("patch_embed.proj.", "features.0.0."),
    Rule("patch_embed.norm.", "features.0.2."),
    Rule("layers.{s}.blocks.{b}.mlp.fc1.", "features.{s*2+1}.{b}.mlp.0."),
    Rule("layers.{s}.blocks.{b}.mlp.fc2.", "features.{s*2+1}.{b}.mlp.3."),
    Rule("layers.{s}.blocks.{b}.", "features.{s*2+1}.{b}."),
    Rule("layers.{s}.downsample.", "features.{s*2+2}."),
])


def recognise(keys: Collection[str]) -> bool:
    return any(k.startswith("features.0.0.") for k in keys)


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    notes = Notes()
    params = translate(sd, RULES.to_canonical, notes)
    for name in [n for n in params if n.endswith(".attn.qkv.bias")]:
        prefix = name[: -len("qkv.bias")]
        if prefix + "logit_scale" not in params:
            continue
        bias = params.pop(name)
        c = bias.shape[0] // 3
        params[prefix + "q_bias"], params[prefix + "v_bias"] = bias[:c].copy(), bias[2 * c:].copy()
        if np.any(bias[c: 2 * c]):
            notes.messages.append(f"{RULES.to_peer(name)}: its k third is not zero; torchvision zeroes it in "
                                  f"forward, so it was dropped")
    return params, notes


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig) -> dict[str, np.ndarray]:
    params = arrays(params)
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        if name.endswith(".attn.v_bias"):
            continue  # written with q_bias
        if name.endswith(".attn.q_bias"):
            # V2: one 3C bias, k third zero (torchvision zeroes it again in forward).
            v = params[name[: -len("q_bias")] + "v_bias"]
            name, value = name[: -len("q_bias")] + "qkv.bias", np.concatenate([value, np.zeros_like(value), v])
        out[RULES.to_peer(name)] = value
    return out


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    return {}  # torchvision saves no configuration with its weights
