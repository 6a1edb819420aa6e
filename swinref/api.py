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
from swinref.plan import BACKBONE_POLICY, DEFAULT_POLICY, resolve_policy
from swinref import model as _model

if TYPE_CHECKING:
    from swinref.checkpoints import LoadReport

__all__ = ["Model", "load", "from_params", "random_model", "DTYPES", "is_backbone", "BACKBONE_POLICY"]

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

    def __call__(self, x: Any) -> Any:
        return _model.forward(self.params, self._prepare(x), self.config, policy=self.policy)

    def pooled(self, x: Any) -> Any:
        """The pooled features [B, C_L] before the head: the image embedding (`model.head(model.pooled(x))` is
        `model(x)`)."""
        return _model.forward_pooled(self.params, self._prepare(x), self.config, policy=self.policy)

    def head(self, pooled: Any) -> Any:
        """The classifier head on pooled features: logits [B, classes]."""
        return _model.forward_head(self.params, pooled)

    def features(self, x: Any, layout: str = "NCHW", out_indices: Iterable[int] | None = None) -> list[Any]:
        """The selected stage outputs (None: all), each through its output norm norm{i} when the params hold it."""
        return _model.features(self.params, self._prepare(x), self.config, policy=self.policy, layout=layout,
                               out_indices=out_indices)

    @property
    def is_backbone(self) -> bool:
        """Whether the params are a dense-prediction backbone's: they hold the per-stage output norms (norm0, ...)."""
        return is_backbone(self.params, self.report)

    def trace(self, x: Any, attn_probs: Iterable[str] = (), out_indices: Iterable[int] | None = None,
              backbone: bool = False) -> dict[str, Any]:
        return _model.forward_trace(self.params, self._prepare(x), self.config, policy=self.policy,
                                    attn_probs=attn_probs, out_indices=out_indices, backbone=backbone)


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
           report: LoadReport | None = None) -> Model:
    """Cast every param to `dtype` and move it to the resolved backend's device once."""
    import numpy as np

    placed = {k: be.asarray(np.asarray(v, dtype=dtype)) for k, v in params.items()}
    return Model(config=cfg, params=placed, dtype=dtype, device=str(device), policy=policy,
                 report=report, backend=be)


def from_params(params: dict[str, Any], config: SwinConfig | str, *, dtype: str = "float32", device: str = "cpu",
                policy: str | None = None, padding: str | None = None) -> Model:
    """A Model from canonical params (NumPy arrays) placed on `device` in `dtype`."""
    cfg = config if isinstance(config, SwinConfig) else get_config(config)
    dtype = _check_dtype(dtype)
    policy = _check_policy(policy, padding)
    return _place(params, cfg, dtype, device, resolve_device(device), policy)


def random_model(config: SwinConfig | str = "T", *, seed: int = 0, dtype: str = "float32", device: str = "cpu",
                 policy: str | None = None, padding: str | None = None) -> Model:
    """A Model with the deterministic counter-based weights of swinref.params (no checkpoint needed)."""
    from swinref.params import init_params

    cfg = config if isinstance(config, SwinConfig) else get_config(config)
    params = init_params(cfg, seed=seed, dtype="float64")
    return from_params(params, cfg, dtype=dtype, device=device, policy=policy, padding=padding)


def load(path: str | PathLike, *, config: SwinConfig | str | None = None, dtype: str = "float32",
         device: str = "cpu", policy: str | None = None, padding: str | None = None, **overrides: Any) -> Model:
    """Load any supported checkpoint (official, timm, Hugging Face, torchvision, OpenMMLab, swinref) without PyTorch.

    The architecture is detected from the keys and shapes; a `config` (name or SwinConfig) overrides detection,
    and `overrides` change single fields of the detected or given config (img=384, window=12, ...). Another
    window or image size transfers the weights as the official fine-tuning does (V1 bias tables resized
    bicubically, V2 pretrained windows set); `Model.report` (a LoadReport) says what was read, dropped and
    transferred (report.resized) and what the file could not tell (report.notes).

    Without a `policy`, a backbone checkpoint (see `is_backbone`: official detection, mmdet, mmseg) runs under the
    'detection' policy its peers use; every other checkpoint under the default ('torchvision').
    """
    from swinref.checkpoints import load_checkpoint

    dtype = _check_dtype(dtype)
    chosen = None if policy is None and padding is None else _check_policy(policy, padding)
    be = resolve_device(device)  # fail fast on a missing GPU, before reading a large file
    params, cfg, report = load_checkpoint(path, config=config, **overrides)
    if chosen is None:
        chosen = _default_policy(params, cfg, report)
    return _place(params, cfg, dtype, device, be, chosen, report)


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
