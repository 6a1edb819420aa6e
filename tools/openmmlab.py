"""Import the OpenMMLab Swin backbones (mmpretrain 1.2, mmdet 3.3, mmseg 1.2) on a machine without compiled mmcv.

    from openmmlab import import_openmmlab      # tools/ on sys.path (tests: via tools_path fixtures)
    mm = import_openmmlab()                     # None when the packages are not installed
    model = build(mm, "det", cfg)               # mmdet's backbone of a SwinConfig, eval mode, outputs 0..L-1

For tests and fixture scripts only; swinref never imports this module.

Why a shim: only mmcv-lite installs here (full mmcv has no wheel), and mmdet / mmseg import `mmcv.ops` (compiled
NMS, deformable convolution, ...) from modules they load on the way to their backbones, which never call those
ops. `mmcv.ops` and its submodules are therefore served as empty stand-ins whose every name is a class that refuses
to be used. mmpretrain 1.2 imports its multimodal models (BLIP, ...) only when `WITH_MULTIMODAL` is true, and they
break on transformers 5 (`BertPreTrainedModel` subclasses a name transformers 5 removed): it is set to False
before mmpretrain.models is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any, NamedTuple

__all__ = ["import_openmmlab", "import_mmaction", "build", "OpenMMLab", "KINDS", "STUBBED"]

STUBBED = "mmcv.ops"  # this package and every module under it
# mmaction2 1.2's wheel lacks the DRN localizer package that mmaction.models imports (never used by recognizers).
STUBBED_MMACTION = "mmaction.models.localizers.drn"
KINDS = ("pretrain", "det", "seg")  # mmpretrain (V1 or V2 by the config), mmdet, mmseg


class OpenMMLab(NamedTuple):
    """The Swin backbone classes of each package."""

    pretrain: Any      # mmpretrain.models.backbones.SwinTransformer (V1)
    pretrain_v2: Any   # mmpretrain.models.backbones.SwinTransformerV2
    det: Any           # mmdet.models.backbones.SwinTransformer
    seg: Any           # mmseg.models.backbones.SwinTransformer


class _Unavailable:
    """What every name of a stubbed module is: importable, subclassable, never usable."""

    _stub_name = STUBBED

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{self._stub_name} is a stand-in (tools/openmmlab.py): compiled mmcv ops are not installed")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        stub = type(name, (_Unavailable,), {"_stub_name": f"{self.__name__}.{name}", "__module__": self.__name__})
        setattr(self, name, stub)
        return stub


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if any(fullname == s or fullname.startswith(s + ".") for s in (STUBBED, STUBBED_MMACTION)):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []  # a package, so `from mmcv.ops.nms import batched_nms` finds its submodule here too
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _install_stub() -> None:
    if not any(isinstance(f, _StubFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _StubFinder())


def import_openmmlab() -> OpenMMLab | None:
    """The four Swin backbone classes, or None when torch or one of the packages is not installed."""
    try:
        import torch  # noqa: F401
        import mmcv  # noqa: F401
        import mmengine  # noqa: F401
        import mmpretrain.utils.dependency as dependency
    except ImportError:
        return None
    _install_stub()
    dependency.WITH_MULTIMODAL = False
    try:
        pretrain = importlib.import_module("mmpretrain.models.backbones")
        det = importlib.import_module("mmdet.models.backbones.swin")
        seg = importlib.import_module("mmseg.models.backbones.swin")
    except ImportError:
        return None
    return OpenMMLab(pretrain=pretrain.SwinTransformer, pretrain_v2=pretrain.SwinTransformerV2,
                     det=det.SwinTransformer, seg=seg.SwinTransformer)


def import_mmaction() -> Any:
    """mmaction2's models package (SwinTransformer3D, I3DHead, Recognizer3D registered in mmaction.registry.MODELS),
    or None when torch or mmaction2 is not installed."""
    try:
        import torch  # noqa: F401
        import mmcv  # noqa: F401
        import mmengine  # noqa: F401
        import mmaction.utils.dependency as dependency
        import mmpretrain.utils.dependency as pretrain_dependency
    except ImportError:
        return None
    _install_stub()
    dependency.WITH_MULTIMODAL = pretrain_dependency.WITH_MULTIMODAL = False  # mmaction imports mmpretrain models
    try:
        return importlib.import_module("mmaction.models")
    except ImportError:
        return None


def build(mm: OpenMMLab, kind: str, cfg: Any, out_indices: tuple[int, ...] | None = None) -> Any:
    """The backbone of a swinref SwinConfig in mmpretrain ('pretrain': SwinTransformer or SwinTransformerV2 by
    cfg.version), mmdet ('det') or mmseg ('seg'), no dropout, eval mode; outputs every stage unless out_indices.

    mmpretrain keeps its classification default pad_small_map=False (no shift where the map equals the window,
    like the official clamp); mmdet and mmseg always shift."""
    n = len(cfg.depths)
    out_indices = tuple(range(n)) if out_indices is None else out_indices
    if kind == "pretrain":
        arch = dict(embed_dims=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads))
        common = dict(img_size=tuple(cfg.img_size), patch_size=cfg.patch_size, in_channels=cfg.in_chans,
                      window_size=cfg.window_size, drop_path_rate=0.0, out_indices=out_indices,
                      stage_cfgs=dict(block_cfgs=dict(ffn_ratio=cfg.mlp_ratio, attn_cfgs=dict(qkv_bias=cfg.qkv_bias))))
        if cfg.version == 2:
            model = mm.pretrain_v2(arch=dict(arch, extra_norm_every_n_blocks=0),
                                   pretrained_window_sizes=list(cfg.pretrained_window_sizes), **common)
        else:
            model = mm.pretrain(arch=arch, **common)
    elif kind in ("det", "seg"):
        if cfg.version != 1:
            raise ValueError(f"mm{kind}'s SwinTransformer is Swin V1; {cfg.name} is V{cfg.version}")
        cls = mm.det if kind == "det" else mm.seg
        if cfg.mlp_ratio != int(cfg.mlp_ratio):
            raise ValueError(f"mm{kind} sizes its MLP as mlp_ratio * channels, a whole number: {cfg.mlp_ratio}")
        model = cls(pretrain_img_size=tuple(cfg.img_size), in_channels=cfg.in_chans, embed_dims=cfg.embed_dim,
                    patch_size=cfg.patch_size, window_size=cfg.window_size, mlp_ratio=int(cfg.mlp_ratio),
                    depths=tuple(cfg.depths), num_heads=tuple(cfg.num_heads),
                    strides=(cfg.patch_size,) + (2,) * (n - 1), out_indices=out_indices, qkv_bias=cfg.qkv_bias,
                    patch_norm=cfg.patch_norm, drop_path_rate=0.0)
    else:
        raise ValueError(f"unknown OpenMMLab backbone {kind!r}; choose one of {KINDS}")
    model.eval()  # their train(mode) override returns None, so eval() does too
    return model
