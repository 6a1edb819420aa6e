"""Properties of the window geometry (1, 2 and 3 spatial axes) and of shifted-window attention, checked against
brute-force oracles written without the implementation's reshapes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swinref import geometry
from swinref.backend import numpy_backend
from swinref.blocks import shifted_window_attention
from swinref.layers import softmax
from swinref.plan import BlockPlan

from strategies import window_geometries

# Every pure-geometry property runs for sequences, images and video.
AXES = pytest.mark.parametrize("axes", [1, 2, 3])


def _brute_partition(x, window):
    """[B, *S, C] -> [B*nW, N, C] by placing every token with plain loops: b, then windows row-major over the
    window grid, then tokens row-major inside the window."""
    grid = [n // w for n, w in zip(x.shape[1:-1], window)]
    rows = []
    for b in range(x.shape[0]):
        for cell in itertools.product(*map(range, grid)):
            rows.append([x[(b, *(g * w + o for g, w, o in zip(cell, window, offset)))]
                         for offset in itertools.product(*map(range, window))])
    return np.array(rows).reshape(-1, math.prod(window), x.shape[-1])


@AXES
@given(st.data(), st.integers(1, 2), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_partition_is_row_major_and_reverse_inverts_it(axes, data, B, C, seed):
    _, padded, window, _ = data.draw(window_geometries(axes))
    x = np.random.default_rng(seed).standard_normal((B, *padded, C))
    windows = geometry.window_partition(x, window, np)
    assert windows.shape == (B * math.prod(p // w for p, w in zip(padded, window)), math.prod(window), C)
    np.testing.assert_array_equal(windows, _brute_partition(x, window))
    np.testing.assert_array_equal(geometry.window_reverse(windows, window, padded, np), x)


@AXES
@given(st.data(), st.integers(1, 2), st.integers(0, 2**32 - 1))
def test_partition_and_reverse_run_on_array_api_strict(axes, data, B, seed):
    xp = pytest.importorskip("array_api_strict")
    _, padded, window, _ = data.draw(window_geometries(axes))
    x = np.random.default_rng(seed).standard_normal((B, *padded, 2))
    windows = geometry.window_partition(xp.asarray(x), window, xp)
    np.testing.assert_array_equal(np.from_dlpack(windows), geometry.window_partition(x, window, np))
    np.testing.assert_array_equal(np.from_dlpack(geometry.window_reverse(windows, window, padded, xp)), x)


def _band(i, n, w, s):
    """Band of position i on an axis of n positions: the last s hold positions wrapped round from the start, the
    w - s before them are neighbours of each other only, everything before is one band; unshifted, one band."""
    if s and i >= n - s:
        return 2
    if s and i >= n - w:
        return 1
    return 0


def _mask_of_labels(labels, window):
    """[nW, N, N] mask from any [*S] labelling: 0 for two tokens of one window with equal labels, else -100."""
    windows = _brute_partition(labels[None, ..., None], window)[:, :, 0]
    return np.where(windows[:, :, None] == windows[:, None, :], 0.0, geometry.MASK_VALUE)


def _brute_labels(padded, window, shift):
    """[*S] object array of per-axis band tuples, one position at a time."""
    labels = np.empty(padded, dtype=object)
    for position in itertools.product(*map(range, padded)):
        labels[position] = tuple(_band(i, n, w, s) for i, n, w, s in zip(position, padded, window, shift))
    return labels


def _peer_labels(padded, window, shift):
    """[*S] labels as timm, torchvision and the official code assign them: nested loops over the slices (0, -w),
    (-w, -s), (-s, None) per axis, each assignment overwriting what earlier ones wrote (with s == 0 the slice
    (-0, None) is the whole axis and (-w, -0) is empty)."""
    labels = np.zeros(padded, dtype=np.int64)
    per_axis = [(slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
    for count, slices in enumerate(itertools.product(*per_axis)):
        labels[slices] = count
    return labels


@AXES
@settings(deadline=None)
@given(st.data())
def test_shift_mask_is_symmetric_zero_on_the_diagonal_and_matches_brute_force(axes, data):
    _, padded, window, shift = data.draw(window_geometries(axes))
    mask = geometry.shift_mask(padded, window, shift)
    assert mask.dtype == np.float64 and not mask.flags.writeable
    np.testing.assert_array_equal(mask, _mask_of_labels(_brute_labels(padded, window, shift), window))
    np.testing.assert_array_equal(mask, np.swapaxes(mask, 1, 2))
    assert np.all(np.diagonal(mask, axis1=1, axis2=2) == 0)
    assert set(np.unique(mask)) <= {0.0, geometry.MASK_VALUE}


@pytest.mark.parametrize("axes", [2, 3])
@settings(deadline=None)
@given(st.data())
def test_unshifted_axis_is_one_band_as_in_the_peers_slice_loop(axes, data):
    _, padded, window, shift = data.draw(window_geometries(axes))
    unshifted = data.draw(st.integers(0, axes - 1))
    shift = tuple(0 if a == unshifted else s for a, s in enumerate(shift))
    labels = geometry.shift_region_labels(padded, window, shift)
    assert labels.dtype == np.int64 and labels.shape == padded and not labels.flags.writeable
    assert np.all(labels == np.take(labels, [0], axis=unshifted))
    # Same regions as the peers' labels (numbered differently): equal labels exactly where theirs are equal.
    peers = _peer_labels(padded, window, shift)
    ours, theirs = labels.reshape(-1), peers.reshape(-1)
    np.testing.assert_array_equal(ours[:, None] == ours[None, :], theirs[:, None] == theirs[None, :])
    np.testing.assert_array_equal(geometry.shift_mask(padded, window, shift), _mask_of_labels(peers, window))


def _old_relative_position_index(M):
    return np.array([[(hi - hj + M - 1) * (2 * M - 1) + (wi - wj + M - 1)
                      for hj, wj in itertools.product(range(M), repeat=2)]
                     for hi, wi in itertools.product(range(M), repeat=2)])


@AXES
@given(st.data())
def test_relative_position_index_enumerates_query_key_offsets(axes, data):
    window = tuple(data.draw(st.integers(1, 5 if axes < 3 else 3)) for _ in range(axes))
    index = geometry.relative_position_index(window)
    assert index.dtype == np.int64 and not index.flags.writeable
    coords = list(itertools.product(*map(range, window)))
    for i, query in enumerate(coords):
        for j, key in enumerate(coords):
            expected = 0
            for q, k, w in zip(query, key, window):
                expected = expected * (2 * w - 1) + (q - k + w - 1)
            assert index[i, j] == expected
    assert index.min() == 0 and index.max() == math.prod(2 * w - 1 for w in window) - 1


@given(st.integers(1, 8))
def test_relative_position_index_of_a_square_window_is_the_2d_formula(M):
    np.testing.assert_array_equal(geometry.relative_position_index((M, M)), _old_relative_position_index(M))


def _log_spaced(t):
    return math.copysign(math.log2(abs(t) + 1.0) / math.log2(8), t) if t else 0.0


@AXES
@given(st.data())
def test_relative_coords_table_matches_brute_force(axes, data):
    window = tuple(data.draw(st.integers(1, 8)) for _ in range(axes))
    pretrained = data.draw(st.none() | st.tuples(*(st.just(0) | st.integers(2, 8) for _ in range(axes))))
    table = geometry.relative_coords_table(window, pretrained)
    assert table.shape == (math.prod(2 * w - 1 for w in window), axes) and not table.flags.writeable
    denominators = [(p if p else w) - 1 for w, p in zip(window, pretrained or (0,) * axes)]
    rows = itertools.product(*(range(-(w - 1), w) for w in window))  # first axis slowest, as meshgrid "ij"
    expected = [[_log_spaced(o / d * 8.0 if d else 0.0) for o, d in zip(row, denominators)] for row in rows]
    np.testing.assert_allclose(table, expected, rtol=1e-14, atol=0)
    np.testing.assert_array_equal(table[::-1], -table)  # offsets run symmetrically on every axis


def _old_relative_coords_table(M, pretrained_M=0):
    """The 2-D function this module had for square windows, kept as the reference."""
    offsets = np.arange(-(M - 1), M, dtype=np.float64)
    table = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 2)
    denominator = (pretrained_M - 1) if pretrained_M > 0 else (M - 1)
    if denominator > 0:
        table = table / denominator
    table = table * 8.0
    return np.sign(table) * np.log2(np.abs(table) + 1.0) / math.log2(8)


@given(st.integers(1, 12), st.sampled_from([0, 2, 4, 7, 8, 12]))
def test_relative_coords_table_of_a_square_window_is_the_2d_function(M, pretrained_M):
    pretrained = (pretrained_M, pretrained_M) if pretrained_M else None
    got = geometry.relative_coords_table((M, M), pretrained)
    np.testing.assert_array_equal(got, _old_relative_coords_table(M, pretrained_M))
    # Extremes +-log2(8 + 1) / log2(8) at offset +-(M - 1) of the own window; a smaller pretrained window
    # extrapolates past them.
    if M > 1 and not pretrained_M:
        assert got.max() == pytest.approx(math.log2(9) / 3)
    if 1 < pretrained_M < M:
        assert got.max() > math.log2(9) / 3


@AXES
@settings(deadline=None)
@given(st.data(), st.booleans())
def test_window_token_index_equals_padding_and_rolling_a_map_of_sources(axes, data, roll_before_pad):
    spatial, padded, window, shift = data.draw(window_geometries(axes))
    index = geometry.window_token_index(spatial, padded, window, shift, roll_before_pad)
    assert index.dtype == np.int64 and not index.flags.writeable
    sources = np.arange(math.prod(spatial)).reshape(spatial)
    spatial_axes = tuple(range(axes))
    pad = [(0, p - n) for n, p in zip(spatial, padded)]
    negative = tuple(-s for s in shift)
    if roll_before_pad:
        shifted = np.pad(np.roll(sources, negative, axis=spatial_axes), pad, constant_values=-1)
    else:
        shifted = np.roll(np.pad(sources, pad, constant_values=-1), negative, axis=spatial_axes)
    np.testing.assert_array_equal(index, _brute_partition(shifted[None, ..., None], window)[:, :, 0])


def test_host_tables_share_a_cache_entry_across_lists_tuples_and_keywords():
    table = geometry.window_token_index((3, 5), (4, 6), (2, 3), (1, 1), True)
    assert geometry.window_token_index([3, 5], (np.int64(4), 6), window=[2, 3], shift=(1, 1),
                                       roll_before_pad=True) is table
    assert geometry.relative_coords_table((4, 4)) is geometry.relative_coords_table([4, 4], None)


# ------------------------------------------------------------------------------------------------------------
# Shifted-window attention against an oracle that uses no roll and no partition.


def _dense_oracle(x, p, blk):
    """Attention over the whole padded map; pairs outside one (shifted) window get -inf, pairs in one window but
    different regions get -100, positions are computed arithmetically."""
    B, H, W, C = x.shape
    (Mh, Mw), (sh, sw), nH = blk.window, blk.shift, blk.heads
    d = C // nH
    Hp, Wp = blk.padded
    grid = np.zeros((B, Hp, Wp, C))
    grid[:, :H, :W] = x  # tokens stay at their own (padded-map) coordinates throughout: no roll, no partition

    def position(r, c):
        """Where token (r, c) sits when the windows are cut."""
        if blk.roll_before_pad and r < H and c < W:
            # timm rolls the unpadded map, then pads: real tokens wrap within H x W.
            return ((r - sh) % H, (c - sw) % W)
        if blk.roll_before_pad:
            return (r, c)  # padding is added after the roll, so it does not move
        return ((r - sh) % Hp, (c - sw) % Wp)  # pad first, then roll the padded map

    def band(i, n, m, s):
        """The official slices (0, -m), (-m, -s), (-s, None) on one axis; one band when that axis does not shift."""
        return 0 if s == 0 else (0 if i < n - m else (1 if i < n - s else 2))

    pos = [position(r, c) for r in range(Hp) for c in range(Wp)]
    tokens = grid.reshape(B, Hp * Wp, C)
    T = Hp * Wp
    bias = np.full((nH, T, T), -np.inf)
    table = p["attn"]["relative_position_bias_table"]
    for a, (ra, ca) in enumerate(pos):
        for b, (rb, cb) in enumerate(pos):
            if (ra // Mh, ca // Mw) != (rb // Mh, cb // Mw):
                continue
            idx = ((ra % Mh) - (rb % Mh) + Mh - 1) * (2 * Mw - 1) + ((ca % Mw) - (cb % Mw) + Mw - 1)
            same = (band(ra, Hp, Mh, sh), band(ca, Wp, Mw, sw)) == (band(rb, Hp, Mh, sh), band(cb, Wp, Mw, sw))
            bias[:, a, b] = table[idx] + (0.0 if same else geometry.MASK_VALUE)
    attn = p["attn"]
    qkv = tokens @ attn["qkv"]["weight"].T + attn["qkv"]["bias"]
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, nH, d).transpose(0, 2, 1, 3) for i in range(3))
    probs = softmax(q * d**-0.5 @ k.transpose(0, 1, 3, 2) + bias, np)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, C) @ attn["proj"]["weight"].T + attn["proj"]["bias"]
    return out.reshape(B, Hp, Wp, C)[:, :H, :W]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3), st.integers(2, 11), st.integers(2, 11), st.integers(1, 2), st.integers(1, 5),
    st.integers(1, 5), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1),
)
def test_shifted_window_attention_equals_dense_oracle(B, h, w, nH, Mh, Mw, shift_h, shift_w, roll_first, seed):
    """Any per-axis window and shift (one axis may shift alone, as timm and torchvision do), both padding orders,
    windows larger than the map included."""
    rng = np.random.default_rng(seed)
    C = 2 * nH
    window, shift = (Mh, Mw), (Mh // 2 * shift_h, Mw // 2 * shift_w)
    padded = (-(-h // Mh) * Mh, -(-w // Mw) * Mw)
    blk = BlockPlan(name="b", stage=0, index=1, dim=C, heads=nH, mlp_hidden=C, resolution=(h, w), window=window,
                    shift=shift, pad=(padded[0] - h, padded[1] - w), padded=padded, roll_before_pad=roll_first,
                    mask=any(shift), mask_value=geometry.MASK_VALUE, norm="pre", attention="scaled-dot",
                    position_bias="table", pretrained_window=None, eps=1e-5, params=())
    p = {"attn": {
        "qkv": {"weight": rng.standard_normal((3 * C, C)) * 0.5, "bias": rng.standard_normal(3 * C) * 0.1},
        "proj": {"weight": rng.standard_normal((C, C)) * 0.5, "bias": rng.standard_normal(C) * 0.1},
        "relative_position_bias_table": rng.standard_normal(((2 * Mh - 1) * (2 * Mw - 1), nH)),
    }}
    x = rng.standard_normal((B, h, w, C))
    got, _ = shifted_window_attention(x, p, blk, numpy_backend())
    np.testing.assert_allclose(got, _dense_oracle(x, p, blk), rtol=1e-10, atol=1e-12)


def test_softmax_of_masked_rows_keeps_exp_minus_100():
    # A row with one masked entry: the masked weight is exp(-100) relative to the others, not exactly zero.
    row = np.array([[0.0, geometry.MASK_VALUE]])
    probs = softmax(row, np)
    assert probs[0, 1] == pytest.approx(math.exp(-100) / (1 + math.exp(-100)), rel=1e-12)
