"""Shape, parameter, FLOP and memory analysis of a Swin configuration: config in, numbers out, no arrays.

Everything here reads `swinref.plan.plan` (stage grids, the clamp rule, padding) and `swinref.layout.param_shapes`
and does integer arithmetic in pure Python. It must never import numpy, numba or cupy: `swinref trace` and
`swinref flops` answer in well under a second because of it (tests/test_cli.py checks sys.modules).
"""

from __future__ import annotations

from .flops import CONVENTIONS, FlopReport, Item, complexity, count_flops, sweep
from .memory import MemoryReport, memory
from .params import ParamReport, count_params
from .trace import Step, trace

__all__ = [
    "CONVENTIONS", "FlopReport", "Item", "count_flops", "complexity", "sweep",
    "MemoryReport", "memory", "ParamReport", "count_params", "Step", "trace",
]
