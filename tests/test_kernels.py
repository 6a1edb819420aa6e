"""Every Numba kernel against the plain function it replaces, and the fast NumPy block against the plain block.

The plain path (swinref.model on the array API) is the reference; the fast path (swinref.fast + swinref.kernels)
must agree to float32 rounding in float32 and to float64 rounding in float64, on random shapes and configs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")

from swinref import fast, kernels  # noqa: E402
from swinref.backend import backend_for, numpy_backend, plain  # noqa: E402
from swinref.errors import InputError  # noqa: E402
from swinref.layers import gelu, layer_norm, softmax  # noqa: E402
from swinref.model import features, forward, forward_trace  # noqa: E402
from swinref.params import init_params  # noqa: E402

from strategies import configs_with_size  # noqa: E402

TOL = {np.float32: 1e-5, np.float64: 1e-10}
FLOAT32_MIN_NORMAL_LOG = math.log(np.finfo(np.float32).tiny)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------------------------
# erf


def test_erf_polynomial_is_within_five_ulp_of_libm_erf() -> None:
    xs = np.concatenate([np.linspace(-6, 6, 400_001), np.logspace(-30, 0.7, 20_000), -np.logspace(-30, 0.7, 20_000)])
    xs = xs.astype(np.float32)
    exact = np.array([math.erf(float(v)) for v in xs])
    got = np.array([kernels.erf_poly32(v) for v in xs[::10]], dtype=np.float64)
    ulp = np.spacing(np.abs(exact[::10]).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - exact[::10]) / ulp).max() < 4.5


def test_erf_coefficients_are_the_stated_fit() -> None:
    """Refit: least squares at 4000 Chebyshev nodes of erf(x)/x in t = x^2/8 - 1, degree 15, in powers of t."""
    from numpy.polynomial import chebyshev

    nodes = np.cos(np.pi * (np.arange(4000) + 0.5) / 4000)
    u = (nodes + 1.0) * 8.0
    target = np.array([math.erf(math.sqrt(v)) / math.sqrt(v) for v in u])
    powers = chebyshev.cheb2poly(chebyshev.chebfit(nodes, target, 15))
    np.testing.assert_allclose(kernels.ERF32_T_POLY, powers, rtol=0, atol=1e-9)
    x = np.linspace(1e-6, kernels.ERF_CLAMP, 50_001)
    approx = x * np.polynomial.polynomial.polyval(x * x / 8.0 - 1.0, kernels.ERF32_T_POLY)
    exact = np.array([math.erf(v) for v in x])
    assert np.abs(approx / exact - 1).max() < 3e-7


# ----------------------------------------------------------------------------------------------------------------
# Row kernels against their twins.


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 70), st.integers(1, 200), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))
def test_layer_norm_rows_equals_layer_norm(T, C, dtype, seed) -> None:
    rng = _rng(seed)
    x = (rng.standard_normal((T, C)) * rng.uniform(0.1, 50) + rng.uniform(-20, 20)).astype(dtype)
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    out = np.empty_like(x)
    kernels.layer_norm_rows(x, w, b, 1e-5, out)
    want = layer_norm(x, {"weight": w, "bias": b}, 1e-5, np)
    np.testing.assert_allclose(out, want, rtol=TOL[dtype], atol=TOL[dtype])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))
def test_gelu_bias_rows_equals_gelu_of_biased_input(T, D, dtype, seed) -> None:
    rng = _rng(seed)
    h = (rng.standard_normal((T, D)) * rng.uniform(0.1, 8)).astype(dtype)
    bias = rng.standard_normal(D).astype(dtype)
    x = h + bias
    want = gelu(x, numpy_backend())
    kernels.gelu_bias_rows(h, bias)
    if dtype == np.float64:
        np.testing.assert_array_equal(h, want)  # same libm erf, same operations
        return
    # float32: erf is within 4.3 ulp of libm's erf (ulp <= 6e-8 near +-1); x * 0.5 * (1 + erf) carries that as an
    # absolute error of 0.5 |x| * 4.5 * 6e-8, plus the rounding of either result (the larger: where the plain
    # path's 1 + erf(x) is exactly 0 its result is -0.0, and the kernel's is a few 1e-7 below it).
    bound = 0.5 * np.abs(x) * 4.5 * 6e-8 + 2 * np.spacing(np.maximum(np.abs(want), np.abs(h)))
    assert np.all(np.abs(h - want) <= bound), float(np.max(np.abs(h - want) - bound))


def test_exp_polynomial_is_numpy_exp_to_one_ulp() -> None:
    z = np.concatenate([np.linspace(FLOAT32_MIN_NORMAL_LOG, 0, 200_001), -np.logspace(-12, 1.9, 5000), [0.0]])
    z = z.astype(np.float32)
    z = z[z.astype(np.float64) >= FLOAT32_MIN_NORMAL_LOG]  # the kernel's own test: float32 z against the floor
    got = np.array([np.float32(kernels.exp_nonpositive(v)) for v in z[::7]])
    exact = np.exp(z[::7].astype(np.float64))
    ulps = np.abs(got.astype(np.float64) - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 0.5 + 1e-6
    assert np.all(got >= np.finfo(np.float32).tiny)  # never subnormal on the kept range


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 8), st.booleans(), st.integers(0, 3),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))
def test_attention_softmax_equals_plain_softmax(nw, nH, M, masked, first, dtype, seed) -> None:
    """attention_softmax == softmax(logits + bias + mask) of the plain path."""
    rng = _rng(seed)
    N = M * M
    logits = (rng.standard_normal((nw, nH, N, N)) * 4).astype(dtype)
    rel_bias = rng.standard_normal((nH, N, N)).astype(dtype)
    nW = 3
    mask = np.where(rng.random((nW, N, N)) < 0.4, -100.0, 0.0).astype(dtype)
    for w in range(nW):
        np.fill_diagonal(mask[w], 0.0)  # a token always sees itself, as in every real shift mask
    plain_logits = logits + rel_bias
    if masked:
        plain_logits = plain_logits + mask[(first + np.arange(nw)) % nW][:, None]
    want = softmax(plain_logits, np)
    got = logits.copy()
    floor = math.log(np.finfo(dtype).tiny)
    kernels.attention_softmax(got, rel_bias, mask if masked else np.zeros((1, N, N), dtype), first, floor)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=1e-37 if dtype == np.float32 else 1e-300)
    assert np.all(np.isfinite(got))


def test_masked_terms_are_flushed_to_zero_not_subnormal() -> None:
    """exp(-100) is a float32 subnormal; the kernel makes such terms exactly 0 and nothing else changes."""
    logits = np.zeros((1, 1, 4, 4), np.float32)
    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, :2, 2:] = mask[0, 2:, :2] = -100.0
    rel = np.zeros((1, 4, 4), np.float32)
    plain = softmax(logits + rel + mask[:, None], np)
    assert 0 < plain[0, 0, 0, 3] < np.finfo(np.float32).tiny  # the plain path really produces a subnormal
    got = logits.copy()
    kernels.attention_softmax(got, rel, mask, 0, FLOAT32_MIN_NORMAL_LOG)
    assert got[0, 0, 0, 3] == 0.0
    np.testing.assert_array_equal(got[0, 0, :2, :2], plain[0, 0, :2, :2])


# ----------------------------------------------------------------------------------------------------------------
# Whole blocks and whole models: fast path against plain path.


def _column_major(params: dict) -> dict:
    """The layout swinref.api places weights in on the CPU, which swinref.gemm's kernel reads (its products then
    run in the kernel, not in np.matmul)."""
    from swinref.layout import is_linear_weight

    return {k: np.asfortranarray(v) if v.ndim == 2 and is_linear_weight(k) else v for k, v in params.items()}


def _both(params, x, cfg, policy):
    fast_out = forward(params, x, cfg, policy=policy)
    with plain():
        plain_out = forward(params, x, cfg, policy=policy)
    return fast_out, plain_out


@settings(max_examples=20, deadline=None)
@given(configs_with_size(max_pixels=72, max_window=8, max_depth=2, max_layers=3),
       st.sampled_from(["torchvision", "detection", "timm", "hf"]), st.sampled_from(["float32", "float64"]),
       st.integers(1, 2), st.booleans())
def test_fast_forward_equals_plain_forward(cfg_size, policy, dtype, batch, column_major) -> None:
    """Both blocks read one plan: every policy's windows, shifts, padding orders and masks give the same answer,
    with the weights in either layout."""
    cfg, (H, W) = cfg_size
    cfg = dataclasses.replace(cfg, img_size=(H, W))  # bias tables sized for the windows at this image size
    params = init_params(cfg, seed=1, dtype=dtype)
    if column_major:
        params = _column_major(params)
    x = _rng(H * W).standard_normal((batch, cfg.in_chans, H, W)).astype(dtype)
    try:
        got, want = _both(params, x, cfg, policy)
    except InputError:  # a size the policy's peer refuses (timm: not divisible by the patch)
        assume(False)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=(1e-5 if dtype == "float32" else 1e-10) * scale)


def test_fast_path_is_taken_and_can_be_switched_off() -> None:
    """The block implementation is chosen once, where the backend is resolved, and carried by it."""
    from swinref import blocks

    x = np.zeros((1, 3, 8, 8))
    assert backend_for(x).block is fast
    with plain():
        assert backend_for(x).block is blocks
    assert backend_for(x).block is fast
    assert numpy_backend().block is blocks
    import ast
    import inspect

    from swinref import layers, model

    for reference in (blocks, layers, model):  # the reference never imports its accelerated twin
        imported = set()
        for node in ast.walk(ast.parse(inspect.getsource(reference))):
            if isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{a.name}" for a in node.names} | {node.module or ""}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        assert not {"swinref.fast", "swinref.kernels"} & imported, (reference.__name__, imported)


# Schedules: (lanes, TILE_ROWS, ATTN_CHUNK_BYTES). One lane: whole blocks in items of windows; two and three lanes at
# the defaults: fused items in the early stages, tiles of products and window x head-group items in the late ones
# (a 100 x 84 image has one padded window in stage 3); a tiny logits budget: one window and a few heads per item.
SCHEDULES = [(1, 256, 2 << 20), (2, 256, 2 << 20), (3, 100, 2 << 20), (2, 256, 20_000), (3, 64, 1)]


@pytest.mark.parametrize("lanes,rows,budget", SCHEDULES)
def test_every_schedule_equals_the_plain_path(monkeypatch, lanes, rows, budget) -> None:
    """However a block is cut into items (fused windows, tiles, head groups, one window at a time), the result is
    the plain path's; padding on every stage, shifted and unshifted blocks."""
    from swinref.config import get_config

    cfg = get_config("T", depths=(2, 2, 2, 2))
    params = _column_major(init_params(cfg, seed=3, dtype="float32"))
    x = _rng(0).standard_normal((2, 3, 100, 84)).astype(np.float32)
    with plain():
        want = forward(params, x, cfg, policy="detection")
    monkeypatch.setattr(fast, "LANES", lanes)
    monkeypatch.setattr(fast, "TILE_ROWS", rows)
    monkeypatch.setattr(fast, "ATTN_CHUNK_BYTES", budget)
    fast._schedule.cache_clear()
    from swinref import gemm

    products = []
    fits = gemm.fits
    monkeypatch.setattr(gemm, "fits", lambda *a: products.append(fits(*a)) or products[-1])
    got = forward(params, x, cfg, policy="detection")
    assert products.count(True) > 0.9 * len(products)  # the head (1000 classes) is not whole panels
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    fast._schedule.cache_clear()


def test_schedules_cover_fused_and_tiled_blocks() -> None:
    """The cases above reach both ways of cutting a block, head groups and column tiles (else they test less than
    they say)."""
    from swinref.plan import plan
    from swinref.config import get_config

    cfg = get_config("T", depths=(2, 2, 2, 2))
    blocks = [b for s in plan(cfg, (100, 84), "detection").stages for b in s.blocks]
    fast._schedule.cache_clear()
    kinds = {(fast._schedule(2, b, 4).fused, fast._schedule(2, b, 4).head_groups > 1) for b in blocks}
    assert kinds == {(True, False), (False, True)}, kinds
    assert fast._tiles(49, 768)[1] < 768 and fast._tiles(3136, 96) == (784, 96)


@pytest.mark.parametrize("lanes", [2, 3, 8])
def test_results_are_bit_identical_for_any_number_of_lanes(monkeypatch, lanes) -> None:
    """How a block is cut depends on the data only: the same items, the same products and kernels on the same rows,
    whichever lane takes an item and however many there are. So outputs do not depend on the machine's cores."""
    from swinref.config import get_config

    cfg = get_config("T", depths=(2, 2, 2, 2))
    params = _column_major(init_params(cfg, seed=5, dtype="float32"))
    x = _rng(3).standard_normal((3, 3, 112, 112)).astype(np.float32)
    monkeypatch.setattr(fast, "LANES", 1)
    alone = forward(params, x, cfg, policy="torchvision")
    monkeypatch.setattr(fast, "LANES", lanes)
    np.testing.assert_array_equal(forward(params, x, cfg, policy="torchvision"), alone)


def test_trace_points_equal_features_and_plain_trace() -> None:
    from swinref.config import get_config

    cfg = get_config("T", img_size=(64, 64), depths=(1, 2, 1, 1), window_size=4)
    params = init_params(cfg, seed=2, dtype="float64")
    x = _rng(1).standard_normal((1, 3, 64, 64))
    # Stage 0 has one block here: the shifted block whose probabilities to keep is stage 1's second.
    points = forward_trace(params, x, cfg, policy="timm", attn_probs=["layers.1.blocks.1"])
    with plain():
        plain_points = forward_trace(params, x, cfg, policy="timm", attn_probs=["layers.1.blocks.1"])
    assert list(points) == list(plain_points) and "layers.1.blocks.1.attn_probs" in points
    for name in points:
        np.testing.assert_allclose(points[name], plain_points[name], rtol=0, atol=1e-10, err_msg=name)
    np.testing.assert_array_equal(features(params, x, cfg, policy="timm", layout="NHWC")[0],
                                  points["layers.0.blocks.0"])


@pytest.mark.parametrize("name,policy,size,build", [
    ("T", "detection", (100, 84), None),  # padding in every stage; shifted and unshifted blocks
    ("swinv2_tiny_patch4_window8_256", "pad", (64, 96), (64, 96)),  # cosine attention, res-post norms, q, v biases
])
@pytest.mark.parametrize("keep", [False, True])
def test_native_item_equals_numpy_item(monkeypatch, name, policy, size, build, keep) -> None:
    """swinref.window_item (one Numba call per item) against its twin, fast's NumPy item, block by block: outputs,
    the attention branch and the probabilities a trace keeps."""
    from swinref import window_item
    from swinref.config import get_config
    from swinref.layout import nest
    from swinref.plan import plan

    cfg = get_config(name, depths=(2, 2, 2, 2), **({"img_size": build} if build else {}))
    params = _column_major(init_params(cfg, seed=6, dtype="float32"))
    calls = []
    native = window_item.windows_through_block
    monkeypatch.setattr(window_item, "windows_through_block", lambda *a: calls.append(1) or native(*a))
    be = backend_for(np.zeros(1, dtype=np.float32))
    rng = _rng(4)
    tree = nest(params)
    padded_native = 0
    for sp in plan(cfg, size, policy).stages:
        for blk in sp.blocks:
            p = tree["layers"][sp.index]["blocks"][blk.index]
            x = rng.standard_normal((2, *blk.resolution, blk.dim)).astype(np.float32)
            monkeypatch.setattr(fast, "NATIVE_ITEMS", True)
            before = len(calls)
            got = fast.block(x, p, blk, be, keep_probs=keep, keep_branch=keep)
            if not fast._schedule(2, blk, 4).fused:
                assert len(calls) == before
                continue
            assert len(calls) > before
            padded_native += fast._window_rows(2, blk)[1] is not None
            monkeypatch.setattr(fast, "NATIVE_ITEMS", False)
            want = fast.block(x, p, blk, be, keep_probs=keep, keep_branch=keep)
            for g, w in zip(got, want):
                if w is None:
                    assert g is None
                    continue
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    assert calls and (padded_native or policy != "detection")


def test_v2_block_equals_plain() -> None:
    from swinref.config import get_config

    cfg = get_config("swinv2_tiny_patch4_window8_256", img_size=(64, 96), depths=(1, 2, 1, 1))
    params = init_params(cfg, seed=4, dtype="float32")
    x = _rng(2).standard_normal((1, 3, 64, 96)).astype(np.float32)
    got, want = _both(params, x, cfg, "pad")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


# ----------------------------------------------------------------------------------------------------------------
# The Numba cache: used when writable, clean fallback when not.

_CHILD = textwrap.dedent("""
    import json, warnings, numpy as np
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        from swinref.api import random_model
        from swinref import gemm, kernels, window_item
        from swinref.backend import plain
        from swinref.config import get_config
        cfg = get_config("T", img_size=(64, 64), depths=(1, 1, 1, 1), window_size=4)
        m = random_model(cfg, policy="timm")  # keeps the build-size windows (stage 3 clamped at 64)
        x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
        a = m(x)
        with plain():
            b = m(x)
    ours = [str(w.message) for w in caught if "Numba cache" in str(w.message)]
    used = [kernels.layer_norm_rows, kernels.gelu_bias_rows_f32, kernels.attention_softmax_f32, gemm._panels,
            window_item.windows_through_block]
    stats = {f.__name__: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())] for f in used}
    print(json.dumps({"warnings": len(ours), "diff": float(np.abs(a - b).max()), "hits_misses": stats,
                      "kernels_file": kernels.__file__}))
""")


def _run_child(env_extra: dict, cwd: str | None = None) -> dict:
    env = dict(os.environ, **env_extra)
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=600,
                          cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_no_writable_cache_directory_falls_back_with_one_warning(tmp_path) -> None:
    # Running as root, permissions cannot make a directory read-only; a path under a regular file cannot be created
    # by anyone, and limiting Numba to the user-provided locator removes the in-package and per-user fallbacks.
    blocker = tmp_path / "file"
    blocker.write_text("")
    got = _run_child({"NUMBA_CACHE_DIR": str(blocker / "cache"),
                      "NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator"})
    assert got["warnings"] == 1
    assert got["diff"] < 1e-5


@pytest.mark.slow
def test_second_start_loads_every_kernel_from_the_cache(tmp_path) -> None:
    first = _run_child({"NUMBA_CACHE_DIR": str(tmp_path)})
    assert first["warnings"] == 0 and first["diff"] < 1e-5
    assert all(misses >= 1 for _, misses in first["hits_misses"].values()), first  # compiled, nothing cached yet
    index_files = list(tmp_path.rglob("*.nbi"))
    assert any("kernels" in p.name for p in index_files), sorted(p.name for p in index_files)
    second = _run_child({"NUMBA_CACHE_DIR": str(tmp_path)})
    assert all(hits >= 1 and misses == 0 for hits, misses in second["hits_misses"].values()), second


@pytest.mark.slow
def test_cache_works_from_an_installed_copy(tmp_path) -> None:
    """A copy of the package outside the source tree, as pip installs it, with no NUMBA_CACHE_DIR: the first start
    writes the cache beside the installed kernels.py, the second loads everything from it."""
    site = tmp_path / "site-packages"
    shutil.copytree(pathlib.Path(fast.__file__).parent, site / "swinref",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(site), "NUMBA_CACHE_DIR": "", "HOME": str(tmp_path / "home")}  # "": not set
    first = _run_child(env, cwd=str(tmp_path))
    assert pathlib.Path(first["kernels_file"]).parent == site / "swinref"
    assert first["warnings"] == 0
    assert any((site / "swinref" / "__pycache__").glob("kernels.*.nbi"))
    second = _run_child(env, cwd=str(tmp_path))
    assert all(hits >= 1 and misses == 0 for hits, misses in second["hits_misses"].values()), second
