"""The config registry: names, aliases, overrides, validation and the stage plan's clamp and padding rules."""

from __future__ import annotations

import pytest

import swinref
from swinref.config import REGISTRY, get_config, parse_size
from swinref.plan import nearest_unpadded_sizes, plan
from swinref.errors import ConfigError

OFFICIAL_V2 = [
    "swinv2_tiny_patch4_window8_256", "swinv2_tiny_patch4_window16_256", "swinv2_small_patch4_window8_256",
    "swinv2_small_patch4_window16_256", "swinv2_base_patch4_window8_256", "swinv2_base_patch4_window16_256",
    "swinv2_base_patch4_window12_192_22k", "swinv2_large_patch4_window12_192_22k",
    "swinv2_base_patch4_window12to16_192to256_22kto1k_ft", "swinv2_base_patch4_window12to24_192to384_22kto1k_ft",
    "swinv2_large_patch4_window12to16_192to256_22kto1k_ft", "swinv2_large_patch4_window12to24_192to384_22kto1k_ft",
]


def test_every_released_configuration_is_registered():
    for name in ["swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
                 "swin_large_patch4_window7_224", "swin_base_patch4_window12_384", "swin_large_patch4_window12_384",
                 "swin_tiny_c24_patch4_window8_256", "swin_base_patch4_window7_224_22k",
                 "swin_large_patch4_window12_384_22k", *OFFICIAL_V2]:
        assert name in REGISTRY
    assert REGISTRY["swin_large_patch4_window12_384_22k"].num_classes == 21841
    assert REGISTRY["swinv2_base_patch4_window12to24_192to384_22kto1k_ft"].pretrained_window_sizes == (12, 12, 12, 6)
    assert all(REGISTRY[n].version == 2 for n in OFFICIAL_V2)


@pytest.mark.parametrize("alias,name", [("T", "swin_tiny_patch4_window7_224"), ("s", "swin_small_patch4_window7_224"),
                                        ("B", "swin_base_patch4_window7_224"), ("L", "swin_large_patch4_window7_224")])
def test_aliases(alias, name):
    assert get_config(alias).name == name


def test_timm_and_hugging_face_spellings():
    assert get_config("swin_tiny_patch4_window7_224.ms_in1k").name == "swin_tiny_patch4_window7_224"
    assert get_config("microsoft/swin-base-patch4-window12-384").name == "swin_base_patch4_window12_384"


def test_overrides_rename_honestly():
    assert get_config("B", img=384, window=12).name == "swin_base_patch4_window12_384"  # is a released model
    cfg = get_config("T", img="800x1333")
    assert cfg.img_size == (800, 1333) and cfg.name == "swin_tiny_patch4_window7_224[img_size=800x1333]"
    assert get_config("T", img=224).name == "swin_tiny_patch4_window7_224"  # no change, no new name


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'swin_tiny_patch4_window7_224'"):
        get_config("swin_tiny_patch4_window7_22")


def test_heads_must_divide_channels():
    with pytest.raises(ConfigError, match=r"stage 3 has 768 channels .* 25 heads do not divide"):
        get_config("T", heads="3,6,12,25")


def test_image_smaller_than_a_patch_is_refused():
    with pytest.raises(ConfigError, match="smaller than one 4x4 patch"):
        get_config("T", img=3)


@pytest.mark.parametrize("bad", ["", "224x", "x224", "-4", "22.4", "8x224x224x3", "1234567890"])
def test_bad_sizes(bad):
    with pytest.raises(ConfigError, match="cannot read size|must be positive"):
        parse_size(bad)


def test_clamp_rule_last_stage_of_released_models_has_no_shift():
    for name, cfg in REGISTRY.items():
        if cfg.is_video:
            continue  # Video Swin clamps at run time (tests/test_video.py)
        last = plan(cfg, policy="official").stages[-1]
        assert not any(last.shift) and last.window == (min(last.resolution),) * 2, name


def test_clamped_window_for_small_stages():
    cfg = get_config("T", img=64)  # grids 16, 8, 4, 2 with window 7
    stages = plan(cfg, policy="official").stages
    assert [s.window for s in stages] == [(7, 7), (7, 7), (4, 4), (2, 2)]
    assert [s.shift for s in stages] == [(3, 3), (3, 3), (0, 0), (0, 0)]
    assert stages[0].pad == (5, 5) and stages[1].pad == (6, 6) and stages[2].pad == (0, 0)
    # torchvision never shrinks the window: the 4x4 and 2x2 grids are padded to one 7x7 window, unshifted
    stages = plan(cfg, policy="torchvision").stages
    assert [s.window for s in stages] == [(7, 7)] * 4 and [s.shift for s in stages][2:] == [(0, 0)] * 2
    assert stages[3].pad == (5, 5)
    # detection keeps shifting by half a window there, under the mask
    assert [s.shift for s in plan(cfg, policy="detection").stages] == [(3, 3)] * 4


def test_nearest_unpadded_sizes_need_no_padding():
    cfg = get_config("T")
    sizes = nearest_unpadded_sizes(cfg, (230, 250))
    assert (224, 224) in sizes
    assert all(not plan(cfg, s).needs_padding for s in sizes)


def test_strict_padding_refuses_with_nearest_sizes():
    import numpy as np

    cfg = get_config("T", embed_dim=8, heads="1,1,1,1", classes=3)
    x = np.zeros((1, 3, 230, 250), np.float32)
    with pytest.raises(swinref.InputError, match=r"nearest sizes that need none: 224x224"):
        swinref.forward({}, x, cfg, policy="strict")
