"""swinref.budget, the memory guard: every forward pass, trace, prediction and golden export is compared with the
memory available and a max_memory budget before allocating; refusals name the forecast and the size that fits,
batches that fit a few images at a time run in chunks with the same results."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import swinref
from swinref import budget
from swinref.budget import check_memory, forward_bytes, parse_bytes
from swinref.checkpoints import save_params
from swinref.errors import ConfigError, ResourceError
from swinref.params import init_params
from swinref.plan import plan
from test_golden import run  # cli.main with captured output

TINY = swinref.get_config("T").replace(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=10,
                                        img_size=(32, 32))


def huge(shape, dtype="float32"):
    """An input of any size without its memory: every element is the same zero (stride 0)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


@pytest.fixture
def no_free_memory_report(monkeypatch):
    """The guard decides by the budget alone (the machine's free memory changes as other processes run)."""
    monkeypatch.setattr(budget, "available_memory", lambda: (None, "unknown"))


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 * 2 ** 30 and parse_bytes("1.5 GB") == 1_500_000_000
    assert parse_bytes(1000) == 1000 and parse_bytes("512mib") == 512 * 2 ** 20
    for bad in ("lots", "4 parsecs", "-1G", 0, True):
        with pytest.raises(ConfigError, match="4GiB"):
            parse_bytes(bad)


def test_available_memory_reads_this_machine():
    available, source = budget.available_memory()
    assert available is None or (available > 0 and source)


def test_batch_over_budget_runs_in_chunks_with_the_same_logits(no_free_memory_report, monkeypatch):
    params = init_params(TINY, seed=3, dtype="float64")
    x = np.random.default_rng(0).standard_normal((6, 3, 32, 32))
    full = swinref.from_params(params, TINY, dtype="float64")(x)
    mp = plan(TINY)
    weights = sum(v.size for v in params.values()) * 8
    two = weights + forward_bytes(TINY, mp, batch=2, dtype="float64")
    three = weights + forward_bytes(TINY, mp, batch=3, dtype="float64")
    assert two < three
    seen = []
    real_run = swinref.model._run
    monkeypatch.setattr(swinref.model, "_run", lambda p, xb, *a, **k: seen.append(len(xb)) or real_run(p, xb, *a, **k))
    chunked = swinref.from_params(params, TINY, dtype="float64", max_memory=two)(x)
    assert seen == [6, 2, 2, 2]  # one call refused the whole batch, three ran two images each
    np.testing.assert_allclose(chunked, full, rtol=0, atol=1e-12)
    feats = swinref.from_params(params, TINY, dtype="float64", max_memory=two).features(x)
    for a, b in zip(feats, swinref.from_params(params, TINY, dtype="float64").features(x)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_one_image_over_budget_is_refused_with_the_size_that_fits(no_free_memory_report):
    model = swinref.random_model(TINY.replace(img_size=(256, 384)), max_memory="24MiB")
    start = time.perf_counter()
    with pytest.raises(ResourceError) as info:
        model(huge((1, 3, 2560, 3840)))
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "needs about" in message and "max_memory=24.00 MiB" in message and "--max-memory" in message
    size = message.split("(--img ")[1].split(")")[0]
    h, w = map(int, size.split("x"))
    assert h < 2560 and w < 3840 and abs(w / h - 1.5) < 0.1  # the same aspect ratio
    fits = model.config
    assert check_memory(fits, plan(fits, (h, w)), batch=1, dtype="float32", max_memory="24MiB") == 1
    bigger = (h + 64, w + 96)
    with pytest.raises(ResourceError):
        check_memory(fits, plan(fits, bigger), batch=1, dtype="float32", max_memory="24MiB")


def test_forward_beyond_this_machine_is_refused_before_allocating():
    model = swinref.random_model(TINY)
    start = time.perf_counter()
    with pytest.raises(ResourceError, match=r"more memory \(forecast\).*largest input of this shape that fits"):
        model(huge((1, 3, 100000, 100000)))
    with pytest.raises(ResourceError):
        model.check_memory(1, (100000, 100000))
    assert time.perf_counter() - start < 5


def test_trace_over_budget_names_the_batch_that_fits(no_free_memory_report):
    params = init_params(TINY, seed=0)
    model = swinref.from_params(params, TINY)
    mp = plan(TINY)
    points = budget.points_bytes(TINY, mp, batch=1, dtype="float32")
    one = sum(v.size for v in params.values()) * 4 + forward_bytes(TINY, mp, batch=1, dtype="float32") + points
    limited = swinref.from_params(params, TINY, max_memory=one + points // 2)
    with pytest.raises(ResourceError, match="traced forward pass on 4 images.*give at most 1 images at a time"):
        limited.trace(np.zeros((4, 3, 32, 32), "float32"))
    assert set(limited.trace(np.zeros((1, 3, 32, 32), "float32"))) == set(model.trace(np.zeros((1, 3, 32, 32),
                                                                                                "float32")))


def test_cli_predict_and_golden_export_refuse_huge_sizes(tmp_path, capsys, monkeypatch):
    weights = tmp_path / "w.safetensors"
    save_params(init_params(TINY, seed=1), TINY, weights)
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(image)
    import swinref.preprocess

    def no_decoding(*_a, **_k):
        raise AssertionError("an image was decoded before the memory check")

    monkeypatch.setattr(swinref.preprocess, "load_image", no_decoding)
    monkeypatch.setattr("swinref.predict.load_image", no_decoding, raising=False)
    start = time.perf_counter()
    code, out, err = run(capsys, "predict", image, "--weights", weights, "--img", "100000x100000")
    assert code == 2 and out == "" and err.count("\n") == 1 and "needs about" in err and "--img" in err
    code, _, err = run(capsys, "predict", image, "--weights", weights, "--max-memory", "10kB")
    assert code == 2 and "max_memory=9.77 KiB" in err
    code, _, err = run(capsys, "golden", "export", "--variant", "T", "--embed-dim", "8", "--depths", "2,2",
                       "--heads", "1,2", "--window", "4", "--img", "100000x100000", "--out", tmp_path / "case")
    assert code == 2 and "golden export" in err and "needs about" in err
    assert time.perf_counter() - start < 20
    assert sorted(os.listdir(tmp_path)) == ["a.png", "w.safetensors"]


def test_golden_export_checks_the_disk(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10 ** 6, 10 ** 6 - 1000, 1000))
    code, _, err = run(capsys, "golden", "export", "--variant", "T", "--embed-dim", "8", "--depths", "2,2",
                       "--heads", "1,2", "--window", "4", "--img", "32", "--out", tmp_path / "case")
    assert code == 2 and "free some space" in err and "1000 B free" in err
    assert os.listdir(tmp_path) == []


def test_sweep_is_bounded_before_any_list_is_built(capsys):
    start = time.perf_counter()
    code, out, err = run(capsys, "flops", "--sweep", "224:100000000:1")
    assert code == 2 and out == "" and "99999777 sizes" in err and "--sweep 224:100000000:100100" in err
    code, out, _ = run(capsys, "flops", "--sweep", "224:100000000:100100", "--json")
    assert code == 0 and '"sweep"' in out
    assert time.perf_counter() - start < 10


def test_cli_turns_an_unforeseen_memory_error_into_one_line(capsys, monkeypatch):
    def exhausted(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr("swinref.cli.cmd_trace", exhausted)
    code, out, err = run(capsys, "trace", "T")
    assert code == 2 and out == "" and err.count("\n") == 1 and "out of memory" in err and "--max-memory" in err


def test_golden_export_announces_a_large_forecast(tmp_path, monkeypatch):
    import swinref.golden.case as case

    heard = []
    monkeypatch.setattr(case, "LARGE", 1)  # every export counts as large
    case.export_case(tmp_path / "c", swinref.get_config("T", embed_dim=8, depths=(2, 2), heads=(1, 2), window=4,
                                                         img=32, classes=10), seed=0, notify=heard.append)
    assert len(heard) == 1 and "of memory and writes" in heard[0] and "(forecast)" in heard[0]
    files = sum(os.path.getsize(p) for p in (tmp_path / "c").iterdir() if p.suffix != ".json")
    disk = heard[0].split("writes ")[1].split(" (")[0]
    assert disk.endswith("KiB") and 0.5 < float(disk.split()[0]) * 1024 / files < 2  # the disk forecast is right
