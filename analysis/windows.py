"""Token and window counts per stage, from the plan alone (no arrays): what `swinref show counts` draws.

The cost of global against windowed attention over input sizes is analysis.flops.sweep (the numbers
`swinref flops --sweep` prints); `swinref show complexity` draws those.
"""

from __future__ import annotations

from typing import Any

from swinref.config import SwinConfig
from swinref.plan import plan

__all__ = ["stage_counts", "PICTURES"]

# What `swinref show` draws (swinref.show.KINDS), named here so the CLI's parser lists them without NumPy.
PICTURES = ("windows", "mask", "counts", "complexity", "reach", "reach-models", "attention", "rollout")


def stage_counts(cfg: SwinConfig, image: Any = None, policy: str | None = None) -> list[dict[str, Any]]:
    """Per stage: the token grid, its padded size, window and shift per axis, real and padded tokens, windows nW
    and tokens per window N."""
    mp = plan(cfg, image, policy)
    return [{"stage": s.index, "resolution": list(s.resolution), "padded": list(s.padded), "window": list(s.window),
             "shift": list(s.shift), "depth": s.depth, "tokens": s.tokens, "padded_tokens": s.padded_tokens,
             "windows": s.windows, "window_tokens": s.window_tokens} for s in mp.stages]
