"""Measure Swin-T/S/B with the popular FLOP counters and write tests/data/flop_counters.json.

Run with the peers environment (torch, timm, torchvision, fvcore, ptflops, calflops installed):

    OMP_NUM_THREADS=2 /work/venv-peers/bin/python tools/measure_flop_counters.py

For every model (timm swin_{tiny,small,base}_patch4_window7_224 and swinv2_{tiny,small,base}_window8_256,
torchvision swin_{t,s,b} and swin_v2_{t,s,b}; randomly initialised, batch 1, at the resolution of their
published weights) and every counter
(fvcore FlopCountAnalysis, ptflops with its 'pytorch' and 'aten' backends, calflops calculate_flops,
torch.utils.flop_counter.FlopCounterMode) it records the total, the unit, a breakdown in the counter's own
categories (operators or module types) and what the counter skipped or warned about. torchvision's published
`_ops` and `num_params` are read from the weights' meta. The breakdowns are taken by wrapping each counter's
own per-op handlers (not by re-deriving them), and every breakdown is checked to add up to the counter's total.

docs/flop-counters.md explains every difference; the closed-form shape terms each formula there uses are
written next to the measurements (`terms`), computed here from the model's configuration alone, together with
the formulas' values (`formula`) and measured minus formula (`formula_residual`, 0 everywhere when written).
`--tables` prints the item tables of the doc from the JSON (no torch needed). Model keys on the command line
measure only those models and write to $TMPDIR instead of the fixture.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import platform
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "flop_counters.json"
FORMAT_VERSION = 1

# name -> (library, builder name, image side, config). Configs are the released ones (see REFERENCE.md).
MODELS = {
    "timm/swin_tiny_patch4_window7_224": ("timm", "swin_tiny_patch4_window7_224", 224,
                                          dict(version=1, C=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), M=7)),
    "timm/swin_small_patch4_window7_224": ("timm", "swin_small_patch4_window7_224", 224,
                                           dict(version=1, C=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), M=7)),
    "timm/swin_base_patch4_window7_224": ("timm", "swin_base_patch4_window7_224", 224,
                                          dict(version=1, C=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), M=7)),
    "timm/swinv2_tiny_window8_256": ("timm", "swinv2_tiny_window8_256", 256,
                                     dict(version=2, C=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), M=8)),
    "timm/swinv2_small_window8_256": ("timm", "swinv2_small_window8_256", 256,
                                      dict(version=2, C=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), M=8)),
    "timm/swinv2_base_window8_256": ("timm", "swinv2_base_window8_256", 256,
                                     dict(version=2, C=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), M=8)),
    "torchvision/swin_t": ("torchvision", "swin_t", 224,
                           dict(version=1, C=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), M=7)),
    "torchvision/swin_s": ("torchvision", "swin_s", 224,
                           dict(version=1, C=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), M=7)),
    "torchvision/swin_b": ("torchvision", "swin_b", 224,
                           dict(version=1, C=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), M=7)),
    "torchvision/swin_v2_t": ("torchvision", "swin_v2_t", 256,
                              dict(version=2, C=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), M=8)),
    "torchvision/swin_v2_s": ("torchvision", "swin_v2_s", 256,
                              dict(version=2, C=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), M=8)),
    "torchvision/swin_v2_b": ("torchvision", "swin_v2_b", 256,
                              dict(version=2, C=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), M=8)),
}
TV_WEIGHTS = {"swin_t": "Swin_T_Weights", "swin_s": "Swin_S_Weights", "swin_b": "Swin_B_Weights",
              "swin_v2_t": "Swin_V2_T_Weights", "swin_v2_s": "Swin_V2_S_Weights", "swin_v2_b": "Swin_V2_B_Weights"}
PATCH, IN_CHANS, CLASSES, MLP_RATIO, CPB_HIDDEN = 4, 3, 1000, 4, 512


def shape_terms(img: int, cfg: dict) -> dict:
    """Closed-form per-model sums of the quantities the formulas in docs/flop-counters.md are written in.

    All counts are for batch 1. h, w: stage token grid; C: stage width; N = M*M; nW = h*w/N; nH heads.
    The clamp rule (stage resolution <= M -> window = resolution, no shift) applies; 224 and 256 need no padding.
    """
    t = collections.Counter()
    C0, M0 = cfg["C"], cfg["M"]
    h = w = img // PATCH
    t["conv_macs"] = h * w * C0 * IN_CHANS * PATCH * PATCH            # Ho*Wo*C*3*p*p
    t["conv_bias"] = h * w * C0
    t["ln_patch"] = h * w * C0
    for i, (depth, nH) in enumerate(zip(cfg["depths"], cfg["heads"])):
        C = C0 * 2 ** i
        M = min(M0, h, w)
        shifted_blocks = depth // 2 if min(h, w) > M0 else 0
        N, nW = M * M, (h * w) // (M * M)
        hw = h * w
        t["linear_qkv_macs"] += depth * hw * C * 3 * C
        t["linear_proj_macs"] += depth * hw * C * C
        t["linear_mlp_macs"] += depth * 2 * hw * C * MLP_RATIO * C
        t["attn_qk_macs"] += depth * nW * nH * N * N * (C // nH)        # nH*N*d*N per window
        t["attn_av_macs"] += depth * nW * nH * N * N * (C // nH)
        t["linear_block_bias"] += depth * hw * (3 * C + C + MLP_RATIO * C + C)
        t["ln_block"] += depth * 2 * hw * C                          # norm1 + norm2
        t["attn_scores"] += depth * nW * nH * N * N                  # softmax / bias-add elements
        t["mask_add"] += shifted_blocks * nW * nH * N * N
        t["block_hwC"] += depth * hw * C                             # also the q-scale multiplies (V1)
        t["gelu"] += depth * hw * MLP_RATIO * C
        t["residual_add"] += depth * 2 * hw * C
        if cfg["version"] == 2:
            t["v2_qk_normalize_elems"] += depth * 2 * hw * C           # q and k, (nW, nH, N, d)
            t["v2_logit_scale_mul"] += depth * nW * nH * N * N
            t["v2_cpb_mlp_macs"] += depth * (2 * M - 1) ** 2 * (2 * CPB_HIDDEN + CPB_HIDDEN * nH)
            t["v2_cpb_mlp_bias"] += depth * (2 * M - 1) ** 2 * CPB_HIDDEN
            t["v2_cpb_relu"] += depth * (2 * M - 1) ** 2 * CPB_HIDDEN
            t["v2_bias_sigmoid"] += depth * nH * N * N
        if i < len(cfg["depths"]) - 1:
            t["linear_merge_macs"] += (h // 2) * (w // 2) * 4 * C * 2 * C
            # V1 normalises the 4C concat, V2 the 2C output: H*W*C vs H*W*C/2 elements.
            t["ln_merge"] += hw * C if cfg["version"] == 1 else hw * C // 2
            h, w = h // 2, w // 2
    C4 = C0 * 2 ** (len(cfg["depths"]) - 1)
    t["ln_final"] = h * w * C4
    t["ln_final_official"] = C4 * (img // PATCH) ** 2 // 2 ** len(cfg["depths"])
    t["avgpool"] = h * w * C4
    t["head_macs"] = C4 * CLASSES
    t["head_bias"] = CLASSES
    t["linear_macs"] = (t["linear_qkv_macs"] + t["linear_proj_macs"] + t["linear_mlp_macs"]
                        + t["linear_merge_macs"] + t["head_macs"])
    t["attn_matmul_macs"] = t["attn_qk_macs"] + t["attn_av_macs"]
    t["ln_elements"] = t["ln_patch"] + t["ln_block"] + t["ln_merge"] + t["ln_final"]
    t["official_flops"] = (t["conv_macs"] + t["ln_patch"] + t["linear_macs"] + t["attn_matmul_macs"]
                           + t["ln_block"] + t["ln_merge"] + t["ln_final_official"])
    return dict(t)


# How each implementation invokes the ops the hook/patch-based counters look for (read from their sources;
# the residuals below confirm it). "module": an nn.Linear module; "F.linear": a functional call the pytorch
# backend of ptflops does not see; "@": Tensor.__matmul__, which neither ptflops nor calflops patches;
# "matmul": Tensor.matmul, which both patch; "mean": x.mean (timm's pooling), "pool": nn.AdaptiveAvgPool2d;
# gelu "nn": torch.nn.GELU (ptflops counts it twice: module hook + patched F.gelu), "timm": timm's own GELU
# module (only the patched F.gelu counts).
CALLS = {
    ("timm", 1): dict(qkv="module", proj="module", qk="@", av="@", pool="mean", gelu="nn"),
    ("timm", 2): dict(qkv="F.linear", proj="module", qk="@", av="@", pool="mean", gelu="timm"),
    ("torchvision", 1): dict(qkv="F.linear", proj="F.linear", qk="matmul", av="matmul", pool="pool", gelu="nn"),
    ("torchvision", 2): dict(qkv="F.linear", proj="F.linear", qk="@", av="matmul", pool="pool", gelu="nn"),
}


def formulas(t: dict, lib: str, version: int) -> dict:
    """Each counter's total as a sum of shape terms (docs/flop-counters.md derives every item)."""
    calls = CALLS[(lib, version)]
    cpb = t.get("v2_cpb_mlp_macs", 0)
    cpb_bias = t.get("v2_cpb_mlp_bias", 0)
    relu = t.get("v2_cpb_relu", 0)
    macs = t["conv_macs"] + t["linear_macs"] + t["attn_matmul_macs"] + cpb     # every multiply-add, no bias
    biases = t["conv_bias"] + t["linear_block_bias"] + t["head_bias"] + cpb_bias
    pool = t["avgpool"] if calls["pool"] == "pool" else 0
    seen_matmul = (t["attn_qk_macs"] if calls["qk"] == "matmul" else 0) + \
                  (t["attn_av_macs"] if calls["av"] == "matmul" else 0)
    # ptflops' pytorch backend only sees nn.Linear modules: subtract what the implementation calls functionally.
    missed_lin, missed_bias = 0, 0
    if calls["qkv"] == "F.linear":
        missed_lin += t["linear_qkv_macs"]
        missed_bias += 3 * t["block_hwC"]
    if calls["proj"] == "F.linear":
        missed_lin += t["linear_proj_macs"]
        missed_bias += t["block_hwC"]
    gelu_times = 2 if calls["gelu"] == "nn" else 1
    return {
        "official_flops": t["official_flops"],
        "torchvision_ops": macs,
        "flop_counter_mode": 2 * macs,
        "fvcore": macs + 5 * t["ln_elements"] + pool,
        "ptflops_aten": macs + biases,
        "ptflops_pytorch": (t["conv_macs"] + t["linear_macs"] + cpb - missed_lin + seen_matmul
                            + biases - missed_bias + t["ln_elements"] + gelu_times * t["gelu"] + t["attn_scores"]
                            + 2 * relu + 2 * pool),
        "calflops": (2 * (t["conv_macs"] + t["linear_macs"] + cpb + seen_matmul) + t["conv_bias"]
                     + 5 * t["ln_elements"] + t["gelu"] + t["attn_scores"] + relu + pool),
        "calflops_macs": t["conv_macs"] + t["linear_macs"] + cpb + seen_matmul,
    }


def build(lib: str, name: str):
    import torch

    torch.manual_seed(0)
    if lib == "timm":
        import timm
        model = timm.create_model(name, pretrained=False)
    else:
        import torchvision.models as tvm
        model = getattr(tvm, name)(weights=None)
    return model.eval()


def run_fvcore(model, x) -> dict:
    from fvcore.nn import FlopCountAnalysis

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    root = logging.getLogger("fvcore")
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        fca = FlopCountAnalysis(model, x)
        fca.unsupported_ops_warnings(True)
        fca.uncalled_modules_warnings(False)
        with contextlib.redirect_stderr(io.StringIO()):
            total = int(fca.total())
        by_op = {k: int(v) for k, v in fca.by_operator().items()}
        by_module = fca.by_module()
        unsupported = {k: int(v) for k, v in fca.unsupported_ops().items()}
    finally:
        root.removeHandler(handler)
    # Own (non-inherited) count per module type: what the module's forward did outside its children.
    own = collections.Counter()
    names = dict(model.named_modules())
    for mname, mod in names.items():
        children = sum(by_module.get(f"{mname}.{c}" if mname else c, 0) for c, _ in mod.named_children())
        own[type(mod).__name__] += int(by_module.get(mname, 0) - children)
    return {
        "total": total,
        "by_operator": by_op,
        "by_module_type": {k: v for k, v in sorted(own.items()) if v},
        # fvcore warns "Unsupported operator aten::X encountered n time(s)" for exactly these.
        "skipped_ops": unsupported,
        "other_warnings": sorted({line for line in log.getvalue().splitlines()
                                  if line.strip() and not line.startswith("Unsupported operator")}),
    }


def run_ptflops(model, img: int, backend: str) -> dict:
    import ptflops.aten_ops as aten_ops
    import ptflops.pytorch_ops as pt_ops
    from ptflops import get_model_complexity_info

    record = collections.Counter()
    saved = []

    def wrap_module_hook(key, hook):
        def wrapped(module, inp, out):
            before = module.__flops__
            hook(module, inp, out)
            record[f"module:{key}"] += int(module.__flops__ - before)
        return wrapped

    def wrap_fn(key, fn):
        def wrapped(*args, **kwargs):
            n = fn(*args, **kwargs)
            record[key] += int(n or 0)
            return n
        return wrapped

    tables = []
    if backend == "pytorch":
        tables = [(pt_ops.MODULES_MAPPING, wrap_module_hook, lambda k: k.__name__),
                  (pt_ops.FUNCTIONAL_MAPPING, wrap_fn, lambda k: f"functional:F.{k.__name__}"),
                  (pt_ops.TENSOR_OPS_MAPPING, wrap_fn, lambda k: f"tensor_op:{k.__qualname__}")]
    else:
        tables = [(aten_ops.ATEN_OPS_MAPPING, wrap_fn, lambda k: f"aten.{k._qualified_op_name.split('::')[-1]}")]
    for table, wrapper, keyname in tables:
        for k, v in list(table.items()):
            saved.append((table, k, v))
            table[k] = wrapper(keyname(k), v)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            macs, _params = get_model_complexity_info(
                model, (3, img, img), as_strings=False, print_per_layer_stat=False, verbose=True,
                backend=backend, ost=out)
    finally:
        for table, k, v in saved:
            table[k] = v
    # verbose=True makes ptflops name what it treats as zero-op: module types (pytorch) or aten ops (aten).
    zero = re.compile(r"Warning: (?:module )?(\S+?)(?: operation)? is treated as a zero-op")
    lines = out.getvalue().splitlines()
    return {
        "total": int(macs),
        "by_category": dict(sorted((k, v) for k, v in record.items() if v)),
        "zero_op": sorted({m.group(1) for line in lines if (m := zero.search(line))}),
        "other_warnings": sorted({line.strip() for line in lines if "Warning" in line and not zero.search(line)}),
    }


def run_calflops(model, img: int) -> dict:
    import calflops.pytorch_ops as cops
    from calflops import calculate_flops

    flops_rec, macs_rec = collections.Counter(), collections.Counter()
    originals = {}
    for attr in dir(cops):
        if attr.startswith("_") and attr.endswith("_flops_compute"):
            fn = getattr(cops, attr)
            originals[attr] = fn

            def wrapped(*args, __fn=fn, __key=attr[1:-len("_flops_compute")], **kwargs):
                f, m = __fn(*args, **kwargs)
                flops_rec[__key] += int(f)
                macs_rec[__key] += int(m)
                return f, m
            setattr(cops, attr, wrapped)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            flops, macs, _params = calculate_flops(model, input_shape=(1, 3, img, img), output_as_string=False,
                                                   print_results=False, print_detailed=False)
    finally:
        for attr, fn in originals.items():
            setattr(cops, attr, fn)
    return {
        "total": int(flops),
        "total_macs": int(macs),
        "by_category": dict(sorted((k, v) for k, v in flops_rec.items() if v)),
        "macs_by_category": dict(sorted((k, v) for k, v in macs_rec.items() if v)),
    }


def run_flop_counter_mode(model, x) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        model(x)
    counts = mode.get_flop_counts()
    return {
        "total": int(mode.get_total_flops()),
        "by_operator": {str(k).split(".")[-1] if "." in str(k) else str(k): int(v)
                        for k, v in counts.get("Global", {}).items()},
    }


def check_sum(entry: dict, key: str, total_key: str = "total") -> None:
    parts = sum(entry.get(key, {}).values())
    entry[f"{key}_sum_matches_total"] = parts == entry[total_key]


# Item-by-item tables for docs/flop-counters.md, from the fixture alone (no torch needed):
#     python tools/measure_flop_counters.py --tables
TABLE_GROUPS = [
    ("timm V1", "timm", 1, ["timm/swin_tiny_patch4_window7_224", "timm/swin_small_patch4_window7_224",
                            "timm/swin_base_patch4_window7_224"]),
    ("torchvision V1", "torchvision", 1, ["torchvision/swin_t", "torchvision/swin_s", "torchvision/swin_b"]),
    ("timm V2", "timm", 2, ["timm/swinv2_tiny_window8_256", "timm/swinv2_small_window8_256",
                            "timm/swinv2_base_window8_256"]),
    ("torchvision V2", "torchvision", 2, ["torchvision/swin_v2_t", "torchvision/swin_v2_s",
                                          "torchvision/swin_v2_b"]),
]


def difference_items(t: dict, lib: str, version: int) -> dict:
    """For each counter, the items that turn the official flops() into the counter's total."""
    g = t.get
    calls = CALLS[(lib, version)]
    ln_official = g("ln_patch") + g("ln_block") + g("ln_merge") + g("ln_final_official")
    bias = g("conv_bias") + g("linear_block_bias") + g("head_bias") + g("v2_cpb_mlp_bias", 0)
    cpb = [("+ position-bias MLP (cpb) MACs", g("v2_cpb_mlp_macs"))] if version == 2 else []
    pool = g("avgpool") if calls["pool"] == "pool" else 0
    seen_qk = g("attn_qk_macs") if calls["qk"] == "matmul" else 0
    seen_av = g("attn_av_macs") if calls["av"] == "matmul" else 0
    missed_att = [("- q@k^T MACs (written `@`, not patched)", -g("attn_qk_macs"))] if not seen_qk else []
    missed_att += [("- attn@v MACs (written `@`, not patched)", -g("attn_av_macs"))] if not seen_av else []
    macs = g("conv_macs") + g("linear_macs") + g("attn_matmul_macs") + g("v2_cpb_mlp_macs", 0)
    out = {"torchvision_ops": [("- LayerNorm terms of flops()", -ln_official)] + cpb}
    out["flop_counter_mode"] = out["torchvision_ops"] + [("x2 (2 FLOP per MAC): + all MACs again", macs)]
    out["fvcore"] = [("+ LayerNorm: 4 more per element (5 instead of 1)", 4 * g("ln_elements")),
                     ("+ final norm: true elements - official C4*H0*W0//2**L", g("ln_final") - g("ln_final_official"))]
    out["fvcore"] += ([("+ avgpool, 1 per input element", pool)] if pool else []) + cpb
    out["ptflops_aten"] = [("- LayerNorm terms of flops()", -ln_official),
                           ("+ biases (conv, every Linear with a bias)", bias)] + cpb
    p = [("- LayerNorm terms of flops()", -ln_official), ("+ LayerNorm, 1 per element", g("ln_elements"))]
    seen_bias = bias
    if calls["qkv"] == "F.linear":
        p.append(("- qkv MACs (F.linear, not hooked)", -g("linear_qkv_macs")))
        seen_bias -= 3 * g("block_hwC")
    if calls["proj"] == "F.linear":
        p.append(("- proj MACs (F.linear, not hooked)", -g("linear_proj_macs")))
        seen_bias -= g("block_hwC")
    gelu_times = 2 if calls["gelu"] == "nn" else 1
    p += missed_att + cpb + [("+ biases of hooked conv / nn.Linear", seen_bias),
                             (f"+ GELU, {gelu_times} per element", gelu_times * g("gelu")),
                             ("+ softmax, 1 per element", g("attn_scores"))]
    p += [("+ cpb ReLU, 2 per element", 2 * g("v2_cpb_relu"))] if version == 2 else []
    p += [("+ avgpool, 2 per input element", 2 * pool)] if pool else []
    out["ptflops_pytorch"] = p
    seen = g("conv_macs") + g("linear_macs") + g("v2_cpb_mlp_macs", 0) + seen_qk + seen_av
    c = [("- LayerNorm terms of flops()", -ln_official), ("+ LayerNorm, 5 per element", 5 * g("ln_elements"))]
    c += missed_att + cpb + [("x2 (2 FLOP per MAC): + counted MACs again", seen),
                             ("+ conv bias (Linear biases are not counted)", g("conv_bias")),
                             ("+ GELU, 1 per element", g("gelu")), ("+ softmax, 1 per element", g("attn_scores"))]
    c += [("+ cpb ReLU, 1 per element", g("v2_cpb_relu"))] if version == 2 else []
    c += [("+ avgpool, 1 per input element", pool)] if pool else []
    out["calflops"] = c
    return out


def print_tables() -> int:
    data = json.loads(OUT.read_text())
    models = data["models"]
    for group, lib, version, keys in TABLE_GROUPS:
        for counter in ("torchvision_ops", "flop_counter_mode", "fvcore", "ptflops_aten", "ptflops_pytorch",
                        "calflops"):
            if counter == "torchvision_ops" and lib == "timm":
                continue
            per_model = [difference_items(models[k]["terms"], lib, version)[counter] for k in keys]
            print(f"\n**{counter}, {group}** (millions; columns T, S, B)\n")
            print("| item | T | S | B |\n|---|---:|---:|---:|")
            print("| official flops() | " + " | ".join(
                f"{models[k]['terms']['official_flops'] / 1e6:,.3f}" for k in keys) + " |")
            for i, (label, _) in enumerate(per_model[0]):
                print(f"| {label} | " + " | ".join(f"{items[i][1] / 1e6:+,.3f}" for items in per_model) + " |")
            totals = []
            for k, items in zip(keys, per_model):
                total = models[k]["terms"]["official_flops"] + sum(v for _, v in items)
                measured = (models[k]["formula"]["torchvision_ops"] if counter == "torchvision_ops"
                            else models[k]["counters"][counter]["total"])
                if total != measured:
                    raise SystemExit(f"items for {counter} on {k} sum to {total}, measured {measured}")
                totals.append(measured)
            print("| **= measured** | " + " | ".join(f"**{v / 1e6:,.3f}**" for v in totals) + " |")
    return 0


def main() -> int:
    import timm
    import torch
    import torchvision
    from importlib.metadata import version

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    result = {
        "format_version": FORMAT_VERSION,
        "produced_by": "tools/measure_flop_counters.py",
        "batch": 1,
        "units": {
            "fvcore": "MAC: one per multiply-add (fvcore calls it a flop); norms 5 per element",
            "ptflops_pytorch": "MAC (ptflops prints GMac); bias adds and element-wise ops count 1 per element",
            "ptflops_aten": "MAC; bias adds count 1 per element",
            "calflops": "FLOP: 2 per multiply-add for linear/conv/matmul, 1 per element otherwise; "
                        "total_macs is its MAC figure",
            "flop_counter_mode": "FLOP: 2 per multiply-add; only matmul-like ops and convolutions",
            "torchvision_published": "_ops is GFLOPS by name but counts multiply-adds (see docs/flop-counters.md)",
            "official_flops": "multiply-adds plus 1 per LayerNorm element (official flops())",
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "fvcore": version("fvcore"), "ptflops": version("ptflops"), "calflops": version("calflops"),
        },
        "torchvision_published": {},
        "models": {},
    }
    import torchvision.models as tvm
    for arch, wname in TV_WEIGHTS.items():
        meta = getattr(tvm, wname).IMAGENET1K_V1.meta
        result["torchvision_published"][arch] = {
            "weights": f"{wname}.IMAGENET1K_V1", "_ops_gflops": meta["_ops"], "num_params": meta["num_params"],
            "min_size": list(meta["min_size"]),
        }
    only = set(sys.argv[1:])
    for key, (lib, name, img, cfg) in MODELS.items():
        if only and key not in only:
            continue
        print(f"measuring {key} at {img}x{img}", file=sys.stderr)
        model = build(lib, name)
        x = torch.randn(1, 3, img, img)
        entry = {
            "image": [img, img],
            "config": {"embed_dim": cfg["C"], "depths": list(cfg["depths"]), "num_heads": list(cfg["heads"]),
                       "window_size": cfg["M"], "version": cfg["version"], "num_classes": CLASSES},
            "num_params": sum(p.numel() for p in model.parameters()),
            "terms": shape_terms(img, cfg),
            "counters": {},
        }
        c = entry["counters"]
        with torch.no_grad():
            c["fvcore"] = run_fvcore(model, x)
            check_sum(c["fvcore"], "by_operator")
            c["ptflops_pytorch"] = run_ptflops(model, img, "pytorch")
            c["ptflops_aten"] = run_ptflops(model, img, "aten")
            c["calflops"] = run_calflops(model, img)
            check_sum(c["calflops"], "by_category")
            check_sum(c["calflops"], "macs_by_category", "total_macs")
        check_sum(c["ptflops_pytorch"], "by_category")
        check_sum(c["ptflops_aten"], "by_category")
        c["flop_counter_mode"] = run_flop_counter_mode(model, x)
        check_sum(c["flop_counter_mode"], "by_operator")
        f = formulas(entry["terms"], lib, cfg["version"])
        entry["formula"] = f
        measured = {k: c[k]["total"] for k in c} | {"calflops_macs": c["calflops"]["total_macs"]}
        entry["formula_residual"] = {k: measured[k] - f[k] for k in measured}
        if name in TV_WEIGHTS:
            pub = result["torchvision_published"][name]["_ops_gflops"]
            entry["formula_residual"]["torchvision_ops_rounded"] = round(f["torchvision_ops"] / 1e9, 3) - pub
        result["models"][key] = entry
    # A partial run (model names on the command line) never overwrites the committed fixture.
    out = OUT if not only else Path(os.environ.get("TMPDIR", "/tmp")) / "flop_counters.partial.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    tmp.replace(out)  # nothing half-written if a counter fails
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(print_tables() if sys.argv[1:] == ["--tables"] else main())
