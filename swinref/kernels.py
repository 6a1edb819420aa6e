"""Numba kernels. Each names the plain function it replaces; tests compare the two.

Compiled lazily on first use and cached on disk (cache=True) where the package directory is writable.
"""

from __future__ import annotations

import math

import numba

__all__ = ["erf_ufunc"]


# Plain twin: swinref.backend.erf_reference (math.erf per element).
@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf_ufunc(x):  # pragma: no cover - compiled
    return math.erf(x)
