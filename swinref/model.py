"""The Swin forward pass as functions over arrays.

`params` is a flat dict in the canonical layout (swinref.layout: the official state-dict names); `cfg` is a
SwinConfig. Token maps are channels-last, [B, h, w, C], as in the official implementation; images and the
feature pyramid are NCHW. The array namespace is resolved once in `forward` / `features` / `forward_trace` and
passed down as a Backend; nothing below touches NumPy for arithmetic on the input's arrays.

V1 and V2 share every function: the variant choices (pre-norm vs res-post-norm, scaled dot product vs cosine
attention, bias table vs continuous position bias, merge norm before vs after the reduction) come from
`cfg.version`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from swinref import fast, geometry
from swinref.backend import Backend, backend_for
from swinref.config import ModelPlan, StagePlan, SwinConfig, nearest_unpadded_sizes, plan
from swinref.errors import InputError

__all__ = ["forward", "features", "forward_trace", "PADDING_POLICIES", "point_names"]

Params = dict[str, Any]
Emit = Callable[[str, Any], None]

# "pad": pad the map bottom/right to the window, then roll (official detection backbone, Hugging Face,
#        torchvision); "timm": roll the unpadded map, then pad (timm); "strict": refuse sizes that need padding,
#        as the official classifier does.
PADDING_POLICIES = ("pad", "timm", "strict")

# Swin V2 clamps its learned attention temperature at log(1/0.01) (official: torch.clamp(logit_scale, max=...)).
V2_LOGIT_SCALE_MAX = math.log(1.0 / 0.01)


# ----------------------------------------------------------------------------------------------------------------
# Elementwise building blocks.


def linear(x: Any, weight: Any, bias: Any | None, xp: Any) -> Any:
    """[..., in] @ [out, in]^T + [out] -> [..., out]."""
    # One 2-D product: a stacked matmul against a broadcast weight runs one small GEMM per leading index.
    lead = x.shape[:-1]
    y = xp.matmul(xp.reshape(x, (-1, x.shape[-1])), xp.matrix_transpose(weight))
    if bias is not None:
        y = y + bias
    return xp.reshape(y, (*lead, weight.shape[0]))


def layer_norm(x: Any, weight: Any, bias: Any, eps: float, xp: Any) -> Any:
    """LayerNorm over the last axis with biased variance, as torch.nn.LayerNorm."""
    mean = xp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=-1, keepdims=True)
    return centred / xp.sqrt(var + eps) * weight + bias


_layer_norm = layer_norm  # for functions that pick between it and its Numba twin (fast.layer_norm)


def gelu(x: Any, be: Backend) -> Any:
    """The exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (all peers use the erf form, not the tanh approximation)."""
    return x * 0.5 * (1.0 + be.erf(x * (1.0 / math.sqrt(2.0))))


def softmax(x: Any, xp: Any) -> Any:
    """Softmax over the last axis, shifted by the row maximum."""
    x = x - xp.max(x, axis=-1, keepdims=True)
    e = xp.exp(x)
    return e / xp.sum(e, axis=-1, keepdims=True)


def mlp(x: Any, p: Params, prefix: str, be: Backend) -> Any:
    """fc1 -> GELU -> fc2: [..., C] -> [..., C * mlp_ratio] -> [..., C]."""
    xp = be.xp
    h = gelu(linear(x, p[prefix + "fc1.weight"], p[prefix + "fc1.bias"], xp), be)
    return linear(h, p[prefix + "fc2.weight"], p[prefix + "fc2.bias"], xp)


# ----------------------------------------------------------------------------------------------------------------
# Host-built constants, moved to the device once per (backend, device, dtype).

_CONSTANTS: dict[tuple, Any] = {}


def _constant(be: Backend, key: tuple, build: Callable[[], Any], dtype: Any = None) -> Any:
    full_key = (be.name, str(be.device), str(dtype), key)
    value = _CONSTANTS.get(full_key)
    if value is None:
        value = be.asarray(build(), dtype=dtype)
        if len(_CONSTANTS) > 256:  # many input sizes in one process: keep the cache bounded
            _CONSTANTS.clear()
        _CONSTANTS[full_key] = value
    return value


def _relative_position_bias(p: Params, prefix: str, cfg: SwinConfig, stage: StagePlan, be: Backend,
                            dtype: Any) -> Any:
    """[nH, N, N] bias added to the attention logits of every window."""
    xp = be.xp
    M, N, nH = stage.window, stage.window_tokens, stage.heads
    index = _constant(be, ("rpi", M), lambda: geometry.relative_position_index(M).reshape(-1), be.dtype("int64"))
    if cfg.version == 1:
        table = p[prefix + "relative_position_bias_table"]  # [(2M-1)^2, nH]
        if table.shape[0] != (2 * M - 1) ** 2:
            rows = table.shape[0]
            trained = int(round((math.isqrt(rows) + 1) / 2))
            raise InputError(
                f"stage {stage.index} attends in {M}x{M} windows at this input size, but its relative position "
                f"bias table has {rows} rows (window {trained}); run at the size the checkpoint was built for, "
                f"or load it with a config for this size so the tables are resized"
            )
    else:
        # V2 continuous position bias: a 2-layer MLP over log-spaced offsets, squashed to (0, 16).
        coords = _constant(
            be, ("cpb", M, stage.pretrained_window), lambda: geometry.relative_coords_table(M, stage.pretrained_window),
            dtype,
        )
        hidden = xp.maximum(linear(coords, p[prefix + "cpb_mlp.0.weight"], p[prefix + "cpb_mlp.0.bias"], xp), 0.0)
        table = linear(hidden, p[prefix + "cpb_mlp.2.weight"], None, xp)  # [(2M-1)^2, nH]
    bias = be.take_rows(table, index)  # [N*N, nH]
    bias = xp.permute_dims(xp.reshape(bias, (N, N, nH)), (2, 0, 1))
    if cfg.version == 2:
        bias = 16.0 / (1.0 + xp.exp(-bias))  # 16 * sigmoid
    return bias


def window_attention(windows: Any, p: Params, prefix: str, cfg: SwinConfig, stage: StagePlan, mask: Any | None,
                     be: Backend, emit: Emit | None = None, point: str = "") -> Any:
    """Multi-head self-attention inside each window: [B*nW, N, C] -> [B*nW, N, C].

    `mask` is [nW, N, N] (0 or -100) for shifted windows, None otherwise.
    """
    xp = be.xp
    BnW, N, C = windows.shape
    nH, d = stage.heads, stage.head_dim
    weight = p[prefix + "qkv.weight"]  # [3C, C], rows q | k | v, each head-major
    if cfg.version == 1:
        qkv_bias = p.get(prefix + "qkv.bias")
    else:
        q_bias = p.get(prefix + "q_bias")
        # V2 has learned q and v biases and a fixed zero k bias.
        qkv_bias = None if q_bias is None else xp.concat([q_bias, xp.zeros_like(q_bias), p[prefix + "v_bias"]])
    qkv = linear(windows, weight, qkv_bias, xp)  # [B*nW, N, 3C]
    qkv = xp.permute_dims(xp.reshape(qkv, (BnW, N, 3, nH, d)), (2, 0, 3, 1, 4))  # 3, B*nW, nH, N, d
    q, k, v = qkv[0, ...], qkv[1, ...], qkv[2, ...]
    if cfg.version == 1:
        logits = xp.matmul(q * (d ** -0.5), xp.matrix_transpose(k))  # [B*nW, nH, N, N]
    else:
        # Cosine attention with a learned, clamped temperature per head.
        q = q / xp.clip(xp.linalg.vector_norm(q, axis=-1, keepdims=True), min=1e-12)
        k = k / xp.clip(xp.linalg.vector_norm(k, axis=-1, keepdims=True), min=1e-12)
        scale = xp.exp(xp.clip(p[prefix + "logit_scale"], max=V2_LOGIT_SCALE_MAX))  # [nH, 1, 1]
        logits = xp.matmul(q, xp.matrix_transpose(k)) * scale
    logits = logits + _relative_position_bias(p, prefix, cfg, stage, be, windows.dtype)
    if mask is not None:
        nW = mask.shape[0]
        logits = xp.reshape(logits, (BnW // nW, nW, nH, N, N)) + mask[:, None, :, :]
        logits = xp.reshape(logits, (BnW, nH, N, N))
    probs = softmax(logits, xp)
    if emit is not None:
        emit(point + ".attn_probs", probs)
    out = xp.matmul(probs, v)  # [B*nW, nH, N, d]
    out = xp.reshape(xp.permute_dims(out, (0, 2, 1, 3)), (BnW, N, C))
    return linear(out, p[prefix + "proj.weight"], p[prefix + "proj.bias"], xp)


def _pad_hw(x: Any, pad_h: int, pad_w: int, be: Backend) -> Any:
    """Zero-pad a [B, H, W, C] map at the bottom and right."""
    if pad_h == 0 and pad_w == 0:
        return x
    B, H, W, C = x.shape
    out = be.xp.zeros((B, H + pad_h, W + pad_w, C), dtype=x.dtype, device=be.device)
    # Functional update would be nicer; the standard only offers setitem, which every backend supports.
    out[:, :H, :W, :] = x
    return out


def shifted_window_attention(x: Any, p: Params, prefix: str, cfg: SwinConfig, stage: StagePlan, shift: int,
                             padding: str, be: Backend, emit: Emit | None = None, point: str = "") -> Any:
    """(S)W-MSA on a [B, h, w, C] map: pad to the window, cyclic shift, attend per window, undo both."""
    xp = be.xp
    B, H, W, C = x.shape
    M = stage.window
    pad_h, pad_w = stage.pad
    Hp, Wp = stage.padded
    if shift and padding == "timm":
        # timm rolls the unpadded map and pads afterwards; the mask is still built on the padded size.
        x = xp.roll(x, shift=(-shift, -shift), axis=(1, 2))
        x = _pad_hw(x, pad_h, pad_w, be)
    else:
        x = _pad_hw(x, pad_h, pad_w, be)
        if shift:
            x = xp.roll(x, shift=(-shift, -shift), axis=(1, 2))
    mask = None
    if shift:
        mask = _constant(be, ("mask", Hp, Wp, M, shift), lambda: geometry.shift_mask(Hp, Wp, M, shift), x.dtype)
    windows = geometry.window_partition(x, M, xp)  # [B*nW, N, C]
    out = window_attention(windows, p, prefix + "attn.", cfg, stage, mask, be, emit, point)
    out = geometry.window_reverse(out, M, Hp, Wp, xp)  # [B, Hp, Wp, C]
    if shift and padding == "timm":
        out = out[:, :H, :W, :]
        out = xp.roll(out, shift=(shift, shift), axis=(1, 2))
    else:
        if shift:
            out = xp.roll(out, shift=(shift, shift), axis=(1, 2))
        out = out[:, :H, :W, :]
    return out


def swin_block(x: Any, p: Params, prefix: str, cfg: SwinConfig, stage: StagePlan, shift: int, padding: str,
               be: Backend, emit: Emit | None = None, point: str = "") -> Any:
    """One Swin block on [B, h, w, C].

    V1 (pre-norm):       x = x + attn(norm1(x));  x = x + mlp(norm2(x))
    V2 (res-post-norm):  x = x + norm1(attn(x));  x = x + norm2(mlp(x))
    """
    if fast.enabled(be):  # NumPy: the same block with Numba kernels (swinref.fast)
        return fast.swin_block(x, p, prefix, cfg, stage, shift, padding, be, emit, point)
    xp = be.xp
    eps = cfg.layer_norm_eps

    def norm(name: str, t: Any) -> Any:
        return layer_norm(t, p[prefix + name + ".weight"], p[prefix + name + ".bias"], eps, xp)

    if cfg.version == 1:
        attn = shifted_window_attention(norm("norm1", x), p, prefix, cfg, stage, shift, padding, be, emit, point)
    else:
        attn = norm("norm1", shifted_window_attention(x, p, prefix, cfg, stage, shift, padding, be, emit, point))
    if emit is not None:
        emit(point + ".attn", attn)
    x = x + attn
    if cfg.version == 1:
        x = x + mlp(norm("norm2", x), p, prefix + "mlp.", be)
    else:
        x = x + norm("norm2", mlp(x, p, prefix + "mlp.", be))
    return x


def patch_merging(x: Any, p: Params, prefix: str, cfg: SwinConfig, be: Backend) -> Any:
    """[B, h, w, C] -> [B, ceil(h/2), ceil(w/2), 2C]: 2x2 neighbours concatenated to 4C, then reduced to 2C.

    Concat order is the official one, offsets (row, col) = (0,0), (1,0), (0,1), (1,1). V1 normalises the 4C
    concat before the reduction; V2 reduces first and normalises the 2C result.
    """
    xp = be.xp
    B, H, W, C = x.shape
    x = _pad_hw(x, H % 2, W % 2, be)
    x = xp.concat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], axis=-1)
    eps = cfg.layer_norm_eps
    norm_w, norm_b = p[prefix + "norm.weight"], p[prefix + "norm.bias"]
    layer_norm = fast.layer_norm if fast.enabled(be) else _layer_norm
    if cfg.version == 1:
        return linear(layer_norm(x, norm_w, norm_b, eps, xp), p[prefix + "reduction.weight"], None, xp)
    return layer_norm(linear(x, p[prefix + "reduction.weight"], None, xp), norm_w, norm_b, eps, xp)


def patch_embed(images: Any, p: Params, cfg: SwinConfig, mp: ModelPlan, be: Backend) -> Any:
    """[B, 3, H, W] -> [B, H/p, W/p, C]: non-overlapping p x p patches, linearly embedded, then LayerNorm.

    The strided convolution is a reshape plus a matmul: each patch flattened as (channel, row, col), the order of
    the convolution kernel's [C, 3, p, p] weight.
    """
    xp = be.xp
    B, Cin, H, W = images.shape
    P = cfg.patch_size
    pad_h, pad_w = mp.embed.pad
    if pad_h or pad_w:
        images = xp.permute_dims(_pad_hw(xp.permute_dims(images, (0, 2, 3, 1)), pad_h, pad_w, be), (0, 3, 1, 2))
    h, w = mp.embed.grid
    patches = xp.reshape(images, (B, Cin, h, P, w, P))
    patches = xp.reshape(xp.permute_dims(patches, (0, 2, 4, 1, 3, 5)), (B, h, w, Cin * P * P))
    weight = xp.reshape(p["patch_embed.proj.weight"], (cfg.embed_dim, Cin * P * P))
    x = linear(patches, weight, p["patch_embed.proj.bias"], xp)
    if cfg.patch_norm:
        norm = fast.layer_norm if fast.enabled(be) else layer_norm
        x = norm(x, p["patch_embed.norm.weight"], p["patch_embed.norm.bias"], cfg.layer_norm_eps, xp)
    return x


# ----------------------------------------------------------------------------------------------------------------
# The whole network.


def _check_input(x: Any, cfg: SwinConfig, padding: str) -> ModelPlan:
    if padding not in PADDING_POLICIES:
        raise InputError(f"unknown padding policy {padding!r}; choose one of {', '.join(PADDING_POLICIES)}")
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        raise InputError(
            f"expected images of shape [B, {cfg.in_chans}, H, W], got an array of shape {list(shape)}; "
            "add a batch axis with x[None] or move channels first with x.transpose(0, 3, 1, 2)"
        )
    if shape[1] != cfg.in_chans:
        hint = " (channels-last? use x.transpose(0, 3, 1, 2))" if shape[3] == cfg.in_chans else ""
        raise InputError(f"expected {cfg.in_chans} channels on axis 1, got shape {list(shape)}{hint}")
    if shape[0] < 1:
        raise InputError("the batch is empty: give at least one image")
    kind = str(getattr(x, "dtype", ""))
    if "float" not in kind:
        raise InputError(
            f"expected floating-point images, got dtype {kind}; convert and normalise first "
            "(e.g. (x / 255 - mean) / std as swinref.preprocess does)"
        )
    H, W = shape[2], shape[3]
    if H < cfg.patch_size or W < cfg.patch_size:
        raise InputError(
            f"image {H}x{W} is smaller than one {cfg.patch_size}x{cfg.patch_size} patch; "
            f"give images of at least {cfg.patch_size}x{cfg.patch_size} pixels"
        )
    mp = plan(cfg, (H, W))
    if padding == "strict" and mp.needs_padding:
        near = ", ".join(f"{h}x{w}" for h, w in nearest_unpadded_sizes(cfg, (H, W)))
        raise InputError(
            f"image {H}x{W} needs padding to fit the {cfg.window_size}-token window and the patch merges, which "
            f"the official classifier refuses (padding='strict'); nearest sizes that need none: {near}; or use "
            f"padding='pad' (default) or 'timm'"
        )
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


def _run(params: Params, x: Any, cfg: SwinConfig, padding: str, emit: Emit | None, want_head: bool,
         be: Backend | None = None) -> tuple[Any, list[Any]]:
    be = be or backend_for(x)
    xp = be.xp
    mp = _check_input(x, cfg, padding)
    x = _cast_input(x, params, be)
    x = patch_embed(x, params, cfg, mp, be)
    if emit is not None:
        emit("patch_embed", x)
    stage_outputs = []
    for stage in mp.stages:
        i = stage.index
        for j in range(stage.depth):
            point = f"layers.{i}.blocks.{j}"
            x = swin_block(x, params, point + ".", cfg, stage, stage.block_shift(j), padding, be, emit, point)
            if emit is not None:
                emit(point, x)
        stage_outputs.append(x)
        if stage.merge_pad is not None:
            x = patch_merging(x, params, f"layers.{i}.downsample.", cfg, be)
            if emit is not None:
                emit(f"layers.{i}.downsample", x)
    if not want_head:
        return None, stage_outputs
    x = layer_norm(x, params["norm.weight"], params["norm.bias"], cfg.layer_norm_eps, xp)
    if emit is not None:
        emit("norm", x)
    pooled = xp.mean(x, axis=(1, 2))  # [B, C_L]
    if emit is not None:
        emit("pooled", pooled)
    if cfg.num_classes == 0 or "head.weight" not in params:
        return pooled, stage_outputs
    logits = linear(pooled, params["head.weight"], params["head.bias"], xp)
    if emit is not None:
        emit("logits", logits)
    return logits, stage_outputs


def forward(params: Params, x: Any, cfg: SwinConfig, *, padding: str = "pad") -> Any:
    """Logits [B, classes] for images x [B, 3, H, W] (pooled features [B, C_L] when the model has no head)."""
    logits, _ = _run(params, x, cfg, padding, None, want_head=True)
    return logits


def features(params: Params, x: Any, cfg: SwinConfig, *, padding: str = "pad", layout: str = "NCHW") -> list[Any]:
    """The four stage outputs (before each merge; the last before the final norm), a pyramid for dense tasks.

    NCHW [B, C_i, h_i, w_i] by default; layout="NHWC" returns the channels-last token maps.
    """
    if layout not in ("NCHW", "NHWC"):
        raise InputError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    be = backend_for(x)
    _, outs = _run(params, x, cfg, padding, None, want_head=False, be=be)
    if layout == "NCHW":
        outs = [be.xp.permute_dims(o, (0, 3, 1, 2)) for o in outs]
    return outs


def point_names(cfg: SwinConfig, *, attn: bool = True, attn_probs: Iterable[str] = ()) -> list[str]:
    """The stable names of the intermediate points, in execution order."""
    names = ["patch_embed"]
    for stage in plan(cfg).stages:
        for j in range(stage.depth):
            point = f"layers.{stage.index}.blocks.{j}"
            if point in set(attn_probs):
                names.append(point + ".attn_probs")
            if attn:
                names.append(point + ".attn")
            names.append(point)
        if stage.merge_pad is not None:
            names.append(f"layers.{stage.index}.downsample")
    names += ["norm", "pooled"]
    if cfg.num_classes > 0:
        names.append("logits")
    return names


def forward_trace(params: Params, x: Any, cfg: SwinConfig, *, padding: str = "pad",
                  attn_probs: Iterable[str] = ()) -> dict[str, Any]:
    """Every intermediate point under its stable name, in execution order (see `point_names`).

    `attn_probs` names blocks (e.g. "layers.0.blocks.1") whose attention probabilities [B*nW, nH, N, N] to keep.
    """
    wanted = set(attn_probs)
    points: dict[str, Any] = {}

    def emit(name: str, value: Any) -> None:
        if name.endswith(".attn_probs") and name[: -len(".attn_probs")] not in wanted:
            return
        points[name] = value

    _run(params, x, cfg, padding, emit, want_head=True)
    return points
