"""The analytic trace against the shapes a real forward pass produces (swinref.model.forward_trace).

The analysis package never runs arrays; this test does, on tiny random models, so it lives apart from
test_analysis.py and imports NumPy.
"""

from __future__ import annotations

import pytest

from swinref.analysis import trace
from swinref.config import SwinConfig
from swinref.errors import InputError
from swinref.plan import POLICIES

np = pytest.importorskip("numpy")
model = pytest.importorskip("swinref.model")
params_mod = pytest.importorskip("swinref.params")

CASES = [
    # (version, image, window, depths, heads): divisible, padded, non-square, clamped last stages
    (1, (32, 32), 4, (2, 2), (1, 2)),
    (1, (30, 22), 3, (2, 2, 2), (1, 2, 4)),
    (1, (13, 41), 2, (1, 2), (2, 2)),
    (2, (28, 20), 3, (2, 1), (1, 2)),
    (2, (16, 16), 8, (2, 2), (1, 2)),
]


@pytest.mark.parametrize("version, image, window, depths, heads", CASES)
def test_trace_matches_forward_trace(version, image, window, depths, heads):
    cfg = SwinConfig(name="tiny", version=version, img_size=image, patch_size=2, embed_dim=8, depths=depths,
                     num_heads=heads, window_size=window, num_classes=5)
    params = params_mod.init_params(cfg, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, *image)).astype(np.float32)
    probes = [f"layers.{i}.blocks.{min(1, d - 1)}" for i, d in enumerate(depths)]
    ran = []
    for policy in POLICIES:  # every policy whose peer accepts this size and these (build-size) tables
        try:
            points = model.forward_trace(params, x, cfg, policy=policy, attn_probs=probes)
        except InputError:
            continue
        ran.append(policy)
        steps = trace(cfg, batch=2, policy=policy)
        analytic = {s.name: s.shape for s in steps if s.runtime}
        runtime = {name: tuple(v.shape) for name, v in points.items() if not name.endswith((".attn", ".attn_probs"))}
        assert analytic == runtime, policy
        # the attention probabilities [B*nW, nH, N, N] agree with the trace's window counts
        blocks = {(s.stage, s.block): s for s in steps if s.runtime and s.block is not None}
        for i, probe in enumerate(probes):
            b = blocks[(i, int(probe.rsplit(".", 1)[1]))]
            assert tuple(points[probe + ".attn_probs"].shape) == (2 * b.windows, heads[i], b.window_tokens,
                                                                  b.window_tokens), policy
    assert ran


from hypothesis import assume, given, settings  # noqa: E402

from strategies import configs_with_size  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(configs_with_size(max_pixels=40, max_layers=3, max_depth=2, max_window=6))
def test_trace_matches_forward_trace_for_random_configs_and_sizes(case):
    cfg, image = case
    cfg = cfg.replace(img=image)
    params = params_mod.init_params(cfg, seed=1)
    x = np.random.default_rng(1).standard_normal((1, 3, *image)).astype(np.float32)
    ran = 0
    for policy in POLICIES:  # every policy whose peer accepts this size and these (build-size) tables
        try:
            points = model.forward_trace(params, x, cfg, policy=policy)
        except InputError:
            continue
        ran += 1
        analytic = {s.name: s.shape for s in trace(cfg, batch=1, policy=policy) if s.runtime}
        runtime = {name: tuple(v.shape) for name, v in points.items() if not name.endswith((".attn", ".attn_probs"))}
        assert analytic == runtime, policy
    assume(ran > 0)
