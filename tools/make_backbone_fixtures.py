"""Write tests/data/backbone/: tiny Swin backbones saved by each peer in its own file format, and their outputs.

Run in the peers environment (torch, transformers, OpenMMLab through tools/openmmlab.py):

    . /work/peers-venv/bin/activate && python tools/make_backbone_fixtures.py [--out tests/data/backbone]

Every case is one peer model with the same deterministic weights, saved the way that peer saves its weights, and
run at a few input sizes in float32 and float64. tests/test_backbone.py loads each saved file with swinref.load
(no config given: everything detected from the file) and compares Model.features(x) with the stored outputs.

Models (kept tiny so that the weight files stay small): "v1" has the Swin-T geometry (patch 4, window 7, built at
224x224), "v2" the Swin-V2-T geometry (patch 4, window 8, built at 256x256); both embed_dim 4, depths (2, 2, 2, 2),
heads (1, 1, 2, 4) (head dims 4, 8, 8, 8: V2's cosine attention over 4-dim heads is so ill-conditioned in float32 that the peer's own float32 output strays 7e-5 from its float64 one), mlp_ratio 2. Weights: swinref.params.init_params(cfg, seed=0) (no head, no final norm) plus
the per-stage output norms norm0..norm3 and, for the "ape" cases, an absolute position embedding [1, C, 56, 56]
(counter_uniform under the keys "backbone:<name>"), all rounded to float32 first (the files hold float32, and the
float64 runs use the same rounded values). They are converted to the peer's names by
swinref.checkpoints.layouts.<layout>.from_canonical; the output norms and the position embedding are written in
the peer's own names and shapes here (OpenMMLab and transformers keep the embedding as [1, L, C], L = 56*56 tokens
in row-major order; the official detection backbone as [1, C, 56, 56]).

Cases (peer -> file):
  mmdet            mmdet 3.3 SwinTransformer: an mmengine-style checkpoint {'meta', 'state_dict'} written by
                   mmengine.runner.checkpoint.save_checkpoint, the backbone under 'backbone.' beside a real mmdet FPN
                   ('neck.') and an RPN head ('rpn_head.', named as mmdet's RPNHead: rpn_conv, rpn_cls, rpn_reg).
  mmseg            mmseg 1.2 SwinTransformer, mmengine-style, beside 'decode_head.' and 'auxiliary_head.' convs.
  mmpretrain_ape   mmpretrain 1.2 SwinTransformer (V1) with use_abs_pos_embed=True and pad_small_map=True (the
                   detection rule), mmengine-style, beside a classifier head 'head.fc.'. mmpretrain resizes the
                   embedding bicubically (align_corners=False) to the run-time grid, as the official detection
                   backbone does; its resize_pos_embed computes in float32 (`src_weight.float()`), so the float64 run
                   uses the same function without that cast (patched here, harness only).
  mmpretrain_v2    mmpretrain 1.2 SwinTransformerV2 (pad_small_map=True), mmengine-style. V2 coordinate tables are
                   recomputed in float64 for the float64 run (tools/peers.exact_v2_coords).
  hf_backbone      transformers 5.23 SwinBackbone (out_features stage1..stage4): save_pretrained's directory
                   (config.json + model.safetensors).
  hf_backbone_ape  the same with use_absolute_embeddings=True (embeddings.position_embeddings [1, L, C]), run with
                   interpolate_pos_encoding=True: bicubic, align_corners=False, to (H // patch, W // patch) of the
                   image, skipped when the grid is the pretraining one (modeling_swin.py:189-217); at 97x131 that
                   is 24x32 for a padded 25x33 token grid, so transformers fails there (recorded).
  official_ape     the official detection backbone (Swin-Transformer-Object-Detection): a checkpoint as its
                   mmcv-1.x save_checkpoint writes it, {'meta', 'state_dict'}, official names under 'backbone.',
                   absolute_pos_embed [1, C, 56, 56], norm0..norm3, beside 'neck.', 'rpn_head.' and 'roi_head.'.
                   The official code is not installed; its backbone weights are the mmpretrain_ape model's state
                   dict converted by the inverse of mmdet's own swin_converter (mmdet/models/backbones/swin.py:767),
                   checked here: swin_converter applied to the written official names gives back the OpenMMLab
                   state dict bit for bit. The outputs are mmpretrain_ape's: the official detection forward (read:
                   pad the image to the patch, conv, patch norm, F.interpolate(absolute_pos_embed, size=(Wh, Ww),
                   mode='bicubic') added, windows never clamped, always shifted, pad then roll, a LayerNorm norm{i}
                   on each output) is what mmpretrain does with use_abs_pos_embed=True and pad_small_map=True.
  official         the same without the position embedding; outputs are the mmdet model's (same weights).
  mask2former      a detectron2 / Mask2Former model_final .pkl: pickle.dump of {'model': {name: NumPy array},
                   '__author__', 'matching_heuristics'} (detectron2's published form), the official backbone's names
                   under 'backbone.' (Mask2Former's D2SwinTransformer is the official detection backbone's code)
                   beside 'sem_seg_head.' entries and pixel_mean / pixel_std; detectron2 is not installed, so the
                   file is built by naming from the official case's state dict; outputs are the mmdet model's.

Sizes: 97x131 (not a multiple of the patch), 232x176, the build size, and 800x1333 (stage outputs sketched),
batch 1. Inputs: counter_uniform(f"input:{H}x{W}", 3*H*W).reshape(1, 3, H, W), as tests/data/policies.
Outputs: every stage output after the peer's output norm (the backbone's own outputs, NCHW), stored
channels-last ([B, h, w, C]) as swinref.golden.sketch.compact leaves it: whole up to FULL_LIMIT values, else the
sketch. Deterministic: one thread, fixed weights and inputs, fixed meta; a rerun writes byte-identical files.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from swinref.config import SwinConfig  # noqa: E402
from swinref.golden.sketch import FULL_LIMIT, PROJECTIONS, compact  # noqa: E402
from swinref.params import counter_uniform, init_params  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

DTYPES = ("float32", "float64")
SEED = 0
SIZES = [(97, 131), (232, 176)]
BIG = (800, 1333)

COMMON = dict(patch_size=4, embed_dim=4, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 4), mlp_ratio=2.0, num_classes=0)
MODELS = {
    "v1": SwinConfig(name="backbone_v1_tiny", version=1, img_size=(224, 224), window_size=7, **COMMON),
    "v2": SwinConfig(name="backbone_v2_tiny", version=2, img_size=(256, 256), window_size=8, **COMMON),
}

# case -> (model, peer, ape, file name, sizes beyond SIZES / instead of them)
CASES: dict[str, dict[str, Any]] = {
    "mmdet": dict(model="v1", peer="mmdet", ape=False, file="mmdet_epoch_12.pth", big=True),
    "mmseg": dict(model="v1", peer="mmseg", ape=False, file="mmseg_iter_160000.pth"),
    "mmpretrain_ape": dict(model="v1", peer="mmpretrain", ape=True, file="mmpretrain_ape_epoch_300.pth", big=True),
    "mmpretrain_v2": dict(model="v2", peer="mmpretrain", ape=False, file="mmpretrain_v2_epoch_300.pth"),
    "hf_backbone": dict(model="v1", peer="hf_backbone", ape=False, file="hf_backbone", big=True),
    "hf_backbone_ape": dict(model="v1", peer="hf_backbone", ape=True, file="hf_backbone_ape", big=True),
    "official_ape": dict(model="v1", peer="official", ape=True, file="official_ape_mask_rcnn.pth",
                         outputs_of="mmpretrain_ape", big=True),
    "official": dict(model="v1", peer="official", ape=False, file="official_mask_rcnn.pth", outputs_of="mmdet"),
    "mask2former": dict(model="v1", peer="mask2former", ape=False, file="mask2former_model_final.pkl",
                        outputs_of="mmdet"),
}

META_FIXED = {"about": "written by tools/make_backbone_fixtures.py; never edited by hand"}


# ---------------------------------------------------------------------------------------------------------------
# Weights


def canonical(model: str, ape: bool) -> dict[str, np.ndarray]:
    """Canonical params, float32-rounded (held as float64): the model without head and final norm, norm0..norm3,
    and absolute_pos_embed [1, C, Hp, Wp] when `ape`."""
    cfg = MODELS[model]
    params = {k: v for k, v in init_params(cfg, seed=SEED, dtype="float64").items() if not k.startswith("norm.")}
    for i in range(cfg.num_layers):
        C = cfg.embed_dim * 2 ** i
        params[f"norm{i}.weight"] = 1.0 + 0.2 * counter_uniform(f"backbone:norm{i}.weight", C)
        params[f"norm{i}.bias"] = 0.1 * counter_uniform(f"backbone:norm{i}.bias", C)
    if ape:
        Hp, Wp = (n // cfg.patch_size for n in cfg.img_size)
        params["absolute_pos_embed"] = 0.5 * counter_uniform(
            "backbone:absolute_pos_embed", cfg.embed_dim * Hp * Wp).reshape(1, cfg.embed_dim, Hp, Wp)
    return {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in params.items()}


def tokens_first(ape: np.ndarray) -> np.ndarray:
    """[1, C, Hp, Wp] -> [1, Hp*Wp, C] (row-major tokens): the OpenMMLab / transformers parameter."""
    return np.ascontiguousarray(ape.reshape(1, ape.shape[1], -1).transpose(0, 2, 1))


def peer_state_dict(case: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The params in the peer's own names: the layout module's from_canonical for the body; the output norms and
    the position embedding by the peer's own naming (see the module doc)."""
    c = CASES[case]
    cfg = MODELS[c["model"]]
    body = {k: v for k, v in params.items() if not k.startswith("norm") and k != "absolute_pos_embed"}
    norms = {k: v for k, v in params.items() if k.startswith("norm")}
    ape = params.get("absolute_pos_embed")
    if c["peer"] == "hf_backbone":
        from swinref.checkpoints.layouts import transformers as layout

        sd = dict(layout.from_canonical(body, cfg))
        for k, v in norms.items():
            i, leaf = int(k[4]), k.split(".", 1)[1]
            sd[f"hidden_states_norms.stage{i + 1}.{leaf}"] = v
        if ape is not None:
            sd["swin.embeddings.position_embeddings"] = tokens_first(ape)
        return sd
    from swinref.checkpoints.layouts import openmmlab as layout

    last = cfg.num_layers - 1
    # from_canonical writes the last stage's norm from `norm`; the other output norms pass through under their names
    sd = dict(layout.from_canonical({**body, **norms}, cfg))
    assert all(f"norm{i}.weight" in sd for i in range(last + 1)), sorted(sd)[-8:]
    if ape is not None:
        sd["absolute_pos_embed"] = tokens_first(ape)
    return sd


# ---------------------------------------------------------------------------------------------------------------
# Peers


def build(case: str) -> torch.nn.Module:
    c = CASES[case]
    cfg = MODELS[c["model"]]
    torch.manual_seed(0)
    depths, heads = list(cfg.depths), list(cfg.num_heads)
    if c["peer"] == "hf_backbone":
        import transformers

        hf_cfg = transformers.SwinConfig(
            image_size=cfg.img_size[0], patch_size=cfg.patch_size, num_channels=3, embed_dim=cfg.embed_dim,
            depths=depths, num_heads=heads, window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
            use_absolute_embeddings=c["ape"], out_features=["stage1", "stage2", "stage3", "stage4"])
        hf_cfg._attn_implementation = "sdpa"  # eager takes its softmax in float32 even in a float64 model
        net = transformers.SwinBackbone(hf_cfg)
    else:
        from openmmlab import import_openmmlab

        mm = import_openmmlab()
        if c["peer"] in ("mmdet", "mmseg"):
            net = {"mmdet": mm.det, "mmseg": mm.seg}[c["peer"]](**mm_kwargs(case))
        else:
            net = (mm.pretrain_v2 if cfg.version == 2 else mm.pretrain)(**mm_kwargs(case))
    net.eval()
    return net


def mm_kwargs(case: str) -> dict[str, Any]:
    """The constructor arguments of the OpenMMLab backbone (recorded in meta.json)."""
    c = CASES[case]
    cfg = MODELS[c["model"]]
    depths, heads = list(cfg.depths), list(cfg.num_heads)
    if c["peer"] in ("mmdet", "mmseg"):
        return dict(pretrain_img_size=cfg.img_size[0], in_channels=3, embed_dims=cfg.embed_dim,
                    patch_size=cfg.patch_size, window_size=cfg.window_size, mlp_ratio=int(cfg.mlp_ratio),
                    depths=depths, num_heads=heads, strides=[4, 2, 2, 2], out_indices=[0, 1, 2, 3], qkv_bias=True,
                    drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, use_abs_pos_embed=c["ape"])
    arch = dict(embed_dims=cfg.embed_dim, depths=depths, num_heads=heads)
    kw = dict(img_size=cfg.img_size[0], patch_size=cfg.patch_size, in_channels=3, window_size=cfg.window_size,
              drop_rate=0.0, drop_path_rate=0.0, out_indices=[0, 1, 2, 3], pad_small_map=True,
              stage_cfgs=dict(block_cfgs=dict(ffn_ratio=cfg.mlp_ratio)))
    if cfg.version == 2:
        arch["extra_norm_every_n_blocks"] = 0
    else:
        kw["use_abs_pos_embed"] = c["ape"]
    return dict(arch=arch, **kw)


def load_weights(net: torch.nn.Module, case: str, sd: dict[str, np.ndarray]) -> None:
    own = net.state_dict()
    wrong = sorted(k for k, v in sd.items() if k in own and tuple(own[k].shape) != tuple(v.shape))
    unexpected = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd and k.rsplit(".", 1)[-1] not in
                     ("relative_position_index", "relative_coords_table", "attn_mask")
                     and not k.startswith("swin.layernorm."))
    if wrong or unexpected or missing:
        raise RuntimeError(f"{case}: state dict does not fit: unexpected {unexpected[:6]}, missing {missing[:6]}, "
                           f"shapes {wrong[:6]}")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(torch.from_numpy(np.ascontiguousarray(v)).to(own[k].dtype))


def _resize_pos_embed_exact(pos_embed, src_shape, dst_shape, mode="bicubic", num_extra_tokens=1):
    """mmpretrain.models.utils.embed.resize_pos_embed without its float32 cast (the float64 run only)."""
    if src_shape[0] == dst_shape[0] and src_shape[1] == dst_shape[1]:
        return pos_embed
    _, L, C = pos_embed.shape
    extra = pos_embed[:, :num_extra_tokens]
    src = pos_embed[:, num_extra_tokens:].reshape(1, src_shape[0], src_shape[1], C).permute(0, 3, 1, 2)
    dst = torch.nn.functional.interpolate(src, size=dst_shape, align_corners=False, mode=mode)
    return torch.cat((extra, torch.flatten(dst, 2).transpose(1, 2)), dim=1)


def run(case: str, sd: dict[str, np.ndarray], size: tuple[int, int], dtype: str) -> list[np.ndarray] | dict:
    """The backbone's outputs (NCHW, after its output norms) or {'error': ...} where the peer raises."""
    c = CASES[case]
    net = build(case)
    if dtype == "float64":
        net.double()
    load_weights(net, case, sd)
    patched = None
    if dtype == "float64":
        if MODELS[c["model"]].version == 2:
            from peers import exact_v2_coords

            exact_v2_coords(net)
        if c["peer"] == "mmpretrain" and c["ape"]:
            module = importlib.import_module("mmpretrain.models.backbones.swin_transformer")
            patched = module.resize_pos_embed
            module.resize_pos_embed = _resize_pos_embed_exact
    H, W = size
    x = torch.from_numpy(counter_uniform(f"input:{H}x{W}", 3 * H * W).reshape(1, 3, H, W).astype(dtype))
    kwargs = {"interpolate_pos_encoding": True} if c["peer"] == "hf_backbone" and c["ape"] else {}
    try:
        with torch.no_grad():
            out = net(x, **kwargs)
    except Exception as exc:  # recorded: where the peer cannot run the size
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        if patched is not None:
            module.resize_pos_embed = patched
    if c["peer"] == "hf_backbone":
        out = out.feature_maps
    return [o.detach().numpy().copy() for o in out]


# ---------------------------------------------------------------------------------------------------------------
# Files, each in its peer's own format


class Whole(torch.nn.Module):
    """A whole model's module tree: the backbone beside the modules a checkpoint of the whole model holds."""

    def __init__(self, backbone: torch.nn.Module, **others: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        for name, module in others.items():
            setattr(self, name, module)


def _others(case: str, channels: list[int]) -> dict[str, torch.nn.Module]:
    """The non-backbone modules of the whole model (deterministic default init under torch.manual_seed)."""
    torch.manual_seed(1)
    nn = torch.nn
    peer = CASES[case]["peer"]
    if peer in ("mmdet", "official"):
        from mmdet.models.necks import FPN

        neck = FPN(in_channels=channels, out_channels=4, num_outs=5)
        rpn = nn.Module()
        rpn.rpn_conv, rpn.rpn_cls, rpn.rpn_reg = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 3, 1), nn.Conv2d(4, 12, 1)
        others = {"neck": neck, "rpn_head": rpn}
        if peer == "official":
            roi = nn.Module()
            roi.bbox_head = nn.Module()
            roi.bbox_head.fc_cls, roi.bbox_head.fc_reg = nn.Linear(16, 81), nn.Linear(16, 320)
            others["roi_head"] = roi
        return others
    if peer == "mmseg":
        decode, aux = nn.Module(), nn.Module()
        decode.conv_seg, aux.conv_seg = nn.Conv2d(channels[-1], 19, 1), nn.Conv2d(channels[-2], 19, 1)
        return {"decode_head": decode, "auxiliary_head": aux}
    head = nn.Module()
    head.fc = nn.Linear(channels[-1], 10)
    return {"head": head}


def save_openmmlab(case: str, net: torch.nn.Module, path: Path) -> None:
    """mmengine's save path: save_checkpoint({'meta', 'state_dict': weights_to_cpu(get_state_dict(model))})."""
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu

    cfg = MODELS[CASES[case]["model"]]
    whole = Whole(net, **_others(case, [cfg.embed_dim * 2 ** i for i in range(cfg.num_layers)]))
    meta = {"mmengine_version": _version("mmengine"), "epoch": 12, "iter": 1000, "seed": SEED,
            "dataset_meta": {"classes": ["a", "b"]}, "experiment_name": case}
    save_checkpoint({"meta": meta, "state_dict": weights_to_cpu(get_state_dict(whole))}, str(path))


def swin_converter_inverse(mm_sd: dict[str, torch.Tensor]) -> "collections.OrderedDict[str, torch.Tensor]":
    """OpenMMLab backbone names -> the official detection backbone's ('backbone.' prefixed), inverting mmdet's
    swin_converter: renames back, and the unfold order of the merges' reduction columns and 4C norms undone."""
    def reduction_back(x):  # inverse of correct_unfold_reduction_order
        out_c, in_c = x.shape
        y = x.reshape(out_c, in_c // 4, 4).transpose(1, 2)  # [:, q, c] in unfold order q
        return y[:, [0, 2, 1, 3], :].reshape(out_c, in_c)

    def norm_back(x):  # inverse of correct_unfold_norm_order
        in_c = x.shape[0]
        return x.reshape(in_c // 4, 4).transpose(0, 1)[[0, 2, 1, 3], :].reshape(in_c)

    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    for k, v in mm_sd.items():
        nk = k
        if k.startswith("stages."):  # relative_position_index too: official files hold it
            nk = k.replace("stages", "layers", 1)
            if ".attn.w_msa." in nk:
                nk = nk.replace("attn.w_msa.", "attn.")
            elif ".ffn.layers.0.0." in nk:
                nk = nk.replace("ffn.layers.0.0.", "mlp.fc1.")
            elif ".ffn.layers.1." in nk:
                nk = nk.replace("ffn.layers.1.", "mlp.fc2.")
            elif ".downsample.reduction." in nk:
                v = reduction_back(v)
            elif ".downsample.norm." in nk:
                v = norm_back(v)
        elif k.startswith("patch_embed.projection."):
            nk = k.replace("projection", "proj")
        elif k == "absolute_pos_embed":  # [1, L, C] -> the official [1, C, Hp, Wp]
            L, C = v.shape[1:]
            n = int(round(L ** 0.5))
            v = v.transpose(1, 2).reshape(1, C, n, n)
        out["backbone." + nk] = v.contiguous()
    return out


def official_from(case: str, mm_net: torch.nn.Module) -> "collections.OrderedDict[str, torch.Tensor]":
    """The official detection backbone's state dict of an OpenMMLab model, checked against mmdet's swin_converter."""
    from mmdet.models.backbones.swin import swin_converter

    mm_sd = {k: v for k, v in mm_net.state_dict().items()}
    off = swin_converter_inverse(mm_sd)
    # mmdet's own converter (official -> mmdet, used with convert_weights=True) gives the OpenMMLab names back;
    # it passes the position embedding as it is (mmdet's init_weights reshapes [1, L, C] to its [1, C, H, W]).
    back = swin_converter({k[len("backbone."):]: v for k, v in off.items()})
    for k, v in mm_sd.items():
        w = back["backbone." + k]
        if k == "absolute_pos_embed":
            w = w.reshape(1, w.shape[1], -1).transpose(1, 2)
        if not torch.equal(w, v):
            raise RuntimeError(f"{case}: swin_converter(inverse) does not give back {k}")
    if len(back) != len(mm_sd):
        raise RuntimeError(f"{case}: swin_converter(inverse) has {len(back)} entries, the model {len(mm_sd)}")
    return off


def save_official(case: str, mm_net: torch.nn.Module, path: Path) -> None:
    """mmcv 1.x's save_checkpoint layout, as Swin-Transformer-Object-Detection's training writes it."""
    cfg = MODELS[CASES[case]["model"]]
    sd = official_from(case, mm_net)
    whole = Whole(torch.nn.Module(), **_others(case, [cfg.embed_dim * 2 ** i for i in range(cfg.num_layers)]))
    for k, v in whole.state_dict().items():
        sd[k] = v
    meta = {"mmcv_version": "1.3.9", "mmdet_version": "2.11.0", "epoch": 36, "iter": 88000,
            "CLASSES": ["person", "bicycle"], "env_info": "", "config": "model = dict(type='MaskRCNN', ...)"}
    torch.save({"meta": meta, "state_dict": sd}, str(path))


def save_mask2former(case: str, mm_net: torch.nn.Module, path: Path) -> None:
    """detectron2's .pkl: a plain pickle of NumPy arrays (the official backbone's names under 'backbone.')."""
    import pickle

    model = {k: v.numpy() for k, v in official_from(case, mm_net).items()}
    rng = np.random.default_rng(0)
    for name, shape in [("sem_seg_head.pixel_decoder.input_proj.0.0.weight", (4, 32, 1, 1)),
                        ("sem_seg_head.predictor.class_embed.weight", (20, 4)),
                        ("sem_seg_head.predictor.query_feat.weight", (10, 4))]:
        model[name] = rng.standard_normal(shape).astype(np.float32)
    model["pixel_mean"] = np.array([[[123.675]], [[116.28]], [[103.53]]], dtype=np.float32)
    model["pixel_std"] = np.array([[[58.395]], [[57.12]], [[57.375]]], dtype=np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Mask2Former", "matching_heuristics": False}, f, protocol=4)


def save(case: str, sd: dict[str, np.ndarray], out: Path) -> Path:
    """Write the case's file from a float32 model holding `sd` (the peer's own state dict, or for the official and
    Mask2Former files the one of the OpenMMLab model they are converted from); returns its path."""
    c = CASES[case]
    path = out / c["file"]
    if c["peer"] in ("official", "mask2former"):  # `sd` is the state dict of the model that gives the outputs
        net = build(c["outputs_of"])
        load_weights(net, c["outputs_of"], sd)
        (save_official if c["peer"] == "official" else save_mask2former)(case, net, path)
        return path
    net = build(case)
    load_weights(net, case, sd)
    if c["peer"] == "hf_backbone":
        if path.exists():
            shutil.rmtree(path)
        net.save_pretrained(str(path))
    else:
        save_openmmlab(case, net, path)
    return path


def _version(name: str) -> str:
    return importlib.import_module(name).__version__


def versions() -> dict[str, str]:
    return {n: _version(n) for n in ("torch", "transformers", "mmengine", "mmpretrain", "mmdet", "mmseg", "numpy")}


def sizes_of(case: str) -> list[tuple[int, int]]:
    c = CASES[case]
    build_size = MODELS[c["model"]].img_size
    if c.get("only_build"):
        return [build_size]
    return SIZES + [build_size] + ([BIG] if c.get("big") else [])


def file_digest(path: Path) -> dict[str, Any]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(path.parent)): {"bytes": p.stat().st_size,
                                               "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "backbone")
    ap.add_argument("--cases", nargs="*", default=list(CASES), help="only these cases (default: all)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for case in args.cases:
        c = CASES[case]
        params = canonical(c["model"], c["ape"])
        runner = c.get("outputs_of", case)
        sd = peer_state_dict(runner, params)
        path = save(case, sd, args.out)
        arrays: dict[str, np.ndarray] = {}
        rec: dict[str, Any] = {"case": case, "model": c["model"], "peer": c["peer"], "ape": c["ape"],
                               "file": c["file"], "outputs_of": runner, "files": file_digest(path), "sizes": []}
        for size in sizes_of(case):
            entry: dict[str, Any] = {"size": list(size), "outputs": {}}
            for dtype in DTYPES:
                outs = run(runner, sd, size, dtype)
                if isinstance(outs, dict):
                    entry["error"] = outs["error"]
                    break
                stored = []
                for i, y in enumerate(outs):
                    kind, value = compact(np.ascontiguousarray(y.transpose(0, 2, 3, 1)))
                    arrays[f"{size[0]}x{size[1]}.{dtype}.out{i}"] = value
                    stored.append({"shape": list(y.shape), "stored": kind})
                entry["outputs"][dtype] = stored
            rec["sizes"].append(entry)
            print(f"{case:16s} {size[0]}x{size[1]}: {'FAILED ' + entry['error'][:100] if 'error' in entry else 'ok'}",
                  flush=True)
        np.savez_compressed(args.out / f"{case}.npz", **{k: arrays[k] for k in sorted(arrays)})
        records.append(rec)
    meta = dict(META_FIXED, versions=versions(), seed=SEED, dtypes=list(DTYPES),
                input="swinref.params.counter_uniform(f'input:{H}x{W}', 3*H*W).reshape(1, 3, H, W)",
                sketch={"module": "swinref.golden.sketch", "projections": PROJECTIONS, "full_limit": FULL_LIMIT},
                arrays="<case>.npz: '<H>x<W>.<dtype>.out<i>': output i channels-last [B, h, w, C], whole or its "
                       "sketch as each size's outputs say (shape: the peer's NCHW output)",
                models={m: cfg.to_dict() for m, cfg in MODELS.items()},
                constructors={case: (mm_kwargs(case) if CASES[case]["peer"] in ("mmdet", "mmseg", "mmpretrain")
                                     else None) for case in CASES},
                cases=records)
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
