"""Properties of the window geometry and of shifted-window attention, checked against brute-force oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swinref import geometry
from swinref.backend import numpy_backend
from swinref.config import StagePlan, SwinConfig
from swinref.model import shifted_window_attention, softmax


@st.composite
def map_and_window(draw):
    """A window M and a map whose sides are multiples of M (as after padding)."""
    M = draw(st.integers(1, 6))
    H = M * draw(st.integers(1, 4))
    W = M * draw(st.integers(1, 4))
    B = draw(st.integers(1, 2))
    C = draw(st.integers(1, 3))
    return B, H, W, C, M


@given(map_and_window(), st.integers(0, 2**32 - 1))
def test_partition_and_reverse_are_inverse(dims, seed):
    B, H, W, C, M = dims
    x = np.random.default_rng(seed).standard_normal((B, H, W, C))
    windows = geometry.window_partition(x, M, np)
    assert windows.shape == (B * (H // M) * (W // M), M * M, C)
    np.testing.assert_array_equal(geometry.window_reverse(windows, M, H, W, np), x)


@given(map_and_window())
def test_partition_is_row_major_over_windows(dims):
    B, H, W, C, M = dims
    coords = np.stack(np.meshgrid(np.arange(H), np.arange(W), indexing="ij"), -1)  # H, W, 2
    x = np.broadcast_to(coords[None], (B, H, W, 2))
    windows = geometry.window_partition(x, M, np)
    nWw = W // M
    for k in range(windows.shape[0] // B):
        wr, wc = divmod(k, nWw)
        for n in range(M * M):
            r, c = divmod(n, M)
            assert tuple(windows[k, n]) == (wr * M + r, wc * M + c)


@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 8), st.integers(0, 8))
def test_roll_and_unroll_are_inverse(H, W, sh, sw):
    x = np.arange(H * W).reshape(1, H, W, 1)
    rolled = np.roll(x, shift=(-sh, -sw), axis=(1, 2))
    np.testing.assert_array_equal(np.roll(rolled, shift=(sh, sw), axis=(1, 2)), x)


@st.composite
def shifted_map(draw):
    M = draw(st.integers(2, 7))
    s = draw(st.integers(1, M - 1))
    H = M * draw(st.integers(1, 4))
    W = M * draw(st.integers(1, 4))
    return H, W, M, s


def _brute_force_mask(H, W, M, s):
    """Region of each position from the shifted coordinate's band, compared pairwise inside each window."""

    def band(i, n):
        # Positions in the last s rows came from the first s rows (wrapped); the M-s before them are real
        # neighbours of each other but not of the wrapped ones; everything before is one band.
        if i >= n - s:
            return 2
        if i >= n - M:
            return 1
        return 0

    nW = (H // M) * (W // M)
    mask = np.zeros((nW, M * M, M * M))
    for wi in range(H // M):
        for wj in range(W // M):
            k = wi * (W // M) + wj
            cells = [(wi * M + r, wj * M + c) for r in range(M) for c in range(M)]
            for a, (ra, ca) in enumerate(cells):
                for b, (rb, cb) in enumerate(cells):
                    same = band(ra, H) == band(rb, H) and band(ca, W) == band(cb, W)
                    mask[k, a, b] = 0.0 if same else geometry.MASK_VALUE
    return mask


@given(shifted_map())
def test_shift_mask_matches_brute_force_and_is_symmetric(args):
    H, W, M, s = args
    mask = geometry.shift_mask(H, W, M, s)
    np.testing.assert_array_equal(mask, _brute_force_mask(H, W, M, s))
    np.testing.assert_array_equal(mask, np.swapaxes(mask, 1, 2))
    assert np.all(np.diagonal(mask, axis1=1, axis2=2) == 0)
    assert set(np.unique(mask)) <= {0.0, geometry.MASK_VALUE}


@given(st.integers(1, 8))
def test_relative_position_index_matches_definition(M):
    index = geometry.relative_position_index(M)
    for i in range(M * M):
        for j in range(M * M):
            (hi, wi), (hj, wj) = divmod(i, M), divmod(j, M)
            assert index[i, j] == (hi - hj + M - 1) * (2 * M - 1) + (wi - wj + M - 1)
    assert index.min() == 0 and index.max() == (2 * M - 1) ** 2 - 1


def test_relative_coords_table_is_log_spaced_and_symmetric():
    table = geometry.relative_coords_table(8)
    assert table.shape == (15 * 15, 2)
    # Offsets are scaled to [-8, 8], so the extremes are +-log2(8 + 1) / log2(8), at offset +-(M - 1).
    assert table.max() == pytest.approx(math.log2(9) / 3) and table.min() == pytest.approx(-math.log2(9) / 3)
    np.testing.assert_allclose(table[::-1], -table)  # offsets run from -(M-1) to M-1 on both axes
    np.testing.assert_array_equal(geometry.relative_coords_table(8, 8), table)  # pretrained window 8 == own window
    # Fine-tuned from window 4: offsets beyond the pretrained range extrapolate past the extremes.
    assert geometry.relative_coords_table(8, 4).max() > table.max()


# ------------------------------------------------------------------------------------------------------------
# Shifted-window attention against an oracle that uses no roll and no partition.


def _dense_oracle(x, p, stage, shift, padding):
    """Attention over the whole padded map; pairs outside one (shifted) window get -inf, pairs in one window but
    different regions get -100, positions are computed arithmetically."""
    B, H, W, C = x.shape
    M, nH = stage.window, stage.heads
    d = C // nH
    Hp, Wp = stage.padded
    grid = np.zeros((B, Hp, Wp, C))
    grid[:, :H, :W] = x  # tokens stay at their own (padded-map) coordinates throughout: no roll, no partition

    def position(r, c):
        """Where token (r, c) sits when the windows are cut."""
        if padding == "timm" and r < H and c < W:
            # timm rolls the unpadded map, then pads: real tokens wrap within H x W.
            return ((r - shift) % H, (c - shift) % W)
        if padding == "timm":
            return (r, c)  # padding is added after the roll, so it does not move
        return ((r - shift) % Hp, (c - shift) % Wp)  # pad first, then roll the padded map

    pos = [position(r, c) for r in range(Hp) for c in range(Wp)]
    tokens = grid.reshape(B, Hp * Wp, C)
    labels = geometry.shift_region_labels(Hp, Wp, M, shift) if shift else np.zeros((Hp, Wp), int)
    T = Hp * Wp
    bias = np.full((nH, T, T), -np.inf)
    table = p["attn.relative_position_bias_table"]
    for a, (ra, ca) in enumerate(pos):
        for b, (rb, cb) in enumerate(pos):
            if (ra // M, ca // M) != (rb // M, cb // M):
                continue
            idx = ((ra % M) - (rb % M) + M - 1) * (2 * M - 1) + ((ca % M) - (cb % M) + M - 1)
            extra = 0.0 if labels[ra, ca] == labels[rb, cb] else geometry.MASK_VALUE
            bias[:, a, b] = table[idx] + extra
    qkv = tokens @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, nH, d).transpose(0, 2, 1, 3) for i in range(3))
    probs = softmax(q * d**-0.5 @ k.transpose(0, 1, 3, 2) + bias, np)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, C) @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    return out.reshape(B, Hp, Wp, C)[:, :H, :W]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3), st.integers(2, 11), st.integers(2, 11), st.integers(1, 2), st.integers(2, 5), st.booleans(),
    st.sampled_from(["pad", "timm"]), st.integers(0, 2**32 - 1),
)
def test_shifted_window_attention_equals_dense_oracle(B, h, w, nH, M, shifted, padding, seed):
    rng = np.random.default_rng(seed)
    C = 2 * nH
    if min(h, w) <= M:
        M = min(h, w)
        shifted = False  # the clamp rule: no shift when the window covers the map
    shift = M // 2 if shifted and M > 1 else 0
    Hp, Wp = -(-h // M) * M, -(-w // M) * M
    stage = StagePlan(index=0, depth=2, dim=C, heads=nH, resolution=(h, w), window=M, configured_window=M,
                      shift=shift, clamped=False, pad=(Hp - h, Wp - w), padded=(Hp, Wp))
    p = {
        "attn.qkv.weight": rng.standard_normal((3 * C, C)) * 0.5,
        "attn.qkv.bias": rng.standard_normal(3 * C) * 0.1,
        "attn.proj.weight": rng.standard_normal((C, C)) * 0.5,
        "attn.proj.bias": rng.standard_normal(C) * 0.1,
        "attn.relative_position_bias_table": rng.standard_normal(((2 * M - 1) ** 2, nH)),
    }
    x = rng.standard_normal((B, h, w, C))
    cfg = SwinConfig(embed_dim=C, depths=(2,), num_heads=(nH,), window_size=M, img_size=(4 * h, 4 * w))
    got = shifted_window_attention(x, p, "", cfg, stage, shift, padding, numpy_backend())
    np.testing.assert_allclose(got, _dense_oracle(x, p, stage, shift, padding), rtol=1e-10, atol=1e-12)


def test_softmax_of_masked_rows_keeps_exp_minus_100():
    # A row with one masked entry: the masked weight is exp(-100) relative to the others, not exactly zero.
    row = np.array([[0.0, geometry.MASK_VALUE]])
    probs = softmax(row, np)
    assert probs[0, 1] == pytest.approx(math.exp(-100) / (1 + math.exp(-100)), rel=1e-12)
