"""Reach without gradients: exactly which input patches can influence each token, block by block.

A Swin token mixes with other tokens only in window attention (within its window and, in a shifted block, within
its shift region) and in patch merging (2x2 neighbours); norms, MLPs, residuals and the position bias act per
token, and padding is zeros that carry nothing from the input. Each of these links is a product over the spatial
axes: two tokens share a window when they share it on every axis, a region when they share a band on every axis
(`swinref.geometry.shift_region_labels` numbers the regions by their per-axis bands), and a merge pairs
coordinates 2c, 2c+1 on each merged axis. So the reach of a token is the Cartesian product of one set per axis,
and composing products is composing each axis: the whole computation is per axis, exact, and cheap at any size
(800x1333 included).

Per axis, a set of stage-0 positions (patches) is a Python int used as a bit set (bit i: patch i on that axis).
The reach of token (c1, ..., ck) after a block is the product of `axis_reach[k][ck]` over the axes.

What "can influence" means here: a link the plan makes structurally. Pairs of different shift regions are not
cut to zero by the peers: they get MASK_VALUE (-100) added to the logit, a relative weight of about e^-100 that is
far below the rounding of float32 and float64 outputs of order one, so the forward pass cannot see them (the
tests check this bit for bit); they are counted as cut.

Pure Python over the plan (swinref.plan), no arrays: analysis must not import NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swinref.config import SwinConfig
from swinref.errors import InputError
from swinref.plan import BlockPlan, ModelPlan, plan

__all__ = ["AxisGroups", "axis_groups", "BlockReach", "Reach", "reach", "token_reach", "reach_table", "first_full_block"]

Size = tuple[int, ...]


@dataclass(frozen=True)
class AxisGroups:
    """One axis of one block: the attention group (window, region band) of each real position, in the unshifted,
    unpadded coordinates of the block's token map. Two tokens attend to each other iff their groups agree on every
    axis."""

    groups: tuple[tuple[int, int], ...]  # per real position: (window index on this axis, band on this axis)


def _source_positions(n: int, padded: int, shift: int, roll_before_pad: bool) -> list[int]:
    """Per position of the padded, rolled axis: the real position it holds, or -1 for padding.

    The same rule as swinref.geometry.window_token_index, in pure Python (the tests compare the two).
    """
    if roll_before_pad:
        return [(i + shift) % n if i < n else -1 for i in range(padded)]
    return [(i + shift) % padded if (i + shift) % padded < n else -1 for i in range(padded)]


def _bands(padded: int, window: int, shift: int) -> list[int]:
    """Per position of the padded, rolled axis: its band among the peers' slices (0, -w), (-w, -s), (-s, None),
    later slices overwriting earlier ones (as swinref.geometry.shift_region_labels assigns them)."""
    bands = [0] * padded
    for band, (start, stop) in enumerate(((0, -window), (-window, -shift), (-shift, None))):
        for i in range(padded)[start:stop]:
            bands[i] = band
    return bands


def axis_groups(blk: BlockPlan, axis: int) -> AxisGroups:
    n, p, w, s = blk.resolution[axis], blk.padded[axis], blk.window[axis], blk.shift[axis]
    sources = _source_positions(n, p, s, blk.roll_before_pad)
    bands = _bands(p, w, s) if blk.mask else [0] * p
    groups: list[tuple[int, int]] = [(0, 0)] * n
    for i, src in enumerate(sources):
        if src >= 0:
            groups[src] = (i // w, bands[i])
    return AxisGroups(tuple(groups))


def _attend(sets: list[int], groups: AxisGroups) -> list[int]:
    """Per position: the union of the sets of every position in its group (itself included)."""
    union: dict[tuple[int, int], int] = {}
    for bits, g in zip(sets, groups.groups):
        union[g] = union.get(g, 0) | bits
    return [union[g] for g in groups.groups]


def _merge(sets: list[int], merged: bool, out: int) -> list[int]:
    """Patch merging on one axis: coordinate c of the next stage holds 2c and 2c + 1 (padding past the end)."""
    if not merged:
        return list(sets)
    n = len(sets)
    return [sets[2 * c] | (sets[2 * c + 1] if 2 * c + 1 < n else 0) for c in range(out)]


@dataclass(frozen=True)
class BlockReach:
    """After one block: per axis, per coordinate of the block's token map, the stage-0 positions it can see."""

    name: str
    stage: int
    index: int  # block index within the stage
    depth: int  # blocks from the input, 1-based
    resolution: Size
    axis_reach: tuple[tuple[int, ...], ...]  # [axis][coordinate] -> bit set over stage-0 positions on that axis

    def extent(self, token: Size) -> Size:
        """Per axis, the span (last - first + 1) in stage-0 positions that `token` can see."""
        return tuple(_span(self.axis_reach[k][c]) for k, c in enumerate(token))


def _span(bits: int) -> int:
    return 0 if bits == 0 else bits.bit_length() - (bits & -bits).bit_length() + 1


@dataclass(frozen=True)
class Reach:
    plan: ModelPlan
    grid: Size  # stage-0 tokens (input patches) per axis
    blocks: tuple[BlockReach, ...]

    def block(self, stage: int, index: int) -> BlockReach:
        for b in self.blocks:
            if b.stage == stage and b.index == index:
                return b
        raise InputError(f"no block {index} in stage {stage} of {self.plan.config.name}: stages have "
                         f"{[s.depth for s in self.plan.stages]} blocks")


def reach(cfg: SwinConfig, image: Any = None, policy: str | None = None) -> Reach:
    """Every block's reach for an input of size `image` (default cfg.img_size) under a window policy."""
    mp = plan(cfg, image, policy)
    grid = mp.embed.grid
    n_axes = len(grid)
    sets = [[1 << c for c in range(n)] for n in grid]
    out = []
    depth = 0
    for stage in mp.stages:
        for blk in stage.blocks:
            sets = [_attend(sets[k], axis_groups(blk, k)) for k in range(n_axes)]
            depth += 1
            out.append(BlockReach(blk.name, stage.index, blk.index, depth, blk.resolution,
                                  tuple(tuple(s) for s in sets)))
        if stage.merge is not None:
            res = stage.merge.resolution
            sets = [_merge(sets[k], k >= n_axes - 2, res[k]) for k in range(n_axes)]
    return Reach(plan=mp, grid=grid, blocks=tuple(out))


def token_reach(r: Reach, stage: int, index: int, token: Size) -> list[list[int]]:
    """Per axis, the sorted stage-0 positions a token of block (stage, index) can see; their product is its reach."""
    b = r.block(stage, index)
    if len(token) != len(b.resolution) or any(not 0 <= c < n for c, n in zip(token, b.resolution)):
        raise InputError(f"token {tuple(token)} is outside the {_x(b.resolution)} token map of {b.name}; give "
                         f"coordinates from 0 to one less than each side")
    return [[i for i in range(r.grid[k]) if b.axis_reach[k][c] >> i & 1] for k, c in enumerate(token)]


def reach_table(r: Reach) -> list[dict[str, Any]]:
    """One row per block: the smallest and largest extent (per axis, in patches) over the block's tokens, and
    whether some token / every token sees the whole input."""
    rows = []
    for b in r.blocks:
        full = [(1 << n) - 1 for n in r.grid]
        spans = [[_span(bits) for bits in axis] for axis in b.axis_reach]
        some = all(any(bits == f for bits in axis) for axis, f in zip(b.axis_reach, full))
        every = all(all(bits == f for bits in axis) for axis, f in zip(b.axis_reach, full))
        rows.append({"block": b.name, "stage": b.stage, "index": b.index, "depth": b.depth,
                     "resolution": list(b.resolution), "min_extent": [min(s) for s in spans],
                     "max_extent": [max(s) for s in spans], "grid": list(r.grid),
                     "some_token_sees_all": some, "every_token_sees_all": every})
    return rows


def first_full_block(r: Reach, every: bool = False) -> str | None:
    """The first block at which one token (every token, with every=True) can see the whole input, or None."""
    key = "every_token_sees_all" if every else "some_token_sees_all"
    return next((row["block"] for row in reach_table(r) if row[key]), None)


def _x(size: Size) -> str:
    return "x".join(map(str, size))
