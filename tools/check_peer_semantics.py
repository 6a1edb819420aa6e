"""Check the V1 forward-semantics facts of REFERENCE.md against the installed peers, by running them.

    /work/venv-peers/bin/python tools/check_peer_semantics.py

Prints one line per fact: OK when the peer agrees with REFERENCE.md / the official classifier, DIFFERS when it
does not (a DIFFERS line is a finding about the peer, not a failure of this script). The findings are written up in
docs/peer-semantics.md. Each attention check rebuilds a block's attention branch from first principles (float64,
the peer's own weights) in the order under test and compares it with the peer's output, so a claim like
"pad-then-roll" is shown by a numerical match, not by reading code.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(0)
RESULTS: list[tuple[str, str, bool]] = []


def report(what: str, got, ok: bool) -> None:
    RESULTS.append((what, str(got), ok))
    print(f"{'OK     ' if ok else 'DIFFERS'} {what}: {got}")


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith("relative_position_bias_table"):
                v = 0.5 * n
            elif p.ndim == 1 and name.endswith("weight"):
                v = 1 + 0.2 * n
            elif p.ndim == 1:
                v = 0.1 * n
            elif p.numel():
                v = n / p[0].numel() ** 0.5
            else:
                continue
            p.copy_(v.to(p.dtype))


# ---------------------------------------------------------------------------------------------------------------
# A from-first-principles attention branch (REFERENCE.md's description), float64.


def rel_index(M: int) -> torch.Tensor:
    """idx[i, j] = (hi-hj+M-1)*(2M-1) + (wi-wj+M-1), tokens row-major in the window."""
    hi, wi = torch.div(torch.arange(M * M), M, rounding_mode="floor"), torch.arange(M * M) % M
    return (hi[:, None] - hi[None, :] + M - 1) * (2 * M - 1) + (wi[:, None] - wi[None, :] + M - 1)


def region_mask(Hp: int, Wp: int, M: int, s: int) -> torch.Tensor:
    """[nW, N, N] with -100 where the two tokens of a window come from different regions of the Hp x Wp map."""
    lab = torch.zeros(Hp, Wp)
    cnt = 0
    for h in ((0, -M), (-M, -s), (-s, None)):
        for w in ((0, -M), (-M, -s), (-s, None)):
            lab[h[0]:h[1], w[0]:w[1]] = cnt
            cnt += 1
    win = lab.view(Hp // M, M, Wp // M, M).permute(0, 2, 1, 3).reshape(-1, M * M)
    d = win[:, None, :] - win[:, :, None]
    return torch.where(d != 0, -100.0, 0.0).double()


def attn_branch(xn, wq, bq, wk, bk, wv, bv, wo, bo, table, M, s, nH, order):
    """xn [B, H, W, C] (already norm1'd) -> attention branch [B, H, W, C] before the residual add."""
    B, H, W, C = xn.shape
    x = xn.double()
    Hp, Wp = -(-H // M) * M, -(-W // M) * M
    if order == "pad-then-roll":
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
    else:  # roll-then-pad
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
    win = x.view(B, Hp // M, M, Wp // M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, M * M, C)  # B*nW, N, C
    d = C // nH

    def heads(t):
        return t.view(t.shape[0], M * M, nH, d).transpose(1, 2)  # B*nW, nH, N, d

    q = heads(win @ wq.double().T + bq.double()) * d**-0.5
    k = heads(win @ wk.double().T + bk.double())
    v = heads(win @ wv.double().T + bv.double())
    a = q @ k.transpose(-1, -2) + table.double()[rel_index(M)].permute(2, 0, 1)[None]
    if s:
        m = region_mask(Hp, Wp, M, s)
        nW = m.shape[0]
        a = (a.view(B, nW, nH, M * M, M * M) + m[None, :, None]).view(-1, nH, M * M, M * M)
    o = (a.softmax(-1) @ v).transpose(1, 2).reshape(-1, M * M, C) @ wo.double().T + bo.double()
    o = o.view(B, Hp // M, Wp // M, M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    if order == "pad-then-roll":
        if s:
            o = torch.roll(o, (s, s), (1, 2))
        return o[:, :H, :W]
    o = o[:, :H, :W]
    return torch.roll(o, (s, s), (1, 2)) if s else o


def split_qkv(w, b):
    C = w.shape[1]
    return w[:C], b[:C], w[C:2 * C], b[C:2 * C], w[2 * C:], b[2 * C:]


def compare_orders(label, peer_out, xn, weights, M, s, nH, expect):
    errs = {o: (attn_branch(xn, *weights, M, s, nH, o) - peer_out.double()).abs().max().item()
            for o in ("pad-then-roll", "roll-then-pad")}
    best = min(errs, key=errs.get)
    report(f"{label}: order matching the peer (max abs err of each order)",
           {k: f"{v:.2e}" for k, v in errs.items()}, best == expect and errs[best] < 1e-5)


# ---------------------------------------------------------------------------------------------------------------


def check_timm():
    from timm.models.swin_transformer import SwinTransformer

    m = SwinTransformer(img_size=(76, 60), patch_size=4, embed_dim=8, depths=(2, 2), num_heads=(1, 2),
                        window_size=4, num_classes=10, drop_path_rate=0.0).eval()
    randomize_(m)
    eps = {mod.eps for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)}
    report("timm LayerNorm eps (all)", eps, eps == {1e-5})
    gelus = {(type(mod).__name__, getattr(mod, "approximate", None)) for mod in m.modules()
             if "GELU" in type(mod).__name__}
    report("timm GELU modules", gelus, gelus == {("GELU", "none")})
    report("timm fused (sdpa) attention used by default", m.layers[0].blocks[0].attn.fused_attn,
           m.layers[0].blocks[0].attn.fused_attn is False)
    blk = m.layers[0].blocks[1]
    idx = blk.attn.relative_position_index
    report("timm relative_position_index == formula, shape", tuple(idx.shape), torch.equal(idx, rel_index(4)))
    mk = blk.attn_mask
    report("timm attn_mask values / dtype / shape (19x15 grid, window 4, built on padded 20x16)",
           (sorted(mk.unique().tolist()), str(mk.dtype), tuple(mk.shape)),
           torch.equal(mk.double(), region_mask(20, 16, 4, 2)))
    x = torch.randn(2, 19, 15, 8)
    xn = blk.norm1(x)
    a = blk.attn
    w = (*split_qkv(a.qkv.weight, a.qkv.bias), a.proj.weight, a.proj.bias, a.relative_position_bias_table)
    with torch.no_grad():
        compare_orders("timm shifted block, 19x15 grid, window 4", blk._attn(xn), xn, w, 4, 2, 1, "roll-then-pad")
    x = torch.randn(2, 22, 18, 8)  # padding 2 on both axes == the shift
    with torch.no_grad():
        e = (attn_branch(x, *w, 4, 2, 1, "pad-then-roll") - attn_branch(x, *w, 4, 2, 1, "roll-then-pad")).abs().max()
    report("pad-then-roll vs roll-then-pad on a 22x18 grid (padding == shift on both axes): max abs difference",
           f"{e:.1e}", e < 1e-12)
    # merge order: norm and reduction replaced by identity -> the raw concat
    merge = m.layers[1].downsample
    merge.norm, merge.reduction = torch.nn.Identity(), torch.nn.Identity()
    report("timm merge concat order (row,col offsets)", concat_order(lambda t: merge(t)),
           concat_order(lambda t: merge(t)) == OFFICIAL_ORDER)
    # build-time per-axis clamp on a non-square grid
    m2 = SwinTransformer(img_size=(20, 12), patch_size=4, embed_dim=8, depths=(2,), num_heads=(1,), window_size=4,
                         num_classes=0)
    b = m2.layers[0].blocks[1]
    report("timm clamp on a 5x3 grid, window 4 (official rule would give window 3, shift 0)",
           {"window": b.window_size, "shift": b.shift_size}, b.window_size == (3, 3) and b.shift_size == (0, 0))
    # dynamic size keeps the build-time window and shift
    m3 = SwinTransformer(img_size=32, patch_size=4, embed_dim=8, depths=(2,), num_heads=(1,), window_size=8,
                         num_classes=0, dynamic_img_size=True).eval()
    with torch.no_grad():
        m3(torch.zeros(1, 3, 64, 64))
    b = m3.layers[0].blocks[1]
    report("timm dynamic_img_size: built 32 (grid 8 = window 8, clamped), run at 64 (grid 16; official rule at 64 "
           "would shift by 4): window, shift",
           {"window": b.window_size, "shift": b.shift_size}, b.shift_size == (4, 4))
    with torch.no_grad():
        ok = True
        try:
            m3(torch.zeros(1, 3, 66, 64))
        except Exception:
            ok = False
    report("timm accepts an image that is not a multiple of the patch", ok, ok is False)
    q_first = "q = q * self.scale" in _src("timm.models.swin_transformer")
    report("timm scales q before q@k^T (non-fused path)", q_first, q_first)


def check_hf():
    from transformers import SwinConfig, SwinForImageClassification
    from transformers.models.swin.modeling_swin import SwinPatchMerging

    cfg = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=4,
                     num_labels=10, layer_norm_eps=1e-6, attn_implementation="eager")
    m = SwinForImageClassification(cfg).eval()
    randomize_(m)
    eps = {n: mod.eps for n, mod in m.named_modules() if isinstance(mod, torch.nn.LayerNorm)}
    fixed = sorted({n.split(".")[-1] if "downsample" not in n else "downsample.norm" for n, e in eps.items()
                    if e == 1e-5})
    report("HF LayerNorms that ignore config.layer_norm_eps (=1e-6 here, eps 1e-5 used)", fixed,
           set(fixed) == {"norm", "downsample.norm"})
    act = m.swin.encoder.layers[0].blocks[0].mlp.activation_fn
    exact = torch.allclose(act(torch.tensor([1.0])), torch.tensor([0.8413447460685429]), atol=1e-7)
    report("HF hidden_act 'gelu' is the exact erf GELU", type(act).__name__, exact)
    layer = m.swin.encoder.layers[0].blocks[1]
    rpb = layer.attention.relative_position_bias
    report("HF relative_position_index == formula (stored flat, non-persistent)",
           tuple(rpb.relative_position_index.shape),
           torch.equal(rpb.relative_position_index.view(16, 16), rel_index(4)))
    names = sorted(k.split("blocks.1.")[1] for k in m.state_dict() if "layers.0.blocks.1." in k)
    report("HF in-memory block parameter names", names, True)
    mk = layer.get_attn_mask(20, 16, torch.float32, "cpu")
    report("HF mask on the padded 20x16 map (19x15 grid): values, dtype",
           (sorted(mk.unique().tolist()), str(mk.dtype)), torch.equal(mk.double(), region_mask(20, 16, 4, 2)))
    # order of pad and roll, measured on the full layer output (attention branch is inline)
    x = torch.randn(2, 19 * 15, 8)
    with torch.no_grad():
        out = layer(x, (19, 15))[0]
        at = layer.attention
        w = (at.q_proj.weight, at.q_proj.bias, at.k_proj.weight, at.k_proj.bias, at.v_proj.weight, at.v_proj.bias,
             at.o_proj.weight, at.o_proj.bias, rpb.relative_position_bias_table)
        xn = layer.layernorm_before(x).view(2, 19, 15, 8)
        errs = {}
        for order in ("pad-then-roll", "roll-then-pad"):
            h = x.double() + attn_branch(xn, *w, 4, 2, 1, order).reshape(2, -1, 8)
            h = h + layer.mlp.double()(layer.layernorm_after.double()(h))
            layer.float()
            errs[order] = (h - out.double()).abs().max().item()
    best = min(errs, key=errs.get)
    report("HF shifted layer, 19x15 grid, window 4: order matching the peer (max abs err)",
           {k: f"{v:.2e}" for k, v in errs.items()}, best == "pad-then-roll" and errs[best] < 1e-5)
    merge = SwinPatchMerging(dim=1)
    merge.norm, merge.reduction = torch.nn.Identity(), torch.nn.Identity()

    def hf_merge(t):
        B, H, W, C = t.shape
        return merge(t.reshape(B, H * W, C), (H, W)).reshape(B, (H + 1) // 2, (W + 1) // 2, 4 * C)

    report("HF merge concat order (row,col offsets)", concat_order(hf_merge), concat_order(hf_merge) == OFFICIAL_ORDER)
    src = _src("transformers.models.swin.modeling_swin")
    report("HF eager scales after q@k^T: matmul(q, k^T) * scaling",
           "torch.matmul(query, key.transpose(2, 3)) * scaling" in src, True)
    report("HF eager softmax runs in float32 and casts back (float64 models lose precision there)",
           "softmax(attn_weights, dim=-1, dtype=torch.float32)" in src, True)
    # run-time clamp is stateful
    m2 = SwinForImageClassification(SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[2], num_heads=[1],
                                               window_size=8, num_labels=0)).eval()
    with torch.no_grad():
        m2(torch.zeros(1, 3, 32, 32))  # grid 8 == window: shift switched off ...
        m2(torch.zeros(1, 3, 64, 64))  # ... and still off at grid 16
    report("HF shift after running at grid 8 (== window 8), then at grid 16",
           m2.swin.encoder.layers[0].blocks[1].shift_size, m2.swin.encoder.layers[0].blocks[1].shift_size == 0)
    # image padding to the patch size
    with torch.no_grad():
        a = m(torch.randn(1, 3, 62, 58, generator=torch.Generator().manual_seed(1))).logits
        x = torch.randn(1, 3, 62, 58, generator=torch.Generator().manual_seed(1))
        b = m(F.pad(x, (0, 2, 0, 2))).logits
    report("HF pads the image with zeros right/bottom to a multiple of the patch", f"{(a - b).abs().max():.1e}",
           torch.equal(a, b))


def check_tv():
    from torchvision.models.swin_transformer import PatchMerging, SwinTransformer

    m = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=[4, 4],
                        stochastic_depth_prob=0.0, num_classes=10).eval()
    randomize_(m)
    eps = {mod.eps for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)}
    report("torchvision LayerNorm eps (all)", eps, eps == {1e-5})
    gelus = {(type(mod).__name__, mod.approximate) for mod in m.modules() if isinstance(mod, torch.nn.GELU)}
    report("torchvision GELU modules", gelus, gelus == {("GELU", "none")})
    sd = m.state_dict()
    idx = sd["features.1.1.attn.relative_position_index"]
    report("torchvision relative_position_index saved, flat, == formula", tuple(idx.shape),
           torch.equal(idx.view(16, 16), rel_index(4)))
    mlp_keys = sorted(k.split("mlp.")[1] for k in sd if k.startswith("features.1.0.mlp."))
    report("torchvision MLP keys", mlp_keys, mlp_keys == ["0.bias", "0.weight", "3.bias", "3.weight"])
    blk = m.features[1][1]
    x = torch.randn(2, 19, 15, 8)
    xn = blk.norm1(x)
    a = blk.attn
    w = (*split_qkv(a.qkv.weight, a.qkv.bias), a.proj.weight, a.proj.bias, a.relative_position_bias_table)
    with torch.no_grad():
        compare_orders("torchvision shifted block, 19x15 grid, window 4", a(xn), xn, w, 4, 2, 1, "pad-then-roll")
    merge = PatchMerging(1)
    merge.norm, merge.reduction = torch.nn.Identity(), torch.nn.Identity()
    report("torchvision merge concat order (row,col offsets)", concat_order(merge), concat_order(merge) == OFFICIAL_ORDER)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        a1 = m(x[:, :, :62, :62])
        a2 = m(x[:, :, :60, :60])
    report("torchvision drops image rows/cols beyond a multiple of the patch (62x62 == 60x60)",
           f"{(a1 - a2).abs().max():.1e}", torch.equal(a1, a2))
    # a stage smaller than the window: tv pads to one window; the shifted block then has shift 0 (window >= padded)
    m2 = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2], num_heads=[1], window_size=[8, 8],
                         stochastic_depth_prob=0.0, num_classes=0).eval()
    randomize_(m2)
    blk = m2.features[1][1]
    x = torch.randn(1, 5, 5, 8)
    with torch.no_grad():
        a = blk.attn
        w = (*split_qkv(a.qkv.weight, a.qkv.bias), a.proj.weight, a.proj.bias, a.relative_position_bias_table)
        got = a(x)
        err_pad = (attn_branch(x, *w, 8, 0, 1, "pad-then-roll") - got.double()).abs().max().item()
    report("torchvision 5x5 grid with window 8: one padded 8x8 window, no shift, window not shrunk (max abs err)",
           f"{err_pad:.1e}", err_pad < 1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Replay every fixture in tests/data/peers from its checkpoint with the semantics above (float64, torch), as an
# end-to-end check that the fixtures follow REFERENCE.md: official clamp rule at the run size, the peer's pad/roll
# order, merge (0,0),(1,0),(0,1),(1,1) with zero padding of odd sizes, mean pooling of the final norm.

FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "tests" / "data" / "peers"


def official_names(case, meta) -> dict[str, torch.Tensor]:
    """The case's checkpoint under the official names (swinref's layout modules translate it), float64."""
    from swinref.checkpoints import read_checkpoint

    path = {"timm": case / "model.safetensors", "transformers": case / "hf", "torchvision": case / "model.pth"}
    params, _ = read_checkpoint(path[meta["peer"]])
    return {k: torch.from_numpy(v).double() for k, v in params.items()}


def replay(P, cfg, x, order):
    pts = {}
    ln = lambda t, pre: F.layer_norm(t, t.shape[-1:], P[pre + ".weight"], P[pre + ".bias"], 1e-5)  # noqa: E731
    p = cfg["patch_size"]
    t = F.conv2d(x, P["patch_embed.proj.weight"], P["patch_embed.proj.bias"], stride=p).permute(0, 2, 3, 1)
    t = ln(t, "patch_embed.norm")
    pts["patch_embed"] = t
    n = len(cfg["depths"])
    for i in range(n):
        H, W = t.shape[1:3]
        for j in range(cfg["depths"][i]):
            b = f"layers.{i}.blocks.{j}."
            M, s = cfg["window_size"], (cfg["window_size"] // 2 if j % 2 else 0)
            if min(H, W) <= M:  # official clamp, at the run size
                M, s = min(H, W), 0
            xn = ln(t, b + "norm1")
            w = (*split_qkv(P[b + "attn.qkv.weight"], P[b + "attn.qkv.bias"]), P[b + "attn.proj.weight"],
                 P[b + "attn.proj.bias"], P[b + "attn.relative_position_bias_table"])
            a = attn_branch(xn, *w, M, s, cfg["num_heads"][i], order)
            pts[b + "attn"] = a
            t = t + a
            h = F.linear(ln(t, b + "norm2"), P[b + "mlp.fc1.weight"], P[b + "mlp.fc1.bias"])
            t = t + F.linear(F.gelu(h), P[b + "mlp.fc2.weight"], P[b + "mlp.fc2.bias"])
            pts[b[:-1]] = t
        pts[f"features.{i}"] = t.permute(0, 3, 1, 2)
        if i + 1 < n:
            d = f"layers.{i}.downsample."
            u = F.pad(t, (0, 0, 0, W % 2, 0, H % 2))
            u = torch.cat([u[:, 0::2, 0::2], u[:, 1::2, 0::2], u[:, 0::2, 1::2], u[:, 1::2, 1::2]], -1)
            t = F.linear(ln(u, d + "norm"), P[d + "reduction.weight"])
            pts[d[:-1]] = t
    t = ln(t, "norm")
    pts["norm"] = t
    pts["pooled"] = t.mean((1, 2))
    pts["logits"] = F.linear(pts["pooled"], P["head.weight"], P["head.bias"])
    return pts


def check_fixtures():
    import json

    import numpy as np

    if not FIXTURES.is_dir():
        report("fixtures present", str(FIXTURES), False)
        return
    for case in sorted(d for d in FIXTURES.iterdir() if d.is_dir()):
        meta = json.loads((case / "meta.json").read_text())
        P = official_names(case, meta)
        order = "roll-then-pad" if meta["peer"] == "timm" else "pad-then-roll"
        for io in sorted(case.glob("io*.npz")):
            z = np.load(io)
            x = torch.from_numpy(z["input"]).double()
            pts = replay(P, meta["swinref_config"], x, order)
            errs = {k: (pts[k] - torch.from_numpy(z[k]).double()).abs().max().item() for k in z.files if k != "input"}
            worst = max(errs, key=errs.get)
            tol = 1e-9 if z["logits"].dtype == np.float64 else 5e-4
            report(f"replay {case.name}/{io.name} ({order}, official clamp, {len(errs)} arrays): worst",
                   f"{worst} {errs[worst]:.1e}", errs[worst] < tol)
            if io.name == "io.npz" and "pad" in case.name:
                other = "pad-then-roll" if order == "roll-then-pad" else "roll-then-pad"
                e = (replay(P, meta["swinref_config"], x, other)["logits"] - torch.from_numpy(z["logits"])).abs().max()
                report(f"replay {case.name}/{io.name} with the other order ({other}): logits max abs err "
                       f"(must be large for the fixture to discriminate)", f"{e:.2e}", e > 1e-2)
        if (case / "official.pth").exists():
            off = torch.load(case / "official.pth", map_location="cpu", weights_only=True)["model"]
            same = all(torch.equal(P[k], v.double()) for k, v in off.items() if k in P) and set(P) <= set(off)
            bufs = sorted({k.split(".")[-1] for k in set(off) - set(P)})
            report(f"{case.name}/official.pth holds the same weights as model.safetensors (+ buffers {bufs})",
                   same, same)


OFFICIAL_ORDER = [(0, 0), (1, 0), (0, 1), (1, 1)]


def concat_order(fn):
    """Feed x[b, h, w, 0] = 10*h + w (one channel) and read the four offsets of output position (0, 0)."""
    x = torch.tensor([[10.0 * h + w for w in range(4)] for h in range(4)]).view(1, 4, 4, 1)
    with torch.no_grad():
        out = fn(x)[0, 0, 0]
    return [(int(v) // 10, int(v) % 10) for v in out.tolist()]


def _src(module: str) -> str:
    import importlib
    import inspect

    return inspect.getsource(importlib.import_module(module))


def main() -> int:
    check_timm()
    check_hf()
    check_tv()
    check_fixtures()
    bad = [r for r in RESULTS if not r[2]]
    print(f"\n{len(RESULTS)} checks; {len(bad)} where the peer differs from REFERENCE.md / the official rule "
          f"(DIFFERS lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
