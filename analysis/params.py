"""Exact parameter counts per component, from swinref.layout.param_shapes (the official layout's names and shapes).

Buffers (relative_position_index, attn_mask, V2's relative_coords_table) are derived data, not parameters, and
are not counted: the same convention as `sum(p.numel() for p in model.parameters())` in timm and torchvision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from swinref.config import SwinConfig
from swinref.layout import out_norm_shapes, param_shapes

__all__ = ["ParamReport", "count_params", "component_of"]


def component_of(name: str) -> tuple[Any, str]:
    """(stage or 'embed'/'tail', component) of a parameter name: e.g. layers.2.blocks.0.attn.qkv.weight ->
    (2, 'attention')."""
    parts = name.split(".")
    if parts[0] in ("patch_embed", "absolute_pos_embed"):
        return "embed", "patch_embed"
    if parts[0].startswith("norm") and parts[0][4:].isdigit():
        return int(parts[0][4:]), "out_norm"  # a backbone's per-stage output norm
    if parts[0] == "layers":
        stage = int(parts[1])
        if parts[2] == "downsample":
            return stage, "downsample"
        sub = parts[4]
        if sub == "attn":
            tail = ".".join(parts[5:])
            if tail.startswith(("relative_position_bias_table", "cpb_mlp", "logit_scale")):
                return stage, "position_bias"
            return stage, "attention"
        if sub == "mlp":
            return stage, "mlp"
        return stage, "norms"  # norm1, norm2
    if parts[0] == "norm":
        return "tail", "norm"
    return "tail", "head"


@dataclass(frozen=True)
class ParamReport:
    config: SwinConfig
    shapes: dict[str, tuple[int, ...]]

    @property
    def total(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def by_component(self) -> list[dict[str, Any]]:
        """One row per (stage, component), in model order."""
        rows: dict[tuple, dict[str, Any]] = {}
        for name, shape in self.shapes.items():
            stage, comp = component_of(name)
            row = rows.setdefault((stage, comp), {"stage": stage, "component": comp, "params": 0, "tensors": 0})
            row["params"] += math.prod(shape)
            row["tensors"] += 1
        return list(rows.values())

    def stages(self) -> list[dict[str, Any]]:
        rows: dict[Any, dict[str, Any]] = {}
        for r in self.by_component():
            row = rows.setdefault(r["stage"], {"stage": r["stage"], "params": 0, "components": {}})
            row["params"] += r["params"]
            row["components"][r["component"]] = r["params"]
        return list(rows.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.name,
            "params": self.total,
            "stages": self.stages(),
            "components": self.by_component(),
            "tensors": {k: list(v) for k, v in self.shapes.items()},
        }


def count_params(cfg: SwinConfig, *, backbone: bool = False) -> ParamReport:
    """The parameters of `cfg`; `backbone=True`: of its dense-prediction backbone, which has a LayerNorm after every
    stage (norm0..norm{L-1}) and no final norm or head."""
    shapes = dict(param_shapes(cfg))
    if backbone:
        shapes = {k: v for k, v in shapes.items() if not k.startswith(("norm.", "head."))}
        shapes.update(out_norm_shapes(cfg))
    return ParamReport(cfg, shapes)
