"""Write tests/data/transfer/: what torch and timm compute when a checkpoint moves to another window or size.

Run with the peers environment:

    /work/venv-peers/bin/python tools/make_transfer_expected.py [--out tests/data/transfer]

Files (never edited by hand; rerun this script):

  bicubic.npz   random grids and torch.nn.functional.interpolate(mode="bicubic", align_corners=False) of them,
                float64 and float32, up- and down-sampling, square and not ("case{k}.in", "case{k}.out").
  v1.npz        the V1 fixture tests/data/peers/timm_v1_clamp (64 px, window 4: stage windows 4,4,4,2) moved to
                128 px / window 8 (stage windows 8,8,8,4) the official way: every relative_position_bias_table
                resized by the expression of microsoft/Swin-Transformer utils.py load_pretrained (float32, as
                there), then loaded into a timm model built at 128 / window 8 and run: the resized tables
                (official names), the input and the logits.
  v2.npz        the V2 fixture tests/data/peers_v2/timm_v2_pad (52x44, window 4) moved to 64 px / window 8 the
                official way: the same weights (the position-bias MLP reused) in a timm SwinTransformerV2 built
                with pretrained_window_sizes (4, 4), the old window; input and logits in float32 and float64.
  meta.json     versions, the cases, and how the resizes of timm compare with the official one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def official_resize(table: torch.Tensor, L2: int) -> torch.Tensor:
    """microsoft/Swin-Transformer utils.py load_pretrained, the bias-table branch, verbatim in substance."""
    L1, nH1 = table.size()
    S1 = int(L1 ** 0.5)
    S2 = int(L2 ** 0.5)
    resized = torch.nn.functional.interpolate(table.permute(1, 0).view(1, nH1, S1, S1), size=(S2, S2), mode="bicubic")
    return resized.view(nH1, L2).permute(1, 0)


def bicubic_cases() -> tuple[dict, list]:
    gen = torch.Generator().manual_seed(7)
    shapes = [((3, 13, 13), (23, 23)), ((3, 23, 23), (13, 13)), ((2, 7, 9), (11, 5)), ((4, 1, 3), (5, 7)),
              ((2, 3, 3), (31, 31)), ((1, 15, 15), (31, 31)), ((2, 11, 11), (11, 11))]
    arrays, cases = {}, []
    for k, (shape, size) in enumerate(shapes):
        for dtype in (torch.float64, torch.float32):
            name = f"case{len(cases)}"
            x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
            y = torch.nn.functional.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0]
            arrays[name + ".in"], arrays[name + ".out"] = x.numpy(), y.numpy()
            cases.append({"name": name, "shape": list(shape), "size": list(size), "dtype": str(x.dtype)})
    return arrays, cases


def v1_case() -> tuple[dict, dict]:
    from safetensors.torch import load_file
    from timm.layers import resize_rel_pos_bias_table, resize_rel_pos_bias_table_simple
    from timm.models.swin_transformer import SwinTransformer

    src = json.loads((ROOT / "tests/data/peers/timm_v1_clamp/meta.json").read_text())["constructor"]
    kwargs = {**src, "img_size": [128, 128], "window_size": 8}
    model = SwinTransformer(**kwargs).eval()
    sd = load_file(str(ROOT / "tests/data/peers/timm_v1_clamp/model.safetensors"))
    target = model.state_dict()
    arrays, compare = {}, {"timm_simple_vs_official": 0.0, "timm_default_vs_official": 0.0}
    for k, v in sd.items():
        if k.endswith("relative_position_bias_table") and v.shape != target[k].shape:
            new = official_resize(v, target[k].shape[0])
            sd[k] = new.contiguous()
            stage, block = k.split(".")[1], k.split(".")[3]
            window = int(round((target[k].shape[0] ** 0.5 + 1) / 2))
            simple = resize_rel_pos_bias_table_simple(v, (window, window), target[k].shape)
            default = resize_rel_pos_bias_table(v, new_window_size=(window, window), new_bias_shape=target[k].shape)
            compare["timm_simple_vs_official"] = max(compare["timm_simple_vs_official"],
                                                     float((simple - new).abs().max()))
            compare["timm_default_vs_official"] = max(compare["timm_default_vs_official"],
                                                      float((default - new).abs().max()))
            # official names: timm's merges sit one stage later, but blocks are named alike
            arrays[f"layers.{stage}.blocks.{block}.attn.relative_position_bias_table"] = new.numpy()
    model.load_state_dict(sd, strict=True)
    x = torch.randn((1, 3, 128, 128), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(x)
    arrays.update({"input": x.numpy(), "logits": logits.numpy()})
    return arrays, {"constructor": kwargs, "resize": compare}


def v2_case() -> tuple[dict, dict]:
    from safetensors.torch import load_file
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    sys.path.insert(0, str(ROOT / "tools"))
    from make_v2_fixtures import timm_exact

    src = json.loads((ROOT / "tests/data/peers_v2/timm_v2_pad/meta.json").read_text())["constructor"]
    kwargs = {**src, "img_size": [64, 64], "window_size": 8, "pretrained_window_sizes": [4, 4]}
    sd = load_file(str(ROOT / "tests/data/peers_v2/timm_v2_pad/model.safetensors"))
    arrays = {}
    x = torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for dtype, suffix in ((torch.float32, ""), (torch.float64, "64")):
        model = SwinTransformerV2(**kwargs).eval()
        model.load_state_dict(sd, strict=True)  # same names and shapes at any window: the MLP is reused
        model = model.to(dtype)
        if dtype == torch.float64:
            timm_exact(model)  # float64 coordinates, as swinref computes them
        with torch.no_grad():
            arrays["logits" + suffix] = model(x.to(dtype)).numpy()
    arrays["input"] = x.numpy()
    return arrays, {"constructor": kwargs}


def main(argv: list[str] | None = None) -> int:
    import timm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "transfer"))
    out = Path(ap.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)
    bicubic, cases = bicubic_cases()
    np.savez_compressed(out / "bicubic.npz", **bicubic)
    v1, v1_meta = v1_case()
    np.savez_compressed(out / "v1.npz", **v1)
    v2, v2_meta = v2_case()
    np.savez_compressed(out / "v2.npz", **v2)
    meta = {"versions": {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__},
            "bicubic": cases, "v1": v1_meta, "v2": v2_meta}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(v1_meta["resize"]))
    for f in sorted(out.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
