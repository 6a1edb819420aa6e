"""The analytic shape trace: every step a tensor takes through a Swin model, computed from the config alone.

Like stax's `init_fun(rng, input_shape) -> output_shape`, nothing is computed on arrays: the shapes follow from
`swinref.plan.plan`, which holds the stage grids, the clamp rule and the padding (read there, never recomputed).

Steps whose `runtime` flag is set carry the names the forward pass records (`patch_embed`, `layers.{i}.blocks.{j}`,
`layers.{i}.downsample`, `norm`, `pooled`, `logits`), so a test can compare this trace with the shapes a real
forward pass produces. The other steps (input, partition, window views, the 4C concat) explain how one gets there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from swinref.config import SwinConfig
from swinref.config import as_size as config_size
from swinref.plan import BACKBONE_POLICY, plan
from swinref.errors import ConfigError

__all__ = ["Step", "trace", "as_size", "analysis_policy"]


@dataclass(frozen=True)
class Step:
    """One row of the trace: the tensor's shape after `name`.

    `stage` is the stage index (None outside the stages); block rows also say which attention they run (`kind`
    W-MSA or SW-MSA), the window and the shift per axis, the windows per image nW, the tokens per window N, the
    zero padding per axis added at the end before partitioning and whether it comes before or after the cyclic
    shift (`order`). `tokens` is the real tokens per image at this step.
    """

    name: str
    shape: tuple[int, ...]
    op: str  # what the step does, in words a reader of the paper knows
    runtime: bool = False  # the forward pass records a tensor under this name
    stage: int | None = None
    block: int | None = None
    kind: str | None = None  # "W-MSA" or "SW-MSA"
    window: tuple[int, ...] | None = None  # per axis
    shift: tuple[int, ...] | None = None  # per axis
    windows: int | None = None  # nW per image, on the padded grid
    window_tokens: int | None = None  # N
    pad: tuple[int, ...] | None = None  # zeros added at the end of each axis at this step
    order: str | None = None  # "pad, roll" or "roll, pad" (when both happen)
    tokens: int | None = None  # real tokens per image

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("shape", "pad", "window", "shift"):
            if d.get(key) is not None:
                d[key] = list(d[key])
        return {k: v for k, v in d.items() if v is not None}


def _x(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


def trace(cfg: SwinConfig, image: tuple[int, int] | int | str | None = None, batch: int = 1,
          policy: str | None = None, *, backbone: bool = False) -> list[Step]:
    """The shape of the tensor after every step of `cfg` on a batch of `batch` images of size `image` (H, W),
    under a window policy (swinref.plan.POLICIES; default the plan's default, 'detection' in backbone mode).

    `backbone=True`: the dense-prediction backbone (official detection, mmdet, mmseg): after every stage its output
    norm norm{i} and the pyramid output outs.{i} (channels first); no final norm, pooling or head.

    >>> [s.shape for s in trace(get_config("T")) if s.name == "norm"]
    [(1, 7, 7, 768)]
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}; use e.g. --batch 1")
    mp = plan(cfg, as_size(image, cfg), analysis_policy(policy, backbone))
    B, e = batch, mp.embed
    p = _x(e.patch)
    patch_len = cfg.in_chans * math.prod(e.patch)
    C = cfg.embed_dim
    tokens = math.prod(e.grid)
    what = "clip [B, Cin, T, H, W]" if cfg.is_video else "image"
    steps = [Step("input", (B, cfg.in_chans, *e.image), f"{what}, channels first as the peers take it")]
    if any(e.pad):
        steps.append(Step("patch_embed.pad", (B, cfg.in_chans, *(n + q for n, q in zip(e.image, e.pad))),
                          f"zero-pad the end of each axis to a multiple of the patch {p}", pad=e.pad))
    if any(e.crop):
        steps.append(Step("patch_embed.crop", (B, cfg.in_chans, *(n - q for n, q in zip(e.image, e.crop))),
                          f"drop the last {_x(e.crop)} pixels, which no {p}-pixel patch covers (strided convolution)",
                          pad=tuple(-q for q in e.crop)))
    steps.append(Step("patch_partition", (B, *e.grid, patch_len),
                      f"split into {_x(e.patch)} patches, each a {patch_len}-vector", tokens=tokens))
    steps.append(Step("linear_embedding", (B, *e.grid, C),
                      f"linear map to C={C} (a {_x(e.patch)} stride-{p} convolution)", tokens=tokens))
    words = "after the patch LayerNorm" if cfg.patch_norm else "no patch norm (patch_norm=False)"
    if e.pos_embed is not None:
        resized = "as stored" if e.pos_embed_grid == e.grid else f"resized bicubically from {_x(e.pos_embed_grid)}"
        words += f", plus the absolute position embedding ({resized})"
    steps.append(Step("patch_embed", (B, *e.grid, C), words, runtime=True, tokens=tokens))
    seen: set[tuple] = set()
    for s in mp.stages:
        for blk in s.blocks:
            kind = "SW-MSA" if blk.shifted else "W-MSA"
            geometry = (blk.window, blk.shift, blk.pad)
            order = None
            if blk.shifted and any(blk.pad):
                order = "roll, pad" if blk.roll_before_pad else "pad, roll"
            if geometry not in seen:
                # The window view once per distinct geometry of the stage; later blocks repeat it.
                seen.add(geometry)
                steps_done = [f"pad {_x(blk.pad)}" if any(blk.pad) else "", f"roll by -{_x(blk.shift)}"
                              if blk.shifted else ""]
                if blk.roll_before_pad:
                    steps_done.reverse()
                words = ", ".join(w for w in steps_done if w)
                steps.append(Step(
                    f"{blk.name}.attn.windows", (B * blk.windows, blk.window_tokens, blk.dim),
                    (words + ", " if words else "") + f"partition into {blk.windows} windows of {_x(blk.window)} "
                    f"per image" + (f", shift mask on {_x(blk.padded)}" if blk.mask else ""),
                    stage=s.index, block=blk.index, kind=kind, window=blk.window, shift=blk.shift,
                    windows=blk.windows, window_tokens=blk.window_tokens, pad=blk.pad, order=order,
                    tokens=blk.tokens,
                ))
            clamp = f" (window clamped from {_x(s.configured_window)})" if s.clamped else ""
            norm = "pre-norm" if blk.norm == "pre" else "res-post-norm"
            steps.append(Step(
                blk.name, (B, *blk.resolution, blk.dim),
                f"{kind} {_x(blk.window)}{clamp}, shift {_x(blk.shift)}, {blk.attention} attention, "
                f"{blk.position_bias} bias, {norm}, then MLP", runtime=True, stage=s.index, block=blk.index,
                kind=kind, window=blk.window, shift=blk.shift, windows=blk.windows, window_tokens=blk.window_tokens,
                pad=blk.pad, order=order, tokens=blk.tokens,
            ))
        if backbone:
            steps.append(Step(f"norm{s.index}", (B, *s.resolution, s.dim), f"stage {s.index} output LayerNorm",
                              stage=s.index, tokens=s.tokens))
            steps.append(Step(f"outs.{s.index}", (B, s.dim, *s.resolution),
                              "pyramid output, channels first as the detection backbones return it", runtime=True,
                              stage=s.index, tokens=s.tokens))
        m = s.merge
        if m is not None:
            dim, merged = m.dim, math.prod(m.resolution)
            pad_note = f"pad {_x(m.pad)} to even, " if any(m.pad) else ""
            norm_first = m.kind == "norm-reduce"
            steps.append(Step(f"{m.name}.concat", (B, *m.resolution, 4 * dim),
                              pad_note + "concat the 2x2 neighbours (0,0),(1,0),(0,1),(1,1)"
                              + (", LayerNorm(4C)" if norm_first else ""),
                              stage=s.index, pad=m.pad, tokens=merged))
            steps.append(Step(m.name, (B, *m.resolution, 2 * dim),
                              "linear 4C -> 2C, no bias" + ("" if norm_first else ", then LayerNorm(2C) (V2)"),
                              runtime=True, stage=s.index, tokens=merged))
    if backbone:
        return steps
    last = mp.stages[-1]
    CL = cfg.num_features
    steps.append(Step("norm", (B, *last.resolution, CL), "final LayerNorm", runtime=True, tokens=last.tokens))
    steps.append(Step("pooled", (B, CL), "mean over the tokens", runtime=True))
    if cfg.num_classes > 0:
        steps.append(Step("logits", (B, cfg.num_classes), f"linear head {CL} -> {cfg.num_classes}", runtime=True))
    return steps


def analysis_policy(policy: str | None, backbone: bool) -> str | None:
    """The window policy to analyse under: the caller's, else 'detection' for a backbone (its peers' policy), else
    None (the plan's default)."""
    return BACKBONE_POLICY if policy is None and backbone else policy


def as_size(image: tuple[int, ...] | int | str | None, cfg: SwinConfig | None = None) -> tuple[int, ...] | None:
    """Accept 224, '800x1333', '32x224x224' or a tuple; plan() is cached, so hand it a hashable tuple. For a video
    config an image size (H, W) keeps the config's frame count T."""
    if image is None:
        return None
    size = config_size(image, "size")
    if cfg is not None and cfg.is_video and len(size) == 2:
        size = (cfg.img_size[0], *size)
    return size
