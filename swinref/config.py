"""The one configuration type and the registry of released Swin models.

What a configuration does to an input of a given size is decided once, by swinref.plan.

This module imports nothing heavier than the standard library: the analysis commands must answer quickly.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from swinref.errors import ConfigError

__all__ = [
    "SwinConfig",
    "REGISTRY",
    "ALIASES",
    "get_config",
    "list_configs",
    "list_models",
    "PEER_NAMES",
    "parse_size",
    "as_size",
    "parse_int_list",
]

IMAGENET_1K = 1000
IMAGENET_22K = 21841


@dataclass(frozen=True)
class SwinConfig:
    """A Swin architecture. Field names follow the official repository's model arguments.

    `img_size` is (H, W) in pixels; `window_size` is M in tokens; V2 models set `version=2` and, when they were
    fine-tuned from a smaller window, `pretrained_window_sizes` (one per stage, 0 meaning "none").

    A Video Swin model has a clip size `img_size` = (T, H, W) in frames and pixels, and per-axis `patch_size`
    (e.g. (2, 4, 4)) and `window_size` (e.g. (8, 7, 7)); an int there means the same on every axis. Images keep
    ints. `patch` and `window` give the per-axis tuples for either kind.
    """

    name: str = "custom"
    version: int = 1
    img_size: tuple[int, ...] = (224, 224)
    patch_size: int | tuple[int, ...] = 4
    in_chans: int = 3
    num_classes: int = IMAGENET_1K
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int | tuple[int, ...] = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_norm: bool = True
    layer_norm_eps: float = 1e-5
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    # An absolute position embedding added after the patch embedding (the official detection backbone's argument):
    # a learned [1, C, H/p, W/p] grid at img_size, resized bicubically to the input's token grid.
    ape: bool = False

    def __post_init__(self) -> None:
        # Normalise sequences to tuples so the config stays hashable (the plan is cached on it).
        try:
            object.__setattr__(self, "img_size", as_size(self.img_size, "img_size"))
            axes = len(self.img_size)
            object.__setattr__(self, "patch_size", _per_axis(self.patch_size, axes, "patch_size"))
            object.__setattr__(self, "window_size", _per_axis(self.window_size, axes, "window_size"))
            object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
            object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
            pws = tuple(int(w) for w in self.pretrained_window_sizes)
            if len(pws) != len(self.depths) and not any(pws):
                pws = (0,) * len(self.depths)
            object.__setattr__(self, "pretrained_window_sizes", pws)
            _validate(self)
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ConfigError):
                raise
            # Values of the wrong type (a config read from a file, a dict of fields): a number, pair or list of
            # integers was expected where a text, None or an infinite float was given.
            raise ConfigError(f"invalid configuration value ({str(exc)[:200]}); depths, num_heads and "
                              f"pretrained_window_sizes are lists of integers, img_size an integer or (H, W), "
                              f"mlp_ratio and layer_norm_eps numbers") from None

    # Derived quantities, named as in the paper and the official code.
    @property
    def is_video(self) -> bool:
        """A Video Swin model: clips [B, Cin, T, H, W]."""
        return len(self.img_size) == 3

    @property
    def patch(self) -> tuple[int, ...]:
        """The patch size on every spatial axis."""
        p = self.patch_size
        return p if isinstance(p, tuple) else (p,) * len(self.img_size)

    @property
    def window(self) -> tuple[int, ...]:
        """The configured window on every spatial axis."""
        m = self.window_size
        return m if isinstance(m, tuple) else (m,) * len(self.img_size)

    @property
    def num_layers(self) -> int:
        """Number of stages."""
        return len(self.depths)

    @property
    def num_features(self) -> int:
        """Channels of the last stage: C * 2**(num_layers-1)."""
        return self.embed_dim * 2 ** (self.num_layers - 1)

    def stage_dim(self, i: int) -> int:
        """Channels of stage i: C * 2**i."""
        return self.embed_dim * 2**i

    def replace(self, **overrides: Any) -> SwinConfig:
        """A copy with some fields changed (validated again). Accepts the short CLI names too (img, window, ...)."""
        return _apply_overrides(self, overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(self.img_size)
        for key in ("patch_size", "window_size"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        d["depths"] = list(self.depths)
        d["num_heads"] = list(self.num_heads)
        d["pretrained_window_sizes"] = list(self.pretrained_window_sizes)
        if not self.ape:
            del d["ape"]  # a later field, written only when set: configs stored before it keep their bytes
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SwinConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)


def as_size(value: Any, what: str = "size") -> tuple[int, ...]:
    """An image size (H, W) or a clip size (T, H, W); an int is a square image."""
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    try:
        size = tuple(int(n) for n in value)
    except (TypeError, ValueError, OverflowError):
        size = ()
    if len(size) not in (2, 3):
        raise ConfigError(f"{what} must be an int, a pair (H, W) or, for video, a triple (T, H, W); got {value!r}")
    return size


def _per_axis(value: Any, axes: int, what: str) -> int | tuple[int, ...]:
    """Images keep one int for every axis; clips get one value per axis (T, H, W)."""
    if isinstance(value, (list, tuple)):
        try:
            values = tuple(int(v) for v in value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{what} must be integers, got {value!r}") from None
        if len(values) != axes:
            raise ConfigError(f"{what} {list(values)} has {len(values)} entries but the input has {axes} axes; give "
                              f"one per axis ({'T, H, W' if axes == 3 else 'or one int for H and W'})")
        if axes == 2:
            if values[0] != values[1]:
                raise ConfigError(f"{what} must be the same on H and W for images, got {list(values)}")
            return values[0]
        return values
    if axes == 3 and isinstance(value, int) and not isinstance(value, bool):
        return (value,) * 3
    return value


def _validate(cfg: SwinConfig) -> None:
    if cfg.version not in (1, 2):
        raise ConfigError(f"version must be 1 or 2, got {cfg.version}")
    for fname in ("patch_size", "window_size"):
        for value in getattr(cfg, fname[:-5]):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{fname} must be an integer >= 1 (one per axis T, H, W for a clip), got "
                                  f"{getattr(cfg, fname)!r}")
    for fname in ("in_chans", "num_classes", "embed_dim"):
        value = getattr(cfg, fname)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if fname == "num_classes" else 1):
            lowest = "0 (no head)" if fname == "num_classes" else "1"
            raise ConfigError(f"{fname} must be an integer >= {lowest}, got {value!r}")
    if not cfg.depths:
        raise ConfigError("depths must list at least one stage, e.g. --depths 2,2,6,2")
    if len(cfg.depths) != len(cfg.num_heads):
        raise ConfigError(
            f"depths has {len(cfg.depths)} stages but num_heads has {len(cfg.num_heads)}: give one head count per "
            f"stage (e.g. --depths 2,2,6,2 --heads 3,6,12,24)"
        )
    if any(d < 1 for d in cfg.depths):
        raise ConfigError(f"every stage needs at least one block, got depths {list(cfg.depths)}")
    if any(h < 1 for h in cfg.num_heads):
        raise ConfigError(f"every stage needs at least one head, got num_heads {list(cfg.num_heads)}")
    for i, heads in enumerate(cfg.num_heads):
        dim = cfg.stage_dim(i)
        if dim % heads:
            divisors = sorted((h for h in range(1, dim + 1) if dim % h == 0), key=lambda h: (abs(h - heads), h))[:4]
            raise ConfigError(
                f"stage {i} has {dim} channels (embed_dim {cfg.embed_dim} * 2**{i}), which {heads} heads do not "
                f"divide; choose a head count that divides {dim} (nearest to {heads}: {sorted(divisors)}) or change --embed-dim"
            )
    if not (cfg.mlp_ratio > 0):
        raise ConfigError(f"mlp_ratio must be positive, got {cfg.mlp_ratio}")
    if not (0 < cfg.layer_norm_eps < 1):
        raise ConfigError(f"layer_norm_eps must be in (0, 1), got {cfg.layer_norm_eps}")
    if any(n < q for n, q in zip(cfg.img_size, cfg.patch)):
        size, patch = _fmt(cfg.img_size), _fmt(cfg.patch)
        raise ConfigError(f"input {size} is smaller than one {patch} patch; use an input of at least {patch} or a "
                          f"smaller --patch")
    if cfg.is_video and cfg.version != 1:
        raise ConfigError("Video Swin is a V1 model: version must be 1 for a clip size (T, H, W)")
    if len(cfg.pretrained_window_sizes) != cfg.num_layers:
        raise ConfigError(
            f"pretrained_window_sizes needs one entry per stage ({cfg.num_layers}), got "
            f"{list(cfg.pretrained_window_sizes)}"
        )
    if any(p < 0 for p in cfg.pretrained_window_sizes):
        raise ConfigError(f"pretrained_window_sizes must be >= 0, got {list(cfg.pretrained_window_sizes)}")
    if cfg.version == 1 and any(cfg.pretrained_window_sizes):
        raise ConfigError("pretrained_window_sizes only applies to Swin V2 (version=2)")
    if not isinstance(cfg.ape, bool):
        raise ConfigError(f"ape (absolute position embedding) must be True or False, got {cfg.ape!r}")


# ---------------------------------------------------------------------------------------------------------------
# Registry of released configurations, with the names used by the official repository and timm.

_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))


def _v1(name: str, size: dict, img: int, window: int, classes: int = IMAGENET_1K) -> SwinConfig:
    return SwinConfig(name=name, img_size=(img, img), window_size=window, num_classes=classes, **size)


def _v2(name: str, size: dict, img: int, window: int, classes: int = IMAGENET_1K, pretrained=(0, 0, 0, 0)):
    return SwinConfig(
        name=name, version=2, img_size=(img, img), window_size=window, num_classes=classes,
        pretrained_window_sizes=pretrained, **size,
    )


def _build_registry() -> dict[str, SwinConfig]:
    v1 = [
        _v1("swin_tiny_patch4_window7_224", _TINY, 224, 7),
        _v1("swin_small_patch4_window7_224", _SMALL, 224, 7),
        _v1("swin_base_patch4_window7_224", _BASE, 224, 7),
        _v1("swin_large_patch4_window7_224", _LARGE, 224, 7),
        _v1("swin_base_patch4_window12_384", _BASE, 384, 12),
        _v1("swin_large_patch4_window12_384", _LARGE, 384, 12),
        # The "c24" model: Swin-T widths with 24 channels per head (4 heads in the first stage), window 8 at 256.
        SwinConfig(name="swin_tiny_c24_patch4_window8_256", img_size=(256, 256), window_size=8,
                   embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32)),
        # ImageNet-22K heads (21841 classes), as released by the official repository.
        _v1("swin_tiny_patch4_window7_224_22k", _TINY, 224, 7, IMAGENET_22K),
        _v1("swin_small_patch4_window7_224_22k", _SMALL, 224, 7, IMAGENET_22K),
        _v1("swin_base_patch4_window7_224_22k", _BASE, 224, 7, IMAGENET_22K),
        _v1("swin_large_patch4_window7_224_22k", _LARGE, 224, 7, IMAGENET_22K),
        _v1("swin_base_patch4_window12_384_22k", _BASE, 384, 12, IMAGENET_22K),
        _v1("swin_large_patch4_window12_384_22k", _LARGE, 384, 12, IMAGENET_22K),
    ]
    ft = (12, 12, 12, 6)
    v2 = [
        _v2("swinv2_tiny_patch4_window8_256", _TINY, 256, 8),
        _v2("swinv2_tiny_patch4_window16_256", _TINY, 256, 16),
        _v2("swinv2_small_patch4_window8_256", _SMALL, 256, 8),
        _v2("swinv2_small_patch4_window16_256", _SMALL, 256, 16),
        _v2("swinv2_base_patch4_window8_256", _BASE, 256, 8),
        _v2("swinv2_base_patch4_window16_256", _BASE, 256, 16),
        _v2("swinv2_base_patch4_window12_192_22k", _BASE, 192, 12, IMAGENET_22K),
        _v2("swinv2_large_patch4_window12_192_22k", _LARGE, 192, 12, IMAGENET_22K),
        _v2("swinv2_base_patch4_window12to16_192to256_22kto1k_ft", _BASE, 256, 16, pretrained=ft),
        _v2("swinv2_base_patch4_window12to24_192to384_22kto1k_ft", _BASE, 384, 24, pretrained=ft),
        _v2("swinv2_large_patch4_window12to16_192to256_22kto1k_ft", _LARGE, 256, 16, pretrained=ft),
        _v2("swinv2_large_patch4_window12to24_192to384_22kto1k_ft", _LARGE, 384, 24, pretrained=ft),
    ]
    return {cfg.name: cfg for cfg in v1 + v2 + _video_registry()}


KINETICS_400 = 400
KINETICS_600 = 600
SSV2 = 174


def _video(name: str, size: dict, window: tuple[int, int, int] = (8, 7, 7), classes: int = KINETICS_400,
           frames: int = 32) -> SwinConfig:
    return SwinConfig(name=name, img_size=(frames, 224, 224), patch_size=(2, 4, 4), window_size=window,
                      num_classes=classes, **size)


def _video_registry() -> list[SwinConfig]:
    """Video Swin: torchvision's names and the official repository's config names (its clips are 32 frames)."""
    return [
        _video("swin3d_t", _TINY),
        _video("swin3d_s", _SMALL),
        _video("swin3d_b", _BASE),
        _video("swin_tiny_patch244_window877_kinetics400_1k", _TINY),
        _video("swin_small_patch244_window877_kinetics400_1k", _SMALL),
        _video("swin_base_patch244_window877_kinetics400_1k", _BASE),
        _video("swin_base_patch244_window877_kinetics400_22k", _BASE),
        _video("swin_base_patch244_window877_kinetics600_22k", _BASE, classes=KINETICS_600),
        _video("swin_base_patch244_window1677_sthv2", _BASE, window=(16, 7, 7), classes=SSV2),
    ]


REGISTRY: dict[str, SwinConfig] = _build_registry()

ALIASES: dict[str, str] = {
    "T": "swin_tiny_patch4_window7_224",
    "S": "swin_small_patch4_window7_224",
    "B": "swin_base_patch4_window7_224",
    "L": "swin_large_patch4_window7_224",
    "B384": "swin_base_patch4_window12_384",
    "L384": "swin_large_patch4_window12_384",
    "V2-T": "swinv2_tiny_patch4_window8_256",
    "V2-S": "swinv2_small_patch4_window8_256",
    "V2-B": "swinv2_base_patch4_window8_256",
    "3D-T": "swin3d_t",
    "3D-S": "swin3d_s",
    "3D-B": "swin3d_b",
    "SSV2-B": "swin_base_patch244_window1677_sthv2",
}


# The names timm 1.0 (`timm.list_models("swin*")`) and torchvision 0.29 (`torchvision.models.list_models()`) give
# the registered architectures, where they differ from the registry's (timm's V1 names are the registry's own);
# tests/test_peer_names.py builds each peer model and checks that its parameters are the config's, name by name.
PEER_NAMES: dict[str, str] = {
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
    "swin_v2_t": "swinv2_tiny_patch4_window8_256",
    "swin_v2_s": "swinv2_small_patch4_window8_256",
    "swin_v2_b": "swinv2_base_patch4_window8_256",
    "swinv2_tiny_window8_256": "swinv2_tiny_patch4_window8_256",
    "swinv2_tiny_window16_256": "swinv2_tiny_patch4_window16_256",
    "swinv2_small_window8_256": "swinv2_small_patch4_window8_256",
    "swinv2_small_window16_256": "swinv2_small_patch4_window16_256",
    "swinv2_base_window8_256": "swinv2_base_patch4_window8_256",
    "swinv2_base_window16_256": "swinv2_base_patch4_window16_256",
    "swinv2_base_window12_192": "swinv2_base_patch4_window12_192_22k",
    "swinv2_large_window12_192": "swinv2_large_patch4_window12_192_22k",
    "swinv2_base_window12to16_192to256": "swinv2_base_patch4_window12to16_192to256_22kto1k_ft",
    "swinv2_base_window12to24_192to384": "swinv2_base_patch4_window12to24_192to384_22kto1k_ft",
    "swinv2_large_window12to16_192to256": "swinv2_large_patch4_window12to16_192to256_22kto1k_ft",
    "swinv2_large_window12to24_192to384": "swinv2_large_patch4_window12to24_192to384_22kto1k_ft",
}

# Peer model families of another architecture: named in the error instead of a near miss that would not load.
OTHER_ARCHITECTURES: dict[str, str] = {
    "swin_s3_": "timm's Swin-S3 (searched window sizes per stage)",
    "swinv2_cr_": "timm's Swin-V2 CR (a reimplementation with its own norms and scaled cosine attention)",
}


def list_configs() -> list[str]:
    return list(REGISTRY)


def list_models(pattern: str = "*", *, peer_names: bool = False) -> list[str]:
    """The registered names matching a shell pattern, case-insensitive, as timm.list_models:
    `list_models("swinv2*")`. `peer_names=True` also lists the matching aliases and timm / torchvision names."""
    import fnmatch

    names = list(REGISTRY) + ((list(ALIASES) + list(PEER_NAMES)) if peer_names else [])
    return [n for n in names if fnmatch.fnmatchcase(n.lower(), str(pattern).lower())]


def _canonical_name(name: str) -> str:
    """Map the spellings people use to a registry name.

    Accepts an alias (T, S, B, L: any case), a timm name with a pretrained tag (`swin_tiny_patch4_window7_224.ms_in1k`),
    and a Hugging Face id (`microsoft/swin-tiny-patch4-window7-224`).
    """
    raw = name.strip()
    for alias, target in ALIASES.items():
        if raw.upper() == alias:
            return target
    key = raw.split("/")[-1].split(".")[0].lower().replace("-", "_")
    if key in REGISTRY:
        return key
    return PEER_NAMES.get(key, raw)


# CLI and keyword spellings of the config fields.
_OVERRIDE_NAMES = {
    "img": "img_size", "image_size": "img_size", "img_size": "img_size",
    "window": "window_size", "window_size": "window_size",
    "embed_dim": "embed_dim", "dim": "embed_dim",
    "depths": "depths",
    "heads": "num_heads", "num_heads": "num_heads",
    "classes": "num_classes", "num_classes": "num_classes",
    "patch": "patch_size", "patch_size": "patch_size",
    "in_chans": "in_chans", "mlp_ratio": "mlp_ratio", "qkv_bias": "qkv_bias", "patch_norm": "patch_norm",
    "version": "version", "layer_norm_eps": "layer_norm_eps", "name": "name",
    "pretrained_window_sizes": "pretrained_window_sizes", "ape": "ape",
    "frames": "frames", "clip": "img_size",
}


def _apply_overrides(cfg: SwinConfig, overrides: dict[str, Any]) -> SwinConfig:
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        target = _OVERRIDE_NAMES.get(key)
        if target is None:
            close = difflib.get_close_matches(key, list(_OVERRIDE_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config override {key!r}{hint} (known: {sorted(set(_OVERRIDE_NAMES))})")
        if target in ("depths", "num_heads", "pretrained_window_sizes") and isinstance(value, str):
            value = parse_int_list(value, target)
        if target == "ape" and isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            value = value.lower() in ("true", "1")
        if target in ("patch_size", "window_size") and isinstance(value, str):
            value = parse_int_list(value.replace("x", ","), target)
            value = value[0] if len(value) == 1 else value
        changes[target] = value
    if cfg.is_video:
        _video_size_changes(cfg, changes)
    elif "frames" in changes:
        raise ConfigError(f"{cfg.name} is an image model; frames apply to Video Swin models (e.g. swin3d_t)")
    if not changes:
        return cfg
    # A V2 model fine-tuned from smaller windows keeps its pretrained window sizes when depths stay the same.
    if "depths" in changes and len(changes["depths"]) != len(cfg.depths) and "pretrained_window_sizes" not in changes:
        changes["pretrained_window_sizes"] = (0,) * len(changes["depths"])
    new = dataclasses.replace(cfg, **changes)
    if "name" in changes or new == cfg or cfg.name not in REGISTRY:
        return new  # an unregistered (custom) config keeps its own name
    # The name must not claim a released model the config no longer is: take the registered name of an identical
    # architecture (B with --img 384 --window 12 is swin_base_patch4_window12_384), else say what changed.
    same = next((c.name for c in REGISTRY.values() if dataclasses.replace(c, name=new.name) == new), None)
    if same is None:
        changed = [f"{k}={_short(k, getattr(new, k))}" for k in _FIELD_ORDER
                   if getattr(new, k) != getattr(cfg, k) and k in changes]
        same = f"{cfg.name}[{','.join(changed)}]" if changed else cfg.name
    return dataclasses.replace(new, name=same)


def _video_size_changes(cfg: SwinConfig, changes: dict[str, Any]) -> None:
    """A clip model keeps its frame count when given an image size (224, or H x W), and takes `frames` as T."""
    frames = changes.pop("frames", None)
    size = changes.get("img_size")
    if size is not None:
        size = as_size(size, "img_size")
        if len(size) == 2:
            size = (cfg.img_size[0], *size)
    if frames is not None:
        try:
            t = int(frames)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"frames must be a positive integer, got {frames!r}") from None
        if t < 1:
            raise ConfigError(f"frames must be a positive integer, got {frames!r}")
        size = (t, *(size or cfg.img_size)[1:])
    if size is not None:
        changes["img_size"] = size


_FIELD_ORDER = ("version", "img_size", "patch_size", "in_chans", "embed_dim", "depths", "num_heads", "window_size",
                "mlp_ratio", "qkv_bias", "patch_norm", "layer_norm_eps", "pretrained_window_sizes", "num_classes", "ape")


def _short(field_name: str, value: Any) -> str:
    if field_name == "img_size":
        return _fmt(value)
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return str(value)


def get_config(name: str | SwinConfig = "T", **overrides: Any) -> SwinConfig:
    """A registered configuration by name or alias, with any fields overridden.

    >>> get_config("T", img="800x1333").img_size
    (800, 1333)
    """
    if isinstance(name, SwinConfig):
        return _apply_overrides(name, overrides)
    key = _canonical_name(str(name))
    if key not in REGISTRY:
        other = next((what for prefix, what in OTHER_ARCHITECTURES.items() if key.lower().startswith(prefix)), None)
        if other is not None:
            raise ConfigError(f"{name!r} is {other}, an architecture swinref does not implement; run `swinref "
                              f"configs` for the ones it does")
        candidates = list(REGISTRY) + list(ALIASES) + list(PEER_NAMES)
        close = difflib.get_close_matches(key.lower(), [c.lower() for c in candidates], n=3, cutoff=0.5)
        if close:
            lookup = {c.lower(): c for c in candidates}
            hint = "did you mean " + " or ".join(repr(lookup[c]) for c in close) + "?"
        else:
            hint = "run `swinref configs` to list the registered names"
        raise ConfigError(f"unknown configuration {name!r}; {hint}")
    return _apply_overrides(REGISTRY[key], overrides)


_SIZE_RE = re.compile(r"^\s*(\d{1,9})\s*(?:[xX×,]\s*(\d{1,9})\s*(?:[xX×,]\s*(\d{1,9}))?)?\s*$")


def parse_size(text: str) -> tuple[int, ...]:
    """'224' -> (224, 224); '800x1333' -> (800, 1333) as H x W; '32x224x224' -> (32, 224, 224) as T x H x W."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ConfigError(f"cannot read size {text!r}: write one number (224), H x W (800x1333) or, for a clip, "
                          f"T x H x W (32x224x224)")
    first = int(m.group(1))
    size = (first, first) if m.group(2) is None else tuple(int(g) for g in m.groups() if g is not None)
    if min(size) < 1:
        raise ConfigError(f"size must be positive, got {text!r}")
    return size


def _fmt(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


def parse_int_list(text: str, what: str = "list") -> tuple[int, ...]:
    """'2,2,6,2' -> (2, 2, 6, 2)."""
    parts = [p for p in re.split(r"[,\s]+", str(text).strip()) if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers like 2,2,6,2, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} must not be empty (e.g. 2,2,6,2)")
    return values


def describe(cfg: SwinConfig) -> str:
    """One line: 'swin_tiny_patch4_window7_224: V1, 224x224, C=96, depths 2,2,6,2, heads 3,6,12,24, M=7'."""
    window = cfg.window_size if not cfg.is_video else _fmt(cfg.window)
    parts = [
        "Video Swin" if cfg.is_video else f"V{cfg.version}", _fmt(cfg.img_size),
        f"patch {cfg.patch_size if not cfg.is_video else _fmt(cfg.patch)}", f"C={cfg.embed_dim}",
        "depths " + ",".join(map(str, cfg.depths)), "heads " + ",".join(map(str, cfg.num_heads)),
        f"M={window}", f"{cfg.num_classes} classes",
    ]
    if any(cfg.pretrained_window_sizes):
        parts.append("pretrained windows " + ",".join(map(str, cfg.pretrained_window_sizes)))
    if cfg.ape:
        parts.append("absolute position embedding")
    return f"{cfg.name}: " + ", ".join(parts)

