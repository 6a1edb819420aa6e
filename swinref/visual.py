"""The arrays behind swinref's pictures: windows, shifts, padding, mask regions, one window's attention mask, reach
maps, attention in image coordinates and attention rollout.

Everything is read from the plan (swinref.plan) and the host tables of swinref.geometry, for any number of
spatial axes (S = (H, W) for images, (T, H, W) for clips). Token maps are in the block's own unshifted, unpadded
coordinates; `to_pixels` carries a stage's token map back to the input image through the merges, the patch
embedding and its padding or crop. swinref.show draws these arrays; nothing here imports a plotting library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from swinref import geometry
from swinref.errors import InputError
from swinref.plan import BlockPlan, ModelPlan

__all__ = ["WindowLayout", "window_layout", "WindowMask", "window_mask", "find_block", "reach_map", "to_pixels",
           "token_window", "attention_map", "rollout", "rollout_inputs", "pixel_token"]


def find_block(mp: ModelPlan, stage: int, block: int) -> BlockPlan:
    if not 0 <= stage < len(mp.stages):
        raise InputError(f"stage {stage} does not exist: {mp.config.name} has stages 0..{len(mp.stages) - 1}")
    blocks = mp.stages[stage].blocks
    if not 0 <= block < len(blocks):
        raise InputError(f"block {block} does not exist in stage {stage} of {mp.config.name}: it has blocks "
                         f"0..{len(blocks) - 1}")
    return blocks[block]


@dataclass(frozen=True)
class WindowLayout:
    """Where every token of a block goes: in the block's unshifted coordinates [*S] and on the padded, rolled map
    the attention works on [*padded]."""

    block: BlockPlan
    window_id: np.ndarray  # int [*S]: window (partition order) each real token is attended in
    slot: np.ndarray  # int [*S]: its row-major position inside that window
    region: np.ndarray  # int [*S]: its shift region label (0 everywhere when the block has no mask)
    rolled_source: np.ndarray  # int [*padded]: flat index of the real token at each position, -1 for padding
    rolled_region: np.ndarray  # int [*padded]: the mask's region label of each position of the padded, rolled map


def _region_labels(blk: BlockPlan) -> np.ndarray:
    if not blk.mask:
        return np.zeros(blk.padded, dtype=np.int64)
    return geometry.shift_region_labels(blk.padded, blk.window, blk.shift)


def _cut(table: np.ndarray, window: tuple[int, ...]) -> np.ndarray:
    """[*padded] host table -> [nW, N], cut into windows like the tokens of the map."""
    return geometry.window_partition(table[None, ..., None], window, np)[:, :, 0]


def _window_index(blk: BlockPlan) -> np.ndarray:
    """int [nW, N]: the flat index of the real token at each window slot, -1 for padding."""
    return geometry.window_token_index(blk.resolution, blk.padded, blk.window, blk.shift, blk.roll_before_pad)


def window_layout(blk: BlockPlan) -> WindowLayout:
    index = _window_index(blk)
    labels = _cut(_region_labels(blk), blk.window)  # nW, N
    n_tokens = blk.tokens
    window_id = np.full(n_tokens, -1, dtype=np.int64)
    slot = np.full(n_tokens, -1, dtype=np.int64)
    region = np.zeros(n_tokens, dtype=np.int64)
    real = index >= 0
    w, n = np.nonzero(real)
    window_id[index[real]] = w
    slot[index[real]] = n
    region[index[real]] = labels[real]
    rolled = geometry.window_reverse(index[:, :, None], blk.window, blk.padded, np)[0, ..., 0]
    return WindowLayout(block=blk, window_id=window_id.reshape(blk.resolution), slot=slot.reshape(blk.resolution),
                        region=region.reshape(blk.resolution), rolled_source=rolled,
                        rolled_region=_region_labels(blk))


@dataclass(frozen=True)
class WindowMask:
    """The additive attention mask of one window with what its rows and columns are."""

    mask: np.ndarray  # float [N, N]: 0 where query and key share a region, the plan's mask value (-100) across
    labels: np.ndarray  # int [N]: region label of each slot (row and column)
    tokens: np.ndarray  # int [N]: flat index of each slot's real token in the block's map, -1 for padding


def window_mask(blk: BlockPlan, window: int) -> WindowMask:
    """Window `window` (partition order over the padded, rolled map) of a block."""
    if not 0 <= window < blk.windows:
        raise InputError(f"window {window} does not exist in {blk.name}: it has windows 0..{blk.windows - 1}")
    labels = _cut(_region_labels(blk), blk.window)[window]
    if blk.mask:
        mask = np.where(labels[:, None] != labels[None, :], blk.mask_value, 0.0)
    else:
        mask = np.zeros((blk.window_tokens,) * 2)
    return WindowMask(mask=mask, labels=labels, tokens=_window_index(blk)[window])


def reach_map(reach: Any, stage: int, block: int, token: tuple[int, ...]) -> np.ndarray:
    """bool [*grid]: the input patches (stage-0 tokens) that token of block (stage, block) can see, from an
    analysis.reach.Reach."""
    from swinref.analysis.reach import token_reach

    axes = token_reach(reach, stage, block, tuple(token))
    out = np.zeros(reach.grid, dtype=bool)
    out[np.ix_(*axes)] = True
    return out


def to_pixels(values: np.ndarray, mp: ModelPlan, stage: int, fill: float = np.nan) -> np.ndarray:
    """A stage's token map [*S_stage] -> the input image [*image]: each token's value on every pixel it covers
    (through the merges, which double the last two axes per stage, and the patch embedding). Pixels no token
    covers (cropped by the 'torchvision' policy) get `fill`; the patch embedding's padding is cut off."""
    values = np.asarray(values)
    merged_axes = range(values.ndim - 2, values.ndim)
    out = values
    for s in range(stage - 1, -1, -1):
        grid = mp.stages[s].resolution
        for k in merged_axes:
            out = np.repeat(out, 2, axis=k)
        out = out[tuple(slice(0, n) for n in grid)]  # the merge's padding row/column
    for k, p in enumerate(mp.embed.patch):
        out = np.repeat(out, p, axis=k)
    image = mp.embed.image
    out = out[tuple(slice(0, n) for n in image)]
    if out.shape != tuple(image):
        full = np.full(image, fill, dtype=np.result_type(out.dtype, np.asarray(fill).dtype))
        full[tuple(slice(0, n) for n in out.shape)] = out
        out = full
    return out


def pixel_token(mp: ModelPlan, stage: int, pixel: tuple[int, ...]) -> tuple[int, ...]:
    """The token of a stage whose area holds an image pixel."""
    image = mp.embed.image
    if len(pixel) != len(image) or any(not 0 <= c < n for c, n in zip(pixel, image)):
        raise InputError(f"pixel {tuple(pixel)} is outside the {'x'.join(map(str, image))} image")
    token = [c // p for c, p in zip(pixel, mp.embed.patch)]
    if any(t >= g for t, g in zip(token, mp.embed.grid)):
        raise InputError(f"pixel {tuple(pixel)} was cropped away by the patch embedding (policy "
                         f"'{mp.policy.name}'); choose one inside the first {'x'.join(map(str, mp.embed.grid))} "
                         "patches")
    n = len(token)
    return tuple(t >> stage if k >= n - 2 else t for k, t in enumerate(token))


def token_window(blk: BlockPlan, token: tuple[int, ...]) -> tuple[int, int]:
    """(window, slot) of a real token of the block's map."""
    if len(token) != len(blk.resolution) or any(not 0 <= c < n for c, n in zip(token, blk.resolution)):
        raise InputError(f"token {tuple(token)} is outside the {'x'.join(map(str, blk.resolution))} token map of "
                         f"{blk.name}; give coordinates from 0 to one less than each side")
    flat = int(np.ravel_multi_index(tuple(token), blk.resolution))
    w, n = np.nonzero(_window_index(blk) == flat)
    return int(w[0]), int(n[0])


def _probs(probs: Any, blk: BlockPlan, batch: int) -> np.ndarray:
    """[B*nW, nH, N, N] trace point -> the float64 [nW, nH, N, N] of one sample."""
    p = np.asarray(probs, dtype=np.float64)
    expected = (blk.windows, blk.heads, blk.window_tokens, blk.window_tokens)
    if p.ndim != 4 or p.shape[1:] != expected[1:] or p.shape[0] % blk.windows:
        raise InputError(f"attention probabilities of {blk.name} should be [B*{blk.windows}, {blk.heads}, "
                         f"{blk.window_tokens}, {blk.window_tokens}], got {list(p.shape)}; pass the trace point "
                         f"'{blk.name}.attn_probs' of the same input size and policy")
    B = p.shape[0] // blk.windows
    if not 0 <= batch < B:
        raise InputError(f"sample {batch} is not in the batch of {B}")
    return p.reshape(B, blk.windows, *p.shape[1:])[batch]


def _heads(p: np.ndarray, head: int | None, blk: BlockPlan) -> np.ndarray:
    """[nW, nH, N, N] -> [nW, N, N] for one head, or their mean (head None)."""
    if head is None:
        return p.mean(axis=1)
    if not 0 <= head < blk.heads:
        raise InputError(f"head {head} does not exist in {blk.name}: it has heads 0..{blk.heads - 1} (or omit it "
                         "for the mean)")
    return p[:, head]


def attention_map(probs: Any, blk: BlockPlan, token: tuple[int, ...], head: int | None = None,
                  batch: int = 0) -> tuple[np.ndarray, float]:
    """(float64 [*S], padding) : the attention of one query token of a block over the block's token map, un-shifted
    and with padding removed; `padding` is the weight it gave to padding positions. Zero outside its window."""
    w, n = token_window(blk, token)
    row = _heads(_probs(probs, blk, batch), head, blk)[w, n]  # N
    keys = _window_index(blk)[w]
    out = np.zeros(blk.tokens)
    real = keys >= 0
    out[keys[real]] = row[real]
    return out.reshape(blk.resolution), float(row[~real].sum())


def rollout(probs: dict[str, Any], mp: ModelPlan, target: tuple[int, int, tuple[int, ...]] | None = None,
            head: int | None = None, residual: float = 0.5, batch: int = 0) -> np.ndarray:
    """Attention rollout (Abnar and Zuidema 2020) through windows, shifts and merges: float64 [*grid], how much
    of the chosen output comes from each input patch; it sums to one.

    `probs` maps block names to their `attn_probs` trace points, one for every block up to the target.
    `target` is (stage, block, token) for one token's output after that block, or None for the pooled output of
    the last block (the mean over its tokens). Each block's attention, with padding keys dropped and rows
    renormalised, is mixed with the residual as residual * I + (1 - residual) * A; the mean over heads unless one
    `head` is chosen (the same head index in every block). A merge splits a token's share equally among the real
    tokens it was made from. The MLP acts per token and is the identity here.
    """
    if not 0.0 <= residual <= 1.0:
        raise InputError(f"the residual weight is a fraction in [0, 1], got {residual}")
    blocks = mp.blocks
    if target is None:
        last = blocks[-1]
        row = np.full(last.tokens, 1.0 / last.tokens)
    else:
        stage, index, token = target
        last = find_block(mp, stage, index)
        token_window(last, token)  # validates the token
        row = np.zeros(last.tokens)
        row[np.ravel_multi_index(tuple(token), last.resolution)] = 1.0
    upto = blocks[:blocks.index(last) + 1]
    for blk in reversed(upto):
        if blk.index == len(mp.stages[blk.stage].blocks) - 1 and blk is not last and mp.stages[blk.stage].merge:
            row = _unmerge(row, mp.stages[blk.stage].merge.resolution, blk.resolution)
        if blk.name not in probs:
            raise InputError(f"rollout needs the attention of every block up to the target: {blk.name} is missing "
                             f"(trace with attn_probs=[every block name])")
        a = _heads(_probs(probs[blk.name], blk, batch), head, blk)
        keys = _window_index(blk)  # nW, N
        real = keys >= 0
        a = np.where(real[:, None, :], a, 0.0)
        a = a / a.sum(axis=-1, keepdims=True)
        r = np.where(real, row[np.maximum(keys, 0)], 0.0)  # nW, N
        spread = np.einsum("wn,wnm->wm", r, a)
        mixed = np.zeros_like(row)
        mixed[keys[real]] = spread[real]
        row = residual * row + (1.0 - residual) * mixed
    return row.reshape(mp.embed.grid)


def _unmerge(row: np.ndarray, merged: tuple[int, ...], before: tuple[int, ...]) -> np.ndarray:
    """A merged token map's weights [prod(merged)] -> the stage before [prod(before)], each token's share split
    equally among the (up to four) real tokens it was made from."""
    h, w = before[-2:]
    real = np.zeros((*before[:-2], 2 * merged[-2], 2 * merged[-1]))
    real[..., :h, :w] = 1.0
    children = real.reshape(*before[:-2], merged[-2], 2, merged[-1], 2).sum(axis=(-3, -1))  # [*merged]
    share = row.reshape(merged) / children
    up = np.repeat(np.repeat(share, 2, axis=-2), 2, axis=-1)[..., :h, :w]
    return up.reshape(-1)


def rollout_inputs(mp: ModelPlan) -> list[str]:
    """The block names whose `attn_probs` a rollout needs (every block: trace with attn_probs=these)."""
    return [b.name for b in mp.blocks]
