"""The public entry points: `load` a checkpoint into a `Model`, or build one from params or a seed.

A Model is a config plus a params dict on one device in one dtype; calling it runs the functional forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any, Iterable

from swinref.backend import Backend
from swinref.config import SwinConfig, get_config
from swinref.device import resolve_device
from swinref.errors import InputError
from swinref.layout import is_linear_weight
from swinref.plan import BACKBONE_POLICY, DEFAULT_POLICY, resolve_policy
from swinref import model as _model

if TYPE_CHECKING:
    from swinref.checkpoints import LoadReport

__all__ = ["Model", "load", "from_params", "random_model", "create_model", "DTYPES", "is_backbone", "BACKBONE_POLICY"]

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Model:
    """A loaded Swin model. `model(x)` -> logits; `model.features(x)` -> stage outputs; `model.trace(x)` -> points."""

    config: SwinConfig
    params: dict[str, Any]
    dtype: str = "float32"
    device: str = "cpu"
    policy: str = DEFAULT_POLICY
    report: LoadReport | None = None  # what swinref.load read and did; None for a model built from params
    backend: Backend | None = field(default=None, repr=False, compare=False)
    max_memory: int | float | str | None = None  # a budget for each pass, weights included (swinref.budget)

    def _prepare(self, x: Any) -> Any:
        be = self.backend
        if be is None or be.name == "numpy":
            import numpy as np

            if not isinstance(x, np.ndarray):
                if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
                    raise InputError("the model is on the CPU but the input is a CuPy array; use x.get() or load "
                                     "the model with device='cuda'")
                x = np.asarray(x)
            return x
        # GPU model: a NumPy input is moved to the device once.
        return be.asarray(x)

    def __call__(self, x: Any, *, check_finite: bool = True) -> Any:
        """Logits [B, classes]; NaN or inf in x raises InputError unless check_finite=False."""
        return _model.forward(self.params, self._prepare(x), self.config, policy=self.policy,
                              max_memory=self.max_memory, check_finite=check_finite)

    def pooled(self, x: Any, *, check_finite: bool = True) -> Any:
        """The pooled features [B, C_L] before the head: the image embedding (`model.head(model.pooled(x))` is
        `model(x)`)."""
        return _model.forward_pooled(self.params, self._prepare(x), self.config, policy=self.policy,
                                     max_memory=self.max_memory, check_finite=check_finite)

    def head(self, pooled: Any) -> Any:
        """The classifier head on pooled features: logits [B, classes]."""
        return _model.forward_head(self.params, pooled)

    def features(self, x: Any, layout: str = "NCHW", out_indices: Iterable[int] | None = None, *,
                 check_finite: bool = True) -> list[Any]:
        """The selected stage outputs (None: all), each through its output norm norm{i} when the params hold it."""
        return _model.features(self.params, self._prepare(x), self.config, policy=self.policy, layout=layout,
                               out_indices=out_indices, max_memory=self.max_memory, check_finite=check_finite)

    def check_memory(self, batch: int = 1, image: Any = None) -> int:
        """The images per forward pass that fit in memory at `image` (default: the config's size), before any
        image is decoded or allocated; raises ResourceError with the forecast and the largest size that fits when
        one image does not (swinref.budget)."""
        from swinref.budget import check_memory
        from swinref.plan import plan

        mp = plan(self.config, image, self.policy)
        return check_memory(self.config, mp, batch=int(batch), dtype=self.dtype, max_memory=self.max_memory,
                            host=self.backend is None or self.backend.name == "numpy")

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The preprocessing the model expects, in timm's pretrained_cfg keys: the official evaluation transform of
        swinref.preprocess (shorter side to input / crop_pct, bicubic, centre crop; no crop above 256)."""
        from swinref.preprocess import IMAGENET_MEAN, IMAGENET_STD, default_crop

        size = tuple(self.config.img_size)
        return {"input_size": (self.config.in_chans, *size), "interpolation": "bicubic",
                "crop_pct": 224 / 256 if default_crop(size) else 1.0, "crop_mode": "center",
                "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_classes": self.config.num_classes}

    def save(self, path: str | PathLike, layout: str = "swinref", *, force: bool = False,
             dtype: str | None = None) -> list[str]:
        """Write the weights: layout 'swinref' (its .safetensors / .npz with the config, what swinref.load reads
        back alone), or a peer's names ('official', 'timm', 'torchvision', 'openmmlab', 'transformers') for the
        peer's load_state_dict. An existing file is kept unless force; written atomically (swinref.write).
        Returns what the writing did besides renaming (export_params's lines)."""
        from swinref.backend import to_host
        from swinref.checkpoints import export_params, save_params

        host = {k: to_host(v) for k, v in self.params.items()}
        if layout == "swinref":
            save_params(host, self.config, path, dtype=dtype, force=force)
            return []
        return export_params(host, self.config, path, layout, dtype=dtype, force=force)

    @property
    def is_backbone(self) -> bool:
        """Whether the params are a dense-prediction backbone's: they hold the per-stage output norms (norm0, ...)."""
        return is_backbone(self.params, self.report)

    def trace(self, x: Any, attn_probs: Iterable[str] = (), out_indices: Iterable[int] | None = None,
              backbone: bool = False, *, check_finite: bool = True) -> dict[str, Any]:
        return _model.forward_trace(self.params, self._prepare(x), self.config, policy=self.policy,
                                    attn_probs=attn_probs, out_indices=out_indices, backbone=backbone,
                                    max_memory=self.max_memory, check_finite=check_finite)


# Layouts whose headless checkpoints are backbones (mmdet / mmseg / mmpretrain backbones).
_BACKBONE_LAYOUTS = ("openmmlab",)


def is_backbone(params: dict[str, Any], report: LoadReport | None = None) -> bool:
    """A backbone checkpoint: its params hold the first per-stage output norm (norm0.weight: the official detection
    backbone, mmdet, mmseg), or it was read from under a whole detector's or segmentor's 'backbone.', or it has an
    OpenMMLab layout and no classifier head."""
    if "norm0.weight" in params:
        return True
    if report is None:
        return False
    if "backbone." in report.prefixes:
        return True
    return report.layout in _BACKBONE_LAYOUTS and "head.weight" not in params


def _check_dtype(dtype: str) -> str:
    name = str(getattr(dtype, "__name__", dtype))
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return name


def _check_policy(policy: str | None, padding: str | None = None) -> str:
    """The window policy's name; `padding` is the keyword of swinref 0.1 (pad, timm, strict), still accepted."""
    if padding is not None:
        if policy is not None:
            raise InputError("give the window policy once: policy=... (padding=... is its old name)")
        policy = padding
    return resolve_policy(policy).name


def _place(params: dict[str, Any], cfg: SwinConfig, dtype: str, device: str, be: Backend, policy: str,
           report: LoadReport | None = None, max_memory: int | float | str | None = None,
           consume: bool = False) -> Model:
    """Cast every param to `dtype` and move it to the resolved backend's device once.

    On the CPU the weights of the linear layers are kept column-major: the same [out, in] array, whose transpose
    W^T, the operand of x @ W^T, is then contiguous, the layout OpenBLAS multiplies fastest (7-26 % faster on
    Swin-T's shapes, benchmarks/gemm_layout.py).

    `consume`: params is swinref's own (a loader's) and is emptied as it goes; a weight with a buffer of its own is
    reordered inside that buffer, so placing a checkpoint does not hold its weights twice (copying them made
    the heap grow by their size: Swin-V2-T's timm file peaked 90 MB higher)."""
    import numpy as np

    shared = _shared_buffers(params) if consume else set()
    placed = {}
    for name in list(params):
        source = params.pop(name) if consume else params[name]
        linear = be.name == "numpy" and getattr(source, "ndim", 0) == 2 and is_linear_weight(name)
        if linear and consume and id(source) not in shared and source.dtype == np.dtype(dtype):
            source = _column_major_in_place(source)
        value = be.asarray(np.asarray(source, dtype=dtype))
        if linear:
            value = np.asfortranarray(value)  # no copy when already column-major
        placed[name] = value
        del source
    if max_memory is not None:
        from swinref.budget import parse_bytes

        parse_bytes(max_memory)  # a bad budget is reported now, not at the first forward pass
    return Model(config=cfg, params=placed, dtype=dtype, device=str(device), policy=policy,
                 report=report, backend=be, max_memory=max_memory)


def _shared_buffers(params: dict[str, Any]) -> set[int]:
    """ids of arrays that more than one entry reaches (the same array twice, or another entry's base)."""
    seen: dict[int, int] = {}
    for value in params.values():
        for key in {id(value), id(getattr(value, "base", None))} - {id(None)}:
            seen[key] = seen.get(key, 0) + 1
    return {key for key, count in seen.items() if count > 1}


def _column_major_in_place(a: Any) -> Any:
    """The column-major view of a row-major [N, K] array's values, written into a's own buffer through one
    temporary; `a` itself is left holding them in that order. Arrays that do not own a writable buffer are
    returned as they are."""
    import numpy as np

    if not (a.flags.c_contiguous and a.flags.owndata and a.flags.writeable) or a.flags.f_contiguous:
        return a
    transposed = np.ascontiguousarray(a.T)  # W^T row-major: the bytes of W column-major
    flat = a.reshape(-1)
    flat[:] = transposed.reshape(-1)
    return flat.reshape(a.shape[::-1]).T


def from_params(params: dict[str, Any], config: SwinConfig | str, *, dtype: str = "float32", device: str = "cpu",
                policy: str | None = None, padding: str | None = None,
                max_memory: int | float | str | None = None) -> Model:
    """A Model from canonical params (NumPy arrays) placed on `device` in `dtype`. `max_memory` (bytes or '4GiB'):
    a budget every forward pass is checked against, weights included (swinref.budget)."""
    cfg = config if isinstance(config, SwinConfig) else get_config(config)
    dtype = _check_dtype(dtype)
    policy = _check_policy(policy, padding)
    return _place(params, cfg, dtype, device, resolve_device(device), policy, max_memory=max_memory)


def random_model(config: SwinConfig | str = "T", *, seed: int = 0, dtype: str = "float32", device: str = "cpu",
                 policy: str | None = None, padding: str | None = None,
                 max_memory: int | float | str | None = None) -> Model:
    """A Model with the deterministic counter-based weights of swinref.params (no checkpoint needed)."""
    from swinref.params import init_params

    cfg = config if isinstance(config, SwinConfig) else get_config(config)
    params = init_params(cfg, seed=seed, dtype="float64")
    return from_params(params, cfg, dtype=dtype, device=device, policy=policy, padding=padding,
                       max_memory=max_memory)


def create_model(name: SwinConfig | str = "T", *, seed: int = 0, num_classes: int | None = None,
                 dtype: str = "float32", device: str = "cpu", policy: str | None = None,
                 max_memory: int | float | str | None = None, **overrides: Any) -> Model:
    """timm's create_model, without a download: a registered, timm, torchvision or Hugging Face name (or a
    SwinConfig) with deterministic weights from `seed` (swinref.params' counter rule), `num_classes` and any other
    config field overridden (img=384, window=12, ...). `create_model("swin_t").save("t.safetensors")` makes a
    weights file for every command that needs one."""
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    cfg = get_config(name, **overrides)
    return random_model(cfg, seed=seed, dtype=dtype, device=device, policy=policy, max_memory=max_memory)


def load(path: str | PathLike, *, config: SwinConfig | str | None = None, dtype: str = "float32",
         device: str = "cpu", policy: str | None = None, padding: str | None = None,
         max_memory: int | float | str | None = None, **overrides: Any) -> Model:
    """Load any supported checkpoint (official, timm, Hugging Face, torchvision, OpenMMLab, swinref) without PyTorch.

    The architecture is detected from the keys and shapes; a `config` (name or SwinConfig) overrides detection,
    and `overrides` change single fields of the detected or given config (img=384, window=12, ...). Another
    window or image size transfers the weights as the official fine-tuning does (V1 bias tables resized
    bicubically, V2 pretrained windows set); `Model.report` (a LoadReport) says what was read, dropped and
    transferred (report.resized) and what the file could not tell (report.notes).

    Without a `policy`, a backbone checkpoint (see `is_backbone`: official detection, mmdet, mmseg) runs under the
    'detection' policy its peers use; every other checkpoint under the default ('torchvision'). `max_memory`
    (bytes or '4GiB'): a budget every forward pass is checked against, weights included (swinref.budget).
    """
    from swinref.checkpoints import load_checkpoint

    dtype = _check_dtype(dtype)
    chosen = None if policy is None and padding is None else _check_policy(policy, padding)
    be = resolve_device(device)  # fail fast on a missing GPU, before reading a large file
    params, cfg, report = load_checkpoint(path, config=config, **overrides)
    if chosen is None:
        chosen = _default_policy(params, cfg, report)
    return _place(params, cfg, dtype, device, be, chosen, report, max_memory=max_memory, consume=True)


def _default_policy(params: dict[str, Any], cfg: SwinConfig, report: LoadReport) -> str:
    """The window policy of the peer that wrote a checkpoint, where its kind tells: transformers' Swinv2Backbone keeps
    the build-size windows like Swinv2Model (an `hf` peer; SwinBackbone always partitions, a `detection` one); other
    backbones are detection backbones; everything else gets the default."""
    transformers_backbone = report.layout == "transformers" and report.out_indices is not None
    if transformers_backbone and cfg.version == 2:
        return "hf"
    if transformers_backbone or is_backbone(params, report):
        return BACKBONE_POLICY
    return _check_policy(None)
