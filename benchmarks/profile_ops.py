"""Where a forward pass spends its time, operation by operation: swinref and onnxruntime on the same model.

    python benchmarks/profile_ops.py                        # Swin-T 224, batch 1, one thread
    python benchmarks/profile_ops.py --batch 8 --models V2-T --json out.json

One random-weight timm model per config (tools/peers.py) is saved as a .pth for swinref and exported to ONNX for
onnxruntime, with the shift masks' -100 set to -inf (benchmarks/cpu.py's anchor). Both run on --threads threads
(default 1: with more, operations overlap and their times no longer add up to the pass).

- swinref: every matrix product (swinref.gemm's x @ W^T and numpy.matmul inside swinref.fast), every Numba kernel
  and every block is timed by wrapping it; what the blocks spend outside those is "other" (gathers, scatters,
  copies, Python). Products are grouped by shape [M, K] x [K, N] (the linear layers: "gemm" where swinref.gemm's
  kernel takes them, "matmul 2-D" where NumPy's BLAS does) or counted together (the stacked per-window products of
  attention), with their multiply-adds and GMAC/s. Fused items that run in Numba (swinref.window_item: each lane
  takes a block's items inside one call) are timed whole: their products and kernels are inside. --numpy-items times the NumPy items instead, step by
  step.
- onnxruntime: its own profiler (SessionOptions.enable_profiling), kernel time per node, by operator type; MatMul,
  Gemm and FusedMatMul nodes with their input shapes, multiply-adds and GMAC/s.

Medians over --repeat passes after --warmup; per-pass totals are the median pass's.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["T"], help="keys of benchmarks/cpu.py's MODELS (T, S, B, B-384, V2-T)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--top", type=int, default=12, help="product shapes listed per runtime")
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--numpy-items", action="store_true",
                    help="swinref's fused items as NumPy calls (fast.NATIVE_ITEMS off), timed step by step")
    args = ap.parse_args(argv)
    if min(args.batch, args.threads, args.repeat) < 1 or args.warmup < 0:
        ap.error("--batch, --threads and --repeat must be at least 1, --warmup at least 0")
    return args


# ----------------------------------------------------------------------------------------------------------------
# swinref


class _TimedNumpy:
    """numpy, with matmul timed and recorded by shape; everything else passed through."""

    def __init__(self, np, record):
        self._np, self._record = np, record

    def __getattr__(self, name):
        return getattr(self._np, name)

    def matmul(self, a, b, *rest, **kw):
        t = time.perf_counter()
        out = self._np.matmul(a, b, *rest, **kw)
        dt = time.perf_counter() - t
        if a.ndim == 2:
            self._record(("matmul 2-D", (a.shape[0], a.shape[1], b.shape[-1])), dt, a.shape[0] * a.shape[1] * b.shape[-1])
        else:
            self._record(("matmul stacked", None), dt, math.prod(a.shape[:-1]) * a.shape[-1] * b.shape[-1])
        return out


def _profile_swinref(model, x, args) -> dict:
    from swinref import fast, gemm, kernels, window_item

    events: dict = collections.defaultdict(lambda: [0.0, 0, 0])  # key -> [seconds, calls, MACs]

    def record(key, seconds, macs=0):
        e = events[key]
        e[0] += seconds
        e[1] += 1
        e[2] += macs

    def timed(fn, key):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                record(key, time.perf_counter() - t)

        return wrapper

    saved = {"np": fast.np, "block": fast.block, "linear": fast.linear, "layer_norm": fast.layer_norm}
    kernel_names = ("layer_norm_rows", "gelu_bias_rows", "attention_softmax")
    saved_kernels = {k: getattr(kernels, k) for k in kernel_names}
    saved_product = gemm.times_weight_t
    saved_item = window_item.windows_through_block
    saved_native = fast.NATIVE_ITEMS
    fast.NATIVE_ITEMS = not args.numpy_items

    def product(x, weight, out, c0=0, c1=None):
        c1 = weight.shape[0] if c1 is None else c1
        kind = "gemm" if gemm.fits(x, weight, out, c0, c1) else "matmul 2-D"
        t = time.perf_counter()
        saved_product(x, weight, out, c0, c1)
        M, K = x.shape
        record((kind, (M, K, c1 - c0)), time.perf_counter() - t, M * K * (c1 - c0))
    passes = []
    try:
        for _ in range(args.warmup):
            model(x)
        fast.np = _TimedNumpy(saved["np"], record)
        fast.block = timed(saved["block"], ("block", None))
        fast.linear = timed(saved["linear"], ("linear outside blocks", None))
        fast.layer_norm = timed(saved["layer_norm"], ("layer_norm outside blocks", None))
        for k in kernel_names:
            setattr(kernels, k, timed(saved_kernels[k], ("kernel " + k, None)))
        gemm.times_weight_t = product
        window_item.windows_through_block = timed(saved_item, ("native items (one Numba call per lane and block)", None))
        per_pass = []
        for _ in range(args.repeat):
            events.clear()
            t = time.perf_counter()
            model(x)
            passes.append(time.perf_counter() - t)
            per_pass.append({key: list(v) for key, v in events.items()})
    finally:
        fast.np = saved["np"]
        fast.block, fast.linear, fast.layer_norm = saved["block"], saved["linear"], saved["layer_norm"]
        for k, fn in saved_kernels.items():
            setattr(kernels, k, fn)
        gemm.times_weight_t = saved_product
        window_item.windows_through_block = saved_item
        fast.NATIVE_ITEMS = saved_native
    median = sorted(range(len(passes)), key=passes.__getitem__)[len(passes) // 2]
    ev = per_pass[median]
    total = passes[median]
    inside = ev.get(("block", None), [0, 0, 0])[0] + ev.get(("linear outside blocks", None), [0, 0, 0])[0]
    measured = sum(v[0] for (kind, _), v in ev.items() if kind.startswith(("matmul", "gemm", "kernel", "native")))
    kinds: dict = collections.defaultdict(lambda: [0.0, 0, 0])
    shapes = []
    for (kind, shape), (sec, calls, macs) in ev.items():
        if kind in ("block", "linear outside blocks"):
            continue
        k = kinds[kind]
        k[0] += sec
        k[1] += calls
        k[2] += macs
        if shape is not None:
            shapes.append({"op": kind.split()[0], "shape": list(shape), "ms": sec * 1e3, "calls": calls,
                           "gmac": macs / 1e9, "gmac_per_s": macs / sec / 1e9 if sec else 0.0})
    rows = [{"kind": kind, "ms": sec * 1e3, "calls": calls, "gmac": macs / 1e9,
             "gmac_per_s": (macs / sec / 1e9) if macs and sec else None} for kind, (sec, calls, macs) in kinds.items()]
    rows.append({"kind": "other inside blocks (gathers, scatters, copies, Python)",
                 "ms": max(0.0, inside - measured + ev.get(("layer_norm outside blocks", None), [0])[0]) * 1e3,
                 "calls": None, "gmac": 0.0, "gmac_per_s": None})
    rows.append({"kind": "outside blocks and products (patch embedding, merges' concat, final norm, pooling)",
                 "ms": max(0.0, total - inside - ev.get(("layer_norm outside blocks", None), [0])[0]) * 1e3,
                 "calls": None, "gmac": 0.0, "gmac_per_s": None})
    return {"pass_ms": total * 1e3, "pass_ms_all": [p * 1e3 for p in passes], "by_kind": rows,
            "products": sorted(shapes, key=lambda r: -r["ms"])}


# ----------------------------------------------------------------------------------------------------------------
# onnxruntime


def _macs(op: str, ins: list[list[int]], outs: list[list[int]]) -> int:
    """Multiply-adds of a product node from its profiled shapes. A weight onnxruntime has pre-packed is not listed
    among the inputs: its [K, N] is read from the activation's K and the output's N."""
    if op not in ("MatMul", "FusedMatMul", "Gemm") or not ins or not outs or len(ins[0]) < 2:
        return 0
    a, out = ins[0], outs[0]
    return math.prod(out[:-1]) * a[-1] * out[-1]


def _profile_onnx(path: pathlib.Path, x, args, workdir: pathlib.Path) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(args.warmup):
        sess.run(None, {name: x})
    so.enable_profiling = True
    so.profile_file_prefix = str(workdir / "ort")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(args.warmup + args.repeat):
        sess.run(None, {name: x})
    events = json.loads(pathlib.Path(sess.end_profiling()).read_text())
    runs, nodes = [], []
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs.append((e["ts"], e["dur"]))
        elif e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            nodes.append(e)
    runs = runs[args.warmup:]  # the first runs of the profiled session warm it up again
    median_run = sorted(runs, key=lambda r: r[1])[len(runs) // 2]
    start, dur = median_run
    kinds: dict = collections.defaultdict(lambda: [0.0, 0, 0])
    shapes: dict = collections.defaultdict(lambda: [0.0, 0, 0])
    for e in nodes:
        if not start <= e["ts"] <= start + dur:
            continue
        op = e["args"].get("op_name", "?")
        ins = [list(next(iter(d.values()))) for d in e["args"].get("input_type_shape", []) if d]
        outs = [list(next(iter(d.values()))) for d in e["args"].get("output_type_shape", []) if d]
        macs = _macs(op, ins, outs)
        k = kinds[op]
        k[0] += e["dur"] / 1e6
        k[1] += 1
        k[2] += macs
        if macs:
            key = (op, tuple(tuple(s) for s in ins[:2]) + ((tuple(outs[0]),) if len(ins) < 2 else ()))
            s = shapes[key]
            s[0] += e["dur"] / 1e6
            s[1] += 1
            s[2] += macs
    rows = [{"kind": op, "ms": sec * 1e3, "calls": calls, "gmac": macs / 1e9,
             "gmac_per_s": (macs / sec / 1e9) if macs and sec else None}
            for op, (sec, calls, macs) in sorted(kinds.items(), key=lambda kv: -kv[1][0])]
    products = [{"op": op, "shape": [list(s) for s in ins], "ms": sec * 1e3, "calls": calls, "gmac": macs / 1e9,
                 "gmac_per_s": macs / sec / 1e9 if sec else 0.0}
                for (op, ins), (sec, calls, macs) in sorted(shapes.items(), key=lambda kv: -kv[1][0])]
    return {"pass_ms": dur / 1e3, "pass_ms_all": [d / 1e3 for _, d in runs], "by_kind": rows, "products": products}


# ----------------------------------------------------------------------------------------------------------------


def _table(name: str, prof: dict, top: int) -> str:
    lines = [f"\n{name}: median pass {prof['pass_ms']:.1f} ms"]
    lines.append(f"  {'kind':<44} {'ms':>8} {'calls':>6} {'GMAC':>7} {'GMAC/s':>7}")
    for r in sorted(prof["by_kind"], key=lambda r: -r["ms"]):
        rate = f"{r['gmac_per_s']:7.1f}" if r["gmac_per_s"] else " " * 7
        calls = f"{r['calls']:6d}" if r["calls"] is not None else " " * 6
        lines.append(f"  {r['kind'][:44]:<44} {r['ms']:8.2f} {calls} {r['gmac']:7.3f} {rate}")
    lines.append(f"  products by shape (top {top}):")
    for r in prof["products"][:top]:
        if isinstance(r["shape"][0], list):  # onnxruntime: input shapes (or input -> output, weight pre-packed)
            joiner = " x " if len(r["shape"]) == 2 and r["shape"][1][:-1] != r["shape"][0][:-1] else " -> "
            shape = joiner.join("x".join(map(str, s)) for s in r["shape"])
        else:
            shape = "[{}x{}] x [{}x{}]".format(r["shape"][0], r["shape"][1], r["shape"][1], r["shape"][2])
        lines.append(f"    {r.get('op', 'matmul'):<11} {shape:<34} {r['ms']:7.2f} ms {r['calls']:5d} calls "
                     f"{r['gmac_per_s']:6.1f} GMAC/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before NumPy and Numba load
    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import swinref
    from cpu import MODELS, _export_onnx, _inf_masks
    from swinref.config import get_config
    from tools import peers

    results: dict = {"threads": args.threads, "batch": args.batch, "loadavg_start": os.getloadavg(), "models": []}
    with tempfile.TemporaryDirectory(prefix="swinref-profile-") as tmp:
        workdir = pathlib.Path(tmp)
        for key in args.models:
            cfg = get_config(MODELS[key])
            net = peers.build("timm", cfg)
            ckpt = peers.save("timm", net, workdir / key)
            onnx_path, inf_path = workdir / f"{key}.onnx", workdir / f"{key}-inf.onnx"
            problem = _export_onnx(net, cfg, onnx_path)
            if problem:
                raise SystemExit(problem)
            masks = _inf_masks(onnx_path, inf_path)
            del net
            model = swinref.load(ckpt, config=MODELS[key], policy="timm")
            x = np.random.default_rng(0).standard_normal((args.batch, 3, *cfg.img_size)).astype(np.float32)
            entry = {"model": key, "config": MODELS[key], "image": list(cfg.img_size), "masks_set_to_inf": masks,
                     "swinref": _profile_swinref(model, x, args),
                     "onnxruntime_inf": _profile_onnx(inf_path, x, args, workdir)}
            results["models"].append(entry)
            print(f"\n{MODELS[key]} {cfg.img_size[0]}x{cfg.img_size[1]}, batch {args.batch}, {args.threads} thread(s)")
            print(_table("swinref", entry["swinref"], args.top))
            print(_table("onnxruntime (-inf masks)", entry["onnxruntime_inf"], args.top))
    results["loadavg_end"] = os.getloadavg()
    print(f"\nload average at start {results['loadavg_start']}, at end {results['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
