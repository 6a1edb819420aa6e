"""Import the OpenMMLab Swin backbones (mmpretrain 1.2, mmdet 3.3, mmseg 1.2) on a machine without compiled mmcv.

    from openmmlab import import_openmmlab      # tools/ on sys.path (tests: via tools_path fixtures)
    mm = import_openmmlab()                     # None when the packages are not installed
    model = mm.pretrain(arch=dict(embed_dims=24, depths=(2, 2), num_heads=(3, 6)), ...)

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

__all__ = ["import_openmmlab", "OpenMMLab", "STUBBED"]

STUBBED = "mmcv.ops"  # this package and every module under it


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
        if fullname == STUBBED or fullname.startswith(STUBBED + "."):
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
