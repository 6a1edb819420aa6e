"""swinref's batch-1 latency after idle gaps, for several lane spin budgets (SWINREF_SPIN_MS).

    python benchmarks/idle_gaps.py                                   # Swin-T 224, gaps 0 / 20 / 200 ms
    python benchmarks/idle_gaps.py --spin-ms 2 50 300 --gaps 0 0.2 --repeat 20
    PYTHONPATH=/path/to/other/checkout python benchmarks/idle_gaps.py   # another commit's swinref

Each spin budget runs in its own process (2 threads, random weights); within it, every gap is timed --repeat
times in alternating order after warm-ups, and the median is printed with the process's median context switches
per pass (getrusage: voluntary ones are waits, mostly for the GIL between two NumPy calls; involuntary ones are
preemptions). swinref alone: a lane that spins through a gap keeps a core busy meanwhile, which would be charged
to whatever else ran then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, os, resource, statistics, sys, time
import numpy as np
from swinref.api import random_model
model, gaps, repeat = sys.argv[1], [float(g) for g in sys.argv[2].split(",")], int(sys.argv[3])
m = random_model(model)
x = np.random.default_rng(0).standard_normal((1, 3, *m.config.img_size)).astype(np.float32)
for _ in range(3):
    m(x)
times = {g: [] for g in gaps}
switches = {g: [] for g in gaps}
for r in range(repeat):
    for g in (gaps if r % 2 == 0 else gaps[::-1]):
        time.sleep(g)
        before = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        m(x)
        times[g].append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_SELF)
        switches[g].append((after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw))
import swinref
print(json.dumps({"swinref": os.path.dirname(swinref.__file__),
                  "median_s": {str(g): statistics.median(v) for g, v in times.items()},
                  "switches": {str(g): [statistics.median(s[i] for s in v) for i in (0, 1)]
                               for g, v in switches.items()}}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="T")
    ap.add_argument("--spin-ms", nargs="+", type=float, default=[2.0, 20.0, 300.0])
    ap.add_argument("--gaps", nargs="+", type=float, default=[0.0, 0.02, 0.2], help="seconds of idle before a call")
    ap.add_argument("--repeat", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the medians here")
    args = ap.parse_args(argv)
    results = {"model": args.model, "threads": args.threads, "loadavg_start": os.getloadavg(), "median_ms": {}}
    print(f"{args.model}, batch 1, {args.threads} threads: median ms by SWINREF_SPIN_MS (rows) and idle gap (columns)")
    print(f"{'spin ms':>8} " + " ".join(f"{g * 1e3:>9.0f}" for g in args.gaps))
    for spin in args.spin_ms:
        env = dict(os.environ, SWINREF_SPIN_MS=str(spin))
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(args.threads)
        done = subprocess.run([sys.executable, "-c", CHILD, args.model, ",".join(map(str, args.gaps)),
                               str(args.repeat)], capture_output=True, text=True, env=env,
                              cwd=os.path.dirname(os.path.abspath(__file__)))  # `-c` puts the cwd first on sys.path
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        child = json.loads(done.stdout.strip().splitlines()[-1])
        medians = child["median_s"]
        results["swinref"] = child["swinref"]
        results["median_ms"][str(spin)] = {g: v * 1e3 for g, v in medians.items()}
        results.setdefault("context_switches_per_pass", {})[str(spin)] = {
            g: {"voluntary": v, "involuntary": i} for g, (v, i) in child["switches"].items()}
        print(f"{spin:8g} " + " ".join(f"{medians[str(g)] * 1e3:9.1f}" for g in args.gaps)
              + "   switches per pass (voluntary / involuntary): "
              + ", ".join("{:.0f} / {:.0f}".format(*child["switches"][str(g)]) for g in args.gaps))
        time.sleep(0.5)
    results["loadavg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
