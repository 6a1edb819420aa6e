"""The NumPy backend's fast Swin block: BLAS for the linears, Numba kernels (swinref.kernels) for the rest.

swinref.model.swin_block hands a block to `swin_block` here when the Backend is NumPy's (`enabled(be)`), unless
the plain path is asked for (`with plain():` or SWINREF_KERNELS=plain in the environment). Results agree with the
plain path to float32 rounding (tests/test_kernels.py); traces record the same points.

What differs from the plain block, and why:
- no pad / roll / window partition / reverse passes: each chunk of windows gathers its tokens' q, k, v rows from
  the [tokens + 1, 3C] qkv matrix through one cached index (row `tokens` is the zero padding token, whose qkv is
  the bias) and scatters its outputs back the same way;
- no [B*nW, nH, N, N] tensors: windows go in chunks of at most ATTN_CHUNK_BYTES of logits, so memory stays
  O(tokens) however large the image; bias, mask and softmax are one Numba pass (kernels.attention_softmax), the
  products BLAS;
- the relative position bias [nH, N, N] is gathered once per parameter array, not at every call;
- the MLP runs over chunks of at most MLP_CHUNK_TOKENS tokens, so its [T, 4C] hidden layer stays bounded;
- GELU (with fc1's bias) and LayerNorm are single passes, on row blocks split between threads; erf is vectorisable
  (kernels.erf_poly).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import weakref
from typing import Any, Iterator

import numpy as np

from swinref import geometry
from swinref.backend import Backend
from swinref.config import StagePlan, SwinConfig

__all__ = ["enabled", "plain", "swin_block", "layer_norm", "MLP_CHUNK_TOKENS", "ATTN_CHUNK_BYTES"]

# The MLP's hidden layer holds at most this many tokens x 4C values at a time (8192 x 384 x 4 B = 12.6 MB for
# Swin-T stage 1); a 224 x 224 image (3136 tokens) is one chunk.
MLP_CHUNK_TOKENS = 8192
# Attention runs over chunks of windows whose [nw, nH, N, N] logits take at most this many bytes (a chunk stays in
# the cache while bias, mask, softmax and the second product pass over it).
ATTN_CHUNK_BYTES = 2 << 20
# At most this many lanes (threads) share a block's work; row kernels use a second lane from this many rows on.
MAX_LANES = 8
ROW_BLOCK_MIN = 256

_use_kernels: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "swinref_use_kernels", default=os.environ.get("SWINREF_KERNELS", "").lower() != "plain"
)
_kernels: Any = None


@contextlib.contextmanager
def plain() -> Iterator[None]:
    """Run the readable array-API path on NumPy too, inside this block (reference for tests and benchmarks)."""
    token = _use_kernels.set(False)
    try:
        yield
    finally:
        _use_kernels.reset(token)


def _load_kernels() -> Any:
    global _kernels
    if _kernels is None:
        try:
            from swinref import kernels
        except Exception:  # Numba missing or broken: the plain path still gives the right answer
            kernels = False
        _kernels = kernels
    return _kernels


def enabled(be: Backend) -> bool:
    """True when the block should take the Numba path: NumPy backend, kernels importable, not switched off."""
    return be.name == "numpy" and _use_kernels.get() and bool(_load_kernels())


# ----------------------------------------------------------------------------------------------------------------
# Arrays derived from parameters, computed once per parameter array (keyed by id, checked by a weak reference, so
# a params dict that is dropped or rebuilt never meets a stale entry). Params are treated as read-only.

_DERIVED: dict[tuple, tuple[Any, Any]] = {}


def _derived(anchor: np.ndarray, key: tuple, build: Any) -> Any:
    full = (id(anchor), *key)
    hit = _DERIVED.get(full)
    if hit is not None and hit[0]() is anchor:
        return hit[1]
    value = build()
    if len(_DERIVED) > 4096:
        _DERIVED.clear()
    _DERIVED[full] = (weakref.ref(anchor), value)
    return value


def _source_index(n: int, padded: int, shift: int, timm_order: bool) -> np.ndarray:
    """[padded] source row (or column) of each position of the padded, rolled map; -1 marks padding.

    "pad" policy: pad to `padded`, then roll by -shift, so position i holds row (i + shift) mod padded.
    "timm" policy: roll the n rows by -shift, then pad, so position i < n holds row (i + shift) mod n.
    """
    i = np.arange(padded)
    if timm_order:
        src = np.where(i < n, (i + shift) % max(n, 1), -1)
    else:
        src = (i + shift) % padded
        src = np.where(src < n, src, -1)
    return src.astype(np.int64)


@functools.lru_cache(maxsize=64)
def _window_tokens(B: int, H: int, W: int, Hp: int, Wp: int, M: int, shift: int, timm_order: bool) -> np.ndarray:
    """[B*nW, N] row of each window token in the [B*H*W + 1, .] token matrix; row B*H*W is the padding token.

    Windows in the order of window_partition (b, then window row, then window column), tokens row-major.
    """
    timm_order = timm_order and bool(shift)
    rows = _source_index(H, Hp, shift, timm_order)  # [Hp]
    cols = _source_index(W, Wp, shift, timm_order)  # [Wp]
    flat = rows[:, None] * W + cols[None, :]  # Hp, Wp
    flat = np.where((rows[:, None] < 0) | (cols[None, :] < 0), -1, flat)
    windows = geometry.window_partition(flat[None, :, :, None], M, np)[:, :, 0]  # nW, N
    index = (np.arange(B)[:, None, None] * (H * W) + windows[None]).reshape(-1, M * M)
    index = np.where(np.repeat(windows[None] < 0, B, axis=0).reshape(-1, M * M), B * H * W, index)
    index.setflags(write=False)
    return index


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, xp: Any = None) -> np.ndarray:
    """LayerNorm over the last axis (twin: swinref.model.layer_norm, same signature), one pass over the rows."""
    x2d = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty_like(x2d)
    _layer_norm_rows(x2d, weight, bias, eps, out)
    return out.reshape(x.shape)


def _layer_norm_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, out: np.ndarray) -> None:
    """kernels.layer_norm_rows over [T, C] rows, split between the lanes."""
    kernel = _load_kernels().layer_norm_rows
    _row_blocks(x.shape[0], lambda r0, r1: kernel(x[r0:r1], weight, bias, eps, out[r0:r1]))


# A block's work is split between lanes: the calling thread and lanes - 1 pool threads. The per-window products
# are many small GEMMs that OpenBLAS runs on one thread each, and the kernels are serial and release the GIL, so
# chunks of windows, and blocks of rows for the row kernels, run side by side. NUMBA_NUM_THREADS (default: the
# number of CPUs) sets the count; it is read from Numba's config, which starts no Numba thread pool.
_POOL: Any = None
_POOL_THREADS = 0


def _lanes() -> int:
    try:
        import numba

        return max(1, min(MAX_LANES, int(numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # pragma: no cover
        return 1


def _run_chunks(fn: Any, starts: list[int], lanes: int) -> None:
    """fn(start) for every start: one in every `lanes` on the calling thread, the others on the pool."""
    global _POOL, _POOL_THREADS
    if lanes < 2 or len(starts) < 2:
        for s in starts:
            fn(s)
        return
    if _POOL_THREADS < lanes - 1:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=lanes - 1, thread_name_prefix="swinref")
        _POOL_THREADS = lanes - 1
    futures = [_POOL.submit(fn, s) for i, s in enumerate(starts) if i % lanes]
    for s in starts[::lanes]:
        fn(s)
    for f in futures:
        f.result()


def _row_blocks(rows: int, fn: Any) -> None:
    """fn(r0, r1) over blocks of rows [r0, r1) covering range(rows), one block per lane, at least ROW_BLOCK_MIN
    rows each (handing a small block to another thread costs more than it saves).

    On 2 cores this made no difference we could measure (the two kernels are about a tenth of a Swin-T forward);
    it keeps LayerNorm and GELU from becoming the serial part of a forward on machines with more cores.
    """
    lanes = min(_lanes(), max(1, rows // ROW_BLOCK_MIN))
    step = -(-rows // lanes)
    _run_chunks(lambda r0: fn(r0, min(rows, r0 + step)), list(range(0, rows, step)), lanes)


def _linear(x2d: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """[T, in] @ [out, in]^T + [out] (twin: swinref.model.linear), bias added in place."""
    y = np.matmul(x2d, weight.T)
    if bias is not None:
        y += bias
    return y


def swin_block(x: np.ndarray, p: dict, prefix: str, cfg: SwinConfig, stage: StagePlan, shift: int, padding: str,
               be: Backend, emit: Any = None, point: str = "") -> np.ndarray:
    """One Swin block on [B, h, w, C] NumPy arrays (twin: swinref.model.swin_block)."""
    from swinref import model

    k = _load_kernels()
    B, H, W, C = x.shape
    T = B * H * W
    eps = cfg.layer_norm_eps
    dtype = x.dtype
    M, nH, d = stage.window, stage.heads, stage.head_dim
    N = M * M
    Hp, Wp = stage.padded
    a = prefix + "attn."
    x2d = np.ascontiguousarray(x).reshape(T, C)

    def norm(name: str, t: np.ndarray) -> np.ndarray:
        out = np.empty_like(t)
        _layer_norm_rows(t, p[prefix + name + ".weight"], p[prefix + name + ".bias"], eps, out)
        return out

    # --- attention: qkv on the unpadded tokens plus one zero token (row T) standing for the padding.
    if cfg.version == 1:
        qkv_bias = p.get(a + "qkv.bias")
    else:
        q_bias = p.get(a + "q_bias")
        qkv_bias = None if q_bias is None else np.concatenate([q_bias, np.zeros_like(q_bias), p[a + "v_bias"]])
    src = np.empty((T + 1, C), dtype=dtype)
    if cfg.version == 1:
        _layer_norm_rows(x2d, p[prefix + "norm1.weight"], p[prefix + "norm1.bias"], eps, src[:T])
    else:
        src[:T] = x2d
    src[T] = 0
    qkv = _linear(src, p[a + "qkv.weight"], qkv_bias)  # [T+1, 3C]
    del src
    anchor = p[a + "relative_position_bias_table"] if cfg.version == 1 else p[a + "cpb_mlp.0.weight"]
    rel_bias = _derived(anchor, ("bias", M, stage.pretrained_window, str(dtype)), lambda: np.ascontiguousarray(
        model._relative_position_bias(p, a, cfg, stage, be, dtype), dtype=dtype))
    if shift:
        mask = model._constant(be, ("mask", Hp, Wp, M, shift), lambda: model.geometry.shift_mask(Hp, Wp, M, shift),
                               dtype)
    else:
        mask = model._constant(be, ("no mask", N), lambda: np.zeros((1, N, N)), dtype)  # one all-zero window
    index = _window_tokens(B, H, W, Hp, Wp, M, shift, padding == "timm")  # [B*nW, N] rows of qkv
    if cfg.version == 2:
        logit_scale = np.exp(np.minimum(p[a + "logit_scale"], model.V2_LOGIT_SCALE_MAX)).astype(dtype)  # nH, 1, 1
    attn = np.empty((T + 1, C), dtype=dtype)
    floor = math.log(np.finfo(dtype).tiny)
    BnW = index.shape[0]
    # A trace wants the probabilities of every window at once, as the plain path gives them.
    probs = None if emit is None else np.empty((BnW, nH, N, N), dtype=dtype)
    step = max(1, ATTN_CHUNK_BYTES // (nH * N * N * dtype.itemsize))
    # OpenBLAS threads a GEMM itself once m * n * k reaches 4 * 65536 (M = 12 windows: 144 * 144 * 32); two Python
    # threads calling threaded GEMMs would oversubscribe the cores (Swin-B/384 batch 1 went 1.2 s -> 1.9 s).
    lanes = _lanes() if N * N * d < 4 * 65536 else 1
    if lanes > 1:
        step = min(step, -(-BnW // lanes))  # at least one chunk per lane

    def attend(w0: int) -> None:
        rows = index[w0:w0 + step]  # [nw, N]
        nw = rows.shape[0]
        t = qkv[rows].reshape(nw, N, 3, nH, d)
        q = np.transpose(t[:, :, 0], (0, 2, 1, 3))  # nw, nH, N, d (strided views: BLAS reads them in place)
        kk = np.transpose(t[:, :, 1], (0, 2, 3, 1))  # nw, nH, d, N
        v = np.transpose(t[:, :, 2], (0, 2, 1, 3))
        if cfg.version == 1:
            logits = np.matmul(q * dtype.type(d ** -0.5), kk)
        else:
            qn = q / np.maximum(np.linalg.vector_norm(q, axis=-1, keepdims=True), dtype.type(1e-12))
            kn = kk / np.maximum(np.linalg.vector_norm(kk, axis=-2, keepdims=True), dtype.type(1e-12))
            logits = np.matmul(qn, kn) * logit_scale
        k.attention_softmax(logits, rel_bias, mask, w0, floor)
        if probs is not None:
            probs[w0:w0 + nw] = logits
        out = np.matmul(logits, v)  # nw, nH, N, d
        attn[rows] = np.transpose(out, (0, 2, 1, 3)).reshape(nw, N, C)

    _run_chunks(attend, list(range(0, BnW, step)), lanes)
    del qkv
    attn2d = _linear(attn[:T], p[a + "proj.weight"], p[a + "proj.bias"])
    del attn
    if cfg.version == 2:
        attn2d = norm("norm1", attn2d)
    if emit is not None:
        emit(point + ".attn_probs", probs)
        emit(point + ".attn", attn2d.reshape(B, H, W, C))
    out = x2d + attn2d
    del attn2d

    # --- MLP in chunks of tokens.
    m = prefix + "mlp."
    for start in range(0, T, MLP_CHUNK_TOKENS):
        xs = out[start:start + MLP_CHUNK_TOKENS]
        h = np.matmul(norm("norm2", xs) if cfg.version == 1 else xs, p[m + "fc1.weight"].T)
        fc1_bias = p[m + "fc1.bias"]
        _row_blocks(h.shape[0], lambda r0, r1: k.gelu_bias_rows(h[r0:r1], fc1_bias))
        y = _linear(h, p[m + "fc2.weight"], p[m + "fc2.bias"])
        if cfg.version == 2:
            y = norm("norm2", y)
        xs += y
    return out.reshape(B, H, W, C)
