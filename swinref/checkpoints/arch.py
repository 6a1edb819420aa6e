"""What detection of any Swin family shares: a named tensor's shape, and the registered configs of an architecture.

Image (swinref.checkpoints.detect) and video (swinref.checkpoints.detect_video) detection both read these, so
neither imports the other for them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from swinref.config import REGISTRY, SwinConfig
from swinref.errors import CheckpointError

__all__ = ["param_shape", "same_arch", "registry_matches"]


def param_shape(params: dict, name: str, source: str, why: str) -> tuple[int, ...]:
    """The shape of params[name]; a missing tensor is a truncated or foreign file (`why` says who has it)."""
    if name not in params:
        raise CheckpointError(
            f"{source} has no {name!r}, which {why}: the file is truncated or not a Swin checkpoint "
            f"(it has {len(params)} parameters, e.g. {sorted(params)[:4]})"
        )
    return tuple(params[name].shape)


_ARCH_FIELDS = [f.name for f in dataclasses.fields(SwinConfig) if f.name != "name"]


def same_arch(a: SwinConfig, b: SwinConfig) -> bool:
    """Every field but the name equal."""
    return all(getattr(a, f) == getattr(b, f) for f in _ARCH_FIELDS)


def registry_matches(fields: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[SwinConfig]:
    """The registered configs that agree with `fields` on every architecture field given (but `ignore`)."""
    out = []
    for cfg in REGISTRY.values():
        if all(getattr(cfg, k) == (tuple(v) if isinstance(v, list) else v)
               for k, v in fields.items() if k in _ARCH_FIELDS and k not in ignore):
            out.append(cfg)
    return out
