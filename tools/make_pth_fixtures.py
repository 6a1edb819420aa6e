"""Write the small torch-made files that tests/test_pth.py reads without torch (tests/data/pth/).

Run with the peers environment (torch 2.14.1, timm, yacs):

    /work/venv-peers/bin/python tools/make_pth_fixtures.py

Every file is written by torch.save itself; the expected values are written beside them by torch too
(tensor.float().numpy() for bfloat16, which NumPy cannot hold), into expected.npz (arrays, keyed
"<file>:<dotted path>") and expected.json (the non-tensor entries and what each file is meant to exercise).
Files stay a few KB. Never edit the outputs by hand: change this script and run it again.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "pth")


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy().copy()


def _flatten(obj, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = _np(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}[{i}]", out)


def dtypes_case() -> dict:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, generator=g)
    return {
        "f32": x,
        "f16": x.half(),
        "bf16": x.bfloat16(),
        "f64": x.double(),
        "i64": torch.arange(-4, 8, dtype=torch.int64).reshape(3, 4),
        "i32": torch.arange(6, dtype=torch.int32),
        "i16": torch.arange(-3, 3, dtype=torch.int16),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),  # pickled through _rebuild_tensor_v3
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def views_case() -> dict:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(4, 6, generator=g)
    return {
        "base": base,
        "transposed": base.t(),  # non-contiguous, same storage
        "row_slice": base[2:],  # storage offset 12
        "col_slice": base[:, 1:5:2],  # offset 1, stride (6, 2)
        "element": base[3, 5],  # 0-d at offset 23
        "expanded": torch.arange(3.0).expand(4, 3),  # stride 0
        "param": torch.nn.Parameter(base[1]),  # _rebuild_parameter on a view
    }


def nested_case() -> dict:
    t = torch.arange(4.0)
    return {
        "a": {"b": {"c": t, "d": [t * 2, (t * 3, 7)]}},
        "numbers": [1, 2.5, "text", None, True],
        "ordered": torch.nn.Linear(2, 3).state_dict(),  # an OrderedDict with _metadata
    }


def state_case() -> dict:
    p = torch.nn.Parameter(torch.ones(2))
    p.note = "parameter with a Python attribute"  # -> _rebuild_parameter_with_state
    t = torch.full((2,), 3.0)
    t.note = "tensor with a Python attribute"  # -> torch._tensor._rebuild_from_type_v2
    return {"p": p, "t": t}


def tiny_timm():
    import timm

    torch.manual_seed(7)
    return timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=16, patch_size=2, embed_dim=4, depths=(1, 1),
        num_heads=(1, 2), window_size=2, num_classes=3,
    ).eval()


def official_state_dict(model) -> dict:
    """The timm model's weights in the official layout, derived buffers included, as the official repo saves."""
    from swinref.checkpoints.layouts import timm as timm_layout

    sd, _ = timm_layout.to_canonical(model.state_dict())  # renames only: the torch tensors themselves
    for name, module in model.named_modules():
        name = timm_layout.RULES.to_canonical(name + ".")[:-1]
        if hasattr(module, "relative_position_index"):
            sd[name + ".relative_position_index"] = module.relative_position_index
        if getattr(module, "attn_mask", None) is not None:
            sd[name + ".attn_mask"] = module.attn_mask
    return sd


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    expected: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}

    def save(name: str, obj, what: str, **kwargs) -> None:
        path = os.path.join(OUT, name)
        torch.save(obj, path, **kwargs)
        flat: dict[str, np.ndarray] = {}
        _flatten(obj, "", flat)
        for k, v in flat.items():
            expected[f"{name}:{k}"] = v
        meta[name] = {"what": what, "tensors": sorted(flat)}
        # The expected values must be what torch itself reads back.
        back = torch.load(path, weights_only=False)
        back_flat: dict[str, np.ndarray] = {}
        _flatten(back, "", back_flat)
        assert back_flat.keys() == flat.keys() and all(np.array_equal(back_flat[k], flat[k]) for k in flat)

    save("dtypes.pth", dtypes_case(), "one tensor per dtype; bf16 is widened to float32; u16 uses _rebuild_tensor_v3")
    save("views.pth", views_case(), "views sharing one storage: transposed, offset, strided, 0-d, stride-0, parameter")
    save("nested.pth", nested_case(), "nested dicts, lists and tuples mixing tensors and plain values")
    save("state.pth", state_case(), "Parameter / Tensor with Python attributes (the *_with_state / from_type paths)")
    save("proto4.pth", views_case(), "protocol 4 pickle (FRAME, STACK_GLOBAL, MEMOIZE)", pickle_protocol=4)
    # torch 2.14.1 cannot read back a legacy file holding a uint16 tensor (untyped storage), so u16 is left out.
    legacy = {k: v for k, v in dtypes_case().items() if k != "u16"}
    save("legacy.pth", {**legacy, **{f"v_{k}": v for k, v in views_case().items()}},
         "pre-1.6 non-zip format (torch.save(..., _use_new_zipfile_serialization=False))",
         _use_new_zipfile_serialization=False)
    # Saved to a buffer, torch names the archive folder 'archive' instead of the file's stem.
    buf = io.BytesIO()
    torch.save({"w": torch.arange(5.0)}, buf)
    with open(os.path.join(OUT, "archive_prefix.pth"), "wb") as f:
        f.write(buf.getvalue())
    expected["archive_prefix.pth:w"] = np.arange(5.0, dtype=np.float32)
    meta["archive_prefix.pth"] = {"what": "zip whose folder is 'archive/' (saved to a buffer)", "tensors": ["w"]}

    model = tiny_timm()
    sd = model.state_dict()
    timm_ckpt = {
        "epoch": 3, "arch": "swin_tiny_patch4_window7_224", "state_dict": sd,
        "state_dict_ema": {k: v + 1 for k, v in sd.items()}, "version": 2,
        "args": argparse.Namespace(model="swin_tiny_patch4_window7_224", lr=0.001, epochs=3, img_size=[16, 16]),
        "metric": np.float64(71.25),
    }
    save("timm_train.pth", timm_ckpt, "timm CheckpointSaver layout: state_dict, state_dict_ema, argparse args, "
         "a NumPy scalar metric")

    from yacs.config import CfgNode

    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    cfg.MODEL.TYPE = "swin"
    cfg.MODEL.SWIN = CfgNode()
    cfg.MODEL.SWIN.DEPTHS = [1, 1]
    cfg.DATA = CfgNode({"IMG_SIZE": 16})
    official_ckpt = {"model": official_state_dict(model), "config": cfg, "max_accuracy": 12.5, "epoch": 1}
    save("official_train.pth", official_ckpt, "official training checkpoint: 'model' with derived buffers, a yacs "
         "CfgNode config")
    np.savez_compressed(os.path.join(OUT, "expected.npz"), **expected)
    meta["_tiny_timm"] = {
        "model": "timm swin_tiny_patch4_window7_224 with img_size=16, patch_size=2, embed_dim=4, depths=(1, 1), "
                 "num_heads=(1, 2), window_size=2, num_classes=3",
        "swinref_config": {"img_size": [16, 16], "patch_size": 2, "embed_dim": 4, "depths": [1, 1],
                           "num_heads": [1, 2], "window_size": 2, "num_classes": 3},
    }
    meta["_values"] = {
        "timm_train.pth": {"epoch": 3, "metric": 71.25, "args": {"model": "swin_tiny_patch4_window7_224", "lr": 0.001,
                                                                 "epochs": 3, "img_size": [16, 16]}},
        "official_train.pth": {"max_accuracy": 12.5, "epoch": 1, "config": json.loads(json.dumps(cfg))},
        "nested.pth": {"numbers": [1, 2.5, "text", None, True]},
    }
    meta["_versions"] = {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1024:.0f} KB, to {os.path.normpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
