"""A fused item of swinref.fast as one Numba call without the GIL: windows gathered, normalised, attended,
projected, added, taken through the MLP and scattered back (twin: fast._window_branch + fast._mlp_rows, the same
steps as NumPy calls from Python).

Why one call: an item made of NumPy calls takes the GIL back between every two of them (about 40 per item), so
two lanes running items at once wait for each other at every step, and on a machine shared with another process a
lane that waits for the GIL sleeps and hands its core away. Inside this call a lane never waits for anything.

The products are swinref.gemm's kernel throughout, the attention's included: q k^T multiplies q [N, d] by k^T
copied into [d, N'] (N rounded up to whole panels, the extra columns zero and dropped), and the probabilities
[N, N] multiply v in place in the qkv rows (d is a whole number of panels). Row kernels are swinref.kernels'.
float32 only, with column-major weights and head dims that are whole panels (`fits`); otherwise fast keeps its
NumPy item.
"""

from __future__ import annotations

import numpy as np

from swinref import gemm
from swinref.kernels import _jit, attention_softmax_f32, fetch_add, gelu_bias_rows_f32, layer_norm_rows

__all__ = ["fits", "windows_through_block"]


def fits(x2d: np.ndarray, weights: tuple[np.ndarray, ...], head_dim: int) -> bool:
    """Whether the native item takes a block: float32 tokens, column-major float32 weights whose products are
    whole panels, and heads of whole panels."""
    f32 = np.dtype(np.float32)
    return (x2d.dtype == f32 and x2d.flags.c_contiguous and head_dim % gemm.NR == 0
            and all(w.dtype == f32 and w.ndim == 2 and w.shape[0] % gemm.NR == 0 and gemm._rows_contiguous(w.T)
                    for w in weights))


@_jit(inline="always")
def _product(x, wt, out):  # pragma: no cover - compiled
    """out = x @ wt, all of wt's panels."""
    gemm._panels(x, wt, out, 0, wt.shape[1] // gemm.NR)


@_jit(inline="always")
def _add_row(x, row):  # pragma: no cover - compiled
    """x[i] += row for every row i of x."""
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            x[i, c] += row[c]


@_jit()
def windows_through_block(next_item, items, step, x2d, index, padding,
                          norm1_w, norm1_b, qkv_wt, qkv_b, rel_bias, mask, q_scale, cosine, floor,
                          proj_wt, proj_b, norm2_w, norm2_b, fc1_wt, fc1_b, fc2_wt, fc2_b, eps, post_norm,
                          heads, out, branch, keep_branch, probs, keep_probs):  # pragma: no cover - compiled
    """Items of `step` windows (item i: windows i*step ..) through a whole block, taken one after another from the
    shared counter next_item[0] until `items` are taken: every lane calls this once per block, so a lane returns
    to Python (and takes the GIL) once per block, not once per item. Which lane takes which item never changes a
    result."""
    windows = index.shape[0]
    while True:
        i = fetch_add(next_item, 0, 1)
        if i >= items:
            return
        _windows(x2d, index, padding, i * step, min(step, windows - i * step),
                 norm1_w, norm1_b, qkv_wt, qkv_b, rel_bias, mask, q_scale, cosine, floor,
                 proj_wt, proj_b, norm2_w, norm2_b, fc1_wt, fc1_b, fc2_wt, fc2_b, eps, post_norm,
                 heads, out, branch, keep_branch, probs, keep_probs)


@_jit(inline="always")
def _windows(x2d, index, padding, w0, nw,
             norm1_w, norm1_b, qkv_wt, qkv_b, rel_bias, mask, q_scale, cosine, floor,
             proj_wt, proj_b, norm2_w, norm2_b, fc1_wt, fc1_b, fc2_wt, fc2_b, eps, post_norm,
             heads, out, branch, keep_branch, probs, keep_probs):  # pragma: no cover - compiled
    """Windows w0 .. w0 + nw - 1 of x2d [B*T, C] through a whole block into out (and the attention branch into
    branch, the probabilities into probs [windows, nH, N, N], when asked).

    index [windows, N]: each window token's row; padding [windows, N] (or [0, 0]: none): which are padding, whose
    rows are zeros after the norm and never written back. q_scale [nH]: what each head's q is multiplied by (d^-0.5,
    or cosine attention's temperature after q and k are normalised). post_norm: V2's res-post norms instead of
    V1's pre-norms."""
    N = index.shape[1]
    C = x2d.shape[1]
    d = C // heads
    n = nw * N
    f32 = np.float32
    has_padding = padding.shape[0] > 0

    rows = np.empty(n, np.int64)
    pad = np.zeros(n, np.bool_)
    xs = np.empty((n, C), f32)
    for i in range(n):
        rows[i] = index[w0 + i // N, i % N]
        if has_padding:
            pad[i] = padding[w0 + i // N, i % N]
        for c in range(C):
            xs[i, c] = x2d[rows[i], c]

    src = np.empty((n, C), f32)
    if post_norm:
        src[:] = xs
    else:
        layer_norm_rows(xs, norm1_w, norm1_b, eps, src)
    for i in range(n):
        if pad[i]:
            src[i, :] = 0  # padding follows the norm, as in every peer: its qkv is the bias
    qkv = np.empty((n, 3 * C), f32)
    _product(src, qkv_wt, qkv)
    _add_row(qkv, qkv_b)

    # Attention, window by window: each head's q k^T [N, N'] into logits [heads, N, N] (contiguous, so the softmax
    # kernel's rows vectorise), one softmax pass over all heads, then p @ v.
    Np = -(-N // gemm.NR) * gemm.NR
    logits = np.empty((1, heads, N, N), f32)
    qk = np.empty((N, Np), f32)
    q = np.empty((N, d), f32)
    kt = np.zeros((d, Np), f32)
    attended = src  # src is spent: the heads' outputs take its place
    for w in range(nw):
        base = w * N
        if cosine:  # q and k rows normalised where they lie in qkv
            for i in range(N):
                for part in range(2):
                    for h in range(heads):
                        c0 = part * C + h * d
                        s = f32(0.0)
                        for j in range(d):
                            s += qkv[base + i, c0 + j] * qkv[base + i, c0 + j]
                        norm = max(np.sqrt(s), f32(1e-12))
                        for j in range(d):
                            qkv[base + i, c0 + j] /= norm
        for h in range(heads):
            for i in range(N):
                for j in range(d):
                    q[i, j] = qkv[base + i, h * d + j] * q_scale[h]
            for j in range(d):
                for i in range(N):
                    kt[j, i] = qkv[base + i, C + h * d + j]
            _product(q, kt, qk)
            for i in range(N):
                for j in range(N):
                    logits[0, h, i, j] = qk[i, j]
        attention_softmax_f32(logits, rel_bias, mask, w0 + w, floor)
        if keep_probs:
            probs[w0 + w] = logits[0]
        for h in range(heads):
            v = qkv[base:base + N, 2 * C + h * d:2 * C + (h + 1) * d]
            _product(logits[0, h], v, attended[base:base + N, h * d:(h + 1) * d])

    y = np.empty((n, C), f32)
    _product(attended, proj_wt, y)
    _add_row(y, proj_b)
    if post_norm:
        layer_norm_rows(y, norm1_w, norm1_b, eps, y)
    for i in range(n):
        if keep_branch and not pad[i]:
            for c in range(C):
                branch[rows[i], c] = y[i, c]
        for c in range(C):
            y[i, c] += xs[i, c]

    # The MLP on the item's rows: its [n, 4C] hidden layer stays in the cache.
    if post_norm:
        src[:] = y
    else:
        layer_norm_rows(y, norm2_w, norm2_b, eps, src)
    hidden = np.empty((n, fc1_wt.shape[1]), f32)
    _product(src, fc1_wt, hidden)
    gelu_bias_rows_f32(hidden, fc1_b)
    _product(hidden, fc2_wt, xs)
    _add_row(xs, fc2_b)
    if post_norm:
        layer_norm_rows(xs, norm2_w, norm2_b, eps, xs)
    for i in range(n):
        if not pad[i]:
            for c in range(C):
                out[rows[i], c] = xs[i, c] + y[i, c]
