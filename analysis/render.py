"""rich tables for the CLI. Imported only when a table is printed (never by `import analysis`)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table

from .memory import human_bytes
from swinref.config import SwinConfig, describe

_console: Console | None = None


def _out() -> Console:
    global _console
    if _console is None:
        import sys

        # Piped output has no terminal width; 80 columns would fold the shape column, so print wide.
        width = None if sys.stdout.isatty() else 160
        _console = Console(highlight=False, soft_wrap=False, width=width)
    return _console


# A column of prose (trace's op) wraps at this width instead of claiming the whole line.
_PROSE = 28


def _fit(t: Table, key: int = 0) -> RenderableType:
    """The table, readable at the console's width (80 columns included): the key column, whose names tell the rows
    apart (step, layer, term, tensor, stage), is never cut or folded. A table wider than the console is split by
    columns into tables that each repeat the key column, with a lighter box; cells are never cut."""
    width = _out().width
    natural = [max(cell_len(str(cell)) for cell in [col.header, *col.cells]) for col in t.columns]
    names = t.columns[key]
    names.no_wrap, names.min_width = True, natural[key]
    if sum(n + 3 for n in natural) + 1 <= width:
        return t
    room = width - natural[key] - 2
    groups: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(natural):
        if i == key:
            continue
        need = min(n, _PROSE) + 2
        if groups[-1] and used + need > room:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += need
    cells = [list(col.cells) for col in t.columns]
    parts = []
    for number, group in enumerate(groups):
        title = t.title if number == 0 else f"{t.title} (continued)" if t.title else None
        part = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        for i in (key, *group):
            col = t.columns[i]
            part.add_column(col.header, justify=col.justify, no_wrap=i == key, min_width=natural[i] if i == key else None,
                            max_width=None if i == key else max(_PROSE, min(natural[i], room - 2)),
                            overflow="fold")
        for r, row in enumerate(t.rows):
            part.add_row(*(cells[i][r] for i in (key, *group)), style=row.style)
        parts.append(part)
    return Group(*parts)


def _shape(shape) -> str:
    return "[" + ", ".join(str(x) for x in shape) + "]"


def _g(n: float) -> str:
    return f"{n / 1e9:.4f}"


def _m(n: float) -> str:
    return f"{n / 1e6:.3f}"


def configs(rows: list[dict[str, Any]]) -> None:
    t = Table(title="Registered configurations (swinref configs --json for all fields)")
    for col in ("name", "alias", "V", "img", "C", "depths", "heads", "M", "classes", "params"):
        t.add_column(col, justify="right" if col in ("C", "M", "classes", "params") else "left")
    for r in rows:
        t.add_row(r["name"], r["alias"] or "", str(r["version"]), "x".join(map(str, r["img_size"])),
                  str(r["embed_dim"]), ",".join(map(str, r["depths"])), ",".join(map(str, r["num_heads"])),
                  str(r["window_size"]), str(r["num_classes"]), f"{r['params']:,}")
    _out().print(_fit(t))


def _x(size) -> str:
    return "x".join(map(str, size))


def _pad(pad) -> str:
    if pad is None or not any(pad):
        return ""
    if any(q < 0 for q in pad):
        return "crop " + _x(-q for q in pad)
    return "+" + _x(pad) + " at the end"


def trace(cfg: SwinConfig, steps, mp) -> None:
    c = _out()
    c.print(describe(cfg))
    c.print(f"window policy [bold]{mp.policy.name}[/bold]: {mp.peer}")
    if mp.refusal is not None:
        c.print(f"[bold red]this peer refuses or fails at this size:[/bold red] {mp.refusal}")
    if any(s.name.startswith("outs.") for s in steps):
        c.print("backbone mode: every stage's output through its LayerNorm norm{i}, returned channels first "
                "(outs.{i}); no final norm, pooling or head")
    t = Table(title="Shape trace (names with * are recorded by the forward pass)")
    for col in ("step", "shape", "op", "window", "shift", "nW", "N", "pad", "order"):
        t.add_column(col, justify="right" if col in ("window", "shift", "nW", "N") else "left")
    for s in steps:
        t.add_row(s.name + (" *" if s.runtime else ""), _shape(s.shape), s.op,
                  "" if s.window is None else _x(s.window), "" if s.shift is None else _x(s.shift),
                  "" if s.windows is None else str(s.windows), "" if s.window_tokens is None else str(s.window_tokens),
                  _pad(s.pad), s.order or "")
    c.print(_fit(t))
    stages = Table(title="Tokens and windows per stage")
    for col in ("stage", "grid", "tokens", "C", "heads", "window", "shift", "padded grid", "windows", "N"):
        stages.add_column(col, justify="right")
    for s in mp.stages:
        stages.add_row(str(s.index), _x(s.resolution), str(s.tokens), str(s.dim),
                       str(s.heads), _x(s.window) + (" (clamped)" if s.clamped else ""), _x(s.shift),
                       _x(s.padded), str(s.windows), str(s.window_tokens))
    c.print(_fit(stages))


def flops(cfg: SwinConfig, report, data: dict[str, Any], *, show_items: bool, show_blocks: bool) -> None:
    c = _out()
    conv = report.convention
    c.print(describe(cfg) + f"; input {_x(data['image'])}, batch {data['batch']}")
    c.print(f"convention [bold]{conv.name}[/bold]: {conv.summary}")
    c.print(f"window policy [bold]{report.policy}[/bold]")
    if report.backbone:
        c.print("backbone mode: every stage's output LayerNorm norm{i} counted (column 'output norm'); no final "
                "norm, pooling or head")
    t = Table(title="Per stage (G = 1e9)")
    columns = ["stage", "grid", "C", "M", "nW", "GMACs", "GFLOPs", "attention GMACs", "MLP GMACs"]
    columns += ["output norm GFLOPs", "share"] if report.backbone else ["share"]
    for col in columns:
        t.add_column(col, justify="right")
    for r in data["stages"]:
        parts = r["parts"]
        grid = _x(r["resolution"]) if "resolution" in r else ""
        out_norm = [_g(parts.get("out_norm", {}).get("flops", 0))] if report.backbone else []
        t.add_row(str(r["stage"]), grid, str(r.get("dim", "")), str(r.get("window", "")), str(r.get("windows", "")),
                  _g(r["macs"]), _g(r["flops"]), _g(parts.get("attention", {}).get("macs", 0)),
                  _g(parts.get("mlp", {}).get("macs", 0)), *out_norm,
                  f"{100 * r['flops'] / data['flops']:.1f}%" if data["flops"] else "")
    t.add_row("total", "", "", "", "", _g(data["macs"]), _g(data["flops"]), "", "", *([""] * (len(columns) - 8)),
              style="bold")
    c.print(_fit(t))
    if show_blocks:
        b = Table(title="Per block and patch merging (MACs, G)")
        for col in ("layer", "GMACs", "attention", "MLP", "norms", "GFLOPs"):
            b.add_column(col, justify="right")
        for r in data["blocks"]:
            b.add_row(r["name"], _g(r["macs"]), _g(r["attention"]), _g(r["mlp"]), _g(r["norm"]), _g(r["flops"]))
        c.print(_fit(b))
    if show_items:
        it = Table(title="Every counted term")
        for col in ("term", "op", "MACs", "FLOPs"):
            it.add_column(col, justify="right" if col in ("MACs", "FLOPs") else "left")
        for i in report.items:
            it.add_row(i.name, i.op, f"{i.macs * report.batch:,}", f"{i.flops * report.batch:,}")
        c.print(_fit(it))
    p = Table(title="Paper complexity per block: Omega(MSA) = 4hwC^2 + 2(hw)^2 C vs Omega(W-MSA) = 4hwC^2 + 2M^2 hwC")
    for col in ("stage", "h x w", "C", "M", "MSA GMACs", "W-MSA GMACs", "MSA / W-MSA"):
        p.add_column(col, justify="right")
    for r in data["complexity"]:
        p.add_row(str(r["stage"]), _x(r["resolution"]), str(r["dim"]), str(r["window"]),
                  _g(r["msa"]), _g(r["wmsa"]), f"{r['ratio']:.2f}")
    c.print(_fit(p))
    c.print(f"params {data['params']:,}   MACs {data['macs']:,}   FLOPs {data['flops']:,} (2 per MAC"
            + (" + elementwise FLOPs)" if conv.name == "corrected" else ")"))
    for note in data["notes"]:
        c.print(f"[yellow]note:[/yellow] {note}")
    c.print("counted: " + "; ".join(conv.includes))
    c.print("not counted: " + "; ".join(conv.excludes))


def sweep(cfg: SwinConfig, rows: list[dict[str, Any]]) -> None:
    c = _out()
    c.print(describe(cfg))
    t = Table(title="Attention cost over square input sizes, all blocks (paper formulas, GMACs)")
    for col in ("size", "tokens", "MSA", "W-MSA", "MSA / W-MSA", "padding"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["size"]), f"{r['tokens']:,}", _g(r["msa"]), _g(r["wmsa"]), f"{r['ratio']:.2f}",
                  "yes" if r["padding"] else "")
    c.print(_fit(t))
    c.print("MSA grows with the square of the tokens, W-MSA linearly: the ratio grows with the input size.")


def params(cfg: SwinConfig, report, *, show_tensors: bool) -> None:
    c = _out()
    c.print(describe(cfg))
    t = Table(title="Parameters per component")
    for col in ("stage", "component", "tensors", "params", "M"):
        t.add_column(col, justify="right")
    for r in report.by_component():
        t.add_row(str(r["stage"]), r["component"], str(r["tensors"]), f"{r['params']:,}", _m(r["params"]))
    t.add_row("total", "", str(len(report.shapes)), f"{report.total:,}", _m(report.total), style="bold")
    c.print(_fit(t))
    if show_tensors:
        tt = Table(title="Parameter tensors (official names)")
        tt.add_column("name")
        tt.add_column("shape")
        tt.add_column("params", justify="right")
        for name, shape in report.shapes.items():
            n = 1
            for x in shape:
                n *= x
            tt.add_row(name, _shape(shape), f"{n:,}")
        c.print(_fit(tt))


def memory(cfg: SwinConfig, report) -> None:
    c = _out()
    c.print(describe(cfg) + f"; input {_x(report.image)}, batch {report.batch}, {report.dtype}")
    if report.backbone:
        c.print("backbone mode: the weights have an output norm per stage and no head; a stage's peak includes the "
                "earlier stages' pyramid outputs the backbone holds ('held outputs')")
    t = Table(title="Largest live set of one block, per stage (all windows at once, inference)")
    columns = ["stage", "grid", "nW", "N", "heads", "scores [B*nW,nH,N,N]", "tokens", "qkv", "MLP hidden"]
    columns += ["held outputs"] if report.backbone else []
    for col in columns + ["block peak", "phase"]:
        t.add_column(col, justify="right")
    for s in report.stages:
        held = [human_bytes(s["held_outputs_bytes"])] if report.backbone else []
        t.add_row(str(s["stage"]), _x(s["resolution"]), str(s["windows"]),
                  str(s["tokens_per_window"]), str(s["heads"]), human_bytes(s["scores_bytes"]),
                  human_bytes(s["tokens_bytes"]), human_bytes(s["qkv_bytes"]), human_bytes(s["mlp_hidden_bytes"]),
                  *held, human_bytes(s["peak_bytes"]), s["peak_phase"])
    c.print(_fit(t))
    c.print(f"weights {human_bytes(report.weights_bytes)}; peak activations {human_bytes(report.peak_activation_bytes)}"
            f"; peak with weights {human_bytes(report.peak_bytes)}")
    c.print("counted: block input, padded windows, qkv, scores and softmax output (or x, norm2(x), hidden, GELU) "
            "and the shift mask; not counted: allocator overhead, workspaces, the input image")


def _count(n: float) -> str:
    """12,345 below a million, else 1.23M / 4.49G: a summary column stays narrow."""
    for unit, scale in (("G", 1e9), ("M", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:,}"


def summary(cfg: SwinConfig, report) -> None:
    c = _out()
    c.print(describe(cfg) + f"; input {_x(report.image)}, batch {report.batch}, window policy {report.policy}")
    t = Table(title="Layers (output shape, parameters, multiply-adds)")
    for col in ("layer", "kind", "output shape", "params", "MACs"):
        t.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in report.rows:
        t.add_row(r["layer"], r["kind"], _shape(r["shape"]), _count(r["params"]) if r["params"] else "-",
                  _count(r["macs"]) if r["macs"] else "-")
    c.print(_fit(t))
    c.print(f"params {report.params:,}   MACs {report.macs:,} ({_count(report.macs)})   float32 weights "
            f"{human_bytes(report.params * 4)}; forward peak with weights {human_bytes(report.peak_bytes)} "
            f"(swinref memory)")
