"""The linear layers alone: NumPy's BLAS against torch's, on every GEMM shape of one Swin forward pass.

    python benchmarks/linears.py                  # Swin-T 224, batch 1, 2 threads
    python benchmarks/linears.py --variant B --batch 8

Each block's qkv, proj, fc1 and fc2 products and each patch merging's reduction, at the shapes swinref.plan.plan
gives, timed as one sequence per library, each library in its own fresh processes, alternating; medians and the
ratio. This is the floor under benchmarks/cpu.py's batch-1 ratio: the rest of a forward pass (attention, LayerNorm,
GELU, softmax) is swinref's own code, these products are the BLAS library's. The torch side is skipped with a
message when torch is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from cpu import _count  # benchmarks/cpu.py, beside this script


def _shapes(variant: str, batch: int) -> list[tuple[int, int, int]]:
    """(tokens, in, out) of every linear layer in one forward pass, in order."""
    from swinref.config import get_config
    from swinref.plan import plan

    cfg = get_config(variant)
    shapes = []
    for stage in plan(cfg, cfg.img_size).stages:
        T = batch * stage.resolution[0] * stage.resolution[1]
        C, hidden = stage.dim, int(stage.dim * cfg.mlp_ratio)
        for _ in range(stage.depth):
            shapes += [(T, C, 3 * C), (T, C, C), (T, C, hidden), (T, hidden, C)]
        if stage.merge_pad is not None:
            h, w = (-(-n // 2) for n in stage.resolution)
            shapes.append((batch * h * w, 4 * C, 2 * C))
    return shapes


def _child(library: str, args: argparse.Namespace) -> None:
    """Times the whole sequence of products args.repeat times in this process; prints the times as JSON."""
    import swinref  # noqa: F401  (before NumPy, as a user would: it sets OPENBLAS_THREAD_TIMEOUT)
    import numpy as np

    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((T, n_in)).astype(np.float32), rng.standard_normal((n_out, n_in)).astype(np.float32))
            for T, n_in, n_out in _shapes(args.variant, args.batch)]
    if library == "numpy":
        def run() -> None:
            for x, w in data:
                np.matmul(x, w.T)
    else:
        import torch

        torch.set_num_threads(args.threads)
        tdata = [(torch.from_numpy(x), torch.from_numpy(w)) for x, w in data]

        def run() -> None:
            with torch.no_grad():
                for x, w in tdata:
                    torch.nn.functional.linear(x, w)
    run()
    run()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    print(json.dumps(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="T")
    ap.add_argument("--batch", type=_count(1), default=1)
    ap.add_argument("--threads", type=_count(1), default=2)
    ap.add_argument("--repeat", type=_count(1), default=10, help="timed runs per process")
    ap.add_argument("--rounds", type=_count(1), default=3, help="fresh processes per library, alternating")
    ap.add_argument("--child", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.child:
        _child(args.child, args)
        return 0
    from swinref.errors import SwinrefError

    try:
        shapes = _shapes(args.variant, args.batch)
    except SwinrefError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    libraries = ["numpy"]
    try:
        import torch  # noqa: F401

        libraries.append("torch")
    except ImportError as exc:
        print(f"torch side skipped ({exc})", file=sys.stderr)
    # Each library in its own processes: torch's OpenMP workers would otherwise spin against OpenBLAS's threads.
    times: dict[str, list[float]] = {k: [] for k in libraries}
    for r in range(args.rounds):
        for lib in (libraries if r % 2 == 0 else libraries[::-1]):
            cmd = [sys.executable, __file__, "--child", lib, "--variant", args.variant, "--batch", str(args.batch),
                   "--threads", str(args.threads), "--repeat", str(args.repeat)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            times[lib] += json.loads(done.stdout.strip().splitlines()[-1])
    gflop = sum(2 * T * n_in * n_out for T, n_in, n_out in shapes) / 1e9
    print(f"Swin {args.variant} batch {args.batch}: {len(shapes)} linear layers, {gflop:.2f} GFLOP, "
          f"{args.threads} threads, {args.rounds} processes x {args.repeat} runs per library")
    medians = {}
    for k, v in times.items():
        medians[k] = statistics.median(v)
        print(f"  {k:<6} median {medians[k] * 1e3:7.1f} ms  min {min(v) * 1e3:7.1f}  max {max(v) * 1e3:7.1f}  "
              f"{gflop / medians[k]:6.1f} GFLOP/s")
    if "torch" in medians:
        print(f"  numpy/torch: {medians['numpy'] / medians['torch']:.3f} (ratio of medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
