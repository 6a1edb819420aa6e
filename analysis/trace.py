"""The analytic shape trace: every step a tensor takes through a Swin model, computed from the config alone.

Like stax's `init_fun(rng, input_shape) -> output_shape`, nothing is computed on arrays: the shapes follow from
`swinref.config.plan`, which holds the stage grids, the clamp rule and the padding (read there, never recomputed).

Steps whose `runtime` flag is set carry the names the forward pass records (`patch_embed`, `layers.{i}.blocks.{j}`,
`layers.{i}.downsample`, `norm`, `pooled`, `logits`), so a test can compare this trace with the shapes a real
forward pass produces. The other steps (input, partition, window views, the 4C concat) explain how one gets there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from swinref.config import SwinConfig, parse_size, plan
from swinref.errors import ConfigError

__all__ = ["Step", "trace", "as_size"]


@dataclass(frozen=True)
class Step:
    """One row of the trace: the tensor's shape after `name`.

    `stage` is the stage index (None outside the stages); block rows also say which attention they run (`kind`
    W-MSA or SW-MSA), the effective window M, the shift s, the windows per image nW, the tokens per window N and
    the zero padding (bottom, right) added before partitioning. `tokens` is the real tokens per image at this step.
    """

    name: str
    shape: tuple[int, ...]
    op: str  # what the step does, in words a reader of the paper knows
    runtime: bool = False  # the forward pass records a tensor under this name
    stage: int | None = None
    block: int | None = None
    kind: str | None = None  # "W-MSA" or "SW-MSA"
    window: int | None = None  # effective M
    shift: int | None = None
    windows: int | None = None  # nW per image, on the padded grid
    window_tokens: int | None = None  # N = M*M
    pad: tuple[int, int] | None = None  # (bottom, right) zeros added at this step
    tokens: int | None = None  # real tokens per image

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        if self.pad is not None:
            d["pad"] = list(self.pad)
        return {k: v for k, v in d.items() if v is not None}


def trace(cfg: SwinConfig, image: tuple[int, int] | int | str | None = None, batch: int = 1) -> list[Step]:
    """The shape of the tensor after every step of `cfg` on a batch of `batch` images of size `image` (H, W).

    >>> [s.shape for s in trace(get_config("T")) if s.name == "norm"]
    [(1, 7, 7, 768)]
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}; use e.g. --batch 1")
    mp = plan(cfg, as_size(image))
    B, p, e = batch, cfg.patch_size, mp.embed
    H, W = e.image
    h, w = e.grid
    C = cfg.embed_dim
    steps = [Step("input", (B, cfg.in_chans, H, W), "image, channels first as the peers take it", tokens=None)]
    if e.pad != (0, 0):
        steps.append(Step("patch_embed.pad", (B, cfg.in_chans, H + e.pad[0], W + e.pad[1]),
                          f"zero-pad bottom/right to a multiple of the patch {p}", pad=e.pad))
    steps.append(Step("patch_partition", (B, h, w, p * p * cfg.in_chans),
                      f"split into {p}x{p} patches, each a {p * p * cfg.in_chans}-vector", tokens=h * w))
    steps.append(Step("linear_embedding", (B, h, w, C), f"linear map to C={C} (a {p}x{p} stride-{p} convolution)",
                      tokens=h * w))
    steps.append(Step("patch_embed", (B, h, w, C),
                      "after the patch LayerNorm" if cfg.patch_norm else "no patch norm (patch_norm=False)",
                      runtime=True, tokens=h * w))
    for s in mp.stages:
        i, (h, w), C, M = s.index, s.resolution, s.dim, s.window
        for j in range(s.depth):
            shift = s.block_shift(j)
            kind = "SW-MSA" if shift else "W-MSA"
            prefix = f"layers.{i}.blocks.{j}"
            if j == 0 or (j == 1 and s.shift):
                # The window view once per distinct (shift) geometry of the stage; later blocks repeat it.
                steps.append(Step(
                    f"{prefix}.attn.windows", (B * s.windows, s.window_tokens, C),
                    f"pad {s.pad[0]},{s.pad[1]}, " * s.needs_padding + ("roll by -s, " if shift else "")
                    + f"partition into {s.windows} windows of {M}x{M} per image", stage=i, block=j, kind=kind,
                    window=M, shift=shift, windows=s.windows, window_tokens=s.window_tokens, pad=s.pad,
                    tokens=s.tokens,
                ))
            clamp = f" (window clamped from {s.configured_window})" if s.clamped and M != s.configured_window else ""
            steps.append(Step(
                prefix, (B, h, w, C), f"{kind} M={M}{clamp}, shift {shift}, then MLP", runtime=True, stage=i, block=j,
                kind=kind, window=M, shift=shift, windows=s.windows, window_tokens=s.window_tokens, pad=s.pad,
                tokens=s.tokens,
            ))
        if s.merge_pad is not None:
            h2, w2 = s.merged_resolution
            pad_note = f"pad {s.merge_pad[0]},{s.merge_pad[1]} to even, " if s.merge_pad != (0, 0) else ""
            norm_first = cfg.version == 1
            steps.append(Step(f"layers.{i}.downsample.concat", (B, h2, w2, 4 * C),
                              pad_note + "concat the 2x2 neighbours (0,0),(1,0),(0,1),(1,1)"
                              + (", LayerNorm(4C)" if norm_first else ""),
                              stage=i, pad=s.merge_pad, tokens=h2 * w2))
            steps.append(Step(f"layers.{i}.downsample", (B, h2, w2, 2 * C),
                              "linear 4C -> 2C, no bias" + ("" if norm_first else ", then LayerNorm(2C) (V2)"),
                              runtime=True, stage=i, tokens=h2 * w2))
    last = mp.stages[-1]
    CL = cfg.num_features
    steps.append(Step("norm", (B, *last.resolution, CL), "final LayerNorm", runtime=True, tokens=last.tokens))
    steps.append(Step("pooled", (B, CL), "mean over the tokens", runtime=True))
    if cfg.num_classes > 0:
        steps.append(Step("logits", (B, cfg.num_classes), f"linear head {CL} -> {cfg.num_classes}", runtime=True))
    return steps


def as_size(image: tuple[int, int] | int | str | None) -> tuple[int, int] | None:
    """Accept 224, '800x1333' or (H, W); plan() is cached, so hand it a hashable pair."""
    if image is None:
        return None
    if isinstance(image, str):
        return parse_size(image)
    if isinstance(image, int):
        return (image, image)
    try:
        h, w = image
        return (int(h), int(w))
    except (TypeError, ValueError):
        raise ConfigError(f"image size must be an int, 'HxW' or a pair (H, W), got {image!r}") from None
