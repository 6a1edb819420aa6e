"""How close the memory guard's forecast is to what a forward pass allocates: the basis of swinref.budget.HEADROOM.

    python benchmarks/memory_forecast.py                   # Swin-T and V2-T, 448 to 1344, float32 and float64
    python benchmarks/memory_forecast.py --models T B --sizes 448 896 --json out.json

For each case a fresh process builds a seeded model, runs one warm-up pass at 224 (Numba compiles outside the
measurement), then measures one forward pass with tracemalloc, which NumPy reports its array allocations to: the
peak of the arrays the pass allocates, the input excluded. That peak is divided by swinref.analysis.memory's
forecast of the peak activations (one block's live set). The guard asks for HEADROOM times the forecast; the
largest ratio seen here must stay below it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's swinref, as the measuring processes (run in ROOT) import it

CHILD = """
import json, sys, tracemalloc
import numpy as np
import swinref
from swinref.analysis.memory import memory
name, size, batch, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = swinref.get_config(name, img=size)
model = swinref.random_model(cfg, dtype=dtype)
model(np.zeros((1, 3, 224, 224), dtype))
x = np.zeros((batch, 3, size, size), dtype)
tracemalloc.start()
model(x)
peak = tracemalloc.get_traced_memory()[1]
forecast = memory(cfg, batch=batch, dtype=dtype).peak_activation_bytes
print(json.dumps({"model": name, "size": size, "batch": batch, "dtype": dtype, "peak_bytes": peak,
                  "forecast_bytes": forecast, "ratio": peak / forecast}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["T", "V2-T"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[448, 896, 1344])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows here")
    args = parser.parse_args(argv)
    from swinref.budget import HEADROOM

    rows = []
    for name in args.models:
        for size in args.sizes:
            for dtype in args.dtypes:
                out = subprocess.run([sys.executable, "-c", CHILD, name, str(size), str(args.batch), dtype],
                                     cwd=ROOT, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{name:5} {size:5} {dtype:8} peak {row['peak_bytes'] / 2**20:9.1f} MiB  forecast "
                      f"{row['forecast_bytes'] / 2**20:9.1f} MiB  ratio {row['ratio']:.2f}", flush=True)
    worst = max(r["ratio"] for r in rows)
    print(f"largest ratio {worst:.2f}; HEADROOM {HEADROOM}")
    if args.json:
        Path(args.json).write_text(json.dumps({"headroom": HEADROOM, "rows": rows}, indent=1) + "\n")
    return 0 if worst < HEADROOM else 1


if __name__ == "__main__":
    sys.exit(main())
