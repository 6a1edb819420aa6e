"""analysis: shape trace, FLOP conventions, parameter counts, memory. Pure Python, no peers needed.

Expected values come from outside swinref: the official README figures, torchvision's published `_ops`, the
counters measured by tools/measure_flop_counters.py (tests/data/flop_counters.json), the parameter counts
printed by timm/torchvision, and brute-force enumerations written here.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swinref.analysis import complexity, count_flops, count_params, memory, sweep, trace
from swinref.analysis.flops import CONVENTIONS, parse_sweep
from swinref.config import REGISTRY, get_config
from swinref.plan import plan
from swinref.errors import ConfigError
from strategies import configs_with_size, configs_with_unpadded_size, unpadded_side

DATA = Path(__file__).parent / "data" / "flop_counters.json"
G = 1e9


def official_g(name: str) -> float:
    return count_flops(get_config(name)).macs / G


# ---------------------------------------------------------------------------------------------------------------
# Official figures (microsoft/Swin-Transformer README; GFLOPs there are multiply-adds).


@pytest.mark.parametrize("name, expected, digits", [
    ("swin_tiny_patch4_window7_224", 4.4944, 4),  # the figure printed by the official model's flops()
    ("swin_tiny_patch4_window7_224", 4.5, 1),
    ("swin_small_patch4_window7_224", 8.7, 1),
    ("swin_base_patch4_window7_224", 15.4, 1),
    ("swin_large_patch4_window7_224", 34.5, 1),
    ("swin_base_patch4_window12_384", 47.105, 3),
    ("swin_base_patch4_window12_384", 47.1, 1),
    ("swinv2_tiny_patch4_window8_256", 5.9, 1),
    ("swinv2_small_patch4_window8_256", 11.5, 1),
    ("swinv2_base_patch4_window8_256", 20.3, 1),
    ("swinv2_tiny_patch4_window16_256", 6.6, 1),
    ("swinv2_small_patch4_window16_256", 12.6, 1),
    ("swinv2_base_patch4_window16_256", 21.8, 1),
    ("swinv2_base_patch4_window12to24_192to384_22kto1k_ft", 54.7, 1),
    ("swinv2_large_patch4_window12to16_192to256_22kto1k_ft", 47.5, 1),
    ("swinv2_large_patch4_window12to24_192to384_22kto1k_ft", 115.4, 1),
])
def test_official_readme_figures(name, expected, digits):
    assert round(official_g(name), digits) == expected


def test_official_large_384_is_truncated_in_the_readme():
    # The README prints 103.9 for Swin-L/384; the official flops() gives 103.95..., which rounds to 104.0.
    g = official_g("swin_large_patch4_window12_384")
    assert math.floor(g * 10) / 10 == 103.9 and round(g, 1) == 104.0


def test_official_tiny_exact_integer():
    # 4,494,405,120: the official flops() of Swin-T is a whole number (nW = 56*56/7/7 = 64.0 exactly).
    macs = count_flops(get_config("T")).macs
    assert isinstance(macs, int) and macs == 4494405120


def test_official_final_norm_quirk():
    # C_L * H0 * W0 // 2**num_layers = 768 * 56 * 56 // 16, four times the real 768 * 7 * 7.
    items = {i.name: i for i in count_flops(get_config("T")).items}
    assert items["norm"].macs == 768 * 56 * 56 // 16 == 4 * 768 * 7 * 7


def test_official_on_padded_size_counts_unpadded_tokens():
    # At 230x230 stage 0 has 58x58 tokens. The official nW = 58*58/49 is a fraction, but every attention term
    # carries N (or N*N), so the product is whole: the official formula counts the real tokens, never the padding.
    rep = count_flops(get_config("T", img=230))
    assert rep.notes  # says that the official classifier refuses this size
    qkv = next(i for i in rep.items if i.name == "layers.0.blocks.0.attn.qkv")
    assert qkv.macs == 58 * 58 * 96 * 3 * 96
    padded = next(i for i in count_flops(get_config("T", img=230), convention="corrected").items
                  if i.name == "layers.0.blocks.0.attn.qkv")
    assert padded.macs == 63 * 63 * 96 * 3 * 96


def test_official_fractional_mlp_ratio_gives_float():
    cfg = get_config("T").replace(mlp_ratio=2.7)  # 2*H*W*C*C*2.7 is not whole
    assert isinstance(count_flops(cfg).macs, float)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_flops_is_two_per_mac_for_registered(name):
    rep = count_flops(get_config(name))
    assert rep.flops == 2 * rep.macs
    assert sum(r["macs"] for r in rep.stages()) == pytest.approx(rep.macs, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# torchvision's published figures and the counters measured on timm / torchvision.

TORCHVISION_OPS = {  # torchvision.models.Swin_*_Weights.IMAGENET1K_V1.meta["_ops"] (GFLOPS as published)
    "T": 4.491, "S": 8.741, "B": 15.431,
    "swinv2_tiny_patch4_window8_256": 5.94, "swinv2_small_patch4_window8_256": 11.546,
    "swinv2_base_patch4_window8_256": 20.325,
}


@pytest.mark.parametrize("name, ops", TORCHVISION_OPS.items())
def test_torchvision_published_ops(name, ops):
    assert round(count_flops(get_config(name), convention="torchvision").macs / G, 3) == ops


def _measured():
    data = json.loads(DATA.read_text())
    names = {"swin_tiny_patch4_window7_224": "T", "swin_small_patch4_window7_224": "S",
             "swin_base_patch4_window7_224": "B", "swin_t": "T", "swin_s": "S", "swin_b": "B",
             "swin_v2_t": "swinv2_tiny_patch4_window8_256", "swin_v2_s": "swinv2_small_patch4_window8_256",
             "swin_v2_b": "swinv2_base_patch4_window8_256", "swinv2_tiny_window8_256": "swinv2_tiny_patch4_window8_256",
             "swinv2_small_window8_256": "swinv2_small_patch4_window8_256",
             "swinv2_base_window8_256": "swinv2_base_patch4_window8_256"}
    conv = {"fvcore": "fvcore", "ptflops_aten": "ptflops", "ptflops_pytorch": "ptflops-pytorch",
            "calflops": "calflops", "flop_counter_mode": "torchvision"}
    for key, model in data["models"].items():
        lib, name = key.split("/")
        for counter, value in model["counters"].items():
            c = conv[counter]
            if lib == "torchvision" and c + "-torchvision" in CONVENTIONS:
                c += "-torchvision"
            yield pytest.param(names[name], c, counter, value, id=f"{key}-{counter}")


@pytest.mark.parametrize("name, convention, counter, measured", list(_measured()))
def test_counter_conventions_match_measurements(name, convention, counter, measured):
    rep = count_flops(get_config(name), convention=convention)
    if counter == "calflops":  # reports FLOPs and MACs
        assert (rep.macs, rep.flops) == (measured["total_macs"], measured["total"])
    elif counter == "flop_counter_mode":  # FLOPs, 2 per multiply-add
        assert rep.flops == measured["total"]
    else:  # fvcore and ptflops report MAC-like totals
        assert rep.macs == measured["total"]


def test_corrected_v1_macs_equal_matrix_products_of_torchvision():
    # Without padding, the corrected MACs are exactly the matrix products a torch FlopCounterMode sees.
    for name in ("T", "S", "B"):
        cfg = get_config(name)
        assert count_flops(cfg, convention="corrected").macs == count_flops(cfg, convention="torchvision").macs


def test_corrected_counts_padding_and_real_windows():
    cfg = get_config("T", img=230)  # stage grids 58, 29, 15, 8: every stage pads
    rep = count_flops(cfg, convention="corrected", policy="detection")  # pads the image to the patch (torchvision crops)
    items = {i.name: i for i in rep.items}
    # stage 0: 58x58 padded to 63x63 -> 81 windows of 49 tokens, 3 heads of 32
    assert items["layers.0.blocks.0.attn.qkv"].macs == 63 * 63 * 96 * 288
    assert items["layers.0.blocks.0.attn.qk"].macs == 81 * 3 * 49 * 49 * 32
    # the MLP runs on the real tokens only
    assert items["layers.0.blocks.0.mlp.fc1"].macs == 58 * 58 * 96 * 384
    # the final norm on the real 8x8 tokens of stage 3, 7 FLOPs per element
    assert items["norm"].flops == 7 * 8 * 8 * 768
    assert rep.flops > 2 * rep.macs  # the elementwise FLOPs come on top


def test_unknown_convention_is_refused_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'official'"):
        count_flops(get_config("T"), convention="oficial")


# ---------------------------------------------------------------------------------------------------------------
# Properties over random configurations and sizes.


def official_closed_form(cfg, size) -> Fraction:
    """The official count written as the paper's formulas: W-MSA = 4hwC^2 + 2M^2hwC per block, MLP 2hwC^2r."""
    mp = plan(cfg, size, "official")
    H0, W0 = mp.embed.grid
    total = Fraction(H0 * W0 * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2)
    total += H0 * W0 * cfg.embed_dim if cfg.patch_norm else 0
    r = Fraction(cfg.mlp_ratio)
    for s in mp.stages:
        (h, w), C, N = s.resolution, s.dim, s.window_tokens
        hw = h * w
        block = 2 * hw * C + 4 * hw * C * C + 2 * N * hw * C + 2 * hw * C * C * r  # N = M^2
        # the official attention keeps its per-head split: nH * d == C always holds here
        total += s.depth * block
        if s.merge_pad is not None:
            total += (h // 2) * (w // 2) * 8 * C * C + (hw * C if cfg.version == 1 else hw * C // 2)
    total += cfg.num_features * H0 * W0 // 2**cfg.num_layers + cfg.num_features * cfg.num_classes
    return total


@settings(max_examples=150, deadline=None)
@given(configs_with_size())
def test_official_itemised_sum_equals_closed_form(case):
    cfg, size = case
    rep = count_flops(cfg, size)
    assert Fraction(rep.macs) == pytest.approx(official_closed_form(cfg, size), rel=1e-12)
    if isinstance(rep.macs, int):
        assert rep.macs == official_closed_form(cfg, size)


@settings(max_examples=150, deadline=None)
@given(configs_with_size())
def test_corrected_itemised_sum_equals_closed_form(case):
    cfg, size = case
    mp = plan(cfg, size)  # the default policy, as the corrected convention counts
    H0, W0 = mp.embed.grid
    total = H0 * W0 * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2
    for s in mp.stages:
        C, T, Tp, N = s.dim, s.tokens, s.padded_tokens, s.window_tokens
        hidden = int(C * cfg.mlp_ratio)
        # qkv + proj on padded tokens, two N x N products per window per head, MLP on real tokens
        block = 4 * Tp * C * C + 2 * s.windows * N * N * C + 2 * T * C * hidden
        if cfg.version == 2:
            block += math.prod(2 * w - 1 for w in s.window) * 512 * (2 + s.heads)
        total += s.depth * block
        if s.merge_pad is not None:
            total += math.prod(s.merge.resolution) * 8 * C * C
    total += cfg.num_features * cfg.num_classes
    assert count_flops(cfg, size, convention="corrected").macs == total


@settings(max_examples=100, deadline=None)
@given(configs_with_unpadded_size(), st.integers(1, 3))
def test_wmsa_never_exceeds_msa_and_ratio_grows(case, factor):
    cfg, (H, W) = case
    small = complexity(cfg, (H, W))
    large = complexity(cfg, (H * (factor + 1), W * (factor + 1)))
    assert not plan(cfg, (H, W)).needs_padding
    for a, b in zip(small, large):
        assert a["wmsa"] <= a["msa"] and b["wmsa"] <= b["msa"]
        assert b["ratio"] >= a["ratio"]
    rows = sweep(cfg, [H, H * (factor + 1)])
    assert rows[1]["ratio"] >= rows[0]["ratio"]


@settings(max_examples=100, deadline=None)
@given(configs_with_unpadded_size())
def test_official_attention_equals_paper_wmsa_without_padding(case):
    cfg, size = case
    rep = count_flops(cfg, size)
    attn = sum(Fraction(i.macs) for i in rep.items if i.part == "attention")
    assert attn == sum(r["wmsa_stage"] for r in complexity(cfg, size))


def brute_grid(tokens: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The token grid after a patch merging: each 2x2 neighbourhood (padding an odd grid) is one token."""
    return {(r // 2, c // 2) for r, c in tokens}


@settings(max_examples=80, deadline=None)
@given(configs_with_size(max_pixels=200))
def test_token_and_window_counts_match_brute_force(case):
    cfg, (H, W) = case
    steps = trace(cfg, (H, W), policy="detection")
    blocks = {(s.stage, s.block): s for s in steps if s.runtime and s.block is not None}
    p = cfg.patch_size
    # every pixel belongs to the patch (y // p, x // p); the image is zero-padded to whole patches
    tokens = {(y // p, x // p) for y in range(0, H, 1) for x in range(0, W, 1)}
    for i in range(cfg.num_layers):
        h = 1 + max(r for r, _ in tokens)
        w = 1 + max(c for _, c in tokens)
        M = cfg.window_size  # the detection backbones never shrink the window
        # brute force: the least padding that makes the grid divisible by the window
        pad_b = next(q for q in range(M + 1) if (h + q) % M == 0)
        pad_r = next(q for q in range(M + 1) if (w + q) % M == 0)
        padded = {(r, c) for r in range(h + pad_b) for c in range(w + pad_r)}
        windows: dict[tuple[int, int], int] = {}
        for r, c in padded:
            windows[(r // M, c // M)] = windows.get((r // M, c // M), 0) + 1
        step = blocks[(i, 0)]
        assert step.tokens == len(tokens)
        assert step.window == (M, M) and step.pad == (pad_b, pad_r)
        assert step.windows == len(windows)
        assert set(windows.values()) == {step.window_tokens}
        assert step.shape[1:3] == (h, w)
        tokens = brute_grid(tokens)


@settings(max_examples=60, deadline=None)
@given(configs_with_size(), st.integers(1, 4))
def test_trace_runtime_points(case, batch):
    cfg, size = case
    steps = trace(cfg, size, batch=batch)
    names = [s.name for s in steps if s.runtime]
    expected = ["patch_embed"]
    for i, d in enumerate(cfg.depths):
        expected += [f"layers.{i}.blocks.{j}" for j in range(d)]
        if i < cfg.num_layers - 1:
            expected.append(f"layers.{i}.downsample")
    expected += ["norm", "pooled"] + (["logits"] if cfg.num_classes else [])
    assert names == expected
    shapes = {s.name: s.shape for s in steps}
    assert all(s.shape[0] == batch for s in steps if s.name != "input" and not s.name.endswith(".windows"))
    last = plan(cfg, size).stages[-1]
    assert shapes["norm"] == (batch, *last.resolution, cfg.num_features)
    assert shapes["pooled"] == (batch, cfg.num_features)
    for i in range(cfg.num_layers - 1):
        h, w, C = shapes[f"layers.{i}.blocks.0"][1:]
        assert shapes[f"layers.{i}.downsample"] == (batch, -(-h // 2), -(-w // 2), 2 * C)
        assert shapes[f"layers.{i}.downsample.concat"][-1] == 4 * C


def test_trace_tiny_reference_shapes():
    shapes = {s.name: s.shape for s in trace(get_config("T"), batch=2)}
    assert shapes["input"] == (2, 3, 224, 224)
    assert shapes["patch_partition"] == (2, 56, 56, 48)
    assert shapes["patch_embed"] == (2, 56, 56, 96)
    assert shapes["layers.0.blocks.0.attn.windows"] == (2 * 64, 49, 96)
    assert shapes["layers.0.downsample.concat"] == (2, 28, 28, 384)
    assert shapes["layers.2.blocks.5"] == (2, 14, 14, 384)
    assert shapes["norm"] == (2, 7, 7, 768) and shapes["logits"] == (2, 1000)
    kinds = [s.kind for s in trace(get_config("T")) if s.runtime and s.block is not None]
    # the last stage is 7x7 with M=7: clamped, so no SW-MSA there
    assert kinds == ["W-MSA", "SW-MSA"] * 5 + ["W-MSA", "W-MSA"]


def test_trace_non_square_shows_padding():
    steps = trace(get_config("T", img="800x1333"), policy="detection")
    pe = next(s for s in steps if s.name == "patch_embed.pad")
    assert pe.pad == (0, 3) and pe.shape == (1, 3, 800, 1336)
    b0 = next(s for s in steps if s.name == "layers.0.blocks.0")
    assert b0.shape == (1, 200, 334, 96) and b0.pad == (3, 2)  # 203 x 336 = 29 x 48 windows of 7
    assert b0.windows == 29 * 48


def test_trace_bad_batch():
    with pytest.raises(ConfigError, match="batch"):
        trace(get_config("T"), batch=0)


# ---------------------------------------------------------------------------------------------------------------
# Parameters.


@pytest.mark.parametrize("name, total", [
    ("T", 28_288_354), ("S", 49_606_258), ("B", 87_768_224),  # timm / torchvision num_params
])
def test_param_totals(name, total):
    assert count_params(get_config(name)).total == total


def test_param_components_add_up():
    rep = count_params(get_config("S"))
    assert sum(r["params"] for r in rep.by_component()) == rep.total
    assert sum(r["params"] for r in rep.stages()) == rep.total
    head = next(r for r in rep.by_component() if r["component"] == "head")
    assert head["params"] == 768 * 1000 + 1000


# ---------------------------------------------------------------------------------------------------------------
# Memory.


def test_memory_scores_tensor_size():
    rep = memory(get_config("T"), batch=8, dtype="float16")
    s0 = rep.stages[0]
    assert s0["scores_elements"] == 8 * 64 * 3 * 49 * 49
    assert s0["scores_bytes"] == 2 * s0["scores_elements"]
    assert rep.weights_bytes == 2 * 28_288_354
    assert rep.peak_bytes == rep.weights_bytes + max(s["peak_bytes"] for s in rep.stages)


@settings(max_examples=50, deadline=None)
@given(configs_with_size(), st.integers(1, 3))
def test_memory_linear_in_batch(case, batch):
    cfg, size = case
    one = memory(cfg, size, batch=1)
    many = memory(cfg, size, batch=batch)
    for a, b in zip(one.stages, many.stages):
        assert b["scores_bytes"] == batch * a["scores_bytes"]
        assert b["peak_bytes"] <= batch * a["peak_bytes"]  # the shift mask is shared by the batch


def test_memory_bad_dtype():
    with pytest.raises(ConfigError, match="float32"):
        memory(get_config("T"), dtype="int3")


def test_parse_sweep():
    assert parse_sweep("224:1024:32")[:2] == [224, 256] and parse_sweep("224:1024:32")[-1] == 1024
    for bad in ("224", "a:b", "300:200", "224:1024:0"):
        with pytest.raises(ConfigError, match="START:STOP"):
            parse_sweep(bad)


def test_unpadded_side_helper_needs_no_padding():
    cfg = get_config("T")
    assert unpadded_side(cfg, 1) == 224 and not plan(cfg, (448, 224)).needs_padding


# ---------------------------------------------------------------------------------------------------------------
# Backbone mode (issue 13): per-stage output norms, no final norm, pooling or head; the 'detection' policy.


def _out_norm_elements(mp) -> int:
    return sum(s.tokens * s.dim for s in mp.stages)


@settings(max_examples=60, deadline=None)
@given(configs_with_size())
def test_backbone_flops_by_closed_form(case):
    cfg, size = case
    mp = plan(cfg, size, "detection")
    if mp.refusal is not None:
        return
    last, CL, K = mp.stages[-1], cfg.num_features, cfg.num_classes
    for convention in ("corrected", "official"):
        head = count_flops(cfg, size, convention=convention, policy="detection")
        bb = count_flops(cfg, size, convention=convention, policy="detection", backbone=True)
        assert bb.backbone and not head.backbone
        if convention == "corrected":
            # no final norm (7/element), pooling (1/element), head (2 per MAC) and its bias; 7/element per stage norm
            tail = 7 * last.tokens * CL + last.tokens * CL + 2 * CL * K + (K if K else 0)
            assert bb.flops == head.flops - tail + 7 * _out_norm_elements(mp)
            assert bb.macs == head.macs - CL * K
        else:
            # the official LayerNorm convention: 1 MAC per element; its final-norm formula and the head go
            final = CL * mp.embed.grid[0] * mp.embed.grid[1] // 2 ** cfg.num_layers
            assert Fraction(bb.macs) == Fraction(head.macs) - final - CL * K + _out_norm_elements(mp)
        rows = {r["stage"]: r for r in bb.stages()}
        assert "tail" not in rows
        per = 7 if convention == "corrected" else 2
        for s in mp.stages:
            assert rows[s.index]["parts"]["out_norm"]["flops"] == per * s.tokens * s.dim


def test_backbone_flops_swin_t_detection_size():
    cfg = get_config("T")
    rep = count_flops(cfg, "800x1333", convention="corrected", backbone=True)
    assert rep.policy == "detection" and rep.image == (800, 1333)
    assert [b["name"] for b in rep.blocks()][-4:] == ["norm0", "norm1", "norm2", "norm3"]
    grids = [(200, 334), (100, 167), (50, 84), (25, 42)]
    assert [s.resolution for s in plan(cfg, (800, 1333), "detection").stages] == grids
    norms = sum(h * w * 96 * 2**i for i, (h, w) in enumerate(grids))
    assert sum(i.flops for i in rep.items if i.part == "out_norm") == 7 * norms
    assert rep.params == 27_520_698 and rep.to_dict()["backbone"] is True


def test_backbone_params():
    for name in ("T", "S", "B"):
        cfg = get_config(name)
        full, bb = count_params(cfg), count_params(cfg, backbone=True)
        dims = sum(cfg.stage_dim(i) for i in range(cfg.num_layers))
        assert bb.total == full.total - cfg.num_features * (cfg.num_classes + 1) - cfg.num_classes \
            - cfg.num_features + 2 * dims
        assert {r["component"] for r in bb.by_component()} >= {"out_norm"}
        assert not any(r["component"] in ("head", "norm") for r in bb.by_component())
    assert count_params(get_config("T"), backbone=True).total == 27_520_698  # mmdet's Swin-T backbone
    ape = get_config("T", ape=True)
    assert count_params(ape).total == count_params(get_config("T")).total + 96 * 56 * 56


@settings(max_examples=40, deadline=None)
@given(configs_with_size(), st.integers(1, 3))
def test_backbone_trace_runtime_points(case, batch):
    cfg, size = case
    steps = trace(cfg, size, batch=batch, backbone=True)
    names = [s.name for s in steps if s.runtime]
    expected = ["patch_embed"]
    for i, d in enumerate(cfg.depths):
        expected += [f"layers.{i}.blocks.{j}" for j in range(d)] + [f"outs.{i}"]
        if i < cfg.num_layers - 1:
            expected.append(f"layers.{i}.downsample")
    assert names == expected
    mp = plan(cfg, size, "detection")
    shapes = {s.name: s.shape for s in steps}
    for s in mp.stages:
        assert shapes[f"outs.{s.index}"] == (batch, s.dim, *s.resolution)
        assert shapes[f"norm{s.index}"] == (batch, *s.resolution, s.dim)


def test_backbone_mode_defaults_to_the_detection_policy():
    cfg = get_config("T")
    # At 224, the last stage's 7x7 map equals the window: torchvision (the default) does not shift there, the
    # detection backbones do.
    default = [s for s in trace(cfg) if s.name == "layers.3.blocks.1"][0]
    bb = [s for s in trace(cfg, backbone=True) if s.name == "layers.3.blocks.1"][0]
    assert default.shift == (0, 0) and bb.shift == (3, 3)
    assert [s for s in trace(cfg, backbone=True, policy="torchvision") if s.name == "layers.3.blocks.1"][0].shift \
        == (0, 0)
    assert memory(cfg, backbone=True).to_dict()["backbone"] is True


def test_backbone_memory_holds_the_earlier_outputs():
    cfg = get_config("T")
    for batch in (1, 2):
        head = memory(cfg, "800x1333", batch=batch, policy="detection")
        bb = memory(cfg, "800x1333", batch=batch, backbone=True)
        held = 0
        for s, a, b in zip(plan(cfg, (800, 1333), "detection").stages, head.stages, bb.stages):
            assert b["held_outputs_bytes"] == held
            assert b["peak_bytes"] == a["peak_bytes"] + held
            held += batch * s.tokens * s.dim * 4
        assert bb.weights_bytes == 4 * 27_520_698


def test_ape_in_the_trace_and_the_corrected_count():
    cfg = get_config("T", ape=True)
    step = [s for s in trace(cfg, "800x1333", backbone=True) if s.name == "patch_embed"][0]
    assert "absolute position embedding (resized bicubically from 56x56)" in step.op
    assert "as stored" in [s for s in trace(cfg) if s.name == "patch_embed"][0].op
    plain = count_flops(get_config("T"), "800x1333", convention="corrected", backbone=True)
    ape = count_flops(cfg, "800x1333", convention="corrected", backbone=True)
    assert ape.flops - plain.flops == 200 * 334 * 96 and ape.macs == plain.macs
