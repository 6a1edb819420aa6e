"""swinref's canonical parameter layout: the official repository's state-dict names and shapes.

Every checkpoint format is translated to this layout in one place (swinref.checkpoints); the forward pass reads
only these names. Derived buffers of the official model (relative_position_index, attn_mask, V2's
relative_coords_table) are not parameters and are not part of the layout: swinref recomputes them.

Pure Python (no NumPy), so the analysis commands can count parameters from the config alone.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from swinref.config import SwinConfig
from swinref.errors import CheckpointError
from swinref.plan import BlockPlan, build_windows, plan

__all__ = ["param_shapes", "out_norm_shapes", "nest", "is_linear_weight", "CPB_HIDDEN", "LINEAR_WEIGHTS"]

# The weights of the linear layers, [out, in], by the end of their canonical name.
LINEAR_WEIGHTS = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight", "reduction.weight",
                  "head.weight")


def is_linear_weight(name: str) -> bool:
    """Whether a canonical param name is the [out, in] weight of a linear layer (x @ W^T)."""
    return name.endswith(LINEAR_WEIGHTS)


# Width of the hidden layer of Swin V2's continuous position bias MLP (official: Linear(2, 512) - ReLU - Linear).
CPB_HIDDEN = 512


def _block_leaf_shapes(blk: BlockPlan, window: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter a block may have, by its name inside the block (the plan lists which it has).
    window: the window of the V1 bias table, [prod(2M-1), nH], the official build's (after its clamp rule)."""
    dim, nH, hidden = blk.dim, blk.heads, blk.mlp_hidden
    return {
        "norm1.weight": (dim,), "norm1.bias": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,),
        "attn.relative_position_bias_table": (math.prod(2 * m - 1 for m in window), nH),
        "attn.logit_scale": (nH, 1, 1), "attn.cpb_mlp.0.weight": (CPB_HIDDEN, 2),
        "attn.cpb_mlp.0.bias": (CPB_HIDDEN,), "attn.cpb_mlp.2.weight": (nH, CPB_HIDDEN),
        "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,), "attn.q_bias": (dim,), "attn.v_bias": (dim,),
        "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
        "mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,), "mlp.fc2.weight": (dim, hidden),
        "mlp.fc2.bias": (dim,),
    }


@functools.lru_cache(maxsize=128)
def param_shapes(cfg: SwinConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every learned parameter of `cfg`, in the official state dict's order.

    Linear weights are [out, in] as in PyTorch; qkv rows are q | k | v, each head-major. The V1 relative position
    bias table is [prod(2M-1), nH] for the stage's effective window M per axis (after the clamp rule at the
    config's image size, as the official model is built; Video Swin's tables are for the configured window).
    """
    C = cfg.embed_dim
    shapes: dict[str, tuple[int, ...]] = {}
    build = plan(cfg, policy="detection")
    if build.embed.pos_embed is not None:
        # The official detection backbone's absolute position embedding at the pretraining grid (first in its
        # state dict: a parameter of the model itself).
        shapes[build.embed.pos_embed] = (1, C, *build.embed.pos_embed_grid)
    shapes["patch_embed.proj.weight"] = (C, cfg.in_chans, *cfg.patch)
    shapes["patch_embed.proj.bias"] = (C,)
    if cfg.patch_norm:
        shapes["patch_embed.norm.weight"] = (C,)
        shapes["patch_embed.norm.bias"] = (C,)
    for stage, window in zip(build.stages, build_windows(cfg)):
        for blk in stage.blocks:
            leaf_shapes = _block_leaf_shapes(blk, window)
            shapes.update({name: leaf_shapes[name[len(blk.name) + 1:]] for name in blk.params})
        if stage.merge is not None:
            # V1 normalises the 4C concat before reducing; V2 reduces first, then normalises 2C.
            dim = stage.merge.dim
            norm_dim = 4 * dim if stage.merge.kind == "norm-reduce" else 2 * dim
            reduction, norm_weight, norm_bias = stage.merge.params
            shapes.update({reduction: (2 * dim, 4 * dim), norm_weight: (norm_dim,), norm_bias: (norm_dim,)})
    shapes["norm.weight"] = (cfg.num_features,)
    shapes["norm.bias"] = (cfg.num_features,)
    if cfg.num_classes > 0:
        shapes["head.weight"] = (cfg.num_classes, cfg.num_features)
        shapes["head.bias"] = (cfg.num_classes,)
    return shapes


def out_norm_shapes(cfg: SwinConfig) -> dict[str, tuple[int, ...]]:
    """A backbone's per-stage output norms norm0..norm{L-1} ([C_i] each; the official detection backbone's and
    OpenMMLab's): optional extras beside param_shapes, read by swinref.features when present."""
    return {name: (stage.dim,) for stage in plan(cfg).stages for name in stage.out_norm}


@functools.lru_cache(maxsize=1 << 16)
def _name_path(name: str) -> tuple[Any, ...]:
    """A param name's parts, numeric ones as ints (cached: every forward pass nests the same names)."""
    return tuple(int(part) if part.isdigit() else part for part in name.split("."))


def nest(params: dict[str, Any]) -> dict[Any, Any]:
    """Nested views of flat canonical params: nest(p)["layers"][0]["blocks"][1]["attn"]["qkv"]["weight"] is
    p["layers.0.blocks.1.attn.qkv.weight"] (the same array). Numeric name parts become int keys."""
    tree: dict[Any, Any] = {}
    for name, value in params.items():
        *path, leaf = _name_path(name)
        node = tree
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"parameter names {name!r} and {'.'.join(map(str, path))!r} collide")
        node[leaf] = value
    return tree
