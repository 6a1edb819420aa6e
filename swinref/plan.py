"""The plan: everything every block does to an input of a given size, decided once from the config and a policy.

`plan(cfg, size, policy)` returns a ModelPlan: the patch embedding (padding or cropping to the patch), then per
stage and per block the window and shift on every spatial axis, the end padding and whether it comes before or
after the cyclic shift, whether a shift mask applies (built on the padded size) and its value, the norm placement,
the attention and position-bias kinds, the canonical parameter names, and the patch merging that follows.

The forward pass, the accelerated block, `swinref trace`, the FLOP counts and the memory forecast read this one
plan; below it nothing looks at the model version or the policy name.

Window policies are data (`POLICIES`). Each reproduces one peer for a checkpoint built at `cfg.img_size` and run at
another size (docs/peer-semantics.md has the table of rules, peers and verified sizes):

    official     the official classifier: windows and shifts fixed at the build size by its clamp rule
                 (min(stage grid) <= M: window = min(grid), no shift); sizes that need padding are refused
    timm         timm 1.0 with dynamic image sizes: per-axis clamp at the build size, kept at run time; the
                 unpadded map is rolled, then padded; the mask is built on the padded size
    torchvision  the window never shrinks; pad to the window, then roll; no shift on an axis whose padded size
                 the window covers
    hf           transformers SwinModel (V1): clamp at run time; it fails where that shrinks a window below its
                 bias table's, and swinref says so. Swinv2Model clamps per axis at build time and adds its shift
                 mask twice (-200)
    detection    the official detection / segmentation backbones, mmdet, mmseg, mmpretrain with
                 pad_small_map=True, transformers SwinBackbone: never clamp, always shift by half a window, pad

Pure Python (no NumPy): the analysis commands read the plan without importing an array library. The geometry is
written for any number of spatial axes; patch merging halves the last two.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Literal

from swinref.config import SwinConfig, parse_size
from swinref.errors import ConfigError, InputError

__all__ = [
    "Rule", "Policy", "POLICIES", "DEFAULT_POLICY", "BACKBONE_POLICY", "POLICY_ALIASES", "resolve_policy",
    "PatchEmbedPlan", "BlockPlan", "MergePlan", "StagePlan", "ModelPlan",
    "plan", "build_windows", "nearest_unpadded_sizes", "V2_LOGIT_SCALE_MAX", "MASK_VALUE",
]

# Swin V2 clamps its learned attention temperature at log(1/0.01) (official: torch.clamp(logit_scale, max=...)).
V2_LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
# Added to the logits of token pairs from different shift regions. Every peer uses -100, not -inf: exp(-100) is
# tiny but not zero, and matching it keeps float64 outputs within 1e-9 of theirs.
MASK_VALUE = -100.0

Size = tuple[int, ...]


# ---------------------------------------------------------------------------------------------------------------
# Policies as data.


@dataclass(frozen=True)
class Rule:
    """How one peer chooses windows, shifts and padding for one model version.

    windows_from  "build": decided on the stage grids of cfg.img_size and kept at any run size; "run": on the
                  grids of the actual input.
    clamp         "min": min(grid) <= M gives window min(grid) on every axis and no shift (official, HF V1);
                  "axis": per axis, grid <= M gives window = grid and no shift on that axis (timm);
                  "first-axis": the first axis's "axis" result used on every axis (transformers' Swinv2Layer
                  keeps window_size[0] and shift_size[0]); "never": window M everywhere.
    unshift_covered  "never" clamp only: no shift on an axis whose padded size the window covers (torchvision).
    roll_before_pad  True: roll the unpadded map, then pad (timm); False: pad, then roll (everyone else).
    patch_remainder  "pad" the image to a patch multiple, "crop" the remainder (a strided convolution: torchvision),
                     or "refuse" it (timm's dynamic-size patch embedding asserts divisibility).
    refuse_padding   refuse any size that needs padding anywhere (the official classifier).
    window_must_keep_table  the bias table stays at the configured window while the window shrinks at run time:
                     the peer fails there with a shape error, so swinref refuses with the cause (transformers V1).
    mask_value       added to cross-region logits; transformers' Swinv2SelfAttention adds its mask twice (-200).
    bias_index       "window": the relative position index of the window in use, on a table for that window;
                     "sliced": the table and index stay those of the configured window, and a clamped window of N
                     tokens reads the index's leading N x N block (torchvision swin3d and the official Video Swin
                     both do this; it is not the clamped window's geometry unless only the first axis shrinks).
    """

    windows_from: Literal["build", "run"]
    clamp: Literal["min", "axis", "first-axis", "never"]
    unshift_covered: bool = False
    roll_before_pad: bool = False
    patch_remainder: Literal["pad", "crop", "refuse"] = "pad"
    refuse_padding: bool = False
    window_must_keep_table: bool = False
    mask_value: float = MASK_VALUE
    bias_index: Literal["window", "sliced"] = "window"


@dataclass(frozen=True)
class Policy:
    """A named window policy: the peer it reproduces and its rule for Swin V1, V2 and Video Swin (None: the peer
    has no Video Swin)."""

    name: str
    peer: str
    v1: Rule
    v2: Rule
    video: Rule | None = None
    video_peer: str = ""

    def rule(self, cfg: SwinConfig) -> Rule:
        if cfg.is_video:
            if self.video is None:
                video = ", ".join(repr(p.name) for p in POLICIES.values() if p.video is not None)
                raise InputError(f"policy {self.name!r} ({self.peer}) has no Video Swin; use one of {video}")
            return self.video
        return self.v1 if cfg.version == 1 else self.v2


_OFFICIAL = Rule(windows_from="build", clamp="min", refuse_padding=True, patch_remainder="refuse")
_TIMM = Rule(windows_from="build", clamp="axis", roll_before_pad=True, patch_remainder="refuse")
_TORCHVISION = Rule(windows_from="run", clamp="never", unshift_covered=True, patch_remainder="crop")
_DETECTION = Rule(windows_from="run", clamp="never")
# Video Swin: torchvision swin3d, the official Video-Swin-Transformer and mmaction2 agree at every clip size.
_VIDEO = Rule(windows_from="run", clamp="axis", bias_index="sliced")
_VIDEO_PEERS = "torchvision swin3d_t/s/b, the official Video-Swin-Transformer and mmaction2 SwinTransformer3D"

POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("official", "the official Swin-Transformer classifier (microsoft/Swin-Transformer)", _OFFICIAL,
               _OFFICIAL, _VIDEO, _VIDEO_PEERS),
        Policy("timm", "timm 1.0 SwinTransformer / SwinTransformerV2 with dynamic_img_size=True", _TIMM, _TIMM),
        Policy("torchvision", "torchvision swin_t / swin_v2_t", _TORCHVISION, _TORCHVISION, _VIDEO, _VIDEO_PEERS),
        Policy("hf", "transformers SwinModel / Swinv2Model",
               Rule(windows_from="run", clamp="min", window_must_keep_table=True),
               Rule(windows_from="build", clamp="first-axis", mask_value=2 * MASK_VALUE)),
        Policy("detection", "official Swin detection/segmentation backbones, mmdet 3, mmseg 1, mmpretrain 1 "
               "(pad_small_map=True), transformers SwinBackbone", _DETECTION, _DETECTION, _VIDEO, _VIDEO_PEERS),
    )
}
# The default runs every input of at least one patch with a released checkpoint's own tables and equals torchvision
# at every size (at the build size of a released model it also equals the official classifier, timm and HF).
DEFAULT_POLICY = "torchvision"
# The policy of a dense-prediction backbone (swinref.load of a backbone checkpoint, `--backbone` analysis) when none
# is given: its peers (official detection / segmentation backbones, mmdet, mmseg) never clamp, always shift, pad.
BACKBONE_POLICY = "detection"
# The names of swinref's earlier padding policies: "pad" was transformers' run-time clamp with pad-then-roll,
# "strict" the official classifier's refusal.
POLICY_ALIASES = {"pad": "hf", "strict": "official"}


def resolve_policy(name: str | Policy | None) -> Policy:
    if isinstance(name, Policy):
        return name
    key = DEFAULT_POLICY if name is None else POLICY_ALIASES.get(str(name), str(name))
    policy = POLICIES.get(key)
    if policy is None:
        raise InputError(f"unknown window policy {name!r}; choose one of {', '.join(POLICIES)} "
                         f"(default {DEFAULT_POLICY}; `swinref trace --policy NAME` shows what each does)")
    return policy


# ---------------------------------------------------------------------------------------------------------------
# The plan's types. Sizes are per spatial axis: (H, W) for images, (T, H, W) for video.


@dataclass(frozen=True)
class PatchEmbedPlan:
    """Patch partition and linear embedding: image [B, Cin, *image] -> token grid [B, *grid, C]."""

    image: Size  # pixels given
    pad: Size  # zeros added at the end of each axis so the patch divides it
    crop: Size  # pixels dropped at the end of each axis (a strided convolution ignores the remainder)
    grid: Size  # tokens per axis
    patch: Size
    # The absolute position embedding added after the patch norm (cfg.ape, official detection backbone): its
    # canonical parameter name, stored as [1, C, *pos_embed_grid] (the grid of cfg.img_size) and resized
    # bicubically to `grid`; None when the model has none.
    pos_embed: str | None = None
    pos_embed_grid: Size | None = None


@dataclass(frozen=True)
class BlockPlan:
    """Everything one Swin block does."""

    name: str  # "layers.i.blocks.j": the prefix of its canonical parameters and of its trace points
    stage: int
    index: int
    dim: int  # C
    heads: int  # nH
    mlp_hidden: int
    resolution: Size  # token grid it works on (unpadded)
    window: Size  # per axis
    shift: Size  # per axis, 0 where this block does not shift
    pad: Size  # zeros added at the end of each axis for attention
    padded: Size
    roll_before_pad: bool  # True: roll the unpadded map, then pad; False: pad, then roll
    mask: bool  # a shift mask applies, built on `padded` with `window` and `shift`
    mask_value: float
    norm: Literal["pre", "res-post"]  # x + attn(norm1(x)) (V1) or x + norm1(attn(x)) (V2); likewise the MLP
    attention: Literal["scaled-dot", "cosine"]  # q k^T / sqrt(d), or cos(q, k) * exp(min(logit_scale, max))
    position_bias: Literal["table", "cpb-mlp"]  # learned table, or V2's continuous MLP squashed by 16 sigmoid
    pretrained_window: Size | None  # V2: the window the CPB coordinates are normalised by (None: the window)
    eps: float
    params: tuple[str, ...]  # canonical parameter names
    # The window the V1 bias table and its index are built for, and how a smaller window reads them ("window":
    # table_window == window; "sliced": the leading N x N block of table_window's index, see Rule.bias_index).
    table_window: Size = ()
    bias_index: Literal["window", "sliced"] = "window"

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def window_tokens(self) -> int:
        """N: tokens per window."""
        return math.prod(self.window)

    @property
    def windows(self) -> int:
        """nW: windows per sample on the padded grid."""
        return math.prod(p // w for p, w in zip(self.padded, self.window))

    @property
    def shifted(self) -> bool:
        return any(self.shift)

    @property
    def tokens(self) -> int:
        return math.prod(self.resolution)

    @property
    def padded_tokens(self) -> int:
        return math.prod(self.padded)


@dataclass(frozen=True)
class MergePlan:
    """Patch merging after a stage: 2x2 neighbours over the last two axes -> 4C, reduced to 2C."""

    name: str  # "layers.i.downsample"
    kind: Literal["norm-reduce", "reduce-norm"]  # V1 normalises 4C then reduces; V2 reduces, then normalises 2C
    pad: Size  # zeros added at the end of each axis to make the merged axes even
    resolution: Size  # grid after merging
    dim: int  # C in; 2C out
    eps: float
    params: tuple[str, ...]


@dataclass(frozen=True)
class StagePlan:
    """One stage: its blocks and the merge after it (None for the last)."""

    index: int
    dim: int
    heads: int
    resolution: Size
    configured_window: Size
    blocks: tuple[BlockPlan, ...]
    merge: MergePlan | None
    # The stage output's own LayerNorm in a backbone (official detection, OpenMMLab: norm{i}), applied to the
    # feature pyramid when the params hold it; the forward pass to logits never reads it.
    out_norm: tuple[str, ...] = ()

    # The fields every block of a stage shares, for the readers that summarise a stage.
    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def window(self) -> Size:
        return self.blocks[0].window

    @property
    def shift(self) -> Size:
        """The shift of the shifted blocks (zeros when none shifts)."""
        return next((b.shift for b in self.blocks if b.shifted), self.blocks[0].shift)

    @property
    def pad(self) -> Size:
        return self.blocks[0].pad

    @property
    def padded(self) -> Size:
        return self.blocks[0].padded

    @property
    def clamped(self) -> bool:
        return self.window != self.configured_window

    @property
    def head_dim(self) -> int:
        return self.blocks[0].head_dim

    @property
    def tokens(self) -> int:
        return self.blocks[0].tokens

    @property
    def padded_tokens(self) -> int:
        return self.blocks[0].padded_tokens

    @property
    def window_tokens(self) -> int:
        return self.blocks[0].window_tokens

    @property
    def windows(self) -> int:
        return self.blocks[0].windows

    @property
    def needs_padding(self) -> bool:
        return any(self.pad)

    @property
    def merge_pad(self) -> Size | None:
        return None if self.merge is None else self.merge.pad

    @property
    def pretrained_window(self) -> Size | None:
        return self.blocks[0].pretrained_window

    def block_shift(self, j: int) -> Size:
        return self.blocks[j].shift


@dataclass(frozen=True)
class ModelPlan:
    config: SwinConfig
    policy: Policy
    embed: PatchEmbedPlan
    stages: tuple[StagePlan, ...]
    head_params: tuple[str, ...]  # final norm and classifier
    # Why the policy's peer refuses or fails at this size (the forward pass raises it), or None. The plan is still
    # filled in, with the windows the peer would have used, so a trace can show what goes wrong.
    refusal: str | None = None

    @property
    def blocks(self) -> tuple[BlockPlan, ...]:
        return tuple(b for s in self.stages for b in s.blocks)

    @property
    def peer(self) -> str:
        """The implementation this plan reproduces."""
        return self.policy.video_peer if self.config.is_video else self.policy.peer

    @property
    def needs_padding(self) -> bool:
        return any(self.embed.pad) or any(
            s.needs_padding or (s.merge is not None and any(s.merge.pad)) for s in self.stages
        )


# ---------------------------------------------------------------------------------------------------------------
# Building the plan.


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def _halve_last_two(grid: Size) -> Size:
    return (*grid[:-2], *((n + 1) // 2 for n in grid[-2:]))


def _stage_grids(first: Size, stages: int) -> list[Size]:
    grids = [first]
    for _ in range(stages - 1):
        grids.append(_halve_last_two(grids[-1]))
    return grids


def _windows(rule: Rule, grid: Size, M: Size) -> tuple[Size, Size]:
    """(window, shift of the shifted blocks) on a stage grid, before the run-time "unshift_covered" adjustment."""
    half = tuple(m // 2 for m in M)
    if rule.clamp == "min":
        if min(grid) <= min(M):
            return (min(grid),) * len(grid), (0,) * len(grid)
        return M, half
    if rule.clamp in ("axis", "first-axis"):
        window = tuple(g if g <= m else m for g, m in zip(grid, M))
        shift = tuple(0 if g <= m else s for g, m, s in zip(grid, M, half))
        if rule.clamp == "first-axis":
            window, shift = (window[0],) * len(grid), (shift[0],) * len(grid)
        return window, shift
    return M, half


def _patch_refusal(cfg: SwinConfig, image: Size, rule: Rule, policy: Policy) -> str | None:
    rem = tuple(n % q for n, q in zip(image, cfg.patch))
    if not any(rem) or rule.patch_remainder != "refuse" or rule.refuse_padding:
        return None
    bad = ", ".join(f"{n}" for n, r in zip(image, rem) if r)
    return (f"{policy.peer} refuses this image: its side {bad} is not divisible by the patch size {cfg.patch_size} "
            f"(timm's dynamic-size patch embedding asserts it); use a size divisible by the patch size "
            f"{cfg.patch_size}, or the 'torchvision' or 'detection' policy, which crop or pad")


def _grid_from_image(cfg: SwinConfig, image: Size, rule: Rule) -> PatchEmbedPlan:
    patch = cfg.patch
    rem = tuple(n % p for n, p in zip(image, patch))
    # The official detection backbone stores the embedding at the pretraining grid img_size // patch.
    ape = dict(pos_embed="absolute_pos_embed", pos_embed_grid=tuple(n // q for n, q in zip(cfg.img_size, patch))) \
        if cfg.ape else {}
    if rule.patch_remainder == "crop":
        grid = tuple(n // p for n, p in zip(image, patch))
        return PatchEmbedPlan(image=image, pad=(0,) * len(image), crop=rem, grid=grid, patch=patch, **ape)
    pad = tuple(_ceil_to(n, p) - n for n, p in zip(image, patch))
    grid = tuple(-(-n // p) for n, p in zip(image, patch))
    return PatchEmbedPlan(image=image, pad=pad, crop=(0,) * len(image), grid=grid, patch=patch, **ape)


def _block_params(cfg: SwinConfig, name: str) -> tuple[str, ...]:
    attn = ((f"{name}.attn.relative_position_bias_table",) if cfg.version == 1 else
            (f"{name}.attn.logit_scale", f"{name}.attn.cpb_mlp.0.weight", f"{name}.attn.cpb_mlp.0.bias",
             f"{name}.attn.cpb_mlp.2.weight"))
    qkv_bias = () if not cfg.qkv_bias else (
        (f"{name}.attn.qkv.bias",) if cfg.version == 1 else (f"{name}.attn.q_bias", f"{name}.attn.v_bias"))
    return (f"{name}.norm1.weight", f"{name}.norm1.bias", *attn, f"{name}.attn.qkv.weight", *qkv_bias,
            f"{name}.attn.proj.weight", f"{name}.attn.proj.bias", f"{name}.norm2.weight", f"{name}.norm2.bias",
            f"{name}.mlp.fc1.weight", f"{name}.mlp.fc1.bias", f"{name}.mlp.fc2.weight", f"{name}.mlp.fc2.bias")


@functools.lru_cache(maxsize=512)
def plan(cfg: SwinConfig, image: tuple[int, ...] | int | str | None = None,
         policy: str | Policy | None = None) -> ModelPlan:
    """The plan of `cfg` for an input of spatial size `image` (default: the build size cfg.img_size) under a
    window policy (default DEFAULT_POLICY). Where the policy's peer refuses the size, `refusal` says why."""
    pol = resolve_policy(policy)
    rule = pol.rule(cfg)
    size = _as_size(cfg.img_size if image is None else image)
    n_axes = len(size)
    if n_axes != len(cfg.img_size):
        kind = "clips (T, H, W)" if cfg.is_video else "images (H, W)"
        raise InputError(f"{cfg.name} takes {kind} but the input size {_fmt(size)} has {n_axes} spatial axes; "
                         f"give {len(cfg.img_size)} sides (e.g. {_fmt(cfg.img_size)})")
    patch = cfg.patch
    if any(n < q for n, q in zip(size, patch)):
        raise InputError(f"input {_fmt(size)} is smaller than one {_fmt(patch)} patch; give an input of at least "
                         f"{_fmt(patch)}")
    refusal = _patch_refusal(cfg, size, rule, pol)
    embed = _grid_from_image(cfg, size, rule)
    M = cfg.window
    run_grids = _stage_grids(embed.grid, cfg.num_layers)
    if rule.windows_from == "build":
        build_grids = _build_grids(cfg)
        if len(build_grids[0]) != n_axes:
            raise InputError(f"the input has {n_axes} spatial axes but {cfg.name} was built for "
                             f"{len(build_grids[0])}")
    else:
        build_grids = run_grids
    version = cfg.version
    stages = []
    for i in range(cfg.num_layers):
        grid = run_grids[i]
        window, half = _windows(rule, build_grids[i], M)
        if rule.window_must_keep_table and window != M and refusal is None:
            refusal = (
                f"{pol.peer} fails at this size: stage {i} is {_fmt(grid)} tokens, not larger than its "
                f"{cfg.window_size}-token window, so transformers shrinks the window to {window[0]} at run time but "
                f"keeps the relative position bias for {cfg.window_size}x{cfg.window_size} windows and raises a "
                f"shape error; use the 'torchvision' policy (never shrinks the window) or 'detection'"
            )
        padded = tuple(_ceil_to(n, w) for n, w in zip(grid, window))
        if rule.unshift_covered:
            half = tuple(0 if w >= p else s for w, p, s in zip(window, padded, half))
        dim, heads = cfg.stage_dim(i), cfg.num_heads[i]
        pretrained = (cfg.pretrained_window_sizes[i],) * n_axes if version == 2 and cfg.pretrained_window_sizes[i] \
            else None
        blocks = []
        for j in range(cfg.depths[i]):
            shift = half if j % 2 == 1 else (0,) * n_axes
            name = f"layers.{i}.blocks.{j}"
            blocks.append(BlockPlan(
                name=name, stage=i, index=j, dim=dim, heads=heads, mlp_hidden=int(dim * cfg.mlp_ratio),
                resolution=grid, window=window, shift=shift,
                pad=tuple(p - n for p, n in zip(padded, grid)), padded=padded,
                roll_before_pad=rule.roll_before_pad, mask=any(shift), mask_value=rule.mask_value,
                norm="pre" if version == 1 else "res-post",
                attention="scaled-dot" if version == 1 else "cosine",
                position_bias="table" if version == 1 else "cpb-mlp",
                pretrained_window=pretrained, eps=cfg.layer_norm_eps, params=_block_params(cfg, name),
                table_window=M if rule.bias_index == "sliced" else window, bias_index=rule.bias_index,
            ))
        merge = None
        if i < cfg.num_layers - 1:
            name = f"layers.{i}.downsample"
            merge = MergePlan(
                name=name, kind="norm-reduce" if version == 1 else "reduce-norm",
                pad=(*(0,) * (n_axes - 2), *(n % 2 for n in grid[-2:])), resolution=run_grids[i + 1], dim=dim,
                eps=cfg.layer_norm_eps,
                params=(f"{name}.reduction.weight", f"{name}.norm.weight", f"{name}.norm.bias"),
            )
        stages.append(StagePlan(index=i, dim=dim, heads=heads, resolution=grid, configured_window=M,
                                blocks=tuple(blocks), merge=merge, out_norm=(f"norm{i}.weight", f"norm{i}.bias")))
    head = ("norm.weight", "norm.bias") + (("head.weight", "head.bias") if cfg.num_classes else ())
    mp = ModelPlan(config=cfg, policy=pol, embed=embed, stages=tuple(stages), head_params=head, refusal=refusal)
    if rule.refuse_padding and mp.needs_padding:
        near = ", ".join(_fmt(s) for s in nearest_unpadded_sizes(cfg, size))
        mp = dataclasses.replace(mp, refusal=(
            f"image {_fmt(size)} needs padding to fit the windows and the patch merges, which {pol.peer} refuses "
            f"(policy 'official'); nearest sizes that need none: {near or 'none found'}; or use the default policy "
            f"'{DEFAULT_POLICY}', or 'detection'"))
    return mp


def _build_grids(cfg: SwinConfig) -> list[Size]:
    """The stage grids at the build size cfg.img_size."""
    return _stage_grids(tuple(-(-n // q) for n, q in zip(_as_size(cfg.img_size), cfg.patch)), cfg.num_layers)


def build_windows(cfg: SwinConfig) -> tuple[Size, ...]:
    """Per stage, the window the official model builds its relative position bias table for: the official clamp at
    the build size (Video Swin never clamps at build time). A checkpoint's V1 tables have these windows."""
    if cfg.is_video:
        return (cfg.window,) * cfg.num_layers
    grids = _build_grids(cfg)
    return tuple(_windows(_OFFICIAL, g, cfg.window)[0] for g in grids)


def _fmt(size: Size) -> str:
    return "x".join(map(str, size))


def _as_size(image: tuple[int, ...] | int | str) -> Size:
    if isinstance(image, str):
        return parse_size(image)
    if isinstance(image, int):
        return (image, image)
    try:
        size = tuple(int(n) for n in image)
    except (TypeError, ValueError):
        raise ConfigError(f"an input size is an int or a tuple of ints per spatial axis, got {image!r}") from None
    if len(size) < 1 or any(n < 1 for n in size):
        raise ConfigError(f"an input size needs positive sides, got {image!r}")
    return size


def _unpadded_side(cfg: SwinConfig, windows: tuple[Size, ...], n: int, axis: int, n_axes: int) -> bool:
    """Whether a side of n pixels on `axis` needs no padding anywhere with the build-size windows: a whole number of
    patches, every stage grid a multiple of its window, and even before every merge (merges halve the last two
    axes). Each axis is independent, since the windows do not depend on the run size."""
    patch = cfg.patch[axis]
    if n % patch:
        return False
    grid = n // patch
    for i, window in enumerate(windows):
        if grid % window[axis]:
            return False
        if i < len(windows) - 1 and axis >= n_axes - 2:
            if grid % 2:
                return False
            grid //= 2
    return True


def nearest_unpadded_sizes(cfg: SwinConfig, image: Size, count: int = 2) -> list[Size]:
    """The closest sizes (per axis, below and above) at which the official classifier's build-size windows need no
    padding anywhere: used in its refusal."""
    windows = build_windows(cfg)
    n_axes = len(image)
    step_limit = 64 * max(cfg.patch) * max(cfg.window)
    options = []
    for axis, n in enumerate(image):
        below = next((k for k in range(n, 0, -1) if _unpadded_side(cfg, windows, k, axis, n_axes)), None)
        above = next((k for k in range(n, n + step_limit + 1) if _unpadded_side(cfg, windows, k, axis, n_axes)),
                     None)
        options.append([k for k in dict.fromkeys((below, above)) if k is not None])
    return list(itertools.product(*options))[: max(count, 1) * 2]
