"""The arrays behind `swinref show`: window layouts, masks, reach, attention in image coordinates, rollout.

Each is checked against an independent construction (np.pad / np.roll of a map of token ids, brute-force
propagation of full connectivity matrices) or against the real forward pass; none needs matplotlib.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swinref import geometry, visual
from swinref.analysis.reach import first_full_block, reach, reach_table, token_reach
from swinref.analysis.windows import stage_counts
from swinref.config import get_config
from swinref.errors import InputError
from swinref.plan import POLICIES, plan

from strategies import window_geometries

# The seeds' worked example (a 4x4 map, window 2, shift 1): the four windows' masks, as printed there.
SEED_TOY_MASKS = [
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    [[0, -100, 0, -100], [-100, 0, -100, 0], [0, -100, 0, -100], [-100, 0, -100, 0]],
    [[0, 0, -100, -100], [0, 0, -100, -100], [-100, -100, 0, 0], [-100, -100, 0, 0]],
    [[0, -100, -100, -100], [-100, 0, -100, -100], [-100, -100, 0, -100], [-100, -100, -100, 0]],
]


def _toy():
    return get_config("T", img=16, window=2, depths=(2, 2), heads=(3, 6))


def test_seed_toy_mask_comes_out_exactly():
    blk = visual.find_block(plan(_toy(), policy="official"), 0, 1)
    assert (blk.resolution, blk.window, blk.shift) == ((4, 4), (2, 2), (1, 1))
    for w, expected in enumerate(SEED_TOY_MASKS):
        m = visual.window_mask(blk, w)
        np.testing.assert_array_equal(m.mask, np.array(expected, dtype=float))
        # The labels on the axes explain the mask: -100 exactly where the two labels differ.
        np.testing.assert_array_equal(m.mask != 0, m.labels[:, None] != m.labels[None, :])
    # The unshifted block has no mask at all.
    assert not visual.window_mask(visual.find_block(plan(_toy(), policy="official"), 0, 0), 3).mask.any()


def _rolled_ids(blk):
    """The token ids of the block's map on the padded, rolled map, built with np.pad and np.roll in the plan's
    order (-1 for padding), and the way back (un-roll, crop) for a map of that shape."""
    ids = np.arange(blk.tokens).reshape(blk.resolution)
    axes = tuple(range(ids.ndim))
    pad = [(0, p) for p in blk.pad]
    back = tuple(slice(0, n) for n in blk.resolution)
    if blk.roll_before_pad:
        rolled = np.pad(np.roll(ids, [-s for s in blk.shift], axes), pad, constant_values=-1)

        def unroll(m):
            return np.roll(m[back], blk.shift, axes)
    else:
        rolled = np.roll(np.pad(ids, pad, constant_values=-1), [-s for s in blk.shift], axes)

        def unroll(m):
            return np.roll(m, blk.shift, axes)[back]
    return rolled, unroll


small_models = st.builds(
    lambda window, depths, size, policy: (get_config("T", img=32, window=window, depths=depths,
                                                     heads=(3,) * len(depths)), size, policy),
    st.integers(1, 4), st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
    st.tuples(st.integers(4, 60), st.integers(4, 60)), st.sampled_from(["torchvision", "detection", "timm", "hf"]),
)

# (config, size, policy, plan) of the sizes the policy's peer accepts.
small_plans = small_models.map(lambda m: (*m, plan(*m))).filter(lambda m: m[3].refusal is None)


@settings(max_examples=40, deadline=None)
@given(small_plans)
def test_window_layout_matches_pad_and_roll(model):
    mp = model[3]
    for blk in mp.blocks:
        layout = visual.window_layout(blk)
        rolled, _ = _rolled_ids(blk)
        np.testing.assert_array_equal(layout.rolled_source, rolled)
        windows = geometry.window_partition(rolled[None, ..., None], blk.window, np)[:, :, 0]
        for flat in range(blk.tokens):
            w, n = np.argwhere(windows == flat)[0]
            token = np.unravel_index(flat, blk.resolution)
            assert (layout.window_id[token], layout.slot[token]) == (w, n)
            assert layout.region[token] == geometry.window_partition(
                layout.rolled_region[None, ..., None], blk.window, np)[w, n, 0]


def _block_of(geom, roll_before_pad):
    """A BlockPlan with any number of spatial axes (the geometry of a clip before Video Swin's configs exist)."""
    spatial, padded, window, shift = geom
    return dataclasses.replace(plan(_toy()).blocks[1], resolution=spatial, padded=padded, window=window,
                               shift=shift, pad=tuple(p - n for p, n in zip(padded, spatial)),
                               roll_before_pad=roll_before_pad, mask=any(shift))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3).flatmap(window_geometries), st.booleans())
def test_layout_mask_and_links_on_any_number_of_axes(geom, roll_before_pad):
    from swinref.analysis.reach import axis_groups

    blk = _block_of(geom, roll_before_pad)
    layout = visual.window_layout(blk)
    rolled, _ = _rolled_ids(blk)
    np.testing.assert_array_equal(layout.rolled_source, rolled)
    ids = geometry.window_partition(rolled[None, ..., None], blk.window, np)[:, :, 0]
    labels = geometry.window_partition(layout.rolled_region[None, ..., None], blk.window, np)[:, :, 0]
    groups = [axis_groups(blk, k).groups for k in range(len(blk.resolution))]
    for w in range(blk.windows):
        m = visual.window_mask(blk, w)
        np.testing.assert_array_equal(m.tokens, ids[w])
        np.testing.assert_array_equal(m.mask != 0, (labels[w][:, None] != labels[w][None, :]) & blk.mask)
        # Per-axis groups (what the reach composes) link two real tokens exactly when the N-D window and mask do.
        for a, la in zip(ids[w], labels[w]):
            for b, lb in zip(ids[w], labels[w]):
                if a >= 0 and b >= 0:
                    ta, tb = np.unravel_index(a, blk.resolution), np.unravel_index(b, blk.resolution)
                    per_axis = all(g[i] == g[j] for g, i, j in zip(groups, ta, tb))
                    assert per_axis == (la == lb or not blk.mask)
    # Tokens of different windows are never linked.
    for a in range(blk.tokens):
        ta = np.unravel_index(a, blk.resolution)
        for b in range(0, blk.tokens, 3):
            tb = np.unravel_index(b, blk.resolution)
            if layout.window_id[ta] != layout.window_id[tb]:
                assert not all(g[i] == g[j] for g, i, j in zip(groups, ta, tb))


def _brute_force_reach(mp):
    """Per block, bool [tokens of the block, input patches]: full connectivity matrices composed block by block."""
    seen = np.eye(int(np.prod(mp.embed.grid)), dtype=bool)
    out = []
    for stage in mp.stages:
        for blk in stage.blocks:
            rolled, _ = _rolled_ids(blk)
            ids = geometry.window_partition(rolled[None, ..., None], blk.window, np)[:, :, 0]
            labels = geometry.window_partition(geometry.shift_region_labels(blk.padded, blk.window, blk.shift)
                                               [None, ..., None], blk.window, np)[:, :, 0]
            link = np.zeros((blk.tokens, blk.tokens), dtype=bool)
            for w in range(ids.shape[0]):
                for a, la in zip(ids[w], labels[w]):
                    for b, lb in zip(ids[w], labels[w]):
                        if a >= 0 and b >= 0 and (la == lb or not blk.mask):
                            link[a, b] = True
            seen = (link.astype(int) @ seen.astype(int)) > 0
            out.append(seen)
        if stage.merge is not None:  # token c of the next stage is made of the tokens with c = old // 2 on H, W
            res, merged = stage.resolution, stage.merge.resolution
            old = np.indices(res).reshape(len(res), -1)
            new = old.copy()
            new[-2:] //= 2
            merge = np.zeros((int(np.prod(merged)), int(np.prod(res))), dtype=int)
            merge[np.ravel_multi_index(tuple(new), merged), np.arange(old.shape[1])] = 1
            seen = (merge @ seen.astype(int)) > 0
    return out


@settings(max_examples=40, deadline=None)
@given(small_plans)
def test_reach_equals_brute_force_propagation(model):
    cfg, size, policy, mp = model
    r = reach(cfg, size, policy)
    for blk, brute in zip(mp.blocks, _brute_force_reach(mp)):
        for flat in range(blk.tokens):
            token = tuple(int(c) for c in np.unravel_index(flat, blk.resolution))
            ours = visual.reach_map(r, blk.stage, blk.index, token).reshape(-1)
            np.testing.assert_array_equal(ours, brute[flat], err_msg=f"{blk.name} token {token}")


@pytest.mark.parametrize("policy,size", [("detection", (6, 20, 28)), ("torchvision", (5, 24, 17)),
                                         ("official", (8, 20, 16))])
def test_reach_of_a_clip_equals_brute_force_propagation(policy, size):
    cfg = _tiny_clip(size)
    mp = plan(cfg, size, policy)
    assert mp.refusal is None and any(b.shift[0] for b in mp.blocks)
    r = reach(cfg, size, policy)
    for blk, brute in zip(mp.blocks, _brute_force_reach(mp)):
        for flat in range(0, blk.tokens, 5):
            token = tuple(int(c) for c in np.unravel_index(flat, blk.resolution))
            np.testing.assert_array_equal(visual.reach_map(r, blk.stage, blk.index, token).reshape(-1), brute[flat])


def test_reach_table_of_swin_t():
    r = reach(get_config("T"))
    rows = reach_table(r)
    # Block 0 sees its 7x7 window; the shifted block 1 sees up to 2x2 windows' worth, at least its own window.
    assert rows[0]["min_extent"] == rows[0]["max_extent"] == [7, 7]
    assert rows[1]["max_extent"] == [14, 14]
    first = first_full_block(r)
    assert first is not None and all(row["max_extent"] == [56, 56] for row in rows
                                    if row["depth"] >= next(x["depth"] for x in rows if x["block"] == first))
    assert not any(row["some_token_sees_all"] for row in rows if row["block"] == "layers.2.blocks.0")


def test_token_reach_refuses_a_token_outside_the_map():
    with pytest.raises(InputError, match="outside"):
        token_reach(reach(get_config("T")), 0, 0, (56, 0))


def test_stage_counts():
    rows = stage_counts(get_config("T"), (800, 1333), "detection")
    assert rows[0]["resolution"] == [200, 334] and rows[0]["padded"] == [203, 336]
    assert rows[0]["windows"] == 29 * 48 and rows[0]["window_tokens"] == 49
    assert [r["tokens"] for r in rows] == [200 * 334, 100 * 167, 50 * 84, 25 * 42]


# ---------------------------------------------------------------------------------------------------------------
# The real forward pass.


def _tiny(img, window=2, depths=(2, 2, 2)):
    return get_config("T", img=img, window=window, embed_dim=8, depths=depths, heads=(2, 2, 4), classes=0)


def _tiny_clip(clip):
    """A tiny Video Swin of clip size (T, H, W): patches 2x4x4, windows 2x3x3."""
    return get_config("swin3d_t", img=clip, patch=(2, 4, 4), window=(2, 3, 3), embed_dim=8, depths=(2, 2, 2),
                      heads=(2, 2, 4), classes=0)


def _tiny_run(policy, size, batch, seed):
    """(config, float64 random model, plan, input [batch, 3, *size]) of the tiny image or clip model."""
    import swinref

    cfg = _tiny(size) if len(size) == 2 else _tiny_clip(size)
    model = swinref.random_model(cfg, dtype="float64", policy=policy)
    x = np.random.default_rng(seed).standard_normal((batch, 3, *size))
    return cfg, model, plan(cfg, size, policy), x


@pytest.mark.parametrize("policy,size", [("detection", (44, 36)), ("torchvision", (46, 34)), ("timm", (40, 48)),
                                         ("detection", (6, 20, 28))])
def test_forward_pass_confirms_reach_bit_for_bit(policy, size):
    cfg, model, mp, x = _tiny_run(policy, size, 1, 0)
    r = reach(cfg, size, policy)
    base = model.trace(x)
    p = mp.embed.patch
    outside_checked = 0
    for blk in (mp.blocks[0], mp.blocks[1], mp.blocks[3], mp.blocks[-1]):
        token = tuple(int(n) // 2 for n in blk.resolution)
        inside = visual.reach_map(r, blk.stage, blk.index, token)
        for patch, expect_change in ((tuple(np.argwhere(~inside)[0]) if (~inside).any() else None, False),
                                     (tuple(np.argwhere(inside)[-1]), True)):
            if patch is None:
                continue
            y = x.copy()
            y[(0, slice(None), *(slice(c * q, c * q + 1) for c, q in zip(patch, p)))] += 1.0
            out = model.trace(y)[blk.name][(0, *token)]
            same = np.array_equal(out, base[blk.name][(0, *token)])
            assert same != expect_change, f"{blk.name} token {token}, patch {patch}"
            outside_checked += not expect_change
    assert outside_checked >= 2


def test_attention_map_is_the_trace_row_unshifted():
    size = (44, 36)
    cfg, model, mp, x = _tiny_run("detection", size, 2, 1)
    blk = mp.blocks[1]
    assert blk.shifted and any(blk.pad)
    probs = model.trace(x, attn_probs=[blk.name])[blk.name + ".attn_probs"]
    rolled, unroll = _rolled_ids(blk)
    windows = geometry.window_partition(rolled[None, ..., None], blk.window, np)[:, :, 0]
    for token in [(0, 0), (5, 4), (10, 8), (6, 1)]:
        flat = np.ravel_multi_index(token, blk.resolution)
        w, n = np.argwhere(windows == flat)[0]
        for head in (None, 0, 1):
            for batch in (0, 1):
                got, padding = visual.attention_map(probs, blk, token, head=head, batch=batch)
                p = probs.reshape(2, blk.windows, blk.heads, blk.window_tokens, -1)[batch, w]
                row = p.mean(axis=0)[n] if head is None else p[head, n]
                placed = np.zeros((blk.windows, blk.window_tokens, 1))
                placed[w, :, 0] = row
                expected = unroll(geometry.window_reverse(placed, blk.window, blk.padded, np)[0, ..., 0])
                np.testing.assert_array_equal(got, expected)
                assert padding == pytest.approx(row[windows[w] < 0].sum())
        # The picture in pixels carries each token's value on its patch.
        pixels = visual.to_pixels(got, mp, blk.stage)
        assert pixels.shape == size
        for pixel in [(0, 0), (17, 30), (43, 35)]:
            assert pixels[pixel] == got[visual.pixel_token(mp, blk.stage, pixel)]


def test_rollout_is_a_distribution_inside_the_reach():
    size = (44, 36)
    cfg, model, mp, x = _tiny_run("detection", size, 1, 2)
    trace = model.trace(x, attn_probs=visual.rollout_inputs(mp))
    probs = {name: trace[name + ".attn_probs"] for name in visual.rollout_inputs(mp)}
    r = reach(cfg, size, "detection")
    pooled = visual.rollout(probs, mp)
    assert pooled.shape == mp.embed.grid and pooled.sum() == pytest.approx(1.0) and (pooled > 0).all()
    for blk in (mp.blocks[1], mp.blocks[3]):
        token = (1, 2)
        roll = visual.rollout(probs, mp, (blk.stage, blk.index, token))
        assert roll.sum() == pytest.approx(1.0)
        np.testing.assert_array_equal(roll > 0, visual.reach_map(r, blk.stage, blk.index, token))
    # With the residual alone, a stage-0 token keeps everything to itself.
    alone = visual.rollout(probs, mp, (0, 1, (3, 4)), residual=1.0)
    assert alone[3, 4] == 1.0 and alone.sum() == 1.0


def test_bad_choices_are_named():
    mp = plan(_toy(), policy="official")
    with pytest.raises(InputError, match="stage 5"):
        visual.find_block(mp, 5, 0)
    with pytest.raises(InputError, match="window 9"):
        visual.window_mask(mp.blocks[1], 9)
    with pytest.raises(InputError, match="head 7"):
        visual.attention_map(np.zeros((4, 3, 4, 4)), mp.blocks[1], (0, 0), head=7)
    with pytest.raises(InputError, match="attention probabilities"):
        visual.attention_map(np.zeros((4, 3, 4, 5)), mp.blocks[1], (0, 0))


def test_policies_all_give_a_reach():
    cfg = get_config("T")
    for name in POLICIES:
        rows = reach_table(reach(cfg, (224, 224), name))
        assert rows[0]["max_extent"] == [7, 7]
