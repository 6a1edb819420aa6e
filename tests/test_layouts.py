"""The layout modules (swinref.checkpoints.layouts): every layout's from_canonical and to_canonical are inverses,
and with the peers installed, from_canonical's dict is the peer model's own state dict (strict load, derived
buffers aside), the peer's state_dict() reads back to the same params, and OpenMMLab's merge order is proven
against the real modules.

The default run (no torch) checks the round trips and detection; tests marked `peers` need torch and the peer
library (timm, transformers, torchvision; mmpretrain / mmdet / mmseg through tools/openmmlab.py) and skip without.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import swinref
from swinref.checkpoints import layouts
from swinref.checkpoints.layouts import base, openmmlab
from swinref.errors import CheckpointError
from swinref.params import init_params

TOOLS = Path(__file__).resolve().parents[1] / "tools"

# A small model every peer builds alike at 224: stage grids 56, 28, 14, 7 need no padding; the last stage equals
# the window, so it is not shifted (official clamp, mmpretrain's pad_small_map=False, torchvision's covered axis).
SMALL = dict(embed_dim=24, depths="2,2,2,2", heads="3,6,12,24", window=7, img=224, classes=10)
CONFIGS = {1: swinref.get_config("T", **SMALL), 2: swinref.get_config("V2-T", **SMALL)}
# mmdet and mmseg shift every odd block, also a stage no larger than the window: at 448 (grids 112..14) no stage
# is, and they agree with the official rule.
BIG = {**SMALL, "img": 448}

WITH_V2 = ["official", "timm", "transformers", "torchvision", "openmmlab", "swinref"]
CASES = [(name, v) for name in WITH_V2 for v in (1, 2)]


def canonical(version: int, name: str, cfg=None, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic canonical params for a layout: OpenMMLab backbones have no head and one norm per stage (the
    last one is `norm`, see base.alias_final_norm)."""
    cfg = cfg or CONFIGS[version]
    if name != "openmmlab":
        return init_params(cfg, seed=seed)
    params = init_params(cfg.replace(num_classes=0), seed=seed)
    rng = np.random.default_rng(seed)
    for i, dim in enumerate(cfg.embed_dim * 2**k for k in range(len(cfg.depths))):
        for leaf, base_value in (("weight", 1.0), ("bias", 0.0)):
            params[f"norm{i}.{leaf}"] = (base_value + 0.2 * rng.standard_normal(dim)).astype(np.float32)
    last = len(cfg.depths) - 1
    params["norm.weight"], params["norm.bias"] = params[f"norm{last}.weight"], params[f"norm{last}.bias"]
    return params


def assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want) or set(got) == set(want), sorted(set(got) ^ set(want))[:8]
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ---------------------------------------------------------------------------------------------------------------
# Without torch.


@pytest.mark.parametrize("name,version", CASES, ids=[f"{n}-v{v}" for n, v in CASES])
def test_round_trip(name, version):
    layout = layouts.get(name)
    params = canonical(version, name)
    sd = layout.from_canonical(params, CONFIGS[version])
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    back, notes = layout.to_canonical(sd, "round trip")
    assert_same(back, params)
    assert notes.dropped == [] and notes.buffers == {}


@pytest.mark.parametrize("name,version", CASES, ids=[f"{n}-v{v}" for n, v in CASES])
def test_detection_names_the_layout(name, version):
    sd = layouts.get(name).from_canonical(canonical(version, name), CONFIGS[version])
    want = "official" if name == "swinref" else name  # swinref files are told by their stored config
    assert layouts.detect(sd.keys()).NAME == want
    if name == "openmmlab":  # a whole detector's checkpoint: the backbone under 'backbone.' beside neck and heads
        whole = {"backbone." + k: v for k, v in sd.items()}
        whole["neck.fpn.weight"] = whole["rpn_head.conv.weight"] = np.zeros(1, np.float32)
        assert layouts.detect(whole.keys()).NAME == "openmmlab"
        params, notes = openmmlab.to_canonical(whole)
        assert_same(params, canonical(version, name))
        assert notes.prefix == "backbone." and notes.ignored == ["neck.", "rpn_head."]


def test_transformers_reads_both_generations_of_names():
    # transformers 5 keeps q/k/v/o_proj and mlp.fc1/fc2 in memory for Swin V1; Hub files and older releases use
    # attention.self.query/..., attention.output.dense, intermediate.dense, output.dense.
    cfg = CONFIGS[1]
    params = canonical(1, "transformers")
    current = layouts.transformers.from_canonical(params, cfg)
    assert any(".attention.q_proj." in k for k in current) and any(".mlp.fc1." in k for k in current)
    legacy = {}
    for name, value in current.items():
        for new, old in layouts.transformers.LEGACY_RENAMES:
            name = name.replace(new, old)
        legacy[name] = value
    assert any(".attention.self.query." in k for k in legacy) and any(".intermediate.dense." in k for k in legacy)
    back, notes = layouts.transformers.to_canonical(legacy)
    assert_same(back, params)
    assert notes.prefix == "swin."
    with pytest.raises(CheckpointError, match="mixes layouts"):  # both generations of one tensor in one file
        layouts.transformers.to_canonical({**current, **legacy})


def test_official_detection_backbone():
    # Swin-Transformer-Object-Detection: official names under 'backbone.', norm0..norm3, no final norm or head.
    params = canonical(1, "openmmlab")
    sd = {"backbone." + k: v for k, v in params.items() if not k.startswith("norm.")}
    sd["roi_head.bbox_head.fc_cls.weight"] = np.zeros((3, 4), np.float32)
    assert layouts.detect(sd.keys()).NAME == "official"
    back, notes = layouts.official.to_canonical(sd)
    assert_same(back, params)
    assert notes.prefix == "backbone." and notes.ignored == ["roi_head."] and "norm is norm3" in notes.messages[0]


def test_unknown_layout_names_what_it_saw():
    with pytest.raises(CheckpointError) as err:
        layouts.detect({"encoder.blocks.0.weight", "encoder.blocks.0.bias"}, "x.pth")
    msg = str(err.value)
    assert "cannot tell which Swin checkpoint layout x.pth uses" in msg and "encoder.blocks.0.bias" in msg
    assert "openmmlab (patch_embed.projection.weight)" in msg and "torchvision (features.0.0.weight)" in msg


def test_rules_map_slots_both_ways():
    rules = base.Rules([base.Rule("layers.{s}.downsample.", "features.{s*2+2}."),
                        base.Rule("layers.{s}.blocks.{b}.", "features.{s*2+1}.{b}.")])
    assert rules.to_peer("layers.2.downsample.norm.weight") == "features.6.norm.weight"
    assert rules.to_canonical("features.6.norm.weight") == "layers.2.downsample.norm.weight"
    assert rules.to_canonical("features.5.1.norm1.bias") == "layers.2.blocks.1.norm1.bias"
    assert rules.to_canonical("features.0.0.weight") == "features.0.0.weight"  # no rule: kept for the shape check


def test_unfold_columns_is_the_swin_converter_permutation():
    # mmdet's swin_converter: reshape(out, 4, C)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out, 4C), official ->
    # mmdet; its column c*4 + q takes official column [0, 2, 1, 3][q]*C + c.
    C = 3
    cols = openmmlab.unfold_columns(C)
    official = np.arange(4 * C)[None]
    converted = official.reshape(1, 4, C)[:, [0, 2, 1, 3], :].transpose(0, 2, 1).reshape(1, 4 * C)
    np.testing.assert_array_equal(official[:, cols], converted)


def test_openmmlab_refuses_what_it_cannot_hold():
    params = init_params(CONFIGS[1], seed=0)
    with pytest.raises(CheckpointError, match="no classifier head.*num_classes=0"):
        openmmlab.from_canonical(params, CONFIGS[1])
    backbone = canonical(1, "openmmlab")
    backbone["norm.weight"] = backbone["norm.weight"] + 1
    with pytest.raises(CheckpointError, match="one LayerNorm after the last stage.*norm3"):
        openmmlab.from_canonical(backbone, CONFIGS[1])


def test_openmmlab_classifier_norm_becomes_the_last_output_norm():
    # A classifier's params without per-stage norms: its final norm is written as norm3 (mmpretrain's classifiers
    # use norm3 so), and reads back as both.
    params = init_params(CONFIGS[1].replace(num_classes=0), seed=0)
    sd = openmmlab.from_canonical(params, CONFIGS[1])
    assert "norm3.weight" in sd and not any(k.startswith(("norm.", "norm0.")) for k in sd)
    back, notes = openmmlab.to_canonical(sd)
    np.testing.assert_array_equal(back["norm.weight"], params["norm.weight"])
    assert set(back) - set(params) == {"norm3.weight", "norm3.bias"} and "norm is norm3" in notes.messages[0]


def test_derived_buffers_are_set_aside_under_canonical_names():
    sd = layouts.torchvision.from_canonical(init_params(CONFIGS[2], seed=0), CONFIGS[2])
    sd["features.3.0.attn.relative_position_index"] = np.arange(49 * 49)
    params, notes = layouts.torchvision.to_canonical(sd)
    assert notes.dropped == ["features.3.0.attn.relative_position_index"]
    assert list(notes.buffers) == ["layers.1.blocks.0.attn.relative_position_index"]
    assert not any(base.is_derived(k) for k in params)


# ---------------------------------------------------------------------------------------------------------------
# Against the peers.


def _torch():
    return pytest.importorskip("torch", reason="the peer checks need torch")


def _tool(name: str):
    """A module of tools/ (openmmlab.py, peers.py): harness code, never part of swinref."""
    import importlib

    sys.path.insert(0, str(TOOLS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(TOOLS))


def _mm():
    _torch()
    mm = _tool("openmmlab").import_openmmlab()
    if mm is None:
        pytest.skip("mmpretrain / mmdet / mmseg (with mmcv-lite and mmengine) are not installed")
    return mm


@pytest.fixture(scope="module")
def mm():
    return _mm()


def _build_peer(peer: str, cfg, mm=None):
    torch = _torch()
    torch.manual_seed(0)
    if peer in ("pretrain", "det", "seg"):
        return _tool("openmmlab").build(mm, peer, cfg)
    pytest.importorskip(peer, reason=f"{peer} is not installed")
    return _tool("peers").build(peer, cfg)


def _load_and_read_back(model, sd: dict, layout) -> dict:
    """Load sd into the peer (strict but for derived buffers) and translate its state_dict() back."""
    torch = _torch()
    result = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=False)
    assert result.unexpected_keys == [], result.unexpected_keys
    assert all(base.is_derived(k) for k in result.missing_keys), result.missing_keys
    back, _ = layout.to_canonical({k: v.detach().numpy() for k, v in model.state_dict().items()})
    return back


PEERS = [("timm", "timm", v) for v in (1, 2)] + [("transformers", "transformers", v) for v in (1, 2)] + \
        [("torchvision", "torchvision", v) for v in (1, 2)]
MM = [("pretrain", 1), ("pretrain", 2), ("det", 1), ("seg", 1)]


@pytest.mark.peers
@pytest.mark.parametrize("peer,name,version", PEERS, ids=[f"{p}-v{v}" for p, _, v in PEERS])
def test_from_canonical_is_the_peers_state_dict(peer, name, version):
    cfg = CONFIGS[version]
    params = canonical(version, name, seed=3)
    layout = layouts.get(name)
    model = _build_peer(peer, cfg)
    assert_same(_load_and_read_back(model, layout.from_canonical(params, cfg), layout), params)


@pytest.mark.peers
@pytest.mark.parametrize("kind,version", MM, ids=[f"{k}-v{v}" for k, v in MM])
def test_from_canonical_is_the_openmmlab_state_dict(mm, kind, version):
    cfg = CONFIGS[version]
    params = canonical(version, "openmmlab", seed=4)
    model = _build_peer(kind, cfg, mm)
    assert_same(_load_and_read_back(model, openmmlab.from_canonical(params, cfg), openmmlab), params)


def _merge_official(x: np.ndarray, p: dict, prefix: str, version: int) -> np.ndarray:
    """The official patch merging: neighbours (0,0), (1,0), (0,1), (1,1) in (row, col), then norm/reduce (V1) or
    reduce/norm (V2)."""
    cat = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    w, b, r = p[prefix + "norm.weight"], p[prefix + "norm.bias"], p[prefix + "reduction.weight"]

    def ln(t):
        mu = t.mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(((t - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b

    return ln(cat @ r.T) if version == 2 else ln(cat) @ r.T


@pytest.mark.peers
@pytest.mark.parametrize("kind,version", MM, ids=[f"{k}-v{v}" for k, v in MM])
def test_openmmlab_merge_permutation_against_the_module(mm, kind, version):
    """The real merge module (nn.Unfold order) with random weights equals the official-order merge with the
    weights to_canonical gives: the permutation of the reduction columns (and the V1 merge norm) is right."""
    torch = _torch()
    cfg = CONFIGS[version]
    model = _build_peer(kind, cfg, mm)
    merge = model.stages[1 if version == 2 else 0].downsample  # V2 merges at the start of the next stage
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in merge.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    C, H, W = cfg.embed_dim, 6, 8
    x = torch.randn(2, H, W, C, generator=g)
    with torch.no_grad():
        got, size = merge(x.reshape(2, H * W, C), (H, W))
    assert tuple(size) == (H // 2, W // 2)
    sd = {"stages.0.blocks.0.norm1.weight": np.zeros(C, np.float32)}  # a stage, so the merge is placed
    sd.update({f"stages.{1 if version == 2 else 0}.downsample.{k}": v.numpy() for k, v in merge.state_dict().items()})
    if version == 2:
        sd["stages.0.blocks.0.attn.w_msa.logit_scale"] = np.zeros((1, 1, 1), np.float32)
    params, _ = openmmlab.to_canonical(sd)
    want = _merge_official(x.numpy().astype(np.float64), params, "layers.0.downsample.", version)
    np.testing.assert_allclose(got.numpy().reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    # And the permutation is not the identity: the unpermuted weights give another merge.
    raw = {k.replace(f"stages.{1 if version == 2 else 0}.", "layers.0."): v for k, v in sd.items()}
    wrong = _merge_official(x.numpy().astype(np.float64), raw, "layers.0.downsample.", version)
    assert np.abs(wrong - want).max() > 1e-2


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b


@pytest.mark.peers
@pytest.mark.parametrize("kind,version", MM, ids=[f"{k}-v{v}" for k, v in MM])
def test_openmmlab_forward_equals_swinref_features(mm, kind, version):
    """The OpenMMLab backbone with from_canonical's weights outputs norm_i(stage i) of swinref's own features."""
    torch = _torch()
    cfg = CONFIGS[version] if kind == "pretrain" else swinref.get_config("T", **BIG)
    params = canonical(version, "openmmlab", cfg=cfg, seed=6)
    model = _build_peer(kind, cfg, mm).double()
    sd = openmmlab.from_canonical(params, cfg)
    model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in sd.items()}, strict=False)
    _tool("peers").exact_v2_coords(model)  # V2: the peer's float32-made coordinate table, recomputed in float64
    x = np.random.default_rng(7).standard_normal((1, 3, *cfg.img_size))
    with torch.no_grad():
        outs = [o.numpy() for o in model(torch.from_numpy(x))]
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    feats = swinref.features({k: v for k, v in p64.items() if not k.startswith("norm")}, x, cfg, layout="NHWC")
    assert len(outs) == len(feats) == len(cfg.depths)
    for i, (out, f) in enumerate(zip(outs, feats)):
        want = _layer_norm(np.asarray(f), p64[f"norm{i}.weight"], p64[f"norm{i}.bias"]).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-9, err_msg=f"{kind} stage {i}")


@pytest.mark.peers
def test_openmmlab_training_checkpoint_loads_through_swinref(mm, tmp_path):
    """An mmengine-style detector checkpoint ({'meta', 'state_dict': backbone + neck}) written by torch.save, read
    without torch by swinref.load: its features, normalised by the file's own norm_i, are the backbone's outputs."""
    torch = _torch()
    cfg = CONFIGS[1].replace(num_classes=0)
    model = _build_peer("pretrain", cfg, mm)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, p in model.named_parameters():  # LayerNorm gains around one, everything else around zero
            p.copy_(0.2 * torch.randn(p.shape, generator=g) + (p.ndim == 1 and name.endswith("weight")))
    state = {"backbone." + k: v for k, v in model.state_dict().items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(4, 24, 1, 1)
    path = tmp_path / "epoch_12.pth"
    torch.save({"meta": {"mmengine_version": "0.10.7", "epoch": 12}, "state_dict": state}, path)
    loaded = swinref.load(path, config=cfg, dtype="float64")
    report = loaded.report
    assert (report.layout, report.entry, report.prefixes, report.left_out) == ("openmmlab", "state_dict",
                                                                               ("backbone.",), ("neck.",))
    assert any(k.endswith("relative_position_index") for k in report.dropped)
    x = np.random.default_rng(9).standard_normal((1, 3, 224, 224))
    with torch.no_grad():
        outs = [o.numpy() for o in model.double()(torch.from_numpy(x))]
    p = loaded.params
    # mmpretrain (pad_small_map=False) windows as the official model does; the stage outputs without the norms
    raw = swinref.features({k: v for k, v in p.items() if not k[4:5].isdigit()}, x, loaded.config, layout="NHWC",
                           policy="official")
    for i, f in enumerate(raw):
        want = _layer_norm(np.asarray(f), p[f"norm{i}.weight"], p[f"norm{i}.bias"]).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(outs[i], want, rtol=1e-9, atol=1e-9, err_msg=f"stage {i}")


# ---------------------------------------------------------------------------------------------------------------
# transformers backbones (AutoBackbone): SwinBackbone's hidden_states_norms.stageN are norm{N-1}; Swinv2Backbone has
# no norms at all.


def assert_read_with_identity_norm(layout, sd: dict, params: dict, cfg, what: str) -> None:
    """A backbone file without any norm reads back as params with the identity final norm, said in the notes."""
    back, notes = layout.to_canonical(sd)
    np.testing.assert_array_equal(back.pop("norm.weight"), np.ones(cfg.num_features, np.float32))
    np.testing.assert_array_equal(back.pop("norm.bias"), np.zeros(cfg.num_features, np.float32))
    assert_same(back, {k: v for k, v in params.items() if not k.startswith("norm.")})
    assert f"({what}): norm is the identity LayerNorm" in notes.messages[0]


def _hf_backbone_files(params: dict, cfg) -> dict[str, dict]:
    """The SwinBackbone state dicts of each generation, as files hold them (the layout's in-memory names aside)."""
    memory = layouts.transformers.from_canonical(params, cfg)
    unprefixed = {k[len("swin."):] if k.startswith("swin.") else k: v for k, v in memory.items()}
    legacy = {}
    for name, value in unprefixed.items():
        for new, old in layouts.transformers.LEGACY_RENAMES:
            name = name.replace(new, old)
        legacy[name] = value
    v5_file = {("swin." + k if k.startswith("layernorm.") else k): v for k, v in legacy.items()}  # save_pretrained
    v4_file = {k: v for k, v in legacy.items() if not k.startswith("layernorm.")}  # 4.x: no final norm
    return {"memory": memory, "5.x file": v5_file, "4.x file": v4_file}


@pytest.mark.parametrize("form", ["memory", "5.x file", "4.x file"])
def test_transformers_swin_backbone_names(form):
    params = canonical(1, "openmmlab")  # norm0..norm3, norm = norm3, no head
    sd = _hf_backbone_files(params, CONFIGS[1])[form]
    assert {f"hidden_states_norms.stage{n}.weight" for n in (1, 2, 3, 4)} <= set(sd)
    assert layouts.detect(sd.keys()).NAME == "transformers"
    back, notes = layouts.transformers.to_canonical(sd)
    assert_same(back, params)
    assert (notes.messages == ["norm is norm3, the last stage's output norm (the file has no separate final norm)"]) \
        == (form == "4.x file")


def test_transformers_swinv2_backbone_has_no_norms():
    cfg = CONFIGS[2].replace(num_classes=0)
    params = init_params(cfg, seed=1)
    sd = layouts.transformers.from_canonical(params, cfg, backbone=True)
    assert not any(k.startswith(("swinv2.", "layernorm.", "hidden_states_norms.")) for k in sd)
    assert_read_with_identity_norm(layouts.transformers, sd, params, cfg, "a Swinv2Backbone")
    with pytest.raises(CheckpointError, match="Swinv2Backbone has no per-stage output norms"):
        layouts.transformers.from_canonical(canonical(2, "openmmlab"), CONFIGS[2], backbone=True)


def test_transformers_backbone_config_names_its_output_stages():
    out = layouts.transformers.backbone_out_indices
    names = ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert out({"architectures": ["SwinForImageClassification"], "out_features": ["stage1"]}) is None
    assert out({"architectures": ["SwinBackbone"], "stage_names": names, "out_features": ["stage2", "stage4"],
                "out_indices": [2, 4]}) == (1, 3)
    assert out({"architectures": ["Swinv2Backbone"], "stage_names": names, "out_indices": [1, 2, 3, 4]}) == (0, 1, 2, 3)
    assert out({"architectures": ["SwinBackbone"], "depths": [2, 2, 6, 2]}) == (3,)  # transformers' default
    with pytest.raises(CheckpointError, match="stem"):
        out({"architectures": ["SwinBackbone"], "stage_names": names, "out_features": ["stem", "stage1"]})


def _hf_backbone(version: int, cfg, out_features: list[str]):
    _torch()
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    kind = transformers.SwinConfig if version == 1 else transformers.Swinv2Config
    hf_cfg = kind(embed_dim=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads),
                  window_size=cfg.window_size, image_size=cfg.img_size[0], out_features=out_features)
    return (transformers.SwinBackbone if version == 1 else transformers.Swinv2Backbone)(hf_cfg).eval()


@pytest.mark.peers
@pytest.mark.parametrize("version", [1, 2])
def test_transformers_backbone_strict_load_and_directory(version, tmp_path):
    """from_canonical's dict is the real SwinBackbone's state dict (strict=True; Swinv2Backbone: strict but for its
    derived buffers); its save_pretrained directory reads back through swinref with the output stages of its
    config.json; SwinBackbone's feature maps are norm{i} of swinref's stage outputs."""
    torch = _torch()
    cfg = CONFIGS[version].replace(num_classes=0)
    params = canonical(version, "openmmlab", seed=11) if version == 1 else init_params(cfg, seed=11)
    model = _hf_backbone(version, cfg, ["stage1", "stage2", "stage3", "stage4"])
    sd = layouts.transformers.from_canonical(params, cfg, backbone=True)
    tensors = {k: torch.from_numpy(v.copy()) for k, v in sd.items()}
    if version == 1:
        model.load_state_dict(tensors, strict=True)
    else:
        result = model.load_state_dict(tensors, strict=False)
        assert result.unexpected_keys == [] and all(base.is_derived(k) for k in result.missing_keys)
    model.save_pretrained(tmp_path)
    from swinref.checkpoints import read_checkpoint

    got, report = read_checkpoint(tmp_path)
    assert (report.layout, report.container, report.out_indices) == ("transformers", "huggingface-dir", (0, 1, 2, 3))
    want = dict(params)
    if version == 2:
        want["norm.weight"], want["norm.bias"] = np.ones_like(params["norm.weight"]), np.zeros_like(params["norm.bias"])
    assert_same(got, want)
    if version == 2:
        return
    x = np.random.default_rng(12).standard_normal((1, 3, *cfg.img_size))
    with torch.no_grad():
        maps = [m.numpy() for m in model.double()(torch.from_numpy(x)).feature_maps]
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    # SwinBackbone runs its model with always_partition=True: every odd block shifts, also a stage no larger than
    # the window, as the detection backbones do.
    feats = swinref.features({k: v for k, v in p64.items() if not k[4:5].isdigit()}, x, cfg, layout="NHWC",
                             policy="detection")
    for i, (got_map, f) in enumerate(zip(maps, feats)):
        want_map = _layer_norm(np.asarray(f), p64[f"norm{i}.weight"], p64[f"norm{i}.bias"]).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got_map, want_map, rtol=1e-8, atol=1e-8, err_msg=f"stage {i}")


# ---------------------------------------------------------------------------------------------------------------
# timm features_only models (FeatureListNet): layers_N. for layers.N., no final norm, no head.


@pytest.mark.parametrize("version", [1, 2])
def test_timm_features_only_names(version):
    cfg = CONFIGS[version].replace(num_classes=0)
    params = init_params(cfg, seed=2)
    sd = layouts.timm.from_canonical(params, cfg, features_only=True)
    classifier = layouts.timm.from_canonical(params, cfg)
    # the classifier's names minus the final norm, with layers.N. spelled layers_N.
    assert sorted(k.replace("layers_", "layers.") for k in sd) == sorted(k for k in classifier if k[:5] != "norm.")
    assert any(k.startswith("layers_1.downsample.") for k in sd) and not any(k.startswith("layers.") for k in sd)
    assert layouts.detect(sd.keys()).NAME == "timm"
    assert_read_with_identity_norm(layouts.timm, sd, params, cfg, "a timm features_only model")
    with pytest.raises(CheckpointError, match="no per-stage output norms"):
        layouts.timm.from_canonical(canonical(version, "openmmlab"), cfg)
    with pytest.raises(CheckpointError, match="features_only model has no head"):
        layouts.timm.from_canonical(init_params(CONFIGS[version], seed=2), cfg, features_only=True)


@pytest.mark.peers
@pytest.mark.parametrize("version", [1, 2])
def test_timm_features_only_against_the_model(version):
    """timm.create_model(..., features_only=True): its state dict's names are the classifier's minus head and final
    norm with layers_N. (released Swin-T and the small config); from_canonical(features_only=True) loads strictly
    and its features are swinref's stage outputs."""
    torch = _torch()
    timm = pytest.importorskip("timm", reason="timm is not installed")
    released = "swin_tiny_patch4_window7_224" if version == 1 else "swinv2_tiny_window8_256"
    whole = timm.create_model(released, pretrained=False)
    feats_model = timm.create_model(released, pretrained=False, features_only=True)
    want = {k.replace("layers.", "layers_", 1) for k in whole.state_dict() if not k.startswith(("head.", "norm."))}
    assert set(feats_model.state_dict()) == want
    cfg = CONFIGS[version].replace(num_classes=0)
    small = timm.create_model(released, pretrained=False, features_only=True, img_size=cfg.img_size,
                              embed_dim=cfg.embed_dim, depths=cfg.depths, num_heads=cfg.num_heads,
                              window_size=cfg.window_size).eval()
    params = init_params(cfg, seed=13)
    sd = layouts.timm.from_canonical(params, cfg, features_only=True)
    small.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=True)
    back, _ = layouts.timm.to_canonical({k: v.numpy() for k, v in small.state_dict().items()})
    assert_same({k: v for k, v in back.items() if not k.startswith("norm.")},
                {k: v for k, v in params.items() if not k.startswith("norm.")})
    x = np.random.default_rng(14).standard_normal((1, 3, *cfg.img_size))
    small = small.double()
    _tool("peers").exact_v2_coords(small)  # V2: the peer's float32-made coordinate table, recomputed in float64
    with torch.no_grad():
        outs = [o.numpy() for o in small(torch.from_numpy(x))]  # timm's Swin features are NHWC
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    for i, (out, f) in enumerate(zip(outs, swinref.features(p64, x, cfg, layout="NHWC", policy="timm"))):
        np.testing.assert_allclose(out, np.asarray(f), rtol=1e-8, atol=1e-8, err_msg=f"stage {i}")


# ---------------------------------------------------------------------------------------------------------------
# Files written in a peer's names (swinref.checkpoints.export_params, `swinref convert --layout`) load into the peer.


def _load_exported(model, path) -> None:
    """safetensors.torch.load_file + load_state_dict: strict=True when the peer saves no derived buffers, else
    strict=False with exactly its derived buffers missing."""
    _torch()
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    derived = sorted(k for k in model.state_dict() if base.is_derived(k))
    if not derived:
        model.load_state_dict(tensors, strict=True)
        return
    result = model.load_state_dict(tensors, strict=False)
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == derived, result


EXPORTS = [("timm", v) for v in (1, 2)] + [("transformers", v) for v in (1, 2)] + [("torchvision", v) for v in (1, 2)]


@pytest.mark.peers
@pytest.mark.parametrize("peer,version", EXPORTS, ids=[f"{p}-v{v}" for p, v in EXPORTS])
def test_exported_file_loads_into_the_peer(tmp_path, peer, version):
    from swinref.checkpoints import export_params

    cfg = CONFIGS[version]
    params = canonical(version, peer, seed=15)
    model = _build_peer(peer, cfg)
    export_params(params, cfg, tmp_path / "w.safetensors", peer)
    _load_exported(model, tmp_path / "w.safetensors")
    back, _ = layouts.get(peer).to_canonical({k: v.detach().numpy() for k, v in model.state_dict().items()})
    assert_same({k: v for k, v in back.items() if not base.is_derived(k)}, params)


@pytest.mark.peers
@pytest.mark.parametrize("kind,version", MM, ids=[f"{k}-v{v}" for k, v in MM])
def test_exported_openmmlab_file_loads_into_the_backbone(mm, tmp_path, kind, version):
    from swinref.checkpoints import export_params

    cfg = CONFIGS[version].replace(num_classes=0)
    params = canonical(version, "openmmlab", seed=16)
    model = _build_peer(kind, cfg, mm)
    export_params(params, cfg, tmp_path / "w.safetensors", "openmmlab")
    _load_exported(model, tmp_path / "w.safetensors")
    export_params(params, cfg, tmp_path / "whole.safetensors", "openmmlab", backbone_prefix=True)
    from safetensors.numpy import load_file

    whole = load_file(str(tmp_path / "whole.safetensors"))
    assert set(whole) == {"backbone." + k for k in load_file(str(tmp_path / "w.safetensors"))}


@pytest.mark.peers
def test_exported_transformers_backbone_loads_into_swin_backbone(tmp_path):
    from swinref.checkpoints import export_params

    cfg = CONFIGS[1].replace(num_classes=0)
    params = canonical(1, "openmmlab", seed=17)  # norm0..norm3: a SwinBackbone's names
    export_params(params, cfg, tmp_path / "b.safetensors", "transformers")
    _load_exported(_hf_backbone(1, cfg, ["stage1", "stage2", "stage3", "stage4"]), tmp_path / "b.safetensors")


@pytest.mark.peers
def test_transformers_absolute_position_embedding_loads_into_swin_backbone():
    """SwinBackbone(use_absolute_embeddings=True) keeps embeddings.position_embeddings [1, Hp*Wp, C]: the canonical
    [1, C, Hp, Wp] written by from_canonical loads strictly and reads back."""
    torch = _torch()
    cfg = CONFIGS[1].replace(num_classes=0)
    params = canonical(1, "openmmlab", seed=18)
    grid = cfg.img_size[0] // cfg.patch_size
    params["absolute_pos_embed"] = np.random.default_rng(19).standard_normal(
        (1, cfg.embed_dim, grid, grid)).astype(np.float32)
    model = _hf_backbone(1, cfg, ["stage1", "stage2", "stage3", "stage4"])
    model = type(model)(model.config.__class__(**{**model.config.to_dict(), "use_absolute_embeddings": True}))
    sd = layouts.transformers.from_canonical(params, cfg)
    assert sd["swin.embeddings.position_embeddings"].shape == (1, grid * grid, cfg.embed_dim)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=True)
    back, _ = layouts.transformers.to_canonical({k: v.numpy() for k, v in model.state_dict().items()})
    assert_same(back, params)
