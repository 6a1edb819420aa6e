"""From the canonical layout to timm's: the constructor arguments and the state dict of a golden case's model.

The names come from swinref.checkpoints.layouts.timm (the merge of stage i at the start of stage i+1, the
classifier under head.fc); these are thin wrappers kept for the golden examples. NumPy only: the caller turns the
arrays into tensors (torch.from_numpy) and calls SwinTransformer(**timm_kwargs(cfg)).load_state_dict(sd,
strict=False); the index and mask buffers timm derives itself are not in the dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from swinref.checkpoints.layouts import timm as _layout
from swinref.config import SwinConfig
from swinref.errors import ConfigError

__all__ = ["timm_kwargs", "timm_state_dict", "timm_name"]


def timm_name(name: str) -> str:
    """The timm name of a canonical parameter name."""
    return _layout.RULES.to_peer(name)


def timm_state_dict(params: dict[str, Any], cfg: SwinConfig | None = None) -> dict[str, np.ndarray]:
    """Canonical params -> timm SwinTransformer / SwinTransformerV2 state dict (same arrays, timm's names; the
    names do not depend on the config, which may be left out)."""
    return _layout.from_canonical(params, cfg)


def timm_kwargs(cfg: SwinConfig) -> dict[str, Any]:
    """Arguments of timm.models.swin_transformer.SwinTransformer that build `cfg` (V1 only), dropout off."""
    if cfg.version != 1:
        raise ConfigError(f"{cfg.name} is Swin V{cfg.version}; timm builds it with SwinTransformerV2, whose "
                          f"arguments differ: timm_kwargs covers V1")
    if not cfg.patch_norm or cfg.layer_norm_eps != 1e-5:
        raise ConfigError("timm's SwinTransformer always normalises the patch embedding with LayerNorm eps 1e-5; "
                          "this config differs (patch_norm / layer_norm_eps), so timm cannot build it")
    return dict(img_size=tuple(cfg.img_size), patch_size=cfg.patch_size, in_chans=cfg.in_chans,
                num_classes=cfg.num_classes, embed_dim=cfg.embed_dim, depths=tuple(cfg.depths),
                num_heads=tuple(cfg.num_heads), window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias, drop_rate=0.0, proj_drop_rate=0.0,
                attn_drop_rate=0.0, drop_path_rate=0.0)
