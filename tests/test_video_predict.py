"""Video prediction: the official evaluation sampling and preprocessing (swinref.video) and `swinref predict` on
clips. Tiny synthetic clips are written with PyAV in tmp_path (skipped when av is not installed); with the peers
installed, the views equal mmaction2's own test pipeline and the resize equals cv2's, value for value."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from swinref import video
from swinref.errors import InputError
from swinref.video import VideoPipeline

SMALL = VideoPipeline(clip_len=4, frame_interval=2, num_clips=3, short_side=32, crop_size=32)


def test_sampling_follows_mmaction_test_mode() -> None:
    # a clip spans (4 - 1) * 2 + 1 = 7 frames; starts round(k * (20 - 7) / 2) = 0, round(6.5) = 6, 13
    assert video.sample_indices(20, SMALL).tolist() == [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]]
    # shorter than a clip: every clip starts at 0 and wraps around ('loop')
    assert video.sample_indices(5, SMALL).tolist() == [[0, 2, 4, 1]] * 3
    assert video.sample_indices(300).shape == (4, 32)
    with pytest.raises(InputError):
        video.sample_indices(0)


def test_resize_keeps_constants_and_sizes() -> None:
    frames = np.full((2, 30, 50, 3), 77, dtype=np.uint8)
    out = video.resize_shorter(frames, 24)
    assert out.shape == (2, 24, 40, 3) and (out == 77).all()
    ramp = np.broadcast_to(np.arange(0, 250, 5, dtype=np.uint8)[None, None, :, None], (1, 30, 50, 3))
    wide = video.resize_shorter(np.ascontiguousarray(ramp), 60)
    assert (np.diff(wide[0, 0, :, 0].astype(int)) >= 0).all()  # bilinear keeps a ramp monotonic
    halved = video.resize_shorter(np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3), 2)
    assert halved.shape == (2, 2, 2, 3)


def test_three_crop_takes_start_end_centre_of_the_longer_side() -> None:
    frames = np.arange(32 * 50, dtype=np.int64).reshape(1, 32, 50, 1)
    crops = video.three_crop(frames, 32)
    assert [c[0, 0, 0, 0] for c in crops] == [0, 18, 9]  # x offsets 0, 2 * 9, 9
    assert all(c.shape == (1, 32, 32, 1) for c in crops)
    with pytest.raises(InputError):
        video.three_crop(frames, 16)


def test_views_are_normalised_ncthw_crop_major() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 32, 40, 3), dtype=np.uint8)
    x = video.views(frames, SMALL, dtype=np.float64)
    assert x.shape == (9, 3, 4, 32, 32)
    inds = video.sample_indices(20, SMALL)
    first = (frames[inds[1]][:, :, :32].astype(np.float64) - SMALL.mean) / SMALL.std  # crop 0 (x = 0) of clip 1
    assert np.allclose(x[1], first.transpose(3, 0, 1, 2))


def test_kinetics_classes_ship_with_swinref() -> None:
    names = video.kinetics400_classes()
    assert len(names) == 400 and names[0] == "abseiling" and len(set(names)) == 400


def test_missing_pyav_names_the_extra(monkeypatch, tmp_path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(InputError, match=r"swinref\[video\]"):
        video.read_frames(clip)


def _write_clip(path, frames: np.ndarray, fps: int = 10) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_read_frames_decodes_a_written_clip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    frames = np.repeat(rng.integers(0, 256, (9, 1, 1, 3), dtype=np.uint8), 32, axis=1).repeat(48, axis=2)
    _write_clip(tmp_path / "c.mp4", frames)
    got = video.read_frames(tmp_path / "c.mp4")
    assert got.shape == (9, 32, 48, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - frames).mean() < 8  # lossy codec, flat colours survive
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="bad.mp4"):
        video.read_frames(bad)
    with pytest.raises(InputError, match="does not exist"):
        video.read_frames(tmp_path / "missing.mp4")


def _tiny_video_model():
    import swinref

    cfg = swinref.SwinConfig(img_size=(4, 32, 32), patch_size=(2, 4, 4), window_size=(2, 4, 4), embed_dim=8,
                             depths=(2, 2), num_heads=(1, 2), num_classes=400)
    return swinref.random_model(cfg, dtype="float64")


def test_predict_clips_averages_the_views_and_skips_bad_clips(tmp_path) -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (12, 36, 44, 3), dtype=np.uint8)
    _write_clip(tmp_path / "good.mp4", frames)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    model = _tiny_video_model()
    paths = [tmp_path / "good.mp4", tmp_path / "bad.mp4", tmp_path / "nowhere.mp4"]
    results = list(video.predict_clips(model, paths, top=3, batch=4, pipeline=SMALL))
    assert [r["clip"] for r in results] == [str(p) for p in paths]
    assert "error" in results[1] and "error" in results[2] and "top" not in results[1]
    good = results[0]
    x = video.views(video.read_frames(paths[0]), SMALL, dtype=np.float64)
    logits = np.asarray(model(x), dtype=np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).mean(0)
    best = np.argsort(-probs, kind="stable")[:3]
    assert good["views"] == 9 and [t["index"] for t in good["top"]] == best.tolist()
    assert np.allclose([t["probability"] for t in good["top"]], probs[best], rtol=1e-12)
    assert good["top"][0]["name"] == video.kinetics400_classes()[best[0]]


def test_predict_cli_on_clips(tmp_path, capsys, monkeypatch) -> None:
    from swinref.cli import main

    monkeypatch.setattr(video, "OFFICIAL", SMALL)  # the official 12 views of 32x224x224 take long on a tiny model

    rng = np.random.default_rng(4)
    _write_clip(tmp_path / "a.mp4", rng.integers(0, 256, (8, 36, 44, 3), dtype=np.uint8))
    model = _tiny_video_model()
    weights = tmp_path / "tiny.safetensors"
    from swinref.checkpoints import save_params

    save_params(model.params, model.config, weights)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01")
    code = main(["predict", str(tmp_path / "a.mp4"), str(tmp_path / "broken.mp4"), "--weights", str(weights),
                 "--top", "2", "--json", "--dtype", "float64"])
    out = capsys.readouterr()
    assert code == 1  # some files skipped
    import json

    data = json.loads(out.out)
    assert [r["clip"] for r in data["results"]] == [str(tmp_path / "a.mp4")]
    assert len(data["results"][0]["top"]) == 2 and data["results"][0]["views"] == 9
    assert [s["clip"] for s in data["skipped"]] == [str(tmp_path / "broken.mp4")]
    assert "broken.mp4" in out.err


@pytest.mark.peers
def test_views_equal_mmaction_test_pipeline() -> None:
    """mmaction2's SampleFrames(test_mode) + Resize(-1, 224) + ThreeCrop(224) + FormatShape + its normalisation,
    on decoded frames of three shapes (upscaled, downscaled, already 224): value for value."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tools"))
    from openmmlab import import_mmaction

    if import_mmaction() is None:
        pytest.skip("mmaction2 is not installed")
    from mmaction.datasets.transforms import FormatShape, Resize, SampleFrames, ThreeCrop

    rng = np.random.default_rng(0)
    for total, (H, W) in ((150, (90, 120)), (40, (240, 320)), (63, (224, 300))):
        frames = rng.integers(0, 256, (total, H, W, 3), dtype=np.uint8)
        r = SampleFrames(clip_len=32, frame_interval=2, num_clips=4, test_mode=True).transform(
            dict(total_frames=total, start_index=0))
        r.update(imgs=[frames[i] for i in r["frame_inds"]], img_shape=(H, W), modality="RGB")
        for step in (Resize(scale=(-1, 224)), ThreeCrop(crop_size=224), FormatShape(input_format="NCTHW")):
            r = step.transform(r)
        mean = np.asarray(video.OFFICIAL.mean)[None, :, None, None, None]
        std = np.asarray(video.OFFICIAL.std)[None, :, None, None, None]
        want = (r["imgs"].astype(np.float64) - mean) / std
        assert np.array_equal(video.views(frames, dtype=np.float64), want), (total, H, W)


@pytest.mark.peers
def test_resize_equals_cv2() -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    for H, W in ((90, 120), (130, 100), (448, 600), (481, 641), (57, 33)):
        f = rng.integers(0, 256, (1, H, W, 3), dtype=np.uint8)
        got = video.resize_shorter(f, 224)[0]
        want = cv2.resize(f[0], (got.shape[1], got.shape[0]), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(got, want), (H, W)
