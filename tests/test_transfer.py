"""Resolution transfer (swinref.transfer) against what torch and timm compute.

tests/data/transfer was written by tools/make_transfer_expected.py: torch's bicubic interpolation of random grids,
a V1 fixture moved from 64 px / window 4 to 128 px / window 8 by the official load_pretrained expression and run
in timm, and a V2 fixture moved to window 8 with the old window as pretrained window and run in timm.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import swinref
from swinref.checkpoints import load_checkpoint, load_state_dict
from swinref.cli import main
from swinref.errors import CheckpointError
from swinref.transfer import bicubic_resize, resize_bias_table, resize_v1_tables, v2_transfer_config

DATA = pathlib.Path(__file__).parent / "data"
EXPECTED = DATA / "transfer"
V1_CKPT = DATA / "peers" / "timm_v1_clamp" / "model.safetensors"
V2_CKPT = DATA / "peers_v2" / "timm_v2_pad" / "model.safetensors"


def _meta() -> dict:
    return json.loads((EXPECTED / "meta.json").read_text())


@pytest.mark.parametrize("case", [c["name"] for c in json.loads((EXPECTED / "meta.json").read_text())["bicubic"]])
def test_bicubic_equals_torch_interpolate(case: str) -> None:
    z = np.load(EXPECTED / "bicubic.npz")
    x, want = z[case + ".in"], z[case + ".out"]
    got = bicubic_resize(x, want.shape[-2:])
    assert got.dtype == x.dtype
    # float64: rounding only. float32: torch computes the source coordinates and weights in float32 (errors up to
    # ~3e-6 of the scale measured), swinref in float64 and rounds once.
    tol = 1e-13 if x.dtype == np.float64 else 1e-5
    assert np.abs(got.astype(np.float64) - want).max() <= tol * max(1.0, np.abs(want).max())


def test_bicubic_same_size_is_identity_and_constant_is_kept() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5, 5))
    np.testing.assert_allclose(bicubic_resize(x, (5, 5)), x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(bicubic_resize(np.full((3, 4), 2.5), (9, 7)), 2.5, rtol=0, atol=1e-14)


def test_v1_load_at_another_window_resizes_tables_like_the_official_fine_tuning() -> None:
    z = np.load(EXPECTED / "v1.npz")
    params, cfg, report = load_checkpoint(V1_CKPT, img=128, window=8)
    assert [s.window for s in swinref.plan(cfg, policy="official").stages] == [(8, 8), (8, 8), (8, 8), (4, 4)]
    tables = [k for k in z.files if k.endswith("relative_position_bias_table")]
    assert len(tables) == sum(cfg.depths)
    for k in tables:
        # torch resized the float32 table in float32; swinref in float64, rounded once to float32.
        np.testing.assert_allclose(params[k], z[k], rtol=0, atol=1e-5 * max(1.0, np.abs(z[k]).max()), err_msg=k)
    assert len(report.resized) == 4 and report.config == cfg
    assert "window 4 to 8" in report.resized[0] and "window 2 to 4" in report.resized[3]


def test_v1_transferred_model_reproduces_timm_with_official_tables() -> None:
    z = np.load(EXPECTED / "v1.npz")
    model = swinref.load(V1_CKPT, img=128, window=8, policy="timm")
    assert model.report.resized, "Model.report must say what was resized"
    got = model(z["input"])
    assert np.abs(got - z["logits"]).max() <= 1e-4 * max(1.0, np.abs(z["logits"]).max())


def test_v1_without_transfer_reports_nothing() -> None:
    model = swinref.load(V1_CKPT)
    assert model.report.resized == ()


def test_resize_keeps_tables_with_another_head_count_for_the_shape_check() -> None:
    cfg = swinref.get_config("T", img=384, window=12)
    params = {"layers.0.blocks.0.attn.relative_position_bias_table": np.zeros((169, 5), np.float32)}
    out, lines = resize_v1_tables(params, cfg)
    assert out["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (169, 5) and lines == []
    with pytest.raises(CheckpointError, match="not a square"):
        resize_bias_table(np.zeros((170, 3)), 7)


def test_swin_t_224_to_384_window_12_shapes() -> None:
    # The official fine-tuning 224/7 -> 384/12: every table 13x13 -> 23x23 (the last stage too: 12x12 tokens).
    src = swinref.get_config("T")
    params = {f"layers.{i}.blocks.0.attn.relative_position_bias_table": np.ones((169, h), np.float32)
              for i, h in enumerate(src.num_heads)}
    out, lines = resize_v1_tables(params, src.replace(img=384, window=12))
    assert all(v.shape[0] == 529 for v in out.values()) and len(lines) == 4
    assert all(np.allclose(v, 1.0, atol=1e-6) for v in out.values())  # a constant table stays constant


def test_v2_load_at_another_window_reuses_the_mlp_with_the_old_window_as_pretrained() -> None:
    z = np.load(EXPECTED / "v2.npz")
    meta = _meta()["v2"]["constructor"]
    src = swinref.SwinConfig(**json.loads((DATA / "peers_v2" / "timm_v2_pad" / "meta.json").read_text())[
        "swinref_config"])
    for dtype, key, tol in (("float32", "logits", 1e-4), ("float64", "logits64", 1e-9)):
        model = swinref.load(V2_CKPT, config=src, img=64, window=8, dtype=dtype, policy="timm")
        assert model.config.pretrained_window_sizes == tuple(meta["pretrained_window_sizes"]) == (4, 4)
        assert any("pretrained_window_sizes 4,4" in line for line in model.report.resized)
        got = model(z["input"].astype(dtype))
        assert np.abs(got - z[key]).max() <= tol * max(1.0, np.abs(z[key]).max()), dtype


def test_v2_transfer_keeps_existing_pretrained_windows() -> None:
    ft = swinref.get_config("swinv2_base_patch4_window12to16_192to256_22kto1k_ft")
    out, lines = v2_transfer_config(ft, ft.replace(img=384, window=24))
    assert out.pretrained_window_sizes == (12, 12, 12, 6)  # the MLP still knows window 12, not 16
    base = swinref.get_config("swinv2_base_patch4_window12_192_22k")
    out, _ = v2_transfer_config(base, base.replace(img=256, window=16, classes=1000))
    assert out.pretrained_window_sizes == (12, 12, 12, 6)  # the official 12to16 config
    same, lines = v2_transfer_config(base, base)
    assert same is base and lines == []


def test_explicit_pretrained_windows_win(tmp_path) -> None:
    src = swinref.SwinConfig(**json.loads((DATA / "peers_v2" / "timm_v2_pad" / "meta.json").read_text())[
        "swinref_config"])
    _, cfg = load_state_dict(V2_CKPT, config=src, window=8, pretrained_window_sizes=(2, 2))
    assert cfg.pretrained_window_sizes == (2, 2)


def test_cli_predict_at_another_size_says_what_it_resized(tmp_path, capsys) -> None:
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(image)
    # The resized tables follow the official build rule (stage 3 clamps to 4): a policy that keeps build windows.
    code = main(["predict", "--img", "128", "--window", "8", "--policy", "timm", "--weights", str(V1_CKPT),
                 str(image), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resized stage 0: relative_position_bias_table" in captured.err
    assert json.loads(captured.out)["config"]["window_size"] == 8


def test_cli_convert_writes_the_resized_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "t128.safetensors"
    assert main(["convert", "--img", "128", "--window", "8", str(V1_CKPT), str(out)]) == 0
    assert "resized stage 3" in capsys.readouterr().err
    z = np.load(EXPECTED / "v1.npz")
    model = swinref.load(out, policy="timm")  # the written file holds the transferred weights and config
    assert model.report.resized == () and model.config.window_size == 8
    assert np.abs(model(z["input"]) - z["logits"]).max() <= 1e-4 * max(1.0, np.abs(z["logits"]).max())


def test_torchvision_v2_note_on_the_cli(tmp_path, capsys) -> None:
    tv = DATA / "peers_v2" / "tv_v2_pad" / "model.pth"
    out = tmp_path / "tv.npz"
    assert main(["convert", "--config", "V2-T", "--depths", "2,2", "--heads", "2,4", "--embed-dim", "16",
                 "--window", "4", "--img", "60x52", "--classes", "10", str(tv), str(out)]) == 0
    assert "note: torchvision V2 files record no pretrained window sizes" in capsys.readouterr().err


@pytest.mark.peers
def test_bicubic_equals_torch_on_random_tables() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    for src, dst in ((7, 12), (12, 7), (8, 16), (12, 24), (6, 8), (2, 7)):
        table = rng.standard_normal(((2 * src - 1) ** 2, 4))
        t = torch.from_numpy(table)
        n1, n2 = 2 * src - 1, 2 * dst - 1
        ref = torch.nn.functional.interpolate(t.permute(1, 0).view(1, 4, n1, n1), size=(n2, n2), mode="bicubic")
        ref = ref.view(4, n2 * n2).permute(1, 0).numpy()
        assert np.abs(resize_bias_table(table, dst) - ref).max() < 1e-13


@pytest.mark.peers
def test_timm_simple_resize_equals_the_official_one() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from timm.layers import resize_rel_pos_bias_table_simple

    table = np.random.default_rng(12).standard_normal((13 * 13, 3))
    got = resize_rel_pos_bias_table_simple(torch.from_numpy(table), (12, 12), (23 * 23, 3)).numpy()
    assert np.abs(resize_bias_table(table, 12) - got).max() < 1e-13


@pytest.mark.peers
@pytest.mark.slow
def test_full_size_swin_t_224_to_384_window_12_matches_timm_with_official_tables(tmp_path) -> None:
    # The official fine-tuning case: Swin-T weights at 224 / window 7 loaded at 384 / window 12. timm is built at
    # 384 / 12 and given the tables resized by the official expression (its own checkpoint_filter_fn would use
    # its geometric resize instead).
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    import sys

    from timm.models.swin_transformer import SwinTransformer

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
    import peers

    torch.set_num_threads(2)
    src = peers.build("timm", swinref.get_config("T"), seed=5)
    path = peers.save("timm", src, tmp_path / "t224")
    big = SwinTransformer(img_size=384, window_size=12, embed_dim=96, depths=(2, 2, 6, 2),
                          num_heads=(3, 6, 12, 24)).eval()
    sd = src.state_dict()
    for k, v in sd.items():
        if k.endswith("relative_position_bias_table"):
            nH = v.shape[1]
            sd[k] = torch.nn.functional.interpolate(v.permute(1, 0).view(1, nH, 13, 13), size=(23, 23),
                                                    mode="bicubic").view(nH, 529).permute(1, 0)
    big.load_state_dict(sd)
    x = np.random.default_rng(6).standard_normal((1, 3, 384, 384)).astype(np.float32)
    with torch.no_grad():
        want = big(torch.from_numpy(x)).numpy()
    model = swinref.load(path, img=384, window=12, policy="timm")
    assert len(model.report.resized) == 4
    err = float(np.abs(model(x) - want).max())
    print(f"Swin-T 224/7 -> 384/12 vs timm with official tables: max |diff| {err:.3g}")
    assert err <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_cli_convert_v2_to_another_window_keeps_the_mlp_and_sets_pretrained_windows(tmp_path, capsys) -> None:
    # official.pth states its windows (4, 4) and no pretrained windows through its buffers; loaded at window 8
    # the MLP is reused with the old windows (4, 4) as pretrained windows, as the official 12 -> 16 fine-tuning.
    src = DATA / "peers_v2" / "timm_v2_pad" / "official.pth"
    out = tmp_path / "v2w8.safetensors"
    assert main(["convert", "--img", "64", "--window", "8", str(src), str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert "resized continuous position bias: windows 4,4 -> 8,8" in captured.err
    written = json.loads(captured.out)
    assert written["config"]["pretrained_window_sizes"] == [4, 4] and written["config"]["window_size"] == 8
    z = np.load(EXPECTED / "v2.npz")
    model = swinref.load(out, policy="timm")
    err = np.abs(model(z["input"].astype(np.float32)) - z["logits"]).max()
    assert err <= 1e-4 * max(1.0, np.abs(z["logits"]).max())
