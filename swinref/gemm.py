"""x @ W^T for the fast block's linear layers, as one Numba kernel without the GIL (plain twin: np.matmul).

Why not BLAS: OpenBLAS re-packs W at every call and tunes its blocking for large products, while the fast block's
items multiply 49 to 256 rows by the same few weights again and again (benchmarks/gemm_layout.py compares the two
at Swin's shapes). This kernel reads W where it lies and keeps a tile of the output in vector registers:

- W is column-major ([N, K] whose transpose W^T [K, N] is C-contiguous: swinref.api places every linear weight
  so), so a row k of W^T is contiguous and a panel of NR output columns reads 2 vectors per k, with no packing;
- the inner tile is MR rows x NR columns: 2 * MR accumulator vectors, each row's x[m, k] broadcast once per k
  into two fused multiply-adds. It is written in LLVM IR with explicit vector types (intrinsics below), because
  Numba has no vector type and LLVM's auto-vectoriser does not keep 16 accumulators in registers;
- K is walked in blocks of KC, and each block panel by panel, so that a panel's [KC, NR] block of W^T stays in
  the cache while every row tile of x passes over it; the output tile is stored after the first block and added
  to after the others;
- in a forward pass W is never in the cache (the model's weights outgrow it), and W^T's rows lie too far apart
  for the hardware prefetchers to follow: the first block is asked for (llvm.prefetch into L2) before the
  products start, and the first row tile over each block asks for the block that comes next, so that later
  blocks arrive while earlier ones are computed;
- where W^T's row stride is a multiple of 4 KiB (N = 1024, 2048, 3072, 4096 in float32), its rows share a few L1
  cache sets and evict each other: each block is first copied into a contiguous [KC, NR] buffer.

The vector width is the compile target's (Numba's: the host's CPU, or NUMBA_CPU_NAME / NUMBA_CPU_FEATURES):
16 floats with AVX-512, 8 with AVX, 4 otherwise; MR = 8 where there are 32 vector registers, 6 where there are 16
(x86 without AVX-512). float32 only: float64 models keep np.matmul, as does any operand that does not fit the
layout (`fits`).

Numerics: each output element is a sum over k in increasing order, in float32, with multiply-adds fused where the
target has FMA (llvm.fmuladd); BLAS sums in its own order, so the two differ by float32 rounding (tests/test_gemm.py
bounds the difference). Row and column blocks never change an element's order of summation, so a product cut
into tiles between lanes gives the same bits as one call.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.core import config as numba_config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

from swinref.kernels import _jit

__all__ = ["VECTOR", "MR", "NR", "KC", "fits", "times_weight_t", "vector_shape"]


def vector_shape(features: str) -> tuple[int, int]:
    """(floats per vector, rows per tile) for an LLVM feature string such as '+avx2,+fma,-avx512f'."""
    flags = set(features.split(","))
    if "+avx512f" in flags:
        return 16, 8
    x86 = "+sse2" in flags
    if "+avx" in flags:
        return 8, 6
    return 4, 6 if x86 else 8


def _target_features() -> str:
    """The features Numba compiles for (numba.core.codegen's own rule)."""
    return numba_config.CPU_FEATURES if numba_config.CPU_FEATURES is not None else get_host_cpu_features()


VECTOR, MR = vector_shape(_target_features())
NR = 2 * VECTOR  # output columns per panel
KC = 256  # rows of W^T per block
ALIASING_STRIDE = 4096  # bytes: a row stride that is a multiple of this maps every row onto the same L1 sets


def _emit_prefetch_row(builder, row) -> None:
    """LLVM IR asking for the NR floats at `row` (a float pointer) in the L2 cache (llvm.prefetch: read,
    locality 2, data), one request per 64-byte line."""
    i8, i32 = ir.IntType(8), ir.IntType(32)
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8.as_pointer(), i32, i32, i32]), "llvm.prefetch.p0i8")
    start = builder.bitcast(row, i8.as_pointer())
    for line in range(0, NR * 4, 64):
        builder.call(prefetch, [builder.gep(start, [ir.Constant(ir.IntType(64), line)]), ir.Constant(i32, 0),
                                ir.Constant(i32, 2), ir.Constant(i32, 1)])


def _emit_tile(builder, rows: int, x_addr, ldx_, b_addr, ldb_, out_addr, ldo_, kc_, add, ahead_) -> None:
    """LLVM IR for out[0:rows, 0:NR] (+)= x[0:rows, 0:kc] @ b[0:kc, 0:NR] (addresses and strides in floats),
    prefetching b[0:kc, ahead:ahead + NR] into L2 on the way; the builder ends in the tile's last block."""
    f32, i32, int64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(f32, VECTOR)
    x_p = builder.inttoptr(x_addr, f32.as_pointer())
    b_p = builder.inttoptr(b_addr, f32.as_pointer())
    out_p = builder.inttoptr(out_addr, f32.as_pointer())
    fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fmuladd.v{VECTOR}f32")
    zero = ir.Constant(vec, [0.0] * VECTOR)
    undef = ir.Constant(vec, ir.Undefined)
    splat = ir.Constant(ir.VectorType(i32, VECTOR), [0] * VECTOR)

    def vector_at(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

    def const(v):
        return ir.Constant(int64, v)

    entry, fn = builder.block, builder.function
    loop, done = fn.append_basic_block("tile.k"), fn.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", kc_, const(0)), loop, done)

    builder.position_at_end(loop)  # one k: two vectors of b, a broadcast of each row's x, 2 * rows FMAs
    k = builder.phi(int64)
    acc = [builder.phi(vec) for _ in range(2 * rows)]
    b_row = builder.mul(k, ldb_)
    _emit_prefetch_row(builder, builder.gep(b_p, [builder.add(b_row, ahead_)]))
    b_lo = builder.load(vector_at(b_p, b_row), align=4)
    b_hi = builder.load(vector_at(b_p, builder.add(b_row, const(VECTOR))), align=4)
    summed = []
    for r in range(rows):
        scalar = builder.load(builder.gep(x_p, [builder.add(builder.mul(const(r), ldx_), k)]), align=4)
        broadcast = builder.shuffle_vector(builder.insert_element(undef, scalar, ir.Constant(i32, 0)),
                                           undef, splat)
        summed.append(builder.call(fmuladd, [broadcast, b_lo, acc[2 * r]]))
        summed.append(builder.call(fmuladd, [broadcast, b_hi, acc[2 * r + 1]]))
    k_next = builder.add(k, const(1))
    k.add_incoming(const(0), entry)
    k.add_incoming(k_next, loop)
    for phi, value in zip(acc, summed):
        phi.add_incoming(zero, entry)
        phi.add_incoming(value, loop)
    builder.cbranch(builder.icmp_signed("<", k_next, kc_), loop, done)

    builder.position_at_end(done)
    total = []
    for value in summed:
        phi = builder.phi(vec)
        phi.add_incoming(zero, entry)
        phi.add_incoming(value, loop)
        total.append(phi)
    with builder.if_else(add) as (then_add, then_store):
        for adding in (then_add, then_store):
            with adding:
                for r in range(rows):
                    row = builder.mul(const(r), ldo_)
                    for half in range(2):
                        target = vector_at(out_p, builder.add(row, const(half * VECTOR)))
                        value = total[2 * r + half]
                        if adding is then_add:
                            value = builder.fadd(builder.load(target, align=4), value)
                        builder.store(value, target, align=4)


@intrinsic
def _tile(typingctx, rows, x, ldx, b, ldb, out, ldo, kc, accumulate, ahead):
    """One tile of 1 to MR rows (more are taken as 8): a switch over the tile's IR for each row count."""
    i64 = numba.types.int64
    sig = numba.types.void(i64, i64, i64, i64, i64, i64, i64, i64, numba.types.boolean, i64)

    def codegen(context, builder, signature, args):
        fn = builder.function
        end = fn.append_basic_block("tile.end")
        bodies = [fn.append_basic_block(f"tile.rows{r}") for r in range(1, 9)]
        switch = builder.switch(args[0], bodies[-1])
        for r, body in enumerate(bodies, start=1):
            switch.add_case(ir.Constant(ir.IntType(64), r), body)
            builder.position_at_end(body)
            _emit_tile(builder, r, *args[1:])
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch_panel(typingctx, src, lds, rows):
    """Ask for src[r * lds: r * lds + NR], r < rows, in the L2 cache (float32 address, stride in floats)."""
    i64 = numba.types.int64
    sig = numba.types.void(i64, i64, i64)

    def codegen(context, builder, signature, args):
        src_addr, lds_, rows_ = args
        src_p = builder.inttoptr(src_addr, ir.FloatType().as_pointer())
        with cgutils.for_range(builder, rows_) as loop:
            _emit_prefetch_row(builder, builder.gep(src_p, [builder.mul(loop.index, lds_)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _copy_panel(typingctx, src, lds, dst, rows):
    """dst[r, 0:NR] = src[r * lds: r * lds + NR] for r < rows (float32 addresses, strides in floats)."""
    i64 = numba.types.int64
    sig = numba.types.void(i64, i64, i64, i64)

    def codegen(context, builder, signature, args):
        src_addr, lds_, dst_addr, rows_ = args
        f32, int64 = ir.FloatType(), ir.IntType(64)
        vec = ir.VectorType(f32, VECTOR)
        src_p = builder.inttoptr(src_addr, f32.as_pointer())
        dst_p = builder.inttoptr(dst_addr, f32.as_pointer())
        with cgutils.for_range(builder, rows_) as loop:
            src_row = builder.mul(loop.index, lds_)
            dst_row = builder.mul(loop.index, ir.Constant(int64, NR))
            for half in range(2):
                offset = ir.Constant(int64, half * VECTOR)
                value = builder.load(builder.bitcast(builder.gep(src_p, [builder.add(src_row, offset)]),
                                                     vec.as_pointer()), align=4)
                builder.store(value, builder.bitcast(builder.gep(dst_p, [builder.add(dst_row, offset)]),
                                                     vec.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@_jit(inline="always")
def _row_tile(t, M, tiles):  # pragma: no cover - compiled
    """(first row, rows) of row tile t of M rows cut into `tiles` tiles of sizes as equal as can be: the rows of a
    window item (multiples of 49) make whole tiles of 7 and 8 rows, not 8-row tiles and one nearly empty one."""
    small, larger = M // tiles, M % tiles
    return t * small + min(t, larger), small + (1 if t < larger else 0)


@_jit(inline="always")
def _panels(x, wt, out, first, last):  # pragma: no cover - compiled
    """out[:, :(last - first)*NR] = x @ wt[:, first*NR:last*NR] (float32; rows of x, wt and out contiguous); blocks
    of a wt whose rows alias in L1 are copied first."""
    _product(x.ctypes.data, x.strides[0] // 4, x.shape[0], x.shape[1], wt.ctypes.data, wt.strides[0] // 4,
             out.ctypes.data, out.strides[0] // 4, np.int64(first), np.int64(last),
             wt.strides[0] % ALIASING_STRIDE == 0)


@_jit()
def _product(x0, ldx, M, K, b0, ldb, o0, ldo, first, last, copy):  # pragma: no cover - compiled
    """_panels on addresses and row strides (in floats): one compiled signature for every caller and layout."""
    tiles = -(-M // MR)
    block = np.empty((KC if copy else 0, NR), np.float32)
    _prefetch_panel(b0 + first * NR * 4, ldb, min(KC, K))
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        for p in range(first, last):
            b, ld = b0 + (k0 * ldb + p * NR) * 4, ldb
            # The first row tile over a block asks for the block that comes next: the next panel's, or after the
            # last panel the first panel's in the next rows.
            ahead = NR if p + 1 < last else (KC * ldb + (first - p) * NR if k0 + KC < K else 0)
            if copy:
                _copy_panel(b, ldb, block.ctypes.data, kc)
                b, ld, ahead = block.ctypes.data, NR, 0
            for t in range(tiles):
                m0, rows = _row_tile(t, M, tiles)
                _tile(rows, x0 + (m0 * ldx + k0) * 4, ldx, b, ld, o0 + (m0 * ldo + (p - first) * NR) * 4, ldo, kc,
                      k0 > 0, ahead if t == 0 else 0)
    return block.shape[0]  # block stays alive (and its address valid) until every tile has read it


def _rows_contiguous(a: np.ndarray) -> bool:
    """A 2-D float32 array whose rows are contiguous and lie at a positive whole number of floats apart."""
    rows, cols = a.shape
    return (a.dtype == np.float32 and (cols <= 1 or a.strides[1] == 4)
            and (rows <= 1 or (a.strides[0] >= 4 * cols and a.strides[0] % 4 == 0)))


def fits(x: np.ndarray, weight: np.ndarray, out: np.ndarray, c0: int, c1: int) -> bool:
    """Whether the kernel takes out = x @ weight[c0:c1].T: float32 throughout, weight column-major, rows of x and
    out contiguous, whole panels, and something to sum."""
    return (x.ndim == weight.ndim == out.ndim == 2 and x.shape[0] == out.shape[0] > 0
            and x.shape[1] == weight.shape[1] > 0 and out.shape[1] == c1 - c0
            and c0 % NR == 0 and c1 % NR == 0 and 0 <= c0 < c1 <= weight.shape[0]
            and _rows_contiguous(x) and _rows_contiguous(weight.T) and _rows_contiguous(out))


def times_weight_t(x: np.ndarray, weight: np.ndarray, out: np.ndarray, c0: int = 0, c1: int | None = None) -> None:
    """out [M, c1 - c0] = x [M, K] @ weight[c0:c1].T: the kernel where it `fits`, else np.matmul (its plain twin).

    The kernel always receives the whole W^T and a range of panels, so that one compiled signature serves every
    column tile."""
    c1 = weight.shape[0] if c1 is None else c1
    if fits(x, weight, out, c0, c1):
        _panels(x, weight.T, out, c0 // NR, c1 // NR)
    else:
        np.matmul(x, weight[c0:c1].T, out=out)
