"""Where swinref's resident memory comes from, step by step, in a fresh process.

    python benchmarks/rss_steps.py            # Swin-T, batch 1, float32

Prints the process's resident set (VmRSS) after each step: NumPy imported, Numba imported, the first Numba kernel
loaded (from the on-disk cache after the first run), a random-weight checkpoint loaded by swinref.load, the
first prediction. Run it twice: the first run may compile the kernels.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import sys, tempfile, pathlib

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024.0

steps = []
import numpy as np
steps.append(("numpy imported", rss()))
import numba
steps.append(("numba imported", rss()))
from swinref import kernels
h = np.ones((2, 8), np.float32)
kernels.gelu_bias_rows(h, np.zeros(8, np.float32))
steps.append(("first kernel loaded", rss()))
import swinref
from safetensors.numpy import save_file
from swinref.params import init_params
cfg = swinref.get_config(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "w.safetensors"
    save_file({k: v.astype(np.float32) for k, v in init_params(cfg, seed=0).items()}, str(path))
    model = swinref.load(path, config=sys.argv[1])
steps.append(("checkpoint loaded", rss()))
model(np.zeros((1, 3, *cfg.img_size), np.float32))
steps.append(("first prediction", rss()))
previous = 0.0
for name, value in steps:
    print(f"{name:<22} {value:7.1f} MB  (+{value - previous:.1f})")
    previous = value
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="T")
    args = ap.parse_args(argv)
    return subprocess.run([sys.executable, "-c", CHILD, args.model]).returncode


if __name__ == "__main__":
    sys.exit(main())
