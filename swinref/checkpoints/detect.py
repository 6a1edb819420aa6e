"""Infer a SwinConfig from canonical parameters, and check parameters against a config.

What the weights tell: embed_dim, patch size and input channels (patch_embed.proj.weight [C, in, p, p]), depths
(blocks per stage), heads (V1: the bias table's second dim; V2: logit_scale [nH, 1, 1]), the window (V1: the first
stage's table has (2M-1)^2 rows), the effective window of every later stage (which reveals the clamp rule and so
the image size), num_classes (head.weight rows, 0 when headless), mlp_ratio, qkv_bias, patch_norm and the version;
a detection backbone's absolute_pos_embed [1, C, Hp, Wp] says ape and its pretraining image size (Hp, Wp) x patch.

What they do not tell: the image size of a model whose stages are not clamped below M, a V2 model's window and
pretrained windows (its position bias is an MLP of coordinates), and layer_norm_eps. Those come from the file's
own config (Hugging Face config.json, swinref metadata), from the registry entry whose architecture matches, or
from the user; a V2 checkpoint without any of these is refused with the candidates listed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

from swinref.checkpoints.arch import param_shape, registry_matches, same_arch
from swinref.checkpoints.bounds import shorten
from swinref.config import ALIASES, REGISTRY, SwinConfig, describe, get_config
from swinref.errors import CheckpointError, ConfigError
from swinref.layout import out_norm_shapes, param_shapes

__all__ = ["infer_config", "check_params", "resolve_config", "buffer_config_hints", "stage_norm_shapes",
           "ordered_params", "checked_hints", "check_param_dtypes"]

_BLOCK = re.compile(r"^layers\.(\d{1,9})\.blocks\.(\d{1,9})\.")
# The official detection backbone's absolute position embedding [1, C, Hp, Wp] at the pretraining grid.
APE = "absolute_pos_embed"
# Whether SwinConfig has the `ape` field (then param_shapes lists the embedding); before it, an optional extra.
_HAS_APE = "ape" in {f.name for f in dataclasses.fields(SwinConfig)}
# What a Swin V2 checkpoint's weights cannot tell (its position bias is an MLP of coordinates).
_UNRECORDED_V2 = ("img_size", "window_size", "pretrained_window_sizes")


def _window_from_table(rows: int, where: str, source: str) -> int:
    # rows = (2M-1)^2
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        raise CheckpointError(f"{source}: {where} has {rows} rows, which is not (2M-1)^2 for any window M")
    return (side + 1) // 2


# What a file's own config may state (config.json, swinref's stored config): generous bounds on every value, so
# that a corrupt or crafted config cannot ask for a million-block model or a number NumPy cannot hold.
_MAX_HINT_INT = 1 << 20
_MAX_STAGES = 16
_MAX_BLOCKS = 1024  # blocks in all stages together (the largest released Swin has 50)
_HINT_BOOLS = ("qkv_bias", "patch_norm", "ape")


def _hint_ok(value: Any, depth: int = 0) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -_MAX_HINT_INT <= value <= _MAX_HINT_INT
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= _MAX_HINT_INT
    if isinstance(value, str):
        return len(value) <= 200
    if isinstance(value, (list, tuple)) and depth == 0:
        return len(value) <= _MAX_STAGES and all(_hint_ok(v, 1) and not isinstance(v, str) for v in value)
    return False


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SwinConfig)
                   if f.default is not dataclasses.MISSING and f.name != "name"}


def _same_kind(value: Any, default: Any) -> bool:
    """A file's value for a SwinConfig field has the kind of the field's default: an integer (or integers, for a
    per-axis value), a real number, true/false, or a sequence of integers (or one integer for every entry)."""
    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (int, tuple)):
        return integer(value) or isinstance(value, (list, tuple)) and all(integer(v) for v in value)
    return True


def checked_hints(hints: Any, source: str) -> dict[str, Any]:
    """`hints` (SwinConfig fields read from a file's own config) when every value is plain and bounded: numbers,
    booleans, short strings, short flat lists; at most _MAX_BLOCKS blocks. CheckpointError naming the field
    otherwise."""
    if not isinstance(hints, dict):
        raise CheckpointError(f"{source}: its config is a {type(hints).__name__}, not an object of fields: corrupt")
    for key, value in hints.items():
        if not isinstance(key, str) or len(key) > 100:
            raise CheckpointError(f"{source}: its config has a field named {shorten(key)}: the config is corrupt")
        wrong = None
        if not _hint_ok(value):
            wrong = "a plain, bounded value"
        elif key in _HINT_BOOLS and not isinstance(value, bool):
            wrong = "true or false"
        elif key in _FIELD_DEFAULTS and not _same_kind(value, _FIELD_DEFAULTS[key]):
            wrong = f"like {_FIELD_DEFAULTS[key]!r}"
        elif key == "depths" and not (isinstance(value, (list, tuple)) and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)
                and sum(value) <= _MAX_BLOCKS):
            wrong = f"a list of block counts (at most {_MAX_BLOCKS} blocks in all)"
        if wrong:
            raise CheckpointError(
                f"{source}: its config gives {key}={shorten(value)}, which should be {wrong}; the config does not "
                f"belong to a Swin model or is corrupt: fix or remove it (or pass config=... / --config)"
            )
    return hints


def check_param_dtypes(params: dict, source: str) -> None:
    """Every parameter must hold real numbers: complex, date, text and object arrays are refused by name (a file
    that loads must also convert and run)."""
    bad = [(k, v) for k, v in params.items() if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf"]
    if bad:
        name, value = bad[0]
        what = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise CheckpointError(
            f"{source}: parameter {shorten(name)} holds {what} values"
            f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; "
            f"Swin weights are real numbers: save them as float32 (or float16 / bfloat16), or the file is corrupt"
        )


def _stage_depths(params: dict, source: str) -> tuple[int, ...]:
    """Blocks per stage from the names layers.i.blocks.j.*: stages and blocks must be numbered 0..n-1 (a name such
    as layers.1.blocks.1000000.norm2.bias is refused, not read as a million blocks)."""
    blocks: dict[int, set[int]] = {}
    for name in params:
        m = _BLOCK.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise CheckpointError(
            f"{source} has no transformer blocks (layers.i.blocks.j.*): truncated or not a Swin model"
        )
    stages = sorted(blocks)
    if stages != list(range(len(stages))):
        raise CheckpointError(f"{source}: stages {shorten(stages)} are not numbered 0..{len(stages) - 1}: truncated "
                              f"or corrupt")
    for i in stages:
        if len(blocks[i]) != max(blocks[i]) + 1:
            missing = sorted(set(range(max(blocks[i]) + 1)) - blocks[i]) if max(blocks[i]) < 4096 else ["..."]
            raise CheckpointError(
                f"{source}: stage {i} has blocks numbered up to {max(blocks[i])} but not {shorten(missing)}: the "
                f"names are corrupt or the file is truncated"
            )
    return tuple(len(blocks[i]) for i in stages)


def _dims(shape: tuple[int, ...], ndim: int, name: str, source: str) -> tuple[int, ...]:
    if len(shape) != ndim or not all(shape):
        raise CheckpointError(f"{source}: {name} has shape {list(shape)}, expected {ndim} non-zero dimensions")
    return shape


def infer_config(params: dict, hints: dict[str, Any] | None = None, source: str = "the checkpoint") -> SwinConfig:
    """The configuration the parameters were trained with; `hints` (fields of SwinConfig from the file's own
    config) win over guesses but not over what the weights show."""
    hints = dict(checked_hints(dict(hints or {}), source))
    w = param_shape(params, "patch_embed.proj.weight", source, "every Swin model has (the patch embedding)")
    if len(w) == 5:  # [C, in, pt, ph, pw]: a Video Swin model
        from swinref.checkpoints.detect_video import infer_video_config

        return infer_video_config(params, hints, source)
    if len(w) != 4 or w[2] != w[3] or not all(w):
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {list(w)}, expected [C, in_chans, p, p]")
    embed_dim, in_chans, patch = w[0], w[1], w[2]
    depths = _stage_depths(params, source)
    stages = list(range(len(depths)))
    version = 2 if any(n.endswith("attn.logit_scale") for n in params) else 1
    heads, windows = [], []
    for i in stages:
        b = f"layers.{i}.blocks.0.attn."
        if version == 1:
            t = _dims(param_shape(params, b + "relative_position_bias_table", source, "a Swin V1 block has"), 2,
                      b + "relative_position_bias_table", source)
            heads.append(t[1])
            windows.append(_window_from_table(t[0], b + "relative_position_bias_table", source))
        else:
            t = param_shape(params, b + "logit_scale", source, "a Swin V2 block has")
            heads.append(_dims(t, 3, b + "logit_scale", source)[0])
    fc1 = _dims(param_shape(params, "layers.0.blocks.0.mlp.fc1.weight", source, "every block has"), 2,
                "layers.0.blocks.0.mlp.fc1.weight", source)
    head = _dims(tuple(params["head.weight"].shape), 2, "head.weight", source) if "head.weight" in params else (0,)
    detected: dict[str, Any] = dict(
        version=version, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim, depths=depths,
        num_heads=tuple(heads), mlp_ratio=fc1[0] / embed_dim, num_classes=head[0],
        qkv_bias=("layers.0.blocks.0.attn.qkv.bias" if version == 1 else "layers.0.blocks.0.attn.q_bias") in params,
        patch_norm="patch_embed.norm.weight" in params,
    )
    if version == 1:
        detected["window_size"] = windows[0]
    if _HAS_APE:
        detected["ape"] = APE in params
    ape = params.get(APE)
    if ape is not None and "img_size" not in hints and ape.ndim == 4:
        # The embedding is stored at the pretraining grid: the image size the backbone was built for.
        hints["img_size"] = (int(ape.shape[2]) * patch, int(ape.shape[3]) * patch)
    for key, value in detected.items():
        if key in hints and hints[key] != value and key != "window_size":
            raise CheckpointError(
                f"{source}: its config says {key}={shorten(hints[key])} but the weights show {shorten(value)}; the "
                f"config file does not belong to these weights"
            )
    fields = {**hints, **detected}
    if version == 1 and "window_size" in hints:
        fields["window_size"] = hints["window_size"]
    candidates = registry_matches(fields)
    if "img_size" not in fields:
        if version == 1:
            fields["img_size"] = _image_size_from_windows(patch, fields["window_size"], windows)
        elif len(candidates) == 1:
            fields.update({k: getattr(candidates[0], k) for k in _UNRECORDED_V2})
    if version == 2 and "window_size" not in fields:
        names = [c.name for c in registry_matches(fields, ignore=_UNRECORDED_V2)]
        raise CheckpointError(
            f"{source} is a Swin V2 checkpoint, whose weights do not record the window size; pass config=... (CLI: "
            f"--config NAME or --window/--img)"
            + (f"; registered models with these weights' shapes: {', '.join(names)}" if names else "")
        )
    fields.setdefault("layer_norm_eps", 1e-5)
    try:
        cfg = SwinConfig(**{k: v for k, v in fields.items() if k != "name"})
    except (ConfigError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{source}: the detected architecture is not valid: {shorten(str(exc), 300)}") from None
    for reg in registry_matches(dataclasses.asdict(cfg)):
        if same_arch(reg, cfg):
            return reg
    return cfg


def _image_size_from_windows(patch: int, window: int, windows: list[int]) -> tuple[int, int]:
    """An image size whose stage plan reproduces the stored tables (the official clamp rule).

    The first stage i whose table is smaller than M was clamped to its resolution: r_i = m_i tokens, so the image
    is patch * m_i * 2**i. Without a clamped stage, the released convention is that the last stage is M x M.
    """
    for i, m in enumerate(windows):
        if m < window:
            side = patch * m * 2**i
            return (side, side)
    side = patch * window * 2 ** (len(windows) - 1)
    return (side, side)


# The first block of each stage, where official, torchvision and OpenMMLab V2 files keep their derived buffers.
_STAGE_BUFFER = re.compile(r"^layers\.(\d{1,6})\.blocks\.0\.attn\.(relative_position_index|relative_coords_table)$")


def buffer_config_hints(buffers: dict[str, Any], params: dict) -> dict[str, Any]:
    """What a V2 file's derived buffers (canonical names, as layouts set them aside) tell about its windows; never
    used for computing, only for detection.

    V2 weights do not record the window (the position bias is an MLP of coordinates), but official, torchvision
    and mmpretrain files also save each block's relative_position_index [N, N] (torchvision: flat [N*N]), which
    gives the stage's window M, and relative_coords_table [1, 2M-1, 2M-1, 2], whose largest entry
    log2(8 (M-1)/(P-1) + 1) / 3 gives the pretrained window P (P = M is the same as none).
    Returns the window of stage 0, the image size the stage windows imply (the clamp rule, as for V1 tables) and
    the pretrained windows; {} for V1 weights or buffers that do not cover every stage.
    """
    if getattr(params.get("patch_embed.proj.weight"), "ndim", 0) == 5:  # Video Swin: the index tells the window
        from swinref.checkpoints.detect_video import video_window_hints

        return video_window_hints(buffers, params)
    if not any(k.endswith("attn.logit_scale") for k in params):
        return {}
    index: dict[int, int] = {}
    coords: dict[int, float] = {}
    for name, value in buffers.items():
        m = _STAGE_BUFFER.match(name)
        if not m:
            continue
        stage = int(m.group(1))
        if m.group(2) == "relative_position_index":
            n = value.shape[0] if value.ndim == 2 else math.isqrt(value.size)
            index[stage] = math.isqrt(n)
        elif value.size:
            coords[stage] = float(np.abs(value.astype(np.float64)).max())
    stages = {int(m.group(1)) for name in params if (m := _BLOCK.match(name))}
    w = params.get("patch_embed.proj.weight")
    if sorted(index) != sorted(stages) or not stages or w is None or w.ndim != 4:
        return {}
    windows = [index[i] for i in sorted(index)]
    pretrained = []
    for i, M in enumerate(windows):
        top = coords.get(i)
        if top is None or M < 2 or top <= 0:
            pretrained.append(0)
            continue
        P = int(round(8.0 * (M - 1) / (2.0 ** (3.0 * top) - 1.0) + 1.0))
        pretrained.append(0 if P == M else P)
    return {
        "window_size": windows[0],
        "img_size": _image_size_from_windows(int(w.shape[2]), windows[0], windows),
        "pretrained_window_sizes": tuple(pretrained),
    }


def resolve_config(config: Any) -> SwinConfig:
    """A user's config argument: a SwinConfig, a registry name or alias, or a dict of SwinConfig fields."""
    if isinstance(config, SwinConfig):
        return config
    if isinstance(config, str):
        return get_config(config)
    if isinstance(config, dict):
        return SwinConfig.from_dict(config)
    raise ConfigError(f"config must be a name, a SwinConfig or a dict of its fields, got {type(config).__name__}")


def _short_name(cfg: SwinConfig) -> str:
    for alias, name in ALIASES.items():
        if name == cfg.name:
            return alias
    return cfg.name


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(item if len(item) <= 200 else shorten(item, 200) for item in items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def stage_norm_shapes(cfg: SwinConfig) -> dict[str, tuple[int, ...]]:
    """The optional per-stage output norms norm0..norm{L-1} (the official detection backbone's names; OpenMMLab
    backbones have them too): LayerNorms over each stage's output, [C_i]. Params that have them and no head are a
    backbone's; swinref.features applies them (swinref.layout.out_norm_shapes)."""
    return out_norm_shapes(cfg)


def ordered_params(params: dict, cfg: SwinConfig) -> dict:
    """params in the official order of param_shapes(cfg), then whichever per-stage output norms they have."""
    out = {name: params[name] for name in param_shapes(cfg)}
    if APE in params and APE not in out:
        out = {APE: params[APE], **out}
    out.update({name: params[name] for name in stage_norm_shapes(cfg) if name in params})
    return out


def check_params(params: dict, cfg: SwinConfig, source: str = "the checkpoint", detected: SwinConfig | None = None,
                 ) -> None:
    """Raise CheckpointError listing every missing, unexpected and mis-shaped parameter of `params` for `cfg`.

    The per-stage output norms (stage_norm_shapes) are optional extras: shape-checked when present."""
    expected = param_shapes(cfg)
    optional = stage_norm_shapes(cfg)
    if not _HAS_APE and APE in params:
        optional[APE] = (1, cfg.embed_dim, *params[APE].shape[2:]) if params[APE].ndim == 4 else (1, cfg.embed_dim)
    missing = [k for k in expected if k not in params]
    unexpected = sorted(k for k in params if k not in expected and k not in optional)
    misshaped = [
        f"{k} (expected {list(shape)}, got {list(params[k].shape)})"
        for k, shape in {**expected, **optional}.items() if k in params and tuple(params[k].shape) != shape
    ]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"{source} does not fit {describe(cfg)}:"]
    if missing:
        lines.append(f"  missing ({len(missing)}): {_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): {_listing(unexpected)}")
    if misshaped:
        lines.append(f"  mis-shaped ({len(misshaped)}): {_listing(misshaped, 6)}")
    clamped = sorted({int(k.split(".")[1]) for k in expected if k.endswith("relative_position_bias_table")
                      and k in params and params[k].ndim and params[k].shape[0] > expected[k][0]})
    if clamped:
        lines.append(
            f"hint: at image size {cfg.img_size[0]}x{cfg.img_size[1]} stage(s) {clamped} are not larger than the "
            f"window, so the official model shrinks their window (and bias table) to the stage size, but this "
            f"checkpoint's tables are for window {cfg.window_size}; give the image size it was built for (img=..., "
            f"CLI --img)"
        )
    if detected is not None and not same_arch(detected, cfg):
        if detected.name in REGISTRY:
            lines.append(
                f"hint: this looks like a {detected.name} checkpoint; pass config={_short_name(detected)!r} (CLI: "
                f"--config {_short_name(detected)}) or drop the config/variant options to detect it"
            )
        else:
            lines.append(f"hint: the weights look like {describe(detected)}; drop the config/variant options to use it")
    elif APE in unexpected and _HAS_APE:
        lines.append("hint: the file has an absolute position embedding (the official detection backbone's ape): "
                     "give ape=True, or drop the config options to detect it")
    elif any(k.endswith("absolute_pos_embed") or "position_embeddings" in k for k in unexpected):
        lines.append("hint: this model uses absolute position embeddings (ape), which swinref does not implement")
    elif missing and not unexpected and not misshaped:
        lines.append("hint: the file is probably truncated or was saved from a partial model; re-download it")
    raise CheckpointError("\n".join(lines))
