"""Devices: "cpu" is NumPy; "cuda" / "cuda:N" is CuPy. Asking for a GPU that is not usable raises one DeviceError
that names what is missing (CuPy, the driver, a device, the runtime compiler) and how to fix it.

Nothing here imports CuPy at module import time: detection runs only when a GPU is asked for.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from swinref.backend import Backend, numpy_backend
from swinref.errors import DeviceError

__all__ = ["resolve_device", "DeviceSpec", "GPU_INSTALL_HINT"]

GPU_INSTALL_HINT = (
    "install the GPU extra with `pip install 'swinref[gpu]'` (CuPy built for CUDA 12: it needs an NVIDIA driver "
    ">= 525 and, for the runtime compiler, the CUDA 12 NVRTC library: `pip install nvidia-cuda-nvrtc-cu12` or a "
    "CUDA toolkit)"
)


@dataclass(frozen=True)
class DeviceSpec:
    kind: str  # "cpu" or "cuda"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def parse_device(device: str) -> DeviceSpec:
    text = str(device).strip().lower()
    if text in ("cpu", "numpy"):
        return DeviceSpec("cpu")
    m = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", text)
    if m:
        return DeviceSpec("cuda", int(m.group(2) or 0))
    raise DeviceError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


def _import_cupy() -> Any:
    return importlib.import_module("cupy")


def resolve_device(device: str = "cpu") -> Backend:
    """The backend for a device name, checked to be usable."""
    spec = parse_device(device)
    if spec.kind == "cpu":
        return numpy_backend()
    try:
        cp = _import_cupy()
    except ImportError as exc:
        raise DeviceError(f"device {spec} needs CuPy, which is not installed ({exc}); {GPU_INSTALL_HINT}") from None
    except Exception as exc:  # a broken CuPy install raises other errors at import
        raise DeviceError(f"device {spec}: CuPy failed to import ({type(exc).__name__}: {exc}); {GPU_INSTALL_HINT}") from None
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise DeviceError(
            f"device {spec}: CuPy is installed but the CUDA driver is not usable ({type(exc).__name__}: {exc}); "
            "install or update the NVIDIA driver (>= 525 for CUDA 12) and check that `nvidia-smi` works"
        ) from None
    if count < 1:
        raise DeviceError(f"device {spec}: the CUDA driver reports no GPU; run on --device cpu or on a machine with one")
    if spec.index >= count:
        raise DeviceError(f"device {spec}: only {count} GPU(s) present (cuda:0..cuda:{count - 1})")
    try:
        with cp.cuda.Device(spec.index):
            probe = cp.arange(4, dtype=cp.float32)
            float((probe * 2.0).sum())  # elementwise kernels are compiled by NVRTC at first use
    except Exception as exc:
        raise DeviceError(
            f"device {spec}: CuPy cannot compile kernels ({type(exc).__name__}: {exc}); the CUDA runtime compiler "
            "(NVRTC) is missing: `pip install nvidia-cuda-nvrtc-cu12` or install the CUDA 12 toolkit"
        ) from None
    import array_api_compat

    xp = array_api_compat.array_namespace(probe)
    from cupyx.scipy.special import erf  # type: ignore[import-not-found]

    from swinref.backend import index_rows

    return Backend(xp=xp, name="cupy", erf=erf, device=cp.cuda.Device(spec.index), gather_rows=index_rows)
