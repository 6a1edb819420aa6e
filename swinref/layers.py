"""The pieces the reference block (swinref.blocks) and the accelerated block (swinref.fast) share.

Plain array-API functions over one sample's arrays, plus the cache of host-built constants (index tables, masks)
moved to a backend's device once. Parameters are the block's own nested view with the checkpoint's names
(`p["attn"]["qkv"]["weight"]`, see swinref.layout.nest).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from swinref import geometry
from swinref.errors import InputError
from swinref.namespace import Backend
from swinref.plan import MASK_VALUE, V2_LOGIT_SCALE_MAX, BlockPlan


__all__ = ["linear", "layer_norm", "gelu", "softmax", "pad_end", "device_constant", "qkv_bias", "position_bias",
           "shift_mask", "logit_scale", "V2_LOGIT_SCALE_MAX"]

Params = dict[str, Any]


def linear(x: Any, weight: Any, bias: Any | None, xp: Any) -> Any:
    """[..., in] @ [out, in]^T + [out] -> [..., out]."""
    # One 2-D product: a stacked matmul against a broadcast weight runs one small GEMM per leading index.
    lead = x.shape[:-1]
    y = xp.matmul(xp.reshape(x, (-1, x.shape[-1])), xp.matrix_transpose(weight))
    if bias is not None:
        y = y + bias
    return xp.reshape(y, (*lead, weight.shape[0]))


def layer_norm(x: Any, p: Params, eps: float, xp: Any) -> Any:
    """LayerNorm over the last axis with biased variance, as torch.nn.LayerNorm; p holds weight and bias."""
    mean = xp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=-1, keepdims=True)
    return centred / xp.sqrt(var + eps) * p["weight"] + p["bias"]


def gelu(x: Any, be: Backend) -> Any:
    """The exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (all peers use the erf form, not the tanh approximation)."""
    return x * 0.5 * (1.0 + be.erf(x * (1.0 / math.sqrt(2.0))))


def softmax(x: Any, xp: Any) -> Any:
    """Softmax over the last axis, shifted by the row maximum."""
    x = x - xp.max(x, axis=-1, keepdims=True)
    e = xp.exp(x)
    return e / xp.sum(e, axis=-1, keepdims=True)


def pad_end(x: Any, pad: tuple[int, ...], be: Backend) -> Any:
    """Zero-pad a [B, *S, C] map at the end of each spatial axis by `pad`."""
    if not any(pad):
        return x
    B, *spatial, C = x.shape
    out = be.xp.zeros((B, *(n + q for n, q in zip(spatial, pad)), C), dtype=x.dtype, device=be.device)
    # Functional update would be nicer; the standard only offers setitem, which every backend supports.
    out[(slice(None), *(slice(0, n) for n in spatial), slice(None))] = x
    return out


_CONSTANTS: dict[tuple, Any] = {}


def device_constant(be: Backend, key: tuple, build: Callable[[], Any], dtype: Any = None) -> Any:
    """A host-built constant on the backend's device, built and moved once per (backend, device, dtype, key)."""
    full_key = (be.name, str(be.device), str(dtype), key)
    value = _CONSTANTS.get(full_key)
    if value is None:
        value = be.asarray(build(), dtype=dtype)
        if len(_CONSTANTS) > 256:  # many input sizes in one process: keep the cache bounded
            _CONSTANTS.clear()
        _CONSTANTS[full_key] = value
    return value


def qkv_bias(p: Params, xp: Any) -> Any | None:
    """The [3C] bias of the qkv product: V1 stores it whole; V2 learns q and v biases and keeps k's at zero."""
    if "q_bias" in p:
        return xp.concat([p["q_bias"], xp.zeros_like(p["q_bias"]), p["v_bias"]])
    return p["qkv"].get("bias")


def logit_scale(p: Params, xp: Any) -> Any:
    """Cosine attention's per-head temperature exp(min(logit_scale, log 100)), [nH, 1, 1]."""
    return xp.exp(xp.clip(p["logit_scale"], max=V2_LOGIT_SCALE_MAX))


def position_bias(p: Params, blk: BlockPlan, be: Backend, dtype: Any) -> Any:
    """[nH, N, N] relative position bias added to the attention logits of every window."""
    xp = be.xp
    window, N, nH = blk.window, blk.window_tokens, blk.heads
    index = device_constant(be, ("rpi", window, blk.table_window, blk.bias_index), lambda: _bias_index(blk),
                            be.dtype("int64"))
    if blk.position_bias == "table":
        table = p["relative_position_bias_table"]  # [prod(2w-1), nH]
        rows = math.prod(2 * w - 1 for w in (blk.table_window or window))
        if table.shape[0] != rows:
            trained = int(round((math.isqrt(table.shape[0]) + 1) / 2))
            shape = "x".join(map(str, window))
            raise InputError(
                f"{blk.name} attends in {shape} windows under this policy and input size, but its relative position "
                f"bias table has {table.shape[0]} rows (window {trained}); use the policy the checkpoint was built "
                f"for ('official' or 'timm' keep the build-size windows), or load it with a config for this size "
                f"(img=..., window=...) so the tables are resized"
            )
    else:
        # V2's continuous position bias: a 2-layer MLP over log-spaced offsets.
        pretrained = blk.pretrained_window
        coords = device_constant(be, ("cpb", window, pretrained),
                                 lambda: geometry.relative_coords_table(window, pretrained), dtype)
        mlp = p["cpb_mlp"]
        hidden = xp.maximum(linear(coords, mlp[0]["weight"], mlp[0]["bias"], xp), 0.0)
        table = linear(hidden, mlp[2]["weight"], None, xp)  # [prod(2w-1), nH]
    bias = be.take_rows(table, index)  # [N*N, nH]
    bias = xp.permute_dims(xp.reshape(bias, (N, N, nH)), (2, 0, 1))
    if blk.position_bias == "cpb-mlp":
        bias = 16.0 / (1.0 + xp.exp(-bias))  # 16 * sigmoid
    return bias


def _bias_index(blk: BlockPlan) -> Any:
    """[N*N] rows of the bias table for the window's token pairs."""
    if blk.bias_index == "sliced":
        # The peers' quirk: the configured window's index, cut to its leading N x N block.
        N = blk.window_tokens
        return geometry.relative_position_index(blk.table_window)[:N, :N].reshape(-1)
    return geometry.relative_position_index(blk.window).reshape(-1)


def shift_mask(blk: BlockPlan, be: Backend, dtype: Any) -> Any:
    """[nW, N, N] additive shift mask of a shifted block (0 within a region, blk.mask_value across)."""
    key = ("mask", blk.padded, blk.window, blk.shift, blk.mask_value)
    scale = blk.mask_value / MASK_VALUE
    return device_constant(be, key, lambda: geometry.shift_mask(blk.padded, blk.window, blk.shift) * scale, dtype)
