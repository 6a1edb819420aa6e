"""Memory estimate for inference: the tensors one block holds at once, per stage, so an out-of-memory is foreseeable.

What is counted (inference, no gradients, all windows of the batch processed in one call, as the peers do):
- attention phase of a block: the block input x (kept for the residual) [B, h, w, C], the normalised, padded,
  partitioned windows [B*nW, N, C], qkv [B*nW, N, 3C], the scores [B*nW, nH, N, N] and the softmax output of the
  same size (a non-in-place softmax holds both), plus the shift mask [nW, N, N] in SW-MSA blocks;
- MLP phase: x, norm2(x) [B, h, w, C], the hidden activations [B, h, w, hidden] and their GELU [B, h, w, hidden].
The block's peak is the larger phase; the model's peak adds the weights. A backbone (backbone=True) also holds the
pyramid outputs of the earlier stages (each stage's output through its norm{i}, [B, h_i, w_i, C_i]) while a stage
runs: added to that stage's peak. Allocator overhead, framework workspaces and the input image are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swinref.config import SwinConfig
from swinref.plan import plan
from swinref.errors import ConfigError

__all__ = ["DTYPE_BYTES", "MemoryReport", "memory"]

DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class MemoryReport:
    config: SwinConfig
    image: tuple[int, int]
    batch: int
    dtype: str
    stages: tuple[dict[str, Any], ...]
    weights_bytes: int
    backbone: bool = False

    @property
    def peak_activation_bytes(self) -> int:
        return max(s["peak_bytes"] for s in self.stages)

    @property
    def peak_bytes(self) -> int:
        return self.peak_activation_bytes + self.weights_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.name, "image": list(self.image), "batch": self.batch, "dtype": self.dtype,
            "backbone": self.backbone,
            "bytes_per_element": DTYPE_BYTES[self.dtype], "weights_bytes": self.weights_bytes,
            "peak_activation_bytes": self.peak_activation_bytes, "peak_bytes": self.peak_bytes,
            "stages": list(self.stages),
            "counted": __doc__.split("What is counted", 1)[1].strip().split("\n\n")[0] if __doc__ else "",
        }


def memory(cfg: SwinConfig, image: tuple[int, int] | int | str | None = None, *, batch: int = 1,
           dtype: str = "float32", policy: str | None = None, backbone: bool = False) -> MemoryReport:
    """The largest live set of one block per stage, from the plan of `cfg` under a window policy (default: the
    plan's, 'detection' for a backbone). `backbone=True`: the dense-prediction backbone's weights (output norms,
    no head) and the pyramid outputs it holds."""
    from .params import count_params
    from .trace import analysis_policy, as_size

    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}; use e.g. --batch 1")
    nbytes = DTYPE_BYTES[dtype]
    mp = plan(cfg, as_size(image, cfg), analysis_policy(policy, backbone))
    B = batch
    rows = []
    held = 0  # backbone: the earlier stages' pyramid outputs, kept until the forward pass returns
    for s in mp.stages:
        C, nH, N, nW = s.dim, s.heads, s.window_tokens, s.windows
        T, Tp = s.tokens, s.padded_tokens
        hidden = int(C * cfg.mlp_ratio)
        x = B * T * C  # [B, h, w, C]
        windows = B * Tp * C  # [B*nW, N, C]
        qkv = 3 * windows  # [B*nW, N, 3C]
        scores = B * nW * nH * N * N  # [B*nW, nH, N, N]
        mask = nW * N * N if any(s.shift) else 0  # [nW, N, N], shared by the batch
        attn_phase = x + windows + qkv + 2 * scores + mask
        mlp_phase = x + x + 2 * B * T * hidden
        peak = max(attn_phase, mlp_phase) + held
        rows.append({
            "stage": s.index, "resolution": list(s.resolution), "padded": list(s.padded), "dim": C, "heads": nH,
            "window": list(s.window), "windows": nW, "tokens_per_window": N,
            "tokens_bytes": x * nbytes, "qkv_bytes": qkv * nbytes, "scores_elements": scores,
            "scores_bytes": scores * nbytes, "mlp_hidden_bytes": B * T * hidden * nbytes,
            "attention_phase_bytes": attn_phase * nbytes, "mlp_phase_bytes": mlp_phase * nbytes,
            "peak_bytes": peak * nbytes, "peak_phase": "attention" if attn_phase >= mlp_phase else "mlp",
            **({"held_outputs_bytes": held * nbytes} if backbone else {}),
        })
        if backbone:
            held += x
    weights = count_params(cfg, backbone=backbone).total * nbytes
    return MemoryReport(cfg, mp.embed.image, B, dtype, tuple(rows), weights, backbone)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover

