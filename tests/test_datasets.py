"""Whole datasets: image decoding of every mode, folders and globs, the Predictor, and `predict` over real folders."""

from __future__ import annotations

import csv
import io
import json
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import swinref
from swinref import cli
from swinref.checkpoints import save_params
from swinref.errors import InputError
from swinref.inputs import find_images
from swinref.params import init_params
from swinref.preprocess import load_image, preprocess

TINY = swinref.SwinConfig(name="tiny-in1k", img_size=(64, 64), embed_dim=8, depths=(2, 2), num_heads=(1, 2),
                          window_size=4, num_classes=1000)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_params(init_params(TINY, seed=1), TINY, path)
    return path


def _pixels(h, w, seed=0, channels=3):
    shape = (h, w, channels) if channels > 1 else (h, w)
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


@pytest.fixture()
def folder(tmp_path):
    """photos/a.png, photos/sub/b.jpg, photos/sub/deeper/c.webp, photos/notes.txt (not an image suffix)."""
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(_pixels(70, 90, 1)).save(root / "a.png")
    Image.fromarray(_pixels(80, 64, 2)).save(root / "sub" / "b.jpg")
    Image.fromarray(_pixels(64, 100, 3)).save(root / "sub" / "deeper" / "c.webp", lossless=True)
    (root / "notes.txt").write_text("not an image")
    return root


# -- decoding ------------------------------------------------------------------------------------------------------


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    wide = (np.arange(48 * 64, dtype=np.int64).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I;16")
    rgb = np.asarray(load_image(path))
    want = np.round(wide / 257.0).astype(np.uint8)
    assert rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(rgb[..., 0], want)
    np.testing.assert_array_equal(rgb[..., 1], want)
    assert (rgb == 255).mean() < 0.01  # Pillow's convert("RGB") makes almost every pixel 255 here


@pytest.mark.parametrize("mode", ["P", "CMYK", "RGBA", "LA", "L"])
def test_other_modes_decode_as_timm_does(tmp_path, mode):
    """convert('RGB') is timm's and torchvision's loader: palette colours, CMYK converted, alpha dropped."""
    base = Image.fromarray(_pixels(40, 56, 5))
    img = base.convert(mode) if mode != "RGBA" else Image.fromarray(_pixels(40, 56, 6, channels=4), "RGBA")
    if mode == "P":
        img.info["transparency"] = 0
    suffix = ".tiff" if mode == "CMYK" else ".png"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    with Image.open(path) as opened:
        want = np.asarray(opened.convert("RGB"))
    got = np.asarray(load_image(path))
    np.testing.assert_array_equal(got, want)
    if mode == "RGBA":
        np.testing.assert_array_equal(got, np.asarray(img)[..., :3])  # the stored colours, not composited


def test_exif_orientation_is_applied(tmp_path):
    raw = _pixels(30, 50, 7)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; show rotated 90 degrees clockwise
    path = tmp_path / "phone.png"
    Image.fromarray(raw).save(path, exif=exif)
    got = np.asarray(load_image(path))
    assert got.shape == (50, 30, 3)
    np.testing.assert_array_equal(got, np.rot90(raw, k=-1))


def test_damaged_file_is_an_input_error(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_pixels(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="cut.png"):
        load_image(path)


# -- finding files -------------------------------------------------------------------------------------------------


def test_folders_are_searched_recursively_and_globs_expand(folder):
    names = [p.relative_to(folder).as_posix() for p in find_images([folder])]
    assert names == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"]
    assert [p.name for p in find_images([str(folder / "**" / "*.jpg"), str(folder / "a.png")])] == ["b.jpg", "a.png"]
    assert len(find_images([folder, folder / "a.png"])) == 3  # each file once


def test_a_source_that_names_nothing_is_refused(tmp_path, folder):
    with pytest.raises(InputError, match="matches no files"):
        find_images([str(folder / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        find_images([tmp_path / "empty"])
    with pytest.raises(InputError, match="does not exist"):
        find_images([tmp_path / "missing.jpg"])


# -- the Predictor -------------------------------------------------------------------------------------------------


def test_predictor_outputs_equal_the_model(weights):
    p = swinref.Predictor(weights, outputs=("logits", "top", "embedding", "features"), top=3)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    out = p(x)
    model = swinref.load(weights)
    np.testing.assert_array_equal(out["logits"], model(x))
    np.testing.assert_array_equal(out["embedding"], model.pooled(x))
    for i, f in enumerate(model.features(x)):
        np.testing.assert_array_equal(out[f"features.{i}"], f)
    want = np.argsort(-model(x), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(out["top_indices"], want)
    assert out["top_probs"].dtype == np.float64 and np.all(np.diff(out["top_probs"], axis=1) <= 0)
    assert out["top_names"][0, 0] == swinref.preprocess.imagenet_classes()[want[0, 0]][1]


def test_pooled_then_head_is_the_forward_pass(weights):
    model = swinref.load(weights)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(model.head(model.pooled(x)), model(x))


def test_predictor_reads_paths_bytes_and_pixel_columns_like_predict(weights, folder):
    p = swinref.Predictor(weights, outputs=("embedding",))
    paths = [str(f) for f in find_images([folder])]
    by_path = p(paths)["embedding"]
    x = np.stack([preprocess(load_image(f), (64, 64)) for f in paths])
    np.testing.assert_array_equal(by_path, swinref.load(weights).pooled(x))
    blobs = [open(f, "rb").read() for f in paths]
    np.testing.assert_array_equal(p({"bytes": blobs, "path": np.array(paths)})["embedding"], by_path)
    pixels = np.empty(len(paths), dtype=object)
    pixels[:] = [np.asarray(load_image(f)) for f in paths]  # Ray Data's column of images of different sizes
    out = p({"image": pixels, "path": np.array(paths)})
    np.testing.assert_array_equal(out["embedding"], by_path)
    assert list(out["path"]) == paths  # other columns pass through


def test_predictor_pickles_its_options_not_its_weights(weights):
    p = swinref.Predictor(weights, outputs=("logits",), threads=None)
    blob = pickle.dumps(p)
    assert len(blob) < 2000  # the tiny model's params alone are ~30 KB
    q = pickle.loads(blob)
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(q(x)["logits"], p(x)["logits"])


def test_predictor_skips_bad_images_when_asked(weights, folder, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    good = str(folder / "a.png")
    with pytest.raises(InputError, match="bad.jpg"):
        swinref.Predictor(weights, outputs=("top",))([good, str(bad)])
    out = swinref.Predictor(weights, outputs=("top", "embedding"), on_error="skip")([good, str(bad)])
    assert out["error"][0] == "" and "cannot decode" in out["error"][1]
    assert out["top_indices"][1].tolist() == [-1] * 5 and np.isnan(out["embedding"][1]).all()
    alone = swinref.Predictor(weights, outputs=("top", "embedding"))([good])
    np.testing.assert_array_equal(out["embedding"][:1], alone["embedding"])


@pytest.mark.parametrize("kwargs, match", [
    ({"outputs": ("probabilities",)}, "choose one or more of"),
    ({"top": 0}, "top must be a positive integer"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"on_error": "ignore"}, "on_error"),
])
def test_predictor_refuses_bad_options(weights, kwargs, match):
    with pytest.raises(InputError, match=match):
        swinref.Predictor(weights, **kwargs)


def test_threads_are_set_where_batches_run_not_where_the_predictor_is_built(weights):
    from swinref import fast

    before = fast.LANES
    predictor = swinref.Predictor(weights, threads=1)  # a Dask or Spark driver builds it only to ship it
    assert fast.LANES == before and pickle.loads(pickle.dumps(predictor)).threads == 1


def test_threads_limit_blas_and_the_block_in_a_process_that_loaded_numpy():
    code = ("import numpy, threadpoolctl, swinref\n"
            "from swinref.threads import limit_threads\n"
            "from swinref import fast\n"
            "limit_threads(1)\n"
            "print(fast._lanes(), sorted({p['num_threads'] for p in threadpoolctl.threadpool_info()}))\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "[1]"]


# -- `swinref predict` over folders ----------------------------------------------------------------------------


def test_predict_over_a_folder_skips_a_bad_file_and_exits_1(weights, folder, capsys):
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    code = cli.main(["predict", str(folder), "--weights", str(weights), "--top", "2", "--batch-size", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    out = json.loads(captured.out)
    assert [r["image"].split("photos/")[1] for r in out["results"]] == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"]
    assert out["skipped"][0]["image"].endswith("broken.png")
    assert "skipped" in captured.err and "broken.png" in captured.err and "1 of 4" in captured.err


def test_predict_writes_csv_and_json_lines(weights, folder, capsys):
    assert cli.main(["predict", str(folder), "--weights", str(weights), "--top", "2", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6 and rows[0]["rank"] == "1" and rows[1]["rank"] == "2"
    assert cli.main(["predict", str(folder), "--weights", str(weights), "--top", "2", "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == sorted({r["image"] for r in rows}, key=[r["image"] for r in rows].index)
    assert [e["index"] for e in lines[0]["top"]] == [int(r["class"]) for r in rows[:2]]


# -- `swinref embed` -------------------------------------------------------------------------------------------


def _read_output(path):
    """(paths, matrix) from an embed output of any format."""
    path = str(path)
    if path.endswith(".npy"):
        listing = path[:-4] + ".paths.txt"
        return open(listing, encoding="utf-8").read().splitlines(), np.load(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, "np") as f:
            return json.loads(f.metadata()["paths"]), f.get_tensor("embedding")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table["path"].to_pylist(), np.array(table["embedding"].to_pylist(), dtype=np.float32)


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".parquet"])
def test_embed_equals_the_model_on_the_same_images(weights, folder, tmp_path, suffix, capsys):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="Parquet output needs the parquet extra (pyarrow)")
    out = tmp_path / f"features{suffix}"
    assert cli.main(["embed", str(folder), "--weights", str(weights), "--out", str(out), "--batch-size", "2"]) == 0
    assert "3 x 16 embedding" in capsys.readouterr().out
    paths, matrix = _read_output(out)
    want_paths = [str(p) for p in find_images([folder])]
    assert paths == want_paths
    x = np.stack([preprocess(load_image(p), (64, 64)) for p in want_paths])
    model = swinref.load(weights)
    np.testing.assert_allclose(matrix, model.pooled(x), rtol=0, atol=1e-6)
    # Bit for bit against the model on the same batches of 2 (another batching moves the last bits).
    np.testing.assert_array_equal(matrix, np.concatenate([model.pooled(x[:2]), model.pooled(x[2:])]))
    assert not (tmp_path / f"features{suffix}.partial").exists()


def test_embed_logits_equal_the_model(weights, folder, tmp_path):
    out = tmp_path / "logits.npy"
    assert cli.main(["embed", str(folder), "--weights", str(weights), "--out", str(out), "--values", "logits"]) == 0
    paths, matrix = _read_output(out)
    x = np.stack([preprocess(load_image(p), (64, 64)) for p in paths])
    assert matrix.shape == (3, 1000)
    np.testing.assert_allclose(matrix, swinref.load(weights)(x), rtol=0, atol=1e-6)


def test_interrupted_embed_resumes_without_recomputing_or_duplicates(weights, folder, tmp_path, monkeypatch):
    from swinref.embed import embed_files, partial_dir
    from swinref.predictor import Predictor

    paths = find_images([folder])
    out = tmp_path / "features.safetensors"
    predictor = Predictor(weights, outputs=("embedding",), on_error="skip")

    def stop_after_first_batch(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_files(predictor, paths, out, batch_size=2, on_batch=stop_after_first_batch)
    assert not out.exists() and len(list(partial_dir(out).glob("batch-*.npz"))) == 1
    # A batch cut short while its shard was being written leaves only a temporary file, which is not read.
    (partial_dir(out) / ".batch-000001.npz.999.tmp").write_bytes(b"PK\x03\x04 cut short")

    seen = []
    call = Predictor.__call__
    monkeypatch.setattr(Predictor, "__call__", lambda self, batch: (seen.extend(batch), call(self, batch))[1])
    report = embed_files(predictor, paths, out, batch_size=2)
    assert seen == [str(paths[2])]  # the first batch (two files) was not computed again
    assert (report.rows, report.reused, report.computed) == (3, 2, 1)
    got_paths, matrix = _read_output(out)
    assert got_paths == [str(p) for p in paths]  # each file once, in order
    monkeypatch.undo()
    whole = tmp_path / "whole.safetensors"
    embed_files(predictor, paths, whole, batch_size=2)
    np.testing.assert_array_equal(matrix, _read_output(whole)[1])
    assert not partial_dir(out).exists()


def test_embed_skips_a_bad_file_and_refuses_bad_outputs(weights, folder, tmp_path, capsys):
    (folder / "broken.jpg").write_text("not an image")
    out = tmp_path / "f.npy"
    assert cli.main(["embed", str(folder), "--weights", str(weights), "--out", str(out)]) == 1
    assert "broken.jpg" in capsys.readouterr().err and len(np.load(out)) == 3
    assert cli.main(["embed", str(folder), "--weights", str(weights), "--out", str(out)]) == 2
    assert "exists; give a new name, or --force" in capsys.readouterr().err
    assert cli.main(["embed", str(folder), "--weights", str(weights), "--out", str(tmp_path / "f.csv")]) == 2
    assert ".parquet, .npy, .safetensors" in capsys.readouterr().err
    assert cli.main(["embed", str(folder), "--weights", str(weights), "--out", str(tmp_path / "no" / "f.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_resuming_with_other_settings_is_refused(weights, folder, tmp_path):
    from swinref.embed import embed_files
    from swinref.predictor import Predictor

    out = tmp_path / "f.npy"
    with pytest.raises(KeyboardInterrupt):
        embed_files(Predictor(weights, outputs=("embedding",), on_error="skip"), find_images([folder]), out,
                    batch_size=1, on_batch=lambda n: (_ for _ in ()).throw(KeyboardInterrupt))
    other = Predictor(weights, outputs=("embedding",), on_error="skip", crop=False)
    with pytest.raises(InputError, match="crop differ"):
        embed_files(other, find_images([folder]), out)


def test_embed_killed_mid_run_resumes(weights, folder, tmp_path, capsys):
    """A real kill: the child process SIGKILLs itself right after committing its second shard (no cleanup runs);
    the same command again finishes the job."""
    import signal

    out = tmp_path / "features.npy"
    child = ("import os, signal, sys\n"
             "from swinref import cli, embed\n"
             "save, count = embed._save_npz, [0]\n"
             "def save_then_die(path, arrays):\n"
             "    save(path, arrays)\n"
             "    count[0] += 1\n"
             "    if count[0] == 2:\n"
             "        os.kill(os.getpid(), signal.SIGKILL)\n"
             "embed._save_npz = save_then_die\n"
             "sys.exit(cli.main(sys.argv[1:]))\n")
    argv = ["embed", str(folder), "--weights", str(weights), "--out", str(out), "--batch-size", "1"]
    done = subprocess.run([sys.executable, "-c", child, *argv], capture_output=True, text=True, timeout=300,
                          cwd=str(pathlib.Path(swinref.__file__).parents[1]))
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not out.exists() and len(list((tmp_path / "features.npy.partial").glob("batch-*.npz"))) == 2
    assert cli.main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rows"], report["reused"], report["computed"]) == (3, 2, 1)
    paths, matrix = _read_output(out)
    assert paths == [str(p) for p in find_images([folder])]
    x = np.stack([preprocess(load_image(p), (64, 64)) for p in paths])
    np.testing.assert_allclose(matrix, swinref.load(weights).pooled(x), rtol=0, atol=1e-6)
