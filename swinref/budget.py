"""The memory guard: every forward pass, trace and golden export compares the memory it will need (the forecast
of swinref.analysis, from the config and the plan alone) with the memory there is, before allocating anything.

    check_memory(cfg, mp, batch=8, dtype="float32")   # -> the images per pass that fit (all 8, or fewer)
    check_memory(..., max_memory="4GiB")              # a budget of your own for the whole pass, weights included

What there is: MemAvailable of /proc/meminfo, and the cgroup's limit less its usage where one is set (a
container's limit is often far below the machine's memory). A forward pass that does not fit in one go but fits
a few images at a time runs in chunks of the batch (the images are independent, so the logits are the same); one
that does not fit even for one image is refused with the forecast and the largest size that fits.

Pure Python, no NumPy: the forecast is arithmetic on the plan.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable

from swinref.config import SwinConfig
from swinref.errors import ConfigError, ResourceError
from swinref.plan import ModelPlan, plan

__all__ = ["HEADROOM", "parse_bytes", "available_memory", "forward_bytes", "points_bytes", "check_memory",
           "check_bytes", "largest_size"]

# The forecast counts one block's live tensors (analysis/memory.py); the blocks' temporaries, caches and the
# allocator move the real peak around it, most at small sizes. benchmarks/memory_forecast.py measures the ratio of
# the real peak to the forecast; the guard asks for this much more than the forecast, with room above the largest
# ratio measured, so a pass it lets through does not run out.
HEADROOM = 1.5

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def parse_bytes(value: int | float | str) -> int:
    """A memory size: a number of bytes, or '512M', '4GiB', '1.5 GB' (k, M, G, T are powers of 1000; KiB, MiB,
    GiB, TiB of 1024)."""
    if isinstance(value, bool):
        raise ConfigError(f"memory size must be a number of bytes or a size like 4GiB, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"cannot read memory size {value!r}: write a number of bytes or a size like 512MiB, "
                              f"4GiB or 8GB")
        number, unit = float(m.group(1)), m.group(2).lower()
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise ConfigError(f"memory size must be positive, got {value!r}; e.g. 4GiB")
    return int(size)


def available_memory() -> tuple[int | None, str]:
    """The bytes a new allocation can take here, and where that figure comes from (None: nothing is known)."""
    found: list[tuple[int, str]] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "available memory (MemAvailable)"))
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # 'max' or a huge number: no limit
            found.append((max(0, int(limit) - usage), "the container's memory limit less its usage"))
    if not found:
        return None, "unknown"
    return min(found)


def forward_bytes(cfg: SwinConfig, mp: ModelPlan, *, batch: int, dtype: str, backbone: bool = False) -> int:
    """What one forward pass allocates beyond the weights: HEADROOM times the forecast peak of one block's live
    set (analysis.memory), plus the input in the compute dtype."""
    from swinref.analysis.memory import DTYPE_BYTES, memory

    report = memory(cfg, mp.embed.image, batch=batch, dtype=dtype, policy=mp.policy.name, backbone=backbone)
    image = batch * cfg.in_chans * math.prod(mp.embed.image) * DTYPE_BYTES[dtype]
    return int(HEADROOM * report.peak_activation_bytes) + image


def points_bytes(cfg: SwinConfig, mp: ModelPlan, *, batch: int, dtype: str, attn_probs: Iterable[str] = (),
                 backbone: bool = False) -> int:
    """The bytes of every point forward_trace records (each block's output and its attention branch, the
    merges, the kept attention probabilities [B*nW, nH, N, N], the pyramid outputs or the head's points)."""
    from swinref.analysis.memory import DTYPE_BYTES
    from swinref.analysis.trace import trace

    kept = set(attn_probs)
    heads = {s.index: s.heads for s in mp.stages}
    elements = 0
    for step in trace(cfg, mp.embed.image, batch, mp.policy.name, backbone=backbone):
        if not step.runtime:
            continue
        n = math.prod(step.shape)
        if step.block is not None:
            n *= 2  # the block's output and its attention branch (name.attn)
            if step.name in kept:
                n += batch * step.windows * heads[step.stage] * step.window_tokens ** 2
        elements += n
    return elements * DTYPE_BYTES[dtype]


def check_bytes(needed: int, what: str, *, weights: int = 0, max_memory: int | float | str | None = None,
                fix: str = "", host: bool = True) -> None:
    """Refuse `what` when `needed` new bytes exceed the memory available here (`host`: the arrays live in this
    machine's memory), or `needed + weights` the budget."""
    from swinref.analysis.memory import human_bytes

    if max_memory is not None:
        budget = parse_bytes(max_memory)
        if needed + weights > budget:
            raise ResourceError(f"{what} needs about {human_bytes(needed + weights)} (forecast, weights included), "
                                f"more than the budget max_memory={human_bytes(budget)}{fix}")
    available, source = available_memory() if host else (None, "")
    if available is not None and needed > available:
        raise ResourceError(f"{what} needs about {human_bytes(needed)} more memory (forecast), and the "
                            f"{source} is {human_bytes(available)}{fix}")


def _fits(needed: int, weights: int, max_memory: int | float | str | None, host: bool = True) -> bool:
    try:
        check_bytes(needed, "", weights=weights, max_memory=max_memory, host=host)
    except ResourceError:
        return False
    return True


def check_memory(cfg: SwinConfig, mp: ModelPlan, *, batch: int, dtype: str, backbone: bool = False,
                 max_memory: int | float | str | None = None, chunks: bool = True,
                 extra: Callable[[int, ModelPlan], int] | None = None, host: bool = True,
                 what: str = "the forward pass") -> int:
    """The images per pass that fit (batch itself when the whole batch fits; with `chunks`, fewer); refuses with
    ResourceError when one image does not fit, naming the forecast and the largest size that fits.
    `extra(batch, plan)`: the bytes the caller holds besides (a trace's points); `host`: compare with this
    machine's free memory too (arrays on a GPU: the budget only)."""
    from swinref.analysis.memory import DTYPE_BYTES
    from swinref.analysis.params import count_params

    weights = count_params(cfg, backbone=backbone).total * DTYPE_BYTES[dtype]

    def needed(b: int, m: ModelPlan = mp) -> int:
        held = extra(b, m) if extra is not None else 0
        return forward_bytes(cfg, m, batch=b, dtype=dtype, backbone=backbone) + held

    if _fits(needed(batch), weights, max_memory, host):
        return batch
    shape = "x".join(map(str, mp.embed.image))
    if batch > 1 and _fits(needed(1), weights, max_memory, host):
        low, high = 1, batch  # needed() grows with the images: the largest number that fits
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if _fits(needed(mid), weights, max_memory, host) else (low, mid)
        if chunks:
            return low
        fix = f"; give at most {low} images at a time"
    else:
        size = largest_size(cfg, mp, lambda m: _fits(needed(1, m), weights, max_memory, host))
        fix = (f"; the largest input of this shape that fits is about {'x'.join(map(str, size))} (--img "
               f"{'x'.join(map(str, size))})" if size else "; even the smallest input does not fit: free memory")
    fix += ", or raise --max-memory (max_memory=)" if max_memory is not None else ""
    check_bytes(needed(batch), f"{what} on {batch} image{'s' if batch > 1 else ''} of {shape} in {dtype}",
                weights=weights, max_memory=max_memory, fix=fix, host=host)
    return batch  # pragma: no cover - check_bytes refused above


def largest_size(cfg: SwinConfig, mp: ModelPlan, fits) -> tuple[int, ...] | None:
    """The largest input of the same aspect ratio, a multiple of the model's total stride (patch times 2 per
    merge), that the window policy accepts and `fits(plan)` allows; None when not even one stride does."""
    stride = cfg.patch_size * 2 ** (len(cfg.depths) - 1)
    image = mp.embed.image
    longest = max(image)

    def at(k: int) -> tuple[int, ...]:
        return tuple(max(stride, round(n * k / longest) * stride) for n in image)

    def ok(k: int) -> bool:
        candidate = plan(cfg, at(k), mp.policy.name)
        return candidate.refusal is None and fits(candidate)

    low, high = 0, max(1, longest // stride)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    for k in range(max(low, 1), max(low - 64, 0), -1):  # the policy may refuse some sizes: step down to one it takes
        if ok(k):
            return at(k)
    return None
