"""The plan: one object says what every block does, per window policy, for any input size and number of axes.

The peers' own windows, shifts and paddings at six sizes are checked against the plan in tests/test_policies.py
(recorded from the running peers); here are the rules by example, the refusals, and the structure around the plan.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from swinref import cli
from swinref.config import REGISTRY, SwinConfig, get_config
from swinref.errors import InputError
from swinref.plan import DEFAULT_POLICY, POLICIES, plan, resolve_policy

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _geometry(mp):
    return [(b.window, b.shift, b.pad, b.padded) for b in mp.blocks]


@pytest.mark.parametrize("name", [n for n, c in REGISTRY.items() if not any(c.pretrained_window_sizes) and not c.is_video])
def test_classifier_policies_agree_at_the_build_size(name):
    """At a released model's own size the classifier peers all run the official plan; the detection backbones
    also shift the stages whose grid equals the window (they never clamp)."""
    cfg = REGISTRY[name]
    official = plan(cfg, policy="official")
    assert official.refusal is None and not official.needs_padding
    for policy in ("timm", "hf"):
        assert _geometry(plan(cfg, policy=policy)) == _geometry(official), policy
    detection = plan(cfg, policy="detection")
    for got, want in zip(detection.blocks, official.blocks):
        assert got.window == (cfg.window_size,) * 2  # never clamped: a smaller grid is padded to one window
        assert got.shift == ((cfg.window_size // 2,) * 2 if got.index % 2 else (0, 0))
        if want.window == got.window:
            assert want.shift == got.shift or want.window == want.resolution  # where the official clamp fired
    if cfg.version == 1 or cfg.window_size == 8:  # torchvision releases window 7 (V1) and 8 (V2) models
        assert _geometry(plan(cfg, policy="torchvision")) == _geometry(official)


def test_rules_by_example():
    cfg = get_config("T")  # built at 224, window 7
    tv = plan(cfg, (800, 1333), "torchvision")
    assert tv.embed.grid == (200, 333) and tv.embed.crop == (0, 1) and tv.embed.pad == (0, 0)
    det = plan(cfg, (800, 1333), "detection")
    assert det.embed.grid == (200, 334) and det.embed.pad == (0, 3)
    assert det.stages[3].shift == (3, 3) and det.stages[3].pad == (3, 0)
    # torchvision drops the shift only on the axis the window covers: 100x300 stage 2 is 7x19 tokens
    assert plan(cfg, (100, 300), "torchvision").stages[2].shift == (0, 3)
    # timm keeps the build-size windows (stage 3 built 7x7: window 7, no shift) and rolls before padding
    timm = plan(cfg, (192, 192), "timm")
    assert timm.stages[3].window == (7, 7) and timm.stages[3].shift == (0, 0) and timm.stages[3].pad == (1, 1)
    assert all(b.roll_before_pad for b in timm.blocks)
    assert not any(b.roll_before_pad for p in ("torchvision", "hf", "detection") for b in plan(cfg, policy=p).blocks)
    # transformers V1 clamps at run time: a 7x19 stage keeps window 7 without a shift
    hf = plan(cfg, (100, 300), "hf")
    assert hf.stages[2].window == (7, 7) and hf.stages[2].shift == (0, 0)
    # transformers V2 adds its shift mask twice
    v2 = get_config("V2-T")
    assert {b.mask_value for b in plan(v2, policy="hf").blocks if b.mask} == {-200.0}
    assert {b.mask_value for b in plan(v2, policy="torchvision").blocks if b.mask} == {-100.0}


@pytest.mark.parametrize("policy,size,words", [
    ("official", (192, 192), ["needs padding", "nearest sizes that need none: 224x224"]),
    ("timm", (800, 1333), ["timm", "1333 is not divisible by the patch size 4"]),
    ("hf", (192, 192), ["transformers", "stage 3 is 6x6 tokens", "relative position bias"]),
])
def test_refusals_say_why_and_the_forward_pass_raises_them(policy, size, words):
    import numpy as np

    from swinref.api import random_model

    cfg = get_config("T", embed_dim=24, depths=(2, 2, 2, 2))
    mp = plan(cfg, size, policy)
    assert mp.refusal is not None and all(w in mp.refusal for w in words), mp.refusal
    model = random_model(cfg, policy=policy)
    with pytest.raises(InputError) as err:
        model(np.zeros((1, 3, *size), np.float32))
    assert str(err.value) == mp.refusal


def test_default_policy_runs_every_input_of_one_patch_with_a_released_checkpoints_tables():
    for cfg in (get_config("T"), get_config("V2-T"), get_config("B384")):
        for size in [(4, 4), (5, 700), (64, 64), (100, 300), (232, 176), (800, 1333), (1333, 800)]:
            mp = plan(cfg, size)
            assert mp.refusal is None and mp.policy.name == DEFAULT_POLICY
            assert all(b.window == (cfg.window_size,) * 2 for b in mp.blocks)  # the checkpoint's own tables


def test_any_number_of_spatial_axes():
    cfg = SwinConfig(img_size=(16, 64, 96), patch_size=4, window_size=7)  # a clip: T, H, W; ints on every axis
    assert cfg.patch == (4, 4, 4) and cfg.window == (7, 7, 7)
    mp = plan(cfg, policy="detection")
    assert mp.embed.grid == (4, 16, 24)
    assert [s.resolution for s in mp.stages] == [(4, 16, 24), (4, 8, 12), (4, 4, 6), (4, 2, 3)]
    # Video Swin's per-axis run-time clamp: T (4 tokens) is not larger than the window, so it shrinks and stops
    # shifting there; H and W keep both.
    assert mp.stages[0].window == (4, 7, 7) and mp.stages[0].shift == (0, 3, 3)
    assert mp.stages[0].pad == (0, 5, 4) and mp.stages[0].merge.pad == (0, 0, 0)
    assert mp.stages[2].merge.pad == (0, 0, 0) and mp.stages[3].merge is None
    assert mp.stages[3].window == (4, 2, 3) and mp.stages[3].shift == (0, 0, 0)
    with pytest.raises(InputError, match="3 spatial axes"):
        plan(get_config("T"), (16, 64, 96), "official")
    with pytest.raises(InputError, match="timm 1.0 .* has no Video Swin"):
        plan(cfg, policy="timm")


def test_policy_names_and_aliases():
    assert resolve_policy("pad").name == "hf" and resolve_policy("strict").name == "official"
    assert resolve_policy(None).name == DEFAULT_POLICY
    with pytest.raises(InputError, match="unknown window policy 'padded'; choose one of " + ", ".join(POLICIES)):
        resolve_policy("padded")


def test_blocks_name_their_parameters():
    cfg = get_config("T")
    from swinref.layout import param_shapes

    names = {n for b in plan(cfg).blocks for n in b.params}
    names |= {n for s in plan(cfg).stages if s.merge for n in s.merge.params}
    names |= set(plan(cfg).head_params) | {n for n in param_shapes(cfg) if n.startswith("patch_embed.")}
    assert names == set(param_shapes(cfg))


def test_below_the_plan_nothing_tests_the_version_or_the_policy():
    """The forward pass and both block implementations read plan fields, never cfg.version or a policy name."""
    for module in ("model", "blocks", "fast", "layers", "geometry"):
        tree = ast.parse((ROOT / "swinref" / f"{module}.py").read_text())
        attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not {"version", "policy"} & attributes, module
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not set(POLICIES) & strings, module


def test_trace_shows_each_policy(capsys):
    for policy in POLICIES:
        assert cli.main(["trace", "T", "--img", "100x300", "--policy", policy]) == 0
        out = capsys.readouterr().out
        assert f"window policy {policy}" in out
    assert cli.main(["trace", "T", "--img", "192", "--policy", "hf", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == "hf" and "relative position bias" in data["refusal"]
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["layers.0.blocks.1"]["shift"] == [3, 3] and steps["layers.0.blocks.1"]["order"] == "pad, roll"
