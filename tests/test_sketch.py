"""swinref.golden.sketch: the fingerprint the policy fixtures store instead of large stage outputs."""

from __future__ import annotations

import numpy as np
import pytest

from swinref.golden.sketch import FULL_LIMIT, PROJECTIONS, compact, scaled_error, sketch, sketch_parts
from swinref.params import counter_uniform

# The largest stage output of the policy fixtures: stage 0 of an 800x1333 image with C = 24 (1.6 million values).
SHAPE = (1, 200, 334, 24)
F64_TOLERANCE = 1e-9
F32_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def big() -> np.ndarray:
    return 3.0 * counter_uniform("test_sketch", int(np.prod(SHAPE))).reshape(SHAPE)


def _fails(ref: np.ndarray, got: np.ndarray, tolerance: float) -> bool:
    err, scale = scaled_error(sketch(ref), sketch(got), "sketch")
    return err > tolerance * scale


def test_layout_and_determinism(big: np.ndarray) -> None:
    s = sketch(big)
    assert s.shape == (1, PROJECTIONS + 3 * SHAPE[-1] + 1) and s.dtype == np.float64
    assert np.array_equal(s, sketch(big.copy()))
    parts = sketch_parts(s)
    np.testing.assert_allclose(parts["mean"], big.mean(axis=(1, 2)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(parts["last_row"], big[:, -1].mean(axis=1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(parts["last_col"], big[:, :, -1].mean(axis=1), rtol=0, atol=1e-15)
    assert parts["max_abs"][0] == np.abs(big).max()


@pytest.mark.parametrize("where", ["interior", "last_row", "last_col", "corner"])
def test_catches_one_token_changed_by_1e_3(big: np.ndarray, where: str) -> None:
    """A single value of one token changed by 1e-3 fails a float64 comparison (1e-9) through the sketch."""
    h, w = {"interior": (97, 151), "last_row": (SHAPE[1] - 1, 5), "last_col": (3, SHAPE[2] - 1),
            "corner": (SHAPE[1] - 1, SHAPE[2] - 1)}[where]
    for channel in (0, 13):
        bad = big.copy()
        bad[0, h, w, channel] += 1e-3
        err, scale = scaled_error(sketch(big), sketch(bad), "sketch")
        assert err > 100 * F64_TOLERANCE * scale, (where, channel, err)


def test_stable_to_float64_rounding(big: np.ndarray) -> None:
    """Inputs that differ by float64 rounding (each value off by at most one ulp) give sketches far inside 1e-9."""
    ulps = counter_uniform("test_sketch:ulp", big.size).reshape(SHAPE)
    nudged = big + np.where(ulps > 0, 1.0, -1.0) * np.spacing(big) * (np.abs(ulps) > 0.5)
    assert np.count_nonzero(nudged != big) > big.size // 3
    err, scale = scaled_error(sketch(big), sketch(nudged), "sketch")
    assert err < 1e-4 * F64_TOLERANCE * scale
    assert not _fails(big, nudged, F64_TOLERANCE)


def test_edge_error_shows_at_float32_tolerance(big: np.ndarray) -> None:
    """A 1e-3 error along the bottom or right edge (where padding rules differ) fails even a float32 comparison
    (1e-4): the last-row / last-column means see it undiluted by the rest of the map."""
    for edge in (np.s_[0, -1, :, :], np.s_[0, :, -1, :]):
        bad = big.copy()
        bad[edge] += 1e-3
        assert _fails(big, bad, F32_TOLERANCE)


def test_compact_keeps_small_arrays_whole() -> None:
    small = np.arange(FULL_LIMIT, dtype=np.float32).reshape(1, 4, 8, FULL_LIMIT // 32)
    kind, value = compact(small)
    assert kind == "full" and value is small
    kind, value = compact(np.zeros((1, 4, 8, 33)))
    assert kind == "sketch" and value.shape == (1, PROJECTIONS + 3 * 33 + 1)


def test_scaled_error_scale() -> None:
    ref = np.array([[0.5, -4.0]])
    assert scaled_error(ref, ref + 1e-3, "full") == pytest.approx((1e-3, 4.0))
    assert scaled_error(ref / 8, ref / 8, "full") == (0.0, 1.0)
    with pytest.raises(ValueError):
        scaled_error(ref, ref[:, :1], "full")
