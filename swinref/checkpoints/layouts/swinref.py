"""swinref's own files (.safetensors / .npz written by swinref.checkpoints.save_params): the canonical names, with
the configuration stored beside the weights (safetensors metadata 'swinref_config' / the npz entry
'__swinref_config__') and a format version. Never recognised from names alone (they are the official ones): the
stored configuration says it.
"""

from __future__ import annotations

import json
from typing import Any, Collection, Mapping

import numpy as np

from swinref.checkpoints.layouts.base import Notes, arrays, translate
from swinref.config import SwinConfig
from swinref.errors import CheckpointError

NAME = "swinref"
SIGNATURE = "a 'swinref_config' entry"

# Version of swinref's own files (the "swinref_format_version" metadata entry); bump when the layout changes.
FORMAT_VERSION = 1
CONFIG_KEY = "swinref_config"
VERSION_KEY = "swinref_format_version"


def recognise(keys: Collection[str]) -> bool:
    return False  # the names are the official ones; only the stored configuration tells a swinref file


def to_canonical(sd: Mapping[str, np.ndarray], source: str = "the checkpoint") -> tuple[dict[str, np.ndarray], Notes]:
    notes = Notes()
    return translate(sd, str, notes), notes


def from_canonical(params: Mapping[str, Any], cfg: SwinConfig) -> dict[str, np.ndarray]:
    return arrays(params)


def config_hints(sidecar: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    """Every SwinConfig field, from {CONFIG_KEY: JSON text or dict, VERSION_KEY: version} as stored."""
    raw, version = sidecar.get(CONFIG_KEY), sidecar.get(VERSION_KEY)
    try:
        if version is not None and int(version) > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} was written by a newer swinref (format version {version}, this one reads "
                f"{FORMAT_VERSION}); upgrade swinref"
            )
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        data.pop(VERSION_KEY, None)
        return SwinConfig.from_dict(data).to_dict()
    except (ValueError, TypeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{source}: the stored swinref config is unreadable ({exc}); convert the file again"
        ) from None
