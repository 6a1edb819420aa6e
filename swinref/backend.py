"""The array namespace, resolved once at the public entry point and passed down.

The forward pass is written against the Python array API standard, so the same code runs on NumPy (>= 2, whose
main namespace implements the standard), on CuPy and on any other conforming library (array_api_strict in the
tests). Functions the standard lacks or that libraries implement differently live in one small table here, one
implementation per backend, each tested against the others:

    erf          NumPy: a Numba ufunc over libm's erf (plain twin: math.erf per element)
                 CuPy:  cupyx.scipy.special.erf
                 other: the series / continued-fraction evaluation below, in the namespace's own elementwise ops
    gather_rows  rows of a table by an integer index (the relative position bias lookup)
                 NumPy and CuPy: advanced indexing table[index] (one kernel, no axis normalisation)
                 other: the standard's take(table, index, axis=0), the only gather the standard guarantees
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterator

from swinref.errors import InputError
from swinref.namespace import Backend

__all__ = ["Backend", "backend_for", "numpy_backend", "numpy_fast_backend", "plain", "to_host", "erf_reference",
           "erf_series"]


_use_kernels: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "swinref_use_kernels", default=os.environ.get("SWINREF_KERNELS", "").lower() != "plain"
)


@contextlib.contextmanager
def plain() -> Iterator[None]:
    """Run the reference block (swinref.blocks) on NumPy too, inside this context (for tests and benchmarks)."""
    token = _use_kernels.set(False)
    try:
        yield
    finally:
        _use_kernels.reset(token)


def _reference_block() -> Any:
    from swinref import blocks

    return blocks


@functools.lru_cache(maxsize=1)
def _accelerated_block() -> Any:
    """swinref.fast when Numba imports and compiles here; else None, and the reference block gives the answer."""
    try:
        from swinref import fast, kernels  # noqa: F401
    except Exception:
        return None
    return fast


def backend_for(x: Any) -> Backend:
    """The backend of an input array: NumPy arrays use NumPy directly, others their array API namespace."""
    import numpy as np

    if isinstance(x, np.ndarray):
        be = numpy_backend()
        fast = _accelerated_block() if _use_kernels.get() else None
        return be if fast is None else numpy_fast_backend()
    try:
        import array_api_compat
    except ImportError:  # pragma: no cover - array-api-compat is a dependency
        raise InputError(
            f"arrays of type {type(x).__module__}.{type(x).__name__} need the array-api-compat package; "
            "pip install array-api-compat"
        ) from None
    try:
        xp = array_api_compat.array_namespace(x)
    except TypeError:
        raise InputError(
            f"expected an array (NumPy, CuPy or another array API library), got {type(x).__name__}; "
            "convert the input with numpy.asarray first"
        ) from None
    name = getattr(xp, "__name__", str(xp)).split(".")[-1]
    device = array_api_compat.device(x)
    if "cupy" in getattr(xp, "__name__", ""):
        return Backend(xp=xp, name="cupy", erf=_cupy_erf(), device=device, gather_rows=index_rows,
                       block=_reference_block())
    return Backend(xp=xp, name=name, erf=functools.partial(erf_series, xp), device=device,
                   block=_reference_block())


@functools.lru_cache(maxsize=1)
def numpy_backend() -> Backend:
    """NumPy with the reference block."""
    import numpy as np

    return Backend(xp=np, name="numpy", erf=_numpy_erf(), device="cpu", gather_rows=index_rows,
                   block=_reference_block())


@functools.lru_cache(maxsize=1)
def numpy_fast_backend() -> Backend:
    """NumPy with the accelerated block (swinref.fast)."""
    return dataclasses.replace(numpy_backend(), block=_accelerated_block())


def to_host(a: Any) -> Any:
    """A NumPy array with the values of any backend's array (CuPy copies back once; others by the array protocol,
    else DLPack)."""
    import numpy as np

    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    try:
        return np.asarray(a)
    except (TypeError, ValueError, RuntimeError):
        return np.from_dlpack(a)


def index_rows(table: Any, index: Any) -> Any:
    """NumPy / CuPy gather: advanced indexing on the first axis."""
    return table[index]


def _numpy_erf() -> Callable[[Any], Any]:
    """libm's erf as a NumPy ufunc, compiled by Numba on first call (NumPy has no erf); else the plain twin."""
    try:
        from swinref import kernels
    except Exception:  # numba missing or broken: the slow, exact twin still gives the right answer
        return erf_reference

    def erf(x: Any) -> Any:
        return kernels.erf_ufunc()(x)

    return erf


def _cupy_erf() -> Callable[[Any], Any]:
    from cupyx.scipy.special import erf  # type: ignore[import-not-found]

    return erf


def erf_reference(x: Any) -> Any:
    """The plain twin: math.erf applied to every element (exact to libm's precision, slow)."""
    import numpy as np

    x = np.asarray(x)
    out = np.frompyfunc(math.erf, 1, 1)(x)
    return np.asarray(out, dtype=x.dtype)


# Coefficients of the Maclaurin series of erf, 2/sqrt(pi) * (-1)^n / (n! (2n+1)), evaluated on the host once.
# Measured against math.erf on [-8, 8]: max error 4.4e-16 in float64, 2.0e-7 in float32.
_SERIES_TERMS = 30
_SERIES_SWITCH = 1.5  # |x| below this: series (little cancellation); above: continued fraction
_CF_TERMS = 150  # enough for the fraction to converge to float64 precision at z = 1.5


def erf_series(xp: Any, x: Any) -> Any:
    """erf with only elementwise array-API operations, accurate to a few float64 ulps.

    |x| < 1.5: the Maclaurin series summed in Horner form in x^2; |x| >= 1.5: 1 - erfc(|x|) with erfc from its
    Laplace continued fraction, evaluated bottom-up; |x| >= 6: +-1 (erfc(6) < 2.2e-17). Used for backends that
    have no erf of their own; NumPy and CuPy use their library erf.
    """
    ax = xp.abs(x)
    # Series part, on a clipped argument so the unused branch cannot overflow.
    s = xp.clip(ax, max=_SERIES_SWITCH)
    s2 = s * s
    acc = xp.zeros_like(x)
    for n in range(_SERIES_TERMS - 1, -1, -1):
        coeff = (-1.0) ** n / (math.factorial(n) * (2 * n + 1))
        acc = acc * s2 + coeff
    series = acc * s * (2.0 / math.sqrt(math.pi))
    # Continued fraction for erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...)))).
    z = xp.clip(ax, min=_SERIES_SWITCH, max=6.0)
    frac = xp.zeros_like(x) + z
    for k in range(_CF_TERMS, 0, -1):
        frac = z + (k / 2.0) / frac
    erfc = xp.exp(-z * z) / (frac * math.sqrt(math.pi))
    tail = 1.0 - erfc
    result = xp.where(ax < _SERIES_SWITCH, series, tail)
    return xp.where(x < 0, -result, result)

