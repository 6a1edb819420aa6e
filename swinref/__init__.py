"""swinref: the Swin Transformer as plain array programs (NumPy on the CPU, CuPy on the GPU).

Importing swinref is cheap: the configuration registry is loaded eagerly, everything that needs NumPy (the
forward pass, the loaders) is imported on first use, so `swinref trace` and `swinref flops` answer quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from swinref.config import ALIASES, REGISTRY, SwinConfig, get_config, list_configs, list_models
from swinref.plan import POLICIES, plan
from swinref.errors import (
    CheckpointError,
    ConfigError,
    DeviceError,
    InputError,
    OutputError,
    ResourceError,
    SwinrefError,
    UnsafePickleError,
)

__version__ = "0.1.0"

# Public names that live in modules with heavy imports, loaded on first access.
_LAZY = {
    "forward": "swinref.model",
    "features": "swinref.model",
    "forward_trace": "swinref.model",
    "point_names": "swinref.model",
    "load": "swinref.api",
    "Model": "swinref.api",
    "from_params": "swinref.api",
    "random_model": "swinref.api",
    "create_model": "swinref.api",
    "init_params": "swinref.params",
    "Predictor": "swinref.predictor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'swinref' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ALIASES", "REGISTRY", "SwinConfig", "get_config", "list_configs", "list_models", "plan", "POLICIES", "__version__",
    "SwinrefError", "ConfigError", "InputError", "CheckpointError", "UnsafePickleError", "DeviceError",
    "OutputError", "ResourceError",
    *_LAZY,
]
