"""Numba kernels for the NumPy backend. Each names the plain function it replaces; tests/test_kernels.py compares
the two on random shapes.

Compiled lazily on first use and cached on disk (cache=True). Where no cache directory is writable (a read-only
install, NUMBA_CACHE_DIR on a read-only mount) the kernels are compiled without a cache, with one warning.

Numerics: no fastmath reassociation anywhere (it would let LLVM reorder reductions and change results beyond
float32 rounding); only the erf and exp polynomials may fuse multiply-adds (fastmath "contract" on the kernels that
inline them; their other arithmetic has no a * b + c to fuse). Both polynomials are evaluated in float64 and give
the correctly rounded float32 result to within 0.51 ulp; float64 models use libm's erf and exp.
"""

from __future__ import annotations

import math
import os
import warnings

# Numba's OpenMP workers spin after every parallel region unless told otherwise, and here the regions alternate with
# BLAS calls whose own threads then find every core taken. Measured on 2 cores (Swin-T 224, batch 1, OpenBLAS and
# Numba 2 threads each, shared machine): 455 ms per image spinning, 148 ms passive. Must be set before Numba starts
# its OpenMP runtime, which happens at the first parallel kernel call; an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "erf_ufunc",
    "layer_norm_rows",
    "gelu_bias_rows",
    "attention_softmax",
    "exp_nonpositive",
    "erf_poly",
    "ERF_T_POLY",
    "CACHE_WARNING",
]

CACHE_WARNING = "swinref: no writable Numba cache directory; kernels are compiled at every start"
_warned = False


def _cache_unavailable() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            CACHE_WARNING + " (set NUMBA_CACHE_DIR to a writable directory to keep compiled kernels)",
            RuntimeWarning, stacklevel=3,
        )


def _jit(**options):
    """numba.njit with cache=True, falling back to no cache (one warning) where no cache directory is usable."""

    def wrap(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            _cache_unavailable()
            return numba.njit(cache=False, **options)(fn)

    return wrap


def _vectorize(signatures):
    def wrap(fn):
        try:
            return numba.vectorize(signatures, cache=True)(fn)
        except RuntimeError:
            _cache_unavailable()
            return numba.vectorize(signatures, cache=False)(fn)

    return wrap


# ----------------------------------------------------------------------------------------------------------------
# erf


# Plain twin: swinref.backend.erf_reference (math.erf per element). Used by the plain path's GELU on NumPy. Both
# loops are compiled up front: a lazily compiled ufunc would run float32 input through an existing float64 loop.
@_vectorize(["float32(float32)", "float64(float64)"])
def erf_ufunc(x):  # pragma: no cover - compiled
    return math.erf(x)


# erf(x) / x as a polynomial of degree 18 in t = x^2 / 8 - 1 on |x| <= 4: a least-squares Chebyshev fit at 4000
# Chebyshev nodes against math.erf, converted to powers of t (tests/test_kernels.py refits it and checks the
# error). Max relative error 4.7e-10, so in float32 it gives libm's erff to 0.508 ulp; |x| > 4 is clamped
# (erf(4) = 1 - 1.5e-8 already rounds to 1.0 in float32). A libm call per element does not vectorise; this does.
ERF_T_POLY = (
    0.35353099561883194, -0.17657623587308435, 0.1316751217802543, -0.10771028937926898,
    0.09020883404896549, -0.07473053609953967, 0.059888935446786605, -0.04574400172544879,
    0.033047585784428804, -0.022563597719269093, 0.014397568234655331, -0.00838207411073675,
    0.0047468293348133265, -0.0029118390317047806, 0.0014380183153776408, -0.00032430256124582623,
    0.00015834101714129898, -0.000246708830066705, 9.735201331581571e-05,
)
ERF_CLAMP = 4.0


# fastmath "contract" lets LLVM fuse the multiply-adds of the polynomial (FMA: one rounding instead of two), which
# only makes this approximation more accurate; nothing else is reassociated.
@_jit(inline="always", fastmath={"contract"})
def erf_poly(x):  # pragma: no cover - compiled
    """erf of a float32 argument, evaluated in float64 (twin: math.erf). Scalar; inlined into gelu_bias_rows."""
    c = ERF_T_POLY
    z = np.float64(x)
    z = z if z < ERF_CLAMP else ERF_CLAMP
    z = z if z > -ERF_CLAMP else -ERF_CLAMP
    t = z * z * (1.0 / 8.0) - 1.0
    # Estrin's scheme: the same polynomial as Horner's rule, but six dependent steps deep instead of nineteen, so
    # the vectorised loop is not held up by multiply-add latency.
    t2 = t * t
    t4 = t2 * t2
    t8 = t4 * t4
    t16 = t8 * t8
    r0 = (c[0] + c[1] * t) + (c[2] + c[3] * t) * t2
    r1 = (c[4] + c[5] * t) + (c[6] + c[7] * t) * t2
    r2 = (c[8] + c[9] * t) + (c[10] + c[11] * t) * t2
    r3 = (c[12] + c[13] * t) + (c[14] + c[15] * t) * t2
    low = (r0 + r1 * t4) + (r2 + r3 * t4) * t8  # c0 .. c15
    high = (c[16] + c[17] * t) + c[18] * t2  # c16 .. c18
    p = low + high * t16
    return z * p


# ----------------------------------------------------------------------------------------------------------------
# Token-wise kernels: rows of a [tokens, C] matrix, one row per parallel iteration.


@_jit(parallel=True)
def layer_norm_rows(x, weight, bias, eps, out):  # pragma: no cover - compiled
    """LayerNorm over the last axis of x [T, C] into out [T, C] (twin: swinref.model.layer_norm).

    Two passes per row (mean, then the biased variance of the centred values), as the plain function.
    """
    T, C = x.shape
    C8 = C - C % 8
    for r in numba.prange(T):
        # Eight running sums per pass (float64), combined at the end: the same terms in a fixed order that does not
        # make each addition wait for the previous one.
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        for c in range(0, C8, 8):
            a0 += x[r, c]
            a1 += x[r, c + 1]
            a2 += x[r, c + 2]
            a3 += x[r, c + 3]
            a4 += x[r, c + 4]
            a5 += x[r, c + 5]
            a6 += x[r, c + 6]
            a7 += x[r, c + 7]
        for c in range(C8, C):
            a0 += x[r, c]
        # Rounded to the row's dtype as the plain function's xp.mean would be.
        mean = x.dtype.type((((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) / C)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        for c in range(0, C8, 8):
            d0 = x[r, c] - mean
            d1 = x[r, c + 1] - mean
            d2 = x[r, c + 2] - mean
            d3 = x[r, c + 3] - mean
            d4 = x[r, c + 4] - mean
            d5 = x[r, c + 5] - mean
            d6 = x[r, c + 6] - mean
            d7 = x[r, c + 7] - mean
            a0 += d0 * d0
            a1 += d1 * d1
            a2 += d2 * d2
            a3 += d3 * d3
            a4 += d4 * d4
            a5 += d5 * d5
            a6 += d6 * d6
            a7 += d7 * d7
        for c in range(C8, C):
            d0 = x[r, c] - mean
            a0 += d0 * d0
        var = x.dtype.type((((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) / C)
        denom = np.sqrt(var + x.dtype.type(eps))
        for c in range(C):
            out[r, c] = (x[r, c] - mean) / denom * weight[c] + bias[c]


@_jit(parallel=True, fastmath={"contract"})
def gelu_bias_rows(h, bias, poly_erf):  # pragma: no cover - compiled
    """In place: h <- gelu(h + bias) for h [T, D] (twin: swinref.model.gelu applied to linear's output).

    The float32 rounding steps of the plain expression x * 0.5 * (1 + erf(x / sqrt 2)) are kept; only erf itself
    is evaluated differently (erf_poly in float32, libm in float64).
    """
    T, D = h.shape
    typ = h.dtype.type
    half = typ(0.5)
    one = typ(1.0)
    inv_sqrt2 = typ(1.0 / math.sqrt(2.0))
    # Two loops rather than a branch per element, so the float32 one vectorises.
    if poly_erf:
        for r in numba.prange(T):
            for c in range(D):
                x = h[r, c] + bias[c]
                e = typ(erf_poly(x * inv_sqrt2))
                h[r, c] = x * half * (one + e)
    else:
        for r in numba.prange(T):
            for c in range(D):
                x = h[r, c] + bias[c]
                e = typ(math.erf(x * inv_sqrt2))
                h[r, c] = x * half * (one + e)


# ----------------------------------------------------------------------------------------------------------------
# Attention softmax, in place on a chunk of windows' logits (the matmuls around it stay in BLAS).

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
# 2**-i for i = 0 .. 149: every exp the softmax keeps is 2**k * e^r with -126 <= k <= 0.
POW2_NEG = 2.0 ** -np.arange(150, dtype=np.float64)


@_jit(inline="always", fastmath={"contract"})
def exp_nonpositive(z):  # pragma: no cover - compiled
    """exp(z) for float32 z in [log(float32 tiny), 0], evaluated in float64 (twin: numpy.exp).

    z = k ln 2 + r with integer k = round(z / ln 2) and |r| <= ln(2) / 2; e^r from its Taylor series to r^10
    (relative error < 3e-13), times 2^k from a table. Rounded to float32 it is the correctly rounded exp except in
    rare half-ulp ties; no libm call, so the loop around it vectorises.
    """
    x = np.float64(z)
    k = np.floor(x * LOG2E + 0.5)
    r = x - k * LN2
    r2 = r * r
    r4 = r2 * r2
    # Estrin's scheme for sum r^n / n!, n = 0 .. 10.
    p = ((1.0 + r) + (0.5 + r * (1.0 / 6.0)) * r2) + ((1.0 / 24.0 + r * (1.0 / 120.0))
                                                       + (1.0 / 720.0 + r * (1.0 / 5040.0)) * r2) * r4
    p = p + ((1.0 / 40320.0 + r * (1.0 / 362880.0)) + (1.0 / 3628800.0) * r2) * (r4 * r4)
    return p * POW2_NEG[np.int64(-k)]


@_jit(parallel=True, fastmath={"contract"})
def attention_softmax(logits, rel_bias, mask, first_window, floor, poly_exp):  # pragma: no cover - compiled
    """In place on logits [nw, nH, N, N]: softmax(logits + rel_bias[h] (+ mask[w])) over the last axis.

    Twin: the part of swinref.model.window_attention between the q k^T product and the product with v (bias add,
    mask add, swinref.model.softmax). rel_bias [nH, N, N]; mask [nW, N, N] (0 / -100) for shifted blocks or an
    empty array, window i of the chunk using mask[(first_window + i) % nW] (windows run b-major, nW per image).
    exp is exp_nonpositive when poly_exp (float32), libm's otherwise (float64).

    Terms exp(z), z = logit - row max, with z < floor are set to 0 instead of computed: floor is the log of the
    dtype's smallest normal number, so those terms would be subnormal (exp(-100) for every masked pair), slow on the
    CPU, and below 1e-38 of the row's largest term, which is exp(0) = 1. Dropping them changes the row sum by less
    than N * 1e-38, far below one float32 rounding of a sum >= 1, and each probability by less than 1e-38.
    """
    nw, nH, N, _ = logits.shape
    nW = mask.shape[0]
    typ = logits.dtype.type
    N4 = N - N % 4
    for job in numba.prange(nw * nH):
        i = job // nH
        h = job % nH
        w = (first_window + i) % nW if nW > 0 else 0
        for r in range(N):
            # Separate loops per row, with direct indexing, so that LLVM vectorises all but the max.
            if nW > 0:
                for j in range(N):
                    logits[i, h, r, j] = (logits[i, h, r, j] + rel_bias[h, r, j]) + mask[w, r, j]
            else:
                for j in range(N):
                    logits[i, h, r, j] = logits[i, h, r, j] + rel_bias[h, r, j]
            mx = logits[i, h, r, 0]
            for j in range(1, N):
                mx = max(mx, logits[i, h, r, j])
            if poly_exp:
                for j in range(N):
                    z = logits[i, h, r, j] - mx
                    logits[i, h, r, j] = typ(exp_nonpositive(z)) if z >= floor else typ(0.0)
            else:
                for j in range(N):
                    z = logits[i, h, r, j] - mx
                    logits[i, h, r, j] = typ(np.exp(z)) if z >= floor else typ(0.0)
            # Four running sums, combined at the end: a fixed order that does not serialise every addition.
            s0 = typ(0.0)
            s1 = typ(0.0)
            s2 = typ(0.0)
            s3 = typ(0.0)
            for j in range(0, N4, 4):
                s0 += logits[i, h, r, j]
                s1 += logits[i, h, r, j + 1]
                s2 += logits[i, h, r, j + 2]
                s3 += logits[i, h, r, j + 3]
            for j in range(N4, N):
                s0 += logits[i, h, r, j]
            s = (s0 + s1) + (s2 + s3)
            for j in range(N):
                logits[i, h, r, j] = logits[i, h, r, j] / s
