"""swinref's window policies against the peers they are named after, at input sizes other than the build size.

tests/data/policies/ was written by tools/make_policy_fixtures.py running the real peers (timm, torchvision,
transformers, mmpretrain / mmdet / mmseg) on two tiny models with the released geometry: v1 (patch 4, window 7,
built at 224) and v2 (window 8, built at 256). Weights and inputs are rebuilt here from their rules
(swinref.params), so the fixtures hold only outputs (large ones as swinref.golden.sketch fingerprints), the
windows / shifts / paddings each peer applied, and what each peer raised where it refused a size.

For every (model, peer, size) a peer ran: swinref.from_params(..., policy=<the peer's policy>) must give the same
logits and stage outputs (float32 within 1e-4, float64 within 1e-9, relative to max|ref| when that exceeds 1), and
swinref.plan(cfg, size, policy) the same per-block windows, shifts and paddings. Where the peer raised, swinref
must raise InputError naming the peer and the cause. No torch needed.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import numpy as np
import pytest

import swinref
from swinref.config import SwinConfig
from swinref.errors import InputError
from swinref.golden.sketch import compact, scaled_error
from swinref.params import counter_uniform, init_params

DATA = pathlib.Path(__file__).parent / "data" / "policies"
META = json.loads((DATA / "meta.json").read_text())
CONFIGS = {name: SwinConfig.from_dict(m["swinref_config"]) for name, m in META["models"].items()}
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
BIG = (800, 1333)

# Cases whose peer has a swinref policy (mmpretrain without pad_small_map is recorded for the table only).
CASES = [c for c in META["cases"] if c["policy"]]
RAN = [c for c in CASES if c["status"] == "ran"]
REFUSED = [c for c in CASES if c["status"] in ("failed", "refused")]

# What swinref's message must say where a peer refuses a size: the peer, and the cause in words.
PEER_WORDS = {"timm": "timm", "hf": "transformers", "hf_backbone": "transformers"}
CAUSE_WORDS = {"patch-divisibility": "divisible by the patch", "bias-table-shape": "relative position bias"}


def _id(case: dict[str, Any]) -> str:
    return f"{case['model']}-{case['peer']}-{case['size'][0]}x{case['size'][1]}"


@functools.lru_cache(maxsize=None)
def _image64(size: tuple[int, int]) -> np.ndarray:
    H, W = size
    return counter_uniform(f"input:{H}x{W}", 3 * H * W).reshape(1, 3, H, W)


def _image(size: tuple[int, int], dtype: str) -> np.ndarray:
    return _image64(size).astype(dtype)


@functools.lru_cache(maxsize=None)
def _params(model: str) -> dict[str, np.ndarray]:
    return init_params(CONFIGS[model], seed=META["seed"], dtype="float64")


def _model(model: str, policy: str, dtype: str) -> Any:
    return swinref.from_params(_params(model), CONFIGS[model], dtype=dtype, policy=policy)


@functools.lru_cache(maxsize=None)
def _outputs(model: str, policy: str, size: tuple[int, int], dtype: str) -> tuple[np.ndarray, list[tuple]]:
    """swinref's logits and compacted stage outputs, from ONE forward per (model, policy, size, dtype): several
    peers share a policy (the detection backbones), and the 800x1333 forwards are most of this file's time, so
    logits and stage outputs are read from the same `Model.trace` (the points `model(x)` and
    `model.features(x)` return: test_trace_points_are_the_entry_points)."""
    m = _model(model, policy, dtype)
    points = m.trace(_image(size, dtype))
    logits = np.asarray(points["logits"])
    stages = [np.asarray(points[stage.blocks[-1].name]) for stage in swinref.plan(CONFIGS[model], size, policy=policy).stages]
    return logits, [(y.shape, compact(y, limit=META["sketch"]["full_limit"])) for y in stages]


@functools.lru_cache(maxsize=None)
def _arrays(model: str, peer: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{model}_{peer}.npz") as z:
        return {k: z[k] for k in z.files}


def _check(name: str, ref: np.ndarray, got: np.ndarray, stored: str, dtype: str) -> None:
    err, scale = scaled_error(ref, got, stored)
    limit = TOLERANCE[dtype] * scale
    assert err <= limit, f"{name}: max |swinref - peer| {err:.3g} > {limit:.3g} ({stored})"


def _compared(case: dict[str, Any]) -> list[str]:
    """The dtypes compared in the default run. Both everywhere but at 800x1333, whose forwards are most of this
    file's time: there float64 (the strict comparison) for every policy and float32 once (v1, detection, shared
    by four peers). The other float32 fixtures of that size are stored all the same."""
    if tuple(case["size"]) != BIG or (case["model"], case["policy"]) == ("v1", "detection"):
        return list(TOLERANCE)
    return ["float64"]


@pytest.mark.parametrize("case,dtype", [(c, d) for c in RAN for d in _compared(c)],
                         ids=[f"{_id(c)}-{d}" for c in RAN for d in _compared(c)])
def test_outputs_match_peer(case: dict[str, Any], dtype: str) -> None:
    model, size = case["model"], tuple(case["size"])
    arrays = _arrays(model, case.get("reference", case["peer"]))
    key = f"{size[0]}x{size[1]}.{dtype}"
    want = case["outputs"][dtype]
    logits, stages = _outputs(model, case["policy"], size, dtype)
    if "logits" in want:
        _check("logits", arrays[f"{key}.logits"], logits, "full", dtype)
    assert len(stages) == len(want["stages"])
    for i, ((shape, (kind, value)), ref) in enumerate(zip(stages, want["stages"])):
        assert list(shape) == ref["shape"], f"stage {i}: swinref {list(shape)} != peer {ref['shape']}"
        assert kind == ref["stored"]
        _check(f"stage {i}", arrays[f"{key}.stage{i}"], value, kind, dtype)


@pytest.mark.parametrize("case", REFUSED, ids=_id)
def test_refuses_where_peer_fails(case: dict[str, Any]) -> None:
    """Where the peer raised (or, for `official`, where its plan would need padding), swinref raises InputError;
    for a peer that raised, the message names the peer and the cause."""
    m = _model(case["model"], case["policy"], "float32")
    with pytest.raises(InputError) as info:
        m(_image(tuple(case["size"]), "float32"))
    if case["status"] == "failed":
        message = str(info.value)
        peer_word = PEER_WORDS.get(case["peer"], case["peer"])
        assert peer_word in message, f"message does not name {peer_word!r}: {message}"
        cause = CAUSE_WORDS[case["error"]["cause"]]
        assert cause in message, f"message does not say {cause!r}: {message}"


ORDER = {"roll-then-pad": True, "pad-then-roll": False}  # trace "order" -> BlockPlan.roll_before_pad


@pytest.mark.parametrize("case", RAN, ids=_id)
def test_plan_matches_peer(case: dict[str, Any]) -> None:
    """swinref.plan's token grid, image padding / cropping, per-block windows, shifts, end paddings and their order,
    and the merge paddings are the ones the peer applied (read off the running peer: module attributes and its
    logged torch.roll / F.pad calls)."""
    trace = case["trace"]
    size = tuple(case["size"])
    plan = swinref.plan(CONFIGS[case["model"]], size, policy=case["policy"])
    p = CONFIGS[case["model"]].patch_size
    assert tuple(plan.embed.grid) == tuple(trace["grid"])
    assert tuple(plan.embed.pad) == tuple(trace["image_pad"])
    crop = tuple(n + pad - g * p for n, pad, g in zip(size, trace["image_pad"], trace["grid"]))
    assert tuple(plan.embed.crop) == crop, trace["patch_rule"]
    assert len(plan.stages) == len(trace["stages"])
    for i, (stage, peer_stage) in enumerate(zip(plan.stages, trace["stages"])):
        assert len(stage.blocks) == len(peer_stage["blocks"]), f"stage {i}"
        for j, (block, peer_block) in enumerate(zip(stage.blocks, peer_stage["blocks"])):
            where = f"stage {i} block {j} ({peer_block['resolution']} tokens)"
            assert tuple(block.resolution) == tuple(peer_block["resolution"]), where
            got = {"window": tuple(block.window), "shift": tuple(block.shift), "pad": tuple(block.pad)}
            want = {k: tuple(peer_block[k]) for k in got}
            assert got == want, where
            if peer_block["order"] in ORDER:  # both a shift and a padding: the order is observable
                assert block.roll_before_pad == ORDER[peer_block["order"]], f"{where}: {peer_block['order']}"
        if peer_stage["merge_pad"] is None:
            assert stage.merge is None, f"stage {i}"
        else:
            assert tuple(stage.merge.pad) == tuple(peer_stage["merge_pad"]), f"stage {i} merge"


@pytest.mark.parametrize("policy", sorted({c["policy"] for c in RAN}))
def test_trace_points_are_the_entry_points(policy: str) -> None:
    """The outputs compared above come from Model.trace; at a small size per policy (padded where the policy
    allows it), model(x) and model.features(x, layout="NHWC") return the very same logits and stage maps."""
    model, size = ("v2", (64, 64)) if policy == "hf" else ("v1", (64, 64))  # transformers' V1 refuses 64x64
    if policy == "official":
        size = CONFIGS[model].img_size  # the official plan refuses every size that needs padding
    m = _model(model, policy, "float64")
    x = _image(size, "float64")
    points = m.trace(x)
    np.testing.assert_array_equal(np.asarray(m(x)), np.asarray(points["logits"]))
    names = [stage.blocks[-1].name for stage in swinref.plan(CONFIGS[model], size, policy=policy).stages]
    for name, y in zip(names, m.features(x, layout="NHWC"), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(points[name]))


def test_fixture_covers_what_the_policies_promise() -> None:
    """The fixture set itself: every policy has cases that ran, the refusals the brief names are there, and the
    official reference agrees with torchvision and transformers at the build size."""
    ran = {(c["model"], c["policy"]) for c in RAN}
    for model in CONFIGS:
        for policy in ("official", "timm", "torchvision", "hf", "detection"):
            assert (model, policy) in ran, (model, policy)
    causes = {(c["peer"], c["error"]["cause"]) for c in REFUSED if c["status"] == "failed"}
    assert ("timm", "patch-divisibility") in causes and ("hf", "bias-table-shape") in causes
    for c in RAN:
        if c["peer"] == "official":
            for other, errs in c["agreement_with_reference"].items():
                for name, err in errs.items():
                    assert err <= TOLERANCE[name.split(".")[0]], (c["model"], other, name, err)
