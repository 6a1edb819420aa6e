"""The input rule of golden cases: images any language can rebuild bit for bit, without a random generator.

Element i (row-major over [B, 3, H, W]) of the input of seed s is

    z = splitmix64(fnv1a64(f"input:{s}") + i)            (uint64 arithmetic, wrapping modulo 2**64)
    r = ((z >> 11) * 2**-53) * 2 - 1                      (float64, exact: r is in [-1, 1))
    x = INPUT_SCALE * r                                   (float64, exact: INPUT_SCALE is 2.0)

then cast to the case's dtype (round to nearest even). The same counter scheme makes the weights
(`swinref.params`, key f"{seed}:{name}"), so a C, Rust or JavaScript test needs one splitmix64 and one FNV-1a.
The values are uniform in [-2, 2): standard deviation 1.15, the spread of normalised ImageNet pixels.
"""

from __future__ import annotations

import math

import numpy as np

from swinref.params import counter_uniform

__all__ = ["INPUT_SCALE", "input_key", "golden_input", "INPUT_RULE", "WEIGHT_RULE"]

INPUT_SCALE = 2.0

INPUT_RULE = (
    'x[i] = 2.0 * r(key, i) over [B, 3, H, W] row-major, key = "input:{seed}"; '
    "r(key, i) = ((splitmix64(fnv1a64(utf8(key)) + i) >> 11) * 2**-53) * 2 - 1 in float64, uint64 wrapping; "
    "then cast to dtype (round to nearest even)"
)
WEIGHT_RULE = (
    'w[i] = offset + scale * r(key, i) over each canonical tensor row-major, key = "{seed}:{name}", float64, then '
    "cast to dtype; (offset, scale): LayerNorm weight (1, 0.1), bias/q_bias/v_bias (0, 0.1), "
    "relative_position_bias_table (0, 0.5), logit_scale (log(10), 0.1), other weights (0, 1.0 / sqrt(fan_in)) "
    "with fan_in = product of shape[1:]; see docs/golden.md"
)


def input_key(seed: int) -> str:
    return f"input:{int(seed)}"


def golden_input(seed: int, shape: tuple[int, ...], dtype: str = "float64") -> np.ndarray:
    """The input of a golden case: [B, 3, H, W] values INPUT_SCALE * r, r from the counter rule."""
    r = counter_uniform(input_key(seed), math.prod(shape))
    return (INPUT_SCALE * r).reshape(shape).astype(dtype)
