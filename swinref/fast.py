"""The accelerated NumPy block: swinref.gemm's kernel for the linear layers (BLAS where a product does not fit it,
and for attention's per-window products), Numba kernels (swinref.kernels) for the rest, and all of a block's
parallelism on swinref's own thread lanes.

The twin of the reference block swinref.blocks for what the forward pass calls (block, layer_norm, linear),
reading the same BlockPlan; the backend chooses one of the two once (swinref.backend: NumPy arrays get this block
unless Numba is missing or the reference is asked for with `with swinref.backend.plain():` or
SWINREF_KERNELS=plain). Results agree with the reference to float32 rounding (tests/test_kernels.py); traces record
the same points.

What differs from the reference block, and why:
- no pad / roll / window partition / reverse passes: windows gather their tokens' rows through one cached index
  (geometry.window_token_index, computed once per block plan and batch) and scatter their outputs back the same
  way; a padding position is a zero row, whose qkv is the bias;
- the block is cut into work items that each stay in the cache from start to end: an item is a few windows taken
  through gather, LayerNorm, qkv, attention, proj, residual, LayerNorm, fc1, GELU, fc2 and scatter, its
  [rows, 4C] hidden layer never leaving the cache. Such an item is one Numba call without the GIL
  (swinref.window_item) wherever the block fits it (float32, column-major weights), so lanes never wait for each
  other's Python between its steps. Where a stage has too few windows to share out (the last stages of a small
  batch), the items are the tiles of each product (rows x columns), the window x head-group pairs of the
  attention and blocks of MLP rows instead (`_schedule`);
- no [B*nW, nH, N, N] tensors: an attention item's logits take at most ATTN_CHUNK_BYTES, so memory stays
  O(tokens) however large the image; bias, mask and softmax are one Numba pass (kernels.attention_softmax);
- the relative position bias [nH, N, N] is gathered once per parameter array, not at every call;
- one kind of thread: products run single-threaded inside a block (the kernel, and BLAS on one thread), and the
  calling thread plus lanes - 1 team threads take items from a shared counter until none are left. A lane that
  the machine's other work deschedules simply takes fewer items; the lanes spin only briefly between parts
  (SPIN_SECONDS), and the only wait is for the items already started (OpenBLAS's own threads wait at a barrier
  after every product, so one descheduled BLAS thread stalls every product). While a part runs, the caller and
  the team threads keep off each other's CPUs (_Apart), so two lanes do not share one core while another idles.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from swinref import gemm, geometry, kernels, window_item
from swinref.layers import device_constant, logit_scale, position_bias, qkv_bias, shift_mask
from swinref.namespace import Backend
from swinref.plan import BlockPlan


__all__ = ["block", "layer_norm", "linear", "ATTN_CHUNK_BYTES", "TILE_ROWS", "MIN_TILE_ROWS", "MIN_TILE_COLS",
           "SHARES", "LANES"]

# An item's rows: enough for BLAS to run at full speed on its products, few enough that the item's activations
# (for Swin-T stage 1: 245 rows x (C + 3C + C + 4C) floats) stay in a core's L2 cache.
TILE_ROWS = 256
# Below this many rows a product wastes most of BLAS's register tile: split columns (or heads) instead.
MIN_TILE_ROWS = 64
MIN_TILE_COLS = 64
# How many items a part of a block is cut into, when its rows allow (MIN_TILE_ROWS each): SHARES[0], else
# SHARES[1]; more items than lanes let a lane slowed by another process leave its share to the others. The cut
# depends on the data only, never on the number of lanes, so results are bit-identical for any thread count.
SHARES = (4, 2)
# An attention item's [nw, heads, N, N] logits take at most this many bytes (the chunk stays in the cache while
# bias, mask, softmax and the second product pass over it).
ATTN_CHUNK_BYTES = 2 << 20
# Row kernels (LayerNorm alone) hand rows to another lane from this many on.
ROW_BLOCK_MIN = 256
MAX_LANES = 8
# A process's share of the cores, set by swinref.threads.limit_threads (e.g. one of several workers on a node);
# None: NUMBA_NUM_THREADS (default: the number of CPUs). Read from Numba's config, which starts no thread pool.
LANES: int | None = None


# ----------------------------------------------------------------------------------------------------------------
# Arrays derived from parameters, computed once per parameter array (keyed by id, checked by a weak reference, so
# a params dict that is dropped or rebuilt never meets a stale entry). Params are treated as read-only.

_DERIVED: dict[tuple, tuple[Any, Any]] = {}


def _derived(anchor: np.ndarray, key: tuple, build: Any) -> Any:
    full = (id(anchor), *key)
    hit = _DERIVED.get(full)
    if hit is not None and hit[0]() is anchor:
        return hit[1]
    value = build()
    if len(_DERIVED) > 4096:
        _DERIVED.clear()
    _DERIVED[full] = (weakref.ref(anchor), value)
    return value


# ----------------------------------------------------------------------------------------------------------------
# Lanes: the calling thread and lanes - 1 team threads, taking items from one counter.
#
# A team thread stays on its core between the parts of a forward pass: it spins (kernels.spin_while_equal, one
# call without the GIL) for up to SPIN_SECONDS waiting for the next part, and only then blocks. Blocking after every
# part would hand the core to any other process and wait, at every part, for the scheduler to give it back: on a
# busy machine a time slice each time. The caller waits for the items already taken the same way.

# A wait spins in rounds of SPIN_ROUND loads (a few microseconds), offering the core to other runnable threads
# (sched_yield) between rounds, for up to SPIN_SECONDS; then it blocks. The budget outlasts the gaps between the
# parts of a pass and the tail of its longest item, not the idle time between passes.
SPIN_ROUND = 20_000
DEFAULT_SPIN_SECONDS = 0.002
# SWINREF_SPIN_MS overrides the budget, like OMP_WAIT_POLICY for OpenMP runtimes: a service answering one image
# at a time with idle gaps can keep its lanes spinning through the gaps (a core busy meanwhile) and save the
# wake-ups of the first parts of a pass (benchmarks/idle_gaps.py).


def _spin_budget(text: str | None) -> float:
    """SPIN_SECONDS from SWINREF_SPIN_MS: milliseconds, 0 to 10000; anything else warns and keeps the default."""
    if text is None or not text.strip():
        return DEFAULT_SPIN_SECONDS
    try:
        ms = float(text)
    except ValueError:
        ms = -1.0
    if not 0.0 <= ms <= 10_000.0:
        import warnings

        warnings.warn(f"SWINREF_SPIN_MS={text!r} is not a number of milliseconds from 0 to 10000; spinning for "
                      f"{DEFAULT_SPIN_SECONDS * 1e3:g} ms", RuntimeWarning, stacklevel=2)
        return DEFAULT_SPIN_SECONDS
    return ms / 1e3


SPIN_SECONDS = _spin_budget(os.environ.get("SWINREF_SPIN_MS"))


def _spin_ns() -> int:
    return int(SPIN_SECONDS * 1e9)


def _lanes() -> int:
    if LANES is not None:
        return max(1, min(MAX_LANES, LANES))
    try:
        import numba

        return max(1, min(MAX_LANES, int(numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # pragma: no cover
        return 1


class _Job:
    """One part of a pass: fn(i) for i in range(items), items taken in order by whichever lane is free."""

    def __init__(self, fn: Callable[[int], None], items: int, helpers: int = 0):
        self.fn, self.items = fn, items
        self.helpers = helpers  # team threads that join (the first ones of a larger team)
        self.next_item = itertools.count()  # next() on it is atomic under the GIL
        self.finished = np.zeros(items, dtype=np.int8)
        self.errors: list[BaseException] = []

    def work(self) -> None:
        for i in self.next_item:
            if i >= self.items:
                return
            try:
                self.fn(i)
            except BaseException as exc:  # re-raised by the caller
                self.errors.append(exc)
            self.finished[i] = 1

    def wait(self, wake: threading.Condition) -> None:
        """Until every item is finished (the caller has taken the last one, others may still run theirs)."""
        if not kernels.spin_until_all_set(self.finished, _spin_ns(), SPIN_ROUND):
            with wake:
                while not self.finished.all():
                    wake.wait(0.001)
        if self.errors:
            raise self.errors[0]


class _Team:
    """Threads that run the items of a job beside the caller; one job at a time."""

    def __init__(self, threads: int):
        self.threads = threads
        self.generation = np.zeros(1, dtype=np.int64)  # bumped for every job; team threads spin on it
        self.job: _Job | None = None
        self.wake = threading.Condition()
        self.busy = threading.Lock()
        self.caller_cpu = -1
        self.team_cpus = [-1] * threads  # the CPU each team thread last started a job on
        for rank in range(1, threads + 1):
            threading.Thread(target=self._serve, args=(rank,), name="swinref-lane", daemon=True).start()

    def _serve(self, rank: int) -> None:
        seen = 0
        apart = _Apart()
        while True:
            if kernels.spin_while_equal(self.generation, seen, _spin_ns(), SPIN_ROUND) == seen:
                apart.restore()
                with self.wake:
                    while int(self.generation[0]) == seen:
                        self.wake.wait()
            seen = int(self.generation[0])
            job = self.job
            if job is not None and rank <= job.helpers:
                apart.avoid({self.caller_cpu})
                self.team_cpus[rank - 1] = _current_cpu()
                job.work()
                with self.wake:
                    self.wake.notify_all()  # a caller blocked in wait()

    def run(self, job: _Job) -> None:
        self.job = job
        caller = _Apart()
        caller.avoid(set(self.team_cpus[:job.helpers]))
        self.caller_cpu = _current_cpu()
        try:
            with self.wake:
                self.generation[0] += 1
                self.wake.notify_all()
            job.work()
            job.wait(self.wake)
        finally:
            caller.restore()


# While a job runs, the caller keeps off the CPUs its team threads last worked on and the team threads keep off
# the caller's. Two threads that both slept through an idle gap are often woken onto the same core (the one that
# took the caller's timer), and every GIL hand-off re-places a thread; the load balancer takes tens of
# milliseconds to part two busy threads, so the first blocks of a pass would run at one core's speed. Only the
# lanes' own CPUs are excluded, so on a machine with more CPUs than lanes the scheduler still moves a lane away
# from another process. Each thread gets its own CPU set back when the job ends (the caller) or before it blocks
# (a team thread).


def _current_cpu_fn() -> Callable[[], int]:
    try:
        import ctypes

        getcpu = ctypes.PyDLL(None).sched_getcpu  # PyDLL: a call this short keeps the GIL
        getcpu.restype = ctypes.c_int
        getcpu.argtypes = []
        return getcpu
    except (OSError, AttributeError):  # pragma: no cover - not glibc / musl
        return lambda: -1


_current_cpu = _current_cpu_fn()
_AFFINITY = hasattr(os, "sched_setaffinity")


class _Apart:
    """The calling thread's CPU set, narrowed for a job (some CPUs avoided) and restored."""

    def __init__(self):
        self.saved: set[int] | None = None  # the thread's own CPU set while it is narrowed
        self.avoiding: set[int] = set()

    def avoid(self, cpus: set[int]) -> None:
        """Keep off `cpus` (unknown ones, -1, are ignored), unless that leaves the thread nowhere to run."""
        cpus = cpus - {-1}
        if cpus == self.avoiding or not _AFFINITY:
            return
        try:
            cores = self.saved if self.saved is not None else os.sched_getaffinity(0)
            narrowed = cores - cpus
            if narrowed and narrowed != cores:
                os.sched_setaffinity(0, narrowed)
                self.saved = cores
            else:
                self.restore()
        except OSError:  # pragma: no cover - the CPU set changed under us: leave it to the scheduler
            pass
        self.avoiding = cpus

    def restore(self) -> None:
        if self.saved is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self.saved)
            self.saved, self.avoiding = None, set()


_TEAM: _Team | None = None
_TEAM_LOCK = threading.Lock()


def _team(threads: int) -> _Team:
    global _TEAM
    with _TEAM_LOCK:
        if _TEAM is None or _TEAM.threads < threads:
            _TEAM = _Team(threads)  # a smaller team's threads stay blocked for good
        return _TEAM


def _forget_team() -> None:
    global _TEAM
    _TEAM = None  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_team)


def _parallel(fn: Callable[[int], None], items: int, lanes: int) -> None:
    """fn(i) for i in range(items), on up to `lanes` threads; each lane takes the next item when it is free.

    A second caller while the team is busy (two forward passes on two threads of the caller's) runs its items
    on its own thread.
    """
    lanes = min(lanes, items)
    team = _team(lanes - 1) if lanes > 1 else None
    if team is None or not team.busy.acquire(blocking=False):
        for i in range(items):
            fn(i)
        return
    try:
        team.run(_Job(fn, items, lanes - 1))
    finally:
        team.job = None
        team.busy.release()


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_SAVED: list[int] = []


@contextlib.contextmanager
def _one_blas_thread(active: bool):
    """BLAS on one thread while the lanes share a block out (threads of the process running blocks at once
    share one setting; the last to leave restores the caller's)."""
    global _BLAS_USERS
    libs = _blas_libs() if active else ()
    if not libs:
        yield
        return
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_SAVED[:] = [lib.get_num_threads() for lib in libs]
            for lib, n in zip(libs, _BLAS_SAVED):
                if n != 1:
                    lib.set_num_threads(1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                for lib, n in zip(libs, _BLAS_SAVED):
                    if n != 1:
                        lib.set_num_threads(n)


@functools.lru_cache(maxsize=1)
def _blas_libs() -> tuple:
    """The BLAS libraries loaded in this process (NumPy's among them), through threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a core dependency
        return ()
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


# ----------------------------------------------------------------------------------------------------------------
# The schedule: how a block is cut into items, decided once per (batch, block plan, dtype size).


@dataclass(frozen=True)
class _Schedule:
    fused: bool  # True: items of windows taken through the whole block; False: tiles of each product
    windows_per_item: int  # windows per item (fused), or per window chunk (tiled attention)
    head_groups: int  # tiled attention: groups of heads per window chunk
    mlp_rows: int  # tiled blocks: rows per item of the MLP branch (0: fc1 and fc2 in tiles)


def _share(units: int, cap: int, unit_rows: int) -> int:
    """Units (windows, rows) per item: at most `cap`, cut into SHARES[0] items, else SHARES[1], whichever first
    keeps MIN_TILE_ROWS rows per item; 0 when neither does."""
    for share in SHARES:
        per_item = min(cap, -(-units // share))
        if per_item * unit_rows >= MIN_TILE_ROWS and -(-units // per_item) >= SHARES[-1]:
            return per_item
    return 0


@functools.lru_cache(maxsize=256)
def _schedule(B: int, blk: BlockPlan, itemsize: int) -> _Schedule:
    N, nH = blk.window_tokens, blk.heads
    windows = B * math.prod(p // w for p, w in zip(blk.padded, blk.window))
    by_bytes = max(1, ATTN_CHUNK_BYTES // (nH * N * N * itemsize))
    per_item = _share(windows, max(1, min(by_bytes, TILE_ROWS // N)), N)
    mlp_rows = _share(B * blk.tokens, TILE_ROWS, 1)
    if per_item:
        return _Schedule(True, per_item, 1, mlp_rows)
    # Few windows: chunks of windows, each split into groups of heads (at most ATTN_CHUNK_BYTES of logits each).
    per_item = max(1, min(by_bytes, -(-windows // SHARES[-1])))
    chunks = -(-windows // per_item)
    heads_by_bytes = max(1, ATTN_CHUNK_BYTES // (per_item * N * N * itemsize))
    groups = min(nH, max(-(-SHARES[0] // chunks), -(-nH // heads_by_bytes)))
    return _Schedule(False, per_item, groups, mlp_rows)


def _tiles(M: int, N: int) -> tuple[int, int]:
    """(rows, columns) of the tiles of an [M, K] x [K, N] product: blocks of rows while they keep MIN_TILE_ROWS
    rows, then columns too."""
    rows = _share(M, M, 1)
    if rows:
        return rows, N
    row_tiles = max(1, M // MIN_TILE_ROWS)
    cols = max(MIN_TILE_COLS, -(-N // -(-SHARES[0] // row_tiles)))
    return -(-M // row_tiles), min(N, -(-cols // gemm.NR) * gemm.NR)


@functools.lru_cache(maxsize=64)
def _window_rows(B: int, blk: BlockPlan) -> tuple[np.ndarray, np.ndarray | None]:
    """([B*nW, N] row of each window token in the [B*T, C] token matrix, padding -> 0; [B*nW, N] padding mask, or
    None when no window holds padding). Windows in the order of geometry.window_partition, tokens row-major."""
    windows = geometry.window_token_index(blk.resolution, blk.padded, blk.window, blk.shift, blk.roll_before_pad)
    T = blk.tokens
    index = np.arange(B)[:, None, None] * T + np.maximum(windows, 0)[None]
    padding = np.broadcast_to(windows[None] < 0, index.shape)
    index = index.reshape(-1, windows.shape[1])
    index.setflags(write=False)
    if not padding.any():
        return index, None
    padding = np.ascontiguousarray(padding).reshape(index.shape)
    padding.setflags(write=False)
    return index, padding


# ----------------------------------------------------------------------------------------------------------------
# Row kernels and tiled products.


def layer_norm(x: np.ndarray, p: dict, eps: float, be: Backend | None = None) -> np.ndarray:
    """LayerNorm over the last axis (twin: swinref.blocks.layer_norm, same signature), one pass over the rows."""
    x2d = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty_like(x2d)
    _layer_norm_rows(x2d, p["weight"], p["bias"], eps, out, _lanes())
    return out.reshape(x.shape)


def _layer_norm_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, out: np.ndarray,
                     lanes: int) -> None:
    """kernels.layer_norm_rows over [T, C] rows, in blocks of rows shared between the lanes."""
    rows = x.shape[0]
    step = max(ROW_BLOCK_MIN, -(-rows // lanes))

    def row_block(i: int) -> None:
        r0, r1 = i * step, min(rows, (i + 1) * step)
        kernels.layer_norm_rows(x[r0:r1], weight, bias, eps, out[r0:r1])

    _parallel(row_block, -(-rows // step), lanes)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, be: Backend | None = None) -> np.ndarray:
    """[..., in] @ [out, in]^T + [out] (twin: swinref.blocks.linear) in tiles on the lanes, each tile one call of
    swinref.gemm (BLAS on one thread where a tile does not fit it)."""
    lanes = _lanes()
    x2d = x.reshape(-1, x.shape[-1])
    with _one_blas_thread(lanes > 1):
        y = _linear_tiled(x2d, weight, bias, lanes)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def _linear_tiled(x2d: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, lanes: int,
                  gelu: bool = False) -> np.ndarray:
    """[M, K] @ [N, K]^T + bias (then GELU when asked) in tiles shared between the lanes (twin: layers.linear)."""
    M, N = x2d.shape[0], weight.shape[0]
    y = np.empty((M, N), dtype=x2d.dtype)
    rows, cols = _tiles(M, N)
    col_tiles = -(-N // cols)

    def tile(i: int) -> None:
        r, c = divmod(i, col_tiles)
        r0, r1, c0, c1 = r * rows, min(M, (r + 1) * rows), c * cols, min(N, (c + 1) * cols)
        if col_tiles == 1:
            out = y[r0:r1]
        else:  # a contiguous tile for the kernels, then copied into its columns
            out = np.empty((r1 - r0, c1 - c0), dtype=y.dtype)
        gemm.times_weight_t(x2d[r0:r1], weight, out, c0, c1)
        b = None if bias is None else bias[c0:c1]
        if gelu:
            kernels.gelu_bias_rows(out, b)
        elif b is not None:
            out += b
        if col_tiles > 1:
            y[r0:r1, c0:c1] = out

    _parallel(tile, -(-M // rows) * col_tiles, lanes)
    return y


def _times_weight_t(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x [M, K] @ weight [N, K]^T in a new array (swinref.gemm)."""
    out = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    gemm.times_weight_t(x, weight, out)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Attention.


@dataclass(frozen=True)
class _Attention:
    """What every attention item of one call reads."""

    heads: int
    head_dim: int
    window_tokens: int
    rel_bias: np.ndarray  # nH, N, N
    mask: np.ndarray  # nW, N, N (one all-zero window for unshifted blocks)
    scale: np.ndarray | None  # cosine attention's per-head temperature [nH, 1, 1]; None: scaled dot product
    floor: float
    probs: np.ndarray | None  # [B*nW, nH, N, N] when a trace keeps them


def _attend(qkv: np.ndarray, w0: int, nw: int, h0: int, h1: int, at: _Attention, out: np.ndarray) -> None:
    """Attention of heads h0:h1 in windows w0 .. w0 + nw - 1: qkv [nw*N, 3C] rows (window-major, q | k | v,
    head-major) -> out[:, h0*d:h1*d] of [nw*N, C]."""
    N, nH, d = at.window_tokens, at.heads, at.head_dim
    dtype = qkv.dtype
    t = qkv.reshape(nw, N, 3, nH, d)[:, :, :, h0:h1]
    q = np.transpose(t[:, :, 0], (0, 2, 1, 3))  # nw, h, N, d (strided views: BLAS reads them in place)
    k = np.transpose(t[:, :, 1], (0, 2, 3, 1))  # nw, h, d, N
    v = np.transpose(t[:, :, 2], (0, 2, 1, 3))
    if at.scale is None:
        logits = np.matmul(q * dtype.type(d ** -0.5), k)
    else:
        # Cosine attention: q and k rows normalised where they lie in qkv (contiguous d-vectors, one pass each),
        # and each head's temperature folded into its q, so the logits need no pass of their own.
        qk = t[:, :, :2]  # nw, N, 2, h, d: a view of qkv, which is this item's own array
        norms = np.sqrt(np.einsum("wnqhd,wnqhd->wnqh", qk, qk))
        qk /= np.maximum(norms, dtype.type(1e-12))[..., None]
        qk[:, :, 0] *= at.scale[h0:h1].reshape(1, 1, h1 - h0, 1)
        logits = np.matmul(q, k)
    kernels.attention_softmax(logits, at.rel_bias[h0:h1], at.mask, w0, at.floor)
    if at.probs is not None:
        at.probs[w0:w0 + nw, h0:h1] = logits
    heads = np.matmul(logits, v)  # nw, h, N, d
    out.reshape(nw, N, nH * d)[:, :, h0 * d:h1 * d] = np.transpose(heads, (0, 2, 1, 3)).reshape(nw, N, -1)


def _attention_setup(x: np.ndarray, p: dict, blk: BlockPlan, be: Backend, keep_probs: bool) -> _Attention:
    dtype, N, nH = x.dtype, blk.window_tokens, blk.heads
    a = p["attn"]
    anchor = a["relative_position_bias_table"] if blk.position_bias == "table" else a["cpb_mlp"][0]["weight"]
    rel_bias = _derived(anchor, ("bias", blk.window, blk.table_window, blk.bias_index, blk.pretrained_window,
                                 str(dtype)),
                        lambda: np.ascontiguousarray(position_bias(a, blk, be, dtype), dtype=dtype))
    if blk.mask:
        mask = shift_mask(blk, be, dtype)
    else:
        mask = device_constant(be, ("no mask", N), lambda: np.zeros((1, N, N)), dtype)  # one all-zero window
    windows = _window_rows(x.shape[0], blk)[0].shape[0]
    return _Attention(nH, blk.head_dim, N, rel_bias, mask,
                      logit_scale(a, np).astype(dtype) if blk.attention == "cosine" else None,
                      math.log(np.finfo(dtype).tiny),
                      np.empty((windows, nH, N, N), dtype=dtype) if keep_probs else None)


def _window_branch(x2d: np.ndarray, p: dict, blk: BlockPlan, at: _Attention, w0: int,
                   step: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Windows w0 .. w0 + step - 1 gathered, normalised, attended and projected: (their token rows [n], which of
    them are padding or None, x at those rows [n, C], the attention branch there [n, C])."""
    a, norm1 = p["attn"], p["norm1"]
    index, padding = _window_rows(x2d.shape[0] // blk.tokens, blk)
    rows = index[w0:w0 + step].reshape(-1)
    nw = rows.shape[0] // at.window_tokens
    xs = x2d[rows]
    if blk.norm == "pre":
        src = np.empty_like(xs)
        kernels.layer_norm_rows(xs, norm1["weight"], norm1["bias"], blk.eps, src)
    else:
        src = xs.copy()
    pad = None if padding is None else padding[w0:w0 + step].reshape(-1)
    if pad is not None:
        src[pad] = 0  # padding follows the norm, as in every peer: its qkv is the bias
    qkv = _times_weight_t(src, a["qkv"]["weight"])
    bias = qkv_bias(a, np)
    if bias is not None:
        qkv += bias
    heads = src  # src is spent: the heads' outputs take its place
    _attend(qkv, w0, nw, 0, at.heads, at, heads)
    y = _times_weight_t(heads, a["proj"]["weight"])
    y += a["proj"]["bias"]
    if blk.norm == "res-post":
        kernels.layer_norm_rows(y, norm1["weight"], norm1["bias"], blk.eps, y)
    return rows, pad, xs, y


def _mlp_rows(xs: np.ndarray, p: dict, blk: BlockPlan, residual: bool) -> np.ndarray:
    """The MLP branch of rows xs [n, C] (plus xs when `residual`), in a new array: LayerNorm, fc1, GELU (one
    pass with fc1's bias), fc2; the [n, 4C] hidden layer of one item stays in the cache."""
    m, norm2 = p["mlp"], p["norm2"]
    src = xs
    if blk.norm == "pre":
        src = np.empty_like(xs)
        kernels.layer_norm_rows(xs, norm2["weight"], norm2["bias"], blk.eps, src)
    hidden = _times_weight_t(src, m["fc1"]["weight"])
    kernels.gelu_bias_rows(hidden, m["fc1"]["bias"])
    y = _times_weight_t(hidden, m["fc2"]["weight"])
    y += m["fc2"]["bias"]
    if blk.norm == "res-post":
        kernels.layer_norm_rows(y, norm2["weight"], norm2["bias"], blk.eps, y)
    if residual:
        y += xs
    return y


def block(x: np.ndarray, p: dict, blk: BlockPlan, be: Backend, keep_probs: bool = False,
          keep_branch: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A whole block on [B, *S, C]: (x + attention, then + MLP; the attention branch when `keep_branch`; the
    attention probabilities when `keep_probs`) (twin: swinref.blocks.block). A trace asks for the branch and the
    probabilities of the same pass that computes the output, so traced and untraced outputs are the same bits.

    With windows to share out, each item takes its windows' tokens through both branches: the MLP is token-wise,
    so the tokens an item's windows produce are all it needs. Otherwise the attention branch, then the MLP branch,
    each in tiles."""
    lanes = _lanes()
    plan = _schedule(x.shape[0], blk, x.dtype.itemsize)
    x2d = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    at = _attention_setup(x, p, blk, be, keep_probs)
    with _one_blas_thread(lanes > 1):
        if plan.fused:
            out, branch = _block_fused(x2d, p, blk, at, plan, lanes, keep_branch)
        else:
            branch = _attention_tiled(x2d, p, blk, at, plan, lanes)
            hidden = np.add(branch, x2d)
            out = _mlp_branch(hidden, p, blk, plan, lanes)
            np.add(out, hidden, out=out)
    kept = branch.reshape(x.shape) if keep_branch else None
    return out.reshape(x.shape), kept, at.probs


def _block_fused(x2d: np.ndarray, p: dict, blk: BlockPlan, at: _Attention, plan: _Schedule, lanes: int,
                 keep_branch: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Items of windows, each gathered, attended, added, taken through the MLP and scattered back."""
    out = np.empty_like(x2d)
    branch = np.empty_like(x2d) if keep_branch else None
    step = plan.windows_per_item
    windows = _window_rows(x2d.shape[0] // blk.tokens, blk)[0].shape[0]
    native = _native_item(x2d, p, blk, at, out, branch)
    if native is not None:  # each lane takes items inside one call
        items, next_item = -(-windows // step), np.zeros(1, dtype=np.int64)

        def lane(_: int) -> None:
            window_item.windows_through_block(next_item, items, step, *native)

        _parallel(lane, min(lanes, items), lanes)
        return out, branch

    def item(i: int) -> None:
        rows, pad, xs, y = _window_branch(x2d, p, blk, at, i * step, step)
        if pad is not None:
            keep = ~pad
            rows, xs, y = rows[keep], xs[keep], y[keep]
        if branch is not None:
            branch[rows] = y
        y += xs
        out[rows] = _mlp_rows(y, p, blk, residual=True)

    _parallel(item, -(-windows // step), lanes)
    return out, branch


# Fused items as one Numba call each (swinref.window_item) wherever the block fits it; tests switch it off to compare
# with the NumPy item, its twin.
NATIVE_ITEMS = True


def _native_item(x2d: np.ndarray, p: dict, blk: BlockPlan, at: _Attention, out: np.ndarray,
                 branch: np.ndarray | None) -> tuple | None:
    """window_item.windows_through_block's arguments after the item counter, or None where it does not fit."""
    a, m, norm1, norm2 = p["attn"], p["mlp"], p["norm1"], p["norm2"]
    weights = (a["qkv"]["weight"], a["proj"]["weight"], m["fc1"]["weight"], m["fc2"]["weight"])
    if not NATIVE_ITEMS or not window_item.fits(x2d, weights, at.head_dim):
        return None
    f32 = np.float32
    index, padding = _window_rows(x2d.shape[0] // blk.tokens, blk)
    qkv_b = qkv_bias(a, np)
    if at.scale is None:
        q_scale = np.full(at.heads, at.head_dim ** -0.5, dtype=f32)
    else:
        q_scale = np.ascontiguousarray(at.scale.reshape(-1), dtype=f32)
    return (x2d, index, np.zeros((0, 0), dtype=bool) if padding is None else padding,
            norm1["weight"], norm1["bias"], weights[0].T,
            np.zeros(3 * x2d.shape[1], dtype=f32) if qkv_b is None else qkv_b,
            at.rel_bias, at.mask, q_scale, at.scale is not None, at.floor,
            weights[1].T, a["proj"]["bias"], norm2["weight"], norm2["bias"],
            weights[2].T, m["fc1"]["bias"], weights[3].T, m["fc2"]["bias"], blk.eps, blk.norm == "res-post",
            at.heads, out, np.empty((0, x2d.shape[1]), dtype=f32) if branch is None else branch, branch is not None,
            np.empty((0, 0, 0, 0), dtype=f32) if at.probs is None else at.probs, at.probs is not None)


def _attention_tiled(x2d: np.ndarray, p: dict, blk: BlockPlan, at: _Attention, plan: _Schedule,
                     lanes: int) -> np.ndarray:
    """The attention branch [T, C] where there are few windows: qkv in tiles, then (window chunk, head group)
    items, then proj in tiles."""
    a, norm1 = p["attn"], p["norm1"]
    T, C = x2d.shape
    src = np.empty((T + 1, C), dtype=x2d.dtype)  # row T: the zero padding token
    if blk.norm == "pre":
        _layer_norm_rows(x2d, norm1["weight"], norm1["bias"], blk.eps, src[:T], lanes)
    else:
        src[:T] = x2d
    src[T] = 0
    qkv = _linear_tiled(src, a["qkv"]["weight"], qkv_bias(a, np), lanes)
    del src
    index, padding = _window_rows(T // blk.tokens, blk)
    rows_of = index if padding is None else np.where(padding, T, index)
    heads = np.empty((T + 1, C), dtype=x2d.dtype)
    step, groups, windows = plan.windows_per_item, plan.head_groups, index.shape[0]
    per_group = -(-at.heads // groups)

    def item(i: int) -> None:
        chunk, g = divmod(i, groups)
        w0, h0 = chunk * step, g * per_group
        h1 = min(at.heads, h0 + per_group)
        rows = rows_of[w0:w0 + step].reshape(-1)
        nw = rows.shape[0] // at.window_tokens
        part = np.empty((rows.shape[0], C), dtype=x2d.dtype)
        _attend(qkv[rows], w0, nw, h0, h1, at, part)
        c0, c1 = h0 * at.head_dim, h1 * at.head_dim
        heads[rows, c0:c1] = part[:, c0:c1]  # padding rows all land on row T, which is dropped

    _parallel(item, -(-windows // step) * groups, lanes)
    del qkv
    y = _linear_tiled(heads[:T], a["proj"]["weight"], a["proj"]["bias"], lanes)
    if blk.norm == "res-post":
        _layer_norm_rows(y, norm1["weight"], norm1["bias"], blk.eps, y, lanes)
    return y


def _mlp_branch(x2d: np.ndarray, p: dict, blk: BlockPlan, plan: _Schedule, lanes: int) -> np.ndarray:
    """The MLP branch [T, C] of rows x2d: items of rows through the whole MLP where there are enough rows, else
    fc1 and fc2 in tiles."""
    m, norm2 = p["mlp"], p["norm2"]
    rows = plan.mlp_rows
    if rows:
        out = np.empty_like(x2d)

        def item(i: int) -> None:
            out[i * rows:(i + 1) * rows] = _mlp_rows(x2d[i * rows:(i + 1) * rows], p, blk, residual=False)

        _parallel(item, -(-x2d.shape[0] // rows), lanes)
        return out
    src = x2d
    if blk.norm == "pre":
        src = np.empty_like(x2d)
        _layer_norm_rows(x2d, norm2["weight"], norm2["bias"], blk.eps, src, lanes)
    h = _linear_tiled(src, m["fc1"]["weight"], m["fc1"]["bias"], lanes, gelu=True)
    out = _linear_tiled(h, m["fc2"]["weight"], m["fc2"]["bias"], lanes)
    if blk.norm == "res-post":
        _layer_norm_rows(out, norm2["weight"], norm2["bias"], blk.eps, out, lanes)
    return out
