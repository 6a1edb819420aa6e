"""Read every Swin checkpoint layout, without torch, into swinref's canonical layout; write swinref's own files.

    params, info = read_checkpoint(path)        # canonical names, NumPy arrays; info says what was found
    params, cfg = load_state_dict(path)         # + the detected (or given) config, every shape checked
    save_params(params, cfg, "t.safetensors")   # or .npz; the config travels in the file
    convert("swin_tiny.pth", "t.safetensors")

Inputs: torch `.pth`/`.bin` files (zip and legacy; see pth.py for what the unpickler allows), `.safetensors`,
`.npz` (swinref's own), and Hugging Face model directories (config.json + model.safetensors or pytorch_model.bin).
The layout (official, timm, Hugging Face, torchvision, swinref) is detected from the names; formats.py holds every
translation.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from swinref.checkpoints.detect import (
    check_params,
    hf_config_hints,
    infer_config,
    resolve_config,
    timm_config_hints,
    v2_buffer_config_hints,
)
from swinref.checkpoints.files import (
    NPZ_CONFIG_KEY,
    hf_weight_files,
    is_safetensors_bytes,
    read_hf_config,
    read_npz,
    read_safetensors,
)
from swinref.checkpoints.formats import LAYOUTS, detect_layout, find_state_dict, to_canonical
from swinref.checkpoints.pth import read_pth
from swinref.config import SwinConfig
from swinref.errors import CheckpointError, ConfigError
from swinref.layout import param_shapes

__all__ = ["read_checkpoint", "load_state_dict", "save_params", "convert", "LAYOUTS", "FORMAT_VERSION"]

# Version of swinref's own files (the "swinref_format_version" metadata entry); bump when the layout changes.
FORMAT_VERSION = 1
_META_CONFIG = "swinref_config"
_META_VERSION = "swinref_format_version"


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint file or Hugging Face directory into canonical params (name -> NumPy array).

    info holds: 'path', 'container' (torch-zip, torch-legacy, safetensors, npz, huggingface-dir), 'layout',
    'hints' (config fields the file itself states), 'config' (a SwinConfig, for swinref's own files), 'entry'
    (which entry of a training checkpoint held the weights), 'ignored_entries', 'dropped' (derived buffers not
    read), 'widened' (bfloat16 tensors widened to float32, which is exact).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        sd, info = _read_hf_dir(path)
    elif not os.path.exists(path):
        raise CheckpointError(f"no such checkpoint file or directory: {path}")
    else:
        sd, info = _read_file(path)
    info["path"] = path
    if info.get("layout") is None:
        info["layout"] = detect_layout(sd.keys(), path)
    params, notes = to_canonical(sd, info["layout"], path)
    info.update(notes)
    info.setdefault("hints", {})
    info.setdefault("widened", [])
    # Official and torchvision V2 files save derived buffers that reveal the windows the weights do not.
    if info.get("buffer_hints") and "window_size" not in info["hints"]:
        info["hints"].update(v2_buffer_config_hints(info["buffer_hints"], params))
    return params, info


def _sniff(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_file(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    head = _sniff(path)
    info: dict[str, Any] = {"layout": None}
    if is_safetensors_bytes(head):
        sd, metadata, widened = read_safetensors(path)
        info.update(container="safetensors", widened=widened)
        if _META_CONFIG in metadata:
            config = _swinref_config(metadata[_META_CONFIG], metadata.get(_META_VERSION), path)
            info.update(layout="swinref", config=config)
        else:
            info["hints"] = _sibling_hf_hints(path)
        return sd, info
    if head.startswith(b"PK\x03\x04") and _is_npz(path):
        sd, config = read_npz(path)
        info["container"] = "npz"
        if config is not None:
            version = config.get(_META_VERSION) if isinstance(config, dict) else None
            info.update(layout="swinref", config=_swinref_config(config, version, path))
        return sd, info
    obj, pth_info = read_pth(path)
    info.update(pth_info)
    sd, notes = find_state_dict(obj, path)
    info.update(notes)
    if os.path.basename(path).startswith(("pytorch_model", "model.")):
        info["hints"] = _sibling_hf_hints(path)
    return sd, info


def _is_npz(path: str) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        return False  # let the torch reader explain what is wrong with the archive
    return bool(names) and all(n.endswith(".npy") for n in names)


def _swinref_config(raw: Any, version: Any, path: str) -> SwinConfig:
    try:
        if version is not None and int(version) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path} was written by a newer swinref (format version {version}, this one reads "
                f"{FORMAT_VERSION}); upgrade swinref"
            )
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        data.pop(_META_VERSION, None)
        return SwinConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{path}: the stored swinref config is unreadable ({exc}); convert the file again"
        ) from None


def _sibling_hf_hints(path: str) -> dict[str, Any]:
    # A weight file inside a Hugging Face directory: its config.json tells the image size and window.
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not os.path.isfile(config_path):
        return {}
    config = read_hf_config(config_path)
    if "model_type" not in config and "architecture" in config:
        return timm_config_hints(config, config_path)
    if config.get("model_type") not in ("swin", "swinv2"):
        return {}
    return hf_config_hints(config, config_path)


def _read_hf_dir(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(
            f"{path} is a directory without config.json; give a checkpoint file, or a Hugging Face model directory "
            f"(config.json + model.safetensors or pytorch_model.bin)"
        )
    config = read_hf_config(config_path)
    if "model_type" not in config and "architecture" in config:
        hints = timm_config_hints(config, config_path)  # a timm hub directory
    else:
        hints = hf_config_hints(config, config_path)
    sd: dict[str, np.ndarray] = {}
    widened: list[str] = []
    files = hf_weight_files(path)
    for file in files:
        head = _sniff(file)
        if is_safetensors_bytes(head):
            part, _meta, wide = read_safetensors(file)
        else:
            obj, pth_info = read_pth(file)
            part, _notes = find_state_dict(obj, file)
            wide = pth_info["widened"]
        overlap = set(part) & set(sd)
        if overlap:
            raise CheckpointError(f"{file} repeats {sorted(overlap)[:3]} from another shard: the index is inconsistent")
        sd.update(part)
        widened += wide
    layout = detect_layout(sd.keys(), path)
    return sd, {"container": "huggingface-dir", "files": files, "hints": hints, "widened": widened, "layout": layout}


def load_state_dict(
    path: str | os.PathLike, config: str | SwinConfig | dict | None = None, *, dtype: Any = None,
    report: dict[str, Any] | None = None, **overrides: Any
) -> tuple[dict[str, np.ndarray], SwinConfig]:
    """Canonical params and their config, every parameter checked against swinref.layout.param_shapes(cfg).

    config: None to detect it from the weights (and the file's own config, if it has one); a registry name or
    alias ('T', 'swin_base_patch4_window7_224', ...), a SwinConfig or a dict of its fields to impose one.
    overrides: config fields to change (img=384, window=12, ...), applied to the given or detected config.
    A config with another window or image size is a resolution transfer (swinref.transfer): V1 bias tables are
    resized bicubically as the official fine-tuning does; a V2 model keeps its position-bias MLP and gets the
    pretrained window sizes it was trained with.
    dtype: cast floating-point params (e.g. np.float32); None keeps the stored dtypes (bfloat16 arrives as float32).
    report: a dict to fill with 'resized' (one line per transferred stage) and 'notes' (what the file could not
    say), for the caller to show.
    Raises CheckpointError naming every missing, unexpected or mis-shaped parameter, with a hint.
    """
    from swinref.transfer import resize_v1_tables, v2_transfer_config

    params, info = read_checkpoint(path)
    source = info["path"]
    detected, detect_error = info.get("config"), None
    if detected is None:
        try:
            detected = infer_config(params, info["hints"], source)
        except CheckpointError as exc:
            detect_error = exc
    if config is None:
        if detected is None:
            raise detect_error  # type: ignore[misc]
        cfg = detected
    else:
        cfg = resolve_config(config)
    base = cfg
    if overrides:
        cfg = cfg.replace(**overrides)
    params, resized = resize_v1_tables(params, cfg)
    if "pretrained_window_sizes" not in overrides:
        # The windows the checkpoint was trained with: the file's own when it states them, else the config it was
        # given with (a V2 file alone does not record its window).
        states_window = info.get("config") is not None or "window_size" in info["hints"]
        trained = detected if detected is not None and (config is None or states_window) else base
        cfg, v2_lines = v2_transfer_config(trained, cfg)
        resized += v2_lines
    notes = []
    if info.get("layout") == "torchvision" and cfg.version == 2:
        notes.append(
            "torchvision V2 files record no pretrained window sizes (torchvision normalises the position-bias "
            "coordinates by the window itself, and its swin_v2_t/s/b were trained at window 8 without "
            "fine-tuning from another window): loaded with pretrained_window_sizes "
            f"{','.join(map(str, cfg.pretrained_window_sizes))}; for a model fine-tuned from a smaller window pass "
            "pretrained_window_sizes=... (the old windows)"
        )
    if report is not None:
        report.update(resized=resized, notes=notes, layout=info.get("layout"))
    check_params(params, cfg, source, detected)
    ordered = {name: params[name] for name in param_shapes(cfg)}
    return (_cast(ordered, dtype) if dtype is not None else ordered), cfg


def _cast(params: dict[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"unknown dtype {dtype!r}; use float32, float16 or float64") from None
    if dt.kind != "f":
        raise ConfigError(f"dtype must be a floating-point type (float32, float16, float64), got {dt}")
    return {k: v.astype(dt) if v.dtype.kind == "f" else v for k, v in params.items()}


def save_params(params: dict[str, np.ndarray], cfg: SwinConfig, out_path: str | os.PathLike, *,
                dtype: Any = None) -> None:
    """Write canonical params with their config to `.safetensors` (config in the metadata) or `.npz` (config in a
    '__swinref_config__' entry). Checked against cfg first; written to a temporary file and renamed, so a failure
    leaves nothing half-written."""
    out_path = os.fspath(out_path)
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in (".safetensors", ".npz"):
        raise CheckpointError(f"cannot write {out_path}: swinref writes .safetensors or .npz files; change the name")
    check_params(params, cfg, "the parameters to save")
    arrays = {name: np.ascontiguousarray(params[name]) for name in param_shapes(cfg)}
    if dtype is not None:
        arrays = _cast(arrays, dtype)
    config_json = json.dumps(cfg.to_dict(), sort_keys=True)
    directory = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"cannot write {out_path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(out_path) + ".", suffix=".tmp")
    try:
        if ext == ".safetensors":
            os.close(fd)
            from safetensors.numpy import save_file

            save_file(arrays, tmp, metadata={_META_CONFIG: config_json, _META_VERSION: str(FORMAT_VERSION),
                                             "format": "np"})
        else:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays, **{NPZ_CONFIG_KEY: np.array(
                    json.dumps({**cfg.to_dict(), _META_VERSION: FORMAT_VERSION}, sort_keys=True))})
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual mode
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike, config: str | SwinConfig | dict | None = None,
            *, dtype: Any = None, report: dict[str, Any] | None = None, **overrides: Any) -> SwinConfig:
    """Read any supported checkpoint and write it as swinref's `.safetensors` / `.npz`. Returns the config.

    With another window or image size (overrides), the written file holds the transferred weights; `report`
    as in load_state_dict."""
    params, cfg = load_state_dict(in_path, config, report=report, **overrides)
    save_params(params, cfg, out_path, dtype=dtype)
    return cfg
