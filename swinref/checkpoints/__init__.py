"""Read every Swin checkpoint layout, without torch, into swinref's canonical layout; write swinref's own files.

    params, report = read_checkpoint(path)          # canonical names, NumPy arrays; a LoadReport of what was found
    params, cfg, report = load_checkpoint(path)     # + the detected (or given) config, every shape checked
    params, cfg = load_state_dict(path)             # the same without the report
    save_params(params, cfg, "t.safetensors")       # or .npz; the config travels in the file
    convert("swin_tiny.pth", "t.safetensors")
    convert("swin_tiny.pth", "timm.safetensors", layout="timm")   # a peer's own names (export_params), no config

Containers: torch `.pth`/`.bin` files (zip and legacy; pth.py says what the unpickler allows), `.safetensors`,
`.npz` (swinref's own) and Hugging Face model directories (config.json + model.safetensors or pytorch_model.bin);
files.py reads the rest. Layouts (official, timm, transformers, torchvision, openmmlab, swinref): one module each
in layouts/, detected from the names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from swinref.checkpoints import layouts
from swinref.checkpoints.bounds import SafeZip, check_regular, from_file, load_json, open_regular, shorten
from swinref.checkpoints.detect import (
    APE,
    buffer_config_hints,
    check_param_dtypes,
    check_params,
    checked_hints,
    infer_config,
    ordered_params,
    resolve_config,
)
from swinref.checkpoints.files import (
    NPZ_CONFIG_KEY,
    find_state_dict,
    hf_weight_files,
    is_safetensors_bytes,
    read_hf_config,
    read_npz,
    read_safetensors,
)
from swinref.checkpoints.layouts import LAYOUTS
from swinref.checkpoints.layouts.base import drop_final_norm_alias
from swinref.checkpoints.layouts.swinref import CONFIG_KEY, FORMAT_VERSION, VERSION_KEY
from swinref.checkpoints.pth import is_pickle_bytes, is_pth_bytes, read_pth
from swinref.config import SwinConfig
from swinref.errors import CheckpointError, ConfigError
from swinref.write import atomic_file, check_target

__all__ = ["read_checkpoint", "load_checkpoint", "load_state_dict", "save_params", "export_params", "convert",
           "inflate_checkpoint",
           "LoadReport", "LAYOUTS", "EXPORT_LAYOUTS", "FORMAT_VERSION"]


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What reading a checkpoint found and did. read_checkpoint fills what the file says; load_checkpoint adds the
    config the params were checked against, what a transfer resized and what the file could not say."""

    path: str
    container: str                          # torch-zip, torch-legacy, safetensors, npz or huggingface-dir
    layout: str                             # a name of layouts.LAYOUTS
    files: tuple[str, ...] = ()             # the files read (a Hugging Face directory's shards)
    entry: str | None = None                # the entry of a training checkpoint that held the weights ('model', ...)
    ignored_entries: tuple[str, ...] = ()   # that checkpoint's other entries (optimizer, epoch, ...)
    ignored_non_tensors: tuple[str, ...] = ()  # state-dict names whose values are not tensors
    prefixes: tuple[str, ...] = ()          # stripped from every name, outermost first ('module.', 'backbone.', ...)
    left_out: tuple[str, ...] = ()          # modules of a whole model beside its backbone ('neck.', 'rpn_head.', ...)
    dropped: tuple[str, ...] = ()           # derived buffers (index, mask, coordinate table), never read
    widened: tuple[str, ...] = ()           # bfloat16 tensors widened to float32 (exact)
    hints: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # SwinConfig fields the file states
    stored_config: SwinConfig | None = None  # the config stored in swinref's own files
    config: SwinConfig | None = None        # load_checkpoint: the config the params fit
    resized: tuple[str, ...] = ()           # load_checkpoint: one line per stage a transfer resized
    notes: tuple[str, ...] = ()             # what the translation did besides renaming; what the file could not say
    out_indices: tuple[int, ...] | None = None  # a backbone's output stages (0-based): its config.json's
    #                                             out_features, else the stages whose output norms (norm{i}) it holds


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Read a checkpoint file or Hugging Face directory into canonical params (name -> NumPy array) and a report."""
    path = os.fspath(path)
    if os.path.isdir(path):
        sd, facts = _read_hf_dir(path)
    elif not os.path.exists(path):
        raise CheckpointError(f"no such checkpoint file or directory: {path}")
    else:
        sd, facts = _read_file(path)
    layout = layouts.swinref if facts.get("stored_config") is not None else layouts.detect(sd.keys(), path)
    # A layout translates names and reshapes arrays assuming the shapes its peer writes: a damaged file that breaks
    # that assumption is reported as such (every layout, present and future, inherits this).
    with from_file(path, f"translating the {layout.NAME} names"):
        params, notes = layout.to_canonical(sd, path)
    check_param_dtypes(params, path)
    hints = dict(facts.pop("hints", {}))
    if "window_size" not in hints:
        # Official, torchvision and mmpretrain V2 files save derived buffers that reveal the windows.
        with from_file(path, "reading the window sizes from its index buffers"):
            hints.update(buffer_config_hints(notes.buffers, params))
    if facts.get("out_indices") is None:
        facts["out_indices"] = _norm_stages(params)
    prefixes = facts.pop("prefixes", ()) + ((notes.prefix,) if notes.prefix else ())
    messages = list(notes.messages)
    if notes.ignored:
        messages.insert(0, left_out_line(sd, notes.prefix, notes.ignored))
    report = LoadReport(path=path, layout=layout.NAME, prefixes=prefixes, left_out=tuple(notes.ignored),
                        dropped=tuple(notes.dropped), hints=MappingProxyType(hints), notes=tuple(messages),
                        **facts)
    return params, report


def _norm_stages(params: Mapping[str, Any]) -> tuple[int, ...] | None:
    stages = sorted(int(k[4:-len(".weight")]) for k in params if k.startswith("norm") and k.endswith(".weight")
                    and k[4:-len(".weight")].isdecimal() and len(k) < 20)
    return tuple(stages) or None


def left_out_line(sd: Mapping[str, Any], prefix: str | None, ignored: tuple[str, ...] | list[str]) -> str:
    """The one line a load report (and the CLI) gives about a whole detector / segmentor checkpoint: the backbone
    was read, its neck and heads were set aside."""
    counts = {m: sum(1 for k in sd if (k.startswith(m) if m.endswith(".") else k == m)) for m in ignored}
    parts = ", ".join(f"{m} ({n})" for m, n in counts.items())
    where = f"the backbone under '{prefix}'" if prefix else "the backbone"
    return f"read {where}; set aside {sum(counts.values())} tensors of the rest of the model: {parts}"


def _sniff(path: str) -> bytes:
    with open_regular(path) as f:
        return f.read(64)


# Which container a file name promises; the first bytes say which one it is (the container read is the one found;
# the name only words the message when the bytes match none).
_EXTENSIONS = {".safetensors": "safetensors", ".npz": "npz", ".pth": "torch", ".pt": "torch", ".bin": "torch",
               ".ckpt": "torch", ".pkl": "torch", ".tar": "torch"}
_CONTAINER_NAMES = {"safetensors": "a .safetensors file", "npz": "an .npz archive", "torch": "a torch file"}


def _container(path: str, head: bytes) -> str:
    """'safetensors', 'npz' or 'torch' (zip, legacy or plain pickle) from the first bytes and the name."""
    promised = _EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if is_safetensors_bytes(head):
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        if promised == "npz":
            return "npz"
        what = "a torch zip archive" if promised == "torch" else "a zip archive (a torch file or .npz)"
        with SafeZip(path, what) as z:
            is_npz = bool(z.names) and all(n.endswith(".npy") for n in z.names)
        return "npz" if is_npz else "torch"
    if is_pth_bytes(head) or is_pickle_bytes(head):
        return "torch"
    if promised == "safetensors":
        size = os.path.getsize(path)
        declared = int.from_bytes(head[:8], "little") if len(head) >= 8 else None
        raise CheckpointError(
            f"{path} has a .safetensors name but is not a safetensors file: "
            + (f"it is {size} bytes long, too short for the 8-byte header length" if declared is None else
               f"its first 8 bytes declare a {declared}-byte JSON header in a file of {size} bytes"
               if 8 + declared > size or declared < 2 else f"its header does not start with '{{' ({head[8:16]!r})")
            + "; the file is truncated or corrupt: re-download or re-save it"
        )
    if promised == "npz":
        raise CheckpointError(
            f"{path} has an .npz name but is not a zip archive (it starts with {head[:8]!r}); the file is truncated, "
            f"corrupt or not an .npz: re-download it or re-save the weights with np.savez / swinref convert"
        )
    return "torch"  # read_pth names what the bytes are (tar, unknown)


def _read_file(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The state dict as the file names it, and LoadReport fields about the container."""
    check_regular(path)
    container = _container(path, _sniff(path))
    if container == "safetensors":
        sd, metadata, widened = read_safetensors(path)
        facts: dict[str, Any] = dict(container="safetensors", files=(path,), widened=tuple(widened))
        if CONFIG_KEY in metadata:
            facts["stored_config"] = _stored_config(metadata.get(CONFIG_KEY), metadata.get(VERSION_KEY), path)
        else:
            facts.update(_sibling_facts(path))
        return sd, facts
    if container == "npz":
        sd, config = read_npz(path)
        facts = dict(container="npz", files=(path,))
        if config is not None:
            facts["stored_config"] = _stored_config(config, config.get(VERSION_KEY), path)
        return sd, facts
    obj, pth_info = read_pth(path)
    sd, where = find_state_dict(obj, path)
    facts = dict(container=pth_info["container"], files=(path,), widened=tuple(pth_info["widened"]),
                 entry=where.entry, ignored_entries=where.ignored_entries,
                 ignored_non_tensors=where.ignored_non_tensors, prefixes=(where.prefix,) if where.prefix else ())
    if os.path.basename(path).startswith(("pytorch_model", "model.")):
        facts.update(_sibling_facts(path))
    return sd, facts


def _stored_config(config: Any, version: Any, path: str) -> SwinConfig:
    """The SwinConfig swinref stored in its own file (JSON text in safetensors metadata, a dict from an .npz)."""
    if isinstance(config, str):
        config = load_json(config.encode("utf-8"), f"{path}: the stored swinref config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the stored swinref config is not an object of fields; convert the file again")
    checked_hints({k: v for k, v in config.items() if k != VERSION_KEY}, f"{path} (its stored swinref config)")
    if version is not None and not isinstance(version, (int, str)) or isinstance(version, str) and len(version) > 20:
        raise CheckpointError(f"{path}: the stored format version {shorten(version)} is corrupt; convert the file "
                              f"again")
    with from_file(path, "reading the stored swinref config"):
        return SwinConfig.from_dict(layouts.swinref.config_hints({CONFIG_KEY: config, VERSION_KEY: version}, path))


def _sidecar_facts(config: dict[str, Any], config_path: str) -> dict[str, Any]:
    """A config.json beside the weights: timm's hub config (architecture, model_args) or Hugging Face's (whose
    backbone configs also name the output stages)."""
    with from_file(config_path, "reading the model's settings"):
        if "model_type" not in config and "architecture" in config:
            return {"hints": checked_hints(layouts.timm.config_hints(config, config_path), config_path)}
        hints = checked_hints(layouts.transformers.config_hints(config, config_path), config_path)
        out_indices = layouts.transformers.backbone_out_indices(config, config_path)
    if out_indices is not None and not all(isinstance(i, int) and 0 <= i < 16 for i in out_indices):
        raise CheckpointError(f"{config_path}: its output stages {shorten(out_indices)} are not stage numbers")
    return {"hints": hints, "out_indices": out_indices}


def _sibling_facts(path: str) -> dict[str, Any]:
    # A weight file inside a Hugging Face (or timm hub) directory: its config.json tells the image size and window.
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not os.path.isfile(config_path):
        return {}
    config = read_hf_config(config_path)
    if "architecture" not in config and config.get("model_type") not in ("swin", "swinv2"):
        return {}
    return _sidecar_facts(config, config_path)


def _read_hf_dir(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(
            f"{path} is a directory without config.json; give a checkpoint file, or a Hugging Face model directory "
            f"(config.json + model.safetensors or pytorch_model.bin)"
        )
    sidecar = _sidecar_facts(read_hf_config(config_path), config_path)
    sd: dict[str, np.ndarray] = {}
    widened: list[str] = []
    files = hf_weight_files(path)
    for file in files:
        if _container(file, _sniff(file)) == "safetensors":
            part, _meta, wide = read_safetensors(file)
        else:
            obj, pth_info = read_pth(file)
            part, _where = find_state_dict(obj, file)
            wide = pth_info["widened"]
        overlap = set(part) & set(sd)
        if overlap:
            raise CheckpointError(f"{file} repeats {shorten(sorted(overlap)[:3])} from another shard: the index is "
                                  f"inconsistent")
        sd.update(part)
        widened += wide
    return sd, dict(container="huggingface-dir", files=tuple(files), widened=tuple(widened), **sidecar)


def load_checkpoint(
    path: str | os.PathLike, config: str | SwinConfig | dict | None = None, *, dtype: Any = None, **overrides: Any
) -> tuple[dict[str, np.ndarray], SwinConfig, LoadReport]:
    """Canonical params, their config and the LoadReport, every parameter checked against
    swinref.layout.param_shapes(cfg) (plus the optional per-stage output norms of a backbone, detect.stage_norm_shapes).

    config: None to detect it from the weights (and the file's own config, if it has one); a registry name or
    alias ('T', 'swin_base_patch4_window7_224', ...), a SwinConfig or a dict of its fields to impose one.
    overrides: config fields to change (img=384, window=12, ...), applied to the given or detected config.
    A config with another window or image size is a resolution transfer (swinref.transfer): V1 bias tables are
    resized bicubically as the official fine-tuning does; a V2 model keeps its position-bias MLP and gets the
    pretrained window sizes it was trained with; report.resized says what was transferred.
    dtype: cast floating-point params (e.g. np.float32); None keeps the stored dtypes (bfloat16 arrives as float32).
    Raises CheckpointError naming every missing, unexpected or mis-shaped parameter, with a hint.
    """
    from swinref.transfer import resize_v1_tables, v2_transfer_config

    params, report = read_checkpoint(path)
    source = report.path
    detected, detect_error = report.stored_config, None
    if detected is None:
        try:
            # Detection reads shapes and names a damaged file may not have: any failure is the file's (also for
            # detection code added later, e.g. detect_video).
            with from_file(source, "detecting the architecture"):
                detected = infer_config(params, dict(report.hints), source)
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
        states_window = report.stored_config is not None or "window_size" in report.hints
        trained = detected if detected is not None and (config is None or states_window) else base
        cfg, v2_lines = v2_transfer_config(trained, cfg)
        resized += v2_lines
    notes = list(report.notes)
    if report.layout == "torchvision" and cfg.version == 2:
        notes.append(
            "torchvision V2 files record no pretrained window sizes (torchvision normalises the position-bias "
            "coordinates by the window itself, and its swin_v2_t/s/b were trained at window 8 without "
            "fine-tuning from another window): loaded with pretrained_window_sizes "
            f"{','.join(map(str, cfg.pretrained_window_sizes))}; for a model fine-tuned from a smaller window pass "
            "pretrained_window_sizes=... (the old windows)"
        )
    check_params(params, cfg, source, detected)
    params = ordered_params(params, cfg)
    non_finite = _non_finite_line(params)
    if non_finite:
        warnings.warn(f"{source}: {non_finite}", RuntimeWarning, stacklevel=2)
        notes.append(non_finite)
    report = dataclasses.replace(report, config=cfg, resized=tuple(resized), notes=tuple(notes))
    return (_cast(params, dtype) if dtype is not None else params), cfg, report


def _non_finite_line(params: Mapping[str, np.ndarray]) -> str | None:
    """A checkpoint with NaN or inf weights loads (it may be what a diverged run saved, worth inspecting), but never
    silently: a warning and a report note count them, with the parameters that hold them."""
    counts = {}
    for name, value in params.items():
        if value.dtype.kind == "f":
            bad = value.size - int(np.count_nonzero(np.isfinite(value)))
            if bad:
                counts[name] = bad
    if not counts:
        return None
    names = ", ".join(f"{k if len(k) <= 100 else shorten(k, 100)} ({n})" for k, n in list(counts.items())[:6])
    more = f", ... (+{len(counts) - 6} more)" if len(counts) > 6 else ""
    total = sum(counts.values())
    return (f"{total} weight{'s are' if total > 1 else ' is'} NaN or infinite, in {len(counts)} parameter"
            f"{'s' if len(counts) > 1 else ''}: {names}{more}; the model's outputs will be NaN: re-download the file "
            f"or take an earlier checkpoint")


def load_state_dict(
    path: str | os.PathLike, config: str | SwinConfig | dict | None = None, *, dtype: Any = None, **overrides: Any
) -> tuple[dict[str, np.ndarray], SwinConfig]:
    """load_checkpoint without the report: (params, cfg)."""
    params, cfg, _ = load_checkpoint(path, config, dtype=dtype, **overrides)
    return params, cfg


def _cast(params: dict[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"unknown dtype {dtype!r}; use float32, float16 or float64") from None
    if dt.kind != "f":
        raise ConfigError(f"dtype must be a floating-point type (float32, float16, float64), got {dt}")
    return {k: v.astype(dt) if v.dtype.kind == "f" else v for k, v in params.items()}


def save_params(params: dict[str, np.ndarray], cfg: SwinConfig, out_path: str | os.PathLike, *,
                dtype: Any = None, force: bool = False) -> None:
    """Write canonical params with their config to `.safetensors` (config in the metadata) or `.npz` (config in a
    '__swinref_config__' entry). Checked against cfg first; written to a temporary file and renamed, so a failure
    leaves nothing half-written; an existing file is kept unless force."""
    out_path = os.fspath(out_path)
    _check_extension(out_path)
    check_target(out_path, force=force)
    check_params(params, cfg, "the parameters to save")
    arrays = {name: np.ascontiguousarray(value) for name, value in ordered_params(params, cfg).items()}
    if dtype is not None:
        arrays = _cast(arrays, dtype)
    config_json = json.dumps(cfg.to_dict(), sort_keys=True)
    _write(out_path, arrays, {CONFIG_KEY: config_json, VERSION_KEY: str(FORMAT_VERSION), "format": "np"},
           {NPZ_CONFIG_KEY: np.array(json.dumps({**cfg.to_dict(), VERSION_KEY: FORMAT_VERSION}, sort_keys=True))},
           force)


# The layouts export_params writes (swinref's own files are save_params').
EXPORT_LAYOUTS = ("official", "openmmlab", "timm", "transformers", "torchvision")
# Layouts whose models hold the per-stage output norms norm0..norm{L-1} and the absolute position embedding.
_HOLDS_STAGE_NORMS = ("official", "openmmlab", "transformers")
_BACKBONE_PREFIX_LAYOUTS = ("official", "openmmlab")


def export_params(params: dict[str, np.ndarray], cfg: SwinConfig, out_path: str | os.PathLike, layout: str, *,
                  backbone_prefix: bool = False, dtype: Any = None, force: bool = False) -> list[str]:
    """Write canonical params in a peer's own names (layouts.<layout>.from_canonical) to `.safetensors` or `.npz`,
    for `safetensors.torch.load_file` + `model.load_state_dict(...)` in the peer. No config is stored (the peer's
    model is built by its own code); derived buffers (index, mask, coordinate table) are not written.

    layout: official, openmmlab, timm, transformers (a SwinBackbone's names when params hold norm0..), torchvision.
    backbone_prefix (official, openmmlab): the whole detector's form, every name under 'backbone.', as the official
    detection / segmentation backbones and mmdet / mmseg keep it; needs the per-stage output norms, and the final
    norm is the last stage's. An existing file is kept unless force. Returns what the writing did besides renaming
    (one line each)."""
    out_path = os.fspath(out_path)
    _check_extension(out_path)
    check_target(out_path, force=force)
    if cfg.is_video:  # torchvision swin3d, the official and the mmaction2 recognizers: checkpoints.video
        from swinref.checkpoints.video import export_state_dict

        check_params(params, cfg, "the parameters to write")
        sd, lines = export_state_dict(ordered_params(params, cfg), cfg, layout, backbone_prefix)
        _write_state_dict(out_path, sd, dtype, force)
        return lines
    if layout not in EXPORT_LAYOUTS:
        raise CheckpointError(f"cannot write layout {layout!r}: choose one of {', '.join(EXPORT_LAYOUTS)} (or swinref's "
                              f"own files)")
    if backbone_prefix and layout not in _BACKBONE_PREFIX_LAYOUTS:
        raise CheckpointError(f"--backbone-prefix writes the official or openmmlab detection backbone, not {layout}")
    check_params(params, cfg, "the parameters to write")
    params = ordered_params(params, cfg)
    stage_norms = [k for k in params if k.startswith("norm") and k[4:5].isdigit()]
    extras = ([APE] if APE in params else []) + stage_norms
    if layout == "transformers" and cfg.version == 2:
        extras = stage_norms  # Swinv2 has position_embeddings but no per-stage output norms
    if extras and (layout not in _HOLDS_STAGE_NORMS or (layout == "transformers" and cfg.version == 2)):
        raise CheckpointError(
            f"the {layout} layout{' (V2)' if layout == 'transformers' else ''} cannot hold {', '.join(extras[:3])}"
            f"{', ...' if len(extras) > 3 else ''}: write them with --layout official, openmmlab or transformers (V1)"
        )
    lines: list[str] = []
    if layout == "openmmlab" and "head.weight" in params and not backbone_prefix:
        params = {k: v for k, v in params.items() if not k.startswith("head.")}
        lines.append("the classifier head is left out: the OpenMMLab backbones have none")
    if backbone_prefix:
        if not stage_norms:
            raise CheckpointError(
                "a detection backbone (backbone.* names) has one output norm per stage (norm0..): these params have "
                "none; write a classifier's layout without --backbone-prefix"
            )
        if "head.weight" in params:
            raise CheckpointError("a detection backbone has no classifier head: load the params with num_classes=0")
        params = drop_final_norm_alias(params, layout)
        lines.append(f"the final norm is written as norm{cfg.num_layers - 1} (a detection backbone has no other)")
    sd = layouts.get(layout).from_canonical(params, cfg)
    if backbone_prefix:
        sd = {"backbone." + k: v for k, v in sd.items()}
    _write_state_dict(out_path, sd, dtype, force)
    return lines


def _write_state_dict(out_path: str, sd: Mapping[str, np.ndarray], dtype: Any, force: bool) -> None:
    arrays = {name: np.ascontiguousarray(value) for name, value in sd.items()}
    if dtype is not None:
        arrays = _cast(arrays, dtype)
    _write(out_path, arrays, {"format": "pt"}, {}, force)


def _check_extension(out_path: str) -> None:
    if os.path.splitext(out_path)[1].lower() not in (".safetensors", ".npz"):
        raise CheckpointError(f"cannot write {out_path}: swinref writes .safetensors or .npz files; change the name")


def _write(out_path: str, arrays: dict[str, np.ndarray], metadata: dict[str, str],
           npz_extra: dict[str, np.ndarray], force: bool) -> None:
    """Write through swinref.write.atomic_file: a temporary file beside out_path, renamed when complete."""
    with atomic_file(out_path, force=force) as tmp:
        if os.path.splitext(out_path)[1].lower() == ".safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, tmp, metadata=metadata)
        else:
            np.savez(tmp, **arrays, **npz_extra)


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike, config: str | SwinConfig | dict | None = None,
            *, dtype: Any = None, layout: str = "swinref", backbone_prefix: bool = False, force: bool = False,
            **overrides: Any) -> LoadReport:
    """Read any supported checkpoint and write it as swinref's `.safetensors` / `.npz` (layout 'swinref', the
    config stored), or in a peer's names (layout official / openmmlab / timm / transformers / torchvision, see
    export_params). Returns the LoadReport of the read (report.config is the written config; report.resized says
    what another window or image size transferred; report.notes ends with what the writing did). The output is
    checked before the input is read: an existing file is kept unless force."""
    _check_extension(os.fspath(out_path))
    check_target(out_path, force=force)
    params, cfg, report = load_checkpoint(in_path, config, **overrides)
    if layout == "swinref":
        if backbone_prefix:
            raise CheckpointError("--backbone-prefix writes a peer's detection backbone: give --layout official")
        save_params(params, cfg, out_path, dtype=dtype, force=force)
        return report
    lines = export_params(params, cfg, out_path, layout, backbone_prefix=backbone_prefix, dtype=dtype, force=force)
    return dataclasses.replace(report, notes=report.notes + tuple(lines))


def inflate_checkpoint(in_path: str | os.PathLike, out_path: str | os.PathLike, *,
                       window: tuple[int, int, int] = (8, 7, 7), patch_t: int = 2, frames: int | None = None,
                       config: Any = None, layout: str = "swinref", dtype: Any = None,
                       force: bool = False) -> tuple[SwinConfig, LoadReport]:
    """Read a 2-D Swin V1 checkpoint (any layout swinref reads), inflate it (swinref.checkpoints.video.inflate) and
    write the Video Swin backbone as swinref's file (its config stored) or in another layout's names (`layout`; the
    recognizer layouts need a head, which inflation does not make). An existing file is kept unless force. Returns
    (the written config, the LoadReport of the read)."""
    from swinref.checkpoints.video import inflate

    params, cfg, report = load_checkpoint(in_path, config)
    clip = None if frames is None else (int(frames), *cfg.img_size)
    video, vcfg = inflate(params, cfg, window=window, patch_t=patch_t, clip=clip)
    if layout == "swinref":
        save_params(video, vcfg, out_path, dtype=dtype, force=force)
    else:
        export_params(video, vcfg, out_path, layout, dtype=dtype, force=force)
    return vcfg, report
