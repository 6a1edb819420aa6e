"""How many threads one swinref process runs: a worker's share of the cores.

A NumPy forward pass runs on the lanes of the accelerated block (swinref.fast: its own threads around serial
Numba kernels and single-threaded BLAS products); the plain block and the caller's own NumPy work use BLAS's pool
(OpenBLAS, or MKL), and OpenMP's when a library brings it. A node that runs several workers gives each a share of
the cores; without a limit every worker starts one thread per core in each pool and they oversubscribe the
machine.

Environment variables only take effect before the library that reads them is loaded, and a worker of Ray, Dask
or Spark has usually loaded NumPy (and with it OpenBLAS) before it builds a Predictor. So the limit is applied
three ways: the variables, for libraries loaded later (and child processes); threadpoolctl, for the BLAS and
OpenMP libraries already loaded; swinref.fast.LANES, for the block's own threads.
"""

from __future__ import annotations

import os
import sys

from swinref.errors import InputError

__all__ = ["THREAD_VARS", "check_threads", "limit_threads"]

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def check_threads(n: int) -> int:
    """A thread count, or InputError."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"threads must be a positive integer (this worker's share of the cores), got {n!r}")
    return n


def limit_threads(n: int) -> None:
    """Run this process's BLAS, OpenMP and swinref's block on at most `n` threads each, from now on."""
    check_threads(n)
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # called, not entered: the limit stays for the life of the process
    try:
        from swinref import fast
    except ImportError:  # no Numba: the reference block runs on the calling thread only
        return
    fast.LANES = n
