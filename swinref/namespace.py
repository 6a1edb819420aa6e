"""The Backend type: an array namespace, its device, the few functions it needs from outside the array API
standard, and the block implementation chosen for it. swinref.backend resolves one for an input array; the
block modules (swinref.blocks, swinref.fast) and swinref.layers only receive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Backend"]


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the few functions it needs from outside the standard."""

    xp: Any
    name: str
    erf: Callable[[Any], Any]
    device: Any = None
    gather_rows: Callable[[Any, Any], Any] | None = None
    # The block implementation: a module with block, layer_norm and linear (swinref.blocks, the reference, or
    # swinref.fast, NumPy with Numba kernels), chosen once here.
    block: Any = None

    def take_rows(self, table: Any, index: Any) -> Any:
        """table[index] along axis 0: [R, ...] with index [K] -> [K, ...]."""
        if self.gather_rows is not None:
            return self.gather_rows(table, index)
        return self.xp.take(table, index, axis=0)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Constants (index tables, masks) built on the host, moved to this backend's device once."""
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)
