"""The containers besides the torch pickle itself (pth.py): `.safetensors`, `.npz`, Hugging Face model directories,
and the state dict inside a loaded torch training checkpoint. Containers know nothing of layouts (layouts/).

safetensors is read with a small parser of its documented format (8-byte little-endian header length, a JSON
header of name -> {dtype, shape, data_offsets}, then the raw little-endian bytes) rather than the safetensors
package's NumPy loader, because that loader cannot represent bfloat16 (here it is widened to float32, exactly) and
because a truncated file should say which tensor is cut off. Writing uses the safetensors package.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from swinref.checkpoints.bounds import MAX_NAME, SafeZip, check_regular, load_json, open_regular, shorten
from swinref.errors import CheckpointError

__all__ = [
    "read_safetensors", "read_npz", "read_hf_config", "hf_weight_files", "is_safetensors_bytes", "NPZ_CONFIG_KEY",
    "find_state_dict", "StateDictEntry", "read_json_file",
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
    """(tensors, metadata, widened): every tensor as a native NumPy array; bfloat16 names listed in widened.

    The header is checked whole before any tensor is read: every entry's dtype, shape and offsets, the entries
    within the data and not overlapping (so the tensors never need more memory than the file holds)."""
    with open_regular(path) as f:
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
        header = load_json(f.read(n), f"{path}: the safetensors header", limit=_MAX_HEADER)
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: the safetensors header is not a JSON object: corrupt file")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise CheckpointError(f"{path}: the safetensors __metadata__ is not an object of strings: corrupt file")
        data_len = size - 8 - n
        entries = [(name, *_check_entry(path, name, entry, data_len)) for name, entry in header.items()]
        entries.sort(key=lambda e: e[3])
        for (prev, _, _, (_, end)), (name, _, _, (begin, _)) in zip(entries, entries[1:]):
            if begin < end:
                raise CheckpointError(f"{path}: tensors {shorten(prev)} and {shorten(name)} overlap in the data: "
                                      f"corrupt file; re-download or re-save it")
        tensors: dict[str, np.ndarray] = {}
        widened: list[str] = []
        for name, dtype, shape, (begin, end) in entries:
            f.seek(8 + n + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:
                raise CheckpointError(f"{path}: tensor {shorten(name)} is cut off: the file is truncated")
            src = "uint16" if dtype == "bfloat16" else dtype
            arr = np.frombuffer(raw, dtype=np.dtype(src).newbyteorder("<")).astype(np.dtype(src).newbyteorder("="))
            arr = arr.reshape(shape)
            if dtype == "bfloat16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
                widened.append(name)
            tensors[name] = arr
    return tensors, dict(metadata), widened


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(path: str, name: str, entry: Any, data_len: int) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    where = f"{path}: the safetensors entry for {shorten(name)}"
    if len(name) > MAX_NAME:
        raise CheckpointError(f"{where} has a name of {len(name)} characters: corrupt file")
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise CheckpointError(f"{where} is malformed (expected dtype, shape and data_offsets): corrupt file")
    tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not (isinstance(shape, list) and len(shape) <= 32 and all(_is_int(s) and s >= 0 for s in shape)
            and isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise CheckpointError(f"{where} is malformed (shape {shorten(shape)}, offsets {shorten(offsets)}): corrupt "
                              f"file")
    if not isinstance(tag, str) or tag not in _ST_DTYPES:
        raise CheckpointError(
            f"{path}: tensor {shorten(name)} has dtype {shorten(tag)}, which swinref does not read (supported: "
            f"{sorted(_ST_DTYPES)}); save it as float32 or float16"
        )
    dtype = _ST_DTYPES[tag]
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    begin, end = offsets
    count = 1
    for s in shape:
        count *= s  # Python integers: a crafted shape cannot overflow
    if not 0 <= begin <= end or end - begin != count * itemsize:
        raise CheckpointError(f"{where} is inconsistent (shape {shape} of {tag} in bytes {begin}..{end}): corrupt "
                              f"file")
    if end > data_len:
        raise CheckpointError(
            f"{path}: tensor {shorten(name)} ends at byte {end} of the data but the file holds {data_len}: the file "
            f"is truncated; re-download or re-save it"
        )
    return dtype, tuple(shape), (begin, end)


# The dtypes an .npz member may hold: numbers (the parameters) and, for NPZ_CONFIG_KEY only, text.
_NPZ_KINDS = "biuf"


def read_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """(arrays, swinref config dict or None). Never unpickles: every member must be a .npy of numbers.

    Read member by member through bounds.SafeZip: each .npy header is parsed and its shape x itemsize checked
    against the member's declared size before the data is inflated (NumPy's own reader allocates the array a
    header claims before reading it)."""
    arrays: dict[str, np.ndarray] = {}
    with SafeZip(path, "an .npz archive") as z:
        if not z.names:
            raise CheckpointError(f"{path} is an empty zip archive, not an .npz file of arrays")
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.names):
            raise CheckpointError(f"{path} is a torch zip archive (torch.save), not an .npz: give it a .pth name")
        for member in z.names:
            if not member.endswith(".npy"):
                raise CheckpointError(
                    f"{path}: member {shorten(member)} is not a .npy array: not an .npz file written by np.savez; "
                    f"re-save the weights with np.savez or swinref convert"
                )
            key = member[:-len(".npy")]
            if len(key) > MAX_NAME:
                raise CheckpointError(f"{path}: a member name of {len(key)} characters: corrupt file")
            arrays[key] = _read_npy(z.read(member), f"{path}: member {shorten(member)}", key == NPZ_CONFIG_KEY)
    config = None
    if NPZ_CONFIG_KEY in arrays:
        raw = arrays.pop(NPZ_CONFIG_KEY)
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise CheckpointError(f"{path}: the {NPZ_CONFIG_KEY} entry is not a text: corrupt file")
        config = load_json(str(raw).encode("utf-8"), f"{path}: the {NPZ_CONFIG_KEY} entry")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: the {NPZ_CONFIG_KEY} entry is not a JSON object: corrupt file")
    return arrays, config


def _read_npy(raw: bytes, what: str, text: bool) -> np.ndarray:
    """One .npy file's array from its bytes: header parsed with NumPy's header reader, sizes checked, no pickle."""
    fmt = np.lib.format
    f = io.BytesIO(raw)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=10000)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=10000)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:  # noqa: BLE001 - NumPy evaluates the header text with ast/tokenize: any of their errors
        # (ValueError, SyntaxError, tokenize.TokenError, RecursionError, ...) means a damaged header
        raise CheckpointError(f"{what} is not a readable .npy array ({shorten(str(exc), 120)}): the file is "
                              f"corrupt; re-download or re-save it") from None
    allowed = _NPZ_KINDS + ("U" if text else "")
    if dtype.kind not in allowed or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise CheckpointError(
            f"{what} holds {dtype} values; swinref reads .npz arrays of numbers only (no objects, text, dates or "
            f"complex numbers); convert the weights to float32 and save them again"
        )
    count = 1
    for n in shape:
        count *= n
    if len(shape) > 32 or count * dtype.itemsize != len(raw) - f.tell():
        raise CheckpointError(
            f"{what}: its header says shape {shorten(shape)} of {dtype} ({count * dtype.itemsize} bytes) but it holds "
            f"{len(raw) - f.tell()}: the file is truncated or corrupt; re-download or re-save it"
        )
    flat = np.frombuffer(raw, dtype=dtype, count=count, offset=f.tell())
    return flat.reshape(shape, order="F" if fortran else "C").astype(dtype.newbyteorder("="), order="C")


# Hugging Face model directories ---------------------------------------------------------------------------------

_HF_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def read_json_file(path: str, what: str) -> Any:
    """A small JSON file beside the weights (config.json, a shard index): regular file, bounded size and nesting."""
    with open_regular(path) as f:
        raw = f.read(16 * 1024 * 1024 + 1)
    return load_json(raw, f"{what} {path}")


def read_hf_config(path: str) -> dict[str, Any]:
    config = read_json_file(path, "the Hugging Face config")
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
        index = read_json_file(full, "the shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"cannot read the shard index {full}: it has no weight_map of file names")
        shards = sorted(set(weight_map.values()))
        outside = [s for s in shards if os.path.basename(s) != s or s in ("", ".", "..")]
        if outside:
            raise CheckpointError(f"{full} names shard {shorten(outside[0])} outside its directory: corrupt index")
        missing = [s for s in shards if not os.path.isfile(os.path.join(directory, s))]
        if missing:
            raise CheckpointError(f"{full} lists shard(s) {shorten(missing)} that are not in {directory}")
        for shard in shards:
            check_regular(os.path.join(directory, shard))
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
                f"{source} holds a dict with entries {[shorten(k, 40) for k in sorted(map(str, obj))[:12]]} but no "
                f"state dict of tensors "
                f"under any of {list(_CONTAINER_KEYS)}; save the model's state_dict()"
            )
        sd = obj[entry]
        ignored = tuple(sorted(shorten(k, 200) if not isinstance(k, str) or len(k) > 200 else k
                               for k in obj if k != entry))
    long_names = [k for k in sd if len(k) > MAX_NAME]
    if long_names:
        raise CheckpointError(f"{source} has a tensor name of {len(long_names[0])} characters "
                              f"({shorten(long_names[0])}): not a Swin checkpoint, or the file is corrupt")
    non_arrays = tuple(sorted(k for k, v in sd.items() if not isinstance(v, np.ndarray)))
    sd = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    prefix = None
    # torch.nn.DataParallel / DistributedDataParallel prefix every name with 'module.'.
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        prefix = "module."
    return sd, StateDictEntry(entry, ignored, non_arrays, prefix)
