"""CPU benchmark: swinref (NumPy + Numba) against PyTorch eager running timm's Swin, and onnxruntime when present.

    python benchmarks/cpu.py                       # Swin-T, batches 1 and 8, 2 threads
    python benchmarks/cpu.py --models T S B B-384 V2-T --json out.json
    python benchmarks/cpu.py --models V2-T         # Swin V2-T 256 (timm's swinv2_tiny_window8_256)
    python benchmarks/cpu.py --contention          # also the same rounds beside a busy neighbour process
    python benchmarks/cpu.py --big 1536            # also peak RSS at 1536 x 1536 (fast and plain path)
    python benchmarks/cpu.py --video               # Video Swin: swinref vs torchvision swin3d_t, 32x224x224

One random-weight model per config is built in timm (tools/peers.py: SwinTransformer, or SwinTransformerV2 for
V2-T), saved as a .pth, and loaded by swinref from that file, so both run the same weights. The model is exported
to ONNX for onnxruntime, and a second time with its shifted-window masks rewritten for `onnxruntime-inf`: timm
masks with -100 where swinref masks with -inf, so every 0/-100 mask tensor of the graph (initializers and
Constant nodes) gets -inf instead, and swinref is also compared with the graph that masks as it does; the number
of tensors rewritten is recorded (none found is reported as a problem, and onnxruntime-inf is then left out). All
logits are compared with torch's before anything is timed. Then:

- latency: one worker process per runtime; warm-ups, then paired rounds calling every runtime once, the order
  rotated each round (swinref, torch, onnxruntime, onnxruntime-inf / torch, onnxruntime, ..., swinref / ...), so
  over a multiple of the runtime count each takes each position equally often and a load change on a shared
  machine hits all alike; medians, min, max, and swinref's ratio to each of torch, onnxruntime and
  onnxruntime-inf (ratio of medians and median of the per-round ratios);
- contention (--contention): after a batch size's quiet rounds, the same rounds (--contention-rounds, default
  --repeat) again while a neighbour process runs NumPy on 2 threads (512 x 512 float32 products and np.exp over
  8 MB, in a loop, started 1 s before timing), first at the benchmark's own niceness, then at nice 19; per runtime
  the quiet and contended medians and the slowdown (contended / quiet). The neighbour inherits the benchmark's
  niceness, so run the benchmark itself at nice 0 to see the two priorities differ;
- peak memory: a fresh process per library loads the checkpoint and runs batch 1; the peak RSS of that process;
- cold start: wall time of that fresh process from spawn to the first prediction (interpreter, imports, load,
  JIT compilation or Numba cache load, first run). swinref is measured twice: with its Numba cache as installed
  and with an empty NUMBA_CACHE_DIR (everything compiled, as at the first start after installing). Each kind of
  process runs --cold-runs times (default 3) in alternating order; the median run is reported, with swinref's
  peak RSS and cold start over torch's and over onnxruntime's;
- the thread settings in force (environment, BLAS via threadpoolctl if installed, Numba, torch).

The torch side is skipped with a message when torch or timm is missing (swinref is then timed alone), onnxruntime
when it is missing or --no-onnx, onnxruntime-inf when the onnx package is missing. Set the thread count with
--threads (it sets OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS before NumPy loads, and torch.set_num_threads).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = {"T": "swin_tiny_patch4_window7_224", "S": "swin_small_patch4_window7_224",
          "B": "swin_base_patch4_window7_224", "B-384": "swin_base_patch4_window12_384",
          "V2-T": "swinv2_tiny_patch4_window8_256"}  # timm's swinv2_tiny_window8_256
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "OPENBLAS_THREAD_TIMEOUT")


_BLAS_TIMEOUT: list[int] = [4]  # --blas-timeout


def _env_for(kind: str, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    if _BLAS_TIMEOUT[0]:
        env["OPENBLAS_THREAD_TIMEOUT"] = str(_BLAS_TIMEOUT[0])
    else:
        env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    env.update(extra or {})
    return env


def _set_threads(n: int, blas_timeout: int) -> None:
    for var in THREAD_VARS[:4]:
        os.environ[var] = str(n)
    # Short, so that OpenBLAS's idle threads (the plain path's, the parent's) stop spinning soon after a product;
    # swinref's fast path runs BLAS on one thread and does not wake them, torch and onnxruntime do not use
    # OpenBLAS. Set for every process before NumPy loads; 0: leave it unset.
    _BLAS_TIMEOUT[0] = blas_timeout
    if blas_timeout:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(blas_timeout)
    else:
        os.environ.pop("OPENBLAS_THREAD_TIMEOUT", None)


def _count(minimum: int):
    """argparse type: an integer >= minimum, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: give {minimum} or more")
        return value

    return parse


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["T"], choices=sorted(MODELS))
    ap.add_argument("--batches", nargs="+", type=_count(1), default=None, help="default 1 8 (--video: 1)")
    ap.add_argument("--threads", type=_count(1), default=2)
    ap.add_argument("--repeat", type=_count(1), default=10, help="paired repetitions per batch size")
    ap.add_argument("--warmup", type=_count(0), default=2)
    ap.add_argument("--blas-timeout", type=int, default=4,
                    help="OPENBLAS_THREAD_TIMEOUT for all processes (0: unset, OpenBLAS's own default)")
    ap.add_argument("--big", type=_count(0), default=0, help="also measure peak RSS at this image side (Swin-T, batch 1)")
    ap.add_argument("--no-onnx", action="store_true", help="skip onnxruntime even if it is installed")
    ap.add_argument("--no-processes", action="store_true", help="skip the memory / cold-start subprocesses")
    ap.add_argument("--cold-runs", type=_count(1), default=3, help="fresh processes per runtime for cold start and memory")
    ap.add_argument("--json", type=pathlib.Path, help="write all figures to this file")
    ap.add_argument("--contention", action="store_true",
                    help="after each batch's quiet rounds, time the same rounds beside a busy 2-thread NumPy "
                         "neighbour process, once at the benchmark's priority and once at nice 19")
    ap.add_argument("--contention-rounds", type=_count(1), default=None,
                    help="rounds per neighbour priority (default: --repeat)")
    ap.add_argument("--video", action="store_true",
                    help="Video Swin instead: swinref against torchvision's swin3d_t (--clip, default 32x224x224)")
    ap.add_argument("--clip", default=None, metavar="TxHxW", help="--video: the clip size (default 32x224x224)")
    # Internal: one fresh process measuring memory and cold start.
    ap.add_argument("--child", choices=["swinref", "swinref-plain", "torch", "onnx"], help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["swinref", "torch", "onnx"], help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", default="", help=argparse.SUPPRESS)
    # Internal: the --contention neighbour; --neighbour-nice: the niceness it sets itself before starting threads.
    ap.add_argument("--neighbour", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--neighbour-nice", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-name", default="", help=argparse.SUPPRESS)  # the runtime's name in the logits file
    ap.add_argument("--pause", type=float, default=0.2,
                    help="seconds of idle between timed calls, so no runtime's spinning threads linger into the next")
    args = ap.parse_args(argv)
    if args.batches is None:
        args.batches = [1] if args.video else [1, 8]
    if args.contention_rounds is None:
        args.contention_rounds = args.repeat
    return args


# ----------------------------------------------------------------------------------------------------------------
# Child processes: load, predict once, report.


def _child(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    import numpy as np

    size = args.size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    if args.child.startswith("swinref"):
        import swinref
        from swinref.backend import plain

        t_import = time.perf_counter()
        model = swinref.load(args.checkpoint, config=args.config, policy="timm")
        t_load = time.perf_counter()
        if args.child == "swinref-plain":
            with plain():
                y = model(x)
        else:
            y = model(x)
    elif args.child == "torch":
        import timm  # noqa: F401 - all of timm's models load here, so their time counts as import, not load
        import torch

        sys.path.insert(0, str(ROOT))
        from tools import peers
        from swinref.config import get_config

        torch.set_num_threads(args.threads)
        t_import = time.perf_counter()
        # The same builder as the timing worker (timm SwinTransformer or SwinTransformerV2 by cfg.version); its
        # random init is skipped because the state dict replaces every parameter anyway.
        net = peers.build("timm", get_config(args.config), randomise=False)
        net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
        t_load = time.perf_counter()
        with torch.no_grad():
            y = net(torch.from_numpy(x)).numpy()
    else:
        import onnxruntime as ort

        t_import = time.perf_counter()
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(args.checkpoint, so, providers=["CPUExecutionProvider"])
        t_load = time.perf_counter()
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    t_run = time.perf_counter()
    print(json.dumps({"rss_mb": _peak_rss_mb(), "import_s": t_import - t0, "load_s": t_load - t_import,
                      "first_run_s": t_run - t_load, "checksum": float(np.asarray(y, dtype=np.float64).sum())}))


def _neighbour_loop(nice: int | None) -> None:
    """--neighbour: NumPy work on 2 threads until killed, or until its parent is gone (a benchmark ended by SIGKILL
    cannot run the `finally` that kills this)."""
    if nice is not None:
        # Before NumPy starts OpenBLAS's threads: Linux niceness is per thread and new threads inherit it.
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    import concurrent.futures

    import numpy as np

    parent = os.getppid()
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((512, 512), dtype=np.float32) for _ in range(2))
    product = np.empty_like(a)
    halves = np.split(0.1 * rng.standard_normal(1 << 21, dtype=np.float32), 2)  # 8 MB for np.exp
    exps = [np.empty_like(h) for h in halves]

    def exp_passes(i: int) -> None:
        for _ in range(8):  # memory-bound work, about a third of each round beside the compute-bound product
            np.exp(halves[i], out=exps[i])

    helper = concurrent.futures.ThreadPoolExecutor(1)
    print("ready", os.getpriority(os.PRIO_PROCESS, 0), flush=True)
    while os.getppid() == parent:
        np.matmul(a, b, out=product)  # OpenBLAS on OPENBLAS_NUM_THREADS=2 threads
        # np.exp runs on the calling thread only; half of the array on a helper thread keeps both cores busy
        # (NumPy releases the GIL inside the loop).
        other = helper.submit(exp_passes, 0)
        exp_passes(1)
        other.result()


def _peak_rss_mb() -> float:
    """This process's peak resident set: VmHWM, which exec resets (ru_maxrss would carry the parent's peak over)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:  # not Linux
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(args: argparse.Namespace) -> None:
    """A timing worker: loads one runtime, then answers `run B` lines on stdin with the seconds one call took.

    Each runtime lives in its own process, so thread pools never meet: torch's OpenMP threads, OpenBLAS's threads
    and Numba's never spin against each other inside one process. The parent alternates between workers.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    size = args.size
    shape = _clip(args.clip) if args.clip else (size, size)
    cache: dict[int, np.ndarray] = {}
    kind = args.worker
    if kind == "swinref":
        import swinref

        model = swinref.load(args.checkpoint, config=args.config, policy=None if args.clip else "timm")
        run = model
    elif kind == "torch" and args.clip:
        import torch
        import torchvision.models.video as tvv

        torch.set_num_threads(args.threads)
        net = getattr(tvv, args.config)().eval()
        net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))

        def run(x):
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()
    elif kind == "torch":
        import torch

        sys.path.insert(0, str(ROOT))
        from tools import peers
        from swinref.config import get_config

        torch.set_num_threads(args.threads)
        net = peers.build("timm", get_config(args.config))
        net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))

        def run(x):
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(args.checkpoint, so, providers=["CPUExecutionProvider"])

        def run(x):
            return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, b = line.split()
        b = int(b)
        if b not in cache:
            cache[b] = rng.standard_normal((b, 3, *shape)).astype(np.float32)
        if cmd == "out":
            np.save(f"{args.out_dir}/{args.out_name or kind}-{b}.npy", np.asarray(run(cache[b])))
            print("saved", flush=True)
            continue
        t = time.perf_counter()
        run(cache[b])
        print(time.perf_counter() - t, flush=True)


class _Worker:
    """A timing worker process; `name` is the runtime's name in the results (two onnx workers differ by it) and the
    stem of the logits file it writes to out_dir on `out B`."""

    def __init__(self, kind: str, checkpoint: str, config: str, size: int, threads: int, out_dir: str,
                 env: dict | None = None, clip: str | None = None, name: str | None = None):
        self.name = name or kind
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", kind, "--checkpoint", checkpoint,
               "--config", config, "--size", str(size), "--threads", str(threads), "--out-dir", out_dir,
               "--out-name", self.name]
        cmd += ["--clip", clip] if clip else []
        self.out_dir = out_dir
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
                                     env=_env_for(kind, env))
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{kind} worker failed to start (see its messages above)")

    def ask(self, cmd: str, batch: int) -> str:
        self.proc.stdin.write(f"{cmd} {batch}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def logits(self, batch: int):
        """The worker's output on its fixed random batch (every worker draws the same one)."""
        import numpy as np

        self.ask("out", batch)
        return np.load(pathlib.Path(self.out_dir) / f"{self.name}-{batch}.npy")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# --contention's neighbour priorities: at the benchmark's own niceness (None: inherited), and at the lowest.
NEIGHBOURS = (("nice0", None), ("nice19", 19))
NEIGHBOUR_WARM_S = 1.0  # the neighbour runs this long before timing starts, so its threads and caches are busy


@contextlib.contextmanager
def _neighbour(nice: int | None):
    """A busy neighbour process for the duration of the `with` block, killed on the way out whatever happens
    (exception, Ctrl-C). Yields the niceness it and the benchmark run at."""
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--neighbour"]
    cmd += [] if nice is None else ["--neighbour-nice", str(nice)]
    env = _env_for("neighbour", {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    try:
        ready = proc.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"the contention neighbour failed to start (exit {proc.poll()})")
        time.sleep(NEIGHBOUR_WARM_S)
        if proc.poll() is not None:
            raise RuntimeError(f"the contention neighbour stopped (exit {proc.returncode})")
        yield {"nice": int(ready[1]), "benchmark_nice": os.getpriority(os.PRIO_PROCESS, 0), "threads": 2}
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _contention(workers: dict, batch: int, quiet: dict[str, list[float]], args: argparse.Namespace) -> dict:
    """The quiet rounds again beside each neighbour of NEIGHBOURS: per runtime the quiet and contended medians and
    the slowdown (contended / quiet), and swinref's ratios to the anchors under contention."""
    import statistics

    out = {}
    for label, nice in NEIGHBOURS:
        with _neighbour(nice) as neighbour:
            times = _rounds(workers, batch, args.contention_rounds, args.pause)
        runtimes = {}
        for k, contended in times.items():
            q, c = statistics.median(quiet[k]), statistics.median(contended)
            runtimes[k] = {"quiet_median_s": q, "contended_median_s": c, "slowdown": c / q}
        out[label] = {"neighbour": neighbour, "rounds": args.contention_rounds, "runtimes": runtimes,
                      "ratios": _ratios(times)}
    return out


def _spawn(kind: str, checkpoint: str, config: str, size: int, threads: int, env_extra: dict | None = None) -> dict:
    env = _env_for(kind, env_extra)
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", kind, "--checkpoint", checkpoint,
           "--config", config, "--size", str(size), "--threads", str(threads)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cold_start_s"] = wall
    warnings = [line for line in done.stderr.splitlines() if "Warning" in line]
    if warnings:
        result["warnings"] = warnings
    return result


# ----------------------------------------------------------------------------------------------------------------
# The parent: build, compare, time.


def _thread_info(threads: int) -> dict:
    info: dict = {"requested": threads, "env": {v: os.environ.get(v) for v in THREAD_VARS}}
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # pragma: no cover - older NumPy
        pass
    try:
        from threadpoolctl import threadpool_info

        info["threadpoolctl"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version")}
                                 for p in threadpool_info()]
    except ImportError:
        info["threadpoolctl"] = "not installed (BLAS threads from the environment variables above)"
    from swinref import fast

    info["swinref_lanes"] = fast._lanes()  # threads sharing a block's kernels and window chunks (NUMBA_NUM_THREADS)
    return info


def _stats(times: list[float]) -> dict:
    import statistics

    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def _export_onnx(net, cfg, path: pathlib.Path) -> str | None:
    try:
        import onnxruntime  # noqa: F401
        import torch
    except ImportError as exc:
        return f"onnxruntime not installed ({exc})"
    x = torch.zeros(1, 3, *cfg.img_size)
    try:
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17, dynamo=False)
    except Exception as exc:
        return f"torch.onnx.export failed: {type(exc).__name__}: {exc}"
    return None


# timm fills the shifted-window attention mask (V1 and V2) with this; swinref masks with -inf. The onnxruntime-inf
# anchor runs the exported graph with -inf instead, so a ratio against it is not a ratio against a different mask.
TIMM_MASK_VALUE = -100.0


def _is_shift_mask(array) -> bool:
    """A float array of ndim >= 2 holding only 0 and TIMM_MASK_VALUE, with at least one TIMM_MASK_VALUE."""
    import numpy as np

    if array.ndim < 2 or not np.issubdtype(array.dtype, np.floating):
        return False
    masked = array == TIMM_MASK_VALUE
    return bool(masked.any() and (masked | (array == 0)).all())


def _graphs(graph):
    """A graph and every subgraph inside its nodes' attributes (If / Loop bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graphs(sub)


def _inf_masks(src: pathlib.Path, dst: pathlib.Path) -> int:
    """Write src's graph to dst with TIMM_MASK_VALUE set to -inf in every shift-mask tensor (initializers and
    Constant nodes' `value`); returns how many tensors changed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    def with_inf(tensor):
        array = numpy_helper.to_array(tensor)
        if not _is_shift_mask(array):
            return None
        return numpy_helper.from_array(np.where(array == TIMM_MASK_VALUE, -np.inf, array).astype(array.dtype),
                                       name=tensor.name)

    model = onnx.load(str(src))
    changed = 0
    for graph in _graphs(model.graph):
        tensors = list(graph.initializer)
        tensors += [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        for tensor in tensors:
            new = with_inf(tensor)
            if new is not None:
                tensor.CopyFrom(new)
                changed += 1
    onnx.save(model, str(dst))
    return changed


def _add_onnx_workers(workers: dict, key: str, torch_net, cfg, args: argparse.Namespace, workdir: pathlib.Path,
                      out: dict) -> None:
    """Adds onnxruntime on the exported graph, and onnxruntime-inf on the same graph with -inf shift masks, to
    `workers` as each starts (so the caller closes whichever did); problems (export failed, onnx package missing,
    no mask found) are recorded in `out` and that runtime is left out."""
    name, H = MODELS[key], cfg.img_size[0]
    onnx_path = workdir / f"{key}.onnx"
    problem = _export_onnx(torch_net, cfg, onnx_path)
    if problem:
        out["onnx"] = problem
        return
    workers["onnxruntime"] = _Worker("onnx", str(onnx_path), name, H, args.threads, str(workdir), name="onnxruntime")
    inf_path = workdir / f"{key}-inf.onnx"
    try:
        changed = _inf_masks(onnx_path, inf_path)
    except ImportError as exc:
        out["onnx_inf"] = f"skipped: the onnx package is needed to rewrite the graph ({exc})"
        return
    out["onnx_inf_masks_replaced"] = changed
    if changed == 0:
        # Timing an unchanged graph twice would report a meaningless anchor; say so instead.
        out["onnx_inf"] = "problem: no 0/-100 shift-mask tensor found in the exported graph; onnxruntime-inf not timed"
        print(f"{key}: {out['onnx_inf']}", file=sys.stderr)
        return
    workers["onnxruntime-inf"] = _Worker("onnx", str(inf_path), name, H, args.threads, str(workdir),
                                         name="onnxruntime-inf")


def _bench_model(key: str, args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    import numpy as np

    import swinref
    from swinref.backend import plain
    from swinref.config import get_config

    name = MODELS[key]
    cfg = get_config(name)
    H = cfg.img_size[0]
    out: dict = {"model": key, "config": name, "image": H, "batches": {}}
    rng = np.random.default_rng(0)

    torch_net = None
    ckpt = workdir / f"{key}.pth"
    try:
        import torch

        sys.path.insert(0, str(ROOT))
        from tools import peers

        torch.set_num_threads(args.threads)
        torch_net = peers.build("timm", cfg)
        peers.save("timm", torch_net, workdir / key)
        ckpt = workdir / key / "model.pth"
    except ImportError as exc:
        out["torch"] = f"skipped: {exc}"
        print(f"torch side skipped ({exc}); timing swinref alone", file=sys.stderr)
    if torch_net is None:
        from safetensors.numpy import save_file

        from swinref.params import init_params

        ckpt = workdir / f"{key}.safetensors"
        save_file({k: v.astype(np.float32) for k, v in init_params(cfg, seed=0).items()}, str(ckpt))
        model = swinref.load(ckpt, config=name, policy="timm")
    else:
        model = swinref.load(ckpt, config=name, policy="timm")

    b0 = args.batches[0]
    x1 = rng.standard_normal((b0, 3, H, H)).astype(np.float32)
    got = model(x1)
    with plain():
        ref = model(x1)
    out["fast_vs_plain_max_abs"] = float(np.abs(got - ref).max())
    del model

    # Timing: one worker process per runtime, called in alternating order.
    workers = {"swinref": _Worker("swinref", str(ckpt), name, H, args.threads, str(workdir))}
    # Started inside the try below, so a failing export or worker start still closes the workers already running.
    try:
        if torch_net is not None:
            workers["torch"] = _Worker("torch", str(ckpt), name, H, args.threads, str(workdir))
            if not args.no_onnx:
                _add_onnx_workers(workers, key, torch_net, cfg, args, workdir, out)
            torch_net = True  # the module itself is no longer needed here
        outs = {k: w.logits(b0) for k, w in workers.items()}
        if "torch" in outs:
            for k, field in (("swinref", "swinref_vs_torch_max_abs"), ("onnxruntime", "onnx_vs_torch_max_abs"),
                             ("onnxruntime-inf", "onnx_inf_vs_torch_max_abs")):
                if k in outs:
                    out[field] = float(np.abs(outs[k] - outs["torch"]).max())
            out["logit_scale"] = float(np.abs(outs["torch"]).max())
        out["batches"] = _time_paired(workers, args)
    finally:
        for w in workers.values():
            w.close()

    if not args.no_processes:
        # Fresh processes, each kind args.cold_runs times in alternating order; the run with the median cold start
        # is reported, with every run's wall time beside it.
        spawners = {"swinref": lambda: _spawn("swinref", str(ckpt), name, H, args.threads)}

        def empty_cache() -> dict:
            with tempfile.TemporaryDirectory() as empty:
                return _spawn("swinref", str(ckpt), name, H, args.threads, {"NUMBA_CACHE_DIR": empty})

        spawners["swinref_empty_numba_cache"] = empty_cache
        if torch_net is not None:
            spawners["torch"] = lambda: _spawn("torch", str(ckpt), name, H, args.threads)
            if (workdir / f"{key}.onnx").exists():
                spawners["onnxruntime"] = lambda: _spawn("onnx", str(workdir / f"{key}.onnx"), name, H, args.threads)
        runs: dict[str, list[dict]] = {k: [] for k in spawners}
        kinds = list(spawners)
        for r in range(args.cold_runs):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                runs[kind].append(spawners[kind]())
        out["processes"] = {k: _median_run(v) for k, v in runs.items()}
        out["process_ratios"] = _process_ratios(out["processes"])
    return out


def _process_ratios(procs: dict) -> dict:
    """swinref's peak RSS and cold start over torch's and onnxruntime's (the targets: at or under onnxruntime's)."""
    sw = procs.get("swinref", {})
    empty = procs.get("swinref_empty_numba_cache", {}).get("cold_start_s", float("nan"))
    return {anchor: {"rss": sw["rss_mb"] / procs[anchor]["rss_mb"],
                     "cold_start": sw["cold_start_s"] / procs[anchor]["cold_start_s"],
                     "cold_start_empty_numba_cache": empty / procs[anchor]["cold_start_s"]}
            for anchor in ("torch", "onnxruntime") if "rss_mb" in sw and "rss_mb" in procs.get(anchor, {})}


# The runtimes swinref is compared with, each as swinref's time over theirs (below 1: swinref is faster).
ANCHORS = ("torch", "onnxruntime", "onnxruntime-inf")


def _rounds(workers: dict, batch: int, rounds: int, pause: float) -> dict[str, list[float]]:
    """`rounds` rounds calling every worker once; round r starts at the r-th runtime (a rotation), so over
    len(workers) rounds each runtime takes each position once and a load change hits every runtime alike."""
    names = list(workers)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        start = r % len(names)
        for k in names[start:] + names[:start]:
            time.sleep(pause)
            times[k].append(float(workers[k].ask("run", batch)))
    return times


def _ratios(times: dict[str, list[float]]) -> dict:
    """swinref over each anchor present: ratio of the medians and median of the per-round ratios."""
    import statistics

    sw = times.get("swinref")
    return {a: {"medians": statistics.median(sw) / statistics.median(times[a]),
                "paired_median": statistics.median(s / t for s, t in zip(sw, times[a]))}
            for a in ANCHORS if sw and a in times}


def _time_paired(workers: dict, args: argparse.Namespace) -> dict:
    """Per batch size: warm-ups, then args.repeat rotated rounds (_rounds); with --contention the same rounds again
    beside a busy neighbour process (_contention)."""
    out = {}
    for b in args.batches:
        for _ in range(args.warmup):
            for w in workers.values():
                w.ask("run", b)
        times = _rounds(workers, b, args.repeat, args.pause)
        row: dict = {k: _stats(v) for k, v in times.items()}
        for k in times:
            row[k]["images_per_s"] = b / row[k]["median_s"]
        row["ratios"] = _ratios(times)
        if "torch" in row["ratios"]:  # the fields earlier result files have
            row["ratio_swinref_over_torch"] = row["ratios"]["torch"]["medians"]
            row["paired_ratio_median"] = row["ratios"]["torch"]["paired_median"]
        if args.contention:
            row["contention"] = _contention(workers, b, times, args)
        out[str(b)] = row
    return out


def _clip(text: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in text.lower().split("x"))
    return t, h, w


def _bench_video(args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    """swinref against torchvision's swin3d_t on the same random weights (torchvision's own file, read by
    swinref.load), logits compared first, then paired timing in one worker process per runtime."""
    import numpy as np
    import torch
    import torchvision.models.video as tvv

    sys.path.insert(0, str(ROOT / "tools"))
    from make_peer_fixtures import randomize_

    clip = args.clip or "32x224x224"
    torch.manual_seed(0)
    net = tvv.swin3d_t().eval()
    randomize_(net, 0)
    ckpt = workdir / "swin3d_t.pth"
    torch.save(net.state_dict(), ckpt)
    del net
    out: dict = {"model": "swin3d_t", "config": "swin3d_t", "clip": clip, "image": clip}
    workers = {k: _Worker(k, str(ckpt), "swin3d_t", 0, args.threads, str(workdir), clip=clip)
               for k in ("swinref", "torch")}
    try:
        b0 = args.batches[0]
        outs = {k: w.logits(b0) for k, w in workers.items()}
        out["swinref_vs_torch_max_abs"] = float(np.abs(outs["swinref"] - outs["torch"]).max())
        out["logit_scale"] = float(np.abs(outs["torch"]).max())
        out["fast_vs_plain_max_abs"] = float("nan")  # the image models' check; tests/test_kernels covers video
        out["batches"] = _time_paired(workers, args)
    finally:
        for w in workers.values():
            w.close()
    return out


def _median_run(runs: list[dict]) -> dict:
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r["cold_start_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["cold_start_runs_s"] = [r["cold_start_s"] for r in runs]
    chosen["rss_mb_max"] = max(r["rss_mb"] for r in runs)
    return chosen


def _big(args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    """Peak RSS of one batch-1 prediction at args.big x args.big (Swin-T), fast and plain path."""
    import swinref
    from swinref.api import random_model

    path = workdir / "T-big.safetensors"
    if not path.exists():
        model = random_model("T")
        from safetensors.numpy import save_file

        save_file({k: v for k, v in model.params.items()}, str(path))
    del swinref
    res = {"image": args.big}
    for kind in ("swinref", "swinref-plain"):
        res[kind] = _spawn(kind, str(path), MODELS["T"], args.big, args.threads)
    return res


def _contention_table(batch: str, row: dict) -> list[str]:
    contention = row["contention"]
    labels = list(contention)
    first = contention[labels[0]]
    niceness = {k: c["neighbour"]["nice"] for k, c in contention.items()}
    own = first["neighbour"]["benchmark_nice"]
    lines = [f"  contention b{batch}, {first['rounds']} rounds, 2-thread NumPy neighbour: "
             + ", ".join(f"{k} at nice {n}" for k, n in niceness.items()) + f" (benchmark at nice {own})"]
    if len(set(niceness.values())) < len(niceness):
        # A benchmark started under `nice` passes its niceness on to the nice0 neighbour.
        lines.append("    (neighbours at the same niceness: run the benchmark at nice 0 to tell them apart)")
    lines.append(f"    {'runtime':<16} {'quiet ms':>9}" + "".join(f" {k + ' ms':>10} {'slowdown':>8}" for k in labels))
    for runtime, r in first["runtimes"].items():
        lines.append(f"    {runtime:<16} {r['quiet_median_s'] * 1e3:9.1f}"
                     + "".join(f" {contention[k]['runtimes'][runtime]['contended_median_s'] * 1e3:10.1f}"
                               f" {contention[k]['runtimes'][runtime]['slowdown']:8.2f}" for k in labels))
    for anchor, quiet in row.get("ratios", {}).items():
        lines.append(f"    swinref/{anchor} paired: quiet {quiet['paired_median']:.3f}"
                     + "".join(f", {k} {contention[k]['ratios'][anchor]['paired_median']:.3f}" for k in labels))
    return lines


def _table(results: dict) -> str:
    lines = []
    for m in results["models"]:
        lines.append(f"\n{m['config']} ({m.get('clip') or str(m['image']) + 'x' + str(m['image'])}, float32)  "
                     f"fast-vs-plain max|diff| {m['fast_vs_plain_max_abs']:.2e}"
                     + (f", vs torch {m['swinref_vs_torch_max_abs']:.2e} (logits up to {m['logit_scale']:.1f})"
                        if "swinref_vs_torch_max_abs" in m else ""))
        onnx = [f"{k} {m[f]:.2e}" for k, f in (("onnxruntime", "onnx_vs_torch_max_abs"),
                                               ("onnxruntime-inf", "onnx_inf_vs_torch_max_abs")) if f in m]
        if onnx:
            lines.append(f"  vs torch: {', '.join(onnx)}"
                         + (f"; {m['onnx_inf_masks_replaced']} shift-mask tensors set to -inf"
                            if "onnx_inf_masks_replaced" in m else ""))
        for k in ("onnx", "onnx_inf"):
            if k in m:
                lines.append(f"  {k}: {m[k]}")
        lines.append(f"  {'batch':>5} {'runtime':<16} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'img/s':>8}")
        for b, row in m["batches"].items():
            for k, s in row.items():
                if isinstance(s, dict) and "median_s" in s:
                    lines.append(f"  {b:>5} {k:<16} {s['median_s'] * 1e3:10.1f} {s['min_s'] * 1e3:9.1f} "
                                 f"{s['max_s'] * 1e3:9.1f} {s['images_per_s']:8.2f}")
            for anchor, r in row.get("ratios", {}).items():
                lines.append(f"  {b:>5} swinref/{anchor}: {r['medians']:.3f} (medians), "
                             f"{r['paired_median']:.3f} (median of paired ratios)")
            if "contention" in row:
                lines += _contention_table(b, row)
        for k, p in m.get("processes", {}).items():
            if "error" in p:
                lines.append(f"  process {k:<26} error: {p['error']}")
            else:
                runs = ", ".join(f"{t:.2f}" for t in p.get("cold_start_runs_s", []))
                lines.append(f"  process {k:<26} peak RSS {p['rss_mb']:7.0f} MB   "
                             f"cold start {p['cold_start_s']:6.2f} s (imports {p['import_s']:.2f}, "
                             f"load {p['load_s']:.2f}, first run {p['first_run_s']:.2f}; runs {runs})")
        for anchor, r in m.get("process_ratios", {}).items():
            lines.append(f"  swinref/{anchor}: peak RSS {r['rss']:.2f}, cold start {r['cold_start']:.2f} "
                         f"(empty Numba cache: {r['cold_start_empty_numba_cache']:.2f})")
    if "big" in results:
        big = results["big"]
        for k in ("swinref", "swinref-plain"):
            p = big[k]
            lines.append(f"\nSwin-T {big['image']}x{big['image']} batch 1, {k}: "
                         + (f"peak RSS {p['rss_mb']:.0f} MB, wall {p['cold_start_s']:.1f} s" if "rss_mb" in p
                            else f"error: {p['error']}"))
    t = results["threads"]
    lines.append(f"\nthreads: requested {t['requested']}; env {t['env']}; swinref lanes {t['swinref_lanes']}; "
                 f"torch {t.get('torch_threads', '-')}; BLAS {t.get('numpy_blas')}; threadpoolctl: {t['threadpoolctl']}")
    lines.append(f"load average at start {results['loadavg_start']}, at end {results['loadavg_end']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.neighbour:
        _neighbour_loop(args.neighbour_nice)
        return 0
    if not (args.child or args.worker):
        _set_threads(args.threads, args.blas_timeout)
    if args.child:
        _child(args)
        return 0
    if args.worker:
        _worker(args)
        return 0
    results: dict = {"loadavg_start": os.getloadavg(), "cpu_count": os.cpu_count(), "models": []}
    with tempfile.TemporaryDirectory(prefix="swinref-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        if args.video:
            print(f"benchmarking swin3d_t at {args.clip or '32x224x224'} ...", file=sys.stderr)
            results["models"].append(_bench_video(args, workdir))
        for key in ([] if args.video else args.models):
            print(f"benchmarking {key} ...", file=sys.stderr)
            results["models"].append(_bench_model(key, args, workdir))
        if args.big:
            print(f"peak RSS at {args.big}x{args.big} ...", file=sys.stderr)
            results["big"] = _big(args, workdir)
    results["threads"] = _thread_info(args.threads)
    try:
        import torch

        results["threads"]["torch_threads"] = torch.get_num_threads()
        results["torch_version"] = torch.__version__
    except ImportError:
        pass
    results["loadavg_end"] = os.getloadavg()
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
