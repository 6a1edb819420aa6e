"""The timm and torchvision model names swinref accepts (swinref.config.PEER_NAMES, and timm's V1 names, which are
the registry's own) name the same architecture in the peer: every peer model is built (on torch's meta device:
shapes only), its state dict read through swinref's layouts and checked parameter by parameter against the config
the name gives; windows, pretrained windows and image size are compared with the peer model's own attributes.

The name lists come from the installed peers, so a new timm Swin name that swinref neither maps nor names as
another architecture fails here."""

from __future__ import annotations

import numpy as np
import pytest

from swinref.checkpoints import layouts
from swinref.checkpoints.detect import check_params
from swinref.config import OTHER_ARCHITECTURES, PEER_NAMES, REGISTRY, get_config, list_models
from swinref.errors import ConfigError
from swinref.plan import plan


def test_names_resolve_without_peers():
    for peer, name in PEER_NAMES.items():
        assert get_config(peer).name == name == get_config(peer.upper()).name
    assert get_config("timm/swinv2_tiny_window8_256.ms_in1k").name == "swinv2_tiny_patch4_window8_256"
    assert set(list_models("swin_v2_*", peer_names=True)) == {"swin_v2_t", "swin_v2_s", "swin_v2_b"}
    assert list_models("SWINV2*192_22K") == ["swinv2_base_patch4_window12_192_22k",
                                              "swinv2_large_patch4_window12_192_22k"]
    with pytest.raises(ConfigError, match="did you mean 'swin_v2_t'"):
        get_config("swin_v2_tt")
    with pytest.raises(ConfigError, match="Swin-V2 CR.*does not implement"):
        get_config("swinv2_cr_tiny_224")


def _shapes_only(module) -> dict[str, np.ndarray]:
    """The peer's state dict as zero-stride NumPy arrays of the same shapes (no memory: the model is on meta)."""
    return {k: np.broadcast_to(np.zeros((), np.float32), tuple(v.shape)) for k, v in module.state_dict().items()}


def _check(name: str, module, image: int, windows: list[int], pretrained: list[int] | None, policy: str) -> None:
    cfg = get_config(name)
    sd = _shapes_only(module)
    layout = layouts.detect(sd.keys(), name)
    params, _ = layout.to_canonical(sd, name)
    check_params(params, cfg, f"{name} ({layout.NAME})")  # every name and shape, head classes included
    assert cfg.img_size == (image, image), name
    mp = plan(cfg, policy=policy)  # the peer's own window rule at its build size
    assert [max(s.blocks[0].window) for s in mp.stages] == windows, name
    if pretrained is not None:
        assert list(cfg.pretrained_window_sizes) == pretrained, name


@pytest.mark.peers
@pytest.mark.slow  # builds about thirty peer models (shapes only): a minute and a half on two busy cores
def test_timm_names_build_the_same_architecture():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    names = timm.list_models("swin*")
    for name in names:
        if any(name.startswith(prefix) for prefix in OTHER_ARCHITECTURES):
            with pytest.raises(ConfigError, match="does not implement"):
                get_config(name)
            continue
        assert name in REGISTRY or name in PEER_NAMES, f"timm's {name} is neither mapped nor refused"
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        image = model.patch_embed.img_size[0]
        blocks = [stage.blocks[0].attn for stage in model.layers]
        windows = [int(a.window_size[0]) for a in blocks]
        pretrained = [int(a.pretrained_window_size[0]) for a in blocks] if name.startswith("swinv2") else None
        _check(name, model, image, windows, pretrained, "timm")


@pytest.mark.peers
@pytest.mark.slow  # builds the torchvision models (shapes only)
def test_torchvision_names_build_the_same_architecture():
    torch = pytest.importorskip("torch")
    tvm = pytest.importorskip("torchvision.models")
    names = [n for n in tvm.list_models() if n.startswith("swin") and not n.startswith("swin3d")]
    assert sorted(names) == sorted(n for n in PEER_NAMES if not n.startswith("swinv2"))
    for name in names:
        with torch.device("meta"):
            model = tvm.get_model(name)
        image = tvm.get_model_weights(name).DEFAULT.transforms().crop_size[0]
        windows = [int(stage[0].attn.window_size[0]) for stage in model.features[1::2]]
        _check(name, model, image, windows, None, "torchvision")
