"""OpenMMLab's layout: mmpretrain 1.2 SwinTransformer / SwinTransformerV2, mmdet 3.3 and mmseg 1.2
SwinTransformer (verified against those releases), optionally under 'backbone.' in a whole model's checkpoint.

    patch_embed.{projection,norm}.*, stages.i.blocks.j.{norm1, attn.w_msa.{qkv, proj, relative_position_bias_table},
    norm2, ffn.layers.0.0 (fc1), ffn.layers.1 (fc2)}, stages.i.downsample.{norm,reduction} (V1: the merge after
    stage i), norm0..norm3 (one output norm per stage, named as in the official detection backbone).
    mmpretrain V2: attn.w_msa.{logit_scale, q_bias, v_bias, cpb_mlp.{0,2}}, and the merge after stage i sits at
    the START of stage i+1 (stages.{i+1}.downsample), normalising its 2C output.

Patch merging gathers the 2x2 neighbours with nn.Unfold (mmcv's and mmpretrain's PatchMerging): channel-major,
each channel's four kernel positions in row-major order (0,0), (0,1), (1,0), (1,1), so concat column c*4 + q.
The official order is position-major over (row, col) offsets (0,0), (1,0), (0,1), (1,1): column k*C + c. Unfold's
q-th position is official block UNFOLD_TO_OFFICIAL[q] = (0, 2, 1, 3)[q]. The reduction's input columns (and in V1
the 4C merge norm, which normalises the concat) are permuted accordingly; tests/test_layouts.py proves it against
the real modules. (The same permutation as mmdet's swin_converter / mmseg's swin2mmseg.py.)

These backbones have no classifier head and no separate final norm: the last stage's output norm is copied to
`norm` (see base.alias_final_norm); a head in a whole classifier's checkpoint ('head.') is left out.
With use_abs_pos_embed=True they hold absolute_pos_embed as [1, Hp*Wp, C] (row-major tokens; a square grid is
assumed when read), the canonical [1, C, Hp, Wp] transposed (base.ape_from_tokens / ape_to_tokens).
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import (
    APE, Notes, Rule, Rules, alias_final_norm, ape_from_tokens, ape_to_tokens, arrays, drop_final_norm_alias,
    split_backbone, translate,
)
from swinref.config import SwinConfig
from swinref.errors import CheckpointError

NAME = "openmmlab"
SIGNATURE = "patch_embed.projection.weight"

# The official 2x2 block that unfold position q (row-major (0,0), (0,1), (1,0), (1,1)) holds.
UNFOLD_TO_OFFICIAL = (0, 2, 1, 3)

_COMMON = [
    Rule("patch_embed.proj.", "patch_embed.projection."),
    Rule("layers.{s}.blocks.{b}.attn.", "stages.{s}.blocks.{b}.attn.w_msa."),
    Rule("layers.{s}.blocks.{b}.mlp.fc1.", "stages.{s}.blocks.{b}.ffn.layers.0.0."),
    Rule("layers.{s}.blocks.{b}.mlp.fc2.", "stages.{s}.blocks.{b}.ffn.layers.1."),
]
RULES = {
    1: Rules(_COMMON + [Rule("layers.{s}.downsample.", "stages.{s}.downsample."), Rule("layers.", "stages.")]),
    2: Rules(_COMMON + [Rule("layers.{s}.downsample.", "stages.{s+1}.downsample."), Rule("layers.", "stages.")]),
}


def recognise(keys: Collection[str]) -> bool:
    return SIGNATURE in keys or "backbone." + SIGNATURE in keys


def unfold_columns(channels: int) -> np.ndarray:
    """For each unfold-order column c*4 + q of a 4C merge input, the official column UNFOLD_TO_OFFICIAL[q]*C + c."""
    c, q = np.divmod(np.arange(4 * channels), 4)
    return np.asarray(UNFOLD_TO_OFFICIAL)[q] * channels + c


def _reorder_merges(params: dict[str, np.ndarray], version: int, to_official: bool) -> None:
    for name in [n for n in params if n.endswith(".downsample.reduction.weight")]:
        order = unfold_columns(params[name].shape[1] // 4)
        if to_official:
            order = np.argsort(order)
        params[name] = np.ascontiguousarray(params[name][:, order])  # a[:, idx] may come out in F order
        if version == 1:  # V1 normalises the 4C concat; V2's norm follows the reduction (2C, unpermuted)
            for leaf in ("weight", "bias"):
                norm = name[: -len("reduction.weight")] + "norm." + leaf
                if norm in params:
                    params[norm] = params[norm][order]


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    notes = Notes()
    sd, notes.prefix, notes.ignored = split_backbone(sd, SIGNATURE)
    version = 2 if any(k.endswith(".w_msa.logit_scale") for k in sd) else 1
    if version == 2 and any(k.startswith("stages.0.downsample.") for k in sd):
        raise CheckpointError(f"{source}: an mmpretrain Swin V2 checkpoint cannot have a merge at the start of stage "
                              f"0 (stages.0.downsample)")
    params = translate(sd, RULES[version].to_canonical, notes)
    _reorder_merges(params, version, to_official=True)
    if APE in params:
        params[APE] = ape_from_tokens(params[APE], APE, source)
    alias_final_norm(params, notes)
    return params, notes


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig) -> dict[str, np.ndarray]:
    """The backbone's state dict (no 'backbone.' prefix): the last stage's output norm is `norm` unless params
    carry norm{last}; the other output norms (norm0, ...) are written when params have them."""
    params = arrays(params)
    if "head.weight" in params:
        raise CheckpointError("the OpenMMLab backbones have no classifier head: build the params with num_classes=0")
    params = drop_final_norm_alias(params, NAME)
    if APE in params:
        params[APE] = ape_to_tokens(params[APE])
    _reorder_merges(params, cfg.version, to_official=False)
    return {RULES[cfg.version].to_peer(k): v for k, v in params.items()}


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    return {}  # mmengine keeps the model config as Python text in the checkpoint's meta, which swinref does not run
