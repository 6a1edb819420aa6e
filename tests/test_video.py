"""Video Swin: configs, the 3-D plan (per-axis clamp, 27-region mask, the peers' sliced bias index), the forward
pass against a dense 3-D oracle, fast vs plain, the analysis figures, and torchvision swin3d where it installs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import swinref
from swinref import geometry
from swinref.analysis.flops import count_flops
from swinref.analysis.params import count_params
from swinref.analysis.trace import trace
from swinref.backend import backend_for, plain
from swinref.blocks import shifted_window_attention
from swinref.config import REGISTRY, SwinConfig, get_config
from swinref.errors import ConfigError, InputError
from swinref.layers import softmax
from swinref.plan import BlockPlan, plan

VIDEO = [n for n, c in REGISTRY.items() if c.is_video]


def tiny(**overrides) -> SwinConfig:
    base = dict(img_size=(8, 48, 40), patch_size=(2, 4, 4), window_size=(4, 3, 3), embed_dim=8, depths=(2, 2),
                num_heads=(2, 2), num_classes=5)
    base.update(overrides)
    return SwinConfig(**base)


# ---------------------------------------------------------------------------------------------------------------
# Configurations.


def test_registered_names_and_aliases():
    assert {"swin3d_t", "swin3d_s", "swin3d_b", "swin_base_patch244_window1677_sthv2"} <= set(VIDEO)
    assert get_config("3D-T") == get_config("swin3d_t") and get_config("Swin3D-B").name == "swin3d_b"
    t = get_config("swin3d_t")
    assert t.is_video and t.patch == (2, 4, 4) and t.window == (8, 7, 7) and t.num_classes == 400
    # The official Kinetics-400 tiny model is torchvision's swin3d_t under another name.
    assert get_config("swin_tiny_patch244_window877_kinetics400_1k").replace(name="swin3d_t") == t
    ssv2 = get_config("swin_base_patch244_window1677_sthv2")
    assert ssv2.window == (16, 7, 7) and ssv2.num_classes == 174
    assert get_config("swin_base_patch244_window877_kinetics600_22k").num_classes == 600


def test_clip_overrides_keep_what_they_do_not_name():
    t = get_config("swin3d_t")
    assert t.replace(frames=8).img_size == (8, 224, 224)
    assert t.replace(img="200x168").img_size == (32, 200, 168)
    assert t.replace(clip="18x200x168").img_size == (18, 200, 168)
    assert t.replace(window="16x7x7").window == (16, 7, 7)
    assert SwinConfig.from_dict(t.to_dict()) == t
    with pytest.raises(ConfigError, match="image model; frames apply to Video Swin"):
        get_config("T", frames=8)
    with pytest.raises(ConfigError, match="has 2 entries but the input has 3 axes"):
        t.replace(window=(7, 7))
    with pytest.raises(ConfigError, match="Video Swin is a V1 model"):
        t.replace(version=2)


# ---------------------------------------------------------------------------------------------------------------
# The plan.


def test_per_axis_clamp_shift_and_padding():
    cfg = get_config("swin3d_t")
    mp = plan(cfg, (18, 200, 168))
    assert mp.embed.grid == (9, 50, 42) and mp.embed.pad == (0, 0, 0)
    s0 = mp.stages[0]
    assert s0.window == (8, 7, 7) and s0.blocks[1].shift == (4, 3, 3) and s0.pad == (7, 6, 0)
    assert [s.resolution for s in mp.stages] == [(9, 50, 42), (9, 25, 21), (9, 13, 11), (9, 7, 6)]
    # The last stage: H (7) is not larger than the window, W (6) is smaller: both clamp and stop shifting.
    last = mp.stages[3]
    assert last.window == (8, 7, 6) and last.blocks[1].shift == (4, 0, 0)
    assert [s.merge.pad for s in mp.stages[:3]] == [(0, 0, 0), (0, 1, 1), (0, 1, 1)]
    # A clip of 5 frames: 3 tokens in time, every window shrinks to them on that axis.
    short = plan(cfg, (5, 224, 224))
    assert short.embed.pad == (1, 0, 0) and all(b.window[0] == 3 and b.shift[0] == 0 for b in short.blocks)


def test_the_shift_mask_has_27_regions():
    blk = plan(get_config("swin3d_t"), (32, 224, 224)).stages[0].blocks[1]
    labels = geometry.shift_region_labels(blk.padded, blk.window, blk.shift)
    assert blk.mask and len(np.unique(labels)) == 27
    mask = geometry.shift_mask(blk.padded, blk.window, blk.shift)
    assert mask.shape == (blk.windows, 392, 392) and set(np.unique(mask)) == {0.0, geometry.MASK_VALUE}


def _offsets_read(window, table_window):
    """The (dt, dh, dw) offset each token pair's bias row stands for when the peers read a clamped window's biases
    from the configured window's index [:N, :N], and the pair's true offset inside the clamped window."""
    N = math.prod(window)
    index = geometry.relative_position_index(table_window)[:N, :N]
    sides = tuple(2 * m - 1 for m in table_window)
    read = np.stack(np.unravel_index(index, sides), -1) - (np.array(table_window) - 1)
    coords = np.stack(np.unravel_index(np.arange(N), window), -1)
    true = coords[:, None, :] - coords[None, :, :]
    return read, true


def test_the_peers_bias_index_is_the_configured_windows_leading_block():
    """torchvision swin3d and the official Video Swin read a clamped window's biases from relative_position_index
    [:N, :N] of the configured window. When only the first axis (T) shrinks, every pair gets the bias of its own
    offset; when H or W shrinks, most pairs get the bias of another offset. swinref does what the peers do."""
    from swinref.layers import _bias_index

    read, true = _offsets_read((4, 7, 7), (8, 7, 7))
    assert np.array_equal(read, true)
    read, true = _offsets_read((8, 7, 5), (8, 7, 7))
    wrong = np.any(read != true, axis=-1)
    assert 0.5 < wrong.mean() < 1  # the same-row pairs of the first 5 tokens are still right
    # Token 5 of an (8, 7, 5) window is (t=0, h=1, w=0); the full index reads it as (0, 0, 5).
    assert tuple(read[5, 0]) == (0, 0, 5) and tuple(true[5, 0]) == (0, 1, 0)
    blk = plan(get_config("swin3d_t"), (32, 224, 140)).stages[3].blocks[0]  # W grid 5 < 7: clamped
    assert blk.window == (8, 7, 5) and blk.table_window == (8, 7, 7) and blk.bias_index == "sliced"
    assert np.array_equal(_bias_index(blk), geometry.relative_position_index((8, 7, 7))[:280, :280].reshape(-1))


def test_image_policies_without_video_refuse_it():
    with pytest.raises(InputError, match="has no Video Swin; use one of 'official', 'torchvision', 'detection'"):
        plan(get_config("swin3d_t"), policy="hf")
    with pytest.raises(InputError, match="takes clips \\(T, H, W\\) but the input size 224x224"):
        plan(get_config("swin3d_t"), (224, 224))


# ---------------------------------------------------------------------------------------------------------------
# Shifted 3-D window attention against a dense oracle: attention over the whole clip with an explicit same-window
# mask, the peers' bias index computed arithmetically, no roll and no partition.


def _dense_oracle_3d(x, p, blk):
    B, *S, C = x.shape
    nH, d = blk.heads, C // blk.heads
    P, M, s, Mt = blk.padded, blk.window, blk.shift, blk.table_window
    grid = np.zeros((B, *P, C))
    grid[:, :S[0], :S[1], :S[2]] = x
    coords = np.stack(np.meshgrid(*(np.arange(n) for n in P), indexing="ij"), -1).reshape(-1, 3)
    pos = (coords - np.array(s)) % np.array(P)  # where each token sits after the roll (pad first, then roll)
    win = pos // np.array(M)
    local = pos % np.array(M)

    def band(i, n, m, sh):
        return 0 if sh == 0 else (0 if i < n - m else (1 if i < n - sh else 2))

    region = np.array([[band(c[k], P[k], M[k], s[k]) for k in range(3)] for c in pos])
    # The token's row-major number inside its (clamped) window, read as a position of the configured window.
    flat = np.ravel_multi_index(local.T, M)
    as_full = np.stack(np.unravel_index(flat, Mt), -1)
    strides = [(2 * Mt[1] - 1) * (2 * Mt[2] - 1), 2 * Mt[2] - 1, 1]
    T = len(coords)
    table = p["attn"]["relative_position_bias_table"]
    bias = np.full((nH, T, T), -np.inf)
    for a in range(T):
        same_window = np.all(win == win[a], axis=1)
        idx = ((as_full[a] - as_full + np.array(Mt) - 1) * strides).sum(1)
        same_region = np.all(region == region[a], axis=1)
        row = table[idx].T + np.where(same_region, 0.0, geometry.MASK_VALUE)
        bias[:, a, same_window] = row[:, same_window]
    attn = p["attn"]
    tokens = grid.reshape(B, T, C)
    qkv = tokens @ attn["qkv"]["weight"].T + attn["qkv"]["bias"]
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, nH, d).transpose(0, 2, 1, 3) for i in range(3))
    probs = softmax(q * d**-0.5 @ k.transpose(0, 1, 3, 2) + bias, np)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, C) @ attn["proj"]["weight"].T + attn["proj"]["bias"]
    return out.reshape(B, *P, C)[:, :S[0], :S[1], :S[2]]


@settings(max_examples=25, deadline=None)
@given(st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
       st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)), st.booleans(), st.integers(1, 2),
       st.integers(0, 2**32 - 1))
def test_block_plan_attention_equals_the_dense_3d_oracle(grid, window, shifted, nH, seed):
    rng = np.random.default_rng(seed)
    cfg = tiny(img_size=tuple(2 * g for g in grid), patch_size=(2, 2, 2), window_size=window, depths=(2,),
               num_heads=(nH,), embed_dim=2 * nH)
    blk = plan(cfg).stages[0].blocks[1 if shifted else 0]
    C = 2 * nH
    rows = math.prod(2 * m - 1 for m in blk.table_window)
    p = {"attn": {
        "qkv": {"weight": rng.standard_normal((3 * C, C)) * 0.5, "bias": rng.standard_normal(3 * C) * 0.1},
        "proj": {"weight": rng.standard_normal((C, C)) * 0.5, "bias": rng.standard_normal(C) * 0.1},
        "relative_position_bias_table": rng.standard_normal((rows, nH)),
    }}
    x = rng.standard_normal((2, *grid, C))
    be = backend_for(x)
    got, _ = shifted_window_attention(x, p, blk, be)
    np.testing.assert_allclose(got, _dense_oracle_3d(x, p, blk), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# The whole model.


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_fast_path_equals_the_plain_path(dtype, tol):
    model = swinref.random_model(tiny(), seed=3, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 45, 38)).astype(dtype)  # pad on every axis
    points = model.trace(x)
    with plain():
        reference = model.trace(x)
    assert list(points) == list(reference)
    for name in points:
        scale = max(1.0, float(np.abs(reference[name]).max()))
        assert float(np.abs(points[name] - reference[name]).max()) / scale < tol, name


def test_trace_shapes_equal_the_forward_pass():
    cfg = tiny()
    model = swinref.random_model(cfg, seed=1, dtype="float64")
    size = (7, 45, 38)
    points = model.trace(np.zeros((2, 3, *size)))
    steps = {s.name: s.shape for s in trace(cfg, size, batch=2) if s.runtime}
    assert steps and all(tuple(points[name].shape) == shape for name, shape in steps.items())


def test_clip_input_is_checked():
    model = swinref.random_model(tiny(), seed=0)
    with pytest.raises(InputError, match=r"expected images of shape \[B, 3, S0, S1, S2\]"):
        model(np.zeros((3, 8, 48, 40), dtype="float32"))
    with pytest.raises(InputError, match="smaller than one 2x4x4 patch"):
        model(np.zeros((1, 3, 1, 48, 40), dtype="float32"))


# ---------------------------------------------------------------------------------------------------------------
# Analysis.


def test_official_readme_flops_per_view_at_32x224x224():
    # Video-Swin-Transformer README: FLOPs per view, in G, one decimal.
    published = {"swin3d_t": 87.9, "swin3d_s": 165.9, "swin3d_b": 281.6, "swin_base_patch244_window1677_sthv2": 320.6}
    for name, gflops in published.items():
        assert round(count_flops(get_config(name)).macs / 1e9, 1) == gflops, name


def test_params_and_flops_cli_take_frames_and_clip(capsys):
    from swinref.cli import main

    assert main(["flops", "swin3d_t", "--frames", "16", "--convention", "torchvision", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image"] == [16, 224, 224]
    assert main(["trace", "3D-T", "--clip", "18x200x168", "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert steps[0]["shape"] == [1, 3, 18, 200, 168]
    assert next(s for s in steps if s["name"] == "layers.3.blocks.1")["window"] == [8, 7, 6]
    assert main(["trace", "T", "--frames", "8"]) == 2
    assert "image model" in capsys.readouterr().err


def test_complexity_extends_to_3d_windows():
    from swinref.analysis.flops import complexity

    rows = complexity(get_config("swin3d_t"))
    r = rows[0]
    thw, C, N = math.prod(r["resolution"]), r["dim"], 8 * 7 * 7
    assert r["msa"] == 4 * thw * C * C + 2 * thw * thw * C and r["wmsa"] == 4 * thw * C * C + 2 * N * thw * C


# ---------------------------------------------------------------------------------------------------------------
# Against torchvision's SwinTransformer3d (when it is installed).


@pytest.mark.peers
@pytest.mark.parametrize("window, clip", [((2, 3, 3), (8, 48, 40)), ((4, 5, 3), (3, 20, 28)),
                                          pytest.param((8, 7, 7), (18, 120, 104), marks=pytest.mark.slow)])
def test_equals_torchvision_swin3d(window, clip):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    torch.manual_seed(0)
    net = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[2, 2, 2], num_heads=[2, 4, 8],
                            window_size=list(window), num_classes=10, stochastic_depth_prob=0.0).double().eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "relative_position_bias_table" in name or "norm" in name:
                param.add_(torch.randn_like(param) * 0.5)
        x = torch.randn(2, 3, *clip, dtype=torch.float64)
        ref = net(x).numpy()
    cfg = SwinConfig(img_size=clip, patch_size=(2, 4, 4), window_size=window, embed_dim=16, depths=(2, 2, 2),
                     num_heads=(2, 4, 8), num_classes=10)
    from swinref.checkpoints.layouts import torchvision3d

    state = {k: v.detach().numpy() for k, v in net.state_dict().items() if not k.endswith("relative_position_index")}
    params, _ = torchvision3d.to_canonical(state)
    model = swinref.from_params(params, cfg, dtype="float64")
    np.testing.assert_allclose(model(x.numpy()), ref, rtol=0, atol=1e-12)
    with plain():
        np.testing.assert_allclose(model(x.numpy()), ref, rtol=0, atol=1e-12)


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("name, builder, weights", [("swin3d_t", "swin3d_t", "Swin3D_T_Weights"),
                                                    ("swin3d_s", "swin3d_s", "Swin3D_S_Weights"),
                                                    ("swin3d_b", "swin3d_b", "Swin3D_B_Weights")])
def test_params_and_ops_equal_torchvision(name, builder, weights):
    pytest.importorskip("torch")
    video = pytest.importorskip("torchvision.models.video")
    meta = getattr(video, weights).KINETICS400_V1.meta
    net = getattr(video, builder)()
    cfg = get_config(name)
    assert count_params(cfg).total == meta["num_params"] == sum(p.numel() for p in net.parameters())
    # torchvision's `_ops` are the matrix-product GMACs of a 16-frame clip (the size its weights' transforms
    # do not fix; 16 is the size that reproduces all three).
    ops = count_flops(cfg.replace(frames=16), convention="torchvision").macs / 1e9
    assert round(ops, 3) == meta["_ops"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_forward_on_a_strict_non_default_device_equals_numpy(dtype):
    """The CuPy path's stand-in: array_api_strict arrays on a non-default device, no hidden conversion."""
    xps = pytest.importorskip("array_api_strict")
    from swinref.model import forward
    from swinref.params import init_params

    other = xps.Device("device1")
    cfg = tiny()
    params = init_params(cfg, seed=2, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((1, 3, 7, 45, 38)).astype(dtype)
    want = forward(params, x, cfg)
    got = forward({k: xps.asarray(v, device=other) for k, v in params.items()}, xps.asarray(x, device=other), cfg)
    assert got.device == other and got.dtype == getattr(xps, dtype)
    tol = 2e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(np.asarray(got.to_device(xps.Device("CPU_DEVICE"))), want, rtol=0,
                               atol=tol * max(1.0, float(np.abs(want).max())))


def test_golden_export_of_a_clip_passes_compare(tmp_path):
    from swinref.golden import assert_matches, export_case, read_case

    cfg = tiny()
    manifest = export_case(tmp_path / "case", cfg, seed=1, attn_probs=["layers.0.blocks.1"])
    assert manifest["input"]["shape"] == [1, 3, 8, 48, 40] and manifest["input"]["layout"] == "[B, 3, T, H, W]"
    layouts = {p["name"]: p["layout"] for p in manifest["points"]}
    assert layouts["layers.0.blocks.1"] == "[B, T, H, W, C]" and layouts["logits"] == "[B, K]"
    case = read_case(tmp_path / "case")
    model = swinref.random_model(cfg, seed=1, dtype="float64")
    points = model.trace(case.arrays["input"], attn_probs=["layers.0.blocks.1"])
    assert_matches({k: np.asarray(v) for k, v in points.items()}, tmp_path / "case")
    points["layers.1.blocks.0"] = points["layers.1.blocks.0"] + 1e-6
    with pytest.raises(AssertionError, match="layers.1.blocks.0"):
        assert_matches({k: np.asarray(v) for k, v in points.items()}, tmp_path / "case")


@pytest.mark.peers
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torchvision_swin3d_matches_a_golden_clip_case_via_the_example(tmp_path, dtype):
    """The timm-style example for torchvision's swin3d: hooks + the torchvision_swin3d mapping, every point."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("torchvision")
    from swinref.golden import export_case

    export_case(tmp_path / "case", tiny(depths=(2, 2, 2), num_heads=(2, 2, 4)), seed=4, dtype=dtype)
    example = Path(__file__).resolve().parents[1] / "examples" / "golden_torchvision_video.py"
    res = subprocess.run([sys.executable, str(example), str(tmp_path / "case"), "--dtype", dtype],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(swinref.__file__).parents[1])})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verdict: PASS" in res.stdout and " 0 fail" in res.stdout


def test_clips_run_on_the_lanes_with_one_blas_thread_and_equal_the_plain_path(monkeypatch):
    """Video Swin's 392-token windows are large enough for OpenBLAS to thread each product; the fast block runs
    every product on its own lanes with BLAS on one thread instead, and gives the caller's BLAS threads back
    after. Same numbers as the plain path."""
    import contextlib

    from threadpoolctl import threadpool_limits

    from swinref import fast

    inside = []
    original = fast._one_blas_thread

    @contextlib.contextmanager
    def spy(active):
        with original(active):
            inside.append([lib.get_num_threads() for lib in fast._blas_libs()] if active else None)
            yield

    monkeypatch.setattr(fast, "_one_blas_thread", spy)
    monkeypatch.setattr(fast, "LANES", 2)
    cfg = tiny(img_size=(8, 56, 56), window_size=(4, 7, 7), embed_dim=32, num_heads=(1, 2))
    model = swinref.random_model(cfg, seed=5, dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 56, 56))
    with threadpool_limits(2, user_api="blas"):
        got = model(x)
        after = [lib.get_num_threads() for lib in fast._blas_libs()]
    assert inside and all(seen == [1] * len(after) for seen in inside), inside
    assert after == [2] * len(after)
    with plain():
        want = model(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
