"""Numba kernels for the NumPy backend. Each names the plain function it replaces; tests/test_kernels.py compares
the two on random shapes.

Compiled lazily on first use and cached on disk (cache=True); a kernel is compiled only for the dtype it is called
with, and the float32 and float64 variants are separate functions, so a float32 model never compiles the float64
ones. Where no cache directory is writable (a read-only install, NUMBA_CACHE_DIR on a read-only mount) the kernels
are compiled without a cache, with one warning.

Every kernel is serial and releases the GIL (nogil): swinref.fast splits rows and windows between its own thread
lanes. Numba's parallel=True would cost an OpenMP runtime whose idle workers spin against BLAS's threads, and
about twice the compile time at the first start after installing. benchmarks/cpu.py's first start (empty Numba
cache), Swin-T 224: 7.0 s with the parallel kernels (0.92x torch), 2.15 s now (0.35x); results in
benchmarks/results/ and their git history.

Numerics: the kernels follow the plain functions' float32 rounding steps. Two fastmath flags are used, each only
where it cannot move a result by more than those roundings: "contract" (fused multiply-adds), which only makes the
erf and exp polynomials more accurate, and "reassoc" in LayerNorm and the attention softmax, whose sums
(LayerNorm's in float64, the softmax's row sum in float32) it lets LLVM vectorise in any order; the plain path's
NumPy sums are pairwise, in yet another order. In the softmax it also lets LLVM regroup logit + bias + mask, a
change of at most one rounding of that three-term sum. The exp polynomial is evaluated in float64 and gives the
correctly rounded float32 result to within 0.51 ulp; erf's is evaluated in float32 (twice the SIMD lanes) and is
within 4.3 ulp of libm's erf, which moves a GELU output by at most about 1e-6 of its size. float64 models use libm's
erf and exp.
"""

from __future__ import annotations

import functools
import math
import time
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "erf_ufunc",
    "layer_norm_rows",
    "gelu_bias_rows",
    "gelu_bias_rows_f32",
    "gelu_bias_rows_f64",
    "attention_softmax",
    "attention_softmax_f32",
    "attention_softmax_f64",
    "exp_nonpositive",
    "erf_poly32",
    "ERF32_T_POLY",
    "CACHE_WARNING",
    "spin_while_equal",
    "spin_until_all_set",
    "fetch_add",
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


# The scalar helpers (erf_poly32, exp_nonpositive) are inlined into their kernel in Numba's IR (inline="always"):
# compiled as separate functions, each would add its own pass through Numba's pipeline to the first start.
# nogil: the fast path calls kernels from two threads at once. error_model="numpy": a division by zero gives inf or
# nan as in NumPy instead of a Python exception, so Numba adds no zero test before every division (none can be
# zero here: LayerNorm divides by sqrt(var + eps), the softmax by a sum that includes exp(0) = 1).
_OPTIONS = {"nogil": True, "error_model": "numpy"}


def _jit(**options):
    """numba.njit with cache=True, falling back to no cache (one warning) where no cache directory is usable."""

    def wrap(fn):
        try:
            return numba.njit(cache=True, **_OPTIONS, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            _cache_unavailable()
            return numba.njit(cache=False, **_OPTIONS, **options)(fn)

    return wrap


# ----------------------------------------------------------------------------------------------------------------
# erf


def _erf_scalar(x):  # pragma: no cover - compiled
    return math.erf(x)


@functools.cache
def erf_ufunc():
    """libm's erf as a NumPy ufunc (plain twin: swinref.backend.erf_reference), for the plain path's GELU on NumPy.

    Built on first use, not at import: the fast path never needs it. Both loops are compiled up front: a lazily
    compiled ufunc would run float32 input through an existing float64 loop.
    """
    signatures = ["float32(float32)", "float64(float64)"]
    try:
        return numba.vectorize(signatures, cache=True)(_erf_scalar)
    except RuntimeError:
        _cache_unavailable()
        return numba.vectorize(signatures, cache=False)(_erf_scalar)


# erf(x) / x as a polynomial of degree 15 in t = x^2 / 8 - 1 on |x| <= 4: a least-squares Chebyshev fit at 4000
# Chebyshev nodes against math.erf, converted to powers of t (tests/test_kernels.py refits it and checks the error).
# Fit error 2.9e-7 relative; evaluated in float32 arithmetic (twice the SIMD lanes of float64) it is within 4.3 ulp
# of libm's erf; |x| > 4 is clamped (erf(4) = 1 - 1.5e-8 rounds to 1.0 in float32). A libm call per element does
# not vectorise; this does.
ERF_CLAMP = 4.0
ERF32_T_POLY = (
    0.35353097816012014, -0.17657617187695832, 0.1316773312423149, -0.10771336119333857,
    0.09016311717800005, -0.07468753070250087, 0.06024739753526517, -0.04601432136379274,
    0.03167934270370784, -0.02166253225944849, 0.017188484121765712, -0.010085906977245589,
    0.0017006006980544882, -0.0010769421018379155, 0.0030023110111562262, -0.0013728150907644674,
)
# float32 globals: Numba folds them in as float32 constants, so nothing is promoted to float64.
(_G0, _G1, _G2, _G3, _G4, _G5, _G6, _G7, _G8, _G9, _G10, _G11, _G12, _G13, _G14,
 _G15) = (np.float32(c) for c in ERF32_T_POLY)
_F32_CLAMP = np.float32(ERF_CLAMP)
_F32_EIGHTH = np.float32(0.125)
_F32_ONE = np.float32(1.0)


@_jit(fastmath={"contract"}, inline="always")
def erf_poly32(x):  # pragma: no cover - compiled
    """erf of a float32 argument in float32 arithmetic (twin: math.erf), within 4 ulp. Scalar; inlined."""
    z = x if x < _F32_CLAMP else _F32_CLAMP
    z = z if z > -_F32_CLAMP else -_F32_CLAMP
    t = z * z * _F32_EIGHTH - _F32_ONE
    t2 = t * t
    t4 = t2 * t2
    t8 = t4 * t4
    r0 = (_G0 + _G1 * t) + (_G2 + _G3 * t) * t2
    r1 = (_G4 + _G5 * t) + (_G6 + _G7 * t) * t2
    r2 = (_G8 + _G9 * t) + (_G10 + _G11 * t) * t2
    r3 = (_G12 + _G13 * t) + (_G14 + _G15 * t) * t2
    return z * ((r0 + r1 * t4) + (r2 + r3 * t4) * t8)


# ----------------------------------------------------------------------------------------------------------------
# Token-wise kernels: rows of a [tokens, C] matrix. swinref.fast splits the rows between its threads.


@_jit(fastmath={"reassoc"})
def layer_norm_rows(x, weight, bias, eps, out):  # pragma: no cover - compiled
    """LayerNorm over the last axis of x [T, C] into out [T, C] (twin: swinref.model.layer_norm).

    Two passes per row (mean, then the biased variance of the centred values), as the plain function, each summed
    in float64 ("reassoc": in any order, vectorised) and rounded to the row's dtype as xp.mean would be.
    """
    T, C = x.shape
    typ = x.dtype.type
    for r in range(T):
        s = 0.0
        for c in range(C):
            s += x[r, c]
        mean = typ(s / C)
        s = 0.0
        for c in range(C):
            d = x[r, c] - mean
            s += d * d
        denom = np.sqrt(typ(s / C) + typ(eps))
        for c in range(C):
            out[r, c] = (x[r, c] - mean) / denom * weight[c] + bias[c]


# The float32 rounding steps of the plain expression x * 0.5 * (1 + erf(x / sqrt 2)) are kept in both GELU kernels;
# only erf itself is evaluated differently (erf_poly32 for float32, libm for float64).


@_jit(fastmath={"contract"})
def gelu_bias_rows_f32(h, bias):  # pragma: no cover - compiled
    """In place: h <- gelu(h + bias) for float32 h [T, D] (twin: swinref.model.gelu applied to linear's output)."""
    T, D = h.shape
    half = np.float32(0.5)
    one = np.float32(1.0)
    inv_sqrt2 = np.float32(1.0 / math.sqrt(2.0))
    for r in range(T):
        for c in range(D):
            x = h[r, c] + bias[c]
            h[r, c] = x * half * (one + erf_poly32(x * inv_sqrt2))


@_jit()
def gelu_bias_rows_f64(h, bias):  # pragma: no cover - compiled
    """gelu_bias_rows_f32 for float64, with libm's erf."""
    T, D = h.shape
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    for r in range(T):
        for c in range(D):
            x = h[r, c] + bias[c]
            h[r, c] = x * 0.5 * (1.0 + math.erf(x * inv_sqrt2))


def gelu_bias_rows(h: np.ndarray, bias: np.ndarray) -> None:
    """In place: h <- gelu(h + bias), with the kernel for h's dtype."""
    (gelu_bias_rows_f32 if h.dtype == np.float32 else gelu_bias_rows_f64)(h, bias)


# ----------------------------------------------------------------------------------------------------------------
# Attention softmax, in place on a chunk of windows' logits (the matmuls around it stay in BLAS).

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
# 2**-i for i = 0 .. 149: every exp the softmax keeps is 2**k * e^r with -126 <= k <= 0.
POW2_NEG = 2.0 ** -np.arange(150, dtype=np.float64)


@_jit(fastmath={"contract"}, inline="always")
def exp_nonpositive(z):  # pragma: no cover - compiled
    """exp(z) for float32 z in [log(float32 tiny), 0], evaluated in float64 (twin: numpy.exp).

    z = k ln 2 + r with integer k = round(z / ln 2) and |r| <= ln(2) / 2; e^r from its Taylor series to r^10
    (relative error < 3e-13), times 2^k from a table. Rounded to float32 it is the correctly rounded exp except in
    rare half-ulp ties; no libm call, so the loop around it vectorises.
    """
    x = z * 1.0  # float64
    n = int(0.5 - x * LOG2E)  # k = -n = round(x / ln 2); truncating a non-negative number is floor
    r = x + n * LN2
    r2 = r * r
    r4 = r2 * r2
    # Estrin's scheme for sum r^n / n!, n = 0 .. 10.
    p = ((1.0 + r) + (0.5 + r * (1.0 / 6.0)) * r2) + ((1.0 / 24.0 + r * (1.0 / 120.0))
                                                       + (1.0 / 720.0 + r * (1.0 / 5040.0)) * r2) * r4
    p = p + ((1.0 / 40320.0 + r * (1.0 / 362880.0)) + (1.0 / 3628800.0) * r2) * (r4 * r4)
    return p * POW2_NEG[n]


# One kernel per dtype, the same passes in both: the float32 one uses the exp polynomial (a libm call per element
# would not vectorise), the float64 one libm's exp; neither pays for a branch per element, and a float32 model never
# compiles the float64 loop (every compiled function adds to the first start). The loop nest is written
# twice on purpose: a factory closing over the exp function would share it, but Numba does not cache closures
# (checked with numba 0.68: no cache hits in a second process), so every start would compile.


@_jit(fastmath={"contract", "reassoc"})
def attention_softmax_f32(logits, rel_bias, mask, first_window, floor):  # pragma: no cover - compiled
    nw, nH, N, _ = logits.shape
    nW = mask.shape[0]
    for i in range(nw):
        w = (first_window + i) % nW
        for h in range(nH):
            for r in range(N):
                row = logits[i, h, r]
                b = rel_bias[h, r]
                m = mask[w, r]
                # Three passes: bias, mask and the running max (scalar: a max reduction does not vectorise unless
                # NaN is ruled out, and a separate vectorised bias pass costs compile time); exp and the sum
                # (vectorised); the division.
                mx = np.float32(-np.inf)
                for j in range(N):
                    v = (row[j] + b[j]) + m[j]
                    row[j] = v
                    mx = v if v > mx else mx
                s = np.float32(0.0)
                for j in range(N):
                    z = row[j] - mx
                    # The polynomial on a clamped argument, so its table index stays in range on every lane.
                    e = exp_nonpositive(z if z >= floor else floor)
                    e = e if z >= floor else 0.0
                    row[j] = e
                    s += np.float32(e)
                for j in range(N):
                    row[j] = row[j] / s


@_jit()
def attention_softmax_f64(logits, rel_bias, mask, first_window, floor):  # pragma: no cover - compiled
    nw, nH, N, _ = logits.shape
    nW = mask.shape[0]
    for i in range(nw):
        w = (first_window + i) % nW
        for h in range(nH):
            for r in range(N):
                row = logits[i, h, r]
                b = rel_bias[h, r]
                m = mask[w, r]
                mx = -np.inf
                for j in range(N):
                    v = (row[j] + b[j]) + m[j]
                    row[j] = v
                    mx = v if v > mx else mx
                s = 0.0
                for j in range(N):
                    z = row[j] - mx
                    e = np.exp(z) if z >= floor else 0.0
                    row[j] = e
                    s += e
                for j in range(N):
                    row[j] = row[j] / s


def attention_softmax(logits: np.ndarray, rel_bias: np.ndarray, mask: np.ndarray, first_window: int,
                      floor: float) -> None:
    """In place on logits [nw, nH, N, N]: softmax(logits + rel_bias[h] + mask[w]) over the last axis.

    Twin: the part of swinref.model.window_attention between the q k^T product and the product with v (bias add,
    mask add, swinref.model.softmax). rel_bias [nH, N, N]; mask [nW, N, N]: 0 / -100 for shifted blocks, one
    all-zero [1, N, N] window otherwise; window i of the chunk uses mask[(first_window + i) % nW] (windows run
    b-major, nW per image).

    Terms exp(z), z = logit - row max, with z < floor are set to 0 instead of computed: floor is the log of the
    dtype's smallest normal number, so those terms would be subnormal (exp(-100) for every masked pair), slow on the
    CPU, and below 1e-38 of the row's largest term, which is exp(0) = 1. Dropping them changes the row sum by less
    than N * 1e-38, far below one float32 rounding of a sum >= 1, and each probability by less than 1e-38.
    """
    (attention_softmax_f32 if logits.dtype == np.float32 else attention_softmax_f64)(
        logits, rel_bias, mask, first_window, floor)



# ----------------------------------------------------------------------------------------------------------------
# Spin waits for swinref.fast's lanes: between the parts of one forward pass a lane waits a few microseconds for the
# next part; blocking on a lock there would hand its core to any other process and wait for the scheduler to give
# it back (up to a time slice on a busy machine), for every part. A wait re-reads memory in rounds of `round_loads`
# loads, offers the core to other runnable threads (sched_yield) between rounds, and gives up after `budget_ns`
# nanoseconds of CLOCK_MONOTONIC; the caller then blocks on a lock. The whole wait is one call without the GIL: a
# wait that came back to Python between rounds took the GIL every few microseconds from the lane doing the work.


@intrinsic
def _load_acquire(typingctx, array, index):
    """array[index] as an atomic load with acquire ordering, so a loop re-reads memory another thread writes."""
    sig = array.dtype(array, index)

    def codegen(context, builder, signature, args):
        array_type, _ = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        return builder.load_atomic(pointer, "acquire", array_type.dtype.bitwidth // 8)

    return sig, codegen


@intrinsic
def fetch_add(typingctx, array, index, value):
    """array[index] += value as one atomic step (sequentially consistent); returns the value before."""
    sig = array.dtype(array, index, value)

    def codegen(context, builder, signature, args):
        array_type, _, value_type = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
        addend = context.cast(builder, args[2], value_type, array_type.dtype)
        return builder.atomic_rmw("add", pointer, addend, "seq_cst")

    return sig, codegen


@intrinsic
def _yield_core(typingctx):
    """libc's sched_yield()."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])

    return numba.types.int32(), codegen


# The system's own value (1 on Linux, 6 on macOS).
CLOCK_MONOTONIC = getattr(time, "CLOCK_MONOTONIC", 1)


@intrinsic
def _monotonic_ns(typingctx):
    """clock_gettime(CLOCK_MONOTONIC) in nanoseconds (time.monotonic's clock); -1 if the call fails."""

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        timespec = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))  # struct timespec on LP64 systems
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, timespec.type]),
                                            "clock_gettime")
        failed = builder.icmp_signed("!=", builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC), timespec]),
                                     ir.Constant(i32, 0))
        seconds = builder.load(builder.gep(timespec, [ir.Constant(i32, 0), ir.Constant(i32, 0)]))
        nanoseconds = builder.load(builder.gep(timespec, [ir.Constant(i32, 0), ir.Constant(i32, 1)]))
        now = builder.add(builder.mul(seconds, ir.Constant(i64, 1_000_000_000)), nanoseconds)
        return builder.select(failed, ir.Constant(i64, -1), now)

    return numba.types.int64(), codegen


@_jit(inline="always")
def _deadline(budget_ns):  # pragma: no cover - compiled
    """When a wait of budget_ns started now ends; -1 (ended after one round) when there is no clock."""
    now = _monotonic_ns()
    return now + budget_ns if now >= 0 else -1


@_jit()
def spin_while_equal(word, value, budget_ns, round_loads):  # pragma: no cover - compiled
    """Re-read word[0] until it differs from value or budget_ns pass; returns the last value read."""
    deadline = _deadline(budget_ns)
    while True:
        for _ in range(round_loads):
            current = _load_acquire(word, 0)
            if current != value:
                return current
        if _monotonic_ns() >= deadline:
            return current
        _yield_core()


@_jit()
def spin_until_all_set(flags, budget_ns, round_loads):  # pragma: no cover - compiled
    """Re-read flags until every one is non-zero (True) or budget_ns pass (False)."""
    deadline = _deadline(budget_ns)
    first = 0
    while True:
        for _ in range(round_loads):
            while first < flags.shape[0] and _load_acquire(flags, first) != 0:
                first += 1
            if first == flags.shape[0]:
                return True
        if _monotonic_ns() >= deadline:
            return False
        _yield_core()
