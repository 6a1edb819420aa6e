"""Issue 13's backbone mode: the feature pyramid with out_indices and the per-stage output norms, the absolute
position embedding (ape), the default policy of a loaded backbone checkpoint, analysis and golden cases in
backbone mode. Torch is used only where a test says so (skipped cleanly without it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import swinref
from swinref.config import SwinConfig, get_config
from swinref.errors import ConfigError, InputError
from swinref.layout import param_shapes
from swinref.params import init_params
from swinref.plan import plan
from swinref.transfer import bicubic_resize

POLICY = "detection"  # the policy of the peers these tests reproduce (official detection backbone, mmdet, mmseg)


def tiny(**overrides) -> SwinConfig:
    fields = dict(embed_dim=16, depths="1,1,2,1", heads="1,2,4,8", classes=0)
    fields.update(overrides)
    return get_config("T", **fields)


def images(shape=(2, 3, 100, 130), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


# ---------------------------------------------------------------------------------------------------------------
# features: out_indices and the per-stage output norms.


def test_features_apply_each_stage_norm_like_by_hand():
    cfg = tiny()
    p = init_params(cfg, seed=3, dtype="float64", stage_norms=True)
    raw = {k: v for k, v in p.items() if not (k.startswith("norm") and k[4].isdigit())}
    x = images()
    plain = swinref.features(raw, x, cfg, policy=POLICY, layout="NHWC")  # no norm{i}: raw stage outputs
    normed = swinref.features(p, x, cfg, policy=POLICY, layout="NHWC")
    assert len(plain) == len(normed) == cfg.num_layers
    for i, (a, b) in enumerate(zip(plain, normed)):
        np.testing.assert_allclose(b, layer_norm(a, p[f"norm{i}.weight"], p[f"norm{i}.bias"]), rtol=0, atol=1e-12)
    nchw = swinref.features(p, x, cfg, policy=POLICY)
    for a, b in zip(nchw, normed):
        assert a.shape == (b.shape[0], b.shape[3], b.shape[1], b.shape[2])
        np.testing.assert_array_equal(a, np.transpose(b, (0, 3, 1, 2)))


def test_out_indices_select_and_sort_stages():
    cfg = tiny()
    p = init_params(cfg, seed=1, dtype="float64", stage_norms=True)
    x = images(seed=2)
    every = swinref.features(p, x, cfg, policy=POLICY)
    some = swinref.features(p, x, cfg, policy=POLICY, out_indices=[3, 1])
    assert [o.shape for o in some] == [every[1].shape, every[3].shape]
    np.testing.assert_array_equal(some[0], every[1])
    np.testing.assert_array_equal(some[1], every[3])
    first = swinref.features(p, x, cfg, policy=POLICY, out_indices=(0,))
    np.testing.assert_array_equal(first[0], every[0])


@pytest.mark.parametrize("bad", [[4], [-1], [], ["x"]])
def test_bad_out_indices_name_the_valid_range(bad):
    cfg = tiny()
    p = init_params(cfg, seed=1, dtype="float64")
    with pytest.raises(InputError, match=r"0\.\.3"):
        swinref.features(p, images((1, 3, 64, 64)), cfg, out_indices=bad)


def test_model_features_and_trace_in_backbone_mode():
    cfg = tiny()
    model = swinref.from_params(init_params(cfg, seed=2, dtype="float64", stage_norms=True), cfg, dtype="float64",
                                policy=POLICY)
    assert model.is_backbone
    x = images((1, 3, 96, 160))
    outs = model.features(x, out_indices=(1, 2))
    points = model.trace(x, out_indices=(1, 2))
    assert list(points) == swinref.model.point_names(cfg, out_indices=(1, 2))
    assert list(points)[-1] == "outs.2" and "norm" not in points and "layers.3.blocks.0" not in points
    np.testing.assert_array_equal(points["outs.1"], outs[0])
    np.testing.assert_array_equal(points["outs.2"], outs[1])
    full = model.trace(x, backbone=True)
    assert [k for k in full if k.startswith("outs.")] == ["outs.0", "outs.1", "outs.2", "outs.3"]


# ---------------------------------------------------------------------------------------------------------------
# The absolute position embedding.


def test_ape_config_layout_and_plan():
    cfg = tiny(ape=True, img="224x320")
    assert cfg.ape and SwinConfig.from_dict(cfg.to_dict()) == cfg
    assert SwinConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "ape"}).ape is False
    assert get_config("T", ape="true").ape and not get_config("T", ape=False).ape
    with pytest.raises(ConfigError, match="ape"):
        SwinConfig(ape="yes")
    assert param_shapes(cfg)["absolute_pos_embed"] == (1, 16, 56, 80)
    assert "absolute_pos_embed" not in param_shapes(tiny())
    e = plan(cfg, (100, 130), POLICY).embed
    assert (e.pos_embed, e.pos_embed_grid, e.grid) == ("absolute_pos_embed", (56, 80), (25, 33))
    assert plan(tiny(), (100, 130), POLICY).embed.pos_embed is None
    p = init_params(cfg, seed=0, dtype="float64")
    assert np.abs(p["absolute_pos_embed"]).max() <= 0.02


def test_bicubic_resize_is_the_identity_at_the_stored_grid():
    grid = np.random.default_rng(0).standard_normal((1, 5, 7, 9))
    np.testing.assert_array_equal(bicubic_resize(grid, (7, 9)), grid)


def test_ape_is_added_after_the_patch_norm_resized_to_the_token_grid():
    cfg = tiny(ape=True)
    p = init_params(cfg, seed=4, dtype="float64")
    without = {k: v for k, v in p.items() if k != "absolute_pos_embed"}
    x = images((1, 3, 100, 130))
    got = swinref.forward_trace(p, x, cfg, policy=POLICY, backbone=True)["patch_embed"]
    base = swinref.forward_trace(without, x, swinref.get_config(cfg, ape=False), policy=POLICY,
                                 backbone=True)["patch_embed"]
    pos = bicubic_resize(p["absolute_pos_embed"], (25, 33))  # [1, C, 25, 33]
    np.testing.assert_allclose(got, base + np.transpose(pos, (0, 2, 3, 1)), rtol=0, atol=1e-12)
    # At the pretraining size the embedding is added as stored.
    at_build = swinref.forward_trace(p, images((1, 3, 224, 224)), cfg, policy=POLICY, backbone=True)
    base = swinref.forward_trace(without, images((1, 3, 224, 224)), swinref.get_config(cfg, ape=False),
                                 policy=POLICY, backbone=True)
    np.testing.assert_allclose(at_build["patch_embed"],
                               base["patch_embed"] + np.transpose(p["absolute_pos_embed"], (0, 2, 3, 1)), atol=1e-12)


def test_ape_resize_equals_torch_interpolate_bicubic():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    cfg = tiny(ape=True)
    p = init_params(cfg, seed=5, dtype="float64")
    table = p["absolute_pos_embed"]
    for size in [(25, 33), (200, 334), (56, 56), (7, 90)]:
        want = F.interpolate(torch.from_numpy(table), size=size, mode="bicubic", align_corners=False).numpy()
        np.testing.assert_allclose(bicubic_resize(table, size), want, rtol=0, atol=1e-12)
    # The model adds exactly that (float32 model: computed in float64 on the host, cast once).
    model = swinref.from_params(p, cfg, dtype="float32", policy=POLICY)
    x = images((1, 3, 100, 130)).astype(np.float32)
    no_ape = swinref.from_params({k: v for k, v in p.items() if k != "absolute_pos_embed"},
                                 swinref.get_config(cfg, ape=False), dtype="float32", policy=POLICY)
    want = F.interpolate(torch.from_numpy(table), size=(25, 33), mode="bicubic", align_corners=False)
    want = want.permute(0, 2, 3, 1).numpy().astype(np.float32)
    # (torch's float64 result and swinref's may round to neighbouring float32 values)
    np.testing.assert_allclose(model.trace(x)["patch_embed"], no_ape.trace(x)["patch_embed"] + want, rtol=0,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The default policy of a loaded backbone checkpoint.


def _write_mm(tmp_path, cfg, *, stage_norms=True, name="mm.safetensors"):
    st = pytest.importorskip("safetensors.numpy")
    from swinref.checkpoints.layouts import openmmlab

    params = init_params(cfg, seed=0, dtype="float32", stage_norms=stage_norms)
    path = tmp_path / name
    st.save_file({k: np.ascontiguousarray(v) for k, v in openmmlab.from_canonical(params, cfg).items()}, str(path))
    return path


def test_a_loaded_backbone_checkpoint_defaults_to_the_detection_policy(tmp_path):
    cfg = tiny()
    path = _write_mm(tmp_path, cfg)
    model = swinref.load(path)
    assert model.report.layout == "openmmlab"
    assert model.policy == "detection" and model.is_backbone
    assert "norm0.weight" in model.params
    assert swinref.load(path, policy="timm").policy == "timm"  # the caller's choice wins
    outs = model.features(images((1, 3, 100, 130)).astype(np.float32))
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128]


def test_a_classifier_checkpoint_keeps_the_global_default(tmp_path):
    from swinref.plan import DEFAULT_POLICY

    cfg = get_config("T", embed_dim=16, depths="1,1,2,1", heads="1,2,4,8", classes=10)
    path = tmp_path / "clf.safetensors"
    from swinref.checkpoints import save_params

    save_params(init_params(cfg, seed=0), cfg, path)
    model = swinref.load(path)
    assert model.policy == DEFAULT_POLICY and not model.is_backbone


# ---------------------------------------------------------------------------------------------------------------
# Analysis and golden cases in backbone mode agree with the forward pass (the closed forms are in
# tests/test_analysis.py, the mmdet / SwinBackbone mappings in tests/test_golden.py).


@pytest.mark.parametrize("size", [(100, 130), (224, 224), (64, 200)])
def test_backbone_trace_shapes_equal_the_forward_pass(size):
    from swinref.analysis import trace

    cfg = tiny(ape=True)
    p = init_params(cfg, seed=0, dtype="float64", stage_norms=True)
    points = swinref.forward_trace(p, images((2, 3, *size)), cfg, policy=POLICY, backbone=True)
    analytic = {s.name: s.shape for s in trace(cfg, size, batch=2, backbone=True) if s.runtime}
    runtime = {k: tuple(v.shape) for k, v in points.items() if not k.endswith(".attn")}
    assert analytic == runtime


def test_golden_backbone_round_trip(tmp_path):
    from swinref.golden import compare_case, export_case, read_case

    cfg = tiny(window=4, img="100x130")
    man = export_case(tmp_path / "case", cfg, seed=5, backbone=True)
    case = read_case(tmp_path / "case")
    assert man["backbone"] and case.out_indices == (0, 1, 2, 3) and case.policy == POLICY
    p = init_params(cfg, seed=5, dtype="float64", stage_norms=True)
    outs = swinref.features(p, case.arrays["input"], cfg, policy=POLICY)
    candidate = {f"outs.{i}": o for i, o in enumerate(outs)}
    report = compare_case(case, candidate)
    assert report["verdict"] == "pass" and report["counts"]["pass"] == 4
    candidate["outs.2"] = candidate["outs.2"] * (1 + 1e-6)
    assert compare_case(case, candidate)["verdict"] == "fail"


def test_ape_and_stage_norms_on_another_array_library_and_device():
    xps = pytest.importorskip("array_api_strict")
    other, cpu = xps.Device("device1"), xps.Device("CPU_DEVICE")
    cfg = tiny(ape=True)
    p = init_params(cfg, seed=1, dtype="float64", stage_norms=True)
    x = images((1, 3, 100, 130))
    want = swinref.features(p, x, cfg, policy=POLICY, out_indices=(0, 3))
    strict = {k: xps.asarray(v, device=other) for k, v in p.items()}
    got = swinref.features(strict, xps.asarray(x, device=other), cfg, policy=POLICY, out_indices=(0, 3))
    assert all(g.device == other for g in got)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g.to_device(cpu)), w, rtol=0, atol=1e-12)
