"""Write the small Video Swin peer fixtures in tests/data/video/ by running the real peer libraries.

Run with the peers environment (torch, torchvision, mmaction2 1.2 with the import shim of tools/openmmlab.py):

    /work/peers-venv/bin/python tools/make_video_fixtures.py [--out tests/data/video]

Forward cases (one directory each): `meta.json` (peer versions, constructor arguments, the equivalent swinref
config, the window and shift every block uses, notes), the checkpoint exactly as that peer writes it, `io64.npz`
(float64 run: the input, and logits and every point the peer lets us hook, under swinref's trace names:
patch_embed, layers.i.blocks.j (block output), layers.i.downsample (merge output), norm (channels-last
[B, T, H, W, C]), pooled) and `io.npz` (float32 run: logits). The input is drawn in float32 and stored once, as
float32: both runs take exactly those values (float64 run: cast up).

    tv_shift_pad   torchvision SwinTransformer3d, window (4, 3, 3), clip 9x26x30: the patch embedding pads T, H and
                   W; stage 0 (grid 5x7x8) and stage 1 (5x4x4) shift on all three axes and pad every axis to the
                   window; the first merge pads an odd H; stage 2 (5x2x2) clamps H and W below the window (2 < 3),
                   where the peers slice the full window's bias index (see below).
    tv_clamp_t     torchvision, window (4, 3, 3), clip 6x20x28, two clips: T (3 tokens) is clamped on every stage
                   (no temporal shift), H and W shift and pad; both merges pad odd sides; stage 1 clamps H to the
                   window (3 = 3).
    mma_shift_pad  mmaction2 1.2 Recognizer3D (SwinTransformer3D + I3DHead), the tv_shift_pad geometry with other
                   weights, saved by mmengine's save_checkpoint ({'meta', 'state_dict'}: backbone.*, norm{L-1},
                   cls_head.fc_cls.*). official.pth holds the same weights under the official Video Swin
                   Transformer (mmaction2 0.x) names: the final norm is backbone.norm there. That code needs mmcv-full
                   1.x, which does not install here, so official.pth is this script's rename (norm{L-1} -> norm), not
                   a file the official code wrote.

The bias-index quirk: where a window is clamped, torchvision's `_get_relative_position_bias` and mmaction's
`WindowAttention3D.forward` take `relative_position_index[:N, :N]` of the FULL window's index (N the clamped
volume). When H or W is clamped the first N tokens of the full window are not the clamped window's tokens, so
the biases are not the ones the clamped geometry implies. meta.json records each block's window, shift and
whether its sliced index equals the geometric one.

Inflation case `inflate/`: a tiny 2-D Swin checkpoint in the official layout ({'model': state dict, with the
index and mask buffers the official model saves}; timm's weights under the official names), and what mmaction2's
own `SwinTransformer3D(pretrained=..., pretrained2d=True).init_weights()` (its `inflate_weights`, the official
Video Swin rule) makes of it for two 3-D windows: `inflated_same.npz` (window (2, 3, 3): the 2-D tables are only
repeated over the 2*2-1 temporal offsets) and `inflated_resize.npz` (window (2, 4, 4): the 5x5 tables are first
resized bicubically to 7x7). Each holds the backbone's state dict after inflation, buffers left out.

Weights are random and not trivial (tools/make_peer_fixtures.randomize_). Deterministic: fixed seeds, one thread.
Never edited by hand: rerun this script.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_peer_fixtures import randomize_, shapes_of, to_np, write_json, write_npz  # noqa: E402
from openmmlab import import_mmaction  # noqa: E402

torch.set_num_threads(1)


def versions() -> dict:
    import mmaction
    import mmengine
    import timm
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "mmaction2": mmaction.__version__,
            "mmengine": mmengine.__version__, "timm": timm.__version__, "numpy": np.__version__}


def make_clip(seed: int, batch: int, thw: tuple[int, int, int]) -> torch.Tensor:
    """float32 values held in float64: stored once, as float32, for both runs without loss."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, *thw), generator=gen, dtype=torch.float32).double()


def swinref_config(*, clip, patch, embed_dim, depths, num_heads, window, num_classes) -> dict:
    return {"version": 1, "img_size": list(clip), "patch_size": list(patch), "embed_dim": embed_dim,
            "depths": list(depths), "num_heads": list(num_heads), "window_size": list(window),
            "num_classes": num_classes, "mlp_ratio": 4.0, "qkv_bias": True, "patch_norm": True,
            "layer_norm_eps": 1e-5}


# ---------------------------------------------------------------------------------------------------------------
# The window rule both peers follow, recorded per block so a reader sees what each case exercises


def relative_index(window: tuple[int, int, int]) -> np.ndarray:
    """The peers' [N, N] index for a (Wd, Wh, Ww) window (torchvision define_relative_position_index)."""
    coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + np.asarray(window) - 1
    return rel[..., 0] * (2 * window[1] - 1) * (2 * window[2] - 1) + rel[..., 1] * (2 * window[2] - 1) + rel[..., 2]


def geometric_index(window: tuple[int, ...], full: tuple[int, int, int]) -> np.ndarray:
    """The index into the FULL window's table that the clamped window's own offsets select."""
    coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + np.asarray(full) - 1
    return rel[..., 0] * (2 * full[1] - 1) * (2 * full[2] - 1) + rel[..., 1] * (2 * full[2] - 1) + rel[..., 2]


def block_windows(grids: list[tuple[int, int, int]], depths, window) -> list[dict]:
    out = []
    for i, (grid, depth) in enumerate(zip(grids, depths)):
        used = tuple(min(g, w) for g, w in zip(grid, window))  # g <= w: window = g
        shift = tuple(0 if g <= w else w // 2 for g, w in zip(grid, window))
        n = int(np.prod(used))
        sliced = relative_index(tuple(window))[:n, :n]
        same = bool(np.array_equal(sliced, geometric_index(used, tuple(window))))
        pad = tuple((-g) % u for g, u in zip(grid, used))
        for j in range(depth):
            out.append({"block": f"layers.{i}.blocks.{j}", "grid": list(grid), "window": list(used),
                        "shift": list(shift) if j % 2 else [0, 0, 0], "pad": list(pad),
                        "sliced_index_is_geometric": same})
    return out


def stage_grids(clip, patch, n_stages) -> list[tuple[int, int, int]]:
    grid = [-(-c // p) for c, p in zip(clip, patch)]
    out = []
    for _ in range(n_stages):
        out.append(tuple(grid))
        grid = [grid[0], -(-grid[1] // 2), -(-grid[2] // 2)]
    return out


def collected(x: torch.Tensor, logits: torch.Tensor, points: dict, trace: bool) -> dict[str, np.ndarray]:
    """What a run stores: the input (float32) and every hooked point when traced, the logits always."""
    if not trace:
        return {"logits": to_np(logits)}
    arrays = {"input": to_np(x.float()), "logits": to_np(logits), "pooled": to_np(points.pop("_pooled").flatten(1))}
    arrays.update({k: to_np(v) for k, v in points.items()})
    return arrays


# ---------------------------------------------------------------------------------------------------------------
# torchvision SwinTransformer3d


def tv_build(kwargs: dict, seed: int):
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    torch.manual_seed(seed)
    model = SwinTransformer3d(**kwargs)
    randomize_(model, seed)
    return model.eval()


def tv_run(model, x: torch.Tensor, trace: bool) -> dict[str, np.ndarray]:
    points: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name):
        def hook(_m, _inp, out):
            points[name] = out.detach().clone()
        return hook

    if trace:
        handles.append(model.patch_embed.register_forward_hook(keep("patch_embed")))
        n_stages = (len(model.features) + 1) // 2
        for i in range(n_stages):
            stage = model.features[2 * i]
            for j, blk in enumerate(stage):
                handles.append(blk.register_forward_hook(keep(f"layers.{i}.blocks.{j}")))
            if i + 1 < n_stages:
                handles.append(model.features[2 * i + 1].register_forward_hook(keep(f"layers.{i}.downsample")))
        handles.append(model.norm.register_forward_hook(keep("norm")))
        handles.append(model.avgpool.register_forward_hook(keep("_pooled")))
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    return collected(x, logits, points, trace)


def case_tv(out: Path, name: str, *, kwargs: dict, clip, batch: int, seed: int, notes: list[str]) -> None:
    case = out / name
    case.mkdir(parents=True)
    x = make_clip(seed + 1, batch, clip)
    a64 = tv_run(tv_build(kwargs, seed).double(), x, trace=True)
    a32 = tv_run(tv_build(kwargs, seed), x.float(), trace=False)
    write_npz(case / "io64.npz", a64)
    write_npz(case / "io.npz", a32)
    torch.save(tv_build(kwargs, seed).state_dict(), case / "model.pth")
    grids = stage_grids(clip, kwargs["patch_size"], len(kwargs["depths"]))
    write_json(case / "meta.json", {
        "case": name, "peer": "torchvision", "class": "torchvision.models.video.swin_transformer.SwinTransformer3d",
        "versions": versions(), "constructor": kwargs,
        "swinref_config": swinref_config(clip=clip, patch=kwargs["patch_size"], embed_dim=kwargs["embed_dim"],
                                         depths=kwargs["depths"], num_heads=kwargs["num_heads"],
                                         window=kwargs["window_size"], num_classes=kwargs["num_classes"]),
        "input_shape": [batch, 3, *clip], "stage_grids": [list(g) for g in grids],
        "blocks": block_windows(grids, kwargs["depths"], kwargs["window_size"]),
        "checkpoint_files": ["model.pth"],
        "io_files": {"io64.npz": shapes_of(a64), "io.npz": shapes_of(a32)},
        "points": "patch_embed (PatchEmbed3d output), layers.i.blocks.j (block output), layers.i.downsample "
                  "(PatchMerging output), norm: channels-last [B, T, H, W, C]; pooled: avgpool flattened; input: "
                  "float32 (the float64 run casts it up)",
        "seeds": {"weights": seed, "input": seed + 1}, "notes": notes,
    })


# ---------------------------------------------------------------------------------------------------------------
# mmaction2 1.2 Recognizer3D (SwinTransformer3D + I3DHead)


def mma_build(backbone: dict, num_classes: int, seed: int):
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules

    register_all_modules()
    torch.manual_seed(seed)
    channels = backbone["arch"]["embed_dims"] * 2 ** (len(backbone["arch"]["depths"]) - 1)
    model = MODELS.build(dict(
        type="Recognizer3D", backbone=dict(type="SwinTransformer3D", **backbone),
        cls_head=dict(type="I3DHead", in_channels=channels, num_classes=num_classes, spatial_type="avg",
                      dropout_ratio=0.0),
        data_preprocessor=dict(type="ActionDataPreprocessor", format_shape="NCTHW")))
    randomize_(model, seed)
    return model.eval()


def mma_run(model, x: torch.Tensor, trace: bool) -> dict[str, np.ndarray]:
    points: dict[str, torch.Tensor] = {}
    handles = []
    bb = model.backbone

    def keep(name, channels_first=False):
        def hook(_m, _inp, out):
            points[name] = (out.permute(0, 2, 3, 4, 1) if channels_first else out).detach().clone()
        return hook

    if trace:
        handles.append(bb.patch_embed.register_forward_hook(keep("patch_embed", channels_first=True)))
        for i, layer in enumerate(bb.layers):
            for j, blk in enumerate(layer.blocks):
                handles.append(blk.register_forward_hook(keep(f"layers.{i}.blocks.{j}")))
            if layer.downsample is not None:
                handles.append(layer.downsample.register_forward_hook(keep(f"layers.{i}.downsample")))
        last = len(bb.layers) - 1
        handles.append(getattr(bb, f"norm{last}").register_forward_hook(keep("norm")))
        handles.append(model.cls_head.avg_pool.register_forward_hook(keep("_pooled")))
    with torch.no_grad():
        logits = model.cls_head(bb(x))
    for h in handles:
        h.remove()
    return collected(x, logits, points, trace)


def save_mmengine(state: dict, path: Path, meta: dict) -> None:
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

    save_checkpoint({"meta": meta, "state_dict": weights_to_cpu(state)}, str(path))


def case_mma(out: Path, name: str, *, backbone: dict, num_classes: int, clip, batch: int, seed: int,
             notes: list[str]) -> None:
    from mmengine.runner.checkpoint import get_state_dict

    case = out / name
    case.mkdir(parents=True)
    x = make_clip(seed + 1, batch, clip)
    a64 = mma_run(mma_build(backbone, num_classes, seed).double(), x, trace=True)
    a32 = mma_run(mma_build(backbone, num_classes, seed), x.float(), trace=False)
    write_npz(case / "io64.npz", a64)
    write_npz(case / "io.npz", a32)
    model = mma_build(backbone, num_classes, seed)
    state = get_state_dict(model)
    meta = {"mmengine_version": versions()["mmengine"], "epoch": 30, "seed": seed, "experiment_name": name}
    save_mmengine(state, case / "mmaction.pth", meta)
    last = len(backbone["arch"]["depths"]) - 1
    official = collections.OrderedDict(
        ("backbone.norm" + k[len(f"backbone.norm{last}"):] if k.startswith(f"backbone.norm{last}.") else k, v)
        for k, v in state.items())
    save_mmengine(official, case / "official.pth", meta)
    depths, arch = backbone["arch"]["depths"], backbone["arch"]
    grids = stage_grids(clip, backbone["patch_size"], len(depths))
    write_json(case / "meta.json", {
        "case": name, "peer": "mmaction2",
        "class": "mmaction.models.Recognizer3D(SwinTransformer3D, I3DHead)", "versions": versions(),
        "constructor": {"backbone": backbone, "cls_head": {"type": "I3DHead", "num_classes": num_classes,
                                                           "spatial_type": "avg", "dropout_ratio": 0.0}},
        "swinref_config": swinref_config(clip=clip, patch=backbone["patch_size"], embed_dim=arch["embed_dims"],
                                         depths=depths, num_heads=arch["num_heads"], window=backbone["window_size"],
                                         num_classes=num_classes),
        "input_shape": [batch, 3, *clip], "stage_grids": [list(g) for g in grids],
        "blocks": block_windows(grids, depths, backbone["window_size"]),
        "checkpoint_files": ["mmaction.pth", "official.pth"],
        "io_files": {"io64.npz": shapes_of(a64), "io.npz": shapes_of(a32)},
        "points": "as the torchvision cases; norm is the backbone's norm{L-1} output, pooled the I3DHead's avg_pool",
        "seeds": {"weights": seed, "input": seed + 1},
        "notes": notes + ["official.pth: the same state dict with backbone.norm{L-1} renamed backbone.norm, the "
                          "official Video Swin Transformer's name; written by this script, not by the official code"],
    })


# ---------------------------------------------------------------------------------------------------------------
# 2-D -> 3-D inflation by mmaction2's own code


def official_2d(cfg_kwargs: dict, seed: int) -> dict[str, torch.Tensor]:
    """A tiny 2-D Swin in the official layout (timm's weights renamed, with the official buffers)."""
    from make_peer_fixtures import timm_model, timm_to_official

    from swinref.config import SwinConfig

    model = timm_model(dict(cfg_kwargs, drop_path_rate=0.0), seed)
    cfg = SwinConfig(img_size=cfg_kwargs["img_size"], patch_size=cfg_kwargs["patch_size"],
                     embed_dim=cfg_kwargs["embed_dim"], depths=cfg_kwargs["depths"],
                     num_heads=cfg_kwargs["num_heads"], window_size=cfg_kwargs["window_size"],
                     num_classes=cfg_kwargs["num_classes"])
    return timm_to_official(model, cfg)


def inflate_with_mmaction(src: Path, arch: dict, patch, window) -> dict[str, np.ndarray]:
    from mmaction.models.backbones.swin import SwinTransformer3D

    torch.manual_seed(0)
    model = SwinTransformer3D(arch=arch, pretrained=str(src), pretrained2d=True, patch_size=patch,
                              window_size=window, drop_path_rate=0.0, out_indices=(len(arch["depths"]) - 1,))
    model.init_weights()
    return {k: to_np(v) for k, v in model.state_dict().items() if not k.endswith("relative_position_index")}


def case_inflate(out: Path, *, cfg_kwargs: dict, seed: int) -> None:
    case = out / "inflate"
    case.mkdir(parents=True)
    sd = official_2d(cfg_kwargs, seed)
    torch.save({"model": sd}, case / "swin2d.pth")
    arch = dict(embed_dims=cfg_kwargs["embed_dim"], depths=list(cfg_kwargs["depths"]),
                num_heads=list(cfg_kwargs["num_heads"]))
    results = {}
    for label, window in (("same", (2, 3, 3)), ("resize", (2, 4, 4))):
        arrays = inflate_with_mmaction(case / "swin2d.pth", arch, (2, 4, 4), window)
        write_npz(case / f"inflated_{label}.npz", arrays)
        results[f"inflated_{label}.npz"] = {"window_size": list(window), "patch_size": [2, 4, 4],
                                            "arrays": shapes_of(arrays)}
    write_json(case / "meta.json", {
        "case": "inflate", "peer": "mmaction2",
        "code": "mmaction.models.backbones.swin.SwinTransformer3D(pretrained=swin2d.pth, pretrained2d=True)"
                ".init_weights() -> inflate_weights",
        "versions": versions(), "source_2d": {"file": "swin2d.pth", "layout": "official ({'model': ...})",
                                              "timm_constructor": cfg_kwargs},
        "arch": arch, "results": results, "seeds": {"weights": seed},
        "notes": ["the 2-D head is not part of the backbone (mmaction loads with strict=False and drops it); the "
                  "2-D final norm becomes norm{L-1}, which mmaction renames only when L = 4 (hasattr(self, "
                  "'norm3')), so the 2-D model has four stages"],
    })


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "video"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    if import_mmaction() is None:
        raise SystemExit("mmaction2 does not import (see tools/openmmlab.py and /work/shared/REFERENCE.md)")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    shift_pad = dict(patch_size=[2, 4, 4], embed_dim=4, depths=[2, 2, 2], num_heads=[1, 2, 4], window_size=[4, 3, 3],
                     num_classes=5, stochastic_depth_prob=0.0)
    case_tv(out, "tv_shift_pad", kwargs=shift_pad, clip=(9, 26, 30), batch=1, seed=100,
            notes=["3-D shift and padding on every axis (stages 0, 1), odd-H merge, H/W clamped below the window "
                   "in stage 2 (the sliced bias index differs from the geometric one there)"])
    case_tv(out, "tv_clamp_t", kwargs=dict(patch_size=[2, 4, 4], embed_dim=4, depths=[2, 2], num_heads=[1, 2],
                                           window_size=[4, 3, 3], num_classes=5, stochastic_depth_prob=0.0),
            clip=(6, 20, 28), batch=2, seed=110,
            notes=["T clamped to 3 < 4 (no temporal shift); the sliced index is the geometric one when only T is "
                   "clamped; odd H and W merges; a batch of two clips"])
    case_mma(out, "mma_shift_pad",
             backbone=dict(arch=dict(embed_dims=4, depths=[2, 2, 2], num_heads=[1, 2, 4]), pretrained2d=False,
                           patch_size=[2, 4, 4], window_size=[4, 3, 3], drop_path_rate=0.0, out_indices=(2,)),
             num_classes=5, clip=(9, 26, 30), batch=1, seed=120,
             notes=["mmaction2 1.2 computes the window and mask per stage from the stage input (get_window_size), "
                    "pads after norm1, then rolls"])
    case_inflate(out, cfg_kwargs=dict(img_size=96, patch_size=4, embed_dim=4, depths=(1, 1, 1, 1),
                                      num_heads=(1, 1, 2, 2), window_size=3, num_classes=7), seed=130)
    total = 0
    for case in sorted(p for p in out.iterdir() if p.is_dir()):
        size = sum(f.stat().st_size for f in case.rglob("*") if f.is_file())
        total += size
        print(f"{case.name}: {size / 1024:.0f} KB")
    print(f"total: {total / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
