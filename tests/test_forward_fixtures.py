"""swinref's forward pass against outputs recorded from timm, transformers and torchvision.

Each case in tests/data/peers was written by tools/make_peer_fixtures.py: a tiny random-weight model saved in the
peer's own checkpoint format, an input, and the peer's outputs (logits, the feature pyramid, and for some cases
every intermediate point). Here swinref loads the checkpoint without torch and must reproduce those outputs.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import swinref
from swinref.model import features, forward, forward_trace

PEERS = pathlib.Path(__file__).parent / "data" / "peers"
CASES = sorted(p.name for p in PEERS.iterdir() if (p / "meta.json").exists())

# float32: the peers and swinref sum in different orders; 1e-5 of the output scale is far below any real bug
# (a wrong mask, bias or merge order moves outputs by 1e-2 or more). float64: rounding only.
TOLERANCE = {"float32": 2e-5, "float64": 1e-10}


def _meta(case: str) -> dict:
    return json.loads((PEERS / case / "meta.json").read_text())


def _checkpoint(case: str) -> pathlib.Path:
    meta = _meta(case)
    first = meta["checkpoint_files"][0]
    path = PEERS / case / first
    # A Hugging Face checkpoint is a directory with config.json and the weights.
    return path.parent if meta["peer"] == "transformers" else path


def _policy(case: str) -> str:
    """The window policy that reproduces the peer that wrote the case."""
    return {"timm": "timm", "transformers": "hf", "torchvision": "torchvision"}[_meta(case)["peer"]]


def _io_files(case: str) -> list[str]:
    return sorted(p.name for p in (PEERS / case).glob("io*.npz"))


def _config(case: str) -> swinref.SwinConfig:
    fields = dict(_meta(case)["swinref_config"])
    return swinref.SwinConfig(name=case, **fields)


def _assert_close(name: str, got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != peer {want.shape}"
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert err <= TOLERANCE[dtype] * scale, f"{name}: max |diff| {err:.3g} > {TOLERANCE[dtype] * scale:.3g}"


@pytest.mark.parametrize("case,io_name", [(c, f) for c in CASES for f in _io_files(c)])
def test_forward_matches_peer(case: str, io_name: str) -> None:
    io = np.load(PEERS / case / io_name)
    x = io["input"]
    dtype = str(x.dtype)
    model = swinref.load(_checkpoint(case), config=_config(case).replace(img=tuple(x.shape[2:])), dtype=dtype,
                         policy=_policy(case))
    _assert_close("logits", model(x), io["logits"], dtype)
    pyramid = model.features(x)
    stage_keys = sorted(k for k in io.files if k.startswith("features."))
    assert stage_keys, "fixture has no feature maps"
    for key in stage_keys:
        _assert_close(key, pyramid[int(key.split(".")[1])], io[key], dtype)
    points = model.trace(x)
    recorded = [k for k in io.files if k not in ("input",) and not k.startswith("features.")]
    for key in recorded:
        assert key in points, f"swinref records no point {key!r} (it has {sorted(points)[:6]}...)"
        _assert_close(key, points[key], io[key], dtype)


def test_every_peer_is_covered() -> None:
    peers = {_meta(c)["peer"] for c in CASES}
    assert {"timm", "transformers", "torchvision"} <= peers


def test_detection_recovers_the_fixture_architecture() -> None:
    for case in CASES:
        model = swinref.load(_checkpoint(case))
        want = _config(case)
        got = model.config
        for field in ("version", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "num_classes"):
            assert getattr(got, field) == getattr(want, field), f"{case}: detected {field} {getattr(got, field)}"


def test_functional_api_equals_model_object() -> None:
    case = "timm_v1_clamp"
    io = np.load(PEERS / case / "io.npz")
    model = swinref.load(_checkpoint(case), policy="timm")
    x = io["input"]
    np.testing.assert_array_equal(forward(model.params, x, model.config, policy="timm"), model(x))
    feats = features(model.params, x, model.config, policy="timm", layout="NHWC")
    np.testing.assert_array_equal(feats[0], forward_trace(model.params, x, model.config, policy="timm")["layers.0.blocks.1"])
