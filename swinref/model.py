"""The Swin forward pass: the plan (swinref.plan) executed over arrays.

`params` is a flat dict in the canonical layout (swinref.layout: the official state-dict names), read through
nested views (`nest(params)["layers"][0]["blocks"][1]`); `cfg` is a SwinConfig; `policy` names a window policy.
Token maps are channels-last, [B, *S, C] with S = (h, w), as in the official implementation; images and the
feature pyramid are channels-first. The backend (array namespace, device, and which block implementation runs:
the reference swinref.blocks or the accelerated swinref.fast) is resolved once per call and passed down.

Every decision (window, shift, padding and its order, mask, norm placement, attention and position-bias kind,
merge kind) is read from the plan; nothing here looks at the model version or the policy name.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from swinref.backend import Backend, backend_for
from swinref.config import SwinConfig
from swinref.errors import InputError
from swinref.layers import layer_norm, linear, pad_end
from swinref.layout import nest
from swinref.plan import MergePlan, ModelPlan, PatchEmbedPlan, plan

__all__ = ["forward", "features", "forward_trace", "point_names"]

Params = dict[str, Any]


def patch_embed(images: Any, p: Params, e: PatchEmbedPlan, cfg: SwinConfig, be: Backend) -> Any:
    """[B, Cin, *image] -> [B, *grid, C]: non-overlapping patches, linearly embedded, then LayerNorm.

    The strided convolution is a reshape plus a matmul: each patch flattened as (channel, then each patch axis),
    the order of the convolution kernel's [C, Cin, *patch] weight.
    """
    xp = be.xp
    B, Cin = images.shape[:2]
    k = len(e.grid)
    if any(e.crop):
        images = images[(slice(None), slice(None), *(slice(0, g * q) for g, q in zip(e.grid, e.patch)))]
    if any(e.pad):
        channels_last = xp.permute_dims(images, (0, *range(2, 2 + k), 1))
        images = xp.permute_dims(pad_end(channels_last, e.pad, be), (0, k + 1, *range(1, k + 1)))
    patches = xp.reshape(images, (B, Cin, *(side for g, q in zip(e.grid, e.patch) for side in (g, q))))
    # B, Cin, g1, p1, g2, p2, ... -> B, g1, g2, ..., Cin, p1, p2, ...
    order = (0, *range(2, 2 + 2 * k, 2), 1, *range(3, 3 + 2 * k, 2))
    patch_len = Cin * math.prod(e.patch)
    patches = xp.reshape(xp.permute_dims(patches, order), (B, *e.grid, patch_len))
    weight = xp.reshape(p["proj"]["weight"], (cfg.embed_dim, patch_len))
    x = linear(patches, weight, p["proj"]["bias"], xp)
    if "norm" in p:
        x = be.block.layer_norm(x, p["norm"], cfg.layer_norm_eps, be)
    return x


def patch_merging(x: Any, p: Params, m: MergePlan, be: Backend) -> Any:
    """[B, ..., h, w, C] -> [B, ..., ceil(h/2), ceil(w/2), 2C]: 2x2 neighbours concatenated to 4C, reduced to 2C.

    Concat order is the official one, offsets (row, col) = (0,0), (1,0), (0,1), (1,1). "norm-reduce" (V1)
    normalises the 4C concat before the reduction; "reduce-norm" (V2) reduces first and normalises the 2C result.
    """
    xp = be.xp
    x = pad_end(x, m.pad, be)
    x = xp.concat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]],
                  axis=-1)
    reduction = p["reduction"]["weight"]
    if m.kind == "norm-reduce":
        return linear(be.block.layer_norm(x, p["norm"], m.eps, be), reduction, None, xp)
    return be.block.layer_norm(linear(x, reduction, None, xp), p["norm"], m.eps, be)


# ----------------------------------------------------------------------------------------------------------------
# The whole network.


def _check_input(x: Any, cfg: SwinConfig, policy: str | None) -> ModelPlan:
    shape = tuple(getattr(x, "shape", ()))
    axes = len(cfg.img_size)
    letters = "H, W" if axes == 2 else ", ".join(f"S{i}" for i in range(axes))
    if len(shape) != axes + 2:
        raise InputError(
            f"expected images of shape [B, {cfg.in_chans}, {letters}], got an array of shape {list(shape)}; "
            "add a batch axis with x[None] or move channels first with x.transpose(0, 3, 1, 2)"
        )
    if shape[1] != cfg.in_chans:
        hint = " (channels-last? use x.transpose(0, 3, 1, 2))" if shape[-1] == cfg.in_chans else ""
        raise InputError(f"expected {cfg.in_chans} channels on axis 1, got shape {list(shape)}{hint}")
    if shape[0] < 1:
        raise InputError("the batch is empty: give at least one image")
    kind = str(getattr(x, "dtype", ""))
    if "float" not in kind:
        raise InputError(
            f"expected floating-point images, got dtype {kind}; convert and normalise first "
            "(e.g. (x / 255 - mean) / std as swinref.preprocess does)"
        )
    mp = plan(cfg, tuple(int(n) for n in shape[2:]), policy)
    if mp.refusal is not None:
        raise InputError(mp.refusal)
    return mp


def _cast_input(x: Any, params: Params, be: Backend) -> Any:
    """Compute in the parameters' dtype: the input is cast once, explicitly.

    Params and input must live in the same library and on the same device: nothing is moved implicitly here.
    """
    ref = params["patch_embed.proj.weight"]
    owner = backend_for(ref)
    if owner.name != be.name or str(owner.device) != str(be.device):
        raise InputError(
            f"the parameters are {owner.name} arrays on {owner.device} but the input is a {be.name} array on "
            f"{be.device}; move the input to the parameters' device (swinref.load(..., device=...) places both)"
        )
    if x.dtype != ref.dtype:
        x = be.xp.astype(x, ref.dtype)
    return x


def _run(params: Params, x: Any, cfg: SwinConfig, policy: str | None, want_head: bool,
         points: dict[str, Any] | None = None, keep_probs: frozenset[str] = frozenset()) -> tuple[Any, list[Any]]:
    """The forward pass. `points`, when given, receives every intermediate point under its stable name."""
    be = backend_for(x)
    xp = be.xp
    mp = _check_input(x, cfg, policy)
    record = points.__setitem__ if points is not None else (lambda name, value: None)
    # The accelerated block adds the residual into the branch's own buffer; a recorded branch is kept as a copy.
    keep = (lambda value: xp.asarray(value, copy=True)) if points is not None else (lambda value: value)
    tree = nest(params)
    x = _cast_input(x, params, be)
    x = patch_embed(x, tree["patch_embed"], mp.embed, cfg, be)
    record("patch_embed", x)
    stage_outputs = []
    for stage in mp.stages:
        stage_params = tree["layers"][stage.index]
        for blk in stage.blocks:
            p = stage_params["blocks"][blk.index]
            attn, probs = be.block.attention_branch(x, p, blk, be, keep_probs=blk.name in keep_probs)
            if probs is not None:
                record(blk.name + ".attn_probs", probs)
            record(blk.name + ".attn", keep(attn))
            x = be.block.add_residual(attn, x)
            x = be.block.add_residual(be.block.mlp_branch(x, p, blk, be), x)
            record(blk.name, x)
        stage_outputs.append(x)
        if stage.merge is not None:
            x = patch_merging(x, stage_params["downsample"], stage.merge, be)
            record(stage.merge.name, x)
    if not want_head:
        return None, stage_outputs
    x = layer_norm(x, tree["norm"], cfg.layer_norm_eps, xp)
    record("norm", x)
    pooled = xp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # [B, C_L]
    record("pooled", pooled)
    if cfg.num_classes == 0 or "head" not in tree:
        return pooled, stage_outputs
    logits = linear(pooled, tree["head"]["weight"], tree["head"]["bias"], xp)
    record("logits", logits)
    return logits, stage_outputs


def forward(params: Params, x: Any, cfg: SwinConfig, *, policy: str | None = None) -> Any:
    """Logits [B, classes] for images x [B, 3, H, W] (pooled features [B, C_L] when the model has no head)."""
    logits, _ = _run(params, x, cfg, policy, want_head=True)
    return logits


def features(params: Params, x: Any, cfg: SwinConfig, *, policy: str | None = None,
             layout: str = "NCHW") -> list[Any]:
    """The stage outputs (before each merge; the last before the final norm), a pyramid for dense tasks.

    Channels-first [B, C_i, h_i, w_i] by default; layout="NHWC" returns the channels-last token maps.
    """
    if layout not in ("NCHW", "NHWC"):
        raise InputError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    _, outs = _run(params, x, cfg, policy, want_head=False)
    if layout == "NCHW" and outs:
        xp = backend_for(outs[0]).xp
        outs = [xp.permute_dims(o, (0, o.ndim - 1, *range(1, o.ndim - 1))) for o in outs]
    return outs


def point_names(cfg: SwinConfig, *, attn: bool = True, attn_probs: Iterable[str] = ()) -> list[str]:
    """The stable names of the intermediate points, in execution order."""
    wanted = set(attn_probs)
    names = ["patch_embed"]
    for stage in plan(cfg).stages:  # the names do not depend on the policy
        for blk in stage.blocks:
            if blk.name in wanted:
                names.append(blk.name + ".attn_probs")
            if attn:
                names.append(blk.name + ".attn")
            names.append(blk.name)
        if stage.merge is not None:
            names.append(stage.merge.name)
    names += ["norm", "pooled"]
    if cfg.num_classes > 0:
        names.append("logits")
    return names


def forward_trace(params: Params, x: Any, cfg: SwinConfig, *, policy: str | None = None,
                  attn_probs: Iterable[str] = ()) -> dict[str, Any]:
    """Every intermediate point under its stable name, in execution order (see `point_names`).

    `attn_probs` names blocks (e.g. "layers.0.blocks.1") whose attention probabilities [B*nW, nH, N, N] to keep.
    """
    points: dict[str, Any] = {}
    _run(params, x, cfg, policy, want_head=True, points=points, keep_probs=frozenset(attn_probs))
    return points
