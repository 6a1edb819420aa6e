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

from swinref.backend import Backend, backend_for, to_host
from swinref.config import SwinConfig
from swinref.errors import InputError
from swinref.layers import layer_norm, pad_end
from swinref.layout import nest
from swinref.plan import MergePlan, ModelPlan, PatchEmbedPlan, plan

__all__ = ["forward", "forward_pooled", "forward_head", "features", "forward_trace", "point_names", "check_out_indices",
           "check_attn_probs", "pos_embed"]

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
    x = be.block.linear(patches, weight, p["proj"]["bias"], be)
    if "norm" in p:
        x = be.block.layer_norm(x, p["norm"], cfg.layer_norm_eps, be)
    return x


_POS_EMBED: dict[tuple, tuple[Any, Any]] = {}


def pos_embed(table: Any, e: PatchEmbedPlan, be: Backend) -> Any:
    """The absolute position embedding [1, C, *stored grid] resized to the token grid, channels-last [1, *grid, C].

    Resized as the official detection backbone does (F.interpolate(..., mode='bicubic'), align_corners=False, at
    every size; the identity at the stored grid): on the host in float64 once per (param array, grid), then cast
    to the param's dtype and moved to the device once. The cache holds the param array itself, so its id is not
    reused while the entry lives.
    """
    key = (id(table), e.grid, be.name, str(be.device))
    hit = _POS_EMBED.get(key)
    if hit is not None and hit[0] is table:
        return hit[1]
    from swinref.transfer import bicubic_resize

    host = to_host(table)
    grid = bicubic_resize(host.astype("float64"), e.grid) if tuple(host.shape[2:]) != e.grid else host
    k = len(e.grid)
    value = be.asarray(grid.transpose(0, *range(2, 2 + k), 1).astype(host.dtype), dtype=table.dtype)
    if len(_POS_EMBED) > 64:
        _POS_EMBED.clear()
    _POS_EMBED[key] = (table, value)
    return value


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
        return be.block.linear(be.block.layer_norm(x, p["norm"], m.eps, be), reduction, None, be)
    return be.block.layer_norm(be.block.linear(x, reduction, None, be), p["norm"], m.eps, be)


# ----------------------------------------------------------------------------------------------------------------
# The whole network.


def _check_input(x: Any, cfg: SwinConfig, policy: str | None) -> ModelPlan:
    if not hasattr(x, "shape") or not hasattr(x, "dtype") or getattr(x.dtype, "kind", "f") in "OUSV":
        raise InputError(f"expected an array of images [B, {cfg.in_chans}, H, W], got {describe_input(x)}; pass "
                         f"a float array (swinref.preprocess turns image files into one)")
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


def describe_input(x: Any) -> str:
    """What a caller passed instead of an array, in a few words (never the whole value)."""
    if x is None:
        return "None"
    if isinstance(x, (str, bytes)):
        text = repr(x)
        return f"a {type(x).__name__} {text[:60] + '...' if len(text) > 60 else text}"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        if getattr(x, "ndim", None) == 0 and getattr(x.dtype, "kind", "") in "OUS":
            return describe_input(x.item())  # np.asarray(None), np.asarray("cat.jpg")
        return f"an array of dtype {x.dtype} and shape {list(x.shape)}"
    return f"a {type(x).__name__}"


def _check_finite(x: Any, xp: Any) -> None:
    """NaN or inf in the input makes every logit NaN without an error anywhere: refuse it, with the count."""
    finite = xp.isfinite(x)
    if bool(xp.all(finite)):
        return
    bad = int(xp.sum(xp.astype(xp.logical_not(finite), xp.int64)))
    total = math.prod(x.shape)
    raise InputError(f"the input holds {bad} non-finite value{'s' if bad > 1 else ''} (NaN or inf) of {total}; the "
                     f"outputs would be NaN: clean the images first (e.g. np.nan_to_num), or pass "
                     f"check_finite=False to run anyway")


_WARNED_CASTS: set[tuple[str, str]] = set()


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
        lossy = (str(x.dtype), str(ref.dtype))
        if _itemsize(x.dtype) > _itemsize(ref.dtype) and lossy not in _WARNED_CASTS:
            _WARNED_CASTS.add(lossy)  # once per process and pair of dtypes: a warning per batch would drown
            import warnings

            warnings.warn(f"the input is {lossy[0]} and the model computes in {lossy[1]}: the input is rounded to "
                          f"{lossy[1]} (load the model with dtype='{lossy[0]}' to compute in {lossy[0]})",
                          UserWarning, stacklevel=_caller_level())
        x = be.xp.astype(x, ref.dtype)
    return x


def _caller_level() -> int:
    """The warnings.warn stacklevel of the first caller outside swinref (the chunked pass recurses)."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _itemsize(dtype: Any) -> int:
    return int(getattr(dtype, "itemsize", 0)) or (8 if "64" in str(dtype) else 2 if "16" in str(dtype) else 4)


def _run(params: Params, x: Any, cfg: SwinConfig, policy: str | None, points: dict[str, Any] | None = None,
         keep_probs: frozenset[str] = frozenset(), outs: tuple[int, ...] | None = None, head: bool = True,
         max_memory: int | float | str | None = None, check_finite: bool = True) -> Any:
    """The forward pass: the logits (the pooled features without a head, or with `head=False`). `points`, when
    given, receives every intermediate point under its stable name.

    `outs` (backbone mode): the stages whose outputs to return instead, a list, each through its output norm
    norm{i} when the params hold it, channels-last; the pass stops after the last of them (no head).

    The memory guard (swinref.budget) runs first: a batch that does not fit at once runs in chunks of images (a
    trace, which holds every point, is refused instead); one image that does not fit is refused. Then NaN or inf
    in the input is refused (`check_finite=False` runs anyway)."""
    be = backend_for(x)
    xp = be.xp
    mp = _check_input(x, cfg, policy)
    chunk = _memory_chunk(params, x, cfg, mp, be, points is not None, keep_probs, outs, max_memory)
    if chunk < x.shape[0]:
        parts = [_run(params, x[i:i + chunk], cfg, policy, outs=outs, head=head, max_memory=max_memory,
                      check_finite=check_finite) for i in range(0, x.shape[0], chunk)]
        if outs is not None:
            return [xp.concat([part[k] for part in parts]) for k in range(len(parts[0]))]
        return xp.concat(parts)
    if check_finite:
        _check_finite(x, xp)
    record = points.__setitem__ if points is not None else (lambda name, value: None)
    tree = nest(params)
    x = _cast_input(x, params, be)
    x = patch_embed(x, tree["patch_embed"], mp.embed, cfg, be)
    if mp.embed.pos_embed is not None:
        x = x + pos_embed(params[mp.embed.pos_embed], mp.embed, be)
    record("patch_embed", x)
    stage_outputs = []
    last = max(outs) if outs else len(mp.stages) - 1
    for stage in mp.stages[:last + 1]:
        stage_params = tree["layers"][stage.index]
        for blk in stage.blocks:
            p = stage_params["blocks"][blk.index]
            x, attn, probs = be.block.block(x, p, blk, be, keep_probs=blk.name in keep_probs,
                                            keep_branch=points is not None)
            if probs is not None:
                record(blk.name + ".attn_probs", probs)
            if attn is not None:
                record(blk.name + ".attn", attn)
            record(blk.name, x)
        if outs is not None and stage.index in outs:
            out = x
            if stage.out_norm and stage.out_norm[0] in params:
                out = layer_norm(x, tree[stage.out_norm[0].split(".")[0]], cfg.layer_norm_eps, xp)
            record(f"outs.{stage.index}", _channels_first(out, xp))
            stage_outputs.append(out)
        if stage.merge is not None and stage.index < last:
            x = patch_merging(x, stage_params["downsample"], stage.merge, be)
            record(stage.merge.name, x)
    if outs is not None:
        return stage_outputs
    x = layer_norm(x, tree["norm"], cfg.layer_norm_eps, xp)
    record("norm", x)
    pooled = xp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # [B, C_L]
    record("pooled", pooled)
    if not head or cfg.num_classes == 0 or "head" not in tree:
        return pooled
    logits = forward_head(params, pooled)
    record("logits", logits)
    return logits


def _memory_chunk(params: Params, x: Any, cfg: SwinConfig, mp: ModelPlan, be: Backend, traced: bool,
                  keep_probs: frozenset[str], outs: tuple[int, ...] | None,
                  max_memory: int | float | str | None) -> int:
    """The images per pass that fit (swinref.budget.check_memory), in the parameters' dtype. The host's free
    memory says nothing about a GPU's: on other backends only a max_memory budget applies."""
    from swinref.budget import check_memory, points_bytes

    dtype = _dtype_name(params["patch_embed.proj.weight"].dtype)
    batch, backbone = int(x.shape[0]), outs is not None
    if be.name != "numpy" and max_memory is None:
        return batch

    def points(b: int, m: ModelPlan) -> int:
        return points_bytes(cfg, m, batch=b, dtype=dtype, attn_probs=keep_probs, backbone=backbone)

    return check_memory(cfg, mp, batch=batch, dtype=dtype, backbone=backbone, max_memory=max_memory,
                        chunks=not traced, extra=points if traced else None, host=be.name == "numpy",
                        what="the traced forward pass" if traced else "the forward pass")


def _dtype_name(dtype: Any) -> str:
    text = str(dtype)
    return next((name for name in ("float64", "float16", "bfloat16") if name in text), "float32")


def _channels_first(x: Any, xp: Any) -> Any:
    return xp.permute_dims(x, (0, x.ndim - 1, *range(1, x.ndim - 1)))


def check_out_indices(cfg: SwinConfig, out_indices: Iterable[int] | None) -> tuple[int, ...]:
    """The selected stages, sorted (None: every stage); an index outside 0..L-1 raises InputError."""
    n = cfg.num_layers
    if out_indices is None:
        return tuple(range(n))
    try:
        chosen = tuple(int(i) for i in out_indices)
    except (TypeError, ValueError):
        raise InputError(f"out_indices must be stage indices in 0..{n - 1}, got {out_indices!r}") from None
    bad = [i for i in chosen if not 0 <= i < n]
    if bad or not chosen:
        raise InputError(f"out_indices {list(chosen)}: {cfg.name} has {n} stages, so each index must be in "
                         f"0..{n - 1} (e.g. out_indices=(0, 1, 2, 3) for every stage)"
                         + ("" if chosen else "; give at least one"))
    return tuple(sorted(set(chosen)))


def forward(params: Params, x: Any, cfg: SwinConfig, *, policy: str | None = None,
            max_memory: int | float | str | None = None, check_finite: bool = True) -> Any:
    """Logits [B, classes] for images x [B, 3, H, W] (pooled features [B, C_L] when the model has no head).
    `max_memory` (bytes, or '4GiB'): a budget for the pass, weights included (swinref.budget). NaN or inf in x
    raises InputError unless `check_finite=False`. An input of a wider dtype than the params is rounded to
    theirs (a warning, once per process)."""
    return _run(params, x, cfg, policy, max_memory=max_memory, check_finite=check_finite)


def forward_pooled(params: Params, x: Any, cfg: SwinConfig, *, policy: str | None = None,
                   max_memory: int | float | str | None = None, check_finite: bool = True) -> Any:
    """The pooled features [B, C_L] before the head (final norm, mean over the tokens): the image embedding.
    `forward_head(params, forward_pooled(...))` is `forward(...)`, operation for operation."""
    return _run(params, x, cfg, policy, head=False, max_memory=max_memory, check_finite=check_finite)


def forward_head(params: Params, pooled: Any) -> Any:
    """The classifier head on pooled features: [B, C_L] -> logits [B, classes]."""
    be = backend_for(pooled)
    return be.block.linear(pooled, params["head.weight"], params["head.bias"], be)


def features(params: Params, x: Any, cfg: SwinConfig, *, policy: str | None = None,
             layout: str = "NCHW", out_indices: Iterable[int] | None = None,
             max_memory: int | float | str | None = None, check_finite: bool = True) -> list[Any]:
    """The selected stage outputs (before each merge), a pyramid for dense tasks, as a detection backbone returns it.

    `out_indices` selects stages (None: all), returned in stage order; each goes through its output norm norm{i}
    when the params hold norm{i}.weight (a backbone checkpoint's), else it is the raw stage output (the last one
    before the final norm). Channels-first [B, C_i, h_i, w_i] by default; layout="NHWC" returns the channels-last
    token maps.
    """
    if layout not in ("NCHW", "NHWC"):
        raise InputError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    chosen = check_out_indices(cfg, out_indices)
    outs = _run(params, x, cfg, policy, outs=chosen, max_memory=max_memory, check_finite=check_finite)
    if layout == "NCHW" and outs:
        xp = backend_for(outs[0]).xp
        outs = [_channels_first(o, xp) for o in outs]
    return outs


def check_attn_probs(cfg: SwinConfig, attn_probs: Iterable[str] | str) -> frozenset[str]:
    """The blocks whose attention probabilities to keep; a name that is no block of cfg raises InputError."""
    names = [attn_probs] if isinstance(attn_probs, str) else list(attn_probs)
    stages = plan(cfg).stages
    blocks = {blk.name for stage in stages for blk in stage.blocks}
    unknown = [str(n) for n in names if n not in blocks]
    if unknown:
        shown = ", ".join(repr(n[:60]) for n in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise InputError(f"attn_probs names no block of this model: {shown}; its blocks are layers.i.blocks.j with j "
                         f"below stage i's depth ({', '.join(str(s.depth) for s in stages)}), e.g. "
                         f"attn_probs=['layers.0.blocks.1']")
    return frozenset(names)


def point_names(cfg: SwinConfig, *, attn: bool = True, attn_probs: Iterable[str] = (),
                out_indices: Iterable[int] | None = None, backbone: bool = False) -> list[str]:
    """The stable names of the intermediate points, in execution order.

    Backbone mode (`backbone=True` or `out_indices` given): no final norm, pooling or head; after each selected
    stage its pyramid output `outs.{i}` ([B, C_i, h_i, w_i], through norm{i} when the params hold it), and
    nothing after the last selected stage."""
    wanted = check_attn_probs(cfg, attn_probs)
    chosen = check_out_indices(cfg, out_indices) if backbone or out_indices is not None else None
    stages = plan(cfg).stages  # the names do not depend on the policy
    last = chosen[-1] if chosen else len(stages) - 1
    names = ["patch_embed"]
    for stage in stages[:last + 1]:
        for blk in stage.blocks:
            if blk.name in wanted:
                names.append(blk.name + ".attn_probs")
            if attn:
                names.append(blk.name + ".attn")
            names.append(blk.name)
        if chosen is not None and stage.index in chosen:
            names.append(f"outs.{stage.index}")
        if stage.merge is not None and stage.index < last:
            names.append(stage.merge.name)
    if chosen is not None:
        return names
    names += ["norm", "pooled"]
    if cfg.num_classes > 0:
        names.append("logits")
    return names


def forward_trace(params: Params, x: Any, cfg: SwinConfig, *, policy: str | None = None,
                  attn_probs: Iterable[str] = (), out_indices: Iterable[int] | None = None,
                  backbone: bool = False, max_memory: int | float | str | None = None,
                  check_finite: bool = True) -> dict[str, Any]:
    """Every intermediate point under its stable name, in execution order (see `point_names`).

    `attn_probs` names blocks (e.g. "layers.0.blocks.1") whose attention probabilities [B*nW, nH, N, N] to keep.
    Backbone mode (`backbone=True` or `out_indices` given) records the pyramid outputs `outs.{i}` instead of the
    final norm, pooling and head.
    """
    points: dict[str, Any] = {}
    chosen = check_out_indices(cfg, out_indices) if backbone or out_indices is not None else None
    _run(params, x, cfg, policy, points=points, keep_probs=check_attn_probs(cfg, attn_probs), outs=chosen,
         max_memory=max_memory, check_finite=check_finite)
    return points
