"""Infer a SwinConfig from canonical parameters, and check parameters against a config.

What the weights tell: embed_dim, patch size and input channels (patch_embed.proj.weight [C, in, p, p]), depths
(blocks per stage), heads (V1: the bias table's second dim; V2: logit_scale [nH, 1, 1]), the window (V1: the first
stage's table has (2M-1)^2 rows), the effective window of every later stage (which reveals the clamp rule and so
the image size), num_classes (head.weight rows, 0 when headless), mlp_ratio, qkv_bias, patch_norm and the version.

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

from swinref.config import ALIASES, REGISTRY, SwinConfig, describe, get_config
from swinref.errors import CheckpointError, ConfigError
from swinref.layout import param_shapes

__all__ = ["infer_config", "check_params", "resolve_config", "hf_config_hints", "timm_config_hints",
           "v2_buffer_config_hints"]

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
# What a Swin V2 checkpoint's weights cannot tell (its position bias is an MLP of coordinates).
_UNRECORDED_V2 = ("img_size", "window_size", "pretrained_window_sizes")


def _shape(params: dict, name: str, source: str, why: str) -> tuple[int, ...]:
    if name not in params:
        raise CheckpointError(
            f"{source} has no {name!r}, which {why}: the file is truncated or not a Swin checkpoint "
            f"(it has {len(params)} parameters, e.g. {sorted(params)[:4]})"
        )
    return tuple(params[name].shape)


def _window_from_table(rows: int, where: str, source: str) -> int:
    # rows = (2M-1)^2
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        raise CheckpointError(f"{source}: {where} has {rows} rows, which is not (2M-1)^2 for any window M")
    return (side + 1) // 2


def infer_config(params: dict, hints: dict[str, Any] | None = None, source: str = "the checkpoint") -> SwinConfig:
    """The configuration the parameters were trained with; `hints` (fields of SwinConfig from the file's own
    config) win over guesses but not over what the weights show."""
    hints = dict(hints or {})
    w = _shape(params, "patch_embed.proj.weight", source, "every Swin model has (the patch embedding)")
    if len(w) != 4 or w[2] != w[3]:
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {w}, expected [C, in_chans, p, p]")
    embed_dim, in_chans, patch = w[0], w[1], w[2]
    blocks: dict[int, int] = {}
    for name in params:
        m = _BLOCK.match(name)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            blocks[i] = max(blocks.get(i, 0), j + 1)
    if not blocks:
        raise CheckpointError(
            f"{source} has no transformer blocks (layers.i.blocks.j.*): truncated or not a Swin model"
        )
    stages = sorted(blocks)
    if stages != list(range(len(stages))):
        raise CheckpointError(f"{source}: stages {stages} are not numbered 0..{len(stages) - 1}: truncated?")
    depths = tuple(blocks[i] for i in stages)
    version = 2 if any(n.endswith("attn.logit_scale") for n in params) else 1
    heads, windows = [], []
    for i in stages:
        b = f"layers.{i}.blocks.0.attn."
        if version == 1:
            t = _shape(params, b + "relative_position_bias_table", source, "a Swin V1 block has")
            heads.append(t[1])
            windows.append(_window_from_table(t[0], b + "relative_position_bias_table", source))
        else:
            heads.append(_shape(params, b + "logit_scale", source, "a Swin V2 block has")[0])
    fc1 = _shape(params, "layers.0.blocks.0.mlp.fc1.weight", source, "every block has")
    detected: dict[str, Any] = dict(
        version=version, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim, depths=depths,
        num_heads=tuple(heads), mlp_ratio=fc1[0] / embed_dim,
        num_classes=params["head.weight"].shape[0] if "head.weight" in params else 0,
        qkv_bias=("layers.0.blocks.0.attn.qkv.bias" if version == 1 else "layers.0.blocks.0.attn.q_bias") in params,
        patch_norm="patch_embed.norm.weight" in params,
    )
    if version == 1:
        detected["window_size"] = windows[0]
    for key, value in detected.items():
        if key in hints and hints[key] != value and key != "window_size":
            raise CheckpointError(
                f"{source}: its config says {key}={hints[key]!r} but the weights show {value!r}; the config file "
                f"does not belong to these weights"
            )
    fields = {**hints, **detected}
    if version == 1 and "window_size" in hints:
        fields["window_size"] = hints["window_size"]
    candidates = _registry_matches(fields)
    if "img_size" not in fields:
        if version == 1:
            fields["img_size"] = _image_size_from_windows(patch, fields["window_size"], windows)
        elif len(candidates) == 1:
            fields.update({k: getattr(candidates[0], k) for k in _UNRECORDED_V2})
    if version == 2 and "window_size" not in fields:
        names = [c.name for c in _registry_matches(fields, ignore=_UNRECORDED_V2)]
        raise CheckpointError(
            f"{source} is a Swin V2 checkpoint, whose weights do not record the window size; pass config=... (CLI: "
            f"--config NAME or --window/--img)"
            + (f"; registered models with these weights' shapes: {', '.join(names)}" if names else "")
        )
    fields.setdefault("layer_norm_eps", 1e-5)
    try:
        cfg = SwinConfig(**{k: v for k, v in fields.items() if k != "name"})
    except ConfigError as exc:
        raise CheckpointError(f"{source}: the detected architecture is not valid: {exc}") from None
    for reg in _registry_matches(dataclasses.asdict(cfg)):
        if _same_arch(reg, cfg):
            return reg
    return cfg


_ARCH_FIELDS = [f.name for f in dataclasses.fields(SwinConfig) if f.name != "name"]


def _same_arch(a: SwinConfig, b: SwinConfig) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in _ARCH_FIELDS)


def _registry_matches(fields: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[SwinConfig]:
    out = []
    for cfg in REGISTRY.values():
        if all(getattr(cfg, k) == (tuple(v) if isinstance(v, list) else v)
               for k, v in fields.items() if k in _ARCH_FIELDS and k not in ignore):
            out.append(cfg)
    return out


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


def v2_buffer_config_hints(buffer_hints: dict[str, Any], params: dict) -> dict[str, Any]:
    """SwinConfig fields from a V2 file's derived buffers (formats.v2_buffer_hints): the window of stage 0, the
    image size the stage windows imply (the clamp rule, as for V1 tables) and the pretrained windows.
    {} when the buffers do not cover every stage of the weights."""
    windows = list(buffer_hints.get("stage_windows") or [])
    stages = {int(m.group(1)) for name in params if (m := _BLOCK.match(name))}
    w = params.get("patch_embed.proj.weight")
    if not windows or len(windows) != len(stages) or w is None or w.ndim != 4:
        return {}
    return {
        "window_size": windows[0],
        "img_size": _image_size_from_windows(int(w.shape[2]), windows[0], windows),
        "pretrained_window_sizes": tuple(buffer_hints["pretrained_window_sizes"]),
    }


# ----------------------------------------------------------------------------------------------------------------


def hf_config_hints(config: dict[str, Any], source: str) -> dict[str, Any]:
    """SwinConfig fields from a Hugging Face config.json (model_type 'swin' or 'swinv2')."""
    model_type = config.get("model_type")
    if model_type not in ("swin", "swinv2"):
        raise CheckpointError(
            f"{source}: config.json has model_type {model_type!r}; swinref reads 'swin' and 'swinv2' models"
        )
    if config.get("use_absolute_embeddings"):
        raise CheckpointError(
            f"{source}: this model uses absolute position embeddings (use_absolute_embeddings=true), which swinref "
            f"does not implement (no released Swin classifier uses them)"
        )
    hints: dict[str, Any] = {"version": 2 if model_type == "swinv2" else 1}
    pairs = {
        "image_size": "img_size", "patch_size": "patch_size", "num_channels": "in_chans", "embed_dim": "embed_dim",
        "depths": "depths", "num_heads": "num_heads", "window_size": "window_size", "mlp_ratio": "mlp_ratio",
        "qkv_bias": "qkv_bias", "layer_norm_eps": "layer_norm_eps",
    }
    for hf_name, name in pairs.items():
        if hf_name in config:
            value = config[hf_name]
            hints[name] = tuple(value) if isinstance(value, list) else value
    if model_type == "swinv2" and "pretrained_window_sizes" in config:
        hints["pretrained_window_sizes"] = tuple(config["pretrained_window_sizes"])
    if isinstance(hints.get("img_size"), int):
        hints["img_size"] = (hints["img_size"], hints["img_size"])
    for key in ("patch_size", "window_size"):  # HF allows [h, w] pairs; swinref needs squares
        value = hints.get(key)
        if isinstance(value, tuple):
            if len(set(value)) != 1:
                raise CheckpointError(f"{source}: {key}={list(value)} is not square; swinref needs square {key}")
            hints[key] = value[0]
    return hints


def timm_config_hints(config: dict[str, Any], source: str) -> dict[str, Any]:
    """SwinConfig fields from the config.json timm writes beside hub weights (save_for_hf / push_to_hub).

    Its model_args hold the constructor arguments that differ from the variant's defaults; the variant's own
    defaults (window, pretrained windows) come from the registry entry of the same model.
    """
    arch = str(config.get("architecture", ""))
    if not arch.startswith("swin"):
        raise CheckpointError(f"{source}: timm architecture {arch!r} is not a Swin model")
    if arch.startswith("swinv2_cr"):
        raise CheckpointError(f"{source}: {arch} is timm's SwinV2-CR, a different architecture swinref does not read")
    hints: dict[str, Any] = {}
    base = _registry_entry_for_timm(arch)
    if base is not None:
        hints.update(img_size=base.img_size, window_size=base.window_size, version=base.version,
                     pretrained_window_sizes=base.pretrained_window_sizes)
    elif arch.startswith("swinv2"):
        hints["version"] = 2
    size = (config.get("pretrained_cfg") or {}).get("input_size")
    if isinstance(size, list) and len(size) == 3:
        hints["img_size"] = (int(size[1]), int(size[2]))
    args = config.get("model_args") or {}
    names = {"img_size": "img_size", "window_size": "window_size", "patch_size": "patch_size",
             "pretrained_window_sizes": "pretrained_window_sizes"}
    for timm_name, name in names.items():
        value = args.get(timm_name)
        if value is None:
            continue
        if timm_name == "img_size":
            value = (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
        elif isinstance(value, list):
            value = tuple(value) if timm_name == "pretrained_window_sizes" else value[0]
        hints[name] = value
    if "depths" in args and "pretrained_window_sizes" in hints and len(hints["pretrained_window_sizes"]) != len(
            args["depths"]):
        hints.pop("pretrained_window_sizes")  # the variant's default belongs to another depth
    return hints


def _registry_entry_for_timm(arch: str) -> SwinConfig | None:
    # timm drops 'patch4' from V2 names and the '_22k' / '_22kto1k_ft' suffixes of the official ones.
    name = arch.split(".")[0]
    v2 = re.sub(r"^(swinv2_[a-z]+)_window", r"\1_patch4_window", name)
    for candidate in (name, v2, v2 + "_22k", v2 + "_22kto1k_ft"):
        if candidate in REGISTRY:
            return REGISTRY[candidate]
    return None


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
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def check_params(params: dict, cfg: SwinConfig, source: str = "the checkpoint", detected: SwinConfig | None = None,
                 ) -> None:
    """Raise CheckpointError listing every missing, unexpected and mis-shaped parameter of `params` for `cfg`."""
    expected = param_shapes(cfg)
    missing = [k for k in expected if k not in params]
    unexpected = sorted(k for k in params if k not in expected)
    misshaped = [
        f"{k} (expected {list(shape)}, got {list(params[k].shape)})"
        for k, shape in expected.items() if k in params and tuple(params[k].shape) != shape
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
                      and k in params and params[k].shape[0] > expected[k][0]})
    if clamped:
        lines.append(
            f"hint: at image size {cfg.img_size[0]}x{cfg.img_size[1]} stage(s) {clamped} are not larger than the "
            f"window, so the official model shrinks their window (and bias table) to the stage size, but this "
            f"checkpoint's tables are for window {cfg.window_size}; give the image size it was built for (img=..., "
            f"CLI --img)"
        )
    if detected is not None and not _same_arch(detected, cfg):
        if detected.name in REGISTRY:
            lines.append(
                f"hint: this looks like a {detected.name} checkpoint; pass config={_short_name(detected)!r} (CLI: "
                f"--config {_short_name(detected)}) or drop the config/variant options to detect it"
            )
        else:
            lines.append(f"hint: the weights look like {describe(detected)}; drop the config/variant options to use it")
    elif any(k.endswith("absolute_pos_embed") or "position_embeddings" in k for k in unexpected):
        lines.append("hint: this model uses absolute position embeddings (ape), which swinref does not implement")
    elif missing and not unexpected and not misshaped:
        lines.append("hint: the file is probably truncated or was saved from a partial model; re-download it")
    raise CheckpointError("\n".join(lines))
