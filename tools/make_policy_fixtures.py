"""Write tests/data/policies/: what every peer does with a checkpoint built at one image size and run at another.

Run in the peers environment (torch, timm, transformers, torchvision, OpenMMLab through tools/openmmlab.py):

    . /work/peers-venv/bin/activate && python tools/make_policy_fixtures.py [--out tests/data/policies]
    python tools/make_policy_fixtures.py --trace-only --table peer-table.md    # windows and failures only

Two tiny models with the released geometry and build sizes: "v1" (Swin-T geometry: patch 4, window 7, built at
224x224) and "v2" (Swin-V2-T: patch 4, window 8, built at 256x256), both depths (2, 2, 2, 2), embed_dim 24, heads
(3, 6, 12, 24), 10 classes. Each is run by every peer at SIZES (and its build size), batch 1, float32 and float64.

Nothing large is stored. The weights are swinref.params.init_params(cfg, seed=0, dtype="float64") converted to the
peer's own state dict by swinref.checkpoints.layouts.<layout>.from_canonical; the input is
counter_uniform(f"input:{H}x{W}", 3*H*W).reshape(1, 3, H, W). tests/test_policies.py rebuilds both without torch.

Stored per (model, peer, size, dtype): the logits (classifier peers) and every stage output (the token map a
stage hands to its patch merging; the last stage before the final norm; for backbones before their per-stage
output norms), captured with a forward hook on the last block of each stage, as [B, h, w, C]; arrays of more than
swinref.golden.sketch.FULL_LIMIT values as their sketch. Where a peer raises, the exception type, message and a
one-word cause. And, read off the running peer (not re-derived): per stage and block the window (module
attribute after the forward), the shift and padding it really applied (every torch.roll and
torch.nn.functional.pad call during the forward is logged, so the order pad-then-roll / roll-then-pad is observed
too), the patch grid and the image padding.

Output: meta.json (versions, constructor arguments, swinref configs, one record per case) and one
<model>_<peer>.npz per peer. Deterministic: one thread, fixed inputs, npz entries without timestamps: a rerun
writes byte-identical files. transformers' SwinLayer keeps the window it clamped to in a previous forward, so a
fresh peer model is built for every size.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from swinref.config import SwinConfig  # noqa: E402
from swinref.golden.sketch import FULL_LIMIT, PROJECTIONS, compact, scaled_error  # noqa: E402
from swinref.params import counter_uniform, init_params  # noqa: E402

torch.set_num_threads(1)

SIZES = [(192, 192), (232, 176), (100, 300), (64, 64), (800, 1333)]
DTYPES = ("float32", "float64")
SEED = 0

COMMON = dict(patch_size=4, embed_dim=24, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), num_classes=10)
MODELS = {
    "v1": SwinConfig(name="policy_v1_tiny", version=1, img_size=(224, 224), window_size=7, **COMMON),
    "v2": SwinConfig(name="policy_v2_tiny", version=2, img_size=(256, 256), window_size=8, **COMMON),
}

# peer -> (swinref policy expected to reproduce it, or None for a peer recorded for the table only; layout module
# of swinref.checkpoints.layouts; whether it has a classifier head)
PEERS: dict[str, dict[str, tuple[str | None, str, bool]]] = {
    "v1": {
        "timm": ("timm", "timm", True),
        "torchvision": ("torchvision", "torchvision", True),
        "hf": ("hf", "transformers", True),
        "hf_backbone": ("detection", "transformers", False),
        "mmpretrain": ("detection", "openmmlab", False),
        "mmpretrain_no_pad_small_map": (None, "openmmlab", False),
        "mmdet": ("detection", "openmmlab", False),
        "mmseg": ("detection", "openmmlab", False),
    },
    "v2": {
        "timm": ("timm", "timm", True),
        "torchvision": ("torchvision", "torchvision", True),
        # Swinv2Model clamps once, at build time (like timm), never at run time, and pads before rolling: the
        # `hf` policy for V2 must reproduce exactly that (see POLICY_NOTES).
        "hf": ("hf", "transformers", True),
        # Swinv2Backbone runs the same encoder as Swinv2Model (no always_partition): it is an `hf` peer, not a
        # `detection` one.
        "hf_backbone": ("hf", "transformers", False),
        "mmpretrain": ("detection", "openmmlab", False),
        "mmpretrain_no_pad_small_map": (None, "openmmlab", False),
    },
}

POLICY_NOTES = {
    "hf/v2": "transformers Swinv2Layer clamps window/shift in __init__ from the build-size resolution "
             "(_compute_window_shift, height axis only: window_size[0], shift_size[0]) and has no "
             "set_shift_and_window_size: no clamp at run time, no failure; pads, then rolls, mask on the padded map.",
    "hf_backbone/v2": "Swinv2Backbone calls the same Swinv2Encoder without always_partition: the build-time clamp "
                      "stays (last stage of the 256 model: window 8, shift 0), unlike SwinBackbone.",
    "mmpretrain_no_pad_small_map": "mmpretrain's default (pad_small_map=False): where min(h, w) == window the "
                                   "shift is dropped, where min(h, w) < window it raises AssertionError.",
    "official": "the official classifier has no runnable peer here; at the build size timm and torchvision run "
                "the official plan (no padding), so their build-size outputs are the official reference.",
}


# ---------------------------------------------------------------------------------------------------------------
# Peer construction


def versions() -> dict[str, str]:
    import mmdet
    import mmengine
    import mmpretrain
    import mmseg
    import timm
    import torchvision
    import transformers

    return {"torch": torch.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__, "mmpretrain": mmpretrain.__version__,
            "mmdet": mmdet.__version__, "mmseg": mmseg.__version__, "mmengine": mmengine.__version__,
            "numpy": np.__version__}


def constructor(model: str, peer: str) -> tuple[str, dict[str, Any]]:
    """(class path, keyword arguments) of the peer model; recorded in meta.json as given."""
    cfg = MODELS[model]
    v2 = cfg.version == 2
    M, (H, W) = cfg.window_size, cfg.img_size
    depths, heads = list(cfg.depths), list(cfg.num_heads)
    if peer == "timm":
        cls = "timm.models.swin_transformer_v2.SwinTransformerV2" if v2 else "timm.models.swin_transformer.SwinTransformer"
        return cls, dict(img_size=[H, W], patch_size=cfg.patch_size, in_chans=3, num_classes=cfg.num_classes,
                         embed_dim=cfg.embed_dim, depths=depths, num_heads=heads, window_size=M, mlp_ratio=4.0,
                         qkv_bias=True, drop_rate=0.0, drop_path_rate=0.0, dynamic_img_size=True)
    if peer == "torchvision":
        kw = dict(patch_size=[cfg.patch_size] * 2, embed_dim=cfg.embed_dim, depths=depths, num_heads=heads,
                  window_size=[M, M], mlp_ratio=4.0, num_classes=cfg.num_classes, stochastic_depth_prob=0.0)
        if v2:
            kw.update(block="SwinTransformerBlockV2", downsample_layer="PatchMergingV2")
        return "torchvision.models.swin_transformer.SwinTransformer", kw
    if peer in ("hf", "hf_backbone"):
        kw = dict(image_size=H, patch_size=cfg.patch_size, num_channels=3, embed_dim=cfg.embed_dim, depths=depths,
                  num_heads=heads, window_size=M, mlp_ratio=4.0, qkv_bias=True, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, drop_path_rate=0.0, layer_norm_eps=cfg.layer_norm_eps)
        if v2:
            kw["pretrained_window_sizes"] = [0, 0, 0, 0]
        if peer == "hf":
            kw["num_labels"] = cfg.num_classes
            cls = "Swinv2ForImageClassification" if v2 else "SwinForImageClassification"
        else:
            kw["out_features"] = ["stage1", "stage2", "stage3", "stage4"]
            cls = "Swinv2Backbone" if v2 else "SwinBackbone"
        return f"transformers.{cls}", kw
    arch = dict(embed_dims=cfg.embed_dim, depths=depths, num_heads=heads)
    if peer.startswith("mmpretrain"):
        if v2:
            arch["extra_norm_every_n_blocks"] = 0
        cls = "mmpretrain.models.backbones.SwinTransformer" + ("V2" if v2 else "")
        return cls, dict(arch=arch, img_size=H, patch_size=cfg.patch_size, in_channels=3, window_size=M,
                         drop_rate=0.0, drop_path_rate=0.0, out_indices=[0, 1, 2, 3],
                         pad_small_map=peer == "mmpretrain")
    if peer in ("mmdet", "mmseg"):
        return f"{peer}.models.backbones.swin.SwinTransformer", dict(
            pretrain_img_size=H, in_channels=3, embed_dims=cfg.embed_dim, patch_size=cfg.patch_size, window_size=M,
            mlp_ratio=4, depths=depths, num_heads=heads, strides=[4, 2, 2, 2], out_indices=[0, 1, 2, 3],
            qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
    raise ValueError(f"unknown peer {peer!r}")


def build(model: str, peer: str) -> torch.nn.Module:
    """A fresh eval-mode peer model (peer default init; `load_weights` replaces every parameter)."""
    torch.manual_seed(0)
    net = _construct(model, peer)
    net.eval()  # mmpretrain's BaseBackbone.train() returns None: no chaining
    return net


def _construct(model: str, peer: str) -> torch.nn.Module:
    _, kw = constructor(model, peer)
    v2 = MODELS[model].version == 2
    if peer == "timm":
        if v2:
            from timm.models.swin_transformer_v2 import SwinTransformerV2 as cls
        else:
            from timm.models.swin_transformer import SwinTransformer as cls
        return cls(**kw)
    if peer == "torchvision":
        import torchvision.models.swin_transformer as tv

        kw = dict(kw)
        if v2:
            kw["block"], kw["downsample_layer"] = tv.SwinTransformerBlockV2, tv.PatchMergingV2
        return tv.SwinTransformer(**kw)
    if peer in ("hf", "hf_backbone"):
        import transformers

        hf_cfg = (transformers.Swinv2Config if v2 else transformers.SwinConfig)(**kw)
        if not v2:
            # The eager attention of transformers' Swin (V1) takes its softmax in float32 even in a float64
            # model; sdpa keeps the dtype. Swinv2 refuses sdpa and has its own attention (softmax in the input
            # dtype).
            hf_cfg._attn_implementation = "sdpa"
        cls = getattr(transformers, constructor(model, peer)[0].split(".")[-1])
        return cls(hf_cfg)
    from openmmlab import import_openmmlab

    mm = import_openmmlab()
    if mm is None:
        raise RuntimeError("OpenMMLab could not be imported (tools/openmmlab.py)")
    if peer.startswith("mmpretrain"):
        return (mm.pretrain_v2 if v2 else mm.pretrain)(**kw)
    return {"mmdet": mm.det, "mmseg": mm.seg}[peer](**kw)


# ---------------------------------------------------------------------------------------------------------------
# Weights: swinref's canonical params in the peer's own layout


def peer_state_dict(model: str, peer: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The canonical params in the peer's own names, converted by swinref.checkpoints.layouts.<layout>.
    from_canonical; the backbones take the params without the classifier head (a config with num_classes=0)."""
    cfg = MODELS[model]
    layout = PEERS[model][peer][1]
    module = importlib.import_module(f"swinref.checkpoints.layouts.{layout}")
    if not PEERS[model][peer][2]:
        cfg = cfg.replace(num_classes=0)
        params = {k: v for k, v in params.items() if not k.startswith("head.")}
    sd = dict(module.from_canonical(params, cfg))
    if peer == "hf_backbone" and cfg.version == 2:
        # Swinv2Backbone holds embeddings / encoder itself (not under swinv2.) and has no final layernorm.
        sd = {k[len("swinv2."):]: v for k, v in sd.items() if not k.startswith("swinv2.layernorm.")}
    return sd


# Keys a peer model has that the canonical params cannot fill: derived buffers and the backbones' per-stage
# output norms (not on the compared path: stage outputs are taken before them).
DERIVED = ("relative_position_index", "relative_coords_table", "attn_mask")
OUTPUT_NORMS = ("hidden_states_norms.", "norm0.", "norm1.", "norm2.", "norm3.")


def unfilled(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in DERIVED or name.startswith(OUTPUT_NORMS)


def load_weights(net: torch.nn.Module, model: str, peer: str, params: dict[str, np.ndarray]) -> None:
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in peer_state_dict(model, peer, params).items()}
    own = net.state_dict()
    wrong = sorted(k for k, v in sd.items() if k in own and tuple(own[k].shape) != tuple(v.shape))
    unexpected = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd and not unfilled(k))
    if wrong or unexpected or missing:
        raise RuntimeError(f"{model}/{peer}: state dict does not fit: unexpected {unexpected[:6]}, missing "
                           f"{missing[:6]}, shapes {wrong[:6]}")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v.to(own[k].dtype))


# ---------------------------------------------------------------------------------------------------------------
# What the peer did: blocks, windows, pads and rolls, read off the running model


def blocks_of(net: torch.nn.Module, peer: str) -> list[list[torch.nn.Module]]:
    """The transformer blocks of every stage, in order."""
    if peer == "timm":
        return [list(stage.blocks) for stage in net.layers]
    if peer == "torchvision":
        return [list(net.features[i]) for i in range(1, len(net.features), 2)]
    if peer == "hf":
        root = getattr(net, "swin", None) or net.swinv2
        return [list(stage.blocks) for stage in root.encoder.layers]
    if peer == "hf_backbone":
        enc = net.swin.encoder if hasattr(net, "swin") else net.encoder
        return [list(stage.blocks) for stage in enc.layers]
    return [list(stage.blocks) for stage in net.stages]


def _pair(v: Any) -> list[int]:
    if isinstance(v, (list, tuple)):
        return [int(v[0]), int(v[1])] if len(v) == 2 else [int(v[0])] * 2
    return [int(v)] * 2


def block_window(peer: str, blk: torch.nn.Module) -> tuple[list[int], list[int] | None]:
    """(window, shift attribute) of a block after the forward. The attribute is what the module holds; the shift
    really applied is the one logged from torch.roll (torchvision and mm compute a local one in the forward)."""
    if peer == "timm":
        return _pair(blk.window_size), _pair(blk.shift_size)
    if peer == "torchvision":
        return _pair(blk.attn.window_size), _pair(blk.attn.shift_size)
    if peer.startswith("hf"):
        return _pair(blk.window_size), _pair(blk.shift_size)
    return _pair(blk.attn.window_size), _pair(blk.attn.shift_size)


def block_resolution(peer: str, args: tuple, x: torch.Tensor) -> list[int]:
    if peer in ("timm", "torchvision"):
        return [int(x.shape[1]), int(x.shape[2])]
    return [int(args[1][0]), int(args[1][1])]  # hf: input_dimensions; mm: hw_shape


class Recorder:
    """Logs every torch.roll and torch.nn.functional.pad while active, attributed to the block running."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.where: Any = "embed"

    @contextlib.contextmanager
    def active(self):
        roll, pad = torch.roll, torch.nn.functional.pad

        def logged_roll(x, shifts, dims=None):
            shifts = [int(s) for s in (shifts if isinstance(shifts, (list, tuple)) else [shifts])]
            self.events.append({"op": "roll", "where": self.where, "shifts": shifts,
                                "dims": list(dims) if isinstance(dims, (list, tuple)) else dims,
                                "shape": list(x.shape)})
            return roll(x, shifts, dims)

        def logged_pad(x, p, mode="constant", value=None):
            self.events.append({"op": "pad", "where": self.where, "pad": [int(v) for v in p],
                                "shape": list(x.shape)})
            return pad(x, p, mode, value)

        torch.roll, torch.nn.functional.pad = logged_roll, logged_pad
        try:
            yield self
        finally:
            torch.roll, torch.nn.functional.pad = roll, pad


def spatial_pad(event: dict[str, Any], channels_last: bool = True) -> list[int]:
    """(bottom, right) of an F.pad call: channels-last maps pad (0, 0, 0, right, 0, bottom); NCHW images and
    mmcv's AdaptivePadding pad (0, right, 0, bottom) (a 2-element pad is right only)."""
    p = event["pad"] + [0] * (6 - len(event["pad"]))
    if channels_last and len(event["pad"]) == 6:
        return [p[5], p[3]]
    return [p[3], p[1]]


def run_traced(net: torch.nn.Module, model: str, peer: str, x: torch.Tensor) -> dict[str, Any]:
    """Forward x once; returns outputs (logits, stage maps [B, h, w, C]), the trace and the error if any."""
    stages = blocks_of(net, peer)
    rec = Recorder()
    trace = [[{} for _ in blocks] for blocks in stages]
    stage_out: dict[int, np.ndarray] = {}
    handles = []

    def hook_pre(i: int, j: int):
        def pre(mod, args, kwargs):
            hidden = args[0]
            dims = args[1] if len(args) > 1 else kwargs.get("input_dimensions", kwargs.get("hw_shape"))
            trace[i][j]["resolution"] = block_resolution(peer, (hidden, dims), hidden)
            rec.where = [i, j]
        return pre

    def hook_post(i: int, j: int, last: bool):
        def post(mod, args, kwargs, out):
            window, shift_attr = block_window(peer, mod)
            trace[i][j]["window"] = window
            trace[i][j]["shift_attribute"] = shift_attr
            rec.where = ["after", i, j]
            if last:
                y = out[0] if isinstance(out, tuple) else out
                h, w = trace[i][j]["resolution"]
                y = y.detach().reshape(y.shape[0], h, w, y.shape[-1])
                stage_out[i] = y.contiguous().numpy().copy()
        return post

    for i, blocks in enumerate(stages):
        for j, blk in enumerate(blocks):
            handles.append(blk.register_forward_pre_hook(hook_pre(i, j), with_kwargs=True))
            handles.append(blk.register_forward_hook(hook_post(i, j, j == len(blocks) - 1), with_kwargs=True))
    error = None
    logits = None
    try:
        with rec.active(), torch.no_grad():
            out = net(x)
        if PEERS[model][peer][2]:
            logits = (out.logits if hasattr(out, "logits") else out).detach().numpy().copy()
    except Exception as exc:  # a peer that refuses the size: recorded, classified
        error = {"type": type(exc).__name__, "message": str(exc).strip().splitlines()[0][:300],
                 "cause": classify(exc), "where": rec.where,
                 "raised_in": _raised_in(exc)}
    finally:
        for h in handles:
            h.remove()
    return {"logits": logits, "stages": [stage_out[i] for i in sorted(stage_out)], "error": error,
            "trace": summarise(rec.events, trace, x.shape)}


def _raised_in(exc: BaseException) -> str:
    """file:line of the innermost frame inside site-packages that raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    peer_frames = [f for f in frames if "site-packages" in f.filename]
    f = (peer_frames or frames)[-1]
    return f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"


def classify(exc: BaseException) -> str:
    """One machine-readable word for why a peer refused a size."""
    msg = str(exc)
    if "divisible by patch size" in msg:
        return "patch-divisibility"
    if "must match the size of tensor b" in msg:
        return "bias-table-shape"
    if "smaller than the window" in msg:
        return "map-smaller-than-window"
    if "doesn't match model" in msg:
        return "strict-image-size"
    return "other"


def summarise(events: list[dict[str, Any]], trace: list[list[dict[str, Any]]], shape: Any) -> dict[str, Any]:
    """Per block: window, applied shift, window padding and their order; image padding; merge padding."""
    H, W = int(shape[-2]), int(shape[-1])
    embed_pads = [spatial_pad(e, channels_last=False) for e in events if e["where"] == "embed" and e["op"] == "pad"]
    image_pad = [sum(p[0] for p in embed_pads), sum(p[1] for p in embed_pads)]
    stages_out = []
    for i, blocks in enumerate(trace):
        recs = []
        for j, t in enumerate(blocks):
            if "window" not in t:  # not reached (the forward raised earlier)
                if "resolution" in t:
                    recs.append({"resolution": t["resolution"], "reached": True, "completed": False})
                break
            mine = [e for e in events if e["where"] == [i, j]]
            pads = [e for e in mine if e["op"] == "pad"]
            rolls = [e for e in mine if e["op"] == "roll"]
            pad = spatial_pad(pads[0]) if pads else [0, 0]
            shift = [-s for s in rolls[0]["shifts"]] if rolls else [0, 0]
            if len(shift) == 1:
                shift = shift * 2
            ops = [e["op"] for e in mine if e["op"] in ("pad", "roll")][:2]
            applied_pad = any(pad)
            applied_roll = any(shift)
            if applied_pad and applied_roll:
                order = "-then-".join(op for op in ops)
            else:
                order = "pad" if applied_pad else ("roll" if applied_roll else "none")
            recs.append({"resolution": t["resolution"], "window": t["window"], "shift": shift, "pad": pad,
                         "order": order, "shift_attribute": t["shift_attribute"], "completed": True})
        merge = [spatial_pad(e) for e in events if e["where"] == ["after", i, len(blocks) - 1] and e["op"] == "pad"]
        last = i == len(trace) - 1
        stages_out.append({"blocks": recs, "merge_pad": None if last else (merge[0] if merge else [0, 0])})
    first = trace[0][0].get("resolution")
    return {"image": [H, W], "image_pad": image_pad, "grid": first, "stages": stages_out}


# ---------------------------------------------------------------------------------------------------------------
# Cases


def make_input(size: tuple[int, int]) -> np.ndarray:
    H, W = size
    return counter_uniform(f"input:{H}x{W}", 3 * H * W).reshape(1, 3, H, W)


def sizes_of(model: str) -> list[tuple[int, int]]:
    return SIZES + [MODELS[model].img_size]


def run_case(model: str, peer: str, size: tuple[int, int], params: dict | None, dtype: str) -> dict[str, Any]:
    net = build(model, peer)  # fresh for every size: transformers' SwinLayer keeps what it clamped to
    if dtype == "float64":
        net.double()  # before the weights go in: loading into the float32 model would round them
    if params is not None:
        load_weights(net, model, peer, params)
    if dtype == "float64" and MODELS[model].version == 2:
        from peers import exact_v2_coords  # tools/peers.py: the V2 coordinate tables recomputed in float64

        exact_v2_coords(net)
    x = torch.from_numpy(make_input(size).astype(dtype))
    return run_traced(net, model, peer, x)


def case_key(size: tuple[int, int], dtype: str) -> str:
    return f"{size[0]}x{size[1]}.{dtype}"


def record(model: str, peer: str, size: tuple[int, int], results: dict[str, dict], arrays: dict) -> dict:
    """The meta.json record of one (model, peer, size); fills `arrays` with the stored outputs."""
    policy, layout, classifier = PEERS[model][peer]
    first = results[DTYPES[0]]
    rec: dict[str, Any] = {"model": model, "peer": peer, "size": list(size), "policy": policy,
                           "status": "failed" if first["error"] else "ran", "trace": first["trace"]}
    for dtype in DTYPES[1:]:
        other = results[dtype]
        if (other["error"] is None) != (first["error"] is None) or other["trace"] != first["trace"]:
            raise RuntimeError(f"{model}/{peer}/{size}: float32 and float64 runs differ in outcome or trace")
    rec["trace"] = dict(first["trace"], patch_rule=patch_rule(MODELS[model], size, first["trace"]))
    if first["error"]:
        rec["error"] = first["error"]
        return rec
    rec["outputs"] = {}
    for dtype in DTYPES:
        r = results[dtype]
        stored: dict[str, Any] = {}
        key = case_key(size, dtype)
        if classifier:  # [1, 10]: always whole
            arrays[f"{key}.logits"] = r["logits"]
            stored["logits"] = {"shape": list(r["logits"].shape), "stored": "full"}
        stored["stages"] = []
        for i, y in enumerate(r["stages"]):
            kind, value = compact(y)
            arrays[f"{key}.stage{i}"] = value
            stored["stages"].append({"shape": list(y.shape), "stored": kind})
        rec["outputs"][dtype] = stored
    return rec


def patch_rule(cfg: SwinConfig, size: tuple[int, int], trace: dict[str, Any]) -> str:
    """What the peer did with an image the patch does not divide: "pad" (zeros bottom/right), "crop" (the strided
    convolution drops the rest), "refuse"; "exact" when the patch divides it."""
    p = cfg.patch_size
    if size[0] % p == 0 and size[1] % p == 0:
        return "exact"
    if trace.get("grid") is None:
        return "refuse"
    return "pad" if any(trace["image_pad"]) else ("crop" if trace["grid"][0] * p <= size[0] else "?")


def official_refusal(cfg: SwinConfig, size: tuple[int, int]) -> str | None:
    """Why the official classifier's plan (windows clamped at the build size) cannot run `size` without
    padding; None when it can. Official PatchEmbed takes no remainder, its attention no partial window, its
    patch merging no odd grid."""
    p, M = cfg.patch_size, cfg.window_size
    if size[0] % p or size[1] % p:
        return f"image {size[0]}x{size[1]} is not divisible by the patch {p}"
    build = [n // p for n in cfg.img_size]
    res = [n // p for n in size]
    for i in range(cfg.num_layers):
        window = min(build) if min(build) <= M else M
        if res[0] % window or res[1] % window:
            return f"stage {i} grid {res[0]}x{res[1]} is not divisible by its window {window}"
        if i < cfg.num_layers - 1:
            if res[0] % 2 or res[1] % 2:
                return f"stage {i} grid {res[0]}x{res[1]} is odd before the patch merging"
            build, res = [n // 2 for n in build], [n // 2 for n in res]
    return None


def official_records(model: str, records: list[dict[str, Any]], arrays: dict[str, dict]) -> list[dict[str, Any]]:
    """The `official` policy has no runnable peer: where its plan needs no padding the reference is timm's output
    (checked against torchvision's and transformers'), elsewhere the policy must refuse the size."""
    cfg = MODELS[model]
    out = []
    for size in sizes_of(model):
        reason = official_refusal(cfg, size)
        rec: dict[str, Any] = {"model": model, "peer": "official", "size": list(size), "policy": "official"}
        if reason is not None:
            rec.update(status="refused", error={"type": None, "message": reason, "cause": "needs-padding"})
            out.append(rec)
            continue
        ref = next(r for r in records if r["model"] == model and r["peer"] == "timm" and tuple(r["size"]) == size)
        agreement = {}
        for other in ("torchvision", "hf"):
            errs = {}
            for dtype in DTYPES:
                for name, meta in [("logits", ref["outputs"][dtype]["logits"])] + [
                        (f"stage{i}", m) for i, m in enumerate(ref["outputs"][dtype]["stages"])]:
                    key = f"{case_key(size, dtype)}.{name}"
                    err, scale = scaled_error(arrays["timm"][key], arrays[other][key], meta["stored"])
                    errs[f"{dtype}.{name}"] = err / scale
            agreement[other] = errs
        rec.update(status="ran", reference="timm", trace=ref["trace"], outputs=ref["outputs"],
                   agreement_with_reference=agreement)
        out.append(rec)
    return out


def hf_state_observation(params: dict[str, np.ndarray]) -> dict[str, Any]:
    """transformers' SwinLayer keeps the window it clamped to: one model object run at 192x192, then 224x224."""
    net = build("v1", "hf")
    load_weights(net, "v1", "hf", params)
    seen = []
    for size in [(192, 192), MODELS["v1"].img_size]:
        x = torch.from_numpy(make_input(size).astype("float32"))
        try:
            with torch.no_grad():
                net(x)
            seen.append({"size": list(size), "status": "ran"})
        except Exception as exc:
            seen.append({"size": list(size), "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:200]})
    layers = [[[_pair(b.window_size)[0], _pair(b.shift_size)[0]] for b in st.blocks] for st in net.swin.encoder.layers]
    return {"what": hf_state_observation.__doc__, "runs": seen, "window_shift_after": layers}


def stage_cell(stage: dict[str, Any]) -> str:
    """'29x22 w7x7 s3,3 p6,6 p>r': resolution, window, shift of the shifted (odd) block, its padding (bottom,
    right) and order (p>r pad then roll, r>p roll then pad); 'X' where the forward raised in this stage."""
    blocks = stage["blocks"]
    if not blocks:
        return "-"
    res = "x".join(map(str, blocks[0]["resolution"]))
    if not all(b.get("completed") for b in blocks):
        done = [b for b in blocks if b.get("completed")]
        return f"{res} X" + (f" (w{'x'.join(map(str, done[0]['window']))} ok)" if done else "")
    odd = blocks[1] if len(blocks) > 1 else blocks[0]
    windows = {tuple(b["window"]) for b in blocks}
    w = "/".join("x".join(map(str, v)) for v in sorted(windows))
    order = {"pad-then-roll": " p>r", "roll-then-pad": " r>p"}.get(odd["order"], "")
    return f"{res} w{w} s{odd['shift'][0]},{odd['shift'][1]} p{odd['pad'][0]},{odd['pad'][1]}{order}"


def render_table(records: list[dict[str, Any]]) -> str:
    """The peer table of /work/coordination-peer-table.md (Markdown)."""
    lines = ["| model | peer | policy | size | ran | grid (img pad) | stage 0 | stage 1 | stage 2 | stage 3 | failure |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        t = r.get("trace", {})  # the official policy's refusals have none: no peer ran
        grid = "x".join(map(str, t["grid"])) if t.get("grid") else "-"
        grid += f" ({t['image_pad'][0]},{t['image_pad'][1]})" if any(t.get("image_pad", [0, 0])) else ""
        cells = [stage_cell(s) for s in t.get("stages", [])] + ["-"] * (4 - len(t.get("stages", [])))
        err = r.get("error")
        failure = f"{err['cause']}: {err['type']}: {err['message'][:110]}".replace("|", "/") if err else ""
        if r.get("reference"):
            failure = f"(no peer: {r['reference']}'s outputs, equal to torchvision's and transformers')"
        size = f"{r['size'][0]}x{r['size'][1]}"
        lines.append(f"| {r['model']} | {r['peer']} | {r['policy'] or '-'} | {size} | "
                     f"{ {'ran': 'yes', 'failed': 'NO', 'refused': 'refused'}[r['status']]} | {grid} | " + " | ".join(cells[:4])
                     + f" | {failure} |")
    return "\n".join(lines) + "\n"


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez writes every member with the fixed zip date 1980-01-01: reruns are byte-identical.
    np.savez_compressed(path, **{k: arrays[k] for k in sorted(arrays)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "policies")
    ap.add_argument("--trace-only", action="store_true",
                    help="peer default weights, float32 only, nothing written but --table: what ran, windows, shifts")
    ap.add_argument("--table", type=Path, help="also write the peer table (Markdown) here")
    args = ap.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")  # OpenMMLab's import-time warnings about the missing compiled mmcv ops
    records: list[dict[str, Any]] = []
    observations: dict[str, Any] = {}
    for model, cfg in MODELS.items():
        params = None if args.trace_only else init_params(cfg, seed=SEED, dtype="float64")
        arrays: dict[str, dict[str, np.ndarray]] = {}
        for peer in PEERS[model]:
            arrays[peer] = {}
            for size in sizes_of(model):
                dtypes = DTYPES[:1] if args.trace_only else DTYPES
                results = {d: run_case(model, peer, size, params, d) for d in dtypes}
                results = {d: results.get(d, results[DTYPES[0]]) for d in DTYPES}
                rec = record(model, peer, size, results, arrays[peer])
                records.append(rec)
                failure = f" ({rec['error']['cause']}: {rec['error']['message'][:90]})" if "error" in rec else ""
                print(f"{model} {peer:28s} {size[0]}x{size[1]}: {rec['status']}{failure}", flush=True)
        if not args.trace_only:
            records += official_records(model, records, arrays)
            args.out.mkdir(parents=True, exist_ok=True)
            for peer, peer_arrays in arrays.items():
                write_npz(args.out / f"{model}_{peer}.npz", peer_arrays)
            if model == "v1":
                observations["hf_v1_stateful"] = hf_state_observation(params)
    if args.table:
        args.table.write_text(render_table(records))
    if not args.trace_only:
        meta = {
            "about": "written by tools/make_policy_fixtures.py; never edited by hand",
            "versions": versions(),
            "seed": SEED,
            "input": "swinref.params.counter_uniform(f'input:{H}x{W}', 3*H*W).reshape(1, 3, H, W)",
            "weights": "swinref.params.init_params(cfg, seed=0, dtype='float64') -> layouts.<layout>.from_canonical",
            "sketch": {"module": "swinref.golden.sketch", "projections": PROJECTIONS, "full_limit": FULL_LIMIT},
            "dtypes": list(DTYPES),
            "arrays": "<model>_<peer>.npz: '<H>x<W>.<dtype>.logits' and '.stage<i>' ([B, h, w, C] or its sketch, "
                      "as each case's outputs say); the official cases use timm's arrays ('reference')",
            "models": {m: {"swinref_config": c.to_dict(),
                           "peers": {p: {"policy": pol, "layout": lay, "classifier": cl,
                                         "class": constructor(m, p)[0], "kwargs": constructor(m, p)[1]}
                                     for p, (pol, lay, cl) in PEERS[m].items()}}
                       for m, c in MODELS.items()},
            "notes": POLICY_NOTES,
            "observations": observations,
            "cases": records,
        }
        (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
