"""`swinref show` and swinref.show: every picture renders (terminal always, figures when matplotlib is there),
terminal pictures fit 80 columns, and a missing matplotlib is a clear swinref error naming the extra."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from rich.console import Console

from swinref import show
from swinref.cli import main
from swinref.config import get_config

TINY = ["--variant", "T", "--img", "32", "--window", "2", "--embed-dim", "8", "--depths", "2,2,2", "--heads", "2,2,4"]


def _tiny():
    return get_config("T", img=32, window=2, embed_dim=8, depths=(2, 2, 2), heads=(2, 2, 4))


def _pictures():
    import swinref

    cfg = _tiny()
    model = swinref.random_model(cfg, dtype="float64")
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    for kind in show.KINDS:
        yield show.picture(kind, cfg, None, None, stage=1, block=1, model=model, image=image,
                           sizes=range(64, 257, 64))


def test_terminal_pictures_fit_80_columns():
    for pic in _pictures():
        console = Console(width=200, record=True, file=open("/dev/null", "w"))
        console.print(show.terminal(pic))
        widest = max(len(line.rstrip()) for line in console.export_text().splitlines())
        assert widest <= 80, (pic.kind, widest)


def test_every_figure_draws(tmp_path):
    pytest.importorskip("matplotlib", reason="figures need the viz extra (matplotlib); the default test run has none")
    for pic in _pictures():
        for suffix in (".png", ".svg"):
            path = tmp_path / f"{pic.kind}{suffix}"
            show.save(pic, str(path))
            assert path.stat().st_size > 1000


def test_missing_matplotlib_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    pic = show.picture("mask", _tiny())
    with pytest.raises(show.MissingExtraError, match=r"swinref\[viz\]"):
        show.figure(pic)
    assert main(["show", "mask", *TINY, "--out", "mask.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swinref: error:") and "swinref[viz]" in err and len(err.splitlines()) == 1


def test_cli_json_and_terminal(capsys):
    assert main(["show", "mask", *TINY, "--stage", "0", "--block", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    mask, labels = np.array(data["mask"]), np.array(data["labels"])
    np.testing.assert_array_equal(mask != 0, labels[:, None] != labels[None, :])
    assert main(["show", "reach", *TINY, "--token", "1,2"]) == 0
    assert "first block where a token sees the whole input" in capsys.readouterr().out


def test_cli_attention_on_an_image(tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)).save(path)
    assert main(["show", "attention", *TINY, "--image", str(path), "--pixel", "5,7", "--head", "1"]) == 0
    assert "random weights" in capsys.readouterr().out.replace("\n", " ")
    assert main(["show", "rollout", *TINY]) == 2
    assert "--image" in capsys.readouterr().err
    assert main(["show", "attention", *TINY, "--image", str(path), "--head", "all", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(data["padding"]) == ["head 0", "head 1", "mean"] and data["token"] == [4, 4]
    assert main(["show", "rollout", *TINY, "--image", str(path), "--head", "all"]) == 2
    assert "one head" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["show", "mask", *TINY, "--stage", "9"], "stage 9"),
    (["show", "mask", *TINY, "--window-index", "99"], "window 99"),
    (["show", "reach", *TINY, "--token", "40,0"], "outside"),
    (["show", "counts", *TINY, "--out", "x.gif"], ".png or .svg"),
])
def test_cli_bad_choices_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_a_clip_is_drawn_frame_by_frame(tmp_path):
    """Three spatial axes (T, H, W): the terminal and the figure show one frame per index of the first axis."""
    import dataclasses

    from swinref.plan import plan

    blk = dataclasses.replace(plan(_tiny()).blocks[1], resolution=(3, 5, 6), padded=(4, 6, 6), window=(2, 3, 3),
                              shift=(1, 1, 1), pad=(1, 1, 0), mask=True)
    pic = show.windows_picture(blk)
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(show.terminal(pic))
    text = console.export_text()
    assert [f"frame {t}" in text for t in range(5)] == [True] * 4 + [False]
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert len(set(pic.arrays["rolled_region"].reshape(-1).tolist())) == 27  # 3 bands on each of 3 axes
    plt = pytest.importorskip("matplotlib.pyplot", reason="figures need the viz extra (matplotlib)")
    fig = show.figure(pic)
    assert len(fig.axes) == 2 * 4  # padded T = 4 rows; the token map has 3 frames, the fourth cell is empty
    plt.close(fig)


def test_a_video_swin_clip_on_the_command_line(capsys):
    argv = ["show", "windows", "--variant", "swin3d_t", "--clip", "8x48x48", "--window", "2x7x7", "--stage", "0"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert np.array(data["window_id"]).shape == (4, 12, 12) and np.array(data["rolled_region"]).shape == (4, 14, 14)
    assert data["shift"] == [1, 3, 3]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert all(f"frame {t}" in out for t in range(4)) and max(map(len, out.splitlines())) <= 80
