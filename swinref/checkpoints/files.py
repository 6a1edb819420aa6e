"""The containers besides the torch pickle itself (pth.py): `.safetensors`, `.npz`, Hugging Face model directories,
and the state dict inside a loaded torch training checkpoint. Containers know nothing of layouts (layouts/).

safetensors is read with a small parser of its documented format (8-byte little-endian header length, a JSON
header of name -> {dtype, shape, data_offsets}, then the raw little-endian bytes) rather than the safetensors
package's NumPy loader, because that loader cannot represent bfloat16 (here it is widened to float32, exactly) and
because a truncated file should say which tensor is cut off. Writing uses the safetensors package.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from swinref.errors import CheckpointError

__all__ = [
    "read_safetensors", "read_npz", "read_hf_config", "hf_weight_files", "is_safetensors_bytes", "NPZ_CONFIG_KEY",
    "find_state_dict", "StateDictEntry",
]

# safetensors dtype tag -> NumPy dtype (BF16 is read as its uint16 bits and widened).
_ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "C64": "complex64",
}
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit

# The entry of a swinref .npz file that holds the configuration as JSON (a 0-d unicode array: no pickle needed).
NPZ_CONFIG_KEY = "__swinref_config__"


def is_safetensors_bytes(head: bytes) -> bool:
    """A safetensors file starts with the header length, then the JSON header's '{'."""
    return len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= _MAX_HEADER


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """(tensors, metadata, widened): every tensor as a native NumPy array; bfloat16 names listed in widened."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is too short to be a safetensors file ({size} bytes): truncated?")
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(
                f"{path}: the safetensors header claims {n} bytes but the file has {size}: the file is truncated or "
                f"not a safetensors file; re-download or re-save it"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({exc}): corrupt file") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: the safetensors header is not a JSON object: corrupt file")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{path}: the safetensors __metadata__ is not an object: corrupt file")
        data_len = size - 8 - n
        tensors: dict[str, np.ndarray] = {}
        widened: list[str] = []
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            for name, entry in header.items():
                dtype, shape, (begin, end) = _check_entry(path, name, entry, data_len)
                src = "uint16" if dtype == "bfloat16" else dtype
                arr = np.frombuffer(buf, dtype=np.dtype(src).newbyteorder("<"), count=math.prod(shape),
                                    offset=8 + n + begin)
                arr = arr.astype(np.dtype(src).newbyteorder("="), copy=True).reshape(shape)
                if dtype == "bfloat16":
                    arr = (arr.astype(np.uint32) << 16).view(np.float32)
                    widened.append(name)
                tensors[name] = arr
        finally:
            if size:
                buf.close()
    return tensors, {str(k): str(v) for k, v in metadata.items()}, widened


def _check_entry(path: str, name: str, entry: Any, data_len: int) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    try:
        tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        shape = tuple(int(s) for s in shape)
        begin, end = (int(o) for o in offsets)
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(f"{path}: the safetensors entry for {name!r} is malformed: corrupt file") from None
    if tag not in _ST_DTYPES:
        raise CheckpointError(
            f"{path}: tensor {name!r} has dtype {tag}, which swinref does not read (supported: {sorted(_ST_DTYPES)}); "
            f"save it as float32 or float16"
        )
    dtype = _ST_DTYPES[tag]
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if any(s < 0 for s in shape) or not 0 <= begin <= end or end - begin != math.prod(shape) * itemsize:
        raise CheckpointError(f"{path}: the safetensors entry for {name!r} is inconsistent: corrupt file")
    if end > data_len:
        raise CheckpointError(
            f"{path}: tensor {name!r} ends at byte {end} of the data but the file holds {data_len}: the file is "
            f"truncated; re-download or re-save it"
        )
    return dtype, shape, (begin, end)


def read_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """(arrays, swinref config dict or None). Never unpickles: object arrays are refused."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path} is not a complete .npz archive ({exc}): truncated or corrupt") from None
    except ValueError as exc:
        raise CheckpointError(
            f"{path}: cannot read an array without unpickling ({exc}); swinref reads only numeric .npz files"
        ) from None
    except (OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read the .npz archive ({exc}): truncated or corrupt") from None
    config = None
    if NPZ_CONFIG_KEY in arrays:
        raw = arrays.pop(NPZ_CONFIG_KEY)
        try:
            config = json.loads(str(raw))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: the {NPZ_CONFIG_KEY} entry is not valid JSON ({exc})") from None
    return arrays, config


# Hugging Face model directories ---------------------------------------------------------------------------------

_HF_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def read_hf_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read the Hugging Face config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a Hugging Face config (expected a JSON object)")
    return config


def hf_weight_files(directory: str) -> list[str]:
    """The weight files of a Hugging Face model directory, shards included, in a stable order."""
    for name in _HF_WEIGHT_FILES:
        full = os.path.join(directory, name)
        if not os.path.isfile(full):
            continue
        if not name.endswith(".index.json"):
            return [full]
        try:
            with open(full, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot read the shard index {full}: {exc}") from None
        missing = [s for s in shards if not os.path.isfile(os.path.join(directory, s))]
        if missing:
            raise CheckpointError(f"{full} lists shard(s) {missing} that are not in {directory}")
        return [os.path.join(directory, s) for s in shards]
    raise CheckpointError(
        f"{directory} has no weights: expected one of {list(_HF_WEIGHT_FILES)} (a Hugging Face model directory)"
    )


# Torch training checkpoints ----------------------------------------------------------------------------------------

# Where training checkpoints keep the weights, in the order they are tried (official: 'model'; timm's
# CheckpointSaver: 'state_dict' and 'state_dict_ema'; mmengine: 'state_dict'; others: 'model_ema', 'module').
_CONTAINER_KEYS = ("model", "state_dict", "state_dict_ema", "model_ema", "module")


@dataclass(frozen=True)
class StateDictEntry:
    """Where the weights were in a loaded file, and what was left beside them."""

    entry: str | None = None                  # None: the file is the state dict itself
    ignored_entries: tuple[str, ...] = ()     # the checkpoint's other entries (optimizer, epoch, ...)
    ignored_non_tensors: tuple[str, ...] = ()  # names in the state dict whose values are not tensors
    prefix: str | None = None                 # 'module.' of torch.nn.DataParallel, stripped


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and any(
        isinstance(v, np.ndarray) for v in obj.values()
    )


def find_state_dict(obj: Any, source: str) -> tuple[dict[str, np.ndarray], StateDictEntry]:
    """The weights inside a loaded file: a bare state dict, or one under 'model' / 'state_dict' / ..."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}, not a dict of tensors; save the model's state_dict()"
        )
    entry, ignored = None, ()
    if _is_state_dict(obj) and not any(k in obj and _is_state_dict(obj[k]) for k in _CONTAINER_KEYS):
        sd = obj
    else:
        entry = next((key for key in _CONTAINER_KEYS if key in obj and _is_state_dict(obj[key])), None)
        if entry is None:
            raise CheckpointError(
                f"{source} holds a dict with entries {sorted(map(str, obj))[:12]} but no state dict of tensors "
                f"under any of {list(_CONTAINER_KEYS)}; save the model's state_dict()"
            )
        sd = obj[entry]
        ignored = tuple(sorted(str(k) for k in obj if k != entry))
    non_arrays = tuple(sorted(k for k, v in sd.items() if not isinstance(v, np.ndarray)))
    sd = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    prefix = None
    # torch.nn.DataParallel / DistributedDataParallel prefix every name with 'module.'.
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        prefix = "module."
    return sd, StateDictEntry(entry, ignored, non_arrays, prefix)
