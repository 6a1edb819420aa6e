"""Video Swin against its peers: torchvision's SwinTransformer3d and mmaction2's Recognizer3D(SwinTransformer3D).

tests/data/video/ was written by tools/make_video_fixtures.py (see its docstring for what each case exercises):
tiny models saved by each peer in its own checkpoint format, a clip, and every point the peer lets us hook, in
float64 (and the float32 logits). Without torch, swinref.load(<the peer's file>) with no config must detect the
architecture and layout, and its trace must equal the peer's points: float64 within 1e-10, float32 logits within
1e-5 (relative to max |output| where that exceeds 1). The loaders write the same layouts back (round trip), and
inflation of a 2-D checkpoint equals mmaction2's own inflate_weights.

With the peers installed (`peers`): what swinref writes loads into the peer models, and tiny random models agree
live. Full-size swin3d_t/s/b against torchvision at 32x224x224 and 18x200x168 are `slow`.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
from math import erf
from typing import Any

import numpy as np
import pytest

import swinref
from swinref.checkpoints import export_params, load_checkpoint, read_checkpoint
from swinref.checkpoints.detect import infer_config
from swinref.checkpoints.detect_video import relative_position_index_3d, video_window_hints, windows_for_rows
from swinref.checkpoints.files import find_state_dict, read_safetensors
from swinref.checkpoints.pth import read_pth
from swinref.checkpoints.video import inflate
from swinref.errors import CheckpointError

DATA = pathlib.Path(__file__).parent / "data" / "video"
TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"
FORWARD = {"tv_shift_pad": ("model.pth", "torchvision3d"), "tv_clamp_t": ("model.pth", "torchvision3d"),
           "mma_shift_pad": ("mmaction.pth", "mmaction")}
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


def _meta(case: str) -> dict:
    return json.loads((DATA / case / "meta.json").read_text())


@functools.lru_cache(maxsize=None)
def _io(case: str, name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / case / name) as z:
        return {k: z[k] for k in z.files}


def _checkpoint(case: str) -> pathlib.Path:
    return DATA / case / FORWARD[case][0]


def _assert_close(name: str, got: Any, want: np.ndarray, dtype: str) -> None:
    got = np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != peer {want.shape}"
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert err <= TOLERANCE[dtype] * scale, f"{name}: max |diff| {err:.3g} > {TOLERANCE[dtype] * scale:.3g}"


def _raw_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
    obj, _ = read_pth(str(path))
    return find_state_dict(obj, str(path))[0]


# ---------------------------------------------------------------------------------------------------------------
# Reading the peers' files: layout, architecture, forward pass


@pytest.mark.parametrize("case", sorted(FORWARD))
def test_detects_layout_and_architecture(case: str) -> None:
    params, cfg, report = load_checkpoint(_checkpoint(case))
    assert report.layout == FORWARD[case][1]
    assert cfg.is_video
    want = _meta(case)["swinref_config"]
    for key in ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "num_classes", "mlp_ratio"):
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == want[key], key
    assert not any(k.endswith("relative_position_index") for k in params)
    assert report.dropped and all(k.endswith("relative_position_index") for k in report.dropped)


@pytest.mark.parametrize("case", sorted(FORWARD))
def test_every_point_equals_the_peer_in_float64(case: str) -> None:
    io = _io(case, "io64.npz")
    model = swinref.load(_checkpoint(case), dtype="float64")
    trace = model.trace(io["input"].astype(np.float64))
    points = [k for k in io if k != "input"]
    assert {"patch_embed", "norm", "pooled", "logits", "layers.0.downsample", "layers.1.blocks.1"} <= set(points)
    for name in points:
        _assert_close(name, trace[name], io[name], "float64")


@pytest.mark.parametrize("case", sorted(FORWARD))
def test_float32_logits_equal_the_peer(case: str) -> None:
    x = _io(case, "io64.npz")["input"]
    assert x.dtype == np.float32  # both peer runs took exactly these values
    model = swinref.load(_checkpoint(case), dtype="float32")
    _assert_close("logits", model(x), _io(case, "io.npz")["logits"], "float32")


def test_official_and_mmaction_names_read_to_the_same_params() -> None:
    official, rep_official = read_checkpoint(DATA / "mma_shift_pad" / "official.pth")
    mma, rep_mma = read_checkpoint(DATA / "mma_shift_pad" / "mmaction.pth")
    assert rep_official.layout == rep_mma.layout == "mmaction"
    assert sorted(official) == sorted(mma)
    assert all(np.array_equal(official[k], mma[k]) for k in mma)
    assert "norm.weight" in mma and "norm2.weight" not in mma  # mmaction2 1.x's final norm is norm{L-1}
    assert not swinref.load(DATA / "mma_shift_pad" / "mmaction.pth").is_backbone


def test_window_comes_from_the_saved_index() -> None:
    # (4, 3, 3): 7*5*5 = 175 rows, which also fit (1, 13, 4), (3, 4, 4)... only the index tells
    assert len(windows_for_rows(175)) > 1
    _, cfg, _ = load_checkpoint(_checkpoint("tv_shift_pad"))
    assert cfg.window_size == (4, 3, 3)


def test_window_without_the_index_and_ambiguity(tmp_path) -> None:
    params, cfg, _ = load_checkpoint(_checkpoint("tv_clamp_t"))
    out = tmp_path / "tv.safetensors"
    export_params(params, cfg, out, "torchvision")  # no derived buffers written
    _, again, report = load_checkpoint(out)
    assert report.dropped == () and again.window_size == (4, 3, 3)  # the one window with Wh = Ww > 1
    # 105 rows = 3*5*7: no window with Wh = Ww fits, and without an index swinref refuses to guess
    odd = {k: (np.zeros((105, v.shape[1])) if k.endswith("bias_table") else v) for k, v in params.items()}
    with pytest.raises(CheckpointError, match="fit the windows"):
        infer_config(odd, {}, "odd.pth")
    # the index still decides when it is saved
    fits = {"window_size": (2, 3, 4)}
    assert video_window_hints({"layers.0.blocks.0.attn.relative_position_index": relative_position_index_3d(
        (2, 3, 4))}, odd) == fits


# ---------------------------------------------------------------------------------------------------------------
# Writing the peers' layouts back


@pytest.mark.parametrize("case,layout,source", [
    ("tv_shift_pad", "torchvision", "model.pth"),
    ("mma_shift_pad", "mmaction", "mmaction.pth"),
    ("mma_shift_pad", "official", "official.pth"),
])
def test_round_trip_gives_the_peers_own_state_dict(case, layout, source, tmp_path) -> None:
    original = _raw_state_dict(DATA / case / source)
    params, cfg, _ = load_checkpoint(DATA / case / source)
    out = tmp_path / "out.safetensors"
    export_params(params, cfg, out, layout)
    written, _, _ = read_safetensors(str(out))
    kept = {k: v for k, v in original.items() if not k.endswith("relative_position_index")}
    assert sorted(written) == sorted(kept)
    assert all(np.array_equal(written[k], kept[k]) for k in kept)
    again, again_cfg, _ = load_checkpoint(out)
    assert again_cfg == cfg and all(np.array_equal(again[k], params[k]) for k in params)


@pytest.mark.parametrize("layout", ["timm", "transformers", "openmmlab"])
def test_video_params_refuse_image_layouts(layout, tmp_path) -> None:
    params, cfg, _ = load_checkpoint(_checkpoint("tv_clamp_t"))
    with pytest.raises(CheckpointError, match="no Video Swin model"):
        export_params(params, cfg, tmp_path / "x.safetensors", layout)
    assert not (tmp_path / "x.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
# Inflation 2-D -> 3-D


@pytest.mark.parametrize("label", ["same", "resize"])
def test_inflation_equals_mmaction_inflate_weights(label: str) -> None:
    meta = _meta("inflate")["results"][f"inflated_{label}.npz"]
    params, cfg, _ = load_checkpoint(DATA / "inflate" / "swin2d.pth")
    got, cfg3d = inflate(params, cfg, window=tuple(meta["window_size"]), patch_t=meta["patch_size"][0])
    want = dict(_io("inflate", f"inflated_{label}.npz"))
    last = cfg.num_layers - 1
    want = {("norm" + k[len(f"norm{last}"):] if k.startswith(f"norm{last}.") else k): v for k, v in want.items()}
    assert sorted(got) == sorted(want)  # the 2-D head is not carried over, as in the peer
    for name, value in want.items():
        if name.endswith("relative_position_bias_table") and label == "resize":
            # torch resizes in float32, swinref in float64 then rounds
            assert np.abs(got[name] - value).max() <= 5e-6 * max(1.0, float(np.abs(value).max())), name
        else:
            assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name
    assert cfg3d.is_video and cfg3d.window_size == tuple(meta["window_size"]) and cfg3d.num_classes == 0


def test_inflated_model_on_a_still_clip_is_the_image_model() -> None:
    """The reason for the rule: frames repeated in time embed as the image did and attend to identical copies
    with identical biases, so the video model of a still clip gives the image model's logits."""
    params, cfg, _ = load_checkpoint(DATA / "inflate" / "swin2d.pth")
    params = {k: v.astype(np.float64) for k, v in params.items()}
    head = {"weight": params["head.weight"], "bias": params["head.bias"]}
    image = np.random.default_rng(0).standard_normal((1, 3, 96, 96))
    want = swinref.from_params(params, cfg, dtype="float64")(image)
    for frames, window in ((4, (2, 3, 3)), (8, (2, 3, 3))):  # 2 and 4 temporal tokens: no / a temporal shift
        video, vcfg = inflate(params, cfg, window=window, head=head, clip=(frames, 96, 96))
        clip = np.repeat(image[:, :, None], frames, axis=2)
        got = swinref.from_params(video, vcfg, dtype="float64")(clip)
        assert np.abs(got - want).max() < 1e-9


def test_inflation_refuses_what_it_cannot_inflate() -> None:
    params, cfg, _ = load_checkpoint(_checkpoint("tv_clamp_t"))
    with pytest.raises(CheckpointError, match="video model already"):
        inflate(params, cfg)


# ---------------------------------------------------------------------------------------------------------------
# The bias-index quirk


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b


def _unshifted_attention(x: np.ndarray, p: dict, prefix: str, window, index: np.ndarray, heads: int) -> np.ndarray:
    """The attention branch of an unshifted 3-D block, written out: norm1, pad at the end, windows, attention with
    the given [N, N] index into the bias table, reverse, crop. x: [B, T, H, W, C]."""
    B, T, H, W, C = x.shape
    y = _layer_norm(x, p[prefix + "norm1.weight"], p[prefix + "norm1.bias"])
    pads = [(-n) % w for n, w in zip((T, H, W), window)]
    y = np.pad(y, [(0, 0)] + [(0, q) for q in pads] + [(0, 0)])
    Tp, Hp, Wp = y.shape[1:4]
    wd, wh, ww = window
    win = y.reshape(B, Tp // wd, wd, Hp // wh, wh, Wp // ww, ww, C).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    win = win.reshape(-1, wd * wh * ww, C)
    qkv = win @ p[prefix + "attn.qkv.weight"].T + p[prefix + "attn.qkv.bias"]
    q, k, v = qkv.reshape(len(win), -1, 3, heads, C // heads).transpose(2, 0, 3, 1, 4)
    n = wd * wh * ww
    bias = p[prefix + "attn.relative_position_bias_table"][index.reshape(-1)].reshape(n, n, heads).transpose(2, 0, 1)
    a = (q * (C // heads) ** -0.5) @ k.transpose(0, 1, 3, 2) + bias
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(len(win), n, C) @ p[prefix + "attn.proj.weight"].T
    o = o + p[prefix + "attn.proj.bias"]
    o = o.reshape(B, Tp // wd, Hp // wh, Wp // ww, wd, wh, ww, C).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return o.reshape(B, Tp, Hp, Wp, C)[:, :T, :H, :W]


def test_clamped_window_uses_the_sliced_full_window_index() -> None:
    """Where H and W are clamped below the window (tv_shift_pad's stage 2: grid 5x2x2, window (4, 3, 3) ->
    (4, 2, 2)), torchvision and mmaction take index[:N, :N] of the FULL window's index. Those are not the
    clamped window's own offsets; the peer's output follows the sliced index, and so does swinref."""
    full, clamped = (4, 3, 3), (4, 2, 2)
    n = int(np.prod(clamped))
    sliced = relative_position_index_3d(full)[:n, :n]
    coords = np.stack(np.meshgrid(*[np.arange(w) for w in clamped], indexing="ij")).reshape(3, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (np.asarray(full) - 1)[:, None, None]
    geometric = rel[0] * 5 * 5 + rel[1] * 5 + rel[2]  # the clamped window's offsets in the full table
    assert not np.array_equal(sliced, geometric)
    meta = {b["block"]: b for b in _meta("tv_shift_pad")["blocks"]}
    assert meta["layers.2.blocks.0"]["window"] == list(clamped)
    assert not meta["layers.2.blocks.0"]["sliced_index_is_geometric"]

    io = _io("tv_shift_pad", "io64.npz")
    params, _, _ = load_checkpoint(_checkpoint("tv_shift_pad"))
    x = io["layers.1.downsample"]
    want = io["layers.2.blocks.0"]
    prefix = "layers.2.blocks.0."

    def block(index):
        y = x + _unshifted_attention(x, params, prefix, clamped, index, heads=4)
        h = _layer_norm(y, params[prefix + "norm2.weight"], params[prefix + "norm2.bias"])
        h = h @ params[prefix + "mlp.fc1.weight"].T + params[prefix + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2)))
        return y + h @ params[prefix + "mlp.fc2.weight"].T + params[prefix + "mlp.fc2.bias"]

    assert np.abs(block(sliced) - want).max() < 1e-10
    assert np.abs(block(geometric) - want).max() > 1e-3
    trace = swinref.load(_checkpoint("tv_shift_pad"), dtype="float64").trace(io["input"].astype(np.float64))
    assert np.abs(np.asarray(trace["layers.2.blocks.0"]) - want).max() < 1e-10


# ---------------------------------------------------------------------------------------------------------------
# With the peers installed


def _torch():
    return pytest.importorskip("torch")


def _tv_model(cfg, seed: int = 0):
    torch = _torch()
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    sys.path.insert(0, str(TOOLS))
    from make_peer_fixtures import randomize_

    torch.manual_seed(seed)
    model = SwinTransformer3d(patch_size=list(cfg.patch_size), embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                              num_heads=list(cfg.num_heads), window_size=list(cfg.window_size),
                              num_classes=cfg.num_classes, stochastic_depth_prob=0.0)
    randomize_(model, seed)
    return model.eval()


def _mma_recognizer(cfg, seed: int = 0):
    _torch()
    sys.path.insert(0, str(TOOLS))
    from openmmlab import import_mmaction

    if import_mmaction() is None:
        pytest.skip("mmaction2 is not installed")
    from make_video_fixtures import mma_build

    backbone = dict(arch=dict(embed_dims=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads)),
                    pretrained2d=False, patch_size=list(cfg.patch_size), window_size=list(cfg.window_size),
                    drop_path_rate=0.0, out_indices=(cfg.num_layers - 1,))
    return mma_build(backbone, cfg.num_classes, seed)


def _strict_load(model, path: pathlib.Path) -> None:
    """load_state_dict: nothing unexpected, and nothing missing but the derived index buffers."""
    torch = _torch()
    from safetensors.torch import load_file

    result = model.load_state_dict(load_file(str(path)), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.endswith("relative_position_index") for k in result.missing_keys)
    del torch


@pytest.mark.peers
@pytest.mark.parametrize("layout", ["torchvision", "mmaction"])
def test_written_files_load_into_the_peer_and_agree(layout: str, tmp_path) -> None:
    torch = _torch()
    params, cfg, _ = load_checkpoint(_checkpoint("tv_shift_pad"))
    out = tmp_path / "w.safetensors"
    export_params(params, cfg, out, layout)
    peer = _tv_model(cfg, seed=5) if layout == "torchvision" else _mma_recognizer(cfg, seed=5)
    _strict_load(peer, out)
    x = _io("tv_shift_pad", "io64.npz")["input"].astype(np.float64)
    with torch.no_grad():
        peer = peer.double()
        t = torch.from_numpy(x)
        logits = peer(t) if layout == "torchvision" else peer.cls_head(peer.backbone(t))
    _assert_close("logits", logits.numpy(), _io("tv_shift_pad", "io64.npz")["logits"], "float64")


@pytest.mark.peers
def test_mmaction_and_torchvision_agree_on_the_same_weights() -> None:
    """Both peers follow one window rule: the mmaction fixture's weights in torchvision give its logits."""
    torch = _torch()
    params, cfg, _ = load_checkpoint(_checkpoint("mma_shift_pad"))
    from swinref.checkpoints.video import export_state_dict

    sd, _ = export_state_dict(params, cfg, "torchvision")
    model = _tv_model(cfg).double()
    model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in sd.items()}, strict=False)
    x = torch.from_numpy(_io("mma_shift_pad", "io64.npz")["input"].astype(np.float64))
    with torch.no_grad():
        _assert_close("logits", model(x).numpy(), _io("mma_shift_pad", "io64.npz")["logits"], "float64")


@pytest.mark.peers
@pytest.mark.parametrize("window", [(2, 3, 3), (2, 4, 4)])
def test_inflation_equals_mmaction_live(window, tmp_path) -> None:
    """mmaction2's inflate_weights on the committed 2-D file, run now, with a float64 table resize."""
    _torch()
    sys.path.insert(0, str(TOOLS))
    from openmmlab import import_mmaction

    if import_mmaction() is None:
        pytest.skip("mmaction2 is not installed")
    from make_video_fixtures import inflate_with_mmaction

    meta = _meta("inflate")
    want = inflate_with_mmaction(DATA / "inflate" / "swin2d.pth", meta["arch"], (2, 4, 4), window)
    params, cfg, _ = load_checkpoint(DATA / "inflate" / "swin2d.pth")
    got, _ = inflate(params, cfg, window=window)
    for name, value in want.items():
        name = "norm" + name[5:] if name.startswith("norm3.") else name
        assert np.abs(got[name] - value).max() <= 5e-6, name


# ---------------------------------------------------------------------------------------------------------------
# Full size (slow)

FULL = [(v, clip, dtype) for v in ("swin3d_t", "swin3d_s", "swin3d_b") for clip in ((32, 224, 224), (18, 200, 168))
        for dtype in ("float32", "float64")]


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.parametrize("variant,clip,dtype", FULL, ids=[f"{v}-{'x'.join(map(str, c))}-{d}" for v, c, d in FULL])
def test_full_size_against_torchvision(variant, clip, dtype, tmp_path) -> None:
    """torchvision's swin3d_* with random weights, saved by torch.save and read by swinref.load with no config:
    logits within 1e-4 (float32) / 1e-9 (float64) at the Kinetics clip and at an odd clip (every axis clamped or
    padded somewhere)."""
    torch = _torch()
    import torchvision.models.video as tvv

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = getattr(tvv, variant)().eval()
    sys.path.insert(0, str(TOOLS))
    from make_peer_fixtures import randomize_

    randomize_(model, 0)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    swin = swinref.load(path, dtype=dtype)
    assert swin.config.is_video and swin.report.layout == "torchvision3d"
    x = np.random.default_rng(1).standard_normal((1, 3, *clip)).astype(dtype)
    with torch.no_grad():
        want = (model.double() if dtype == "float64" else model)(torch.from_numpy(x)).numpy()
    err = np.abs(np.asarray(swin(x), dtype=np.float64) - want).max() / max(1.0, float(np.abs(want).max()))
    print(f"\n{variant} {'x'.join(map(str, clip))} {dtype}: max |logit diff| / max(1, max |logit|) = {err:.2g}")
    assert err <= (1e-4 if dtype == "float32" else 1e-9), f"{variant} {clip} {dtype}: {err:.3g}"


# ---------------------------------------------------------------------------------------------------------------
# The command line


def test_convert_inflate_and_video_layouts_on_the_command_line(tmp_path, capsys) -> None:
    from swinref.cli import main

    src = DATA / "inflate" / "swin2d.pth"
    out = tmp_path / "t3d.safetensors"
    assert main(["convert", str(src), str(out), "--inflate", "2x4x4"]) == 0
    assert "Video Swin" in capsys.readouterr().out
    params, cfg, _ = load_checkpoint(out)
    want, want_cfg = inflate(*load_checkpoint(src)[:2], window=(2, 4, 4))
    assert cfg.window_size == (2, 4, 4) and cfg.num_classes == 0 and sorted(params) == sorted(want)
    assert all(np.array_equal(params[k], want[k]) for k in want)
    tv = tmp_path / "tv.safetensors"
    assert main(["convert", str(_checkpoint("mma_shift_pad")), str(tv), "--layout", "torchvision"]) == 0
    assert read_checkpoint(tv)[1].layout == "torchvision3d"
    assert main(["convert", str(src), str(tmp_path / "x.safetensors"), "--inflate", "2x4"]) == 2
    assert "T x H x W" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_full_size_against_mmaction(dtype, tmp_path) -> None:
    """mmaction2's Recognizer3D (Swin-T, window 8x7x7) on the weights swinref writes in mmaction2's layout, at the
    odd clip 18x200x168: logits within 1e-4 (float32) / 1e-9 (float64) of swinref's."""
    torch = _torch()
    torch.set_num_threads(2)
    cfg = swinref.get_config("swin3d_t")
    params = swinref.random_model(cfg, dtype="float64").params
    out = tmp_path / "mma.safetensors"
    export_params({k: np.asarray(v) for k, v in params.items()}, cfg, out, "mmaction")
    peer = _mma_recognizer(cfg, seed=1)
    peer = peer.double() if dtype == "float64" else peer  # before loading: float64 weights stay float64
    _strict_load(peer, out)
    x = np.random.default_rng(2).standard_normal((1, 3, 18, 200, 168)).astype(dtype)
    with torch.no_grad():
        want = peer.cls_head(peer.backbone(torch.from_numpy(x))).numpy()
    got = np.asarray(swinref.from_params(params, cfg, dtype=dtype)(x), dtype=np.float64)
    err = np.abs(got - want).max() / max(1.0, float(np.abs(want).max()))
    print(f"\nmmaction2 swin3d_t 18x200x168 {dtype}: max |logit diff| / max(1, max |logit|) = {err:.2g}")
    assert err <= (1e-4 if dtype == "float32" else 1e-9)


def test_model_save_writes_the_video_layouts(tmp_path) -> None:
    model = swinref.load(_checkpoint("tv_clamp_t"), dtype="float64")
    for layout, read_as in (("torchvision", "torchvision3d"), ("official", "mmaction"), ("swinref", None)):
        out = tmp_path / f"{layout}.safetensors"
        model.save(out, layout)
        params, cfg, report = load_checkpoint(out)
        assert cfg.is_video and (read_as is None or report.layout == read_as)
        assert all(np.array_equal(params[k], np.asarray(model.params[k])) for k in params)
