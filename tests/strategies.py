"""hypothesis strategies for Swin configurations and input sizes (shared by the analysis and model tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from swinref.config import SwinConfig


@st.composite
def configs(draw, *, max_layers: int = 4, max_depth: int = 3, max_window: int = 12, versions=(1, 2)) -> SwinConfig:
    """A random valid SwinConfig: every stage's head count divides its channels, any window, patch and depths."""
    layers = draw(st.integers(1, max_layers))
    head_dim = draw(st.sampled_from([4, 8, 16, 32]))
    heads0 = draw(st.integers(1, 4))
    embed_dim = head_dim * heads0
    # Heads of stage i divide C*2**i: any divisor of heads0*2**i works (head dims vary across stages).
    heads = []
    for i in range(layers):
        base = heads0 * 2**i
        heads.append(draw(st.sampled_from([d for d in range(1, base + 1) if base % d == 0])))
    version = draw(st.sampled_from(versions))
    patch = draw(st.sampled_from([1, 2, 4]))
    window = draw(st.integers(1, max_window))
    return SwinConfig(
        name="hypothesis", version=version, img_size=(patch, patch), patch_size=patch,
        embed_dim=embed_dim, depths=tuple(draw(st.integers(1, max_depth)) for _ in range(layers)),
        num_heads=tuple(heads), window_size=window, num_classes=draw(st.integers(0, 20)),
        mlp_ratio=draw(st.sampled_from([4.0, 2.0, 3.0])), qkv_bias=draw(st.booleans()),
        patch_norm=draw(st.booleans()),
    )


@st.composite
def configs_with_size(draw, *, max_pixels: int = 320, **kw) -> tuple[SwinConfig, tuple[int, int]]:
    """A config and any image size (H, W) of at least one patch, up to `max_pixels` per side."""
    cfg = draw(configs(**kw))
    p = cfg.patch_size
    size = (draw(st.integers(p, max_pixels)), draw(st.integers(p, max_pixels)))
    return cfg, size


def unpadded_side(cfg: SwinConfig, k: int) -> int:
    """A side length that needs no padding anywhere: p * 2**(L-1) * M * k pixels (every stage a multiple of M)."""
    return cfg.patch_size * 2 ** (cfg.num_layers - 1) * cfg.window_size * k


@st.composite
def configs_with_unpadded_size(draw, *, max_k: int = 3, **kw) -> tuple[SwinConfig, tuple[int, int]]:
    cfg = draw(configs(**kw))
    return cfg, (unpadded_side(cfg, draw(st.integers(1, max_k))), unpadded_side(cfg, draw(st.integers(1, max_k))))


@st.composite
def window_geometries(
    draw, axes: int, *, max_window: int = 4, max_windows: int = 3,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(spatial, padded, window, shift) per axis for `axes` spatial axes: any window side, a map side from one
    position up to `max_windows` windows, padded up to whole windows, and any shift 0 <= s < w (0 included, so
    some axes may be unshifted while others shift)."""
    window = tuple(draw(st.integers(1, max_window)) for _ in range(axes))
    spatial = tuple(draw(st.integers(1, w * max_windows)) for w in window)
    padded = tuple(-(-n // w) * w for n, w in zip(spatial, window))
    shift = tuple(draw(st.integers(0, w - 1)) for w in window)
    return spatial, padded, window, shift
