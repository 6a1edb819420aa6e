"""Hugging Face transformers' layout (SwinForImageClassification / Swinv2ForImageClassification / SwinModel,
verified against transformers 5.23.0), both generations of names.

    [swin.|swinv2.]embeddings.{patch_embeddings.projection, norm}, encoder.layers.i.blocks.j.{layernorm_before,
    attention..., layernorm_after, ...}, encoder.layers.i.downsample.* (end of stage i), layernorm; classifier.
    legacy   attention.self.{query,key,value,relative_position_bias_table}, attention.output.dense,
             intermediate.dense, output.dense (Hub checkpoints; Swin V2 still uses them in memory in 5.23)
    current  attention.{q,k,v,o}_proj, attention.relative_position_bias.relative_position_bias_table, mlp.fc1/fc2
             (transformers 5's Swin V1 in memory; its conversion_mapping reads the legacy names)
    V2       attention.self.{logit_scale, continuous_position_bias_mlp.{0,2}}; key has no bias.

The official qkv stacks q | k | v rows, each head-major, which is how the three projections are laid out.
from_canonical writes the names the installed generation keeps in memory: current for V1, legacy for V2.
A model directory has config.json beside the weights (model_type swin / swinv2).

Backbones (AutoBackbone; config.json: architectures SwinBackbone / Swinv2Backbone, out_features ['stage1', ...],
out_indices [1, ...], stage 0 being the 'stem'):
    SwinBackbone    hidden_states_norms.stageN.* = norm{N-1} (one LayerNorm per output stage, not under 'swin.').
                    In memory (5.23) the model sits under 'swin.' with an unused swin.layernorm; save_pretrained
                    writes embeddings.* / encoder.* unprefixed in the legacy names but keeps swin.layernorm.*; 4.x
                    files have no layernorm at all.
    Swinv2Backbone  embeddings.* / encoder.* only: no output norms and no final norm.
A backbone file without a final norm gets `norm` from its last stage's output norm (base.alias_final_norm), or,
with none at all (Swinv2Backbone), the identity LayerNorm, said in the notes: its features are the file's, its
pooled output is not a trained norm's.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import (
    APE, Notes, Rule, Rules, alias_final_norm, ape_from_tokens, ape_to_tokens, arrays, identity_final_norm, put,
    stage_count, translate,
)
from swinref.checkpoints.bounds import shorten
from swinref.config import SwinConfig
from swinref.errors import CheckpointError

NAME = "transformers"
SIGNATURE = "embeddings.patch_embeddings.projection.weight"

_BLOCK = "layers.{s}.blocks.{b}."
_HF_BLOCK = "encoder.layers.{s}.blocks.{b}."
# Per-block names (canonical, current, legacy). q/k/v go through the temporary canonical names attn.q/k/v.*.
_BLOCK_NAMES = [
    ("norm1.", "layernorm_before.", "layernorm_before."),
    ("norm2.", "layernorm_after.", "layernorm_after."),
    ("attn.proj.", "attention.o_proj.", "attention.output.dense."),
    ("attn.q.", "attention.q_proj.", "attention.self.query."),
    ("attn.k.", "attention.k_proj.", "attention.self.key."),
    ("attn.v.", "attention.v_proj.", "attention.self.value."),
    ("attn.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table",
     "attention.self.relative_position_bias_table"),
    ("attn.relative_position_index", "attention.relative_position_bias.relative_position_index",
     "attention.self.relative_position_index"),
    ("attn.logit_scale", "attention.self.logit_scale", "attention.self.logit_scale"),
    ("attn.cpb_mlp.", "attention.self.continuous_position_bias_mlp.",
     "attention.self.continuous_position_bias_mlp."),
    ("attn.relative_coords_table", "attention.self.relative_coords_table", "attention.self.relative_coords_table"),
    ("mlp.fc1.", "mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "mlp.fc2.", "output.dense."),
]
_TOP = [
    ("absolute_pos_embed", "embeddings.position_embeddings"),  # [1, C, Hp, Wp] <-> [1, Hp*Wp, C]
    ("patch_embed.proj.", "embeddings.patch_embeddings.projection."),
    ("patch_embed.norm.", "embeddings.norm."),
    ("layers.{s}.downsample.", "encoder.layers.{s}.downsample."),
    ("norm.", "layernorm."),
]

# current name -> legacy name, for files written for older releases (tools/make_peer_fixtures.py's hf_legacy/).
LEGACY_RENAMES = tuple((f".{cur}", f".{old}") for _, cur, old in _BLOCK_NAMES if cur != old)


# SwinBackbone's per-stage output norms, outside the 'swin.' model in memory and in files.
_STAGE_NORMS = Rule("norm{s}.", "hidden_states_norms.stage{s+1}.")


def _rules(prefix: str, legacy_first: bool) -> Rules:
    pairs = [_STAGE_NORMS]
    pairs += [Rule(_BLOCK + c, prefix + _HF_BLOCK + (old if legacy_first else cur)) for c, cur, old in _BLOCK_NAMES]
    pairs += [Rule(_BLOCK + c, prefix + _HF_BLOCK + (cur if legacy_first else old)) for c, cur, old in _BLOCK_NAMES]
    pairs += [Rule(c, prefix + hf) for c, hf in _TOP]
    return Rules(pairs + [Rule("head.", "classifier.")])


_WRITE = {1: _rules("swin.", legacy_first=False), 2: _rules("swinv2.", legacy_first=True)}
_WRITE_V2_BACKBONE = _rules("", legacy_first=True)
_QKV = re.compile(r"^(layers\.\d+\.blocks\.\d+\.attn\.)([qkv])\.(weight|bias)$")


def recognise(keys: Collection[str]) -> bool:
    return any("embeddings.patch_embeddings." in k for k in keys)


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    notes = Notes()
    # SwinForImageClassification prefixes the backbone with 'swin.' (Swinv2: 'swinv2.'); SwinModel has none.
    notes.prefix = next((p for p in ("swin.", "swinv2.") if any(k.startswith(p + "embeddings.") for k in sd)), None)
    if notes.prefix is None and "layernorm.weight" not in sd:
        # SwinBackbone saved by transformers 5: the model unprefixed, but its (unused) final norm under 'swin.'
        sd = {("layernorm." + k[len("swin.layernorm."):] if k.startswith("swin.layernorm.") else k): v
              for k, v in sd.items()}
    rules = _rules(notes.prefix or "", legacy_first=False)
    params = translate(sd, rules.to_canonical, notes)
    qkv: dict[str, dict[str, np.ndarray]] = {}  # block prefix -> {'q.weight': ..., ...}
    for name in [n for n in params if _QKV.match(n)]:
        m = _QKV.match(name)
        qkv.setdefault(m.group(1), {})[f"{m.group(2)}.{m.group(3)}"] = params.pop(name)
    for prefix, parts in qkv.items():
        missing = [f"{w}.weight" for w in ("query", "key", "value") if f"{w[0]}.weight" not in parts]
        if missing:
            raise CheckpointError(
                f"{source}: block {prefix[:-len('.attn.')]} has only part of its attention projections (missing "
                f"{', '.join(missing)}): the file is truncated or not a Swin checkpoint"
            )
        params[prefix + "qkv.weight"] = np.concatenate([parts["q.weight"], parts["k.weight"], parts["v.weight"]])
        if prefix + "logit_scale" in params:
            # Swin V2: key has no bias; q and v biases are separate parameters in the official layout.
            for which in ("q", "v", "k"):  # a k bias is kept as attn.k_bias, which the shape check reports
                if f"{which}.bias" in parts:
                    put(params, prefix + f"{which}_bias", parts[f"{which}.bias"], prefix + f"{which}.bias")
        elif any(f"{w}.bias" in parts for w in "qkv"):
            if not all(f"{w}.bias" in parts for w in "qkv"):
                raise CheckpointError(f"{source}: block {prefix[:-len('.attn.')]} has biases for only some of "
                                      f"query/key/value")
            params[prefix + "qkv.bias"] = np.concatenate([parts["q.bias"], parts["k.bias"], parts["v.bias"]])
    if APE in params:
        params[APE] = ape_from_tokens(params[APE], "embeddings.position_embeddings", source)
    _backbone_final_norm(params, notes)
    return params, notes


def _backbone_final_norm(params: dict[str, np.ndarray], notes: Notes) -> None:
    """A backbone's file has no final norm (SwinBackbone 4.x, Swinv2Backbone): take the last stage's output norm,
    or else the identity, and say so."""
    if "norm.weight" in params or "head.weight" in params or "patch_embed.proj.weight" not in params:
        return
    alias_final_norm(params, notes)
    identity_final_norm(params, notes, "a Swinv2Backbone")


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig, *, backbone: bool | None = None
                   ) -> dict[str, np.ndarray]:
    """The state dict transformers keeps in memory: SwinForImageClassification / SwinModel under 'swin.' (V1),
    Swinv2ForImageClassification under 'swinv2.' (V2); a SwinBackbone's when params hold per-stage output norms
    (norm{i} -> hidden_states_norms.stage{i+1}; its swin.layernorm is `norm`). backbone=True with V2 writes a
    Swinv2Backbone's (unprefixed, no norms at all); backbone=None decides from the norms."""
    params = arrays(params)
    has_stage_norms = any(k.startswith("norm") and k[4:5].isdigit() for k in params)
    if backbone is None:
        backbone = has_stage_norms
    rules = _WRITE[cfg.version]
    if backbone and cfg.version == 2:
        if has_stage_norms or "head.weight" in params:
            raise CheckpointError(
                "transformers' Swinv2Backbone has no per-stage output norms and no head: write the params without "
                "norm0.. and head (or as a Swinv2ForImageClassification, backbone=False)"
            )
        params = {k: v for k, v in params.items() if not k.startswith("norm.")}
        rules = _WRITE_V2_BACKBONE
    elif backbone and "norm.weight" not in params and f"norm{stage_count(params) - 1}.weight" in params:
        last = stage_count(params) - 1  # SwinBackbone keeps SwinModel's layernorm: the last stage's output norm
        params["norm.weight"], params["norm.bias"] = params[f"norm{last}.weight"], params[f"norm{last}.bias"]
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        if name == APE:
            value = ape_to_tokens(value)
        parts = {name: value}
        if name.endswith(".attn.qkv.weight") or name.endswith(".attn.qkv.bias"):
            stem, leaf = name.rsplit(".qkv.", 1)
            c = value.shape[0] // 3
            parts = {f"{stem}.{w}.{leaf}": value[i * c:(i + 1) * c] for i, w in enumerate("qkv")}
        elif name.endswith(".attn.q_bias") or name.endswith(".attn.v_bias"):
            parts = {name[: -len("q_bias")] + name[-6] + ".bias": value}
        for part, v in parts.items():
            out[rules.to_peer(part)] = v
    return out


def is_backbone_config(sidecar: Mapping[str, Any]) -> bool:
    """config.json of an AutoBackbone (SwinBackbone / Swinv2Backbone)."""
    return any(str(a).endswith("Backbone") for a in sidecar.get("architectures") or ())


def backbone_out_indices(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> tuple[int, ...] | None:
    """The stages (0-based, swinref's numbering) a backbone config.json outputs; None for other configs.

    transformers numbers its stage names 'stem', 'stage1', ...: out_features ['stage2', 'stage4'] (or out_indices
    [2, 4]) are swinref's stages 1 and 3. The stem (the patch embedding) is not a stage output swinref gives."""
    if not is_backbone_config(sidecar):
        return None
    names = sidecar.get("stage_names") or ["stem"] + [f"stage{i + 1}" for i in range(len(sidecar.get("depths", [])))]
    features = sidecar.get("out_features")
    indices = sidecar.get("out_indices")
    try:
        if features:
            chosen = [names.index(f) for f in features]
        elif indices:
            chosen = [int(i) % len(names) for i in indices]
        else:
            chosen = [len(names) - 1]  # transformers' default: the last stage
    except (ValueError, TypeError):
        raise CheckpointError(f"{source}: out_features {features!r} are not among the stage names {names}") from None
    if 0 in chosen:
        raise CheckpointError(f"{source}: the backbone outputs the 'stem' (patch embedding), which swinref's features "
                              f"do not include; keep stage1.. in out_features")
    return tuple(i - 1 for i in chosen)


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    """SwinConfig fields from a Hugging Face config.json (model_type 'swin' or 'swinv2')."""
    model_type = sidecar.get("model_type")
    if model_type not in ("swin", "swinv2"):
        raise CheckpointError(
            f"{source}: config.json has model_type {shorten(model_type)}; swinref reads 'swin' and 'swinv2' models"
        )
    hints: dict[str, Any] = {"version": 2 if model_type == "swinv2" else 1}
    if sidecar.get("use_absolute_embeddings"):
        if "ape" not in {f.name for f in dataclasses.fields(SwinConfig)}:
            raise CheckpointError(
                f"{source}: this model uses absolute position embeddings (use_absolute_embeddings=true), which this "
                f"swinref does not implement"
            )
        hints["ape"] = True
    pairs = {
        "image_size": "img_size", "patch_size": "patch_size", "num_channels": "in_chans", "embed_dim": "embed_dim",
        "depths": "depths", "num_heads": "num_heads", "window_size": "window_size", "mlp_ratio": "mlp_ratio",
        "qkv_bias": "qkv_bias", "layer_norm_eps": "layer_norm_eps",
    }
    for hf_name, name in pairs.items():
        if hf_name in sidecar:
            value = sidecar[hf_name]
            hints[name] = tuple(value) if isinstance(value, list) else value
    if model_type == "swinv2" and "pretrained_window_sizes" in sidecar:
        hints["pretrained_window_sizes"] = tuple(sidecar["pretrained_window_sizes"])
    if isinstance(hints.get("img_size"), int):
        hints["img_size"] = (hints["img_size"], hints["img_size"])
    for key in ("patch_size", "window_size"):  # HF allows [h, w] pairs; swinref needs squares
        value = hints.get(key)
        if isinstance(value, tuple):
            if len(set(value)) != 1:
                raise CheckpointError(f"{source}: {key}={list(value)} is not square; swinref needs square {key}")
            hints[key] = value[0]
    return hints
