"""rich rendering of a comparison report for `swinref golden compare` (imported only by the CLI)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from swinref.golden.compare import _num


def report(rep: dict[str, Any]) -> None:
    console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
    title = (f"{rep['golden']} ({rep['golden_dtype']}, padding {rep['padding']})"
             + (f" vs {rep['candidate']}" if rep.get("candidate") else "")
             + (f", mapping {rep['mapping']}" if rep["mapping"] else ""))
    t = Table(title=escape(title))
    for col in ("point", "candidate name", "status", "max abs", "tolerance", "max rel", "ulp", "worst index"):
        t.add_column(col, justify="right" if col in ("max abs", "tolerance", "max rel", "ulp") else "left")
    for r in rep["points"]:
        first = r["name"] == rep["first_failure"]
        style = "bold red" if first else ("red" if r["status"] != "pass" else None)
        name = ("-> " if first else "") + r["name"]
        if r["status"] == "shape":
            t.add_row(name, r["candidate_name"], "SHAPE", "", "", "", "", escape(r["note"]), style=style)
            continue
        t.add_row(name, r["candidate_name"], r["status"].upper(), _num(r["max_abs"]), _num(r["tolerance"]),
                  _num(r["max_rel"]), _num(r["ulp"]), str(r["worst_index"]), style=style)
    console.print(t)
    if rep["first_failure"]:
        r = next(p for p in rep["points"] if p["name"] == rep["first_failure"])
        detail = (f" at {r['worst_index']}: golden {_num(r.get('golden_at_worst'))}, candidate "
                  f"{_num(r.get('candidate_at_worst'))}" if r["status"] == "fail" else f": {escape(r['note'])}")
        console.print(f"[bold red]first failure (likely bug location): {r['name']}[/]{detail}")
    if rep["missing"]:
        console.print(f"missing ({len(rep['missing'])}): {', '.join(rep['missing'])}")
    if rep["extra"]:
        console.print(f"extra, not in the golden case ({len(rep['extra'])}): {', '.join(rep['extra'])}")
    for note in rep["notes"]:
        console.print(f"note: {escape(note)}")
    c = rep["counts"]
    colour = "green" if rep["verdict"] == "pass" else "red"
    console.print(f"[bold {colour}]verdict: {rep['verdict'].upper()}[/] ({c['pass']} pass, {c['fail']} fail, "
                  f"{c['shape']} shape mismatch, {c['missing']} missing, {c['extra']} extra)")
