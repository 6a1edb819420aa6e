"""Single-thread rate of x @ W^T for Swin-T's linear layers: NumPy's BLAS with W stored row-major (W^T a
transposed view, the checkpoint's layout) and column-major (W^T contiguous, the layout swinref.api places weights
in on the CPU), and swinref.gemm's kernel on the column-major W (what the fast block uses).

    python benchmarks/gemm_layout.py                 # rows per product as the fast block's items use them
    python benchmarks/gemm_layout.py --rows 3136     # one product over a whole 224 x 224 stage 1
    python benchmarks/gemm_layout.py --cold          # each call on another copy of W, as in a forward pass

Prints GMAC/s (median of --repeat calls, the three alternating in rotating order) and the ratios, per (M, K, N).
With --cold every call reads a W that is not in the cache (copies of W summing to more than 64 MB, taken in
turn): a forward pass reads each weight once per item, after all the others.
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
    ap.add_argument("--cold", action="store_true", help="a W not in the cache at every call")
    args = ap.parse_args(argv)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before NumPy loads OpenBLAS
    import numpy as np

    from swinref import gemm

    rng = np.random.default_rng(0)
    print(f"{'M':>5} {'K':>5} {'N':>5}  {'BLAS, W rows':>12} {'BLAS, W cols':>12} {'swinref.gemm':>12}"
          f"  {'cols/rows':>9} {'gemm/cols':>9}")
    for C, item_rows in ((96, 245), (192, 196), (384, 98), (768, 49)):  # Swin-T stages, batch 1
        M = args.rows or item_rows
        for K, N in ((C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)):
            x = rng.standard_normal((M, K), dtype=np.float32)
            out = np.empty((M, N), dtype=np.float32)
            copies = max(1, -(-(64 << 20) // (N * K * 4))) if args.cold else 1
            w_rows = [rng.standard_normal((N, K), dtype=np.float32) for _ in range(copies)]
            w_cols = [np.asfortranarray(w) for w in w_rows]
            runs = {
                "rows": lambda i: np.matmul(x, w_rows[i].T, out=out),
                "cols": lambda i: np.matmul(x, w_cols[i].T, out=out),
                "gemm": lambda i: gemm.times_weight_t(x, w_cols[i], out),
            }
            order = list(runs)
            times: dict[str, list[float]] = {key: [] for key in runs}
            for r in range(args.repeat + 3):
                for key in order[r % 3:] + order[:r % 3]:
                    t = time.perf_counter()
                    runs[key](r % copies)
                    if r >= 3:
                        times[key].append(time.perf_counter() - t)
            rate = {k: M * K * N / statistics.median(v) / 1e9 for k, v in times.items()}
            print(f"{M:5d} {K:5d} {N:5d}  {rate['rows']:12.1f} {rate['cols']:12.1f} {rate['gemm']:12.1f}"
                  f"  {rate['cols'] / rate['rows']:9.2f} {rate['gemm'] / rate['cols']:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
