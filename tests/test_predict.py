"""Image preprocessing and `swinref predict`."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

import swinref
from swinref import cli
from swinref.checkpoints import save_params
from swinref.params import init_params
from swinref.preprocess import IMAGENET_MEAN, IMAGENET_STD, imagenet_classes, preprocess

PEERS = pathlib.Path(__file__).parent / "data" / "peers"


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(300, 400), (500, 260), (224, 224)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_official_224_preprocessing_is_resize_256_then_centre_crop(images):
    img = Image.open(images[0]).convert("RGB")  # 400 wide, 300 high
    x = preprocess(img, (224, 224))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # By hand: shorter side 300 -> 256 (long side int(256 * 400 / 300) = 341), bicubic, crop at round((h-224)/2).
    resized = img.resize((341, 256), Image.BICUBIC)
    top, left = int(round((256 - 224) / 2)), int(round((341 - 224) / 2))
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    want = ((crop - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)).transpose(2, 0, 1)
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-6)


def test_384_is_resized_without_crop(images):
    img = Image.open(images[1]).convert("RGB")
    x = preprocess(img, (384, 384))
    raw = np.asarray(img.resize((384, 384), Image.BICUBIC), dtype=np.float32) / 255
    np.testing.assert_allclose(x[0], (raw[..., 0] - IMAGENET_MEAN[0]) / IMAGENET_STD[0], atol=1e-6)


@pytest.mark.peers
def test_preprocessing_equals_torchvision_transforms(images):
    transforms = pytest.importorskip("torchvision.transforms")
    tf = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    for path in images:
        img = Image.open(path).convert("RGB")
        np.testing.assert_allclose(preprocess(img, (224, 224)), tf(img).numpy(), rtol=0, atol=1e-6)


def test_imagenet_names_are_shipped():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0] == ("n01440764", "tench") and classes[999][0] == "n15075141"


@pytest.fixture()
def tiny_imagenet_checkpoint(tmp_path):
    cfg = swinref.SwinConfig(name="tiny-in1k", img_size=(64, 64), embed_dim=8, depths=(2, 2), num_heads=(1, 2),
                             window_size=4, num_classes=1000)
    path = tmp_path / "tiny.safetensors"
    save_params(init_params(cfg, seed=1), cfg, path)
    return path


def test_predict_prints_top_k_with_imagenet_names(images, tiny_imagenet_checkpoint, capsys):
    code = cli.main(["predict", *images, "--weights", str(tiny_imagenet_checkpoint), "--top", "3", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["results"]] == images
    names = {name for _, name in imagenet_classes()}
    for result in out["results"]:
        probs = [e["probability"] for e in result["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-12
        assert all(e["name"] in names for e in result["top"])


def test_predict_matches_the_model_on_preprocessed_input(images, tiny_imagenet_checkpoint, capsys):
    assert cli.main(["predict", images[0], "--weights", str(tiny_imagenet_checkpoint), "--top", "1", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"][0]
    model = swinref.load(tiny_imagenet_checkpoint)
    logits = model(preprocess(Image.open(images[0]).convert("RGB"), (64, 64))[None])
    assert top["index"] == int(np.argmax(logits))


def test_predict_without_weights_says_where_weights_come_from(images, capsys):
    assert cli.main(["predict", images[0]]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "microsoft/Swin-Transformer" in err and ".safetensors" in err


def test_predict_refuses_a_non_image(tmp_path, tiny_imagenet_checkpoint, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    assert cli.main(["predict", str(bad), "--weights", str(tiny_imagenet_checkpoint)]) == 2
    assert "cannot decode" in capsys.readouterr().err


def test_predict_refuses_a_missing_image(tiny_imagenet_checkpoint, capsys):
    assert cli.main(["predict", "/nonexistent.png", "--weights", str(tiny_imagenet_checkpoint)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_on_missing_gpu_exits_2_with_the_fix(images, tiny_imagenet_checkpoint, capsys, monkeypatch):
    from swinref import device

    monkeypatch.setattr(device, "_import_cupy", lambda: (_ for _ in ()).throw(ImportError("No module named 'cupy'")))
    assert cli.main(["predict", images[0], "--weights", str(tiny_imagenet_checkpoint), "--device", "cuda"]) == 2
    assert "swinref[gpu]" in capsys.readouterr().err
