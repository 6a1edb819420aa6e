"""Dataset inference benchmark: swinref workers against timm + PyTorch workers running the same pipeline.

    python benchmarks/datasets.py                                   # Swin-T 224, 48 images, 1 and 2 workers
    python benchmarks/datasets.py --images 96 --repeat 5 --json benchmarks/results/out.json

Each worker is a fresh process that reads a list of JPEG files and embeds them in batches: decode with Pillow,
the official evaluation preprocessing (resize the shorter side to 256, bicubic; centre crop 224; ImageNet mean and
std), the model, the pooled features. The swinref worker is `swinref.Predictor(outputs=("embedding",))`; the torch
worker decodes the same way, preprocesses with torchvision's transforms (the same numbers to 1e-6, tests/
test_predict.py) and runs timm's SwinTransformer (forward_features, then forward_head(pre_logits=True)) under
inference_mode. Both load the same random weights from one timm .pth, and their embeddings of the first batch are
compared before anything is reported.

For 1 and 2 workers at a time (each with cores / workers threads, set explicitly: the thread environment variables
before the process starts, `threads=` for swinref and torch.set_num_threads for torch), every repetition starts
the workers of one kind together, waits until all have loaded, then times them over the whole image list (split
between them). The kinds alternate order every repetition, so a load change on the shared machine hits both.
Reported per kind and worker count: start-up (spawn to model loaded, per worker), throughput (images / wall time of
the slowest worker), peak RSS per worker (VmHWM), medians over repetitions, the swinref / torch ratios, and how
many workers of each kind fit in a memory budget (--budget-gib / the median peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "swin_tiny_patch4_window7_224"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
KINDS = ("swinref", "torch")


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; exec resets it, so the parent's peak is not carried over)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


# ----------------------------------------------------------------------------------------------------------------
# A worker: load, say "ready", wait for "go", embed its files, print one JSON line.


def _worker(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    paths = pathlib.Path(args.list).read_text().splitlines()
    if args.worker == "swinref":
        sys.path.insert(0, str(ROOT))
        import swinref

        predictor = swinref.Predictor(args.checkpoint, outputs=("embedding",), threads=args.threads, policy="timm")

        def embed(batch):
            return predictor(batch)["embedding"]
    else:
        import numpy as np
        import timm
        import torch
        from PIL import Image
        from torchvision import transforms

        torch.set_num_threads(args.threads)
        net = timm.create_model(CONFIG, pretrained=False)
        net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
        net.eval()
        tf = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                                 transforms.CenterCrop(224), transforms.ToTensor(),
                                 transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

        def embed(batch):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in batch])
            with torch.inference_mode():
                return net.forward_head(net.forward_features(x), pre_logits=True).numpy()
    startup = time.perf_counter() - t0
    print("ready", json.dumps({"startup_in_process_s": startup}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    import numpy as np

    t = time.perf_counter()
    first = None
    for start in range(0, len(paths), args.batch_size):
        out = embed(paths[start:start + args.batch_size])
        if first is None:
            first = np.asarray(out)
    seconds = time.perf_counter() - t
    if args.out:
        np.save(args.out, first)
    print(json.dumps({"images": len(paths), "seconds": seconds, "rss_mb": _peak_rss_mb()}), flush=True)


class _Worker:
    def __init__(self, kind: str, checkpoint: str, paths: list[str], threads: int, batch_size: int,
                 workdir: pathlib.Path, index: int, out: str | None = None):
        listing = workdir / f"{kind}-{index}.txt"
        listing.write_text("\n".join(paths))
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", kind, "--checkpoint", checkpoint,
               "--list", str(listing), "--threads", str(threads), "--batch-size", str(batch_size)]
        if out:
            cmd += ["--out", out]
        env = dict(os.environ)
        env.update({v: str(threads) for v in THREAD_VARS})
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(ROOT))

    def wait_ready(self) -> float:
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready"):
            raise RuntimeError(f"worker failed to start (exit {self.proc.wait()}; see its messages above)")
        return time.perf_counter() - self.t_spawn

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        line = self.proc.stdout.readline().strip()
        self.proc.stdin.close()
        self.proc.wait()
        return json.loads(line)


def _run(kind: str, workers: int, checkpoint: str, paths: list[str], cores: int, batch_size: int,
         workdir: pathlib.Path, out: str | None = None) -> dict:
    """One repetition: `workers` processes of one kind, started together, timed together."""
    threads = max(1, cores // workers)
    shares = [paths[i::workers] for i in range(workers)]
    procs = [_Worker(kind, checkpoint, share, threads, batch_size, workdir, i, out if i == 0 else None)
             for i, share in enumerate(shares)]
    startups = [p.wait_ready() for p in procs]
    t = time.perf_counter()
    for p in procs:
        p.go()
    results = [p.result() for p in procs]
    wall = time.perf_counter() - t
    return {"threads_per_worker": threads, "startup_s": startups, "wall_s": wall,
            "images_per_s": len(paths) / wall, "rss_mb": [r["rss_mb"] for r in results],
            "worker_seconds": [r["seconds"] for r in results]}


def _make_images(folder: pathlib.Path, n: int) -> list[str]:
    """n JPEGs of 500 x 375 (the typical ImageNet validation size), smooth random content."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        path = folder / f"img{i:04d}.jpg"
        img.save(path, quality=90)
        paths.append(str(path))
    return paths


def _checkpoint(workdir: pathlib.Path) -> str:
    """Random timm weights saved as timm's state dict (.pth), which swinref reads without torch."""
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model(CONFIG, pretrained=False)
    path = workdir / "swin_t_timm.pth"
    torch.save(net.state_dict(), path)
    return str(path)


def _summary(runs: dict, budget_mb: float) -> dict:
    out: dict = {}
    for workers, by_kind in runs.items():
        row: dict = {}
        for kind, reps in by_kind.items():
            rss = [r for rep in reps for r in rep["rss_mb"]]
            row[kind] = {"images_per_s_median": statistics.median(r["images_per_s"] for r in reps),
                         "startup_s_median": statistics.median(s for rep in reps for s in rep["startup_s"]),
                         "rss_mb_median": statistics.median(rss), "rss_mb_max": max(rss),
                         "threads_per_worker": reps[0]["threads_per_worker"]}
            row[kind]["workers_in_budget"] = int(budget_mb // row[kind]["rss_mb_median"])
        if len(row) == 2:
            s, t = row["swinref"], row["torch"]
            row["throughput_ratio_swinref_over_torch"] = s["images_per_s_median"] / t["images_per_s_median"]
            row["paired_throughput_ratio_median"] = statistics.median(
                a["images_per_s"] / b["images_per_s"] for a, b in zip(by_kind["swinref"], by_kind["torch"]))
            row["rss_ratio_swinref_over_torch"] = s["rss_mb_median"] / t["rss_mb_median"]
            row["startup_ratio_swinref_over_torch"] = s["startup_s_median"] / t["startup_s_median"]
        out[workers] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48, help="JPEG files embedded per repetition (default 48)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per kind and worker count (default 3)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="cores shared by the workers (default all)")
    ap.add_argument("--budget-gib", type=float, default=8.0, help="memory budget for the workers-that-fit figure")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the results here")
    # Worker mode (internal).
    ap.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--list", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0

    import numpy as np

    result: dict = {"command": "python benchmarks/datasets.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_average_start": os.getloadavg()},
                    "config": CONFIG, "images": args.images, "batch_size": args.batch_size, "repeat": args.repeat,
                    "budget_gib": args.budget_gib}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        (workdir / "images").mkdir()
        paths = _make_images(workdir / "images", args.images)
        checkpoint = _checkpoint(workdir)
        # Same weights, same images: the two pipelines must agree before their speed means anything.
        firsts = {}
        for kind in KINDS:
            _run(kind, 1, checkpoint, paths[:args.batch_size], args.cores, args.batch_size, workdir,
                 out=str(workdir / f"{kind}-first.npy"))
            firsts[kind] = np.load(workdir / f"{kind}-first.npy")
        result["embedding_max_abs_diff"] = float(np.abs(firsts["swinref"] - firsts["torch"]).max())
        result["embedding_max_abs"] = float(np.abs(firsts["torch"]).max())
        print(f"embeddings agree to {result['embedding_max_abs_diff']:.2e} (max |x| {result['embedding_max_abs']:.2f})",
              file=sys.stderr)
        runs: dict = {}
        for workers in args.workers:
            runs[str(workers)] = {k: [] for k in KINDS}
            for r in range(args.repeat):
                for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
                    rep = _run(kind, workers, checkpoint, paths, args.cores, args.batch_size, workdir)
                    runs[str(workers)][kind].append(rep)
                    print(f"{workers} worker(s) {kind:8s} {rep['images_per_s']:6.2f} img/s  startup "
                          f"{max(rep['startup_s']):5.2f} s  rss {max(rep['rss_mb']):7.1f} MB", file=sys.stderr)
    result["machine"]["load_average_end"] = os.getloadavg()
    result["runs"] = runs
    result["summary"] = _summary(runs, args.budget_gib * 1024)
    text = json.dumps(result, indent=1)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
