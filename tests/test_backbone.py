"""Swin as a detection / segmentation backbone: checkpoints saved by the peers themselves, read by swinref.load.

tests/data/backbone/ was written by tools/make_backbone_fixtures.py: tiny backbones (patch 4, embed_dim 4, depths
2,2,2,2, heads 1,1,2,4; V1 window 7 built at 224, V2 window 8 built at 256) with the same deterministic weights, each saved by its
peer in the peer's own file format (mmengine checkpoints of mmdet / mmseg / mmpretrain models beside their necks
and heads, transformers SwinBackbone.save_pretrained, the official detection backbone's mmcv-1.x checkpoint with
and without its absolute position embedding, a detectron2 / Mask2Former .pkl), and each peer's outputs (every stage after its output norm, NCHW)
at 97x131, 232x176, the build size and 800x1333, in float32 and float64.

Here, without torch: swinref.load(<the peer's file>) with no config (everything detected from the file) must give
a Model whose default window policy is `detection`, whose report names the layout and sets the neck and heads
aside in one line, and whose features(x) equal the peer's outputs: float32 within 1e-4, float64 within 1e-9
(relative to max |output| where that exceeds 1; large outputs compared through swinref.golden.sketch).
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import numpy as np
import pytest

import swinref
from swinref.golden.sketch import compact, scaled_error
from swinref.params import counter_uniform

DATA = pathlib.Path(__file__).parent / "data" / "backbone"
META = json.loads((DATA / "meta.json").read_text())
CASES = {c["case"]: c for c in META["cases"]}
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}

LAYOUT = {"mmdet": "openmmlab", "mmseg": "openmmlab", "mmpretrain": "openmmlab", "hf_backbone": "transformers",
          "official": "official", "mask2former": "official"}
# The modules of the whole model beside the backbone, which the load sets aside.
LEFT_OUT = {"mmdet": ("neck.", "rpn_head."), "mmseg": ("auxiliary_head.", "decode_head."),
            "mmpretrain_ape": ("head.",), "mmpretrain_v2": ("head.",), "hf_backbone": (), "hf_backbone_ape": (),
            "official": ("neck.", "roi_head.", "rpn_head."), "official_ape": ("neck.", "roi_head.", "rpn_head."),
            "mask2former": ("pixel_mean", "pixel_std", "sem_seg_head.")}

RUNS = [(c, s, d) for c in CASES.values() for s in c["sizes"] if "error" not in s for d in TOLERANCE]


def _id(run: tuple) -> str:
    case, size, dtype = run
    return f"{case['case']}-{size['size'][0]}x{size['size'][1]}-{dtype}"


@functools.lru_cache(maxsize=None)
def _model(case: str, dtype: str) -> Any:
    return swinref.load(DATA / CASES[case]["file"], dtype=dtype)


@functools.lru_cache(maxsize=None)
def _image(size: tuple[int, int]) -> np.ndarray:
    H, W = size
    return counter_uniform(f"input:{H}x{W}", 3 * H * W).reshape(1, 3, H, W)


@functools.lru_cache(maxsize=None)
def _arrays(case: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("run", RUNS, ids=[_id(r) for r in RUNS])
def test_features_equal_peer_outputs(run: tuple) -> None:
    case, entry, dtype = run
    size = tuple(entry["size"])
    model = _model(case["case"], dtype)
    outs = model.features(_image(size).astype(dtype))
    want = entry["outputs"][dtype]
    assert len(outs) == len(want)
    arrays = _arrays(case["case"])
    for i, (out, ref) in enumerate(zip(outs, want)):
        out = np.asarray(out)
        assert list(out.shape) == ref["shape"], f"output {i}: swinref {list(out.shape)} != peer {ref['shape']}"
        kind, value = compact(out.transpose(0, 2, 3, 1))
        assert kind == ref["stored"]
        err, scale = scaled_error(arrays[f"{size[0]}x{size[1]}.{dtype}.out{i}"], value, kind)
        limit = TOLERANCE[dtype] * scale
        assert err <= limit, f"output {i}: max |swinref - {case['peer']}| {err:.3g} > {limit:.3g} ({kind})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_report(name: str) -> None:
    """No config given: the layout, the output norms, the position embedding and the build size come from the
    file; the default policy is `detection`; the rest of the whole model is set aside and said so in one line."""
    case = CASES[name]
    model = _model(name, "float32")
    report = model.report
    assert report.layout == LAYOUT[case["peer"]]
    assert model.policy == "detection"
    assert model.config.ape is case["ape"]
    assert ("absolute_pos_embed" in model.params) is case["ape"]
    assert model.config.img_size == tuple(META["models"][case["model"]]["img_size"])
    assert model.config.window_size == META["models"][case["model"]]["window_size"]
    assert all(f"norm{i}.weight" in model.params for i in range(4))
    assert tuple(report.left_out) == LEFT_OUT[name]
    if LEFT_OUT[name]:
        lines = [n for n in report.notes if all(m in n for m in LEFT_OUT[name])]
        assert len(lines) == 1, report.notes


@pytest.mark.parametrize("name", ["mmdet", "official_ape", "mmpretrain_v2"])
def test_out_indices_select_the_same_outputs(name: str) -> None:
    model = _model(name, "float64")
    x = _image((97, 131))
    every = model.features(x)
    for picked in [(0,), (1, 3), (3,), (0, 1, 2, 3)]:
        got = model.features(x, out_indices=picked)
        assert len(got) == len(picked)
        for i, g in zip(picked, got):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(every[i]))
    nhwc = model.features(x, layout="NHWC", out_indices=(2,))
    np.testing.assert_array_equal(np.asarray(nhwc[0]), np.asarray(every[2]).transpose(0, 2, 3, 1))


# What `swinref convert` writes from a backbone checkpoint: swinref's own file (config, ape and norm0..3 kept) and
# the detection backbone's names of its own layout (official / openmmlab with --backbone-prefix, transformers).
CONVERSIONS = [("official_ape", "swinref", False), ("official_ape", "official", True), ("mmdet", "openmmlab", True),
               ("hf_backbone", "transformers", False), ("mask2former", "official", True),
               ("mmpretrain_ape", "official", True),
               ("mmpretrain_v2", "swinref", False)]


@pytest.mark.parametrize("name,layout,prefix", CONVERSIONS, ids=[f"{n}-{lay}" for n, lay, _ in CONVERSIONS])
def test_convert_keeps_the_backbone(name: str, layout: str, prefix: bool, tmp_path: pathlib.Path) -> None:
    from swinref.checkpoints import convert

    out = tmp_path / "converted.npz"
    convert(DATA / CASES[name]["file"], out, layout=layout, backbone_prefix=prefix)
    again = swinref.load(out, dtype="float64")
    assert again.report.layout == layout
    assert again.policy == "detection" and again.config.ape is CASES[name]["ape"]
    x = _image((97, 131))
    for got, want in zip(again.features(x), _model(name, "float64").features(x), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
