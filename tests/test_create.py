"""create_model, Model.save, Model.pretrained_cfg, list_models: the conveniences timm users look for."""

from __future__ import annotations

import os

import numpy as np
import pytest

import swinref
from swinref.errors import ConfigError, OutputError


def test_create_model_takes_peer_names_seed_and_classes():
    a = swinref.create_model("swin_v2_t", num_classes=7, embed_dim=8, depths=(2, 2), heads=(1, 2), img=64)
    assert a.config.version == 2 and a.config.num_classes == 7 and a.params["head.weight"].shape == (7, 16)
    b = swinref.create_model("swin_v2_t", num_classes=7, embed_dim=8, depths=(2, 2), heads=(1, 2), img=64)
    c = swinref.create_model("swin_v2_t", seed=1, num_classes=7, embed_dim=8, depths=(2, 2), heads=(1, 2), img=64)
    np.testing.assert_array_equal(a.params["head.weight"], b.params["head.weight"])
    assert not np.array_equal(a.params["head.weight"], c.params["head.weight"])
    assert "head.weight" not in swinref.create_model("T", num_classes=0, embed_dim=8, depths=(2,), heads=(1,)).params
    with pytest.raises(ConfigError, match="did you mean 'swin_t'"):
        swinref.create_model("swin_tt")


@pytest.mark.parametrize("layout", ["swinref", "official", "timm"])
def test_save_writes_a_file_that_loads_back(tmp_path, layout):
    model = swinref.create_model("T", embed_dim=8, depths=(2, 2), heads=(1, 2), window=4, img=32, num_classes=5,
                                 dtype="float64")
    path = tmp_path / "w.safetensors"
    assert model.save(path, layout=layout) == []
    config = None if layout == "swinref" else model.config  # a peer's names carry no config
    back = swinref.load(path, config=config, dtype="float64")
    for k, v in model.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    with pytest.raises(OutputError, match="exists.*--force"):
        model.save(path, layout=layout)
    model.save(path, layout=layout, force=True)
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_pretrained_cfg_states_the_preprocessing():
    assert swinref.create_model("T", embed_dim=8, depths=(2,), heads=(1,)).pretrained_cfg == {
        "input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "num_classes": 1000}
    big = swinref.create_model("B384", embed_dim=8, depths=(2,), heads=(1,)).pretrained_cfg
    assert big["input_size"] == (3, 384, 384) and big["crop_pct"] == 1.0  # the official 384 evaluation: no crop


def test_list_models_and_configs_pattern(capsys):
    assert swinref.list_models("swin_tiny*") == [n for n in swinref.REGISTRY if n.startswith("swin_tiny")]
    assert swinref.list_models("nothing*") == []
    from swinref import cli
    import json

    assert cli.main(["configs", "swinv2*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["version"] == 2 for r in rows)
    assert cli.main(["configs", "swin_t", "--json"]) == 0  # a peer name finds its configuration
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["swin_tiny_patch4_window7_224"]
    assert cli.main(["configs", "nothing*"]) == 2
    assert "no configuration matches 'nothing*'" in capsys.readouterr().err


def test_version(capsys):
    from swinref import cli

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"swinref {swinref.__version__}"
