"""analysis against the peers themselves (timm, torchvision): parameter totals and executed matrix products.

Marked `peers`: skipped when torch / timm / torchvision are not installed (the default test run has none).
"""

from __future__ import annotations

import pytest

from swinref.analysis import count_flops, count_params
from swinref.config import REGISTRY, get_config
from swinref.plan import plan

pytestmark = pytest.mark.peers

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


def timm_name(name: str) -> str:
    """Registry name -> timm builder name (timm drops 'patch4_' from V2 names and the 22k suffixes)."""
    name = name.removesuffix("_22kto1k_ft").removesuffix("_22k")
    return name.replace("patch4_", "") if name.startswith("swinv2") else name


def _timm_params(name: str) -> int:
    cfg = get_config(name)
    kwargs = dict(pretrained=False, num_classes=cfg.num_classes)
    builder = timm_name(name)
    if builder not in timm.list_models("swin*"):
        # swin_tiny_c24 has no timm builder: the same architecture through timm's class arguments.
        builder = "swin_tiny_patch4_window7_224"
        kwargs.update(img_size=cfg.img_size, window_size=cfg.window_size, num_heads=cfg.num_heads)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = timm.create_model(builder, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", [n for n, c in REGISTRY.items() if not c.is_video])
def test_param_totals_match_timm(name):
    assert count_params(get_config(name)).total == _timm_params(name)


@pytest.mark.parametrize("builder, size", [("swin_t", (224, 224)), ("swin_t", (256, 320)), ("swin_s", (288, 352))])
def test_corrected_macs_equal_torchvision_flop_counter_on_padded_sizes(builder, size):
    # torchvision pads like swinref (zeros right/bottom before the roll) and, at these sizes, never needs the clamp
    # rule (no stage is smaller than the window), so its executed matrix products are the corrected MACs.
    tv = pytest.importorskip("torchvision")
    from torch.utils.flop_counter import FlopCounterMode

    model = getattr(tv.models, builder)().eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *size))
    cfg = get_config({"swin_t": "T", "swin_s": "S"}[builder], img=size)
    # a stage exactly one window wide is "clamped" to the same window: the products are the same
    assert all(min(s.resolution) >= cfg.window_size for s in plan(cfg).stages)
    assert 2 * count_flops(cfg, convention="corrected").macs == counter.get_total_flops()
