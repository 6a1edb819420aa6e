"""Write the small Swin V2 peer fixtures in tests/data/peers_v2/ by running the real peer libraries.

A directory of their own: the V1 fixture tests and tools/check_peer_semantics.py read every case in tests/data/peers.

Run with the peers environment (torch, timm, transformers, torchvision):

    /work/venv-peers/bin/python tools/make_v2_fixtures.py [--out tests/data/peers_v2]

Every case is a directory with `meta.json` (peer versions, constructor arguments, the equivalent swinref config,
padding policy, notes), the checkpoint(s) exactly as that peer writes them, `io.npz` (float32: input, logits,
the NCHW stage pyramid `features.i`, pooled) and `io64.npz` (the same in float64; hf_v2_pad also has
`io64_mask_once.npz`, see case_hf). Deterministic: fixed seeds,
one thread. Never edited by hand: rerun this script.

Every parameter is redrawn from a seeded normal, including V2's learned temperature `logit_scale` (the first
head of every block above the clamp log(100), so the clamp matters) and the continuous position bias MLP (its
default init would make 16*sigmoid(...) nearly constant and hide a wrong coordinate table).

float64: timm, transformers and torchvision compute the V2 coordinate table (log-spaced offsets) in float32 and
cast it, so a `.double()` model carries float32-rounded coordinates. For the float64 files this script
recomputes that buffer in float64 with the peer's own formula (meta.json records how much that changes the
logits); swinref computes the table in float64 and casts it to the compute dtype.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_peer_fixtures import make_input, shapes_of, to_np, versions, write_json, write_npz  # noqa: E402

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------------
# Weights and coordinates


def randomize_v2_(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter from a seeded normal (see the module docstring for why)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith("logit_scale"):
                value = math.log(10.0) + 1.5 * noise  # around the init log(10)
                value.view(-1)[0] = math.log(100.0) + 0.5 + abs(float(noise.view(-1)[0]))  # one head clamped
            elif p.ndim == 1 and name.endswith("weight"):
                value = 1.0 + 0.2 * noise  # LayerNorm gains
            elif p.ndim == 1:
                value = 0.1 * noise  # biases, incl. q_bias / v_bias and the cpb MLP's first bias
            else:
                fan_in = int(np.prod(p.shape[1:]))
                value = noise / np.sqrt(fan_in)
            p.copy_(value.to(p.dtype))


def coords_table64(window: tuple[int, int], pretrained: tuple[int, int]) -> torch.Tensor:
    """The peers' relative_coords_table formula, in float64: [1, 2Mh-1, 2Mw-1, 2]."""
    h = torch.arange(-(window[0] - 1), window[0], dtype=torch.float64)
    w = torch.arange(-(window[1] - 1), window[1], dtype=torch.float64)
    t = torch.stack(torch.meshgrid([h, w], indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    ref = pretrained if pretrained[0] > 0 else window
    if ref[0] > 1:
        t[..., 0] /= ref[0] - 1
    if ref[1] > 1:
        t[..., 1] /= ref[1] - 1
    t *= 8
    return torch.sign(t) * torch.log2(torch.abs(t) + 1.0) / math.log2(8)


def exact_coords_(attn_modules, get_sizes) -> None:
    """Replace every attention module's float32-made coordinate table by the float64 one."""
    for m in attn_modules:
        window, pretrained = get_sizes(m)
        table = coords_table64(window, pretrained)
        m.relative_coords_table = table.reshape(m.relative_coords_table.shape).to(m.relative_coords_table.dtype)


def swinref_config(*, img_size, embed_dim, depths, num_heads, window_size, num_classes, pretrained):
    return {
        "version": 2, "img_size": list(img_size), "patch_size": 4, "embed_dim": embed_dim, "depths": list(depths),
        "num_heads": list(num_heads), "window_size": window_size, "num_classes": num_classes, "mlp_ratio": 4.0,
        "qkv_bias": True, "patch_norm": True, "layer_norm_eps": 1e-5, "pretrained_window_sizes": list(pretrained),
    }


def run_pair(build, run, exact, x: torch.Tensor) -> tuple[dict, dict, float]:
    """float32 arrays, float64 arrays (exact coordinates) and how much the exact coordinates moved the logits."""
    model = build()
    a32 = run(model, x)
    m64 = build().double()
    rounded = run(m64, x.double())["logits"]
    exact(m64)
    a64 = run(m64, x.double())
    return a32, a64, float(np.abs(a64["logits"] - rounded).max())


# ---------------------------------------------------------------------------------------------------------------
# timm


def timm_build(kwargs: dict, seed: int):
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    torch.manual_seed(seed)
    model = SwinTransformerV2(**kwargs)
    randomize_v2_(model, seed)
    return model.eval()


def timm_exact(model) -> None:
    exact_coords_([b.attn for s in model.layers for b in s.blocks],
                  lambda a: (a.window_size, a.pretrained_window_size))


def timm_run(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    out = {"input": to_np(x), "logits": to_np(logits), "pooled": to_np(pooled)}
    out.update({f"features.{i}": to_np(f) for i, f in enumerate(feats)})
    return out


def timm_to_official(model) -> dict[str, torch.Tensor]:
    """timm V2 weights under the official V2 names, with the buffers the official model saves (index, coordinate
    table, masks of shifted blocks) so the reader has to drop them."""
    import itertools
    import re

    from swinref.checkpoints.layouts import timm as timm_layout

    # Renames only (the torch tensors themselves), in timm's order: a merge at the start of stage i+1 comes right
    # after stage i's blocks, where the official model keeps it.
    params, _ = timm_layout.to_canonical(model.state_dict())
    out: dict[str, torch.Tensor] = {}

    def block_of(item):
        m = re.match(r"layers\.\d+\.blocks\.\d+\.", item[0])
        return m.group(0) if m else None

    for prefix, items in itertools.groupby(params.items(), key=block_of):
        out.update((k, v.clone()) for k, v in items)
        if prefix:  # the buffers the official model saves after a block's parameters
            i, j = map(int, prefix.split(".")[1::2])
            blk = model.layers[i].blocks[j]
            out[prefix + "attn.relative_coords_table"] = blk.attn.relative_coords_table.detach().float().clone()
            out[prefix + "attn.relative_position_index"] = blk.attn.relative_position_index.detach().long().clone()
            if getattr(blk, "attn_mask", None) is not None:
                out[prefix + "attn_mask"] = blk.attn_mask.detach().float().clone()
    return out


def case_timm(out: Path, name: str, kwargs: dict, hw: tuple[int, int], seed: int, notes: list[str],
              with_pth: bool = True) -> None:
    from safetensors.torch import save_file
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    case = out / name
    case.mkdir(parents=True)
    x = make_input(seed + 1, hw)
    a32, a64, coord_effect = run_pair(lambda: timm_build(kwargs, seed), timm_run, timm_exact, x)
    write_npz(case / "io.npz", a32)
    write_npz(case / "io64.npz", a64)
    model = timm_build(kwargs, seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(case / "model.safetensors"))
    files = ["model.safetensors", "official.pth"]
    if with_pth:  # timm's own .pth once, to keep the fixtures small
        torch.save(model.state_dict(), case / "model.pth")
        files.append("model.pth")
    torch.save({"model": timm_to_official(model)}, case / "official.pth")
    fresh = timm_build(kwargs, seed + 99)
    fresh.load_state_dict(checkpoint_filter_fn(torch.load(case / "official.pth", weights_only=True), fresh))
    with torch.no_grad():
        diff = (fresh.eval()(x) - model(x)).abs().max().item()
    if diff != 0.0:
        raise SystemExit(f"{name}: official.pth does not reproduce timm's logits via checkpoint_filter_fn ({diff})")
    notes = notes + ["official.pth: timm's weights under the official V2 names (merge at the end of the stage, "
                     "head.*) plus the buffers the official model saves; it loads back into timm through "
                     "timm's checkpoint_filter_fn and reproduces the logits exactly."]
    blocks = [{"block": f"layers.{i}.blocks.{j}", "window": list(b.window_size), "shift": list(b.shift_size)}
              for i, s in enumerate(model.layers) for j, b in enumerate(s.blocks)]
    write_json(case / "meta.json", {
        "case": name, "peer": "timm", "class": "timm.models.swin_transformer_v2.SwinTransformerV2",
        "versions": versions(), "constructor": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        "swinref_config": swinref_config(img_size=hw, embed_dim=kwargs["embed_dim"], depths=kwargs["depths"],
                                         num_heads=kwargs["num_heads"], window_size=kwargs["window_size"],
                                         num_classes=kwargs["num_classes"],
                                         pretrained=kwargs["pretrained_window_sizes"]),
        "input_shape": list(x.shape), "padding": "timm", "blocks": blocks,
        "checkpoint_files": files,
        "io_files": {"io.npz": shapes_of(a32), "io64.npz": shapes_of(a64)},
        "float64_coords_effect_on_logits": coord_effect,
        "seeds": {"weights": seed, "input": seed + 1},
        "notes": notes,
    })


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face transformers


def hf_build(cfg_kwargs: dict, seed: int):
    from transformers import Swinv2Config, Swinv2ForImageClassification

    torch.manual_seed(seed)
    model = Swinv2ForImageClassification(Swinv2Config(**cfg_kwargs))
    randomize_v2_(model, seed)
    return model.eval()


def hf_exact(model) -> None:
    exact_coords_([b.attention.self for s in model.swinv2.encoder.layers for b in s.blocks],
                  lambda a: (tuple(a.window_size), tuple(a.pretrained_window_size)))


def hf_run(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    # Swinv2ForImageClassification does not pass output_hidden_states_before_downsampling on (5.23): hook each
    # stage, whose output is (merged, before merging, (h, w, h', w')).
    feats: dict[int, torch.Tensor] = {}

    def keep(i):
        def hook(_m, _inp, out):
            t, (h, w) = out[1], out[2][:2]
            feats[i] = t.detach().reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2).clone()
        return hook

    handles = [s.register_forward_hook(keep(i)) for i, s in enumerate(model.swinv2.encoder.layers)]
    with torch.no_grad():
        logits = model(x).logits
        base = model.swinv2(x)
    for h in handles:
        h.remove()
    out = {"input": to_np(x), "logits": to_np(logits), "pooled": to_np(base.pooler_output)}
    out.update({f"features.{i}": to_np(f) for i, f in sorted(feats.items())})
    return out


def case_hf(out: Path, name: str, cfg_kwargs: dict, hw: tuple[int, int], seed: int, notes: list[str]) -> None:
    case = out / name
    case.mkdir(parents=True)
    x = make_input(seed + 1, hw)
    a32, a64, coord_effect = run_pair(lambda: hf_build(cfg_kwargs, seed), hf_run, hf_exact, x)
    write_npz(case / "io.npz", a32)
    write_npz(case / "io64.npz", a64)
    # transformers 5.23's Swinv2SelfAttention adds the shift mask twice (-200 between regions, official -100).
    # With cosine attention the logits span +-exp(logit_scale) (up to +-100), so -100 need not silence the other
    # regions and the doubled mask can change outputs. The same model with the mask halved (added twice: -100)
    # gives the official semantics; record it and the difference.
    from transformers.models.swinv2.modeling_swinv2 import Swinv2Layer

    original = Swinv2Layer.get_attn_mask

    def halved(self, *args, **kwargs):
        mask = original(self, *args, **kwargs)
        return None if mask is None else mask / 2

    m64 = hf_build(cfg_kwargs, seed).double()
    hf_exact(m64)
    Swinv2Layer.get_attn_mask = halved
    try:
        once = hf_run(m64, x.double())
    finally:
        Swinv2Layer.get_attn_mask = original
    write_npz(case / "io64_mask_once.npz", once)
    double_mask = {k: float(np.abs(once[k] - a64[k]).max()) for k in a64 if k != "input"}
    hf_build(cfg_kwargs, seed).save_pretrained(case / "hf")
    write_json(case / "meta.json", {
        "case": name, "peer": "transformers", "class": "transformers.Swinv2ForImageClassification",
        "versions": versions(), "constructor": cfg_kwargs,
        "swinref_config": swinref_config(img_size=hw, embed_dim=cfg_kwargs["embed_dim"],
                                         depths=cfg_kwargs["depths"], num_heads=cfg_kwargs["num_heads"],
                                         window_size=cfg_kwargs["window_size"],
                                         num_classes=cfg_kwargs["num_labels"],
                                         pretrained=cfg_kwargs["pretrained_window_sizes"]),
        "input_shape": list(x.shape), "padding": "pad", "checkpoint_files": ["hf"],
        "io_files": {"io.npz": shapes_of(a32), "io64.npz": shapes_of(a64), "io64_mask_once.npz": shapes_of(once)},
        "float64_coords_effect_on_logits": coord_effect,
        "double_mask_effect_float64": double_mask,
        "seeds": {"weights": seed, "input": seed + 1}, "notes": notes + [
            "io64_mask_once.npz: the same float64 model with HF's doubled shift mask brought back to -100 (the "
            "official value); double_mask_effect_float64 is the max |difference| it makes per array"],
    })


# ---------------------------------------------------------------------------------------------------------------
# torchvision


def tv_build(kwargs: dict, seed: int):
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    torch.manual_seed(seed)
    model = SwinTransformer(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2, **kwargs)
    randomize_v2_(model, seed)
    return model.eval()


def tv_attn(model):
    return [m for m in model.modules() if type(m).__name__ == "ShiftedWindowAttentionV2"]


def tv_exact(model) -> None:
    exact_coords_(tv_attn(model), lambda a: (tuple(a.window_size), (0, 0)))


def tv_run(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    feats = []
    with torch.no_grad():
        logits = model(x)
        h = x
        for k, layer in enumerate(model.features):
            h = layer(h)
            if k % 2 == 1:
                feats.append(h.permute(0, 3, 1, 2))
        pooled = model.flatten(model.avgpool(model.permute(model.norm(h))))
    out = {"input": to_np(x), "logits": to_np(logits), "pooled": to_np(pooled)}
    out.update({f"features.{i}": to_np(f) for i, f in enumerate(feats)})
    return out


def case_tv(out: Path, name: str, kwargs: dict, hw: tuple[int, int], seed: int, notes: list[str]) -> None:
    case = out / name
    case.mkdir(parents=True)
    x = make_input(seed + 1, hw)
    a32, a64, coord_effect = run_pair(lambda: tv_build(kwargs, seed), tv_run, tv_exact, x)
    write_npz(case / "io.npz", a32)
    write_npz(case / "io64.npz", a64)
    torch.save(tv_build(kwargs, seed).state_dict(), case / "model.pth")
    write_json(case / "meta.json", {
        "case": name, "peer": "torchvision",
        "class": "torchvision.models.swin_transformer.SwinTransformer(block=SwinTransformerBlockV2, "
                 "downsample_layer=PatchMergingV2)",
        "versions": versions(), "constructor": kwargs,
        "swinref_config": swinref_config(img_size=hw, embed_dim=kwargs["embed_dim"], depths=kwargs["depths"],
                                         num_heads=kwargs["num_heads"], window_size=kwargs["window_size"][0],
                                         num_classes=kwargs["num_classes"], pretrained=(0,) * len(kwargs["depths"])),
        "input_shape": list(x.shape), "padding": "pad", "checkpoint_files": ["model.pth"],
        "io_files": {"io.npz": shapes_of(a32), "io64.npz": shapes_of(a64)},
        "float64_coords_effect_on_logits": coord_effect,
        "seeds": {"weights": seed, "input": seed + 1}, "notes": notes,
    })


# ---------------------------------------------------------------------------------------------------------------


TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "peers_v2"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    for old in out.glob("*_v2_*"):
        shutil.rmtree(old)

    # 52x44 -> grids 13x11 and 7x6: both stages pad to the window 4 on both axes, both merges pad an odd side,
    # and every shifted stage has an axis whose window padding is neither 0 nor the shift, so the pad/roll order
    # matters (timm rolls first).
    pad_hw = (52, 44)
    case_timm(out, "timm_v2_pad", dict(img_size=pad_hw, patch_size=4, window_size=4, num_classes=10,
                                        pretrained_window_sizes=(0, 0), **TINY), pad_hw, seed=20,
              notes=["non-square size the window does not divide; timm rolls, then pads (padding='timm')"])
    # 32x32, three stages, window 4 fine-tuned from pretrained windows (3, 3, 3), as the official 12 -> 16
    # models: grids 8, 4, 2 -> stage 1 is clamped to its own size (window 4, no shift), stage 2 to window 2 (its
    # pretrained window 3 differs from it, so the official.pth coordinate buffers reveal it).
    case_timm(out, "timm_v2_pwin", dict(img_size=(32, 32), patch_size=4, window_size=4, num_classes=10,
                                         embed_dim=8, depths=(2, 2, 2), num_heads=(2, 4, 8),
                                         pretrained_window_sizes=(3, 3, 3)), (32, 32), seed=30,
              notes=["pretrained_window_sizes != 0 with the clamp rule on the last two stages"], with_pth=False)
    case_hf(out, "hf_v2_pad", dict(image_size=list(pad_hw), patch_size=4, embed_dim=16, depths=[2, 2],
                                   num_heads=[2, 4], window_size=4, num_labels=10, drop_path_rate=0.0,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                   pretrained_window_sizes=[3, 2]),
            pad_hw, seed=40,
            notes=["Swinv2ForImageClassification saved with save_pretrained (config.json + model.safetensors); "
                   "pretrained_window_sizes [3, 2]; HF pads, then rolls (padding='pad')"])
    # torchvision never clamps the window: sizes whose every stage grid is larger than the window.
    tv_hw = (60, 52)  # grids 15x13 and 8x7, padded to 16x16 and 8x8
    case_tv(out, "tv_v2_pad", dict(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                   window_size=[4, 4], num_classes=10, stochastic_depth_prob=0.0),
            tv_hw, seed=50,
            notes=["torchvision V2 has no pretrained window sizes; pads, then rolls; keeps a full 3C qkv.bias "
                   "and zeroes its k third in forward (randomised here, so the reader must drop it)"])
    for case in sorted(out.glob("*_v2_*")):
        size = sum(f.stat().st_size for f in case.rglob("*") if f.is_file())
        print(f"{case.name}: {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
