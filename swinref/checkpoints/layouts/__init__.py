"""One module per checkpoint layout, each translating its names to swinref's canonical (official) names and back.

    from swinref.checkpoints.layouts import timm
    sd = timm.from_canonical(params, cfg)          # timm's own state dict, NumPy arrays
    params, notes = timm.to_canonical(sd)          # and back

Every module has NAME, SIGNATURE (what recognises it, for messages), recognise, to_canonical, from_canonical and
config_hints (see base.py). LAYOUTS holds them in detection order; `detect` names the first that recognises a
state dict. Containers (torch pickles, safetensors, npz, Hugging Face directories) are read elsewhere
(swinref.checkpoints.pth / files); a layout only sees names and arrays.
"""

from __future__ import annotations

from types import ModuleType
from typing import Collection

from swinref.checkpoints.layouts import (
    mmaction, official, openmmlab, swinref, timm, torchvision, torchvision3d, transformers,
)
from swinref.checkpoints.layouts.base import DERIVED_BUFFERS, Notes
from swinref.errors import CheckpointError

__all__ = ["LAYOUTS", "detect", "get", "Notes", "DERIVED_BUFFERS", "official", "timm", "transformers", "torchvision",
           "openmmlab", "swinref", "torchvision3d", "mmaction"]

# Detection order: the more specific names first (timm's, official and the Video Swin layouts share
# patch_embed.proj; swinref's files are told by their stored configuration, never by names).
LAYOUTS: dict[str, ModuleType] = {m.NAME: m for m in (torchvision3d, mmaction, torchvision, transformers, openmmlab,
                                                      timm, official, swinref)}


def get(name: str) -> ModuleType:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise CheckpointError(f"unknown layout {name!r}; expected one of {', '.join(LAYOUTS)}") from None


def detect(keys: Collection[str], source: str = "the checkpoint") -> ModuleType:
    """The layout a state dict's names follow; CheckpointError naming what was seen when none does."""
    keys = set(keys)
    for layout in LAYOUTS.values():
        if layout.recognise(keys):
            return layout
    sample = sorted(keys)[:6]
    known = "; ".join(f"{m.NAME} ({m.SIGNATURE})" for m in LAYOUTS.values() if m is not swinref)
    raise CheckpointError(
        f"cannot tell which Swin checkpoint layout {source} uses: its names start {sample}; swinref reads {known}"
    )
