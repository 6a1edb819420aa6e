"""FLOP counts of a Swin configuration under named conventions, itemised per layer, from the config alone.

Two words are kept apart everywhere: a MAC is one multiply-add; a FLOP is one floating-point operation, and a
multiply-add is 2 FLOPs. The official repository's `flops()` counts multiply-adds and calls them FLOPs; its README
"GFLOPs" are GMACs. Each convention below itemises what it counts as `Item`s, so differences can be read line by
line (docs/flops.md walks through them):

- `official`: the official repository's `flops()` term for term (V1 and V2), quirks included: the window count
  nW = H*W/M/M is a float, LayerNorm counts 1 per element as if it were a MAC, and the final norm is
  C_L*H0*W0 // 2**num_layers, 2**(L-2) times the real count (4x for four stages: the last stage has
  H0*W0/4**(L-1) tokens, the formula divides by 2**L).
- `corrected`: what swinref's forward pass executes: attention on the padded grid with the real number of
  windows, the final norm on the real token count, V2's position-bias MLP; matrix products are MACs, and the
  elementwise work (biases, LayerNorm, softmax, GELU, masks, residuals, pooling) is itemised separately in FLOPs.
- `torchvision`, `fvcore`, `ptflops`, `calflops`: the subsets that those published figures and counters count.

Numbers are exact: integers where the count is whole, a float only when it is not (the official MLP term with a
fractional mlp_ratio). The official float window count is computed as a Fraction, so it never rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable

from swinref.config import SwinConfig
from swinref.plan import DEFAULT_POLICY, ModelPlan, plan
from swinref.errors import ConfigError
from swinref.layout import CPB_HIDDEN

__all__ = ["Item", "FlopReport", "Convention", "CONVENTIONS", "count_flops", "complexity", "sweep", "parse_sweep"]

Number = int | float


@dataclass(frozen=True)
class Item:
    """One counted term. `macs` are multiply-adds; `flops` = 2*macs for matrix products, or the elementwise FLOPs."""

    name: str  # official module path of the op, e.g. layers.0.blocks.1.attn.qkv
    part: str  # embed | attention | mlp | norm | merge | pool | head
    op: str  # conv | linear | matmul | layernorm | elementwise
    macs: Number
    flops: Number
    stage: int | None = None
    block: int | None = None
    elements: int = 0  # elementwise steps: the elements touched (peer counters weigh them differently)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "part": self.part, "op": self.op, "macs": self.macs, "flops": self.flops}
        if self.stage is not None:
            d["stage"] = self.stage
        if self.block is not None:
            d["block"] = self.block
        return d


@dataclass(frozen=True)
class Convention:
    name: str
    summary: str
    includes: tuple[str, ...]  # the documented list of counted terms
    excludes: tuple[str, ...]
    items: Callable[..., list[Item]] = field(repr=False)  # (cfg, plan, backbone=False) -> the counted terms
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlopReport:
    config: SwinConfig
    image: tuple[int, int]
    batch: int
    convention: Convention
    items: tuple[Item, ...]
    params: int
    notes: tuple[str, ...] = ()
    policy: str = "official"  # the window policy whose plan was counted
    backbone: bool = False  # the dense-prediction backbone: per-stage output norms, no final norm, pooling or head

    @property
    def macs(self) -> Number:
        return _num(sum((Fraction(i.macs) for i in self.items), Fraction(0))) * self.batch

    @property
    def flops(self) -> Number:
        return _num(sum((Fraction(i.flops) for i in self.items), Fraction(0))) * self.batch

    def stages(self) -> list[dict[str, Any]]:
        """Per-stage totals; the stem (patch embedding) and the tail (final norm, pooling, head) are their own rows."""
        rows: dict[Any, dict[str, Any]] = {}
        for it in self.items:
            key = it.stage if it.stage is not None else ("embed" if it.part == "embed" else "tail")
            row = rows.setdefault(key, {"stage": key, "macs": Fraction(0), "flops": Fraction(0), "parts": {}})
            row["macs"] += Fraction(it.macs)
            row["flops"] += Fraction(it.flops)
            part = row["parts"].setdefault(it.part, {"macs": Fraction(0), "flops": Fraction(0)})
            part["macs"] += Fraction(it.macs)
            part["flops"] += Fraction(it.flops)
        mp = plan(self.config, self.image, self.policy)
        order = ["embed", *range(self.config.num_layers), "tail"]
        out = []
        for key in order:
            if key not in rows:
                continue
            row = rows[key]
            entry: dict[str, Any] = {"stage": key, "macs": _num(row["macs"]) * self.batch,
                                     "flops": _num(row["flops"]) * self.batch}
            if isinstance(key, int):
                s = mp.stages[key]
                entry.update(resolution=list(s.resolution), dim=s.dim, depth=s.depth, window=list(s.window),
                             windows=s.windows, tokens=s.tokens, pad=list(s.pad))
            entry["parts"] = {k: {"macs": _num(v["macs"]) * self.batch, "flops": _num(v["flops"]) * self.batch}
                              for k, v in row["parts"].items()}
            out.append(entry)
        return out

    def blocks(self) -> list[dict[str, Any]]:
        """Per-block totals (attention and MLP apart), plus one row per patch merging."""
        rows: dict[tuple, dict[str, Any]] = {}
        for it in self.items:
            if it.stage is None:
                continue
            where = it.block if it.block is not None else ("downsample" if it.part == "merge" else it.name)
            key = (it.stage, where)
            name = (f"layers.{it.stage}.blocks.{it.block}" if it.block is not None else
                    f"layers.{it.stage}.downsample" if it.part == "merge" else it.name)
            row = rows.setdefault(key, {"name": name, "stage": it.stage, "macs": Fraction(0), "flops": Fraction(0),
                                        "attention": Fraction(0), "mlp": Fraction(0), "norm": Fraction(0)})
            row["macs"] += Fraction(it.macs)
            row["flops"] += Fraction(it.flops)
            if it.part in ("attention", "mlp", "norm"):
                row[it.part] += Fraction(it.macs)
            elif it.part == "out_norm":
                row["norm"] += Fraction(it.macs)
        return [{k: (_num(v) * self.batch if isinstance(v, Fraction) else v) for k, v in r.items()}
                for r in rows.values()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.name,
            "image": list(self.image),
            "batch": self.batch,
            "convention": self.convention.name,
            "policy": self.policy,
            "backbone": self.backbone,
            "summary": self.convention.summary,
            "includes": list(self.convention.includes),
            "excludes": list(self.convention.excludes),
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "gmacs": self.macs / 1e9,
            "gflops": self.flops / 1e9,
            "stages": self.stages(),
            "blocks": self.blocks(),
            "items": [{**i.to_dict(), "macs": _num(Fraction(i.macs) * self.batch),
                       "flops": _num(Fraction(i.flops) * self.batch)} for i in self.items],
            "notes": list(self.notes),
        }


def _num(x: Fraction | int | float) -> Number:
    """An exact count as an int when it is whole, else a float (the official float window count)."""
    x = Fraction(x)
    return x.numerator if x.denominator == 1 else float(x)


def _mac(name: str, part: str, op: str, macs: Fraction | int, stage=None, block=None) -> Item:
    return Item(name, part, op, _num(macs), _num(2 * Fraction(macs)), stage, block)


def _ew(name: str, part: str, elements: int, per: int = 1, stage=None, block=None, op: str = "elementwise") -> Item:
    """An elementwise step over `elements` values costing `per` FLOPs each."""
    return Item(name, part, op, 0, elements * per, stage, block, elements)


# ---------------------------------------------------------------------------------------------------------------
# official: microsoft/Swin-Transformer models/swin_transformer.py and swin_transformer_v2.py, flops() methods.


def _official_items(cfg: SwinConfig, mp: ModelPlan, backbone: bool = False) -> list[Item]:
    items = []
    HoWo = math.prod(mp.embed.grid)
    C0, pp = cfg.embed_dim, math.prod(cfg.patch)
    # PatchEmbed.flops: Ho*Wo*embed_dim*in_chans*(p*p), plus Ho*Wo*embed_dim for the norm.
    items.append(_mac("patch_embed.proj", "embed", "conv", HoWo * C0 * cfg.in_chans * pp))
    if cfg.patch_norm:
        items.append(_mac("patch_embed.norm", "embed", "layernorm", HoWo * C0))
    ratio = Fraction(cfg.mlp_ratio)  # exact value of the float the official code multiplies by
    for s in mp.stages:
        i, dim, nH = s.index, s.dim, s.heads
        HW, (H, W), frames = math.prod(s.resolution), s.resolution[-2:], math.prod(s.resolution[:-2])
        N = s.window_tokens
        # The official nW = H * W / window / window: a float, fractional when the grid does not divide.
        nW = Fraction(HW, N)
        d = dim // nH
        for j in range(s.depth):
            b = f"layers.{i}.blocks.{j}"
            items += [
                _mac(f"{b}.norm1", "norm", "layernorm", dim * HW, i, j),
                _mac(f"{b}.attn.qkv", "attention", "linear", nW * (N * dim * 3 * dim), i, j),
                _mac(f"{b}.attn.qk", "attention", "matmul", nW * (nH * N * d * N), i, j),
                _mac(f"{b}.attn.av", "attention", "matmul", nW * (nH * N * N * d), i, j),
                _mac(f"{b}.attn.proj", "attention", "linear", nW * (N * dim * dim), i, j),
                # mlp: 2 * H * W * dim * dim * mlp_ratio, one half per linear layer.
                _mac(f"{b}.mlp.fc1", "mlp", "linear", HW * dim * dim * ratio, i, j),
                _mac(f"{b}.mlp.fc2", "mlp", "linear", HW * dim * dim * ratio, i, j),
                _mac(f"{b}.norm2", "norm", "layernorm", dim * HW, i, j),
            ]
        if s.merge_pad is not None:
            dsn = f"layers.{i}.downsample"
            reduction = _mac(f"{dsn}.reduction", "merge", "linear",
                             frames * (H // 2) * (W // 2) * 4 * dim * 2 * dim, i)
            if cfg.version == 1:
                # V1 PatchMerging.flops: H*W*dim for LayerNorm(4C) on H/2*W/2 tokens.
                items += [_mac(f"{dsn}.norm", "merge", "layernorm", HW * dim, i), reduction]
            else:
                # V2 PatchMerging.flops: H*W*dim//2 for LayerNorm(2C) after the reduction.
                items += [reduction, _mac(f"{dsn}.norm", "merge", "layernorm", HW * dim // 2, i)]
    if backbone:
        # The detection backbone has no flops(); its output norms counted as the official LayerNorms, 1 per element.
        return items + [_mac(f"norm{s.index}", "out_norm", "layernorm", s.tokens * s.dim, s.index)
                         for s in mp.stages]
    # SwinTransformer.flops: num_features * H0 * W0 // 2**num_layers (the last stage has H0*W0 / 4**(L-1) tokens).
    items.append(_mac("norm", "norm", "layernorm", cfg.num_features * HoWo // 2**cfg.num_layers))
    # num_features * num_classes: the head without its bias.
    items.append(_mac("head", "head", "linear", cfg.num_features * cfg.num_classes))
    return items


def _official_video_items(cfg: SwinConfig, mp: ModelPlan, backbone: bool = False) -> list[Item]:
    """The Video-Swin-Transformer README's per-view GFLOPs (Swin-T 87.9, S 165.9, B 281.6, SSv2 B 320.6 at
    32x224x224): every matrix product's multiply-adds plus 2 per LayerNorm element, as an affine LayerNorm counts in
    mmcv's complexity counter. The repository has no flops() and its get_flops tool's output is not published; this
    decomposition is the one that reproduces all four figures to their last digit (docs/flops.md)."""
    out = []
    for it in _corrected_items(cfg, mp, backbone):
        if it.op in ("conv", "linear", "matmul"):
            out.append(it)
        elif it.op == "layernorm":
            out.append(Item(it.name, it.part, it.op, 2 * it.elements, 4 * it.elements, it.stage, it.block,
                            it.elements))
    return out


# ---------------------------------------------------------------------------------------------------------------
# corrected: what executes in swinref's forward pass (the plan's padding, real windows).

# FLOPs per element of the elementwise steps, each primitive (add, multiply, divide, exp, erf, max) counted once.
LAYERNORM_FLOPS = 7  # mean (add), centre (sub), square (mul), variance (add), scale by 1/std (mul), affine (mul, add)
SOFTMAX_FLOPS = 5  # running max, subtract, exp, sum, divide
GELU_FLOPS = 5  # 0.5 * x * (1 + erf(x / sqrt 2)): divide, erf, add, multiply, multiply
L2NORM_FLOPS = 3  # V2 cosine attention, per element of q and k: square, sum, divide


def _corrected_items(cfg: SwinConfig, mp: ModelPlan, backbone: bool = False) -> list[Item]:
    LN, SM, GELU, L2 = LAYERNORM_FLOPS, SOFTMAX_FLOPS, GELU_FLOPS, L2NORM_FLOPS
    items = []
    C0 = cfg.embed_dim
    T0 = math.prod(mp.embed.grid)
    items.append(_mac("patch_embed.proj", "embed", "conv", T0 * C0 * cfg.in_chans * math.prod(cfg.patch)))
    items.append(_ew("patch_embed.proj.bias", "embed", T0 * C0, op="bias"))
    if cfg.patch_norm:
        items.append(_ew("patch_embed.norm", "embed", T0 * C0, LN, op="layernorm"))
    if mp.embed.pos_embed is not None:
        # Added per token (its bicubic resize depends on the weights and the size only: computed once, not counted).
        items.append(_ew(mp.embed.pos_embed, "embed", T0 * C0))
    for s in mp.stages:
        i, C, nH = s.index, s.dim, s.heads
        T, Tp, nW, N, d = s.tokens, s.padded_tokens, s.windows, s.window_tokens, s.head_dim
        hidden = int(C * cfg.mlp_ratio)
        scores = nW * nH * N * N  # one attention score per (window, head, query, key), padding included
        for j in range(s.depth):
            b = f"layers.{i}.blocks.{j}"
            blk = [
                _ew(f"{b}.norm1", "norm", T * C, LN, i, j, op="layernorm"),
                # qkv and proj run on every window token, the zero padding included (it is cropped afterwards).
                _mac(f"{b}.attn.qkv", "attention", "linear", Tp * C * 3 * C, i, j),
            ]
            if cfg.qkv_bias:
                # V2 adds cat(q_bias, 0, v_bias): still one add per qkv element.
                blk.append(_ew(f"{b}.attn.qkv.bias", "attention", Tp * 3 * C, 1, i, j, op="bias"))
            if cfg.version == 1:
                blk.append(_ew(f"{b}.attn.scale", "attention", Tp * C, 1, i, j))  # q * d**-0.5
            else:
                blk.append(_ew(f"{b}.attn.normalize", "attention", 2 * Tp * C, L2, i, j))  # q and k
            blk.append(_mac(f"{b}.attn.qk", "attention", "matmul", scores * d, i, j))
            if cfg.version == 2:
                # Continuous position bias: Linear(2, 512) - ReLU - Linear(512, nH) over the (2M-1)^2 relative
                # coordinates, run every forward (it depends on the weights only: a cache could skip it).
                table = math.prod(2 * w - 1 for w in s.window)
                blk += [
                    _mac(f"{b}.attn.cpb_mlp.0", "attention", "linear", table * 2 * CPB_HIDDEN, i, j),
                    _ew(f"{b}.attn.cpb_mlp.0.bias", "attention", table * CPB_HIDDEN, 1, i, j, op="bias"),
                    _ew(f"{b}.attn.cpb_mlp.1", "attention", table * CPB_HIDDEN, 1, i, j, op="relu"),
                    _mac(f"{b}.attn.cpb_mlp.2", "attention", "linear", table * CPB_HIDDEN * nH, i, j),
                    _ew(f"{b}.attn.logit_scale", "attention", scores, 1, i, j),
                    _ew(f"{b}.attn.sigmoid16", "attention", nH * N * N, 2, i, j),  # 16 * sigmoid(bias)
                ]
            blk.append(_ew(f"{b}.attn.bias_add", "attention", scores, 1, i, j))
            if any(s.block_shift(j)):
                blk.append(_ew(f"{b}.attn.mask_add", "attention", scores, 1, i, j))
            blk += [
                _ew(f"{b}.attn.softmax", "attention", scores, SM, i, j, op="softmax"),
                _mac(f"{b}.attn.av", "attention", "matmul", scores * d, i, j),
                _mac(f"{b}.attn.proj", "attention", "linear", Tp * C * C, i, j),
                _ew(f"{b}.attn.proj.bias", "attention", Tp * C, 1, i, j, op="bias"),
                _ew(f"{b}.residual1", "attention", T * C, 1, i, j),
                _ew(f"{b}.norm2", "norm", T * C, LN, i, j, op="layernorm"),
                _mac(f"{b}.mlp.fc1", "mlp", "linear", T * C * hidden, i, j),
                _ew(f"{b}.mlp.fc1.bias", "mlp", T * hidden, 1, i, j, op="bias"),
                _ew(f"{b}.mlp.act", "mlp", T * hidden, GELU, i, j, op="gelu"),
                _mac(f"{b}.mlp.fc2", "mlp", "linear", T * hidden * C, i, j),
                _ew(f"{b}.mlp.fc2.bias", "mlp", T * C, 1, i, j, op="bias"),
                _ew(f"{b}.residual2", "mlp", T * C, 1, i, j),
            ]
            items += blk
        if s.merge_pad is not None:
            dsn = f"layers.{i}.downsample"
            T2 = math.prod(s.merge.resolution)  # the odd grid is padded to even, so every merged token is computed
            norm_dim = 4 * C if cfg.version == 1 else 2 * C
            norm = _ew(f"{dsn}.norm", "merge", T2 * norm_dim, LN, i, op="layernorm")
            red = _mac(f"{dsn}.reduction", "merge", "linear", T2 * 4 * C * 2 * C, i)
            items += [norm, red] if cfg.version == 1 else [red, norm]
    if backbone:
        # Every stage's output through its own LayerNorm; no final norm, pooling or head.
        return items + [_ew(f"norm{s.index}", "out_norm", s.tokens * s.dim, LN, s.index, op="layernorm")
                        for s in mp.stages]
    last = mp.stages[-1]
    CL = cfg.num_features
    items.append(_ew("norm", "norm", last.tokens * CL, LN, op="layernorm"))
    items.append(_ew("pooled", "pool", last.tokens * CL, op="pool"))  # (T-1)*C adds + C divides
    if cfg.num_classes > 0:
        items.append(_mac("head", "head", "linear", CL * cfg.num_classes))
        items.append(_ew("head.bias", "head", cfg.num_classes, op="bias"))
    return items


# ---------------------------------------------------------------------------------------------------------------
# Published figures of other tools, as subsets of the terms above.


_FUNCTIONAL_LINEARS = (".attn.qkv", ".attn.proj", ".attn.qkv.bias", ".attn.proj.bias")


def _counter_items(counter: str, impl: str) -> Callable[[SwinConfig, ModelPlan], list[Item]]:
    """The terms a FLOP counter counts on a model implementation ("timm" or "torchvision"), and how it weighs them.

    Derived from the breakdowns in tests/data/flop_counters.json (tools/measure_flop_counters.py, docs/flop-counters.md):
    - fvcore (jit trace, per-aten-op handlers): conv, linear and matmul MACs; LayerNorm 5 per element; adaptive
      average pooling 1 per element (torchvision's AdaptiveAvgPool2d; timm's mean is an unsupported op).
    - ptflops, aten backend (its default): MACs of convolution/addmm/mm/bmm, plus 1 per bias element of every
      linear and convolution (addmm, convolution); nothing else.
    - ptflops, pytorch backend: module hooks plus patched functionals. Conv2d and nn.Linear with their biases, LayerNorm
      1 per element, GELU twice (the module hook and the patched F.gelu both fire; once in timm V2), ReLU twice,
      F.softmax once, pooling twice (torchvision). Attention products written with the @ operator are missed (all
      of timm's; the q@k^T of torchvision V2); linears called through F.linear are missed too (torchvision's qkv
      and proj, timm V2's qkv).
    - calflops: MACs of conv, every linear (F.linear patched) and torch.matmul / Tensor.matmul (not the @ operator);
      FLOPs 2 per MAC plus the conv bias (not the linear biases), LayerNorm 5, GELU, ReLU, softmax, pooling 1 per element.
    - torchvision `_ops`: every matrix product (= torch.utils.flop_counter.FlopCounterMode's count / 2).
    """

    def rule(it: Item, cfg: SwinConfig) -> tuple[int, int] | None:
        name, op, el = it.name, it.op, it.elements
        tv = impl == "torchvision"
        # Linears called through F.linear, invisible to module hooks: torchvision's qkv and proj; timm V2's qkv
        # (it passes cat(q_bias, k_bias, v_bias) to F.linear).
        functional = name.endswith(_FUNCTIONAL_LINEARS) if tv else (
            cfg.version == 2 and name.endswith((".attn.qkv", ".attn.qkv.bias")))
        if op == "matmul":
            if counter in ("ptflops-pytorch", "calflops"):
                # Only torchvision's Tensor.matmul calls are seen; V2 writes q @ k^T with the operator.
                seen = tv and (cfg.version == 1 or name.endswith(".attn.av"))
                return (it.macs, 2 * it.macs) if seen else None
            return it.macs, 2 * it.macs
        if op in ("conv", "linear"):
            if counter == "ptflops-pytorch" and functional:
                return None
            return it.macs, 2 * it.macs
        if op == "bias":
            conv_bias = name == "patch_embed.proj.bias"
            if counter == "ptflops":
                return el, 2 * el
            if counter == "ptflops-pytorch":
                return None if functional else (el, 2 * el)
            if counter == "calflops" and conv_bias:
                return 0, el
            return None
        if op == "layernorm":
            # The real element counts, the final norm included (the counters run the model, not a formula).
            return {"fvcore": (5 * el, 10 * el), "ptflops-pytorch": (el, 2 * el), "calflops": (0, 5 * el)}.get(counter)
        if op in ("gelu", "relu"):
            # ptflops-pytorch sees nn.GELU / nn.ReLU twice (module hook and patched functional); timm V2's MLP
            # activation is not an nn.GELU module, so only F.gelu counts there.
            twice = 1 if (op == "gelu" and not tv and cfg.version == 2) else 2
            return {"ptflops-pytorch": (twice * el, 2 * twice * el), "calflops": (0, el)}.get(counter)
        if op == "softmax":
            return {"ptflops-pytorch": (el, 2 * el), "calflops": (0, el)}.get(counter)
        if op == "pool" and tv:
            return {"fvcore": (el, 2 * el), "ptflops-pytorch": (2 * el, 4 * el), "calflops": (0, el)}.get(counter)
        return None

    def items(cfg: SwinConfig, mp: ModelPlan, backbone: bool = False) -> list[Item]:
        out = []
        for it in _corrected_items(cfg, mp, backbone):
            counted = rule(it, cfg)
            if counted is not None and counted != (0, 0):
                out.append(Item(it.name, it.part, it.op, counted[0], counted[1], it.stage, it.block, it.elements))
        return out

    return items


_COUNTER_DOCS = {
    "fvcore": (
        "fvcore FlopCountAnalysis: MACs of conv, linear and matmul, LayerNorm as 5 per element (it calls them flops)",
        ("conv, every linear and both attention matmuls (MACs)", "LayerNorm: 5 per element, counted with the MACs"),
        ("biases", "softmax", "GELU", "elementwise adds and multiplies", "mean pooling (unsupported aten::mean)"),
    ),
    "ptflops": (
        "ptflops, aten backend (its default): MACs of convolution/addmm/mm/bmm plus 1 per bias element",
        ("conv, every linear, both attention matmuls (MACs)", "every linear and conv bias: 1 per element"),
        ("LayerNorm", "softmax", "GELU", "pooling", "elementwise adds and multiplies"),
    ),
    "ptflops-pytorch": (
        "ptflops, pytorch backend: module hooks and patched functionals (MACs, elementwise ops 1 each)",
        ("nn.Conv2d and nn.Linear with their biases", "LayerNorm 1 per element", "GELU and ReLU 2 per element "
         "(module hook and F.gelu/F.relu both fire)", "F.softmax 1 per score", "Tensor.matmul calls"),
        ("matmuls written with @ (timm: both; torchvision V2: q@k^T)",
         "linears called through F.linear (torchvision's qkv and proj, timm V2's qkv)", "elementwise adds and multiplies"),
    ),
    "calflops": (
        "calflops calculate_flops: MACs of conv, linear and torch/Tensor.matmul; FLOPs 2 per MAC + elementwise",
        ("MACs: conv, every linear (F.linear patched), Tensor.matmul calls",
         "FLOPs: 2 per MAC, conv bias, LayerNorm 5, GELU/ReLU/softmax/pooling 1 per element"),
        ("linear biases", "matmuls written with @ (timm: both; torchvision V2: q@k^T)", "elementwise adds"),
    ),
}


def _counter_convention(counter: str, impl: str) -> Convention:
    summary, includes, excludes = _COUNTER_DOCS[counter]
    name = counter if impl == "timm" else f"{counter}-torchvision"
    on = "timm's and torchvision's implementations alike" if counter == "ptflops" else f"{impl}'s implementation"
    return Convention(
        name, f"{summary}; on {on}", includes, excludes, _counter_items(counter, impl),
        sources=("tests/data/flop_counters.json (tools/measure_flop_counters.py)", "docs/flop-counters.md"),
    )


CONVENTIONS: dict[str, Convention] = {
    "official": Convention(
        "official",
        "the official repository's flops() term for term: multiply-adds (its README calls them FLOPs)",
        includes=(
            "patch embedding convolution (no bias)", "patch LayerNorm, 1 per element",
            "per block: norm1 and norm2, 1 per element", "qkv and proj linears, nW = H*W/M/M windows (a float)",
            "q@k^T and attn@v", "MLP fc1 and fc2 (2*H*W*C*C*mlp_ratio)",
            "patch merging: LayerNorm 1 per element (V1: H*W*C before, V2: H*W*C//2 after) and the 4C->2C linear",
            "final norm as C_L*H0*W0 // 2**num_layers (an over-count: 4x the real count for four stages)",
            "head weight (num_features * num_classes)",
        ),
        excludes=("all biases", "softmax", "GELU", "attention scale", "relative position bias and mask adds",
                  "residual adds", "average pooling", "V2 position-bias MLP, cosine normalisation, logit scale",
                  "padding (the official classifier refuses sizes that need it)"),
        items=_official_items,
        sources=("microsoft/Swin-Transformer models/swin_transformer.py flops()",
                 "microsoft/Swin-Transformer models/swin_transformer_v2.py flops()"),
    ),
    "corrected": Convention(
        "corrected",
        "what swinref executes: matrix products as MACs (padding and real window counts included), "
        "elementwise work itemised in FLOPs",
        includes=(
            "MACs: patch convolution, qkv, q@k^T, attn@v and proj on the padded window grid (real nW), "
            "fc1, fc2, patch-merging reduction, head weight, V2 position-bias MLP",
            f"FLOPs: every bias add; LayerNorm {LAYERNORM_FLOPS}/element (incl. the final norm on the real "
            f"tokens); attention scale (V1) or L2 normalisation of q, k ({L2NORM_FLOPS}/element, V2); "
            f"relative position bias add; shift-mask add (SW-MSA blocks); softmax {SOFTMAX_FLOPS}/score; "
            f"GELU {GELU_FLOPS}/element; both residual adds; average pooling; V2 logit scale and 16*sigmoid",
        ),
        excludes=("data movement: roll, pad, crop, window partition/reverse, concat (0 FLOPs)",
                  "index gathers of the bias table"),
        items=_corrected_items,
    ),
    "torchvision": Convention(
        "torchvision",
        "torchvision's published `_ops` (Swin_T_Weights.meta etc.): matrix-product MACs only",
        includes=("patch convolution", "qkv, proj, fc1, fc2, merging reduction and head linears",
                  "q@k^T and attn@v", "V2: the position-bias MLP linears"),
        excludes=("every LayerNorm", "biases", "softmax, GELU, elementwise adds, pooling"),
        items=_counter_items("torchvision", "torchvision"),
        sources=("torchvision.models.Swin_{T,S,B}_Weights.IMAGENET1K_V1.meta['_ops']",
                 "torchvision.models.Swin_V2_{T,S,B}_Weights.IMAGENET1K_V1.meta['_ops']"),
    ),
}
# Video Swin's "official" figures (count_flops picks this for a clip model under the name "official").
VIDEO_OFFICIAL = Convention(
    "official",
    "the Video-Swin-Transformer README's per-view FLOPs: multiply-adds of every matrix product plus 2 per LayerNorm "
    "element (its README calls the total FLOPs)",
    includes=("patch embedding Conv3d, qkv, q@k^T, attn@v, proj, fc1, fc2, merging reduction, head (MACs, on the "
              "padded window grid)", "every LayerNorm: 2 per element (mmcv's count for an affine LayerNorm)"),
    excludes=("biases", "softmax", "GELU", "bias and mask adds", "residual adds", "average pooling"),
    items=_official_video_items,
    sources=("SwinTransformer/Video-Swin-Transformer README (T 87.9 G, S 165.9 G, B 281.6 G, SSv2 B 320.6 G)",),
)
for _counter in _COUNTER_DOCS:
    # ptflops' aten backend sees the same ops on both implementations: one convention.
    for _impl in ("timm",) if _counter == "ptflops" else ("timm", "torchvision"):
        _c = _counter_convention(_counter, _impl)
        CONVENTIONS[_c.name] = _c


def count_flops(cfg: SwinConfig, image: tuple[int, int] | int | str | None = None, *, convention: str = "official",
                batch: int = 1, policy: str | None = None, backbone: bool = False) -> FlopReport:
    """Itemised FLOP count of `cfg` on an image of size `image` (default: the config's) under `convention`.

    The windows come from a window policy (swinref.plan): by default the official classifier's for the
    conventions that reproduce a counter run on a peer at its build size, and swinref's default for `corrected`,
    which counts what swinref executes; 'detection' in backbone mode.

    `backbone=True` counts the dense-prediction backbone (official detection, mmdet, mmseg): every stage's output
    LayerNorm norm{i} over its real tokens (items `norm{i}`, part `out_norm`), and no final norm, pooling or head.
    """
    from .params import count_params
    from .trace import analysis_policy, as_size

    conv = get_convention(convention)
    if cfg.is_video and conv is CONVENTIONS["official"]:
        conv = VIDEO_OFFICIAL
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}; use e.g. --batch 1")
    policy = analysis_policy(policy, backbone)
    if policy is None:
        policy = DEFAULT_POLICY if convention == "corrected" else "official"
    mp = plan(cfg, as_size(image, cfg), policy)
    notes = []
    if convention == "official" and mp.needs_padding and not cfg.is_video:
        notes.append(
            "this size needs padding, which the official classifier refuses; the official formulas are applied to "
            "its windows on the padded grid (their float window count H*W/M/M is then fractional): see "
            "--convention corrected"
        )
    elif mp.refusal is not None:
        notes.append(f"policy {mp.policy.name}: {mp.refusal}")
    return FlopReport(cfg, mp.embed.image, batch, conv, tuple(conv.items(cfg, mp, backbone)),
                      count_params(cfg, backbone=backbone).total, tuple(notes), mp.policy.name, backbone)


def get_convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        import difflib

        close = difflib.get_close_matches(name, list(CONVENTIONS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown FLOP convention {name!r}; {hint}choose one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


# ---------------------------------------------------------------------------------------------------------------
# The paper's complexity formulas (Swin paper, eq. 1 and 2) and how they grow with the input.


def complexity(cfg: SwinConfig, image: tuple[int, int] | int | str | None = None) -> list[dict[str, Any]]:
    """Per stage, one block's Omega(MSA) = 4hwC^2 + 2(hw)^2 C and Omega(W-MSA) = 4hwC^2 + 2 M^2 hw C, in MACs.

    h, w are the stage's real token grid and M its effective window (after the clamp rule), as in the paper.
    """
    from .trace import as_size

    mp = plan(cfg, as_size(image, cfg), "official")
    rows = []
    for s in mp.stages:
        C, N = s.dim, s.window_tokens
        hw = math.prod(s.resolution)  # thw for a clip: Omega(3D W-MSA) = 4thwC^2 + 2 PM^2 thw C
        msa = 4 * hw * C * C + 2 * hw * hw * C
        wmsa = 4 * hw * C * C + 2 * N * hw * C  # M^2 (P*M^2 for a clip) = N tokens per window
        rows.append({
            "stage": s.index, "resolution": list(s.resolution), "dim": C, "window": list(s.window), "depth": s.depth,
            "msa": msa, "wmsa": wmsa, "ratio": msa / wmsa,
            "msa_stage": msa * s.depth, "wmsa_stage": wmsa * s.depth,
        })
    return rows


MAX_SWEEP = 1000  # sizes in one sweep: each is a plan and a row


def parse_sweep(text: str) -> list[int]:
    """'224:1024:32' -> [224, 256, ..., 1024] (the stop is included when the step reaches it)."""
    try:
        parts = [int(x) for x in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] < 1) or parts[0] < 1 or parts[1] < parts[0]:
        raise ConfigError(f"cannot read sweep {text!r}: write START:STOP[:STEP] with 1 <= START <= STOP, "
                          f"e.g. --sweep 224:1024:32")
    start, stop = parts[0], parts[1]
    step = parts[2] if len(parts) == 3 else 32
    sizes = range(start, stop + 1, step)  # counted before any list is built: 224:100000000:1 is 10^8 sizes
    if len(sizes) > MAX_SWEEP:
        fits = -(-(stop - start) // (MAX_SWEEP - 1))
        raise ConfigError(f"sweep {text!r} has {len(sizes)} sizes, more than {MAX_SWEEP}: use a step of at least "
                          f"{fits} (--sweep {start}:{stop}:{fits})")
    return list(sizes)


def sweep(cfg: SwinConfig, sizes: Iterable[int]) -> list[dict[str, Any]]:
    """For square inputs of each size (a clip keeps the config's frames): attention cost of the whole model with
    global MSA vs windowed W-MSA."""
    rows = []
    for n in sizes:
        size = (*cfg.img_size[:-2], n, n)
        stages = complexity(cfg, size)
        msa = sum(r["msa_stage"] for r in stages)
        wmsa = sum(r["wmsa_stage"] for r in stages)
        rows.append({
            "size": n, "tokens": math.prod(stages[0]["resolution"]),
            "msa": msa, "wmsa": wmsa, "ratio": msa / wmsa,
            "padding": plan(cfg, size, "official").needs_padding,
            "stages": [{"stage": r["stage"], "msa": r["msa_stage"], "wmsa": r["wmsa_stage"], "ratio": r["ratio"]}
                       for r in stages],
        })
    return rows
