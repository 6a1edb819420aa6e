"""A torchinfo-style summary: one row per layer the forward pass records (patch embedding, every block, every patch
merging, the pyramid outputs or the final norm, pooling and head) with its output shape, its parameters and its
multiply-adds. Built from the shape trace, the parameter shapes and the FLOP items: the config alone, no arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from swinref.config import SwinConfig

__all__ = ["Summary", "summary", "layer_of"]

_BLOCK = re.compile(r"^(layers\.\d+\.(?:blocks\.\d+|downsample))(?:\.|$)")
_STAGE_NORM = re.compile(r"^norm(\d+)(?:\.|$)")


def layer_of(name: str) -> str:
    """The summary row a parameter or a counted term belongs to: layers.2.blocks.0.attn.qkv.weight ->
    layers.2.blocks.0, head.weight -> logits, norm1.weight -> outs.1, absolute_pos_embed -> patch_embed."""
    m = _BLOCK.match(name)
    if m:
        return m.group(1)
    m = _STAGE_NORM.match(name)
    if m:
        return f"outs.{m.group(1)}"
    root = name.split(".")[0]
    return {"head": "logits", "absolute_pos_embed": "patch_embed", "avgpool": "pooled"}.get(root, root)


_KINDS = {"patch_embed": "PatchEmbed", "norm": "LayerNorm", "pooled": "mean", "logits": "Linear"}


@dataclass(frozen=True)
class Summary:
    config: SwinConfig
    image: tuple[int, ...]
    batch: int
    policy: str
    rows: tuple[dict[str, Any], ...]  # layer, kind, shape, params, macs
    params: int
    macs: int
    peak_bytes: int  # swinref.analysis.memory's forecast, weights included (float32)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.name, "image": list(self.image), "batch": self.batch, "policy": self.policy,
                "layers": [dict(r) for r in self.rows], "params": self.params, "macs": self.macs,
                "peak_bytes_float32": self.peak_bytes}


def summary(cfg: SwinConfig, image: tuple[int, int] | int | str | None = None, *, batch: int = 1,
            policy: str | None = None, backbone: bool = False) -> Summary:
    """One row per recorded layer of `cfg` on `batch` images of size `image` under a window policy."""
    from .flops import count_flops
    from .memory import memory
    from .params import count_params
    from .trace import analysis_policy, trace

    from swinref.plan import DEFAULT_POLICY

    policy = analysis_policy(policy, backbone) or DEFAULT_POLICY  # one policy for all three: the rows agree
    steps = [s for s in trace(cfg, image, batch, policy, backbone=backbone) if s.runtime]
    params: dict[str, int] = {}
    for name, shape in count_params(cfg, backbone=backbone).shapes.items():
        n = 1
        for side in shape:
            n *= side
        params[layer_of(name)] = params.get(layer_of(name), 0) + n
    flops = count_flops(cfg, image, batch=batch, policy=policy, backbone=backbone)
    macs: dict[str, int] = {}
    for item in flops.items:
        macs[layer_of(item.name)] = macs.get(layer_of(item.name), 0) + int(item.macs) * batch
    rows = []
    for s in steps:
        kind = s.kind or ("PatchMerging" if s.name.endswith("downsample") else
                          "LayerNorm" if s.name.startswith("outs.") else _KINDS.get(s.name, ""))
        rows.append({"layer": s.name, "kind": kind, "shape": list(s.shape), "params": params.get(s.name, 0),
                     "macs": macs.get(s.name, 0)})
    report = memory(cfg, image, batch=batch, policy=policy, backbone=backbone)
    return Summary(cfg, tuple(report.image), batch, flops.policy, tuple(rows), sum(params.values()),
                   int(flops.macs), report.peak_bytes)
