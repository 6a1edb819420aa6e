"""The reference Swin block in plain array-API code: the twin every accelerated block is checked against.

A block is two residual branches, each a function of (x, p, blk, be) where x is the token map [B, *S, C], p the
block's own parameters under the checkpoint's names, blk its BlockPlan (swinref.plan) and be the Backend:

    x = x + attention_branch(x)      pre-norm:      attn(norm1(x))      res-post-norm: norm1(attn(x))
    x = x + mlp_branch(x)            pre-norm:      mlp(norm2(x))       res-post-norm: norm2(mlp(x))

(the additions by add_residual; `block` is the two together), and the products outside the blocks go through
linear. The forward pass calls block, layer_norm and linear, which the accelerated NumPy block (swinref.fast) has
too; the backend carries whichever was chosen (Backend.block), so neither module imports the other.
"""

from __future__ import annotations

from typing import Any

from swinref import geometry
from swinref.layers import gelu, logit_scale, pad_end, position_bias, qkv_bias, shift_mask, softmax
from swinref.layers import layer_norm as _layer_norm
from swinref.layers import linear as _linear
from swinref.namespace import Backend
from swinref.plan import BlockPlan


__all__ = ["block", "attention_branch", "mlp_branch", "add_residual", "layer_norm", "linear", "window_attention",
           "shifted_window_attention"]

Params = dict[str, Any]


def layer_norm(x: Any, p: Params, eps: float, be: Backend) -> Any:
    """LayerNorm over the last axis (twin: swinref.fast.layer_norm)."""
    return _layer_norm(x, p, eps, be.xp)


def linear(x: Any, weight: Any, bias: Any | None, be: Backend) -> Any:
    """[..., in] @ [out, in]^T + [out] (twin: swinref.fast.linear): the products outside the blocks (patch
    embedding, merges, head) go through the backend's block implementation too."""
    return _linear(x, weight, bias, be.xp)


def window_attention(windows: Any, p: Params, blk: BlockPlan, mask: Any | None, be: Backend) -> tuple[Any, Any]:
    """Multi-head self-attention inside each window: [B*nW, N, C] -> ([B*nW, N, C], probs [B*nW, nH, N, N]).

    `mask` is [nW, N, N] for shifted windows, None otherwise.
    """
    xp = be.xp
    BnW, N, C = windows.shape
    nH, d = blk.heads, blk.head_dim
    qkv = _linear(windows, p["qkv"]["weight"], qkv_bias(p, xp), xp)  # [B*nW, N, 3C], rows q | k | v, head-major
    qkv = xp.permute_dims(xp.reshape(qkv, (BnW, N, 3, nH, d)), (2, 0, 3, 1, 4))  # 3, B*nW, nH, N, d
    q, k, v = qkv[0, ...], qkv[1, ...], qkv[2, ...]
    if blk.attention == "scaled-dot":
        logits = xp.matmul(q * (d ** -0.5), xp.matrix_transpose(k))  # [B*nW, nH, N, N]
    else:
        # Cosine attention with a learned, clamped temperature per head.
        q = q / xp.clip(xp.linalg.vector_norm(q, axis=-1, keepdims=True), min=1e-12)
        k = k / xp.clip(xp.linalg.vector_norm(k, axis=-1, keepdims=True), min=1e-12)
        logits = xp.matmul(q, xp.matrix_transpose(k)) * logit_scale(p, xp)
    logits = logits + position_bias(p, blk, be, windows.dtype)
    if mask is not None:
        nW = mask.shape[0]
        logits = xp.reshape(logits, (BnW // nW, nW, nH, N, N)) + mask[:, None, :, :]
        logits = xp.reshape(logits, (BnW, nH, N, N))
    probs = softmax(logits, xp)
    out = xp.matmul(probs, v)  # [B*nW, nH, N, d]
    out = xp.reshape(xp.permute_dims(out, (0, 2, 1, 3)), (BnW, N, C))
    return _linear(out, p["proj"]["weight"], p["proj"]["bias"], xp), probs


def shifted_window_attention(x: Any, p: Params, blk: BlockPlan, be: Backend) -> tuple[Any, Any]:
    """(S)W-MSA on a [B, *S, C] map: pad and cyclic shift (in the plan's order), attend per window, undo both."""
    xp = be.xp
    spatial = tuple(x.shape[1:-1])
    axes = tuple(range(1, 1 + len(spatial)))
    back = tuple(slice(0, n) for n in spatial)
    if blk.roll_before_pad:
        if blk.shifted:
            x = xp.roll(x, shift=tuple(-s for s in blk.shift), axis=axes)
        x = pad_end(x, blk.pad, be)
    else:
        x = pad_end(x, blk.pad, be)
        if blk.shifted:
            x = xp.roll(x, shift=tuple(-s for s in blk.shift), axis=axes)
    mask = shift_mask(blk, be, x.dtype) if blk.mask else None
    windows = geometry.window_partition(x, blk.window, xp)  # [B*nW, N, C]
    out, probs = window_attention(windows, p["attn"], blk, mask, be)
    out = geometry.window_reverse(out, blk.window, blk.padded, xp)  # [B, *padded, C]
    if blk.roll_before_pad:
        out = out[(slice(None), *back, slice(None))]
        if blk.shifted:
            out = xp.roll(out, shift=blk.shift, axis=axes)
    else:
        if blk.shifted:
            out = xp.roll(out, shift=blk.shift, axis=axes)
        out = out[(slice(None), *back, slice(None))]
    return out, probs


def attention_branch(x: Any, p: Params, blk: BlockPlan, be: Backend, keep_probs: bool = False) -> tuple[Any, Any]:
    """The attention residual branch of a block: ([B, *S, C], the attention probabilities or None)."""
    if blk.norm == "pre":
        out, probs = shifted_window_attention(layer_norm(x, p["norm1"], blk.eps, be), p, blk, be)
    else:
        out, probs = shifted_window_attention(x, p, blk, be)
        out = layer_norm(out, p["norm1"], blk.eps, be)
    return out, (probs if keep_probs else None)


def add_residual(branch: Any, x: Any) -> Any:
    """x + branch: the residual connection (twin: swinref.fast.add_residual, which reuses the branch's buffer)."""
    return x + branch


def block(x: Any, p: Params, blk: BlockPlan, be: Backend, keep_probs: bool = False,
          keep_branch: bool = False) -> tuple[Any, Any, Any]:
    """A whole block: (x + attention branch, then + MLP branch; the attention branch when `keep_branch`; the
    attention probabilities when `keep_probs`) (twin: swinref.fast.block)."""
    attn, probs = attention_branch(x, p, blk, be, keep_probs)
    x = add_residual(attn, x)
    return add_residual(mlp_branch(x, p, blk, be), x), (attn if keep_branch else None), probs


def mlp_branch(x: Any, p: Params, blk: BlockPlan, be: Backend) -> Any:
    """The MLP residual branch of a block: fc1 -> GELU -> fc2 on [B, *S, C], with norm2 before or after."""
    xp = be.xp
    mlp = p["mlp"]

    def fc(t: Any) -> Any:
        h = gelu(_linear(t, mlp["fc1"]["weight"], mlp["fc1"]["bias"], xp), be)
        return _linear(h, mlp["fc2"]["weight"], mlp["fc2"]["bias"], xp)

    if blk.norm == "pre":
        return fc(layer_norm(x, p["norm2"], blk.eps, be))
    return layer_norm(fc(x), p["norm2"], blk.eps, be)
