"""Golden cases on disk: export one (atomically), read one back (checked), and the manifest that describes it.

A case is a directory:

    manifest.json        format + version, config, dtype, window policy, the input and weight rules, and for every
                         point in execution order: shape, layout, sha256, scale and recommended tolerances
    points.safetensors   the input and every point (readable from Rust, C++, JavaScript)
    points.npz           the same arrays for NumPy users

Tolerances are measured on the case itself: the same model and input run in float32 and in float64; a point's
float32 tolerance is SAFETY times the deviation found there, but never below FLOOR_ULPS float32 ulps of the point's
largest magnitude. Rounding error grows with the depth of the computation, and this follows it point by point
instead of guessing a per-depth rule. The float64 tolerance scales the same deviation by eps64 / eps32 (rounding
error is proportional to the unit roundoff).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from swinref.backend import to_host
from swinref.config import SwinConfig
from swinref.errors import SwinrefError
from swinref.write import atomic_dir, check_target

__all__ = [
    "GoldenError", "GoldenCase", "FORMAT", "FORMAT_VERSION", "export_case", "read_case", "sha256_le",
    "SAFETY", "FLOOR_ULPS", "point_layout",
]

FORMAT = "swinref-golden"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAFETENSORS = "points.safetensors"
NPZ = "points.npz"

# Measured (docs/golden.md): in float32, timm 1.0.31 reaches at most 0.20 of these tolerances on the committed
# cases and 0.14 on Swin-T at 224, transformers 5.23 at most 0.17, i.e. within 2x swinref's own float32 deviation;
# 10x leaves room for other summation orders (fused attention, other BLAS, GPUs) without hiding a real bug, which
# moves points by 1e-3 of their scale or more.
SAFETY = 10.0
FLOOR_ULPS = 16.0
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}
ITEMSIZE = {"float32": 4, "float64": 8}
LARGE = 1 << 30  # an export this large in memory or on disk is announced before it starts


class GoldenError(SwinrefError):
    """A golden case that cannot be written or read: missing, damaged, stale or of another format."""


@dataclass(frozen=True)
class GoldenCase:
    """A case read from disk: its directory, its manifest and its arrays (the input and the points)."""

    path: str
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def point_names(self) -> list[str]:
        """Point names in execution order."""
        return [p["name"] for p in self.manifest["points"]]

    @property
    def config(self) -> SwinConfig:
        return SwinConfig.from_dict(self.manifest["config"])

    @property
    def policy(self) -> str:
        """The window policy the case was exported with (cases of swinref 0.1 name it "padding": pad, timm, strict)."""
        from swinref.plan import resolve_policy

        return resolve_policy(self.manifest.get("policy", self.manifest.get("padding"))).name

    @property
    def backbone(self) -> bool:
        """Whether the case holds a backbone's pyramid (outs.{i}) instead of the final norm, pooling and head."""
        return bool(self.manifest.get("backbone", False))

    @property
    def out_indices(self) -> tuple[int, ...] | None:
        """The stages of the pyramid points outs.{i} (None for a classifier case)."""
        chosen = self.manifest.get("out_indices")
        return None if chosen is None else tuple(int(i) for i in chosen)

    def point(self, name: str) -> dict[str, Any]:
        return next(p for p in self.manifest["points"] if p["name"] == name)


def sha256_le(a: np.ndarray) -> str:
    """sha256 of the array's elements as little-endian bytes in row-major order."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()


def point_layout(name: str, ndim: int) -> str:
    if name.startswith("outs."):
        # a backbone's pyramid output, channels first as the detection backbones return it
        return "[B, C, T, H, W]" if ndim == 5 else "[B, C, H, W]"
    if name.endswith(".attn_probs"):
        return "[B*nW, nH, N, N]"
    if ndim == 5:
        return "[B, T, H, W, C]"  # a Video Swin token map
    if ndim == 4:
        return "[B, H, W, C]"
    return "[B, K]" if name == "logits" else "[B, C]"


# ----------------------------------------------------------------------------------------------------------------
# Export.


def export_case(out: str | os.PathLike, cfg: SwinConfig | None, *, seed: int | None = None,
                weights: str | os.PathLike | None = None, dtype: str = "float64", batch: int = 1, device: str = "cpu",
                policy: str | None = None, attn_probs: Iterable[str] | str = (), input_seed: int | None = None,
                force: bool = False, command: str | None = None, backbone: bool = False,
                out_indices: Iterable[int] | None = None, max_memory: int | float | str | None = None,
                notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the model on the rule-made input and write a golden case to `out`. Returns the manifest.

    Weights come from `weights` (any checkpoint swinref reads; `cfg` then overrides detection, None detects) or
    from `seed` (swinref.params' counter rule; the default is seed 0). `attn_probs` is a list of block names
    ("layers.0.blocks.1") or "all".

    Backbone mode (`backbone=True` or `out_indices` given): the points end with the pyramid outputs `outs.{i}` of
    the selected stages (default all; NCHW, through norm{i}: generated weights include norm0..norm{L-1}) instead
    of the final norm, pooling and head; the policy defaults to 'detection'; the manifest records `backbone` and
    `out_indices`.

    Before anything is computed, the memory of both traces (they are held together) is checked against the memory
    available and `max_memory` (bytes or '4GiB'), and the disk space of the two files against the output's file
    system (swinref.budget, swinref.write.check_space). `notify(line)` hears the forecast of a large export (1 GiB
    of memory or disk and more) before the work starts.
    """
    import swinref
    from swinref import api
    from swinref.golden.rule import INPUT_RULE, INPUT_SCALE, WEIGHT_RULE, golden_input, input_key
    from swinref.model import check_out_indices, point_names
    from swinref.plan import BACKBONE_POLICY, resolve_policy
    from swinref.params import init_params

    out = os.fspath(out)
    if dtype not in EPS:
        raise GoldenError(f"golden cases are written in float32 or float64, got dtype {dtype!r}; use --dtype float64")
    backbone = backbone or out_indices is not None
    try:
        policy = resolve_policy(BACKBONE_POLICY if backbone and policy is None else policy).name
    except SwinrefError as exc:
        raise GoldenError(str(exc)) from None
    if seed is not None and weights is not None:
        raise GoldenError("give either --weights (a checkpoint) or --seed (generated weights), not both")
    if int(batch) < 1:
        raise GoldenError(f"batch must be at least 1, got {batch}")
    check_target(out, force=force, directory=True)
    from swinref.device import resolve_device

    resolve_device(device)  # a missing GPU is reported before any work

    if weights is not None:
        loaded = api.load(weights, config=cfg, dtype="float64", device="cpu", policy=policy)
        cfg, params64 = loaded.config, dict(loaded.params)
        weight_info: dict[str, Any] = {"source": "checkpoint", "path": os.fspath(weights),
                                       "file_sha256": _file_sha256(weights)}
    else:
        if cfg is None:
            raise GoldenError("no model given: name one (--variant T) or give --weights CKPT")
        seed = 0 if seed is None else int(seed)
        params64 = init_params(cfg, seed=seed, dtype="float64", stage_norms=backbone)
        weight_info = {"source": "seed", "seed": seed, "rule": WEIGHT_RULE}
    blocks = _attn_prob_blocks(cfg, attn_probs)
    try:
        chosen = check_out_indices(cfg, out_indices) if backbone else None
    except SwinrefError as exc:
        raise GoldenError(str(exc)) from None
    names = point_names(cfg, attn_probs=blocks, out_indices=chosen)
    memory, disk = _check_resources(out, cfg, policy, int(batch), dtype, blocks, chosen is not None, device,
                                    max_memory)
    if notify is not None and max(memory, disk) >= LARGE:
        from swinref.analysis.memory import human_bytes

        notify(f"this export needs about {human_bytes(memory)} of memory and writes {human_bytes(disk)} "
               f"(forecast); both fit here")

    shape = (int(batch), cfg.in_chans, *cfg.img_size)
    input_seed = (seed if seed is not None else 0) if input_seed is None else int(input_seed)
    x64 = golden_input(input_seed, shape, "float64")

    # The same model and input in both precisions: the golden dtype's trace is the case, the other one measures
    # how far float32 rounding moves each point.
    traces = {}
    for dt in ("float64", "float32"):
        model = api.from_params(params64, cfg, dtype=dt, device=device, policy=policy)
        points_dt = model.trace(x64.astype(dt), attn_probs=blocks, out_indices=chosen)
        traces[dt] = {k: to_host(v) for k, v in points_dt.items()}  # CuPy arrays come back once, here
    golden = traces[dtype]
    missing = [n for n in names if n not in golden]
    if missing:  # pragma: no cover - point_names and forward_trace are kept in step by tests/test_golden.py
        raise GoldenError(f"the forward pass recorded no {missing}; this is a swinref bug, please report it")

    points = []
    for name in names:
        ref, low = traces["float64"][name], traces["float32"][name]
        dev = float(np.max(np.abs(low.astype(np.float64) - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        tol = {"float32": max(SAFETY * dev, FLOOR_ULPS * EPS["float32"] * scale)}
        if dtype == "float64":
            tol["float64"] = max(SAFETY * dev * EPS["float64"] / EPS["float32"], FLOOR_ULPS * EPS["float64"] * scale)
        points.append({
            "name": name, "shape": list(golden[name].shape), "layout": point_layout(name, golden[name].ndim),
            "dtype": dtype, "sha256": sha256_le(golden[name]), "max_abs": scale, "float32_deviation": dev,
            "tolerance": tol,
        })
    if weights is None:
        cast = {k: v.astype(dtype) for k, v in params64.items()}
        weight_info["sha256"] = {k: sha256_le(v) for k, v in cast.items()}
        weight_info["shapes"] = {k: list(v.shape) for k, v in cast.items()}

    x = x64.astype(dtype)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "swinref_version": swinref.__version__,
        "command": command,
        "config": cfg.to_dict(),
        "dtype": dtype,
        "policy": policy,
        # Only backbone cases carry these, so a classifier case's manifest is what it was before backbone mode.
        **({"backbone": True, "out_indices": list(chosen)} if chosen is not None else {}),
        "batch": int(batch),
        "device": str(device),
        "input": {"name": "input", "shape": list(shape), "layout": "[B, 3, T, H, W]" if cfg.is_video else "[B, 3, H, W]", "seed": input_seed,
                  "key": input_key(input_seed), "scale": INPUT_SCALE, "rule": INPUT_RULE, "sha256": sha256_le(x)},
        "weights": weight_info,
        "attn_probs": blocks,
        "files": {"safetensors": SAFETENSORS, "npz": NPZ},
        "tolerance_rule": {
            "safety": SAFETY, "floor_ulps": FLOOR_ULPS,
            "float32": "max(safety * float32_deviation, floor_ulps * eps32 * max_abs)",
            "float64": "max(safety * float32_deviation * eps64 / eps32, floor_ulps * eps64 * max_abs)",
            "metric": "max |candidate - golden| over the point's elements must be <= tolerance",
        },
        "points": points,
    }
    arrays = {"input": x, **{n: np.ascontiguousarray(golden[n]) for n in names}}
    _write_case(out, manifest, arrays, force)
    return manifest


def _check_resources(out: str, cfg: SwinConfig, policy: str, batch: int, dtype: str, blocks: list[str],
                     backbone: bool, device: str, max_memory: int | float | str | None) -> tuple[int, int]:
    """Refuse an export whose two traces (float64 and float32, held together with the input in both) do not fit
    in memory, or whose two files (safetensors and npz: the input and every point) do not fit on the disk.
    Returns the forecast: (bytes of memory, bytes on disk)."""
    from swinref.budget import check_memory, forward_bytes, points_bytes
    from swinref.plan import ModelPlan, plan
    from swinref.write import check_space

    def inputs(b: int, m: ModelPlan, itemsize: int) -> int:
        return b * cfg.in_chans * math.prod(m.embed.image) * itemsize

    def held(b: int, m: ModelPlan) -> int:
        return inputs(b, m, 8 + 4) + sum(points_bytes(cfg, m, batch=b, dtype=dt, attn_probs=blocks, backbone=backbone)
                                        for dt in ("float64", "float32"))

    mp = plan(cfg, policy=policy)
    check_memory(cfg, mp, batch=batch, dtype="float64", backbone=backbone, max_memory=max_memory, chunks=False,
                 extra=held, host=str(device) == "cpu", what="the golden export")
    one_copy = inputs(batch, mp, ITEMSIZE[dtype]) + points_bytes(cfg, mp, batch=batch, dtype=dtype,
                                                                  attn_probs=blocks, backbone=backbone)
    check_space(out, 2 * one_copy)
    return forward_bytes(cfg, mp, batch=batch, dtype="float64", backbone=backbone) + held(batch, mp), 2 * one_copy


def _file_sha256(path: str | os.PathLike) -> str | None:
    path = os.fspath(path)
    if not os.path.isfile(path):
        return None  # a Hugging Face directory
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _attn_prob_blocks(cfg: SwinConfig, attn_probs: Iterable[str] | str) -> list[str]:
    from swinref.plan import plan

    blocks = [f"layers.{stage.index}.blocks.{j}" for stage in plan(cfg).stages for j in range(stage.depth)]
    if isinstance(attn_probs, str):
        attn_probs = [] if not attn_probs else (blocks if attn_probs == "all" else attn_probs.split(","))
    wanted = [b.strip() for b in attn_probs if b.strip()]
    if wanted == ["all"]:
        return blocks
    unknown = [b for b in wanted if b not in blocks]
    if unknown:
        raise GoldenError(f"no block named {', '.join(unknown)} in this model; its blocks are {', '.join(blocks)} "
                          f"(or say 'all')")
    return [b for b in blocks if b in wanted]


def _write_case(out: str, manifest: dict[str, Any], arrays: dict[str, np.ndarray], force: bool) -> None:
    """Write through swinref.write.atomic_dir: a temporary sibling directory, renamed into place when complete."""
    from safetensors.numpy import save_file

    with atomic_dir(out, force=force) as tmp:
        save_file(arrays, os.path.join(tmp, SAFETENSORS),
                  metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        np.savez(os.path.join(tmp, NPZ), **arrays)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")


# ----------------------------------------------------------------------------------------------------------------
# Read.


def _regenerate_hint(manifest: dict[str, Any] | None) -> str:
    command = (manifest or {}).get("command")
    if command:
        return f"regenerate it with: {command} --force"
    return "regenerate it with `swinref golden export ... --out DIR` (see docs/golden.md)"


def read_case(path: str | os.PathLike, verify: bool = True) -> GoldenCase:
    """Read a golden case; refuse a foreign or stale format and (with `verify`) arrays whose sha256 differs."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise GoldenError(f"{path} is not a golden case directory; make one with "
                          f"`swinref golden export --variant T --seed 0 --out {path}`")
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isfile(mpath):
        raise GoldenError(f"{path} has no {MANIFEST}, so it is not a golden case; make one with "
                          f"`swinref golden export ... --out {path}`")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise GoldenError(f"cannot read {mpath} ({exc}); {_regenerate_hint(None)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise GoldenError(f"{mpath} is not a swinref golden manifest (format {found!r}, expected {FORMAT!r}); "
                          f"{_regenerate_hint(manifest if isinstance(manifest, dict) else None)}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        age = "newer" if isinstance(version, int) and version > FORMAT_VERSION else "older"
        raise GoldenError(f"{path} has golden format version {version!r}, {age} than the version {FORMAT_VERSION} "
                          f"this swinref reads; {_regenerate_hint(manifest)}")
    arrays = _read_arrays(path, manifest)
    order = ["input"] + [p["name"] for p in manifest["points"]]
    for name in order:
        if name not in arrays:
            raise GoldenError(f"{path}: the manifest lists {name!r} but the arrays do not hold it; "
                              f"{_regenerate_hint(manifest)}")
    if verify:
        entries = [manifest["input"]] + manifest["points"]
        for entry in entries:
            a = arrays[entry["name"]]
            if list(a.shape) != list(entry["shape"]) or sha256_le(a) != entry["sha256"]:
                raise GoldenError(f"{path}: {entry['name']!r} does not match its checksum in the manifest (the "
                                  f"file was changed or damaged); {_regenerate_hint(manifest)}")
    return GoldenCase(path=path, manifest=manifest, arrays={n: arrays[n] for n in order})


def _read_arrays(path: str, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    files = manifest.get("files", {})
    st = os.path.join(path, files.get("safetensors", SAFETENSORS))
    npz = os.path.join(path, files.get("npz", NPZ))
    try:
        if os.path.isfile(st):
            from safetensors.numpy import load_file

            return load_file(st)
        if os.path.isfile(npz):
            with np.load(npz, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except Exception as exc:  # a truncated or damaged file: safetensors and zipfile raise many kinds
        raise GoldenError(f"cannot read the arrays of {path} ({type(exc).__name__}: {exc}); "
                          f"{_regenerate_hint(manifest)}") from None
    raise GoldenError(f"{path} holds neither {SAFETENSORS} nor {NPZ}; {_regenerate_hint(manifest)}")
