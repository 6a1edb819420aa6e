"""Every checkpoint layout's names, translated to the canonical (official) layout in one place.

Layouts (verified against timm 1.0.31, transformers 5.23.0 and torchvision 0.29.1 state dicts):

  official     patch_embed.*, layers.i.blocks.j.*, layers.i.downsample.* at the END of stage i, norm.*, head.*
  timm         as official but the downsample sits at the START of the next stage (layers.{i+1}.downsample) and
               the classifier is head.fc.*; timm V2 (swinv2_*) likewise
  huggingface  [swin.|swinv2.]embeddings.patch_embeddings.projection, embeddings.norm,
               encoder.layers.i.blocks.j.{layernorm_before, attention..., layernorm_after, ...},
               encoder.layers.i.downsample (end of stage i), layernorm, classifier. Two generations of names:
               legacy   attention.self.{query,key,value,relative_position_bias_table}, attention.output.dense,
                        intermediate.dense, output.dense (still used by Swin V2 in 5.23)
               current  attention.{q,k,v,o}_proj, attention.relative_position_bias.relative_position_bias_table,
                        mlp.fc1, mlp.fc2 (transformers' conversion_mapping "swin" entry)
  torchvision  features.0.{0: conv, 2: norm}; stage i = features.{2i+1}.j.{..., mlp.0, mlp.3}; the merge after
               stage i = features.{2i+2}; norm; head. V2 keeps one qkv.bias of 3C whose k third is zeroed in forward
  swinref      the canonical names themselves, with the configuration in the file's metadata

Patch merging: official, timm, Hugging Face and torchvision all concatenate the 2x2 neighbours in the order
(row, col) = (0,0), (1,0), (0,1), (1,1) (timm via reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5),
transformers 5.23 via `for col in range(2) for row in range(2)`, torchvision x0..x3), so no row permutation of the
merge weights is needed: tests/test_checkpoints.py checks this against the peers' modules.

Derived buffers (relative_position_index, attn_mask, relative_coords_table) are dropped, never trusted.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from swinref.errors import CheckpointError

__all__ = ["LAYOUTS", "find_state_dict", "detect_layout", "to_canonical", "DERIVED_BUFFERS", "v2_buffer_hints"]

LAYOUTS = ("official", "timm", "huggingface", "torchvision", "swinref")

# Names of buffers that every peer derives from the window size; recomputed by swinref.
DERIVED_BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")

# Where training checkpoints keep the weights, in the order they are tried (official: 'model'; timm's
# CheckpointSaver: 'state_dict' and 'state_dict_ema'; others: 'model_ema', 'module').
_CONTAINER_KEYS = ("model", "state_dict", "state_dict_ema", "model_ema", "module")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and any(
        isinstance(v, np.ndarray) for v in obj.values()
    )


def find_state_dict(obj: Any, source: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The weights inside a loaded file: a bare state dict, or one under 'model' / 'state_dict' / ...

    Returns (state_dict, notes) where notes says which entry was used and which others were ignored.
    """
    notes: dict[str, Any] = {}
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}, not a dict of tensors; save the model's state_dict()"
        )
    if _is_state_dict(obj) and not any(k in obj and _is_state_dict(obj[k]) for k in _CONTAINER_KEYS):
        sd = obj
        notes["entry"] = None
    else:
        for key in _CONTAINER_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                sd = obj[key]
                notes["entry"] = key
                break
        else:
            raise CheckpointError(
                f"{source} holds a dict with entries {sorted(map(str, obj))[:12]} but no state dict of tensors "
                f"under any of {list(_CONTAINER_KEYS)}; save the model's state_dict()"
            )
        notes["ignored_entries"] = sorted(str(k) for k in obj if k != notes["entry"])
    non_arrays = sorted(k for k, v in sd.items() if not isinstance(v, np.ndarray))
    if non_arrays:
        notes["ignored_non_tensors"] = non_arrays
    sd = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    # torch.nn.DataParallel / DistributedDataParallel prefix every name with 'module.'.
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        notes["stripped_prefix"] = "module."
    return sd, notes


def detect_layout(keys: list[str] | set[str], source: str = "the checkpoint") -> str:
    """Which layout a state dict's names follow (not 'swinref': that is told by the file's metadata)."""
    keys = set(keys)
    if any(k.startswith("features.0.0.") for k in keys):
        return "torchvision"
    if any("embeddings.patch_embeddings." in k for k in keys):
        return "huggingface"
    if "patch_embed.proj.weight" in keys:
        if "head.fc.weight" in keys:
            return "timm"
        stages_with_merge = {int(m.group(1)) for k in keys if (m := re.match(r"layers\.(\d+)\.downsample\.", k))}
        if stages_with_merge and 0 not in stages_with_merge:
            return "timm"  # a merge at the start of stage 1 but none at the end of stage 0
        return "official"
    sample = sorted(keys)[:6]
    hint = ""
    if any(k.startswith(("backbone.", "stages.")) or ".w_msa." in k for k in keys):
        hint = " (this looks like an mmdetection/mmpretrain Swin, whose names swinref does not translate)"
    raise CheckpointError(
        f"cannot tell which Swin checkpoint layout {source} uses{hint}: its names start {sample}; swinref reads the "
        f"official, timm, Hugging Face and torchvision layouts (patch_embed.proj.weight, "
        f"embeddings.patch_embeddings.projection.weight or features.0.0.weight)"
    )


def _is_derived(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in DERIVED_BUFFERS


def to_canonical(
    sd: dict[str, np.ndarray], layout: str, source: str = "the checkpoint"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Translate a state dict to canonical names. Returns (params, notes): notes['dropped'] lists the derived
    buffers that were dropped, notes['renamed'] counts renamed keys. Names that no rule knows are kept as they are,
    so that the shape check reports them as unexpected."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    dropped = sorted(k for k in sd if _is_derived(k))
    notes: dict[str, Any] = {"dropped": dropped}
    hints = v2_buffer_hints(sd, layout)
    if hints:
        notes["buffer_hints"] = hints
    sd = {k: v for k, v in sd.items() if not _is_derived(k)}
    if layout in ("official", "swinref"):
        params = dict(sd)
    elif layout == "timm":
        params = {}
        for k, v in sd.items():
            _put(params, _timm_name(k), v, k)
    elif layout == "torchvision":
        params = _from_torchvision(sd, notes)
    else:
        params = _from_huggingface(sd, notes, source)
    notes["renamed"] = sum(1 for k in sd if k not in params)
    return params, notes


# Swin V2 ---------------------------------------------------------------------------------------------------------

# The first block of each stage, per layout, where official and torchvision V2 files keep their derived buffers.
_V2_BUFFER = {
    "official": re.compile(r"^layers\.(\d+)\.blocks\.0\.attn\.(relative_position_index|relative_coords_table)$"),
    "timm": re.compile(r"^layers\.(\d+)\.blocks\.0\.attn\.(relative_position_index|relative_coords_table)$"),
    "torchvision": re.compile(r"^features\.(\d+)\.0\.attn\.(relative_position_index|relative_coords_table)$"),
    "huggingface": re.compile(r"^(?:swinv2\.)?encoder\.layers\.(\d+)\.blocks\.0\.attention\.self\."
                              r"(relative_position_index|relative_coords_table)$"),
}


def v2_buffer_hints(sd: dict[str, np.ndarray], layout: str) -> dict[str, Any]:
    """What a V2 file's derived buffers tell about its windows (never used for computing, only for detection).

    V2 weights do not record the window (the position bias is an MLP of coordinates), but the official and
    torchvision files also save each block's relative_position_index [N, N] (torchvision: flat [N*N]), which gives
    the stage's window M, and relative_coords_table [1, 2M-1, 2M-1, 2], whose largest entry
    log2(8 (M-1)/(P-1) + 1) / 3 gives the pretrained window P (P = M is the same as none).
    Returns {'stage_windows': [...], 'pretrained_window_sizes': [...]} for the stages found in order, or {}.
    """
    pattern = _V2_BUFFER.get(layout)
    if pattern is None or not any(k.endswith("logit_scale") for k in sd):
        return {}
    index: dict[int, int] = {}
    coords: dict[int, float] = {}
    for name, value in sd.items():
        m = pattern.match(name)
        if not m:
            continue
        stage = int(m.group(1))
        if layout == "torchvision":
            if stage % 2 == 0:
                continue
            stage = (stage - 1) // 2
        if m.group(2) == "relative_position_index":
            n = value.shape[0] if value.ndim == 2 else int(round(value.size ** 0.5))
            index[stage] = int(round(n ** 0.5))
        elif value.size:
            coords[stage] = float(np.abs(value.astype(np.float64)).max())
    stages = sorted(index)
    if not stages or stages != list(range(len(stages))):
        return {}
    windows = [index[i] for i in stages]
    pretrained = []
    for i, M in zip(stages, windows):
        top = coords.get(i)
        if top is None or M < 2 or top <= 0:
            pretrained.append(0)
            continue
        P = int(round(8.0 * (M - 1) / (2.0 ** (3.0 * top) - 1.0) + 1.0))
        pretrained.append(0 if P == M else P)
    return {"stage_windows": windows, "pretrained_window_sizes": pretrained}


def _put(params: dict[str, np.ndarray], name: str, value: np.ndarray, original: str) -> None:
    # Two source names landing on one canonical name (e.g. a file holding both HF name generations) is an error,
    # not a silent overwrite.
    if name in params:
        raise CheckpointError(
            f"two entries of the checkpoint translate to {name!r} (the second is {original!r}): the file mixes "
            f"layouts; save it again from one model"
        )
    params[name] = value


# timm -------------------------------------------------------------------------------------------------------------

_TIMM_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.")


def _timm_name(name: str) -> str:
    # timm's merge at the start of stage i+1 is the official merge at the end of stage i.
    m = _TIMM_MERGE.match(name)
    if m:
        stage = int(m.group(1))
        if stage == 0:
            raise CheckpointError("a timm checkpoint cannot have a downsample in stage 0 (layers.0.downsample)")
        return f"layers.{stage - 1}.downsample." + name[m.end():]
    if name.startswith("head.fc."):
        return "head." + name[len("head.fc."):]
    return name


# torchvision -------------------------------------------------------------------------------------------------------

_TV_FEATURE = re.compile(r"^features\.(\d+)\.(.*)$")
_TV_BLOCK = {"mlp.0.": "mlp.fc1.", "mlp.3.": "mlp.fc2."}


def _from_torchvision(sd: dict[str, np.ndarray], notes: dict[str, Any]) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}
    for name, value in sd.items():
        m = _TV_FEATURE.match(name)
        if not m:
            _put(params, name, value, name)  # norm.*, head.* are already canonical
            continue
        k, rest = int(m.group(1)), m.group(2)
        if k == 0:
            sub = {"0.": "patch_embed.proj.", "2.": "patch_embed.norm."}
            prefix = next((p for p in sub if rest.startswith(p)), None)
            _put(params, sub[prefix] + rest[len(prefix):] if prefix else name, value, name)
        elif k % 2 == 1:  # stage (k-1)/2: features.k.j.<block names>
            j, _, tail = rest.partition(".")
            for old, new in _TV_BLOCK.items():
                if tail.startswith(old):
                    tail = new + tail[len(old):]
            _put(params, f"layers.{(k - 1) // 2}.blocks.{j}.{tail}", value, name)
        else:  # the merge after stage k/2 - 1
            _put(params, f"layers.{k // 2 - 1}.downsample.{rest}", value, name)
    # torchvision V2 keeps a full 3C qkv bias and zeroes its k third in forward; the official layout has
    # q_bias and v_bias only.
    for name in [n for n in params if n.endswith(".attn.qkv.bias")]:
        prefix = name[: -len("qkv.bias")]
        if prefix + "logit_scale" not in params:
            continue
        bias = params.pop(name)
        c = bias.shape[0] // 3
        params[prefix + "q_bias"], params[prefix + "v_bias"] = bias[:c].copy(), bias[2 * c:].copy()
        if np.any(bias[c: 2 * c]):
            notes.setdefault("ignored_k_bias", []).append(name)
    return params


# Hugging Face -------------------------------------------------------------------------------------------------------

_HF_BLOCK = re.compile(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)$")
_HF_MERGE = re.compile(r"^encoder\.layers\.(\d+)\.downsample\.(.*)$")

# Per-block renames, both generations of names; q/k/v are gathered separately.
_HF_BLOCK_NAMES = [
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."),
    ("attention.o_proj.", "attn.proj."),
    ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.relative_position_bias.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.self.logit_scale", "attn.logit_scale"),
    ("attention.self.continuous_position_bias_mlp.", "attn.cpb_mlp."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
]
_HF_QKV = re.compile(r"^attention\.(?:self\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")
_QKV_NAMES = {"q": "query", "k": "key", "v": "value"}
_HF_TOP = [
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("embeddings.norm.", "patch_embed.norm."),
    ("layernorm.", "norm."),
    ("classifier.", "head."),
]


def _from_huggingface(sd: dict[str, np.ndarray], notes: dict[str, Any], source: str) -> dict[str, np.ndarray]:
    # SwinForImageClassification prefixes the backbone with 'swin.' (Swinv2: 'swinv2.'); SwinModel has no prefix.
    model_prefix = next((p for p in ("swin.", "swinv2.") if any(k.startswith(p + "embeddings.") for k in sd)), "")
    params: dict[str, np.ndarray] = {}
    qkv: dict[str, dict[str, np.ndarray]] = {}  # block prefix -> {'q.weight': ..., ...}
    v2_blocks: set[str] = set()
    for name, value in sd.items():
        short = name[len(model_prefix):] if model_prefix and name.startswith(model_prefix) else name
        m = _HF_BLOCK.match(short)
        if m:
            prefix, tail = f"layers.{m.group(1)}.blocks.{m.group(2)}.", m.group(3)
            q = _HF_QKV.match(tail)
            if q:
                which = (q.group(1) or q.group(2))[0]  # 'q', 'k' or 'v'
                _put(qkv.setdefault(prefix, {}), f"{which}.{q.group(3)}", value, name)
                continue
            for old, new in _HF_BLOCK_NAMES:
                if tail.startswith(old):
                    tail = new + tail[len(old):]
                    break
            if tail == "attn.logit_scale":
                v2_blocks.add(prefix)
            _put(params, prefix + tail, value, name)
            continue
        m = _HF_MERGE.match(short)
        if m:
            _put(params, f"layers.{m.group(1)}.downsample.{m.group(2)}", value, name)
            continue
        for old, new in _HF_TOP:
            if short.startswith(old):
                short = new + short[len(old):]
                break
        _put(params, short, value, name)
    for prefix, parts in qkv.items():
        missing = [f"{_QKV_NAMES[p[0]]}.weight" for p in ("q.weight", "k.weight", "v.weight") if p not in parts]
        if missing:
            raise CheckpointError(
                f"{source}: block {prefix[:-1]} has only part of its attention projections (missing "
                f"{', '.join(missing)}): the file is truncated or not a Swin checkpoint"
            )
        # The official qkv stacks q | k | v rows, each head-major, which is how HF's three projections are laid out.
        params[prefix + "attn.qkv.weight"] = np.concatenate([parts["q.weight"], parts["k.weight"], parts["v.weight"]])
        if prefix in v2_blocks:
            # Swin V2: key has no bias; q and v biases are separate parameters in the official layout.
            if "q.bias" in parts:
                params[prefix + "attn.q_bias"] = parts["q.bias"]
            if "v.bias" in parts:
                params[prefix + "attn.v_bias"] = parts["v.bias"]
            if "k.bias" in parts:
                params[prefix + "attn.k_bias"] = parts["k.bias"]  # reported as unexpected
        elif any(p in parts for p in ("q.bias", "k.bias", "v.bias")):
            if not all(p in parts for p in ("q.bias", "k.bias", "v.bias")):
                raise CheckpointError(f"{source}: block {prefix[:-1]} has biases for only some of query/key/value")
            params[prefix + "attn.qkv.bias"] = np.concatenate([parts["q.bias"], parts["k.bias"], parts["v.bias"]])
    if model_prefix:
        notes["hf_prefix"] = model_prefix
    return params
