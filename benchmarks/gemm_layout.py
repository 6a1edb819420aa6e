"""Single-thread BLAS rate of x @ W^T for Swin-T's linear layers, with W stored row-major (W^T a transposed view,
the checkpoint's layout) and column-major (W^T contiguous, the layout swinref.api places weights in on the CPU).

    python benchmarks/gemm_layout.py                 # rows per product as the fast block's items use them
    python benchmarks/gemm_layout.py --rows 3136     # one product over a whole 224 x 224 stage 1

Prints GMAC/s (median of --repeat calls, the two layouts alternating) and their ratio, per (M, K, N).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=0, help="M for every product (default: the item sizes per stage)")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before NumPy loads OpenBLAS
    import numpy as np

    rng = np.random.default_rng(0)
    print(f"{'M':>5} {'K':>5} {'N':>5}  {'row-major W':>12} {'column-major W':>15}  ratio")
    for C, item_rows in ((96, 245), (192, 196), (384, 98), (768, 49)):  # Swin-T stages, batch 1
        M = args.rows or item_rows
        for K, N in ((C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)):
            x = rng.standard_normal((M, K), dtype=np.float32)
            w_rows = rng.standard_normal((N, K), dtype=np.float32)
            w_cols = np.asfortranarray(w_rows)
            times: dict[str, list[float]] = {"rows": [], "cols": []}
            for r in range(args.repeat + 3):
                for key, w in ((("rows", w_rows), ("cols", w_cols)) if r % 2 else (("cols", w_cols), ("rows", w_rows))):
                    t = time.perf_counter()
                    x @ w.T
                    if r >= 3:
                        times[key].append(time.perf_counter() - t)
            rate = {k: M * K * N / statistics.median(v) / 1e9 for k, v in times.items()}
            print(f"{M:5d} {K:5d} {N:5d}  {rate['rows']:9.1f}    {rate['cols']:12.1f}     {rate['cols'] / rate['rows']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
