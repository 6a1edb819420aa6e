"""The accelerated NumPy block: BLAS for the linears, Numba kernels (swinref.kernels) for the rest.

The twin of the reference block swinref.blocks, with the same three functions (attention_branch, mlp_branch,
layer_norm) reading the same BlockPlan; the backend chooses one of the two once (swinref.backend: NumPy arrays get
this block unless Numba is missing or the reference is asked for with `with swinref.backend.plain():` or
SWINREF_KERNELS=plain). Results agree with the reference to float32 rounding (tests/test_kernels.py); traces record
the same points.

What differs from the reference block, and why:
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
import functools
import math
import weakref
from typing import Any

import numpy as np

from swinref import geometry, kernels
from swinref.layers import device_constant, logit_scale, position_bias, qkv_bias, shift_mask
from swinref.namespace import Backend
from swinref.plan import BlockPlan


__all__ = ["attention_branch", "mlp_branch", "add_residual", "layer_norm", "MLP_CHUNK_TOKENS", "ATTN_CHUNK_BYTES"]

# The MLP's hidden layer holds at most this many tokens x 4C values at a time (8192 x 384 x 4 B = 12.6 MB for
# Swin-T stage 1); a 224 x 224 image (3136 tokens) is one chunk.
MLP_CHUNK_TOKENS = 8192
# Attention runs over chunks of windows whose [nw, nH, N, N] logits take at most this many bytes (a chunk stays in
# the cache while bias, mask, softmax and the second product pass over it).
ATTN_CHUNK_BYTES = 2 << 20
# At most this many lanes (threads) share a block's work; row kernels use a second lane from this many rows on.
MAX_LANES = 8
ROW_BLOCK_MIN = 256


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


@functools.lru_cache(maxsize=64)
def _window_tokens(B: int, blk: BlockPlan) -> np.ndarray:
    """[B*nW, N] row of each window token in the [B*T + 1, .] token matrix; row B*T is the padding token.

    Windows in the order of geometry.window_partition (b, then the window grid row-major), tokens row-major.
    """
    windows = geometry.window_token_index(blk.resolution, blk.padded, blk.window, blk.shift, blk.roll_before_pad)
    T = blk.tokens
    index = np.arange(B)[:, None, None] * T + windows[None]
    index = np.where(windows[None] < 0, B * T, index).reshape(-1, windows.shape[1])
    index.setflags(write=False)
    return index


def layer_norm(x: np.ndarray, p: dict, eps: float, be: Backend | None = None) -> np.ndarray:
    """LayerNorm over the last axis (twin: swinref.blocks.layer_norm, same signature), one pass over the rows."""
    x2d = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty_like(x2d)
    _layer_norm_rows(x2d, p["weight"], p["bias"], eps, out)
    return out.reshape(x.shape)


def _layer_norm_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, out: np.ndarray) -> None:
    """kernels.layer_norm_rows over [T, C] rows, split between the lanes."""
    _row_blocks(x.shape[0], lambda r0, r1: kernels.layer_norm_rows(x[r0:r1], weight, bias, eps, out[r0:r1]))


# A block's work is split between lanes: the calling thread and lanes - 1 pool threads. The per-window products
# are many small GEMMs that OpenBLAS runs on one thread each, and the kernels are serial and release the GIL, so
# chunks of windows, and blocks of rows for the row kernels, run side by side. NUMBA_NUM_THREADS (default: the
# number of CPUs) sets the count; it is read from Numba's config, which starts no Numba thread pool.
_POOL: Any = None
_POOL_THREADS = 0
# A process's share of the cores, set by swinref.threads.limit_threads (e.g. one of several workers on a node);
# None: NUMBA_NUM_THREADS.
LANES: int | None = None


def _lanes() -> int:
    if LANES is not None:
        return max(1, min(MAX_LANES, LANES))
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


@contextlib.contextmanager
def _single_threaded_blas(active: bool):
    """One BLAS thread per call while the lanes split the windows between them.

    OpenBLAS threads a product from m * n * k >= 4 * 65536 on (large windows: 12 x 12 and up, Video Swin's
    8 x 7 x 7), and a threaded product waits for all its threads at a barrier: two lanes each calling threaded
    products would oversubscribe the cores, and on a shared machine one descheduled BLAS thread stalls every
    product. Independent windows on independent lanes need no barrier but the last.
    """
    controller = _blas_controller() if active else None
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a core dependency
        return None
    return ThreadpoolController()


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
    """[T, in] @ [out, in]^T + [out] (twin: swinref.layers.linear), bias added in place."""
    y = np.matmul(x2d, weight.T)
    if bias is not None:
        y += bias
    return y


def attention_branch(x: np.ndarray, p: dict, blk: BlockPlan, be: Backend,
                     keep_probs: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The attention residual branch on [B, *S, C] NumPy arrays (twin: swinref.blocks.attention_branch)."""
    B, C = x.shape[0], x.shape[-1]
    T = x.size // C
    dtype = x.dtype
    nH, d, N = blk.heads, blk.head_dim, blk.window_tokens
    a = p["attn"]
    x2d = np.ascontiguousarray(x).reshape(T, C)

    # qkv on the unpadded tokens plus one zero token (row T) standing for the padding.
    src = np.empty((T + 1, C), dtype=dtype)
    if blk.norm == "pre":
        _layer_norm_rows(x2d, p["norm1"]["weight"], p["norm1"]["bias"], blk.eps, src[:T])
    else:
        src[:T] = x2d
    src[T] = 0
    qkv = _linear(src, a["qkv"]["weight"], qkv_bias(a, np))  # [T+1, 3C]
    del src
    anchor = a["relative_position_bias_table"] if blk.position_bias == "table" else a["cpb_mlp"][0]["weight"]
    rel_bias = _derived(anchor, ("bias", blk.window, blk.table_window, blk.bias_index, blk.pretrained_window, str(dtype)), lambda: np.ascontiguousarray(
        position_bias(a, blk, be, dtype), dtype=dtype))
    if blk.mask:
        mask = shift_mask(blk, be, dtype)
    else:
        mask = device_constant(be, ("no mask", N), lambda: np.zeros((1, N, N)), dtype)  # one all-zero window
    index = _window_tokens(B, blk)  # [B*nW, N] rows of qkv
    scale = logit_scale(a, np).astype(dtype) if blk.attention == "cosine" else None  # nH, 1, 1
    attn = np.empty((T + 1, C), dtype=dtype)
    floor = math.log(np.finfo(dtype).tiny)
    BnW = index.shape[0]
    # A trace wants the probabilities of every window at once, as the reference gives them.
    probs = np.empty((BnW, nH, N, N), dtype=dtype) if keep_probs else None
    step = max(1, ATTN_CHUNK_BYTES // (nH * N * N * dtype.itemsize))
    # OpenBLAS threads a GEMM itself once m * n * k reaches 4 * 65536 (M = 12 windows: 144 * 144 * 32); two Python
    # threads calling threaded GEMMs would oversubscribe the cores.
    lanes = _lanes()
    if lanes > 1:
        step = min(step, -(-BnW // lanes))  # at least one chunk per lane

    def attend(w0: int) -> None:
        rows = index[w0:w0 + step]  # [nw, N]
        nw = rows.shape[0]
        t = qkv[rows].reshape(nw, N, 3, nH, d)
        q = np.transpose(t[:, :, 0], (0, 2, 1, 3))  # nw, nH, N, d (strided views: BLAS reads them in place)
        kk = np.transpose(t[:, :, 1], (0, 2, 3, 1))  # nw, nH, d, N
        v = np.transpose(t[:, :, 2], (0, 2, 1, 3))
        if scale is None:
            logits = np.matmul(q * dtype.type(d ** -0.5), kk)
        else:
            qn = q / np.maximum(np.linalg.vector_norm(q, axis=-1, keepdims=True), dtype.type(1e-12))
            kn = kk / np.maximum(np.linalg.vector_norm(kk, axis=-2, keepdims=True), dtype.type(1e-12))
            logits = np.matmul(qn, kn) * scale
        kernels.attention_softmax(logits, rel_bias, mask, w0, floor)
        if probs is not None:
            probs[w0:w0 + nw] = logits
        out = np.matmul(logits, v)  # nw, nH, N, d
        attn[rows] = np.transpose(out, (0, 2, 1, 3)).reshape(nw, N, C)

    with _single_threaded_blas(lanes > 1 and N * N * d >= 4 * 65536):
        _run_chunks(attend, list(range(0, BnW, step)), lanes)
    del qkv
    out = _linear(attn[:T], a["proj"]["weight"], a["proj"]["bias"])
    del attn
    if blk.norm == "res-post":
        _layer_norm_rows(out, p["norm1"]["weight"], p["norm1"]["bias"], blk.eps, out)
    return out.reshape(x.shape), probs


def add_residual(branch: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x + branch, written into the branch's buffer, which the block made for this (twin: swinref.blocks)."""
    np.add(branch, x, out=branch)
    return branch


def mlp_branch(x: np.ndarray, p: dict, blk: BlockPlan, be: Backend) -> np.ndarray:
    """The MLP residual branch on [B, *S, C] NumPy arrays, in chunks of tokens (twin: swinref.blocks.mlp_branch)."""
    C = x.shape[-1]
    x2d = np.ascontiguousarray(x).reshape(-1, C)
    out = np.empty_like(x2d)
    m, norm2 = p["mlp"], p["norm2"]
    for start in range(0, x2d.shape[0], MLP_CHUNK_TOKENS):
        xs = x2d[start:start + MLP_CHUNK_TOKENS]
        ys = out[start:start + MLP_CHUNK_TOKENS]
        if blk.norm == "pre":
            _layer_norm_rows(xs, norm2["weight"], norm2["bias"], blk.eps, ys)  # ys holds norm2(x) until fc2
            xs = ys
        h = np.matmul(xs, m["fc1"]["weight"].T)
        fc1_bias = m["fc1"]["bias"]
        _row_blocks(h.shape[0], lambda r0, r1: kernels.gelu_bias_rows(h[r0:r1], fc1_bias))
        np.matmul(h, m["fc2"]["weight"].T, out=ys)
        ys += m["fc2"]["bias"]
        if blk.norm == "res-post":
            _layer_norm_rows(ys, norm2["weight"], norm2["bias"], blk.eps, ys)
    return out.reshape(x.shape)
