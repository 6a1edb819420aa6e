"""swinref.gemm's x @ W^T kernel against its plain twin (np.matmul) and against the exact product.

Every case asserts that the kernel itself ran (gemm.fits) where it should, so a layout change that sends
everything to np.matmul fails here instead of passing silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from swinref import gemm  # noqa: E402

NR = gemm.NR


def _weight(rng: np.random.Generator, N: int, K: int) -> np.ndarray:
    return np.asfortranarray(rng.standard_normal((N, K), dtype=np.float32))


def _assert_is_the_product(got: np.ndarray, x: np.ndarray, weight: np.ndarray) -> None:
    """Within float32 rounding of a K-term sum: |got - exact| <= K * 2^-24 * (|x| @ |W|^T), elementwise."""
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    exact = x64 @ w64.T
    bound = x.shape[1] * 2.0 ** -24 * (np.abs(x64) @ np.abs(w64).T) + 1e-30
    assert np.all(np.abs(got - exact) <= bound), float(np.max(np.abs(got - exact) / bound))
    twin = np.matmul(x, weight.T)
    assert np.all(np.abs(got - twin) <= 2 * bound)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(1, 600), st.integers(1, 5), st.integers(0, 3), st.integers(0, 40),
       st.integers(0, 2 * NR), st.integers(0, 2**31 - 1))
def test_kernel_equals_the_product(M, K, panels, first, x_pad, out_pad, seed) -> None:
    """Any rows (remainders of the row tile included), any K (several K blocks, and less than one), a range of
    panels of a wider weight, x and out as row blocks of wider arrays; columns outside the range are left alone."""
    rng = np.random.default_rng(seed)
    N = (first + panels + 1) * NR
    weight = _weight(rng, N, K)
    x = rng.standard_normal((M, K + x_pad), dtype=np.float32)[:, :K]
    c0, c1 = first * NR, (first + panels) * NR
    out = np.full((M, c1 - c0 + out_pad), np.nan, dtype=np.float32)
    assert gemm.fits(x, weight, out[:, :c1 - c0], c0, c1)
    gemm.times_weight_t(x, weight, out[:, :c1 - c0], c0, c1)
    _assert_is_the_product(out[:, :c1 - c0], x, weight[c0:c1])
    assert np.isnan(out[:, c1 - c0:]).all()


@pytest.mark.parametrize("N", [1024, 2048, 3072])  # W^T row strides of 4, 8 and 12 KiB
def test_panels_copied_first_give_the_same_bits(N) -> None:
    """Where W^T's rows alias in the L1 cache the panel is copied first: the same sums in the same order."""
    rng = np.random.default_rng(N)
    x = rng.standard_normal((21, 300), dtype=np.float32)
    weight = _weight(rng, N, 300)
    assert (weight.T.strides[0] % gemm.ALIASING_STRIDE) == 0
    copied, direct = (np.empty((21, N), dtype=np.float32) for _ in range(2))
    wt = weight.T
    for out, copy in ((copied, True), (direct, False)):
        gemm._product(x.ctypes.data, x.strides[0] // 4, 21, 300, wt.ctypes.data, wt.strides[0] // 4,
                      out.ctypes.data, out.strides[0] // 4, 0, N // NR, copy)
    np.testing.assert_array_equal(copied, direct)
    _assert_is_the_product(copied, x, weight)


def test_tiles_of_a_product_give_the_bits_of_the_whole() -> None:
    """Rows and panels are independent: cutting a product between lanes never changes a result."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((53, 384), dtype=np.float32)
    weight = _weight(rng, 6 * NR, 384)
    whole = np.empty((53, 6 * NR), dtype=np.float32)
    gemm.times_weight_t(x, weight, whole)
    tiles = np.empty_like(whole)
    for r0, r1 in ((0, 9), (9, 40), (40, 53)):
        for c0, c1 in ((0, NR), (NR, 4 * NR), (4 * NR, 6 * NR)):
            gemm.times_weight_t(x[r0:r1], weight, tiles[r0:r1, c0:c1], c0, c1)
    np.testing.assert_array_equal(tiles, whole)


@pytest.mark.parametrize("case", ["float64", "row-major W", "partial panel", "strided x", "strided out", "K = 0"])
def test_what_does_not_fit_goes_to_numpy(case) -> None:
    rng = np.random.default_rng(1)
    M, K, N = 10, 40, 2 * NR
    dtype = np.float64 if case == "float64" else np.float32
    x = rng.standard_normal((M, 2 * K if case == "strided x" else K)).astype(dtype)
    if case == "strided x":
        x = x[:, ::2]
    if case == "K = 0":
        x = x[:, :0]
    weight = np.asfortranarray(rng.standard_normal((N, x.shape[1])).astype(dtype))
    if case == "row-major W":
        weight = np.ascontiguousarray(weight)
    c1 = N - NR // 2 if case == "partial panel" else N
    out = np.full((M, 2 * c1 if case == "strided out" else c1), np.nan, dtype=dtype)
    if case == "strided out":
        out = out[:, ::2]
    assert not gemm.fits(x, weight, out, 0, c1)
    gemm.times_weight_t(x, weight, out, 0, c1)
    np.testing.assert_allclose(out, x.astype(np.float64) @ weight[:c1].T.astype(np.float64),
                               rtol=1e-5, atol=1e-5)


def test_vector_shape_follows_the_target_features() -> None:
    assert gemm.vector_shape("+sse2,+avx,+avx2,+fma,+avx512f") == (16, 8)
    assert gemm.vector_shape("+sse2,+avx,+avx2,+fma,-avx512f") == (8, 6)
    assert gemm.vector_shape("+sse2,+sse4.2,-avx") == (4, 6)
    assert gemm.vector_shape("+neon,+fp-armv8") == (4, 8)
    assert gemm.vector_shape("") == (4, 8)


_OTHER_TARGET = textwrap.dedent("""
    import json, numpy as np
    from swinref import gemm
    rng = np.random.default_rng(0)
    worst = 0.0
    for M, K, panels in ((1, 1, 1), (7, 300, 3), (50, 513, 2), (13, 96, 5)):
        N = panels * gemm.NR
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = np.asfortranarray(rng.standard_normal((N, K), dtype=np.float32))
        out = np.empty((M, N), dtype=np.float32)
        assert gemm.fits(x, w, out, 0, N)
        gemm.times_weight_t(x, w, out)
        exact = x.astype(np.float64) @ w.T.astype(np.float64)
        bound = K * 2.0 ** -24 * (np.abs(x.astype(np.float64)) @ np.abs(w.T.astype(np.float64))) + 1e-30
        worst = max(worst, float(np.max(np.abs(out - exact) / bound)))
    print(json.dumps({"vector": gemm.VECTOR, "rows": gemm.MR, "worst": worst}))
""")


@pytest.mark.parametrize("cpu,features,shape", [
    ("haswell", "+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+f16c,+bmi,+bmi2,-avx512f",
     (8, 6)),
    ("x86-64", "+64bit,+sse,+sse2,-avx,-avx2,-fma,-avx512f", (4, 6)),
])
def test_other_vector_shapes_compute_the_product(tmp_path, cpu, features, shape) -> None:
    """The kernel compiled for CPUs with 256-bit (AVX2) and 128-bit (SSE2, no FMA) vectors, run here."""
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", _OTHER_TARGET], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["vector"], result["rows"]) == shape
    assert result["worst"] <= 1.0
