"""Checkpoint layouts -> canonical params, config detection, shape checks, swinref's own files and `convert`.

The default run reads the peer fixtures (tests/data/peers, written by tools/make_peer_fixtures.py with timm,
transformers and torchvision) without torch. Tests marked `peers` write fresh checkpoints with the peer libraries.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from swinref.checkpoints import FORMAT_VERSION, LoadReport, convert, load_state_dict, read_checkpoint, save_params
from swinref.checkpoints.detect import check_params, infer_config
from swinref.config import SwinConfig, get_config
from swinref.errors import CheckpointError, ConfigError, OutputError
from swinref.layout import param_shapes

PEERS = Path(__file__).parent / "data" / "peers"
PTH = Path(__file__).parent / "data" / "pth"
CASES = sorted(p.name for p in PEERS.iterdir() if (p / "meta.json").exists())


def meta(case: str) -> dict:
    return json.loads((PEERS / case / "meta.json").read_text())


def expected_config(case: str) -> SwinConfig:
    return SwinConfig(**meta(case)["swinref_config"])


def checkpoint_paths(case: str) -> list[Path]:
    """Every checkpoint of a case: files, and the Hugging Face directory as one checkpoint."""
    paths = []
    for name in meta(case)["checkpoint_files"]:
        path = PEERS / case / name
        path = path.parent if path.parent.name in ("hf", "hf_legacy") else path
        if path not in paths:
            paths.append(path)
    return paths


ALL_FILES = [(case, path) for case in CASES for path in checkpoint_paths(case)]
EXPECTED_LAYOUT = {"model.pth": "timm", "model.safetensors": "timm", "official.pth": "official", "hf": "transformers",
                   "hf_legacy": "transformers"}


def _arch(cfg: SwinConfig, *, with_img: bool) -> dict:
    d = cfg.to_dict()
    d.pop("name")
    if not with_img:
        d.pop("img_size")
    return d


def _records_image_size(case: str, path: Path) -> bool:
    # Hugging Face's config.json states the image size. Otherwise only a stage clamped below the window reveals it
    # (the clamp fixtures); an unclamped model runs at any size, so detection proposes the last-stage-equals-M size.
    return path.name in ("hf", "hf_legacy") or case.endswith("_clamp")


@pytest.mark.parametrize("case,path", ALL_FILES, ids=[f"{c}/{p.name}" for c, p in ALL_FILES])
def test_peer_checkpoint_detects_its_config(case, path):
    params, cfg = load_state_dict(path)
    want = expected_config(case)
    assert _arch(cfg, with_img=_records_image_size(case, path)) == _arch(want, with_img=_records_image_size(case, path))
    # The parameters are exactly the canonical layout of the fixture's config, names and shapes.
    assert {k: v.shape for k, v in params.items()} == param_shapes(want)
    _, report = read_checkpoint(path)
    assert isinstance(report, LoadReport) and report.path == str(path) and report.config is None
    if meta(case)["peer"] == "torchvision":
        assert report.layout == "torchvision"
    else:
        assert report.layout == EXPECTED_LAYOUT[path.name]


@pytest.mark.parametrize("case,path", ALL_FILES, ids=[f"{c}/{p.name}" for c, p in ALL_FILES])
def test_peer_checkpoint_loads_with_its_named_config(case, path):
    params, cfg = load_state_dict(path, config=expected_config(case))
    assert cfg == expected_config(case)
    assert list(params) == list(param_shapes(cfg))  # official order


@pytest.mark.parametrize("case", [c for c in CASES if len(checkpoint_paths(c)) > 1])
def test_every_format_of_the_same_weights_is_identical(case):
    first, *others = checkpoint_paths(case)
    ref, _ = load_state_dict(first)
    for path in others:
        params, _ = load_state_dict(path)
        assert params.keys() == ref.keys(), path.name
        for k in ref:
            assert params[k].dtype == ref[k].dtype, (path.name, k)
            np.testing.assert_array_equal(params[k], ref[k], err_msg=f"{path.name}: {k}")


def test_official_file_drops_its_derived_buffers():
    official = [p for c in CASES for p in checkpoint_paths(c) if p.name == "official.pth"]
    assert official, "no peer fixture has an official.pth"
    for path in official:
        _, report = read_checkpoint(path)
        assert report.entry == "model" and report.container == "torch-zip"
        dropped = report.dropped
        assert any(k.endswith("relative_position_index") for k in dropped)
        assert any(k.endswith("attn_mask") for k in dropped)


def test_torch_training_checkpoints(tmp_path):
    want = SwinConfig(img_size=(8, 8), patch_size=2, embed_dim=4, depths=(1, 1), num_heads=(1, 2), window_size=2,
                      num_classes=3)
    timm_params, cfg = load_state_dict(PTH / "timm_train.pth")
    assert _arch(cfg, with_img=True) == _arch(want, with_img=True)
    _, report = read_checkpoint(PTH / "timm_train.pth")
    assert report.entry == "state_dict" and "state_dict_ema" in report.ignored_entries
    official_params, _ = load_state_dict(PTH / "official_train.pth")
    for k in timm_params:
        np.testing.assert_array_equal(official_params[k], timm_params[k], err_msg=k)


# ---------------------------------------------------------------------------------------------------------------
# swinref's own files and convert.


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_round_trip_keeps_params_and_config(tmp_path, ext):
    case = CASES[0]
    src = checkpoint_paths(case)[0]
    params, _ = load_state_dict(src)
    cfg = expected_config(case).replace(name="my_model")
    out = tmp_path / f"model{ext}"
    save_params(params, cfg, out)
    back, report = read_checkpoint(out)
    assert report.layout == "swinref" and report.stored_config == cfg
    params2, cfg2 = load_state_dict(out)
    assert cfg2 == cfg  # name and image size included
    assert list(params2) == list(params)
    for k in params:
        np.testing.assert_array_equal(params2[k], params[k])
        assert params2[k].dtype == params[k].dtype
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_convert_every_peer_file(tmp_path):
    for case, path in ALL_FILES:
        out = tmp_path / f"{case}_{path.name}.safetensors"  # model.pth and model.safetensors: two outputs
        cfg = convert(path, out, config=expected_config(case), dtype="float16").config
        params, cfg2 = load_state_dict(out)
        assert cfg2 == cfg
        src, _ = load_state_dict(path, config=expected_config(case))
        for k in src:
            assert params[k].dtype == np.float16
            np.testing.assert_array_equal(params[k], src[k].astype(np.float16))


def test_safetensors_metadata_is_readable_by_the_safetensors_package(tmp_path):
    from safetensors import safe_open

    params, cfg = load_state_dict(checkpoint_paths(CASES[0])[0])
    out = tmp_path / "m.safetensors"
    save_params(params, cfg, out)
    with safe_open(str(out), framework="numpy") as f:
        metadata = f.metadata()
        assert SwinConfig.from_dict(json.loads(metadata["swinref_config"])) == cfg
        assert metadata["swinref_format_version"] == str(FORMAT_VERSION)
        assert set(f.keys()) == set(params)


def test_save_refuses_wrong_params_and_leaves_nothing(tmp_path):
    params, cfg = load_state_dict(checkpoint_paths(CASES[0])[0])
    del params["norm.weight"]
    out = tmp_path / "bad.safetensors"
    with pytest.raises(CheckpointError, match="missing.*norm.weight"):
        save_params(params, cfg, out)
    assert os.listdir(tmp_path) == []
    with pytest.raises(CheckpointError, match=r"\.safetensors or \.npz"):
        save_params(params, cfg, tmp_path / "x.pth")


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import safetensors.numpy

    params, cfg = load_state_dict(checkpoint_paths(CASES[0])[0])
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"previous content")

    def fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", fail)
    with pytest.raises(OutputError, match="cannot write .*disk full"):
        save_params(params, cfg, out, force=True)
    assert out.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_newer_format_version_is_refused(tmp_path):
    from safetensors.numpy import save_file

    params, cfg = load_state_dict(checkpoint_paths(CASES[0])[0])
    out = tmp_path / "future.safetensors"
    save_file(params, str(out), metadata={"swinref_config": json.dumps(cfg.to_dict()),
                                          "swinref_format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(CheckpointError, match="newer swinref"):
        read_checkpoint(out)


# ---------------------------------------------------------------------------------------------------------------
# Wrong model, damaged files.


def test_wrong_named_config_lists_problems_and_hints():
    path = PEERS / "timm_v1_clamp" / "model.safetensors"
    with pytest.raises(CheckpointError) as err:
        load_state_dict(path, config="T")
    msg = str(err.value)
    assert "does not fit swin_tiny_patch4_window7_224" in msg
    assert "missing (" in msg and "mis-shaped (" in msg
    assert "patch_embed.proj.weight (expected [96, 3, 4, 4], got [8, 3, 4, 4])" in msg
    assert "drop the config/variant options" in msg


def test_registered_architecture_is_named_in_the_hint(tmp_path):
    # A checkpoint with Swin-T's architecture (zeros suffice: detection reads shapes) checked against Swin-B.
    cfg = get_config("T")
    params = {k: np.zeros(s, np.float32) for k, s in param_shapes(cfg).items()}
    assert infer_config(params) == cfg
    out = tmp_path / "t.safetensors"
    save_params(params, cfg, out)
    with pytest.raises(CheckpointError, match="looks like a swin_tiny_patch4_window7_224 checkpoint; pass config='T'"):
        load_state_dict(out, config="B")


def test_detection_finds_registered_configs():
    for name in ("T", "S", "B", "L", "B384", "swin_tiny_c24_patch4_window8_256", "swin_base_patch4_window7_224_22k"):
        cfg = get_config(name)
        params = {k: np.empty(s, np.float32) for k, s in param_shapes(cfg).items()}
        assert infer_config(params) == cfg, name


def test_v2_without_a_window_asks_for_a_config():
    cfg = get_config("V2-T")
    params = {k: np.empty(s, np.float32) for k, s in param_shapes(cfg).items()}
    with pytest.raises(CheckpointError, match="do not record the window size.*swinv2_tiny_patch4_window8_256"):
        infer_config(params)
    assert infer_config(params, {"window_size": 8, "img_size": (256, 256)}) == cfg


def _rewrite_safetensors(src: Path, dst: Path, edit) -> None:
    from safetensors.numpy import save_file

    from swinref.checkpoints.files import read_safetensors

    tensors, metadata, _ = read_safetensors(str(src))
    save_file(edit(dict(tensors)), str(dst), metadata=metadata or None)


def test_missing_and_misshaped_tensors_are_listed(tmp_path):
    src = PEERS / "timm_v1_clamp" / "model.safetensors"
    cut = tmp_path / "cut.safetensors"
    _rewrite_safetensors(src, cut, lambda t: {k: v for k, v in t.items() if "layers.1.blocks.1." not in k})
    with pytest.raises(CheckpointError) as err:
        load_state_dict(cut, config=expected_config("timm_v1_clamp"))
    assert "missing (" in str(err.value) and "layers.1.blocks.1.norm1.weight" in str(err.value)

    def squash(t):
        t["layers.0.blocks.0.mlp.fc1.weight"] = t["layers.0.blocks.0.mlp.fc1.weight"][:3]
        t["extra.weight"] = np.zeros(2, np.float32)
        return t

    bad = tmp_path / "bad.safetensors"
    _rewrite_safetensors(src, bad, squash)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(bad, config=expected_config("timm_v1_clamp"))
    msg = str(err.value)
    assert "layers.0.blocks.0.mlp.fc1.weight (expected [16, 8], got [3, 8])" in msg
    assert "unexpected (1): extra.weight" in msg


def test_truncated_safetensors(tmp_path):
    raw = (PEERS / "timm_v1_clamp" / "model.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(cut)
    (tmp_path / "head.safetensors").write_bytes(raw[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(tmp_path / "head.safetensors")


def test_bfloat16_safetensors_is_widened(tmp_path):
    # Written by hand from the format: bfloat16 is the top half of a float32.
    values = np.array([1.5, -2.0, 0.15625, 3e38], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, len(bits)]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bits)
    from swinref.checkpoints.files import read_safetensors

    tensors, _, widened = read_safetensors(str(path))
    assert widened == ["x"] and tensors["x"].dtype == np.float32
    np.testing.assert_array_equal(tensors["x"], (values.view(np.uint32) & 0xFFFF0000).view(np.float32))


def test_unknown_layout_and_non_state_dicts(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "vit.safetensors"
    save_file({"blocks.0.attn.qkv.weight": np.zeros((3, 1), np.float32)}, str(path))
    with pytest.raises(CheckpointError, match=r"cannot tell which Swin checkpoint layout .*'blocks.0.attn.qkv.weight'"
                                              r".*openmmlab \(patch_embed.projection.weight\)"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="no state dict"):
        read_checkpoint(PTH / "nested.pth")  # a dict of nested things, no flat state dict


def test_hf_directory_problems(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(CheckpointError, match="model_type 'vit'"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swin"}))
    with pytest.raises(CheckpointError, match="no weights"):
        read_checkpoint(tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="without config.json"):
        read_checkpoint(tmp_path)


def test_dtype_option():
    params, _ = load_state_dict(checkpoint_paths(CASES[0])[0], dtype="float64")
    assert all(v.dtype == np.float64 for v in params.values())
    with pytest.raises(ConfigError, match="floating-point"):
        load_state_dict(checkpoint_paths(CASES[0])[0], dtype="int8")


# ---------------------------------------------------------------------------------------------------------------
# Fresh checkpoints written by the peers (skipped without torch).

TINY = dict(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=5)


@pytest.mark.peers
def test_hf_current_names_equal_legacy_names(tmp_path):
    """transformers 5.23 keeps q_proj/k_proj/v_proj/o_proj and mlp.fc1/fc2 in memory (save_pretrained writes the
    legacy names): a state_dict() saved directly must translate to the same params as save_pretrained's file."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    hf_dir = PEERS / "hf_v1_pad" / "hf"
    model = transformers.SwinForImageClassification.from_pretrained(str(hf_dir))
    sd = model.state_dict()
    assert any(".attention.q_proj." in k for k in sd) and any(".mlp.fc1." in k for k in sd)
    out = tmp_path / "current.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out))
    current, _ = load_state_dict(out, config=expected_config("hf_v1_pad"))
    legacy, _ = load_state_dict(hf_dir)
    for k in legacy:
        np.testing.assert_array_equal(current[k], legacy[k], err_msg=k)


def _merge_numpy(x: np.ndarray, norm_w, norm_b, reduction, *, v2: bool) -> np.ndarray:
    """The official patch merging: neighbours (0,0), (1,0), (0,1), (1,1) in (row, col), then norm/reduce."""
    cat = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)

    def ln(t):
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + 1e-5) * norm_w + norm_b

    return ln(cat @ reduction.T) if v2 else ln(cat) @ reduction.T


@pytest.mark.peers
def test_peer_patch_merging_uses_the_official_order():
    """No peer permutes the 2x2 neighbours: their merge weights work unchanged with the official order."""
    torch = pytest.importorskip("torch")
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    hf = pytest.importorskip("transformers.models.swin.modeling_swin")
    hf2 = pytest.importorskip("transformers.models.swinv2.modeling_swinv2")
    torch.manual_seed(0)
    C, H, W = 4, 6, 8
    x = torch.randn(2, H, W, C)
    modules = {
        "timm": (timm_swin.PatchMerging(C), lambda m: m(x)),
        "torchvision": (tv.PatchMerging(C), lambda m: m(x)),
        "torchvision V2": (tv.PatchMergingV2(C), lambda m: m(x)),
        "transformers": (hf.SwinPatchMerging(C),
                         lambda m: m(x.reshape(2, H * W, C), (H, W)).reshape(2, H // 2, W // 2, 2 * C)),
        "transformers V2": (hf2.Swinv2PatchMerging((H, W), C),
                            lambda m: m(x.reshape(2, H * W, C), (H, W)).reshape(2, H // 2, W // 2, 2 * C)),
    }
    for name, (module, run) in modules.items():
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn_like(p))
            want = run(module).numpy()
        sd = {k: v.numpy() for k, v in module.state_dict().items()}
        got = _merge_numpy(x.numpy(), sd["norm.weight"], sd["norm.bias"], sd["reduction.weight"], v2="V2" in name)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.peers
@pytest.mark.parametrize("peer", ["timm", "transformers", "torchvision"])
def test_v2_checkpoints_translate_and_match_the_peer(tmp_path, peer):
    """Swin V2 weights from each peer load with the config given, and swinref's forward reproduces the peer's
    logits (which checks q_bias/v_bias, logit_scale and cpb_mlp landed in the right places)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    import swinref

    torch.manual_seed(3)
    cfg = SwinConfig(version=2, img_size=(32, 32), **TINY)
    if peer == "timm":
        timm = pytest.importorskip("timm")
        model = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=32, **TINY)
        out = tmp_path / "v2.pth"
        torch.save(model.state_dict(), out)
    elif peer == "transformers":
        transformers = pytest.importorskip("transformers")
        hf_cfg = transformers.Swinv2Config(image_size=32, embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=4,
                                           num_labels=5, drop_path_rate=0.0)
        model = transformers.Swinv2ForImageClassification(hf_cfg)
        out = tmp_path / "hf"
        model.save_pretrained(str(out))
    else:
        tvs = pytest.importorskip("torchvision.models.swin_transformer")
        model = tvs.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[1, 2],
                                    window_size=[4, 4], num_classes=5, block=tvs.SwinTransformerBlockV2,
                                    downsample_layer=tvs.PatchMergingV2)
        out = tmp_path / "v2.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # move away from the init so biases and scales matter
            p.add_(0.05 * torch.randn_like(p))
    if peer == "timm":
        torch.save(model.state_dict(), out)
    elif peer == "transformers":
        model.save_pretrained(str(out))
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    params, got_cfg = load_state_dict(out, config=None if peer == "transformers" else cfg)
    assert _arch(got_cfg, with_img=True) == _arch(cfg, with_img=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        want = (want.logits if hasattr(want, "logits") else want).numpy()
    got = swinref.forward(params, x.numpy(), got_cfg)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# The CLI subcommand.


def test_cli_convert(tmp_path, capsys):
    from swinref.cli import main

    src = PEERS / "timm_v1_pad" / "model.pth"
    out = tmp_path / "m.npz"
    assert main(["convert", str(src), str(out), "--img", "84x68", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert SwinConfig.from_dict(report["config"]) == expected_config("timm_v1_pad")
    params, cfg = load_state_dict(out)
    assert cfg == expected_config("timm_v1_pad")
    assert main(["convert", str(src), str(tmp_path / "t.safetensors"), "--config", "T"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("swinref: error:") and "does not fit swin_tiny_patch4_window7_224" in err
    assert not (tmp_path / "t.safetensors").exists()
    assert main(["convert", str(PTH / "dtypes.pth"), str(tmp_path / "x.npz")]) == 2
    assert "cannot tell which Swin checkpoint layout" in capsys.readouterr().err


def test_saved_file_has_the_usual_permissions(tmp_path):
    params, cfg = load_state_dict(checkpoint_paths(CASES[0])[0])
    out = tmp_path / "m.safetensors"
    save_params(params, cfg, out)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (out.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_image_size_that_clamps_a_stage_is_explained():
    # Swin-T weights (window 7 everywhere) checked at 96x96: stages 2 and 3 are 6x6 and 3x3 tokens, which the
    # official model builds with 6x6 and 3x3 windows, so (2*6-1)^2- and (2*3-1)^2-row tables.
    cfg = get_config("T")
    params = {k: np.zeros(s, np.float32) for k, s in param_shapes(cfg).items()}
    with pytest.raises(CheckpointError) as err:
        check_params(params, cfg.replace(img=96))
    msg = str(err.value)
    assert "layers.2.blocks.0.attn.relative_position_bias_table (expected [121, 12], got [169, 12])" in msg
    assert "stage(s) [2, 3] are not larger than the window" in msg and "--img" in msg


def test_timm_hub_directory_states_its_image_size(tmp_path):
    # The layout of timm's save_for_hf (config.json with architecture / model_args / pretrained_cfg beside
    # model.safetensors); the peer test below writes a real one.
    import shutil

    shutil.copy(PEERS / "timm_v1_pad" / "model.safetensors", tmp_path / "model.safetensors")
    want = expected_config("timm_v1_pad")
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "swin_tiny_patch4_window7_224", "num_classes": 10,
        "model_args": {"img_size": list(want.img_size), "embed_dim": 8, "depths": [2, 2, 2], "num_heads": [1, 2, 4],
                       "window_size": 4, "num_classes": 10},
        "pretrained_cfg": {"input_size": [3, *want.img_size]},
    }))
    for path in (tmp_path, tmp_path / "model.safetensors"):
        _, cfg = load_state_dict(path)
        assert _arch(cfg, with_img=True) == _arch(want, with_img=True), path


@pytest.mark.peers
def test_timm_save_for_hf_directory(tmp_path):
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf

    model = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=32, **TINY)
    save_for_hf(model, str(tmp_path), safe_serialization="both")
    _, cfg = load_state_dict(tmp_path)  # a V2 model: only the directory's config tells the window
    assert _arch(cfg, with_img=True) == _arch(SwinConfig(version=2, img_size=(32, 32), **TINY), with_img=True)


# ---------------------------------------------------------------------------------------------------------------
# Backbones: OpenMMLab files and the per-stage output norms (written here without torch, by the layout module).


def _mm_backbone(tmp_path: Path) -> tuple[Path, SwinConfig, dict]:
    from safetensors.numpy import save_file

    from swinref.checkpoints.layouts import openmmlab
    from swinref.params import init_params

    cfg = get_config("T", embed_dim=8, depths="2,2", heads="1,2", window=4, img=32, classes=0)
    params = init_params(cfg, seed=2)
    for i, dim in enumerate((8, 16)):
        params[f"norm{i}.weight"] = np.full(dim, 1.0 + i, np.float32)
        params[f"norm{i}.bias"] = np.full(dim, 0.5 * i, np.float32)
    params["norm.weight"], params["norm.bias"] = params["norm1.weight"], params["norm1.bias"]
    sd = {"backbone." + k: v for k, v in openmmlab.from_canonical(params, cfg).items()}
    sd["neck.lateral.weight"] = np.zeros((2, 2), np.float32)
    path = tmp_path / "mm.safetensors"
    save_file(sd, str(path))
    return path, cfg, params


def test_openmmlab_backbone_loads_as_a_headless_model_with_its_stage_norms(tmp_path):
    import swinref
    from swinref.checkpoints import load_checkpoint

    path, cfg, want = _mm_backbone(tmp_path)
    params, got_cfg, report = load_checkpoint(path, config=cfg)
    assert report.layout == "openmmlab" and report.prefixes == ("backbone.",) and report.left_out == ("neck.",)
    assert got_cfg.num_classes == 0 and report.config == got_cfg
    assert any("norm is norm1" in n for n in report.notes)
    assert list(params)[-4:] == ["norm0.weight", "norm0.bias", "norm1.weight", "norm1.bias"]
    for k in want:
        np.testing.assert_array_equal(params[k], want[k], err_msg=k)
    model = swinref.load(path, config=cfg)
    assert model.report.layout == "openmmlab" and "norm0.weight" in model.params
    assert model(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 16)  # headless: pooled features
    # swinref's own files keep them too.
    out = tmp_path / "backbone.safetensors"
    save_params(params, cfg, out)
    assert set(load_state_dict(out)[0]) == set(params)


def test_stage_norms_are_optional_but_shape_checked():
    cfg = get_config("T", embed_dim=8, depths="2,2", heads="1,2", window=4, img=32, classes=0)
    params = {k: np.zeros(s, np.float32) for k, s in param_shapes(cfg).items()}
    check_params(params, cfg)
    check_params({**params, "norm1.weight": np.zeros(16, np.float32)}, cfg)
    with pytest.raises(CheckpointError, match=r"norm1.weight \(expected \[16\], got \[8\]\)"):
        check_params({**params, "norm1.weight": np.zeros(8, np.float32)}, cfg)
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): norm2.weight"):
        check_params({**params, "norm2.weight": np.zeros(32, np.float32)}, cfg)  # a third stage it does not have


# ---------------------------------------------------------------------------------------------------------------
# Whole detection / segmentation checkpoints: official names under 'backbone.' (Swin-Transformer-Object-Detection,
# -Semantic-Segmentation, Mask2Former's D2SwinTransformer, whose outputs res2..res5 are norm0..norm3), neck and heads
# set aside with one line.


def _official_backbone(ape: bool = False, seed: int = 5) -> tuple[SwinConfig, dict]:
    from swinref.params import init_params

    cfg = get_config("T", embed_dim=8, depths="2,2", heads="1,2", window=4, img=32, classes=0)
    params = {k: v for k, v in init_params(cfg, seed=seed).items() if not k.startswith("norm.")}
    for i, dim in enumerate((8, 16)):
        params[f"norm{i}.weight"] = np.full(dim, 1.0 + i, np.float32)
        params[f"norm{i}.bias"] = np.full(dim, 0.25 * i, np.float32)
    if ape:
        if "ape" in SwinConfig.__dataclass_fields__:  # the config field (before it, the embedding is an extra)
            cfg = cfg.replace(ape=True)
        # [1, C, Hp, Wp] at the pretraining grid: 32 / 4 = 8
        params["absolute_pos_embed"] = np.linspace(-1, 1, 8 * 8 * 8, dtype=np.float32).reshape(1, 8, 8, 8)
    return cfg, params


def _whole_model(params: dict, heads: dict[str, int]) -> dict:
    sd = {"backbone." + k: v for k, v in params.items()}
    for module, n in heads.items():
        for j in range(n):
            sd[f"{module}layer{j}.weight"] = np.zeros(2, np.float32)
    return sd


@pytest.mark.parametrize("ape", [False, True], ids=["no-ape", "ape"])
def test_mask2former_pkl_reads_the_backbone_and_sets_the_heads_aside(tmp_path, ape):
    import pickle

    cfg, params = _official_backbone(ape)
    sd = _whole_model(params, {"sem_seg_head.pixel_decoder.": 3, "sem_seg_head.predictor.": 2, "criterion.": 1})
    sd["pixel_mean"], sd["pixel_std"] = np.zeros((3, 1, 1), np.float32), np.ones((3, 1, 1), np.float32)
    path = tmp_path / "model_final_f07440.pkl"
    with open(path, "wb") as f:  # what detectron2's model zoo files are: plain pickle of NumPy arrays
        pickle.dump({"model": sd, "__author__": "third_party", "matching_heuristics": True}, f)
    got, got_cfg, report = load_checkpoint_report(path)
    assert (report.container, report.layout, report.entry) == ("pickle", "official", "model")
    assert report.ignored_entries == ("__author__", "matching_heuristics")
    assert report.prefixes == ("backbone.",)
    assert report.left_out == ("criterion.", "pixel_mean", "pixel_std", "sem_seg_head.")
    assert report.notes[0] == ("read the backbone under 'backbone.'; set aside 8 tensors of the rest of the model: "
                               "criterion. (1), pixel_mean (1), pixel_std (1), sem_seg_head. (5)")
    assert sum("set aside" in n for n in report.notes) == 1
    assert got_cfg.img_size == (32, 32) and got_cfg.num_classes == 0 and getattr(got_cfg, "ape", ape) == ape
    for k, v in params.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    np.testing.assert_array_equal(got["norm.weight"], params["norm1.weight"])  # the last stage's norm


def load_checkpoint_report(path):
    from swinref.checkpoints import load_checkpoint

    return load_checkpoint(path)


def test_ape_grid_gives_the_pretraining_image_size(tmp_path):
    from safetensors.numpy import save_file

    cfg, params = _official_backbone(ape=True)
    params["absolute_pos_embed"] = np.zeros((1, 8, 12, 16), np.float32)  # pretrained at 48 x 64
    save_file(_whole_model(params, {"decode_head.": 2, "auxiliary_head.": 1}), str(tmp_path / "upernet.safetensors"))
    _, got_cfg, report = load_checkpoint_report(tmp_path / "upernet.safetensors")
    assert got_cfg.img_size == (48, 64) and report.left_out == ("auxiliary_head.", "decode_head.")
    bad = dict(params, absolute_pos_embed=np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(CheckpointError, match="absolute_pos_embed"):
        check_params(bad, got_cfg)


def test_cli_says_once_what_was_set_aside(tmp_path, capsys):
    from safetensors.numpy import save_file

    from swinref.cli import main

    _, params = _official_backbone()
    whole = _whole_model(params, {"neck.": 2, "rpn_head.": 1, "roi_head.": 3})
    save_file(whole, str(tmp_path / "mask_rcnn.safetensors"))
    assert main(["convert", str(tmp_path / "mask_rcnn.safetensors"), str(tmp_path / "b.safetensors")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "set aside" in line] == [
        "swinref: note: read the backbone under 'backbone.'; set aside 6 tensors of the rest of the model: neck. (2), "
        "roi_head. (3), rpn_head. (1)"]
    got, _ = load_state_dict(tmp_path / "b.safetensors")
    assert "norm0.weight" in got and not any(k.startswith(("neck", "roi_head")) for k in got)


# ---------------------------------------------------------------------------------------------------------------
# Writing a peer's names back: export_params / convert(layout=...) / `swinref convert --layout`.


def _classifier(version: int = 1, seed: int = 7) -> tuple[SwinConfig, dict]:
    from swinref.params import init_params

    cfg = get_config("T" if version == 1 else "V2-T", embed_dim=8, depths="2,2", heads="1,2", window=4, img=32,
                     classes=5)
    return cfg, init_params(cfg, seed=seed)


@pytest.mark.parametrize("layout", ["official", "openmmlab", "timm", "transformers", "torchvision"])
@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_export_writes_the_peers_names_and_reads_back(tmp_path, layout, ext):
    from swinref.checkpoints import export_params, layouts

    cfg, params = _classifier()
    if layout == "openmmlab":
        cfg = cfg.replace(num_classes=0)
        params = {k: v for k, v in params.items() if not k.startswith("head.")}
    out = tmp_path / f"{layout}{ext}"
    assert export_params(params, cfg, out, layout) == []
    sd = dict(np.load(out)) if ext == ".npz" else __import__("safetensors.numpy").numpy.load_file(str(out))
    want = layouts.get(layout).from_canonical(params, cfg)
    assert list(sd) == list(want) or set(sd) == set(want)
    for k in want:
        np.testing.assert_array_equal(sd[k], want[k], err_msg=k)
    got, report = read_checkpoint(out)
    assert report.layout == layout and report.stored_config is None
    for k, v in params.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_export_official_detection_backbone(tmp_path):
    from safetensors.numpy import load_file

    from swinref.checkpoints import export_params

    cfg, params = _official_backbone(ape=True)
    params["norm.weight"], params["norm.bias"] = params["norm1.weight"], params["norm1.bias"]  # as swinref reads it
    out = tmp_path / "det.safetensors"
    lines = export_params(params, cfg, out, "official", backbone_prefix=True)
    assert lines == ["the final norm is written as norm1 (a detection backbone has no other)"]
    sd = load_file(str(out))
    assert all(k.startswith("backbone.") for k in sd) and "backbone.norm.weight" not in sd
    assert {"backbone.norm0.weight", "backbone.norm1.bias", "backbone.absolute_pos_embed"} <= set(sd)
    got, got_cfg, report = load_checkpoint_report(out)
    assert report.prefixes == ("backbone.",) and report.out_indices == (0, 1) and got_cfg.img_size == (32, 32)
    for k, v in params.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_export_refuses_what_the_layout_cannot_hold(tmp_path):
    from swinref.checkpoints import export_params

    cfg, backbone = _official_backbone(ape=False)
    backbone["norm.weight"], backbone["norm.bias"] = backbone["norm1.weight"], backbone["norm1.bias"]
    for layout in ("timm", "torchvision"):
        with pytest.raises(CheckpointError, match=f"the {layout} layout cannot hold norm0.weight"):
            export_params(backbone, cfg, tmp_path / "x.safetensors", layout)
    ape_cfg, with_ape = _official_backbone(ape=True)
    with_ape["norm.weight"], with_ape["norm.bias"] = with_ape["norm1.weight"], with_ape["norm1.bias"]
    with pytest.raises(CheckpointError, match="the timm layout cannot hold absolute_pos_embed, norm0.weight"):
        export_params(with_ape, ape_cfg, tmp_path / "x.safetensors", "timm")
    ccfg, classifier = _classifier()
    with pytest.raises(CheckpointError, match="has one output norm per stage"):
        export_params(classifier, ccfg, tmp_path / "x.safetensors", "official", backbone_prefix=True)
    with pytest.raises(CheckpointError, match="not timm"):
        export_params(backbone, cfg, tmp_path / "x.safetensors", "timm", backbone_prefix=True)
    with pytest.raises(CheckpointError, match="choose one of"):
        export_params(classifier, ccfg, tmp_path / "x.safetensors", "caffe")
    with pytest.raises(CheckpointError, match=".safetensors or .npz"):
        export_params(classifier, ccfg, tmp_path / "x.pth", "timm")
    assert os.listdir(tmp_path) == []
    for layout in ("openmmlab", "transformers"):  # [1, C, Hp, Wp] as their [1, Hp*Wp, C] tokens, and back
        export_params(with_ape, ape_cfg, tmp_path / f"{layout}_ape.safetensors", layout)
        got, report = read_checkpoint(tmp_path / f"{layout}_ape.safetensors")
        assert report.layout == layout
        np.testing.assert_array_equal(got["absolute_pos_embed"], with_ape["absolute_pos_embed"])
    assert export_params(classifier, ccfg, tmp_path / "mm.npz", "openmmlab") == [
        "the classifier head is left out: the OpenMMLab backbones have none"]


def test_cli_convert_layout(tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    from swinref.cli import main

    _, params = _official_backbone()
    save_file(_whole_model(params, {"neck.": 1}), str(tmp_path / "det.safetensors"))
    out = tmp_path / "mm.safetensors"
    assert main(["convert", str(tmp_path / "det.safetensors"), str(out), "--layout", "openmmlab", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["layout"], data["read_layout"]) == ("openmmlab", "official")
    assert "stages.1.downsample.reduction.weight" not in load_file(str(out))  # a 2-stage model merges once
    assert "stages.0.downsample.reduction.weight" in load_file(str(out)) and "norm1.weight" in load_file(str(out))
    out = tmp_path / "official_det.safetensors"
    assert main(["convert", str(tmp_path / "det.safetensors"), str(out), "--layout", "official",
                 "--backbone-prefix"]) == 0
    captured = capsys.readouterr()
    assert "in official's names under backbone." in captured.out
    assert "swinref: note: the final norm is written as norm1" in captured.err
    assert set(load_file(str(out))) == {"backbone." + k for k in params}
    assert main(["convert", str(tmp_path / "det.safetensors"), str(tmp_path / "t.safetensors"), "--layout",
                 "timm"]) == 2
    assert "the timm layout cannot hold norm0.weight" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "det.safetensors"), str(tmp_path / "s.safetensors"),
                 "--backbone-prefix"]) == 2
    assert "give --layout official" in capsys.readouterr().err
    assert not (tmp_path / "t.safetensors").exists() and not (tmp_path / "s.safetensors").exists()


def test_openmmlab_token_position_embedding_is_the_official_grid():
    # tools/make_backbone_fixtures.py: the same weights saved by mmpretrain (use_abs_pos_embed: [1, Hp*Wp, C]
    # tokens) and as the official detection backbone ([1, C, Hp, Wp], through the inverse of mmdet's
    # swin_converter): swinref reads both to the same params, bit for bit.
    data = Path(__file__).parent / "data" / "backbone"
    mm, mm_report = read_checkpoint(data / "mmpretrain_ape_epoch_300.pth")
    official, official_report = read_checkpoint(data / "official_ape_mask_rcnn.pth")
    assert (mm_report.layout, official_report.layout) == ("openmmlab", "official")
    assert mm["absolute_pos_embed"].shape == (1, 4, 56, 56) and set(mm) == set(official)
    for k in official:
        np.testing.assert_array_equal(mm[k], official[k], err_msg=k)
